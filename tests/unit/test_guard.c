/* Unit tests for proto/guard: the failure budget of one address (free tries, doubling delays, the block, what
 * happens after it), forgetting and clearing, addresses kept apart, and a full table that forgets the oldest. */
#include "proto/guard.h"

#include "tests/tap.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

static sb_guard_addr_t v4(const char *text)
{
    struct sockaddr_in sa = {.sin_family = AF_INET};
    inet_pton(AF_INET, text, &sa.sin_addr);
    sb_guard_addr_t a;
    sb_guard_addr_from(&a, (const struct sockaddr *)&sa);
    return a;
}

TEST(budget)
{
    static sb_guard_t g;
    sb_guard_init(&g);
    sb_guard_addr_t a = v4("192.0.2.7");
    uint64_t t = 1000;
    is_int((long long)sb_guard_blocked(&g, &a, t), 0, "a new address is not blocked");
    for (int i = 1; i <= SB_GUARD_FREE; i++) {
        sb_guard_verdict_t v = sb_guard_fail(&g, &a, t);
        ok(v.delay_ms == 0 && !v.blocked && v.first == (i == 1), "failure %d: answered at once%s", i,
           i == 1 ? ", the first of a burst" : "");
    }
    uint32_t want = SB_GUARD_DELAY_MS;
    for (int i = SB_GUARD_FREE + 1; i < SB_GUARD_LIMIT; i++, want *= 2) {
        sb_guard_verdict_t v = sb_guard_fail(&g, &a, t);
        ok(v.delay_ms == want && !v.blocked && !v.first, "failure %d: held %u ms (%u)", i, want, v.delay_ms);
        is_int((long long)sb_guard_blocked(&g, &a, t), 0, "not blocked yet");
    }
    sb_guard_verdict_t v = sb_guard_fail(&g, &a, t);
    ok(v.blocked && v.delay_ms == 0, "failure %d: blocked", SB_GUARD_LIMIT);
    is_int((long long)sb_guard_blocked(&g, &a, t + 1000), SB_GUARD_BLOCK_MS - 1000,
           "blocked for the rest of the minute");
    is_int((long long)sb_guard_blocked(&g, &a, t + SB_GUARD_BLOCK_MS), 0, "the block ends");
    v = sb_guard_fail(&g, &a, t + SB_GUARD_BLOCK_MS);
    ok(v.blocked, "one more failure after the block blocks again at once");
    ok(sb_guard_blocked(&g, &a, t + SB_GUARD_BLOCK_MS + 1) > 0, "and it is blocked");
    sb_guard_ok(&g, &a);
    is_int((long long)sb_guard_blocked(&g, &a, t + SB_GUARD_BLOCK_MS + 2), 0, "a success clears it");
    v = sb_guard_fail(&g, &a, t + SB_GUARD_BLOCK_MS + 3);
    ok(v.first && v.delay_ms == 0, "and the next failure starts a new burst");
}

TEST(forgetting)
{
    static sb_guard_t g;
    sb_guard_init(&g);
    sb_guard_addr_t a = v4("192.0.2.8"), b = v4("192.0.2.9");
    for (int i = 0; i < SB_GUARD_LIMIT; i++)
        sb_guard_fail(&g, &a, 5000);
    ok(sb_guard_blocked(&g, &a, 5001) > 0, "a is blocked");
    is_int((long long)sb_guard_blocked(&g, &b, 5001), 0, "b is not: addresses are apart");
    ok(sb_guard_fail(&g, &b, 5001).first, "b's first failure is a burst of its own");
    sb_guard_verdict_t v = sb_guard_fail(&g, &a, 5000 + SB_GUARD_FORGET_MS);
    ok(v.first && !v.blocked && v.delay_ms == 0, "after SB_GUARD_FORGET_MS of quiet a starts from zero");

    struct sockaddr_in6 six = {.sin6_family = AF_INET6};
    inet_pton(AF_INET6, "2001:db8::1", &six.sin6_addr);
    sb_guard_addr_t c;
    sb_guard_addr_from(&c, (const struct sockaddr *)&six);
    char text[64];
    sb_guard_addr_format(&c, text, sizeof text);
    is_str(text, "2001:db8::1", "IPv6 formats as IPv6");
    sb_guard_addr_format(&a, text, sizeof text);
    is_str(text, "192.0.2.8", "IPv4 formats as IPv4");
}

TEST(full_table)
{
    static sb_guard_t g;
    sb_guard_init(&g);
    sb_guard_addr_t first = v4("10.0.0.1");
    for (int i = 0; i < SB_GUARD_LIMIT; i++)
        sb_guard_fail(&g, &first, 100);
    ok(sb_guard_blocked(&g, &first, 101) > 0, "the first address is blocked");
    char text[32];
    int still = 0;
    for (int i = 0; i < SB_GUARD_SLOTS - 1; i++) { /* fills the table, later than first */
        snprintf(text, sizeof text, "10.1.%d.%d", i / 250, i % 250);
        sb_guard_addr_t x = v4(text);
        sb_guard_fail(&g, &x, 200 + (uint64_t)i);
    }
    still = sb_guard_blocked(&g, &first, 1000) > 0;
    ok(still, "with the table just full, the first is still remembered");
    sb_guard_addr_t late = v4("10.9.9.9");
    ok(sb_guard_fail(&g, &late, 2000).first, "one more address takes a slot");
    is_int((long long)sb_guard_blocked(&g, &first, 2001), 0, "the one that failed longest ago was forgotten");
    sb_guard_addr_t second = v4("10.1.0.0");
    ok(!sb_guard_fail(&g, &second, 2002).first, "the others are still counted");
}

int main(void)
{
    RUN(budget);
    RUN(forgetting);
    RUN(full_table);
    return tap_done();
}
