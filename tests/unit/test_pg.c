/* Tests of the PostgreSQL adapter (adapters/pg.c) against the real local stack (ops/stack.sh up; the database is
 * $SB_TEST_DATABASE_URL or switchboard_test on 127.0.0.1:5440): pipelined queries issued in one loop turn share one
 * transaction (group commit), a failing statement rolls its whole segment back and says so to every query in it,
 * SB_PG_ALONE isolates a query, parameters (NULL, UTF-8) travel intact, and a closed adapter cancels. Batches: a
 * turn's items in statements of at most max elements, in order, each item answered once with its own rows; items
 * added while a segment commits leave with what was held; a refused batch is sent again item by item; cancel. */
#include "adapters/pg.h"
#include "gateway/metrics.h"
#include "proto/err.h"
#include "tests/tap.h"

#include <stdlib.h>

static uv_loop_t loop;
static sb_pg_t *pg;

typedef struct outcome {
    int calls, err;
    char value[128];
    char sqlstate[8];
    char detail[256];
} outcome_t;

static void on_result(void *arg, int err, const char *detail, const PGresult *res)
{
    outcome_t *o = arg;
    o->calls++;
    o->err = err;
    snprintf(o->detail, sizeof o->detail, "%s", detail);
    if (res && err == 0 && PQntuples(res) > 0 && PQnfields(res) > 0)
        snprintf(o->value, sizeof o->value, "%s", PQgetisnull(res, 0, 0) ? "(null)" : PQgetvalue(res, 0, 0));
    if (res && err == SB_EINVAL) {
        const char *st = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        snprintf(o->sqlstate, sizeof o->sqlstate, "%s", st ? st : "");
    }
}

/* Runs the loop until every one of n records (stride bytes apart, each with an int calls) has been called, or 5 s.
 * wait_all(v, n) for an array v of outcome_t, titem_t, ... */
static bool wait_calls(const int *calls, size_t stride, int n)
{
    uint64_t deadline = uv_hrtime() + 5000000000ull;
    for (;;) {
        int done = 0;
        for (int i = 0; i < n; i++)
            done += *(const int *)((const char *)calls + (size_t)i * stride) > 0;
        if (done == n)
            return true;
        if (uv_hrtime() > deadline)
            return false;
        uv_run(&loop, UV_RUN_ONCE);
    }
}
#define wait_all(v, n) wait_calls(&(v)[0].calls, sizeof (v)[0], (n))

static int query1(const char *sql, const char *param, int flags, outcome_t *o)
{
    const char *params[1] = {param};
    return sb_pg_query(pg, sql, param ? 1 : 0, param ? params : NULL, flags, on_result, o);
}

TEST(connect)
{
    uint64_t deadline = uv_hrtime() + 5000000000ull;
    while (!sb_pg_connected(pg) && uv_hrtime() < deadline)
        uv_run(&loop, UV_RUN_ONCE);
    ok(sb_pg_connected(pg), "connected to the local stack's PostgreSQL");
}

TEST(group_commit)
{
    enum { N = 200 };
    static outcome_t o[N];
    memset(o, 0, sizeof o);
    sb_pg_stats_t before, after;
    sb_pg_get_stats(pg, &before);
    int errors = 0;
    for (int i = 0; i < N; i++) {
        char v[16];
        snprintf(v, sizeof v, "%d", i);
        errors += query1("SELECT $1::int * 2", v, 0, &o[i]) != 0;
    }
    is_int(errors, 0, "200 queries sent in one loop turn");
    ok(wait_all(o, N), "every callback ran");
    int wrong = 0;
    for (int i = 0; i < N; i++) {
        char want[16];
        snprintf(want, sizeof want, "%d", i * 2);
        wrong += o[i].calls != 1 || o[i].err != 0 || strcmp(o[i].value, want) != 0;
    }
    is_int(wrong, 0, "each got its own answer, once, without error");
    sb_pg_get_stats(pg, &after);
    is_int(after.segments - before.segments, 1, "all 200 shared one transaction (one Sync)");
    is_int(after.queries - before.queries, N, "queries counted");
}

