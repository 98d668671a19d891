/* PostgreSQL adapter over libpq's asynchronous API; see pg.h for the contract.
 *
 * The socket is watched by a heap-allocated uv_poll_t (libpq may change sockets while connecting, and a poll
 * handle is only freed in its close callback). States: DOWN (a timer will try again), CONNECTING (PQconnectPoll
 * driven by the poll, a timer bounds the attempt), UP (readable always watched, so a server that goes away is
 * noticed even when idle). */
#include "adapters/pg.h"

#include "adapters/deadline.h"

#include "gateway/log.h"
#include "gateway/metrics.h"
#include "proto/err.h"
#include "proto/mem.h"
#include "proto/redact.h"

#include <libpq-fe.h>
#include <string.h>

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define CONNECT_TIMEOUT_MS 5000
#define MAX_PREPARED 64
#define MAX_BATCHES 8 /* batch kinds per connection */
#define BATCH_COLS 24

enum state { DOWN, CONNECTING, UP };

typedef struct query {
    struct query *next;
    uint64_t seg;          /* the segment (transaction) it was sent in */
    uint64_t synced_ns;    /* the last query of a segment: uv_hrtime() when its Sync was sent (0: not timed) */
    int flags;
    int prepares;          /* internal: the result of preparing statement [prepares - 1]; no callback */
    bool fence_stmt;       /* internal: the segment's sb_fence check; no callback */
    sb_pg_fence_t *fences; /* the slots its writer must still own when it commits (sb_pg_query_fenced) */
    size_t nfences;
    bool sql_static;       /* sql is the caller's static string (SB_PG_PREPARED), not a copy */
    sb_pg_query_cb cb;
    void *arg;
    PGresult *res;
    int err;
    bool have_result;
    char detail[256];
    /* what it takes to send it again, alone, if another statement's failure rolls its segment back */
    char *sql;
    char **params;
    int nparams;
} query_t;

struct sb_pg {
    uv_loop_t *loop;
    PGconn *conn;
    uv_poll_t *poll;
    int poll_fd;
    int poll_events;
    uv_timer_t timer;
    uv_prepare_t prepare; /* closes the open segment before the loop blocks */
    char *conninfo, *name;
    enum state state;
    uint64_t backoff_ms;
    bool closing, logged_down, ever_up;
    bool seg_open;        /* queries were sent since the last Sync */
    uint64_t seg;         /* id of the open (or next) segment */
    query_t *q_head, *q_tail; /* sent, waiting for their segment's Sync, oldest first */
    query_t *cur;             /* the oldest query still waiting for its result */
    query_t *held_head, *held_tail; /* not sent yet: they wait for the segment in flight to commit */
    unsigned inflight;        /* segments synced and not yet finished */
    sb_pg_fence_t *segf;      /* the fences of the open segment's queries, one per slot (the lowest epoch) */
    size_t nsegf, capsegf;
    const char *prepared[MAX_PREPARED]; /* SB_PG_PREPARED statements of this connection: "s<index>" */
    int nprepared;
    int open_handles;
    struct batch {
        const sb_pg_batch_def_t *def;
        void **items; /* waiting: [head, n), in arrival order */
        size_t head, n, cap;
    } batches[MAX_BATCHES]; /* in the order their kinds were first added */
    int nbatches;
    sb_hist_t *hist;          /* segment round trips (sb_pg_set_histogram); NULL: not timed */
    sb_pg_stats_t stats;
};

static void schedule_retry(sb_pg_t *pg);
static void on_prepare(uv_prepare_t *h);
static void on_poll(uv_poll_t *h, int status, int events);
static void on_timer(uv_timer_t *t);

/* ---- socket watching ------------------------------------------------------------------------------------------ */

static void poll_closed(uv_handle_t *h)
{
    free(h);
}

static void unwatch(sb_pg_t *pg)
{
    if (pg->poll) {
        uv_poll_stop(pg->poll);
        uv_close((uv_handle_t *)pg->poll, poll_closed);
        pg->poll = NULL;
        pg->poll_fd = -1;
    }
}

static void watch(sb_pg_t *pg, int events)
{
    int fd = PQsocket(pg->conn);
    if (pg->poll && pg->poll_fd != fd)
        unwatch(pg);
    if (!pg->poll) {
        pg->poll = sb_malloc(sizeof *pg->poll);
        if (uv_poll_init(pg->loop, pg->poll, fd) != 0) {
            free(pg->poll);
            pg->poll = NULL;
            return;
        }
        pg->poll->data = pg;
        pg->poll_fd = fd;
        pg->poll_events = 0;
    }
    if (events != pg->poll_events) {
        uv_poll_start(pg->poll, events, on_poll);
        pg->poll_events = events;
    }
}

