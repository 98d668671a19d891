/* The store's broadcasts (issue 16, API.md `/v1/broadcasts`): one content to many recipients of a channel, each
 * recipient an outbound message of its own in the bulk lane, written set-based instead of one work item per message.
 *
 * The port half (sb_store_broadcast_port, filled in beside sb_store_port by shards/domain) serves the channel's
 * session actor: the broadcast's row with every recipient staged in it (sql/0019: one statement, the broadcast is
 * accepted once it committed), the staged recipients expanded into messages a batch a statement (contacts and
 * conversations made in SQL, each message's seq its conversation's newest + 1 taken in the same statement while the
 * session numbers nothing, ids from blocks of the messages identity, outbox entries, `expanded` moved on: a stop in
 * between resumes), the channel's broadcasts to resume, cancels, and the counts the broadcast.progress events carry.
 * The front door half reads a broadcast for GET /v1/broadcasts/{id} and finds the channel a DELETE must go to.
 *
 * The rules are store.h's: a call returns 0 and then calls cb exactly once, later, on the shard's thread; or it
 * returns a negative code and never calls cb. Values handed to cb are borrowed for the call. */
#ifndef SB_STORE_BROADCASTS_H
#define SB_STORE_BROADCASTS_H

#include "adapters/store/store.h"

#include <stdbool.h>
#include <stdint.h>

/* Recipients a statement: the session expands a broadcast in statements of at most this many rows (a few hundred ms
 * each at most, so the connection's other work goes between them). A multiple of the id block (1024). */
#define SB_BROADCAST_BATCH 4096

/* Fills the broadcast calls of the port (out's other members are left as they are). */
void sb_store_broadcast_port(sb_store_t *st, sb_store_port_t *out);

/* The broadcast as JSON: {"id","channel_id","status","recipients","send_at","created_at","counts":{status: n}}
 * (status "accepting", "active", "done" once none of its messages is still to go, "canceled", "failed"). err
 * SB_ENOENT: no such broadcast of the tenant. */
int sb_query_broadcast(sb_store_t *st, int64_t tenant, int64_t id, void (*cb)(void *arg, int err, sb_str_t json),
                       void *arg);

/* The channel of tenant's broadcast id (SB_ENOENT: none). */
int sb_query_broadcast_channel(sb_store_t *st, int64_t tenant, int64_t id,
                               void (*cb)(void *arg, int err, int64_t channel), void *arg);

#endif
