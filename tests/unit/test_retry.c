/* Unit tests for proto/retry: the backoff ceilings, full jitter across the range, Retry-After, the attempt limit. */
#include "proto/retry.h"

#include "tests/tap.h"

/* splitmix64: a deterministic stand-in for the caller's random source. */
static uint64_t rng_state = 42;
static uint64_t rng(void)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

TEST(backoff)
{
    static const uint64_t want[] = {1000, 1000, 4000, 16000, 64000, 256000, 300000, 300000, 300000};
    for (unsigned a = 0; a < sizeof want / sizeof want[0]; a++)
        is_int((long long)sb_retry_ceiling_ms(a), (long long)want[a], "ceiling after attempt %u", a);
    uint64_t prev = 0;
    bool monotonic = true, capped = true;
    for (unsigned a = 0; a < 10000; a++) {
        uint64_t c = sb_retry_ceiling_ms(a);
        monotonic &= c >= prev;
        capped &= c <= SB_RETRY_CAP_MS && c >= SB_RETRY_BASE_MS;
        prev = c;
    }
    ok(monotonic, "the ceiling never decreases (attempts 0..9999)");
    ok(capped, "and stays within [base, cap]");
    is_int((long long)sb_retry_ceiling_ms(UINT32_MAX), SB_RETRY_CAP_MS, "attempt UINT_MAX: cap");

    /* full jitter: rnd picks anywhere in [0, ceiling] */
    is_int((long long)sb_retry_backoff_ms(1, -1, 0), 0, "rnd 0: no wait");
    is_int((long long)sb_retry_backoff_ms(1, -1, 1000), 1000, "rnd = ceiling: the ceiling");
    is_int((long long)sb_retry_backoff_ms(1, -1, 1001), 0, "rnd wraps");
    is_int((long long)sb_retry_backoff_ms(3, -1, 12345), 12345, "inside the range: as given");
    ok(sb_retry_backoff_ms(6, -1, UINT64_MAX) <= SB_RETRY_CAP_MS, "UINT64_MAX within the cap");
    for (unsigned a = 1; a <= 8; a++) {
        uint64_t ceil = sb_retry_ceiling_ms(a), lo = UINT64_MAX, hi = 0;
        bool in = true;
        for (int i = 0; i < 20000; i++) {
            uint64_t d = sb_retry_backoff_ms(a, -1, rng());
            in &= d <= ceil;
            lo = d < lo ? d : lo;
            hi = d > hi ? d : hi;
        }
        ok(in, "attempt %u: every delay within [0, %llu]", a, (unsigned long long)ceil);
        ok(lo < ceil / 20 && hi > ceil - ceil / 20, "attempt %u: the jitter spans the range (%llu..%llu)", a,
           (unsigned long long)lo, (unsigned long long)hi);
    }

    /* Retry-After wins when longer, never when shorter */
    is_int((long long)sb_retry_backoff_ms(1, 30, 500), 30000, "Retry-After 30 s over a 0.5 s jitter");
    is_int((long long)sb_retry_backoff_ms(5, 2, 100000), 100000, "a shorter Retry-After does not shorten");
    is_int((long long)sb_retry_backoff_ms(1, 0, 700), 700, "Retry-After 0");
    is_int((long long)sb_retry_backoff_ms(1, 400, 0), 400000, "Retry-After beyond the backoff cap is honoured");
    is_int((long long)sb_retry_backoff_ms(1, 1 << 30, 0), SB_RETRY_AFTER_MAX_S * 1000LL,
           "an absurd Retry-After is capped");
    is_int((long long)sb_retry_backoff_ms(1, -7, 10), 10, "negative: none");

    ok(sb_retry_may(1), "after 1 attempt: retry");
    ok(sb_retry_may(SB_RETRY_MAX_ATTEMPTS - 1), "after MAX-1: retry");
    ok(!sb_retry_may(SB_RETRY_MAX_ATTEMPTS), "after MAX: dead letter");
    is_int(SB_RETRY_MAX_ATTEMPTS, 6, "six attempts");
    /* the whole schedule, ceilings summed: about six minutes before the dead letter */
    uint64_t total = 0;
    for (unsigned a = 1; a < SB_RETRY_MAX_ATTEMPTS; a++)
        total += sb_retry_ceiling_ms(a);
    is_int((long long)total, 341000, "at most 341 s of backoff across the retries");
}

int main(void)
{
    RUN(backoff);
    return tap_done();
}
