/* API keys (README "API keys and roles"): issued, listed, revoked and rotated, by the admin API for any tenant and by
 * a tenant's owner key for its own.
 *
 *   POST   /v1/admin/tenants/{id}/keys {"role"?}               → 201 {"id","key","prefix","role"} (shown once)
 *   GET    /v1/admin/tenants/{id}/keys                         → 200 {"keys":[{"id","prefix","role","created_at",
 *                                                                "last_used_at","expires_at","replaced_by"}]}
 *   DELETE /v1/admin/tenants/{id}/keys/{key_id}                → 200 {"id","revoked":true}
 *   POST   /v1/admin/tenants/{id}/keys/{key_id}/rotate {"overlap_s"?} → 201 {"id","key","prefix","role",
 *                                                                "replaces","old_expires_at"}
 *   and the same under /v1/keys for the tenant of the owner key that calls (not a token: 401).
 *
 * A revoked key stops at once: the next request with it (or with a token minted from it) is refused 401, and the
 * live inbox clients that signed in with either are sent an error frame and closed with 4401 on every shard. A
 * rotation answers a new key of the same role, and the old one keeps working for overlap_s seconds (default 3600,
 * at most 604800; 0 ends it now), its live inbox clients closed with 4401 when it ends. The listing shows the keys
 * that still work, never a secret. */
#ifndef SB_KEYS_H
#define SB_KEYS_H

#include "adapters/net/http_server.h"
#include "proto/str.h"
#include "shards/shard.h"

#include <stdbool.h>
#include <stdint.h>

#define SB_KEYS_OVERLAP_DEFAULT 3600
#define SB_KEYS_OVERLAP_MAX (7 * 86400)

/* For the admin API, once the admin token was accepted: the keys route of tenant with the path's rest after
 * ".../keys" (empty, "/{key_id}" or "/{key_id}/rotate"). Answers req. */
void sb_keys_admin(sb_shard_t *s, sb_http_req_t *req, int64_t tenant, sb_str_t rest);

/* Handles /v1/keys and below (an owner's API key). Returns false when the path is not the keys'. */
bool sb_keys_handle(sb_shard_t *s, sb_http_req_t *req);

#endif
