/* The retry policy; see retry.h. */
#include "proto/retry.h"

uint64_t sb_retry_ceiling_ms(unsigned attempt)
{
    uint64_t c = SB_RETRY_BASE_MS;
    for (unsigned i = 1; i < attempt && c < SB_RETRY_CAP_MS; i++)
        c *= SB_RETRY_FACTOR;
    return c < SB_RETRY_CAP_MS ? c : SB_RETRY_CAP_MS;
}

uint64_t sb_retry_backoff_ms(unsigned attempt, int retry_after_s, uint64_t rnd)
{
    uint64_t delay = rnd % (sb_retry_ceiling_ms(attempt) + 1);
    if (retry_after_s >= 0) {
        uint64_t ra = (uint64_t)(retry_after_s > SB_RETRY_AFTER_MAX_S ? SB_RETRY_AFTER_MAX_S : retry_after_s) * 1000;
        if (ra > delay)
            delay = ra;
    }
    return delay;
}

bool sb_retry_may(unsigned attempts)
{
    return attempts < SB_RETRY_MAX_ATTEMPTS;
}
