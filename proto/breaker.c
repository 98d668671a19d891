/* A circuit breaker; see breaker.h. */
#include "proto/breaker.h"

#include "proto/err.h"

void sb_breaker_init(sb_breaker_t *b, unsigned threshold, uint64_t min_cooldown_ms, uint64_t max_cooldown_ms)
{
    SB_BUG_ON(threshold < 1 || min_cooldown_ms < 1 || max_cooldown_ms < min_cooldown_ms);
    *b = (sb_breaker_t){.state = SB_BREAKER_CLOSED,
                        .threshold = threshold,
                        .cooldown_ms = min_cooldown_ms,
                        .min_cooldown_ms = min_cooldown_ms,
                        .max_cooldown_ms = max_cooldown_ms};
}

static void open_now(sb_breaker_t *b, uint64_t now_ms)
{
    b->state = SB_BREAKER_OPEN;
    b->until_ms = now_ms + b->cooldown_ms;
    b->probing = false;
    b->opened++;
}

uint64_t sb_breaker_allow(sb_breaker_t *b, uint64_t now_ms)
{
    switch (b->state) {
    case SB_BREAKER_CLOSED:
        return 0;
    case SB_BREAKER_OPEN:
        if (now_ms < b->until_ms)
            return b->until_ms - now_ms;
        b->state = SB_BREAKER_HALF_OPEN;
        b->probing = true;
        b->probe_ms = now_ms;
        return 0; /* the probe */
    case SB_BREAKER_HALF_OPEN:
        break;
    }
    if (!b->probing || now_ms >= b->probe_ms + b->max_cooldown_ms) {
        /* no probe out, or its report never came (its request ended some other way): send another */
        b->probing = true;
        b->probe_ms = now_ms;
        return 0;
    }
    return b->cooldown_ms < 1000 ? b->cooldown_ms : 1000; /* ask again soon: the probe may have answered by then */
}

bool sb_breaker_report(sb_breaker_t *b, bool fault, uint64_t now_ms)
{
    switch (b->state) {
    case SB_BREAKER_CLOSED:
        if (!fault) {
            b->faults = 0;
            return false;
        }
        if (++b->faults < b->threshold)
            return false;
        b->faults = 0;
        open_now(b, now_ms);
        return true;
    case SB_BREAKER_OPEN: /* a request allowed before it opened: its news is old */
        return false;
    case SB_BREAKER_HALF_OPEN:
        break;
    }
    if (fault) {
        b->cooldown_ms = b->cooldown_ms * 2 > b->max_cooldown_ms ? b->max_cooldown_ms : b->cooldown_ms * 2;
        open_now(b, now_ms);
        return true;
    }
    b->state = SB_BREAKER_CLOSED;
    b->faults = 0;
    b->probing = false;
    b->cooldown_ms = b->min_cooldown_ms;
    return true;
}