/* While a segment commits, later queries are held and go out together as the next one. */
static outcome_t held_o[3];
static void held_issue(uv_timer_t *t)
{
    (void)t;
    query1("SELECT 'b'", NULL, 0, &held_o[1]); /* segment A (pg_sleep) is in flight now */
    query1("SELECT 'c'", NULL, 0, &held_o[2]);
}

TEST(held_while_committing)
{
    memset(held_o, 0, sizeof held_o);
    sb_pg_stats_t before, after;
    sb_pg_get_stats(pg, &before);
    uv_timer_t t;
    uv_timer_init(&loop, &t);
    query1("SELECT pg_sleep(0.2), 'a'", NULL, 0, &held_o[0]);
    uv_timer_start(&t, held_issue, 50, 0); /* a later loop turn, while the first segment runs */
    ok(wait_all(held_o, 3), "all three answered");
    sb_pg_get_stats(pg, &after);
    is_int(after.held - before.held, 2, "the two queries issued during the first commit were held");
    is_int(after.segments - before.segments, 2, "and went out together: two transactions for three queries");
    ok(held_o[1].err == 0 && strcmp(held_o[1].value, "b") == 0 && held_o[2].err == 0 &&
           strcmp(held_o[2].value, "c") == 0, "each held query got its own answer");
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(&loop, UV_RUN_NOWAIT);
}

/* ---- batches ---- */

/* A test item: v divides 100 (0 makes the server refuse the statement), n elements (the same v each). */
typedef struct titem {
    int v;
    size_t n;
    int calls, err, stmt; /* stmt: which done call answered it */
    int rows;             /* result rows that were its own */
    char value[32], txid[32];
    bool one; /* answered by sql_one */
} titem_t;

static int stmts; /* done calls so far */
static size_t stmt_sizes[16];

static size_t titem_count(const void *item)
{
    return ((const titem_t *)item)->n;
}

static void titem_row(const void *item, size_t k, const char **v, char (*num)[24])
{
    (void)k;
    snprintf(num[0], sizeof num[0], "%d", ((const titem_t *)item)->v);
    v[0] = num[0];
}

/* Rows: (100 / v, element ordinal, txid[, 'one']); an item's elements are consecutive ordinals. */
static void titem_done(void **items, size_t n, int err, const char *detail, const PGresult *res)
{
    (void)detail;
    if (stmts < 16)
        stmt_sizes[stmts] = n;
    stmts++;
    int ord = 1;
    for (size_t i = 0; i < n; i++) {
        titem_t *t = items[i];
        t->calls++;
        t->err = err;
        t->stmt = stmts;
        for (size_t k = 0; !err && k < t->n; k++, ord++) {
            for (int r = 0; r < PQntuples(res); r++) {
                if (atoi(PQgetvalue(res, r, 1)) != ord)
                    continue;
                t->rows++;
                snprintf(t->value, sizeof t->value, "%s", PQgetvalue(res, r, 0));
                snprintf(t->txid, sizeof t->txid, "%s", PQgetvalue(res, r, 2));
                t->one = PQnfields(res) == 4;
            }
        }
    }
}

/* The test items' statement: 100 / v per item (v = 0 fails), with its position and the transaction it ran in. */
#define TITEM_SQL                                                                                                  \
    "SELECT (100 / u.v)::text, u.ord, txid_current()::text FROM unnest($1::int[]) WITH ORDINALITY AS u(v, ord)"

static const sb_pg_batch_def_t tdef = {
    .what = "test items",
    .sql = TITEM_SQL,
    .ncols = 1,
    .max = 4,
    .count = titem_count,
    .row = titem_row,
    .sql_one = "SELECT (100 / $1::int)::text, 1::bigint, txid_current()::text, 'one'",
    .done = titem_done,
};

