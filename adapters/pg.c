/* PostgreSQL adapter over libpq's asynchronous API; see pg.h for the contract.
 *
 * The socket is watched by a heap-allocated uv_poll_t (libpq may change sockets while connecting, and a poll
 * handle is only freed in its close callback). States: DOWN (a timer will try again), CONNECTING (PQconnectPoll
 * driven by the poll, a timer bounds the attempt), UP (readable always watched, so a server that goes away is
 * noticed even when idle). */
#include "adapters/pg.h"

#include "gateway/log.h"
#include "proto/err.h"
#include "proto/mem.h"

#include <libpq-fe.h>
#include <string.h>

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define CONNECT_TIMEOUT_MS 5000

enum state { DOWN, CONNECTING, UP };

typedef struct query {
    struct query *next;
    const char *sql;
    void (*done)(struct query *q, int err, const char *detail);
    void *arg;
    /* for pings */
    sb_pg_ping_cb cb;
    uv_timer_t timer;
    bool answered, in_queue, timer_open;
} query_t;

struct sb_pg {
    uv_loop_t *loop;
    PGconn *conn;
    uv_poll_t *poll;
    int poll_fd;
    int poll_events;
    uv_timer_t timer;
    char *conninfo;
    enum state state;
    uint64_t backoff_ms;
    bool closing, logged_down;
    bool sent; /* the head query has been sent and awaits its results */
    int head_err;
    char head_detail[128];
    query_t *q_head, *q_tail;
};

static void schedule_retry(sb_pg_t *pg);
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

static void finish_head(sb_pg_t *pg, int err, const char *detail)
{
    query_t *q = pg->q_head;
    pg->q_head = q->next;
    if (!pg->q_head)
        pg->q_tail = NULL;
    pg->sent = false;
    q->in_queue = false;
    q->done(q, err, detail);
}

static void fail_all(sb_pg_t *pg, int err, const char *detail)
{
    while (pg->q_head)
        finish_head(pg, err, detail);
}

/* Sends the head query if nothing is in flight. */
static void kick(sb_pg_t *pg)
{
    if (pg->state != UP || pg->sent || !pg->q_head)
        return;
    if (!PQsendQuery(pg->conn, pg->q_head->sql)) {
        snprintf(pg->head_detail, sizeof pg->head_detail, "%s", PQerrorMessage(pg->conn));
        finish_head(pg, SB_EUNAVAIL, pg->head_detail);
        return;
    }
    pg->sent = true;
    pg->head_err = 0;
    pg->head_detail[0] = '\0';
    watch(pg, PQflush(pg->conn) == 1 ? UV_READABLE | UV_WRITABLE : UV_READABLE);
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

static void read_results(sb_pg_t *pg)
{
    if (!PQconsumeInput(pg->conn) || PQstatus(pg->conn) == CONNECTION_BAD) {
        lost(pg, PQerrorMessage(pg->conn));
        return;
    }
    while (pg->sent && !PQisBusy(pg->conn)) {
        PGresult *res = PQgetResult(pg->conn);
        if (!res) { /* the query is complete */
            finish_head(pg, pg->head_err, pg->head_err ? pg->head_detail : "ok");
            kick(pg);
            continue;
        }
        ExecStatusType st = PQresultStatus(res);
        if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK && !pg->head_err) {
            pg->head_err = SB_EUNAVAIL;
            snprintf(pg->head_detail, sizeof pg->head_detail, "%s", PQresultErrorMessage(res));
        }
        PQclear(res);
    }
    /* Anything the server sends while idle (a termination notice) is consumed above; a closed socket shows as a
     * bad connection on the next read. */
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
        PQsetnonblocking(pg->conn, 1);
        pg->state = UP;
        pg->backoff_ms = BACKOFF_MIN_MS;
        pg->logged_down = false;
        sb_log_info("postgres: connected");
        watch(pg, UV_READABLE);
        kick(pg);
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
    pg->conn = PQconnectStart(pg->conninfo);
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

sb_pg_t *sb_pg_create(uv_loop_t *loop, const char *conninfo)
{
    sb_pg_t *pg = sb_calloc(1, sizeof *pg);
    pg->loop = loop;
    pg->conninfo = sb_strdup(conninfo);
    pg->poll_fd = -1;
    pg->backoff_ms = BACKOFF_MIN_MS;
    uv_timer_init(loop, &pg->timer);
    pg->timer.data = pg;
    try_connect(pg);
    return pg;
}

static void pg_timer_closed(uv_handle_t *h)
{
    sb_pg_t *pg = h->data;
    free(pg->conninfo);
    free(pg);
}

void sb_pg_close(sb_pg_t *pg)
{
    if (!pg)
        return;
    pg->closing = true;
    fail_all(pg, SB_ECANCELED, "closing");
    unwatch(pg);
    if (pg->conn)
        PQfinish(pg->conn);
    pg->conn = NULL;
    uv_close((uv_handle_t *)&pg->timer, pg_timer_closed);
}

bool sb_pg_connected(const sb_pg_t *pg)
{
    return pg && pg->state == UP;
}

/* ---- ping ----------------------------------------------------------------------------------------------------- */

static void ping_maybe_free(query_t *q)
{
    if (!q->in_queue && !q->timer_open)
        free(q);
}

static void ping_timer_closed(uv_handle_t *h)
{
    query_t *q = h->data;
    q->timer_open = false;
    ping_maybe_free(q);
}

static void ping_answer(query_t *q, int err, const char *detail)
{
    if (q->answered)
        return;
    q->answered = true;
    uv_close((uv_handle_t *)&q->timer, ping_timer_closed);
    q->cb(q->arg, err, detail);
}

static void ping_done(query_t *q, int err, const char *detail)
{
    ping_answer(q, err, detail);
    ping_maybe_free(q);
}

static void ping_timeout(uv_timer_t *t)
{
    ping_answer(t->data, SB_ETIMEDOUT, "timed out");
}

int sb_pg_ping(sb_pg_t *pg, uint64_t timeout_ms, sb_pg_ping_cb cb, void *arg)
{
    if (!pg || pg->state != UP)
        return SB_EUNAVAIL;
    query_t *q = sb_calloc(1, sizeof *q);
    q->sql = "SELECT 1";
    q->done = ping_done;
    q->cb = cb;
    q->arg = arg;
    q->in_queue = q->timer_open = true;
    uv_timer_init(pg->loop, &q->timer);
    q->timer.data = q;
    uv_timer_start(&q->timer, ping_timeout, timeout_ms, 0);
    if (pg->q_tail)
        pg->q_tail->next = q;
    else
        pg->q_head = q;
    pg->q_tail = q;
    kick(pg);
    return 0;
}
