/* Deadlines; see deadline.h. */
#include "adapters/deadline.h"

#include "proto/err.h"
#include "proto/mem.h"

#include <stdbool.h>
#include <stdlib.h>

struct sb_deadline {
    uv_timer_t timer;
    sb_deadline_cb cb;
    void *arg;
    bool answered, pending, timer_open; /* pending: the operation's answer has not come yet */
};

static void maybe_free(sb_deadline_t *d)
{
    if (!d->pending && !d->timer_open)
        free(d);
}

static void timer_closed(uv_handle_t *h)
{
    sb_deadline_t *d = h->data;
    d->timer_open = false;
    maybe_free(d);
}

static void finish(sb_deadline_t *d, int err, const char *detail)
{
    if (d->answered)
        return;
    d->answered = true;
    uv_close((uv_handle_t *)&d->timer, timer_closed);
    if (d->cb)
        d->cb(d->arg, err, detail);
}

static void on_timeout(uv_timer_t *t)
{
    finish(t->data, SB_ETIMEDOUT, "timed out");
}

sb_deadline_t *sb_deadline_start(uv_loop_t *loop, uint64_t timeout_ms, sb_deadline_cb cb, void *arg)
{
    sb_deadline_t *d = sb_calloc(1, sizeof *d);
    d->cb = cb;
    d->arg = arg;
    d->pending = d->timer_open = true;
    uv_timer_init(loop, &d->timer);
    d->timer.data = d;
    uv_timer_start(&d->timer, on_timeout, timeout_ms, 0);
    return d;
}

void sb_deadline_answer(sb_deadline_t *d, int err, const char *detail)
{
    d->pending = false;
    finish(d, err, detail);
    maybe_free(d);
}

void sb_deadline_cancel(sb_deadline_t *d)
{
    d->cb = NULL;
    sb_deadline_answer(d, 0, "");
}
