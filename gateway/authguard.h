/* The admin token's failure budgets: one per client address for the whole process, whichever door the token is
 * presented at (the admin REST API on any shard, the console on shard 0), so that neither more shards nor another
 * door give a guesser more tries (proto/guard.h has the budget itself).
 *
 * The budgets live on shard 0 and are touched only by its thread: a check from another shard is a round trip of
 * sb_shard_exec messages, which the admin API can afford (it is not a hot path); the console, on shard 0, asks
 * directly. A burst of failures is logged when it starts and when it is blocked, never per attempt. */
#ifndef SB_AUTHGUARD_H
#define SB_AUTHGUARD_H

#include "proto/guard.h"
#include "shards/shard.h"

#include <stdbool.h>
#include <stdint.h>

/* How to answer one presentation of the token. */
typedef struct sb_auth_verdict {
    bool ok;             /* the token was right and the address is not blocked: go ahead */
    uint64_t blocked_ms; /* > 0: refuse without looking (429 / ERR) and close; the address may try again after this */
    uint32_t delay_ms;   /* a wrong token: hold its refusal this long */
} sb_auth_verdict_t;

/* On shard 0 only: judges a presentation by addr at door ("admin API", "console"; for logs) whose token was right
 * (token_ok) or not, and counts it. */
sb_auth_verdict_t sb_authguard_judge(const sb_guard_addr_t *addr, bool token_ok, const char *door);

/* From any shard s: the same judgement, asked of shard 0; cb(arg, verdict) runs later on s, exactly once when this
 * returns 0. Returns a negative code when shard 0 cannot be asked (stopping); cb is never called then. */
typedef void (*sb_authguard_cb)(void *arg, const sb_auth_verdict_t *v);
int sb_authguard_ask(sb_shard_t *s, const sb_guard_addr_t *addr, bool token_ok, const char *door, sb_authguard_cb cb,
                     void *arg);

#endif
