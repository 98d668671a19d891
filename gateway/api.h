/* The tenant REST API (API.md "REST API", tenant scope): the read side of the inbound path.
 *
 *   GET /v1/events?after=<cursor>&limit=<n>   → {"events":[{"cursor","type","data"}...],"cursor":N}
 *
 * N is the cursor of the last event returned (or `after` when none was): a client polls with it to get what came
 * next, in order, each event once — the same log the live inbox streams. limit defaults to 100, at most 1000.
 *
 * Calls carry "Authorization: Bearer <api key>". A key only ever sees its own tenant's data. Errors are
 * {"error":{"code","message"}}: 400 bad_request, 401 unauthorized, 503 unavailable. */
#ifndef SB_API_H
#define SB_API_H

#include "adapters/http_server.h"
#include "shards/shard.h"

#include <stdbool.h>

/* Handles a request whose path starts with /v1/ (not /v1/admin/). Answers it and returns true, or returns false
 * when the path is no tenant route. */
bool sb_api_handle(sb_shard_t *s, sb_http_req_t *req);

#endif