/* ---- queries -------------------------------------------------------------------------------------------------- */

static void query_free(query_t *q)
{
    PQclear(q->res);
    free(q->fences);
    for (int i = 0; i < q->nparams && q->params; i++)
        free(q->params[i]);
    free(q->params);
    if (!q->sql_static)
        free(q->sql);
    free(q);
}

static void query_finish(sb_pg_t *pg, query_t *q)
{
    if (q->fence_stmt) {
        query_free(q);
        return;
    }
    if (q->prepares) { /* a PREPARE that failed (or was aborted with its segment) is made again next time */
        if (q->err && pg->prepared[q->prepares - 1])
            pg->prepared[q->prepares - 1] = NULL;
        query_free(q);
        return;
    }
    pg->stats.queries++;
    q->cb(q->arg, q->err, q->detail[0] ? q->detail : (q->err ? sb_strerror(q->err) : "ok"), q->res);
    query_free(q);
}

static int send_query(sb_pg_t *pg, query_t *q, const char *sql, int nparams, const char *const *params, int flags);
static void enqueue(sb_pg_t *pg, query_t *q);
static int prepared_index(sb_pg_t *pg, const char *sql, int nparams);

/* Fails every query sent and not yet finished, and every query held back (connection lost or closing). */
static void fail_all(sb_pg_t *pg, int err, const char *detail)
{
    query_t *q = pg->q_head;
    if (pg->q_tail)
        pg->q_tail->next = pg->held_head;
    else
        q = pg->held_head;
    pg->q_head = pg->q_tail = pg->cur = pg->held_head = pg->held_tail = NULL;
    pg->seg_open = false;
    pg->nsegf = 0;
    pg->inflight = 0;
    if (pg->nbatches && !pg->closing) /* what waits in batches learns of the loss from their statements */
        uv_prepare_start(&pg->prepare, on_prepare);
    while (q) {
        query_t *next = q->next;
        PQclear(q->res);
        q->res = NULL;
        q->err = err;
        snprintf(q->detail, sizeof q->detail, "%s", detail);
        query_finish(pg, q);
        q = next;
    }
}

static void release_held(sb_pg_t *pg);

/* The Sync of the oldest segment arrived: its transaction committed, or rolled back if a statement failed. Then
 * what was held back meanwhile goes out, as the next segment. */
static void finish_segment(sb_pg_t *pg)
{
    if (pg->inflight)
        pg->inflight--;
    if (!pg->q_head) {
        release_held(pg);
        return;
    }
    uint64_t seg = pg->q_head->seg;
    bool failed = false;
    const query_t *last = NULL, *fence = NULL;
    query_t *only = NULL; /* the segment's one user query, if it has exactly one */
    size_t users = 0;
    for (query_t *q = pg->q_head; q && q->seg == seg; q = q->next) {
        last = q;
        failed |= q->err != 0;
        if (q->fence_stmt && q->err == SB_EINVAL)
            fence = q;
        if (!q->fence_stmt && !q->prepares && users++ == 0)
            only = q;
        if (q->prepares && q->err == SB_EINVAL && q->next && q->next->seg == seg) {
            /* the statement could not be prepared: that is its user's error (the one right after it), not a
             * rollback; hand it the server's message and result */
            query_t *u = q->next;
            PQclear(u->res);
            u->res = q->res;
            q->res = NULL;
            u->err = SB_EINVAL;
            memcpy(u->detail, q->detail, sizeof u->detail);
        }
    }
    if (fence && users == 1 && only->nfences && !only->err) {
        /* refused alone by its fence: that is its own outcome, not a rollback to retry */
        const char *state = fence->res ? PQresultErrorField(fence->res, PG_DIAG_SQLSTATE) : NULL;
        only->err = state && !strcmp(state, "SBF01") ? SB_EFENCED : SB_EINVAL;
        memcpy(only->detail, fence->detail, sizeof only->detail);
    }
    if (pg->hist && last && last->synced_ns) /* before the callbacks: the round trip, not what they cost */
        sb_hist_observe(pg->hist, uv_hrtime() - last->synced_ns);
    while (pg->q_head && pg->q_head->seg == seg) {
        query_t *q = pg->q_head;
        pg->q_head = q->next;
        if (!pg->q_head)
            pg->q_tail = NULL;
        if (pg->cur == q)
            pg->cur = q->next;
        if (!q->have_result && !q->err) { /* cannot happen with a sane server; do not report success */
            q->err = SB_EUNAVAIL;
            snprintf(q->detail, sizeof q->detail, "no result before the segment ended");
        }
        if (failed && !q->err && !q->prepares && !q->fence_stmt) {
            /* (a PREPARE that succeeded stays: the server keeps a prepared statement when the transaction around it
             * rolls back, so forgetting it would make the next PREPARE fail with "already exists") */
            q->err = SB_EAGAIN;
            snprintf(q->detail, sizeof q->detail, "rolled back with its batch");
            PQclear(q->res);
            q->res = NULL;
        }
        if (q->err == SB_EAGAIN && pg->state == UP && !q->prepares && !q->fence_stmt) { /* again, alone */
            q->next = NULL;
            q->err = 0;
            q->have_result = false;
            q->detail[0] = '\0';
            PQclear(q->res);
            q->res = NULL;
            pg->stats.retries++;
            if (send_query(pg, q, q->sql, q->nparams, (const char *const *)q->params, SB_PG_ALONE) == 0)
                continue;
            q->err = SB_EAGAIN;
            snprintf(q->detail, sizeof q->detail, "rolled back with its batch; could not send it again");
        }
        query_finish(pg, q);
    }
    release_held(pg);
}

