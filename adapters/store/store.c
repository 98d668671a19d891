/* The store; see store.h.
 *
 * The hot statements are batches of the connection (adapters/pg): what the shard's actors ask in one loop turn goes
 * as one set-based statement. A tenant's write is rows of one generic shape (twenty-one text columns, the first naming
 * the kind of row) so that the writes of every tenant of a turn, whatever they hold, are one statement too: each row
 * kind is one CTE over the same unnest. Activation loads and the rare lookups are plain prepared statements. */
#include "adapters/store/store.h"

#include "adapters/pg.h"
#include "gateway/log.h"
#include "gateway/metrics.h"
#include "proto/err.h"
#include "proto/mem.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ID_BLOCK 1024       /* the messages identity steps by this (sql/0011) */
#define ID_LOW_WATER 512    /* ids left in the block when the next one is asked for */

struct sb_store {
    sb_pg_t *pg, *ingest, *sweeper;
    sb_metrics_t *m;
    unsigned char key[SB_CRYPTO_KEY_LEN];
    bool has_key;
    int64_t id_next, id_end;     /* the block in use: [id_next, id_end) */
    int64_t spare;               /* the next block's first id, 0 when none is at hand */
    bool fetching;
    unsigned inflight;
    sb_store_fence_fn fence; /* NULL: writes are not fenced (a node on its own) */
    void *fence_ctx;
};

typedef struct op {
    sb_store_t *st;
    void *cb, *arg;
    int64_t a, b;
} op_t;

static op_t *op_new(sb_store_t *st, void *cb, void *arg)
{
    op_t *o = sb_malloc(sizeof *o);
    *o = (op_t){.st = st, .cb = cb, .arg = arg};
    st->inflight++;
    return o;
}

static void op_free(op_t *o)
{
    o->st->inflight--;
    free(o);
}

static int64_t col_i64(const PGresult *res, int r, int c)
{
    return PQgetisnull(res, r, c) ? 0 : strtoll(PQgetvalue(res, r, c), NULL, 10);
}

static const char *col_str(const PGresult *res, int r, int c)
{
    return PQgetisnull(res, r, c) ? NULL : PQgetvalue(res, r, c);
}

static void i64_text(char out[24], int64_t v)
{
    sb_i64_text(out, v);
}

/* ---- the store ---------------------------------------------------------------------------------------------------- */

sb_store_t *sb_store_create(sb_pg_t *pg, sb_pg_t *ingest, const unsigned char *master_key, unsigned shard)
{
    sb_store_t *st = sb_calloc(1, sizeof *st);
    st->m = sb_metrics_shard(shard);
    st->pg = pg;
    st->ingest = ingest;
    if (master_key) {
        memcpy(st->key, master_key, sizeof st->key);
        st->has_key = true;
    }
    return st;
}

void sb_store_destroy(sb_store_t *st)
{
    if (!st)
        return;
    sb_crypto_wipe(st->key, sizeof st->key);
    free(st);
}

unsigned sb_store_inflight(const sb_store_t *st)
{
    return st->inflight;
}

bool sb_store_connected(const sb_store_t *st)
{
    return sb_pg_connected(st->pg);
}

void sb_store_set_fence(sb_store_t *st, sb_store_fence_fn fn, void *ctx)
{
    st->fence = fn;
    st->fence_ctx = ctx;
}

int sb_store_fence(sb_store_t *st, int64_t tenant, sb_pg_fence_t *out)
{
    *out = (sb_pg_fence_t){.slot = -1};
    return st->fence ? st->fence(st->fence_ctx, tenant, out) : 0;
}

void sb_store_set_sweeper(sb_store_t *st, sb_pg_t *sweeper)
{
    st->sweeper = sweeper;
}

sb_pg_t *sb_store_pg(sb_store_t *st)
{
    return st->pg;
}

/* Both connections count: webhooks commit their receipts on ingest, everything else goes through pg. */
int sb_store_ping(sb_store_t *st, uint64_t timeout_ms, void (*cb)(void *arg, int err, const char *detail), void *arg)
{
    if (!sb_pg_connected(st->ingest))
        return SB_EUNAVAIL;
    return sb_pg_ping(st->pg, timeout_ms, cb, arg);
}

/* ---- message ids: blocks of the identity, reserved ahead ---------------------------------------------------------- */

static void block_read(void *arg, int err, const char *detail, const PGresult *res)
{
    op_t *o = arg;
    sb_store_t *st = o->st;
    st->fetching = false;
    if (err) {
        sb_log_warn("store: no message id block: %s", detail);
    } else if (PQntuples(res) == 1) {
        int64_t first = col_i64(res, 0, 0);
        if (st->id_next >= st->id_end) {
            st->id_next = first;
            st->id_end = first + ID_BLOCK;
        } else {
            st->spare = first;
        }
    }
    op_free(o);
}

static void block_fetch(sb_store_t *st)
{
    if (st->fetching || st->spare || !sb_pg_connected(st->pg))
        return;
    op_t *o = op_new(st, NULL, NULL);
    st->fetching = true;
    if (sb_pg_query(st->pg, "SELECT nextval(pg_get_serial_sequence('messages', 'id'))", 0, NULL, SB_PG_PREPARED,
                    block_read, o) < 0) {
        st->fetching = false;
        op_free(o);
    }
}

static int64_t port_message_id(void *ctx)
{
    sb_store_t *st = ctx;
    if (st->id_next >= st->id_end && st->spare) {
        st->id_next = st->spare;
        st->id_end = st->spare + ID_BLOCK;
        st->spare = 0;
    }
    if (st->id_end - st->id_next <= ID_LOW_WATER)
        block_fetch(st);
    return st->id_next < st->id_end ? st->id_next++ : 0;
}

int64_t sb_store_message_id(sb_store_t *st)
{
    return port_message_id(st);
}

/* ---- the tenants' writes ----------------------------------------------------------------------------------------- */

/* Twenty-one text columns a row; v1 says what the row is:
 *   m  a new message:   v2 tenant, v3 id, v4 conversation, v5 channel, v6 seq, v7 direction, v8 sender,
 *                       v9 recipient, v10 body, v11 media (JSON), v12 provider id, v13 status, v14 idempotency key,
 *                       v15 template (JSON), v16 created_at, and for an outbound one v17 priority, v18 send_at,
 *                       v19 broadcast, v20 fallback of, v21 fallback (JSON); an outbound one also enters the outbox,
 *                       with its first history entry (its status: queued or scheduled);
 *   c  a status change: v2 tenant, v3 message, v5 channel, v6 retry delay (ms), v7 flags (a: a claim, attempts + 1,
 *                       no history; f: its send is over, it leaves the outbox; k: the status goes to the history
 *                       only, the message keeps its status and error; w: its fallback is due in v20 ms; x: its
 *                       fallback is no longer watched), v8 status, v9 provider id (NULL: unchanged), v10 error code,
 *                       v11 error message, v21 the message its fallback went out as (fallback_to: no longer
 *                       watched); delivered and read end the watch too (sql/0018); of several changes of one message
 *                       in one statement the last that is not k wins (a link found in any of them is kept), every one
 *                       but claims goes to the history;
 *   r  a receipt applied: v2 tenant, v3 receipt id, marked processed;
 *   p  an event page:   v2 tenant, v3 first cursor, v4 last cursor, v12 the events (JSON array);
 *   k  a call, whole:   v2 tenant, v3 id, v4 channel, v5 call key, v6 call sid, v7 direction, v8 from, v9 to,
 *                       v10 status, v11 voice mode, v12 rejected cap, v13 duration (s), v14 ended by, v15 end reason,
 *                       v16 idempotency key; inserted, or updated by id (answered_at and ended_at are set by the
 *                       first status that means them and kept); of several rows of one call the last wins.
 * The statement returns how many receipts it marked processed (for the figures); committed (the segment's Sync)
 * is the answer. */
/* The pieces the statements share: the rows (an unnest of the twenty-one text arrays, in order), receipts marked
 * processed, calls written whole, the event page. */
#define WRITE_ROWS \
    "WITH u AS MATERIALIZED (" \
    "  SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[]," \
    "                       $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[], $14::text[]," \
    "                       $15::text[], $16::text[], $17::text[], $18::text[], $19::text[], $20::text[]," \
    "                       $21::text[])" \
    "         WITH ORDINALITY AS u(v1, v2, v3, v4, v5, v6, v7, v8, v9, v10, v11, v12, v13, v14, v15, v16, v17, v18," \
    "                              v19, v20, v21, ord)),"

#define WRITE_RECEIPTS \
    " r AS (" \
    "  UPDATE webhook_receipts w SET processed_at = now() FROM u" \
    "  WHERE u.v1 = 'r' AND w.tenant_id = u.v2::bigint AND w.id = u.v3::bigint AND w.processed_at IS NULL" \
    "  RETURNING 1),"

#define WRITE_CALLS \
    " k AS (" \
    "  INSERT INTO calls AS x (tenant_id, id, channel_id, call_key, call_sid, direction, from_addr, to_addr, status," \
    "                         voice_mode, rejected_cap, duration_s, ended_by, end_reason, idempotency_key," \
    "                         answered_at, ended_at)" \
    "  SELECT DISTINCT ON (v2, v3) v2::bigint, v3::bigint, v4::bigint, v5, v6, v7, v8, v9, v10, v11, v12, v13::int," \
    "         v14, v15, v16," \
    "         CASE WHEN v10 = 'in-progress' THEN now() END," \
    "         CASE WHEN v10 IN ('completed', 'busy', 'no-answer', 'failed', 'canceled', 'rejected') THEN now() END" \
    "  FROM u WHERE v1 = 'k' ORDER BY v2, v3, ord DESC" \
    "  ON CONFLICT (tenant_id, id) DO UPDATE SET call_sid = coalesce(EXCLUDED.call_sid, x.call_sid)," \
    "         status = EXCLUDED.status, duration_s = coalesce(EXCLUDED.duration_s, x.duration_s)," \
    "         ended_by = coalesce(EXCLUDED.ended_by, x.ended_by)," \
    "         end_reason = coalesce(EXCLUDED.end_reason, x.end_reason)," \
    "         answered_at = coalesce(x.answered_at, EXCLUDED.answered_at)," \
    "         ended_at = coalesce(x.ended_at, EXCLUDED.ended_at), updated_at = now()),"

