/* The front doors' reads and writes: every statement the admin API, the tenant REST API, the provider webhooks and
 * the admin console send, each a named function with typed parameters over a shard's store (adapters/store/store.h),
 * so that SQL stays in the store and no PGresult or SQLSTATE reaches gateway/.
 *
 * The rules are store.h's: a call returns 0 and then calls cb exactly once, later, on the shard's thread; or it
 * returns a negative code (SB_EUNAVAIL: not connected, or st NULL — a shard without a domain) and never calls cb.
 * Values handed to cb are borrowed for the call.
 *
 * err in a callback: 0; SB_ENOENT, no such row — what was looked up does not exist, or a write named a row that does
 * not (a foreign key, SQLSTATE 23503); SB_EEXIST, a write would duplicate a unique key (23505); SB_EINVAL, the
 * server refused the statement otherwise (logged here with its SQLSTATE); SB_EUNAVAIL, SB_EAGAIN or SB_ECANCELED, the
 * database went away or the shard is stopping (adapters/pg.h). Where a callback has a detail, it is the server's
 * message or the adapter's reason, for an operator's eyes (never NULL). */
#ifndef SB_QUERIES_H
#define SB_QUERIES_H

#include "adapters/store/store.h"
#include "proto/event.h"
#include "proto/rows.h"
#include "proto/str.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef void (*sb_query_done_cb)(void *arg, int err);
/* A listing: rows NULL when err. */
typedef void (*sb_query_rows_cb)(void *arg, int err, const char *detail, const sb_rows_t *rows);
/* JSON documents built by PostgreSQL, one per row, in order (n 0 when err). */
typedef void (*sb_query_json_cb)(void *arg, int err, const sb_str_t *docs, size_t n);

/* ---- the admin API ---------------------------------------------------------------------------------------------- */

/* A new tenant called name: its id and its name as stored. */
int sb_query_tenant_create(sb_store_t *st, const char *name,
                           void (*cb)(void *arg, int err, int64_t id, const char *name), void *arg);
/* The newest 1000 tenants, newest first; columns id, name, created_at, all text. */
int sb_query_tenant_list(sb_store_t *st, sb_query_rows_cb cb, void *arg);
/* Sets (url, secret_sealed) or clears (both NULL) where tenant's events are delivered; delivery starts from the
 * tenant's newest cursor. SB_ENOENT: no such tenant. */
int sb_query_tenant_webhook_set(sb_store_t *st, int64_t tenant, const char *url, const char *secret_sealed,
                                sb_query_done_cb cb, void *arg);

/* A new API key of tenant with role ("owner", "agent" or "readonly"), known by its prefix and the SHA-256 hex of the
 * whole key, with the route that finds it by that hash: its id. SB_ENOENT: no such tenant. */
int sb_query_api_key_create(sb_store_t *st, int64_t tenant, const char *prefix, const char *key_hash, const char *role,
                            void (*cb)(void *arg, int err, int64_t id), void *arg);
/* Tenant's keys that still authenticate (not revoked, not past their expiry), by id, at most 1000: columns id,
 * prefix, role, created_at, last_used_at, expires_at (a rotated key's end; NULL for none), replaced_by — never the
 * hash. */
int sb_query_api_key_list(sb_store_t *st, int64_t tenant, sb_query_rows_cb cb, void *arg);
/* Revokes tenant's key key_id now. SB_ENOENT: no such live key of that tenant. */
int sb_query_api_key_revoke(sb_store_t *st, int64_t tenant, int64_t key_id, sb_query_done_cb cb, void *arg);
/* Rotates tenant's live key key_id: a new key (prefix, key_hash) of the same role, and the old one expiring
 * overlap_s seconds from now (or sooner, when an earlier rotation gave it less). cb gets the new key's id, its role
 * and the old key's expiry (unix seconds). SB_ENOENT: no such live key of that tenant. */
int sb_query_api_key_rotate(sb_store_t *st, int64_t tenant, int64_t key_id, int64_t overlap_s, const char *prefix,
                            const char *key_hash,
                            void (*cb)(void *arg, int err, int64_t id, const char *role, int64_t old_expires),
                            void *arg);
/* Records when keys were last used: n (tenant, key, unix time in seconds) triples, in one statement; a time older
 * than the one stored changes nothing. */
int sb_query_api_keys_used(sb_store_t *st, size_t n, const int64_t *tenants, const int64_t *keys, const int64_t *at,
                           sb_query_done_cb cb, void *arg);

