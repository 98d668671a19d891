/* switchboard: the process.
 *
 * Reads the configuration (file, then SB_* environment), starts the shard threads with the front doors on each
 * (HTTP on every shard, the admin console on shard 0), and waits for SIGTERM or SIGINT. Then it drains: listeners
 * close, requests in flight finish, idle connections close, and the process exits 0 within drain_timeout plus a
 * small margin. A second signal during the drain is ignored; if the shards do not end within the bound, the
 * process exits 1. */
#include "adapters/http_server.h"
#include "gateway/admin.h"
#include "gateway/api.h"
#include "gateway/config.h"
#include "gateway/hooks.h"
#include "gateway/inbound.h"
#include "gateway/console.h"
#include "gateway/live.h"
#include "gateway/log.h"
#include "gateway/routes.h"
#include "gateway/sender.h"
#include "gateway/sends.h"
#include "gateway/webhooks.h"
#include "gateway/version.h"
#include "gateway/www.h"
#include "proto/err.h"
#include "proto/mem.h"
#include "shards/shard.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#define EXIT_MARGIN_MS 5000

extern char **environ;

static sb_config_t cfg;

/* ---- the front doors of one shard ----------------------------------------------------------------------------- */

typedef struct front {
    sb_http_server_t *http;
    sb_console_t *console;
} front_t;

static int front_start(sb_shard_t *s, void *arg)
{
    (void)arg;
    front_t *f = sb_calloc(1, sizeof *f);
    sb_shard_set_user(s, f);
    sb_http_server_opts_t ho = {
        .host = cfg.listen.host,
        .port = cfg.listen.port,
        .shard = sb_shard_index(s),
        .max_header_bytes = cfg.max_header_bytes,
        .max_body_bytes = cfg.max_body_bytes,
        .header_timeout_s = cfg.header_timeout_s,
        .idle_timeout_s = cfg.idle_timeout_s,
        .handler = sb_routes_handle,
        .handler_arg = s,
    };
    int rc = sb_http_server_create(sb_shard_loop(s), &ho, &f->http);
    if (rc < 0)
        return rc;
    sb_inbound_shard_start(s);
    sb_live_shard_start(s);
    sb_sender_shard_start(s);
    sb_hooks_shard_start(s);
    if (sb_shard_index(s) == 0) {
        sb_console_opts_t co = {
            .host = cfg.admin_listen.host,
            .port = cfg.admin_listen.port,
            .admin_token = cfg.admin_token,
            .node_id = cfg.node_id,
            .shard = 0,
            .slots = (uint32_t)cfg.slots,
            .auth_timeout_s = cfg.console_auth_timeout_s,
        };
        rc = sb_console_open(sb_shard_loop(s), &co, &f->console);
        if (rc < 0)
            return rc;
    }
    return 0;
}

static void front_drain(sb_shard_t *s, void *arg)
{
    front_t *f = sb_shard_user(s);
    (void)arg;
    if (f->http)
        sb_http_server_drain(f->http);
    sb_sender_shard_drain(s);
    sb_console_close(f->console); /* consoles do not hold a drain open */
    f->console = NULL;
}

static unsigned front_connections(sb_shard_t *s, void *arg)
{
    front_t *f = sb_shard_user(s);
    (void)arg;
    return sb_http_server_connections(f->http) + sb_sender_inflight(s);
}

static void front_stop(sb_shard_t *s, void *arg)
{
    front_t *f = sb_shard_user(s);
    (void)arg;
    if (!f)
        return;
    sb_console_close(f->console);
    f->console = NULL;
    sb_http_server_close(f->http);
    f->http = NULL;
    sb_webhooks_shard_stop(s);
    sb_inbound_shard_stop(s);
    sb_sends_shard_stop(s);
    sb_live_shard_stop(s);
    sb_sender_shard_stop(s);
    sb_hooks_shard_stop(s);
}

static void front_finish(sb_shard_t *s, void *arg)
{
    front_t *f = sb_shard_user(s);
    (void)arg;
    if (!f)
        return;
    sb_shard_set_user(s, NULL);
    free(f);
    sb_live_shard_finish(s);
}

/* ---- signals and the exit bound ------------------------------------------------------------------------------- */

static uv_signal_t sig_term, sig_int;
static uv_timer_t wait_timer;
static bool draining;
static uint64_t exit_deadline;
static int exit_code;

static void on_wait(uv_timer_t *t)
{
    if (sb_shards_running() == 0) {
        uv_stop(t->loop);
        return;
    }
    if (draining && uv_now(t->loop) > exit_deadline) {
        sb_log_error("shards did not stop within the drain bound; exiting");
        exit_code = 1;
        uv_stop(t->loop);
    }
}

