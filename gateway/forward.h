/* Several nodes: the front doors whose work is not handed to the owner through its stream (broadcasts, calls,
 * Twilio's voice webhooks, which all answer with what the owner's actor says) are forwarded whole, over HTTP, to
 * the node that owns the tenant (its `advertise` address), and its answer is relayed as it is.
 *
 * The request goes with its method, target, body and the headers its handler reads (Host, so that a provider's
 * signature over the URL still verifies when public_url is unset; Content-Type, Authorization, Idempotency-Key,
 * X-Twilio-Signature) and X-Switchboard-Forwarded naming this node: a forwarded request is never forwarded again
 * (the owner may have moved meanwhile: it then answers as a node that does not own the tenant does, 503). One curl
 * multi client per shard (adapters/net/http_client); 30 s at most. */
#ifndef SB_FORWARD_H
#define SB_FORWARD_H

#include "adapters/net/http_server.h"
#include "shards/shard.h"

#include <stdbool.h>
#include <stdint.h>

/* On shard s: when the cluster is on, this node does not own tenant's slot and another node does, forwards req there
 * and returns true (req is answered later, exactly once); else false (the caller handles it here). */
bool sb_forward_if_elsewhere(sb_shard_t *s, sb_http_req_t *req, int64_t tenant);

extern const sb_shard_module_t sb_forward_module;

#endif
