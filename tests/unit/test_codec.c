/* Unit tests for proto/codec: RFC 4648 §10 vectors for base64, base64url and base16, strict rejection of every
 * non-canonical spelling (padding, alphabet, unused bits, whitespace), buffer limits, round trips over every length
 * and every byte value, and the constant-time equality. */
#include "proto/codec.h"

#include "proto/err.h"
#include "tests/tap.h"

#include <stdint.h>
#include <string.h>

/* Decodes s in variant v into a static buffer; returns rc and leaves the result NUL-terminated in dec/dec_len. */
static unsigned char dec[4096];
static size_t dec_len;

static int b64d(const char *s, sb_b64_variant_t v)
{
    dec_len = 0;
    int rc = sb_codec_b64_decode(sb_str_cstr(s), v, dec, sizeof dec - 1, &dec_len);
    if (rc == 0)
        dec[dec_len] = '\0';
    return rc;
}

static const char *b64e(const char *s, sb_b64_variant_t v)
{
    static char out[4096];
    size_t n = sb_codec_b64_encode(out, s, strlen(s), v);
    out[n] = '\0';
    return out;
}

TEST(rfc4648_vectors)
{
    static const struct {
        const char *in, *std, *url, *hex;
    } vec[] = {
        {"", "", "", ""},
        {"f", "Zg==", "Zg", "66"},
        {"fo", "Zm8=", "Zm8", "666f"},
        {"foo", "Zm9v", "Zm9v", "666f6f"},
        {"foob", "Zm9vYg==", "Zm9vYg", "666f6f62"},
        {"fooba", "Zm9vYmE=", "Zm9vYmE", "666f6f6261"},
        {"foobar", "Zm9vYmFy", "Zm9vYmFy", "666f6f626172"},
    };
    for (size_t i = 0; i < sizeof vec / sizeof vec[0]; i++) {
        size_t n = strlen(vec[i].in);
        is_str(b64e(vec[i].in, SB_B64_STD), vec[i].std, "base64(\"%s\")", vec[i].in);
        is_str(b64e(vec[i].in, SB_B64_URL), vec[i].url, "base64url(\"%s\")", vec[i].in);
        is_int(sb_codec_b64_encoded_len(n, SB_B64_STD), strlen(vec[i].std), "std length for %zu bytes", n);
        is_int(sb_codec_b64_encoded_len(n, SB_B64_URL), strlen(vec[i].url), "url length for %zu bytes", n);

        is_int(b64d(vec[i].std, SB_B64_STD), 0, "decode std \"%s\"", vec[i].std);
        is_str((char *)dec, vec[i].in, "decoded std \"%s\"", vec[i].std);
        is_int(b64d(vec[i].url, SB_B64_URL), 0, "decode url \"%s\"", vec[i].url);
        is_str((char *)dec, vec[i].in, "decoded url \"%s\"", vec[i].url);
        ok(sb_codec_b64_decoded_max(strlen(vec[i].std)) >= n, "decoded_max covers std \"%s\"", vec[i].std);
        ok(sb_codec_b64_decoded_max(strlen(vec[i].url)) >= n, "decoded_max covers url \"%s\"", vec[i].url);

        char hex[32];
        sb_codec_hex_encode(hex, vec[i].in, n);
        hex[2 * n] = '\0';
        is_str(hex, vec[i].hex, "hex(\"%s\")", vec[i].in);
        unsigned char raw[16];
        size_t rn = 99;
        is_int(sb_codec_hex_decode(sb_str_cstr(vec[i].hex), raw, sizeof raw, &rn), 0, "unhex \"%s\"", vec[i].hex);
        ok(rn == n && memcmp(raw, vec[i].in, n) == 0, "unhex \"%s\" gives the bytes", vec[i].hex);
    }
}

