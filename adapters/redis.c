/* Redis adapter over hiredis's async API and its libuv event adapter; see redis.h for the contract.
 *
 * States: DOWN (a timer will try again), CONNECTING (a timer bounds the attempt), UP. hiredis frees its context
 * after a failed connect or a disconnect callback, so `ac` is cleared there and never touched afterwards. */
#include "adapters/redis.h"

#include "adapters/deadline.h"

#include "gateway/log.h"
#include "gateway/metrics.h"
#include "proto/codec.h"
#include "proto/err.h"
#include "proto/mem.h"

#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <mbedtls/md.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

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
    sb_hist_t *hist;  /* round trips of the commands (sb_redis_set_histogram); NULL: not timed */
    sb_redis_stats_t stats;
};

static void schedule_retry(sb_redis_t *r);
static void on_timer(uv_timer_t *t);

/* ---- hiredis on a libuv loop ------------------------------------------------------------------------------------
 * Our own glue rather than <hiredis/adapters/libuv.h>: the one Debian ships (hiredis 0.14) returns from its poll
 * callback when libuv reports an error, and libuv has stopped the handle by then. A connection reset while commands
 * were in flight (Redis restarted under load: POLLERR) left the context "connected" for good, its commands never
 * answered and the loss never reported; /readyz said "timed out" until the process restarted. Here an error counts
 * as readiness for whatever the context waits for, so hiredis reads or writes, meets the error and disconnects. */

typedef struct uvev {
    redisAsyncContext *ac; /* NULL once hiredis let go (cleanup) */
    uv_poll_t poll;
    int events;
} uvev_t;

static void ev_poll(uv_poll_t *h, int status, int events)
{
    uvev_t *e = h->data;
    if (status < 0) /* libuv stopped the handle: let hiredis find the error on the socket */
        events = e->events;
    if (e->ac && (events & UV_READABLE))
        redisAsyncHandleRead(e->ac);
    if (e->ac && (events & UV_WRITABLE))
        redisAsyncHandleWrite(e->ac);
}

static void ev_update(uvev_t *e, int add, int del)
{
    e->events = (e->events | add) & ~del;
    if (e->events)
        uv_poll_start(&e->poll, e->events, ev_poll);
    else
        uv_poll_stop(&e->poll);
}

static void ev_add_read(void *p) { ev_update(p, UV_READABLE, 0); }
static void ev_del_read(void *p) { ev_update(p, 0, UV_READABLE); }
static void ev_add_write(void *p) { ev_update(p, UV_WRITABLE, 0); }
static void ev_del_write(void *p) { ev_update(p, 0, UV_WRITABLE); }

static void ev_closed(uv_handle_t *h)
{
    free(h->data);
}

static void ev_cleanup(void *p)
{
    uvev_t *e = p;
    e->ac = NULL;
    uv_close((uv_handle_t *)&e->poll, ev_closed);
}

static int ev_attach(redisAsyncContext *ac, uv_loop_t *loop)
{
    if (ac->ev.data)
        return REDIS_ERR;
    uvev_t *e = sb_calloc(1, sizeof *e);
    if (uv_poll_init_socket(loop, &e->poll, ac->c.fd) != 0) {
        free(e);
        return REDIS_ERR;
    }
    e->ac = ac;
    e->poll.data = e;
    ac->ev.data = e;
    ac->ev.addRead = ev_add_read;
    ac->ev.delRead = ev_del_read;
    ac->ev.addWrite = ev_add_write;
    ac->ev.delWrite = ev_del_write;
    ac->ev.cleanup = ev_cleanup;
    return REDIS_OK;
}