TEST(batch)
{
    /* counts 1, 1, 3, 3, 1 under max 4: statements [1, 1], [3], [3, 1] (an item is never split) */
    titem_t t[5] = {{.v = 1, .n = 1}, {.v = 2, .n = 1}, {.v = 4, .n = 3}, {.v = 5, .n = 3}, {.v = 10, .n = 1}};
    stmts = 0;
    sb_pg_stats_t before, after;
    sb_pg_get_stats(pg, &before);
    int errors = 0;
    for (int i = 0; i < 5; i++)
        errors += sb_pg_batch_add(pg, &tdef, &t[i]) != 0;
    is_int(errors, 0, "five items added in one loop turn");
    ok(wait_all(t, 5), "each was answered");
    int wrong = 0;
    const char *want[5] = {"100", "50", "25", "20", "10"};
    for (int i = 0; i < 5; i++)
        wrong += t[i].calls != 1 || t[i].err != 0 || t[i].rows != (int)t[i].n || strcmp(t[i].value, want[i]) != 0;
    is_int(wrong, 0, "once, without error, with the rows of its own elements");
    ok(stmts == 3 && stmt_sizes[0] == 2 && stmt_sizes[1] == 1 && stmt_sizes[2] == 2,
       "three statements of at most four elements, in arrival order (%d: %zu, %zu, %zu)", stmts, stmt_sizes[0],
       stmt_sizes[1], stmt_sizes[2]);
    ok(t[0].stmt == 1 && t[1].stmt == 1 && t[2].stmt == 2 && t[3].stmt == 3 && t[4].stmt == 3, "each in its own");
    sb_pg_get_stats(pg, &after);
    is_int(after.segments - before.segments, 1, "all in one transaction");
    ok(!t[0].one && !t[2].one, "none of them took the lone statement");

    titem_t lone = {.v = 20, .n = 1};
    sb_pg_batch_add(pg, &tdef, &lone);
    ok(wait_all(&lone, 1) && lone.err == 0 && lone.one && strcmp(lone.value, "5") == 0,
       "a lone element takes sql_one, with its values as scalars (%s)", lone.value);
}

/* Items added while a segment commits wait and leave together with what was held, right when it finished. */
static titem_t held_t[2];
static outcome_t held_q;
static void batch_while_committing(uv_timer_t *timer)
{
    (void)timer;
    query1("SELECT txid_current()::text", NULL, 0, &held_q); /* held: the pg_sleep segment is in flight */
    sb_pg_batch_add(pg, &tdef, &held_t[0]);
    sb_pg_batch_add(pg, &tdef, &held_t[1]);
}

TEST(batch_held_while_committing)
{
    memset(held_t, 0, sizeof held_t);
    memset(&held_q, 0, sizeof held_q);
    held_t[0] = (titem_t){.v = 1, .n = 1};
    held_t[1] = (titem_t){.v = 2, .n = 1};
    stmts = 0;
    outcome_t slow = {0};
    uv_timer_t timer;
    uv_timer_init(&loop, &timer);
    query1("SELECT pg_sleep(0.2), 'a'", NULL, 0, &slow);
    uv_timer_start(&timer, batch_while_committing, 50, 0);
    ok(wait_all(&slow, 1) && wait_all(&held_q, 1) && wait_all(held_t, 2), "all answered");
    ok(held_q.err == 0 && held_t[0].err == 0 && strcmp(held_q.value, held_t[0].txid) == 0 &&
           strcmp(held_t[0].txid, held_t[1].txid) == 0 && held_t[0].stmt == held_t[1].stmt,
       "the two items went out as one statement, in the held query's transaction (%s, %s)", held_q.value,
       held_t[0].txid);
    uv_close((uv_handle_t *)&timer, NULL);
    uv_run(&loop, UV_RUN_NOWAIT);
}

