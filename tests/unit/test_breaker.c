/* Unit tests for proto/breaker: opening after the threshold of faults in a row (a success in between resets the
 * count), the cool-down, one probe at a time in half-open, closing on its success, doubling the cool-down up to
 * the cap on its failure, and old news from before it opened being ignored. */
#include "proto/breaker.h"

#include "tests/tap.h"

TEST(opens_after_threshold)
{
    sb_breaker_t b;
    sb_breaker_init(&b, 3, 1000, 8000);
    is_int((long long)sb_breaker_allow(&b, 0), 0, "closed: requests go");
    ok(!sb_breaker_report(&b, true, 0) && !sb_breaker_report(&b, true, 0), "two faults: still closed");
    ok(!sb_breaker_report(&b, false, 0), "a success in between");
    ok(!sb_breaker_report(&b, true, 1) && !sb_breaker_report(&b, true, 1), "resets the count");
    ok(sb_breaker_report(&b, true, 10), "the third fault in a row opens it");
    is_int(b.state, SB_BREAKER_OPEN, "open");
    is_int((long long)sb_breaker_allow(&b, 10), 1000, "nothing goes: wait the cool-down");
    is_int((long long)sb_breaker_allow(&b, 600), 410, "the rest of it");
    ok(!sb_breaker_report(&b, false, 700), "an answer to a request from before it opened changes nothing");
    is_int(b.state, SB_BREAKER_OPEN, "still open");
}

TEST(probe_closes_or_reopens)
{
    sb_breaker_t b;
    sb_breaker_init(&b, 1, 1000, 3000);
    sb_breaker_report(&b, true, 0);
    is_int((long long)sb_breaker_allow(&b, 1000), 0, "after the cool-down: one probe goes");
    is_int(b.state, SB_BREAKER_HALF_OPEN, "half open");
    ok(sb_breaker_allow(&b, 1000) > 0, "others wait while it is out");
    is_int((long long)sb_breaker_allow(&b, 4000), 0, "a probe that never reported is replaced after the cap");
    ok(sb_breaker_report(&b, true, 1100), "the probe fails: open again");
    is_int((long long)sb_breaker_allow(&b, 1100), 2000, "for twice as long");
    sb_breaker_allow(&b, 3100);
    sb_breaker_report(&b, true, 3100);
    is_int((long long)sb_breaker_allow(&b, 3100), 3000, "doubling stops at the cap");
    is_int((long long)sb_breaker_allow(&b, 6100), 0, "the next probe");
    ok(sb_breaker_report(&b, false, 6200), "succeeds: closed");
    is_int(b.state, SB_BREAKER_CLOSED, "closed");
    is_int((long long)sb_breaker_allow(&b, 6200), 0, "requests go");
    sb_breaker_report(&b, true, 6300);
    is_int((long long)sb_breaker_allow(&b, 6300), 1000, "and the cool-down starts over from the minimum");
    is_int((long long)b.opened, 4, "opened four times in all");
}

int main(void)
{
    RUN(opens_after_threshold);
    RUN(probe_closes_or_reopens);
    return tap_done();
}
