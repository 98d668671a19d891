/* The store: all of the gateway's SQL, over a shard's PostgreSQL connections (adapters/pg), handing back proto/
 * values — never a PGresult.
 *
 * One store per shard, on two connections: `pg` for everything the actors write and read, `ingest` for webhook
 * receipts only (inserts that lock no shared row, so a webhook's 200 waits for its own commit and nothing else).
 *
 * The domain half is the store port of actors/ports.h (sb_store_port()): activation loads, the tenants' writes as
 * set-based statements (a loop turn's writes of every tenant of the shard: one statement), the event log read back,
 * the message id blocks. The rest serves the front doors: receipts, the sweeper, the event log for clients, and
 * their own reads and writes (adapters/store/queries.h).
 *
 * Every call that takes a callback returns 0 and calls it exactly once, later, on the shard's thread; or returns a
 * negative code (SB_EUNAVAIL: not connected) and never calls it. Results handed to a callback are borrowed for the
 * call. */
#ifndef SB_STORE_H
#define SB_STORE_H

#include "actors/ports.h"
#include "adapters/crypto.h"
#include "adapters/pg.h"
#include "proto/event.h"
#include "proto/str.h"

#include <stdbool.h>
#include <stdint.h>

typedef struct sb_store sb_store_t;
typedef struct sb_pg sb_pg_t;

/* A store over pg and ingest (borrowed: they outlive it), counting in shard `shard`'s figures (gateway/metrics.h).
 * master_key: opens the tenants' webhook secrets (NULL: no key configured, and no secret can be opened). */
sb_store_t *sb_store_create(sb_pg_t *pg, sb_pg_t *ingest, const unsigned char *master_key, unsigned shard);
/* The connection the sweeper's scans (sb_store_sweep, sb_store_backlog) go on (borrowed; NULL: pg's). */
void sb_store_set_sweeper(sb_store_t *st, sb_pg_t *sweeper);

/* Fencing (adapters/pg, sql/0022): fn(ctx, tenant, out) says whether the actors' writes for tenant must carry a
 * fence: 1 and the slot and epoch this node holds it at in *out; 0 no fence (a node on its own); SB_EFENCED this
 * node does not own the tenant's slot (the write is refused before it is sent). Called on the shard's thread. */
typedef int (*sb_store_fence_fn)(void *ctx, int64_t tenant, sb_pg_fence_t *out);
void sb_store_set_fence(sb_store_t *st, sb_store_fence_fn fn, void *ctx);
/* fn's answer for tenant (0 without fn). */
int sb_store_fence(sb_store_t *st, int64_t tenant, sb_pg_fence_t *out);
/* The highest epoch any slot was ever raised to (0: none): a node's lease epochs start above it, so a Redis that
 * lost its keys cannot hand out an epoch the database already fenced past. */
int sb_store_fence_floor(sb_store_t *st, void (*cb)(void *arg, int err, int64_t floor), void *arg);
/* Raises slots[i] to epochs[i] (sql/0022 sb_fence_bump), in a transaction of its own that waits for the writes of
 * older epochs already checked to commit. cb gets the slots that had a newer epoch already (someone else owns them
 * now). Returns 0 and calls cb once, or an error (cb never called). */
int sb_store_fence_bump(sb_store_t *st, const uint32_t *slots, const int64_t *epochs, size_t n,
                        void (*cb)(void *arg, int err, const int32_t *stale, size_t nstale), void *arg);
/* Of the receipts (tenants[i], ids[i]), the ids of those still unprocessed, ascending (no session applied them yet;
 * a receipt gone from the table counts as processed). Returns 0 and calls cb once (ids NULL when err), or an error
 * (cb never called). */
int sb_store_receipts_unprocessed(sb_store_t *st, const int64_t *tenants, const int64_t *ids, size_t n,
                                  void (*cb)(void *arg, int err, const int64_t *ids, size_t n), void *arg);
/* Frees the store, once its connections have closed (sb_pg_close hands what they held back, through the store). */
void sb_store_destroy(sb_store_t *st);
/* Sends what waits in the store's batches now (a stopping shard wants its last writes out). */
void sb_store_flush(sb_store_t *st);
/* Writes and loads under way (a draining shard waits for them). */
unsigned sb_store_inflight(const sb_store_t *st);
bool sb_store_connected(const sb_store_t *st);
sb_pg_t *sb_store_pg(sb_store_t *st);
/* Readiness: err 0 when the ingest connection is up and the main one answered within timeout_ms; otherwise an SB_E*
 * code and a short description (valid during the call). Returns 0 and calls cb exactly once; or SB_EUNAVAIL (a
 * connection is down; cb never called). */
int sb_store_ping(sb_store_t *st, uint64_t timeout_ms, void (*cb)(void *arg, int err, const char *detail), void *arg);

/* A message id from st's block (the port's message_id, for a front door that reserves one: gateway/sends); 0 when
 * the block is spent and the next one is on its way (asked for by this call). */
int64_t sb_store_message_id(sb_store_t *st);

/* The port of actors/ports.h over st (its broadcast calls are adapters/store/broadcasts.h's
 * sb_store_broadcast_port). */
void sb_store_port(sb_store_t *st, sb_store_port_t *out);

/* ---- receipts: provider webhooks, committed before they are acknowledged ----------------------------------------- */

/* One receipt on its way in. The caller fills the first part and keeps it alive until done(r, err) is called (once);
 * err 0: committed, and id is the receipt's (0: the store had it already, or — a Meta receipt — no channel claims the
 * account), tenant and channel where it went. */
