/* A bump allocator for many small strings that die together (a work item's rows): blocks that never move, so what
 * it hands out stays put, and one free of each block at the end instead of one per string. */
#ifndef SB_ARENA_H
#define SB_ARENA_H

#include <stddef.h>

typedef struct sb_arena_block sb_arena_block_t;

typedef struct sb_arena {
    sb_arena_block_t *head; /* the block being filled; the older ones after it */
} sb_arena_t;

void sb_arena_init(sb_arena_t *a);
/* Frees every block; a is empty again. */
void sb_arena_cleanup(sb_arena_t *a);
/* n bytes, aligned for any use, valid until cleanup. */
void *sb_arena_alloc(sb_arena_t *a, size_t n);
/* A copy of s (with its NUL) in a. */
char *sb_arena_strdup(sb_arena_t *a, const char *s);

#endif
