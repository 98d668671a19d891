/* Unit tests for adapters/crypto: AES-256-GCM sealing (a known answer from the GCM specification's test case 16 in
 * our sealed format, round trips, a fresh nonce per seal, tampering with every byte of version, nonce, ciphertext
 * and tag, wrong key, wrong or missing associated data, truncation at every length, bad base64, size limits), the
 * random source, and API keys (shape, hash, public prefix, well-formedness). */
#include "adapters/crypto.h"

#include "proto/codec.h"
#include "proto/digest.h"
#include "proto/err.h"
#include "tests/tap.h"

#include <stdlib.h>
#include <string.h>

static unsigned char key[SB_CRYPTO_KEY_LEN];

static void unhex(const char *h, unsigned char *out, size_t *n)
{
    *n = 0;
    sb_codec_hex_decode(sb_str_cstr(h), out, 256, n);
}

/* Base64 of raw bytes into a static string. */
static sb_str_t b64(const unsigned char *p, size_t n)
{
    static char out[1024];
    size_t len = sb_codec_b64_encode(out, p, n, SB_B64_STD);
    return sb_str(out, len);
}

TEST(known_answer)
{
    /* McGrew & Viega, "The Galois/Counter Mode of Operation", test case 16 (AES-256, 96-bit IV, with AAD) */
    unsigned char k[32], iv[12], pt[64], aad[20], ct[64], tag[16], raw[1 + 12 + 64 + 16];
    size_t kn, ivn, ptn, aadn, ctn, tagn;
    unhex("feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308", k, &kn);
    unhex("cafebabefacedbaddecaf888", iv, &ivn);
    unhex("d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5a"
          "a0de657ba637b39",
          pt, &ptn);
    unhex("feedfacedeadbeeffeedfacedeadbeefabaddad2", aad, &aadn);
    unhex("522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056828838c5f61e639"
          "3ba7a0abcc9f662",
          ct, &ctn);
    unhex("76fc6ece0f4e1768cddf8853bb2d551b", tag, &tagn);
    ok(kn == 32 && ivn == 12 && ptn == 60 && aadn == 20 && ctn == 60 && tagn == 16, "vector parsed");

    raw[0] = 1;
    memcpy(raw + 1, iv, 12);
    memcpy(raw + 13, ct, ctn);
    memcpy(raw + 13 + ctn, tag, 16);
    sb_buf_t out;
    sb_buf_init(&out);
    is_int(sb_crypto_open(k, b64(raw, 13 + ctn + 16), sb_str((char *)aad, aadn), &out), 0,
           "version 1 | IV | C | T opens under K with A");
    ok(out.len == ptn && memcmp(out.p, pt, ptn) == 0, "to the test case's plaintext");
    sb_crypto_buf_wipe(&out);
    is_int(sb_crypto_open(k, b64(raw, 13 + ctn + 16), sb_str(NULL, 0), &out), -EBADMSG, "not without A");
    sb_crypto_buf_wipe(&out);
}

