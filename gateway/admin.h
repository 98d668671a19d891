/* The admin REST API (API.md "REST API", admin scope): tenants, their API keys and channels, and Meta apps.
 *
 *   POST /v1/admin/tenants                        {"name"}                        → 201 {"id","name"}
 *   GET  /v1/admin/tenants                                                        → 200 {"tenants":[...]}
 *   POST /v1/admin/tenants/{id}/keys                                              → 201 {"id","key","prefix"}
 *   POST /v1/admin/tenants/{id}/channels          {"type","address","credentials","settings","meta_app_id"?}
 *                                                                                 → 201 {"id",...,"webhook_url"}
 *   GET  /v1/admin/tenants/{id}/channels                                          → 200 {"channels":[...]}
 *   POST /v1/admin/meta-apps                      {"app_id","app_secret","verify_token"} → 201 {"app_id","webhook_url"}
 *
 * Every call carries "Authorization: Bearer <admin_token>"; without an admin_token configured the API refuses all.
 * Wrong tokens spend the client address's failure budget (gateway/authguard.h, shared with the console): after five,
 * each 401 comes later than the one before, and the tenth blocks the address for a minute: 429 rate_limited with
 * Retry-After, connection closed, whatever token it sends meanwhile.
 * Ids are JSON strings (they are 64-bit). Credentials are sealed under master_key, bound to their tenant; an API key
 * is shown once and stored as its SHA-256 only. Errors are {"error":{"code","message"}}: 400 bad_request / 401
 * unauthorized / 404 not_found / 409 conflict / 415 unsupported_media_type / 429 rate_limited / 503 unavailable. */
#ifndef SB_ADMIN_H
#define SB_ADMIN_H

#include "adapters/net/http_server.h"
#include "gateway/config.h"
#include "shards/shard.h"

#include <stdbool.h>

/* Remembers the configuration (borrowed: it must outlive every shard). Call once before the shards start. */
void sb_admin_init(const sb_config_t *cfg);
/* Handles a request whose path starts with /v1/admin/. Answers it (now or later) and returns true; returns false,
 * leaving it unanswered, when the path is no admin route. */
bool sb_admin_handle(sb_shard_t *s, sb_http_req_t *req);

#endif