#define WRITE_PAGE \
    " p AS (" \
    "  INSERT INTO event_pages (tenant_id, first_cursor, last_cursor, events)" \
    "  SELECT v2::bigint, v3::bigint, v4::bigint, v12::json FROM u WHERE v1 = 'p')"

static const char write_sql[] =
    WRITE_ROWS
    " m AS ("
    "  INSERT INTO messages (tenant_id, id, conversation_id, channel_id, seq, direction, sender, recipient, body,"
    "                        media, provider_id, status, idempotency_key, template, created_at, updated_at,"
    "                        priority, send_at, broadcast_id, fallback_of, fallback)"
    "  OVERRIDING SYSTEM VALUE"
    "  SELECT v2::bigint, v3::bigint, v4::bigint, v5::bigint, v6::bigint, v7, v8, v9, v10, v11::jsonb, v12, v13, v14,"
    "         v15::jsonb, v16::timestamptz, v16::timestamptz, coalesce(v17, 'normal'), v18::timestamptz,"
    "         v19::bigint, v20::bigint, v21::jsonb"
    "  FROM u WHERE v1 = 'm' ORDER BY ord),"
    " o AS ("
    "  INSERT INTO outbox (tenant_id, channel_id, message_id)"
    "  SELECT v2::bigint, v5::bigint, v3::bigint FROM u WHERE v1 = 'm' AND v7 = 'out'),"
    " q AS ("
    "  INSERT INTO message_status_history (tenant_id, message_id, status, at)"
    "  SELECT v2::bigint, v3::bigint, v13, v16::timestamptz FROM u WHERE v1 = 'm' AND v7 = 'out'),"
    " c AS ("
    "  UPDATE messages x SET status = CASE WHEN l.v7 LIKE '%k%' THEN x.status ELSE l.v8 END,"
    "         provider_id = coalesce(l.v9, x.provider_id),"
    "         error_code = CASE WHEN l.v7 LIKE '%k%' THEN x.error_code ELSE l.v10 END,"
    "         error_message = CASE WHEN l.v7 LIKE '%k%' THEN x.error_message ELSE l.v11 END,"
    "         attempts = x.attempts + l.claims,"
    "         next_attempt_at = CASE WHEN l.v8 = 'retrying' THEN now() + l.v6::bigint * interval '1 millisecond' END,"
    "         fallback_to = coalesce(l.link, x.fallback_to),"
    "         fallback_due_at = CASE WHEN l.link IS NOT NULL OR x.fallback_to IS NOT NULL OR l.v7 LIKE '%x%' THEN NULL"
    "                                WHEN l.v7 LIKE '%w%' THEN now() + l.v20::bigint * interval '1 millisecond'"
    "                                WHEN l.v8 IN ('delivered', 'read') AND l.v7 NOT LIKE '%k%' THEN NULL"
    "                                ELSE x.fallback_due_at END,"
    "         updated_at = now()"
    "  FROM (SELECT DISTINCT ON (v2, v3) *, count(*) FILTER (WHERE v7 LIKE '%a%') OVER (PARTITION BY v2, v3) AS claims,"
    "               max(v21::bigint) OVER (PARTITION BY v2, v3) AS link"
    "        FROM u WHERE v1 = 'c' ORDER BY v2, v3, v7 LIKE '%k%', ord DESC) l"
    "  WHERE x.tenant_id = l.v2::bigint AND x.id = l.v3::bigint),"
    " h AS ("
    "  INSERT INTO message_status_history (tenant_id, message_id, status, error_code, error_message)"
    "  SELECT v2::bigint, v3::bigint, v8, v10, v11 FROM u WHERE v1 = 'c' AND v7 NOT LIKE '%a%'),"
    " d AS ("
    "  DELETE FROM outbox x USING u"
    "  WHERE u.v1 = 'c' AND u.v7 LIKE '%f%' AND x.tenant_id = u.v2::bigint AND x.channel_id = u.v5::bigint"
    "  AND x.message_id = u.v3::bigint),"
    WRITE_RECEIPTS
    WRITE_CALLS
    WRITE_PAGE
    " SELECT count(*) FROM r";

/* A write of calls only (and their events): what the call actors write. */
static const char write_calls_sql[] =
    WRITE_ROWS
    WRITE_CALLS
    WRITE_PAGE
    " SELECT 0";

/* The same for a write of inbound messages only (their receipts and events): what most writes are, without the
 * outbox's, the history's and the status changes' sub-statements (each costs its setup on every execution). */
static const char write_in_sql[] =
    WRITE_ROWS
    " m AS ("
    "  INSERT INTO messages (tenant_id, id, conversation_id, channel_id, seq, direction, sender, recipient, body,"
    "                        media, provider_id, status, created_at, updated_at)"
    "  OVERRIDING SYSTEM VALUE"
    "  SELECT v2::bigint, v3::bigint, v4::bigint, v5::bigint, v6::bigint, v7, v8, v9, v10, v11::jsonb, v12, v13,"
    "         v16::timestamptz, v16::timestamptz"
    "  FROM u WHERE v1 = 'm' ORDER BY ord),"
    WRITE_RECEIPTS
    WRITE_PAGE
    " SELECT count(*) FROM r";

#define WCOLS 21

typedef struct write_item {
    sb_store_t *st;
    sb_done_cb cb;
    void *arg;
    size_t nrows;
    int32_t (*off)[WCOLS];   /* per row and column: the value's offset in text, -1 for NULL */
    sb_buf_t text;
    sb_pg_fence_t fence;
    bool fenced;
} write_item_t;

typedef struct row_builder {
    write_item_t *w;
    int32_t *cur;
} row_builder_t;

static void rb_begin(row_builder_t *rb, const char *kind, int64_t tenant)
{
    write_item_t *w = rb->w;
    rb->cur = w->off[w->nrows++];
    for (int i = 0; i < WCOLS; i++)
        rb->cur[i] = -1;
    rb->cur[0] = (int32_t)w->text.len;
    sb_buf_append(&w->text, kind, strlen(kind) + 1);
    char t[24];
    i64_text(t, tenant);
    rb->cur[1] = (int32_t)w->text.len;
    sb_buf_append(&w->text, t, strlen(t) + 1);
}

static void rb_str(row_builder_t *rb, int col, const char *v)
{
    if (!v)
        return;
    rb->cur[col - 1] = (int32_t)rb->w->text.len;
    sb_buf_append(&rb->w->text, v, strlen(v) + 1);
}

static void rb_i64(row_builder_t *rb, int col, int64_t v)
{
    char t[24];
    i64_text(t, v);
    rb_str(rb, col, t);
}

static size_t write_count(const void *item)
{
    return ((const write_item_t *)item)->nrows;
}

static void write_row(const void *item, size_t k, const char **v, char (*num)[24])
{
    const write_item_t *w = item;
    (void)num;
    for (int i = 0; i < WCOLS; i++)
        v[i] = w->off[k][i] < 0 ? NULL : w->text.p + w->off[k][i];
}

static void write_free(write_item_t *w)
{
    sb_buf_cleanup(&w->text);
    free(w->off);
    w->st->inflight--;
    free(w);
}

static void writes_done(void **items, size_t n, int err, const char *detail, const PGresult *res)
{
    if (err && err != SB_ECANCELED)
        sb_log_warn("store: %zu tenant write(s) refused: %s", n, detail);
    if (!err && n && res && PQntuples(res) == 1)
        sb_metric_add(&((write_item_t *)items[0])->st->m->receipts_applied, (uint64_t)col_i64(res, 0, 0));
    for (size_t i = 0; i < n; i++) {
        write_item_t *w = items[i];
        w->cb(w->arg, err);
        write_free(w);
    }
}

static bool write_fence(const void *item, sb_pg_fence_t *out)
{
    const write_item_t *w = item;
    *out = w->fence;
    return w->fenced;
}

static const sb_pg_batch_def_t write_def = {
    .what = "tenant writes",
    .sql = write_sql,
    .ncols = WCOLS,
    .max = 4096, /* rows */
    .count = write_count,
    .row = write_row,
    .done = writes_done,
    .fence = write_fence,
};

static const sb_pg_batch_def_t write_calls_def = {
    .what = "tenant writes (calls)",
    .sql = write_calls_sql,
    .ncols = WCOLS,
    .max = 4096,
    .count = write_count,
    .row = write_row,
    .done = writes_done,
    .fence = write_fence,
};

static const sb_pg_batch_def_t write_in_def = {
    .what = "tenant writes (inbound)",
    .sql = write_in_sql,
    .ncols = WCOLS,
    .max = 4096,
    .count = write_count,
    .row = write_row,
    .done = writes_done,
    .fence = write_fence,
};

