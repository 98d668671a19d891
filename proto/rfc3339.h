/* RFC 3339 timestamps (section 5.6, "date-time"): what a client writes for a scheduled send's `send_at`, read into
 * Unix milliseconds, and the same instant written back as text for the store.
 *
 * Pure and bounded: no locale, no time zone database, no libc time functions (which read the environment); the
 * calendar arithmetic is the proleptic Gregorian one of RFC 3339 itself. */
#ifndef SB_RFC3339_H
#define SB_RFC3339_H

#include "proto/str.h"

#include <stdint.h>

#define SB_RFC3339_MAX_LEN 40  /* longer input is refused unread: "2026-12-05T14:30:00.123456789+05:30" is 35 */
#define SB_RFC3339_TEXT_LEN 32 /* what sb_rfc3339_format writes, its NUL included */

/* Parses s, all of it, as an RFC 3339 date-time: YYYY-MM-DD "T" hh:mm:ss [ "." 1*9DIGIT ] ( "Z" / ("+" / "-")
 * hh:mm ), "T" and "Z" in either case; year 0001..9999, a day that exists in its month, hours 00..23, minutes
 * 00..59, seconds 00..60 (a leap second counts as the first second of the next minute), an offset of at most
 * 23:59. The fraction is truncated to milliseconds. On success *unix_ms is the instant (negative before 1970) and
 * 0 is returned; otherwise SB_EPARSE and *unix_ms is untouched. Never reads beyond s.len. */
int sb_rfc3339_parse(sb_str_t s, int64_t *unix_ms);

/* Writes unix_ms (years 0001..9999) into out as PostgreSQL writes a timestamptz in JSON under TimeZone UTC:
 * "YYYY-MM-DDThh:mm:ss+00:00", with ".f" to ".fff" before the offset when the milliseconds are not zero (trailing
 * zeros dropped), NUL-terminated; returns its length (25..29), or SB_ERANGE (out set to "") outside those years.
 * What it writes parses back to unix_ms, and reads the same as the API's timestamps of the stored value. */
int sb_rfc3339_format(int64_t unix_ms, char out[SB_RFC3339_TEXT_LEN]);

#endif
