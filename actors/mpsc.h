/* An intrusive, unbounded, lock-free multi-producer single-consumer queue (Dmitry Vyukov's design).
 *
 * Producers on any thread push with one atomic exchange; the single consumer pops without atomics read-modify-write.
 * It is the body of a cross-shard mailbox: other shards push, the owning shard drains after each wake-up.
 *
 * A pop can briefly see the queue as empty while a producer is between its exchange and its link store; the producer
 * then wakes the consumer again (it always signals after its push completes), so nothing is stranded. */
#ifndef SB_MPSC_H
#define SB_MPSC_H

#include <stdatomic.h>
#include <stddef.h>

typedef struct sb_mpsc_node {
    _Atomic(struct sb_mpsc_node *) next;
} sb_mpsc_node_t;

typedef struct sb_mpsc {
    _Alignas(64) _Atomic(sb_mpsc_node_t *) head; /* producers' end */
    _Alignas(64) sb_mpsc_node_t *tail;           /* consumer's end */
    sb_mpsc_node_t stub;
} sb_mpsc_t;

void sb_mpsc_init(sb_mpsc_t *q);
/* Any thread. The node is owned by the queue until popped. */
void sb_mpsc_push(sb_mpsc_t *q, sb_mpsc_node_t *n);
/* Consumer thread only. Returns the oldest node, or NULL when empty (or a push is half done). */
sb_mpsc_node_t *sb_mpsc_pop(sb_mpsc_t *q);

#endif
