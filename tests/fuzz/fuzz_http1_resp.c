/* libFuzzer target for proto/http1's response head parser (sb_http1_parse_response), which reads the upgrade answer
 * of whatever server a tenant's media_url names.
 *
 * The first input byte chooses max_head (16 to 8192); the rest is what a server sent. A complete head is checked
 * against the contract: CRLF lines only, no control byte but HTAB, the status line as documented (version, a status
 * from 100 to 599 equal to its digits, the reason inside it), every header inside the head with a token name and a
 * trimmed value, names found again by sb_http1_resp_header; every proper prefix needs more, the same bytes with
 * more after them give the same result; and the max_head boundary is exact (0 at or below, SB_E2BIG above, for an
 * input with no complete head). Any violation traps. */
#include "tests/fuzz/fuzz.h"
#include "proto/http1.h"

#include "proto/err.h"
#include "proto/str.h"

#include <stdlib.h>
#include <string.h>

static bool within(sb_str_t s, const char *p, size_t len)
{
    return s.p && s.p >= p && s.len <= len && (size_t)(s.p - p) <= len - s.len;
}

static bool tchar(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

static void check_resp(const char *p, size_t head, const sb_http1_resp_t *r)
{
    CHECK(head >= 16 && memcmp(p + head - 4, "\r\n\r\n", 4) == 0);
    for (size_t i = 0; i < head; i++) {
        unsigned char c = (unsigned char)p[i];
        CHECK(c >= 0x20 || c == '\t' || c == '\r' || c == '\n');
        if (c == '\n')
            CHECK(i > 0 && p[i - 1] == '\r');
        if (c == '\r')
            CHECK(i + 1 < head && p[i + 1] == '\n');
    }
    CHECK(memcmp(p, "HTTP/1.", 7) == 0 && (r->minor == 0 || r->minor == 1) && p[7] - '0' == r->minor);
    CHECK(r->status >= 100 && r->status <= 599);
    CHECK(r->status == (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0'));
    CHECK(within(r->reason, p, head));
    CHECK(r->nheaders >= 0 && r->nheaders <= SB_HTTP1_MAX_HEADERS);
    for (int i = 0; i < r->nheaders; i++) {
        const sb_http1_header_t *h = &r->headers[i];
        CHECK(within(h->name, p, head) && within(h->value, p, head) && h->name.len > 0);
        for (size_t k = 0; k < h->name.len; k++)
            CHECK(tchar((unsigned char)h->name.p[k]));
        CHECK(h->name.p[h->name.len] == ':');
        if (h->value.len)
            CHECK(h->value.p[0] != ' ' && h->value.p[0] != '\t' && h->value.p[h->value.len - 1] != ' ' &&
                  h->value.p[h->value.len - 1] != '\t');
        /* the first header of that name is found by name (NUL-terminated copy) */
        char name[256];
        if (h->name.len < sizeof name) {
            memcpy(name, h->name.p, h->name.len);
            name[h->name.len] = '\0';
            const sb_str_t *v = sb_http1_resp_header(r, name);
            CHECK(v != NULL && v->p <= h->value.p);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    static const size_t maxes[4] = {16, 64, 1024, 8192};
    size_t max = maxes[data[0] & 3];
    const char *p = (const char *)data + 1;
    size_t n = size - 1;
    sb_http1_resp_t r, r2;

    /* a copy of exactly n bytes, so ASan sees any read past the end */
    char *copy = malloc(n ? n : 1);
    if (n)
        memcpy(copy, p, n);
    int rc = sb_http1_parse_response(copy, n, max, &r);
    CHECK(rc > 0 || rc == 0 || rc == SB_E2BIG || rc == SB_EPARSE);
    if (rc > 0) {
        CHECK((size_t)rc <= n && (size_t)rc <= max);
        check_resp(copy, (size_t)rc, &r);
        /* every proper prefix needs more, or is already an error (a bare CR or LF is seen early); never a head */
        for (size_t k = 0; k < (size_t)rc; k++) {
            int pr = sb_http1_parse_response(copy, k, max, &r2);
            CHECK(pr == 0 || pr == SB_EPARSE);
        }
        /* the head alone gives the same */
        CHECK(sb_http1_parse_response(copy, (size_t)rc, max, &r2) == rc && r2.status == r.status &&
              r2.nheaders == r.nheaders);
    } else if (rc == 0) {
        CHECK(n <= max);
    } else if (rc == SB_E2BIG && n > max) {
        /* too long with no head in max bytes: max bytes alone need more (or hold too many headers) */
        int pr = sb_http1_parse_response(copy, max, max, &r2);
        CHECK(pr == 0 || pr == SB_EPARSE || pr == SB_E2BIG);
    }
    free(copy);
    return 0;
}