static void flush(sb_pg_t *pg)
{
    int f = PQflush(pg->conn);
    if (f < 0)
        return; /* the read side will notice the broken connection */
    watch(pg, f == 1 ? UV_READABLE | UV_WRITABLE : UV_READABLE);
}

static void send_fence(sb_pg_t *pg);

static void close_segment(sb_pg_t *pg)
{
    if (!pg->seg_open)
        return;
    if (pg->nsegf)
        send_fence(pg);
    pg->seg_open = false;
    pg->seg++;
    pg->inflight++;
    pg->stats.segments++;
    if (pg->q_tail) /* seg_open: the tail is this segment's last query */
        pg->q_tail->synced_ns = pg->hist ? uv_hrtime() : 0;
    if (!PQpipelineSync(pg->conn))
        sb_log_warn("postgres: cannot send Sync: %s", PQerrorMessage(pg->conn));
    flush(pg);
}

static void send_batches(sb_pg_t *pg);

static void on_prepare(uv_prepare_t *h)
{
    sb_pg_t *pg = h->data;
    uv_prepare_stop(h);
    if (!pg->inflight) /* while one commits, the batches wait for release_held */
        send_batches(pg);
    if (pg->state == UP)
        close_segment(pg);
}

static void kick(sb_pg_t *pg)
{
    if (!pg->closing)
        uv_prepare_start(&pg->prepare, on_prepare);
}

/* Adds fences to the open segment's: one per slot, the lowest epoch (a stale writer among current ones fails the
 * check, and the retries alone find it). */
static void seg_fences_add(sb_pg_t *pg, const sb_pg_fence_t *f, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        size_t j = 0;
        while (j < pg->nsegf && pg->segf[j].slot != f[i].slot)
            j++;
        if (j < pg->nsegf) {
            if (f[i].epoch < pg->segf[j].epoch)
                pg->segf[j].epoch = f[i].epoch;
            continue;
        }
        if (pg->nsegf == pg->capsegf) {
            pg->capsegf = pg->capsegf ? pg->capsegf * 2 : 16;
            pg->segf = sb_realloc(pg->segf, pg->capsegf * sizeof *pg->segf);
        }
        pg->segf[pg->nsegf++] = f[i];
    }
}

static const char fence_sql[] = "SELECT sb_fence($1::integer[], $2::bigint[])";

/* Ends the open segment's statements with the check of its fences (sql/0022), which refuses the transaction if a
 * newer owner took one of its slots. An internal query: no callback; its failure fails the segment. */
static void send_fence(sb_pg_t *pg)
{
    sb_buf_t slots, epochs;
    sb_buf_init(&slots);
    sb_buf_init(&epochs);
    for (size_t i = 0; i < pg->nsegf; i++) {
        sb_buf_printf(&slots, "%s%d", i ? "," : "{", (int)pg->segf[i].slot);
        sb_buf_printf(&epochs, "%s%lld", i ? "," : "{", (long long)pg->segf[i].epoch);
    }
    sb_buf_append_str(&slots, SB_STR("}"));
    sb_buf_append_str(&epochs, SB_STR("}"));
    pg->nsegf = 0;
    const char *params[2] = {sb_buf_cstr(&slots), sb_buf_cstr(&epochs)};
    char name[16];
    int idx = prepared_index(pg, fence_sql, 2);
    if (idx >= 0) {
        snprintf(name, sizeof name, "s%d", idx);
        if (PQsendQueryPrepared(pg->conn, name, 2, params, NULL, NULL, 0)) {
            query_t *q = sb_calloc(1, sizeof *q);
            q->fence_stmt = true;
            enqueue(pg, q);
        } else {
            idx = -1;
        }
    }
    if (idx < 0) /* the segment cannot be checked: it must not commit (a statement that fails rolls it back) */
        sb_log_error("postgres: cannot send the fence check: %s", PQerrorMessage(pg->conn));
    sb_buf_cleanup(&slots);
    sb_buf_cleanup(&epochs);
}

