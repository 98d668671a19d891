/* libFuzzer target for proto/form: form-urlencoded parsing.
 *
 * The input is a request body. It is parsed, and the result (code and pairs) must equal what a slow reference
 * computes here by the letter of form.h: split on '&', skip empty segments, cut at the first '=', decode '+' and %XX
 * with sb_buf_t, refuse more than SB_FORM_MAX_PAIRS pairs first, then per pair in order a bad escape, an overlong
 * name, invalid UTF-8. A successful form is then checked against the contract (every name and value NUL-terminated
 * inside the form's one allocation, valid UTF-8, lookups return the first pair of that name), re-encoded with every
 * byte escaped and parsed again, which must give the same pairs. A failed parse must leave the form empty. Any
 * violation traps. */
#include "tests/fuzz/fuzz.h"
#include "proto/form.h"

#include "proto/err.h"
#include "proto/line.h"
#include "proto/str.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>


static int hex(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (unsigned char)(c | 0x20);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Reference decoding of one raw name or value: appends the decoded bytes to out, 0 or SB_EPARSE. */
static int ref_decode(const char *p, size_t n, sb_buf_t *out)
{
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (c == '%') {
            if (i + 2 >= n || hex((unsigned char)p[i + 1]) < 0 || hex((unsigned char)p[i + 2]) < 0)
                return SB_EPARSE;
            c = (char)(hex((unsigned char)p[i + 1]) * 16 + hex((unsigned char)p[i + 2]));
            i += 2;
        } else if (c == '+') {
            c = ' ';
        }
        sb_buf_append(out, &c, 1);
    }
    return 0;
}

/* The reference result: the code, and on 0 the pairs serialised as (len, bytes) name, value, ... in log. */
static int reference(const char *p, size_t len, sb_buf_t *log, size_t *npairs)
{
    size_t count = 0, start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i == len || p[i] == '&') {
            if (i > start)
                count++;
            start = i + 1;
        }
    }
    if (count > SB_FORM_MAX_PAIRS)
        return SB_E2BIG;

    *npairs = count;
    start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i < len && p[i] != '&')
            continue;
        const char *seg = p + start;
        size_t n = i - start;
        start = i + 1;
        if (n == 0)
            continue;
        size_t cut = n;
        for (size_t k = 0; k < n; k++) {
            if (seg[k] == '=') {
                cut = k;
                break;
            }
        }
        sb_buf_t name, value;
        sb_buf_init(&name);
        sb_buf_init(&value);
        int rc = ref_decode(seg, cut, &name);
        if (rc == 0 && name.len > SB_FORM_MAX_NAME)
            rc = SB_E2BIG;
        if (rc == 0 && !sb_utf8_valid(name.p, name.len))
            rc = SB_EPARSE;
        if (rc == 0)
            rc = cut < n ? ref_decode(seg + cut + 1, n - cut - 1, &value) : 0;
        if (rc == 0 && !sb_utf8_valid(value.p, value.len))
            rc = SB_EPARSE;
        if (rc == 0) {
            sb_buf_append(log, &name.len, sizeof name.len);
            sb_buf_append(log, name.p, name.len);
            sb_buf_append(log, &value.len, sizeof value.len);
            sb_buf_append(log, value.p, value.len);
        }
        sb_buf_cleanup(&name);
        sb_buf_cleanup(&value);
        if (rc)
            return rc;
    }
    return 0;
}

static void serialise(const sb_form_t *f, sb_buf_t *log)
{
    for (size_t i = 0; i < f->n; i++) {
        sb_buf_append(log, &f->pairs[i].name.len, sizeof f->pairs[i].name.len);
        sb_buf_append(log, f->pairs[i].name.p, f->pairs[i].name.len);
        sb_buf_append(log, &f->pairs[i].value.len, sizeof f->pairs[i].value.len);
        sb_buf_append(log, f->pairs[i].value.p, f->pairs[i].value.len);
    }
}

