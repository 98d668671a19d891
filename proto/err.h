/* Error codes and invariant checks shared by every layer.
 *
 * Functions that can fail return 0 (or a non-negative count) on success and a negative SB_E* code on failure,
 * as libuv does. System errors are reported as -errno, so SB_ENOMEM == -ENOMEM and sb_strerror() works for both;
 * our own codes live below -1000 where no errno can reach.
 *
 * SB_BUG_ON() checks our own invariants and stays compiled in (HAProxy's BUG_ON). Never use it on peer input:
 * bad input is an error reply or a closed connection, not a crash. */
#ifndef SB_ERR_H
#define SB_ERR_H

#include <errno.h>

enum {
    SB_OK = 0,
    SB_ENOMEM = -ENOMEM,
    SB_EINVAL = -EINVAL,
    SB_ENOENT = -ENOENT,
    SB_EAGAIN = -EAGAIN,
    SB_ERANGE = -ERANGE,
    SB_EEXIST = -EEXIST,
    SB_ECANCELED = -ECANCELED,
    SB_ETIMEDOUT = -ETIMEDOUT,
    SB_ENOSPC = -ENOSPC,
    SB_E2BIG = -E2BIG,
    SB_EACCES = -EACCES, /* a well-formed credential or signature that does not match */
    SB_EPARSE = -1001,  /* malformed input */
    SB_ECLOSED = -1002, /* the target (shard, actor, connection) is closed or stopping */
    SB_EUNAVAIL = -1003, /* a backend (Redis, PostgreSQL) is not reachable */
    SB_EFENCED = -1004,  /* a write for a slot this node no longer owns (a newer owner's epoch fenced it out) */
    /* -1101 .. -1199: token errors, named in proto/jwt.h (sb_jwt_strerror describes them) */
};

/* Returns a static, human-readable description of an SB_E* code or -errno. Never NULL. */
const char *sb_strerror(int err);

void sb_bug(const char *file, int line, const char *cond) __attribute__((noreturn));

#define SB_BUG_ON(cond)                                   \
    do {                                                  \
        if (__builtin_expect(!!(cond), 0))                \
            sb_bug(__FILE__, __LINE__, #cond);            \
    } while (0)

#endif
