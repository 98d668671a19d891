/* The tenant actor: one per tenant, on the tenant's shard, keyed by the tenant id. It owns the tenant's event log
 * and everything that follows from it:
 *
 *   - the inbox cursor, in memory (loaded at activation as the newest committed cursor): every write of the
 *     tenant's sessions that makes events comes here as a work item; the actor numbers the events, writes the
 *     items of a turn as one statement through the store port (the messages, status changes and receipts they hold,
 *     and the events as one page), one write in flight at a time, so cursors commit in the order they were given
 *     and are dense. A write that fails is taken apart: each item is tried alone, in order, and an item that fails
 *     alone is refused to its session (the others are written);
 *   - the registry of the shards that have live inbox clients of the tenant: every committed batch of events goes
 *     to each of them (publish port), as one shared, immutable sb_inbox_batch_t; a shard subscribes with its
 *     first client and learns the newest cursor then (it replays up to there, live after);
 *   - the tenant's outgoing webhooks: events after the application's acknowledged cursor are POSTed one at a time
 *     (hooks port), acknowledged durably, retried with backoff and jitter (Retry-After honoured, never past
 *     webhook_max_age), and dead-lettered once they reach it.
 *
 * It is passivated when idle with nothing in flight, no subscribed shard and no webhook backlog; activation loads its
 * cursor and webhook settings again. A failure restarts it from what is stored (the runtime's supervision); work
 * items it held are refused to their sessions then. */
#ifndef SB_TENANT_H
#define SB_TENANT_H

#include "actors/actor.h"
#include "actors/ports.h"
#include "proto/arena.h"
#include "proto/list.h"

#include <stdbool.h>
#include <stdint.h>

enum {
    SB_TENANT_WRITE = 1,       /* payload: sb_tenant_work_t * (the actor takes it) */
    SB_TENANT_SUBSCRIBE = 2,   /* payload: sb_tenant_sub_t */
    SB_TENANT_UNSUBSCRIBE = 3, /* payload: unsigned (the shard) */
    SB_TENANT_HOOKS = 4,       /* no payload: the webhook setting changed, or events may wait: look again */
    SB_TENANT_INTERNAL = 16    /* and up: the actor's own completions */
};

/* A work item: what one session writes at once, and the events it makes (numbered by the tenant). Built by the
 * session with the functions below; every string it holds is its own. */
typedef struct sb_tenant_work {
    sb_list_t link;            /* the tenant's, while queued */
    sb_actor_id_t from;        /* the session that hears the outcome ... */
    uint32_t reply_type;       /* ... as a message of this type, payload sb_tenant_written_t */
    uint64_t token;            /* the session's name for this item */
    sb_new_message_t *messages;
    size_t nmessages, cap_messages;
    sb_call_row_t *calls;
    size_t ncalls, cap_calls;
    sb_status_change_t *changes;
    size_t nchanges, cap_changes;
    int64_t *receipts;
    size_t nreceipts, cap_receipts;
    const char **ev_types;     /* static strings */
    size_t *ev_off, *ev_len;   /* into ev_data */
    size_t nevents, cap_events;
    sb_buf_t ev_data;          /* the events' data objects, JSON, one after the other */
    sb_arena_t strings;        /* what the rows point into */
    int64_t first_cursor;      /* set by the tenant once the write committed */
} sb_tenant_work_t;

/* The outcome of a work item: err 0 (committed; its events are cursors first_cursor ...) or the error. */
typedef struct sb_tenant_written {
    uint64_t token;
    int err;
    int64_t first_cursor;
} sb_tenant_written_t;

/* A shard's subscription: answer(arg, cursor, 0) once the tenant has it, cursor the newest committed one (every
 * later event is published to the shard); answer(arg, 0, err) when it cannot be had. answer may be called from any
 * thread and takes the answer to the subscriber's shard. */
typedef struct sb_tenant_sub {
    unsigned shard;
    void (*answer)(void *arg, int64_t cursor, int err);
    void *arg;
} sb_tenant_sub_t;

/* Subscribes (or, on = false, unsubscribes) shard `sub->shard` to the tenant's events, from any shard (rt is the
 * caller's). A subscription is answered in every case. */
void sb_tenant_subscribe(sb_rt_t *rt, unsigned owner, int64_t tenant, const sb_tenant_sub_t *sub, bool on);

sb_tenant_work_t *sb_tenant_work_new(sb_actor_id_t from, uint32_t reply_type, uint64_t token);
void sb_tenant_work_free(sb_tenant_work_t *w);
/* A copy of s (NULL stays NULL) that lives as long as w. */
const char *sb_tenant_work_str(sb_tenant_work_t *w, const char *s);
/* Appends a zeroed row and returns it (valid until the next append of its kind). */
sb_new_message_t *sb_tenant_work_message(sb_tenant_work_t *w);
sb_status_change_t *sb_tenant_work_change(sb_tenant_work_t *w);
sb_call_row_t *sb_tenant_work_call(sb_tenant_work_t *w);
void sb_tenant_work_receipt(sb_tenant_work_t *w, int64_t receipt_id);
/* Appends an event: type (static), data a JSON object (copied). */
void sb_tenant_work_event(sb_tenant_work_t *w, const char *type, sb_str_t data);

/* Sends w to the tenant actor of `tenant` on this runtime (the tenant's shard) from actor `from`. Takes w. Returns
 * 0, or an error (w freed). */
int sb_tenant_write(sb_rt_t *rt, int64_t tenant, sb_tenant_work_t *w);

extern const sb_actor_kind_t sb_tenant_kind;

#endif
