/* libFuzzer target for proto/line: console framing and command splitting.
 *
 * The first two input bytes seed the chunk sizes; the rest is the byte stream. It is fed to one reader in
 * pseudo-random chunks (1 byte up to a few KiB) and to a second reader in one piece, and both results must equal a
 * naive reference framing computed here. Every good line goes through sb_line_parse, whose result is checked against
 * the contract (argc bounds, argv inside the line, words without blanks, -j handling) and its UTF-8 verdict against
 * a slow reference decoder. The input also goes through sb_line_escape, whose output must hold no control byte, be
 * valid UTF-8 without C1 controls, and read back to the input exactly. Any violation traps. */
#include "tests/fuzz/fuzz.h"
#include "proto/line.h"

#include "proto/err.h"
#include "proto/str.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>


/* The frames seen by one reader, serialised as err, length, bytes. */
typedef struct frames {
    sb_buf_t log;
    size_t count;
} frames_t;

/* Reference UTF-8 check: decode each sequence into a code point, then reject what RFC 3629 forbids. */
static bool ref_utf8(const unsigned char *s, size_t len)
{
    size_t i = 0;
    while (i < len) {
        unsigned c = s[i];
        size_t n;
        uint32_t cp, min;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xe0) == 0xc0) {
            n = 2, cp = c & 0x1f, min = 0x80;
        } else if ((c & 0xf0) == 0xe0) {
            n = 3, cp = c & 0x0f, min = 0x800;
        } else if ((c & 0xf8) == 0xf0) {
            n = 4, cp = c & 0x07, min = 0x10000;
        } else {
            return false;
        }
        if (len - i < n)
            return false;
        for (size_t k = 1; k < n; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return false;
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += n;
    }
    return true;
}

static bool blank(char c)
{
    return c == ' ' || c == '\t';
}

