/* Accepting outbound sends (API.md `POST /v1/messages` and the inbox `send` op): validated, committed to the
 * outbox with the client's idempotency key, then answered.
 *
 * Any shard may take the request; the tenant's shard (sb_inbound_owner) commits it, so the message's place in its
 * conversation and the tenant's inbox cursors are assigned where the tenant's inbound messages get theirs, and
 * message.created (direction out, status queued) and conversation.updated go to the live inbox like any other
 * events. The outbox is the messages table itself: an outbound message with status queued is work for the channel's
 * session actor (the sending half lands with the outbound issue). The same idempotency key of a tenant answers the
 * id of the message it first created, without a second copy. */
#ifndef SB_SENDS_H
#define SB_SENDS_H

#include "gateway/config.h"
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
} sb_send_t;

/* The outcome, on the shard that called sb_sends_accept. status: 202 with id (decimal text, borrowed for the call)
 * and created (false when the idempotency key named an earlier message), or 400 / 404 / 503 with an error code and
 * message for the client. */
typedef void (*sb_sends_fn)(void *arg, int status, const char *code, const char *message, const char *id,
                            bool created);

/* Remembers the configuration (borrowed). Call once before the shards start. */
void sb_sends_init(const sb_config_t *cfg);

/* Checks the fields that need no database (recipient, body length and UTF-8, media URL, key length). Returns NULL,
 * or a static message naming the first bad field, with *code set to the error code. */
const char *sb_sends_check(const sb_send_t *send, const char **code);

/* From a shard thread: checks send (borrowed; copied before return) and commits it on the tenant's shard. Calls cb
 * exactly once, on the calling shard, possibly before returning (a refused check). */
void sb_sends_accept(const sb_send_t *send, sb_sends_fn cb, void *arg);

/* Stopping shard s (its own thread): the sends waiting there for the database are answered 503. */
void sb_sends_shard_stop(sb_shard_t *s);

#endif
