/* Unit tests for proto/jwt: the RFC 7515 appendix A.1 HS256 example through the signing path, issue/verify round
 * trips, the pinned algorithm ("none", "HS512", "RS256", missing, wrong case or type), time claims (exp, nbf), strict
 * base64url (padding, alphabet, unused bits: no second spelling of a signature), token shape and length bound,
 * required claims, and the distinct error codes. */
#include "proto/jwt.h"

#include "proto/codec.h"
#include "proto/err.h"
#include "tests/tap.h"

#include <stdlib.h>
#include <string.h>

#define NOW 1700000000

static const sb_str_t key = SB_STR("0123456789abcdef0123456789abcdef-inbox");

/* RFC 7515 A.1: header and payload bytes (with their CRLFs), the JWK "k", and the resulting token. */
static const char a1_header[] = "{\"typ\":\"JWT\",\r\n \"alg\":\"HS256\"}";
static const char a1_payload[] = "{\"iss\":\"joe\",\r\n \"exp\":1300819380,\r\n \"http://example.com/is_root\":true}";
static const char a1_k[] = "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow";
static const char a1_token[] =
    "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9"
    ".eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ"
    ".dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";

static int verify(const char *token, int64_t now, sb_jwt_claims_t *c)
{
    return sb_jwt_verify(sb_str_cstr(token), key, now, c);
}

/* Signs header and payload JSON verbatim under the test key; returns a static copy of the token. */
static const char *raw(const char *header, const char *payload)
{
    static char out[8192];
    sb_buf_t b;
    sb_buf_init(&b);
    int rc = sb_jwt_sign_raw(sb_str_cstr(header), sb_str_cstr(payload), key, &b);
    snprintf(out, sizeof out, "%s", rc == 0 ? sb_buf_cstr(&b) : "");
    sb_buf_cleanup(&b);
    return out;
}

static const char *good_claims = "{\"sub\":\"agent-7\",\"tenant\":\"t-42\",\"iat\":1699999000,\"exp\":1700000600}";

TEST(rfc7515_a1)
{
    unsigned char k[64];
    size_t kn = 0;
    sb_buf_t b;

    is_int(sb_codec_b64_decode(SB_STR(a1_k), SB_B64_URL, k, sizeof k, &kn), 0, "JWK k decodes");
    is_int((long long)kn, 64, "a 64-byte key");
    sb_buf_init(&b);
    is_int(sb_jwt_sign_raw(SB_STR(a1_header), SB_STR(a1_payload), sb_str((char *)k, kn), &b), 0, "sign_raw");
    is_str(sb_buf_cstr(&b), a1_token, "the RFC's token, signature dBjftJeZ4CVP-...");
    sb_buf_cleanup(&b);

    /* verification of the same token: the signature holds; exp then decides, then the missing tenant claim */
    sb_jwt_claims_t c;
    is_int(sb_jwt_verify(SB_STR(a1_token), sb_str((char *)k, kn), 1300819380, &c), SB_JWT_EEXPIRED,
           "expired at exp");
    is_int(sb_jwt_verify(SB_STR(a1_token), sb_str((char *)k, kn), 1300819379, &c), SB_JWT_EMALFORMED,
           "valid signature, but no tenant claim");
    k[0] ^= 1;
    is_int(sb_jwt_verify(SB_STR(a1_token), sb_str((char *)k, kn), 1300819379, &c), SB_JWT_ESIG, "another key");
}

