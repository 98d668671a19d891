/* Line logger; see log.h. Each line is formatted into a stack buffer and written with one write(2), so lines
 * from different shard threads never interleave. */
#include "gateway/log.h"

#include "proto/err.h"
#include "proto/redact.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define LINE_MAX_BYTES 1024 /* a text line, and the message of a JSON line before escaping */

static atomic_int log_level = SB_LOG_INFO;
static atomic_int log_format = SB_LOG_TEXT;
static _Thread_local char log_ctx[32] = "main";
static const char *const level_names[] = {"error", "warn", "info", "debug"};
static const char *const format_names[] = {"text", "json"};

void sb_log_set_level(enum sb_log_level level)
{
    atomic_store(&log_level, (int)level);
}

enum sb_log_level sb_log_get_level(void)
{
    return (enum sb_log_level)atomic_load(&log_level);
}

int sb_log_level_parse(const char *s, enum sb_log_level *out)
{
    for (int i = 0; i < 4; i++) {
        if (strcmp(s, level_names[i]) == 0) {
            *out = (enum sb_log_level)i;
            return 0;
        }
    }
    return SB_EINVAL;
}

void sb_log_set_format(enum sb_log_format format)
{
    atomic_store(&log_format, (int)format);
}

int sb_log_format_parse(const char *s, enum sb_log_format *out)
{
    for (int i = 0; i < 2; i++) {
        if (strcmp(s, format_names[i]) == 0) {
            *out = (enum sb_log_format)i;
            return 0;
        }
    }
    return SB_EINVAL;
}

void sb_log_set_context(const char *ctx)
{
    snprintf(log_ctx, sizeof log_ctx, "%s", ctx);
}

/* The length of the valid UTF-8 sequence at p (n bytes left), or 0 if the bytes there are not one. */
static size_t utf8_len(const unsigned char *p, size_t n)
{
    unsigned char c = p[0];
    size_t len;
    unsigned min;
    unsigned cp;
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2, min = 0x80, cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3, min = 0x800, cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4, min = 0x10000, cp = c & 0x07;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (p[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}

/* Appends s (n bytes) to out[*o..size) as the inside of a JSON string, stopping (between two characters) where the
 * next would not fit under size. Invalid UTF-8 becomes U+FFFD, so the line stays valid JSON. */
static void json_escape(char *out, size_t *o, size_t size, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        char e[8];
        const char *src = e;
        size_t el, adv = 1;
        unsigned char c = p[i];
        if (c == '"' || c == '\\') {
            e[0] = '\\', e[1] = (char)c, el = 2;
        } else if (c == '\n') {
            memcpy(e, "\\n", 2), el = 2;
        } else if (c == '\t') {
            memcpy(e, "\\t", 2), el = 2;
        } else if (c < 0x20 || c == 0x7f) {
            memcpy(e, "\\u00", 4), e[4] = hex[c >> 4], e[5] = hex[c & 15], el = 6;
        } else if (c < 0x80) {
            src = s + i, el = 1;
        } else if ((adv = utf8_len(p + i, n - i)) != 0) {
            src = s + i, el = adv;
        } else {
            memcpy(e, "\\ufffd", 6), el = 6, adv = 1;
        }
        if (*o + el >= size)
            return;
        memcpy(out + *o, src, el);
        *o += el;
        i += adv;
    }
}

size_t sb_log_render(char *out, size_t size, enum sb_log_format format, enum sb_log_level level, const char *ctx,
                     const struct timespec *ts, char *msg, size_t msglen)
{
    struct tm tm;
    char when[64];
    gmtime_r(&ts->tv_sec, &tm);
    snprintf(when, sizeof when, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
             tm.tm_hour, tm.tm_min, tm.tm_sec, ts->tv_nsec / 1000000);
    msglen = sb_redact_line(msg, msglen);
    const char *lv = level_names[(unsigned)level < 4 ? (unsigned)level : 3];
    size_t o;
    if (format == SB_LOG_JSON) {
        unsigned shard;
        char sh[16] = "null";
        char tail;
        if (sscanf(ctx, "shard %u%c", &shard, &tail) == 1)
            snprintf(sh, sizeof sh, "%u", shard);
        int n = snprintf(out, size, "{\"ts\":\"%s\",\"level\":\"%s\",\"shard\":%s,\"ctx\":\"", when, lv, sh);
        o = n < 0 ? 0 : (size_t)n < size ? (size_t)n : size - 1;
        json_escape(out, &o, size - 16, ctx, strlen(ctx));
        if (o + 9 < size) {
            memcpy(out + o, "\",\"msg\":\"", 9);
            o += 9;
        }
        json_escape(out, &o, size - 3, msg, msglen);
        memcpy(out + o, "\"}", 2);
        o += 2;
    } else {
        int n = snprintf(out, size, "%s %-5s [%s] ", when, lv, ctx);
        o = n < 0 ? 0 : (size_t)n < size ? (size_t)n : size - 1;
        size_t room = size - 1 - o;
        size_t m = msglen < room ? msglen : room;
        memcpy(out + o, msg, m);
        o += m;
    }
    out[o++] = '\n';
    return o;
}

void sb_log(enum sb_log_level level, const char *fmt, ...)
{
    if ((int)level > atomic_load_explicit(&log_level, memory_order_relaxed))
        return;

    char msg[LINE_MAX_BYTES];
    char line[LINE_MAX_BYTES * 2];
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    size_t len = m < 0 ? 0 : (size_t)m < sizeof msg ? (size_t)m : sizeof msg - 1;
    enum sb_log_format f = (enum sb_log_format)atomic_load_explicit(&log_format, memory_order_relaxed);
    size_t n = sb_log_render(line, f == SB_LOG_JSON ? sizeof line : LINE_MAX_BYTES, f, level, log_ctx, &ts, msg, len);
    ssize_t w = write(STDERR_FILENO, line, n);
    (void)w;
}
