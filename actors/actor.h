/* The actor runtime of one shard: actors, mailboxes, the run queue, timers and supervision.
 *
 * An actor is an id, a mailbox, a kind (a descriptor table of functions) and private state. The runtime runs one
 * message of one actor at a time, on the shard's thread only; nothing here is thread-safe, and nothing here does I/O.
 * The shard drives it: it calls sb_rt_run() with a budget while there is work, sb_rt_fire_timers() when the earliest
 * timer is due, and sb_rt_deliver() for messages other shards sent. Messages for actors of other shards leave through
 * the remote_send port the shard provides, so the runtime is tested on its own with a fake port and a fake clock.
 *
 * Ids carry their shard in the top 16 bits, so a sender knows where any actor lives without a lookup. Order is kept
 * per sender→receiver pair: a mailbox is FIFO and the cross-shard queue is FIFO per producing shard.
 *
 * Supervision: a handler (or init) that returns a negative code has failed. The message is dropped, the kind's stop()
 * runs, the state is zeroed and init() runs again with the spawn argument; the actor keeps its id, mailbox and
 * place. Restarts are counted. A fourth failure within a second of the previous one suspends the actor (its mailbox
 * keeps filling) for a backoff that doubles per further failure, from 10 ms up to 30 s.
 *
 * Keyed actors: an actor may be spawned under a key (a 64-bit number, unique per kind on its runtime: a tenant id,
 * a channel id). sb_rt_ensure finds it by key or spawns it, and a message can be sent to a key on any shard
 * (sb_rt_post_key): the actor is activated where the key lives when the first message arrives. A keyed actor idle
 * for the runtime's idle timeout is passivated (its kind may refuse while it has work in flight): stop() runs, its
 * memory is returned, and the next message to its key activates a new one, which loads its state again. Keyed
 * actors find what they need (their ports) through the runtime's environment pointer (sb_rt_env), set by the
 * shard. */
#ifndef SB_ACTOR_H
#define SB_ACTOR_H

#include "actors/mpsc.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef uint64_t sb_actor_id_t; /* 0 is no actor */
typedef struct sb_actor sb_actor_t;
typedef struct sb_rt sb_rt_t;

#define SB_ACTOR_SHARD_BITS 16
#define SB_ACTOR_LOCAL_BITS (64 - SB_ACTOR_SHARD_BITS)
static inline unsigned sb_actor_id_shard(sb_actor_id_t id) { return (unsigned)(id >> SB_ACTOR_LOCAL_BITS); }

/* Message type 0 is the timer tick: its payload is the uint64_t tag given to sb_actor_timer_start(). Kinds number
 * their own messages from 1. */
enum { SB_MSG_TIMER = 0 };

typedef struct sb_actor_kind sb_actor_kind_t;

typedef struct sb_msg {
    sb_mpsc_node_t qnode;  /* cross-shard queue link */
    struct sb_msg *next;   /* mailbox link */
    sb_actor_id_t to;      /* 0 when the message is for a key: */
    const sb_actor_kind_t *kind;
    uint64_t key;
    sb_actor_id_t from;
    /* Called when the message is thrown away unhandled (no such actor, the actor stopped first), for a payload that
     * owns something; NULL when nothing needs releasing. A handler that takes what the payload owns clears it. */
    void (*drop)(struct sb_msg *msg);
    uint32_t type;
    uint32_t len;          /* payload bytes */
    _Alignas(16) unsigned char data[];
} sb_msg_t;

/* A handler returns 0, or a negative code on failure (which restarts the actor). It borrows msg: the runtime frees
 * it after the handler returns. */
typedef int (*sb_actor_handler_fn)(sb_actor_t *a, void *state, sb_msg_t *msg);

struct sb_actor_kind {
    const char *name;
    size_t state_size;                     /* zeroed state the runtime allocates with the actor */
    /* Called at spawn and at every restart. arg is the spawn argument, borrowed: it must outlive the actor (NULL for
     * an actor spawned by key: it has sb_actor_key() and sb_rt_env() instead). */
    int (*init)(sb_actor_t *a, void *state, const void *arg);
    /* handlers[type] handles messages of that type; a type past nhandlers or with a NULL entry goes to
     * unhandled (if set) or is dropped and counted as a dead letter. */
    const sb_actor_handler_fn *handlers;
    size_t nhandlers;
    sb_actor_handler_fn unhandled;
    /* Called before a restart and when the actor stops; releases what init and the handlers acquired. */
    void (*stop)(sb_actor_t *a, void *state);
    /* Keyed actors idle for the idle timeout: may this one be passivated now? NULL: always. An actor that says no
     * (work in flight) is asked again one idle timeout later. */
    bool (*can_passivate)(sb_actor_t *a, void *state);
    /* The tenant this actor works for, or 0 while it does not know yet (NULL: it works for none). What lets a node
     * that gives up a slot stop that slot's actors (sb_rt_evict). */
    int64_t (*tenant)(sb_actor_t *a, void *state);
};

