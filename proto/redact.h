/* Personal data and secrets kept out of log lines, as pure functions.
 *
 * The house rule is that nothing personal is logged: no message bodies, tokens, keys or secrets, and phone numbers
 * only masked. Call sites keep the rule by what they pass to the logger; these functions are for the two places where
 * that is not enough. sb_redact_address masks a contact address that a line must name (a number in an operator's
 * report), keeping what helps an operator (the country and area code, the last digits) and hiding the rest.
 * sb_redact_line is the logger's net under every line: text that came from outside (a provider's error message, a
 * database's, a library's) may quote a number or a token, so it masks whatever looks like an E.164 number, an API key
 * (sb_live_...), a webhook secret (whsec_...) or a JWT. Neither allocates; both are fuzz-safe on any bytes. */
#ifndef SB_REDACT_H
#define SB_REDACT_H

#include "proto/str.h"

#include <stddef.h>

/* Room sb_redact_address needs for any address it keeps whole (longer ones are cut, with "..."). */
#define SB_REDACT_ADDRESS_MAX 64

/* Writes a masked form of the contact address a into out (size bytes, NUL-terminated, cut to fit; size 0 writes
 * nothing). A scheme prefix ("whatsapp:") and a leading '+' are kept; of the rest, 10 characters or more keep their
 * first 4 and last 2 ("+14155550123" -> "+1415*****23"), 7 to 9 keep their first 2 and last 2, shorter ones are all
 * stars. The length is kept, so two masked numbers of a line stay tellable apart by their ends. Returns the length
 * written. */
size_t sb_redact_address(sb_str_t a, char *out, size_t size);

/* Masks, in place, in the len bytes at p: every '+' followed by 7 to 15 digits (masked as sb_redact_address does;
 * runs of more digits entirely), every "sb_live_", "whsec_" followed by key characters (cut to the prefix and
 * "***"), and every JWT-looking "eyJ...": cut to "eyJ***". Bytes outside those are left alone. Returns the new
 * length (never more than len). */
size_t sb_redact_line(char *p, size_t len);

/* sb_redact_line, and also every run of 7 or more digits standing alone (not part of a word): for a message from
 * outside that may quote a number without its '+' (a provider's, a database's), at the call site that logs it; ids
 * and counts of our own are shorter or never pass through it. Returns the new length. */
size_t sb_redact_text(char *p, size_t len);

#endif
