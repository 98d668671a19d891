/* The bump allocator; see arena.h. */
#include "proto/arena.h"

#include "proto/mem.h"

#include <stdalign.h>
#include <stdlib.h>
#include <string.h>

#define BLOCK_MIN 1024

struct sb_arena_block {
    sb_arena_block_t *next;
    size_t used, cap;
    alignas(max_align_t) unsigned char data[];
};

void sb_arena_init(sb_arena_t *a)
{
    a->head = NULL;
}

void sb_arena_cleanup(sb_arena_t *a)
{
    while (a->head) {
        sb_arena_block_t *b = a->head;
        a->head = b->next;
        free(b);
    }
}

void *sb_arena_alloc(sb_arena_t *a, size_t n)
{
    size_t need = (n + alignof(max_align_t) - 1) & ~(alignof(max_align_t) - 1);
    sb_arena_block_t *b = a->head;
    if (!b || b->cap - b->used < need) {
        size_t cap = need > BLOCK_MIN ? need : (b ? b->cap * 2 : BLOCK_MIN);
        b = sb_malloc(sizeof *b + cap);
        b->used = 0;
        b->cap = cap;
        b->next = a->head;
        a->head = b;
    }
    void *p = b->data + b->used;
    b->used += need;
    return p;
}

char *sb_arena_strdup(sb_arena_t *a, const char *s)
{
    size_t n = strlen(s) + 1;
    return memcpy(sb_arena_alloc(a, n), s, n);
}
