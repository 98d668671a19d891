/* The session actor: one per channel account (keyed by the channel id), on its tenant's shard. It owns the state of
 * the channel's conversations and the order of what happens on them.
 *
 * Conversations, in memory: for each (loaded when first needed, through the store port's ensure_conversations, which
 * also makes missing contacts and conversations), its id, its contact and the seq of its newest message. Messages are
 * numbered here, from memory, never by a read-modify-write of a row.
 *
 * Inbound: committed webhook receipts come as SB_SESSION_RECEIPT (the receipt id and its event), in arrival order.
 * A message takes its conversation's next seq and a message id (the store's id block) and becomes a work item for
 * the tenant actor: the message row, its receipt marked processed, and its events (message.created, then
 * conversation.updated). A status (a provider's delivery report) names a message by its provider id (from memory
 * when this session sent it, else the store): it counts when it moves the message's status forward (queued <
 * sending < sent < delivered < read, failed and undelivered beside delivered; unknown yields to any news), and then
 * becomes a status change with its history and a message.status event; a status for a message not known yet (the
 * provider called back before our request returned) is left unprocessed for the sweeper, for a minute, then taken
 * as a status of no message of ours. Each receipt, and each send accepted, is a work item of its own (the tenant
 * writes a turn's items as one statement, and an item the store refuses fails alone); up to SB_SESSION_INFLIGHT
 * receipts are in flight, and a receipt id already held (waiting or in flight) is not taken twice. A receipt whose
 * item fails stays unprocessed (the sweeper brings it back); its seq is taken back when it was the conversation's
 * last, else left as a gap, and a conversation whose write the store refused is loaded again before its next
 * message, once none of its messages is in flight.
 *
 * Outbound: SB_SESSION_SEND accepts a message (already checked by the front door): an idempotency key already used
 * by the tenant answers the message it named; a message that Meta's 24-hour customer-service window does not let
 * through (from the conversation's last inbound message, which the session knows: loaded with the conversation,
 * moved forward as inbound messages are applied) is refused 422 outside_window, nothing stored; otherwise the
 * message is numbered in its conversation, written with its outbox entry and events, and answered 202. A send that
 * a node of a cluster took and committed itself (gateway/sends) comes as a receipt of kind send (SB_EV_SEND), in the
 * order the owner's stream took it: it is accepted the same way among the other sends, under the id it was answered
 * with and without the window's check (made where it was taken), its receipt marked processed with the message; one
 * its channel now refuses is set aside, and a cancel of it that comes first waits for it (sb_session_cancel_t). Each
 * conversation's messages are sent in order, one at a time; different conversations send concurrently within the
 * channel's pace and in-flight caps kept in Redis (counters port; the caps settings.max_concurrent_sends, else
 * SB_SESSION_MAX_SENDING, and the tenant's, else SB_SESSION_TENANT_MAX_SENDING; read again on SB_SESSION_SETTINGS).
 * Lanes: a conversation whose head may start waits on the ready list of its lane's best priority (interactive,
 * normal, bulk); tokens of the pace are asked for no message in particular, and each one granted goes to the best
 * lane's oldest conversation, a lower lane passed over ten starts in a row taking the next (so bulk never starves).
 * A send is claimed (status sending, committed) once it has its token (an interactive head may be claimed while the
 * token is on its way) and before the provider is
 * asked, so a crash never makes a blind second send; its outcome is stored with a message.status event (sent,
 * failed, unknown, retrying, dead); a retrying message waits its backoff holding only its own conversation. An
 * outcome the store did not take is offered again until it is (for a few minutes): the provider's answer is not
 * lost.
 *
 * Fallback: a message accepted with fallback channels (proto/fallback) is watched once its send is over; when it
 * failed for good (its outcome, or a failed/undelivered status callback) or is not delivered within its
 * fallback_after, its content is handed to the next channel's session (sb_session_send, with fallback_of and the
 * rest of the list, under the idempotency key "sb-fallback:{id}") and the message it becomes is stored as this one's
 * fallback_to. The watch's deadline is stored with the outcome and loaded at activation; a session watching a
 * message is not passivated.
 * Scheduled sends: a send whose send_at is ahead is stored with status scheduled (its history entry and a
 * message.status event "scheduled" with it) and answered 202 "scheduled"; it stays out of its conversation's lane,
 * so it holds nothing back, until its time. The session keeps its scheduled messages in a min-heap by (send_at, id)
 * with one timer, for the earliest; at its time a message joins the end of its conversation's lane and goes as a
 * queued one would (the channel's pace and caps, whatever its priority). So a conversation's messages go in the
 * order they fell due: one sent at once when it was accepted, a scheduled one at its send_at; several due at the
 * same moment (an activation after an outage) by send_at then id, after the messages already queued.
 * SB_SESSION_CANCEL cancels a message still scheduled, queued or waiting its retry backoff: stored as canceled
 * (finished: it leaves the outbox) with a message.status event "canceled"; one claimed or finished is refused
 * (409), and a cancel that reaches a passivated session activates it: it decides once its outbox is loaded.
 *
 * Activation loads the channel and its unfinished outbound messages (a message left sending for two minutes, by a
 * crash, becomes unknown: never a blind resend), scheduled ones with the time left to their send_at (those past it
 * join their lanes at once). It is passivated when idle with nothing queued, in flight or waiting, and nothing
 * scheduled within SB_SESSION_SCHEDULE_HORIZON_MS: shard 0 asks the store every SB_SESSION_SCHEDULE_SCAN_MS for
 * the channels with a scheduled message due within the horizon and wakes their sessions (SB_SESSION_WAKE), so a
 * passivated session is back, its timer armed, well before its earliest message is due. */
