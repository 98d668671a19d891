/* The store's broadcasts; see broadcasts.h.
 *
 * Measured on this machine (PostgreSQL 16, 4096 new recipients a statement, 2 cores shared): the foreign-key triggers
 * of contacts, conversations and messages are about a third of a batch, the inserts of contacts and conversations
 * another third; recipients already known (contact and conversation found by their unique keys, one index descent
 * each) cost a fifth less. 100,000 recipients take 5 to 8 s to expand, which is why a broadcast is answered once its
 * recipients are staged (about 150 ms for 100,000) and expanded after. A broadcast's messages get no first history
 * entry (their acceptance is the broadcast's created_at; their history starts with their first send): a fifth of a
 * batch less. */
#include "adapters/store/broadcasts.h"

#include "adapters/pg.h"
#include "gateway/log.h"
#include "proto/err.h"
#include "proto/mem.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct bop {
    void *cb, *arg;
} bop_t;

static bop_t *bop_new(void *cb, void *arg)
{
    bop_t *o = sb_malloc(sizeof *o);
    o->cb = cb;
    o->arg = arg;
    return o;
}

static void i64_text(char out[24], int64_t v)
{
    snprintf(out, 24, "%" PRId64, v);
}

static int64_t col_i64(const PGresult *res, int r, int c)
{
    return PQgetisnull(res, r, c) ? 0 : strtoll(PQgetvalue(res, r, c), NULL, 10);
}

/* Logs a refusal with its SQLSTATE (never the message: it may quote a tenant's data). */
static int refused(int err, const PGresult *res, const char *what)
{
    if (err == SB_EINVAL) {
        const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
        sb_log_error("store: %s refused: SQLSTATE %s", what, state ? state : "?");
    }
    return err;
}

/* A session's write (expansion, cancel) for tenant: fenced by the store's rule (sb_store_fence). */
static int write_query(sb_store_t *st, int64_t tenant, const char *sql, int n, const char *const *p, int flags,
                       sb_pg_query_cb read, bop_t *o)
{
    sb_pg_fence_t f;
    int fenced = st ? sb_store_fence(st, tenant, &f) : SB_EUNAVAIL;
    int rc = fenced < 0 ? fenced
                        : sb_pg_query_fenced(sb_store_pg(st), sql, n, p, flags, &f, fenced ? 1 : 0, read, o);
    if (rc < 0)
        free(o);
    return rc;
}

static int query(sb_store_t *st, const char *sql, int n, const char *const *p, int flags, sb_pg_query_cb read,
                 bop_t *o)
{
    int rc = st ? sb_pg_query(sb_store_pg(st), sql, n, p, flags, read, o) : SB_EUNAVAIL;
    if (rc < 0)
        free(o);
    return rc;
}

/* ---- begin: the broadcast's row with its recipients staged, or the one its key names ------------------------------ */

/* $1 tenant, $2 channel, $3 body, $4 template, $5 send_at, $6 idempotency key, $7 $8 $9 the recipients' addresses,
 * bodies and templates (text arrays). No row comes back only when a twin with the same key committed while this one
 * ran (its row is not in this statement's snapshot). */
static const char begin_sql[] =
    "WITH i AS ("
    "  INSERT INTO broadcasts (tenant_id, channel_id, body, template, send_at, status, recipients, idempotency_key,"
    "                          pending_to, pending_body, pending_template)"
    "  VALUES ($1, $2, $3, $4::jsonb, $5::timestamptz, 'accepting', cardinality($7::text[]), $6, $7::text[],"
    "          $8::text[], $9::text[])"
    "  ON CONFLICT (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING RETURNING id)"
    " SELECT id, true FROM i"
    " UNION ALL SELECT id, false FROM broadcasts"
    "  WHERE tenant_id = $1 AND idempotency_key = $6 AND NOT EXISTS (SELECT 1 FROM i)";

static void begin_read(void *arg, int err, const char *detail, const PGresult *res)
{
    bop_t *o = arg;
    (void)detail;
    err = refused(err, res, "a broadcast");
    int64_t id = 0;
    bool created = false;
    if (!err && PQntuples(res) == 1) {
        id = col_i64(res, 0, 0);
        created = PQgetvalue(res, 0, 1)[0] == 't';
    } else if (!err) {
        err = SB_EAGAIN;
    }
    ((void (*)(void *, int, int64_t, bool))o->cb)(o->arg, err, id, created);
    free(o);
}

