/* The per-shard actor runtime; see actor.h for the contract.
 *
 * Data structures, chosen for the hot path (a same-shard send and its handling):
 *  - an actor is one allocation: its header followed by the kind's state;
 *  - the actor table is an sb_htable keyed by id; ids are never reused, so a stale id simply misses; keyed actors
 *    are also in a second table by (kind, key), and on a list from least to most recently active, which
 *    passivation walks from its old end;
 *  - mailboxes and the run queue are intrusive singly-linked FIFOs;
 *  - timers are a binary min-heap ordered by (due time, id), each timer also linked into its actor's list so
 *    stopping an actor cancels them. */
#include "actors/actor.h"

#include "proto/err.h"
#include "proto/htable.h"
#include "proto/list.h"
#include "proto/mem.h"

#include <string.h>

enum {
    A_QUEUED = 1 << 0,    /* on the run queue */
    A_RUNNING = 1 << 1,   /* a handler of it is on the stack */
    A_DEAD = 1 << 2,      /* stopped; memory freed once off the run queue */
    A_STOPPING = 1 << 3,  /* sb_actor_stop() called: stop after the current message */
    A_SUSPENDED = 1 << 4, /* backing off after repeated failures */
    A_NEEDS_INIT = 1 << 5 /* init failed at a restart; retried when the backoff ends */
};

#define FAIL_WINDOW_MS 1000
#define FAIL_FREE_RESTARTS 3
#define BACKOFF_MIN_MS 10
#define BACKOFF_MAX_MS 30000

typedef struct sb_timer {
    uint64_t when;
    uint64_t repeat;
    uint64_t tag;
    uint64_t id;
    sb_actor_t *actor;
    struct sb_timer *next; /* the actor's timers */
    size_t heap_idx;
    bool resume;           /* internal: ends a supervision backoff */
} sb_timer_t;

struct sb_actor {
    sb_hnode_t idnode;
    sb_actor_id_t id;
    const sb_actor_kind_t *kind;
    sb_rt_t *rt;
    const void *arg;
    sb_hnode_t keynode; /* keyed actors: */
    uint64_t key;
    sb_list_t lru;      /* on rt->idle while keyed, least recently active first */
    uint64_t last_active;
    sb_msg_t *mb_head, *mb_tail;
    sb_actor_t *rq_next;
    sb_timer_t *timers;
    uint64_t last_fail_ms;
    uint32_t mb_len;
    uint32_t restarts;
    uint16_t flags;
    uint16_t streak;
    _Alignas(16) unsigned char state[];
};

struct sb_rt {
    unsigned shard;
    sb_rt_port_t port;
    uint64_t now;
    uint64_t next_local;
    uint64_t next_timer_id;

    sb_htable_t table; /* by id */
    sb_htable_t keyed; /* by (kind, key) */
    sb_list_t idle;    /* keyed actors, least recently active first */
    uint64_t idle_timeout;
    void *env;
    bool closed;       /* sb_rt_close: no actor is activated any more */

    sb_actor_t *rq_head, *rq_tail;
    sb_actor_t *current;

    sb_timer_t **heap;
    size_t heap_len, heap_cap;

    uint64_t mailbox_depth, processed, restarts, dead_letters, activations, passivations;
};

/* ---- actor tables ---------------------------------------------------------------------------------------------- */

static bool id_eq(const sb_hnode_t *n, const void *key)
{
    return sb_container_of(n, sb_actor_t, idnode)->id == *(const sb_actor_id_t *)key;
}

static sb_actor_t *table_get(const sb_rt_t *rt, sb_actor_id_t id)
{
    sb_hnode_t *n = sb_htable_find(&rt->table, sb_hash_u64(id), id_eq, &id);
    return n ? sb_container_of(n, sb_actor_t, idnode) : NULL;
}

typedef struct kkey {
    const sb_actor_kind_t *kind;
    uint64_t key;
} kkey_t;