#ifndef SB_SESSION_H
#define SB_SESSION_H

#include "actors/actor.h"
#include "actors/ports.h"

#include <stdbool.h>
#include <stdint.h>

enum {
    SB_SESSION_RECEIPT = 1, /* payload: sb_session_receipt_t then the packed event (sb_event_pack) */
    SB_SESSION_SEND = 2,    /* payload: sb_session_send_t * (the actor takes it) */
    SB_SESSION_RESUME = 3,  /* no payload: outbound messages were queued again (console replay): load them */
    SB_SESSION_WRITTEN = 4, /* the tenant's answer to a work item: sb_tenant_written_t */
    SB_SESSION_CANCEL = 5,  /* payload: sb_session_cancel_t * (the actor takes it) */
    SB_SESSION_WAKE = 6,    /* no payload: a scheduled message falls due soon: be active (activation loads it) */
    SB_SESSION_BROADCAST = 8, /* payload: sb_session_broadcast_t * (the actor takes it) */
    SB_SESSION_BROADCAST_CANCEL = 9, /* payload: sb_session_bcancel_t * (the actor takes it) */
    SB_SESSION_SETTINGS = 10, /* payload: int64 tenant: its or its channel's pace and caps changed: read them again */
    SB_SESSION_FIGURES = 11,  /* payload: sb_session_figures_t * (answered once) */
    SB_SESSION_INTERNAL = 16
};

#define SB_SESSION_LOOKAHEAD 256 /* receipts whose conversations and provider ids are looked up at once, at most */
#define SB_SESSION_INFLIGHT 1024 /* receipts in work items at the tenant, at most */
#define SB_SESSION_MAX_SENDING 64 /* sends under way at once (the channel's in-flight cap) unless its
                                   * settings.max_concurrent_sends says otherwise: a Meta number at its 80/s with 200 ms
                                   * answers has 16 out, a slow provider four times that */
#define SB_SESSION_TENANT_MAX_SENDING 256 /* sends under way at once across a tenant's channels, unless the tenant's
                                           * max_concurrent_sends says otherwise */
#define SB_SESSION_MAX_CHANNEL_CAP 1000   /* the largest settings.max_concurrent_sends */
#define SB_SESSION_MAX_TENANT_CAP 100000  /* the largest tenant max_concurrent_sends */
#define SB_SESSION_MAX_RATE 10000         /* the largest settings.rate_per_second */
#define SB_SESSION_SCHEDULE_HORIZON_MS 60000 /* a session holding a message due within this is not passivated */
#define SB_SESSION_SCHEDULE_SCAN_MS 10000    /* how often shard 0 looks for scheduled messages due within the horizon:
                                              * a passivated session is woken at least horizon - scan (50 s) ahead */
#define SB_SESSION_SCHEDULE_MAX_MS (30LL * 86400 * 1000) /* send_at at most this far ahead (the front door checks) */

typedef struct sb_session_receipt {
    int64_t receipt_id, tenant;
    int64_t age_ms; /* how long ago it was received */
} sb_session_receipt_t;