/* SELECT goes out before anything else on a new connection, so every later command runs in the configured db. */
static void select_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    sb_redis_t *r = ac->data;
    redisReply *rep = reply;
    (void)privdata;
    if (!rep || !r)
        return;
    r->stats.replies++;
    if (rep->type == REDIS_REPLY_ERROR)
        sb_log_error("redis %s:%d: SELECT %d failed: %.*s", r->host, r->port, r->db, (int)rep->len, rep->str);
}

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
    r->stats.connects++;
    sb_log_info("redis %s:%d: connected", r->host, r->port);
    if (r->db && redisAsyncCommand(r->ac, select_reply, NULL, "SELECT %d", r->db) == REDIS_OK)
        r->stats.commands++;
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
    if (ev_attach(ac, r->loop) != REDIS_OK) {
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

static void ping_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    redisReply *rep = reply;
    sb_redis_t *r = ac->data;
    if (rep && r)
        r->stats.replies++;
    if (!rep)
        sb_deadline_answer(privdata, SB_EUNAVAIL, "connection lost");
    else if (rep->type == REDIS_REPLY_STATUS && strcmp(rep->str, "PONG") == 0)
        sb_deadline_answer(privdata, 0, "ok");
    else
        sb_deadline_answer(privdata, SB_EUNAVAIL, "unexpected reply to PING");
}

int sb_redis_ping(sb_redis_t *r, uint64_t timeout_ms, sb_redis_ping_cb cb, void *arg)
{
    if (!r || r->state != UP || !r->ac)
        return SB_EUNAVAIL;
    sb_deadline_t *d = sb_deadline_start(r->loop, timeout_ms, cb, arg);
    if (redisAsyncCommand(r->ac, ping_reply, d, "PING") != REDIS_OK) {
        sb_deadline_cancel(d);
        return SB_EUNAVAIL;
    }
    r->stats.commands++;
    return 0;
}

/* ---- generic commands and scripts ----------------------------------------------------------------------------- */

/* One command in flight. For EVALSHA it also keeps a copy of the arguments, so that a NOSCRIPT answer can be turned
 * into an EVAL without asking the caller again: argv[0] is the command name, argv[1] the SHA (or the script text on
 * the resend), the rest point into bytes[]. */
typedef struct cmd {
    sb_redis_reply_cb cb;
    void *arg;
    const sb_redis_script_t *script; /* EVALSHA not yet resent; NULL otherwise */
    uint64_t sent_ns;                /* uv_hrtime() when handed to hiredis (0: not timed) */
    int argc;
    const char **argv;
    size_t *argvlen;
    _Alignas(size_t) char bytes[];
} cmd_t;

static void cmd_reply(redisAsyncContext *ac, void *reply, void *privdata);

/* The error code for a NULL reply: the adapter is closing (sb_redis_close frees the context) or the link broke. */
static int lost_code(const redisAsyncContext *ac)
{
    const sb_redis_t *r = ac->data;
    return !r || r->closing || (ac->c.flags & REDIS_FREEING) ? SB_ECANCELED : SB_EUNAVAIL;
}

static bool is_noscript(const redisReply *rep)
{
    return rep && rep->type == REDIS_REPLY_ERROR && rep->len >= 8 && memcmp(rep->str, "NOSCRIPT", 8) == 0;
}

static void cmd_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    cmd_t *c = privdata;
    redisReply *rep = reply;
    sb_redis_t *r = ac->data;
    if (rep && r) {
        r->stats.replies++;
        if (c->sent_ns && r->hist)
            sb_hist_observe(r->hist, uv_hrtime() - c->sent_ns);
    }
    if (c->script && is_noscript(rep) && r && !r->closing && r->ac == ac) {
        /* The server lost (or never had) the script: the same call as EVAL. Replies come in order, so this one
         * takes its turn behind whatever was pipelined after the EVALSHA - fine, callers do not rely on ordering
         * between different calls. */
        c->argv[0] = "EVAL";
        c->argvlen[0] = 4;
        c->argv[1] = c->script->text;
        c->argvlen[1] = strlen(c->script->text);
        c->script = NULL;
        c->sent_ns = r->hist ? uv_hrtime() : 0;
        if (redisAsyncCommandArgv(ac, cmd_reply, c, c->argc, c->argv, c->argvlen) == REDIS_OK) {
            r->stats.commands++;
            r->stats.noscript++;
            return;
        }
        rep = NULL; /* the context is going down: report it as lost */
    }
    if (c->cb)
        c->cb(c->arg, rep ? 0 : lost_code(ac), rep);
    else if (rep && rep->type == REDIS_REPLY_ERROR)
        sb_log_warn("redis %s:%d: %.*s", r ? r->host : "?", r ? r->port : 0, (int)rep->len, rep->str);
    free(c);
}

