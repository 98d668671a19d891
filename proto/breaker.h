/* A circuit breaker: stop asking an endpoint that keeps failing, and ask again carefully once it may be back.
 *
 * Pure state, no I/O and no clock of its own (the caller passes now in milliseconds), so it is tested alone. One
 * breaker per provider endpoint per shard (gateway/sender: Twilio's API, Meta's Graph API). States:
 *   CLOSED     requests go; `threshold` endpoint faults in a row (no connection, timeouts, 5xx) open it;
 *   OPEN       nothing goes until the cool-down has passed (sb_breaker_allow says how long to wait);
 *   HALF_OPEN  after the cool-down one probe goes; its success closes the breaker, its fault opens it again with
 *              the cool-down doubled (up to max_cooldown_ms). Others wait while the probe is out (a probe that
 *              never reports, because its send ended before asking the endpoint, is replaced after
 *              max_cooldown_ms).
 * A success at any time resets the count of faults. Answers that are the caller's fault or the provider's pace
 * (a 400, a 429) are neither: the endpoint is up. */
#ifndef SB_BREAKER_H
#define SB_BREAKER_H

#include <stdbool.h>
#include <stdint.h>

typedef enum sb_breaker_state { SB_BREAKER_CLOSED, SB_BREAKER_OPEN, SB_BREAKER_HALF_OPEN } sb_breaker_state_t;

typedef struct sb_breaker {
    sb_breaker_state_t state;
    unsigned faults;            /* in a row, while CLOSED */
    unsigned threshold;         /* faults in a row that open it */
    uint64_t cooldown_ms;       /* the current cool-down */
    uint64_t min_cooldown_ms, max_cooldown_ms;
    uint64_t until_ms;          /* OPEN: when a probe may go */
    bool probing;               /* HALF_OPEN: the probe is out */
    uint64_t probe_ms;          /* since when; a probe that never reports is replaced after max_cooldown_ms */
    uint64_t opened;            /* times it opened (for metrics and logs) */
} sb_breaker_t;

/* Prepares b (caller's storage), CLOSED. threshold >= 1; 0 < min_cooldown_ms <= max_cooldown_ms. */
void sb_breaker_init(sb_breaker_t *b, unsigned threshold, uint64_t min_cooldown_ms, uint64_t max_cooldown_ms);

/* May a request go now? Returns 0 (go; in HALF_OPEN this request is the probe and must be reported), or the number
 * of milliseconds to wait before asking again (at least 1). */
uint64_t sb_breaker_allow(sb_breaker_t *b, uint64_t now_ms);

/* Reports the outcome of a request that was allowed: fault (the endpoint looks unwell) or not. Returns true when
 * this report changed the state (opened or closed it), for logging. */
bool sb_breaker_report(sb_breaker_t *b, bool fault, uint64_t now_ms);

#endif