TEST(round_trip)
{
    sb_buf_t sealed, plain;
    sb_buf_init(&sealed);
    sb_buf_init(&plain);

    const sb_str_t secret = SB_STR("{\"account_sid\":\"AC123\",\"auth_token\":\"s3cr3t\"}");
    const sb_str_t tenant = SB_STR("tenant-42");
    is_int(sb_crypto_seal(key, secret, tenant, &sealed), 0, "seal");
    unsigned char raw[512];
    size_t n;
    is_int(sb_codec_b64_decode(sb_str(sealed.p, sealed.len), SB_B64_STD, raw, sizeof raw, &n), 0,
           "sealed form is standard base64");
    is_int((long long)n, 1 + 12 + (long long)secret.len + 16, "version + nonce + ciphertext + tag");
    is_int(raw[0], 1, "version byte 1");
    ok(memmem(sealed.p, sealed.len, "s3cr3t", 6) == NULL && memmem(raw, n, "s3cr3t", 6) == NULL,
       "plaintext not visible");

    is_int(sb_crypto_open(key, sb_str(sealed.p, sealed.len), tenant, &plain), 0, "open");
    ok(sb_str_eq(sb_str(plain.p, plain.len), secret), "same plaintext back");
    ok(plain.p[plain.len] == '\0', "NUL-terminated");
    sb_crypto_buf_wipe(&plain);
    ok(plain.p == NULL && plain.len == 0, "buffer wiped and freed");

    /* a fresh nonce each time */
    sb_buf_t again;
    sb_buf_init(&again);
    sb_crypto_seal(key, secret, tenant, &again);
    ok(!sb_str_eq(sb_str(sealed.p, sealed.len), sb_str(again.p, again.len)), "two seals differ");
    unsigned char raw2[512];
    size_t n2;
    sb_codec_b64_decode(sb_str(again.p, again.len), SB_B64_STD, raw2, sizeof raw2, &n2);
    ok(memcmp(raw + 1, raw2 + 1, 12) != 0, "nonces differ");
    sb_buf_cleanup(&again);

    /* empty plaintext and empty ad */
    sb_buf_cleanup(&sealed);
    is_int(sb_crypto_seal(key, sb_str(NULL, 0), sb_str(NULL, 0), &sealed), 0, "seal nothing");
    is_int((long long)sealed.len, 40, "29 bytes -> 40 base64 characters");
    is_int(sb_crypto_open(key, sb_str(sealed.p, sealed.len), sb_str(NULL, 0), &plain), 0, "open nothing");
    is_int((long long)plain.len, 0, "empty plaintext");
    sb_crypto_buf_wipe(&plain);
    sb_buf_cleanup(&sealed);

    /* binary plaintext with NULs, appended after existing content */
    const unsigned char bin[] = {0, 1, 2, 0, 255, 0};
    sb_buf_puts(&sealed, "x:");
    is_int(sb_crypto_seal(key, sb_str((const char *)bin, sizeof bin), tenant, &sealed), 0, "seal binary, appended");
    ok(strncmp(sealed.p, "x:", 2) == 0, "prefix kept");
    sb_buf_puts(&plain, "y:");
    is_int(sb_crypto_open(key, sb_str(sealed.p + 2, sealed.len - 2), tenant, &plain), 0, "open binary, appended");
    ok(plain.len == 2 + sizeof bin && memcmp(plain.p + 2, bin, sizeof bin) == 0, "bytes after the prefix");
    sb_crypto_buf_wipe(&plain);
    sb_buf_cleanup(&sealed);
}

