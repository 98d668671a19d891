/* Unit tests for proto/slab: objects are zeroed, distinct and stay intact while others come and go (each is filled
 * with its own byte and checked), in random order through many chunks; a chunk whose objects are all freed is freed
 * (the ASan run would report it leaked otherwise, and report any object used after its free). */
#include "proto/slab.h"

#include "tests/tap.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { SIZE = 200, N = 2000 };

static bool zeroed(const unsigned char *p)
{
    for (size_t i = 0; i < SIZE; i++)
        if (p[i])
            return false;
    return true;
}

static bool filled(const unsigned char *p, unsigned char b)
{
    for (size_t i = 0; i < SIZE; i++)
        if (p[i] != b)
            return false;
    return true;
}

TEST(random_churn)
{
    static sb_slab_t slab; /* all zero: initialized by the first alloc */
    static unsigned char *obj[N];
    srand(7);
    int not_zero = 0, clobbered = 0, misaligned = 0;
    for (int round = 0; round < 20000; round++) {
        int i = rand() % N;
        if (obj[i]) {
            clobbered += !filled(obj[i], (unsigned char)(i % 251 + 1));
            sb_slab_free(&slab, obj[i]);
            obj[i] = NULL;
        } else {
            obj[i] = sb_slab_alloc(&slab, SIZE);
            not_zero += !zeroed(obj[i]);
            misaligned += ((uintptr_t)obj[i] & 15) != 0;
            memset(obj[i], i % 251 + 1, SIZE);
        }
    }
    ok(not_zero == 0, "every object comes zeroed (%d did not)", not_zero);
    ok(misaligned == 0, "every object is 16-byte aligned (%d is not)", misaligned);
    ok(clobbered == 0, "no object was written by another's use (%d were)", clobbered);
    int live = 0;
    for (int i = 0; i < N; i++)
        if (obj[i]) {
            live++;
            clobbered += !filled(obj[i], (unsigned char)(i % 251 + 1));
            sb_slab_free(&slab, obj[i]);
            obj[i] = NULL;
        }
    ok(clobbered == 0 && live > 0, "the %d left are intact, and freed", live);
    sb_slab_free(&slab, NULL); /* does nothing */
    ok(sb_list_empty(&slab.partial), "no chunk is left once every object is freed");
}

TEST(one_chunk_fills_then_another)
{
    sb_slab_t slab;
    sb_slab_init(&slab, 1000);
    unsigned per = (SB_SLAB_CHUNK - 64) / 1024; /* about what a chunk holds */
    void **o = calloc(per * 3, sizeof *o);
    int distinct = 1;
    for (unsigned i = 0; i < per * 3; i++) {
        o[i] = sb_slab_alloc(&slab, 1000);
        distinct &= i == 0 || o[i] != o[i - 1];
    }
    ok(distinct, "three chunks' worth allocated (%u objects)", per * 3);
    for (unsigned i = 0; i < per * 3; i++)
        sb_slab_free(&slab, o[i]);
    ok(sb_list_empty(&slab.partial), "all chunks gone once their objects are");
    free(o);
}

int main(void)
{
    RUN(random_churn);
    RUN(one_chunk_fills_then_another);
    return tap_done();
}
