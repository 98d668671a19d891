/* The growable hash table; see htable.h. */
#include "proto/htable.h"

#include "proto/mem.h"

#include <string.h>

#define MIN_CAP 16

void sb_htable_init(sb_htable_t *t)
{
    t->slots = NULL;
    t->cap = t->n = 0;
}

void sb_htable_cleanup(sb_htable_t *t)
{
    free(t->slots);
    sb_htable_init(t);
}

static size_t home(const sb_htable_t *t, uint64_t hash)
{
    return (size_t)hash & (t->cap - 1);
}

static void place(sb_htable_t *t, sb_hnode_t *node)
{
    size_t i = home(t, node->hash);
    while (t->slots[i])
        i = (i + 1) & (t->cap - 1);
    t->slots[i] = node;
}

static void resize(sb_htable_t *t, size_t cap)
{
    sb_hnode_t **old = t->slots;
    size_t old_cap = t->cap;
    t->slots = sb_calloc(cap, sizeof *t->slots);
    t->cap = cap;
    for (size_t i = 0; i < old_cap; i++)
        if (old[i])
            place(t, old[i]);
    free(old);
}

sb_hnode_t *sb_htable_find(const sb_htable_t *t, uint64_t hash, sb_htable_eq_fn eq, const void *key)
{
    if (!t->n)
        return NULL;
    for (size_t i = home(t, hash); t->slots[i]; i = (i + 1) & (t->cap - 1))
        if (t->slots[i]->hash == hash && eq(t->slots[i], key))
            return t->slots[i];
    return NULL;
}

void sb_htable_insert(sb_htable_t *t, sb_hnode_t *node)
{
    if ((t->n + 1) * 2 > t->cap)
        resize(t, t->cap ? t->cap * 2 : MIN_CAP);
    place(t, node);
    t->n++;
}

/* Empties slot i and shifts back the entries of its probe run that may move (those whose home is not in (i, j]). */
static void delete_slot(sb_htable_t *t, size_t i)
{
    size_t mask = t->cap - 1;
    t->slots[i] = NULL;
    t->n--;
    for (size_t j = (i + 1) & mask; t->slots[j]; j = (j + 1) & mask) {
        size_t h = home(t, t->slots[j]->hash);
        bool stays = i <= j ? (i < h && h <= j) : (i < h || h <= j);
        if (stays)
            continue;
        t->slots[i] = t->slots[j];
        t->slots[j] = NULL;
        i = j;
    }
}

static void maybe_shrink(sb_htable_t *t)
{
    if (t->cap > MIN_CAP && t->n * 8 < t->cap)
        resize(t, t->cap / 2);
    else if (t->n == 0)
        sb_htable_cleanup(t);
}

bool sb_htable_remove(sb_htable_t *t, sb_hnode_t *node)
{
    if (!t->n)
        return false;
    for (size_t i = home(t, node->hash); t->slots[i]; i = (i + 1) & (t->cap - 1)) {
        if (t->slots[i] == node) {
            delete_slot(t, i);
            maybe_shrink(t);
            return true;
        }
    }
    return false;
}

sb_hnode_t *sb_htable_next(sb_htable_t *t, size_t *pos)
{
    for (; *pos < t->cap; (*pos)++)
        if (t->slots[*pos])
            return t->slots[(*pos)++];
    maybe_shrink(t); /* after removals made with sb_htable_remove_at */
    return NULL;
}

void sb_htable_remove_at(sb_htable_t *t, size_t *pos)
{
    delete_slot(t, --*pos); /* the slot is looked at again: what shifted back into it is seen next */
}

uint64_t sb_hash_u64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

uint64_t sb_hash_bytes(const void *p, size_t len)
{
    const unsigned char *s = p;
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < len; i++) {
        h ^= s[i];
        h *= 0x100000001b3ull;
    }
    return sb_hash_u64(h);
}
