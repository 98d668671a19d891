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
 * by the tenant answers the message it named; otherwise the message is numbered in its conversation, written with
 * its outbox entry and events, and answered 202. Each conversation's messages are sent in order, one at a time;
 * different conversations send concurrently, at most SB_SESSION_MAX_SENDING at once, within the channel's pace and
 * in-flight caps kept in Redis (counters port). A send is claimed (status sending, committed) before the provider is
 * asked, so a crash never makes a blind second send; its outcome is stored with a message.status event (sent,
 * failed, unknown, retrying, dead); a retrying message waits its backoff holding only its own conversation. An
 * outcome the store did not take is offered again until it is (for a few minutes): the provider's answer is not
 * lost.
 *
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
    SB_SESSION_INTERNAL = 16
};

#define SB_SESSION_LOOKAHEAD 256 /* receipts whose conversations and provider ids are looked up at once, at most */
#define SB_SESSION_INFLIGHT 1024 /* receipts in work items at the tenant, at most */
#define SB_SESSION_MAX_SENDING 64 /* sends under way at once (the channel's in-flight cap): a Meta number at its 80/s with
                                   * 200 ms answers has 16 out, a slow provider four times that */
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
    int64_t broadcast_id, fallback_of; /* 0 when none */
    void (*answer)(struct sb_session_send *req);
    void *arg;                 /* the front door's */
    /* the outcome */
    int status;                /* 202 (accepted), 200 (the key named an earlier message), 400, 404, 503 */
    int64_t id;
    bool created;
    const char *accepted;      /* 2xx: the message's status as accepted, "queued" or "scheduled" (static) */
    const char *code;          /* not 2xx: the error code (static) ... */
    char message[160];         /* ... and message for the client */
} sb_session_send_t;

/* Sends req to its channel's session on shard owner. Takes req: it is answered in every case (503 when it cannot
 * reach the session). */
void sb_session_send(sb_rt_t *rt, unsigned owner, sb_session_send_t *req);

/* A cancel of an outbound message of the channel (DELETE /v1/messages/{id}), answered like a send: the front door
 * allocates it, the session fills in the outcome and calls answer(req) exactly once, from any thread. */
typedef struct sb_session_cancel {
    int64_t tenant, channel, id;
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