static uint64_t kkey_hash(const sb_actor_kind_t *kind, uint64_t key)
{
    return sb_hash_u64(key ^ sb_hash_u64((uint64_t)(uintptr_t)kind));
}

static bool kkey_eq(const sb_hnode_t *n, const void *key)
{
    const sb_actor_t *a = sb_container_of(n, sb_actor_t, keynode);
    const kkey_t *k = key;
    return a->kind == k->kind && a->key == k->key;
}

static sb_actor_t *keyed_get(const sb_rt_t *rt, const sb_actor_kind_t *kind, uint64_t key)
{
    kkey_t k = {kind, key};
    sb_hnode_t *n = sb_htable_find(&rt->keyed, kkey_hash(kind, key), kkey_eq, &k);
    return n ? sb_container_of(n, sb_actor_t, keynode) : NULL;
}

/* A message thrown away unhandled: its drop hook releases what its payload owns. */
static void msg_discard(sb_rt_t *rt, sb_msg_t *msg)
{
    if (msg->drop)
        msg->drop(msg);
    sb_msg_free(msg);
    rt->dead_letters++;
}

/* ---- run queue and mailboxes ---------------------------------------------------------------------------------- */

static void rq_push(sb_rt_t *rt, sb_actor_t *a)
{
    bool was_empty = rt->rq_head == NULL;
    a->flags |= A_QUEUED;
    a->rq_next = NULL;
    if (rt->rq_tail)
        rt->rq_tail->rq_next = a;
    else
        rt->rq_head = a;
    rt->rq_tail = a;
    if (was_empty && !rt->current && rt->port.wake)
        rt->port.wake(rt->port.ctx);
}

static sb_actor_t *rq_pop(sb_rt_t *rt)
{
    sb_actor_t *a = rt->rq_head;
    if (a) {
        rt->rq_head = a->rq_next;
        if (!rt->rq_head)
            rt->rq_tail = NULL;
        a->flags &= (uint16_t)~A_QUEUED;
    }
    return a;
}

static void mailbox_put(sb_rt_t *rt, sb_actor_t *a, sb_msg_t *msg)
{
    msg->next = NULL;
    if (a->mb_tail)
        a->mb_tail->next = msg;
    else
        a->mb_head = msg;
    a->mb_tail = msg;
    a->mb_len++;
    rt->mailbox_depth++;
    if (!(a->flags & (A_QUEUED | A_RUNNING | A_SUSPENDED)))
        rq_push(rt, a);
}

static sb_msg_t *mailbox_take(sb_rt_t *rt, sb_actor_t *a)
{
    sb_msg_t *msg = a->mb_head;
    a->mb_head = msg->next;
    if (!a->mb_head)
        a->mb_tail = NULL;
    a->mb_len--;
    rt->mailbox_depth--;
    return msg;
}

/* ---- timers --------------------------------------------------------------------------------------------------- */

static inline bool timer_before(const sb_timer_t *x, const sb_timer_t *y)
{
    return x->when < y->when || (x->when == y->when && x->id < y->id);
}

static void heap_set(sb_rt_t *rt, size_t i, sb_timer_t *t)
{
    rt->heap[i] = t;
    t->heap_idx = i;
}

static void heap_up(sb_rt_t *rt, size_t i)
{
    sb_timer_t *t = rt->heap[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!timer_before(t, rt->heap[parent]))
            break;
        heap_set(rt, i, rt->heap[parent]);
        i = parent;
    }
    heap_set(rt, i, t);
}

static void heap_down(sb_rt_t *rt, size_t i)
{
    sb_timer_t *t = rt->heap[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= rt->heap_len)
            break;
        if (c + 1 < rt->heap_len && timer_before(rt->heap[c + 1], rt->heap[c]))
            c++;
        if (!timer_before(rt->heap[c], t))
            break;
        heap_set(rt, i, rt->heap[c]);
        i = c;
    }
    heap_set(rt, i, t);
}

