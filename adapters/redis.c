/* Redis adapter over hiredis's async API and its libuv event adapter; see redis.h for the contract.
 *
 * A link is one hiredis connection kept up by itself: DOWN (a timer will try again), CONNECTING (a timer bounds the
 * attempt), UP. hiredis frees its context after a failed connect or a disconnect callback, so `ac` is cleared there
 * and never touched afterwards. The adapter has one link (the seed) to a single Redis, or, against a cluster, one per
 * master (the seed among them), all with the same backoff; the subscriber has one of its own.
 *
 * Cluster mode is found out after the seed connects (INFO cluster). Until the answer comes, commands go to the seed
 * with a copy of their arguments, as in cluster mode, so a MOVED can still be followed; once the server says
 * "single", the single path copies nothing and routes nothing. */
#include "adapters/redis.h"

#include "adapters/deadline.h"

#include "gateway/log.h"
#include "gateway/metrics.h"
#include "proto/codec.h"
#include "proto/err.h"
#include "proto/htable.h"
#include "proto/mem.h"

#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <mbedtls/md.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <uv.h>

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define CONNECT_TIMEOUT_MS 2000
#define NSLOTS 16384
#define MAX_NODES 64        /* masters of one cluster this adapter connects to; more are ignored (logged) */
#define NO_NODE 0xFF        /* slot_node[] of a slot whose master is not known */
#define MAX_REDIRECTS 5     /* MOVED/ASK followed per command before the caller gets the error reply */
#define MAX_HOST 255        /* a node's address in MOVED, ASK or CLUSTER SLOTS */
#define REFRESH_MIN_MS 1000 /* between two CLUSTER SLOTS asked for because a slot's master was down */
#define MAX_CHANNEL 1024    /* a subscriber's channel name */

enum state { DOWN, CONNECTING, UP };
enum mode { MODE_UNKNOWN, MODE_SINGLE, MODE_CLUSTER };

/* ---- links: one hiredis connection that reconnects by itself ------------------------------------------------- */

typedef struct link link_t;

/* What a link's owner does when it comes up, goes down (only after UP), and when its handles have closed after
 * link_close (then the owner frees it). */
typedef struct link_ops {
    void (*up)(link_t *l);
    void (*down)(link_t *l);
    void (*closed)(link_t *l);
} link_ops_t;

struct link {
    uv_loop_t *loop;
    redisAsyncContext *ac;
    uv_timer_t timer; /* reconnect backoff, or the bound on a connect attempt */
    char *host;
    int port;
    enum state state;
    uint64_t backoff_ms;
    uint64_t connects; /* successful connections */
    bool closing;
    bool logged_down; /* log the first failure of a streak only; also: an attempt has failed */
    const char *what; /* "redis" or "redis subscriber", for the log lines */
    const link_ops_t *ops;
    void *owner;
};

static void schedule_retry(link_t *l);
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
    uv_check_t flush_io;   /* commands queued this loop turn are written at its end: after the I/O callbacks ... */
    uv_prepare_t flush;    /* ... or before the loop polls (those of timers and actors), whichever comes first */
    int events;            /* what the poll handle watches */
    bool restart;          /* libuv stopped the handle (an error): start it again at the next update */
    bool flushing;         /* inside the flush: a write that did not finish waits for writability */
    int open;              /* handles not yet closed */
} uvev_t;

static void ev_poll(uv_poll_t *h, int status, int events)
{
    uvev_t *e = h->data;
    if (status < 0) { /* libuv stopped the handle: let hiredis find the error on the socket */
        events = e->events;
        e->restart = true;
    }
    if (e->ac && (events & UV_READABLE))
        redisAsyncHandleRead(e->ac);
    if (e->ac && (events & UV_WRITABLE))
        redisAsyncHandleWrite(e->ac);
}

/* Only a change reaches libuv: hiredis asks for reads after every write and for writes with every command, and each
 * uv_poll_start is an epoll_ctl. */
static void ev_update(uvev_t *e, int add, int del)
{
    int events = (e->events | add) & ~del;
    if (events == e->events && !e->restart)
        return;
    e->events = events;
    e->restart = false;
    if (events)
        uv_poll_start(&e->poll, events, ev_poll);
    else
        uv_poll_stop(&e->poll);
}

/* The loop turn's commands, written in one go at the turn's end (as Redis writes its replies before it sleeps): no
 * epoll_ctl to watch for writability and back, no extra turn, for a socket that can take them. */
static void ev_flush(uvev_t *e)
{
    uv_check_stop(&e->flush_io);
    uv_prepare_stop(&e->flush);
    if (!e->ac)
        return;
    e->flushing = true;
    redisAsyncHandleWrite(e->ac);
    e->flushing = false;
}

static void ev_flush_io(uv_check_t *h) { ev_flush(h->data); }
static void ev_flush_idle(uv_prepare_t *h) { ev_flush(h->data); }

static void ev_add_read(void *p) { ev_update(p, UV_READABLE, 0); }
static void ev_del_read(void *p) { ev_update(p, 0, UV_READABLE); }

static void ev_add_write(void *p)
{
    uvev_t *e = p;
    /* connecting (hiredis learns the outcome from writability), or a write the socket did not take whole: poll */
    if (e->flushing || !(e->ac->c.flags & REDIS_CONNECTED) || (e->events & UV_WRITABLE)) {
        ev_update(e, UV_WRITABLE, 0);
    } else {
        uv_check_start(&e->flush_io, ev_flush_io);
        uv_prepare_start(&e->flush, ev_flush_idle);
    }
}

static void ev_del_write(void *p)
{
    uvev_t *e = p;
    uv_check_stop(&e->flush_io);
    uv_prepare_stop(&e->flush);
    ev_update(e, 0, UV_WRITABLE);
}

