/* Byte codecs for signatures, tokens and secrets: base64 (RFC 4648 §4, standard alphabet with "=" padding),
 * base64url (RFC 4648 §5, URL alphabet, no padding, as JWTs use it), lower-case hex, and a constant-time equality
 * for comparing MACs and tokens.
 *
 * Decoders are strict, because what they read is peer input whose every accepted spelling is a way to smuggle a
 * second encoding of the same bytes past a comparison: no whitespace, no line breaks, no padding where none belongs
 * (and exactly the right padding where it does), no unused bits set in the last character. So for every decoder,
 * decode(s) succeeds only if s is exactly what the matching encoder would produce for the decoded bytes (hex alone
 * also accepts upper-case digits). Neither direction branches on or indexes memory by the data's bytes, so coding a
 * secret (a key in hex, a random API key) does not leak it through timing: the time depends on the length and, for
 * padded base64, on whether the last characters are "=", nothing else.
 * Nothing here allocates except the *_append functions, which grow the caller's sb_buf_t. */
#ifndef SB_CODEC_H
#define SB_CODEC_H

#include "proto/str.h"

#include <stdbool.h>
#include <stddef.h>

typedef enum sb_b64_variant {
    SB_B64_STD, /* "A-Za-z0-9+/", padded with "=" to a multiple of 4 characters */
    SB_B64_URL  /* "A-Za-z0-9-_", never padded */
} sb_b64_variant_t;

/* Characters that encoding n bytes produces (no NUL counted). n must be below SIZE_MAX / 2. */
size_t sb_codec_b64_encoded_len(size_t n, sb_b64_variant_t v);

/* Bytes that decoding len characters produces at most: a buffer this large always suffices. */
size_t sb_codec_b64_decoded_max(size_t len);

/* Encodes the n bytes at src (borrowed; may be NULL when n is 0) into dst, which must have room for
 * sb_codec_b64_encoded_len(n, v) characters; writes no NUL. Returns the number of characters written. */
size_t sb_codec_b64_encode(char *dst, const void *src, size_t n, sb_b64_variant_t v);

/* Appends the encoding of the n bytes at src (borrowed) to out; out keeps its NUL terminator. */
void sb_codec_b64_append(sb_buf_t *out, const void *src, size_t n, sb_b64_variant_t v);

/* Decodes in (borrowed) strictly into dst (cap bytes, caller's). On success stores the byte count in *out_len and
 * returns 0. Returns SB_EPARSE if in is not the canonical encoding of some byte string in variant v (a character
 * outside the alphabet, wrong or misplaced padding, a length no encoder produces, unused bits set), or SB_E2BIG if
 * the decoded bytes do not fit in cap (nothing useful is left in dst then). The empty string decodes to 0 bytes. */
int sb_codec_b64_decode(sb_str_t in, sb_b64_variant_t v, void *dst, size_t cap, size_t *out_len);

/* Encodes n bytes at src (borrowed) as 2n lower-case hex digits into dst (caller's, 2n bytes; no NUL written). */
void sb_codec_hex_encode(char *dst, const void *src, size_t n);

/* Appends 2n lower-case hex digits for the n bytes at src (borrowed) to out. */
void sb_codec_hex_append(sb_buf_t *out, const void *src, size_t n);

/* Decodes in (borrowed), an even number of hex digits of either case, into dst (cap bytes, caller's). Returns 0 and
 * stores in.len / 2 in *out_len, SB_EPARSE for an odd length or a non-hex character, SB_E2BIG if cap is too small. */
int sb_codec_hex_decode(sb_str_t in, void *dst, size_t cap, size_t *out_len);
/* The value of one hex digit (either case), or -1: for parsers of public text (percent-encoding, chunk sizes). Not
 * constant-time: secrets go through sb_codec_hex_decode. */
int sb_codec_hex_digit(unsigned char c);

/* True if a and b (borrowed) hold the same bytes. The time taken depends on the lengths only, never on the contents:
 * use it for every comparison of a MAC, signature or token against its expected value. Lengths are not secret (a
 * signature's length is public), so strings of different lengths return false at once. */
bool sb_codec_ct_eq(sb_str_t a, sb_str_t b);

#endif