/* The port through which the runtime reaches other shards. remote_send takes ownership of msg when it returns 0;
 * on error the runtime frees msg. wake is called when the run queue goes from empty to non-empty or the earliest
 * timer changed, so the shard can schedule a run; it must not call back into the runtime. */
typedef struct sb_rt_port {
    void *ctx;
    int (*remote_send)(void *ctx, unsigned shard, sb_msg_t *msg);
    void (*wake)(void *ctx);
} sb_rt_port_t;

typedef struct sb_rt_stats {
    uint64_t actors;         /* live actors */
    uint64_t mailbox_depth;  /* messages waiting in all mailboxes */
    uint64_t processed;      /* messages handled since start */
    uint64_t restarts;       /* supervisor restarts since start */
    uint64_t dead_letters;   /* messages dropped: unknown target, no handler, stopped actor */
    uint64_t timers;         /* armed timers */
    uint64_t activations;    /* keyed actors spawned by key since start */
    uint64_t passivations;   /* keyed actors passivated since start */
} sb_rt_stats_t;

/* Creates the runtime of shard `shard`. port is copied. Never fails (allocation failure aborts). */
sb_rt_t *sb_rt_create(unsigned shard, const sb_rt_port_t *port);
/* Stops every actor (running their stop()) and frees every message they held; from then on no keyed actor is
 * activated (sb_rt_ensure: SB_ECLOSED) and what is sent to an actor is dropped, so the ports' late answers find
 * nobody. The runtime itself stays until sb_rt_destroy. */
void sb_rt_close(sb_rt_t *rt);
/* Closes the runtime if it is not closed yet and frees it. */
void sb_rt_destroy(sb_rt_t *rt);
/* Sets the clock the timers run on (milliseconds, monotonic). The shard sets it each loop iteration. */
void sb_rt_set_time(sb_rt_t *rt, uint64_t now_ms);
uint64_t sb_rt_time(const sb_rt_t *rt);
unsigned sb_rt_shard(const sb_rt_t *rt);

/* Creates an actor of `kind` on this runtime and runs its init(). On success stores the new id in *id (may be NULL)
 * and returns 0; if init fails the actor is not created and init's code is returned. */
int sb_rt_spawn(sb_rt_t *rt, const sb_actor_kind_t *kind, const void *arg, sb_actor_id_t *id);
/* Stops an actor of this runtime: at once if it is not running, else after its current message. Pending messages
 * are dropped. Returns 0 or SB_ENOENT. */
int sb_rt_kill(sb_rt_t *rt, sb_actor_id_t id);

/* ---- keyed actors ---- */

/* The environment keyed actors find their ports in (set by the shard; NULL by default). */
void sb_rt_set_env(sb_rt_t *rt, void *env);
void *sb_rt_env(const sb_rt_t *rt);
/* Keyed actors idle this long (ms) are passivated by sb_rt_passivate; 0 (the default): never. */
void sb_rt_set_idle_timeout(sb_rt_t *rt, uint64_t ms);
/* The keyed actor (kind, key) of this runtime, or 0. */
sb_actor_id_t sb_rt_find(const sb_rt_t *rt, const sb_actor_kind_t *kind, uint64_t key);
/* Finds the keyed actor (kind, key) or spawns it (init with arg NULL). Returns 0 and its id in *id (may be NULL), or
 * init's error (nothing is spawned). */
int sb_rt_ensure(sb_rt_t *rt, const sb_actor_kind_t *kind, uint64_t key, sb_actor_id_t *id);
/* Sends msg to the keyed actor (kind, key) on shard `shard` (this one or another), activating it there if needed.
 * Takes ownership of msg. Returns 0, or an error (the activation failed here; the remote port's error). */
int sb_rt_post_key(sb_rt_t *rt, unsigned shard, const sb_actor_kind_t *kind, uint64_t key, sb_msg_t *msg);
/* Copies len bytes of data into a new message for the keyed actor and posts it (from = 0). */
int sb_rt_send_key(sb_rt_t *rt, unsigned shard, const sb_actor_kind_t *kind, uint64_t key, uint32_t type,
                   const void *data, size_t len);