static void ev_closed(uv_handle_t *h)
{
    uvev_t *e = h->data;
    if (--e->open == 0)
        free(e);
}

static void ev_cleanup(void *p)
{
    uvev_t *e = p;
    e->ac = NULL;
    uv_close((uv_handle_t *)&e->poll, ev_closed);
    uv_close((uv_handle_t *)&e->flush_io, ev_closed);
    uv_close((uv_handle_t *)&e->flush, ev_closed);
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
    uv_check_init(loop, &e->flush_io);
    uv_prepare_init(loop, &e->flush);
    e->open = 3;
    e->ac = ac;
    e->poll.data = e;
    e->flush_io.data = e;
    e->flush.data = e;
    ac->ev.data = e;
    ac->ev.addRead = ev_add_read;
    ac->ev.delRead = ev_del_read;
    ac->ev.addWrite = ev_add_write;
    ac->ev.delWrite = ev_del_write;
    ac->ev.cleanup = ev_cleanup;
    return REDIS_OK;
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    link_t *l = ac->data;
    if (!l)
        return;
    uv_timer_stop(&l->timer);
    if (status != REDIS_OK) {
        if (!l->logged_down)
            sb_log_warn("%s %s:%d: connect failed: %s", l->what, l->host, l->port, ac->errstr);
        l->logged_down = true;
        l->ac = NULL; /* hiredis frees it after this callback */
        schedule_retry(l);
        return;
    }
    l->state = UP;
    l->backoff_ms = BACKOFF_MIN_MS;
    l->logged_down = false;
    l->connects++;
    sb_log_info("%s %s:%d: connected", l->what, l->host, l->port);
    l->ops->up(l);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    link_t *l = ac->data;
    (void)status;
    if (!l || l->closing)
        return;
    sb_log_warn("%s %s:%d: connection lost: %s", l->what, l->host, l->port, ac->err ? ac->errstr : "closed");
    l->logged_down = true;
    l->ac = NULL;
    bool was_up = l->state == UP;
    schedule_retry(l);
    if (was_up)
        l->ops->down(l);
}

static void try_connect(link_t *l)
{
    redisAsyncContext *ac = redisAsyncConnect(l->host, l->port);
    if (!ac || ac->err) {
        if (!l->logged_down)
            sb_log_warn("%s %s:%d: %s", l->what, l->host, l->port, ac ? ac->errstr : "cannot allocate context");
        l->logged_down = true;
        if (ac)
            redisAsyncFree(ac);
        schedule_retry(l);
        return;
    }
    ac->data = l;
    if (ev_attach(ac, l->loop) != REDIS_OK) {
        redisAsyncFree(ac);
        schedule_retry(l);
        return;
    }
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    l->ac = ac;
    l->state = CONNECTING;
    uv_timer_start(&l->timer, on_timer, CONNECT_TIMEOUT_MS, 0);
}

static void on_timer(uv_timer_t *t)
{
    link_t *l = t->data;
    if (l->state == CONNECTING) { /* the attempt took too long: abandon it (what waited on it fails: lost) */
        redisAsyncContext *ac = l->ac;
        l->ac = NULL;
        ac->data = NULL;
        if (!l->logged_down)
            sb_log_warn("%s %s:%d: connect timed out", l->what, l->host, l->port);
        l->logged_down = true;
        l->state = DOWN;
        redisAsyncFree(ac);
        schedule_retry(l);
        return;
    }
    try_connect(l);
}

static void schedule_retry(link_t *l)
{
    l->state = DOWN;
    if (l->closing)
        return;
    uv_timer_start(&l->timer, on_timer, l->backoff_ms, 0);
    l->backoff_ms = l->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : l->backoff_ms * 2;
}

/* A new link to host (hostlen bytes, copied):port, already connecting. Never fails. */
static link_t *link_open(uv_loop_t *loop, const char *host, size_t hostlen, int port, const char *what,
                         const link_ops_t *ops, void *owner)
{
    link_t *l = sb_calloc(1, sizeof *l);
    l->loop = loop;
    l->host = sb_malloc(hostlen + 1);
    memcpy(l->host, host, hostlen);
    l->host[hostlen] = '\0';
    l->port = port;
    l->what = what;
    l->ops = ops;
    l->owner = owner;
    l->backoff_ms = BACKOFF_MIN_MS;
    uv_timer_init(loop, &l->timer);
    l->timer.data = l;
    try_connect(l);
    return l;
}

static void link_timer_closed(uv_handle_t *h)
{
    link_t *l = h->data;
    l->ops->closed(l);
    free(l->host);
    free(l);
}

/* Closes the connection (its pending callbacks run now, with no reply) and, on a later loop iteration, calls
 * ops->closed and frees l. */
static void link_close(link_t *l)
{
    l->closing = true;
    if (l->ac) {
        redisAsyncContext *ac = l->ac;
        l->ac = NULL;
        redisAsyncFree(ac);
    }
    uv_close((uv_handle_t *)&l->timer, link_timer_closed);
}

static bool link_up(const link_t *l)
{
    return l->state == UP && l->ac;
}

/* ---- key slots ------------------------------------------------------------------------------------------------ */

/* CRC16-CCITT (XMODEM): polynomial 0x1021, initial value 0, no reflection - the checksum Redis Cluster hashes keys
 * with. Bitwise: keys are short, and this runs in cluster mode only. */
static uint16_t crc16(const unsigned char *p, size_t n)
{
    uint16_t crc = 0;
    for (size_t i = 0; i < n; i++) {
        crc ^= (uint16_t)(p[i] << 8);
        for (int b = 0; b < 8; b++)
            crc = crc & 0x8000 ? (uint16_t)((crc << 1) ^ 0x1021) : (uint16_t)(crc << 1);
    }
    return crc;
}

