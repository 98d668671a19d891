/* A set of positive int64 ids: open addressing with linear probing, grown to stay at most half full, deletion by
 * backward shift (no tombstones, so a set that sees many ids come and go never slows down). For the small "is this
 * one already queued here?" questions an actor asks about the ids in its queue. */
#ifndef SB_IDSET_H
#define SB_IDSET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct sb_idset {
    int64_t *slots; /* 0 marks an empty slot: ids are > 0 */
    size_t cap;     /* a power of two, or 0 before the first add */
    size_t n;
} sb_idset_t;

void sb_idset_init(sb_idset_t *s);
void sb_idset_cleanup(sb_idset_t *s);

/* Adds id (> 0). Returns true if it was not there yet, false if it was (or id <= 0: nothing is added). */
bool sb_idset_add(sb_idset_t *s, int64_t id);
bool sb_idset_has(const sb_idset_t *s, int64_t id);
/* Removes id. Returns whether it was there. */
bool sb_idset_del(sb_idset_t *s, int64_t id);

#endif
