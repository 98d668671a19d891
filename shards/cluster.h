/* The cluster: several gateway nodes sharing the tenants through Redis and PostgreSQL (DESIGN.md §3, §6).
 *
 * Off (the default, `cluster = off`), a node is alone: it owns every slot, its writes carry no fence, and nothing
 * here runs. On, shard 0 runs the node's part every slot_lease/8 (250 ms by default), all of it in one Lua script
 * over three hashes under the `{cluster}` hash tag, so Redis alone orders the fleet's decisions:
 *
 *   Membership. The node's entry (address, shards, heartbeat) is refreshed; entries older than node_lease_ttl are
 *   dropped. The live members, sorted by id, give each node its target: slots/N, the first slots mod N one more.
 *
 *   Slot leases. Each slot's field holds its owner and its epoch; a slot's lease lives as long as its owner's
 *   heartbeat is younger than slot_lease (2 s), so renewing every lease is one write. The node checks the slots it
 *   believes it holds (any it lost are dropped at once); takes free slots while it is under its target and,
 *   whatever its target, slots whose owner's heartbeat is older than the lease (a dead or stalled node); a slot
 *   taken gets an epoch one above both its last one and the database's highest (a Redis that lost its keys cannot
 *   go back in time). The script answers what was taken, what was lost, the node's count and target, every slot's
 *   owner and epoch (the routing table) and the members.
 *
 *   Fencing. A slot taken is raised to its epoch in PostgreSQL (sb_store_fence_bump, which waits for the old
 *   epoch's writes already checked to commit) before the node serves it; every actor write then carries the slot's
 *   epoch (the store's fence, adapters/pg), so a node that lost a slot commits nothing more for it. A node whose
 *   heartbeat was not written for the lease less a margin drops its slots locally first: their actors stop at once.
 *
 *   Catching up. A slot taken is served only once the domain's catch-up sweep has handed every unprocessed receipt
 *   of it to its sessions, oldest first; what its stream brings meanwhile is held and follows, in order.
 *
 *   Moves. A node over its target gives slots up a few per round (MOVES_PER_ROUND; a drain more): it stops taking
 *   work for them, lets their actors finish what is under way (passivated when idle, stopped after a bound), then
 *   hands each, with the next epoch, straight to the node furthest below its target.
 *
 *   Routing. Work for a slot this node does not serve is committed here all the same (a webhook's receipt, a send
 *   as a receipt of kind "send") and handed to the owner through the owner's Redis Stream `sb:{n:<node>}:in`
 *   (consumer group `sb`), through shard
 *   0's one connection in the order it was committed (through this node's own stream first, and on in order, while
 *   the slot is in transit): the owner's shard 0 reads it and hands each receipt to its session (applying is
 *   idempotent), and acknowledges it once the receipt is applied (checked in PostgreSQL each round; after a minute
 *   unapplied it is the sweepers'); on start it reads what it had not acknowledged. A send's receipt goes through a
 *   stream even when this node serves its slot (its own), so sends taken by any node reach the session in the order
 *   Redis took them, and its 202 waits for Redis to have it. Cancels, settings changes and a Media Stream's news go
 *   the same way, and a cancel's answer comes back through the asking node's stream. A receipt nobody applies (its
 *   owner died) is the sweeper's: each node sweeps the slots it owns.
 *
 * The ownership table is written by shard 0 only and read from any thread (atomics, no locks). */
#ifndef SB_CLUSTER_H
#define SB_CLUSTER_H

#include "actors/call.h"
#include "actors/session.h"
#include "adapters/pg.h"
#include "proto/inbox.h"
#include "shards/shard.h"

#include <stdbool.h>
#include <stdint.h>

typedef struct sb_cluster_opts {
    bool enabled;
    const char *node_id;     /* this node's name in the fleet */
    const char *advertise;   /* "host:port" other nodes and operators reach it at */
    uint32_t slots;
    unsigned shards;
    int node_lease_ttl_s;    /* a member without a heartbeat this long is gone */
    int slot_lease_ms;       /* a slot's lease; 0: min(node_lease_ttl, 2 s) */
    const char *redis_host;  /* the stream reader's own connection (it blocks) */
    int redis_port, redis_db;
} sb_cluster_opts_t;

/* Remembers the options (borrowed: they must outlive the shards). Call once before the shards start. */
void sb_cluster_init(const sb_cluster_opts_t *opts);
/* A module of every shard's table, after the domain; it does its work on shard 0. */
extern const sb_shard_module_t sb_cluster_module;

bool sb_cluster_enabled(void);
/* What a front door that is not handed between nodes (broadcasts, calls) answers with a 503 on a node that does
 * not serve the tenant: behind a load balancer, the retry may land on the owner. */
#define SB_CLUSTER_NOT_HERE "this node does not serve the tenant now (another node of the cluster does); retry"

