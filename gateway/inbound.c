/* Routing, applying and sweeping receipts; see inbound.h. */
#include "gateway/inbound.h"

#include "actors/session.h"
#include "adapters/pg.h"
#include "gateway/live.h"
#include "gateway/sender.h"
#include "gateway/log.h"
#include "proto/err.h"
#include "proto/mem.h"
#include "proto/str.h"
#include "shards/placement.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define REGISTRY_BUCKETS 1024
#define SWEEP_FIRST_MS 1000
#define SWEEP_EVERY_MS 5000
#define SWEEP_BACKLOG_MS 500
#define SWEEP_PAGE 1000

static const sb_config_t *cfg;

void sb_inbound_init(const sb_config_t *c)
{
    cfg = c;
}

/* ---- the port: the applies of a loop turn become one statement ------------------------------------------------ */

/* A status only moves forward: queued < sending/retrying < sent < delivered < read, with failed and undelivered
 * beside delivered (a late "sent" after "delivered" changes nothing; "failed" after "sent" does). unknown (our own
 * doubt) yields to any news; dead takes none. Callbacks arrive in any order, so without this a slow "sent" could undo
 * a "delivered". */
#define STATUS_RANK(col)                                                                                             \
    "(CASE " col " WHEN 'unknown' THEN -1 WHEN 'queued' THEN 0 WHEN 'received' THEN 0 WHEN 'sending' THEN 1"        \
    " WHEN 'retrying' THEN 1"                                                                                      \
    " WHEN 'sent' THEN 2 WHEN 'delivered' THEN 3 WHEN 'undelivered' THEN 3 WHEN 'failed' THEN 3"                 \
    " WHEN 'read' THEN 4 ELSE 5 END)"

/* A status may overtake the answer that tells us its provider id: the provider calls back before our request for
 * the send returned (or before its outcome committed). Such a receipt is left unprocessed, so the sweeper brings it
 * back a few seconds later, when the id is known; after a minute (a send's request times out after 30 s) it is
 * taken as it is, a status for a message that is not ours (Meta reports every message of a number, also those sent
 * from elsewhere). w is the receipt row. */
#define READY(w)                                                                                                   \
    "(" w ".event->>'kind' <> 'status' OR " w ".received_at < now() - interval '1 minute'"                          \
    " OR EXISTS (SELECT 1 FROM messages x WHERE x.tenant_id = " w ".tenant_id AND x.channel_id = " w ".channel_id"  \
    " AND x.provider_id = " w ".event->>'provider_id'))"

/* A lone receipt (an idle gateway: nothing else to apply in the same loop turn) takes this statement, whose plan is
 * a third of the batch statement's: measured at 1 receipt per batch, 130-160 us of execution against 260. $1 tenant,
 * $2 receipt (the channel is the receipt's); the same steps and result as apply_sql below for a batch of one: every
 * branch hangs off `r`, which is empty when the receipt was processed already. */