/* Sends q's statement and queues q. Returns 0, or SB_EINVAL when libpq refuses (q is not queued). */
static int send_query(sb_pg_t *pg, query_t *q, const char *sql, int nparams, const char *const *params, int flags)
{
    q->flags = flags;
    if (flags & SB_PG_ALONE)
        close_segment(pg);
    int sent;
    if (flags & SB_PG_PREPARED) {
        char name[16];
        int idx = prepared_index(pg, sql, nparams);
        if (idx < 0)
            return SB_EINVAL;
        snprintf(name, sizeof name, "s%d", idx);
        sent = PQsendQueryPrepared(pg->conn, name, nparams, params, NULL, NULL, 0);
    } else {
        sent = PQsendQueryParams(pg->conn, sql, nparams, NULL, params, NULL, NULL, 0);
    }
    if (!sent) {
        sb_log_warn("postgres: cannot send a query: %s [%.80s]", PQerrorMessage(pg->conn), sql ? sql : "(null)");
        return SB_EINVAL;
    }
    enqueue(pg, q);
    seg_fences_add(pg, q->fences, q->nfences);
    pg->seg_open = true;
    if (flags & SB_PG_ALONE)
        close_segment(pg);
    else
        uv_prepare_start(&pg->prepare, on_prepare);
    return 0;
}

static void enqueue(sb_pg_t *pg, query_t *q)
{
    q->seg = pg->seg;
    if (pg->q_tail)
        pg->q_tail->next = q;
    else
        pg->q_head = q;
    pg->q_tail = q;
    if (!pg->cur)
        pg->cur = q;
}

/* The index of sql's prepared statement on this connection, preparing it first (into the current segment) if it
 * is new. Returns -1 when libpq refuses to send the PREPARE, or when the table is full. */
static int prepared_index(sb_pg_t *pg, const char *sql, int nparams)
{
    int free_slot = -1;
    for (int i = 0; i < pg->nprepared; i++) {
        if (pg->prepared[i] == sql)
            return i;
        if (!pg->prepared[i] && free_slot < 0)
            free_slot = i;
    }
    if (free_slot < 0) {
        if (pg->nprepared == MAX_PREPARED)
            return -1;
        free_slot = pg->nprepared++;
    }
    char name[16];
    snprintf(name, sizeof name, "s%d", free_slot);
    if (!PQsendPrepare(pg->conn, name, sql, nparams, NULL))
        return -1;
    query_t *p = sb_calloc(1, sizeof *p);
    p->prepares = free_slot + 1;
    enqueue(pg, p);
    pg->prepared[free_slot] = sql;
    pg->stats.prepares++;
    return free_slot;
}

static void keep_copy(query_t *q, const char *sql, int nparams, const char *const *params)
{
    q->sql_static = q->flags & SB_PG_PREPARED; /* its address names the prepared statement */
    q->sql = q->sql_static ? (char *)sql : sb_strdup(sql);
    q->nparams = nparams;
    q->params = nparams ? sb_calloc((size_t)nparams, sizeof *q->params) : NULL;
    for (int i = 0; i < nparams; i++)
        q->params[i] = params[i] ? sb_strdup(params[i]) : NULL;
}

/* The segment in flight finished: sends what was held back, as one segment (or more, for SB_PG_ALONE queries). */
static void release_held(sb_pg_t *pg)
{
    if (!pg->inflight && pg->state == UP)
        send_batches(pg); /* sent now or joining the held list: this segment either way */
    query_t *q = pg->held_head;
    pg->held_head = pg->held_tail = NULL;
    while (q) {
        query_t *next = q->next;
        q->next = NULL;
        if (pg->state != UP || send_query(pg, q, q->sql, q->nparams, (const char *const *)q->params, q->flags) < 0) {
            q->err = pg->state != UP ? SB_EUNAVAIL : SB_EINVAL;
            snprintf(q->detail, sizeof q->detail, "%s", pg->state != UP ? "connection lost" : "could not send");
            query_finish(pg, q);
        }
        q = next;
    }
    if (pg->state == UP)
        close_segment(pg);
}

/* Sends q (its copy of sql and params made), or holds it back while a segment commits. */
static int query_submit(sb_pg_t *pg, query_t *q)
{
    if (pg->inflight || pg->held_head) {
        /* Group commit: a segment is committing. Everything that arrives meanwhile waits and goes out as the next
         * segment, so one fsync covers all of it instead of one each. */
        if (pg->held_tail)
            pg->held_tail->next = q;
        else
            pg->held_head = q;
        pg->held_tail = q;
        pg->stats.held++;
        return 0;
    }
    int rc = send_query(pg, q, q->sql, q->nparams, (const char *const *)q->params, q->flags);
    if (rc < 0)
        query_free(q);
    return rc;
}