/* Passivates the keyed actors idle for the idle timeout that may go (oldest first). Returns how many went. The
 * shard calls it about once a second. */
size_t sb_rt_passivate(sb_rt_t *rt);
/* Stops the keyed actors whose tenant (their kind's tenant hook) match(arg, tenant) says go: each one that may be
 * passivated now (idle, nothing queued, its kind's can_passivate), or every one when force is set (what it had in
 * flight is dropped; its late answers find nobody). Returns how many matching actors are left (0 with force). Not
 * from inside an actor's handler. */
size_t sb_rt_evict(sb_rt_t *rt, bool (*match)(void *arg, int64_t tenant), void *arg, bool force);

/* Allocates a message with len payload bytes (uninitialized). */
sb_msg_t *sb_msg_new(uint32_t type, size_t len);
void sb_msg_free(sb_msg_t *msg);

/* Sends msg to actor `to`, on this shard or another. Takes ownership of msg in every case. Returns 0, or
 * SB_ENOENT when a local target does not exist (the message is dropped and counted), or the remote port's error. */
int sb_rt_post(sb_rt_t *rt, sb_actor_id_t from, sb_actor_id_t to, sb_msg_t *msg);
/* Copies len bytes of data into a new message and posts it. */
int sb_rt_send(sb_rt_t *rt, sb_actor_id_t from, sb_actor_id_t to, uint32_t type, const void *data, size_t len);
/* Delivers a message that arrived from another shard (msg->to is on this shard). Takes ownership. */
void sb_rt_deliver(sb_rt_t *rt, sb_msg_t *msg);

/* Handles up to max messages, round-robin over runnable actors, each actor at most SB_RT_TURN_BUDGET in a row.
 * Returns how many were handled. */
#define SB_RT_TURN_BUDGET 32
size_t sb_rt_run(sb_rt_t *rt, size_t max);
bool sb_rt_has_work(const sb_rt_t *rt);
/* Milliseconds until the earliest timer is due (0 if overdue), or -1 if no timer is armed. */
int64_t sb_rt_next_timer(const sb_rt_t *rt);
/* Fires every timer due at the runtime's current time: each becomes an SB_MSG_TIMER message in its actor's mailbox
 * (repeating timers are re-armed). Returns the number fired. */
size_t sb_rt_fire_timers(sb_rt_t *rt);

void sb_rt_get_stats(const sb_rt_t *rt, sb_rt_stats_t *out);

/* One row of an actor listing. */
typedef struct sb_actor_info {
    sb_actor_id_t id;
    const char *kind;       /* the kind's name (static) */
    uint32_t mailbox;       /* messages waiting */
    uint32_t restarts;
    bool suspended;         /* backing off after repeated failures */
} sb_actor_info_t;
/* Calls cb for each live actor, in no particular order, until cb returns false. */
void sb_rt_foreach(const sb_rt_t *rt, bool (*cb)(void *arg, const sb_actor_info_t *info), void *arg);
/* Fills *out for one actor. Returns 0 or SB_ENOENT. */
int sb_rt_actor_info(const sb_rt_t *rt, sb_actor_id_t id, sb_actor_info_t *out);

/* --- calls for an actor, from inside its own handlers --- */
sb_actor_id_t sb_actor_self(const sb_actor_t *a);
sb_rt_t *sb_actor_rt(const sb_actor_t *a);
/* The key of a keyed actor (0 for one spawned without). */
uint64_t sb_actor_key(const sb_actor_t *a);
/* Sends from this actor (sb_rt_send with from = self). */
int sb_actor_send(sb_actor_t *a, sb_actor_id_t to, uint32_t type, const void *data, size_t len);
/* Stops this actor after the current message. */
void sb_actor_stop(sb_actor_t *a);
/* Arms a timer that sends this actor SB_MSG_TIMER with `tag` after delay_ms, then every repeat_ms if non-zero.
 * Returns its id (> 0). Timers die with the actor and are cancelled by a restart. */
uint64_t sb_actor_timer_start(sb_actor_t *a, uint64_t delay_ms, uint64_t repeat_ms, uint64_t tag);
/* Cancels a timer of this actor. Returns 0, or SB_ENOENT if it already fired (one-shot) or never existed. */
int sb_actor_timer_stop(sb_actor_t *a, uint64_t timer_id);

#endif
