/* Counted strings and growable buffers; see str.h. */
#include "proto/str.h"

#include "proto/err.h"
#include "proto/mem.h"

#include <stdio.h>
#include <string.h>

sb_str_t sb_str_cstr(const char *s)
{
    return (sb_str_t){s, s ? strlen(s) : 0};
}

bool sb_str_eq(sb_str_t a, sb_str_t b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.p, b.p, a.len) == 0);
}

bool sb_str_eq_cstr(sb_str_t a, const char *s)
{
    return sb_str_eq(a, sb_str_cstr(s));
}

bool sb_str_has_prefix(sb_str_t s, sb_str_t prefix)
{
    return s.len >= prefix.len && (prefix.len == 0 || memcmp(s.p, prefix.p, prefix.len) == 0);
}

sb_str_t sb_str_trim(sb_str_t s)
{
    while (s.len && (s.p[0] == ' ' || s.p[0] == '\t')) {
        s.p++;
        s.len--;
    }
    while (s.len && (s.p[s.len - 1] == ' ' || s.p[s.len - 1] == '\t'))
        s.len--;
    return s;
}

int sb_str_to_ll(sb_str_t s, long long min, long long max, long long *out)
{
    size_t i = 0;
    bool neg = false;
    unsigned long long v = 0, limit;

    if (s.len && (s.p[0] == '-' || s.p[0] == '+')) {
        neg = s.p[0] == '-';
        i = 1;
    }
    if (i == s.len)
        return SB_EPARSE;
    limit = neg ? (unsigned long long)(-(min + 1)) + 1 : (unsigned long long)max;
    if (neg && min >= 0)
        return SB_ERANGE;
    for (; i < s.len; i++) {
        unsigned d;
        if (s.p[i] < '0' || s.p[i] > '9')
            return SB_EPARSE;
        d = (unsigned)(s.p[i] - '0');
        if (v > (limit - d) / 10)
            return SB_ERANGE;
        v = v * 10 + d;
    }
    long long r = neg ? (long long)(0 - v) : (long long)v;
    if (r < min || r > max)
        return SB_ERANGE;
    *out = r;
    return 0;
}

void sb_buf_init(sb_buf_t *b)
{
    b->p = NULL;
    b->len = b->cap = 0;
}

void sb_buf_cleanup(sb_buf_t *b)
{
    sb_free(b->p);
    b->len = b->cap = 0;
}

void sb_buf_reserve(sb_buf_t *b, size_t extra)
{
    size_t need = b->len + extra + 1;
    if (need <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need)
        cap *= 2;
    b->p = sb_realloc(b->p, cap);
    b->cap = cap;
}

void sb_buf_append(sb_buf_t *b, const void *p, size_t len)
{
    sb_buf_reserve(b, len);
    if (len)
        memcpy(b->p + b->len, p, len);
    b->len += len;
    b->p[b->len] = '\0';
}

void sb_buf_append_str(sb_buf_t *b, sb_str_t s)
{
    sb_buf_append(b, s.p, s.len);
}

void sb_buf_puts(sb_buf_t *b, const char *s)
{
    sb_buf_append(b, s, strlen(s));
}

void sb_buf_vprintf(sb_buf_t *b, const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    SB_BUG_ON(n < 0);
    sb_buf_reserve(b, (size_t)n);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    b->len += (size_t)n;
}

void sb_buf_printf(sb_buf_t *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    sb_buf_vprintf(b, fmt, ap);
    va_end(ap);
}

void sb_buf_json_str(sb_buf_t *b, sb_str_t s)
{
    sb_buf_append(b, "\"", 1);
    sb_buf_json_escape(b, s);
    sb_buf_append(b, "\"", 1);
}

void sb_buf_json_cstr(sb_buf_t *b, const char *s)
{
    if (s)
        sb_buf_json_str(b, sb_str_cstr(s));
    else
        sb_buf_puts(b, "null");
}

void sb_buf_json_escape(sb_buf_t *b, sb_str_t s)
{
    static const char hex[] = "0123456789abcdef";
    if (!s.len)
        return;
    sb_buf_reserve(b, s.len);
    size_t run = 0; /* the start of the bytes that need no escape, copied at once */
    for (size_t i = 0; i < s.len; i++) {
        unsigned char c = (unsigned char)s.p[i];
        if (c >= 0x20 && c != '"' && c != '\\' && c != 0x7f)
            continue;
        sb_buf_append(b, s.p + run, i - run);
        run = i + 1;
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            sb_buf_append(b, e, 2);
        } else if (c == '\n') {
            sb_buf_append(b, "\\n", 2);
        } else if (c == '\r') {
            sb_buf_append(b, "\\r", 2);
        } else if (c == '\t') {
            sb_buf_append(b, "\\t", 2);
        } else {
            char e[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            sb_buf_append(b, e, 6);
        }
    }
    sb_buf_append(b, s.p + run, s.len - run);
}

size_t sb_i64_text(char out[24], int64_t v)
{
    char tmp[24];
    size_t n = 0;
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    do {
        tmp[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    size_t len = 0;
    if (v < 0)
        out[len++] = '-';
    while (n)
        out[len++] = tmp[--n];
    out[len] = '\0';
    return len;
}

void sb_buf_append_i64(sb_buf_t *b, int64_t v)
{
    char t[24];
    sb_buf_append(b, t, sb_i64_text(t, v));
}
