/* Unit tests for proto/gcra: a burst then the steady rate, the wait a refusal names, refusals costing nothing, keys
 * kept apart, no limit at rate 0, fractional rates, and a full table evicting the least recently used bucket. */
#include "proto/gcra.h"

#include "tests/tap.h"

static sb_gcra_key_t key(uint64_t a, uint64_t b)
{
    return (sb_gcra_key_t){{a, b, 0, 0}};
}

TEST(burst_then_rate)
{
    sb_gcra_t g;
    sb_gcra_init(&g, 16);
    sb_gcra_key_t k = key(1, 7);
    sb_gcra_limit_t lim = {.rate = 10, .burst = 5}; /* T = 100 ms */
    uint64_t t = 1000000;
    int taken = 0;
    for (int i = 0; i < 5; i++)
        taken += sb_gcra_take(&g, &k, lim, t) == 0;
    is_int(taken, 5, "a burst of 5 at once conforms");
    is_int((long long)sb_gcra_take(&g, &k, lim, t), 100, "the 6th is refused: 100 ms to wait");
    is_int((long long)sb_gcra_take(&g, &k, lim, t), 100, "a refusal costs nothing: still 100 ms");
    is_int((long long)sb_gcra_peek(&g, &k, lim, t + 40), 60, "peek at +40 ms: 60 ms to wait");
    is_int((long long)sb_gcra_take(&g, &k, lim, t + 99), 1, "at +99 ms: 1 ms to wait");
    is_int((long long)sb_gcra_take(&g, &k, lim, t + 100), 0, "at +100 ms: one more conforms");
    is_int((long long)sb_gcra_take(&g, &k, lim, t + 100), 100, "and the next waits a whole interval");
    int steady = 0;
    for (int i = 2; i <= 11; i++)
        steady += sb_gcra_take(&g, &k, lim, t + 100 * (uint64_t)i) == 0;
    is_int(steady, 10, "one every 100 ms conforms, for a second");
    is_int((long long)sb_gcra_take(&g, &k, lim, t + 10000), 0, "after a quiet spell...");
    taken = 1;
    for (int i = 0; i < 10; i++)
        taken += sb_gcra_take(&g, &k, lim, t + 10000) == 0;
    is_int(taken, 5, "...the burst is back, and no more than the burst");
    sb_gcra_cleanup(&g);
}

TEST(keys_apart_and_unlimited)
{
    sb_gcra_t g;
    sb_gcra_init(&g, 16);
    sb_gcra_key_t a = key(1, 1), b = key(1, 2), c = key(2, 1);
    sb_gcra_limit_t one = {.rate = 1, .burst = 1};
    ok(sb_gcra_take(&g, &a, one, 5000) == 0, "a: the first conforms");
    ok(sb_gcra_take(&g, &a, one, 5000) == 1000, "a: the second waits a second");
    ok(sb_gcra_take(&g, &b, one, 5000) == 0, "b: a bucket of its own");
    ok(sb_gcra_take(&g, &c, one, 5000) == 0, "another kind with the same id: its own too");
    sb_gcra_limit_t none = {.rate = 0, .burst = 1};
    int all = 0;
    for (int i = 0; i < 1000; i++)
        all += sb_gcra_take(&g, &a, none, 5000) == 0;
    is_int(all, 1000, "rate 0: no limit");
    sb_gcra_limit_t slow = {.rate = 0.5, .burst = 2}; /* one every 2 s */
    sb_gcra_key_t d = key(9, 9);
    ok(sb_gcra_take(&g, &d, slow, 0) == 0 && sb_gcra_take(&g, &d, slow, 0) == 0, "0.5/s burst 2: two at once");
    is_int((long long)sb_gcra_take(&g, &d, slow, 0), 2000, "then 2 s to wait");
    sb_gcra_cleanup(&g);
}

TEST(limit_changed)
{
    sb_gcra_t g;
    sb_gcra_init(&g, 16);
    sb_gcra_key_t k = key(3, 3);
    sb_gcra_limit_t slow = {.rate = 1, .burst = 3}, fast = {.rate = 50, .burst = 100};
    for (int i = 0; i < 3; i++)
        sb_gcra_take(&g, &k, slow, 0);
    ok(sb_gcra_take(&g, &k, slow, 0) > 0, "1/s burst 3: used up");
    int n = 0;
    for (int i = 0; i < 200; i++)
        n += sb_gcra_take(&g, &k, fast, 0) == 0;
    ok(n <= 1, "raised to 50/s burst 100: the bucket is still full (%d more at once)", n);
    n = 0;
    for (int i = 0; i < 200; i++)
        n += sb_gcra_take(&g, &k, fast, 1000) == 0;
    ok(n >= 49 && n <= 51, "a second later the new rate holds: about 50 more (%d)", n);
    sb_gcra_key_t fresh = key(3, 4);
    for (int i = 0; i < 50; i++)
        sb_gcra_take(&g, &fresh, fast, 5000);
    is_int((long long)sb_gcra_take(&g, &fresh, slow, 5000), 0,
           "lowered to 1/s burst 3 with half the window used: one more");
    is_int((long long)sb_gcra_take(&g, &fresh, slow, 5000), 500, "then the rest of the half: 500 ms to wait");
    sb_gcra_cleanup(&g);
}

TEST(bounded)
{
    sb_gcra_t g;
    sb_gcra_init(&g, 4);
    sb_gcra_limit_t one = {.rate = 1, .burst = 1};
    for (uint64_t i = 0; i < 4; i++)
        sb_gcra_take(&g, &(sb_gcra_key_t){{i, 0, 0, 0}}, one, 100);
    is_int((long long)sb_gcra_size(&g), 4, "four buckets");
    sb_gcra_take(&g, &(sb_gcra_key_t){{0, 0, 0, 0}}, one, 100); /* 0 becomes the most recently used */
    sb_gcra_take(&g, &(sb_gcra_key_t){{99, 0, 0, 0}}, one, 100);
    is_int((long long)sb_gcra_size(&g), 4, "a fifth key: still four buckets");
    is_int((long long)sb_gcra_peek(&g, &(sb_gcra_key_t){{1, 0, 0, 0}}, one, 100), 0,
           "the least recently used one (1) was forgotten");
    is_int((long long)sb_gcra_peek(&g, &(sb_gcra_key_t){{0, 0, 0, 0}}, one, 100), 1000,
           "the one used again (0) is remembered");
    for (uint64_t i = 1000; i < 11000; i++)
        sb_gcra_take(&g, &(sb_gcra_key_t){{i, 1, 2, 3}}, one, 100);
    is_int((long long)sb_gcra_size(&g), 4, "ten thousand keys: still four buckets");
    sb_gcra_cleanup(&g);
}

int main(void)
{
    RUN(burst_then_rate);
    RUN(keys_apart_and_unlimited);
    RUN(limit_changed);
    RUN(bounded);
    return tap_done();
}
