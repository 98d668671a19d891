/* The tenant REST API (API.md "REST API", tenant scope): the read side of the inbound path.
 *
 *   GET  /v1/events?after=<cursor>&limit=<n>   → {"events":[{"cursor","type","data"}...],"cursor":N}
 *   GET  /v1/conversations?before=<id>&limit=<n>           → {"conversations":[...]} newest first
 *   GET  /v1/conversations/{id}/messages?before=<seq>&limit=<n> → {"messages":[...]} newest first
 *   GET  /v1/messages/{id}                     → the message with its status history
 *   POST /v1/tokens {"ttl_s","role"?}          → {"token","expires_at","role"}: an HS256 JWT for a browser inbox
 *                                                client, carrying the role (the key's, or a narrower one) and the
 *                                                key's id
 *
 * N is the cursor of the last event returned (or `after` when none was): a client polls with it to get what came
 * next, in order, each event once — the same log the live inbox streams. limit defaults to 100, at most 1000.
 *
 * Calls carry "Authorization: Bearer <api key>", or a token from POST /v1/tokens (which itself takes an API key:
 * a token cannot mint tokens). Tokens are signed with a key derived from master_key, so they need one. A caller
 * only ever sees its own tenant's data: another tenant's ids answer 404. Roles (README "API keys and roles"): every
 * role reads; agent and owner send and place calls; /v1/keys (gateway/keys) takes an owner's key. Errors are
 * {"error":{"code","message"}}: 400 bad_request, 401 unauthorized (token_expired, token_bad_signature ... for
 * tokens), 403 forbidden (the role does not allow it), 404 not_found, 429 rate_limited (with Retry-After),
 * 503 unavailable. */
#ifndef SB_API_H
#define SB_API_H

#include "adapters/net/http_server.h"
#include "gateway/config.h"
#include "gateway/ratelimit.h"
#include "proto/guard.h"
#include "shards/shard.h"

#include <stdbool.h>

/* A key's role, narrowest first: readonly reads; agent also sends, places calls; owner also manages keys. */
typedef enum sb_role { SB_ROLE_NONE = 0, SB_ROLE_READONLY, SB_ROLE_AGENT, SB_ROLE_OWNER } sb_role_t;

/* "readonly", "agent", "owner" → the role; anything else SB_ROLE_NONE. */
sb_role_t sb_role_parse(sb_str_t name);
/* The role's name (static); "none" for SB_ROLE_NONE. */
const char *sb_role_name(sb_role_t r);

/* Who a credential speaks for, once checked. */
typedef struct sb_principal {
    int64_t tenant;
    char tenant_s[24];    /* the tenant id as decimal text */
    int64_t key_id;       /* the API key, or the key a token was minted from */
    sb_role_t role;       /* the key's role, narrowed by a token's */
    bool token;           /* presented as an inbox token (a JWT), not the key itself */
    int64_t key_expires;  /* unix seconds when a rotation ends the key; 0 for never */
    sb_rl_limits_t limits; /* the tenant's rate limits */
} sb_principal_t;

/* Remembers the configuration (borrowed) and derives the token signing key. Call once before the shards start. */
void sb_api_init(const sb_config_t *cfg);

/* Authenticates a credential: an API key (looked up in PostgreSQL: revoked and expired keys refused) or, unless
 * key_only, an inbox token (a JWT, verified here, and its key looked up: a token of a revoked key is refused). Calls
 * cb exactly once, possibly before returning, with status 0 and the principal (borrowed for the call), or with 401 /
 * 429 (addr failed too often lately) / 503 and an error code and message for the client (never echoing the
 * credential). When addr is given (borrowed), a failure that cost a lookup is counted against it
 * (sb_ratelimit_auth_failed), and an address over its budget is refused before any lookup. cred is borrowed for the
 * call only. On a shard thread. */
typedef void (*sb_api_auth_fn)(void *arg, int status, const char *code, const char *message, const sb_principal_t *p);
void sb_api_auth(sb_shard_t *s, sb_str_t cred, bool key_only, const sb_guard_addr_t *addr, sb_api_auth_fn cb,
                 void *arg);

/* A tenant route's handler, called once the request is authenticated, allowed and within its rate limits. p is
 * borrowed for the call. */
typedef void (*sb_api_authed_fn)(sb_shard_t *s, sb_http_req_t *req, const sb_principal_t *p);

/* Authenticates req's bearer credential (an API key only, when key_only), refuses a role below min_role (403
 * forbidden), draws from the rate limits of the REST family and `families` (429 rate_limited), then calls next; or
 * answers the request itself. */
void sb_api_authenticate(sb_shard_t *s, sb_http_req_t *req, sb_role_t min_role, unsigned families, bool key_only,
                         sb_api_authed_fn next);

/* Handles a request whose path starts with /v1/ (not /v1/admin/). Answers it and returns true, or returns false
 * when the path is no tenant route. */
bool sb_api_handle(sb_shard_t *s, sb_http_req_t *req);

/* The shards' module: each shard's record of keys used lately, written to api_keys.last_used_at in one statement a
 * second, at most once a minute per key. */
extern const sb_shard_module_t sb_api_module;

#endif
