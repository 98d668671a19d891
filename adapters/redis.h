/* Redis adapter: one asynchronous hiredis connection per shard, on the shard's libuv loop - or, against a Redis
 * Cluster, one per master - and a subscriber for Pub/Sub.
 *
 * The connection is kept up by itself: when Redis goes away (refused, reset, closed) it reconnects with exponential
 * backoff from 100 ms to 5 s, forever, until sb_redis_close(). Commands issued while disconnected fail at once with
 * SB_EUNAVAIL instead of queueing, so callers (readiness, the counters) see the truth quickly.
 *
 * Commands are pipelined: everything issued in one loop turn leaves in one write, and replies come back in order.
 * PING serves readiness; sb_redis_command_argv is the generic command, and sb_redis_evalsha runs a Lua script by its
 * SHA1, sending the script itself only when the server does not know it (NOSCRIPT: after a restart or SCRIPT FLUSH).
 *
 * Cluster mode. The same calls work against a cluster, given any one of its masters (the seed): once connected the
 * adapter asks the seed INFO cluster, and if cluster_enabled:1 it learns the slot map (CLUSTER SLOTS), opens one
 * connection per master (each with the same reconnect and backoff), and sends every command to the master of its
 * key's hash slot (sb_redis_key_slot). The key is argv[1]; for EVAL/EVALSHA the first key (none when numkeys is 0);
 * for XREAD/XREADGROUP the first key after STREAMS; commands without a key (PING, INFO, TIME, SCRIPT, PUBLISH,
 * CLUSTER, CLIENT, ...) go to any master that is up. A script's keys must share one slot (one hash tag), as Redis
 * requires. -MOVED updates the map (and asks for all of it again) and sends the command to the named node; -ASK sends
 * ASKING and the command there, once, map unchanged; after 5 redirections the caller gets the error reply. Callers
 * see only the final reply; NOSCRIPT is handled per node. A db other than 0 cannot be had in a cluster: it is
 * ignored there, with an error in the log (the mode is known only after connecting, so create cannot refuse it).
 * A command whose master is not connected fails at once with SB_EUNAVAIL (a master met for the first time takes
 * commands during its first connection attempt: they leave when it connects, or fail if it does not). Until the
 * seed has answered INFO, commands go to the seed with a copy of their arguments kept, so a MOVED can be followed;
 * against a single Redis nothing more is copied or routed after that answer.
 *
 * The callback rule is libuv's: a function that returns an error never calls its callback; one that returns 0 calls
 * it exactly once, on the loop's thread - with the reply, or SB_EUNAVAIL if the connection was lost before the reply
 * came, or SB_ECANCELED if sb_redis_close() came first (then from inside sb_redis_close). There is no per-command
 * timeout: a connection that breaks fails its commands, one that hangs holds them. */
#ifndef SB_REDIS_H
#define SB_REDIS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct sb_redis sb_redis_t;
struct redisReply; /* hiredis's; only adapters look inside */

/* Starts connecting to host:port (then SELECT db; against a cluster, db must be 0: see above). host is copied. Never
 * fails: connection errors are retried. */
sb_redis_t *sb_redis_create(uv_loop_t *loop, const char *host, int port, int db);
/* Closes the connection (every master's, in a cluster) and frees the adapter once its handles have closed (on later
 * loop iterations). Pending callbacks are called with SB_ECANCELED. */
void sb_redis_close(sb_redis_t *r);
/* Single Redis: the connection is up. Cluster: at least one master's connection is (others may be down: their
 * commands fail with SB_EUNAVAIL). */
bool sb_redis_connected(const sb_redis_t *r);

/* The Redis Cluster hash slot of a key (0..16383): CRC16-CCITT (XMODEM) mod 16384 of the key, or of its hash tag -
 * what lies between the first '{' and the first '}' after it - when that is not empty. Pure. */
unsigned sb_redis_key_slot(const char *key, size_t len);

/* err is 0 when Redis answered PONG in time; otherwise an SB_E* code and a short static description. */
typedef void (*sb_redis_ping_cb)(void *arg, int err, const char *detail);
/* Sends PING (to the seed; in a cluster, to any master that is up). Returns 0 and then calls cb exactly once (answer,
 * error, or timeout_ms elapsed); or returns a negative code (not connected: SB_EUNAVAIL) and never calls cb. */
int sb_redis_ping(sb_redis_t *r, uint64_t timeout_ms, sb_redis_ping_cb cb, void *arg);

/* err 0: reply is what Redis answered, error replies (REDIS_REPLY_ERROR) included; it is borrowed for the call and
 * freed when the callback returns. err SB_EUNAVAIL (connection lost) or SB_ECANCELED (closed): reply is NULL. */
typedef void (*sb_redis_reply_cb)(void *arg, int err, const struct redisReply *reply);

/* Sends the command argv[0..argc) (argvlen[i] bytes each; binary-safe; all borrowed for the call only). Returns 0
 * and calls cb exactly once; or SB_EUNAVAIL (not connected - in a cluster, the key's master - or the connection is
 * going down) and never calls cb.
 * cb may be NULL: the reply is dropped (an error reply is logged). */