static const char apply_one_sql[] =
    "WITH r AS ("
    "  UPDATE webhook_receipts w SET processed_at = now()"
    "  WHERE tenant_id = $1 AND id = $2 AND processed_at IS NULL AND " READY("w") " RETURNING event, channel_id),"
    " ct AS ("
    "  INSERT INTO contacts AS c (tenant_id, channel_id, address, profile_name)"
    "  SELECT $1, r.channel_id, r.event->>'from', r.event->>'profile_name' FROM r WHERE r.event->>'kind' = 'message'"
    "  ON CONFLICT (tenant_id, channel_id, address) DO UPDATE"
    "  SET profile_name = coalesce(EXCLUDED.profile_name, c.profile_name), updated_at = now()"
    "  RETURNING id, channel_id, address, profile_name),"
    " cv AS ("
    "  INSERT INTO conversations AS v (tenant_id, channel_id, contact_id, last_seq, last_message_at)"
    "  SELECT $1, ct.channel_id, ct.id, 1, now() FROM ct"
    "  ON CONFLICT (tenant_id, channel_id, contact_id) DO UPDATE"
    "  SET last_seq = v.last_seq + 1, last_message_at = now() RETURNING id, last_seq, last_message_at, created_at),"
    " m AS ("
    "  INSERT INTO messages (tenant_id, conversation_id, channel_id, seq, direction, sender, recipient, body, media,"
    "                        provider_id, status)"
    "  SELECT $1, cv.id, r.channel_id, cv.last_seq, 'in', r.event->>'from', coalesce(r.event->>'to', ''),"
    "         coalesce(r.event->>'body', ''), coalesce(r.event->'media', '[]'::jsonb), r.event->>'provider_id',"
    "         'received'"
    "  FROM cv, r"
    "  ON CONFLICT (tenant_id, channel_id, provider_id) DO NOTHING"
    "  RETURNING id, conversation_id, channel_id, sender, recipient, body, media, provider_id, created_at),"
    " su AS ("
    "  UPDATE messages AS x SET status = r.event->>'status', error_code = r.event->>'error_code',"
    "         error_message = r.event->>'error_message', updated_at = now()"
    "  FROM r WHERE r.event->>'kind' = 'status' AND x.tenant_id = $1 AND x.channel_id = r.channel_id"
    "  AND x.provider_id = r.event->>'provider_id'"
    "  AND " STATUS_RANK("r.event->>'status'") " > " STATUS_RANK("x.status")
    "  RETURNING x.id, x.status, x.error_code, x.error_message),"
    " sh AS ("
    "  INSERT INTO message_status_history (tenant_id, message_id, status, error_code, error_message)"
    "  SELECT $1, su.id, su.status, su.error_code, su.error_message FROM su),"
    " ev AS ("
    "  SELECT 1 AS n, 'message.created' AS type, jsonb_build_object('id', m.id::text, 'conversation_id',"
    "         m.conversation_id::text, 'channel_id', m.channel_id::text, 'direction', 'in', 'from', m.sender, 'to',"
    "         m.recipient, 'body', m.body, 'media', m.media, 'provider_id', m.provider_id, 'created_at',"
    "         m.created_at) AS data FROM m"
    "  UNION ALL"
    "  SELECT 2, 'conversation.updated', jsonb_build_object('id', cv.id::text, 'channel_id', m.channel_id::text,"
    "         'contact',"
    "         jsonb_build_object('id', ct.id::text, 'address', ct.address, 'profile_name', ct.profile_name),"
    "         'last_seq', cv.last_seq, 'last_message_at', cv.last_message_at, 'created_at', cv.created_at)"
    "  FROM cv, ct, m"
    "  UNION ALL"
    "  SELECT 1, 'message.status', jsonb_strip_nulls(jsonb_build_object('id', su.id::text, 'status', su.status,"
    "         'error', CASE WHEN su.error_code IS NULL THEN NULL"
    "                  ELSE jsonb_build_object('code', su.error_code, 'message', su.error_message) END)) FROM su),"
    " cur AS ("
    "  UPDATE tenants SET inbox_cursor = inbox_cursor + (SELECT count(*) FROM ev)"
    "  WHERE id = $1 AND EXISTS (SELECT 1 FROM ev) RETURNING inbox_cursor)"
    " INSERT INTO inbox_events (tenant_id, cursor, type, data)"
    " SELECT $1, cur.inbox_cursor - (SELECT count(*) FROM ev) + row_number() OVER (ORDER BY ev.n), ev.type, ev.data"
    " FROM cur, ev RETURNING cursor, type, data::text";

