/* The live inbox (API.md "Live inbox"): WebSocket /v1/inbox, and the fan-out of committed inbox events to it.
 *
 * A client opens /v1/inbox with subprotocol switchboard.v1.json (text frames; the default) or
 * switchboard.v1.msgpack (binary frames), sends {"op":"hello","token","resume_after"} within 10 s, and gets
 * {"op":"welcome","tenant_id","cursor"} with the tenant's newest cursor, then every event after resume_after (or,
 * without it, after the welcome cursor) in cursor order, each once: first replayed from the store in pages, then
 * live. Also {"op":"ping"} → {"op":"pong"}, WebSocket pings are answered, and the `send` op is accepted like
 * POST /v1/messages (gateway/sends) and answered {"op":"accepted","idempotency_key","id"} or an error frame.
 *
 * No gap, no duplicate, whatever the timing: the shard subscribes to the tenant's events at the tenant actor
 * (actors/tenant.h) with its first client of the tenant, and learns the newest committed cursor in the answer; from
 * then on every batch the tenant commits comes to the shard (after the answer: both travel the same queue). A client
 * replays the log from the store after its cursor, live events that arrive meanwhile wait in a pending list, and
 * everything at or below the last cursor sent is dropped. A tenant's cursors are dense (the tenant actor numbers
 * them), so a live event more than one past the last cursor sent means something was missed (a pending list that
 * overflowed, a tenant actor restarted without its subscriptions: they are renewed every few seconds): the client is
 * switched back to replay from the store until it has caught up.
 *
 * Publishing: each shard with clients of the tenant gets the committed events as one refcounted immutable batch
 * (proto/inbox), whose JSON frames were encoded once for every JSON client everywhere; MessagePack is encoded once
 * per shard and event.
 *
 * Keys: a client is tied to the API key it signed in with (or its token's key). When the key is revoked, every shard
 * closes its clients of that key at once with an error frame and 4401; a rotated key's clients are closed the same
 * way when its overlap ends. Readonly clients may not send; sends draw from the send rate limits of the key and of
 * the client's address (gateway/ratelimit), the tenant's limits as they were at hello.
 *
 * Closing codes: 4401 bad or missing credentials (after an error frame; also a revoked or expired key), 4400 a
 * frame that is not what the protocol allows before hello, 4408 a client that fell more than inbox_send_buffer
 * bytes behind (it resumes from its cursor), 1013 (try again later) when PostgreSQL is not reachable, 1001 when
 * the gateway shuts down, and the RFC 6455 codes for broken framing. A browser's Origin must be the gateway's own
 * or listed in inbox_origins; clients that send none (not browsers) are let through. */
#ifndef SB_LIVE_H
#define SB_LIVE_H

#include "adapters/net/http_server.h"
#include "gateway/config.h"
#include "proto/inbox.h"
#include "shards/shard.h"

#include <stdbool.h>
#include <stdint.h>

/* Remembers the configuration (borrowed). Call once before the shards start. */
void sb_live_init(const sb_config_t *cfg);
/* Handles GET /v1/inbox (the WebSocket handshake). Returns false when the path is not the inbox's. */
bool sb_live_handle(sb_shard_t *s, sb_http_req_t *req);
/* The shards' module: the hub of each shard (its clients by tenant, their subscriptions). */
extern const sb_shard_module_t sb_live_module;
/* On shard s: writes b (borrowed) to the tenant's live clients there, queues it for the replaying ones (the domain's
 * deliver hook, shards/domain.h). */
void sb_live_deliver(sb_shard_t *s, sb_inbox_batch_t *b);
/* From any shard: tenant's API key `key` ends at `at` (unix seconds; 0: now, a revocation): every shard closes the
 * live clients that signed in with it (or with a token minted from it) with an error frame and 4401 when it ends. */
void sb_live_key_ended(int64_t tenant, int64_t key, int64_t at);
/* Live inbox clients connected to shard idx (any thread; for the console and metrics). */
unsigned sb_live_clients(unsigned idx);

#endif
