/* Hashes and HMACs over mbedTLS's generic message-digest layer; see digest.h.
 *
 * mbedTLS 2.28 (Debian 12) is the reference: mbedtls_md(), mbedtls_md_hmac() and the mbedtls_md_setup() /
 * mbedtls_md_hmac_starts() / _update() / _finish() sequence, all returning 0 or a negative MBEDTLS_ERR_MD_* code.
 * The only failures possible with valid contexts are allocation failures (the HMAC context allocates its pads),
 * which abort like every other allocation failure in the gateway. */
#include "proto/digest.h"

#include "proto/err.h"

#include <mbedtls/platform_util.h>

static const mbedtls_md_info_t *md_info(sb_digest_alg_t alg)
{
    const mbedtls_md_info_t *info =
        mbedtls_md_info_from_type(alg == SB_DIGEST_SHA1 ? MBEDTLS_MD_SHA1 : MBEDTLS_MD_SHA256);
    SB_BUG_ON(info == NULL); /* the library was built without SHA-1 or SHA-256 */
    return info;
}

/* mbedTLS may read the pointer even for an empty input; give it a valid one. */
static const unsigned char *bytes(sb_str_t s)
{
    return s.len ? (const unsigned char *)s.p : (const unsigned char *)"";
}

size_t sb_digest_len(sb_digest_alg_t alg)
{
    return alg == SB_DIGEST_SHA1 ? SB_DIGEST_SHA1_LEN : SB_DIGEST_SHA256_LEN;
}

void sb_digest_sha256(sb_str_t in, unsigned char out[SB_DIGEST_SHA256_LEN])
{
    int rc = mbedtls_md(md_info(SB_DIGEST_SHA256), bytes(in), in.len, out);
    SB_BUG_ON(rc != 0);
}

static void hmac_oneshot(sb_digest_alg_t alg, sb_str_t key, sb_str_t msg, unsigned char *out)
{
    sb_digest_hmac_t h;
    sb_digest_hmac_init(&h, alg, key);
    sb_digest_hmac_update(&h, msg);
    sb_digest_hmac_finish(&h, out);
}

void sb_digest_hmac_sha1(sb_str_t key, sb_str_t msg, unsigned char out[SB_DIGEST_SHA1_LEN])
{
    hmac_oneshot(SB_DIGEST_SHA1, key, msg, out);
}

void sb_digest_hmac_sha256(sb_str_t key, sb_str_t msg, unsigned char out[SB_DIGEST_SHA256_LEN])
{
    hmac_oneshot(SB_DIGEST_SHA256, key, msg, out);
}

void sb_digest_hmac_init(sb_digest_hmac_t *h, sb_digest_alg_t alg, sb_str_t key)
{
    mbedtls_md_init(&h->md);
    h->len = sb_digest_len(alg);
    int rc = mbedtls_md_setup(&h->md, md_info(alg), 1);
    SB_BUG_ON(rc != 0); /* MBEDTLS_ERR_MD_ALLOC_FAILED: out of memory aborts */
    rc = mbedtls_md_hmac_starts(&h->md, bytes(key), key.len);
    SB_BUG_ON(rc != 0);
}

void sb_digest_hmac_update(sb_digest_hmac_t *h, sb_str_t data)
{
    int rc = mbedtls_md_hmac_update(&h->md, bytes(data), data.len);
    SB_BUG_ON(rc != 0);
}

size_t sb_digest_hmac_finish(sb_digest_hmac_t *h, unsigned char *out)
{
    size_t n = h->len;
    int rc = mbedtls_md_hmac_finish(&h->md, out);
    SB_BUG_ON(rc != 0);
    sb_digest_hmac_cleanup(h);
    return n;
}

void sb_digest_hmac_cleanup(sb_digest_hmac_t *h)
{
    mbedtls_md_free(&h->md); /* zeroizes the pads and the hash state before freeing them */
    mbedtls_md_init(&h->md);
}