/* $1 tenants, $2 receipt ids (bigint[] each, pairwise): every receipt the shard's session actors handed over in one
 * loop turn, each actor's in its order. One statement applies them all, set-based, with the result applying them one
 * by one would have:
 *  - `r` marks the receipts processed, found by primary key in a nested loop (the `IS TRUE` hides the predicate of
 *    the partial index of unprocessed receipts, which a backlog makes long: a generic plan once hash-joined such an
 *    index whole); one processed already is not in `r`, so applying twice changes nothing, and neither is a
 *    status whose message is not known yet (READY);
 *  - messages: one contact upsert per (tenant, channel, sender), its last profile name in the batch winning, and one
 *    conversation upsert per contact, moved on by the number of its messages; each message takes its
 *    conversation's seq in batch order;
 *  - statuses only move forward: a status counts if it outranks both the message's stored status and every status
 *    of the batch before it for that message (the running maximum: what one-by-one applying would have stored);
 *    the message keeps the last that counts, and each that counts goes to the history and the inbox;
 *  - events: message.created then conversation.updated per new message (the shape GET /v1/conversations lists),
 *    message.status per status that counts, in batch order; each tenant's row is updated once, by its number of
 *    events, and that row lock orders the tenant's events: cursors are dense and commit in order. Only the tenant's
 *    own shard writes these rows, so two statements never lock two tenants in opposite orders.
 * The planner believes every CTE holds one row, so a join of two CTEs becomes a nested loop, quadratic in the batch;
 * rows are matched up through jsonb maps built once instead (`sns`, `cts`, `cvs`, `ms`, `curs`: key lookups).
 * Returns the events (tenant_id, cursor, type, data), grouped by tenant, for the live inbox. */