TEST(alphabets)
{
    const unsigned char b[] = {0xfb, 0xff};
    char out[8];
    size_t n = sb_codec_b64_encode(out, b, 2, SB_B64_STD);
    ok(n == 4 && memcmp(out, "+/8=", 4) == 0, "std uses + and /");
    n = sb_codec_b64_encode(out, b, 2, SB_B64_URL);
    ok(n == 3 && memcmp(out, "-_8", 3) == 0, "url uses - and _");
    is_int(b64d("+/8=", SB_B64_STD), 0, "std decodes + and /");
    ok(dec_len == 2 && dec[0] == 0xfb && dec[1] == 0xff, "std bytes");
    is_int(b64d("-_8", SB_B64_URL), 0, "url decodes - and _");
    ok(dec_len == 2 && dec[0] == 0xfb && dec[1] == 0xff, "url bytes");
    is_int(b64d("-_8=", SB_B64_STD), SB_EPARSE, "std refuses the url alphabet");
    is_int(b64d("+/8", SB_B64_URL), SB_EPARSE, "url refuses the std alphabet");

    /* every byte value in every position of a quantum: accepted exactly when it is in the alphabet */
    const char *std_abc = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const char *url_abc = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    int wrong = 0;
    for (int c = 0; c < 256; c++) {
        for (int pos = 0; pos < 4; pos++) {
            char q[4] = {'A', 'A', 'A', 'A'};
            q[pos] = (char)c;
            int in_std = c != 0 && strchr(std_abc, c) != NULL;
            int in_url = c != 0 && strchr(url_abc, c) != NULL;
            int pad = c == '=' && pos == 3; /* "AAA=" is the padded encoding of two zero bytes */
            unsigned char o[3], ou[3];
            size_t on;
            int rs = sb_codec_b64_decode(sb_str(q, 4), SB_B64_STD, o, sizeof o, &on);
            int ru = sb_codec_b64_decode(sb_str(q, 4), SB_B64_URL, ou, sizeof ou, &on);
            if ((rs == 0) != (in_std || pad) || (ru == 0) != in_url)
                wrong++;
            if (in_std) { /* and its value is its index in the alphabet */
                int v = (int)(strchr(std_abc, c) - std_abc);
                uint32_t w = (uint32_t)v << (18 - 6 * pos);
                if (rs != 0 || o[0] != (unsigned char)(w >> 16) || o[1] != (unsigned char)(w >> 8) ||
                    o[2] != (unsigned char)w)
                    wrong++;
            }
        }
    }
    is_int(wrong, 0, "every byte value in every position decodes as the alphabet says");

    /* hex: every byte value as a digit */
    wrong = 0;
    for (int c = 0; c < 256; c++) {
        char h[2] = {'0', (char)c};
        unsigned char o[1];
        size_t on;
        int want = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
        int rc = sb_codec_hex_decode(sb_str(h, 2), o, 1, &on);
        if ((rc == 0) != want)
            wrong++;
        if (want) {
            int v = c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10;
            if (o[0] != v)
                wrong++;
        }
    }
    is_int(wrong, 0, "every byte value as a hex digit");
}

