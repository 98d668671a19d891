/* Counted strings and growable byte buffers.
 *
 * Wire data is never NUL-terminated parsing: an sb_str_t is a borrowed view {p, len} into bytes someone else owns
 * (nginx's ngx_str_t, h2o's h2o_iovec_t). An sb_buf_t owns its bytes and grows; it is what output is built in. */
#ifndef SB_STR_H
#define SB_STR_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct sb_str {
    const char *p;
    size_t len;
} sb_str_t;

#define SB_STR(lit) ((sb_str_t){(lit), sizeof(lit) - 1})
/* A macro's value as a string literal, for SQL and messages built at compile time. */
#define SB_STRINGIFY_(x) #x
#define SB_STRINGIFY(x) SB_STRINGIFY_(x)

static inline sb_str_t sb_str(const char *p, size_t len) { return (sb_str_t){p, len}; }
sb_str_t sb_str_cstr(const char *s);
bool sb_str_eq(sb_str_t a, sb_str_t b);
bool sb_str_eq_cstr(sb_str_t a, const char *s);
bool sb_str_has_prefix(sb_str_t s, sb_str_t prefix);
sb_str_t sb_str_trim(sb_str_t s); /* strips ASCII spaces and tabs at both ends */

/* Parses a whole string as a base-10 integer in [min, max]. Returns 0 or SB_EPARSE / SB_ERANGE. */
int sb_str_to_ll(sb_str_t s, long long min, long long max, long long *out);

typedef struct sb_buf {
    char *p;
    size_t len;
    size_t cap;
} sb_buf_t;

void sb_buf_init(sb_buf_t *b);
void sb_buf_cleanup(sb_buf_t *b);             /* frees the bytes; the buffer is empty and reusable */
void sb_buf_reserve(sb_buf_t *b, size_t extra); /* ensures room for extra more bytes plus a NUL */
void sb_buf_append(sb_buf_t *b, const void *p, size_t len);
void sb_buf_append_str(sb_buf_t *b, sb_str_t s);
void sb_buf_puts(sb_buf_t *b, const char *s);
void sb_buf_printf(sb_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void sb_buf_vprintf(sb_buf_t *b, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
/* Appends s as the inside of a JSON string (no surrounding quotes), escaping as RFC 8259 requires. */
void sb_buf_json_escape(sb_buf_t *b, sb_str_t s);
/* Appends s as a whole JSON string, quotes included; the _cstr form appends null for a NULL s. */
void sb_buf_json_str(sb_buf_t *b, sb_str_t s);
void sb_buf_json_cstr(sb_buf_t *b, const char *s);
/* The bytes as a NUL-terminated C string (the buffer always keeps a NUL after len once anything was added). */
static inline const char *sb_buf_cstr(const sb_buf_t *b) { return b->p ? b->p : ""; }
/* v in decimal into out (NUL-terminated); returns its length. What "%" PRId64 makes, without printf. */
size_t sb_i64_text(char out[24], int64_t v);
void sb_buf_append_i64(sb_buf_t *b, int64_t v);

#endif