/* A text array literal of v[0..n) (v NULL: n NULLs). */
static void text_array(sb_buf_t *b, const char *const *v, size_t n)
{
    sb_buf_init(b);
    sb_buf_reserve(b, v ? 0 : 5 * n + 2);
    for (size_t i = 0; i < n; i++)
        sb_pg_array_item(b, v ? v[i] : NULL);
    sb_buf_puts(b, b->len ? "}" : "{}");
}

static int port_begin(void *ctx, const sb_broadcast_head_t *b, void (*cb)(void *, int, int64_t, bool), void *arg)
{
    char t[24], ch[24];
    i64_text(t, b->tenant);
    i64_text(ch, b->channel);
    sb_buf_t to, body, tpl;
    text_array(&to, b->to, b->recipients);
    text_array(&body, b->bodies, b->recipients);
    text_array(&tpl, b->templates, b->recipients);
    const char *p[9] = {t, ch, b->body, b->template_json, b->send_at, b->idempotency_key, to.p, body.p, tpl.p};
    int rc = query(ctx, begin_sql, 9, p, SB_PG_ALONE, begin_read, bop_new((void *)cb, arg));
    sb_buf_cleanup(&to);
    sb_buf_cleanup(&body);
    sb_buf_cleanup(&tpl);
    return rc;
}

/* ---- rows: the next batch of staged recipients into messages -------------------------------------------------------
 *
 * $1 tenant, $2 channel, $3 broadcast, $4 sender, $5 created_at, $6 at most this many. The batch is the staged
 * arrays' slice after `expanded` (the broadcast's row locked meanwhile); nothing when the broadcast is not accepting
 * (canceled while it was expanded). Contacts and conversations are found by their unique keys (a scalar subquery
 * each: an index descent a recipient, never a scan of the channel's contacts) or made; an address twice in the batch
 * is one contact and conversation, with a message per occurrence, numbered in order (row_number). A known
 * conversation's newest seq is one descent of its (tenant, conversation, seq) index. Ids: one nextval of the identity
 * (which steps by 1024, sql/0011) per 1024 rows. The same statement moves `expanded` on, and the last one makes the
 * broadcast active and drops its staged arrays. Answers how many rows it wrote and whether the broadcast is whole. */
static const char rows_sql[] =
    "WITH bc AS MATERIALIZED ("
    "  SELECT b.expanded, b.recipients, b.send_at, b.pending_to[b.expanded + 1 : b.expanded + $6::int] AS a_to,"
    "         b.pending_body[b.expanded + 1 : b.expanded + $6::int] AS a_body,"
    "         b.pending_template[b.expanded + 1 : b.expanded + $6::int] AS a_tpl"
    "  FROM broadcasts b WHERE b.tenant_id = $1 AND b.id = $3 AND b.status = 'accepting' FOR UPDATE),"
    " u AS MATERIALIZED ("
    "  SELECT u.*, (SELECT c.id FROM contacts c"
    "               WHERE c.tenant_id = $1 AND c.channel_id = $2 AND c.address = u.addr) AS cid"
    "  FROM bc, unnest(bc.a_to, bc.a_body, bc.a_tpl) WITH ORDINALITY AS u(addr, body, tpl, ord)),"
    " ci AS ("
    "  INSERT INTO contacts (tenant_id, channel_id, address)"
    "  SELECT DISTINCT $1::bigint, $2::bigint, addr FROM u WHERE cid IS NULL"
    "  ON CONFLICT DO NOTHING RETURNING id, address),"
    " k AS MATERIALIZED ("
    "  SELECT k.*, (SELECT v.id FROM conversations v"
    "               WHERE v.tenant_id = $1 AND v.channel_id = $2 AND v.contact_id = k.contact_id) AS vid"
    "  FROM (SELECT u.ord, coalesce(u.cid, ci.id) AS contact_id"
    "        FROM u LEFT JOIN ci ON u.cid IS NULL AND ci.address = u.addr) k),"
    " vi AS ("
    "  INSERT INTO conversations (tenant_id, channel_id, contact_id)"
    "  SELECT DISTINCT $1::bigint, $2::bigint, contact_id FROM k WHERE vid IS NULL"
    "  ON CONFLICT DO NOTHING RETURNING id, contact_id),"
    " sq AS MATERIALIZED ("
    "  SELECT cv.ord, cv.conv,"
    "         coalesce(CASE WHEN cv.old THEN (SELECT max(m.seq) FROM messages m"
    "                                         WHERE m.tenant_id = $1 AND m.conversation_id = cv.conv) END, 0)"
    "         + row_number() OVER (PARTITION BY cv.conv ORDER BY cv.ord) AS seq"
    "  FROM (SELECT k.ord, coalesce(k.vid, vi.id) AS conv, k.vid IS NOT NULL AS old"
    "        FROM k LEFT JOIN vi ON k.vid IS NULL AND vi.contact_id = k.contact_id) cv),"
    " n AS MATERIALIZED (SELECT count(*)::int AS n FROM u),"
    " blk AS MATERIALIZED ("
    "  SELECT g - 1 AS b, nextval(pg_get_serial_sequence('messages', 'id')) AS first"
    "  FROM n, generate_series(1, (n.n + 1023) / 1024) g),"
    " r AS MATERIALIZED ("
    "  SELECT u.ord, blk.first + (u.ord - 1) % 1024 AS id, sq.conv, sq.seq, u.addr, u.body, u.tpl"
    "  FROM u JOIN sq USING (ord) JOIN blk ON blk.b = (u.ord - 1) / 1024),"
    " m AS ("
    "  INSERT INTO messages (tenant_id, id, conversation_id, channel_id, seq, direction, sender, recipient, body,"
    "                        media, status, template, created_at, updated_at, priority, send_at, broadcast_id)"
    "  OVERRIDING SYSTEM VALUE"
    "  SELECT $1, r.id, r.conv, $2, r.seq, 'out', $4, r.addr, coalesce(r.body, ''), '[]',"
    "         CASE WHEN bc.send_at > now() THEN 'scheduled' ELSE 'queued' END, r.tpl::jsonb, $5::timestamptz,"
    "         $5::timestamptz, 'bulk', bc.send_at, $3 FROM r, bc),"
    " o AS (INSERT INTO outbox (tenant_id, channel_id, message_id) SELECT $1, $2, id FROM r),"
    " w AS ("
    "  UPDATE broadcasts x SET expanded = x.expanded + n.n,"
    "         status = CASE WHEN x.expanded + n.n >= x.recipients THEN 'active' ELSE x.status END,"
    "         pending_to = CASE WHEN x.expanded + n.n >= x.recipients THEN NULL ELSE x.pending_to END,"
    "         pending_body = CASE WHEN x.expanded + n.n >= x.recipients THEN NULL ELSE x.pending_body END,"
    "         pending_template = CASE WHEN x.expanded + n.n >= x.recipients THEN NULL ELSE x.pending_template END,"
    "         updated_at = now()"
    "  FROM n WHERE x.tenant_id = $1 AND x.id = $3 AND x.status = 'accepting' RETURNING x.status)"
    " SELECT n.n, coalesce((SELECT status <> 'accepting' FROM w), true) FROM n";

