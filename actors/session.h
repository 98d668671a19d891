/* The session actor: one per tenant channel account, the owner of the order of what happens on it.
 *
 * Inbound, it receives the ids of committed webhook receipts and applies them to the conversation state in arrival
 * order through its port: the port assigns the conversation, the order inside it and the tenant's inbox cursor,
 * stores the message and its inbox event, and marks the receipt processed — durably, in one transaction — then
 * reports back. The actor hands over what waits as one batch (up to SB_SESSION_BATCH receipts, one statement), and
 * the port executes batches in the order they were issued (one PostgreSQL connection in pipeline mode), so the
 * actor keeps up to SB_SESSION_WINDOW batches in flight instead of waiting a commit for each: two events of one
 * channel still never race for a sequence number, and a busy channel's receipts share statements and group commits
 * instead of taking one each. A receipt id already waiting in the actor, or in a batch in flight, is not queued
 * twice (the sweeper finds the receipts that wait behind a backlog: applying them again would double the work of
 * an actor that is behind already). A receipt that fails to apply (database away, or rolled back with its batch)
 * is left unprocessed: the sweeper hands it back later, and applying is idempotent (an already processed receipt
 * changes nothing).
 *
 * Outbound, it receives the ids of accepted outbound messages and sends them one at a time, in order, through the
 * port's send: the port loads the message, takes the counters, asks the provider and stores the outcome. A send
 * that must be tried again (the provider was busy or down) holds the line: the actor waits the delay the port
 * gives, then sends the same message again, so a conversation's messages never overtake each other. A message id
 * the actor already holds is not queued twice.
 *
 * The actor reaches the outside only through sb_session_port_t, so it is tested with a fake. */
#ifndef SB_SESSION_H
#define SB_SESSION_H

#include "actors/actor.h"

#include <stdbool.h>
#include <stdint.h>

enum {
    SB_SESSION_RECEIPT = 1, /* payload: sb_session_receipt_t */
    SB_SESSION_APPLIED = 2, /* internal: the port finished a batch; payload: its error and its ids */
    SB_SESSION_SEND = 3,    /* payload: sb_session_send_t */
    SB_SESSION_SENT = 4,    /* internal: the port finished a send; payload: sb_session_outcome_t */
};

typedef struct sb_session_send {
    int64_t message_id;
} sb_session_send_t;

/* What a send came to: done (sent, failed for good, unknown, or nothing to do) or try again after retry_ms. */
typedef struct sb_session_outcome {
    int64_t message_id;
    bool again;
    uint64_t retry_ms;
} sb_session_outcome_t;

/* sent(arg, outcome) must be called exactly once, on the actor's shard thread, when send returned 0. */
typedef void (*sb_session_sent_fn)(void *arg, const sb_session_outcome_t *outcome);

#define SB_SESSION_BATCH 256 /* receipts per apply at most */
#define SB_SESSION_WINDOW 2  /* applies (batches) in flight per actor */

typedef struct sb_session_receipt {
    int64_t receipt_id;
} sb_session_receipt_t;

/* done(arg, err) must be called exactly once, on the actor's shard thread, when apply returned 0. */
typedef void (*sb_session_done_fn)(void *arg, int err);

typedef struct sb_session_port {
    void *ctx;
    /* Applies receipts ids[0..n) of (tenant, channel) in that order, after every apply issued before it, as one
     * transaction; ids is borrowed for the call. Returns 0 (done will be called) or a negative code (it will not;
     * the receipts stay for the sweeper). */
    int (*apply)(void *ctx, int64_t tenant, int64_t channel, const int64_t *ids, size_t n, sb_session_done_fn done,
                 void *arg);
    /* Sends outbound message message_id of (tenant, channel); attempt counts from 1. Returns 0 (sent will be
     * called) or a negative code (it will not: the message stays queued for the outbox sweeper). May be NULL: the
     * actor then only applies receipts. */
    int (*send)(void *ctx, int64_t tenant, int64_t channel, int64_t message_id, unsigned attempt,
                sb_session_sent_fn sent, void *arg);
} sb_session_port_t;

/* The spawn argument (borrowed by the actor for its whole life). */
typedef struct sb_session_args {
    int64_t tenant, channel;
    const sb_session_port_t *port;
} sb_session_args_t;

extern const sb_actor_kind_t sb_session_kind;

#endif