static int port_write(void *ctx, const sb_tenant_write_t *tw, sb_done_cb cb, void *arg)
{
    sb_store_t *st = ctx;
    if (!sb_pg_connected(st->pg))
        return SB_EUNAVAIL;
    size_t receipts = tw->nreceipts;
    for (size_t i = 0; i < tw->nmessages; i++)
        receipts += tw->messages[i].receipt_id != 0;
    for (size_t i = 0; i < tw->nchanges; i++)
        receipts += tw->changes[i].receipt_id != 0;
    size_t rows = tw->nmessages + tw->ncalls + tw->nchanges + receipts + (tw->nevents ? 1 : 0);
    if (!rows) {
        return SB_EINVAL;
    }
    sb_pg_fence_t fence;
    int fenced = sb_store_fence(st, tw->tenant, &fence);
    if (fenced < 0)
        return fenced; /* the tenant's slot is not this node's (any more) */
    write_item_t *w = sb_calloc(1, sizeof *w);
    w->fence = fence;
    w->fenced = fenced > 0;
    w->st = st;
    w->cb = cb;
    w->arg = arg;
    w->off = sb_malloc(rows * sizeof *w->off);
    sb_buf_init(&w->text);
    row_builder_t rb = {.w = w};
    for (size_t i = 0; i < tw->nmessages; i++) {
        const sb_new_message_t *m = &tw->messages[i];
        rb_begin(&rb, "m", tw->tenant);
        rb_i64(&rb, 3, m->id);
        rb_i64(&rb, 4, m->conversation_id);
        rb_i64(&rb, 5, m->channel_id);
        rb_i64(&rb, 6, m->seq);
        rb_str(&rb, 7, m->out ? "out" : "in");
        rb_str(&rb, 8, m->sender);
        rb_str(&rb, 9, m->recipient);
        rb_str(&rb, 10, m->body ? m->body : "");
        rb_str(&rb, 11, m->media_json ? m->media_json : "[]");
        rb_str(&rb, 12, m->provider_id);
        rb_str(&rb, 13, m->status);
        rb_str(&rb, 14, m->idempotency_key);
        rb_str(&rb, 15, m->template_json);
        rb_str(&rb, 16, m->created_at);
        rb_str(&rb, 17, m->priority);
        rb_str(&rb, 18, m->send_at);
        if (m->broadcast_id)
            rb_i64(&rb, 19, m->broadcast_id);
        if (m->fallback_of)
            rb_i64(&rb, 20, m->fallback_of);
        rb_str(&rb, 21, m->fallback_json);
    }
    for (size_t i = 0; i < tw->ncalls; i++) {
        const sb_call_row_t *k = &tw->calls[i];
        rb_begin(&rb, "k", tw->tenant);
        rb_i64(&rb, 3, k->id);
        rb_i64(&rb, 4, k->channel);
        rb_str(&rb, 5, k->call_key);
        rb_str(&rb, 6, k->call_sid);
        rb_str(&rb, 7, k->direction);
        rb_str(&rb, 8, k->from);
        rb_str(&rb, 9, k->to);
        rb_str(&rb, 10, k->status);
        rb_str(&rb, 11, k->voice_mode);
        rb_str(&rb, 12, k->rejected_cap);
        if (k->duration_s >= 0)
            rb_i64(&rb, 13, k->duration_s);
        rb_str(&rb, 14, k->ended_by);
        rb_str(&rb, 15, k->end_reason);
        rb_str(&rb, 16, k->idempotency_key);
    }
    for (size_t i = 0; i < tw->nchanges; i++) {
        const sb_status_change_t *c = &tw->changes[i];
        rb_begin(&rb, "c", tw->tenant);
        rb_i64(&rb, 3, c->message_id);
        rb_i64(&rb, 5, c->channel_id);
        rb_i64(&rb, 6, c->retry_in_ms);
        char flags[8];
        size_t nf = 0;
        if (c->counts_attempt)
            flags[nf++] = 'a';
        if (c->finished)
            flags[nf++] = 'f';
        if (c->history_only)
            flags[nf++] = 'k';
        if (c->fallback == SB_FALLBACK_WATCH)
            flags[nf++] = 'w';
        else if (c->fallback == SB_FALLBACK_DROP)
            flags[nf++] = 'x';
        flags[nf] = '\0';
        rb_str(&rb, 7, flags);
        rb_str(&rb, 8, c->status);
        rb_str(&rb, 9, c->provider_id);
        rb_str(&rb, 10, c->error_code);
        rb_str(&rb, 11, c->error_message);
        if (c->fallback == SB_FALLBACK_WATCH)
            rb_i64(&rb, 20, c->fallback_in_ms > 0 ? c->fallback_in_ms : 0);
        if (c->fallback == SB_FALLBACK_LINK)
            rb_i64(&rb, 21, c->fallback_to);
    }
    for (size_t i = 0; i < tw->nmessages; i++)
        if (tw->messages[i].receipt_id) {
            rb_begin(&rb, "r", tw->tenant);
            rb_i64(&rb, 3, tw->messages[i].receipt_id);
        }
    for (size_t i = 0; i < tw->nchanges; i++)
        if (tw->changes[i].receipt_id) {
            rb_begin(&rb, "r", tw->tenant);
            rb_i64(&rb, 3, tw->changes[i].receipt_id);
        }
    for (size_t i = 0; i < tw->nreceipts; i++) {
        rb_begin(&rb, "r", tw->tenant);
        rb_i64(&rb, 3, tw->receipts[i]);
    }
    if (tw->nevents) {
        rb_begin(&rb, "p", tw->tenant);
        rb_i64(&rb, 3, tw->first_cursor);
        rb_i64(&rb, 4, tw->first_cursor + (int64_t)tw->nevents - 1);
        sb_buf_t *t = &w->text;
        rb.cur[11] = (int32_t)t->len;
        sb_buf_append(t, tw->events_json.p, tw->events_json.len);
        sb_buf_append(t, "", 1);
    }
    bool inbound = tw->nchanges == 0 && tw->ncalls == 0;
    for (size_t i = 0; inbound && i < tw->nmessages; i++)
        inbound = !tw->messages[i].out;
    bool calls_only = tw->ncalls && !tw->nmessages && !tw->nchanges && !receipts;
    st->inflight++;
    int rc = sb_pg_batch_add(st->pg, calls_only ? &write_calls_def : inbound ? &write_in_def : &write_def, w);
    if (rc < 0)
        write_free(w);
    return rc;
}

/* ---- activation: a tenant, a channel --------------------------------------------------------------------------- */

static void tenant_read(void *arg, int err, const char *detail, const PGresult *res)
{
    op_t *o = arg;
    void (*cb)(void *, int, const sb_tenant_info_t *) = (void (*)(void *, int, const sb_tenant_info_t *))o->cb;
    sb_tenant_info_t t = {0};
    sb_buf_t secret;
    sb_buf_init(&secret);
    (void)detail;
    if (!err && PQntuples(res) == 1) {
        t.found = true;
        t.last_cursor = col_i64(res, 0, 3);
        t.webhook_cursor = col_i64(res, 0, 2);
        const char *url = col_str(res, 0, 0), *sealed = col_str(res, 0, 1);
        char ad[40];
        snprintf(ad, sizeof ad, "tenant:%" PRId64 ":webhook", o->a);
        if (url && sealed && o->st->has_key &&
            sb_crypto_open(o->st->key, sb_str_cstr(sealed), sb_str_cstr(ad), &secret) == 0) {
            t.webhook_url = url;
            t.webhook_secret = sb_buf_cstr(&secret);
        } else if (url) {
            sb_log_error("store: tenant %" PRId64 ": webhook secret cannot be opened (master_key changed?)", o->a);
        }
    }
    cb(o->arg, err, &t);
    sb_crypto_buf_wipe(&secret);
    op_free(o);
}

static int port_load_tenant(void *ctx, int64_t tenant, void (*cb)(void *, int, const sb_tenant_info_t *), void *arg)
{
    sb_store_t *st = ctx;
    char t[24];
    i64_text(t, tenant);
    const char *p[1] = {t};
    op_t *o = op_new(st, (void *)cb, arg);
    o->a = tenant;
    int rc = sb_pg_query(st->pg,
                         "SELECT webhook_url, webhook_secret_sealed, webhook_cursor,"
                         " coalesce((SELECT last_cursor FROM event_pages p WHERE p.tenant_id = t.id"
                         "           ORDER BY last_cursor DESC LIMIT 1), 0)"
                         " FROM tenants t WHERE id = $1",
                         1, p, SB_PG_PREPARED, tenant_read, o);
    if (rc < 0)
        op_free(o);
    return rc;
}

typedef struct channel_op {
    op_t op;
    bool found;
    sb_channel_info_t info;
    char *address, *creds;
} channel_op_t;

typedef void (*channel_cb)(void *, int, const sb_channel_info_t *, const sb_pending_send_t *, size_t);

static void channel_op_end(channel_op_t *c, int err, const sb_pending_send_t *p, size_t n)
{
    ((channel_cb)c->op.cb)(c->op.arg, err, c->found ? &c->info : NULL, p, n);
    free(c->address);
    free(c->creds);
    c->op.st->inflight--;
    free(c);
}

static void pending_read(void *arg, int err, const char *detail, const PGresult *res)
{
    channel_op_t *c = arg;
    (void)detail;
    if (err) {
        channel_op_end(c, err, NULL, 0);
        return;
    }
    int rows = PQntuples(res);
    sb_pending_send_t *p = sb_calloc(rows ? (size_t)rows : 1, sizeof *p);
    for (int i = 0; i < rows; i++)
        p[i] = (sb_pending_send_t){.id = col_i64(res, i, 0),
                                   .conversation_id = col_i64(res, i, 1),
                                   .to = col_str(res, i, 2),
                                   .body = col_str(res, i, 3),
                                   .media_json = col_str(res, i, 4),
                                   .template_json = col_str(res, i, 5),
                                   .status = col_str(res, i, 6),
                                   .attempts = (unsigned)col_i64(res, i, 7),
                                   .retry_in_ms = col_i64(res, i, 8),
                                   .sending_for_ms = col_i64(res, i, 9),
                                   .priority = col_str(res, i, 10),
                                   .send_in_ms = col_i64(res, i, 11),
                                   .broadcast_id = col_i64(res, i, 12),
                                   .fallback_of = col_i64(res, i, 13),
                                   .fallback_json = col_str(res, i, 14)};
    channel_op_end(c, 0, p, (size_t)rows);
    free(p);
}

static void channel_read(void *arg, int err, const char *detail, const PGresult *res)
{
    channel_op_t *c = arg;
    (void)detail;
    if (err || PQntuples(res) != 1) {
        channel_op_end(c, err, NULL, 0);
        return;
    }
    c->found = true;
    c->info.tenant = col_i64(res, 0, 0);
    c->info.type = sb_channel_type_parse(PQgetvalue(res, 0, 1));
    c->address = sb_strdup(PQgetvalue(res, 0, 2));
    c->info.address = c->address;
    c->info.rate_per_second = strtod(PQgetvalue(res, 0, 3), NULL);
    c->creds = col_str(res, 0, 4) ? sb_strdup(PQgetvalue(res, 0, 4)) : NULL;
    c->info.max_sending = col_i64(res, 0, 5);
    c->info.tenant_max_sending = col_i64(res, 0, 6);
    c->info.credentials_sealed = c->creds;
    char t[24], ch[24];
    i64_text(t, c->info.tenant);
    i64_text(ch, c->info.channel);
    const char *p[2] = {t, ch};
    if (sb_pg_query(c->op.st->pg,
                    "SELECT m.id, m.conversation_id, m.recipient, m.body, m.media::text, m.template::text, m.status,"
                    " m.attempts, coalesce((extract(epoch FROM m.next_attempt_at - now()) * 1000)::bigint, 0),"
                    " (extract(epoch FROM now() - m.updated_at) * 1000)::bigint, m.priority,"
                    " coalesce((extract(epoch FROM m.send_at - now()) * 1000)::bigint, 0),"
                    " coalesce(m.broadcast_id, 0), coalesce(m.fallback_of, 0), m.fallback::text"
                    " FROM outbox o JOIN messages m ON m.tenant_id = o.tenant_id AND m.id = o.message_id"
                    " WHERE o.tenant_id = $1 AND o.channel_id = $2"
                    /* a broadcast still being accepted is loaded once it is whole (adapters/store/broadcasts.h) */
                    " AND (m.broadcast_id IS NULL OR NOT EXISTS (SELECT 1 FROM broadcasts b WHERE b.tenant_id ="
                    "      m.tenant_id AND b.id = m.broadcast_id AND b.status = 'accepting'))"
                    " ORDER BY o.message_id",
                    2, p, SB_PG_PREPARED, pending_read, c) < 0)
        channel_op_end(c, SB_EUNAVAIL, NULL, 0);
}