#define KEY3(t, c, x) t " || ':' || " c " || ':' || " x
static const char apply_sql[] =
    "WITH r AS ("
    "  UPDATE webhook_receipts w SET processed_at = now()"
    "  FROM unnest($1::bigint[], $2::bigint[]) WITH ORDINALITY AS u(tenant_id, id, ord)"
    "  WHERE w.tenant_id = u.tenant_id AND w.id = u.id AND (w.processed_at IS NULL) IS TRUE AND " READY("w")
    "  RETURNING u.ord, w.tenant_id, w.channel_id, w.event),"
    " rm AS (SELECT ord, tenant_id, channel_id, event, event->>'from' AS sender,"
    "               " KEY3("tenant_id", "channel_id", "(event->>'from')") " AS ck"
    "        FROM r WHERE event->>'kind' = 'message'),"
    " sns AS MATERIALIZED (SELECT jsonb_object_agg(ck, n) AS map FROM (SELECT ck, count(*) AS n FROM rm GROUP BY ck) g),"
    " ct AS ("
    "  INSERT INTO contacts AS c (tenant_id, channel_id, address, profile_name)"
    "  SELECT tenant_id, channel_id, sender, (array_remove(array_agg(event->>'profile_name' ORDER BY ord), NULL))"
    "                                        [count(event->>'profile_name')]"
    "  FROM rm GROUP BY tenant_id, channel_id, sender"
    "  ON CONFLICT (tenant_id, channel_id, address) DO UPDATE"
    "  SET profile_name = coalesce(EXCLUDED.profile_name, c.profile_name), updated_at = now()"
    "  RETURNING id, tenant_id, channel_id, address, profile_name),"
    " cts AS MATERIALIZED (SELECT jsonb_object_agg(" KEY3("tenant_id", "channel_id", "address") ","
    "                                              jsonb_build_array(id, profile_name)) AS map FROM ct),"
    " cv AS ("
    "  INSERT INTO conversations AS v (tenant_id, channel_id, contact_id, last_seq, last_message_at)"
    "  SELECT tenant_id, channel_id, id,"
    "         ((SELECT map FROM sns)->>(" KEY3("tenant_id", "channel_id", "address") "))::bigint, now() FROM ct"
    "  ON CONFLICT (tenant_id, channel_id, contact_id) DO UPDATE"
    "  SET last_seq = v.last_seq + EXCLUDED.last_seq, last_message_at = now()"
    "  RETURNING id, contact_id, last_seq, last_message_at, created_at),"
    " cvs AS MATERIALIZED (SELECT jsonb_object_agg(contact_id::text,"
    "                      jsonb_build_array(id, last_seq, last_message_at, created_at)) AS map FROM cv),"
    " mk AS (SELECT rm.*, k->>0 AS contact_id, k->1 AS profile_name, (SELECT map FROM cvs)->(k->>0) AS c"
    "        FROM rm, LATERAL (SELECT (SELECT map FROM cts)->rm.ck AS k) l),"
    " mn AS ("
    "  SELECT mk.*, (c->>0)::bigint AS conversation_id, (c->>1)::bigint - count(*) OVER (PARTITION BY c->>0)"
    "         + row_number() OVER (PARTITION BY c->>0 ORDER BY ord) AS seq, event->>'provider_id' AS provider_id,"
    "         " KEY3("tenant_id", "channel_id", "(event->>'provider_id')") " AS pk"
    "  FROM mk),"
    " m AS ("
    "  INSERT INTO messages (tenant_id, conversation_id, channel_id, seq, direction, sender, recipient, body, media,"
    "                        provider_id, status)"
    "  SELECT tenant_id, conversation_id, channel_id, seq, 'in', sender, coalesce(event->>'to', ''),"
    "         coalesce(event->>'body', ''), coalesce(event->'media', '[]'::jsonb), provider_id, 'received'"
    "  FROM mn"
    "  ON CONFLICT (tenant_id, channel_id, provider_id) DO NOTHING"
    "  RETURNING id, tenant_id, channel_id, provider_id),"
    " ms AS MATERIALIZED (SELECT jsonb_object_agg(" KEY3("tenant_id", "channel_id", "provider_id") ", id::text) AS map"
    "                     FROM m WHERE provider_id IS NOT NULL),"
    " sp AS ("
    "  SELECT s.ord, s.tenant_id, x.id AS message_id, s.event->>'status' AS status,"
    "         s.event->>'error_code' AS error_code, s.event->>'error_message' AS error_message,"
    "         " STATUS_RANK("s.event->>'status'") " AS rank, " STATUS_RANK("x.status") " AS stored,"
    "         max(" STATUS_RANK("s.event->>'status'") ") OVER (PARTITION BY x.id ORDER BY s.ord"
    "             ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS before"
    "  FROM r s JOIN messages x ON x.tenant_id = s.tenant_id AND x.channel_id = s.channel_id"
    "                          AND x.provider_id = s.event->>'provider_id'"
    "  WHERE s.event->>'kind' = 'status'),"
    " sa AS (SELECT * FROM sp WHERE rank > greatest(stored, coalesce(before, -2))),"
    " su AS ("
    "  UPDATE messages AS x SET status = f.status, error_code = f.error_code, error_message = f.error_message,"
    "         updated_at = now()"
    "  FROM (SELECT DISTINCT ON (message_id) * FROM sa ORDER BY message_id, ord DESC) f"
    "  WHERE x.tenant_id = f.tenant_id AND x.id = f.message_id AND f.rank > " STATUS_RANK("x.status")
    "  RETURNING x.id),"
    " sc AS (SELECT * FROM sa WHERE message_id = ANY (ARRAY(SELECT id FROM su))),"
    " sh AS ("
    "  INSERT INTO message_status_history (tenant_id, message_id, status, error_code, error_message)"
    "  SELECT tenant_id, message_id, status, error_code, error_message FROM sc),"
    " mc AS (SELECT mn.*, ms.map->>mn.pk AS id FROM mn, ms WHERE ms.map ? mn.pk),"
    " ev AS ("
    "  SELECT tenant_id, ord, 1 AS n, 'message.created' AS type, jsonb_build_object('id', id, 'conversation_id',"
    "         conversation_id::text, 'channel_id', channel_id::text, 'direction', 'in', 'from', sender, 'to',"
    "         coalesce(event->>'to', ''), 'body', coalesce(event->>'body', ''), 'media',"
    "         coalesce(event->'media', '[]'::jsonb), 'provider_id', provider_id, 'created_at', now()) AS data"
    "  FROM mc"
    "  UNION ALL"
    "  SELECT tenant_id, ord, 2, 'conversation.updated', jsonb_build_object('id', conversation_id::text,"
    "         'channel_id', channel_id::text, 'contact', jsonb_build_object('id', contact_id, 'address', sender,"
    "         'profile_name', profile_name), 'last_seq', seq, 'last_message_at', c->2, 'created_at', c->3)"
    "  FROM mc"
    "  UNION ALL"
    "  SELECT tenant_id, ord, 1, 'message.status', jsonb_strip_nulls(jsonb_build_object('id', message_id::text,"
    "         'status', status, 'error', CASE WHEN error_code IS NULL THEN NULL"
    "                                    ELSE jsonb_build_object('code', error_code, 'message', error_message) END))"
    "  FROM sc),"
    " cur AS ("
    "  UPDATE tenants t SET inbox_cursor = t.inbox_cursor + g.n"
    "  FROM (SELECT tenant_id, count(*) AS n FROM ev GROUP BY tenant_id) g WHERE t.id = g.tenant_id"
    "  RETURNING t.id, t.inbox_cursor - g.n AS base),"
    " curs AS MATERIALIZED (SELECT jsonb_object_agg(id::text, base) AS map FROM cur)"
    " INSERT INTO inbox_events (tenant_id, cursor, type, data)"
    " SELECT ev.tenant_id, (curs.map->>ev.tenant_id::text)::bigint"
    "        + row_number() OVER (PARTITION BY ev.tenant_id ORDER BY ev.ord, ev.n), ev.type, ev.data"
    " FROM ev, curs ORDER BY ev.tenant_id"
    " RETURNING tenant_id, cursor, type, data::text";

