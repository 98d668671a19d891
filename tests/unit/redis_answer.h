/* The reply of an adapters/redis.c command, copied out of its callback, for the unit tests that talk to a real Redis
 * (test_counters, test_redis_cluster): pass on_answer and an answer_t, then run the loop until done. */
#ifndef SB_TEST_REDIS_ANSWER_H
#define SB_TEST_REDIS_ANSWER_H

#include <hiredis/hiredis.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

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
            n += (size_t)snprintf(a->str + n, n < sizeof a->str ? sizeof a->str - n : 0, "%s\n",
                                  rep->element[i]->str);
        a->len = n < sizeof a->str ? n : sizeof a->str - 1;
    }
}

#endif