/* The channel's row with its pace and caps (settings.rate_per_second, settings.max_concurrent_sends, the tenant's
 * max_concurrent_sends: 0 when not set). */
static const char channel_sql[] =
    "SELECT c.tenant_id, c.type, c.address,"
    " CASE WHEN jsonb_typeof(c.settings->'rate_per_second') = 'number'"
    "      THEN (c.settings->>'rate_per_second')::float8 ELSE 0 END,"
    " c.credentials_sealed,"
    " CASE WHEN jsonb_typeof(c.settings->'max_concurrent_sends') = 'number'"
    "      THEN (c.settings->>'max_concurrent_sends')::float8::bigint ELSE 0 END,"
    " coalesce((SELECT t.max_concurrent_sends FROM tenants t WHERE t.id = c.tenant_id), 0)"
    " FROM channel_routes r JOIN channels c ON c.tenant_id = r.tenant_id AND c.id = r.channel_id"
    " WHERE r.channel_id = $1";

static int port_load_channel(void *ctx, int64_t channel, channel_cb cb, void *arg)
{
    sb_store_t *st = ctx;
    char ch[24];
    i64_text(ch, channel);
    const char *p[1] = {ch};
    channel_op_t *c = sb_calloc(1, sizeof *c);
    c->op = (op_t){.st = st, .cb = (void *)cb, .arg = arg};
    c->info.channel = channel;
    st->inflight++;
    int rc = sb_pg_query(st->pg, channel_sql, 1, p, SB_PG_PREPARED, channel_read, c);
    if (rc < 0) {
        st->inflight--;
        free(c);
    }
    return rc;
}

typedef void (*limits_cb_t)(void *, int, bool, const sb_channel_info_t *);

static void limits_read(void *arg, int err, const char *detail, const PGresult *res)
{
    op_t *o = arg;
    (void)detail;
    sb_channel_info_t ci = {.channel = o->a};
    bool found = !err && PQntuples(res) == 1;
    if (found) {
        ci.tenant = col_i64(res, 0, 0);
        ci.type = sb_channel_type_parse(PQgetvalue(res, 0, 1));
        ci.rate_per_second = strtod(PQgetvalue(res, 0, 3), NULL);
        ci.max_sending = col_i64(res, 0, 5);
        ci.tenant_max_sending = col_i64(res, 0, 6);
    }
    ((limits_cb_t)o->cb)(o->arg, err, found, &ci);
    op_free(o);
}

static int port_load_limits(void *ctx, int64_t channel, limits_cb_t cb, void *arg)
{
    sb_store_t *st = ctx;
    char ch[24];
    i64_text(ch, channel);
    const char *p[1] = {ch};
    op_t *o = op_new(st, (void *)cb, arg);
    o->a = channel;
    int rc = sb_pg_query(st->pg, channel_sql, 1, p, SB_PG_PREPARED, limits_read, o);
    if (rc < 0)
        op_free(o);
    return rc;
}

/* ---- conversations: found or made, a loop turn's of every session in one statement -------------------------------- */

/* $1 tenants, $2 channels, $3 contact addresses, $4 profile names (NULL: none given), one element per address asked.
 * Contacts and conversations that exist are read; the missing ones are made (an address asked twice, once); a
 * contact whose given name differs from the stored one gets it. Each conversation comes back with its newest
 * message's seq and time (the unique (tenant, conversation, seq) index: one descent) and its newest inbound message's
 * time in Unix ms, the start of Meta's 24-hour window (messages_last_inbound, sql/0020: one descent too). Rows by
 * ord. */
static const char convs_sql[] =
    "WITH u AS MATERIALIZED (SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[])"
    "                        WITH ORDINALITY AS u(t, ch, addr, name, ord)),"
    " ex AS MATERIALIZED (SELECT u.ord, c.id, c.profile_name FROM u JOIN contacts c"
    "                     ON c.tenant_id = u.t AND c.channel_id = u.ch AND c.address = u.addr),"
    " ci AS ("
    "  INSERT INTO contacts (tenant_id, channel_id, address, profile_name)"
    "  SELECT DISTINCT ON (t, ch, addr) t, ch, addr, name FROM u"
    "  WHERE NOT EXISTS (SELECT 1 FROM ex WHERE ex.ord = u.ord) ORDER BY t, ch, addr, ord DESC"
    "  ON CONFLICT DO NOTHING RETURNING id, tenant_id, channel_id, address, profile_name),"
    " cu AS ("
    "  UPDATE contacts c SET profile_name = n.name, updated_at = now()"
    "  FROM (SELECT DISTINCT ON (ex.id) ex.id, u.t, u.name FROM u JOIN ex USING (ord)"
    "        WHERE u.name IS NOT NULL AND u.name IS DISTINCT FROM ex.profile_name ORDER BY ex.id, u.ord DESC) n"
    "  WHERE c.tenant_id = n.t AND c.id = n.id),"
    " k AS MATERIALIZED ("
    "  SELECT u.ord, u.t, u.ch, u.addr, coalesce(ex.id, ci.id) AS contact_id,"
    "         coalesce(u.name, ex.profile_name, ci.profile_name) AS profile_name"
    "  FROM u LEFT JOIN ex USING (ord)"
    "  LEFT JOIN ci ON ci.tenant_id = u.t AND ci.channel_id = u.ch AND ci.address = u.addr),"
    " vx AS MATERIALIZED (SELECT k.ord, v.id, v.created_at FROM k JOIN conversations v"
    "                     ON v.tenant_id = k.t AND v.channel_id = k.ch AND v.contact_id = k.contact_id),"
    " vi AS ("
    "  INSERT INTO conversations (tenant_id, channel_id, contact_id)"
    "  SELECT DISTINCT t, ch, contact_id FROM k WHERE NOT EXISTS (SELECT 1 FROM vx WHERE vx.ord = k.ord)"
    "  ON CONFLICT DO NOTHING RETURNING id, tenant_id, channel_id, contact_id, created_at)"
    " SELECT k.ord, coalesce(vx.id, vi.id), k.contact_id, k.addr, k.profile_name,"
    "        to_json(coalesce(vx.created_at, vi.created_at)) #>> '{}', coalesce(l.seq, 0),"
    "        to_json(l.created_at) #>> '{}', (extract(epoch FROM li.created_at) * 1000)::bigint"
    " FROM k LEFT JOIN vx USING (ord)"
    " LEFT JOIN vi ON vi.tenant_id = k.t AND vi.channel_id = k.ch AND vi.contact_id = k.contact_id"
    " LEFT JOIN LATERAL (SELECT m.seq, m.created_at FROM messages m"
    "                    WHERE m.tenant_id = k.t AND m.conversation_id = coalesce(vx.id, vi.id)"
    "                    ORDER BY m.seq DESC LIMIT 1) l ON true"
    " LEFT JOIN LATERAL (SELECT m.created_at FROM messages m"
    "                    WHERE m.tenant_id = k.t AND m.conversation_id = coalesce(vx.id, vi.id)"
    "                    AND m.direction = 'in' ORDER BY m.seq DESC LIMIT 1) li ON true"
    " ORDER BY k.ord";

typedef void (*convs_cb_t)(void *, int, const sb_conv_info_t *, size_t);

typedef struct convs_item {
    sb_store_t *st;
    convs_cb_t cb;
    void *arg;
    char tenant[24], channel[24];
    size_t n;
    char **addrs, **names;
} convs_item_t;

static size_t convs_count(const void *item)
{
    return ((const convs_item_t *)item)->n;
}

static void convs_row(const void *item, size_t k, const char **v, char (*num)[24])
{
    const convs_item_t *c = item;
    (void)num;
    v[0] = c->tenant;
    v[1] = c->channel;
    v[2] = c->addrs[k];
    v[3] = c->names[k];
}

static void convs_item_free(convs_item_t *c)
{
    for (size_t i = 0; i < c->n; i++) {
        free(c->addrs[i]);
        free(c->names[i]);
    }
    free(c->addrs);
    free(c->names);
    c->st->inflight--;
    free(c);
}

static void convs_done(void **items, size_t n, int err, const char *detail, const PGresult *res)
{
    (void)detail;
    int rows = err ? 0 : PQntuples(res), r = 0;
    size_t base = 0; /* ords of items[i] are base + 1 .. base + n */
    for (size_t i = 0; i < n; i++) {
        convs_item_t *c = items[i];
        sb_conv_info_t *out = sb_calloc(c->n ? c->n : 1, sizeof *out);
        size_t got = 0;
        for (; !err && r < rows && (size_t)col_i64(res, r, 0) <= base + c->n; r++) {
            size_t k = (size_t)col_i64(res, r, 0) - base - 1;
            if (k >= c->n || PQgetisnull(res, r, 1))
                continue;
            sb_conv_info_t *ci = &out[k];
            ci->id = col_i64(res, r, 1);
            ci->contact_id = col_i64(res, r, 2);
            ci->address = PQgetvalue(res, r, 3);
            ci->profile_name = col_str(res, r, 4);
            snprintf(ci->created_at, sizeof ci->created_at, "%s", PQgetvalue(res, r, 5));
            ci->last_seq = col_i64(res, r, 6);
            snprintf(ci->last_message_at, sizeof ci->last_message_at, "%s", PQgetvalue(res, r, 7));
            ci->last_inbound_ms = PQgetisnull(res, r, 8) ? 0 : col_i64(res, r, 8);
            got++;
        }
        base += c->n;
        /* every address has its conversation, or the whole answer is an error (never half of one) */
        c->cb(c->arg, err ? err : got == c->n ? 0 : SB_EAGAIN, out, err ? 0 : c->n);
        free(out);
        convs_item_free(c);
    }
}

static const sb_pg_batch_def_t convs_def = {
    .what = "conversation lookups",
    .sql = convs_sql,
    .ncols = 4,
    .max = 1024,
    .count = convs_count,
    .row = convs_row,
    .done = convs_done,
};

