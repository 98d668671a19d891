/* base64, base64url, hex and constant-time equality; see codec.h.
 *
 * Characters are mapped to and from their values by arithmetic on masks rather than by table lookups or branches,
 * so the time taken and the memory touched depend on the lengths only (BearSSL and libsodium do the same). A mask is
 * 0xffffffff when a comparison holds and 0 otherwise; ge_mask() builds one without a branch. Validity is gathered in
 * an error mask over the whole input and tested once at the end. */
#include "proto/codec.h"

#include "proto/err.h"

#include <stdint.h>
#include <string.h>

/* 0xffffffff if x >= k, else 0; for x, k < 2^31. */
static inline uint32_t ge_mask(uint32_t x, uint32_t k)
{
    return 0u - ((k - 1u - x) >> 31);
}

/* 0xffffffff if lo <= x <= hi, else 0; for x, lo, hi < 2^31 and lo >= 1. */
static inline uint32_t range_mask(uint32_t x, uint32_t lo, uint32_t hi)
{
    return ge_mask(x, lo) & ~ge_mask(x, hi + 1);
}

/* The character for a 6-bit value. */
static inline char b64_char(uint32_t v, sb_b64_variant_t var)
{
    uint32_t c = v + 'A';
    c += ge_mask(v, 26) & 6u;                /* 26..51 -> 'a'..'z' */
    c -= ge_mask(v, 52) & 75u;               /* 52..61 -> '0'..'9' */
    if (var == SB_B64_STD) {                 /* the variant is public: branching on it leaks nothing */
        c -= ge_mask(v, 62) & 15u;           /* 62 -> '+' */
        c += ge_mask(v, 63) & 3u;            /* 63 -> '/' */
    } else {
        c -= ge_mask(v, 62) & 13u;           /* 62 -> '-' */
        c += ge_mask(v, 63) & 49u;           /* 63 -> '_' */
    }
    return (char)c;
}

/* The 6-bit value of a character plus one, or 0 if the character is not in the variant's alphabet. */
static inline uint32_t b64_value1(unsigned char ch, sb_b64_variant_t var)
{
    uint32_t c = ch, r = 0;
    r |= range_mask(c, 'A', 'Z') & (c - 'A' + 1);
    r |= range_mask(c, 'a', 'z') & (c - 'a' + 27);
    r |= range_mask(c, '0', '9') & (c - '0' + 53);
    uint32_t c62 = var == SB_B64_STD ? '+' : '-', c63 = var == SB_B64_STD ? '/' : '_';
    r |= range_mask(c, c62, c62) & 63u;
    r |= range_mask(c, c63, c63) & 64u;
    return r;
}

size_t sb_codec_b64_encoded_len(size_t n, sb_b64_variant_t v)
{
    size_t full = n / 3 * 4;
    switch (n % 3) {
    case 0: return full;
    case 1: return full + (v == SB_B64_STD ? 4 : 2);
    default: return full + (v == SB_B64_STD ? 4 : 3);
    }
}

size_t sb_codec_b64_decoded_max(size_t len)
{
    return len / 4 * 3 + (len % 4 ? 2 : 0);
}

size_t sb_codec_b64_encode(char *dst, const void *src, size_t n, sb_b64_variant_t v)
{
    const unsigned char *s = src;
    char *d = dst;
    size_t i = 0;

    for (; n - i >= 3; i += 3) {
        uint32_t w = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8 | s[i + 2];
        *d++ = b64_char(w >> 18, v);
        *d++ = b64_char(w >> 12 & 63, v);
        *d++ = b64_char(w >> 6 & 63, v);
        *d++ = b64_char(w & 63, v);
    }
    if (n - i == 1) {
        uint32_t w = (uint32_t)s[i] << 16;
        *d++ = b64_char(w >> 18, v);
        *d++ = b64_char(w >> 12 & 63, v);
        if (v == SB_B64_STD) {
            *d++ = '=';
            *d++ = '=';
        }
    } else if (n - i == 2) {
        uint32_t w = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8;
        *d++ = b64_char(w >> 18, v);
        *d++ = b64_char(w >> 12 & 63, v);
        *d++ = b64_char(w >> 6 & 63, v);
        if (v == SB_B64_STD)
            *d++ = '=';
    }
    return (size_t)(d - dst);
}

void sb_codec_b64_append(sb_buf_t *out, const void *src, size_t n, sb_b64_variant_t v)
{
    size_t len = sb_codec_b64_encoded_len(n, v);
    sb_buf_reserve(out, len);
    sb_codec_b64_encode(out->p + out->len, src, n, v);
    out->len += len;
    out->p[out->len] = '\0';
}

