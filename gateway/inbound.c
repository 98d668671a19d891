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

#define REGISTRY_BUCKETS 1024
#define SWEEP_FIRST_MS 1000
#define SWEEP_EVERY_MS 5000
#define SWEEP_BACKLOG_MS 500
#define SWEEP_PAGE 1000
#define SB_STRINGIFY_(x) #x
#define SB_STRINGIFY(x) SB_STRINGIFY_(x)

static const sb_config_t *cfg;

void sb_inbound_init(const sb_config_t *c)
{
    cfg = c;
}

/* ---- the port: one statement applies one receipt -------------------------------------------------------------- */

/* A status only moves forward: queued < sending/retrying < sent < delivered < read, with failed and undelivered
 * beside delivered (a late "sent" after "delivered" changes nothing; "failed" after "sent" does). unknown (our own
 * doubt) yields to any news; dead takes none. Callbacks arrive in any order, so without this a slow "sent" could undo
 * a "delivered". */
#define STATUS_RANK(col)                                                                                             \
    "(CASE " col " WHEN 'unknown' THEN -1 WHEN 'queued' THEN 0 WHEN 'received' THEN 0 WHEN 'sending' THEN 1"        \
    " WHEN 'retrying' THEN 1"                                                                                      \
    " WHEN 'sent' THEN 2 WHEN 'delivered' THEN 3 WHEN 'undelivered' THEN 3 WHEN 'failed' THEN 3"                 \
    " WHEN 'read' THEN 4 ELSE 5 END)"

/* $1 tenant, $2 channel, $3 the receipt ids (bigint[]), in the order the session actor took them. One statement
 * applies a whole batch, set-based, with the result applying them one by one would have:
 *  - `r` marks the receipts processed (found by primary key: id = ANY, never through the partial index of
 *    unprocessed receipts, which a backlog makes long); one processed already is not in `r`, so applying twice
 *    changes nothing;
 *  - messages: one contact upsert per sender (its last profile name in the batch wins) and one conversation upsert
 *    per contact, moved on by the number of its messages; each message takes its conversation's seq in batch order;
 *  - statuses only move forward: a status counts if it outranks both the message's stored status and every status
 *    of the batch before it for that message (the running maximum, which is what one-by-one applying would have
 *    stored); the message keeps the last that counts, and each that counts goes to the history and the inbox;
 *  - events: message.created then conversation.updated per new message (the shape GET /v1/conversations lists),
 *    message.status per status that counts, in batch order; the tenant row is updated once, by the number of
 *    events, and its row lock orders the tenant's events: cursors are dense and commit in order.
 * The planner believes every CTE holds one row, so a join of two CTEs becomes a nested loop, quadratic in the batch;
 * rows are matched up through jsonb maps built once instead (`cts`, `sns`, `cvs`, `ms`: key lookups, no joins).
 * Returns the events (cursor, type, data) for the live inbox. */
