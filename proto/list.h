/* An intrusive doubly-linked list, circular with a head node (libuv's queue.h, written our way): the link lives in
 * the element, so linking and unlinking never allocate, and an element unlinks itself in O(1) without knowing which
 * list holds it. An unlinked link points at itself, so sb_list_remove() is safe to call twice and sb_list_linked()
 * says whether an element is on a list.
 *
 *     typedef struct conn { sb_list_t link; int fd; } conn_t;
 *     sb_list_t conns;                         sb_list_init(&conns);
 *     sb_list_push_back(&conns, &c->link);     sb_list_remove(&c->link);
 *     sb_list_foreach_safe(it, next, &conns) { conn_t *c = sb_container_of(it, conn_t, link); ... }
 *
 * Header only: every function is a few pointer moves. */
#ifndef SB_LIST_H
#define SB_LIST_H

#include <stdbool.h>
#include <stddef.h>

typedef struct sb_list {
    struct sb_list *prev, *next;
} sb_list_t;

/* The element of type `type` whose member `member` is at ptr. */
#define sb_container_of(ptr, type, member) ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

/* An empty list, or an element's link before it is linked. */
static inline void sb_list_init(sb_list_t *l)
{
    l->prev = l->next = l;
}

static inline bool sb_list_empty(const sb_list_t *head)
{
    return head->next == head;
}

/* Whether the element's link (initialized) is on a list. */
static inline bool sb_list_linked(const sb_list_t *link)
{
    return link->next != link;
}

static inline void sb_list_insert_after(sb_list_t *at, sb_list_t *link)
{
    link->prev = at;
    link->next = at->next;
    at->next->prev = link;
    at->next = link;
}

static inline void sb_list_push_back(sb_list_t *head, sb_list_t *link)
{
    sb_list_insert_after(head->prev, link);
}

static inline void sb_list_push_front(sb_list_t *head, sb_list_t *link)
{
    sb_list_insert_after(head, link);
}

/* Unlinks link from whatever list holds it (nothing when it is on none) and leaves it unlinked. */
static inline void sb_list_remove(sb_list_t *link)
{
    link->prev->next = link->next;
    link->next->prev = link->prev;
    link->prev = link->next = link;
}

/* The first element's link, or NULL when the list is empty. */
static inline sb_list_t *sb_list_first(const sb_list_t *head)
{
    return sb_list_empty(head) ? NULL : head->next;
}

/* The last element's link, or NULL when the list is empty. */
static inline sb_list_t *sb_list_last(const sb_list_t *head)
{
    return sb_list_empty(head) ? NULL : head->prev;
}

/* Removes and returns the last element's link, or NULL. */
static inline sb_list_t *sb_list_pop_back(sb_list_t *head)
{
    sb_list_t *l = sb_list_last(head);
    if (l)
        sb_list_remove(l);
    return l;
}

/* Removes and returns the first element's link, or NULL. */
static inline sb_list_t *sb_list_pop_front(sb_list_t *head)
{
    sb_list_t *l = sb_list_first(head);
    if (l)
        sb_list_remove(l);
    return l;
}

/* Iterates over the links of head. The _safe form allows removing `it` inside the loop. */
#define sb_list_foreach(it, head) for (sb_list_t *it = (head)->next; it != (head); it = it->next)
#define sb_list_foreach_safe(it, nx, head)                                                                          \
    for (sb_list_t *it = (head)->next, *nx = it->next; it != (head); it = nx, nx = it->next)

#endif
