/* Provider webhooks (API.md "Webhooks"): verified, parsed, and committed as receipts before the answer.
 *
 *   POST /webhooks/twilio/{channel_id}          inbound message   → 200 text/xml <Response/>
 *   POST /webhooks/twilio/{channel_id}/status   status callback   → 200
 *   GET  /webhooks/meta/{app_id}                 subscription handshake → 200 with hub.challenge, or 403
 *   POST /webhooks/meta/{app_id}                 WhatsApp Cloud / Messenger / Instagram events → 200
 *
 * 200 means the receipt is committed to PostgreSQL (group commit with the other requests of the loop turn); a
 * receipt that cannot be committed gets 503, so the provider retries. A repeated delivery (same MessageSid, or same
 * MessageSid and status) is recognised by the receipt's dedup key, answered 200 and stored once. Unknown channel:
 * 404; not a form: 415; malformed: 400; missing or wrong X-Twilio-Signature: 403, nothing stored.
 *
 * Meta posts all of an app's events to one URL; X-Hub-Signature-256 (HMAC-SHA256 of the raw body with the app
 * secret) is checked first, then each event is stored on the channel whose type and address (phone_number_id, page
 * id, Instagram account id) it names. Events for accounts no channel claims are dropped and still answered 200, or
 * Meta would retry them forever.
 *
 * Receipts are committed with processed_at NULL; once committed, each event goes to its channel's session actor on
 * the tenant's shard (actors/session.h), which applies it and marks it processed; what a crash leaves behind, the
 * sweeper hands over again (shards/domain.h). */
#ifndef SB_WEBHOOKS_H
#define SB_WEBHOOKS_H

#include "adapters/net/http_server.h"
#include "gateway/config.h"
#include "shards/shard.h"

#include <stdbool.h>

/* Remembers the configuration (borrowed; must outlive the shards). Call once before the shards start. */
void sb_webhooks_init(const sb_config_t *cfg);
/* Handles a request whose path starts with /webhooks/. Answers it (now or later) and returns true, or returns
 * false when the path is no webhook route. */
bool sb_webhooks_handle(sb_shard_t *s, sb_http_req_t *req);
/* The shards' module: each shard's caches of channels and Meta apps (their opened secrets), for a minute. */
extern const sb_shard_module_t sb_webhooks_module;

#endif