/* What the shard's session actors hand over in one loop turn (or while a segment commits) is a batch of the
 * shard's connection: a hundred tenants with a receipt each cost one statement, not a hundred. A lone receipt takes
 * apply_one_sql. */
typedef struct apply_item {
    int64_t tenant;
    sb_session_done_fn done;
    void *arg;
    size_t n;
    int64_t ids[];
} apply_item_t;

static size_t apply_count(const void *item)
{
    return ((const apply_item_t *)item)->n;
}

static void apply_row(const void *item, size_t k, const char **v, char (*num)[24])
{
    const apply_item_t *it = item;
    snprintf(num[0], sizeof num[0], "%lld", (long long)it->tenant);
    snprintf(num[1], sizeof num[1], "%lld", (long long)it->ids[k]);
    v[0] = num[0];
    v[1] = num[1];
}

static void applied(void **items, size_t n, int err, const char *detail, const PGresult *res)
{
    apply_item_t *first = items[0];
    if (err && err != SB_ECANCELED) {
        sb_log_warn("inbound: %zu apply request(s) not applied (the sweeper will retry): %s", n, detail);
    } else if (!err && n == 1 && first->n == 1) {
        sb_live_publish(first->tenant, res); /* apply_one_sql: one tenant, no tenant column */
    } else if (!err) {
        int rows = PQntuples(res);
        for (int i = 0, j; i < rows; i = j) { /* grouped by tenant */
            for (j = i + 1; j < rows && !strcmp(PQgetvalue(res, j, 0), PQgetvalue(res, i, 0)); j++)
                ;
            sb_live_publish_rows(strtoll(PQgetvalue(res, i, 0), NULL, 10), res, i, j - i);
        }
    }
    for (size_t i = 0; i < n; i++) {
        apply_item_t *it = items[i];
        it->done(it->arg, err);
        free(it);
    }
}

static const sb_pg_batch_def_t apply_def = {
    .what = "applies",
    .sql = apply_sql,
    .ncols = 2,
    .max = 1024, /* receipts */
    .count = apply_count,
    .row = apply_row,
    .sql_one = apply_one_sql,
    .done = applied,
};