/* A channel to create. */
typedef struct sb_query_channel_new {
    int64_t tenant;
    sb_channel_type_t type;
    const char *address;
    const char *credentials_sealed;
    const char *settings_json; /* a JSON object */
    const char *meta_app_id;   /* NULL: none */
} sb_query_channel_new_t;

/* Creates the channel c and its route (type, address → channel): its id, tenant and address as stored. SB_ENOENT: no
 * such tenant or Meta app; SB_EEXIST: a channel of this type and address exists. */
int sb_query_channel_create(sb_store_t *st, const sb_query_channel_new_t *c,
                            void (*cb)(void *arg, int err, int64_t id, int64_t tenant, const char *address), void *arg);
/* The first 1000 channels of tenant by id; columns id, type, address, settings (JSON), meta_app_id, created_at, all
 * text. */
int sb_query_channel_list(sb_store_t *st, int64_t tenant, sb_query_rows_cb cb, void *arg);

/* Registers a Meta app: its secret sealed, its verify token as the SHA-256 hex. SB_EEXIST: registered already. */
int sb_query_meta_app_create(sb_store_t *st, const char *app_id, const char *secret_sealed,
                             const char *verify_token_hash, sb_query_done_cb cb, void *arg);

/* ---- the tenant REST API --------------------------------------------------------------------------------------- */

/* A key that authenticates, as a request needs it. */
typedef struct sb_query_key {
    int64_t tenant, id;
    const char *role;        /* "owner", "agent" or "readonly" */
    int64_t expires;         /* unix seconds when a rotation ends it; 0 for never */
    const char *rate_limits; /* the tenant's rate-limit overrides, a JSON object */
} sb_query_key_t;
typedef void (*sb_query_key_cb)(void *arg, int err, const sb_query_key_t *k);

/* The live API key (not revoked, not expired) whose SHA-256 hex is key_hash. SB_ENOENT: unknown, revoked or
 * expired. */
int sb_query_api_key_auth(sb_store_t *st, const char *key_hash, sb_query_key_cb cb, void *arg);
/* Tenant's key key_id, when it is live (an inbox token names the key it was minted from). SB_ENOENT: not live. */
int sb_query_api_key_by_id(sb_store_t *st, int64_t tenant, int64_t key_id, sb_query_key_cb cb, void *arg);
/* Tenant's conversations with an id below before, newest first, at most limit: each a JSON object (id, channel_id,
 * contact {id, address, profile_name}, last_seq, last_message_at, created_at). */
int sb_query_conversations(sb_store_t *st, int64_t tenant, int64_t before, int64_t limit, sb_query_json_cb cb,
                           void *arg);
/* The messages of tenant's conversation with a seq below before, newest first, at most limit: each a JSON object.
 * SB_ENOENT: the tenant has no such conversation. */
int sb_query_conversation_messages(sb_store_t *st, int64_t tenant, int64_t conversation, int64_t before,
                                   int64_t limit, sb_query_json_cb cb, void *arg);
/* Tenant's message id as a JSON object, with its status history. SB_ENOENT: no such message. A send a node of a
 * cluster took and its session has not stored yet (sb_store_intake_add) reads as queued or scheduled, its
 * conversation_id and seq null. */
int sb_query_message(sb_store_t *st, int64_t tenant, int64_t id, void (*cb)(void *arg, int err, sb_str_t json),
                     void *arg);

/* Where tenant's message id lives and how far it has got (DELETE /v1/messages/{id} finds its channel's session by
 * it): its channel, direction and status (borrowed for the callback). SB_ENOENT: no such message. */
typedef struct sb_query_message_ref {
    int64_t channel;
    bool out;
    const char *status;
    bool intake;               /* a send taken by a node of a cluster, not stored by its session yet */
} sb_query_message_ref_t;
int sb_query_message_ref(sb_store_t *st, int64_t tenant, int64_t id,
                         void (*cb)(void *arg, int err, const sb_query_message_ref_t *r), void *arg);

/* ---- sends a node of a cluster takes for its channel's session (gateway/sends) --------------------------------- */

/* The time (Unix ms) of the newest inbound message of tenant's conversation with `to` on channel (the start of Meta's
 * 24-hour window, as its session knows it), 0 when there is none. */
int sb_query_last_inbound(sb_store_t *st, int64_t tenant, int64_t channel, const char *to,
                          void (*cb)(void *arg, int err, int64_t at_ms), void *arg);

/* ---- calls ------------------------------------------------------------------------------------------------------ */

/* The tenant's calls with ids below before, newest first, at most limit, each a JSON object. */
int sb_query_calls(sb_store_t *st, int64_t tenant, int64_t before, int64_t limit, sb_query_json_cb cb, void *arg);
/* One call of the tenant as a JSON object. SB_ENOENT: none. */
int sb_query_call(sb_store_t *st, int64_t tenant, int64_t id, void (*cb)(void *arg, int err, sb_str_t json),
                  void *arg);