TEST(round_trip)
{
    sb_buf_t b;
    sb_jwt_claims_t c;

    sb_buf_init(&b);
    sb_buf_puts(&b, "prefix:");
    is_int(sb_jwt_issue(SB_STR("tenant-1"), SB_STR("agent-9"), NOW, 600, key, &b), 0, "issue");
    ok(strncmp(sb_buf_cstr(&b), "prefix:eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.", 44) == 0,
       "appended, header {\"alg\":\"HS256\",\"typ\":\"JWT\"}");
    sb_str_t tok = sb_str(b.p + 7, b.len - 7);
    is_int(sb_jwt_verify(tok, key, NOW, &c), 0, "verifies at issue time");
    is_str(c.tenant, "tenant-1", "tenant claim returned");
    is_int((long long)c.tenant_len, 8, "tenant length");
    is_str(c.sub, "agent-9", "sub claim returned");
    is_int(c.iat, NOW, "iat");
    is_int(c.exp, NOW + 600, "exp");
    is_int(sb_jwt_verify(tok, key, NOW + 599, &c), 0, "valid one second before exp");
    is_int(sb_jwt_verify(tok, key, NOW + 600, &c), SB_JWT_EEXPIRED, "expired at exp (exp <= now)");
    is_str(c.tenant, "", "claims cleared on failure");
    is_int(sb_jwt_verify(tok, key, NOW + 100000, &c), SB_JWT_EEXPIRED, "expired long after");
    is_int(sb_jwt_verify(tok, SB_STR("0123456789abcdef0123456789abcdef-other"), NOW, &c), SB_JWT_ESIG, "wrong key");
    sb_buf_cleanup(&b);

    is_int(sb_jwt_issue(SB_STR("t"), sb_str(NULL, 0), NOW, 1, key, &b), 0, "issue without sub");
    is_int(sb_jwt_verify(sb_str(b.p, b.len), key, NOW, &c), 0, "verifies");
    is_str(c.sub, "", "no sub");
    is_int((long long)c.sub_len, 0, "sub_len 0");
    sb_buf_cleanup(&b);

    /* sb_jwt_sign with caller-built claims */
    json_t *claims = json_loads(good_claims, 0, NULL);
    is_int(sb_jwt_sign(claims, key, &b), 0, "sign a claims object");
    is_int(sb_jwt_verify(sb_str(b.p, b.len), key, NOW, &c), 0, "verifies");
    is_str(c.tenant, "t-42", "tenant");
    json_decref(claims);
    sb_buf_cleanup(&b);
}

TEST(alg_pinned)
{
    static const struct {
        const char *header;
        int want;
    } cases[] = {
        {"{\"alg\":\"HS256\"}", 0},
        {"{\"alg\":\"HS256\",\"typ\":\"JWT\",\"kid\":\"1\"}", 0},
        {"{\"alg\":\"none\"}", SB_JWT_EALG},
        {"{\"alg\":\"None\"}", SB_JWT_EALG},
        {"{\"alg\":\"HS512\"}", SB_JWT_EALG},
        {"{\"alg\":\"HS384\"}", SB_JWT_EALG},
        {"{\"alg\":\"RS256\"}", SB_JWT_EALG},
        {"{\"alg\":\"ES256\"}", SB_JWT_EALG},
        {"{\"alg\":\"hs256\"}", SB_JWT_EALG},
        {"{\"alg\":\"HS256 \"}", SB_JWT_EALG},
        {"{\"alg\":\"\"}", SB_JWT_EALG},
        {"{\"alg\":null}", SB_JWT_EALG},
        {"{\"alg\":[\"HS256\"]}", SB_JWT_EALG},
        {"{\"alg\":256}", SB_JWT_EALG},
        {"{\"typ\":\"JWT\"}", SB_JWT_EALG},                      /* missing alg */
        {"{}", SB_JWT_EALG},
        {"{\"ALG\":\"HS256\"}", SB_JWT_EALG},                    /* keys are case-sensitive */
        {"{\"alg\":\"HS256\",\"alg\":\"none\"}", SB_JWT_EMALFORMED}, /* duplicate keys */
        {"{\"alg\":\"none\",\"alg\":\"HS256\"}", SB_JWT_EMALFORMED},
        {"{\"alg\":\"HS256\",\"crit\":[\"exp\"]}", SB_JWT_EMALFORMED},
        {"{\"alg\":\"HS256\\u0000\"}", SB_JWT_EMALFORMED},         /* NUL refused by the parser */
        {"[\"HS256\"]", SB_JWT_EMALFORMED},
        {"\"HS256\"", SB_JWT_EMALFORMED},
        {"{\"alg\":\"HS256\"} ", 0}, /* JSON allows whitespace after the value; the bytes are still signed */
        {"{\"alg\":\"HS256\"}x", SB_JWT_EMALFORMED},
        {"", SB_JWT_EMALFORMED},
    };
    sb_jwt_claims_t c;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        /* each header is signed correctly with the right key: only the header decides */
        is_int(verify(raw(cases[i].header, good_claims), NOW, &c), cases[i].want, "header %s", cases[i].header);
    }

    /* the textbook attack: alg none and an empty signature */
    char tok[512];
    sb_buf_t b;
    sb_buf_init(&b);
    const char *none = "{\"alg\":\"none\",\"typ\":\"JWT\"}";
    sb_codec_b64_append(&b, none, strlen(none), SB_B64_URL);
    sb_buf_puts(&b, ".");
    sb_codec_b64_append(&b, good_claims, strlen(good_claims), SB_B64_URL);
    sb_buf_puts(&b, ".");
    snprintf(tok, sizeof tok, "%s", sb_buf_cstr(&b));
    is_int(verify(tok, NOW, &c), SB_JWT_EALG, "alg none with empty signature");
    sb_buf_cleanup(&b);

    /* HS512 signed with our key as the HMAC key: refused on alg before the signature matters */
    is_int(verify(raw("{\"alg\":\"HS512\"}", good_claims), NOW, &c), SB_JWT_EALG, "HS512 with a real MAC");
}

