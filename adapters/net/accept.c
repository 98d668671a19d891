/* Accepting within the descriptor limit; see accept.h. */
#include "adapters/net/accept.h"

#include "gateway/log.h"
#include "gateway/metrics.h"

#include <sys/resource.h>

void sb_accept_guard_init(sb_accept_guard_t *g, const char *what, _Atomic uint64_t *refused)
{
    struct rlimit rl;
    g->what = what;
    g->refused = refused;
    g->fd_limit = getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY ? (uint64_t)rl.rlim_cur : 0;
    g->burst = 0;
}

bool sb_accept_guarded(sb_accept_guard_t *g, uv_stream_t *server, uv_stream_t *client)
{
    if (uv_accept(server, client) < 0)
        return false;
    uv_os_fd_t fd;
    if (g->fd_limit > SB_ACCEPT_FD_RESERVE && uv_fileno((uv_handle_t *)client, &fd) == 0 &&
        (uint64_t)fd >= g->fd_limit - SB_ACCEPT_FD_RESERVE) {
        if (!g->burst++)
            sb_log_warn("%s: out of descriptors (limit %llu, %d kept for the shards' own use): refusing "
                        "connections",
                        g->what, (unsigned long long)g->fd_limit, SB_ACCEPT_FD_RESERVE);
        sb_metric_add(g->refused, 1);
        return false;
    }
    if (g->burst) {
        sb_log_info("%s: taking connections again, after refusing %llu for lack of descriptors", g->what,
                    (unsigned long long)g->burst);
        g->burst = 0;
    }
    return true;
}