/* One bad item: its statement is refused, and each item is sent again alone; only the bad one fails. */
TEST(batch_refused)
{
    titem_t t[3] = {{.v = 1, .n = 1}, {.v = 0, .n = 1}, {.v = 4, .n = 1}};
    stmts = 0;
    for (int i = 0; i < 3; i++)
        sb_pg_batch_add(pg, &tdef, &t[i]);
    ok(wait_all(t, 3), "each was answered");
    ok(t[0].calls == 1 && t[0].err == 0 && strcmp(t[0].value, "100") == 0 && t[2].calls == 1 && t[2].err == 0 &&
           strcmp(t[2].value, "25") == 0, "the good ones succeeded, with their own answers");
    ok(t[1].calls == 1 && t[1].err == SB_EINVAL, "the bad one alone was refused (%d)", t[1].err);
    ok(t[0].stmt != t[2].stmt, "after the refusal each went alone");
}

TEST(batch_cancel)
{
    titem_t t[2] = {{.v = 1, .n = 1}, {.v = 2, .n = 1}};
    stmts = 0;
    sb_pg_batch_add(pg, &tdef, &t[0]);
    sb_pg_batch_add(pg, &tdef, &t[1]);
    sb_pg_batch_cancel(pg, &tdef);
    ok(t[0].calls == 1 && t[1].calls == 1 && t[0].err == SB_ECANCELED && t[1].err == SB_ECANCELED && stmts == 1,
       "cancel hands every waiting item back at once, with SB_ECANCELED");
    sb_pg_batch_flush(pg, &tdef); /* nothing waits: nothing is sent */
    uv_run(&loop, UV_RUN_NOWAIT);
    is_int(stmts, 1, "and nothing of it is sent afterwards");
}

static const char prep_sql[] = "SELECT $1::int + 1";
static const char prep_bad[] = "SELEC $1::int";

TEST(prepared)
{
    outcome_t o[6];
    memset(o, 0, sizeof o);
    sb_pg_stats_t before, after;
    sb_pg_get_stats(pg, &before);
    const char *one[1] = {"1"}, *two[1] = {"2"};
    sb_pg_query(pg, prep_sql, 1, one, SB_PG_PREPARED, on_result, &o[0]);
    sb_pg_query(pg, prep_sql, 1, two, SB_PG_PREPARED, on_result, &o[1]);
    ok(wait_all(o, 2), "two uses of a prepared statement answered");
    sb_pg_query(pg, prep_sql, 1, two, SB_PG_PREPARED, on_result, &o[2]);
    ok(wait_all(o, 3), "a third, in a later transaction");
    ok(o[0].err == 0 && strcmp(o[0].value, "2") == 0 && strcmp(o[1].value, "3") == 0 &&
           strcmp(o[2].value, "3") == 0, "each with its own parameters");
    sb_pg_get_stats(pg, &after);
    is_int(after.prepares - before.prepares, 1, "prepared once per connection");

    sb_pg_query(pg, prep_bad, 1, one, SB_PG_PREPARED, on_result, &o[3]);
    ok(wait_all(o, 4), "a statement that cannot be prepared answers");
    ok(o[3].err == SB_EINVAL && strcmp(o[3].sqlstate, "42601") == 0, "with the syntax error (%s)", o[3].sqlstate);
    sb_pg_query(pg, prep_bad, 1, one, SB_PG_PREPARED, on_result, &o[4]);
    sb_pg_query(pg, prep_sql, 1, one, SB_PG_PREPARED, on_result, &o[5]);
    ok(wait_all(o, 6), "and again");
    sb_pg_get_stats(pg, &before);
    is_int(before.prepares - after.prepares, 2, "a failed PREPARE is not remembered: it is tried again");
    ok(o[4].err == SB_EINVAL && o[5].err == 0 && strcmp(o[5].value, "2") == 0,
       "its batch-mate, rolled back with it, was sent again and answered (%d: %s)", o[5].err, o[5].detail);
}

/* A PREPARE that succeeded in a segment that rolled back (another statement failed) stays prepared on the server:
 * the adapter must keep knowing it, or its next use would PREPARE again and fail with "already exists". */