/* Hands a committed receipt to its channel's session on the tenant's shard `owner` (from any shard: rt is the
 * caller's). The _packed form takes the event as sb_event_pack wrote it. Returns 0 or the runtime's error. */
int sb_session_receipt(sb_rt_t *rt, unsigned owner, int64_t channel, const sb_session_receipt_t *r,
                       const sb_event_t *ev);
int sb_session_receipt_packed(sb_rt_t *rt, unsigned owner, int64_t channel, const sb_session_receipt_t *r,
                              const void *packed, size_t len);

/* The lanes of a channel's outbound messages, served in this order (bulk keeps a small guaranteed share). */
typedef enum { SB_PRIORITY_INTERACTIVE, SB_PRIORITY_NORMAL, SB_PRIORITY_BULK, SB_PRIORITY_N } sb_priority_t;

extern const char *const sb_priority_names[SB_PRIORITY_N]; /* "interactive", "normal", "bulk" */

/* A channel type's pace when settings.rate_per_second does not set one, in sends per second (Twilio long code 1,
 * Twilio WhatsApp 10, Meta WhatsApp 80, Messenger and Instagram 300, others 1). */
double sb_session_default_rate(sb_channel_type_t type);

/* On the shard of the tenant's sessions (rt its runtime): tells the channel's session (channel != 0) or every
 * session of the tenant (channel 0) that settings changed, so it reads its pace and caps again. A session not active
 * is left alone (it reads them when activated); a channel's is activated. */
void sb_session_settings_changed(sb_rt_t *rt, int64_t tenant, int64_t channel);

/* Live figures of a channel's session, for the console: what its lanes hold and the pace and caps in force. The
 * caller fills tenant, channel, answer and arg; the session fills the rest and calls answer(f) exactly once, on its
 * shard (from any thread's point of view: take it home with sb_shard_exec). found false: no such channel of that
 * tenant, or the session could not be reached. */
typedef struct sb_session_figures {
    int64_t tenant, channel;
    bool found;
    int64_t lanes[SB_PRIORITY_N];   /* messages in each lane (waiting or under way) */
    unsigned sending;               /* claimed and not finished (each holds a slot of the caps) */
    double rate_per_second;         /* the pace in force (settings or the type's default) */
    bool rate_set, channel_max_set, tenant_max_set; /* set by the settings (else the defaults) */
    uint64_t interval_us;           /* between two sends (the pace, kept 5% under) */
    uint32_t channel_max, tenant_max; /* the concurrency caps in force */
    void (*answer)(struct sb_session_figures *f);
    void *arg;
} sb_session_figures_t;

/* Asks the channel's session on shard owner (activating it if needed) for its figures. Takes f until answered. */
void sb_session_figures(sb_rt_t *rt, unsigned owner, sb_session_figures_t *f);

/* An outbound message to accept (already checked by the front door for what needs no channel: see
 * gateway/api). The front door allocates it; the session checks it against its channel (provider port), fills in
 * the outcome and calls answer(req) exactly once, from any thread: answer takes it back to the front door's shard,
 * which frees it. */
typedef struct sb_session_send {
    int64_t tenant, channel;
    char *to, *body, *media_json, *template_json, *idempotency_key; /* heap, the request's; template and key NULL when
                                                                    * none */
    sb_priority_t priority;
    int64_t send_at_ms;        /* not before this time (Unix ms); 0 or a time not ahead when the session takes it:
                                * at once */
    char *fallback_json;       /* heap: {"channels": [id, ...], "after_s": N}, or NULL */
    int64_t fallback_of;       /* 0 when none (a broadcast's messages are written by the store, not sent here) */
    void (*answer)(struct sb_session_send *req);
    void *arg;                 /* the front door's */
    /* the outcome */
    int status;                /* 202 (accepted), 200 (the key named an earlier message), 400, 404, 422 (outside
                                * the 24-hour window: refused before anything is stored), 503 */
    int64_t id;
    bool created;
    const char *accepted;      /* 2xx: the message's status as accepted, "queued" or "scheduled" (static) */
    const char *code;          /* not 2xx: the error code (static) ... */
    char message[160];         /* ... and message for the client */
} sb_session_send_t;

/* Sends req to its channel's session on shard owner. Takes req: it is answered in every case (503 when it cannot
 * reach the session). */
