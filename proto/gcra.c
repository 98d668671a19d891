/* GCRA buckets in a bounded LRU table; see gcra.h.
 *
 * Times are kept in microseconds as integers (a rate up to a million a second keeps an exact T), from the caller's
 * milliseconds. */
#include "proto/gcra.h"

#include "proto/mem.h"

#include <stdlib.h>
#include <string.h>

typedef struct bucket {
    sb_hnode_t node;
    sb_list_t link;
    sb_gcra_key_t key;
    uint64_t tat_us;
    uint64_t window_us; /* T + tolerance of the limit tat was counted under */
} bucket_t;

static uint64_t key_hash(const sb_gcra_key_t *k)
{
    return sb_hash_bytes(k->w, sizeof k->w);
}

static bool bucket_eq(const sb_hnode_t *n, const void *key)
{
    return memcmp(&sb_container_of(n, bucket_t, node)->key, key, sizeof(sb_gcra_key_t)) == 0;
}

void sb_gcra_init(sb_gcra_t *g, size_t max)
{
    sb_htable_init(&g->map);
    sb_list_init(&g->lru);
    g->n = 0;
    g->max = max ? max : 1;
}

void sb_gcra_cleanup(sb_gcra_t *g)
{
    while (!sb_list_empty(&g->lru)) {
        bucket_t *b = sb_container_of(sb_list_pop_front(&g->lru), bucket_t, link);
        free(b);
    }
    sb_htable_cleanup(&g->map);
    g->n = 0;
}

size_t sb_gcra_size(const sb_gcra_t *g)
{
    return g->n;
}

static bucket_t *find(const sb_gcra_t *g, const sb_gcra_key_t *key)
{
    sb_hnode_t *n = sb_htable_find(&g->map, key_hash(key), bucket_eq, key);
    return n ? sb_container_of(n, bucket_t, node) : NULL;
}

/* T and the tolerance (burst - 1) * T, in microseconds. */
static void figures(sb_gcra_limit_t lim, uint64_t *t_us, uint64_t *tol_us)
{
    double t = 1e6 / lim.rate;
    *t_us = t < 1 ? 1 : t > 1e15 ? (uint64_t)1e15 : (uint64_t)t;
    *tol_us = *t_us * (uint64_t)(lim.burst ? lim.burst - 1 : 0);
}

/* 0 when a request conforms against tat at now, else the ms to wait (rounded up, at least 1). */
static uint64_t wait_ms(uint64_t tat_us, uint64_t now_us, uint64_t tol_us)
{
    if (tat_us <= now_us || tat_us - now_us <= tol_us)
        return 0;
    uint64_t us = tat_us - now_us - tol_us;
    return (us + 999) / 1000;
}

/* A bucket counted under another limit: its debt (tat - now) is rescaled to the same fraction of the new window, so
 * that a limit raised or lowered takes effect at once, neither forgiving nor inflating what was used. */
static uint64_t rescaled(const bucket_t *b, uint64_t now_us, uint64_t window_us)
{
    if (b->window_us == window_us || b->tat_us <= now_us || !b->window_us)
        return b->tat_us;
    double f = (double)(b->tat_us - now_us) / (double)b->window_us;
    return now_us + (uint64_t)(f * (double)window_us);
}

uint64_t sb_gcra_peek(const sb_gcra_t *g, const sb_gcra_key_t *key, sb_gcra_limit_t lim, uint64_t now_ms)
{
    if (!(lim.rate > 0))
        return 0;
    const bucket_t *b = find(g, key);
    uint64_t t, tol;
    figures(lim, &t, &tol);
    return b ? wait_ms(rescaled(b, now_ms * 1000, t + tol), now_ms * 1000, tol) : 0;
}

uint64_t sb_gcra_take(sb_gcra_t *g, const sb_gcra_key_t *key, sb_gcra_limit_t lim, uint64_t now_ms)
{
    if (!(lim.rate > 0))
        return 0;
    uint64_t now = now_ms * 1000, t, tol;
    figures(lim, &t, &tol);
    bucket_t *b = find(g, key);
    if (b) {
        b->tat_us = rescaled(b, now, t + tol);
        b->window_us = t + tol;
        uint64_t w = wait_ms(b->tat_us, now, tol);
        sb_list_remove(&b->link);
        sb_list_push_front(&g->lru, &b->link);
        if (w)
            return w;
        b->tat_us = (b->tat_us > now ? b->tat_us : now) + t;
        return 0;
    }
    if (g->n >= g->max) { /* full: the least recently used bucket makes room */
        b = sb_container_of(sb_list_pop_back(&g->lru), bucket_t, link);
        sb_htable_remove(&g->map, &b->node);
        g->n--;
    } else {
        b = sb_malloc(sizeof *b);
    }
    b->key = *key;
    b->tat_us = now + t;
    b->window_us = t + tol;
    b->node.hash = key_hash(key);
    sb_htable_insert(&g->map, &b->node);
    sb_list_push_front(&g->lru, &b->link);
    g->n++;
    return 0;
}
