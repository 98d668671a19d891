/* Failure budgets per client address; see guard.h.
 *
 * The table is a plain array searched end to end: it is consulted only when a secret is presented (an admin call, a
 * console auth), never on the hot paths, and 256 slots of 32 bytes are a few cache lines' worth of compares. A slot
 * whose last failure is older than SB_GUARD_FORGET_MS counts as free. */
#include "proto/guard.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

void sb_guard_init(sb_guard_t *g)
{
    memset(g, 0, sizeof *g);
}

static bool live(const sb_guard_entry_t *e, uint64_t now)
{
    return e->last_fail && now - e->last_fail < SB_GUARD_FORGET_MS;
}

static const sb_guard_entry_t *find(const sb_guard_t *g, const sb_guard_addr_t *addr, uint64_t now)
{
    for (size_t i = 0; i < SB_GUARD_SLOTS; i++) {
        const sb_guard_entry_t *e = &g->slots[i];
        if (e->last_fail && memcmp(&e->addr, addr, sizeof *addr) == 0)
            return live(e, now) ? e : NULL;
    }
    return NULL;
}

uint64_t sb_guard_blocked(const sb_guard_t *g, const sb_guard_addr_t *addr, uint64_t now)
{
    const sb_guard_entry_t *e = find(g, addr, now);
    if (!e || e->failures < SB_GUARD_LIMIT || now - e->last_fail >= SB_GUARD_BLOCK_MS)
        return 0;
    return SB_GUARD_BLOCK_MS - (now - e->last_fail);
}

/* The slot of addr: its own (started anew when forgotten), else a free or forgotten one, else the one whose last
 * failure is oldest. */
static sb_guard_entry_t *slot_for(sb_guard_t *g, const sb_guard_addr_t *addr, uint64_t now)
{
    sb_guard_entry_t *victim = &g->slots[0];
    for (size_t i = 0; i < SB_GUARD_SLOTS; i++) {
        sb_guard_entry_t *e = &g->slots[i];
        if (e->last_fail && memcmp(&e->addr, addr, sizeof *addr) == 0) {
            victim = e;
            break;
        }
        if ((live(e, now) ? e->last_fail : 0) < (live(victim, now) ? victim->last_fail : 0))
            victim = e;
    }
    if (!live(victim, now) || memcmp(&victim->addr, addr, sizeof *addr) != 0) {
        victim->addr = *addr;
        victim->failures = 0;
    }
    return victim;
}

sb_guard_verdict_t sb_guard_fail(sb_guard_t *g, const sb_guard_addr_t *addr, uint64_t now)
{
    sb_guard_entry_t *e = slot_for(g, addr, now);
    e->failures++;
    e->last_fail = now ? now : 1;
    sb_guard_verdict_t v = {.first = e->failures == 1, .blocked = e->failures >= SB_GUARD_LIMIT};
    if (!v.blocked && e->failures > SB_GUARD_FREE)
        v.delay_ms = SB_GUARD_DELAY_MS << (e->failures - SB_GUARD_FREE - 1);
    return v;
}

void sb_guard_ok(sb_guard_t *g, const sb_guard_addr_t *addr)
{
    for (size_t i = 0; i < SB_GUARD_SLOTS; i++) {
        sb_guard_entry_t *e = &g->slots[i];
        if (e->last_fail && memcmp(&e->addr, addr, sizeof *addr) == 0)
            memset(e, 0, sizeof *e);
    }
}

void sb_guard_addr_from(sb_guard_addr_t *out, const struct sockaddr *sa)
{
    memset(out, 0, sizeof *out);
    if (sa->sa_family == AF_INET6) {
        memcpy(out->b, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
    } else if (sa->sa_family == AF_INET) {
        out->b[10] = out->b[11] = 0xff;
        memcpy(out->b + 12, &((const struct sockaddr_in *)sa)->sin_addr, 4);
    }
}

void sb_guard_addr_format(const sb_guard_addr_t *addr, char *out, size_t len)
{
    static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    char text[INET6_ADDRSTRLEN] = "?";
    if (memcmp(addr->b, mapped, sizeof mapped) == 0)
        inet_ntop(AF_INET, addr->b + 12, text, sizeof text);
    else
        inet_ntop(AF_INET6, addr->b, text, sizeof text);
    snprintf(out, len, "%s", text);
}