static const char apply_sql[] =
    "WITH r AS ("
    "  UPDATE webhook_receipts w SET processed_at = now()"
    "  WHERE w.tenant_id = $1 AND w.id = ANY ($3::bigint[]) AND w.processed_at IS NULL"
    "  RETURNING array_position($3::bigint[], w.id) AS ord, w.event),"
    " rm AS (SELECT ord, event, event->>'from' AS sender FROM r WHERE event->>'kind' = 'message'),"
    " sns AS MATERIALIZED (SELECT jsonb_object_agg(sender, n) AS map FROM (SELECT sender, count(*) AS n FROM rm GROUP BY sender) g),"
    " ct AS ("
    "  INSERT INTO contacts AS c (tenant_id, channel_id, address, profile_name)"
    "  SELECT $1, $2, sender, (array_remove(array_agg(event->>'profile_name' ORDER BY ord), NULL))"
    "                         [count(event->>'profile_name')]"
    "  FROM rm GROUP BY sender"
    "  ON CONFLICT (tenant_id, channel_id, address) DO UPDATE"
    "  SET profile_name = coalesce(EXCLUDED.profile_name, c.profile_name), updated_at = now()"
    "  RETURNING id, address, profile_name),"
    " cts AS MATERIALIZED (SELECT jsonb_object_agg(address, jsonb_build_array(id, profile_name)) AS map FROM ct),"
    " cv AS ("
    "  INSERT INTO conversations AS v (tenant_id, channel_id, contact_id, last_seq, last_message_at)"
    "  SELECT $1, $2, ct.id, ((SELECT map FROM sns)->>ct.address)::bigint, now() FROM ct"
    "  ON CONFLICT (tenant_id, channel_id, contact_id) DO UPDATE"
    "  SET last_seq = v.last_seq + EXCLUDED.last_seq, last_message_at = now()"
    "  RETURNING id, contact_id, last_seq, last_message_at, created_at),"
    " cvs AS MATERIALIZED (SELECT jsonb_object_agg(contact_id::text, jsonb_build_array(id, last_seq, last_message_at, created_at))"
    "         AS map FROM cv),"
    " mk AS (SELECT rm.ord, rm.event, rm.sender, k->>0 AS contact_id, k->1 AS profile_name,"
    "               (SELECT map FROM cvs)->(k->>0) AS c"
    "        FROM rm, LATERAL (SELECT (SELECT map FROM cts)->rm.sender AS k) l),"
    " mn AS ("
    "  SELECT mk.*, (c->>0)::bigint AS conversation_id, (c->>1)::bigint - count(*) OVER (PARTITION BY c->>0)"
    "         + row_number() OVER (PARTITION BY c->>0 ORDER BY ord) AS seq, event->>'provider_id' AS provider_id"
    "  FROM mk),"
    " m AS ("
    "  INSERT INTO messages (tenant_id, conversation_id, channel_id, seq, direction, sender, recipient, body, media,"
    "                        provider_id, status)"
    "  SELECT $1, conversation_id, $2, seq, 'in', sender, coalesce(event->>'to', ''), coalesce(event->>'body', ''),"
    "         coalesce(event->'media', '[]'::jsonb), provider_id, 'received'"
    "  FROM mn"
    "  ON CONFLICT (tenant_id, channel_id, provider_id) DO NOTHING"
    "  RETURNING id, provider_id),"
    " ms AS MATERIALIZED (SELECT jsonb_object_agg(provider_id, id::text) AS map FROM m WHERE provider_id IS NOT NULL),"
    " sp AS ("
    "  SELECT s.ord, x.id AS message_id, s.event->>'status' AS status, s.event->>'error_code' AS error_code,"
    "         s.event->>'error_message' AS error_message, " STATUS_RANK("s.event->>'status'") " AS rank,"
    "         " STATUS_RANK("x.status") " AS stored,"
    "         max(" STATUS_RANK("s.event->>'status'") ") OVER (PARTITION BY x.id ORDER BY s.ord"
    "             ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS before"
    "  FROM r s JOIN messages x ON x.tenant_id = $1 AND x.channel_id = $2 AND x.provider_id = s.event->>'provider_id'"
    "  WHERE s.event->>'kind' = 'status'),"
    " sa AS (SELECT * FROM sp WHERE rank > greatest(stored, coalesce(before, -2))),"
    " su AS ("
    "  UPDATE messages AS x SET status = f.status, error_code = f.error_code, error_message = f.error_message,"
    "         updated_at = now()"
    "  FROM (SELECT DISTINCT ON (message_id) * FROM sa ORDER BY message_id, ord DESC) f"
    "  WHERE x.tenant_id = $1 AND x.id = f.message_id AND f.rank > " STATUS_RANK("x.status")
    "  RETURNING x.id),"
    " sc AS (SELECT * FROM sa WHERE message_id = ANY (ARRAY(SELECT id FROM su))),"
    " sh AS ("
    "  INSERT INTO message_status_history (tenant_id, message_id, status, error_code, error_message)"
    "  SELECT $1, message_id, status, error_code, error_message FROM sc),"
    " mc AS (SELECT mn.*, ms.map->>mn.provider_id AS id FROM mn, ms WHERE ms.map ? mn.provider_id),"
    " ev AS ("
    "  SELECT ord, 1 AS n, 'message.created' AS type, jsonb_build_object('id', id, 'conversation_id',"
    "         conversation_id::text, 'channel_id', $2::text, 'direction', 'in', 'from', sender, 'to',"
    "         coalesce(event->>'to', ''), 'body', coalesce(event->>'body', ''), 'media',"
    "         coalesce(event->'media', '[]'::jsonb), 'provider_id', provider_id, 'created_at', now()) AS data"
    "  FROM mc"
    "  UNION ALL"
    "  SELECT ord, 2, 'conversation.updated', jsonb_build_object('id', conversation_id::text, 'channel_id',"
    "         $2::text, 'contact', jsonb_build_object('id', contact_id, 'address', sender,"
    "         'profile_name', profile_name), 'last_seq', seq, 'last_message_at', c->2, 'created_at', c->3)"
    "  FROM mc"
    "  UNION ALL"
    "  SELECT ord, 1, 'message.status', jsonb_strip_nulls(jsonb_build_object('id', message_id::text, 'status', status,"
    "         'error', CASE WHEN error_code IS NULL THEN NULL"
    "                  ELSE jsonb_build_object('code', error_code, 'message', error_message) END)) FROM sc),"
    " cur AS ("
    "  UPDATE tenants SET inbox_cursor = inbox_cursor + (SELECT count(*) FROM ev)"
    "  WHERE id = $1 AND EXISTS (SELECT 1 FROM ev) RETURNING inbox_cursor)"
    " INSERT INTO inbox_events (tenant_id, cursor, type, data)"
    " SELECT $1, cur.inbox_cursor - (SELECT count(*) FROM ev) + row_number() OVER (ORDER BY ev.ord, ev.n), ev.type,"
    "        ev.data"
    " FROM cur, ev RETURNING cursor, type, data::text";

