/* The tenant REST API (API.md "REST API", tenant scope): the read side of the inbound path.
 *
 *   GET  /v1/events?after=<cursor>&limit=<n>   → {"events":[{"cursor","type","data"}...],"cursor":N}
 *   GET  /v1/conversations?before=<id>&limit=<n>           → {"conversations":[...]} newest first
 *   GET  /v1/conversations/{id}/messages?before=<seq>&limit=<n> → {"messages":[...]} newest first
 *   GET  /v1/messages/{id}                     → the message with its status history
 *   POST /v1/tokens {"ttl_s"}                  → {"token","expires_at"}: an HS256 JWT for a browser inbox client
 *
 * N is the cursor of the last event returned (or `after` when none was): a client polls with it to get what came
 * next, in order, each event once — the same log the live inbox streams. limit defaults to 100, at most 1000.
 *
 * Calls carry "Authorization: Bearer <api key>", or a token from POST /v1/tokens (which itself takes an API key:
 * a token cannot mint tokens). Tokens are signed with a key derived from master_key, so they need one. A caller
 * only ever sees its own tenant's data: another tenant's ids answer 404. Errors are {"error":{"code","message"}}:
 * 400 bad_request, 401 unauthorized (token_expired, token_bad_signature ... for tokens), 404 not_found,
 * 503 unavailable. */
#ifndef SB_API_H
#define SB_API_H

#include "adapters/net/http_server.h"
#include "shards/shard.h"

#include "gateway/config.h"

#include <stdbool.h>

/* Remembers the configuration (borrowed) and derives the token signing key. Call once before the shards start. */
void sb_api_init(const sb_config_t *cfg);

/* Authenticates a credential: an API key (looked up in PostgreSQL, revoked keys refused) or, unless key_only, an
 * inbox token (a JWT, verified now). Calls cb exactly once, possibly before returning, with status 0 and the
 * tenant id as decimal text (borrowed for the call), or with 401 / 503 and an error code and message for the
 * client (never echoing the credential). cred is borrowed for the call only. On a shard thread. */
typedef void (*sb_api_auth_fn)(void *arg, int status, const char *code, const char *message, const char *tenant);
void sb_api_auth(sb_shard_t *s, sb_str_t cred, bool key_only, sb_api_auth_fn cb, void *arg);

/* Handles a request whose path starts with /v1/ (not /v1/admin/). Answers it and returns true, or returns false
 * when the path is no tenant route. */
bool sb_api_handle(sb_shard_t *s, sb_http_req_t *req);

#endif
