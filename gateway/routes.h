/* The HTTP routes of the gateway: one handler that every shard's HTTP server calls.
 *
 *   GET /healthz   200 while the process runs
 *   GET /readyz    200 {"redis":"ok","postgres":"ok"} when this shard reaches both, else 503 naming the failure
 *   GET /metrics   Prometheus text, every shard's figures
 *   /v1/admin/...  the admin REST API (gateway/admin)
 *   /webhooks/...  provider webhooks (gateway/webhooks)
 *   /v1/...        the tenant REST API (gateway/api)
 * HEAD is answered wherever GET is. Anything else: 404 not_found, or 405 method_not_allowed on a known path. */
#ifndef SB_ROUTES_H
#define SB_ROUTES_H

#include "adapters/net/http_server.h"

/* An sb_http_handler_fn; arg is the sb_shard_t that serves the request. */
void sb_routes_handle(void *arg, sb_http_req_t *req);

#endif
