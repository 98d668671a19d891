/* application/x-www-form-urlencoded bodies: bytes in, an ordered list of decoded (name, value) pairs out.
 *
 * Twilio posts every webhook as a form, and its X-Twilio-Signature is computed over the decoded pairs (sorted by
 * name, concatenated as name+value). So the parser keeps every pair exactly as received: in order, duplicates
 * included, empty values included; lookups are a convenience on top and never the only view. Decoding follows the
 * WHATWG urlencoded rules with one deliberate strictness: '+' is a space and "%XX" is the byte 0xXX, but a '%' that
 * is not followed by two hex digits is an error rather than a literal '%' (no provider sends one; a peer that does is
 * not speaking the format). Every decoded name and value must be valid UTF-8 (sb_utf8_valid); they may still hold
 * NUL and control bytes (from %00 and the like), so callers that need C strings check for those themselves.
 *
 * The decoded bytes live in one allocation per form (the pair table followed by the text), each name and value
 * NUL-terminated there, so a form is freed in one go and a pair's sb_str_t stays valid until sb_form_cleanup. */
#ifndef SB_FORM_H
#define SB_FORM_H

#include "proto/str.h"

#include <stddef.h>

#define SB_FORM_MAX_PAIRS 512    /* a body with more pairs is refused with SB_E2BIG */
#define SB_FORM_MAX_NAME 256     /* longest accepted name, in decoded bytes */

typedef struct sb_form_pair {
    sb_str_t name;  /* decoded; NUL-terminated at name.p[name.len]; owned by the form */
    sb_str_t value; /* decoded; NUL-terminated at value.p[value.len]; owned by the form; "" when there was no '=' */
} sb_form_pair_t;

/* A parsed form. Caller's storage; pairs and the bytes they point to belong to the form. */
typedef struct sb_form {
    sb_form_pair_t *pairs; /* n pairs in the order of the body; NULL when n == 0 */
    size_t n;
} sb_form_t;

/* Makes f an empty form (zero pairs, nothing allocated). */
void sb_form_init(sb_form_t *f);

/* Frees everything f owns and leaves it empty and reusable. Safe on an empty or already cleaned-up form. */
void sb_form_cleanup(sb_form_t *f);

/* Parses body (borrowed; body.p may be NULL when body.len is 0) into f, which must be empty (sb_form_init or
 * sb_form_cleanup). Pairs are separated by '&'; empty segments ("&&", a leading or trailing '&') are skipped, so an
 * empty body is zero pairs. In each segment the first '=' separates name from value ("a=b=c" is a, "b=c"); a segment
 * without '=' is a name with an empty value; "=x" is an empty name. Names and values are decoded ('+' -> ' ', %XX).
 * Returns 0 with f filled (free it with sb_form_cleanup), or, with f left empty:
 *   SB_E2BIG   more than SB_FORM_MAX_PAIRS pairs (checked first, before anything is decoded or allocated), or a
 *              name longer than SB_FORM_MAX_NAME bytes once decoded;
 *   SB_EPARSE  a '%' not followed by two hex digits, or a name or value that is not valid UTF-8 once decoded.
 * Memory: one allocation of at most n * sizeof(sb_form_pair_t) + body.len + 2n bytes. */
int sb_form_parse(sb_form_t *f, sb_str_t body);

/* The first pair whose name is exactly name (byte for byte, case-sensitive), or NULL. The pair is owned by f and
 * valid until sb_form_cleanup. A pair found with an empty value is different from no pair at all. */
const sb_form_pair_t *sb_form_find(const sb_form_t *f, sb_str_t name);

/* Same with a NUL-terminated name (borrowed). */
const sb_form_pair_t *sb_form_find_cstr(const sb_form_t *f, const char *name);

#endif