typedef struct sb_store_receipt {
    int64_t tenant, channel;        /* Twilio: the channel's; 0 for Meta ... */
    const char *type, *account;     /* ... whose receipts go where channel_routes sends (type, account) */
    const char *dedup_key, *event_json, *raw;
    void (*done)(struct sb_store_receipt *r, int err);
    void *arg;
    int64_t id;                     /* out */
    sb_store_t *st;                 /* the store's */
} sb_store_receipt_t;

/* Queues r for the ingest connection's next statement (the loop turn's receipts of a kind go as one INSERT). */
int sb_store_receipt_add(sb_store_t *st, sb_store_receipt_t *r);

/* A send a node of a cluster takes (gateway/sends), committed as a receipt of kind "send" (sql/0023) before it is
 * answered: event_json is its event (sb_event_json of an SB_EV_SEND), whose message_id the statement sets to id, or
 * (id 0) to one it takes from the messages' sequence itself. Unless key (the idempotency key, or NULL) already names
 * a message of the tenant, stored or taken so: then nothing is written. The caller fills the first part and keeps it
 * alive until done(in, err) is called (once); err 0: receipt > 0, committed as message id; receipt 0 and id > 0, the
 * key's message (scheduled: it waits for its send_at); both 0, the key was being taken by another request at the
 * same moment. */
typedef struct sb_store_intake {
    int64_t tenant, channel, id;
    const char *key, *event_json;
    void (*done)(struct sb_store_intake *in, int err);
    void *arg;
    int64_t receipt;                /* out (id too) */
    bool scheduled;
} sb_store_intake_t;

/* Queues in for the ingest connection's next statement (the loop turn's sends, one INSERT, as receipts go). */
int sb_store_intake_add(sb_store_t *st, sb_store_intake_t *in);

/* A receipt committed but still unprocessed, found by the sweeper: its event read back (a row whose event cannot be
 * read is left out, and logged). */
typedef struct sb_store_unprocessed {
    int64_t id, tenant, channel;
    int64_t age_ms;
    sb_event_t ev;
} sb_store_unprocessed_t;

/* Receipts still unprocessed older_ms after they came, with ids above after_id (0: all), oldest first, at most
 * limit; and moves the low-water mark on (every receipt below it is processed), so each sweep reads only from the
 * oldest unprocessed one. after_id pages a sweep that must not hand the same receipts twice (a node catching up the
 * slots it took). */
int sb_store_sweep(sb_store_t *st, int older_ms, int64_t after_id, size_t limit,
                   void (*cb)(void *arg, int err, const sb_store_unprocessed_t *r, size_t n), void *arg);

/* The channels with messages in their outbox or fallbacks watched (their sessions must be active to send them or
 * to keep the watch; a channel may be named twice), and the tenants whose outgoing webhooks have events waiting. */
int sb_store_backlog(sb_store_t *st,
                     void (*cb)(void *arg, int err, const int64_t *channel_tenants, const int64_t *channels,
                                size_t nchannels, const int64_t *tenants, size_t ntenants),
                     void *arg);

/* The channels with a scheduled message due within horizon_ms (or overdue), of at most limit such messages, each
 * channel once: their sessions must be active in time to send them (a session holding only messages due later may
 * be passivated). Read on the sweeper's connection. */
int sb_store_scheduled_due(sb_store_t *st, int64_t horizon_ms, size_t limit,
                           void (*cb)(void *arg, int err, const int64_t *tenants, const int64_t *channels, size_t n),
                           void *arg);

/* The database's queues, for /metrics: outbound messages not finished (rows of outbox), the age of the oldest of
 * them, and tenant webhook deliveries that ran out of attempts (rows of webhook_dead_letters). */
typedef struct sb_store_queues {
    int64_t outbox_waiting;
    int64_t outbox_oldest_ms; /* 0: the outbox is empty */
    int64_t dead_letters;
} sb_store_queues_t;

/* Counts them, on the sweeper's connection, at a bounded cost whatever the tables hold: rows are counted exactly up
 * to a cap (SB_STORE_COUNT_CAP outbox rows, SB_STORE_DEAD_CAP dead letters) and past it the figure is PostgreSQL's
 * estimate (pg_class, scaled to the table's size now as the planner does), never below the cap; the oldest message
 * is found per channel (the first entry of each channel's outbox, through its primary key) among at most
 * SB_STORE_OLDEST_CHANNELS channels, by its created_at. q is borrowed for the call; NULL when err. */
#define SB_STORE_COUNT_CAP 100000
#define SB_STORE_DEAD_CAP 10000
#define SB_STORE_OLDEST_CHANNELS 10000
int sb_store_queues(sb_store_t *st, void (*cb)(void *arg, int err, const sb_store_queues_t *q), void *arg);

/* ---- the event log, for clients ------------------------------------------------------------------------------------ */

/* Events of tenant after cursor `after`, at most limit, in cursor order (the same as the port's events_after). */
int sb_store_events(sb_store_t *st, int64_t tenant, int64_t after, size_t limit,
                    void (*cb)(void *arg, int err, const sb_event_rec_t *events, size_t n), void *arg);
/* The tenant's newest cursor (found false: no such tenant). */
int sb_store_cursor(sb_store_t *st, int64_t tenant, void (*cb)(void *arg, int err, bool found, int64_t cursor),
                    void *arg);

#endif
