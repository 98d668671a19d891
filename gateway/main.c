/* switchboard: the process.
 *
 * Reads the configuration (file, then SB_* environment), starts the shard threads, each with the domain and the
 * front doors (HTTP on every shard, the admin console on shard 0), and waits for SIGTERM or SIGINT. Then it drains: listeners
 * close, requests in flight finish, idle connections close, and the process exits 0 within drain_timeout plus a
 * small margin. A second signal during the drain is ignored; if the shards do not end within the bound, the
 * process exits 1. */
#include "adapters/net/http_server.h"
#include "gateway/forward.h"
#include "gateway/admin.h"
#include "gateway/api.h"
#include "gateway/config.h"
#include "gateway/chancache.h"
#include "gateway/console.h"
#include "gateway/live.h"
#include "gateway/log.h"
#include "gateway/media.h"
#include "gateway/ratelimit.h"
#include "gateway/routes.h"
#include "gateway/webhooks.h"
#include "gateway/www.h"
#include "proto/err.h"
#include "proto/mem.h"
#include "proto/version.h"
#include "shards/cluster.h"
#include "shards/domain.h"
#include "shards/shard.h"

#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#define EXIT_MARGIN_MS 5000

extern char **environ;

static sb_config_t cfg;

/* ---- the front doors: modules of every shard's table, after the domain ----------------------------------------- */

static int http_start(sb_shard_t *s, void **state)
{
    sb_http_server_opts_t ho = {
        .host = cfg.listen.host,
        .port = cfg.listen.port,
        .shard = sb_shard_index(s),
        .max_header_bytes = cfg.max_header_bytes,
        .max_body_bytes = cfg.max_body_bytes,
        .large_body_path = "/v1/broadcasts",
        .large_body_bytes = cfg.max_broadcast_bytes,
        .header_timeout_s = cfg.header_timeout_s,
        .idle_timeout_s = cfg.idle_timeout_s,
        .trusted_proxies = cfg.trusted,
        .ntrusted_proxies = cfg.ntrusted,
        .handler = sb_routes_handle,
        .handler_arg = s,
    };
    return sb_http_server_create(sb_shard_loop(s), &ho, (sb_http_server_t **)state);
}

static void http_drain(sb_shard_t *s, void *state)
{
    (void)s;
    sb_http_server_drain(state);
}

static unsigned http_busy(sb_shard_t *s, void *state)
{
    (void)s;
    return sb_http_server_connections(state);
}

static void http_stop(sb_shard_t *s, void *state)
{
    (void)s;
    sb_http_server_close(state);
}

static const sb_shard_module_t http_module = {
    .name = "http",
    .start = http_start,
    .drain = http_drain,
    .busy = http_busy,
    .stop = http_stop,
};

/* The admin console, on shard 0 only (state: a slot holding it). Consoles do not hold a drain open. */
static int console_start(sb_shard_t *s, void **state)
{
    sb_console_t **slot = sb_calloc(1, sizeof *slot);
    *state = slot;
    if (sb_shard_index(s) != 0)
        return 0;
    sb_console_opts_t co = {
        .host = cfg.admin_listen.host,
        .port = cfg.admin_listen.port,
        .admin_token = cfg.admin_token,
        .node_id = cfg.node_id,
        .shard = 0,
        .slots = (uint32_t)cfg.slots,
        .auth_timeout_s = cfg.console_auth_timeout_s,
        .max_concurrent_calls = cfg.max_concurrent_calls,
    };
    return sb_console_open(sb_shard_loop(s), &co, slot);
}

static void console_stop(sb_shard_t *s, void *state)
{
    sb_console_t **slot = state;
    (void)s;
    sb_console_close(*slot);
    *slot = NULL;
}

static void console_finish(sb_shard_t *s, void *state)
{
    (void)s;
    free(state);
}

static const sb_shard_module_t console_module = {
    .name = "console",
    .start = console_start,
    .drain = console_stop,
    .stop = console_stop,
    .finish = console_finish,
};

/* Every shard runs these, in this order (and stops them in reverse): the domain first, whose actors every front door
 * hands work to; the caches and hubs the HTTP routes use exist before the server takes a request, and outlive its
 * connections. */
static const sb_shard_module_t *const modules[] = {
    &sb_domain_module, &sb_cluster_module, &sb_forward_module, &sb_chancache_module, &sb_ratelimit_module, &sb_api_module, &sb_webhooks_module,
    &sb_media_module,  &sb_live_module,      &http_module,         &console_module};

