/* libFuzzer target for proto/twiml: TwiML fetched from a tenant's app, and the documents we write ourselves.
 *
 * Each input is used two ways:
 *   1. as a document for sb_twiml_check: the result is 0, SB_E2BIG exactly when it is over SB_TWIML_MAX_BYTES, or
 *      SB_EPARSE; a failure has a short message of printable ASCII; a success starts, after an optional byte order
 *      mark, blanks and comments, with '<', is valid UTF-8, and still passes with any number of blanks appended;
 *   2. as values: split at NUL bytes into up to five strings (any bytes), which every writer takes as its url,
 *      parameter names and values, number and text. Every writer's output must pass sb_twiml_check, and
 *      sb_twiml_escape of each string must read back (entities and character references expanded here) to the
 *      string with what XML cannot carry removed (C0 controls other than tab, LF, CR; U+FFFE, U+FFFF) and every
 *      byte of invalid UTF-8 replaced by U+FFFD.
 * Any violation traps. */
#include "tests/fuzz/fuzz.h"
#include "proto/twiml.h"

#include "proto/err.h"
#include "proto/line.h"
#include "proto/str.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static void check_doc(sb_str_t doc)
{
    char err[160];
    memset(err, 0x55, sizeof err);
    int rc = sb_twiml_check(doc, err, sizeof err);
    CHECK(sb_twiml_check(doc, NULL, 0) == rc);
    if (doc.len > SB_TWIML_MAX_BYTES) {
        CHECK(rc == SB_E2BIG);
    } else {
        CHECK(rc == 0 || rc == SB_EPARSE);
    }
    if (rc != 0) {
        size_t n = strnlen(err, sizeof err);
        CHECK(n > 0 && n < sizeof err);
        for (size_t k = 0; k < n; k++)
            CHECK(err[k] >= 0x20 && err[k] < 0x7f);
        return;
    }
    CHECK(err[0] == '\0');
    CHECK(sb_utf8_valid(doc.p, doc.len));
    CHECK(memchr(doc.p, '<', doc.len) != NULL);
    if (doc.len + 3 <= SB_TWIML_MAX_BYTES) {
        sb_buf_t b;
        sb_buf_init(&b);
        sb_buf_append(&b, doc.p, doc.len);
        sb_buf_puts(&b, " \n\t");
        CHECK(sb_twiml_check(sb_str(b.p, b.len), NULL, 0) == 0);
        sb_buf_cleanup(&b);
    }
}

/* What escaping s must mean once an XML reader has expanded it: s without what XML cannot carry, invalid UTF-8 as
 * U+FFFD. */
static void expected(sb_str_t s, sb_buf_t *out)
{
    const unsigned char *p = (const unsigned char *)s.p;
    for (size_t i = 0; i < s.len;) {
        unsigned c = p[i];
        size_t k = c < 0x80 ? 1 : c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 0;
        if (k == 0 || s.len - i < k || !sb_utf8_valid(s.p + i, k)) {
            sb_buf_puts(out, "\xef\xbf\xbd");
            i++;
            continue;
        }
        bool drop = (c < 0x20 && c != '\t' && c != '\n' && c != '\r') ||
                    (k == 3 && c == 0xef && p[i + 1] == 0xbf && p[i + 2] >= 0xbe);
        if (!drop)
            sb_buf_append(out, s.p + i, k);
        i += k;
    }
}

static void put_utf8(sb_buf_t *out, unsigned long cp)
{
    char b[4];
    size_t n;
    if (cp < 0x80) {
        b[0] = (char)cp, n = 1;
    } else if (cp < 0x800) {
        b[0] = (char)(0xc0 | cp >> 6), b[1] = (char)(0x80 | (cp & 0x3f)), n = 2;
    } else if (cp < 0x10000) {
        b[0] = (char)(0xe0 | cp >> 12), b[1] = (char)(0x80 | (cp >> 6 & 0x3f)), b[2] = (char)(0x80 | (cp & 0x3f));
        n = 3;
    } else {
        b[0] = (char)(0xf0 | cp >> 18), b[1] = (char)(0x80 | (cp >> 12 & 0x3f));
        b[2] = (char)(0x80 | (cp >> 6 & 0x3f)), b[3] = (char)(0x80 | (cp & 0x3f)), n = 4;
    }
    sb_buf_append(out, b, n);
}

