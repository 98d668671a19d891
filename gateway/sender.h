/* Sending outbound messages: the session actor's send port, the per-shard HTTP client, and the outbox sweeper.
 *
 * A send, on the tenant's shard, for one message the session actor hands over:
 *   1. claim: the message goes from queued (or retrying) to sending, attempts + 1, committed *before* the provider
 *      is asked — so a crash while the request is out leaves it in sending, never queued;
 *   2. the channel's credentials are opened and the provider request built (adapters/outbound); then a token of the
 *      sender's rate and a slot of the channel's and the tenant's in-flight counters are taken in Redis
 *      (adapters/counters: one round trip, and one to give the slots back) — last, right before the request goes
 *      out on the shard's curl multi client, so the provider sees the pace the counters keep. Told to wait, the
 *      send waits holding its claim; without Redis nothing is sent (limits must hold);
 *   3. the answer is classified and stored with its status history and a message.status event (live): sent (with
 *      the provider's id), failed (the provider's error code), retrying (the actor waits the backoff and sends it
 *      again), dead (retries exhausted: kept with its last error) or unknown (the provider may have it: the request
 *      went out and no readable answer came back).
 *
 * The guarantee: a message is sent to the provider at most once unless the provider said it did not take it (an
 * error status, or no connection at all). Anything else that leaves the outcome in doubt — a timeout or reset after
 * the request was written, a crash between the request and storing its answer — ends in status unknown instead of
 * a second send; the sweeper turns messages stuck in sending for two minutes (longer than any request may take)
 * into unknown, and the status callbacks the provider posts later still reach them by provider id when it had them.
 *
 * A circuit breaker per provider endpoint (Twilio's API, Meta's Graph API) and shard (proto/breaker) opens after
 * five endpoint faults in a row; while it is open, sends wait in their actors without being claimed or counted as
 * attempts, and one probe goes after the cool-down.
 *
 * The sweeper (shard 0, every few seconds) also hands queued and due retrying messages back to their session actors
 * (after a restart, or when a hand-over was lost); the actor holds each id once. */
#ifndef SB_SENDER_H
#define SB_SENDER_H

#include "actors/session.h"
#include "gateway/config.h"
#include "shards/shard.h"

#include <stdint.h>

/* Remembers the configuration (borrowed). Call once before the shards start. */
void sb_sender_init(const sb_config_t *cfg);
/* On each shard thread at start and stop: the shard's HTTP client, and on shard 0 the sweeper. */
void sb_sender_shard_start(sb_shard_t *s);
void sb_sender_shard_stop(sb_shard_t *s);
/* Draining: no new send starts (messages stay queued for the next start); the ones under way finish. */
void sb_sender_shard_drain(sb_shard_t *s);
/* Sends under way on the shard: a drain waits for them (as for connections), up to drain_timeout. */
unsigned sb_sender_inflight(sb_shard_t *s);

/* The shard's outgoing HTTP client (also used for the tenants' webhooks), or NULL when it could not be made. */
struct sb_http_client *sb_sender_client(sb_shard_t *s);

/* On the tenant's shard: calls cb(arg, type) with the channel's type (an sb_channel_type_t), SB_CH_NONE when the
 * tenant has no such channel, or -1 when the database cannot be reached; from the shard's cache when it can,
 * possibly before returning. The accept path checks a message against its channel's rules with it. */
typedef void (*sb_sender_type_fn)(void *arg, int type);
void sb_sender_channel_type(sb_shard_t *s, int64_t tenant, int64_t channel, sb_sender_type_fn cb, void *arg);

/* The session port's send (see actors/session.h), on the tenant's shard. */
int sb_sender_send(void *ctx, int64_t tenant, int64_t channel, int64_t message_id, unsigned attempt,
                   sb_session_sent_fn sent, void *arg);

#endif