static int port_ensure(void *ctx, int64_t tenant, int64_t channel, const char *const *addresses,
                       const char *const *names, size_t n, convs_cb_t cb, void *arg)
{
    sb_store_t *st = ctx;
    if (!n)
        return SB_EINVAL;
    convs_item_t *c = sb_calloc(1, sizeof *c);
    c->st = st;
    c->cb = cb;
    c->arg = arg;
    i64_text(c->tenant, tenant);
    i64_text(c->channel, channel);
    c->n = n;
    c->addrs = sb_malloc(n * sizeof *c->addrs);
    c->names = sb_malloc(n * sizeof *c->names);
    for (size_t i = 0; i < n; i++) {
        c->addrs[i] = sb_strdup(addresses[i]);
        c->names[i] = names && names[i] ? sb_strdup(names[i]) : NULL;
    }
    st->inflight++;
    int rc = sb_pg_batch_add(st->pg, &convs_def, c);
    if (rc < 0)
        convs_item_free(c);
    return rc;
}

/* ---- lookups: provider ids, idempotency keys ------------------------------------------------------------------------ */

typedef void (*providers_cb_t)(void *, int, const char *const *, const int64_t *, const char *const *, size_t);

static void providers_read(void *arg, int err, const char *detail, const PGresult *res)
{
    op_t *o = arg;
    (void)detail;
    int rows = err ? 0 : PQntuples(res);
    const char **pids = sb_malloc((rows ? (size_t)rows : 1) * sizeof *pids);
    const char **statuses = sb_malloc((rows ? (size_t)rows : 1) * sizeof *statuses);
    int64_t *ids = sb_malloc((rows ? (size_t)rows : 1) * sizeof *ids);
    for (int i = 0; i < rows; i++) {
        pids[i] = PQgetvalue(res, i, 0);
        ids[i] = col_i64(res, i, 1);
        statuses[i] = PQgetvalue(res, i, 2);
    }
    ((providers_cb_t)o->cb)(o->arg, err, pids, ids, statuses, (size_t)rows);
    free(pids);
    free(statuses);
    free(ids);
    op_free(o);
}

static int port_find_by_provider(void *ctx, int64_t tenant, int64_t channel, const char *const *pids, size_t n,
                                 providers_cb_t cb, void *arg)
{
    sb_store_t *st = ctx;
    char t[24], ch[24];
    i64_text(t, tenant);
    i64_text(ch, channel);
    sb_buf_t arr;
    sb_buf_init(&arr);
    for (size_t i = 0; i < n; i++)
        sb_pg_array_item(&arr, pids[i]);
    sb_buf_puts(&arr, "}");
    const char *p[3] = {t, ch, sb_buf_cstr(&arr)};
    op_t *o = op_new(st, (void *)cb, arg);
    int rc = sb_pg_query(st->pg,
                         "SELECT provider_id, id, status FROM messages"
                         " WHERE tenant_id = $1 AND channel_id = $2 AND provider_id = ANY ($3::text[])",
                         3, p, SB_PG_PREPARED, providers_read, o);
    sb_buf_cleanup(&arr);
    if (rc < 0)
        op_free(o);
    return rc;
}

static void key_read(void *arg, int err, const char *detail, const PGresult *res)
{
    op_t *o = arg;
    (void)detail;
    bool one = !err && PQntuples(res) == 1;
    ((void (*)(void *, int, int64_t, int64_t))o->cb)(o->arg, err, one ? col_i64(res, 0, 0) : 0,
                                                      one ? col_i64(res, 0, 1) : 0);
    op_free(o);
}

static int port_find_idempotent(void *ctx, int64_t tenant, const char *key,
                                void (*cb)(void *, int, int64_t, int64_t), void *arg)
{
    sb_store_t *st = ctx;
    char t[24];
    i64_text(t, tenant);
    const char *p[2] = {t, key};
    op_t *o = op_new(st, (void *)cb, arg);
    int rc = sb_pg_query(st->pg,
                         "SELECT id, channel_id FROM messages WHERE tenant_id = $1 AND idempotency_key = $2",
                         2, p, SB_PG_PREPARED, key_read, o);
    if (rc < 0)
        op_free(o);
    return rc;
}

/* ---- fallback watches (sql/0018) --------------------------------------------------------------------------------- */

typedef void (*fallbacks_cb_t)(void *, int, const sb_fallback_watch_t *, size_t);

static void fallbacks_read(void *arg, int err, const char *detail, const PGresult *res)
{
    op_t *o = arg;
    (void)detail;
    int rows = err ? 0 : PQntuples(res);
    sb_fallback_watch_t *w = sb_calloc(rows ? (size_t)rows : 1, sizeof *w);
    for (int i = 0; i < rows; i++)
        w[i] = (sb_fallback_watch_t){.id = col_i64(res, i, 0),
                                     .to = col_str(res, i, 1),
                                     .body = col_str(res, i, 2),
                                     .media_json = col_str(res, i, 3),
                                     .template_json = col_str(res, i, 4),
                                     .fallback_json = col_str(res, i, 5),
                                     .priority = col_str(res, i, 6),
                                     .status = col_str(res, i, 7),
                                     .due_in_ms = col_i64(res, i, 8)};
    ((fallbacks_cb_t)o->cb)(o->arg, err, w, (size_t)rows);
    free(w);
    op_free(o);
}

static int port_load_fallbacks(void *ctx, int64_t tenant, int64_t channel, fallbacks_cb_t cb, void *arg)
{
    sb_store_t *st = ctx;
    char t[24], ch[24];
    i64_text(t, tenant);
    i64_text(ch, channel);
    const char *p[2] = {t, ch};
    op_t *o = op_new(st, (void *)cb, arg);
    int rc = sb_pg_query(st->pg,
                         "SELECT id, recipient, body, media::text, template::text, fallback::text, priority, status,"
                         " (extract(epoch FROM fallback_due_at - now()) * 1000)::bigint"
                         " FROM messages WHERE tenant_id = $1 AND channel_id = $2 AND fallback_due_at IS NOT NULL"
                         " AND fallback_to IS NULL AND fallback IS NOT NULL ORDER BY id",
                         2, p, SB_PG_PREPARED, fallbacks_read, o);
    if (rc < 0)
        op_free(o);
    return rc;
}

/* ---- the event log ------------------------------------------------------------------------------------------------ */

typedef void (*events_cb_t)(void *, int, const sb_event_rec_t *, size_t);

static void events_read(void *arg, int err, const char *detail, const PGresult *res)
{
    op_t *o = arg;
    (void)detail;
    int rows = err ? 0 : PQntuples(res);
    sb_event_rec_t *ev = sb_malloc((rows ? (size_t)rows : 1) * sizeof *ev);
    for (int i = 0; i < rows; i++)
        ev[i] = (sb_event_rec_t){.cursor = col_i64(res, i, 0),
                                 .type = PQgetvalue(res, i, 1),
                                 .data = sb_str(PQgetvalue(res, i, 2), (size_t)PQgetlength(res, i, 2)),
                                 .age_ms = col_i64(res, i, 3)};
    ((events_cb_t)o->cb)(o->arg, err, ev, (size_t)rows);
    free(ev);
    op_free(o);
}

/* The pages after `after` hold at least one event each, so `limit` pages hold every event the answer may need. */
int sb_store_events(sb_store_t *st, int64_t tenant, int64_t after, size_t limit, events_cb_t cb, void *arg)
{
    char t[24], a[24], l[24];
    i64_text(t, tenant);
    i64_text(a, after);
    i64_text(l, (int64_t)limit);
    const char *p[3] = {t, a, l};
    op_t *o = op_new(st, (void *)cb, arg);
    int rc = sb_pg_query(st->pg,
                         "SELECT p.first_cursor + e.ord - 1 AS cursor, e.v->>'type', (e.v->'data')::text,"
                         " (extract(epoch FROM now() - p.created_at) * 1000)::bigint"
                         " FROM (SELECT * FROM event_pages WHERE tenant_id = $1 AND last_cursor > $2"
                         "       ORDER BY last_cursor LIMIT $3) p,"
                         " json_array_elements(p.events) WITH ORDINALITY AS e(v, ord)"
                         " WHERE p.first_cursor + e.ord - 1 > $2 ORDER BY 1 LIMIT $3",
                         3, p, SB_PG_PREPARED, events_read, o);
    if (rc < 0)
        op_free(o);
    return rc;
}

static int port_events_after(void *ctx, int64_t tenant, int64_t after, size_t limit, events_cb_t cb, void *arg)
{
    return sb_store_events(ctx, tenant, after, limit, cb, arg);
}

static void cursor_read(void *arg, int err, const char *detail, const PGresult *res)
{
    op_t *o = arg;
    (void)detail;
    bool found = !err && PQntuples(res) == 1;
    ((void (*)(void *, int, bool, int64_t))o->cb)(o->arg, err, found, found ? col_i64(res, 0, 0) : 0);
    op_free(o);
}

int sb_store_cursor(sb_store_t *st, int64_t tenant, void (*cb)(void *, int, bool, int64_t), void *arg)
{
    char t[24];
    i64_text(t, tenant);
    const char *p[1] = {t};
    op_t *o = op_new(st, (void *)cb, arg);
    int rc = sb_pg_query(st->pg,
                         "SELECT coalesce((SELECT last_cursor FROM event_pages p WHERE p.tenant_id = t.id"
                         " ORDER BY last_cursor DESC LIMIT 1), 0) FROM tenants t WHERE id = $1",
                         1, p, SB_PG_PREPARED, cursor_read, o);
    if (rc < 0)
        op_free(o);
    return rc;
}

/* ---- outgoing webhooks' bookkeeping -------------------------------------------------------------------------------- */

static void done_read(void *arg, int err, const char *detail, const PGresult *res)
{
    op_t *o = arg;
    (void)detail, (void)res;
    ((sb_done_cb)o->cb)(o->arg, err);
    op_free(o);
}

static int port_hook_acked(void *ctx, int64_t tenant, int64_t cursor, sb_done_cb cb, void *arg)
{
    sb_store_t *st = ctx;
    char t[24], c[24];
    i64_text(t, tenant);
    i64_text(c, cursor);
    const char *p[2] = {t, c};
    op_t *o = op_new(st, (void *)cb, arg);
    int rc = sb_pg_query(st->pg, "UPDATE tenants SET webhook_cursor = $2 WHERE id = $1 AND webhook_cursor < $2", 2,
                         p, SB_PG_PREPARED, done_read, o);
    if (rc < 0)
        op_free(o);
    return rc;
}

