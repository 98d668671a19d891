/* The admin token's failure budgets, kept on shard 0; see authguard.h. */
#include "gateway/authguard.h"

#include "gateway/log.h"
#include "proto/err.h"
#include "proto/mem.h"

static sb_guard_t guard; /* shard 0's thread only; all zeros is an empty guard */

sb_auth_verdict_t sb_authguard_judge(const sb_guard_addr_t *addr, bool token_ok, const char *door)
{
    sb_auth_verdict_t v = {0};
    sb_shard_t *s = sb_shard_self();
    SB_BUG_ON(!s || sb_shard_index(s) != 0);
    uint64_t now = uv_now(sb_shard_loop(s));
    if ((v.blocked_ms = sb_guard_blocked(&guard, addr, now)))
        return v;
    if (token_ok) {
        sb_guard_ok(&guard, addr);
        v.ok = true;
        return v;
    }
    sb_guard_verdict_t g = sb_guard_fail(&guard, addr, now);
    char who[64];
    sb_guard_addr_format(addr, who, sizeof who);
    if (g.first)
        sb_log_warn("%s: a wrong admin token from %s (its further failures are counted, not logged)", door, who);
    if (g.blocked) {
        sb_log_warn("%s: %d wrong admin tokens from %s: blocked for %u s", door, SB_GUARD_LIMIT, who,
                    SB_GUARD_BLOCK_MS / 1000);
        v.blocked_ms = SB_GUARD_BLOCK_MS;
    }
    v.delay_ms = g.delay_ms;
    return v;
}

typedef struct ask {
    unsigned from;
    sb_guard_addr_t addr;
    bool token_ok;
    const char *door;
    sb_authguard_cb cb;
    void *arg;
    sb_auth_verdict_t v;
} ask_t;

static void answered(sb_shard_t *s, void *arg)
{
    ask_t *a = arg;
    (void)s;
    a->cb(a->arg, &a->v);
    free(a);
}

static void judged(sb_shard_t *s, void *arg)
{
    ask_t *a = arg;
    (void)s;
    a->v = sb_authguard_judge(&a->addr, a->token_ok, a->door);
    if (sb_shard_exec(a->from, answered, a) < 0) /* the asking shard is gone: nobody to answer */
        free(a);
}

int sb_authguard_ask(sb_shard_t *s, const sb_guard_addr_t *addr, bool token_ok, const char *door, sb_authguard_cb cb,
                     void *arg)
{
    ask_t *a = sb_calloc(1, sizeof *a);
    a->from = sb_shard_index(s);
    a->addr = *addr;
    a->token_ok = token_ok;
    a->door = door;
    a->cb = cb;
    a->arg = arg;
    int rc = sb_shard_exec(0, judged, a);
    if (rc < 0)
        free(a);
    return rc;
}
