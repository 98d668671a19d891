/* Unit tests for proto/htable and proto/list: the hash table against a plain array kept beside it, through growth,
 * shrinking and many deletions (backward shift must never lose an entry that shares a probe run with a deleted one),
 * with colliding hashes, and removal while iterating; the list's links. */
#include "proto/htable.h"
#include "proto/list.h"

#include "tests/tap.h"

#include <stdlib.h>

typedef struct item {
    sb_hnode_t node;
    int64_t key;
    bool in;
} item_t;

static bool item_eq(const sb_hnode_t *n, const void *key)
{
    return sb_container_of(n, item_t, node)->key == *(const int64_t *)key;
}

static item_t *find(sb_htable_t *t, int64_t key, uint64_t (*h)(int64_t))
{
    sb_hnode_t *n = sb_htable_find(t, h(key), item_eq, &key);
    return n ? sb_container_of(n, item_t, node) : NULL;
}

static uint64_t good_hash(int64_t k)
{
    return sb_hash_u64((uint64_t)k);
}

static uint64_t bad_hash(int64_t k) /* 8 distinct hashes: long probe runs, wrapping around the array */
{
    return (uint64_t)(k % 8) * 0x9E3779B97F4A7C15ull;
}

static void against_reference(uint64_t (*h)(int64_t), const char *what)
{
    enum { RANGE = 3000, OPS = 100000 };
    static item_t items[RANGE + 1];
    for (int64_t k = 0; k <= RANGE; k++)
        items[k] = (item_t){.key = k};
    sb_htable_t t;
    sb_htable_init(&t);
    srand(7);
    int wrong = 0;
    size_t count = 0, max_cap = 0;
    for (int op = 0; op < OPS; op++) {
        int64_t k = 1 + rand() % RANGE;
        item_t *it = &items[k];
        if (rand() % 3 || (op > OPS / 2 && rand() % 5 == 0)) {
            if (!it->in) {
                it->node.hash = h(k);
                sb_htable_insert(&t, &it->node);
                it->in = true;
                count++;
            }
        } else {
            wrong += sb_htable_remove(&t, &it->node) != it->in;
            count -= it->in;
            it->in = false;
        }
        if (t.cap > max_cap)
            max_cap = t.cap;
        if (op % 1000 == 0)
            for (int64_t q = 1; q <= RANGE; q++)
                wrong += (find(&t, q, h) != NULL) != items[q].in;
    }
    is_int(wrong, 0, "%s: every answer matches the reference over %d operations", what, OPS);
    is_int((long long)t.n, (long long)count, "%s: the count matches", what);
    ok(t.n * 2 <= t.cap, "%s: at most half full", what);

    /* removal while iterating: drop every odd key, see every entry at least once */
    size_t pos = 0, seen = 0;
    for (sb_hnode_t *n; (n = sb_htable_next(&t, &pos));) {
        item_t *it = sb_container_of(n, item_t, node);
        seen++;
        if (it->key % 2) {
            sb_htable_remove_at(&t, &pos);
            it->in = false;
        }
    }
    ok(seen >= count, "%s: iteration saw every entry (%zu of %zu)", what, seen, count);
    wrong = 0;
    for (int64_t q = 1; q <= RANGE; q++)
        wrong += (find(&t, q, h) != NULL) != items[q].in || (items[q].in && q % 2);
    is_int(wrong, 0, "%s: after removing the odd ones while iterating, the even ones are all there", what);
    for (int64_t q = 1; q <= RANGE; q++)
        if (items[q].in)
            sb_htable_remove(&t, &items[q].node), items[q].in = false;
    ok(t.n == 0 && t.cap == 0, "%s: empty again, the slots freed (grew to %zu)", what, max_cap);
    sb_htable_cleanup(&t);
}

TEST(table)
{
    against_reference(good_hash, "mixed hashes");
    against_reference(bad_hash, "colliding hashes");
    ok(sb_hash_bytes("abc", 3) == sb_hash_bytes("abc", 3) && sb_hash_bytes("abc", 3) != sb_hash_bytes("abd", 3),
       "sb_hash_bytes is a function of the bytes");
    ok(sb_hash_u64(1) != sb_hash_u64(2) && (sb_hash_u64(1) & 15) != (sb_hash_u64(2) & 15),
       "sequential ids land apart");
}

typedef struct elem {
    sb_list_t link;
    int v;
} elem_t;

TEST(list)
{
    sb_list_t head;
    sb_list_init(&head);
    elem_t e[4];
    for (int i = 0; i < 4; i++) {
        e[i].v = i;
        sb_list_init(&e[i].link);
    }
    ok(sb_list_empty(&head) && !sb_list_linked(&e[0].link), "empty; an element is on no list");
    sb_list_push_back(&head, &e[1].link);
    sb_list_push_back(&head, &e[2].link);
    sb_list_push_front(&head, &e[0].link);
    sb_list_push_back(&head, &e[3].link);
    int order = 0, n = 0;
    sb_list_foreach(it, &head)
    {
        order = order * 10 + sb_container_of(it, elem_t, link)->v;
        n++;
    }
    is_int(order, 123, "push_front and push_back keep the order (0123)");
    sb_list_remove(&e[2].link);
    sb_list_remove(&e[2].link); /* twice: nothing */
    ok(!sb_list_linked(&e[2].link), "a removed element is unlinked");
    sb_list_foreach_safe(it, nx, &head) sb_list_remove(it);
    ok(sb_list_empty(&head), "removing while iterating empties it");
    ok(sb_list_pop_front(&head) == NULL, "pop from an empty list: NULL");
}

int main(void)
{
    RUN(table);
    RUN(list);
    return tap_done();
}