/* Live calls (not ended) of a tenant (0: of every tenant), oldest first: id, tenant, channel, direction, status,
 * from, to, age_s. */
int sb_query_calls_live(sb_store_t *st, int64_t tenant, sb_query_rows_cb cb, void *arg);

typedef struct sb_query_call_ref {
    int64_t tenant, channel;
    const char *call_key, *status;
} sb_query_call_ref_t;

/* Where call id lives (any tenant: the console's). SB_ENOENT: no such call. */
int sb_query_call_ref(sb_store_t *st, int64_t id, void (*cb)(void *arg, int err, const sb_query_call_ref_t *r),
                      void *arg);
/* Changes a tenant's settings: max_concurrent_calls when set_max (max -1: none), its rate-limit overrides when
 * limits is not NULL ("null" clears them all, a JSON object is merged into them, a member set to null is removed),
 * and max_concurrent_sends when set_sends (sends -1: back to the default). cb gets the overrides as stored (a JSON
 * object) and max_concurrent_sends (0: the default). SB_ENOENT: no such tenant. */
int sb_query_tenant_patch(sb_store_t *st, int64_t tenant, bool set_max, int64_t max, const char *limits,
                          bool set_sends, int64_t sends,
                          void (*cb)(void *arg, int err, const char *rate_limits, int64_t max_sends), void *arg);

/* A channel's settings, as stored. */
typedef struct sb_query_channel_settings {
    int64_t channel;
    sb_channel_type_t type;
    const char *settings_json;     /* a JSON object */
    int64_t tenant_max_sends;      /* its tenant's max_concurrent_sends, 0: the default */
} sb_query_channel_settings_t;

/* A tenant's channel's settings (patch NULL), or changed first (patch: a JSON object merged into them, a member set
 * to null removed). SB_ENOENT: no such channel of that tenant. */
int sb_query_channel_settings(sb_store_t *st, int64_t tenant, int64_t channel, const char *patch,
                              void (*cb)(void *arg, int err, const sb_query_channel_settings_t *cs), void *arg);

/* ---- provider webhooks ----------------------------------------------------------------------------------------- */

/* A routed channel, as a webhook needs it. */
typedef struct sb_query_channel {
    int64_t tenant;
    sb_channel_type_t type;         /* SB_CH_NONE: a type this build does not know */
    const char *credentials_sealed; /* "" when it has none */
    const char *address;
    const char *settings_json;      /* the channel's settings (a JSON object) */
    int64_t tenant_max_calls;       /* the tenant's max_concurrent_calls, 0 when not set */
    const char *webhook_secret_sealed; /* the tenant's, NULL when none */
} sb_query_channel_t;

/* The channel with this id (found through its route). SB_ENOENT: none. */
int sb_query_channel_route(sb_store_t *st, int64_t channel,
                           void (*cb)(void *arg, int err, const sb_query_channel_t *ch), void *arg);

typedef struct sb_query_meta_app {
    const char *secret_sealed;
    const char *verify_token_hash; /* SHA-256 hex */
} sb_query_meta_app_t;

/* The registered Meta app app_id. SB_ENOENT: none. */
int sb_query_meta_app(sb_store_t *st, const char *app_id,
                      void (*cb)(void *arg, int err, const sb_query_meta_app_t *app), void *arg);

/* ---- the admin console: tables for an operator ----------------------------------------------------------------- */

/* The newest 1000 tenants: id, name, channels (their count), cursor (the newest event's), created_at. */
int sb_query_tenant_overview(sb_store_t *st, sb_query_rows_cb cb, void *arg);
/* Tenant's first 1000 channels: id, type, address, meta_app_id ("" for none), created_at — never credentials. */
int sb_query_channel_overview(sb_store_t *st, int64_t tenant, sb_query_rows_cb cb, void *arg);
/* The newest 1000 outbound messages that ran out of attempts, of tenant (0: of every tenant): id, tenant, channel,
 * to, attempts, error, since. */
int sb_query_dead_messages(sb_store_t *st, int64_t tenant, sb_query_rows_cb cb, void *arg);
/* Queues message id again, its attempts from zero, if it is outbound and dead, failed or unknown: back in the outbox
 * with a history entry. Rows: id, tenant, channel, status ("queued") — none when it was not such a message. */
int sb_query_message_replay(sb_store_t *st, int64_t id, sb_query_rows_cb cb, void *arg);

#endif