typedef struct apply_op {
    sb_session_done_fn done;
    void *arg;
    int64_t tenant;
    size_t n;
} apply_op_t;

static void applied(void *arg, int err, const char *detail, const PGresult *res)
{
    apply_op_t *op = arg;
    if (err)
        sb_log_warn("inbound: %zu receipt(s) not applied (the sweeper will retry): %s", op->n, detail);
    else
        sb_live_publish(op->tenant, res);
    op->done(op->arg, err);
    free(op);
}

static int port_apply(void *ctx, int64_t tenant, int64_t channel, const int64_t *ids, size_t n,
                      sb_session_done_fn done, void *arg)
{
    (void)ctx;
    sb_shard_t *s = sb_shard_self();
    if (!s || n == 0)
        return SB_EUNAVAIL;
    char t[24], c[24];
    snprintf(t, sizeof t, "%lld", (long long)tenant);
    snprintf(c, sizeof c, "%lld", (long long)channel);
    sb_buf_t list;
    sb_buf_init(&list);
    for (size_t i = 0; i < n; i++)
        sb_buf_printf(&list, "%c%lld", i ? ',' : '{', (long long)ids[i]);
    sb_buf_append_str(&list, SB_STR("}"));
    const char *p[3] = {t, c, sb_buf_cstr(&list)};
    apply_op_t *op = sb_malloc(sizeof *op);
    *op = (apply_op_t){.done = done, .arg = arg, .tenant = tenant, .n = n};
    int rc = sb_pg_query(sb_shard_pg(s), apply_sql, 3, p, SB_PG_RETRY | SB_PG_PREPARED, applied, op);
    if (rc < 0)
        free(op);
    sb_buf_cleanup(&list);
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
    /* Older than a few seconds: younger ones are most likely on their way through an actor right now. */
    sb_pg_query(sb_shard_pg(s),
                "SELECT tenant_id, channel_id, id FROM webhook_receipts WHERE processed_at IS NULL"
                " AND received_at < now() - interval '3 seconds' ORDER BY received_at LIMIT " SB_STRINGIFY(SWEEP_PAGE),
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