/* Allocates a cmd with room for argc argument slots and `extra` bytes of copied arguments. */
static cmd_t *cmd_new(int argc, size_t extra, sb_redis_reply_cb cb, void *arg)
{
    size_t slots = (size_t)argc * (sizeof(char *) + sizeof(size_t));
    cmd_t *c = sb_malloc(sizeof *c + slots + extra);
    c->cb = cb;
    c->arg = arg;
    c->script = NULL;
    c->argc = argc;
    c->argv = (const char **)(void *)c->bytes;
    c->argvlen = (size_t *)(void *)(c->bytes + (size_t)argc * sizeof(char *));
    return c;
}

static int cmd_send(sb_redis_t *r, cmd_t *c, int argc, const char **argv, const size_t *argvlen)
{
    c->sent_ns = r->hist ? uv_hrtime() : 0;
    if (redisAsyncCommandArgv(r->ac, cmd_reply, c, argc, argv, argvlen) != REDIS_OK) {
        free(c);
        return SB_EUNAVAIL;
    }
    r->stats.commands++;
    return 0;
}

int sb_redis_command_argv(sb_redis_t *r, int argc, const char **argv, const size_t *argvlen, sb_redis_reply_cb cb,
                          void *arg)
{
    if (!r || r->state != UP || !r->ac)
        return SB_EUNAVAIL;
    SB_BUG_ON(argc < 1);
    /* hiredis formats the arguments into its output buffer at once: nothing of them needs keeping. */
    return cmd_send(r, cmd_new(0, 0, cb, arg), argc, argv, argvlen);
}

void sb_redis_script_init(sb_redis_script_t *s, const char *text)
{
    unsigned char d[20];
    const mbedtls_md_info_t *sha1 = mbedtls_md_info_from_type(MBEDTLS_MD_SHA1);
    SB_BUG_ON(sha1 == NULL || mbedtls_md_get_size(sha1) != sizeof d);
    int rc = mbedtls_md(sha1, (const unsigned char *)text, strlen(text), d);
    SB_BUG_ON(rc != 0);
    sb_codec_hex_encode(s->sha, d, sizeof d);
    s->sha[40] = '\0';
    s->text = text;
}

int sb_redis_evalsha(sb_redis_t *r, const sb_redis_script_t *s, int nkeys, int nargs, const char **keys_and_args,
                     const size_t *lens, sb_redis_reply_cb cb, void *arg)
{
    if (!r || r->state != UP || !r->ac)
        return SB_EUNAVAIL;
    SB_BUG_ON(nkeys < 0 || nargs < 0);
    int n = nkeys + nargs;
    char numkeys[16];
    int nk = snprintf(numkeys, sizeof numkeys, "%d", nkeys);
    size_t extra = (size_t)nk;
    for (int i = 0; i < n; i++)
        extra += lens[i];
    cmd_t *c = cmd_new(3 + n, extra, cb, arg);
    char *p = (char *)(c->argvlen + c->argc);
    c->script = s;
    c->argv[0] = "EVALSHA";
    c->argvlen[0] = 7;
    c->argv[1] = s->sha;
    c->argvlen[1] = 40;
    memcpy(p, numkeys, (size_t)nk);
    c->argv[2] = p;
    c->argvlen[2] = (size_t)nk;
    p += nk;
    for (int i = 0; i < n; i++) {
        if (lens[i])
            memcpy(p, keys_and_args[i], lens[i]);
        c->argv[3 + i] = p;
        c->argvlen[3 + i] = lens[i];
        p += lens[i];
    }
    return cmd_send(r, c, c->argc, c->argv, c->argvlen);
}

void sb_redis_set_histogram(sb_redis_t *r, sb_hist_t *h)
{
    r->hist = h;
}

void sb_redis_get_stats(const sb_redis_t *r, sb_redis_stats_t *out)
{
    *out = r->stats;
}
