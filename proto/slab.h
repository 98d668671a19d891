/* A slab: fixed-size objects carved from chunks of SB_SLAB_CHUNK bytes, for what a connection holds for its whole
 * life. Packed together, long-lived objects do not end up scattered between the short-lived allocations of a busy
 * loop (a database result, a request being handled), where each would pin a page the others left mostly free: an
 * idle connection then costs what its objects weigh. A chunk is freed as soon as its last object is.
 *
 * Not thread-safe: one slab per thread (a shard's objects are allocated and freed on the shard's thread). */
#ifndef SB_SLAB_H
#define SB_SLAB_H

#include "proto/list.h"

#include <stddef.h>

#define SB_SLAB_CHUNK 32768

typedef struct sb_slab {
    size_t size;      /* of an object, as the slab stores it (rounded up, with its chunk pointer) */
    sb_list_t partial; /* chunks with a free object */
} sb_slab_t;

/* A slab of objects of size bytes (at most a few KiB). An all-zero sb_slab_t is an uninitialized one: sb_slab_alloc
 * initializes it for size then (so a static or _Thread_local slab needs no init call). */
void sb_slab_init(sb_slab_t *s, size_t size);

/* A zeroed object of the slab's size (initializing the slab for size if it is not yet). Never NULL. */
void *sb_slab_alloc(sb_slab_t *s, size_t size);

/* Gives obj (from sb_slab_alloc on this slab, or NULL) back. */
void sb_slab_free(sb_slab_t *s, void *obj);

#endif