static void on_signal(uv_signal_t *h, int signum)
{
    if (draining) {
        sb_log_info("%s while draining: already stopping", signum == SIGTERM ? "SIGTERM" : "SIGINT");
        return;
    }
    draining = true;
    sb_log_info("%s: draining", signum == SIGTERM ? "SIGTERM" : "SIGINT");
    uint64_t drain_ms = (uint64_t)cfg.drain_timeout_s * 1000;
    exit_deadline = uv_now(h->loop) + drain_ms + EXIT_MARGIN_MS;
    sb_shards_drain(drain_ms);
}

static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static void usage(FILE *f)
{
    fprintf(f, "usage: switchboard [-c FILE] [-t] [-v]\n"
               "  -c FILE  configuration file (key = value lines); SB_<KEY> environment variables override it\n"
               "  -t       check the configuration, print it (secrets hidden) and exit\n"
               "  -v       print the version and exit\n");
}

int main(int argc, char **argv)
{
    const char *path = NULL;
    bool check_only = false;
    char err[512];
    int opt;

    while ((opt = getopt(argc, argv, "c:tvh")) != -1) {
        switch (opt) {
        case 'c': path = optarg; break;
        case 't': check_only = true; break;
        case 'v': printf("switchboard %s\n", SB_VERSION); return 0;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind != argc) {
        usage(stderr);
        return 2;
    }

    sb_config_init(&cfg);
    if ((path && sb_config_load_file(&cfg, path, err, sizeof err) < 0) ||
        sb_config_load_env(&cfg, environ, err, sizeof err) < 0 || sb_config_validate(&cfg, err, sizeof err) < 0) {
        fprintf(stderr, "switchboard: %s\n", err);
        sb_config_cleanup(&cfg);
        return 2;
    }
    if (check_only) {
        sb_buf_t b;
        sb_buf_init(&b);
        sb_config_dump(&cfg, &b);
        fputs(sb_buf_cstr(&b), stdout);
        sb_buf_cleanup(&b);
        sb_config_cleanup(&cfg);
        return 0;
    }
    sb_log_set_level(cfg.log_level);
    signal(SIGPIPE, SIG_IGN);
    raise_fd_limit();
    if (cfg.mode_dev)
        sb_log_warn("mode = dev: do not run this configuration in production");

    /* Signals are watched before any shard serves, so a signal right after the first answer is not lost. */
    uv_loop_t *loop = uv_default_loop();
    uv_signal_init(loop, &sig_term);
    uv_signal_init(loop, &sig_int);
    uv_signal_start(&sig_term, on_signal, SIGTERM);
    uv_signal_start(&sig_int, on_signal, SIGINT);

    sb_admin_init(&cfg);
    sb_webhooks_init(&cfg);
    sb_inbound_init(&cfg);
    sb_api_init(&cfg);
    sb_live_init(&cfg);
    sb_sends_init(&cfg);
    sb_sender_init(&cfg);
    sb_hooks_init(&cfg);
    sb_www_init("www");
    sb_shards_opts_t so = {
        .count = (unsigned)cfg.shards,
        .redis_host = cfg.redis.host,
        .redis_port = cfg.redis.port,
        .redis_db = cfg.redis_db,
        .pg_conninfo = cfg.database_url,
        .hooks = {.start = front_start,
                  .drain = front_drain,
                  .connections = front_connections,
                  .stop = front_stop,
                  .finish = front_finish},
    };
    int rc = sb_shards_start(&so);
    if (rc < 0) {
        fprintf(stderr, "switchboard: start-up failed: %s\n", sb_strerror(rc));
        sb_www_cleanup();
        sb_config_cleanup(&cfg);
        return 1;
    }
    sb_log_info("switchboard %s on node %s: %d shard(s), http %s:%d, console %s:%d", SB_VERSION, cfg.node_id,
                cfg.shards, cfg.listen.host, cfg.listen.port, cfg.admin_listen.host, cfg.admin_listen.port);

    uv_timer_init(loop, &wait_timer);
    uv_timer_start(&wait_timer, on_wait, 50, 50);
    uv_run(loop, UV_RUN_DEFAULT);
    if (exit_code) {
        sb_config_cleanup(&cfg);
        _exit(exit_code); /* shard threads are stuck: do not wait for them */
    }
    sb_shards_join();

    uv_close((uv_handle_t *)&sig_term, NULL);
    uv_close((uv_handle_t *)&sig_int, NULL);
    uv_close((uv_handle_t *)&wait_timer, NULL);
    uv_run(loop, UV_RUN_DEFAULT);
    uv_loop_close(loop);
    sb_www_cleanup();
    sb_config_cleanup(&cfg);
    sb_log_info("bye");
    return 0;
}
