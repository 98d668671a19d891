/* libFuzzer target for proto/jwt: token verification on hostile input, and sign/verify consistency.
 *
 * Each input is used three ways:
 *   1. as a token, verified under a fixed key: the result must be one of the documented codes; a success (which
 *      needs a correctly signed input, e.g. from the seed corpus) must satisfy everything verification promises and
 *      must fail under another key;
 *   2. as a header and a payload (the first byte gives the header's length), signed verbatim with sb_jwt_sign_raw
 *      and verified: the signature is right by construction, so the result must never be SB_JWT_ESIG unless the
 *      token outgrew the limit, success implies alg "HS256" and good claims, and changing any one character of the
 *      token (position and replacement from the input) must make verification fail;
 *   3. as a tenant id (its first bytes), issued and verified back: the tenant must come back byte for byte.
 * Any violation traps. */
#include "tests/fuzz/fuzz.h"
#include "proto/jwt.h"

#include "proto/err.h"
#include "proto/str.h"

#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>


#define NOW 1700000000

static const sb_str_t key = SB_STR("fuzz-key-fuzz-key-fuzz-key-fuzz!");      /* 32 bytes */
static const sb_str_t other_key = SB_STR("fuzz-key-fuzz-key-fuzz-key-fuzz?");

static bool known_code(int rc)
{
    return rc == 0 || rc == SB_JWT_EMALFORMED || rc == SB_JWT_EALG || rc == SB_JWT_ESIG || rc == SB_JWT_EEXPIRED ||
           rc == SB_JWT_ENOTYET;
}

static size_t count_dots(sb_str_t t)
{
    size_t n = 0;
    for (size_t i = 0; i < t.len; i++)
        n += t.p[i] == '.';
    return n;
}

/* What a success promises about the token and the claims. */
static void check_success(sb_str_t token, const sb_jwt_claims_t *c)
{
    CHECK(token.len <= SB_JWT_MAX_LEN);
    CHECK(count_dots(token) == 2);
    CHECK(c->tenant_len >= 1 && c->tenant_len <= SB_JWT_ID_MAX);
    CHECK(c->tenant[c->tenant_len] == '\0' && strlen(c->tenant) == c->tenant_len);
    CHECK(c->sub_len <= SB_JWT_ID_MAX && c->sub[c->sub_len] == '\0' && strlen(c->sub) == c->sub_len);
    CHECK(c->exp > NOW);
    sb_jwt_claims_t c2;
    CHECK(sb_jwt_verify(token, other_key, NOW, &c2) == SB_JWT_ESIG);
    CHECK(c2.tenant_len == 0 && c2.tenant[0] == '\0');
}

static void check_failure(const sb_jwt_claims_t *c)
{
    static const sb_jwt_claims_t zero; /* static: padding bytes are zero too, as memset leaves them */
    CHECK(memcmp(c, &zero, sizeof zero) == 0);
}

static uint32_t hash(const uint8_t *p, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 16777619u;
    return h;
}

/* 1: the input as a token. */
static void as_token(const uint8_t *data, size_t size)
{
    sb_jwt_claims_t c;
    sb_str_t token = sb_str((const char *)data, size);
    int rc = sb_jwt_verify(token, key, NOW, &c);
    CHECK(known_code(rc));
    if (rc == 0)
        check_success(token, &c);
    else
        check_failure(&c);
    if (size > SB_JWT_MAX_LEN)
        CHECK(rc == SB_JWT_EMALFORMED);
}

/* 2: the input as header and payload, signed correctly. */
static void as_parts(const uint8_t *data, size_t size)
{
    if (size < 1)
        return;
    size_t hlen = data[0] < size - 1 ? data[0] : size - 1;
    sb_str_t header = sb_str((const char *)data + 1, hlen);
    sb_str_t payload = sb_str((const char *)data + 1 + hlen, size - 1 - hlen);
    sb_buf_t b;
    sb_jwt_claims_t c;

    sb_buf_init(&b);
    CHECK(sb_jwt_sign_raw(header, payload, key, &b) == 0);
    sb_str_t token = sb_str(b.p, b.len);
    int rc = sb_jwt_verify(token, key, NOW, &c);
    CHECK(known_code(rc));
    if (token.len <= SB_JWT_MAX_LEN)
        CHECK(rc != SB_JWT_ESIG);
    else
        CHECK(rc == SB_JWT_EMALFORMED);

    if (rc == 0) {
        check_success(token, &c);
        json_t *h = json_loadb(header.p, header.len, JSON_REJECT_DUPLICATES, NULL);
        CHECK(json_is_object(h));
        const json_t *alg = json_object_get(h, "alg");
        CHECK(json_is_string(alg) && strcmp(json_string_value(alg), "HS256") == 0 && json_string_length(alg) == 5);
        CHECK(json_object_get(h, "crit") == NULL);
        json_decref(h);
        json_t *p = json_loadb(payload.p, payload.len, JSON_REJECT_DUPLICATES, NULL);
        CHECK(json_is_object(p));
        CHECK(json_is_integer(json_object_get(p, "exp")));
        CHECK(json_integer_value(json_object_get(p, "exp")) == c.exp);
        const json_t *t = json_object_get(p, "tenant");
        CHECK(json_is_string(t) && json_string_length(t) == c.tenant_len &&
              memcmp(json_string_value(t), c.tenant, c.tenant_len) == 0);
        json_decref(p);

        /* any one-character change is refused */
        uint32_t h32 = hash(data, size);
        size_t pos = h32 % token.len;
        char repl = "A_-.0z="[(h32 >> 16) % 7];
        if (b.p[pos] == repl)
            repl = repl == 'A' ? 'B' : 'A';
        b.p[pos] = repl;
        sb_jwt_claims_t c2;
        CHECK(sb_jwt_verify(token, key, NOW, &c2) != 0);
        check_failure(&c2);
    } else {
        check_failure(&c);
    }
    sb_buf_cleanup(&b);
}

/* 3: the input as a tenant id. */
static void as_tenant(const uint8_t *data, size_t size)
{
    size_t n = size < SB_JWT_ID_MAX + 8 ? size : SB_JWT_ID_MAX + 8;
    sb_str_t tenant = sb_str((const char *)data, n);
    sb_buf_t b;
    sb_jwt_claims_t c;

    sb_buf_init(&b);
    int rc = sb_jwt_issue(tenant, SB_STR("fuzz"), NOW, 60, key, &b);
    CHECK(rc == 0 || rc == SB_EINVAL);
    if (rc == 0) {
        CHECK(n >= 1 && n <= SB_JWT_ID_MAX && memchr(tenant.p, 0, n) == NULL);
        CHECK(sb_jwt_verify(sb_str(b.p, b.len), key, NOW, &c) == 0);
        CHECK(c.tenant_len == n && memcmp(c.tenant, tenant.p, n) == 0);
        CHECK(strcmp(c.sub, "fuzz") == 0 && c.iat == NOW && c.exp == NOW + 60);
        CHECK(sb_jwt_verify(sb_str(b.p, b.len), key, NOW + 60, &c) == SB_JWT_EEXPIRED);
    } else {
        CHECK(b.len == 0);
    }
    sb_buf_cleanup(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    as_token(data, size);
    as_parts(data, size);
    as_tenant(data, size);
    return 0;
}
