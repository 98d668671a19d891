/* Fixed-size objects packed in chunks; see slab.h. */
#include "proto/slab.h"

#include "proto/err.h"
#include "proto/mem.h"

#include <stdint.h>
#include <string.h>

typedef struct chunk {
    sb_list_t link;   /* on the slab's partial list while it has a free object */
    void *free;       /* free objects, linked through their first word */
    unsigned used, cap;
    _Alignas(16) char objects[];
} chunk_t;

/* Each object is preceded by its chunk, so that freeing it finds the chunk in O(1). */
typedef struct slot {
    chunk_t *chunk;
    _Alignas(16) char obj[];
} slot_t;

void sb_slab_init(sb_slab_t *s, size_t size)
{
    size_t n = sizeof(slot_t) + (size ? size : 1);
    s->size = (n + 15) & ~(size_t)15;
    sb_list_init(&s->partial);
}

static chunk_t *chunk_new(sb_slab_t *s)
{
    chunk_t *c = sb_malloc(SB_SLAB_CHUNK);
    c->used = 0;
    c->cap = (unsigned)((SB_SLAB_CHUNK - sizeof *c) / s->size);
    c->free = NULL;
    for (unsigned i = c->cap; i-- > 0;) { /* the first object first */
        slot_t *sl = (slot_t *)(c->objects + i * s->size);
        sl->chunk = c;
        *(void **)sl->obj = c->free;
        c->free = sl->obj;
    }
    sb_list_push_back(&s->partial, &c->link);
    return c;
}

void *sb_slab_alloc(sb_slab_t *s, size_t size)
{
    if (!s->size)
        sb_slab_init(s, size);
    SB_BUG_ON(size + sizeof(slot_t) > s->size);
    chunk_t *c = sb_list_empty(&s->partial) ? chunk_new(s) : sb_container_of(sb_list_first(&s->partial), chunk_t, link);
    void *obj = c->free;
    c->free = *(void **)obj;
    if (++c->used == c->cap)
        sb_list_remove(&c->link);
    memset(obj, 0, s->size - sizeof(slot_t));
    return obj;
}

void sb_slab_free(sb_slab_t *s, void *obj)
{
    if (!obj)
        return;
    chunk_t *c = ((slot_t *)((char *)obj - offsetof(slot_t, obj)))->chunk;
    if (c->used-- == c->cap)
        sb_list_push_front(&s->partial, &c->link);
    if (!c->used) {
        sb_list_remove(&c->link);
        free(c);
        return;
    }
    *(void **)obj = c->free;
    c->free = obj;
}
