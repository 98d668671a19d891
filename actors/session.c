/* The session actor; see session.h for the contract.
 *
 * State: the spawn arguments, a FIFO of receipt ids waiting to be applied, the set of the ids waiting or in a batch
 * in flight (against twins), and how many batches are in flight.
 * The port's completion comes back as an SB_SESSION_APPLIED message, so it is handled in the actor's own turn like
 * everything else. */
#include "actors/session.h"

#include "proto/err.h"
#include "proto/idset.h"
#include "proto/mem.h"

#include <string.h>

typedef struct pending {
    struct pending *next;
    int64_t receipt_id; /* or, on the outbound queue, the message id */
} pending_t;

typedef struct session {
    const sb_session_args_t *args;
    pending_t *head, *tail;
    sb_idset_t known; /* the receipt ids in head..tail and in the batches in flight */
    unsigned inflight;
    pending_t *out_head, *out_tail; /* outbound message ids, in order; the head is being sent or waits to retry */
    unsigned attempt;               /* of the head */
    bool sending, waiting;          /* the head is with the port / waits for its retry timer */
} session_t;

/* A batch in flight; it comes back to the actor as the SB_SESSION_APPLIED message: err, n, ids. */
typedef struct applied {
    int err;
    size_t n;
    int64_t ids[];
} applied_t;

typedef struct completion {
    sb_rt_t *rt;
    sb_actor_id_t id;
    applied_t a; /* last: its ids follow */
} completion_t;

/* The port's done(): turn it into a message to the actor (which may have stopped meanwhile: then it is dropped). */
static void on_done(void *arg, int err)
{
    completion_t *c = arg;
    c->a.err = err;
    sb_rt_send(c->rt, 0, c->id, SB_SESSION_APPLIED, &c->a, sizeof c->a + c->a.n * sizeof c->a.ids[0]);
    free(c);
}

static void forget(session_t *s, const int64_t *ids, size_t n)
{
    for (size_t i = 0; i < n; i++)
        sb_idset_del(&s->known, ids[i]);
}

static void apply_next(sb_actor_t *a, session_t *s)
{
    while (s->inflight < SB_SESSION_WINDOW && s->head) {
        completion_t *c = sb_malloc(sizeof *c + SB_SESSION_BATCH * sizeof c->a.ids[0]);
        c->rt = sb_actor_rt(a);
        c->id = sb_actor_self(a);
        size_t n = 0;
        while (s->head && n < SB_SESSION_BATCH) {
            pending_t *p = s->head;
            s->head = p->next;
            c->a.ids[n++] = p->receipt_id; /* still known: a twin the sweeper sends meanwhile is dropped */
            free(p);
        }
        c->a.n = n;
        if (!s->head)
            s->tail = NULL;
        const sb_session_port_t *port = s->args->port;
        if (port->apply(port->ctx, s->args->tenant, s->args->channel, c->a.ids, n, on_done, c) == 0) {
            s->inflight++;
        } else { /* left for the sweeper */
            forget(s, c->a.ids, n);
            free(c);
        }
    }
}

/* ---- outbound: one message at a time, in order ----------------------------------------------------------------- */

typedef struct send_completion {
    sb_rt_t *rt;
    sb_actor_id_t id;
} send_completion_t;

static void on_sent(void *arg, const sb_session_outcome_t *o)
{
    send_completion_t *c = arg;
    sb_rt_send(c->rt, 0, c->id, SB_SESSION_SENT, o, sizeof *o);
    free(c);
}

static void drop_head(session_t *s)
{
    pending_t *p = s->out_head;
    s->out_head = p->next;
    if (!s->out_head)
        s->out_tail = NULL;
    free(p);
    s->attempt = 0;
}

static void send_next(sb_actor_t *a, session_t *s)
{
    const sb_session_port_t *port = s->args->port;
    while (!s->sending && !s->waiting && s->out_head && port->send) {
        send_completion_t *c = sb_malloc(sizeof *c);
        c->rt = sb_actor_rt(a);
        c->id = sb_actor_self(a);
        s->attempt++;
        if (port->send(port->ctx, s->args->tenant, s->args->channel, s->out_head->receipt_id, s->attempt, on_sent,
                       c) == 0) {
            s->sending = true;
        } else {
            free(c); /* left queued in the database: the outbox sweeper hands it back */
            drop_head(s);
        }
    }
}