uint32_t sb_cluster_slot(int64_t tenant);
/* Whether this node owns tenant's slot and is catching it up or serving it: its sweeper and backlog take it, and
 * so do the front doors that hand work to its actors (cancels, calls: only receipts wait for the catch-up). */
bool sb_cluster_owns(int64_t tenant);
/* The domain's catch-up sweep that began at generation gen handed every receipt of the slots taken up to gen to
 * their sessions: those slots are served from now on, and what their stream brought meanwhile follows (shard 0). */
void sb_cluster_caught_up(uint64_t gen);
/* The store's fence for tenant's writes (sb_store_fence_fn's contract): 0 alone, 1 with this node's slot and
 * epoch, SB_EFENCED when this node does not own the slot. Any thread. */
int sb_cluster_fence(void *ctx, int64_t tenant, sb_pg_fence_t *out);
/* Bumped each time this node starts serving slots (alone: never): the domain's cue to look for their backlog. */
uint64_t sb_cluster_generation(void);
/* fn(shard 0) runs on shard 0 right after this node starts serving slots (the domain sets it: their backlog and
 * receipts at once rather than at its next tick). */
void sb_cluster_set_served_hook(void (*fn)(sb_shard_t *s));

/* Routes a committed receipt (cluster = on; from shard s's thread): through shard 0, to its session when this node
 * serves its slot, else to the owner's stream (or this node's own, in order, while the slot is in transit).
 * Returns 0, or an error (the gateway is stopping): the sweepers find it. */
int sb_cluster_route_receipt(sb_shard_t *s, const sb_session_receipt_t *r, int64_t channel, const void *packed,
                             size_t len);

/* Routes a send committed as a receipt (gateway/sends; an SB_EV_SEND event, packed) from any shard: always through a
 * stream, the owner's (this node's own when it serves the slot or the slot is in transit), so that every node's
 * sends for a tenant meet in one stream in the order Redis took them. done(arg, err) is called exactly once, on shard
 * 0, when Redis has the entry (err 0) or will not (the sweeper brings it then), unless this returns an error (the
 * gateway is stopping). */
int sb_cluster_route_intake(const sb_session_receipt_t *r, int64_t channel, const void *packed, size_t len,
                            void (*done)(void *arg, int err), void *arg);

/* A cancel (DELETE /v1/messages/{id}) for a tenant this node does not serve: through the owner's stream to the
 * owner's session, which answers back through this node's stream; req->answer is called exactly once, from any shard
 * (503 when no owner is known, the slot is moving, or no answer came within 10 s). Shard s's thread. */
void sb_cluster_session_cancel(sb_shard_t *s, sb_session_cancel_t *req);
/* A channel's (or, channel 0, a tenant's) pace or caps changed here: the owner's sessions read theirs again. Any
 * shard; fire and forget (sessions also read them at activation). */
void sb_cluster_settings_changed(int64_t tenant, int64_t channel);
/* A Media Stream's news for a call of a tenant this node does not serve (the stream landed here): to the call's actor
 * on the owner, through its stream. Any shard; fire and forget. */
void sb_cluster_call_stream(int64_t tenant, const char *call_key, const sb_call_stream_t *news);

/* The live inbox across nodes: the Pub/Sub channel of tenant's events ("sb:live:{t<id>}") into out (64 bytes),
 * returning its length; and a committed batch published on it, through shard s's Redis (fire and forget: a
 * subscriber that misses one sees the hole at the next and reads the store). */
size_t sb_cluster_live_channel(int64_t tenant, char *out);
void sb_cluster_publish_live(sb_shard_t *s, int64_t tenant, int64_t prev, size_t n, const char *const *types,
                             const sb_str_t *data);

/* The address (`advertise`, "host:port") of the node that owns tenant's slot into out, when that is another node
 * whose address is known; false otherwise. This node's name. Any thread. */
bool sb_cluster_owner_address(int64_t tenant, char *out, size_t size);
const char *sb_cluster_node_id(void);

/* ---- the console (shard 0's thread) ----------------------------------------------------------------------------- */

typedef struct sb_cluster_node {
    char id[72], address[272];
    unsigned shards, slots;
    int64_t heartbeat_age_ms;
    bool self, draining;
} sb_cluster_node_t;

/* The live members as of the last round (alone: this node only). Returns how many, at most max into out. */
size_t sb_cluster_nodes(sb_cluster_node_t *out, size_t max);
/* Slot slot's owner (a node id, "" unknown) into owner (72 bytes) and its epoch (0 alone or unknown). */
void sb_cluster_slot_owner(uint32_t slot, char *owner, int64_t *epoch);
/* Drain: "node" and an id (this node or another: the request goes through Redis), or "shard" and a shard index of
 * this node. Returns 0, SB_ENOENT (no such live node or shard) or SB_EINVAL (alone: nothing to hand over). */
int sb_cluster_drain_node(const char *id);
int sb_cluster_drain_shard(unsigned shard);

#endif