static int port_hook_dead(void *ctx, int64_t tenant, const sb_event_rec_t *ev, const char *error, sb_done_cb cb,
                          void *arg)
{
    sb_store_t *st = ctx;
    char t[24], c[24];
    i64_text(t, tenant);
    i64_text(c, ev->cursor);
    char *data = sb_strndup(ev->data.p, ev->data.len);
    const char *p[5] = {t, c, ev->type, data, error};
    op_t *o = op_new(st, (void *)cb, arg);
    int rc = sb_pg_query(st->pg,
                         "WITH d AS (INSERT INTO webhook_dead_letters (tenant_id, cursor, type, data, error)"
                         "           VALUES ($1, $2, $3, $4::jsonb, $5) ON CONFLICT DO NOTHING)"
                         " UPDATE tenants SET webhook_cursor = $2 WHERE id = $1 AND webhook_cursor < $2",
                         5, p, SB_PG_PREPARED, done_read, o);
    free(data);
    if (rc < 0)
        op_free(o);
    return rc;
}

static void receipt_done_read(void *arg, int err, const char *detail, const PGresult *res)
{
    (void)res;
    if (err)
        sb_log_warn("store: a receipt could not be set aside: %s", detail);
    op_free(arg);
}

static void port_receipt_done(void *ctx, int64_t tenant, int64_t receipt_id)
{
    sb_store_t *st = ctx;
    char t[24], id[24];
    i64_text(t, tenant);
    i64_text(id, receipt_id);
    const char *p[2] = {t, id};
    op_t *o = op_new(st, NULL, NULL);
    if (sb_pg_query(st->pg,
                    "UPDATE webhook_receipts SET processed_at = now() WHERE tenant_id = $1 AND id = $2"
                    " AND processed_at IS NULL",
                    2, p, SB_PG_PREPARED, receipt_done_read, o) < 0)
        op_free(o);
}

/* ---- calls ------------------------------------------------------------------------------------------------------ */

#define CALL_COLS                                                                                                    \
    "id, tenant_id, channel_id, call_key, call_sid, direction, from_addr, to_addr, status, voice_mode, rejected_cap, " \
    "coalesce(duration_s, -1), ended_by, end_reason, idempotency_key, "                                              \
    "(extract(epoch FROM now() - created_at) * 1000)::bigint"

static void call_read(void *arg, int err, const char *detail, const PGresult *res)
{
    op_t *o = arg;
    (void)detail;
    bool one = !err && PQntuples(res) == 1;
    sb_call_row_t c = {0};
    if (one)
        c = (sb_call_row_t){.id = col_i64(res, 0, 0),
                            .tenant = col_i64(res, 0, 1),
                            .channel = col_i64(res, 0, 2),
                            .call_key = col_str(res, 0, 3),
                            .call_sid = col_str(res, 0, 4),
                            .direction = col_str(res, 0, 5),
                            .from = col_str(res, 0, 6),
                            .to = col_str(res, 0, 7),
                            .status = col_str(res, 0, 8),
                            .voice_mode = col_str(res, 0, 9),
                            .rejected_cap = col_str(res, 0, 10),
                            .duration_s = col_i64(res, 0, 11),
                            .ended_by = col_str(res, 0, 12),
                            .end_reason = col_str(res, 0, 13),
                            .idempotency_key = col_str(res, 0, 14),
                            .age_ms = col_i64(res, 0, 15)};
    ((void (*)(void *, int, bool, const sb_call_row_t *))o->cb)(o->arg, err, one, one ? &c : NULL);
    op_free(o);
}

static int port_find_call(void *ctx, int64_t tenant, int64_t channel, const char *call_key,
                          const char *idempotency_key, void (*cb)(void *, int, bool, const sb_call_row_t *), void *arg)
{
    sb_store_t *st = ctx;
    char t[24], c[24];
    i64_text(t, tenant);
    i64_text(c, channel);
    const char *p[2] = {t, NULL};
    const char *sql;
    if (call_key) {
        p[0] = c;
        p[1] = call_key;
        sql = "SELECT " CALL_COLS " FROM calls WHERE channel_id = $1 AND call_key = $2";
    } else {
        p[1] = idempotency_key;
        sql = "SELECT " CALL_COLS " FROM calls WHERE tenant_id = $1 AND idempotency_key = $2";
    }
    op_t *o = op_new(st, (void *)cb, arg);
    int rc = sb_pg_query(st->pg, sql, 2, p, SB_PG_PREPARED, call_read, o);
    if (rc < 0)
        op_free(o);
    return rc;
}

void sb_store_port(sb_store_t *st, sb_store_port_t *out)
{
    *out = (sb_store_port_t){.ctx = st,
                             .load_tenant = port_load_tenant,
                             .load_channel = port_load_channel,
                             .load_limits = port_load_limits,
                             .ensure_conversations = port_ensure,
                             .write = port_write,
                             .find_by_provider = port_find_by_provider,
                             .find_idempotent = port_find_idempotent,
                             .load_fallbacks = port_load_fallbacks,
                             .find_call = port_find_call,
                             .events_after = port_events_after,
                             .hook_acked = port_hook_acked,
                             .hook_dead = port_hook_dead,
                             .message_id = port_message_id,
                             .receipt_done = port_receipt_done};
}

/* ---- receipts ---------------------------------------------------------------------------------------------------- */

/* A loop turn's receipts of a kind: one INSERT, in arrival order (ids follow it). A repeat (the same dedup key of
 * the same channel, stored before or earlier in the batch) makes no row. Rows: (ord, id, tenant, channel) of each
 * receipt stored, the first of the batch's twins answering for them. */
#define RECEIPTS_INSERT(from, where)                                                                               \
    "WITH u AS MATERIALIZED (" from "),"                                                                          \
    " i AS (INSERT INTO webhook_receipts (tenant_id, channel_id, dedup_key, event, raw)"                         \
    "       SELECT t, c, k, e, r FROM u " where " ORDER BY ord"                                                   \
    "       ON CONFLICT (tenant_id, channel_id, dedup_key) DO NOTHING RETURNING id, tenant_id, channel_id, dedup_key)" \
    " SELECT DISTINCT ON (i.id) u.ord, i.id, i.tenant_id, i.channel_id FROM i"                                    \
    " JOIN u ON u.t = i.tenant_id AND u.c = i.channel_id AND u.k = i.dedup_key ORDER BY i.id, u.ord"

static const char twilio_receipts_sql[] = RECEIPTS_INSERT(
    "SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::jsonb[], $5::text[])"
    " WITH ORDINALITY AS u(t, c, k, e, r, ord)",
    "");

/* Meta: the channel is the one channel_routes names for (type, account); an account no channel claims makes no row. */
static const char meta_receipts_sql[] = RECEIPTS_INSERT(
    "SELECT r.tenant_id AS t, r.channel_id AS c, x.k, x.e, x.r, x.ord"
    " FROM unnest($1::text[], $2::text[], $3::text[], $4::jsonb[], $5::text[])"
    "      WITH ORDINALITY AS x(type, account, k, e, r, ord)"
    " JOIN channel_routes r ON r.type = x.type AND r.address = x.account",
    "");

static void receipt_row(const void *item, size_t k, const char **v, char (*num)[24])
{
    const sb_store_receipt_t *r = item;
    (void)k;
    if (r->type) {
        v[0] = r->type;
        v[1] = r->account;
    } else {
        i64_text(num[0], r->tenant);
        i64_text(num[1], r->channel);
        v[0] = num[0];
        v[1] = num[1];
    }
    v[2] = r->dedup_key;
    v[3] = r->event_json;
    v[4] = r->raw;
}

static void receipts_done(void **items, size_t n, int err, const char *detail, const PGresult *res)
{
    if (err && err != SB_ECANCELED)
        sb_log_warn("store: %zu receipt(s) not committed: %s", n, detail);
    for (int i = 0; !err && i < PQntuples(res); i++) {
        int64_t ord = col_i64(res, i, 0);
        if (ord < 1 || (size_t)ord > n)
            continue;
        sb_metric_add(&((sb_store_receipt_t *)items[ord - 1])->st->m->receipts_stored, 1);
        sb_store_receipt_t *r = items[ord - 1];
        r->id = col_i64(res, i, 1);
        r->tenant = col_i64(res, i, 2);
        r->channel = col_i64(res, i, 3);
    }
    for (size_t i = 0; i < n; i++) {
        sb_store_receipt_t *r = items[i];
        r->done(r, err);
    }
}

/* A lone receipt (a quiet loop turn): the same, without the arrays and the join. */
static const char twilio_receipt_one_sql[] =
    "INSERT INTO webhook_receipts (tenant_id, channel_id, dedup_key, event, raw) VALUES ($1, $2, $3, $4, $5)"
    " ON CONFLICT (tenant_id, channel_id, dedup_key) DO NOTHING RETURNING 1, id, tenant_id, channel_id";

static const char meta_receipt_one_sql[] =
    "INSERT INTO webhook_receipts (tenant_id, channel_id, dedup_key, event, raw)"
    " SELECT r.tenant_id, r.channel_id, $3, $4::jsonb, $5 FROM channel_routes r WHERE r.type = $1 AND r.address = $2"
    " ON CONFLICT (tenant_id, channel_id, dedup_key) DO NOTHING RETURNING 1, id, tenant_id, channel_id";

static const sb_pg_batch_def_t twilio_receipts_def = {
    .what = "Twilio receipts",
    .sql = twilio_receipts_sql,
    .sql_one = twilio_receipt_one_sql,
    .ncols = 5,
    .max = 512,
    .row = receipt_row,
    .done = receipts_done,
};

static const sb_pg_batch_def_t meta_receipts_def = {
    .what = "Meta receipts",
    .sql = meta_receipts_sql,
    .sql_one = meta_receipt_one_sql,
    .ncols = 5,
    .max = 512,
    .row = receipt_row,
    .done = receipts_done,
};

int sb_store_receipt_add(sb_store_t *st, sb_store_receipt_t *r)
{
    r->id = 0;
    r->st = st;
    return sb_pg_batch_add(st->ingest, r->type ? &meta_receipts_def : &twilio_receipts_def, r);
}

/* ---- sends a node of a cluster takes --------------------------------------------------------------------------- */