static int port_apply(void *ctx, int64_t tenant, int64_t channel, const int64_t *ids, size_t n,
                      sb_session_done_fn done, void *arg)
{
    (void)ctx;
    (void)channel; /* each receipt row knows its own */
    sb_shard_t *s = sb_shard_self();
    if (!s || n == 0)
        return SB_EUNAVAIL;
    apply_item_t *it = sb_malloc(sizeof *it + n * sizeof it->ids[0]);
    *it = (apply_item_t){.tenant = tenant, .done = done, .arg = arg, .n = n};
    memcpy(it->ids, ids, n * sizeof ids[0]);
    int rc = sb_pg_batch_add(sb_shard_pg(s), &apply_def, it);
    if (rc < 0)
        free(it); /* nothing would send it: left for the sweeper */
    return rc;
}

static const sb_session_port_t port = {.ctx = NULL, .apply = port_apply, .send = sb_sender_send};

/* ---- the per-shard registry of session actors ----------------------------------------------------------------- */

typedef struct entry {
    struct entry *next;
    sb_session_args_t args; /* the actor borrows it: freed only when the shard stops */
    sb_actor_id_t id;
} entry_t;

typedef struct registry {
    entry_t *buckets[REGISTRY_BUCKETS];
    uv_timer_t *sweeper;
} registry_t;

static registry_t *registries[SB_MAX_SHARDS]; /* each touched only by its own shard's thread */

static registry_t *registry_of(sb_shard_t *s)
{
    unsigned i = sb_shard_index(s);
    if (!registries[i])
        registries[i] = sb_calloc(1, sizeof *registries[i]);
    return registries[i];
}

/* The session actor of (tenant, channel) on this shard, spawned on first use (or again if it stopped). */
static sb_actor_id_t session_of(sb_shard_t *s, int64_t tenant, int64_t channel)
{
    registry_t *reg = registry_of(s);
    uint64_t h = (uint64_t)tenant * 0x9E3779B97F4A7C15ull ^ (uint64_t)channel;
    entry_t **slot = &reg->buckets[h % REGISTRY_BUCKETS], *e;
    sb_actor_info_t info;
    for (e = *slot; e; e = e->next)
        if (e->args.tenant == tenant && e->args.channel == channel)
            break;
    if (e && sb_rt_actor_info(sb_shard_rt(s), e->id, &info) == 0)
        return e->id;
    if (!e) {
        e = sb_calloc(1, sizeof *e);
        e->args.tenant = tenant;
        e->args.channel = channel;
        e->args.port = &port;
        e->next = *slot;
        *slot = e;
    }
    if (sb_shard_spawn(s, &sb_session_kind, &e->args, &e->id) < 0)
        e->id = 0;
    return e->id;
}

/* A receipt or an outbound message on its way to the session actor of (tenant, channel) on the tenant's shard. Both
 * messages carry one int64 id (sb_session_receipt_t, sb_session_send_t). */
typedef struct route {
    int64_t tenant, channel, id;
    int type; /* SB_SESSION_RECEIPT or SB_SESSION_SEND */
} route_t;
_Static_assert(sizeof(sb_session_receipt_t) == sizeof(int64_t) && sizeof(sb_session_send_t) == sizeof(int64_t),
               "both session messages are one int64 id");

static void route_on_owner(sb_shard_t *s, void *arg)
{
    route_t *r = arg;
    sb_actor_id_t id = session_of(s, r->tenant, r->channel);
    if (!id || sb_rt_send(sb_shard_rt(s), 0, id, r->type, &r->id, sizeof r->id) < 0)
        sb_log_warn("%s %lld not handed to its session (the sweeper will retry)",
                    r->type == SB_SESSION_SEND ? "outbound message" : "receipt", (long long)r->id);
    free(r);
}

unsigned sb_inbound_owner(int64_t tenant)
{
    char t[24];
    int n = snprintf(t, sizeof t, "%lld", (long long)tenant);
    return sb_place_shard(sb_place_slot(sb_str(t, (size_t)n), (uint32_t)cfg->slots), sb_shards_count());
}

