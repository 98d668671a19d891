/* HS256 JWT issue and verification; see jwt.h.
 *
 * Parts are decoded into stack buffers sized from SB_JWT_MAX_LEN, so verification allocates only what jansson needs
 * to parse the two JSON objects. The header is parsed and its alg checked first; the claims are parsed only after the
 * signature has been checked, so unauthenticated bytes reach the JSON parser only in the (small) header. */
#include "proto/jwt.h"

#include "proto/codec.h"
#include "proto/digest.h"

#include <mbedtls/platform_util.h>

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define PART_MAX (SB_JWT_MAX_LEN / 4 * 3 + 2) /* decoded bytes of any part of a token that fits the limit */

static const char jwt_header[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";

/* True if v is a string of at most SB_JWT_ID_MAX bytes without NUL (jansson can hold one; we refuse to). */
static bool id_ok(const json_t *v)
{
    return json_is_string(v) && json_string_length(v) <= SB_JWT_ID_MAX &&
           !memchr(json_string_value(v), '\0', json_string_length(v));
}

/* True if v is a string of 1..19 decimal digits naming a positive id. */
static bool key_id_ok(const json_t *v)
{
    long long id;
    return json_is_string(v) && json_string_length(v) <= 19 &&
           sb_str_to_ll(sb_str(json_string_value(v), json_string_length(v)), 1, INT64_MAX, &id) == 0;
}

/* Checks the types of the claims we read. Returns 0 or SB_JWT_EMALFORMED. */
static int claims_check(const json_t *c)
{
    const json_t *v;

    if (!json_is_object(c))
        return SB_JWT_EMALFORMED;
    v = json_object_get(c, "tenant");
    if (!id_ok(v) || json_string_length(v) == 0)
        return SB_JWT_EMALFORMED;
    v = json_object_get(c, "sub");
    if (v && !id_ok(v))
        return SB_JWT_EMALFORMED;
    if (!json_is_integer(json_object_get(c, "exp")))
        return SB_JWT_EMALFORMED;
    v = json_object_get(c, "nbf");
    if (v && !json_is_integer(v))
        return SB_JWT_EMALFORMED;
    v = json_object_get(c, "role");
    if (v && (!json_is_string(v) || json_string_length(v) > SB_JWT_ROLE_MAX ||
              memchr(json_string_value(v), '\0', json_string_length(v))))
        return SB_JWT_EMALFORMED;
    v = json_object_get(c, "key_id");
    if (v && !key_id_ok(v))
        return SB_JWT_EMALFORMED;
    v = json_object_get(c, "iat");
    if (v && !json_is_integer(v))
        return SB_JWT_EMALFORMED;
    return 0;
}

int sb_jwt_sign_raw(sb_str_t header, sb_str_t payload, sb_str_t key, sb_buf_t *out)
{
    unsigned char mac[SB_DIGEST_SHA256_LEN];

    if (key.len < SB_JWT_MIN_KEY_LEN)
        return SB_EINVAL;
    size_t start = out->len;
    sb_codec_b64_append(out, header.p, header.len, SB_B64_URL);
    sb_buf_append(out, ".", 1);
    sb_codec_b64_append(out, payload.p, payload.len, SB_B64_URL);
    sb_digest_hmac_sha256(key, sb_str(out->p + start, out->len - start), mac);
    sb_buf_append(out, ".", 1);
    sb_codec_b64_append(out, mac, sizeof mac, SB_B64_URL);
    mbedtls_platform_zeroize(mac, sizeof mac);
    return 0;
}

int sb_jwt_sign(const json_t *claims, sb_str_t key, sb_buf_t *out)
{
    if (key.len < SB_JWT_MIN_KEY_LEN || claims_check(claims) != 0)
        return SB_EINVAL;
    char *payload = json_dumps(claims, JSON_COMPACT);
    if (!payload)
        return SB_EINVAL; /* jansson failed to serialise: out of memory or an unserialisable value */
    size_t plen = strlen(payload);
    size_t total = sb_codec_b64_encoded_len(sizeof jwt_header - 1, SB_B64_URL) + 1 +
                   sb_codec_b64_encoded_len(plen, SB_B64_URL) + 1 +
                   sb_codec_b64_encoded_len(SB_DIGEST_SHA256_LEN, SB_B64_URL);
    int rc = SB_E2BIG;
    if (plen <= SB_JWT_MAX_LEN && total <= SB_JWT_MAX_LEN)
        rc = sb_jwt_sign_raw(SB_STR(jwt_header), sb_str(payload, plen), key, out);
    free(payload);
    return rc;
}

int sb_jwt_issue(sb_str_t tenant, sb_str_t sub, int64_t now, int64_t ttl_s, sb_str_t key, sb_buf_t *out)
{
    int rc = SB_EINVAL;

    if (ttl_s <= 0 || now > INT64_MAX - ttl_s)
        return SB_EINVAL;
    json_t *c = json_object();
    if (!c)
        return SB_EINVAL;
    if (sub.len) {
        json_t *s = json_stringn(sub.p, sub.len); /* NULL for invalid UTF-8 */
        if (!s || json_object_set_new(c, "sub", s) != 0)
            goto done;
    }
    json_t *t = json_stringn(tenant.p ? tenant.p : "", tenant.len);
    if (!t || json_object_set_new(c, "tenant", t) != 0)
        goto done;
    if (json_object_set_new(c, "iat", json_integer(now)) != 0 ||
        json_object_set_new(c, "exp", json_integer(now + ttl_s)) != 0)
        goto done;
    rc = sb_jwt_sign(c, key, out);
done:
    json_decref(c);
    return rc;
}

/* Decodes one base64url part into buf (PART_MAX bytes) and parses it as a JSON object. Returns the object (the
 * caller decrefs it) or NULL. */
static json_t *part_json(sb_str_t part, unsigned char *buf)
{
    size_t n;
    if (part.len == 0 || sb_codec_b64_decode(part, SB_B64_URL, buf, PART_MAX, &n) != 0)
        return NULL;
    json_t *j = json_loadb((const char *)buf, n, JSON_REJECT_DUPLICATES, NULL);
    if (j && !json_is_object(j)) {
        json_decref(j);
        j = NULL;
    }
    return j;
}

int sb_jwt_verify(sb_str_t token, sb_str_t key, int64_t now, sb_jwt_claims_t *out)
{
    unsigned char buf[PART_MAX];
    unsigned char got[SB_DIGEST_SHA256_LEN], want[SB_DIGEST_SHA256_LEN];
    json_t *hdr = NULL, *claims = NULL;
    const json_t *v;
    size_t n;
    int rc;

    memset(out, 0, sizeof *out);
    if (key.len < SB_JWT_MIN_KEY_LEN)
        return SB_EINVAL;
    if (token.len == 0 || token.len > SB_JWT_MAX_LEN)
        return SB_JWT_EMALFORMED;

    const char *d1 = memchr(token.p, '.', token.len);
    if (!d1)
        return SB_JWT_EMALFORMED;
    const char *end = token.p + token.len;
    const char *d2 = memchr(d1 + 1, '.', (size_t)(end - d1 - 1));
    if (!d2 || memchr(d2 + 1, '.', (size_t)(end - d2 - 1)))
        return SB_JWT_EMALFORMED;
    sb_str_t h64 = sb_str(token.p, (size_t)(d1 - token.p));
    sb_str_t p64 = sb_str(d1 + 1, (size_t)(d2 - d1 - 1));
    sb_str_t s64 = sb_str(d2 + 1, (size_t)(end - d2 - 1));
    sb_str_t signed_part = sb_str(token.p, (size_t)(d2 - token.p));

    hdr = part_json(h64, buf);
    if (!hdr) {
        rc = SB_JWT_EMALFORMED;
        goto fail;
    }
    v = json_object_get(hdr, "alg");
    if (!json_is_string(v) || !sb_str_eq(sb_str(json_string_value(v), json_string_length(v)), SB_STR("HS256"))) {
        rc = SB_JWT_EALG;
        goto fail;
    }
    if (json_object_get(hdr, "crit")) {
        rc = SB_JWT_EMALFORMED;
        goto fail;
    }

    if (s64.len == 0 || sb_codec_b64_decode(s64, SB_B64_URL, buf, PART_MAX, &n) != 0) {
        rc = SB_JWT_EMALFORMED;
        goto fail;
    }
    if (n != sizeof got) {
        rc = SB_JWT_ESIG;
        goto fail;
    }
    memcpy(got, buf, sizeof got);
    sb_digest_hmac_sha256(key, signed_part, want);
    bool match = sb_codec_ct_eq(sb_str((const char *)got, sizeof got), sb_str((const char *)want, sizeof want));
    mbedtls_platform_zeroize(want, sizeof want);
    if (!match) {
        rc = SB_JWT_ESIG;
        goto fail;
    }

    /* time first, so a stale token is reported as expired even when it lacks what a current one needs */
    claims = part_json(p64, buf);
    v = claims ? json_object_get(claims, "exp") : NULL;
    if (!json_is_integer(v)) {
        rc = SB_JWT_EMALFORMED;
        goto fail;
    }
    int64_t exp = json_integer_value(v);
    if (exp <= now) {
        rc = SB_JWT_EEXPIRED;
        goto fail;
    }
    v = json_object_get(claims, "nbf");
    if (v && json_is_integer(v) && json_integer_value(v) > now) {
        rc = SB_JWT_ENOTYET;
        goto fail;
    }
    if (claims_check(claims) != 0) {
        rc = SB_JWT_EMALFORMED;
        goto fail;
    }

    v = json_object_get(claims, "tenant");
    out->tenant_len = json_string_length(v);
    memcpy(out->tenant, json_string_value(v), out->tenant_len);
    out->tenant[out->tenant_len] = '\0';
    v = json_object_get(claims, "sub");
    if (v) {
        out->sub_len = json_string_length(v);
        memcpy(out->sub, json_string_value(v), out->sub_len);
        out->sub[out->sub_len] = '\0';
    }
    v = json_object_get(claims, "role");
    if (v)
        memcpy(out->role, json_string_value(v), json_string_length(v) + 1);
    v = json_object_get(claims, "key_id");
    if (v) {
        long long id = 0;
        sb_str_to_ll(sb_str(json_string_value(v), json_string_length(v)), 1, INT64_MAX, &id);
        out->key_id = id;
    }
    v = json_object_get(claims, "iat");
    out->iat = v ? json_integer_value(v) : 0;
    out->exp = exp;
    json_decref(hdr);
    json_decref(claims);
    return 0;

fail:
    json_decref(hdr);
    json_decref(claims);
    memset(out, 0, sizeof *out);
    return rc;
}

const char *sb_jwt_strerror(int err)
{
    switch (err) {
    case SB_JWT_EMALFORMED: return "malformed token";
    case SB_JWT_EALG: return "token algorithm not allowed (only HS256 is accepted)";
    case SB_JWT_ESIG: return "bad token signature";
    case SB_JWT_EEXPIRED: return "token expired";
    case SB_JWT_ENOTYET: return "token not yet valid";
    default: return sb_strerror(err);
    }
}

const char *sb_jwt_error_code(int err)
{
    switch (err) {
    case SB_JWT_EMALFORMED: return "token_malformed";
    case SB_JWT_EALG: return "token_alg_not_allowed";
    case SB_JWT_ESIG: return "token_bad_signature";
    case SB_JWT_EEXPIRED: return "token_expired";
    case SB_JWT_ENOTYET: return "token_not_yet_valid";
    default: return "token_invalid";
    }
}
