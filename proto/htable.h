/* The growable hash table every module uses: intrusive, open addressing with linear probing, kept between 1/8 and
 * 1/2 full by doubling and halving, deletion by backward shift (no tombstones, so a table whose entries come and
 * go never slows down).
 *
 * An entry embeds an sb_hnode_t holding its hash; the table stores pointers to those nodes, so it never allocates an
 * entry and an entry never moves. The caller hashes its key (sb_hash_u64, sb_hash_bytes), sets node->hash before
 * inserting, and gives lookups an equality function that compares the key inside the entry:
 *
 *     typedef struct chan { sb_hnode_t node; int64_t id; ... } chan_t;
 *     static bool chan_eq(const sb_hnode_t *n, const void *key)
 *     { return sb_container_of(n, chan_t, node)->id == *(const int64_t *)key; }
 *     c->node.hash = sb_hash_u64((uint64_t)c->id); sb_htable_insert(&t, &c->node);
 *     sb_hnode_t *n = sb_htable_find(&t, sb_hash_u64((uint64_t)id), chan_eq, &id);
 *
 * Resizing rehashes everything at once (from the stored hashes: no key is looked at): a table of a million entries
 * takes a few milliseconds, once per doubling. Not thread-safe: one table belongs to one shard. */
#ifndef SB_HTABLE_H
#define SB_HTABLE_H

#include "proto/list.h" /* sb_container_of */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct sb_hnode {
    uint64_t hash;
} sb_hnode_t;

typedef struct sb_htable {
    sb_hnode_t **slots; /* NULL: empty slot */
    size_t cap;         /* a power of two, or 0 before the first insert */
    size_t n;
} sb_htable_t;

typedef bool (*sb_htable_eq_fn)(const sb_hnode_t *node, const void *key);

void sb_htable_init(sb_htable_t *t);
/* Frees the slot array; the entries are the caller's (free them first, e.g. with sb_htable_next). */
void sb_htable_cleanup(sb_htable_t *t);

/* The entry with this hash that eq(node, key) accepts, or NULL. */
sb_hnode_t *sb_htable_find(const sb_htable_t *t, uint64_t hash, sb_htable_eq_fn eq, const void *key);
/* Adds node (borrowed: it must stay where it is until removed), its hash set. The table does not look for a twin:
 * find first when keys must be unique. */
void sb_htable_insert(sb_htable_t *t, sb_hnode_t *node);
/* Removes this very node. Returns whether it was there. */
bool sb_htable_remove(sb_htable_t *t, sb_hnode_t *node);
/* Iteration: start with *pos = 0; returns the next node, or NULL at the end (which may shrink the table, after
 * removals). Inserting or removing other entries while iterating may skip or repeat entries. */
sb_hnode_t *sb_htable_next(sb_htable_t *t, size_t *pos);
/* Removes the node sb_htable_next just returned; iteration then goes on with *pos and misses nothing (an entry that
 * wrapped around the end of the array may be seen twice). */
void sb_htable_remove_at(sb_htable_t *t, size_t *pos);

/* Hashes: a 64-bit integer (a mixing finalizer, so sequential ids spread), and bytes (FNV-1a, then the same mix). */
uint64_t sb_hash_u64(uint64_t x);
uint64_t sb_hash_bytes(const void *p, size_t len);

#endif
