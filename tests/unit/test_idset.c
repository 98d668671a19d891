/* Unit tests for proto/idset: add / has / del against a plain array kept beside it, through growth and many
 * deletions (backward shift must never lose an id that shares a probe run with a deleted one). */
#include "proto/idset.h"

#include "tests/tap.h"

#include <stdlib.h>

TEST(basics)
{
    sb_idset_t s;
    sb_idset_init(&s);
    ok(!sb_idset_has(&s, 5), "empty: nothing there");
    ok(sb_idset_add(&s, 5), "add 5");
    ok(!sb_idset_add(&s, 5), "5 again: already there");
    ok(sb_idset_has(&s, 5), "has 5");
    ok(!sb_idset_add(&s, 0) && !sb_idset_add(&s, -3), "ids must be > 0");
    ok(sb_idset_del(&s, 5) && !sb_idset_has(&s, 5), "del 5");
    ok(!sb_idset_del(&s, 5), "del 5 again: not there");
    is_int((long long)s.n, 0, "empty again");
    sb_idset_cleanup(&s);
}

TEST(random_against_reference)
{
    enum { RANGE = 3000, OPS = 200000 };
    static bool ref[RANGE + 1];
    sb_idset_t s;
    sb_idset_init(&s);
    srand(42);
    int wrong = 0;
    size_t count = 0;
    for (int op = 0; op < OPS; op++) {
        int64_t id = 1 + rand() % RANGE;
        if (rand() % 3) {
            wrong += sb_idset_add(&s, id) != !ref[id];
            count += !ref[id];
            ref[id] = true;
        } else {
            wrong += sb_idset_del(&s, id) != ref[id];
            count -= ref[id];
            ref[id] = false;
        }
        if (op % 1000 == 0)
            for (int64_t k = 1; k <= RANGE; k++)
                wrong += sb_idset_has(&s, k) != ref[k];
    }
    is_int(wrong, 0, "every answer matches the reference over %d operations", OPS);
    is_int((long long)s.n, (long long)count, "the count matches");
    ok(s.n * 2 <= s.cap, "at most half full");
    sb_idset_cleanup(&s);
}

int main(void)
{
    RUN(basics);
    RUN(random_against_reference);
    return tap_done();
}
