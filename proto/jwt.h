/* HS256 JSON Web Tokens for browser inbox clients (API.md "POST /v1/tokens" and the inbox "hello" frame).
 *
 * A token is base64url(header) "." base64url(claims) "." base64url(HMAC-SHA256(key, the first two parts)), RFC 7519
 * with RFC 7515's compact serialisation. The gateway both issues and checks these tokens, so verification accepts
 * exactly what it issues and nothing looser:
 *   - the algorithm is pinned: the header's "alg" must be the string "HS256"; "none", "HS512", "RS256", any other
 *     value or no "alg" at all is refused before any key is used (the classic alg-confusion attacks);
 *   - base64url is strict (no padding, no whitespace, no unused bits set) so a token has one spelling;
 *   - header and claims must be JSON objects without duplicate keys; a "crit" header is refused (we implement no
 *     extension);
 *   - the signature is checked in constant time before the claims are read;
 *   - "exp" (integer seconds) is required and the token is expired once exp <= now; "nbf", when present, must be
 *     <= now; "iat", when present, must be an integer; "tenant" (a non-empty string) is required, "sub" optional;
 *     "role" (a string of at most SB_JWT_ROLE_MAX bytes) and "key_id" (a string of 1..19 digits: the API key the
 *     token was minted from) optional, read but not judged here (gateway/api checks them);
 *   - a token longer than SB_JWT_MAX_LEN is refused unread, and none that long is issued.
 * Keys must be at least 32 bytes (RFC 7518 §3.2: no shorter than the hash). Keys are borrowed and never kept or
 * logged; computed MACs are wiped.
 *
 * Failures carry distinct codes, so the caller can answer clearly (an "error" frame, then close 4401):
 * sb_jwt_strerror() gives a message and sb_jwt_error_code() a snake_case code for API errors. "Malformed" is
 * SB_EPARSE itself; the other SB_JWT_E* codes use the block -1101..-1104, clear of errno and of err.h's own codes. */
#ifndef SB_JWT_H
#define SB_JWT_H

#include "proto/err.h"
#include "proto/str.h"

#include <jansson.h>

#include <stdint.h>

#define SB_JWT_MAX_LEN 4096   /* longest token accepted or issued, in characters */
#define SB_JWT_MIN_KEY_LEN 32 /* shortest HMAC key accepted, in bytes */
#define SB_JWT_ID_MAX 128     /* longest "tenant" or "sub" claim, in bytes */
#define SB_JWT_ROLE_MAX 15    /* longest "role" claim, in bytes */

enum {
    SB_JWT_EMALFORMED = SB_EPARSE, /* not three strict base64url parts of JSON objects, or a required claim is
                                      missing or of the wrong type */
    SB_JWT_EALG = -1101,           /* header "alg" missing or other than "HS256" */
    SB_JWT_ESIG = -1102,           /* signature does not match */
    SB_JWT_EEXPIRED = -1103,       /* exp <= now */
    SB_JWT_ENOTYET = -1104         /* nbf > now */
};

/* What a verified token says. Caller's storage; plain data. */
typedef struct sb_jwt_claims {
    char tenant[SB_JWT_ID_MAX + 1]; /* the "tenant" claim, NUL-terminated (JSON strings here hold no NUL) */
    size_t tenant_len;
    char sub[SB_JWT_ID_MAX + 1];    /* the "sub" claim, or "" when absent */
    size_t sub_len;
    char role[SB_JWT_ROLE_MAX + 1]; /* the "role" claim, or "" when absent */
    int64_t key_id;                 /* the "key_id" claim, or 0 when absent */
    int64_t iat;                    /* 0 when absent */
    int64_t exp;
} sb_jwt_claims_t;

/* Signs claims (borrowed; a JSON object) under key (borrowed) and appends the token to out. The claims are checked
 * as verification would check them ("tenant" a string of 1..SB_JWT_ID_MAX bytes, "exp" an integer, "sub" if present
 * a string of at most SB_JWT_ID_MAX bytes, "iat"/"nbf" if present integers, "role" and "key_id" as above), so nothing
 * is issued that could not be
 * verified. Returns 0, SB_EINVAL (claims not acceptable, key shorter than SB_JWT_MIN_KEY_LEN) or SB_E2BIG (the token
 * would exceed SB_JWT_MAX_LEN); on failure out is as it was. */
int sb_jwt_sign(const json_t *claims, sb_str_t key, sb_buf_t *out);

/* Builds the claims {"sub", "tenant", "iat": now, "exp": now + ttl_s} (sub omitted when empty) and signs them as
 * sb_jwt_sign does. tenant and sub are borrowed and must be valid UTF-8; ttl_s must be positive. Returns 0 or
 * SB_EINVAL / SB_E2BIG with out unchanged. */
int sb_jwt_issue(sb_str_t tenant, sb_str_t sub, int64_t now, int64_t ttl_s, sb_str_t key, sb_buf_t *out);

/* Low level: appends base64url(header) "." base64url(payload) "." base64url(HMAC-SHA256) for the given header and
 * payload bytes, used verbatim and not checked (for test vectors such as RFC 7515 A.1). Returns 0, or SB_EINVAL for
 * a short key, with out unchanged. */
int sb_jwt_sign_raw(sb_str_t header, sb_str_t payload, sb_str_t key, sb_buf_t *out);

/* Verifies token (borrowed) under key (borrowed) at time now (seconds since the epoch) and fills *out. Returns 0, or
 * SB_EINVAL for a key shorter than SB_JWT_MIN_KEY_LEN (a configuration error, not the client's), or one of the SB_JWT_E*
 * codes, checked in this order: length and shape, header JSON, alg, signature, claims JSON object, exp (required
 * integer; expired), nbf (not yet valid), then the other claims' types. *out is zeroed on failure. */
int sb_jwt_verify(sb_str_t token, sb_str_t key, int64_t now, sb_jwt_claims_t *out);

/* A static message for an SB_JWT_E* code (falls back to sb_strerror for others). Never NULL. */
const char *sb_jwt_strerror(int err);

/* A static snake_case code for API and inbox error answers: "token_malformed", "token_alg_not_allowed",
 * "token_bad_signature", "token_expired", "token_not_yet_valid", or "token_invalid" for anything else. */
const char *sb_jwt_error_code(int err);

#endif
