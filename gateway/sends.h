/* Accepting outbound sends (API.md `POST /v1/messages` and the inbox `send` op), the front doors' half: the fields
 * that need no database are checked here, then the send goes to its channel's session actor (actors/session.h) on
 * the tenant's shard, which checks it against the channel, stores it in the outbox with the client's idempotency key
 * (the same key of a tenant answers the id of the message it first created, without a second copy) and answers. Any
 * shard may take the request: the answer comes back to it. A cancel (DELETE /v1/messages/{id}) goes the same way.
 * On a node of a cluster the send is checked and committed here instead, and numbered by its session on the
 * tenant's owner once it gets there (sends.c). */
#ifndef SB_SENDS_H
#define SB_SENDS_H

#include "actors/session.h"
#include "proto/str.h"
#include "shards/shard.h"

#include <stdint.h>

#define SB_SENDS_MAX_BODY 4096 /* characters (code points); the provider's own limit is checked when sending */
#define SB_SENDS_MAX_KEY 255   /* bytes of an idempotency key */
#define SB_SENDS_MAX_URL 2048  /* bytes of a media URL */

/* One send as the client gave it. Strings are borrowed for the call to sb_sends_accept only. */
typedef struct sb_send {
    int64_t tenant, channel;
    sb_str_t to, body, media_url, template_json, idempotency_key; /* absent = {NULL, 0} */
    sb_str_t tag;             /* Messenger / Instagram message tag (HUMAN_AGENT, ...), or absent: carried to the
                               * provider in template_json as {"tag": ...}, so a template and a tag exclude each
                               * other */
    sb_priority_t priority;   /* normal for REST, interactive for the inbox */
    int64_t send_at_ms;       /* Unix ms; 0: at once */
    sb_str_t fallback_json;   /* {"channels": [id, ...], "after_s": N}, or absent */
} sb_send_t;

/* The outcome, on the shard that called sb_sends_accept. status: 202 with id (decimal text, borrowed for the call),
 * created (false when the idempotency key named an earlier message) and code the message's status as accepted
 * ("queued", or "scheduled" for a send_at ahead); or 400 / 404 / 422 (outside_window: Meta's 24-hour
 * customer-service window is closed for this message) / 503 with an error code and message for the client
 * (borrowed for the call). */
typedef void (*sb_sends_fn)(void *arg, int status, const char *code, const char *message, const char *id,
                            bool created);

/* Checks the fields that need no database (recipient, body length and UTF-8, media URL, key length, tag). The
 * recipient is checked for its form only: an E.164 number ("whatsapp:" allowed) or the digits of a PSID / IGSID;
 * the channel's session checks it against the channel's type. Returns NULL, or a static message naming the first bad
 * field, with *code set to the error code. */
const char *sb_sends_check(const sb_send_t *send, const char **code);

/* From a shard thread: checks send (borrowed; copied before return) and commits it on the tenant's shard. Calls cb
 * exactly once, on the calling shard, possibly before returning (a refused check). */
void sb_sends_accept(const sb_send_t *send, sb_sends_fn cb, void *arg);

/* Cancels tenant's outbound message id of channel (DELETE /v1/messages/{id}; the caller found its channel) through
 * the channel's session, which owns its order; intake: the caller found it as a send a node of a cluster took, which
 * its session may not have yet (it waits for it). cb is called exactly once, on the calling shard: status 200
 * (canceled: stored, with its message.status event), or 404 / 409 (claimed or finished already) / 503 with an error
 * code and a message for the client (borrowed for the call). */
typedef void (*sb_sends_cancel_fn)(void *arg, int status, const char *code, const char *message);
void sb_sends_cancel(int64_t tenant, int64_t channel, int64_t id, bool intake, sb_sends_cancel_fn cb, void *arg);

#endif