int sb_redis_command_argv(sb_redis_t *r, int argc, const char **argv, const size_t *argvlen, sb_redis_reply_cb cb,
                          void *arg);

/* A Lua script and its SHA1 (lowercase hex), the name EVALSHA knows it by. */
typedef struct sb_redis_script {
    const char *text; /* borrowed: must outlive every call that uses the script (in practice, a static string) */
    char sha[41];
} sb_redis_script_t;

/* Sets s->text = text and computes its SHA1. Pure; cannot fail. */
void sb_redis_script_init(sb_redis_script_t *s, const char *text);

/* EVALSHA s->sha with nkeys keys followed by nargs arguments (keys_and_args[0..nkeys+nargs), lengths in lens; all
 * borrowed for the call only). If Redis answers NOSCRIPT the same call is sent again as EVAL with the script's text
 * (which also loads it), and cb sees only that second answer. Returns and calls back as sb_redis_command_argv.
 * Each sending counts as one command in the stats. */
int sb_redis_evalsha(sb_redis_t *r, const sb_redis_script_t *s, int nkeys, int nargs, const char **keys_and_args,
                     const size_t *lens, sb_redis_reply_cb cb, void *arg);

/* Times every command of sb_redis_command_argv and sb_redis_evalsha into h (borrowed: it must outlive r; NULL
 * stops): from the moment the command is handed to hiredis (it leaves in the loop turn's one write, behind what was
 * queued before it) until its reply is read back, so pipelining, the network and Redis's own queue all count. An
 * EVALSHA resent as EVAL is two round trips, two observations, as is a command redirected by MOVED or ASK. PING,
 * SELECT, INFO, CLUSTER SLOTS and ASKING are not timed. One monotonic clock read (uv_hrtime) at each end; h is
 * written from the loop's thread only. */
struct sb_hist;
void sb_redis_set_histogram(sb_redis_t *r, struct sb_hist *h);

/* What this connection did since it was created (the counters of its one owner thread). */
typedef struct sb_redis_stats {
    uint64_t commands;  /* commands written to Redis (PING, SELECT, INFO, CLUSTER SLOTS, ASKING, EVAL fallbacks and
                         * redirected resends included): round trips, pipelined, all connections */
    uint64_t replies;   /* replies read back */
    uint64_t noscript;  /* EVALSHA answered NOSCRIPT and resent as EVAL */
    uint64_t connects;  /* successful connections (the first one and every reconnection, of every master) */
    uint64_t moved;     /* cluster: -MOVED replies followed */
    uint64_t asked;     /* cluster: -ASK replies followed */
    uint64_t slot_maps; /* cluster: CLUSTER SLOTS answers applied to the slot map */
    uint64_t nodes_up;  /* connections up right now (1 or 0 against a single Redis; masters' in a cluster) */
} sb_redis_stats_t;

void sb_redis_get_stats(const sb_redis_t *r, sb_redis_stats_t *out);

/* ---- the subscriber --------------------------------------------------------------------------------------------
 * One dedicated connection in subscribe mode (classic SUBSCRIBE), for messages PUBLISHed by any node. In a cluster,
 * classic Pub/Sub reaches every node, so any one master will do. It reconnects with the same backoff as above and
 * subscribes every channel again each time. Channels are reference counted: subscribing one twice needs two
 * unsubscribes before UNSUBSCRIBE goes out, so two users can share it. Everything on the loop's thread. */
typedef struct sb_redis_sub sb_redis_sub_t;

/* on_message(arg, channel, chlen, payload, len): a message PUBLISHed on a subscribed channel (all borrowed for the
 * call; never for a channel unsubscribed since). on_state(arg, up): true once the connection is up and Redis has
 * confirmed every subscription (anything published while it was down is lost, so the caller fills the gap from its
 * store); false when it went down (only after a true). on_state may be NULL. host is copied. Never fails. */
sb_redis_sub_t *sb_redis_sub_create(uv_loop_t *loop, const char *host, int port,
                                    void (*on_message)(void *, const char *, size_t, const char *, size_t),
                                    void (*on_state)(void *, bool up), void *arg);
/* The callbacks stop at once (none from inside this call either); the subscriber is freed on a later loop
 * iteration. NULL is ignored. */
void sb_redis_sub_close(sb_redis_sub_t *s);
/* Adds a reference to channel (len bytes, 1..1024, binary-safe, copied); the first one sends SUBSCRIBE if the
 * connection is up, and it is kept across reconnects either way. Returns 0, SB_EINVAL (bad length) or SB_ECLOSED. */
int sb_redis_subscribe(sb_redis_sub_t *s, const char *channel, size_t len);
/* Drops a reference; the last one sends UNSUBSCRIBE (if up) and no message of the channel is delivered after this
 * returns. Returns 0, SB_ENOENT (not subscribed) or SB_ECLOSED. */
int sb_redis_unsubscribe(sb_redis_sub_t *s, const char *channel, size_t len);
/* Whether on_state(true) was the last state reported. */
bool sb_redis_sub_up(const sb_redis_sub_t *s);

#endif