unsigned sb_redis_key_slot(const char *key, size_t len)
{
    const char *open = memchr(key, '{', len);
    if (open) {
        size_t from = (size_t)(open - key) + 1;
        const char *close = memchr(open + 1, '}', len - from);
        if (close && close > open + 1) /* a non-empty tag: only it is hashed */
            return crc16((const unsigned char *)open + 1, (size_t)(close - open - 1)) & (NSLOTS - 1);
    }
    return crc16((const unsigned char *)key, len) & (NSLOTS - 1);
}

static bool word_is(const char *p, size_t len, const char *word)
{
    size_t n = strlen(word);
    return len == n && strncasecmp(p, word, n) == 0;
}

/* Commands that name no key (or not in argv[1]): they go to any master. */
static const char *const keyless[] = {
    "PING",    "ECHO",      "INFO",       "TIME",        "SCRIPT",       "PUBLISH", "CLUSTER", "CLIENT",  "CONFIG",
    "DBSIZE",  "FLUSHDB",   "FLUSHALL",   "SELECT",      "COMMAND",      "AUTH",    "HELLO",   "ROLE",    "WAIT",
    "SLOWLOG", "LATENCY",   "DEBUG",      "LASTSAVE",    "RANDOMKEY",    "SCAN",    "KEYS",    "MULTI",   "EXEC",
    "DISCARD", "FUNCTION",  "READONLY",   "READWRITE",   "ASKING",       "MEMORY",  "OBJECT",  "MONITOR", "SHUTDOWN",
    "SWAPDB",  "SUBSCRIBE", "PSUBSCRIBE", "UNSUBSCRIBE", "PUNSUBSCRIBE", "PUBSUB",
};

/* The slot a command is routed by (its key's), or -1 when it has none. The key is argv[1], except: EVAL and
 * EVALSHA (and their _RO forms, FCALL) - the first key, argv[3], when numkeys > 0; XREAD and XREADGROUP - the first
 * key after STREAMS; the keyless commands above. */
static int command_slot(int argc, const char **argv, const size_t *len)
{
    if (argc < 2)
        return -1;
    const char *n = argv[0];
    size_t nl = len[0];
    if (word_is(n, nl, "EVALSHA") || word_is(n, nl, "EVAL") || word_is(n, nl, "EVALSHA_RO") ||
        word_is(n, nl, "EVAL_RO") || word_is(n, nl, "FCALL") || word_is(n, nl, "FCALL_RO")) {
        if (argc < 4 || len[2] == 0 || len[2] > 9)
            return -1;
        long nk = 0;
        for (size_t i = 0; i < len[2]; i++) {
            if (argv[2][i] < '0' || argv[2][i] > '9')
                return -1;
            nk = nk * 10 + (argv[2][i] - '0');
        }
        return nk > 0 ? (int)sb_redis_key_slot(argv[3], len[3]) : -1;
    }
    if (word_is(n, nl, "XREAD") || word_is(n, nl, "XREADGROUP")) {
        for (int i = 1; i + 1 < argc; i++)
            if (word_is(argv[i], len[i], "STREAMS"))
                return (int)sb_redis_key_slot(argv[i + 1], len[i + 1]);
        return -1;
    }
    for (size_t i = 0; i < sizeof keyless / sizeof keyless[0]; i++)
        if (word_is(n, nl, keyless[i]))
            return -1;
    return (int)sb_redis_key_slot(argv[1], len[1]);
}

/* ---- the adapter: a seed, and in cluster mode the masters ----------------------------------------------------- */

struct sb_redis {
    uv_loop_t *loop;
    link_t *nodes[MAX_NODES]; /* nodes[0]: the seed (host:port of sb_redis_create); the masters after it */
    int nnodes;
    int open; /* links not yet freed: r itself is freed when the last one is */
    int db;
    enum mode mode;
    bool closing;
    bool refreshing;       /* a CLUSTER SLOTS is in flight */
    uint64_t refreshed_ms; /* uv_now() when the last one was sent */
    bool logged_full;      /* MAX_NODES reached (logged once) */
    uint8_t *slot_node;    /* cluster mode: index into nodes[] of each slot's master, NO_NODE when unknown */
    sb_hist_t *hist;       /* round trips of the commands (sb_redis_set_histogram); NULL: not timed */
    sb_redis_stats_t stats;
};

static void node_up(link_t *l);
static void node_down(link_t *l);
static void node_closed(link_t *l);
static const link_ops_t node_ops = {node_up, node_down, node_closed};

static void refresh_slots(sb_redis_t *r, link_t *l);

/* SELECT goes out before anything else on a new connection, so every later command runs in the configured db. */
static void select_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    sb_redis_t *r = privdata;
    redisReply *rep = reply;
    (void)ac;
    if (!rep)
        return;
    r->stats.replies++;
    if (rep->type == REDIS_REPLY_ERROR)
        sb_log_error("redis %s:%d: SELECT %d failed: %.*s", r->nodes[0]->host, r->nodes[0]->port, r->db,
                     (int)rep->len, rep->str);
}

/* The seed answered INFO cluster: cluster_enabled:1 makes the adapter a cluster client for good; anything else (an
 * error reply included: INFO renamed away) a single-Redis one, until the next connection of the seed asks again. */