static void keep_fences(query_t *q, const sb_pg_fence_t *fences, size_t n)
{
    if (!n)
        return;
    q->fences = sb_malloc(n * sizeof *fences);
    memcpy(q->fences, fences, n * sizeof *fences);
    q->nfences = n;
}

int sb_pg_query_fenced(sb_pg_t *pg, const char *sql, int nparams, const char *const *params, int flags,
                       const sb_pg_fence_t *fences, size_t nfences, sb_pg_query_cb cb, void *arg)
{
    if (!pg || pg->state != UP || pg->closing)
        return SB_EUNAVAIL;
    query_t *q = sb_calloc(1, sizeof *q);
    q->cb = cb;
    q->arg = arg;
    q->flags = flags;
    keep_copy(q, sql, nparams, params);
    keep_fences(q, fences, nfences);
    return query_submit(pg, q);
}

int sb_pg_query(sb_pg_t *pg, const char *sql, int nparams, const char *const *params, int flags, sb_pg_query_cb cb,
                void *arg)
{
    return sb_pg_query_fenced(pg, sql, nparams, params, flags, NULL, 0, cb, arg);
}

/* sb_pg_query for a static prepared statement whose parameters are the caller's heap strings, taken over (a batch's
 * arrays, megabytes in a busy turn: copied once less). They are freed in every case. */
static int query_owned(sb_pg_t *pg, const char *sql, int nparams, char **params, const sb_pg_fence_t *fences,
                       size_t nfences, sb_pg_query_cb cb, void *arg)
{
    if (!pg || pg->state != UP || pg->closing) {
        for (int i = 0; i < nparams; i++)
            free(params[i]);
        return SB_EUNAVAIL;
    }
    query_t *q = sb_calloc(1, sizeof *q);
    q->cb = cb;
    q->arg = arg;
    q->flags = SB_PG_PREPARED;
    q->sql_static = true;
    q->sql = (char *)sql;
    q->nparams = nparams;
    q->params = sb_malloc((size_t)nparams * sizeof *q->params);
    memcpy(q->params, params, (size_t)nparams * sizeof *params);
    keep_fences(q, fences, nfences);
    return query_submit(pg, q);
}

static void lost(sb_pg_t *pg, const char *why)
{
    char detail[256];
    snprintf(detail, sizeof detail, "%s", why);
    size_t n = strlen(detail);
    while (n && (detail[n - 1] == '\n' || detail[n - 1] == ' '))
        detail[--n] = '\0';
    sb_log_warn("postgres: connection lost: %s", detail);
    pg->logged_down = true;
    unwatch(pg);
    PQfinish(pg->conn);
    pg->conn = NULL;
    fail_all(pg, SB_EUNAVAIL, "connection lost");
    schedule_retry(pg);
}

/* Takes every result libpq can give without blocking. Each query yields exactly one result (no multi-statement
 * strings in pipeline mode), the NULLs between them are separators, and a PIPELINE_SYNC result ends a segment. */
/* A refused statement's detail, as callbacks and logs see it: its SQLSTATE and the server's primary message, never
 * PQresultErrorMessage's DETAIL ("Failing row contains (...)", "Key (address)=(...)" quote the row: a body, a
 * number). A data exception's message quotes the value after a colon, so that part goes too; numbers left anywhere
 * are masked (sb_redact_text). */
static void error_detail(char *out, size_t size, const PGresult *res)
{
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    if (!msg)
        msg = "no message";
    size_t keep = strlen(msg);
    if (state && state[0] == '2' && state[1] == '2') {
        const char *colon = strchr(msg, ':');
        if (colon)
            keep = (size_t)(colon - msg);
    }
    int n = snprintf(out, size, "SQLSTATE %s: %.*s", state ? state : "?????", (int)keep, msg);
    size_t len = n < 0 ? 0 : (size_t)n < size ? (size_t)n : size - 1;
    len = sb_redact_text(out, len);
    out[len] = '\0';
}

static void read_results(sb_pg_t *pg)
{
    if (!PQconsumeInput(pg->conn) || PQstatus(pg->conn) == CONNECTION_BAD) {
        lost(pg, PQerrorMessage(pg->conn));
        return;
    }
    int nulls = 0;
    while (pg->q_head && !PQisBusy(pg->conn)) {
        PGresult *res = PQgetResult(pg->conn);
        if (!res) {
            if (++nulls > 1)
                break; /* nothing more for now */
            continue;
        }
        nulls = 0;
        ExecStatusType st = PQresultStatus(res);
        if (st == PGRES_PIPELINE_SYNC) {
            PQclear(res);
            finish_segment(pg);
            continue;
        }
        query_t *q = pg->cur;
        if (!q) { /* a result nobody asked for */
            PQclear(res);
            continue;
        }
        pg->cur = q->next;
        q->have_result = true;
        if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK) {
            q->res = res;
        } else if (st == PGRES_PIPELINE_ABORTED) {
            q->err = SB_EAGAIN;
            snprintf(q->detail, sizeof q->detail, "rolled back with its batch");
            PQclear(res);
        } else {
            q->err = SB_EINVAL;
            error_detail(q->detail, sizeof q->detail, res);
            q->res = res;
        }
    }
    PGnotify *n;
    while ((n = PQnotifies(pg->conn)))
        PQfreemem(n);
}