static bool has_binary(sb_str_t line)
{
    for (size_t i = 0; i < line.len; i++) {
        unsigned char c = (unsigned char)line.p[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return true;
    }
    return false;
}

static void check_parse(sb_str_t line)
{
    sb_line_cmd_t cmd;
    memset(&cmd, 0xa5, sizeof cmd);
    int rc = sb_line_parse(line, &cmd);
    bool utf8 = sb_utf8_valid(line.p, line.len);

    CHECK(utf8 == ref_utf8((const unsigned char *)line.p, line.len));
    CHECK(rc == 0 || rc == SB_EINVAL || rc == SB_EPARSE || rc == SB_E2BIG);
    if (rc != 0) {
        CHECK(cmd.argc == 0 && !cmd.json);
        if (rc == SB_EPARSE)
            CHECK(!utf8 || has_binary(line));
        else
            CHECK(utf8 && !has_binary(line));
        return;
    }
    CHECK(utf8 && !has_binary(line));
    CHECK(cmd.argc >= 1 && cmd.argc <= SB_LINE_MAX_ARGS);

    const char *prev_end = line.p;
    for (int i = 0; i < cmd.argc; i++) {
        sb_str_t w = cmd.argv[i];
        CHECK(w.len > 0);
        CHECK(w.p >= prev_end && w.p + w.len <= line.p + line.len);
        for (size_t k = 0; k < w.len; k++)
            CHECK(!blank(w.p[k]));
        /* words are maximal: bounded by blanks or the line's ends */
        CHECK(w.p == line.p || blank(w.p[-1]));
        CHECK(w.p + w.len == line.p + line.len || blank(w.p[w.len]));
        prev_end = w.p + w.len;
    }

    /* what follows the last word is blanks only, or blanks, "-j", blanks when json is set */
    const char *end = line.p + line.len, *q = prev_end;
    while (q < end && blank(*q))
        q++;
    if (cmd.json) {
        CHECK(end - q >= 2 && q[0] == '-' && q[1] == 'j');
        q += 2;
        while (q < end && blank(*q))
            q++;
    } else {
        CHECK(!sb_str_eq_cstr(cmd.argv[cmd.argc - 1], "-j"));
    }
    CHECK(q == end);
}

static void on_line(void *arg, sb_str_t line, int err)
{
    frames_t *f = arg;
    CHECK(err == 0 || err == SB_E2BIG);
    CHECK(line.len <= SB_LINE_MAX);
    CHECK(line.len == 0 || line.p != NULL);
    CHECK(err == 0 || line.len == 0);
    CHECK(line.len == 0 || memchr(line.p, '\n', line.len) == NULL);
    f->count++;
    sb_buf_append(&f->log, &err, sizeof err);
    sb_buf_append(&f->log, &line.len, sizeof line.len);
    sb_buf_append(&f->log, line.p, line.len);
    if (err == 0)
        check_parse(line);
}

/* What the framing must produce, computed the obvious way on the whole stream. */
static void reference(const char *p, size_t len, frames_t *f)
{
    size_t start = 0;
    for (size_t i = 0; i < len; i++) {
        if (p[i] != '\n')
            continue;
        size_t n = i - start;
        if (n && p[start + n - 1] == '\r')
            n--;
        int err = n > SB_LINE_MAX ? SB_E2BIG : 0;
        size_t shown = err ? 0 : n;
        f->count++;
        sb_buf_append(&f->log, &err, sizeof err);
        sb_buf_append(&f->log, &shown, sizeof shown);
        sb_buf_append(&f->log, p + start, shown);
        start = i + 1;
    }
}

static bool frames_eq(const frames_t *a, const frames_t *b)
{
    return a->count == b->count && a->log.len == b->log.len &&
           (a->log.len == 0 || memcmp(a->log.p, b->log.p, a->log.len) == 0);
}

/* Reads an escaped text back (the escapes of sb_line_escape); false on anything it does not write. */
static bool unescape(const char *p, size_t len, sb_buf_t *out)
{
    for (size_t i = 0; i < len; i++) {
        if (p[i] != '\\') {
            sb_buf_append(out, p + i, 1);
            continue;
        }
        if (++i == len)
            return false;
        char c = p[i];
        if (c == '\\' || c == 'n' || c == 'r' || c == 't') {
            sb_buf_append(out, c == 'n' ? "\n" : c == 'r' ? "\r" : c == 't' ? "\t" : "\\", 1);
        } else if (c == 'x' || c == 'u') {
            size_t digits = c == 'x' ? 2 : 4;
            if (len - i - 1 < digits)
                return false;
            unsigned v = 0;
            for (size_t k = 1; k <= digits; k++) {
                char d = p[i + k];
                if (!((d >= '0' && d <= '9') || (d >= 'a' && d <= 'f')))
                    return false;
                v = v * 16 + (unsigned)(d <= '9' ? d - '0' : d - 'a' + 10);
            }
            i += digits;
            if (c == 'u') {
                if (v < 0x80 || v > 0x9f)
                    return false;
                char two[2] = {(char)0xc2, (char)v};
                sb_buf_append(out, two, 2);
            } else {
                char one = (char)v;
                sb_buf_append(out, &one, 1);
            }
        } else {
            return false;
        }
    }
    return true;
}

static void check_escape(const char *p, size_t len)
{
    sb_buf_t esc, back;
    sb_buf_init(&esc);
    sb_buf_init(&back);
    sb_line_escape(&esc, sb_str(p, len));
    const unsigned char *e = (const unsigned char *)sb_buf_cstr(&esc);
    for (size_t i = 0; i < esc.len; i++) {
        CHECK(e[i] >= 0x20 && e[i] != 0x7f);
        CHECK(!(e[i] == 0xc2 && i + 1 < esc.len && e[i + 1] < 0xa0));
    }
    CHECK(ref_utf8(e, esc.len));
    CHECK(unescape(sb_buf_cstr(&esc), esc.len, &back));
    CHECK(back.len == len && (len == 0 || memcmp(back.p, p, len) == 0));
    sb_buf_cleanup(&esc);
    sb_buf_cleanup(&back);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    uint32_t seed = (uint32_t)data[0] << 8 | data[1];
    const char *p = (const char *)data + 2;
    size_t len = size - 2;

    frames_t chunked = {0}, whole = {0}, ref = {0};
    sb_buf_init(&chunked.log);
    sb_buf_init(&whole.log);
    sb_buf_init(&ref.log);

    sb_line_reader_t r;
    sb_line_reader_init(&r);
    size_t reported = 0, off = 0;
    uint32_t x = seed * 2654435761u + 1;
    while (off < len) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        size_t n;
        switch (x & 3) { /* mostly small chunks, sometimes large ones, to cross the limit both ways */
        case 0:
            n = 1;
            break;
        case 1:
            n = 1 + (x >> 8) % 16;
            break;
        case 2:
            n = 1 + (x >> 8) % 300;
            break;
        default:
            n = 1 + (x >> 8) % 3000;
            break;
        }
        if (n > len - off)
            n = len - off;
        reported += sb_line_feed(&r, p + off, n, on_line, &chunked);
        CHECK(r.len <= SB_LINE_BUF && (r.len == 0 || r.buf)); /* a held line has its buffer */
        CHECK(r.len || !r.buf || r.discarding);               /* between lines, none (but while discarding) */
        off += n;
    }
    CHECK(reported == chunked.count);

    sb_line_reader_t r2;
    sb_line_reader_init(&r2);
    CHECK(sb_line_feed(&r2, p, len, on_line, &whole) == whole.count);

    sb_line_reader_cleanup(&r);
    sb_line_reader_cleanup(&r2);
    reference(p, len, &ref);
    CHECK(frames_eq(&chunked, &ref));
    CHECK(frames_eq(&whole, &ref));

    /* the whole input as one line too, so parse also sees lines the framing would have split or refused */
    check_parse(sb_str(p, len));
    check_escape(p, len);

    sb_buf_cleanup(&chunked.log);
    sb_buf_cleanup(&whole.log);
    sb_buf_cleanup(&ref.log);
    return 0;
}