TEST(time_claims)
{
    sb_jwt_claims_t c;
    is_int(verify(raw("{\"alg\":\"HS256\"}", "{\"tenant\":\"t\",\"exp\":1700000001}"), NOW, &c), 0, "exp = now+1");
    is_int(verify(raw("{\"alg\":\"HS256\"}", "{\"tenant\":\"t\",\"exp\":1700000000}"), NOW, &c), SB_JWT_EEXPIRED,
           "exp = now");
    is_int(verify(raw("{\"alg\":\"HS256\"}", "{\"tenant\":\"t\",\"exp\":-1}"), NOW, &c), SB_JWT_EEXPIRED,
           "negative exp");
    is_int(verify(raw("{\"alg\":\"HS256\"}", "{\"tenant\":\"t\"}"), NOW, &c), SB_JWT_EMALFORMED, "exp missing");
    is_int(verify(raw("{\"alg\":\"HS256\"}", "{\"tenant\":\"t\",\"exp\":\"1800000000\"}"), NOW, &c),
           SB_JWT_EMALFORMED, "exp as a string");
    is_int(verify(raw("{\"alg\":\"HS256\"}", "{\"tenant\":\"t\",\"exp\":1800000000.5}"), NOW, &c), SB_JWT_EMALFORMED,
           "exp as a real");
    is_int(verify(raw("{\"alg\":\"HS256\"}", "{\"tenant\":\"t\",\"exp\":null}"), NOW, &c), SB_JWT_EMALFORMED,
           "exp null");
    is_int(verify(raw("{\"alg\":\"HS256\"}", "{\"tenant\":\"t\",\"exp\":99999999999999999999999}"), NOW, &c),
           SB_JWT_EMALFORMED, "exp beyond 64 bits");
    is_int(verify(raw("{\"alg\":\"HS256\"}", "{\"tenant\":\"t\",\"exp\":1800000000,\"nbf\":1700000001}"), NOW, &c),
           SB_JWT_ENOTYET, "nbf in the future");
    is_int(verify(raw("{\"alg\":\"HS256\"}", "{\"tenant\":\"t\",\"exp\":1800000000,\"nbf\":1700000000}"), NOW, &c), 0,
           "nbf = now");
    is_int(verify(raw("{\"alg\":\"HS256\"}", "{\"tenant\":\"t\",\"exp\":1800000000,\"nbf\":\"soon\"}"), NOW, &c),
           SB_JWT_EMALFORMED, "nbf not an integer");
    is_int(verify(raw("{\"alg\":\"HS256\"}", "{\"tenant\":\"t\",\"exp\":1800000000,\"iat\":\"x\"}"), NOW, &c),
           SB_JWT_EMALFORMED, "iat not an integer");
}

