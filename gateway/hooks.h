/* Outgoing webhooks: every inbox event of a tenant POSTed to the tenant's own application, in cursor order, signed,
 * retried durably.
 *
 * A tenant names one URL (admin API: POST /v1/admin/tenants/{id}/webhook {"url"} → {"url","secret"}). Each event is
 * POSTed as the JSON {"tenant_id","cursor","type","data"} — the same event the live inbox streams — with headers
 *   X-Switchboard-Event:     <tenant_id>:<cursor>, unique: the receiver's key for discarding a repeat;
 *   X-Switchboard-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>.
 * A receiver checks the HMAC in constant time and refuses a t more than five minutes from its clock, so a captured
 * request cannot be replayed later; it answers 2xx once it has the event.
 *
 * Delivery belongs to the tenant's shard: one deliverer per tenant there reads the events after the tenant's
 * webhook_cursor (committed after each 2xx, so a restart resumes where the application left off, at worst sending
 * the last event again: hence the event id), POSTs them one at a time, and on failure (non-2xx, no connection,
 * timeout) waits with exponential backoff and jitter (1 s up to 5 min, Retry-After honoured) and tries the same
 * event again. An event still undelivered webhook_max_age after it happened goes to webhook_dead_letters, and the
 * next one follows. Every publish of the tenant's events wakes its deliverer; a sweeper on shard 0 wakes those with
 * events waiting after a restart. */
#ifndef SB_HOOKS_H
#define SB_HOOKS_H

#include "gateway/config.h"
#include "shards/shard.h"

#include <stdint.h>

/* Remembers the configuration (borrowed). Call once before the shards start. */
void sb_hooks_init(const sb_config_t *cfg);
/* On each shard thread at start and stop. */
void sb_hooks_shard_start(sb_shard_t *s);
void sb_hooks_shard_stop(sb_shard_t *s);
/* From any shard thread: the tenant has new events (or a new webhook setting): its deliverer looks again. */
void sb_hooks_kick(int64_t tenant);
/* From any shard thread: the tenant's webhook URL or secret changed: its deliverer forgets what it loaded. */
void sb_hooks_reset(int64_t tenant);

#endif