typedef void (*rows_cb_t)(void *, int, size_t, bool);

static void rows_read(void *arg, int err, const char *detail, const PGresult *res)
{
    bop_t *o = arg;
    (void)detail;
    err = refused(err, res, "a broadcast's recipients");
    size_t n = !err && PQntuples(res) == 1 ? (size_t)col_i64(res, 0, 0) : 0;
    bool whole = !err && PQntuples(res) == 1 && PQgetvalue(res, 0, 1)[0] == 't';
    ((rows_cb_t)o->cb)(o->arg, err, n, whole);
    free(o);
}

static int port_rows(void *ctx, const sb_broadcast_rows_t *r, rows_cb_t cb, void *arg)
{
    char t[24], ch[24], bc[24], max[24];
    i64_text(t, r->tenant);
    i64_text(ch, r->channel);
    i64_text(bc, r->broadcast_id);
    i64_text(max, (int64_t)r->max);
    const char *p[6] = {t, ch, bc, r->sender, r->created_at, max};
    /* alone: a statement of its own, so that the connection's other work goes between a broadcast's batches */
    return write_query(ctx, r->tenant, rows_sql, 6, p, SB_PG_ALONE | SB_PG_PREPARED, rows_read,
                       bop_new((void *)cb, arg));
}

/* ---- the broadcasts a session resumes ------------------------------------------------------------------------------ */

typedef void (*ids_cb_t)(void *, int, const int64_t *, size_t);

static void accepting_read(void *arg, int err, const char *detail, const PGresult *res)
{
    bop_t *o = arg;
    (void)detail;
    err = refused(err, res, "a channel's accepting broadcasts");
    int n = err ? 0 : PQntuples(res);
    int64_t *ids = sb_malloc((n ? (size_t)n : 1) * sizeof *ids);
    for (int i = 0; i < n; i++)
        ids[i] = col_i64(res, i, 0);
    ((ids_cb_t)o->cb)(o->arg, err, ids, (size_t)n);
    free(ids);
    free(o);
}