static void heap_insert(sb_rt_t *rt, sb_timer_t *t)
{
    if (rt->heap_len == rt->heap_cap) {
        rt->heap_cap = rt->heap_cap ? rt->heap_cap * 2 : 64;
        rt->heap = sb_realloc(rt->heap, rt->heap_cap * sizeof *rt->heap);
    }
    rt->heap[rt->heap_len] = t;
    t->heap_idx = rt->heap_len++;
    heap_up(rt, t->heap_idx);
}

static void heap_remove(sb_rt_t *rt, sb_timer_t *t)
{
    size_t i = t->heap_idx;
    sb_timer_t *last = rt->heap[--rt->heap_len];
    if (i == rt->heap_len)
        return;
    heap_set(rt, i, last);
    if (i > 0 && timer_before(last, rt->heap[(i - 1) / 2]))
        heap_up(rt, i);
    else
        heap_down(rt, i);
}

static sb_timer_t *timer_arm(sb_rt_t *rt, sb_actor_t *a, uint64_t delay, uint64_t repeat, uint64_t tag, bool resume)
{
    sb_timer_t *t = sb_malloc(sizeof *t);
    t->when = rt->now + delay;
    t->repeat = repeat;
    t->tag = tag;
    t->id = ++rt->next_timer_id;
    t->actor = a;
    t->resume = resume;
    t->next = a->timers;
    a->timers = t;
    bool earliest = rt->heap_len == 0 || timer_before(t, rt->heap[0]);
    heap_insert(rt, t);
    if (earliest && rt->port.wake)
        rt->port.wake(rt->port.ctx);
    return t;
}

static void timer_unlink(sb_actor_t *a, sb_timer_t *t)
{
    for (sb_timer_t **pp = &a->timers; *pp; pp = &(*pp)->next) {
        if (*pp == t) {
            *pp = t->next;
            return;
        }
    }
    SB_BUG_ON(1);
}

static void timers_cancel_all(sb_rt_t *rt, sb_actor_t *a)
{
    while (a->timers) {
        sb_timer_t *t = a->timers;
        a->timers = t->next;
        heap_remove(rt, t);
        free(t);
    }
}

/* ---- life cycle ----------------------------------------------------------------------------------------------- */

sb_rt_t *sb_rt_create(unsigned shard, const sb_rt_port_t *port)
{
    sb_rt_t *rt = sb_calloc(1, sizeof *rt);
    SB_BUG_ON(shard >= (1u << SB_ACTOR_SHARD_BITS));
    rt->shard = shard;
    if (port)
        rt->port = *port;
    sb_htable_init(&rt->table);
    sb_htable_init(&rt->keyed);
    sb_list_init(&rt->idle);
    return rt;
}

/* Releases everything the actor holds and takes it out of the table. Its memory is freed here unless it is still
 * on the run queue or running, in which case whoever holds it frees it (it is marked dead). */
static void actor_finish(sb_rt_t *rt, sb_actor_t *a)
{
    timers_cancel_all(rt, a);
    if (a->kind->stop && !(a->flags & A_NEEDS_INIT))
        a->kind->stop(a, a->state);
    while (a->mb_head)
        msg_discard(rt, mailbox_take(rt, a));
    sb_htable_remove(&rt->table, &a->idnode);
    if (sb_list_linked(&a->lru)) {
        sb_htable_remove(&rt->keyed, &a->keynode);
        sb_list_remove(&a->lru);
    }
    a->flags |= A_DEAD;
    if (!(a->flags & (A_QUEUED | A_RUNNING)))
        free(a);
}

