/* sb_strerror() and the invariant-failure handler behind SB_BUG_ON(). */
#include "proto/err.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *sb_strerror(int err)
{
    switch (err) {
    case SB_OK: return "success";
    case SB_EPARSE: return "malformed input";
    case SB_ECLOSED: return "closed";
    case SB_EUNAVAIL: return "backend unavailable";
    case SB_EFENCED: return "fenced: the slot has a newer owner";
    case SB_EACCES: return "signature or credential does not match";
    default: break;
    }
    if (err < 0 && err > -4096)
        return strerror(-err);
    return "unknown error";
}

void sb_bug(const char *file, int line, const char *cond)
{
    fprintf(stderr, "BUG at %s:%d: %s\n", file, line, cond);
    fflush(stderr);
    abort();
}
