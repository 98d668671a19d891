/* Failure budgets per client address: how a front door slows down, then stops, someone guessing a secret (the admin
 * token, over HTTP and on the console).
 *
 * Each address has a count of recent failures. The first SB_GUARD_FREE are answered at once (people mistype); each
 * later one is answered SB_GUARD_DELAY_MS later, doubling every time; the SB_GUARD_LIMIT-th blocks the address for
 * SB_GUARD_BLOCK_MS after its last failure, and while it is blocked every attempt is refused without being looked at
 * (HTTP 429, console ERR, and the connection closed), whatever it carries. After the block one more try is heard,
 * and a failure blocks again at once. An address quiet for SB_GUARD_FORGET_MS starts from zero; a success clears it.
 * With these figures a burst costs an attacker 1.5 s for ten guesses, then one guess a minute.
 *
 * A guard holds at most SB_GUARD_SLOTS addresses; when it is full, the one whose last failure is oldest is
 * forgotten (an attacker spread over many addresses is slowed per address, and cannot make the table grow).
 * Pure state: the caller passes the time (ms, any monotonic clock). One guard per owner and thread (a shard's admin
 * API, the console): not thread-safe. */
#ifndef SB_GUARD_H
#define SB_GUARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SB_GUARD_FREE 5
#define SB_GUARD_LIMIT 10
#define SB_GUARD_DELAY_MS 100u
#define SB_GUARD_BLOCK_MS 60000u
#define SB_GUARD_FORGET_MS (15u * 60u * 1000u)
#define SB_GUARD_SLOTS 256

/* An address: IPv4 as an IPv4-mapped IPv6 address, so both kinds compare as 16 bytes. */
typedef struct sb_guard_addr {
    unsigned char b[16];
} sb_guard_addr_t;

typedef struct sb_guard_entry {
    sb_guard_addr_t addr;
    uint64_t last_fail; /* ms; 0 marks a free slot */
    unsigned failures;
} sb_guard_entry_t;

typedef struct sb_guard {
    sb_guard_entry_t slots[SB_GUARD_SLOTS];
} sb_guard_t;

/* What to do with an attempt that failed. */
typedef struct sb_guard_verdict {
    uint32_t delay_ms; /* hold the answer this long (0: answer now) */
    bool blocked;      /* this failure used up the budget: refuse (429 / ERR) and close instead of answering */
    bool first;        /* the first failure of a burst: worth one log line (the rest are counted, not logged) */
} sb_guard_verdict_t;

/* Caller's storage; an empty guard (all zeros is one too). No cleanup needed. */
void sb_guard_init(sb_guard_t *g);

/* 0 when addr may try now; else the ms until its block ends (refuse the attempt, unread). */
uint64_t sb_guard_blocked(const sb_guard_t *g, const sb_guard_addr_t *addr, uint64_t now);
/* Counts a failed attempt of addr at now (> 0) and says how to answer it. */
sb_guard_verdict_t sb_guard_fail(sb_guard_t *g, const sb_guard_addr_t *addr, uint64_t now);
/* A successful attempt: addr starts from zero. */
void sb_guard_ok(sb_guard_t *g, const sb_guard_addr_t *addr);

/* The address of a struct sockaddr (AF_INET or AF_INET6; borrowed); all zeros for any other family. */
struct sockaddr;
void sb_guard_addr_from(sb_guard_addr_t *out, const struct sockaddr *sa);
/* The address as text ("127.0.0.1", "::1") for logs. */
void sb_guard_addr_format(const sb_guard_addr_t *addr, char *out, size_t len);

#endif