void sb_rt_close(sb_rt_t *rt)
{
    rt->closed = true;
    /* Take everyone off the run queue first, so actor_finish() frees them directly. */
    for (sb_actor_t *a; (a = rq_pop(rt));)
        if (a->flags & A_DEAD)
            free(a);
    /* Every actor, then each stopped: stopping one takes it out of the table, which may shrink under an iteration. */
    size_t n = 0, pos = 0;
    sb_actor_t **all = sb_malloc((rt->table.n ? rt->table.n : 1) * sizeof *all);
    for (sb_hnode_t *node; (node = sb_htable_next(&rt->table, &pos));)
        all[n++] = sb_container_of(node, sb_actor_t, idnode);
    for (size_t i = 0; i < n; i++)
        actor_finish(rt, all[i]);
    free(all);
}

void sb_rt_destroy(sb_rt_t *rt)
{
    if (!rt)
        return;
    sb_rt_close(rt);
    SB_BUG_ON(rt->heap_len != 0);
    free(rt->heap);
    sb_htable_cleanup(&rt->table);
    sb_htable_cleanup(&rt->keyed);
    free(rt);
}

void sb_rt_set_time(sb_rt_t *rt, uint64_t now_ms) { rt->now = now_ms; }
void sb_rt_set_env(sb_rt_t *rt, void *env) { rt->env = env; }
void *sb_rt_env(const sb_rt_t *rt) { return rt->env; }
void sb_rt_set_idle_timeout(sb_rt_t *rt, uint64_t ms) { rt->idle_timeout = ms; }
uint64_t sb_rt_time(const sb_rt_t *rt) { return rt->now; }
unsigned sb_rt_shard(const sb_rt_t *rt) { return rt->shard; }

/* Spawns an actor; keyed (into the key table and the idle list) when key is not NULL. */
static int spawn(sb_rt_t *rt, const sb_actor_kind_t *kind, const void *arg, const uint64_t *key, sb_actor_id_t *id)
{
    sb_actor_t *a = sb_calloc(1, sizeof *a + kind->state_size);
    a->id = ((sb_actor_id_t)rt->shard << SB_ACTOR_LOCAL_BITS) | ++rt->next_local;
    a->kind = kind;
    a->rt = rt;
    a->arg = arg;
    a->idnode.hash = sb_hash_u64(a->id);
    sb_htable_insert(&rt->table, &a->idnode);
    sb_list_init(&a->lru);
    if (key) {
        a->key = *key;
        a->keynode.hash = kkey_hash(kind, *key);
        sb_htable_insert(&rt->keyed, &a->keynode);
        a->last_active = rt->now;
        sb_list_push_back(&rt->idle, &a->lru);
    }
    if (kind->init) {
        sb_actor_t *prev = rt->current;
        a->flags |= A_RUNNING;
        rt->current = a;
        int rc = kind->init(a, a->state, arg);
        rt->current = prev;
        a->flags &= (uint16_t)~A_RUNNING;
        if (rc < 0) {
            a->flags |= A_NEEDS_INIT; /* init failed: there is nothing for stop() to release */
            actor_finish(rt, a);
            return rc;
        }
        if (a->flags & A_STOPPING) { /* stopped itself inside init */
            actor_finish(rt, a);
            if (id)
                *id = 0;
            return 0;
        }
        if (a->mb_head && !(a->flags & A_QUEUED))
            rq_push(rt, a);
    }
    if (id)
        *id = a->id;
    return 0;
}

int sb_rt_spawn(sb_rt_t *rt, const sb_actor_kind_t *kind, const void *arg, sb_actor_id_t *id)
{
    return rt->closed ? SB_ECLOSED : spawn(rt, kind, arg, NULL, id);
}

sb_actor_id_t sb_rt_find(const sb_rt_t *rt, const sb_actor_kind_t *kind, uint64_t key)
{
    sb_actor_t *a = keyed_get(rt, kind, key);
    return a && !(a->flags & (A_DEAD | A_STOPPING)) ? a->id : 0;
}