TEST(strict_rejections)
{
    static const char *bad_std[] = {
        "Zg",       /* padding missing */
        "Zg=",      /* padding short */
        "Zg===",    /* length not a multiple of 4 */
        "Z===",     /* one data character */
        "====",     /* only padding */
        "Zh==",     /* unused bits set (h = 33 = 100001) */
        "Zm9=",     /* unused bits set (9 = 61 = 111101) */
        "Zg==Zg==", /* padding in the middle */
        "Z=g=",     /* padding between data */
        " Zg=",     /* leading space */
        "Zg==\n",   /* trailing newline */
        "Zm9v\r\nYmFy", /* line break */
        "Zm 9",     /* space */
        "Zm9v\x80\x80\x80\x80",
    };
    for (size_t i = 0; i < sizeof bad_std / sizeof bad_std[0]; i++)
        is_int(b64d(bad_std[i], SB_B64_STD), SB_EPARSE, "std refuses bad input %zu", i);

    static const char *bad_url[] = {
        "Zg==",  /* padding */
        "Zm8=",  /* padding */
        "Z",     /* length 1 mod 4 */
        "Zm9vY", /* length 1 mod 4 */
        "Zh",    /* unused bits set */
        "Zm9",   /* unused bits set */
        "Zm9v ", /* trailing space */
        "Zm9v.", /* dot */
    };
    for (size_t i = 0; i < sizeof bad_url / sizeof bad_url[0]; i++)
        is_int(b64d(bad_url[i], SB_B64_URL), SB_EPARSE, "url refuses bad input %zu", i);

    /* a NUL byte inside a counted string is just a bad character */
    unsigned char o[8];
    size_t on;
    is_int(sb_codec_b64_decode(sb_str("Zm\0v", 4), SB_B64_STD, o, sizeof o, &on), SB_EPARSE, "NUL refused");
    is_int(sb_codec_hex_decode(sb_str("6\0", 2), o, sizeof o, &on), SB_EPARSE, "hex NUL refused");

    is_int(sb_codec_hex_decode(SB_STR("abc"), o, sizeof o, &on), SB_EPARSE, "hex odd length");
    is_int(sb_codec_hex_decode(SB_STR("0g"), o, sizeof o, &on), SB_EPARSE, "hex g");
    is_int(sb_codec_hex_decode(SB_STR(" 00"), o, sizeof o, &on), SB_EPARSE, "hex with blank");
    is_int(sb_codec_hex_decode(SB_STR("0x00"), o, sizeof o, &on), SB_EPARSE, "hex 0x prefix");
    is_int(sb_codec_hex_decode(SB_STR("ABCDEF"), o, sizeof o, &on), 0, "hex upper case accepted");
    ok(on == 3 && o[0] == 0xab && o[1] == 0xcd && o[2] == 0xef, "upper case decodes like lower case");
    is_int(sb_codec_hex_decode(SB_STR("aBcD"), o, sizeof o, &on), 0, "hex mixed case accepted");

    /* a failed decode leaves no partial output behind */
    memset(o, 0x55, sizeof o);
    is_int(sb_codec_b64_decode(SB_STR("Zm9vYmF!"), SB_B64_STD, o, sizeof o, &on), SB_EPARSE, "bad last quantum");
    ok(o[0] == 0 && o[1] == 0 && o[2] == 0, "partial output wiped");
}

TEST(limits)
{
    unsigned char o[8];
    size_t on = 77;
    is_int(sb_codec_b64_decode(SB_STR("Zm9vYmFy"), SB_B64_STD, o, 5, &on), SB_E2BIG, "6 bytes do not fit in 5");
    is_int((long long)on, 77, "out_len untouched on E2BIG");
    is_int(sb_codec_b64_decode(SB_STR("Zm9vYmFy"), SB_B64_STD, o, 6, &on), 0, "6 bytes fit in 6");
    is_int(sb_codec_b64_decode(SB_STR("Zm9vYmE"), SB_B64_URL, o, 4, &on), SB_E2BIG, "url: 5 bytes not in 4");
    is_int(sb_codec_b64_decode(SB_STR("Zm9vYmE"), SB_B64_URL, o, 5, &on), 0, "url: 5 bytes in 5");
    is_int(sb_codec_hex_decode(SB_STR("00112233"), o, 3, &on), SB_E2BIG, "hex 4 bytes not in 3");
    is_int(sb_codec_b64_decode(sb_str(NULL, 0), SB_B64_STD, NULL, 0, &on), 0, "empty decodes with no buffer");
    is_int((long long)on, 0, "to nothing");
    is_int(sb_codec_hex_decode(sb_str(NULL, 0), NULL, 0, &on), 0, "empty hex");

    sb_buf_t b;
    sb_buf_init(&b);
    sb_buf_puts(&b, "x=");
    sb_codec_b64_append(&b, "foobar", 6, SB_B64_STD);
    sb_buf_puts(&b, ";");
    sb_codec_hex_append(&b, "\x01\xfe", 2);
    is_str(sb_buf_cstr(&b), "x=Zm9vYmFy;01fe", "appends");
    sb_buf_cleanup(&b);
    sb_codec_b64_append(&b, NULL, 0, SB_B64_URL);
    is_str(sb_buf_cstr(&b), "", "empty append leaves a valid C string");
    sb_buf_cleanup(&b);
}

