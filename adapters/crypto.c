/* AES-256-GCM sealing, API keys and random bytes; see crypto.h.
 *
 * GCM runs through mbedTLS 2.28's one-shot calls, mbedtls_gcm_crypt_and_tag() and mbedtls_gcm_auth_decrypt(); the
 * latter checks the tag in constant time and zeroes its output when the tag is wrong. The context holds the AES key
 * schedule and is set up per call (cheap next to a database round trip) and freed, which wipes it. */
#include "adapters/crypto.h"

#include "proto/codec.h"
#include "proto/digest.h"
#include "proto/err.h"
#include "proto/mem.h"

#include <mbedtls/gcm.h>
#include <mbedtls/platform_util.h>

#include <errno.h>
#include <string.h>
#include <sys/random.h>

#define HEAD_LEN (1 + SB_CRYPTO_NONCE_LEN)
#define OVERHEAD (HEAD_LEN + SB_CRYPTO_TAG_LEN)

int sb_crypto_random(void *buf, size_t n)
{
    unsigned char *p = buf;
    while (n) {
        ssize_t r = getrandom(p, n, 0);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

void sb_crypto_wipe(void *p, size_t n)
{
    if (n)
        mbedtls_platform_zeroize(p, n);
}

void sb_crypto_buf_wipe(sb_buf_t *b)
{
    if (b->p)
        mbedtls_platform_zeroize(b->p, b->cap);
    sb_buf_cleanup(b);
}

/* mbedTLS validates pointers even for zero lengths; give it a valid one. */
static const unsigned char *bytes(sb_str_t s)
{
    return s.len ? (const unsigned char *)s.p : (const unsigned char *)"";
}

static void gcm_setup(mbedtls_gcm_context *gcm, const unsigned char key[SB_CRYPTO_KEY_LEN])
{
    mbedtls_gcm_init(gcm);
    int rc = mbedtls_gcm_setkey(gcm, MBEDTLS_CIPHER_ID_AES, key, SB_CRYPTO_KEY_LEN * 8);
    SB_BUG_ON(rc != 0); /* AES-256 is always built in; only a broken library fails here */
}

int sb_crypto_seal(const unsigned char key[SB_CRYPTO_KEY_LEN], sb_str_t plain, sb_str_t ad, sb_buf_t *out)
{
    mbedtls_gcm_context gcm;
    int rc;

    if (plain.len > SB_CRYPTO_PLAIN_MAX)
        return SB_E2BIG;
    size_t raw_len = OVERHEAD + plain.len;
    unsigned char *raw = sb_malloc(raw_len);
    raw[0] = SB_CRYPTO_SEAL_VERSION;
    rc = sb_crypto_random(raw + 1, SB_CRYPTO_NONCE_LEN);
    if (rc != 0)
        goto done;

    gcm_setup(&gcm, key);
    rc = mbedtls_gcm_crypt_and_tag(&gcm, MBEDTLS_GCM_ENCRYPT, plain.len, raw + 1, SB_CRYPTO_NONCE_LEN, bytes(ad),
                                   ad.len, bytes(plain), raw + HEAD_LEN, SB_CRYPTO_TAG_LEN,
                                   raw + HEAD_LEN + plain.len);
    mbedtls_gcm_free(&gcm);
    SB_BUG_ON(rc != 0); /* only bad lengths fail, and ours are fixed and bounded */
    sb_codec_b64_append(out, raw, raw_len, SB_B64_STD);
done:
    free(raw); /* version, nonce, ciphertext and tag: nothing secret */
    return rc;
}

int sb_crypto_open(const unsigned char key[SB_CRYPTO_KEY_LEN], sb_str_t sealed, sb_str_t ad, sb_buf_t *out)
{
    mbedtls_gcm_context gcm;
    size_t raw_len;
    int rc;

    if (sealed.len > sb_codec_b64_encoded_len(OVERHEAD + SB_CRYPTO_PLAIN_MAX, SB_B64_STD))
        return SB_E2BIG;
    size_t cap = sb_codec_b64_decoded_max(sealed.len);
    unsigned char *raw = sb_malloc(cap ? cap : 1);
    rc = sb_codec_b64_decode(sealed, SB_B64_STD, raw, cap, &raw_len);
    if (rc != 0 || raw_len < OVERHEAD || raw[0] != SB_CRYPTO_SEAL_VERSION) {
        rc = SB_EPARSE;
        goto done;
    }

    size_t ct_len = raw_len - OVERHEAD;
    sb_buf_reserve(out, ct_len);
    unsigned char *dst = (unsigned char *)out->p + out->len;
    gcm_setup(&gcm, key);
    rc = mbedtls_gcm_auth_decrypt(&gcm, ct_len, raw + 1, SB_CRYPTO_NONCE_LEN, bytes(ad), ad.len,
                                  raw + HEAD_LEN + ct_len, SB_CRYPTO_TAG_LEN, raw + HEAD_LEN, dst);
    mbedtls_gcm_free(&gcm);
    if (rc != 0) {
        SB_BUG_ON(rc != MBEDTLS_ERR_GCM_AUTH_FAILED);
        sb_crypto_wipe(dst, ct_len);
        rc = -EBADMSG;
        goto done;
    }
    out->len += ct_len;
    out->p[out->len] = '\0';
done:
    free(raw);
    return rc;
}

int sb_crypto_key_generate(sb_crypto_api_key_t *out)
{
    unsigned char rnd[32];
    const size_t plen = sizeof SB_CRYPTO_API_KEY_PREFIX - 1;

    memset(out, 0, sizeof *out);
    int rc = sb_crypto_random(rnd, sizeof rnd);
    if (rc != 0)
        return rc;
    memcpy(out->key, SB_CRYPTO_API_KEY_PREFIX, plen);
    size_t n = sb_codec_b64_encode(out->key + plen, rnd, sizeof rnd, SB_B64_URL);
    mbedtls_platform_zeroize(rnd, sizeof rnd);
    SB_BUG_ON(plen + n != SB_CRYPTO_API_KEY_LEN);
    out->key[SB_CRYPTO_API_KEY_LEN] = '\0';
    sb_crypto_key_hash(sb_str(out->key, SB_CRYPTO_API_KEY_LEN), out->hash);
    memcpy(out->prefix, out->key, SB_CRYPTO_API_KEY_PUBLIC_LEN);
    out->prefix[SB_CRYPTO_API_KEY_PUBLIC_LEN] = '\0';
    return 0;
}

void sb_crypto_key_hash(sb_str_t key, char out[SB_CRYPTO_KEY_HASH_LEN + 1])
{
    unsigned char d[SB_DIGEST_SHA256_LEN];
    sb_digest_sha256(key, d);
    sb_codec_hex_encode(out, d, sizeof d);
    out[SB_CRYPTO_KEY_HASH_LEN] = '\0';
    mbedtls_platform_zeroize(d, sizeof d);
}

bool sb_crypto_key_well_formed(sb_str_t key)
{
    unsigned char rnd[32];
    size_t n;
    const sb_str_t prefix = SB_STR(SB_CRYPTO_API_KEY_PREFIX);

    if (key.len != SB_CRYPTO_API_KEY_LEN || !sb_str_has_prefix(key, prefix))
        return false;
    int rc = sb_codec_b64_decode(sb_str(key.p + prefix.len, key.len - prefix.len), SB_B64_URL, rnd, sizeof rnd, &n);
    mbedtls_platform_zeroize(rnd, sizeof rnd);
    return rc == 0 && n == sizeof rnd;
}

sb_str_t sb_crypto_key_public(sb_str_t key)
{
    return sb_str(key.p, key.len < SB_CRYPTO_API_KEY_PUBLIC_LEN ? key.len : SB_CRYPTO_API_KEY_PUBLIC_LEN);
}
