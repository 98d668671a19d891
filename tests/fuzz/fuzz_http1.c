/* libFuzzer target for proto/http1: the request head parser, the chunked body decoder and percent-decoding.
 *
 * The input is the raw bytes a client would send. It is parsed as a head with max_head 8192; a complete head is
 * checked against the contract (every sb_str_t inside the head, counts and flags consistent, the head really is
 * CRLF-only with no bare CR or LF nor control bytes, every proper prefix "needs more", the max_head boundary exact)
 * and its path and query go through the percent-decoder. What follows the head (or the whole input when no head
 * was parsed) is fed to the chunked decoder once whole and once in pseudo-random pieces (seeded from the input):
 * both must agree on result, bytes used and body, and the body must stay within max_body. Any violation traps. */
#include "tests/fuzz/fuzz.h"
#include "proto/http1.h"

#include "proto/err.h"
#include "proto/str.h"

#include <stdint.h>
#include <string.h>
#include <strings.h>

#define MAX_HEAD 8192


static bool within(sb_str_t s, const char *p, size_t len)
{
    return s.p && s.p >= p && s.len <= len && (size_t)(s.p - p) <= len - s.len;
}

static bool tchar(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

static bool ows(char c)
{
    return c == ' ' || c == '\t';
}

/* Percent-decodes s into a fresh buffer and checks the length arithmetic. */
static void check_pct(sb_str_t s)
{
    sb_buf_t out;
    sb_buf_init(&out);
    int rc = sb_http1_pct_decode(s, &out);
    CHECK(rc == 0 || rc == SB_EPARSE);
    if (rc == 0) {
        size_t pcts = 0;
        for (size_t i = 0; i < s.len; i++)
            pcts += s.p[i] == '%';
        CHECK(out.len == s.len - 2 * pcts);
    } else {
        CHECK(out.len == 0);
    }
    sb_buf_cleanup(&out);
}

/* The contract of a successful parse of p[0..head). */
static void check_req(const char *p, size_t head, const sb_http1_req_t *r)
{
    /* the head is CRLF lines only, ends in an empty line, and holds no control byte but HTAB */
    CHECK(head >= 4 && memcmp(p + head - 4, "\r\n\r\n", 4) == 0);
    for (size_t i = 0; i < head; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c == '\r')
            CHECK(i + 1 < head && p[i + 1] == '\n');
        else if (c == '\n')
            CHECK(i > 0 && p[i - 1] == '\r');
        else
            CHECK(c >= 0x20 ? c != 0x7f : c == '\t');
    }

    size_t skip = 0;
    while (skip + 1 < head && p[skip] == '\r' && p[skip + 1] == '\n')
        skip += 2;
    CHECK(r->method.p == p + skip);
    CHECK(r->method.len >= 1 && r->method.len <= SB_HTTP1_MAX_METHOD && within(r->method, p, head));
    for (size_t i = 0; i < r->method.len; i++)
        CHECK(tchar((unsigned char)r->method.p[i]));
    CHECK(r->target.p == r->method.p + r->method.len + 1 && r->target.len >= 1 && within(r->target, p, head));
    for (size_t i = 0; i < r->target.len; i++)
        CHECK(r->target.p[i] > 0x20 && r->target.p[i] < 0x7f);
    CHECK(r->target.p[0] == '/' || (r->target.len == 1 && sb_str_eq_cstr(r->method, "OPTIONS")));
    CHECK(r->path.p == r->target.p && within(r->path, p, head) && within(r->query, p, head));
    const char *q = memchr(r->target.p, '?', r->target.len);
    if (q) {
        CHECK(r->path.len == (size_t)(q - r->target.p) && r->query.p == q + 1);
        CHECK(r->path.len + 1 + r->query.len == r->target.len);
    } else {
        CHECK(r->path.len == r->target.len && r->query.len == 0);
    }
    CHECK(r->minor == 0 || r->minor == 1);
    CHECK(memcmp(r->target.p + r->target.len, r->minor ? " HTTP/1.1\r\n" : " HTTP/1.0\r\n", 11) == 0);

    CHECK(r->nheaders >= 0 && r->nheaders <= SB_HTTP1_MAX_HEADERS);
    int hosts = 0;
    for (int i = 0; i < r->nheaders; i++) {
        sb_str_t n = r->headers[i].name, v = r->headers[i].value;
        CHECK(n.len >= 1 && within(n, p, head) && within(v, p, head));
        CHECK(n.p > r->target.p && n.p[-1] == '\n' && n.p[n.len] == ':');
        for (size_t k = 0; k < n.len; k++)
            CHECK(tchar((unsigned char)n.p[k]));
        CHECK(v.len == 0 || (!ows(v.p[0]) && !ows(v.p[v.len - 1])));
        for (size_t k = 0; k < v.len; k++)
            CHECK(v.p[k] != '\r' && v.p[k] != '\n');
        hosts += n.len == 4 && strncasecmp(n.p, "host", 4) == 0;
    }
    CHECK(hosts <= 1 && (r->minor == 0 || hosts == 1));
    CHECK(r->content_length >= -1 && r->content_length <= 999999999999999999LL);
    if (r->chunked)
        CHECK(r->content_length == -1 && r->minor == 1 && sb_http1_header(r, "transfer-encoding"));
    else
        CHECK(sb_http1_header(r, "transfer-encoding") == NULL);
    CHECK((r->content_length >= 0) == (sb_http1_header(r, "content-length") != NULL));
    if (r->upgrade)
        CHECK(r->minor == 1 && sb_http1_header(r, "upgrade") && sb_http1_header(r, "connection"));
    if (r->expect_continue)
        CHECK(r->minor == 1 && sb_http1_header(r, "expect"));
    if (r->minor == 0 && r->keep_alive)
        CHECK(sb_http1_header(r, "connection"));
    if (r->minor == 1 && !r->keep_alive)
        CHECK(sb_http1_header(r, "connection"));
}

