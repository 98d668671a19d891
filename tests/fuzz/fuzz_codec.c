/* libFuzzer target for proto/codec: the strict base64, base64url and hex decoders and the constant-time equality.
 *
 * Each input is decoded as base64, base64url and hex, and every verdict is checked against a slow reference written
 * here the obvious way (alphabet lookup with strchr, bit by bit): a decoder must accept exactly the canonical
 * encodings of some byte string (the reference decodes leniently, re-encodes, and compares) and produce the same
 * bytes; re-encoding what it accepted must give the input back (for hex, lower-cased). A cap one byte short must give
 * SB_E2BIG. The input is also encoded in all three forms and decoded back. Finally the input's two halves are
 * compared with sb_codec_ct_eq against memcmp. Any violation traps. */
#include "tests/fuzz/fuzz.h"
#include "proto/codec.h"

#include "proto/err.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>


static const char STD[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char URL[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* Reference encoder: one bit at a time. out needs 4 * (n / 3 + 1) bytes. Returns the length. */
static size_t ref_encode(const uint8_t *in, size_t n, sb_b64_variant_t v, char *out)
{
    const char *abc = v == SB_B64_STD ? STD : URL;
    size_t bits = n * 8, o = 0;
    for (size_t b = 0; b < bits; b += 6) {
        unsigned val = 0;
        for (size_t k = 0; k < 6; k++) {
            size_t bit = b + k;
            unsigned x = bit < bits ? (in[bit / 8] >> (7 - bit % 8)) & 1u : 0u;
            val = val << 1 | x;
        }
        out[o++] = abc[val];
    }
    if (v == SB_B64_STD) {
        while (o % 4)
            out[o++] = '=';
    }
    return o;
}

/* Reference check: is s the canonical encoding of some bytes? If so, store them in out (len in *n). */
static bool ref_decode(const char *s, size_t len, sb_b64_variant_t v, uint8_t *out, size_t *n, char *scratch)
{
    const char *abc = v == SB_B64_STD ? STD : URL;
    size_t chars = len;
    if (v == SB_B64_STD) {
        while (chars && s[chars - 1] == '=' && len - chars < 2)
            chars--;
    }
    size_t bits = 0;
    *n = 0;
    memset(out, 0, len);
    for (size_t i = 0; i < chars; i++) {
        const char *p = s[i] ? strchr(abc, s[i]) : NULL;
        if (!p)
            return false;
        unsigned val = (unsigned)(p - abc);
        for (int k = 5; k >= 0; k--) {
            if (bits / 8 < len)
                out[bits / 8] |= (uint8_t)(((val >> k) & 1u) << (7 - bits % 8));
            bits++;
        }
    }
    *n = bits / 8;
    /* canonical iff re-encoding gives the same text */
    size_t elen = ref_encode(out, *n, v, scratch);
    return elen == len && memcmp(scratch, s, len) == 0;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static void check_b64(const char *s, size_t len, sb_b64_variant_t v, uint8_t *dec, uint8_t *ref, char *scratch)
{
    size_t n = 0, rn = 0;
    size_t cap = sb_codec_b64_decoded_max(len);
    int rc = sb_codec_b64_decode(sb_str(s, len), v, dec, cap, &n);
    bool canon = ref_decode(s, len, v, ref, &rn, scratch);

    CHECK(rc == 0 || rc == SB_EPARSE);
    CHECK((rc == 0) == canon);
    if (rc != 0)
        return;
    CHECK(n == rn && n <= cap);
    CHECK(n == 0 || memcmp(dec, ref, n) == 0);
    size_t elen = sb_codec_b64_encode(scratch, dec, n, v);
    CHECK(elen == len && elen == sb_codec_b64_encoded_len(n, v));
    CHECK(len == 0 || memcmp(scratch, s, len) == 0);
    if (n > 0) {
        size_t n2 = 12345;
        CHECK(sb_codec_b64_decode(sb_str(s, len), v, dec, n - 1, &n2) == SB_E2BIG);
        CHECK(n2 == 12345);
    }
}

static void check_hex(const char *s, size_t len, uint8_t *dec, char *scratch)
{
    size_t n = 0;
    int rc = sb_codec_hex_decode(sb_str(s, len), dec, len / 2, &n);
    bool valid = len % 2 == 0;
    for (size_t i = 0; i < len && valid; i++)
        valid = hexval(s[i]) >= 0;
    CHECK(rc == 0 || rc == SB_EPARSE);
    CHECK((rc == 0) == valid);
    if (rc != 0)
        return;
    CHECK(n == len / 2);
    for (size_t i = 0; i < n; i++)
        CHECK(dec[i] == (uint8_t)(hexval(s[2 * i]) << 4 | hexval(s[2 * i + 1])));
    sb_codec_hex_encode(scratch, dec, n);
    for (size_t i = 0; i < len; i++)
        CHECK(scratch[i] == (s[i] >= 'A' && s[i] <= 'F' ? s[i] + 32 : s[i]));
    if (n > 0)
        CHECK(sb_codec_hex_decode(sb_str(s, len), dec, n - 1, &n) == SB_E2BIG);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    size_t big = 2 * size + 8;
    uint8_t *dec = malloc(big), *ref = malloc(big);
    char *scratch = malloc(big + 4 * (size / 3 + 1));

    check_b64(s, size, SB_B64_STD, dec, ref, scratch);
    check_b64(s, size, SB_B64_URL, dec, ref, scratch);
    check_hex(s, size, dec, scratch);

    /* encode the input every way and decode it back */
    for (int v = SB_B64_STD; v <= SB_B64_URL; v++) {
        size_t elen = sb_codec_b64_encode(scratch, data, size, (sb_b64_variant_t)v), n;
        CHECK(elen == sb_codec_b64_encoded_len(size, (sb_b64_variant_t)v));
        CHECK(elen == ref_encode(data, size, (sb_b64_variant_t)v, (char *)ref));
        CHECK(elen == 0 || memcmp(scratch, ref, elen) == 0);
        CHECK(sb_codec_b64_decode(sb_str(scratch, elen), (sb_b64_variant_t)v, dec, size, &n) == 0);
        CHECK(n == size && (size == 0 || memcmp(dec, data, size) == 0));
    }
    size_t n;
    sb_codec_hex_encode(scratch, data, size);
    CHECK(sb_codec_hex_decode(sb_str(scratch, 2 * size), dec, size, &n) == 0);
    CHECK(n == size && (size == 0 || memcmp(dec, data, size) == 0));

    /* constant-time equality agrees with memcmp */
    size_t half = size / 2;
    sb_str_t a = sb_str(s, half), b = sb_str(s + half, size - half);
    bool same = a.len == b.len && (a.len == 0 || memcmp(a.p, b.p, a.len) == 0);
    CHECK(sb_codec_ct_eq(a, b) == same);
    CHECK(sb_codec_ct_eq(b, a) == same);
    CHECK(sb_codec_ct_eq(a, a));

    free(dec);
    free(ref);
    free(scratch);
    return 0;
}