TEST(required_claims)
{
    sb_jwt_claims_t c;
    char payload[512];
    static const char *bad[] = {
        "{\"exp\":1800000000}",                         /* no tenant */
        "{\"tenant\":\"\",\"exp\":1800000000}",         /* empty tenant */
        "{\"tenant\":42,\"exp\":1800000000}",           /* number */
        "{\"tenant\":null,\"exp\":1800000000}",
        "{\"tenant\":\"t\",\"sub\":7,\"exp\":1800000000}", /* sub not a string */
        "[1800000000]",                                 /* not an object */
        "{\"tenant\":\"t\",\"exp\":1800000000,\"tenant\":\"u\"}", /* duplicate */
        "{\"tenant\":\"t\",\"exp\":1800000000",         /* truncated JSON */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        is_int(verify(raw("{\"alg\":\"HS256\"}", bad[i]), NOW, &c), SB_JWT_EMALFORMED, "claims %s", bad[i]);

    char t[SB_JWT_ID_MAX + 2];
    memset(t, 'x', sizeof t);
    t[SB_JWT_ID_MAX] = '\0';
    snprintf(payload, sizeof payload, "{\"tenant\":\"%s\",\"exp\":1800000000}", t);
    is_int(verify(raw("{\"alg\":\"HS256\"}", payload), NOW, &c), 0, "tenant of SB_JWT_ID_MAX bytes");
    is_int((long long)c.tenant_len, SB_JWT_ID_MAX, "whole tenant returned");
    t[SB_JWT_ID_MAX] = 'x';
    t[SB_JWT_ID_MAX + 1] = '\0';
    snprintf(payload, sizeof payload, "{\"tenant\":\"%s\",\"exp\":1800000000}", t);
    is_int(verify(raw("{\"alg\":\"HS256\"}", payload), NOW, &c), SB_JWT_EMALFORMED, "tenant one byte too long");
    is_int(verify(raw("{\"alg\":\"HS256\"}", "{\"tenant\":\"t\\u00e9\\ud83d\\ude00\",\"exp\":1800000000}"), NOW, &c), 0,
           "unicode tenant");
    is_str(c.tenant, "t\xc3\xa9\xf0\x9f\x98\x80", "returned as UTF-8");

    /* sign refuses claims that verify would refuse, leaving out unchanged */
    sb_buf_t b;
    sb_buf_init(&b);
    sb_buf_puts(&b, "keep");
    static const char *unsignable[] = {
        "{\"exp\":1800000000}",
        "{\"tenant\":\"t\"}",
        "{\"tenant\":\"t\",\"exp\":1.5}",
        "{\"tenant\":\"t\",\"exp\":1800000000,\"nbf\":\"x\"}",
        "[]",
    };
    for (size_t i = 0; i < sizeof unsignable / sizeof unsignable[0]; i++) {
        json_t *j = json_loads(unsignable[i], 0, NULL);
        is_int(sb_jwt_sign(j, key, &b), SB_EINVAL, "sign refuses %s", unsignable[i]);
        json_decref(j);
    }
    json_t *j = json_object();
    json_object_set_new(j, "tenant", json_stringn("a\0b", 3));
    json_object_set_new(j, "exp", json_integer(1800000000));
    is_int(sb_jwt_sign(j, key, &b), SB_EINVAL, "sign refuses a tenant holding NUL");
    json_decref(j);
    is_str(sb_buf_cstr(&b), "keep", "out unchanged");
    is_int(sb_jwt_issue(SB_STR("t"), SB_STR(""), NOW, 0, key, &b), SB_EINVAL, "ttl 0");
    is_int(sb_jwt_issue(SB_STR("t"), SB_STR(""), NOW, -5, key, &b), SB_EINVAL, "negative ttl");
    is_int(sb_jwt_issue(SB_STR("t"), SB_STR(""), INT64_MAX - 1, 5, key, &b), SB_EINVAL, "exp overflow");
    is_int(sb_jwt_issue(SB_STR("\xff"), SB_STR(""), NOW, 5, key, &b), SB_EINVAL, "invalid UTF-8 tenant");
    is_int(sb_jwt_issue(SB_STR(""), SB_STR(""), NOW, 5, key, &b), SB_EINVAL, "empty tenant");
    is_str(sb_buf_cstr(&b), "keep", "out still unchanged");
    sb_buf_cleanup(&b);
}

TEST(role_and_key)
{
    sb_jwt_claims_t c;
    is_int(verify(raw("{\"alg\":\"HS256\"}", "{\"tenant\":\"7\",\"exp\":1800000000,\"role\":\"agent\","
                                             "\"key_id\":\"9223372036854775807\"}"), NOW, &c), 0,
           "role and key_id read");
    ok(strcmp(c.role, "agent") == 0 && c.key_id == INT64_MAX, "role %s, key_id %lld", c.role, (long long)c.key_id);
    is_int(verify(raw("{\"alg\":\"HS256\"}", "{\"tenant\":\"7\",\"exp\":1800000000}"), NOW, &c), 0, "both optional");
    ok(c.role[0] == '\0' && c.key_id == 0, "absent: empty role, key_id 0");
    static const char *bad[] = {
        "{\"tenant\":\"7\",\"exp\":1800000000,\"role\":7}",
        "{\"tenant\":\"7\",\"exp\":1800000000,\"role\":\"0123456789abcdef\"}", /* 16 bytes */
        "{\"tenant\":\"7\",\"exp\":1800000000,\"role\":\"a\\u0000b\"}",
        "{\"tenant\":\"7\",\"exp\":1800000000,\"key_id\":5}",
        "{\"tenant\":\"7\",\"exp\":1800000000,\"key_id\":\"0\"}",
        "{\"tenant\":\"7\",\"exp\":1800000000,\"key_id\":\"-5\"}",
        "{\"tenant\":\"7\",\"exp\":1800000000,\"key_id\":\"12a\"}",
        "{\"tenant\":\"7\",\"exp\":1800000000,\"key_id\":\"92233720368547758070\"}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        is_int(verify(raw("{\"alg\":\"HS256\"}", bad[i]), NOW, &c), SB_JWT_EMALFORMED, "claims %s", bad[i]);
    json_t *j = json_pack("{s:s,s:I,s:s,s:s}", "tenant", "7", "exp", (json_int_t)1800000000, "role", "readonly",
                          "key_id", "42");
    sb_buf_t b;
    sb_buf_init(&b);
    is_int(sb_jwt_sign(j, key, &b), 0, "sign takes role and key_id");
    is_int(sb_jwt_verify(sb_str(b.p, b.len), key, NOW, &c), 0, "and verifies them");
    ok(strcmp(c.role, "readonly") == 0 && c.key_id == 42, "round trip: %s %lld", c.role, (long long)c.key_id);
    json_object_set_new(j, "key_id", json_integer(42));
    is_int(sb_jwt_sign(j, key, &b), SB_EINVAL, "sign refuses a key_id that is not a string of digits");
    json_decref(j);
    sb_buf_cleanup(&b);
}