static const char prep_kept[] = "SELECT $1::int * 3";

TEST(prepared_survives_rollback)
{
    outcome_t o[4];
    memset(o, 0, sizeof o);
    const char *two[1] = {"2"};
    sb_pg_stats_t before, after;
    sb_pg_get_stats(pg, &before);
    sb_pg_query(pg, prep_kept, 1, two, SB_PG_PREPARED, on_result, &o[0]); /* first use: PREPARE, then run */
    query1("SELECT 1 / 0", NULL, 0, &o[1]);                               /* fails: the segment rolls back */
    bool done = wait_all(o, 2);
    sb_pg_get_stats(pg, &after);
    ok(done && o[1].err == SB_EINVAL && after.retries - before.retries == 1,
       "rolled back together, the good one sent again (%d, %d)", o[0].err, o[1].err);
    ok(o[0].err == 0 && strcmp(o[0].value, "6") == 0, "and answered (%d: %s)", o[0].err, o[0].detail);
    sb_pg_query(pg, prep_kept, 1, two, SB_PG_PREPARED, on_result, &o[2]);
    done = wait_all(&o[2], 1);
    ok(done && o[2].err == 0 && strcmp(o[2].value, "6") == 0,
       "the statement still works in the next transaction (%d: %s)", o[2].err, o[2].detail);
}

/* One failing statement rolls its whole segment back (the segment is the transaction); the others are sent again,
 * alone, and commit once each: the retried insert would hit its own primary key if the first try had stayed. */
TEST(rollback_together)
{
    outcome_t setup = {0};
    query1("CREATE TEMP TABLE IF NOT EXISTS pg_t (id int primary key)", NULL, SB_PG_ALONE, &setup);
    ok(wait_all(&setup, 1) && setup.err == 0, "temp table created (%s)", setup.detail);

    sb_pg_stats_t before, after;
    sb_pg_get_stats(pg, &before);
    outcome_t ins = {0}, bad = {0}, later = {0};
    query1("INSERT INTO pg_t VALUES ($1) RETURNING id", "1", 0, &ins);
    query1("SELECT 1 / 0", NULL, 0, &bad);
    query1("SELECT 42", NULL, 0, &later);
    ok(wait_all(&ins, 1) && wait_all(&bad, 1) && wait_all(&later, 1), "three callbacks");
    is_int(bad.err, SB_EINVAL, "the failing statement: SB_EINVAL");
    is_str(bad.sqlstate, "22012", "with its SQLSTATE (division_by_zero)");
    ok(strstr(bad.detail, "division by zero") != NULL, "and the server's message (%s)", bad.detail);
    sb_pg_get_stats(pg, &after);
    is_int(after.retries - before.retries, 2, "the insert before it and the query after it: sent again");
    is_int(ins.err, 0, "the insert committed on its second try (%s)", ins.detail);
    is_str(ins.value, "1", "with its own result");
    is_int(later.err, 0, "the query after it answered (%s)", later.detail);
    is_str(later.value, "42", "with its own result");

    outcome_t count = {0};
    query1("SELECT count(*) FROM pg_t", NULL, 0, &count);
    ok(wait_all(&count, 1) && count.err == 0, "the connection works after a failed segment");
    is_str(count.value, "1", "one row: the first try was rolled back, the second committed");
}

TEST(alone_isolates)
{
    outcome_t bad = {0}, ins = {0}, count = {0};
    sb_pg_stats_t before, after;
    sb_pg_get_stats(pg, &before);
    query1("SELECT 1 / 0", NULL, SB_PG_ALONE, &bad);
    query1("INSERT INTO pg_t VALUES ($1)", "2", 0, &ins);
    ok(wait_all(&bad, 1) && wait_all(&ins, 1), "both callbacks");
    is_int(bad.err, SB_EINVAL, "the lone failing query fails");
    is_int(ins.err, 0, "the next segment's insert commits (%s)", ins.detail);
    sb_pg_get_stats(pg, &after);
    is_int(after.retries - before.retries, 0, "on its first try: it was not in the failed segment");
    query1("SELECT count(*) FROM pg_t WHERE id = 2", NULL, 0, &count);
    ok(wait_all(&count, 1), "count");
    is_str(count.value, "1", "the row is there");
}