int sb_codec_b64_decode(sb_str_t in, sb_b64_variant_t v, void *dst, size_t cap, size_t *out_len)
{
    const unsigned char *s = (const unsigned char *)in.p;
    unsigned char *d = dst;
    size_t chars = in.len; /* characters that carry data, padding excluded */
    size_t n;

    if (v == SB_B64_STD) {
        if (in.len % 4)
            return SB_EPARSE;
        if (chars && s[chars - 1] == '=')
            chars--;
        if (chars && s[chars - 1] == '=')
            chars--;
    } else if (in.len % 4 == 1) {
        return SB_EPARSE;
    }
    /* In STD a third "=" from the end is caught below: it is not in the alphabet. */
    n = chars / 4 * 3 + (chars % 4 ? chars % 4 - 1 : 0);
    if (n > cap)
        return SB_E2BIG;

    uint32_t bad = 0;
    size_t i = 0, o = 0;
    for (; chars - i >= 4; i += 4) {
        uint32_t a = b64_value1(s[i], v), b = b64_value1(s[i + 1], v);
        uint32_t c = b64_value1(s[i + 2], v), e = b64_value1(s[i + 3], v);
        bad |= ~(ge_mask(a, 1) & ge_mask(b, 1) & ge_mask(c, 1) & ge_mask(e, 1));
        uint32_t w = (a - 1) << 18 | (b - 1) << 12 | (c - 1) << 6 | (e - 1);
        d[o++] = (unsigned char)(w >> 16);
        d[o++] = (unsigned char)(w >> 8);
        d[o++] = (unsigned char)w;
    }
    if (chars - i == 2) {
        uint32_t a = b64_value1(s[i], v), b = b64_value1(s[i + 1], v);
        bad |= ~(ge_mask(a, 1) & ge_mask(b, 1));
        bad |= (b - 1) & 0x0f; /* the 4 bits no output byte uses must be zero */
        d[o++] = (unsigned char)((a - 1) << 2 | (b - 1) >> 4);
    } else if (chars - i == 3) {
        uint32_t a = b64_value1(s[i], v), b = b64_value1(s[i + 1], v), c = b64_value1(s[i + 2], v);
        bad |= ~(ge_mask(a, 1) & ge_mask(b, 1) & ge_mask(c, 1));
        bad |= (c - 1) & 0x03;
        uint32_t w = (a - 1) << 12 | (b - 1) << 6 | (c - 1);
        d[o++] = (unsigned char)(w >> 10);
        d[o++] = (unsigned char)(w >> 2);
    } else if (chars - i == 1) {
        bad = 1; /* STD only: "x===" or a single character before the padding */
    }
    if (bad) {
        if (o)
            memset(dst, 0, o); /* leave no half-decoded secret behind */
        return SB_EPARSE;
    }
    *out_len = o;
    return 0;
}

static inline char hex_char(uint32_t nib)
{
    return (char)(nib + '0' + (ge_mask(nib, 10) & 39u));
}

void sb_codec_hex_encode(char *dst, const void *src, size_t n)
{
    const unsigned char *s = src;
    for (size_t i = 0; i < n; i++) {
        dst[2 * i] = hex_char(s[i] >> 4);
        dst[2 * i + 1] = hex_char(s[i] & 15u);
    }
}

void sb_codec_hex_append(sb_buf_t *out, const void *src, size_t n)
{
    sb_buf_reserve(out, 2 * n);
    sb_codec_hex_encode(out->p + out->len, src, n);
    out->len += 2 * n;
    out->p[out->len] = '\0';
}

/* The value of a hex digit plus one, or 0. */
static inline uint32_t hex_value1(unsigned char ch)
{
    uint32_t c = ch, r = 0;
    r |= range_mask(c, '0', '9') & (c - '0' + 1);
    r |= range_mask(c, 'a', 'f') & (c - 'a' + 11);
    r |= range_mask(c, 'A', 'F') & (c - 'A' + 11);
    return r;
}

int sb_codec_hex_digit(unsigned char c)
{
    return (int)hex_value1(c) - 1;
}

int sb_codec_hex_decode(sb_str_t in, void *dst, size_t cap, size_t *out_len)
{
    const unsigned char *s = (const unsigned char *)in.p;
    unsigned char *d = dst;
    uint32_t bad = 0;

    if (in.len % 2)
        return SB_EPARSE;
    if (in.len / 2 > cap)
        return SB_E2BIG;
    for (size_t i = 0; i < in.len / 2; i++) {
        uint32_t hi = hex_value1(s[2 * i]), lo = hex_value1(s[2 * i + 1]);
        bad |= ~(ge_mask(hi, 1) & ge_mask(lo, 1));
        d[i] = (unsigned char)((hi - 1) << 4 | ((lo - 1) & 15u));
    }
    if (bad) {
        if (in.len)
            memset(dst, 0, in.len / 2);
        return SB_EPARSE;
    }
    *out_len = in.len / 2;
    return 0;
}

bool sb_codec_ct_eq(sb_str_t a, sb_str_t b)
{
    if (a.len != b.len)
        return false;
    /* volatile keeps the compiler from turning the loop into an early-exit memcmp */
    volatile unsigned char acc = 0;
    for (size_t i = 0; i < a.len; i++)
        acc |= (unsigned char)(a.p[i] ^ b.p[i]);
    return acc == 0;
}