/* A loop turn's sends, one statement (sb_store_intake_t): each one's key looked up (its message, stored or taken as a
 * send: the first found), and the others written as receipts of kind send under their ids. Two of one batch with the
 * same key: the first is written, the second finds neither (the unique send_key index skips it). Rows: (ord, receipt
 * or NULL, message id or NULL, scheduled) for every item. */
static const char intake_sql[] =
    "WITH u AS MATERIALIZED ("
    "  SELECT t, c, coalesce(i, nextval(pg_get_serial_sequence('messages', 'id'))) AS i, k, e, ord"
    "  FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::text[], $5::jsonb[])"
    "       WITH ORDINALITY AS x(t, c, i, k, e, ord)),"
    " used AS MATERIALIZED ("
    "  SELECT u.ord, x.id, x.scheduled FROM u CROSS JOIN LATERAL ("
    "    SELECT m.id, m.status = 'scheduled' AS scheduled FROM messages m"
    "    WHERE m.tenant_id = u.t AND m.idempotency_key = u.k"
    "    UNION ALL"
    "    SELECT r.message_id, coalesce((r.event->>'send_at_ms')::bigint > extract(epoch FROM now()) * 1000, false)"
    "    FROM webhook_receipts r WHERE r.tenant_id = u.t AND r.send_key = u.k LIMIT 1) x),"
    " ins AS ("
    "  INSERT INTO webhook_receipts (tenant_id, channel_id, dedup_key, event, raw, message_id, send_key)"
    "  SELECT t, c, 'send:' || i, jsonb_set(e, '{message_id}', to_jsonb(i)), '', i, k FROM u"
    "  WHERE NOT EXISTS (SELECT 1 FROM used WHERE used.ord = u.ord) ORDER BY ord"
    "  ON CONFLICT DO NOTHING RETURNING id, tenant_id, message_id)"
    " SELECT u.ord, ins.id, coalesce(ins.message_id, used.id), used.scheduled FROM u"
    " LEFT JOIN ins ON ins.tenant_id = u.t AND ins.message_id = u.i LEFT JOIN used ON used.ord = u.ord";

static void intake_row(const void *item, size_t k, const char **v, char (*num)[24])
{
    const sb_store_intake_t *in = item;
    (void)k;
    i64_text(num[0], in->tenant);
    i64_text(num[1], in->channel);
    i64_text(num[2], in->id);
    v[0] = num[0];
    v[1] = num[1];
    v[2] = in->id ? num[2] : NULL;
    v[3] = in->key;
    v[4] = in->event_json;
}

static void intake_done(void **items, size_t n, int err, const char *detail, const PGresult *res)
{
    if (err && err != SB_ECANCELED)
        sb_log_warn("store: %zu send(s) not committed: %s", n, detail);
    for (int i = 0; !err && i < PQntuples(res); i++) { /* (a row for every item) */
        int64_t ord = col_i64(res, i, 0);
        if (ord < 1 || (size_t)ord > n)
            continue;
        sb_store_intake_t *in = items[ord - 1];
        in->receipt = col_i64(res, i, 1);
        in->id = col_i64(res, i, 2);
        in->scheduled = !PQgetisnull(res, i, 3) && PQgetvalue(res, i, 3)[0] == 't';
    }
    for (size_t i = 0; i < n; i++) {
        sb_store_intake_t *in = items[i];
        in->done(in, err);
    }
}

static const sb_pg_batch_def_t intake_def = {
    .what = "sends",
    .sql = intake_sql,
    .ncols = 5,
    .max = 512,
    .row = intake_row,
    .done = intake_done,
};

int sb_store_intake_add(sb_store_t *st, sb_store_intake_t *in)
{
    in->receipt = 0;
    in->scheduled = false;
    return sb_pg_batch_add(st->ingest, &intake_def, in);
}

void sb_store_flush(sb_store_t *st)
{
    sb_pg_batch_flush(st->pg, &write_def);
    sb_pg_batch_flush(st->pg, &write_in_def);
}

/* ---- the sweeper ----------------------------------------------------------------------------------------------- */

typedef void (*sweep_cb_t)(void *, int, const sb_store_unprocessed_t *, size_t);

static void swept(void *arg, int err, const char *detail, const PGresult *res)
{
    op_t *o = arg;
    (void)detail;
    int rows = err ? 0 : PQntuples(res);
    sb_store_unprocessed_t *u = sb_calloc(rows ? (size_t)rows : 1, sizeof *u);
    size_t n = 0;
    for (int i = 0; i < rows; i++) {
        sb_store_unprocessed_t *x = &u[n];
        *x = (sb_store_unprocessed_t){.id = col_i64(res, i, 0),
                                      .tenant = col_i64(res, i, 1),
                                      .channel = col_i64(res, i, 2),
                                      .age_ms = col_i64(res, i, 3)};
        json_t *j = json_loadb(PQgetvalue(res, i, 4), (size_t)PQgetlength(res, i, 4), 0, NULL);
        if (j && sb_event_from_json(j, &x->ev) == 0) {
            n++;
        } else { /* it never will be: set aside, or every sweep would read it again and the mark wait for it */
            sb_log_error("store: receipt %" PRId64 ": its event cannot be read; set aside unapplied", x->id);
            port_receipt_done(o->st, x->tenant, x->id);
        }
        json_decref(j);
    }
    ((sweep_cb_t)o->cb)(o->arg, err, u, n);
    for (size_t i = 0; i < n; i++)
        sb_event_cleanup(&u[i].ev);
    free(u);
    op_free(o);
}

/* One scan of the receipts from the low-water mark on tells both the oldest one unprocessed and the newest one old
 * enough to be surely visible: an INSERT that has not committed yet holds an id below those that have, so the mark
 * never passes a receipt younger than 5 seconds (a receipt's INSERT is one group commit: milliseconds, a stalled
 * disk aside). The mark then moves to the older of the two (past the newest old one when nothing is unprocessed),
 * so a sweep reads the receipts of about the last five seconds, and the unprocessed ones from the oldest of them on.
 * (Through the BRIN index on id, which is loose here: new receipts also fill the room old ones' updates left in
 * earlier pages. Under a load of 16,000 webhooks/s a sweep took about 100 ms, once every 5 s on its own connection.) */
int sb_store_sweep(sb_store_t *st, int older_ms, int64_t after_id, size_t limit, sweep_cb_t cb, void *arg)
{
    char o_ms[24], l[24], a[24];
    i64_text(o_ms, older_ms);
    i64_text(l, (int64_t)limit);
    i64_text(a, after_id);
    const char *p[3] = {o_ms, l, a};
    op_t *o = op_new(st, (void *)cb, arg);
    int rc = sb_pg_query(st->sweeper ? st->sweeper : st->pg,
                         "WITH lo AS (SELECT low FROM sweep_marks WHERE name = 'receipts'),"
                         " s AS MATERIALIZED (SELECT min(w.id) FILTER (WHERE w.processed_at IS NULL) AS pending,"
                         "                           max(w.id) FILTER (WHERE w.received_at < now() - interval"
                         "                                             '5 seconds') AS old"
                         "                    FROM webhook_receipts w, lo WHERE w.id >= lo.low),"
                         " mv AS (UPDATE sweep_marks m SET low = greatest(m.low, least(coalesce(s.pending, s.old + 1,"
                         "        m.low), coalesce(s.old + 1, m.low))) FROM s WHERE m.name = 'receipts')"
                         " SELECT w.id, w.tenant_id, w.channel_id,"
                         " (extract(epoch FROM now() - w.received_at) * 1000)::bigint, w.event::text"
                         " FROM webhook_receipts w, s WHERE w.id >= s.pending AND w.processed_at IS NULL"
                         " AND w.received_at < now() - $1 * interval '1 millisecond' AND w.id > $3"
                         " ORDER BY w.id LIMIT $2",
                         3, p, SB_PG_PREPARED, swept, o);
    if (rc < 0)
        op_free(o);
    return rc;
}

/* ---- fencing epochs (sql/0022) --------------------------------------------------------------------------------- */

static void floor_read(void *arg, int err, const char *detail, const PGresult *res)
{
    op_t *o = arg;
    (void)detail;
    int64_t floor = !err && PQntuples(res) == 1 ? col_i64(res, 0, 0) : 0;
    ((void (*)(void *, int, int64_t))o->cb)(o->arg, err, floor);
    op_free(o);
}

int sb_store_fence_floor(sb_store_t *st, void (*cb)(void *arg, int err, int64_t floor), void *arg)
{
    op_t *o = op_new(st, (void *)cb, arg);
    int rc = sb_pg_query(st->pg, "SELECT coalesce(max(epoch), 0) FROM slot_epochs", 0, NULL, 0, floor_read, o);
    if (rc < 0)
        op_free(o);
    return rc;
}

static void bump_read(void *arg, int err, const char *detail, const PGresult *res)
{
    op_t *o = arg;
    (void)detail;
    int32_t *stale = NULL;
    size_t n = 0;
    if (!err && PQntuples(res) == 1 && !PQgetisnull(res, 0, 0)) { /* "{3,17}" */
        const char *v = PQgetvalue(res, 0, 0);
        stale = sb_malloc((strlen(v) / 2 + 1) * sizeof *stale);
        for (const char *p = v; *p;) {
            if (*p >= '0' && *p <= '9') {
                char *end;
                stale[n++] = (int32_t)strtol(p, &end, 10);
                p = end;
            } else {
                p++;
            }
        }
    }
    ((void (*)(void *, int, const int32_t *, size_t))o->cb)(o->arg, err, stale, n);
    free(stale);
    op_free(o);
}

/* v[0..n) as a PostgreSQL array literal of numbers into b ("{1,2}", "{}"). */
static void i64_array(sb_buf_t *b, const int64_t *v, size_t n)
{
    sb_buf_puts(b, "{");
    for (size_t i = 0; i < n; i++)
        sb_buf_printf(b, "%s%lld", i ? "," : "", (long long)v[i]);
    sb_buf_puts(b, "}");
}

int sb_store_fence_bump(sb_store_t *st, const uint32_t *slots, const int64_t *epochs, size_t n,
                        void (*cb)(void *arg, int err, const int32_t *stale, size_t nstale), void *arg)
{
    sb_buf_t a, b;
    sb_buf_init(&a);
    sb_buf_init(&b);
    sb_buf_puts(&a, "{");
    for (size_t i = 0; i < n; i++)
        sb_buf_printf(&a, "%s%u", i ? "," : "", slots[i]);
    sb_buf_puts(&a, "}");
    i64_array(&b, epochs, n);
    const char *p[2] = {a.p, b.p};
    op_t *o = op_new(st, (void *)cb, arg);
    /* alone: its locks wait for the writes of the old epoch to commit, and nothing else should wait with them */
    int rc = sb_pg_query(st->pg, "SELECT sb_fence_bump($1::integer[], $2::bigint[])", 2, p, SB_PG_ALONE, bump_read,
                         o);
    if (rc < 0)
        op_free(o);
    sb_buf_cleanup(&a);
    sb_buf_cleanup(&b);
    return rc;
}

