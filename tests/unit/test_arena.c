/* Tests of the bump allocator (proto/arena.c): what it hands out is aligned, stays where it is while more comes
 * (strings copied before a new block are intact after it), allocations larger than a block get one of their own, and
 * cleanup frees everything (the ASan build checks for leaks). */
#include "proto/arena.h"
#include "tests/tap.h"

#include <stdalign.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

TEST(strings_stay)
{
    sb_arena_t a;
    sb_arena_init(&a);
    char *s[500];
    char want[32];
    for (int i = 0; i < 500; i++) {
        snprintf(want, sizeof want, "string number %d", i);
        s[i] = sb_arena_strdup(&a, want);
    }
    int bad = 0;
    for (int i = 0; i < 500; i++) {
        snprintf(want, sizeof want, "string number %d", i);
        bad += strcmp(s[i], want) != 0;
    }
    is_int(bad, 0, "500 strings over several blocks, each intact where it was put");
    int misaligned = 0;
    for (int i = 0; i < 100; i++)
        misaligned += ((uintptr_t)sb_arena_alloc(&a, (size_t)i % 13 + 1) % alignof(max_align_t)) != 0;
    is_int(misaligned, 0, "every allocation aligned for any use");
    char *big = sb_arena_alloc(&a, 100000);
    memset(big, 'x', 100000);
    ok(big[99999] == 'x' && !strcmp(s[0], "string number 0"), "one larger than a block gets its own");
    sb_arena_cleanup(&a);
    ok(a.head == NULL, "cleanup leaves it empty");
    sb_arena_cleanup(&a);
    ok(1, "and cleaning up twice is harmless");
}

int main(void)
{
    RUN(strings_stay);
    return tap_done();
}
