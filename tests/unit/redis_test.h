/* What the unit tests that talk to a real Redis through adapters/redis.c share (test_counters, test_redis_cluster):
 * the test's one loop, running it until something is done or for a while, and a command's reply copied out of its
 * callback (pass on_answer and an answer_t, then run_until its done), or cmd() doing all of that. Include in one .c
 * file per test program. */
#ifndef SB_TEST_REDIS_TEST_H
#define SB_TEST_REDIS_TEST_H

#include "adapters/redis.h"
#include "proto/err.h"

#include <hiredis/hiredis.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <uv.h>

static uv_loop_t loop;

/* Runs the loop until *done is true or ms have passed; returns *done. */
static inline bool run_until(const bool *done, uint64_t ms)
{
    uint64_t deadline = uv_hrtime() + ms * 1000000ull;
    while (!*done && uv_hrtime() < deadline)
        uv_run(&loop, UV_RUN_ONCE);
    return *done;
}

static inline void on_timer_done(uv_timer_t *t)
{
    *(bool *)t->data = true;
}

/* Runs the loop for ms (lets leases expire; never an assertion about time). */
static inline void pause_ms(uint64_t ms)
{
    bool done = false;
    uv_timer_t t;
    uv_timer_init(&loop, &t);
    t.data = &done;
    uv_timer_start(&t, on_timer_done, ms, 0);
    run_until(&done, ms + 5000);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(&loop, UV_RUN_NOWAIT);
}

typedef struct answer {
    bool done;
    int calls, err, type;
    long long integer;
    char str[32768];
    size_t len, elements;
} answer_t;

static inline void on_answer(void *arg, int err, const struct redisReply *rep)
{
    answer_t *a = arg;
    a->done = true;
    a->calls++;
    a->err = err;
    if (!rep)
        return;
    a->type = rep->type;
    a->integer = rep->integer;
    a->elements = rep->elements;
    if (rep->type == REDIS_REPLY_STRING || rep->type == REDIS_REPLY_STATUS || rep->type == REDIS_REPLY_ERROR) {
        a->len = rep->len < sizeof a->str - 1 ? rep->len : sizeof a->str - 1;
        memcpy(a->str, rep->str, a->len);
        a->str[a->len] = '\0';
    } else if (rep->type == REDIS_REPLY_ARRAY) { /* the string elements, one per line */
        size_t n = 0;
        for (size_t i = 0; i < rep->elements && rep->element[i]->type == REDIS_REPLY_STRING; i++)
            n +=
                (size_t)snprintf(a->str + n, n < sizeof a->str ? sizeof a->str - n : 0, "%s\n", rep->element[i]->str);
        a->len = n < sizeof a->str ? n : sizeof a->str - 1;
    }
}

/* Sends words (NULL-terminated) on r and waits for the answer. */
static inline answer_t cmd(sb_redis_t *r, const char *w0, ...)
{
    answer_t a = {0};
    const char *argv[16];
    size_t len[16];
    int argc = 0;
    va_list ap;
    va_start(ap, w0);
    for (const char *w = w0; w && argc < 16; w = va_arg(ap, const char *)) {
        argv[argc] = w;
        len[argc++] = strlen(w);
    }
    va_end(ap);
    if (sb_redis_command_argv(r, argc, argv, len, on_answer, &a) != 0)
        a.err = SB_EUNAVAIL;
    else
        run_until(&a.done, 5000);
    return a;
}

#endif