static void info_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    sb_redis_t *r = privdata;
    redisReply *rep = reply;
    (void)ac;
    if (!rep)
        return; /* lost or closing: asked again on the next connection */
    r->stats.replies++;
    if (r->closing || r->mode == MODE_CLUSTER)
        return;
    bool cluster = rep->type == REDIS_REPLY_STRING && rep->str && memmem(rep->str, rep->len, "cluster_enabled:1", 17);
    if (!cluster) {
        r->mode = MODE_SINGLE;
        return;
    }
    link_t *seed = r->nodes[0];
    r->mode = MODE_CLUSTER;
    r->slot_node = sb_malloc(NSLOTS);
    memset(r->slot_node, NO_NODE, NSLOTS);
    sb_log_info("redis %s:%d: a cluster: each command goes to its key's master", seed->host, seed->port);
    if (r->db)
        sb_log_error("redis %s:%d: database %d ignored: a cluster has database 0 only", seed->host, seed->port,
                     r->db);
    refresh_slots(r, seed);
}

static void node_up(link_t *l)
{
    sb_redis_t *r = l->owner;
    r->stats.connects++;
    if (l != r->nodes[0])
        return; /* a master learned from the cluster: nothing to set up */
    if (r->mode == MODE_CLUSTER) {
        refresh_slots(r, l); /* the map may have changed while the seed was away */
        return;
    }
    if (r->db && redisAsyncCommand(l->ac, select_reply, r, "SELECT %d", r->db) == REDIS_OK)
        r->stats.commands++;
    if (r->mode == MODE_UNKNOWN && redisAsyncCommand(l->ac, info_reply, r, "INFO cluster") == REDIS_OK)
        r->stats.commands++;
}

static void node_down(link_t *l)
{
    (void)l; /* its commands failed with SB_EUNAVAIL; the link reconnects by itself */
}

static void node_closed(link_t *l)
{
    sb_redis_t *r = l->owner;
    if (--r->open > 0)
        return;
    free(r->slot_node);
    free(r);
}

sb_redis_t *sb_redis_create(uv_loop_t *loop, const char *host, int port, int db)
{
    sb_redis_t *r = sb_calloc(1, sizeof *r);
    r->loop = loop;
    r->db = db;
    r->open = 1;
    r->nnodes = 1;
    r->nodes[0] = link_open(loop, host, strlen(host), port, "redis", &node_ops, r);
    return r;
}

void sb_redis_close(sb_redis_t *r)
{
    if (!r)
        return;
    r->closing = true; /* from here no redirection is followed: the pending callbacks add no node */
    for (int i = 0; i < r->nnodes; i++)
        link_close(r->nodes[i]); /* r is freed when the last link's handles have closed, on a later iteration */
}

/* The link for host (hostlen bytes):port among the known nodes, or a new one (connecting) when there is room;
 * NULL when MAX_NODES are known already. *index receives its place in nodes[]. */
static link_t *node_get(sb_redis_t *r, const char *host, size_t hostlen, int port, int *index)
{
    for (int i = 0; i < r->nnodes; i++) {
        link_t *l = r->nodes[i];
        if (l->port == port && strlen(l->host) == hostlen && memcmp(l->host, host, hostlen) == 0) {
            *index = i;
            return l;
        }
    }
    if (r->nnodes == MAX_NODES) {
        if (!r->logged_full)
            sb_log_error("redis: more than %d cluster nodes; %.*s:%d ignored", MAX_NODES, (int)hostlen, host, port);
        r->logged_full = true;
        return NULL;
    }
    *index = r->nnodes;
    r->open++;
    r->nodes[r->nnodes++] = link_open(r->loop, host, hostlen, port, "redis", &node_ops, r);
    return r->nodes[*index];
}

/* Whether a command may be handed to l now: it is up, or it is a master met for the first time and still making
 * its first attempt (hiredis queues the command until the connection is made, or fails it if that fails). */
static bool link_usable(const link_t *l)
{
    return l->ac && (l->state == UP || (l->state == CONNECTING && l->connects == 0 && !l->logged_down));
}

/* Any master that is up, the seed first; NULL when none is. */
static link_t *any_up(const sb_redis_t *r)
{
    for (int i = 0; i < r->nnodes; i++)
        if (link_up(r->nodes[i]))
            return r->nodes[i];
    return NULL;
}

/* Where a command for slot (-1: no key) goes: the slot's master if known (NULL if it cannot take commands now),
 * otherwise any master that is up (it answers MOVED if it is the wrong one). A master that cannot take commands may
 * be gone for good, a replica promoted in its place: the map is asked for again, at most once a second. */
static link_t *route(sb_redis_t *r, int slot)
{
    if (slot >= 0 && r->slot_node && r->slot_node[slot] != NO_NODE) {
        link_t *l = r->nodes[r->slot_node[slot]];
        if (link_usable(l))
            return l;
        if (uv_now(r->loop) - r->refreshed_ms >= REFRESH_MIN_MS)
            refresh_slots(r, any_up(r));
        return NULL;
    }
    return any_up(r);
}

bool sb_redis_connected(const sb_redis_t *r)
{
    if (!r || r->closing)
        return false;
    return r->mode == MODE_CLUSTER ? any_up(r) != NULL : link_up(r->nodes[0]);
}

/* ---- the slot map --------------------------------------------------------------------------------------------- */

static bool host_port_ok(const redisReply *h, const redisReply *p)
{
    return h->type == REDIS_REPLY_STRING && h->len <= MAX_HOST && p->type == REDIS_REPLY_INTEGER && p->integer > 0 &&
           p->integer < 65536;
}

/* CLUSTER SLOTS: [[start, end, [host, port, id...], replicas...]...]. The map is rebuilt from it (slots it does not
 * name become unknown), and every master named gets its link. A malformed reply is logged and changes nothing. */