int sb_rt_ensure(sb_rt_t *rt, const sb_actor_kind_t *kind, uint64_t key, sb_actor_id_t *id)
{
    sb_actor_t *a = keyed_get(rt, kind, key);
    if (a && !(a->flags & (A_DEAD | A_STOPPING))) {
        if (id)
            *id = a->id;
        return 0;
    }
    if (rt->closed)
        return SB_ECLOSED;
    if (a) /* stopping: it leaves the key to its successor now */
        sb_htable_remove(&rt->keyed, &a->keynode), sb_list_remove(&a->lru);
    sb_actor_id_t got = 0;
    int rc = spawn(rt, kind, NULL, &key, &got);
    if (rc == 0 && got)
        rt->activations++;
    if (id)
        *id = got;
    return rc < 0 ? rc : got ? 0 : SB_ENOENT;
}

int sb_rt_kill(sb_rt_t *rt, sb_actor_id_t id)
{
    sb_actor_t *a = sb_actor_id_shard(id) == rt->shard ? table_get(rt, id) : NULL;
    if (!a)
        return SB_ENOENT;
    if (a->flags & A_RUNNING)
        a->flags |= A_STOPPING;
    else
        actor_finish(rt, a);
    return 0;
}

/* ---- messages ------------------------------------------------------------------------------------------------- */

sb_msg_t *sb_msg_new(uint32_t type, size_t len)
{
    SB_BUG_ON(len > UINT32_MAX);
    sb_msg_t *msg = sb_malloc(sizeof *msg + len);
    msg->next = NULL;
    msg->to = msg->from = 0;
    msg->kind = NULL;
    msg->key = 0;
    msg->drop = NULL;
    msg->type = type;
    msg->len = (uint32_t)len;
    return msg;
}

void sb_msg_free(sb_msg_t *msg) { free(msg); }

int sb_rt_post(sb_rt_t *rt, sb_actor_id_t from, sb_actor_id_t to, sb_msg_t *msg)
{
    unsigned shard = sb_actor_id_shard(to);
    msg->from = from;
    msg->to = to;
    msg->kind = NULL;
    if (shard != rt->shard) {
        int rc = rt->port.remote_send ? rt->port.remote_send(rt->port.ctx, shard, msg) : SB_ENOENT;
        if (rc < 0)
            msg_discard(rt, msg);
        return rc;
    }
    sb_actor_t *a = table_get(rt, to);
    if (!a || (a->flags & A_STOPPING)) {
        msg_discard(rt, msg);
        return SB_ENOENT;
    }
    mailbox_put(rt, a, msg);
    return 0;
}

int sb_rt_send(sb_rt_t *rt, sb_actor_id_t from, sb_actor_id_t to, uint32_t type, const void *data, size_t len)
{
    sb_msg_t *msg = sb_msg_new(type, len);
    if (len)
        memcpy(msg->data, data, len);
    return sb_rt_post(rt, from, to, msg);
}

/* A message for (kind, key) on this runtime: to the actor, activated if need be. */
static int deliver_key(sb_rt_t *rt, sb_msg_t *msg)
{
    sb_actor_id_t id;
    int rc = sb_rt_ensure(rt, msg->kind, msg->key, &id);
    if (rc < 0) {
        msg_discard(rt, msg);
        return rc;
    }
    msg->to = id;
    mailbox_put(rt, table_get(rt, id), msg);
    return 0;
}

int sb_rt_post_key(sb_rt_t *rt, unsigned shard, const sb_actor_kind_t *kind, uint64_t key, sb_msg_t *msg)
{
    msg->to = 0;
    msg->kind = kind;
    msg->key = key;
    if (shard == rt->shard)
        return deliver_key(rt, msg);
    int rc = rt->port.remote_send ? rt->port.remote_send(rt->port.ctx, shard, msg) : SB_ENOENT;
    if (rc < 0)
        msg_discard(rt, msg);
    return rc;
}

