/* A set of int64 ids; see idset.h. */
#include "proto/idset.h"

#include "proto/mem.h"

#include <string.h>

static size_t home(const sb_idset_t *s, int64_t id)
{
    return (size_t)(((uint64_t)id * 0x9E3779B97F4A7C15ull) >> 32) & (s->cap - 1);
}

void sb_idset_init(sb_idset_t *s)
{
    memset(s, 0, sizeof *s);
}

void sb_idset_cleanup(sb_idset_t *s)
{
    sb_free(s->slots);
    s->cap = s->n = 0;
}

bool sb_idset_has(const sb_idset_t *s, int64_t id)
{
    if (!s->cap || id <= 0)
        return false;
    for (size_t i = home(s, id);; i = (i + 1) & (s->cap - 1)) {
        if (s->slots[i] == id)
            return true;
        if (!s->slots[i])
            return false;
    }
}

static void put(sb_idset_t *s, int64_t id)
{
    size_t i = home(s, id);
    while (s->slots[i])
        i = (i + 1) & (s->cap - 1);
    s->slots[i] = id;
}

bool sb_idset_add(sb_idset_t *s, int64_t id)
{
    if (id <= 0 || sb_idset_has(s, id))
        return false;
    if ((s->n + 1) * 2 > s->cap) {
        sb_idset_t old = *s;
        s->cap = old.cap ? old.cap * 2 : 16;
        s->slots = sb_calloc(s->cap, sizeof *s->slots);
        for (size_t i = 0; i < old.cap; i++)
            if (old.slots[i])
                put(s, old.slots[i]);
        free(old.slots);
    }
    put(s, id);
    s->n++;
    return true;
}

bool sb_idset_del(sb_idset_t *s, int64_t id)
{
    if (!s->cap || id <= 0)
        return false;
    size_t mask = s->cap - 1, i = home(s, id);
    while (s->slots[i] != id) {
        if (!s->slots[i])
            return false;
        i = (i + 1) & mask;
    }
    /* Backward shift: move up every later id of the run whose home does not lie (cyclically) in (i, j]. */
    for (size_t j = (i + 1) & mask; s->slots[j]; j = (j + 1) & mask) {
        size_t h = home(s, s->slots[j]);
        bool stays = i <= j ? (i < h && h <= j) : (i < h || h <= j);
        if (!stays) {
            s->slots[i] = s->slots[j];
            i = j;
        }
    }
    s->slots[i] = 0;
    s->n--;
    return true;
}
