/* The retry policy of sends and outgoing webhooks: how many attempts a message gets, and how long to wait before
 * the next one (exponential backoff with full jitter, the provider's Retry-After honoured). Pure: the caller passes
 * its random number, so tests can fix it. */
#ifndef SB_RETRY_H
#define SB_RETRY_H

#include <stdbool.h>
#include <stdint.h>

#define SB_RETRY_MAX_ATTEMPTS 6        /* sends of one message in all, the first included */
#define SB_RETRY_BASE_MS 1000          /* the ceiling of the first retry's delay */
#define SB_RETRY_FACTOR 4              /* ceiling growth per attempt: 1, 4, 16, 64, 256 s, then the cap */
#define SB_RETRY_CAP_MS 300000         /* 5 minutes */
#define SB_RETRY_AFTER_MAX_S 3600      /* a longer Retry-After is taken as this */

/* The largest delay before the attempt that follows attempt number `attempt` (1 = after the first failed):
 * min(SB_RETRY_CAP_MS, SB_RETRY_BASE_MS * SB_RETRY_FACTOR^(attempt - 1)). Non-decreasing; attempt 0 counts as 1. */
uint64_t sb_retry_ceiling_ms(unsigned attempt);

/* The delay before the attempt that follows attempt number `attempt`, with full jitter: rnd (uniformly random)
 * picks a delay in [0, ceiling] (rnd % (ceiling + 1)). When retry_after_s >= 0 (a Retry-After) and is longer, it
 * wins (capped at SB_RETRY_AFTER_MAX_S). */
uint64_t sb_retry_backoff_ms(unsigned attempt, int retry_after_s, uint64_t rnd);

/* True when a message sent `attempts` times may be sent again (attempts < SB_RETRY_MAX_ATTEMPTS); false: it is
 * dead. */
bool sb_retry_may(unsigned attempts);

#endif
