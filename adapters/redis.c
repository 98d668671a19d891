/* Redis adapter over hiredis's async API and its libuv event adapter; see redis.h for the contract.
 *
 * States: DOWN (a timer will try again), CONNECTING (a timer bounds the attempt), UP. hiredis frees its context
 * after a failed connect or a disconnect callback, so `ac` is cleared there and never touched afterwards. */
#include "adapters/redis.h"

#include "gateway/log.h"
#include "proto/err.h"
#include "proto/mem.h"

#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <string.h>

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wstrict-prototypes"
#pragma GCC diagnostic ignored "-Wshadow"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#include <hiredis/adapters/libuv.h>
#pragma GCC diagnostic pop

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define CONNECT_TIMEOUT_MS 2000

enum state { DOWN, CONNECTING, UP };

struct sb_redis {
    uv_loop_t *loop;
    redisAsyncContext *ac;
    uv_timer_t timer; /* reconnect backoff, or the bound on a connect attempt */
    char *host;
    int port, db;
    enum state state;
    uint64_t backoff_ms;
    bool closing;
    bool logged_down; /* log the first failure of a streak only */
};

static void schedule_retry(sb_redis_t *r);
static void on_timer(uv_timer_t *t);

static void on_connect(const redisAsyncContext *ac, int status)
{
    sb_redis_t *r = ac->data;
    if (!r)
        return;
    uv_timer_stop(&r->timer);
    if (status != REDIS_OK) {
        if (!r->logged_down)
            sb_log_warn("redis %s:%d: connect failed: %s", r->host, r->port, ac->errstr);
        r->logged_down = true;
        r->ac = NULL; /* hiredis frees it after this callback */
        schedule_retry(r);
        return;
    }
    r->state = UP;
    r->backoff_ms = BACKOFF_MIN_MS;
    r->logged_down = false;
    sb_log_info("redis %s:%d: connected", r->host, r->port);
    if (r->db)
        redisAsyncCommand(r->ac, NULL, NULL, "SELECT %d", r->db);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    sb_redis_t *r = ac->data;
    (void)status;
    if (!r || r->closing)
        return;
    sb_log_warn("redis %s:%d: connection lost: %s", r->host, r->port, ac->err ? ac->errstr : "closed");
    r->logged_down = true;
    r->ac = NULL;
    schedule_retry(r);
}

static void try_connect(sb_redis_t *r)
{
    redisAsyncContext *ac = redisAsyncConnect(r->host, r->port);
    if (!ac || ac->err) {
        if (!r->logged_down)
            sb_log_warn("redis %s:%d: %s", r->host, r->port, ac ? ac->errstr : "cannot allocate context");
        r->logged_down = true;
        if (ac)
            redisAsyncFree(ac);
        schedule_retry(r);
        return;
    }
    ac->data = r;
    if (redisLibuvAttach(ac, r->loop) != REDIS_OK) {
        redisAsyncFree(ac);
        schedule_retry(r);
        return;
    }
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    r->ac = ac;
    r->state = CONNECTING;
    uv_timer_start(&r->timer, on_timer, CONNECT_TIMEOUT_MS, 0);
}

static void on_timer(uv_timer_t *t)
{
    sb_redis_t *r = t->data;
    if (r->state == CONNECTING) { /* the attempt took too long: abandon it */
        redisAsyncContext *ac = r->ac;
        r->ac = NULL;
        ac->data = NULL;
        redisAsyncFree(ac);
        if (!r->logged_down)
            sb_log_warn("redis %s:%d: connect timed out", r->host, r->port);
        r->logged_down = true;
        schedule_retry(r);
        return;
    }
    try_connect(r);
}

static void schedule_retry(sb_redis_t *r)
{
    r->state = DOWN;
    if (r->closing)
        return;
    uv_timer_start(&r->timer, on_timer, r->backoff_ms, 0);
    r->backoff_ms = r->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : r->backoff_ms * 2;
}

sb_redis_t *sb_redis_create(uv_loop_t *loop, const char *host, int port, int db)
{
    sb_redis_t *r = sb_calloc(1, sizeof *r);
    r->loop = loop;
    r->host = sb_strdup(host);
    r->port = port;
    r->db = db;
    r->backoff_ms = BACKOFF_MIN_MS;
    uv_timer_init(loop, &r->timer);
    r->timer.data = r;
    try_connect(r);
    return r;
}

static void on_timer_closed(uv_handle_t *h)
{
    sb_redis_t *r = h->data;
    free(r->host);
    free(r);
}

void sb_redis_close(sb_redis_t *r)
{
    if (!r)
        return;
    r->closing = true;
    if (r->ac) {
        redisAsyncContext *ac = r->ac;
        r->ac = NULL;
        redisAsyncFree(ac); /* pending callbacks run now, with no reply */
    }
    uv_close((uv_handle_t *)&r->timer, on_timer_closed);
}

bool sb_redis_connected(const sb_redis_t *r)
{
    return r && r->state == UP;
}

/* ---- PING ----------------------------------------------------------------------------------------------------- */

typedef struct ping {
    sb_redis_ping_cb cb;
    void *arg;
    uv_timer_t timer;
    bool answered, reply_pending, timer_open;
} ping_t;

static void ping_maybe_free(ping_t *p)
{
    if (!p->reply_pending && !p->timer_open)
        free(p);
}

static void ping_timer_closed(uv_handle_t *h)
{
    ping_t *p = h->data;
    p->timer_open = false;
    ping_maybe_free(p);
}

static void ping_finish(ping_t *p, int err, const char *detail)
{
    if (p->answered)
        return;
    p->answered = true;
    uv_close((uv_handle_t *)&p->timer, ping_timer_closed);
    p->cb(p->arg, err, detail);
}

static void ping_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    ping_t *p = privdata;
    redisReply *rep = reply;
    (void)ac;
    p->reply_pending = false;
    if (!rep)
        ping_finish(p, SB_EUNAVAIL, "connection lost");
    else if (rep->type == REDIS_REPLY_STATUS && strcmp(rep->str, "PONG") == 0)
        ping_finish(p, 0, "ok");
    else
        ping_finish(p, SB_EUNAVAIL, "unexpected reply to PING");
    ping_maybe_free(p);
}

static void ping_timeout(uv_timer_t *t)
{
    ping_finish(t->data, SB_ETIMEDOUT, "timed out");
}

int sb_redis_ping(sb_redis_t *r, uint64_t timeout_ms, sb_redis_ping_cb cb, void *arg)
{
    if (!r || r->state != UP || !r->ac)
        return SB_EUNAVAIL;
    ping_t *p = sb_calloc(1, sizeof *p);
    p->cb = cb;
    p->arg = arg;
    if (redisAsyncCommand(r->ac, ping_reply, p, "PING") != REDIS_OK) {
        free(p);
        return SB_EUNAVAIL;
    }
    p->reply_pending = p->timer_open = true;
    uv_timer_init(r->loop, &p->timer);
    p->timer.data = p;
    uv_timer_start(&p->timer, ping_timeout, timeout_ms, 0);
    return 0;
}