/* ---- signals and the exit bound ------------------------------------------------------------------------------- */

static uv_signal_t sig_term, sig_int;
static uv_timer_t wait_timer, trim_timer;

#define TRIM_MS 5000
#define TRIM_SLOW_MS 20

/* Every TRIM_MS, free memory goes back to the kernel. glibc returns only what is free at the top of each shard's
 * heap; a burst (thousands of handshakes, a large fan-out) leaves free pages between the objects that stay, and
 * those would count against the process for good. malloc_trim gives them back (madvise), from this thread, which
 * has nothing else to do; a shard that allocates meanwhile waits for its arena's lock, so a slow trim is logged. */
static void on_trim(uv_timer_t *t)
{
    uint64_t t0 = uv_hrtime();
    malloc_trim(0);
    uint64_t ms = (uv_hrtime() - t0) / 1000000;
    if (ms >= TRIM_SLOW_MS)
        sb_log_warn("returning free memory to the kernel took %llu ms", (unsigned long long)ms);
    (void)t;
}
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

/* Every connection is a descriptor: take all the kernel allows this process (the hard limit; a systemd unit sets
 * it with LimitNOFILE), and say what that is. */
static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    rlim_t soft = rl.rlim_cur;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            rl.rlim_cur = soft;
    }
    sb_log_info("open files: soft limit %llu (it was %llu), hard limit %llu", (unsigned long long)rl.rlim_cur,
                (unsigned long long)soft, (unsigned long long)rl.rlim_max);
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
    sb_log_set_format(cfg.log_format);
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
    sb_chancache_init(&cfg);
    sb_api_init(&cfg);
    sb_live_init(&cfg);
    sb_www_init(cfg.www_dir);
    sb_domain_opts_t domain = {
        .master_key = cfg.has_master_key ? cfg.master_key : NULL,
        .public_url = cfg.public_url,
        .twilio_api_base = cfg.twilio_api_base,
        .meta_graph_base = cfg.meta_graph_base,
        .webhook_max_age_s = cfg.webhook_max_age_s,
        .actor_idle_timeout_s = cfg.actor_idle_timeout_s,
        .max_concurrent_calls = cfg.max_concurrent_calls,
        .call_lease_ttl_s = cfg.call_lease_ttl_s,
        .max_call_duration_s = cfg.max_call_duration_s,
        .slots = (uint32_t)cfg.slots,
        .deliver = sb_live_deliver,
    };
    sb_domain_init(&domain);
    char advertise[300];
    const sb_addr_t *adv = cfg.advertise.port ? &cfg.advertise : &cfg.listen;
    if (strchr(adv->host, ':'))
        snprintf(advertise, sizeof advertise, "[%s]:%d", adv->host, adv->port);
    else
        snprintf(advertise, sizeof advertise, "%s:%d", adv->host, adv->port);
    sb_cluster_opts_t cluster = {
        .enabled = cfg.cluster != 0,
        .node_id = cfg.node_id,
        .advertise = advertise,
        .slots = (uint32_t)cfg.slots,
        .shards = (unsigned)cfg.shards,
        .node_lease_ttl_s = cfg.node_lease_ttl_s,
        .redis_host = cfg.redis.host,
        .redis_port = cfg.redis.port,
        .redis_db = cfg.redis_db,
    };
    sb_cluster_init(&cluster);
    sb_shards_opts_t so = {
        .count = (unsigned)cfg.shards,
        .redis_host = cfg.redis.host,
        .redis_port = cfg.redis.port,
        .redis_db = cfg.redis_db,
        .pg_conninfo = cfg.database_url,
        .modules = modules,
        .nmodules = sizeof modules / sizeof modules[0],
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
    uv_timer_init(loop, &trim_timer);
    uv_timer_start(&trim_timer, on_trim, TRIM_MS, TRIM_MS);
    uv_run(loop, UV_RUN_DEFAULT);
    if (exit_code) {
        sb_config_cleanup(&cfg);
        _exit(exit_code); /* shard threads are stuck: do not wait for them */
    }
    sb_shards_join();

    uv_close((uv_handle_t *)&sig_term, NULL);
    uv_close((uv_handle_t *)&sig_int, NULL);
    uv_close((uv_handle_t *)&wait_timer, NULL);
    uv_close((uv_handle_t *)&trim_timer, NULL);
    uv_run(loop, UV_RUN_DEFAULT);
    uv_loop_close(loop);
    sb_www_cleanup();
    sb_config_cleanup(&cfg);
    sb_log_info("bye");
    return 0;
}