static void unprocessed_read(void *arg, int err, const char *detail, const PGresult *res)
{
    op_t *o = arg;
    (void)detail;
    int rows = err ? 0 : PQntuples(res);
    int64_t *ids = err ? NULL : sb_malloc((rows ? (size_t)rows : 1) * sizeof *ids);
    for (int i = 0; i < rows; i++)
        ids[i] = col_i64(res, i, 0);
    ((void (*)(void *, int, const int64_t *, size_t))o->cb)(o->arg, err, ids, (size_t)rows);
    free(ids);
    op_free(o);
}

int sb_store_receipts_unprocessed(sb_store_t *st, const int64_t *tenants, const int64_t *ids, size_t n,
                                  void (*cb)(void *arg, int err, const int64_t *ids, size_t n), void *arg)
{
    sb_buf_t a, b;
    sb_buf_init(&a);
    sb_buf_init(&b);
    i64_array(&a, tenants, n);
    i64_array(&b, ids, n);
    const char *p[2] = {a.p, b.p};
    op_t *o = op_new(st, (void *)cb, arg);
    int rc = sb_pg_query(st->pg,
                         "SELECT r.id FROM unnest($1::bigint[], $2::bigint[]) AS u(t, i) "
                         "JOIN webhook_receipts r ON r.tenant_id = u.t AND r.id = u.i WHERE r.processed_at IS NULL "
                         "ORDER BY r.id",
                         2, p, 0, unprocessed_read, o);
    if (rc < 0)
        op_free(o);
    sb_buf_cleanup(&a);
    sb_buf_cleanup(&b);
    return rc;
}

typedef void (*backlog_cb_t)(void *, int, const int64_t *, const int64_t *, size_t, const int64_t *, size_t);

static void backlog_read(void *arg, int err, const char *detail, const PGresult *res)
{
    op_t *o = arg;
    (void)detail;
    int rows = err ? 0 : PQntuples(res);
    int64_t *ct = sb_malloc((rows ? (size_t)rows : 1) * sizeof *ct), *ch = sb_malloc((rows ? (size_t)rows : 1) * 8),
            *t = sb_malloc((rows ? (size_t)rows : 1) * sizeof *t);
    size_t nch = 0, nt = 0;
    for (int i = 0; i < rows; i++) {
        if (PQgetisnull(res, i, 1)) {
            t[nt++] = col_i64(res, i, 0);
        } else {
            ct[nch] = col_i64(res, i, 0);
            ch[nch++] = col_i64(res, i, 1);
        }
    }
    ((backlog_cb_t)o->cb)(o->arg, err, ct, ch, nch, t, nt);
    free(ct);
    free(ch);
    free(t);
    op_free(o);
}

int sb_store_backlog(sb_store_t *st, backlog_cb_t cb, void *arg)
{
    op_t *o = op_new(st, (void *)cb, arg);
    int rc = sb_pg_query(st->pg,
                         "SELECT DISTINCT tenant_id, channel_id FROM outbox"
                         " UNION ALL"
                         " SELECT DISTINCT tenant_id, channel_id FROM messages WHERE fallback_due_at IS NOT NULL"
                         " UNION ALL"
                         " SELECT t.id, NULL FROM tenants t WHERE t.webhook_url IS NOT NULL AND t.webhook_cursor <"
                         " coalesce((SELECT last_cursor FROM event_pages p WHERE p.tenant_id = t.id"
                         "           ORDER BY last_cursor DESC LIMIT 1), 0)",
                         0, NULL, SB_PG_PREPARED, backlog_read, o);
    if (rc < 0)
        op_free(o);
    return rc;
}

typedef void (*queues_cb_t)(void *, int, const sb_store_queues_t *);

/* An exact count that reached its cap: the estimate then, never below the cap. */
static int64_t capped(int64_t exact, int64_t estimate, int64_t cap)
{
    return exact < cap ? exact : estimate > cap ? estimate : cap;
}

static void queues_read(void *arg, int err, const char *detail, const PGresult *res)
{
    op_t *o = arg;
    if (!err && PQntuples(res) != 1)
        err = SB_EINVAL;
    if (err) {
        sb_log_debug("store: the queues could not be counted: %s", detail);
        ((queues_cb_t)o->cb)(o->arg, err, NULL);
    } else {
        sb_store_queues_t q = {.outbox_waiting = capped(col_i64(res, 0, 0), col_i64(res, 0, 1), SB_STORE_COUNT_CAP),
                               .dead_letters = capped(col_i64(res, 0, 2), col_i64(res, 0, 3), SB_STORE_DEAD_CAP),
                               .outbox_oldest_ms = col_i64(res, 0, 4)};
        if (q.outbox_oldest_ms < 0) /* created_at comes from the actors' clocks: a step back is not an age */
            q.outbox_oldest_ms = 0;
        ((queues_cb_t)o->cb)(o->arg, 0, &q);
    }
    op_free(o);
}

/* Why these and not count(*): the outbox is small while things are well (a queue the sessions drain) but holds every
 * message of an outage or a bulk send to a paced channel, and dead letters are never deleted; an exact count is a
 * scan of the whole table, every 5 s. A capped count costs at most the cap's rows (100,000 outbox rows: about 30 ms
 * measured, on the sweeper's own connection) and stays exact where the alerts care to see small changes (the first
 * dead letters, a backlog starting). The oldest message: ids come from the shard's blocks, so a channel's outbox
 * is in acceptance order by message_id but the whole table is not; the recursive CTE skips from one channel's first
 * entry to the next one's along the primary key (one index descent a channel: 500 channels of a million rows, 10
 * ms), and their messages' created_at gives the age. A replayed message keeps its created_at: it shows as old as it
 * is until it is sent. */
int sb_store_queues(sb_store_t *st, queues_cb_t cb, void *arg)
{
    char c1[24], c2[24], c3[24];
    i64_text(c1, SB_STORE_COUNT_CAP);
    i64_text(c2, SB_STORE_DEAD_CAP);
    i64_text(c3, SB_STORE_OLDEST_CHANNELS);
    const char *p[3] = {c1, c2, c3};
    op_t *o = op_new(st, (void *)cb, arg);
    int rc = sb_pg_query(st->sweeper ? st->sweeper : st->pg,
                         "WITH RECURSIVE ch AS ("
                         "  (SELECT tenant_id, channel_id, message_id, 1 AS n FROM outbox"
                         "   ORDER BY tenant_id, channel_id, message_id LIMIT 1)"
                         "  UNION ALL"
                         "  SELECT x.tenant_id, x.channel_id, x.message_id, ch.n + 1 FROM ch CROSS JOIN LATERAL"
                         "   (SELECT o.tenant_id, o.channel_id, o.message_id FROM outbox o"
                         "    WHERE (o.tenant_id, o.channel_id) > (ch.tenant_id, ch.channel_id)"
                         "    ORDER BY o.tenant_id, o.channel_id, o.message_id LIMIT 1) x"
                         "  WHERE ch.n < $3),"
                         " est AS (SELECT c.oid, CASE WHEN c.relpages > 0 THEN c.reltuples / c.relpages *"
                         "          (pg_relation_size(c.oid) / current_setting('block_size')::int)"
                         "          ELSE greatest(c.reltuples, 0) END AS n"
                         "         FROM pg_class c WHERE c.oid IN ('outbox'::regclass, 'webhook_dead_letters'::regclass))"
                         " SELECT (SELECT count(*) FROM (SELECT 1 FROM outbox LIMIT $1) o),"
                         " (SELECT n::bigint FROM est WHERE oid = 'outbox'::regclass),"
                         " (SELECT count(*) FROM (SELECT 1 FROM webhook_dead_letters LIMIT $2) d),"
                         " (SELECT n::bigint FROM est WHERE oid = 'webhook_dead_letters'::regclass),"
                         " (SELECT (extract(epoch FROM now() - min(m.created_at)) * 1000)::bigint"
                         "  FROM ch JOIN messages m ON m.tenant_id = ch.tenant_id AND m.id = ch.message_id)",
                         3, p, SB_PG_PREPARED, queues_read, o);
    if (rc < 0)
        op_free(o);
    return rc;
}

/* ---- scheduled sends falling due ----------------------------------------------------------------------------------- */

typedef void (*due_cb_t)(void *, int, const int64_t *, const int64_t *, size_t);

static void scheduled_read(void *arg, int err, const char *detail, const PGresult *res)
{
    op_t *o = arg;
    (void)detail;
    int rows = err ? 0 : PQntuples(res);
    int64_t *t = sb_malloc((rows ? (size_t)rows : 1) * sizeof *t), *ch = sb_malloc((rows ? (size_t)rows : 1) * 8);
    for (int i = 0; i < rows; i++) {
        t[i] = col_i64(res, i, 0);
        ch[i] = col_i64(res, i, 1);
    }
    ((due_cb_t)o->cb)(o->arg, err, t, ch, (size_t)rows);
    free(t);
    free(ch);
    op_free(o);
}

/* Through the partial index of scheduled messages (sql/0017, tenant and channel in it): the index's entries due
 * within the horizon, in send_at order, at most limit of them read, and their channels once each. */
int sb_store_scheduled_due(sb_store_t *st, int64_t horizon_ms, size_t limit, due_cb_t cb, void *arg)
{
    char h[24], l[24];
    i64_text(h, horizon_ms);
    i64_text(l, (int64_t)limit);
    const char *p[2] = {h, l};
    op_t *o = op_new(st, (void *)cb, arg);
    int rc = sb_pg_query(st->sweeper ? st->sweeper : st->pg,
                         "SELECT DISTINCT tenant_id, channel_id FROM"
                         " (SELECT tenant_id, channel_id FROM messages WHERE status = 'scheduled'"
                         "  AND send_at < now() + $1::bigint * interval '1 millisecond' ORDER BY send_at LIMIT $2) d",
                         2, p, SB_PG_PREPARED, scheduled_read, o);
    if (rc < 0)
        op_free(o);
    return rc;
}
