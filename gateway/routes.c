/* HTTP routes; see routes.h. */
#include "gateway/routes.h"

#include "adapters/pg.h"
#include "adapters/redis.h"
#include "gateway/admin.h"
#include "gateway/api.h"
#include "gateway/live.h"
#include "gateway/www.h"
#include "gateway/metrics.h"
#include "gateway/webhooks.h"
#include "proto/err.h"
#include "proto/mem.h"
#include "shards/shard.h"

#include <string.h>

#define READY_TIMEOUT_MS 1000

static void healthz(sb_http_req_t *req)
{
    static const char body[] = "{\"status\":\"ok\"}\n";
    sb_http_respond(req, 200, "application/json", body, sizeof body - 1);
}

/* ---- /readyz: ping Redis and PostgreSQL from this shard, answer when both replied ----------------------------- */

typedef struct ready {
    sb_http_req_t *req;
    int pending;
    char redis[128], pg[128];
} ready_t;

static void ready_put(char *dst, size_t len, int err, const char *detail)
{
    snprintf(dst, len, "%s", err ? detail : "ok");
    /* one line, no trailing newline (libpq messages end with one) */
    for (char *p = dst; *p; p++)
        if (*p == '\n' || *p == '\r')
            *p = ' ';
    size_t n = strlen(dst);
    while (n && dst[n - 1] == ' ')
        dst[--n] = '\0';
}

static void ready_done(ready_t *r)
{
    if (--r->pending > 0)
        return;
    bool ok = strcmp(r->redis, "ok") == 0 && strcmp(r->pg, "ok") == 0;
    sb_buf_t b;
    sb_buf_init(&b);
    sb_buf_puts(&b, "{\"redis\":\"");
    sb_buf_json_escape(&b, sb_str_cstr(r->redis));
    sb_buf_puts(&b, "\",\"postgres\":\"");
    sb_buf_json_escape(&b, sb_str_cstr(r->pg));
    sb_buf_puts(&b, "\"}\n");
    sb_http_respond(r->req, ok ? 200 : 503, "application/json", b.p, b.len);
    sb_buf_cleanup(&b);
    free(r);
}

static void ready_redis(void *arg, int err, const char *detail)
{
    ready_t *r = arg;
    ready_put(r->redis, sizeof r->redis, err, detail);
    ready_done(r);
}

static void ready_pg(void *arg, int err, const char *detail)
{
    ready_t *r = arg;
    ready_put(r->pg, sizeof r->pg, err, detail);
    ready_done(r);
}

static void readyz(sb_shard_t *s, sb_http_req_t *req)
{
    ready_t *r = sb_calloc(1, sizeof *r);
    r->req = req;
    r->pending = 3; /* redis, postgres, and this function: callbacks may run synchronously */
    if (sb_redis_ping(sb_shard_redis(s), READY_TIMEOUT_MS, ready_redis, r) < 0)
        ready_redis(r, SB_EUNAVAIL, "not connected");
    if (!sb_pg_connected(sb_shard_pg_ingest(s))) /* webhooks commit their receipts there */
        ready_pg(r, SB_EUNAVAIL, "not connected");
    else if (sb_pg_ping(sb_shard_pg(s), READY_TIMEOUT_MS, ready_pg, r) < 0)
        ready_pg(r, SB_EUNAVAIL, "not connected");
    ready_done(r);
}

static void metrics(sb_http_req_t *req)
{
    sb_buf_t b;
    sb_buf_init(&b);
    sb_metrics_render(&b, sb_shards_count());
    sb_http_respond(req, 200, "text/plain; version=0.0.4", b.p, b.len);
    sb_buf_cleanup(&b);
}

void sb_routes_handle(void *arg, sb_http_req_t *req)
{
    sb_shard_t *s = arg;
    sb_str_t path = sb_http_req_path(req);
    sb_http_method_t m = sb_http_req_method(req);
    void (*get)(sb_http_req_t *) = NULL;
    bool ready = false;

    if (sb_str_eq_cstr(path, "/healthz"))
        get = healthz;
    else if (sb_str_eq_cstr(path, "/metrics"))
        get = metrics;
    else if (sb_str_eq_cstr(path, "/readyz"))
        ready = true;
    else if (sb_str_has_prefix(path, SB_STR("/v1/admin/")) && sb_admin_handle(s, req))
        return;
    else if (sb_str_has_prefix(path, SB_STR("/webhooks/")) && sb_webhooks_handle(s, req))
        return;
    else if (sb_str_has_prefix(path, SB_STR("/inbox")) && sb_www_handle(req))
        return;
    else if (sb_str_eq_cstr(path, "/v1/inbox") && sb_live_handle(s, req))
        return;
    else if (sb_str_has_prefix(path, SB_STR("/v1/")) && sb_api_handle(s, req))
        return;
    else {
        sb_http_respond_error(req, 404, "not_found", "no such route");
        return;
    }
    if (m != SB_HTTP_GET && m != SB_HTTP_HEAD) {
        sb_http_respond_error(req, 405, "method_not_allowed", "this route answers GET and HEAD only");
        return;
    }
    if (ready)
        readyz(s, req);
    else
        get(req);
}
