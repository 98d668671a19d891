/* Unit tests for proto/digest: FIPS 180-2 SHA-256 examples, RFC 4231 HMAC-SHA256 test cases 1, 2 and 6, RFC 2202
 * HMAC-SHA1 test cases 1 and 2, and the incremental HMAC against the one-shot one at every split point. */
#include "proto/digest.h"

#include "proto/codec.h"
#include "tests/tap.h"

#include <string.h>

static const char *hex(const unsigned char *p, size_t n)
{
    static char out[2 * SB_DIGEST_MAX_LEN + 1];
    sb_codec_hex_encode(out, p, n);
    out[2 * n] = '\0';
    return out;
}

TEST(sha256_fips180)
{
    unsigned char d[SB_DIGEST_SHA256_LEN];
    sb_digest_sha256(SB_STR("abc"), d);
    is_str(hex(d, sizeof d), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", "SHA-256(\"abc\")");
    sb_digest_sha256(SB_STR("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"), d);
    is_str(hex(d, sizeof d), "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
           "SHA-256 of the 448-bit message");
    sb_digest_sha256(sb_str(NULL, 0), d);
    is_str(hex(d, sizeof d), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", "SHA-256 of nothing");
}

TEST(hmac_sha256_rfc4231)
{
    unsigned char key[131], d[SB_DIGEST_SHA256_LEN];

    memset(key, 0x0b, 20);
    sb_digest_hmac_sha256(sb_str((char *)key, 20), SB_STR("Hi There"), d);
    is_str(hex(d, sizeof d), "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7", "test case 1");

    sb_digest_hmac_sha256(SB_STR("Jefe"), SB_STR("what do ya want for nothing?"), d);
    is_str(hex(d, sizeof d), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843", "test case 2");

    memset(key, 0xaa, sizeof key); /* a key longer than the block: hashed first */
    sb_digest_hmac_sha256(sb_str((char *)key, sizeof key),
                          SB_STR("Test Using Larger Than Block-Size Key - Hash Key First"), d);
    is_str(hex(d, sizeof d), "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54", "test case 6");
}

TEST(hmac_sha1_rfc2202)
{
    unsigned char key[20], d[SB_DIGEST_SHA1_LEN];

    memset(key, 0x0b, sizeof key);
    sb_digest_hmac_sha1(sb_str((char *)key, sizeof key), SB_STR("Hi There"), d);
    is_str(hex(d, sizeof d), "b617318655057264e28bc0b6fb378c8ef146be00", "test case 1");

    sb_digest_hmac_sha1(SB_STR("Jefe"), SB_STR("what do ya want for nothing?"), d);
    is_str(hex(d, sizeof d), "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79", "test case 2");
}

TEST(incremental)
{
    const sb_str_t key = SB_STR("Jefe"), msg = SB_STR("what do ya want for nothing?");
    unsigned char one[SB_DIGEST_MAX_LEN], inc[SB_DIGEST_MAX_LEN];

    for (int alg = SB_DIGEST_SHA1; alg <= SB_DIGEST_SHA256; alg++) {
        size_t len = sb_digest_len((sb_digest_alg_t)alg);
        if (alg == SB_DIGEST_SHA1)
            sb_digest_hmac_sha1(key, msg, one);
        else
            sb_digest_hmac_sha256(key, msg, one);
        int wrong = 0;
        for (size_t cut = 0; cut <= msg.len; cut++) {
            sb_digest_hmac_t h;
            sb_digest_hmac_init(&h, (sb_digest_alg_t)alg, key);
            sb_digest_hmac_update(&h, sb_str(msg.p, cut));
            sb_digest_hmac_update(&h, sb_str(NULL, 0)); /* empty pieces are fine */
            sb_digest_hmac_update(&h, sb_str(msg.p + cut, msg.len - cut));
            if (sb_digest_hmac_finish(&h, inc) != len || memcmp(one, inc, len) != 0)
                wrong++;
        }
        is_int(wrong, 0, "alg %d: split at every point equals one-shot", alg);
    }
    is_int((long long)sb_digest_len(SB_DIGEST_SHA1), 20, "SHA-1 length");
    is_int((long long)sb_digest_len(SB_DIGEST_SHA256), 32, "SHA-256 length");

    /* an abandoned HMAC cleans up (ASan would see a leak otherwise), and cleanup after finish is harmless */
    sb_digest_hmac_t h;
    sb_digest_hmac_init(&h, SB_DIGEST_SHA256, key);
    sb_digest_hmac_update(&h, msg);
    sb_digest_hmac_cleanup(&h);
    sb_digest_hmac_init(&h, SB_DIGEST_SHA256, sb_str(NULL, 0));
    sb_digest_hmac_finish(&h, inc);
    sb_digest_hmac_cleanup(&h);
    ok(1, "cleanup paths");
}

int main(void)
{
    RUN(sha256_fips180);
    RUN(hmac_sha256_rfc4231);
    RUN(hmac_sha1_rfc2202);
    RUN(incremental);
    return tap_done();
}