static void slots_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    link_t *from = privdata;
    sb_redis_t *r = from->owner;
    redisReply *rep = reply;
    (void)ac;
    r->refreshing = false;
    if (!rep)
        return;
    r->stats.replies++;
    if (r->closing)
        return;
    bool good = rep->type == REDIS_REPLY_ARRAY;
    for (size_t i = 0; good && i < rep->elements; i++) {
        const redisReply *e = rep->element[i];
        good = e->type == REDIS_REPLY_ARRAY && e->elements >= 3 && e->element[0]->type == REDIS_REPLY_INTEGER &&
               e->element[1]->type == REDIS_REPLY_INTEGER && e->element[0]->integer >= 0 &&
               e->element[0]->integer <= e->element[1]->integer && e->element[1]->integer < NSLOTS &&
               e->element[2]->type == REDIS_REPLY_ARRAY && e->element[2]->elements >= 2 &&
               host_port_ok(e->element[2]->element[0], e->element[2]->element[1]);
    }
    if (!good) {
        sb_log_warn("redis %s:%d: unexpected CLUSTER SLOTS reply; slot map kept", from->host, from->port);
        return;
    }
    memset(r->slot_node, NO_NODE, NSLOTS);
    for (size_t i = 0; i < rep->elements; i++) {
        const redisReply *e = rep->element[i], *m = e->element[2];
        const char *host = m->element[0]->str;
        size_t hostlen = m->element[0]->len;
        if (hostlen == 0 || (hostlen == 1 && host[0] == '?')) { /* "the address you reached me at" */
            host = from->host;
            hostlen = strlen(host);
        }
        int idx;
        if (!node_get(r, host, hostlen, (int)m->element[1]->integer, &idx))
            continue;
        memset(r->slot_node + e->element[0]->integer, idx,
               (size_t)(e->element[1]->integer - e->element[0]->integer + 1));
    }
    r->stats.slot_maps++;
}

/* Asks l (up) for the slot map, unless a request is in flight already. */
static void refresh_slots(sb_redis_t *r, link_t *l)
{
    if (r->refreshing || r->closing || r->mode != MODE_CLUSTER || !l || !link_up(l))
        return;
    if (redisAsyncCommand(l->ac, slots_reply, l, "CLUSTER SLOTS") == REDIS_OK) {
        r->refreshing = true;
        r->refreshed_ms = uv_now(r->loop);
        r->stats.commands++;
    }
}

/* ---- PING ----------------------------------------------------------------------------------------------------- */

static void ping_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    redisReply *rep = reply;
    link_t *l = ac->data;
    if (rep && l)
        ((sb_redis_t *)l->owner)->stats.replies++;
    if (!rep)
        sb_deadline_answer(privdata, SB_EUNAVAIL, "connection lost");
    else if (rep->type == REDIS_REPLY_STATUS && strcmp(rep->str, "PONG") == 0)
        sb_deadline_answer(privdata, 0, "ok");
    else
        sb_deadline_answer(privdata, SB_EUNAVAIL, "unexpected reply to PING");
}

int sb_redis_ping(sb_redis_t *r, uint64_t timeout_ms, sb_redis_ping_cb cb, void *arg)
{
    if (!r || r->closing)
        return SB_EUNAVAIL;
    link_t *l = r->mode == MODE_CLUSTER ? any_up(r) : r->nodes[0];
    if (!l || !link_up(l))
        return SB_EUNAVAIL;
    sb_deadline_t *d = sb_deadline_start(r->loop, timeout_ms, cb, arg);
    if (redisAsyncCommand(l->ac, ping_reply, d, "PING") != REDIS_OK) {
        sb_deadline_cancel(d);
        return SB_EUNAVAIL;
    }
    r->stats.commands++;
    return 0;
}

/* ---- generic commands and scripts ----------------------------------------------------------------------------- */

/* One command in flight. A copy of the arguments is kept when the command may have to be sent again: an EVALSHA
 * (NOSCRIPT turns it into an EVAL) and every command outside single mode (MOVED, ASK). argv[0] is the command name,
 * for EVALSHA argv[1] the SHA (or the script text on the resend); the rest point into bytes[]. argc is 0 when
 * nothing was kept. */
typedef struct cmd {
    sb_redis_t *r;
    link_t *link; /* the link it was last sent on */
    sb_redis_reply_cb cb;
    void *arg;
    const sb_redis_script_t *script; /* EVALSHA not yet resent; NULL otherwise */
    uint64_t sent_ns;                /* uv_hrtime() when handed to hiredis (0: not timed) */
    int argc;
    int redirects; /* MOVED and ASK followed so far */
    bool asking;   /* last sent behind ASKING (so is an EVAL resend) */
    const char **argv;
    size_t *argvlen;
    _Alignas(size_t) char bytes[];
} cmd_t;

static void cmd_reply(redisAsyncContext *ac, void *reply, void *privdata);

/* Allocates a cmd with room for argc argument slots and `extra` bytes of copied arguments. */
static cmd_t *cmd_new(sb_redis_t *r, int argc, size_t extra, sb_redis_reply_cb cb, void *arg)
{
    size_t slots = (size_t)argc * (sizeof(char *) + sizeof(size_t));
    cmd_t *c = sb_malloc(sizeof *c + slots + extra);
    c->r = r;
    c->link = NULL;
    c->cb = cb;
    c->arg = arg;
    c->script = NULL;
    c->argc = argc;
    c->redirects = 0;
    c->asking = false;
    c->argv = (const char **)(void *)c->bytes;
    c->argvlen = (size_t *)(void *)(c->bytes + (size_t)argc * sizeof(char *));
    return c;
}

/* A cmd holding a copy of argv[0..argc). */
static cmd_t *cmd_copy(sb_redis_t *r, int argc, const char **argv, const size_t *argvlen, sb_redis_reply_cb cb,
                       void *arg)
{
    size_t extra = 0;
    for (int i = 0; i < argc; i++)
        extra += argvlen[i];
    cmd_t *c = cmd_new(r, argc, extra, cb, arg);
    char *p = (char *)(c->argvlen + argc);
    for (int i = 0; i < argc; i++) {
        if (argvlen[i])
            memcpy(p, argv[i], argvlen[i]);
        c->argv[i] = p;
        c->argvlen[i] = argvlen[i];
        p += argvlen[i];
    }
    return c;
}