int sb_rt_send_key(sb_rt_t *rt, unsigned shard, const sb_actor_kind_t *kind, uint64_t key, uint32_t type,
                   const void *data, size_t len)
{
    sb_msg_t *msg = sb_msg_new(type, len);
    if (len)
        memcpy(msg->data, data, len);
    msg->from = 0;
    return sb_rt_post_key(rt, shard, kind, key, msg);
}

void sb_rt_deliver(sb_rt_t *rt, sb_msg_t *msg)
{
    if (!msg->to && msg->kind) {
        deliver_key(rt, msg);
        return;
    }
    sb_actor_t *a = table_get(rt, msg->to);
    if (!a || (a->flags & A_STOPPING)) {
        msg_discard(rt, msg);
        return;
    }
    mailbox_put(rt, a, msg);
}

/* ---- running -------------------------------------------------------------------------------------------------- */

static void suspend(sb_rt_t *rt, sb_actor_t *a)
{
    unsigned shift = a->streak - FAIL_FREE_RESTARTS - 1;
    uint64_t ms = shift >= 12 ? BACKOFF_MAX_MS : (uint64_t)BACKOFF_MIN_MS << shift;
    if (ms > BACKOFF_MAX_MS)
        ms = BACKOFF_MAX_MS;
    a->flags |= A_SUSPENDED;
    timer_arm(rt, a, ms, 0, 0, true);
}

/* The actor failed (a handler or init returned < 0): restart it from init, backing off if it keeps failing. */
static void fail(sb_rt_t *rt, sb_actor_t *a)
{
    rt->restarts++;
    a->restarts++;
    if (a->last_fail_ms && rt->now - a->last_fail_ms < FAIL_WINDOW_MS) {
        if (a->streak < UINT16_MAX)
            a->streak++;
    } else {
        a->streak = 1;
    }
    a->last_fail_ms = rt->now;

    timers_cancel_all(rt, a);
    if (a->kind->stop && !(a->flags & A_NEEDS_INIT))
        a->kind->stop(a, a->state);
    memset(a->state, 0, a->kind->state_size);
    a->flags &= (uint16_t)~A_NEEDS_INIT;
    if (a->kind->init && a->kind->init(a, a->state, a->arg) < 0) {
        a->flags |= A_NEEDS_INIT;
        if (a->streak <= FAIL_FREE_RESTARTS)
            a->streak = FAIL_FREE_RESTARTS + 1; /* a failing init always backs off */
    }
    if (a->streak > FAIL_FREE_RESTARTS)
        suspend(rt, a);
}

static void resume(sb_rt_t *rt, sb_actor_t *a)
{
    a->flags &= (uint16_t)~A_SUSPENDED;
    if (a->flags & A_NEEDS_INIT) {
        memset(a->state, 0, a->kind->state_size);
        a->flags &= (uint16_t)~A_NEEDS_INIT;
        a->flags |= A_RUNNING;
        rt->current = a;
        int rc = a->kind->init(a, a->state, a->arg);
        rt->current = NULL;
        a->flags &= (uint16_t)~A_RUNNING;
        if (rc < 0) {
            a->flags |= A_NEEDS_INIT;
            rt->restarts++;
            a->restarts++;
            if (a->streak < UINT16_MAX)
                a->streak++;
            a->last_fail_ms = rt->now;
            suspend(rt, a);
            return;
        }
    }
    if (a->mb_head && !(a->flags & A_QUEUED))
        rq_push(rt, a);
}

static int dispatch(sb_actor_t *a, sb_msg_t *msg)
{
    const sb_actor_kind_t *k = a->kind;
    sb_actor_handler_fn fn = msg->type < k->nhandlers ? k->handlers[msg->type] : NULL;
    if (!fn)
        fn = k->unhandled;
    if (!fn) {
        if (msg->drop)
            msg->drop(msg);
        msg->drop = NULL;
        a->rt->dead_letters++;
        return 0;
    }
    return fn(a, a->state, msg);
}