/* ---- connecting ----------------------------------------------------------------------------------------------- */

static void connect_step(sb_pg_t *pg)
{
    switch (PQconnectPoll(pg->conn)) {
    case PGRES_POLLING_READING:
        watch(pg, UV_READABLE);
        return;
    case PGRES_POLLING_WRITING:
        watch(pg, UV_WRITABLE);
        return;
    case PGRES_POLLING_OK:
        uv_timer_stop(&pg->timer);
        if (PQsetnonblocking(pg->conn, 1) != 0 || !PQenterPipelineMode(pg->conn)) {
            lost(pg, PQerrorMessage(pg->conn));
            return;
        }
        if (pg->ever_up)
            pg->stats.reconnects++;
        pg->ever_up = true;
        pg->state = UP;
        memset(pg->prepared, 0, sizeof pg->prepared); /* a new session: nothing is prepared on it */
        pg->nprepared = 0;
        pg->backoff_ms = BACKOFF_MIN_MS;
        pg->logged_down = false;
        sb_log_info("postgres: connected");
        watch(pg, UV_READABLE);
        return;
    default:
        if (!pg->logged_down)
            sb_log_warn("postgres: connect failed: %s", PQerrorMessage(pg->conn));
        pg->logged_down = true;
        uv_timer_stop(&pg->timer);
        unwatch(pg);
        PQfinish(pg->conn);
        pg->conn = NULL;
        schedule_retry(pg);
        return;
    }
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    sb_pg_t *pg = h->data;
    if (pg->closing || !pg->conn)
        return;
    if (pg->state == CONNECTING) {
        connect_step(pg);
        return;
    }
    if (status < 0) {
        lost(pg, uv_strerror(status));
        return;
    }
    if (events & UV_WRITABLE) {
        int f = PQflush(pg->conn);
        if (f < 0) {
            lost(pg, PQerrorMessage(pg->conn));
            return;
        }
        if (f == 0)
            watch(pg, UV_READABLE);
    }
    if (events & UV_READABLE)
        read_results(pg);
}

static void try_connect(sb_pg_t *pg)
{
    /* application_name and options first: a conninfo that names its own wins (later keywords override earlier ones).
     * TimeZone UTC: timestamps come back as the actors write them into events ("...+00:00"). No JIT: every statement
     * here is short, and compiling one costs more than it saves (a sweep's estimate once crossed jit_above_cost and
     * spent its time compiling). */
    const char *const keys[] = {"application_name", "options", "dbname", NULL};
    const char *const vals[] = {pg->name, "-c TimeZone=UTC -c jit=off", pg->conninfo, NULL};
    pg->conn = PQconnectStartParams(keys, vals, 1);
    if (!pg->conn || PQstatus(pg->conn) == CONNECTION_BAD) {
        if (!pg->logged_down)
            sb_log_warn("postgres: cannot start connecting: %s",
                        pg->conn ? PQerrorMessage(pg->conn) : "out of memory");
        pg->logged_down = true;
        PQfinish(pg->conn);
        pg->conn = NULL;
        schedule_retry(pg);
        return;
    }
    pg->state = CONNECTING;
    uv_timer_start(&pg->timer, on_timer, CONNECT_TIMEOUT_MS, 0);
    watch(pg, UV_WRITABLE);
}

static void on_timer(uv_timer_t *t)
{
    sb_pg_t *pg = t->data;
    if (pg->state == CONNECTING) {
        if (!pg->logged_down)
            sb_log_warn("postgres: connect timed out");
        pg->logged_down = true;
        unwatch(pg);
        PQfinish(pg->conn);
        pg->conn = NULL;
        schedule_retry(pg);
        return;
    }
    try_connect(pg);
}

static void schedule_retry(sb_pg_t *pg)
{
    pg->state = DOWN;
    if (pg->closing)
        return;
    uv_timer_start(&pg->timer, on_timer, pg->backoff_ms, 0);
    pg->backoff_ms = pg->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : pg->backoff_ms * 2;
}