static uint32_t xorshift(uint32_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 17;
    *x ^= *x << 5;
    return *x;
}

/* Feeds body[0..len) in pieces (whole when x is NULL) until the decoder stops asking for more. */
static int feed(const char *body, size_t len, size_t max_body, sb_buf_t *out, size_t *total, uint32_t *x)
{
    sb_http1_chunked_t c;
    sb_http1_chunked_init(&c);
    int rc = 0;
    size_t off = 0;

    *total = 0;
    do {
        size_t n = len - off;
        if (x) {
            uint32_t r = xorshift(x);
            size_t want = (r & 3) == 0 ? 1 : (r & 3) == 1 ? 1 + (r >> 8) % 8 : 1 + (r >> 8) % 200;
            if (want < n)
                n = want;
        }
        size_t used = (size_t)-1;
        rc = sb_http1_chunked_feed(&c, body + off, n, out, max_body, &used);
        CHECK(rc == 0 || rc == 1 || rc == SB_EPARSE || rc == SB_E2BIG);
        CHECK(used <= n);
        CHECK(rc != 0 || used == n);
        CHECK(out->len <= max_body);
        off += used;
        *total += used;
    } while (rc == 0 && off < len);

    if (rc != 0) { /* finished or failed: sticky, nothing more consumed */
        size_t again = 1, before = out->len;
        CHECK(sb_http1_chunked_feed(&c, body, len, out, max_body, &again) == rc && again == 0);
        CHECK(out->len == before);
    }
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *p = (const char *)data;
    sb_http1_req_t req;
    memset(&req, 0xa5, sizeof req);

    int rc = sb_http1_parse(p, size, MAX_HEAD, &req);
    CHECK(rc >= 0 || rc == SB_E2BIG || rc == SB_EPARSE || rc == SB_ERANGE || rc == SB_EINVAL);
    if (rc == 0) {
        CHECK(size <= MAX_HEAD);
        for (size_t i = 0; i < size; i++)
            CHECK(p[i] != '\n' || (i > 0 && p[i - 1] == '\r'));
    }

    const char *body = p;
    size_t blen = size;
    if (rc > 0) {
        size_t head = (size_t)rc;
        CHECK(head <= size && head <= MAX_HEAD);
        check_req(p, head, &req);
        check_pct(req.path);
        check_pct(req.query);

        sb_http1_req_t again;
        CHECK(sb_http1_parse(p, head - 1, MAX_HEAD, &again) == 0);
        CHECK(sb_http1_parse(p, head / 2, MAX_HEAD, &again) == 0);
        CHECK(sb_http1_parse(p, size, head, &again) == rc);
        CHECK(sb_http1_parse(p, size, head - 1, &again) == SB_E2BIG);
        body = p + head;
        blen = size - head;
    }

    /* the chunked decoder, whole and in pieces, with a limit taken from the input */
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < size; i++)
        h = (h ^ data[i]) * 16777619u;
    size_t max_body = (h & 3) == 0 ? (size_t)-1 : (h >> 2) % 4096;

    sb_buf_t whole, pieces;
    size_t used_whole, used_pieces;
    sb_buf_init(&whole);
    sb_buf_init(&pieces);
    int rw = feed(body, blen, max_body, &whole, &used_whole, NULL);
    uint32_t x = h | 1;
    int rp = feed(body, blen, max_body, &pieces, &used_pieces, &x);
    CHECK(rw == rp && used_whole == used_pieces);
    CHECK(whole.len == pieces.len && (whole.len == 0 || memcmp(whole.p, pieces.p, whole.len) == 0));
    CHECK(whole.len <= used_whole);
    if (rw == 1)
        CHECK(used_whole >= 5 && memcmp(body + used_whole - 2, "\r\n", 2) == 0);
    sb_buf_cleanup(&whole);
    sb_buf_cleanup(&pieces);

    check_pct(sb_str(p, size < 4096 ? size : 4096));
    return 0;
}