void sb_session_send(sb_rt_t *rt, unsigned owner, sb_session_send_t *req);
/* What the provider port's check and window look at of req (to, body, media, template; its strings borrowed). */
sb_send_request_t sb_session_send_request(const sb_session_send_t *req);
/* Frees the request's heap strings (to, body, media_json, template_json, idempotency_key, fallback_json), for the
 * front door that made them; req itself is the caller's. */
void sb_session_send_cleanup(sb_session_send_t *req);

/* A broadcast to accept (issue 16; already checked and rendered by the front door: gateway/broadcasts). The session
 * checks every recipient against its channel (provider port), waits until none of its conversations is being
 * numbered, and has the store write the recipients set-based (adapters/store/broadcasts.h), a batch a statement,
 * numbering nothing itself meanwhile (inbound and sends of the channel wait: a few seconds for 100,000 recipients);
 * then it forgets what it knew of its conversations' seqs (looked up again when next needed), answers, and loads the
 * new messages from the outbox into its lanes (bulk). An idempotency key the tenant used for a broadcast already
 * answers that broadcast's id (200). A broadcast whose recipients could not all be written is abandoned (its written
 * messages canceled, its key freed: 503, retry with the same key); one left half-written by a stop is abandoned at
 * the channel's next activation. No message.created event is made per recipient: broadcast.progress events (the
 * broadcast with its counts by status, at most one a second per broadcast while it changes) stand for them.
 *
 * The front door allocates it and answer(req) is called exactly once, from any thread. */
typedef struct sb_session_broadcast {
    int64_t tenant, channel;
    char *body, *template_json;      /* heap, as given: one of the two (the other NULL) */
    char *send_at;                   /* heap, RFC 3339 as given, or NULL */
    bool scheduled;                  /* send_at is in the future: the messages wait as "scheduled" */
    char *idempotency_key;           /* heap, or NULL */
    size_t n;                        /* recipients */
    char **to, **bodies, **templates; /* heap arrays of n (templates NULL with a body; bodies "" with a template),
                                      * rendered per recipient; the strings point into text */
    char *text;                      /* heap: every recipient's strings */
    void (*answer)(struct sb_session_broadcast *req);
    void *arg;                       /* the front door's */
    /* the outcome */
    int status;                      /* 202 (accepted), 200 (the key named an earlier broadcast), 400, 404, 503 */
    int64_t id;
    const char *code;                /* not 2xx: the error code (static) ... */
    char message[160];               /* ... and message for the client */
} sb_session_broadcast_t;

/* Sends req to its channel's session on shard owner. Takes req: it is answered in every case. */
void sb_session_broadcast(sb_rt_t *rt, unsigned owner, sb_session_broadcast_t *req);

/* A broadcast's cancel: its messages not under way yet leave the session's lanes and become canceled, those claimed
 * but still waiting for their turn are stopped at it (stored canceled), those at the provider finish. Answered
 * (exactly once, any thread) with status 200 and canceled (how many the store canceled at once), or 404 / 503. */
typedef struct sb_session_bcancel {
    int64_t tenant, channel, broadcast_id;
    void (*answer)(struct sb_session_bcancel *req);
    void *arg;
    int status;
    int64_t canceled;
    const char *code;
    char message[160];
} sb_session_bcancel_t;

void sb_session_broadcast_cancel(sb_rt_t *rt, unsigned owner, sb_session_bcancel_t *req);

/* A cancel of an outbound message of the channel (DELETE /v1/messages/{id}), answered like a send: the front door
 * allocates it, the session fills in the outcome and calls answer(req) exactly once, from any thread. */
typedef struct sb_session_cancel {
    int64_t tenant, channel, id;
    bool intake;               /* the message is a send a node of the cluster took that its session may not have
                                * yet: the cancel waits for it (10 s at most, then 503) */
    void (*answer)(struct sb_session_cancel *req);
    void *arg;                 /* the front door's */
    /* the outcome */
    int status;                /* 200 (canceled), 404 (not this tenant's channel), 409 (claimed or finished
                                * already), 503 (not stored now: retry) */
    const char *code;          /* not 200: the error code (static) ... */
    char message[160];         /* ... and message for the client */
} sb_session_cancel_t;

/* Sends req to its channel's session on shard owner (activating it if need be). Takes req: it is answered in every
 * case (503 when it cannot reach the session). */
void sb_session_cancel(sb_rt_t *rt, unsigned owner, sb_session_cancel_t *req);

extern const sb_actor_kind_t sb_session_kind;

#endif