sb_pg_t *sb_pg_create(uv_loop_t *loop, const char *conninfo, const char *name)
{
    sb_pg_t *pg = sb_calloc(1, sizeof *pg);
    pg->loop = loop;
    pg->conninfo = sb_strdup(conninfo);
    pg->name = sb_strdup(name);
    pg->poll_fd = -1;
    pg->backoff_ms = BACKOFF_MIN_MS;
    uv_timer_init(loop, &pg->timer);
    pg->timer.data = pg;
    uv_prepare_init(loop, &pg->prepare);
    pg->prepare.data = pg;
    pg->open_handles = 2;
    try_connect(pg);
    return pg;
}

static void pg_handle_closed(uv_handle_t *h)
{
    sb_pg_t *pg = h->data;
    if (--pg->open_handles == 0) {
        for (int i = 0; i < pg->nbatches; i++)
            free(pg->batches[i].items);
        free(pg->segf);
        free(pg->conninfo);
        free(pg->name);
        free(pg);
    }
}

void sb_pg_close(sb_pg_t *pg)
{
    if (!pg)
        return;
    pg->closing = true; /* from here on nothing is added: what callbacks would add now is refused */
    for (int i = 0; i < pg->nbatches; i++)
        sb_pg_batch_cancel(pg, pg->batches[i].def);
    fail_all(pg, SB_ECANCELED, "closing");
    unwatch(pg);
    if (pg->conn)
        PQfinish(pg->conn);
    pg->conn = NULL;
    pg->state = DOWN;
    uv_close((uv_handle_t *)&pg->timer, pg_handle_closed);
    uv_close((uv_handle_t *)&pg->prepare, pg_handle_closed);
}

bool sb_pg_connected(const sb_pg_t *pg)
{
    return pg && pg->state == UP;
}

void sb_pg_set_histogram(sb_pg_t *pg, sb_hist_t *h)
{
    pg->hist = h;
}

void sb_pg_get_stats(const sb_pg_t *pg, sb_pg_stats_t *out)
{
    *out = pg->stats;
}

/* ---- batches -------------------------------------------------------------------------------------------------- */

typedef struct batch_op {
    sb_pg_t *pg;
    const sb_pg_batch_def_t *def;
    size_t n;
    void *items[];
} batch_op_t;

static size_t batch_count(const sb_pg_batch_def_t *def, const void *item)
{
    return def->count ? def->count(item) : 1;
}

static void batch_send(sb_pg_t *pg, const sb_pg_batch_def_t *def, void *const *items, size_t n);

static void batch_done(void *arg, int err, const char *detail, const PGresult *res)
{
    batch_op_t *op = arg;
    if ((err == SB_EINVAL || err == SB_EFENCED) && op->n > 1) { /* one of them is refused: each on its own */
        sb_log_warn("postgres: a batch of %zu %s was refused (%s); sending each alone", op->n, op->def->what, detail);
        for (size_t i = 0; i < op->n; i++)
            batch_send(op->pg, op->def, &op->items[i], 1);
    } else {
        op->def->done(op->items, op->n, err, detail, res);
    }
    free(op);
}

/* Sends items[0..n) (copied) as one statement. */
static void batch_send(sb_pg_t *pg, const sb_pg_batch_def_t *def, void *const *items, size_t n)
{
    batch_op_t *op = sb_malloc(sizeof *op + n * sizeof op->items[0]);
    op->pg = pg;
    op->def = def;
    op->n = n;
    memcpy(op->items, items, n * sizeof items[0]);
    int nc = def->ncols;
    SB_BUG_ON(nc < 1 || nc > BATCH_COLS);
    const char *v[BATCH_COLS], *params[BATCH_COLS];
    char num[BATCH_COLS][24];
    sb_buf_t col[BATCH_COLS];
    const char *sql = def->sql;
    if (def->sql_one && n == 1 && batch_count(def, items[0]) == 1) {
        def->row(items[0], 0, params, num);
        sql = def->sql_one;
    } else {
        for (int c = 0; c < nc; c++)
            sb_buf_init(&col[c]);
        for (size_t i = 0; i < n; i++) {
            for (size_t k = 0, m = batch_count(def, items[i]); k < m; k++) {
                def->row(items[i], k, v, num);
                for (int c = 0; c < nc; c++)
                    sb_pg_array_item(&col[c], v[c]);
            }
        }
        for (int c = 0; c < nc; c++) {
            sb_buf_append_str(&col[c], SB_STR("}"));
            params[c] = sb_buf_cstr(&col[c]);
        }
    }
    sb_pg_fence_t *fences = NULL;
    size_t nf = 0;
    for (size_t i = 0; def->fence && i < n; i++) {
        sb_pg_fence_t f;
        if (!def->fence(items[i], &f))
            continue;
        if (!fences)
            fences = sb_malloc(n * sizeof *fences);
        fences[nf++] = f; /* repeats are folded per segment (seg_fences_add) */
    }
    int rc;
    if (sql == def->sql) { /* the arrays' buffers go to the query as they are */
        char *owned[BATCH_COLS];
        for (int c = 0; c < nc; c++) {
            owned[c] = col[c].p;
            sb_buf_init(&col[c]);
        }
        rc = query_owned(pg, sql, nc, owned, fences, nf, batch_done, op);
    } else {
        rc = sb_pg_query_fenced(pg, sql, nc, params, SB_PG_PREPARED, fences, nf, batch_done, op);
    }
    free(fences);
    if (rc < 0)
        batch_done(op, SB_EUNAVAIL, "the database is not reachable", NULL);
}