/* Calls the caller back (or logs an unanswered error reply) and frees c. */
static void cmd_finish(cmd_t *c, int err, const redisReply *rep)
{
    if (c->cb)
        c->cb(c->arg, err, rep);
    else if (rep && rep->type == REDIS_REPLY_ERROR)
        sb_log_warn("redis %s:%d: %.*s", c->link->host, c->link->port, (int)rep->len, rep->str);
    free(c);
}

static void asking_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    (void)ac;
    if (reply)
        ((sb_redis_t *)privdata)->stats.replies++;
}

/* Hands c to l's connection (behind ASKING when asking). On failure (the connection is going down) c is NOT freed
 * and SB_EUNAVAIL is returned. */
static int cmd_write(cmd_t *c, link_t *l, bool asking, int argc, const char **argv, const size_t *argvlen)
{
    sb_redis_t *r = c->r;
    if (asking) {
        if (redisAsyncCommand(l->ac, asking_reply, r, "ASKING") != REDIS_OK)
            return SB_EUNAVAIL;
        r->stats.commands++;
    }
    c->link = l;
    c->asking = asking;
    c->sent_ns = r->hist ? uv_hrtime() : 0;
    if (redisAsyncCommandArgv(l->ac, cmd_reply, c, argc, argv, argvlen) != REDIS_OK)
        return SB_EUNAVAIL;
    r->stats.commands++;
    return 0;
}

/* Sends c, which holds its arguments, to the master of its key's slot. Frees c and returns SB_EUNAVAIL when that
 * master (or, for a keyless command, every master) is not connected. */
static int cmd_route(cmd_t *c)
{
    link_t *l = route(c->r, command_slot(c->argc, c->argv, c->argvlen));
    if (!l || cmd_write(c, l, false, c->argc, c->argv, c->argvlen) != 0) {
        free(c);
        return SB_EUNAVAIL;
    }
    return 0;
}

static bool is_noscript(const redisReply *rep)
{
    return rep && rep->type == REDIS_REPLY_ERROR && rep->len >= 8 && memcmp(rep->str, "NOSCRIPT", 8) == 0;
}

/* "MOVED <slot> <host>:<port>" or "ASK <slot> <host>:<port>" (the host may be empty: the node that answered).
 * Returns whether rep is one of them, well formed, with *ask, *slot, *host (into rep), *hostlen and *port set. */
static bool parse_redirect(const redisReply *rep, bool *ask, int *slot, const char **host, size_t *hostlen, int *port)
{
    const char *p = rep->str, *end = rep->str + rep->len;
    if (rep->len > 6 && memcmp(p, "MOVED ", 6) == 0) {
        *ask = false;
        p += 6;
    } else if (rep->len > 4 && memcmp(p, "ASK ", 4) == 0) {
        *ask = true;
        p += 4;
    } else {
        return false;
    }
    long s = 0;
    const char *d = p;
    while (p < end && *p >= '0' && *p <= '9' && p - d < 6)
        s = s * 10 + (*p++ - '0');
    if (p == d || s >= NSLOTS || p == end || *p++ != ' ')
        return false;
    const char *colon = NULL;
    for (const char *q = p; q < end; q++)
        if (*q == ':')
            colon = q; /* the last one: an IPv6 address has colons of its own */
    if (!colon || colon - p > MAX_HOST || end - colon < 2 || end - colon > 6)
        return false;
    long pt = 0;
    for (const char *q = colon + 1; q < end; q++) {
        if (*q < '0' || *q > '9')
            return false;
        pt = pt * 10 + (*q - '0');
    }
    if (pt < 1 || pt > 65535)
        return false;
    *slot = (int)s;
    *host = p;
    *hostlen = (size_t)(colon - p);
    *port = (int)pt;
    return true;
}

/* Follows a MOVED or ASK reply to c: MOVED updates the slot's master (and asks for the whole map again, since a
 * resharding seldom moves one slot), ASK does not; then c goes to the named node (behind ASKING for ASK). Returns
 * false when rep is no redirection, or c has been redirected MAX_REDIRECTS times already: the caller then gets rep.
 * Returns true when c was taken care of: sent again, or (the node cannot take it) finished with SB_EUNAVAIL. */
static bool follow_redirect(cmd_t *c, const redisReply *rep)
{
    sb_redis_t *r = c->r;
    bool ask;
    int slot, port, idx;
    const char *host;
    size_t hostlen;
    if (!parse_redirect(rep, &ask, &slot, &host, &hostlen, &port))
        return false;
    if (c->redirects >= MAX_REDIRECTS) {
        sb_log_warn("redis %s:%d: %d redirections for one command, giving up: %.*s", c->link->host, c->link->port,
                    c->redirects, (int)rep->len, rep->str);
        return false;
    }
    c->redirects++;
    if (hostlen == 0) {
        host = c->link->host;
        hostlen = strlen(host);
    }
    link_t *from = c->link;
    link_t *l = node_get(r, host, hostlen, port, &idx);
    if (!l)
        return false;
    if (ask) {
        r->stats.asked++;
    } else {
        r->stats.moved++;
        if (r->slot_node)
            r->slot_node[slot] = (uint8_t)idx;
        refresh_slots(r, link_up(from) ? from : l);
    }
    if (!link_usable(l) || cmd_write(c, l, ask, c->argc, c->argv, c->argvlen) != 0)
        cmd_finish(c, SB_EUNAVAIL, NULL);
    return true;
}