static bool buf_eq(const sb_buf_t *a, const sb_buf_t *b)
{
    return a->len == b->len && (a->len == 0 || memcmp(a->p, b->p, a->len) == 0);
}

/* Appends s with every byte escaped, using the upper-case or lower-case hex digits, or '+' for spaces. */
static void encode(sb_buf_t *out, sb_str_t s, bool lower)
{
    static const char up[] = "0123456789ABCDEF", low[] = "0123456789abcdef";
    const char *digits = lower ? low : up;
    for (size_t i = 0; i < s.len; i++) {
        unsigned char c = (unsigned char)s.p[i];
        if (c == ' ' && lower) {
            sb_buf_append(out, "+", 1);
            continue;
        }
        char e[3] = {'%', digits[c >> 4], digits[c & 15]};
        sb_buf_append(out, e, 3);
    }
}

static void check_form(const sb_form_t *f, size_t input_len)
{
    CHECK(f->n <= SB_FORM_MAX_PAIRS);
    CHECK((f->n == 0) == (f->pairs == NULL));
    if (f->n == 0)
        return;
    /* the text follows the table in one allocation, at most input_len + 2n bytes long */
    const char *lo = (const char *)(f->pairs + f->n), *hi = lo + input_len + 2 * f->n;
    const char *prev = lo;
    for (size_t i = 0; i < f->n; i++) {
        sb_str_t name = f->pairs[i].name, value = f->pairs[i].value;
        CHECK(name.len <= SB_FORM_MAX_NAME);
        CHECK(name.p >= prev && name.p + name.len < hi && name.p[name.len] == '\0');
        CHECK(value.p > name.p + name.len && value.p + value.len < hi && value.p[value.len] == '\0');
        prev = value.p + value.len + 1;
        CHECK(sb_utf8_valid(name.p, name.len) && sb_utf8_valid(value.p, value.len));

        const sb_form_pair_t *found = sb_form_find(f, name);
        CHECK(found && found <= &f->pairs[i] && sb_str_eq(found->name, name));
        for (const sb_form_pair_t *q = f->pairs; q < found; q++)
            CHECK(!sb_str_eq(q->name, name));
        if (!memchr(name.p, '\0', name.len))
            CHECK(sb_form_find_cstr(f, name.p) == found);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *p = (const char *)data;
    sb_form_t f;
    sb_buf_t got, want;
    size_t nref = 0;

    sb_buf_init(&got);
    sb_buf_init(&want);

    int rc = sb_form_parse(&f, sb_str(size ? p : NULL, size));
    int ref = reference(p, size, &want, &nref);
    CHECK(rc == ref);
    if (rc != 0) {
        CHECK(f.n == 0 && f.pairs == NULL);
        goto out;
    }
    CHECK(f.n == nref);
    check_form(&f, size);
    serialise(&f, &got);
    CHECK(buf_eq(&got, &want));

    /* round trip through the most escaped encoding, once per hex case */
    for (int lower = 0; lower <= 1; lower++) {
        sb_buf_t enc, again;
        sb_form_t g;
        sb_buf_init(&enc);
        sb_buf_init(&again);
        for (size_t i = 0; i < f.n; i++) {
            if (i)
                sb_buf_append(&enc, "&", 1);
            encode(&enc, f.pairs[i].name, lower);
            sb_buf_append(&enc, "=", 1);
            encode(&enc, f.pairs[i].value, lower);
        }
        CHECK(sb_form_parse(&g, sb_str(enc.p, enc.len)) == 0);
        CHECK(g.n == f.n);
        serialise(&g, &again);
        CHECK(buf_eq(&again, &got));
        sb_form_cleanup(&g);
        sb_buf_cleanup(&enc);
        sb_buf_cleanup(&again);
    }

out:
    sb_form_cleanup(&f);
    CHECK(f.n == 0 && f.pairs == NULL);
    sb_buf_cleanup(&got);
    sb_buf_cleanup(&want);
    return 0;
}