/* Sends what waits, def->max elements a statement. What the callbacks add meanwhile joins the end and goes too. */
static void batch_flush(sb_pg_t *pg, struct batch *b)
{
    while (b->head < b->n) {
        size_t k = 0, elements = 0;
        while (b->head + k < b->n) {
            size_t c = batch_count(b->def, b->items[b->head + k]);
            if (k && elements + c > b->def->max)
                break;
            elements += c;
            k++;
        }
        size_t first = b->head;
        b->head += k;
        batch_send(pg, b->def, &b->items[first], k);
    }
    b->head = b->n = 0;
}

static void send_batches(sb_pg_t *pg)
{
    for (int i = 0; i < pg->nbatches && !pg->closing; i++)
        batch_flush(pg, &pg->batches[i]);
}

static struct batch *batch_of(sb_pg_t *pg, const sb_pg_batch_def_t *def)
{
    for (int i = 0; i < pg->nbatches; i++)
        if (pg->batches[i].def == def)
            return &pg->batches[i];
    return NULL;
}

int sb_pg_batch_add(sb_pg_t *pg, const sb_pg_batch_def_t *def, void *item)
{
    if (!sb_pg_connected(pg) || pg->closing)
        return SB_EUNAVAIL;
    struct batch *b = batch_of(pg, def);
    if (!b) {
        if (pg->nbatches == MAX_BATCHES)
            return SB_ENOSPC;
        b = &pg->batches[pg->nbatches++];
        *b = (struct batch){.def = def};
    }
    if (b->n == b->cap) {
        b->cap = b->cap ? 2 * b->cap : 64;
        b->items = sb_realloc(b->items, b->cap * sizeof b->items[0]);
    }
    b->items[b->n++] = item;
    kick(pg);
    return 0;
}

void sb_pg_batch_flush(sb_pg_t *pg, const sb_pg_batch_def_t *def)
{
    struct batch *b = batch_of(pg, def);
    if (b)
        batch_flush(pg, b);
}

void sb_pg_batch_cancel(sb_pg_t *pg, const sb_pg_batch_def_t *def)
{
    struct batch *b = batch_of(pg, def);
    if (!b || b->head == b->n)
        return;
    size_t first = b->head, n = b->n - first;
    void **items = sb_malloc(n * sizeof items[0]);
    memcpy(items, &b->items[first], n * sizeof items[0]);
    b->head = b->n = 0;
    def->done(items, n, SB_ECANCELED, "stopping", NULL);
    free(items);
}

/* ---- ping: a query with a deadline ---------------------------------------------------------------------------- */

static void ping_done(void *arg, int err, const char *detail, const PGresult *res)
{
    (void)res;
    sb_deadline_answer(arg, err, detail);
}

int sb_pg_ping(sb_pg_t *pg, uint64_t timeout_ms, sb_pg_ping_cb cb, void *arg)
{
    sb_deadline_t *d = sb_deadline_start(pg->loop, timeout_ms, cb, arg);
    int rc = sb_pg_query(pg, "SELECT 1", 0, NULL, SB_PG_ALONE, ping_done, d);
    if (rc < 0)
        sb_deadline_cancel(d);
    return rc;
}

void sb_pg_array_item(sb_buf_t *b, const char *v)
{
    if (!v) {
        sb_buf_append_str(b, b->len ? SB_STR(",NULL") : SB_STR("{NULL"));
        return;
    }
    /* written in place, room made once for the worst case (every byte escaped): the batches of a busy loop turn
     * quote megabytes, JSON full of quotes among them */
    size_t n = strlen(v);
    sb_buf_reserve(b, 2 * n + 3);
    char *w = b->p + b->len;
    *w++ = b->len ? ',' : '{';
    *w++ = '"';
    for (size_t i = 0; i < n; i++) {
        if (v[i] == '"' || v[i] == '\\')
            *w++ = '\\';
        *w++ = v[i];
    }
    *w++ = '"';
    b->len = (size_t)(w - b->p);
    b->p[b->len] = '\0';
}
