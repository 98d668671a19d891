/* The live inbox (API.md "Live inbox"): WebSocket /v1/inbox, and the fan-out of committed inbox events to it.
 *
 * A client opens /v1/inbox with subprotocol switchboard.v1.json (text frames; the default) or
 * switchboard.v1.msgpack (binary frames), sends {"op":"hello","token","resume_after"} within 10 s, and gets
 * {"op":"welcome","tenant_id","cursor"} with the tenant's newest cursor, then every event after resume_after (or,
 * without it, after the welcome cursor) in cursor order, each once: first replayed from PostgreSQL in pages, then
 * live. Also {"op":"ping"} → {"op":"pong"}, WebSocket pings are answered, and the `send` op is accepted like
 * POST /v1/messages (gateway/sends) and answered {"op":"accepted","idempotency_key","id"} or an error frame.
 *
 * No gap, no duplicate, whatever the timing: a client is subscribed on its shard *before* its first replay query,
 * so an event is either in what a query returns or published to it afterwards; live events that arrive while it
 * replays wait in a pending list, and everything at or below the last cursor sent is dropped. A tenant's cursors
 * are dense (inbound.c assigns them under the tenant row's lock), so a live event more than one past the last
 * cursor sent means something was missed (a publish lost, a pending list that overflowed): the client is switched
 * back to replay from PostgreSQL until it has caught up.
 *
 * Publishing: the session actor's apply (on the tenant's shard) returns the events it committed, and
 * sb_live_publish() hands them, as one refcounted immutable batch, to every shard that has subscribers; each shard
 * encodes an event once per subprotocol and writes it to its clients of that tenant. Reaching clients on other
 * nodes is the same step through Redis (one more transport for the batch), and the dense-cursor check makes that
 * transport's losses harmless.
 *
 * Closing codes: 4401 bad or missing credentials (after an error frame), 4400 a frame that is not what the
 * protocol allows before hello, 4408 a client that fell more than inbox_send_buffer bytes behind (it resumes from
 * its cursor), 1013 (try again later) when PostgreSQL is not reachable, 1001 when the gateway shuts down, and the
 * RFC 6455 codes for broken framing. A browser's Origin must be the gateway's own or listed in inbox_origins;
 * clients that send none (not browsers) are let through. */
#ifndef SB_LIVE_H
#define SB_LIVE_H

#include "adapters/http_server.h"
#include "adapters/pg.h"
#include "gateway/config.h"
#include "shards/shard.h"

#include <stdbool.h>
#include <stdint.h>

/* Remembers the configuration (borrowed). Call once before the shards start. */
void sb_live_init(const sb_config_t *cfg);
/* Handles GET /v1/inbox (the WebSocket handshake). Returns false when the path is not the inbox's. */
bool sb_live_handle(sb_shard_t *s, sb_http_req_t *req);
/* On the tenant's shard, after COMMIT: publishes the events in res (the columns named cursor, type and data, as
 * JSON text; rows in any order, rows whose cursor is NULL skipped; NULL res is none) to the tenant's live clients on
 * every shard. res is borrowed for the call. */
void sb_live_publish(int64_t tenant, const PGresult *res);
/* The same for rows [first, first + count) of res (a statement that returned the events of several tenants). */
void sb_live_publish_rows(int64_t tenant, const PGresult *res, int first, int count);
/* On each shard thread at start and stop. */
void sb_live_shard_start(sb_shard_t *s);
void sb_live_shard_stop(sb_shard_t *s);
/* On each shard thread once its loop has no handles left: frees the hub. */
void sb_live_shard_finish(sb_shard_t *s);
/* Live inbox clients connected to shard idx (any thread; for the console and metrics). */
unsigned sb_live_clients(unsigned idx);

#endif
