/* The admin console: a line protocol on a TCP port for people (telnet, nc) and scripts (API.md "Admin console").
 *
 * On connect the gateway writes one banner line. Each command is one line; each answer ends with an empty line;
 * failures start with "ERR ". Until `auth <admin_token>` succeeds only help, auth and quit work. A command ending
 * in " -j" answers one line of JSON instead of a table. `prompt` toggles an "sb> " prompt. `trace <tenant>` is
 * the one answer that streams: one line per event of the tenant (or one JSON object per line with -j) as they are
 * committed, until the operator sends an empty line; meanwhile only that empty line and `quit` are heard.
 *
 * It runs on shard 0's loop. Figures of other shards come from their published stats (sb_shard_get_stats) or, for
 * listings, from sb_shard_exec round trips, so no thread ever touches another's state.
 *
 * Commands run one at a time, in the order they arrive: one that waits (on the database, on other shards) holds
 * back the lines after it, so pipelined commands are answered in order; `quit` ends the session once the answers
 * before it are written, and so does the end of input (the peer shut its side, as `nc -N` does) once every line
 * received has run. Bounds: no command runs while 256 KiB of answers are unread (until the peer has read them down
 * to 64 KiB), a session with 64 KiB of commands queued is not read until they run, so a script that pipelines
 * without reading is held back, not cut off; one answer or trace that leaves 1 MiB unread closes the session; a
 * session must authenticate within auth_timeout_s; sessions still to authenticate are capped (64) apart from
 * authenticated ones (256), and the oldest of them makes room for a newcomer; wrong tokens spend the address's
 * failure budget, shared with the admin API (gateway/authguard.h: slower and slower ERRs, then refused for a
 * minute and the session ended). Text answers show every cell through sb_line_escape, so outside text cannot
 * break the framing or reach the terminal as control codes. */
#ifndef SB_CONSOLE_H
#define SB_CONSOLE_H

#include <uv.h>

typedef struct sb_console sb_console_t;

typedef struct sb_console_opts {
    const char *host;        /* admin_listen */
    int port;
    const char *admin_token; /* NULL: every auth fails */
    const char *node_id;
    unsigned shard;          /* the shard whose loop it runs on */
    uint32_t slots;          /* for `actors <tenant>` and `slots`: the tenant's slot and shard */
    int auth_timeout_s;      /* console_auth_timeout: a session not authenticated by then is closed */
    int max_concurrent_calls; /* the fleet's call cap, for `calls` */
} sb_console_opts_t;

/* Listens on host:port on loop. Strings in opts are copied. Returns 0, or a negative code (bind failed, logged). */
int sb_console_open(uv_loop_t *loop, const sb_console_opts_t *opts, sb_console_t **out);
/* Closes the listener and every session; frees itself once its handles have closed. */
void sb_console_close(sb_console_t *con);
unsigned sb_console_sessions(const sb_console_t *con);

#endif