static int port_accepting(void *ctx, int64_t tenant, int64_t channel, ids_cb_t cb, void *arg)
{
    char t[24], ch[24];
    i64_text(t, tenant);
    i64_text(ch, channel);
    const char *p[2] = {t, ch};
    return query(ctx,
                 "SELECT id FROM broadcasts WHERE tenant_id = $1 AND channel_id = $2 AND status = 'accepting'"
                 " ORDER BY id",
                 2, p, 0, accepting_read, bop_new((void *)cb, arg));
}

/* ---- cancel ---------------------------------------------------------------------------------------------------------
 *
 * $1 tenant, $2 channel, $3 broadcast (0: every one of the channel left accepting), $4 abandon, $5 the ids to keep.
 * Found: the broadcast exists on that channel (whatever its status: a second cancel finds it, and cancels nothing). */
static const char cancel_sql[] =
    "WITH b AS ("
    "  UPDATE broadcasts SET status = CASE WHEN $4::boolean THEN 'failed' ELSE 'canceled' END,"
    "         idempotency_key = CASE WHEN $4::boolean THEN NULL ELSE idempotency_key END,"
    "         pending_to = NULL, pending_body = NULL, pending_template = NULL, updated_at = now()"
    "  WHERE tenant_id = $1 AND channel_id = $2"
    "  AND CASE WHEN $3::bigint = 0 THEN status = 'accepting' ELSE id = $3 AND status IN ('accepting', 'active') END"
    "  RETURNING id),"
    " x AS ("
    "  UPDATE messages m SET status = 'canceled', updated_at = now()"
    "  WHERE m.tenant_id = $1 AND m.broadcast_id = ANY (ARRAY(SELECT id FROM b))"
    "  AND m.status IN ('queued', 'scheduled', 'retrying') AND m.id <> ALL ($5::bigint[]) RETURNING m.id),"
    /* the outbox entries by their own rows, each checked by its message's key (the statement's snapshot sees the
     * messages before x changed them): never a join of the outbox with x, whose size the planner cannot know (a
     * nested loop over 100,000 x 100,000 rows was the plan it once chose) */
    " d AS ("
    "  DELETE FROM outbox o WHERE o.tenant_id = $1 AND o.channel_id = $2"
    "  AND EXISTS (SELECT 1 FROM messages m WHERE m.tenant_id = $1 AND m.id = o.message_id"
    "              AND m.broadcast_id = ANY (ARRAY(SELECT id FROM b))"
    "              AND m.status IN ('queued', 'scheduled', 'retrying')"
    "              AND m.id <> ALL ($5::bigint[]))),"
    " h AS (INSERT INTO message_status_history (tenant_id, message_id, status) SELECT $1, id, 'canceled' FROM x)"
    " SELECT (SELECT count(*) FROM broadcasts WHERE tenant_id = $1 AND channel_id = $2 AND id = $3),"
    "        (SELECT count(*) FROM x)";

static void cancel_read(void *arg, int err, const char *detail, const PGresult *res)
{
    bop_t *o = arg;
    (void)detail;
    err = refused(err, res, "a broadcast's cancel");
    bool found = !err && PQntuples(res) == 1 && col_i64(res, 0, 0) > 0;
    int64_t n = !err && PQntuples(res) == 1 ? col_i64(res, 0, 1) : 0;
    ((void (*)(void *, int, bool, int64_t))o->cb)(o->arg, err, found, n);
    free(o);
}

static int port_cancel(void *ctx, int64_t tenant, int64_t channel, int64_t broadcast_id, bool abandon,
                       const int64_t *keep, size_t nkeep, void (*cb)(void *, int, bool, int64_t), void *arg)
{
    char t[24], ch[24], bc[24], num[24];
    i64_text(t, tenant);
    i64_text(ch, channel);
    i64_text(bc, broadcast_id);
    sb_buf_t k;
    sb_buf_init(&k);
    sb_buf_puts(&k, "{");
    for (size_t i = 0; i < nkeep; i++) {
        i64_text(num, keep[i]);
        sb_buf_printf(&k, "%s%s", i ? "," : "", num);
    }
    sb_buf_puts(&k, "}");
    const char *p[5] = {t, ch, bc, abandon ? "t" : "f", k.p};
    int rc = write_query(ctx, tenant, cancel_sql, 5, p, SB_PG_ALONE, cancel_read, bop_new((void *)cb, arg));
    sb_buf_cleanup(&k);
    return rc;
}

/* ---- counts ------------------------------------------------------------------------------------------------------- */

/* $1 tenant, $2 broadcast: the document and whether any of its messages is still to go. Every status a message of a
 * broadcast takes is in counts (0 when none has it), and any other one that occurs. One pass over the broadcast's
 * rows of the (tenant, broadcast, status) index. */
