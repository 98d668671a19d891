/* Fallback channels of an outbound message (issue 16, API.md POST /v1/messages "fallback"): the channels to try,
 * in order, when a message fails for good or is not delivered within fallback_after seconds, and the form it is
 * carried in from the front door to the session, the store (messages.fallback, sql/0015) and back:
 * {"channels": [id, ...], "after_s": N}.
 *
 * The request's form is parsed here too ("fallback": [{"channel_id": "12"}, ...], "fallback_after": 60), so that
 * what a client may send is checked in one pure function (fuzzed: tests/fuzz/fuzz_fallback.c). Whether the channels
 * exist and are the tenant's needs the database: the front door checks that (gateway/sends.c). */
#ifndef SB_FALLBACK_H
#define SB_FALLBACK_H

#include "proto/str.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SB_FALLBACK_MAX 5              /* channels in a fallback list */
#define SB_FALLBACK_AFTER_DEFAULT 60   /* seconds a sent message has to be delivered before its fallback fires */
#define SB_FALLBACK_AFTER_MIN 1
#define SB_FALLBACK_AFTER_MAX 86400

struct json_t; /* jansson's: the front door parses the request (the actors that read the stored form see no jansson) */

typedef struct sb_fallback {
    int64_t channels[SB_FALLBACK_MAX];
    size_t n;
    int64_t after_s;
} sb_fallback_t;

/* The request's "fallback" (a JSON array of objects with a "channel_id", a string of digits or an integer) and
 * "fallback_after" (an integer number of seconds; NULL or null: the default) for a message to channel `primary`.
 * Returns 0 with *out filled (n 0 when list is NULL, null or empty), or SB_EINVAL with *why a static message naming
 * the problem (not an array, more than SB_FALLBACK_MAX, a bad id, the message's own channel, a channel twice,
 * fallback_after out of bounds or without a list). Borrows list and after. */
int sb_fallback_from_request(const struct json_t *list, const struct json_t *after, int64_t primary,
                             sb_fallback_t *out, const char **why);

/* Reads the stored form (as written by sb_fallback_format, or as PostgreSQL gives jsonb back). Returns 0, or
 * SB_EPARSE when text is not that form (n is then 0). */
int sb_fallback_parse(const char *text, size_t len, sb_fallback_t *out);

/* Appends the stored form of f's channels from index `from` on to b; appends nothing when none is left (the message
 * then has no fallback). Returns the number of channels written. */
size_t sb_fallback_format(const sb_fallback_t *f, size_t from, sb_buf_t *b);

/* Whether a message's template column (its framing for the provider) goes along to a fallback channel: a template
 * does (the next channel refuses it if it cannot send it, and is skipped), a Messenger / Instagram message tag
 * {"tag"} does not (it only frames a free-form message on the channel it was written for). NULL: false. */
bool sb_fallback_keeps_template(const char *template_json);

#endif
