/* PostgreSQL adapter: one non-blocking libpq connection per shard, in pipeline mode, driven by the shard's loop.
 *
 * The connection is made with PQconnectStart/PQconnectPoll and its socket watched with a uv_poll_t, so nothing
 * ever blocks the loop. When the server goes away the adapter notices (the socket turns readable and libpq reports
 * the connection bad), fails what was pending, and reconnects with exponential backoff from 100 ms to 5 s.
 *
 * Group commit. Queries are sent in pipeline mode into the current *segment*; just before the loop blocks for I/O
 * (a uv_prepare handle) the segment is closed with one Sync and flushed with one write. PostgreSQL runs the
 * statements between two Syncs as one implicit transaction, committed at the Sync. One segment is in flight at a
 * time: queries issued while it commits are held back (copied) and go out together as the next segment the moment
 * its Sync returns. So a turn's queries share a transaction, and under load everything that arrived during one
 * fsync shares the next: durable throughput grows with load instead of being capped by fsyncs (sending each turn's
 * segment at once would queue one fsync per turn behind the other at the server). Callbacks run when the Sync's
 * result arrives, that is after COMMIT: a callback with err == 0 means the statement is durable.
 *
 * If one statement of a segment fails, PostgreSQL rolls the whole segment back: the failing query's callback gets
 * SB_EINVAL (with the server's message and the result, for its SQLSTATE), and every other query of that segment is
 * sent again, alone (safe: a rolled-back statement had no effect), so one caller's bad statement never fails
 * another's. The adapter keeps a copy of every query's sql and params for that. Hence the rule: each statement is
 * a whole unit of work on its own — nothing may rely on two statements committing together — and must not contain
 * BEGIN/COMMIT: the segment is the transaction. SB_PG_ALONE gives a query a segment of its own. */
#ifndef SB_PG_H
#define SB_PG_H

#include "proto/str.h"

#include <libpq-fe.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

typedef struct sb_pg sb_pg_t;

/* Starts connecting with the libpq connection string (copied), as application_name name (copied; what
 * pg_stat_activity shows, unless conninfo names one itself). Never fails: errors are retried. */
sb_pg_t *sb_pg_create(uv_loop_t *loop, const char *conninfo, const char *name);
/* Closes the connection; pending callbacks are called with SB_ECANCELED; freed once its handles have closed. */
void sb_pg_close(sb_pg_t *pg);
bool sb_pg_connected(const sb_pg_t *pg);

/* A query's outcome. err: 0 (committed; res holds the rows), SB_EINVAL (the statement failed: detail is the
 * server's message, res the error result — PQresultErrorField(res, PG_DIAG_SQLSTATE) tells which), SB_EAGAIN
 * (rolled back because another statement of its segment failed, and it could not be sent again), SB_EUNAVAIL
 * (connection lost: the outcome is unknown if it was sent), SB_ECANCELED (adapter closing). res is borrowed for
 * the call only and may be NULL; detail is valid for the call only and never NULL. */
typedef void (*sb_pg_query_cb)(void *arg, int err, const char *detail, const PGresult *res);

/* Flags. SB_PG_ALONE: the query gets a segment (transaction) of its own. */
enum { SB_PG_ALONE = 1, SB_PG_PREPARED = 4 };
/* SB_PG_PREPARED: sql is a string with static storage duration (a literal or a static array), and its address
 * names it: the adapter prepares it once per connection (a PREPARE pipelined before its first use) and then only
 * sends the parameters, so PostgreSQL stops planning it on every call — for the hot statements, planning cost
 * several times their execution. Up to 64 such statements per connection. */

/* Sends sql (one statement, $1..$n placeholders) with nparams text parameters (params[i] NULL = SQL NULL); sql and
 * params are copied before it returns. Returns 0 and then calls cb exactly once; or SB_EUNAVAIL when not connected,
 * SB_EINVAL when libpq refuses to send it (cb never called). */
int sb_pg_query(sb_pg_t *pg, const char *sql, int nparams, const char *const *params, int flags, sb_pg_query_cb cb,
                void *arg);

/* ---- fencing: writes that commit only while their writer still owns their slots --------------------------------
 *
 * Several nodes share the tenants by slots (shards/cluster); a slot's owner holds it at an epoch, and a newer owner
 * raises the slot's epoch in the database (sql/0022) before it starts. A fenced query names the (slot, epoch) pairs
 * its writer believes it holds; the adapter ends every segment that carries one with `SELECT sb_fence(slots,
 * epochs)` over all of them (the lowest epoch per slot), which takes the slots' locks shared until commit and refuses
 * the transaction if any slot has a newer epoch. A segment so refused is taken apart as for any failure: its other
 * queries are sent again alone, each with its own fence, and a query refused alone gets SB_EFENCED (or SB_EINVAL with
 * the server's message, if the check itself could not run). So a write commits only if its slot's epoch was still
 * its writer's when it committed, and a refused write leaves nothing behind. */
typedef struct sb_pg_fence {
    int32_t slot;
    int64_t epoch;
} sb_pg_fence_t;

/* sb_pg_query with fences[0..nfences) (copied). err SB_EFENCED in the callback: refused, a slot has a newer owner. */
int sb_pg_query_fenced(sb_pg_t *pg, const char *sql, int nparams, const char *const *params, int flags,
                       const sb_pg_fence_t *fences, size_t nfences, sb_pg_query_cb cb, void *arg);

