/* The domain on a shard: the adapters the actors work through, wired into their ports, and the shard's part of
 * keeping them going.
 *
 * The first module of every shard's table (shards/shard.h). It makes the shard's store (adapters/store, over the
 * shard's two PostgreSQL connections), its provider client (adapters/provider) and the ports of actors/ports.h over
 * them, the counters (adapters/counters over the shard's Redis), the tenants' webhooks (adapters/apphook) and the
 * publishing of committed events to the shards with live inbox clients; it hands the ports to the shard's actor
 * runtime as its environment, with the idle timeout after which keyed actors are passivated (checked every second).
 *
 * Shard 0 also sweeps: every few seconds it hands receipts that were committed but not applied (a crash between the
 * 200 and the apply, a write refused while the database was away) back to their sessions; and once at start it
 * activates the sessions with messages in their outbox and the tenants with webhook events waiting, so nothing
 * accepted waits for a new request to be noticed; and every SB_SESSION_SCHEDULE_SCAN_MS it wakes the sessions of
 * the channels with a scheduled message due within their horizon (actors/session.h), which may have been
 * passivated while their messages were far off. With several nodes (shards/cluster) all of it takes only the
 * tenants of the slots this node owns, and the actors' writes carry the slots' fencing epochs; when the node takes
 * slots, their backlog and a catch-up sweep (every unprocessed receipt, whatever its age, in pages by id) run at once,
 * and the cluster serves the slots once the catch-up handed everything over (sb_cluster_caught_up). */
#ifndef SB_DOMAIN_H
#define SB_DOMAIN_H

#include "adapters/store/store.h"
#include "proto/inbox.h"
#include "shards/shard.h"

#include <stdint.h>

typedef struct sb_domain_opts {
    const unsigned char *master_key;           /* NULL: none configured */
    const char *public_url;                    /* NULL: not configured */
    const char *twilio_api_base, *meta_graph_base; /* NULL: the real ones */
    int webhook_max_age_s;
    int actor_idle_timeout_s;                  /* 0: never passivate */
    int max_concurrent_calls;                  /* the fleet's cap on live calls, 0: none */
    int call_lease_ttl_s, max_call_duration_s;
    uint32_t slots;                            /* placement: tenants hash onto this many slots */
    /* On shard s, which has live inbox clients of b's tenant: delivers b (borrowed) to them. */
    void (*deliver)(sb_shard_t *s, sb_inbox_batch_t *b);
} sb_domain_opts_t;

/* Remembers the options (borrowed: they must outlive the shards). Call once before the shards start, with
 * sb_domain_module first in their table. */
void sb_domain_init(const sb_domain_opts_t *opts);
extern const sb_shard_module_t sb_domain_module;

/* The shard of a tenant's actors (any thread, once the shards run). */
unsigned sb_domain_owner(int64_t tenant);
/* The store of shard s (its own thread only); NULL without a domain. */
sb_store_t *sb_domain_store(sb_shard_t *s);

#endif