#define BROADCAST_DOC                                                                                              \
    "WITH c AS (SELECT m.status, count(*) AS n FROM messages m"                                                     \
    "           WHERE m.tenant_id = $1 AND m.broadcast_id = $2 GROUP BY m.status),"                                 \
    " o AS (SELECT coalesce(sum(n) FILTER (WHERE status IN ('queued', 'scheduled', 'sending', 'retrying')), 0)"    \
    "       AS open FROM c)"                                                                                       \
    " SELECT json_build_object('id', b.id::text, 'channel_id', b.channel_id::text,"                                \
    "        'status', CASE WHEN b.status = 'active' AND o.open = 0 THEN 'done' ELSE b.status END,"                \
    "        'recipients', b.recipients, 'send_at', b.send_at, 'created_at', b.created_at,"                       \
    "        'counts', (SELECT jsonb_object_agg(s, 0) FROM unnest(ARRAY['queued', 'scheduled', 'sending',"         \
    "                          'retrying', 'sent', 'delivered', 'read', 'failed', 'undelivered', 'unknown',"       \
    "                          'dead', 'canceled']) s)"                                                           \
    "                  || coalesce((SELECT jsonb_object_agg(status, n) FROM c), '{}'))::text, o.open > 0"          \
    " FROM broadcasts b, o WHERE b.tenant_id = $1 AND b.id = $2"

static const char doc_sql[] = BROADCAST_DOC;

static void counts_read(void *arg, int err, const char *detail, const PGresult *res)
{
    bop_t *o = arg;
    (void)detail;
    err = refused(err, res, "a broadcast's counts");
    if (!err && PQntuples(res) != 1)
        err = SB_ENOENT;
    sb_str_t json = err ? sb_str(NULL, 0) : sb_str(PQgetvalue(res, 0, 0), (size_t)PQgetlength(res, 0, 0));
    bool open = !err && PQgetvalue(res, 0, 1)[0] == 't';
    ((void (*)(void *, int, sb_str_t, bool))o->cb)(o->arg, err, json, open);
    free(o);
}

static int port_counts(void *ctx, int64_t tenant, int64_t broadcast_id, void (*cb)(void *, int, sb_str_t, bool),
                       void *arg)
{
    char t[24], bc[24];
    i64_text(t, tenant);
    i64_text(bc, broadcast_id);
    const char *p[2] = {t, bc};
    return query(ctx, doc_sql, 2, p, SB_PG_PREPARED, counts_read, bop_new((void *)cb, arg));
}

void sb_store_broadcast_port(sb_store_t *st, sb_store_port_t *out)
{
    (void)st;
    out->broadcast_begin = port_begin;
    out->broadcast_rows = port_rows;
    out->broadcast_accepting = port_accepting;
    out->broadcast_cancel = port_cancel;
    out->broadcast_counts = port_counts;
}

/* ---- the front door ------------------------------------------------------------------------------------------------ */

typedef struct doc_op {
    void (*cb)(void *, int, sb_str_t);
    void *arg;
} doc_op_t;

static void doc_counts(void *arg, int err, sb_str_t json, bool open)
{
    doc_op_t *d = arg;
    (void)open;
    d->cb(d->arg, err, json);
    free(d);
}

int sb_query_broadcast(sb_store_t *st, int64_t tenant, int64_t id, void (*cb)(void *, int, sb_str_t), void *arg)
{
    doc_op_t *d = sb_malloc(sizeof *d);
    d->cb = cb;
    d->arg = arg;
    int rc = port_counts(st, tenant, id, doc_counts, d);
    if (rc < 0)
        free(d);
    return rc;
}

static void channel_read(void *arg, int err, const char *detail, const PGresult *res)
{
    bop_t *o = arg;
    (void)detail;
    err = refused(err, res, "a broadcast's channel");
    if (!err && PQntuples(res) != 1)
        err = SB_ENOENT;
    ((void (*)(void *, int, int64_t))o->cb)(o->arg, err, err ? 0 : col_i64(res, 0, 0));
    free(o);
}

int sb_query_broadcast_channel(sb_store_t *st, int64_t tenant, int64_t id, void (*cb)(void *, int, int64_t),
                               void *arg)
{
    char t[24], bc[24];
    i64_text(t, tenant);
    i64_text(bc, id);
    const char *p[2] = {t, bc};
    return query(st, "SELECT channel_id FROM broadcasts WHERE tenant_id = $1 AND id = $2", 2, p, 0, channel_read,
                 bop_new((void *)cb, arg));
}