size_t sb_rt_run(sb_rt_t *rt, size_t max)
{
    size_t done = 0;
    while (done < max && rt->rq_head) {
        sb_actor_t *a = rq_pop(rt);
        if (a->flags & A_DEAD) {
            free(a);
            continue;
        }
        a->flags |= A_RUNNING;
        rt->current = a;
        for (unsigned n = 0; n < SB_RT_TURN_BUDGET && done < max && a->mb_head; n++) {
            sb_msg_t *msg = mailbox_take(rt, a);
            int rc = dispatch(a, msg);
            sb_msg_free(msg);
            done++;
            if (a->flags & A_STOPPING)
                break;
            if (rc < 0) {
                fail(rt, a);
                if (a->flags & A_SUSPENDED)
                    break;
            }
        }
        rt->current = NULL;
        a->flags &= (uint16_t)~A_RUNNING;
        if (sb_list_linked(&a->lru)) { /* keyed: now the most recently active */
            a->last_active = rt->now;
            sb_list_remove(&a->lru);
            sb_list_push_back(&rt->idle, &a->lru);
        }
        if (a->flags & A_STOPPING)
            actor_finish(rt, a);
        else if (a->mb_head && !(a->flags & A_SUSPENDED))
            rq_push(rt, a);
    }
    rt->processed += done;
    return done;
}

bool sb_rt_has_work(const sb_rt_t *rt) { return rt->rq_head != NULL; }

int64_t sb_rt_next_timer(const sb_rt_t *rt)
{
    if (!rt->heap_len)
        return -1;
    uint64_t when = rt->heap[0]->when;
    return when <= rt->now ? 0 : (int64_t)(when - rt->now);
}

size_t sb_rt_fire_timers(sb_rt_t *rt)
{
    size_t fired = 0;
    while (rt->heap_len && rt->heap[0]->when <= rt->now) {
        sb_timer_t *t = rt->heap[0];
        sb_actor_t *a = t->actor;
        fired++;
        if (t->resume) {
            heap_remove(rt, t);
            timer_unlink(a, t);
            free(t);
            resume(rt, a);
            continue;
        }
        sb_msg_t *msg = sb_msg_new(SB_MSG_TIMER, sizeof(uint64_t));
        memcpy(msg->data, &t->tag, sizeof t->tag);
        msg->from = msg->to = a->id;
        if (t->repeat) {
            t->when += t->repeat;
            if (t->when <= rt->now)
                t->when = rt->now + t->repeat; /* fell behind: do not fire a burst */
            heap_down(rt, 0);
        } else {
            heap_remove(rt, t);
            timer_unlink(a, t);
            free(t);
        }
        mailbox_put(rt, a, msg);
    }
    return fired;
}

size_t sb_rt_passivate(sb_rt_t *rt)
{
    size_t gone = 0;
    if (!rt->idle_timeout)
        return 0;
    sb_list_t refused;
    sb_list_init(&refused);
    for (sb_list_t *l; (l = sb_list_first(&rt->idle));) {
        sb_actor_t *a = sb_container_of(l, sb_actor_t, lru);
        if (rt->now - a->last_active < rt->idle_timeout)
            break; /* the rest were active later */
        sb_list_remove(l);
        if ((a->flags & (A_QUEUED | A_RUNNING | A_SUSPENDED)) || a->mb_head ||
            (a->kind->can_passivate && !a->kind->can_passivate(a, a->state))) {
            a->last_active = rt->now; /* asked again one idle timeout from now */
            sb_list_push_back(&refused, l);
            continue;
        }
        sb_list_push_back(&rt->idle, l); /* actor_finish takes it off again */
        actor_finish(rt, a);
        rt->passivations++;
        gone++;
    }
    sb_list_foreach_safe(it, nx, &refused)
    {
        sb_list_remove(it);
        sb_list_push_back(&rt->idle, it);
    }
    return gone;
}