TEST(refusals)
{
    sb_buf_t sealed, plain;
    sb_buf_init(&sealed);
    sb_buf_init(&plain);
    const sb_str_t secret = SB_STR("twenty bytes secret!");
    const sb_str_t ad = SB_STR("tenant-1");
    sb_crypto_seal(key, secret, ad, &sealed);

    unsigned char raw[256], t[256];
    size_t n;
    sb_codec_b64_decode(sb_str(sealed.p, sealed.len), SB_B64_STD, raw, sizeof raw, &n);
    is_int((long long)n, 49, "49 raw bytes");

    /* every bit of every byte: version (0), nonce (1..12), ciphertext (13..32), tag (33..48) */
    int opened = 0, wrong_code = 0, leaked = 0;
    for (size_t i = 0; i < n; i++) {
        for (int bit = 0; bit < 8; bit++) {
            memcpy(t, raw, n);
            t[i] ^= (unsigned char)(1u << bit);
            sb_buf_puts(&plain, "keep");
            int rc = sb_crypto_open(key, b64(t, n), ad, &plain);
            if (rc == 0)
                opened++;
            if (rc != (i == 0 ? SB_EPARSE : -EBADMSG))
                wrong_code++;
            if (plain.len != 4 || memcmp(plain.p, "keep", 4) != 0 || (plain.cap > 4 && plain.p[4] != '\0'))
                leaked++;
            sb_crypto_buf_wipe(&plain);
        }
    }
    is_int(opened, 0, "no single-bit change of version, nonce, ciphertext or tag opens");
    is_int(wrong_code, 0, "version changes are EPARSE, the rest EBADMSG");
    is_int(leaked, 0, "out left as it was after each failure");

    unsigned char other[SB_CRYPTO_KEY_LEN];
    memcpy(other, key, sizeof other);
    other[31] ^= 0x80;
    is_int(sb_crypto_open(other, sb_str(sealed.p, sealed.len), ad, &plain), -EBADMSG, "wrong key");
    is_int(sb_crypto_open(key, sb_str(sealed.p, sealed.len), SB_STR("tenant-2"), &plain), -EBADMSG, "wrong ad");
    is_int(sb_crypto_open(key, sb_str(sealed.p, sealed.len), sb_str(NULL, 0), &plain), -EBADMSG, "ad missing");
    is_int(sb_crypto_open(key, sb_str(sealed.p, sealed.len), SB_STR("tenant-1\0"), &plain), -EBADMSG, "ad longer");
    is_int((long long)plain.len, 0, "nothing appended");

    /* truncation at every raw length, and of the base64 text */
    int bad_trunc = 0;
    for (size_t len = 0; len < n; len++) {
        int rc = sb_crypto_open(key, b64(raw, len), ad, &plain);
        if (rc != (len < 29 ? SB_EPARSE : -EBADMSG))
            bad_trunc++;
    }
    is_int(bad_trunc, 0, "every truncation refused (EPARSE below 29 bytes, EBADMSG above)");
    is_int(sb_crypto_open(key, sb_str(sealed.p, sealed.len - 1), ad, &plain), SB_EPARSE, "base64 cut short");
    memcpy(t, raw, n);
    t[n] = 0;
    is_int(sb_crypto_open(key, b64(t, n + 1), ad, &plain), -EBADMSG, "a byte appended");

    /* garbage and other versions */
    is_int(sb_crypto_open(key, SB_STR("not base64!"), ad, &plain), SB_EPARSE, "not base64");
    is_int(sb_crypto_open(key, sb_str(NULL, 0), ad, &plain), SB_EPARSE, "empty");
    memcpy(t, raw, n);
    t[0] = 2;
    is_int(sb_crypto_open(key, b64(t, n), ad, &plain), SB_EPARSE, "version 2");
    t[0] = 0;
    is_int(sb_crypto_open(key, b64(t, n), ad, &plain), SB_EPARSE, "version 0");
    char *spaced = malloc(sealed.len + 2);
    memcpy(spaced, sealed.p, sealed.len);
    spaced[sealed.len] = '\n';
    is_int(sb_crypto_open(key, sb_str(spaced, sealed.len + 1), ad, &plain), SB_EPARSE, "trailing newline");
    free(spaced);
    is_int((long long)plain.len, 0, "still nothing appended");
    sb_buf_cleanup(&sealed);
    sb_crypto_buf_wipe(&plain);
}

TEST(limits)
{
    sb_buf_t sealed, plain;
    sb_buf_init(&sealed);
    sb_buf_init(&plain);
    char *big = calloc(1, SB_CRYPTO_PLAIN_MAX + 1);
    is_int(sb_crypto_seal(key, sb_str(big, SB_CRYPTO_PLAIN_MAX + 1), sb_str(NULL, 0), &sealed), SB_E2BIG,
           "one byte over the limit refused");
    is_int((long long)sealed.len, 0, "nothing appended");
    is_int(sb_crypto_seal(key, sb_str(big, SB_CRYPTO_PLAIN_MAX), sb_str(NULL, 0), &sealed), 0, "the limit seals");
    is_int(sb_crypto_open(key, sb_str(sealed.p, sealed.len), sb_str(NULL, 0), &plain), 0, "and opens");
    is_int((long long)plain.len, SB_CRYPTO_PLAIN_MAX, "whole");
    sb_crypto_buf_wipe(&plain);
    sb_buf_puts(&sealed, "AAAA");
    is_int(sb_crypto_open(key, sb_str(sealed.p, sealed.len), sb_str(NULL, 0), &plain), SB_E2BIG,
           "longer than any sealed value refused before decoding");
    free(big);
    sb_buf_cleanup(&sealed);
}