/* sb_pg_set_histogram: one observation per segment (transaction), from its Sync to its result — a lone
 * pg_sleep(0.06) past 50 ms, a segment of ten quick queries one observation, a rolled-back one too. */
TEST(timed)
{
    static sb_hist_t h;
    memset(&h, 0, sizeof h);
    sb_pg_set_histogram(pg, &h);
    sb_pg_stats_t before, after;
    sb_pg_get_stats(pg, &before);
    outcome_t slow = {0}, quick[10] = {{0}}, bad = {0};
    query1("SELECT pg_sleep(0.06)", NULL, SB_PG_ALONE, &slow);
    ok(wait_all(&slow, 1) && slow.err == 0, "pg_sleep(0.06) alone (%s)", slow.detail);
    for (int i = 0; i < 10; i++)
        query1("SELECT 1", NULL, 0, &quick[i]);
    ok(wait_all(quick, 10), "ten quick queries, one turn");
    query1("SELECT 1 / 0", NULL, SB_PG_ALONE, &bad);
    ok(wait_all(&bad, 1) && bad.err == SB_EINVAL, "a failing one, alone");
    sb_pg_get_stats(pg, &after);
    sb_pg_set_histogram(pg, NULL);
    long long n = 0, past50 = 0;
    for (unsigned b = 0; b < SB_HIST_BUCKETS; b++) {
        n += (long long)sb_metric_get(&h.buckets[b]);
        past50 += b >= sb_hist_bucket(50000001) ? (long long)sb_metric_get(&h.buckets[b]) : 0;
    }
    is_int(n, (long long)(after.segments - before.segments), "one observation per segment (%lld)", n);
    is_int(n, 3, "three segments: the sleep, the ten, the failure");
    is_int(past50, 1, "the sleep alone took more than 50 ms");
    ok(sb_metric_get(&h.sum_ns) >= 60000000, "the sum holds its 60 ms (%.1f ms)",
       (double)sb_metric_get(&h.sum_ns) / 1e6);
}

TEST(params)
{
    outcome_t u = {0}, n = {0};
    query1("SELECT $1::text", "h\xc3\xa9llo \xf0\x9f\x91\x8b", 0, &u);
    const char *params[1] = {NULL};
    sb_pg_query(pg, "SELECT $1::text", 1, params, 0, on_result, &n);
    ok(wait_all(&u, 1) && wait_all(&n, 1), "callbacks");
    is_str(u.value, "h\xc3\xa9llo \xf0\x9f\x91\x8b", "UTF-8 parameter round trip");
    is_str(n.value, "(null)", "NULL parameter");
}

/* Elements with quotes, backslashes, commas, braces, spaces, the word NULL, an empty string and a real NULL come
 * back from unnest exactly as they went in. */
TEST(array_items)
{
    const char *items[] = {"plain", "a \"quoted\" word", "back\\slash\\", "{braces},comma", " spaced ", "NULL", "",
                           NULL, "h\xc3\xa9"};
    size_t n = sizeof items / sizeof items[0];
    sb_buf_t arr;
    sb_buf_init(&arr);
    for (size_t i = 0; i < n; i++)
        sb_pg_array_item(&arr, items[i]);
    sb_buf_append_str(&arr, SB_STR("}"));
    outcome_t o = {0};
    query1("SELECT string_agg(coalesce(quote_literal(v), '(null)'), '|' ORDER BY i) FROM unnest($1::text[])"
           " WITH ORDINALITY AS u(v, i)",
           sb_buf_cstr(&arr), 0, &o);
    ok(wait_all(&o, 1) && o.err == 0, "array literal accepted (%s)", o.detail);
    is_str(o.value, "'plain'|'a \"quoted\" word'|E'back\\\\slash\\\\'|'{braces},comma'|' spaced '|'NULL'|''|(null)|'h\xc3\xa9'",
           "every element as it was");
    sb_buf_cleanup(&arr);
}