/* Expands the references of escaped text as an XML reader would; the text holds no '<', '>', '"', '\'' raw. */
static void unescape(sb_str_t e, sb_buf_t *out)
{
    static const char *const names[] = {"&amp;", "&lt;", "&gt;", "&quot;", "&apos;"};
    static const char chars[] = "&<>\"'";
    for (size_t i = 0; i < e.len;) {
        char c = e.p[i];
        CHECK(c != '<' && c != '>' && c != '"' && c != '\'');
        CHECK((unsigned char)c >= 0x20); /* tab, LF, CR come as references; other controls not at all */
        if (c != '&') {
            sb_buf_append(out, &c, 1);
            i++;
            continue;
        }
        bool done = false;
        for (size_t k = 0; k < 5 && !done; k++) {
            size_t n = strlen(names[k]);
            if (e.len - i >= n && memcmp(e.p + i, names[k], n) == 0) {
                sb_buf_append(out, &chars[k], 1);
                i += n;
                done = true;
            }
        }
        if (done)
            continue;
        CHECK(e.len - i >= 4 && e.p[i + 1] == '#');
        unsigned long cp = 0;
        for (i += 2; i < e.len && e.p[i] >= '0' && e.p[i] <= '9'; i++)
            cp = cp * 10 + (unsigned long)(e.p[i] - '0');
        CHECK(i < e.len && e.p[i] == ';');
        i++;
        put_utf8(out, cp);
    }
}

static void check_escape(sb_str_t s)
{
    sb_buf_t esc, want, got;
    sb_buf_init(&esc);
    sb_buf_init(&want);
    sb_buf_init(&got);
    sb_twiml_escape(&esc, s);
    CHECK(sb_utf8_valid(esc.p, esc.len));
    expected(s, &want);
    unescape(sb_str(esc.p, esc.len), &got);
    CHECK(sb_str_eq(sb_str(got.p, got.len), sb_str(want.p, want.len)));
    sb_buf_cleanup(&esc);
    sb_buf_cleanup(&want);
    sb_buf_cleanup(&got);
}

static void check_written(sb_buf_t *out)
{
    char err[160];
    int rc = sb_twiml_check(sb_str(out->p, out->len), err, sizeof err);
    CHECK(rc == 0);
    out->len = 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    sb_str_t input = sb_str(size ? (const char *)data : "", size);
    check_doc(input);

    /* up to five NUL-terminated strings: the input split at its NUL bytes */
    char *copy = malloc(size + 1);
    memcpy(copy, input.p, size);
    copy[size] = '\0';
    const char *s[5] = {"", "", "", "", ""};
    size_t n = 0, at = 0;
    while (n < 5 && at <= size) {
        s[n++] = copy + at;
        at += strlen(copy + at) + 1;
    }
    for (size_t k = 0; k < n; k++)
        check_escape(sb_str_cstr(s[k]));

    sb_buf_t out;
    sb_buf_init(&out);
    sb_twiml_param_t params[2] = {{s[1], s[2]}, {s[3], s[4]}};
    sb_twiml_stream(&out, s[0], params, 2);
    check_written(&out);
    sb_twiml_stream(&out, s[0], params, size & 1); /* also none at all */
    check_written(&out);
    sb_twiml_dial(&out, s[1]);
    check_written(&out);
    sb_twiml_say_hangup(&out, s[2]);
    check_written(&out);
    sb_twiml_reject(&out, size & 2 ? "busy" : "rejected");
    check_written(&out);
    sb_twiml_hangup(&out);
    check_written(&out);
    sb_buf_cleanup(&out);
    free(copy);
    return 0;
}
