/* The session actor; see session.h for the contract.
 *
 * State: the spawn arguments, a FIFO of receipt ids waiting to be applied, and how many applies are in flight.
 * The port's completion comes back as an SB_SESSION_APPLIED message, so it is handled in the actor's own turn like
 * everything else. */
#include "actors/session.h"

#include "proto/err.h"
#include "proto/mem.h"

#include <string.h>

typedef struct pending {
    struct pending *next;
    int64_t receipt_id;
} pending_t;

typedef struct session {
    const sb_session_args_t *args;
    pending_t *head, *tail;
    unsigned inflight;
} session_t;

typedef struct completion {
    sb_rt_t *rt;
    sb_actor_id_t id;
} completion_t;

/* The port's done(): turn it into a message to the actor (which may have stopped meanwhile: then it is dropped). */
static void on_done(void *arg, int err)
{
    completion_t *c = arg;
    sb_rt_send(c->rt, 0, c->id, SB_SESSION_APPLIED, &err, sizeof err);
    free(c);
}

static void apply_next(sb_actor_t *a, session_t *s)
{
    while (s->inflight < SB_SESSION_WINDOW && s->head) {
        pending_t *p = s->head;
        s->head = p->next;
        if (!s->head)
            s->tail = NULL;
        completion_t *c = sb_malloc(sizeof *c);
        c->rt = sb_actor_rt(a);
        c->id = sb_actor_self(a);
        const sb_session_port_t *port = s->args->port;
        if (port->apply(port->ctx, s->args->tenant, s->args->channel, p->receipt_id, on_done, c) == 0)
            s->inflight++;
        else
            free(c); /* left for the sweeper */
        free(p);
    }
}

static int session_init(sb_actor_t *a, void *state, const void *arg)
{
    session_t *s = state;
    (void)a;
    s->args = arg;
    return 0;
}

static int on_receipt(sb_actor_t *a, void *state, sb_msg_t *m)
{
    session_t *s = state;
    sb_session_receipt_t r;
    if (m->len != sizeof r)
        return 0; /* not ours to crash over: drop it */
    memcpy(&r, m->data, sizeof r);
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
    (void)m; /* a failure leaves the receipt unprocessed: the sweeper hands it back */
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
}

static const sb_actor_handler_fn handlers[] = {
    [SB_SESSION_RECEIPT] = on_receipt,
    [SB_SESSION_APPLIED] = on_applied,
};

const sb_actor_kind_t sb_session_kind = {
    .name = "session",
    .state_size = sizeof(session_t),
    .init = session_init,
    .handlers = handlers,
    .nhandlers = sizeof handlers / sizeof handlers[0],
    .stop = session_stop,
};