TEST(strict_encoding)
{
    sb_jwt_claims_t c;
    char tok[1024], bad[1100];
    snprintf(tok, sizeof tok, "%s", raw("{\"alg\":\"HS256\"}", good_claims));
    size_t len = strlen(tok);
    is_int(verify(tok, NOW, &c), 0, "the base token verifies");

    /* the signature is 43 characters for 256 bits: the last character carries 2 unused bits. Setting one gives a
     * different spelling of the same MAC, which must be refused rather than accepted as the same signature. */
    snprintf(bad, sizeof bad, "%s", tok);
    const char *abc = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    int v = (int)(strchr(abc, bad[len - 1]) - abc);
    bad[len - 1] = abc[v ^ 1];
    is_int(verify(bad, NOW, &c), SB_JWT_EMALFORMED, "non-canonical last signature character refused");

    snprintf(bad, sizeof bad, "%s=", tok);
    is_int(verify(bad, NOW, &c), SB_JWT_EMALFORMED, "padding on the signature");
    const char *d1 = strchr(tok, '.');
    snprintf(bad, sizeof bad, "%.*s=%s", (int)(d1 - tok), tok, d1);
    is_int(verify(bad, NOW, &c), SB_JWT_EMALFORMED, "padding on the header");
    snprintf(bad, sizeof bad, " %s", tok);
    is_int(verify(bad, NOW, &c), SB_JWT_EMALFORMED, "leading blank");
    snprintf(bad, sizeof bad, "%s\n", tok);
    is_int(verify(bad, NOW, &c), SB_JWT_EMALFORMED, "trailing newline");

    /* the std alphabet's + and / are not base64url */
    snprintf(bad, sizeof bad, "%s", tok);
    for (size_t i = len - 43; i < len; i++) {
        if (bad[i] == '-' || bad[i] == '_') {
            bad[i] = bad[i] == '-' ? '+' : '/';
            break;
        }
    }
    if (strcmp(bad, tok) != 0)
        is_int(verify(bad, NOW, &c), SB_JWT_EMALFORMED, "std alphabet in the signature");
    else
        ok(1, "signature has no - or _ (nothing to swap)");

    /* wrong signature length: 31 or 33 bytes of MAC */
    snprintf(bad, sizeof bad, "%.*s", (int)(len - 43), tok);
    sb_buf_t b;
    sb_buf_init(&b);
    sb_buf_puts(&b, bad);
    sb_codec_b64_append(&b, "0123456789012345678901234567890", 31, SB_B64_URL);
    is_int(sb_jwt_verify(sb_str(b.p, b.len), key, NOW, &c), SB_JWT_ESIG, "31-byte signature");
    sb_buf_cleanup(&b);
    sb_buf_puts(&b, bad);
    sb_codec_b64_append(&b, "012345678901234567890123456789012", 33, SB_B64_URL);
    is_int(sb_jwt_verify(sb_str(b.p, b.len), key, NOW, &c), SB_JWT_ESIG, "33-byte signature");
    sb_buf_cleanup(&b);

    /* every single-character substitution anywhere in the token is refused */
    int accepted = 0;
    for (size_t i = 0; i < len; i++) {
        snprintf(bad, sizeof bad, "%s", tok);
        for (const char *r = "A_-.0z"; *r; r++) {
            if (tok[i] == *r)
                continue;
            bad[i] = *r;
            if (verify(bad, NOW, &c) == 0)
                accepted++;
        }
    }
    is_int(accepted, 0, "no one-character change of a valid token verifies");
}