TEST(round_trips)
{
    unsigned char in[300], o[300];
    char enc[2 * 300 + 8];
    uint32_t x = 12345;
    int wrong = 0;

    for (size_t len = 0; len <= sizeof in; len++) {
        for (size_t i = 0; i < len; i++) {
            x = x * 1103515245u + 12345u;
            in[i] = (unsigned char)(x >> 16);
        }
        for (int v = SB_B64_STD; v <= SB_B64_URL; v++) {
            size_t n = sb_codec_b64_encode(enc, in, len, (sb_b64_variant_t)v), on = 0;
            if (n != sb_codec_b64_encoded_len(len, (sb_b64_variant_t)v) || sb_codec_b64_decoded_max(n) < len)
                wrong++;
            if (sb_codec_b64_decode(sb_str(enc, n), (sb_b64_variant_t)v, o, len, &on) != 0 || on != len ||
                (len && memcmp(in, o, len) != 0))
                wrong++;
        }
        size_t on = 0;
        sb_codec_hex_encode(enc, in, len);
        if (sb_codec_hex_decode(sb_str(enc, 2 * len), o, len, &on) != 0 || on != len ||
            (len && memcmp(in, o, len) != 0))
            wrong++;
        for (size_t i = 0; i < 2 * len; i++) {
            if (!((enc[i] >= '0' && enc[i] <= '9') || (enc[i] >= 'a' && enc[i] <= 'f')))
                wrong++;
        }
    }
    is_int(wrong, 0, "encode/decode round trips for lengths 0..300, both variants and hex (lower case)");

    /* every byte value once */
    for (int i = 0; i < 256; i++)
        in[i] = (unsigned char)i;
    size_t n = sb_codec_b64_encode(enc, in, 256, SB_B64_STD), on;
    ok(sb_codec_b64_decode(sb_str(enc, n), SB_B64_STD, o, 256, &on) == 0 && on == 256 && memcmp(in, o, 256) == 0,
       "all 256 byte values round trip");
}

TEST(ct_eq)
{
    ok(sb_codec_ct_eq(SB_STR("abc"), SB_STR("abc")), "equal");
    ok(!sb_codec_ct_eq(SB_STR("abc"), SB_STR("abd")), "last byte differs");
    ok(!sb_codec_ct_eq(SB_STR("abc"), SB_STR("xbc")), "first byte differs");
    ok(!sb_codec_ct_eq(SB_STR("abc"), SB_STR("ab")), "lengths differ");
    ok(!sb_codec_ct_eq(SB_STR("ab"), SB_STR("abc")), "lengths differ the other way");
    ok(sb_codec_ct_eq(sb_str(NULL, 0), SB_STR("")), "empty equals empty, NULL allowed");
    ok(!sb_codec_ct_eq(sb_str("a\0b", 3), sb_str("a\0c", 3)), "bytes after a NUL count");
    ok(sb_codec_ct_eq(sb_str("a\0b", 3), sb_str("a\0b", 3)), "NUL inside is fine");
    unsigned char a[64], b[64];
    int wrong = 0;
    for (int i = 0; i < 64; i++)
        a[i] = b[i] = (unsigned char)(i * 7);
    for (int i = 0; i < 64; i++) {
        for (int bit = 0; bit < 8; bit++) {
            b[i] ^= (unsigned char)(1u << bit);
            if (sb_codec_ct_eq(sb_str((char *)a, 64), sb_str((char *)b, 64)))
                wrong++;
            b[i] ^= (unsigned char)(1u << bit);
        }
    }
    is_int(wrong, 0, "every single-bit difference is seen");
}

int main(void)
{
    RUN(rfc4648_vectors);
    RUN(alphabets);
    RUN(strict_rejections);
    RUN(limits);
    RUN(round_trips);
    RUN(ct_eq);
    return tap_done();
}