static int ping_calls, ping_err;
static void on_ping(void *arg, int err, const char *detail)
{
    (void)arg, (void)detail;
    ping_calls++;
    ping_err = err;
}

TEST(ping_and_close)
{
    is_int(sb_pg_ping(pg, 1000, on_ping, NULL), 0, "ping sent");
    uint64_t deadline = uv_hrtime() + 3000000000ull;
    while (!ping_calls && uv_hrtime() < deadline)
        uv_run(&loop, UV_RUN_ONCE);
    ok(ping_calls == 1 && ping_err == 0, "ping answered");

    outcome_t pending = {0};
    query1("SELECT pg_sleep(0.5)", NULL, 0, &pending);
    sb_pg_close(pg);
    is_int(pending.calls, 1, "closing calls the pending query back");
    is_int(pending.err, SB_ECANCELED, "with SB_ECANCELED");
    pg = NULL;
    uv_run(&loop, UV_RUN_DEFAULT); /* let the handles close */
    is_int(uv_loop_close(&loop), 0, "every handle closed");
}

TEST(not_connected)
{
    uv_loop_t l2;
    uv_loop_init(&l2);
    sb_pg_t *down = sb_pg_create(&l2, "host=127.0.0.1 port=1 dbname=x user=x connect_timeout=1", "test_pg down");
    outcome_t o = {0};
    is_int(sb_pg_query(down, "SELECT 1", 0, NULL, 0, on_result, &o), SB_EUNAVAIL,
           "query before the connection is up: SB_EUNAVAIL at once");
    is_int(sb_pg_ping(down, 100, on_ping, NULL), SB_EUNAVAIL, "ping likewise");
    titem_t t = {.v = 1, .n = 1};
    is_int(sb_pg_batch_add(down, &tdef, &t), SB_EUNAVAIL, "a batch item likewise");
    is_int(t.calls, 0, "whose done is never called");
    is_int(o.calls, 0, "and no callback");
    sb_pg_close(down);
    uv_run(&l2, UV_RUN_DEFAULT);
    is_int(uv_loop_close(&l2), 0, "a never-connected adapter closes cleanly");
}

/* Fences (sql/0022): a write whose slot has a newer epoch is refused alone (SB_EFENCED), leaving nothing; the other
 * queries of its segment, fenced at current epochs or not fenced, commit on their retry; a batch whose items carry
 * fences is split when one of them is stale. Slots 60100+ are beyond any cluster's (the tests' use 1024). */
static bool fenced_item(const void *item, sb_pg_fence_t *out)
{
    const titem_t *t = item;
    out->slot = 60101;
    out->epoch = t->v == 1 ? 4 : 5; /* the item of value 1 writes as a node the slot has moved away from */
    return true;
}

static const sb_pg_batch_def_t fdef = {
    .what = "fenced test items",
    .sql = TITEM_SQL,
    .ncols = 1,
    .max = 8,
    .row = titem_row,
    .done = titem_done,
    .fence = fenced_item,
};

static int fenced_insert(int id, int32_t slot, int64_t epoch, outcome_t *o)
{
    char v[16];
    snprintf(v, sizeof v, "%d", id);
    const char *params[1] = {v};
    sb_pg_fence_t f = {.slot = slot, .epoch = epoch};
    return sb_pg_query_fenced(pg, "INSERT INTO pg_f VALUES ($1) RETURNING id", 1, params, 0, &f, 1, on_result, o);
}