static int on_send(sb_actor_t *a, void *state, sb_msg_t *m)
{
    session_t *s = state;
    sb_session_send_t r;
    if (m->len != sizeof r)
        return 0;
    memcpy(&r, m->data, sizeof r);
    for (pending_t *p = s->out_head; p; p = p->next)
        if (p->receipt_id == r.message_id)
            return 0; /* held already (the sweeper found it while it waited here) */
    pending_t *p = sb_malloc(sizeof *p);
    p->next = NULL;
    p->receipt_id = r.message_id;
    if (s->out_tail)
        s->out_tail->next = p;
    else
        s->out_head = p;
    s->out_tail = p;
    send_next(a, s);
    return 0;
}

static int on_sent_msg(sb_actor_t *a, void *state, sb_msg_t *m)
{
    session_t *s = state;
    sb_session_outcome_t o;
    if (m->len != sizeof o || !s->sending)
        return 0;
    memcpy(&o, m->data, sizeof o);
    s->sending = false;
    if (o.again && s->out_head) {
        s->waiting = true;
        sb_actor_timer_start(a, o.retry_ms, 0, (uint64_t)o.message_id);
        return 0;
    }
    if (s->out_head)
        drop_head(s);
    send_next(a, s);
    return 0;
}

static int on_timer(sb_actor_t *a, void *state, sb_msg_t *m)
{
    session_t *s = state;
    (void)m;
    s->waiting = false;
    send_next(a, s);
    return 0;
}

static int session_init(sb_actor_t *a, void *state, const void *arg)
{
    session_t *s = state;
    (void)a;
    s->args = arg;
    sb_idset_init(&s->known);
    return 0;
}

static int on_receipt(sb_actor_t *a, void *state, sb_msg_t *m)
{
    session_t *s = state;
    sb_session_receipt_t r;
    if (m->len != sizeof r)
        return 0; /* not ours to crash over: drop it */
    memcpy(&r, m->data, sizeof r);
    if (!sb_idset_add(&s->known, r.receipt_id))
        return 0; /* waiting here or being applied already (or not an id) */
    pending_t *p = sb_malloc(sizeof *p);
    p->next = NULL;
    p->receipt_id = r.receipt_id;
    if (s->tail)
        s->tail->next = p;
    else
        s->head = p;
    s->tail = p;
    apply_next(a, s);
    return 0;
}

static int on_applied(sb_actor_t *a, void *state, sb_msg_t *m)
{
    session_t *s = state;
    applied_t done;
    /* a failure leaves the receipts unprocessed: the sweeper hands them back, and then they are welcome again */
    if (m->len >= sizeof done) {
        memcpy(&done, m->data, sizeof done);
        if (done.n <= SB_SESSION_BATCH && m->len == sizeof done + done.n * sizeof done.ids[0])
            forget(s, (const int64_t *)(m->data + sizeof done), done.n);
    }
    if (s->inflight)
        s->inflight--;
    apply_next(a, s);
    return 0;
}

static void session_stop(sb_actor_t *a, void *state)
{
    session_t *s = state;
    (void)a;
    while (s->head) {
        pending_t *p = s->head;
        s->head = p->next;
        free(p);
    }
    s->tail = NULL;
    sb_idset_cleanup(&s->known);
    while (s->out_head)
        drop_head(s);
}

static const sb_actor_handler_fn handlers[] = {
    [SB_MSG_TIMER] = on_timer,
    [SB_SESSION_RECEIPT] = on_receipt,
    [SB_SESSION_APPLIED] = on_applied,
    [SB_SESSION_SEND] = on_send,
    [SB_SESSION_SENT] = on_sent_msg,
};

const sb_actor_kind_t sb_session_kind = {
    .name = "session",
    .state_size = sizeof(session_t),
    .init = session_init,
    .handlers = handlers,
    .nhandlers = sizeof handlers / sizeof handlers[0],
    .stop = session_stop,
};