static void cmd_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    cmd_t *c = privdata;
    redisReply *rep = reply;
    sb_redis_t *r = c->r;
    if (rep) {
        r->stats.replies++;
        if (c->sent_ns && r->hist)
            sb_hist_observe(r->hist, uv_hrtime() - c->sent_ns);
    }
    if (rep && rep->type == REDIS_REPLY_ERROR && c->argc && r->mode != MODE_SINGLE && !r->closing &&
        follow_redirect(c, rep))
        return;
    if (c->script && is_noscript(rep) && !r->closing && c->link->ac == ac) {
        /* The server lost (or never had) the script: the same call as EVAL, to the same node. Replies come in
         * order, so this one takes its turn behind whatever was pipelined after the EVALSHA - fine, callers do not
         * rely on ordering between different calls. */
        c->argv[0] = "EVAL";
        c->argvlen[0] = 4;
        c->argv[1] = c->script->text;
        c->argvlen[1] = strlen(c->script->text);
        c->script = NULL;
        if (cmd_write(c, c->link, c->asking, c->argc, c->argv, c->argvlen) == 0) {
            r->stats.noscript++;
            return;
        }
        rep = NULL; /* the context is going down: report it as lost */
    }
    cmd_finish(c, rep ? 0 : r->closing ? SB_ECANCELED : SB_EUNAVAIL, rep);
}

int sb_redis_command_argv(sb_redis_t *r, int argc, const char **argv, const size_t *argvlen, sb_redis_reply_cb cb,
                          void *arg)
{
    if (!r || r->closing)
        return SB_EUNAVAIL;
    SB_BUG_ON(argc < 1);
    if (r->mode != MODE_SINGLE)
        return cmd_route(cmd_copy(r, argc, argv, argvlen, cb, arg));
    link_t *l = r->nodes[0];
    if (!link_up(l))
        return SB_EUNAVAIL;
    /* hiredis formats the arguments into its output buffer at once: nothing of them needs keeping. */
    cmd_t *c = cmd_new(r, 0, 0, cb, arg);
    if (cmd_write(c, l, false, argc, argv, argvlen) != 0) {
        free(c);
        return SB_EUNAVAIL;
    }
    return 0;
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
    if (!r || r->closing)
        return SB_EUNAVAIL;
    if (r->mode == MODE_SINGLE && !link_up(r->nodes[0]))
        return SB_EUNAVAIL;
    SB_BUG_ON(nkeys < 0 || nargs < 0);
    int n = nkeys + nargs;
    char numkeys[16];
    int nk = snprintf(numkeys, sizeof numkeys, "%d", nkeys);
    size_t extra = (size_t)nk;
    for (int i = 0; i < n; i++)
        extra += lens[i];
    cmd_t *c = cmd_new(r, 3 + n, extra, cb, arg);
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
    if (r->mode != MODE_SINGLE)
        return cmd_route(c);
    if (cmd_write(c, r->nodes[0], false, c->argc, c->argv, c->argvlen) != 0) {
        free(c);
        return SB_EUNAVAIL;
    }
    return 0;
}

void sb_redis_set_histogram(sb_redis_t *r, sb_hist_t *h)
{
    r->hist = h;
}

void sb_redis_get_stats(const sb_redis_t *r, sb_redis_stats_t *out)
{
    *out = r->stats;
    out->nodes_up = 0;
    for (int i = 0; i < r->nnodes; i++)
        out->nodes_up += link_up(r->nodes[i]);
}

/* ---- the subscriber ------------------------------------------------------------------------------------------- */

typedef struct subchan {
    sb_hnode_t node;
    int refs; /* sb_redis_subscribe calls not yet undone */
    size_t len;
    char name[];
} subchan_t;

struct sb_redis_sub {
    link_t *link;
    sb_htable_t chans; /* subchan_t by name */
    void (*on_message)(void *, const char *, size_t, const char *, size_t);
    void (*on_state)(void *, bool);
    void *arg;
    bool closing;
    bool up;        /* on_state(true) was the last call */
    size_t pending; /* confirmations of the connection's first SUBSCRIBE still to come before on_state(true) */
};

static bool chan_eq(const sb_hnode_t *n, const void *key)
{
    const subchan_t *c = sb_container_of(n, subchan_t, node);
    const sb_str_t *k = key;
    return c->len == k->len && memcmp(c->name, k->p, k->len) == 0;
}

static subchan_t *chan_find(const sb_redis_sub_t *s, const char *name, size_t len)
{
    sb_str_t k = sb_str(name, len);
    sb_hnode_t *n = sb_htable_find(&s->chans, sb_hash_bytes(name, len), chan_eq, &k);
    return n ? sb_container_of(n, subchan_t, node) : NULL;
}

static void sub_reply(redisAsyncContext *ac, void *reply, void *privdata);

/* Sends `verb` (SUBSCRIBE or UNSUBSCRIBE) for n channels on the subscriber's connection, which is up. Returns
 * whether it was handed to hiredis. */
static bool sub_send(sb_redis_sub_t *s, const char *verb, size_t n, const char **names, const size_t *lens)
{
    const char **argv = sb_malloc((n + 1) * sizeof *argv);
    size_t *argvlen = sb_malloc((n + 1) * sizeof *argvlen);
    argv[0] = verb;
    argvlen[0] = strlen(verb);
    memcpy(argv + 1, names, n * sizeof *names);
    memcpy(argvlen + 1, lens, n * sizeof *lens);
    /* hiredis keeps one callback per channel, taken from SUBSCRIBE; UNSUBSCRIBE has none of its own. */
    bool sent = redisAsyncCommandArgv(s->link->ac, sub_reply, s, (int)n + 1, argv, argvlen) == REDIS_OK;
    free(argv);
    free(argvlen);
    return sent;
}

static bool sub_send_one(sb_redis_sub_t *s, const char *verb, const char *name, size_t len)
{
    return sub_send(s, verb, 1, &name, &len);
}