TEST(shape_and_length)
{
    sb_jwt_claims_t c;
    static const char *bad[] = {"", ".", "..", "...", "a", "a.b", "a.b.c.d", ".b.c", "a..c", "a.b.",
                                "eyJhbGciOiJIUzI1NiJ9..c"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = verify(bad[i], NOW, &c);
        ok(rc == SB_JWT_EMALFORMED, "shape \"%s\" refused as malformed (%d)", bad[i], rc);
    }

    /* find a claims padding that makes the token exactly SB_JWT_MAX_LEN long */
    static char pad[SB_JWT_MAX_LEN];
    sb_buf_t b;
    sb_buf_init(&b);
    int found = 0;
    for (size_t n = 2900; n < 3100 && !found; n++) {
        memset(pad, 'p', n);
        pad[n] = '\0';
        json_t *j = json_pack("{s:s, s:I, s:s}", "tenant", "t", "exp", (json_int_t)1800000000, "pad", pad);
        sb_buf_cleanup(&b);
        int rc = sb_jwt_sign(j, key, &b);
        if (rc == 0 && b.len == SB_JWT_MAX_LEN) {
            found = 1;
            is_int(sb_jwt_verify(sb_str(b.p, b.len), key, NOW, &c), 0, "a token of exactly %d verifies",
                   SB_JWT_MAX_LEN);
            sb_buf_cleanup(&b);
            memset(pad, 'p', n + 1);
            pad[n + 1] = '\0';
            json_t *j2 = json_pack("{s:s, s:I, s:s}", "tenant", "t", "exp", (json_int_t)1800000000, "pad", pad);
            sb_buf_puts(&b, "keep");
            is_int(sb_jwt_sign(j2, key, &b), SB_E2BIG, "one more claims byte: sign refuses (E2BIG)");
            is_str(sb_buf_cstr(&b), "keep", "out unchanged");
            json_decref(j2);
        }
        json_decref(j);
    }
    ok(found, "a claims size giving a token of exactly the limit exists");
    sb_buf_cleanup(&b);

    static char big[SB_JWT_MAX_LEN + 2];
    memset(big, 'A', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    is_int(sb_jwt_verify(sb_str(big, SB_JWT_MAX_LEN + 1), key, NOW, &c), SB_JWT_EMALFORMED, "4097 bytes refused");
}

TEST(keys_and_errors)
{
    sb_jwt_claims_t c;
    sb_buf_t b;
    sb_buf_init(&b);
    const sb_str_t short_key = SB_STR("0123456789abcdef0123456789abcde"); /* 31 bytes */
    is_int(sb_jwt_issue(SB_STR("t"), SB_STR(""), NOW, 60, short_key, &b), SB_EINVAL, "sign: 31-byte key refused");
    is_int(sb_jwt_sign_raw(SB_STR("{}"), SB_STR("{}"), short_key, &b), SB_EINVAL, "sign_raw: short key refused");
    is_int((long long)b.len, 0, "nothing appended");
    is_int(sb_jwt_issue(SB_STR("t"), SB_STR(""), NOW, 60, key, &b), 0, "issue");
    is_int(sb_jwt_verify(sb_str(b.p, b.len), short_key, NOW, &c), SB_EINVAL, "verify: short key is EINVAL");
    is_int(sb_jwt_verify(sb_str(b.p, b.len), sb_str(NULL, 0), NOW, &c), SB_EINVAL, "verify: empty key");
    sb_buf_cleanup(&b);

    const int codes[] = {SB_JWT_EMALFORMED, SB_JWT_EALG, SB_JWT_ESIG, SB_JWT_EEXPIRED, SB_JWT_ENOTYET};
    int dup = 0;
    for (size_t i = 0; i < 5; i++) {
        for (size_t k = i + 1; k < 5; k++) {
            if (codes[i] == codes[k] || strcmp(sb_jwt_strerror(codes[i]), sb_jwt_strerror(codes[k])) == 0 ||
                strcmp(sb_jwt_error_code(codes[i]), sb_jwt_error_code(codes[k])) == 0)
                dup++;
        }
    }
    is_int(dup, 0, "codes, messages and API codes are all distinct");
    is_str(sb_jwt_error_code(SB_JWT_EEXPIRED), "token_expired", "expired code");
    is_str(sb_jwt_error_code(SB_JWT_EALG), "token_alg_not_allowed", "alg code");
    is_str(sb_jwt_error_code(SB_JWT_ESIG), "token_bad_signature", "signature code");
    is_str(sb_jwt_error_code(SB_JWT_EMALFORMED), "token_malformed", "malformed code");
    is_str(sb_jwt_error_code(SB_EINVAL), "token_invalid", "anything else");
    is_str(sb_jwt_strerror(SB_EINVAL), sb_strerror(SB_EINVAL), "falls back to sb_strerror");
}

int main(void)
{
    RUN(rfc7515_a1);
    RUN(round_trip);
    RUN(alg_pinned);
    RUN(time_claims);
    RUN(required_claims);
    RUN(role_and_key);
    RUN(strict_encoding);
    RUN(shape_and_length);
    RUN(keys_and_errors);
    return tap_done();
}
