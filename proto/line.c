/* Console line framing and command splitting; see line.h.
 *
 * Framing copies only what it must: a line that arrives whole in one feed is handed to the callback straight from
 * the caller's bytes, and only the unfinished tail of a feed is copied into the reader. A line that grows past the
 * limit switches the reader to discarding, so a peer streaming bytes without a newline costs nothing but CPU. */
#include "proto/line.h"

#include "proto/err.h"
#include "proto/mem.h"

#include <stdint.h>
#include <string.h>

void sb_line_reader_init(sb_line_reader_t *r)
{
    r->buf = NULL;
    r->len = 0;
    r->discarding = false;
}

void sb_line_reader_cleanup(sb_line_reader_t *r)
{
    sb_free(r->buf);
    r->len = 0;
    r->discarding = false;
}

/* Keeps seg more bytes of the unfinished line. */
static void keep(sb_line_reader_t *r, const char *data, size_t seg)
{
    if (!r->buf)
        r->buf = sb_malloc(SB_LINE_BUF);
    memcpy(r->buf + r->len, data, seg);
    r->len += seg;
}

/* Reports one finished line of n bytes at p (p may point into r->buf), stripping one trailing "\r". */
static void line_emit(const char *p, size_t n, sb_line_cb cb, void *arg)
{
    if (n && p[n - 1] == '\r')
        n--;
    if (n > SB_LINE_MAX)
        cb(arg, sb_str(p, 0), SB_E2BIG);
    else
        cb(arg, sb_str(p, n), 0);
}

size_t sb_line_feed(sb_line_reader_t *r, const char *data, size_t len, sb_line_cb cb, void *arg)
{
    size_t lines = 0;

    while (len) {
        const char *nl = memchr(data, '\n', len);
        size_t seg = nl ? (size_t)(nl - data) : len;

        if (!r->discarding && seg > SB_LINE_BUF - r->len) {
            sb_line_reader_cleanup(r); /* even without a "\r" at its end, the line cannot fit: stop buffering it */
            r->discarding = true;
        }

        if (!nl) {
            if (!r->discarding && seg)
                keep(r, data, seg);
            break;
        }

        if (r->discarding) {
            sb_line_reader_cleanup(r);
            cb(arg, sb_str("", 0), SB_E2BIG);
        } else if (r->len == 0) {
            line_emit(data, seg, cb, arg);
        } else {
            keep(r, data, seg);
            char *line = r->buf; /* the reader lets go of it before the callback: consistent whatever cb does */
            size_t n = r->len;
            r->buf = NULL;
            r->len = 0;
            line_emit(line, n, cb, arg);
            free(line);
        }
        lines++;
        data += seg + 1;
        len -= seg + 1;
    }
    return lines;
}

/* The length of the well-formed UTF-8 sequence at s[0..len) (len >= 1): 1..4, or 0 when it is not one. */
static size_t utf8_seq(const unsigned char *s, size_t len)
{
    unsigned c = s[0];
    if (c < 0x80)
        return 1;
    size_t need;
    unsigned lo = 0x80, hi = 0xbf; /* allowed range of the first continuation byte */
    if (c >= 0xc2 && c <= 0xdf) {
        need = 1;
    } else if (c == 0xe0) {
        need = 2;
        lo = 0xa0; /* below: overlong */
    } else if (c >= 0xe1 && c <= 0xec) {
        need = 2;
    } else if (c == 0xed) {
        need = 2;
        hi = 0x9f; /* above: surrogates U+D800..U+DFFF */
    } else if (c >= 0xee && c <= 0xef) {
        need = 2;
    } else if (c == 0xf0) {
        need = 3;
        lo = 0x90; /* below: overlong */
    } else if (c >= 0xf1 && c <= 0xf3) {
        need = 3;
    } else if (c == 0xf4) {
        need = 3;
        hi = 0x8f; /* above: beyond U+10FFFF */
    } else {
        return 0; /* 0x80..0xc1 (stray continuation, overlong 2-byte) or 0xf5..0xff */
    }
    if (len - 1 < need)
        return 0;
    if (s[1] < lo || s[1] > hi)
        return 0;
    for (size_t k = 2; k <= need; k++) {
        if ((s[k] & 0xc0) != 0x80)
            return 0;
    }
    return need + 1;
}