size_t sb_rt_evict(sb_rt_t *rt, bool (*match)(void *arg, int64_t tenant), void *arg, bool force)
{
    size_t n = 0, left = 0;
    sb_actor_t **hit = NULL;
    sb_list_foreach_safe(it, nx, &rt->idle)
    {
        sb_actor_t *a = sb_container_of(it, sb_actor_t, lru);
        int64_t t = a->kind->tenant && !(a->flags & (A_DEAD | A_NEEDS_INIT)) ? a->kind->tenant(a, a->state) : 0;
        if (t <= 0 || !match(arg, t))
            continue;
        if (!force && ((a->flags & (A_QUEUED | A_RUNNING | A_SUSPENDED)) || a->mb_head ||
                       (a->kind->can_passivate && !a->kind->can_passivate(a, a->state)))) {
            left++;
            continue;
        }
        hit = sb_realloc(hit, (n + 1) * sizeof *hit);
        hit[n++] = a;
    }
    for (size_t i = 0; i < n; i++) { /* after the walk: stopping one may post to another */
        if (hit[i]->flags & A_DEAD)
            continue;
        actor_finish(rt, hit[i]);
        rt->passivations++;
    }
    free(hit);
    return left;
}

void sb_rt_get_stats(const sb_rt_t *rt, sb_rt_stats_t *out)
{
    out->actors = rt->table.n;
    out->mailbox_depth = rt->mailbox_depth;
    out->processed = rt->processed;
    out->restarts = rt->restarts;
    out->dead_letters = rt->dead_letters;
    out->timers = rt->heap_len;
    out->activations = rt->activations;
    out->passivations = rt->passivations;
}

static void fill_info(const sb_actor_t *a, sb_actor_info_t *out)
{
    out->id = a->id;
    out->kind = a->kind->name;
    out->mailbox = a->mb_len;
    out->restarts = a->restarts;
    out->suspended = (a->flags & A_SUSPENDED) != 0;
}

void sb_rt_foreach(const sb_rt_t *rt, bool (*cb)(void *arg, const sb_actor_info_t *info), void *arg)
{
    for (size_t i = 0; i < rt->table.cap; i++) {
        if (rt->table.slots[i]) {
            sb_actor_info_t info;
            fill_info(sb_container_of(rt->table.slots[i], sb_actor_t, idnode), &info);
            if (!cb(arg, &info))
                return;
        }
    }
}

int sb_rt_actor_info(const sb_rt_t *rt, sb_actor_id_t id, sb_actor_info_t *out)
{
    sb_actor_t *a = sb_actor_id_shard(id) == rt->shard ? table_get(rt, id) : NULL;
    if (!a)
        return SB_ENOENT;
    fill_info(a, out);
    return 0;
}

/* ---- from inside an actor ------------------------------------------------------------------------------------- */

sb_actor_id_t sb_actor_self(const sb_actor_t *a) { return a->id; }
sb_rt_t *sb_actor_rt(const sb_actor_t *a) { return a->rt; }
uint64_t sb_actor_key(const sb_actor_t *a) { return a->key; }

int sb_actor_send(sb_actor_t *a, sb_actor_id_t to, uint32_t type, const void *data, size_t len)
{
    return sb_rt_send(a->rt, a->id, to, type, data, len);
}

void sb_actor_stop(sb_actor_t *a) { a->flags |= A_STOPPING; }

uint64_t sb_actor_timer_start(sb_actor_t *a, uint64_t delay_ms, uint64_t repeat_ms, uint64_t tag)
{
    return timer_arm(a->rt, a, delay_ms, repeat_ms, tag, false)->id;
}

int sb_actor_timer_stop(sb_actor_t *a, uint64_t timer_id)
{
    for (sb_timer_t *t = a->timers; t; t = t->next) {
        if (t->id == timer_id && !t->resume) {
            timer_unlink(a, t);
            heap_remove(a->rt, t);
            free(t);
            return 0;
        }
    }
    return SB_ENOENT;
}
