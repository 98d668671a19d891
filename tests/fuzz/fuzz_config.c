/* libFuzzer target for gateway/config: the configuration file parser.
 *
 * Each input is a whole file, parsed into a fresh config that is cleaned up afterwards (LeakSanitizer catches what
 * is not freed). Whatever the outcome, the config must still satisfy its invariants (every bounded field in range,
 * required strings present, URLs without trailing slashes), the error message must be a non-empty, NUL-terminated
 * "origin:line: ..." on failure, and validate and dump must run on the result. Violations trap. */
#include "tests/fuzz/fuzz.h"
#include "gateway/config.h"

#include "proto/err.h"
#include "proto/str.h"

#include <stdint.h>
#include <string.h>


static void check_url(const char *u, bool may_be_null)
{
    if (!u) {
        CHECK(may_be_null);
        return;
    }
    size_t n = strlen(u);
    CHECK(strncmp(u, "http://", 7) == 0 || strncmp(u, "https://", 8) == 0);
    CHECK(n > 0 && u[n - 1] != '/');
}

static void check_addr(const sb_addr_t *a)
{
    CHECK(memchr(a->host, '\0', sizeof a->host) != NULL);
    CHECK(a->host[0] != '\0');
    CHECK(a->port >= 1 && a->port <= 65535);
}

static void check_invariants(const sb_config_t *c)
{
    check_addr(&c->listen);
    check_addr(&c->admin_listen);
    check_addr(&c->redis);
    CHECK(c->shards >= 1 && c->shards <= 256);
    CHECK(c->slots >= 1 && c->slots <= 65536);
    CHECK(c->redis_db >= 0 && c->redis_db <= 15);
    CHECK(c->header_timeout_s >= 1 && c->header_timeout_s <= 3600);
    CHECK(c->idle_timeout_s >= 1 && c->idle_timeout_s <= 86400);
    CHECK(c->max_header_bytes >= 1024 && c->max_header_bytes <= 65536);
    CHECK(c->max_body_bytes >= 1024 && c->max_body_bytes <= 67108864);
    CHECK(c->drain_timeout_s >= 0 && c->drain_timeout_s <= 3600);
    CHECK(c->log_level >= SB_LOG_ERROR && c->log_level <= SB_LOG_DEBUG);
    CHECK(c->mode_dev == 0 || c->mode_dev == 1);
    CHECK(c->redis_url && strncmp(c->redis_url, "redis://", 8) == 0);
    CHECK(c->database_url && c->database_url[0]);
    CHECK(c->node_id && c->node_id[0] && strlen(c->node_id) <= 64);
    if (c->admin_token) {
        size_t n = strlen(c->admin_token);
        CHECK(n >= 1 && n <= 512);
        for (size_t i = 0; i < n; i++)
            CHECK(c->admin_token[i] > 0x20 && c->admin_token[i] < 0x7f);
    }
    CHECK(c->ntrusted <= SB_CIDR_LIST_MAX);
    CHECK((c->ntrusted == 0) == (c->trusted == NULL) && (c->ntrusted == 0) == (c->trusted_proxies == NULL));
    for (size_t i = 0; i < c->ntrusted; i++)
        CHECK(c->trusted[i].bits <= 128);
    CHECK(c->www_dir && c->www_dir[0]);
    check_url(c->public_url, true);
    check_url(c->twilio_api_base, false);
    check_url(c->meta_graph_base, false);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    sb_config_t c;
    char err[256];
    sb_buf_t dump;

    memset(err, 'x', sizeof err);
    sb_config_init(&c);
    int rc = sb_config_parse(&c, (const char *)data, size, "fuzz.conf", err, sizeof err);
    CHECK(rc == 0 || rc == SB_EINVAL || rc == SB_ENOENT);
    if (rc != 0) {
        CHECK(memchr(err, '\0', sizeof err) != NULL);
        CHECK(strncmp(err, "fuzz.conf:", 10) == 0);
        CHECK(strlen(err) > 10);
    }
    check_invariants(&c);

    rc = sb_config_validate(&c, err, sizeof err);
    CHECK(rc == 0 || rc == SB_EINVAL);

    sb_buf_init(&dump);
    sb_config_dump(&c, &dump);
    CHECK(dump.len > 0 && strlen(sb_buf_cstr(&dump)) == dump.len);
    if (c.admin_token)
        CHECK(strstr(sb_buf_cstr(&dump), "admin_token = (set)\n") != NULL);
    sb_buf_cleanup(&dump);

    sb_config_cleanup(&c);
    return 0;
}