bool sb_utf8_valid(const char *p, size_t len)
{
    const unsigned char *s = (const unsigned char *)p;
    size_t i = 0;
    while (i < len) {
        /* ASCII eight bytes at a time: what JSON frames and forms mostly are (a Media Streams frame: all of it) */
        while (i + 8 <= len) {
            uint64_t w;
            memcpy(&w, s + i, 8);
            if (w & 0x8080808080808080ull)
                break;
            i += 8;
        }
        if (i >= len)
            break;
        size_t n = utf8_seq(s + i, len - i);
        if (!n)
            return false;
        i += n;
    }
    return true;
}

void sb_line_escape(sb_buf_t *b, sb_str_t text)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *s = (const unsigned char *)text.p;
    for (size_t i = 0, n; i < text.len; i += n) {
        unsigned c = s[i];
        n = utf8_seq(s + i, text.len - i);
        if (n == 2 && c == 0xc2 && s[i + 1] < 0xa0) { /* a C1 control, U+0080..U+009F */
            char e[] = {'\\', 'u', '0', '0', hex[s[i + 1] >> 4], hex[s[i + 1] & 15]};
            sb_buf_append(b, e, sizeof e);
        } else if (n > 1 || (n == 1 && c >= 0x20 && c != 0x7f && c != '\\')) {
            sb_buf_append(b, s + i, n);
        } else if (c == '\\') {
            sb_buf_puts(b, "\\\\");
        } else if (c == '\n') {
            sb_buf_puts(b, "\\n");
        } else if (c == '\r') {
            sb_buf_puts(b, "\\r");
        } else if (c == '\t') {
            sb_buf_puts(b, "\\t");
        } else { /* another control byte, or a byte that starts no well-formed sequence */
            char e[] = {'\\', 'x', hex[c >> 4], hex[c & 15]};
            sb_buf_append(b, e, sizeof e);
            n = 1;
        }
    }
}

static bool is_blank(char c)
{
    return c == ' ' || c == '\t';
}

int sb_line_parse(sb_str_t line, sb_line_cmd_t *out)
{
    int rc;
    size_t i = 0;

    out->argc = 0;
    out->json = false;

    for (size_t k = 0; k < line.len; k++) {
        unsigned char c = (unsigned char)line.p[k];
        if ((c < 0x20 && c != '\t') || c == 0x7f) {
            rc = SB_EPARSE;
            goto fail;
        }
    }
    if (!sb_utf8_valid(line.p, line.len)) {
        rc = SB_EPARSE;
        goto fail;
    }

    for (;;) {
        while (i < line.len && is_blank(line.p[i]))
            i++;
        if (i == line.len)
            break;
        size_t start = i;
        while (i < line.len && !is_blank(line.p[i]))
            i++;
        sb_str_t word = sb_str(line.p + start, i - start);

        if (out->argc == SB_LINE_MAX_ARGS) {
            /* one word too many: acceptable only if it is a final "-j" */
            size_t rest = i;
            while (rest < line.len && is_blank(line.p[rest]))
                rest++;
            if (rest == line.len && sb_str_eq_cstr(word, "-j")) {
                out->json = true;
                break;
            }
            rc = SB_E2BIG;
            goto fail;
        }
        out->argv[out->argc++] = word;
    }

    if (!out->json && out->argc > 0 && sb_str_eq_cstr(out->argv[out->argc - 1], "-j")) {
        out->argc--;
        out->json = true;
    }
    if (out->argc == 0) {
        rc = SB_EINVAL;
        goto fail;
    }
    return 0;

fail:
    out->argc = 0;
    out->json = false;
    return rc;
}