static void route(int64_t tenant, int64_t channel, int64_t id, int type)
{
    route_t *r = sb_malloc(sizeof *r);
    *r = (route_t){.tenant = tenant, .channel = channel, .id = id, .type = type};
    if (sb_shard_exec(sb_inbound_owner(tenant), route_on_owner, r) < 0)
        free(r); /* shutting down: the sweepers pick it up after the restart */
}

void sb_inbound_route(int64_t tenant, int64_t channel, int64_t receipt_id)
{
    route(tenant, channel, receipt_id, SB_SESSION_RECEIPT);
}

void sb_inbound_send(int64_t tenant, int64_t channel, int64_t message_id)
{
    route(tenant, channel, message_id, SB_SESSION_SEND);
}

int sb_inbound_route_rows(const PGresult *res)
{
    int n = res ? PQntuples(res) : 0;
    for (int i = 0; i < n; i++)
        sb_inbound_route(strtoll(PQgetvalue(res, i, 0), NULL, 10), strtoll(PQgetvalue(res, i, 1), NULL, 10),
                         strtoll(PQgetvalue(res, i, 2), NULL, 10));
    return n;
}

/* ---- the sweeper ---------------------------------------------------------------------------------------------- */

static void on_sweep(uv_timer_t *t);

static void swept(void *arg, int err, const char *detail, const PGresult *res)
{
    registry_t *reg = registries[0]; /* the sweeper's shard; gone once it stopped */
    (void)arg;
    if (err) {
        sb_log_debug("inbound: sweep skipped: %s", detail);
        return;
    }
    int n = sb_inbound_route_rows(res);
    if (n)
        sb_log_info("inbound: sweeper re-routed %d unprocessed receipt(s)", n);
    if (n == SWEEP_PAGE && reg && reg->sweeper) /* a backlog (an outage, a crash under load): the next page soon */
        uv_timer_start(reg->sweeper, on_sweep, SWEEP_BACKLOG_MS, SWEEP_EVERY_MS);
}

static void on_sweep(uv_timer_t *t)
{
    sb_shard_t *s = t->data;
    if (!sb_pg_connected(sb_shard_pg(s)))
        return;
    /* Older than a few seconds: younger ones are most likely on their way through an actor right now. Oldest first:
     * ids come from one sequence in arrival order, and the partial index of unprocessed receipts is by id. */
    sb_pg_query(sb_shard_pg(s),
                "SELECT tenant_id, channel_id, id FROM webhook_receipts WHERE processed_at IS NULL"
                " AND received_at < now() - interval '3 seconds' ORDER BY id LIMIT " SB_STRINGIFY(SWEEP_PAGE),
                0, NULL, 0, swept, NULL);
}

void sb_inbound_shard_start(sb_shard_t *s)
{
    if (sb_shard_index(s) != 0)
        return;
    registry_t *reg = registry_of(s);
    reg->sweeper = sb_malloc(sizeof *reg->sweeper);
    uv_timer_init(sb_shard_loop(s), reg->sweeper);
    reg->sweeper->data = s;
    uv_timer_start(reg->sweeper, on_sweep, SWEEP_FIRST_MS, SWEEP_EVERY_MS);
}

static void sweeper_closed(uv_handle_t *h)
{
    free(h);
}

void sb_inbound_shard_stop(sb_shard_t *s)
{
    /* not sent: the receipts stay unprocessed, for the sweeper after the restart */
    sb_pg_batch_cancel(sb_shard_pg(s), &apply_def);
    registry_t *reg = registries[sb_shard_index(s)];
    if (!reg)
        return;
    if (reg->sweeper)
        uv_close((uv_handle_t *)reg->sweeper, sweeper_closed);
    /* Actors borrow their entry's args, but a stopped shard runs no handler again (its runner is stopped before this
     * hook), and an actor's stop() does not read them: the entries can go now. */
    for (int b = 0; b < REGISTRY_BUCKETS; b++) {
        while (reg->buckets[b]) {
            entry_t *e = reg->buckets[b];
            reg->buckets[b] = e->next;
            free(e);
        }
    }
    sb_free(registries[sb_shard_index(s)]);
}