/* ---- batches: the small requests of a loop turn, one set-based statement ----------------------------------------
 *
 * A batch kind (a def, static) names a prepared statement whose parameters are arrays, one element per request,
 * taken apart with unnest() ... WITH ORDINALITY so that each result row can say whose it is. Callers add items;
 * the adapter keeps them in arrival order and sends them whenever a new segment is about to start — just before the
 * loop blocks with this turn's queries not yet synced (they join them), or right after the segment in flight
 * finished (they go out with what was held back meanwhile) — at most def->max elements a statement. So a hundred
 * requests of a turn cost one statement, and those that arrive while a segment commits leave together the moment it
 * is done. A statement of more than one item that the server refuses (SB_EINVAL: a constraint, say) is sent again
 * one item at a time, so only the bad item learns of the refusal. Up to 8 kinds per connection. */
typedef struct sb_pg_batch_def {
    const char *what;   /* the items, plural, for the log: "receipts" */
    const char *sql;    /* static storage: prepared once per connection; $1..$ncols are text arrays */
    int ncols;          /* 1..24 */
    size_t max;         /* elements per statement at most (an item of more than max goes alone) */
    /* How many elements item adds to each column; NULL: one. */
    size_t (*count)(const void *item);
    /* Element k (0 .. count - 1) of item: the ncols values of its columns into v (NULL: SQL NULL), each borrowed
     * until the next call; num is scratch room (24 bytes a column) for numbers the item holds as integers. */
    void (*row)(const void *item, size_t k, const char **v, char (*num)[24]);
    /* Optional: a statement of exactly one element is sql_one instead (static storage), whose $1..$ncols are that
     * element's values themselves, not arrays: a lone request skips the set-based plan's overhead. */
    const char *sql_one;
    /* The outcome for items[0..n) (the array is the adapter's, freed after the call; the items are the caller's
     * again): err, detail and res as sb_pg_query_cb has them. Called exactly once per item added. */
    void (*done)(void **items, size_t n, int err, const char *detail, const PGresult *res);
    /* Optional: the fence of item (its writer's slot and epoch) into *out, returning true; false: none. A statement
     * carries its items' fences; one refused (SB_EFENCED) with more than one item is sent again an item at a time. */
    bool (*fence)(const void *item, sb_pg_fence_t *out);
} sb_pg_batch_def_t;

/* Queues item (borrowed until def->done hands it back) for def's next statement on pg. Returns 0, or SB_EUNAVAIL
 * when pg is not connected and SB_ENOSPC when pg has no room for another kind (item not queued, done not called). */
int sb_pg_batch_add(sb_pg_t *pg, const sb_pg_batch_def_t *def, void *item);
/* Sends def's waiting items now (a stopping shard that wants them out while the connection is still there). */
void sb_pg_batch_flush(sb_pg_t *pg, const sb_pg_batch_def_t *def);
/* Hands def's waiting items back unsent: def->done with SB_ECANCELED ("stopping"). sb_pg_close does this for every
 * kind. */
void sb_pg_batch_cancel(sb_pg_t *pg, const sb_pg_batch_def_t *def);

/* Appends v as the next element of a PostgreSQL array literal being built in b (b empty: the first; the caller
 * closes it with "}"): always quoted, with " and \ escaped; v NULL is the SQL NULL. For the set-based statements
 * that take a batch as parallel arrays (... FROM unnest($1::bigint[], $2::text[], ...)). */
void sb_pg_array_item(sb_buf_t *b, const char *v);

/* err is 0 when the server answered in time; otherwise an SB_E* code and a short description (valid during the
 * call only). */
typedef void (*sb_pg_ping_cb)(void *arg, int err, const char *detail);
/* Runs "SELECT 1". Returns 0 and then calls cb exactly once (answer, error, or timeout_ms elapsed); or SB_EUNAVAIL
 * when not connected (cb never called). */
int sb_pg_ping(sb_pg_t *pg, uint64_t timeout_ms, sb_pg_ping_cb cb, void *arg);

/* Times every transaction of pg into h (borrowed: it must outlive pg; NULL stops): from the moment a segment's Sync
 * is sent (its statements were queued during the loop turn and leave with it, in the same flush) until the Sync's
 * result is read back, before any of the segment's callbacks run. That is the server executing the segment's
 * statements and committing them (its fsync, or a group commit's share of one), the network both ways, and the wait
 * behind a segment still in flight before it (SB_PG_ALONE queries can have several out). Not counted: the time
 * queries were held back while the previous segment committed (group commit), nor connecting. One observation per
 * segment, whatever it held, and a rolled-back segment counts too; a segment lost with its connection does not. One
 * monotonic clock read (uv_hrtime) at each end; h is written from the loop's thread only. */
struct sb_hist;
void sb_pg_set_histogram(sb_pg_t *pg, struct sb_hist *h);

/* Figures for tests and metrics. */
typedef struct sb_pg_stats {
    uint64_t queries;   /* queries completed (any outcome) */
    uint64_t segments;  /* Syncs sent: transactions */
    uint64_t reconnects;
    uint64_t retries;   /* queries sent again, alone, after another's failure rolled their batch back */
    uint64_t held;      /* queries that waited for the segment in flight to commit */
    uint64_t prepares;  /* statements prepared (SB_PG_PREPARED, once per connection) */
} sb_pg_stats_t;
void sb_pg_get_stats(const sb_pg_t *pg, sb_pg_stats_t *out);

#endif