static void sub_set_up(sb_redis_sub_t *s, bool up)
{
    if (s->up == up)
        return;
    s->up = up;
    if (s->on_state)
        s->on_state(s->arg, up);
}

/* Every push of the subscribed channels: ["message", channel, payload], ["subscribe", channel, count],
 * ["unsubscribe", channel, count]. NULL (the connection went away) is handled by the link's down hook. */
static void sub_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    sb_redis_sub_t *s = privdata;
    redisReply *rep = reply;
    (void)ac;
    if (!rep || s->closing || rep->type != REDIS_REPLY_ARRAY || rep->elements < 3)
        return;
    const redisReply *kind = rep->element[0], *ch = rep->element[1];
    if (kind->type != REDIS_REPLY_STRING || ch->type != REDIS_REPLY_STRING)
        return;
    if (word_is(kind->str, kind->len, "message")) {
        const redisReply *payload = rep->element[2];
        if (payload->type == REDIS_REPLY_STRING && chan_find(s, ch->str, ch->len)) /* not one unsubscribed since */
            s->on_message(s->arg, ch->str, ch->len, payload->str, payload->len);
    } else if (word_is(kind->str, kind->len, "subscribe")) {
        if (s->pending > 0 && --s->pending == 0)
            sub_set_up(s, true);
    } else if (word_is(kind->str, kind->len, "unsubscribe")) {
        /* Subscribed again before this confirmation came: hiredis has just dropped the channel's callback, so the
         * channel is asked for once more. */
        if (chan_find(s, ch->str, ch->len) && link_up(s->link))
            sub_send_one(s, "SUBSCRIBE", ch->str, ch->len);
    }
}

/* With no channel to confirm, a PING's answer says "up": from a reply callback, where hiredis lets the caller close
 * the subscriber (not from the connect callback, where freeing the context under hiredis's feet is not safe). */
static void sub_ping_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    sb_redis_sub_t *s = privdata;
    (void)ac;
    if (reply && !s->closing)
        sub_set_up(s, true);
}

/* The connection is (again) up: every channel is subscribed in one SUBSCRIBE, and the caller hears "up" once Redis
 * has confirmed them all. */
static void sub_link_up(link_t *l)
{
    sb_redis_sub_t *s = l->owner;
    size_t n = s->chans.n;
    if (n == 0) {
        redisAsyncCommand(l->ac, sub_ping_reply, s, "PING");
        return;
    }
    const char **names = sb_malloc(n * sizeof *names);
    size_t *lens = sb_malloc(n * sizeof *lens);
    size_t i = 0, pos = 0;
    for (sb_hnode_t *h; (h = sb_htable_next(&s->chans, &pos)) != NULL && i < n; i++) {
        subchan_t *c = sb_container_of(h, subchan_t, node);
        names[i] = c->name;
        lens[i] = c->len;
    }
    if (sub_send(s, "SUBSCRIBE", i, names, lens))
        s->pending = i;
    free(names);
    free(lens);
}

static void sub_link_down(link_t *l)
{
    sb_redis_sub_t *s = l->owner;
    s->pending = 0;
    sub_set_up(s, false);
}

static void sub_link_closed(link_t *l)
{
    sb_redis_sub_t *s = l->owner;
    sb_htable_cleanup(&s->chans);
    free(s);
}

static const link_ops_t sub_ops = {sub_link_up, sub_link_down, sub_link_closed};

sb_redis_sub_t *sb_redis_sub_create(uv_loop_t *loop, const char *host, int port,
                                    void (*on_message)(void *, const char *, size_t, const char *, size_t),
                                    void (*on_state)(void *, bool up), void *arg)
{
    sb_redis_sub_t *s = sb_calloc(1, sizeof *s);
    sb_htable_init(&s->chans);
    s->on_message = on_message;
    s->on_state = on_state;
    s->arg = arg;
    s->link = link_open(loop, host, strlen(host), port, "redis subscriber", &sub_ops, s);
    return s;
}

void sb_redis_sub_close(sb_redis_sub_t *s)
{
    if (!s)
        return;
    s->closing = true;
    size_t pos = 0;
    for (sb_hnode_t *h; (h = sb_htable_next(&s->chans, &pos)) != NULL;) {
        sb_htable_remove_at(&s->chans, &pos);
        free(sb_container_of(h, subchan_t, node));
    }
    link_close(s->link);
}

int sb_redis_subscribe(sb_redis_sub_t *s, const char *channel, size_t len)
{
    if (s->closing)
        return SB_ECLOSED;
    if (len == 0 || len > MAX_CHANNEL)
        return SB_EINVAL;
    subchan_t *c = chan_find(s, channel, len);
    if (c) {
        c->refs++;
        return 0;
    }
    c = sb_malloc(sizeof *c + len);
    c->refs = 1;
    c->len = len;
    memcpy(c->name, channel, len);
    c->node.hash = sb_hash_bytes(channel, len);
    sb_htable_insert(&s->chans, &c->node);
    if (link_up(s->link))
        sub_send_one(s, "SUBSCRIBE", c->name, c->len); /* if it fails, the connection is going down: sent on return */
    return 0;
}

int sb_redis_unsubscribe(sb_redis_sub_t *s, const char *channel, size_t len)
{
    if (s->closing)
        return SB_ECLOSED;
    subchan_t *c = chan_find(s, channel, len);
    if (!c)
        return SB_ENOENT;
    if (--c->refs > 0)
        return 0;
    sb_htable_remove(&s->chans, &c->node);
    if (link_up(s->link))
        sub_send_one(s, "UNSUBSCRIBE", c->name, c->len);
    free(c);
    return 0;
}

bool sb_redis_sub_up(const sb_redis_sub_t *s)
{
    return s && !s->closing && s->up;
}
