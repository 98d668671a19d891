/* Provider webhook signatures: Twilio's X-Twilio-Signature and Meta's X-Hub-Signature-256 (API.md "Webhooks").
 *
 * Twilio: base64(HMAC-SHA1(auth token, URL + name1 + value1 + name2 + value2 ...)) over the POST parameters sorted
 * by name. The sort follows the official helper library twilio-python (RequestValidator.compute_signature: names
 * sorted, then each name's values sorted, duplicates kept): byte-wise by name, then byte-wise by value, so repeated
 * names (e.g. MediaUrl sent twice) are ordered by value, not by arrival. twilio-node does the same but also drops
 * identical repeated name=value pairs; the two differ only for exact duplicate pairs, which Twilio does not send.
 * Because Twilio's signer is inconsistent about default ports, verification tries the URL as given and the same URL
 * with the scheme's default port (https :443, http :80) added or removed, as both helper libraries do. A non-default
 * port is never added or removed: it is part of what Twilio signed.
 *
 * Meta: "sha256=" + hex(HMAC-SHA256(app secret, raw body)). The hex may come in either case; the prefix and the
 * length are exact.
 *
 * Every comparison is constant-time. Secrets and computed MACs are wiped before return. Nothing is logged. */
#ifndef SB_SIG_H
#define SB_SIG_H

#include "proto/str.h"

#include <stddef.h>

#define SB_SIG_TWILIO_LEN 28 /* base64 of a 20-byte HMAC-SHA1 */
#define SB_SIG_META_PREFIX "sha256="
#define SB_SIG_META_LEN 71 /* "sha256=" + 64 hex digits */

/* One POST parameter, decoded from the form body (names and values are the percent-decoded bytes). Both borrowed. */
typedef struct sb_sig_param {
    sb_str_t name;
    sb_str_t value;
} sb_sig_param_t;

/* Writes the X-Twilio-Signature for token, url and the n params (all borrowed; params may be NULL when n is 0) to out
 * (caller's, SB_SIG_TWILIO_LEN characters, no NUL). The url is used exactly as given. params are not reordered in
 * place: the sort works on a private index. Cannot fail. */
void sb_sig_twilio_compute(sb_str_t token, sb_str_t url, const sb_sig_param_t *params, size_t n,
                           char out[SB_SIG_TWILIO_LEN]);

/* Verifies header (the X-Twilio-Signature value, borrowed) against token, url and params (borrowed), trying url as
 * given and with the default port toggled (see above). Returns 0 if it matches; SB_EPARSE if the header is missing
 * (empty) or cannot be a signature (not SB_SIG_TWILIO_LEN characters); -EACCES if it is well-formed but wrong. */
int sb_sig_twilio_verify(sb_str_t token, sb_str_t url, const sb_sig_param_t *params, size_t n, sb_str_t header);

/* Writes "sha256=" + lower-case hex HMAC-SHA256(secret, body) to out (caller's, SB_SIG_META_LEN characters, no NUL).
 * secret and body are borrowed. Cannot fail. */
void sb_sig_meta_compute(sb_str_t secret, sb_str_t body, char out[SB_SIG_META_LEN]);

/* Verifies header (the X-Hub-Signature-256 value, borrowed) against secret and the raw body (borrowed). Returns 0 if
 * it matches; SB_EPARSE if the header is missing, lacks the exact "sha256=" prefix, has the wrong length or a
 * non-hex digit; -EACCES if it is well-formed but wrong. Upper-case hex digits are accepted. */
int sb_sig_meta_verify(sb_str_t secret, sb_str_t body, sb_str_t header);

#endif
