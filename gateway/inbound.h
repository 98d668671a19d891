/* The inbound stage after the receipt: routing committed receipts to the tenant's session actor, applying them,
 * and sweeping up what a crash left behind.
 *
 * Any shard may have received a webhook; the tenant's actors live on the shard its slot maps to
 * (shards/placement), so a receipt is handed there (sb_shard_exec) and given to the session actor of its
 * (tenant, channel), spawned on first use. The actor applies receipts one at a time through the port implemented
 * here: one SQL statement marks the receipt processed (only if it was not), upserts the contact and the
 * conversation, assigns the message's place in the conversation and the tenant's next inbox cursors, and stores
 * the message (or its new status, with history) and the inbox event — atomically.
 *
 * The sweeper (on shard 0, every few seconds) re-routes receipts committed but still unprocessed: a crash between
 * the 200 and the apply, or an apply that failed while the database was away. Nothing acknowledged is lost, and
 * applying twice changes nothing. */
#ifndef SB_INBOUND_H
#define SB_INBOUND_H

#include "adapters/pg.h"
#include "gateway/config.h"
#include "shards/shard.h"

#include <stdint.h>

/* Remembers the configuration (borrowed). Call once before the shards start. */
void sb_inbound_init(const sb_config_t *cfg);
/* The shard that owns tenant's slot: where its actors live and its events are ordered (any thread). */
unsigned sb_inbound_owner(int64_t tenant);
/* From any shard thread: hands receipt_id of (tenant, channel) to its session actor. */
void sb_inbound_route(int64_t tenant, int64_t channel, int64_t receipt_id);
/* From any shard thread: hands outbound message_id of (tenant, channel) to its session actor to send. */
void sb_inbound_send(int64_t tenant, int64_t channel, int64_t message_id);
/* Routes every row of res (columns tenant_id, channel_id, receipt id; NULL res is no rows). Returns how many. */
int sb_inbound_route_rows(const PGresult *res);
/* On each shard thread at start and stop (the sweeper runs on shard 0). */
void sb_inbound_shard_start(sb_shard_t *s);
void sb_inbound_shard_stop(sb_shard_t *s);

#endif