TEST(random)
{
    unsigned char a[64], b[64], zero[64] = {0};
    is_int(sb_crypto_random(a, sizeof a), 0, "random 64 bytes");
    is_int(sb_crypto_random(b, sizeof b), 0, "again");
    ok(memcmp(a, zero, sizeof a) != 0 && memcmp(a, b, sizeof a) != 0, "not zero, not repeated");
    is_int(sb_crypto_random(NULL, 0), 0, "zero bytes");
    static unsigned char large[1 << 20];
    is_int(sb_crypto_random(large, sizeof large), 0, "1 MiB (getrandom returns at most 32 MiB per call)");

    unsigned char w[16];
    memset(w, 0xaa, sizeof w);
    sb_crypto_wipe(w, sizeof w);
    ok(memcmp(w, zero, sizeof w) == 0, "wipe zeroes");
    sb_crypto_wipe(NULL, 0);
    sb_buf_t e;
    sb_buf_init(&e);
    sb_crypto_buf_wipe(&e);
    ok(e.p == NULL, "wiping an empty buffer is fine");
}

TEST(api_keys)
{
    sb_crypto_api_key_t k1, k2;
    is_int(sb_crypto_key_generate(&k1), 0, "generate");
    is_int(sb_crypto_key_generate(&k2), 0, "generate another");
    is_int((long long)strlen(k1.key), SB_CRYPTO_API_KEY_LEN, "51 characters");
    ok(strncmp(k1.key, "sb_live_", 8) == 0, "sb_live_ prefix");
    ok(strcmp(k1.key, k2.key) != 0, "two keys differ");
    ok(sb_crypto_key_well_formed(sb_str_cstr(k1.key)), "well formed");
    unsigned char rnd[32];
    size_t rn;
    is_int(sb_codec_b64_decode(sb_str(k1.key + 8, 43), SB_B64_URL, rnd, sizeof rnd, &rn), 0, "base64url body");
    is_int((long long)rn, 32, "32 random bytes");

    char h[SB_CRYPTO_KEY_HASH_LEN + 1];
    sb_crypto_key_hash(sb_str_cstr(k1.key), h);
    is_str(k1.hash, h, "hash is sb_crypto_key_hash of the key");
    unsigned char d[32];
    sb_digest_sha256(sb_str_cstr(k1.key), d);
    char hx[65];
    sb_codec_hex_encode(hx, d, 32);
    hx[64] = '\0';
    is_str(k1.hash, hx, "= lower-case hex SHA-256 of the whole key");
    sb_crypto_key_hash(SB_STR("abc"), h);
    is_str(h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", "hash of \"abc\"");

    is_int((long long)strlen(k1.prefix), 12, "12-character public prefix");
    ok(strncmp(k1.prefix, k1.key, 12) == 0, "the key's first 12 characters");
    sb_str_t pub = sb_crypto_key_public(sb_str_cstr(k1.key));
    ok(pub.len == 12 && memcmp(pub.p, k1.key, 12) == 0, "sb_crypto_key_public");
    is_int((long long)sb_crypto_key_public(SB_STR("sb_li")).len, 5, "public of a short string is all of it");

    char bad[192];
    snprintf(bad, sizeof bad, "sb_test_%s", k1.key + 8);
    ok(!sb_crypto_key_well_formed(sb_str_cstr(bad)), "other prefix");
    ok(!sb_crypto_key_well_formed(sb_str(k1.key, 50)), "one short");
    snprintf(bad, sizeof bad, "%sA", k1.key);
    ok(!sb_crypto_key_well_formed(sb_str_cstr(bad)), "one long");
    snprintf(bad, sizeof bad, "%s", k1.key);
    bad[20] = '+';
    ok(!sb_crypto_key_well_formed(sb_str_cstr(bad)), "std alphabet character");
    snprintf(bad, sizeof bad, "%s", k1.key);
    const char *abc = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    int v = (int)(strchr(abc, bad[50]) - abc);
    bad[50] = abc[v ^ 1]; /* the last character has 2 unused bits */
    ok(!sb_crypto_key_well_formed(sb_str_cstr(bad)), "non-canonical last character");
    ok(!sb_crypto_key_well_formed(sb_str(NULL, 0)), "empty");
    sb_crypto_wipe(&k1, sizeof k1);
    sb_crypto_wipe(&k2, sizeof k2);
}

int main(void)
{
    for (size_t i = 0; i < sizeof key; i++)
        key[i] = (unsigned char)(i * 31 + 7);
    RUN(known_answer);
    RUN(round_trip);
    RUN(refusals);
    RUN(limits);
    RUN(random);
    RUN(api_keys);
    return tap_done();
}