TEST(fenced)
{
    outcome_t setup[3] = {{0}};
    query1("CREATE TEMP TABLE IF NOT EXISTS pg_f (id int primary key)", NULL, SB_PG_ALONE, &setup[0]);
    query1("DELETE FROM slot_epochs WHERE slot IN (60101, 60102)", NULL, SB_PG_ALONE, &setup[1]);
    query1("SELECT sb_fence_bump(ARRAY[60101, 60102], ARRAY[5, 1]::bigint[])", NULL, SB_PG_ALONE, &setup[2]);
    ok(wait_all(setup, 3) && !setup[0].err && !setup[1].err && !setup[2].err && !strcmp(setup[2].value, "{}"),
       "slot 60101 at epoch 5, 60102 at 1 (%s)", setup[2].detail);

    outcome_t a = {0};
    fenced_insert(1, 60101, 5, &a);
    ok(wait_all(&a, 1) && a.err == 0, "a write at the slot's epoch commits (%s)", a.detail);

    sb_pg_stats_t before, after;
    sb_pg_get_stats(pg, &before);
    outcome_t stale = {0}, other = {0}, plain = {0};
    fenced_insert(2, 60101, 4, &stale);
    fenced_insert(3, 60102, 1, &other);
    query1("INSERT INTO pg_f VALUES ($1) RETURNING id", "4", 0, &plain);
    ok(wait_all(&stale, 1) && wait_all(&other, 1) && wait_all(&plain, 1), "three callbacks");
    is_int(stale.err, SB_EFENCED, "a write at an older epoch: SB_EFENCED (%s)", stale.detail);
    ok(strstr(stale.detail, "SBF01") != NULL, "the server's refusal, SQLSTATE SBF01 (%s)", stale.detail);
    is_int(other.err, 0, "a write for another slot in the same segment commits on its retry (%s)", other.detail);
    is_int(plain.err, 0, "so does an unfenced one (%s)", plain.detail);
    sb_pg_get_stats(pg, &after);
    ok(after.retries - before.retries >= 3, "the segment was taken apart: each sent again alone (%llu)",
       (unsigned long long)(after.retries - before.retries));

    titem_t t[3] = {{.v = 1, .n = 1}, {.v = 2, .n = 1}, {.v = 4, .n = 1}};
    stmts = 0;
    for (int i = 0; i < 3; i++)
        sb_pg_batch_add(pg, &fdef, &t[i]);
    ok(wait_all(t, 3), "a fenced batch: each item answered");
    ok(t[0].err == SB_EFENCED && t[1].err == 0 && t[2].err == 0 && !strcmp(t[1].value, "50") &&
           !strcmp(t[2].value, "25"),
       "split when one item's fence is stale: only that one refused (%d %d %d)", t[0].err, t[1].err, t[2].err);

    outcome_t rows = {0}, clean = {0};
    query1("SELECT string_agg(id::text, ',' ORDER BY id) FROM pg_f", NULL, 0, &rows);
    query1("DELETE FROM slot_epochs WHERE slot IN (60101, 60102)", NULL, SB_PG_ALONE, &clean);
    ok(wait_all(&rows, 1) && wait_all(&clean, 1), "read back");
    is_str(rows.value, "1,3,4", "the refused write left nothing; the others are there");
}

int main(void)
{
    const char *url = getenv("SB_TEST_DATABASE_URL");
    uv_loop_init(&loop);
    pg = sb_pg_create(&loop, url ? url : "host=127.0.0.1 port=5440 dbname=switchboard_test user=switchboard",
                       "test_pg");
    RUN(connect);
    RUN(group_commit);
    RUN(held_while_committing);
    RUN(batch);
    RUN(batch_held_while_committing);
    RUN(batch_refused);
    RUN(batch_cancel);
    RUN(prepared);
    RUN(prepared_survives_rollback);
    RUN(rollback_together);
    RUN(alone_isolates);
    RUN(fenced);
    RUN(timed);
    RUN(params);
    RUN(array_items);
    RUN(ping_and_close);
    RUN(not_connected);
    return tap_done();
}
