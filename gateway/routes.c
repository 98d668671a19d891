/* HTTP routes; see routes.h. */
#include "gateway/routes.h"

#include "adapters/redis.h"
#include "adapters/store/store.h"
#include "gateway/admin.h"
#include "gateway/api.h"
#include "gateway/broadcasts.h"
#include "gateway/keys.h"
#include "gateway/live.h"
#include "gateway/www.h"
#include "gateway/metrics.h"
#include "gateway/webhooks.h"
#include "proto/err.h"
#include "proto/mem.h"
#include "shards/domain.h"
#include "shards/shard.h"

#include <stdatomic.h>
#include <stddef.h>
#include <string.h>

#define READY_TIMEOUT_MS 1000

static void healthz(sb_http_req_t *req)
{
    static const char body[] = "{\"status\":\"ok\"}\n";
    sb_http_respond(req, 200, "application/json", body, sizeof body - 1);
}

/* ---- /readyz: every shard pings its own Redis and PostgreSQL; the node is ready when all of them are --------------
 *
 * Each shard owns its connections and reconnects on its own backoff, so the shard that happens to take the request
 * cannot speak for the others: it asks every shard (sb_shard_exec), each fills in its own part, and the last part to
 * finish, on whichever shard that is, sends the whole back to the asking shard to be answered. The answer names the
 * first shard whose Redis or PostgreSQL is not ok. */

typedef struct ready ready_t;

typedef struct ready_part {
    ready_t *r;
    unsigned shard;
    int pending; /* this shard's pings not yet answered (touched on its own thread only) */
    char redis[128], pg[128];
} ready_part_t;

struct ready {
    sb_http_req_t *req;
    unsigned origin, nparts;
    atomic_uint remaining; /* parts not yet finished */
    ready_part_t parts[];
};

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

/* "ok" when every shard says so, else the first shard's failure, named. */
static void ready_field(sb_buf_t *b, const ready_t *r, size_t field)
{
    for (unsigned i = 0; i < r->nparts; i++) {
        const char *v = (const char *)&r->parts[i] + field;
        if (strcmp(v, "ok") != 0) {
            char what[160];
            snprintf(what, sizeof what, "shard %u: %s", r->parts[i].shard, v);
            sb_buf_json_escape(b, sb_str_cstr(what));
            return;
        }
    }
    sb_buf_puts(b, "ok");
}

static void ready_answer(sb_shard_t *s, void *arg)
{
    ready_t *r = arg;
    (void)s;
    bool ok = true;
    for (unsigned i = 0; i < r->nparts; i++)
        ok = ok && strcmp(r->parts[i].redis, "ok") == 0 && strcmp(r->parts[i].pg, "ok") == 0;
    sb_buf_t b;
    sb_buf_init(&b);
    sb_buf_puts(&b, "{\"redis\":\"");
    ready_field(&b, r, offsetof(ready_part_t, redis));
    sb_buf_puts(&b, "\",\"postgres\":\"");
    ready_field(&b, r, offsetof(ready_part_t, pg));
    sb_buf_puts(&b, "\"}\n");
    sb_http_respond(r->req, ok ? 200 : 503, "application/json", b.p, b.len);
    sb_buf_cleanup(&b);
    free(r);
}

/* A part is finished: the last one hands the whole back to the asking shard (if that shard has stopped, so has the
 * request's connection, and nothing is left to answer). */
static void ready_part_done(ready_part_t *p)
{
    ready_t *r = p->r;
    if (atomic_fetch_sub_explicit(&r->remaining, 1, memory_order_acq_rel) != 1)
        return;
    sb_shard_t *self = sb_shard_self();
    if (self && sb_shard_index(self) == r->origin)
        ready_answer(self, r);
    else if (sb_shard_exec(r->origin, ready_answer, r) < 0)
        free(r);
}

static void ready_ping_done(ready_part_t *p)
{
    if (--p->pending == 0)
        ready_part_done(p);
}

static void ready_redis(void *arg, int err, const char *detail)
{
    ready_part_t *p = arg;
    ready_put(p->redis, sizeof p->redis, err, detail);
    ready_ping_done(p);
}

static void ready_pg(void *arg, int err, const char *detail)
{
    ready_part_t *p = arg;
    ready_put(p->pg, sizeof p->pg, err, detail);
    ready_ping_done(p);
}

/* Runs on each shard: its part is finished when both of its pings answered. */
static void ready_probe(sb_shard_t *s, void *arg)
{
    ready_part_t *p = arg;
    p->pending = 3; /* redis, postgres, and this function: callbacks may run synchronously */
    if (sb_redis_ping(sb_shard_redis(s), READY_TIMEOUT_MS, ready_redis, p) < 0)
        ready_redis(p, SB_EUNAVAIL, "not connected");
    sb_store_t *st = sb_domain_store(s); /* both its connections: webhooks commit their receipts on one of them */
    if (!st || sb_store_ping(st, READY_TIMEOUT_MS, ready_pg, p) < 0)
        ready_pg(p, SB_EUNAVAIL, "not connected");
    ready_ping_done(p);
}

static void readyz(sb_shard_t *s, sb_http_req_t *req)
{
    unsigned n = sb_shards_count();
    ready_t *r = sb_calloc(1, sizeof *r + n * sizeof r->parts[0]);
    r->req = req;
    r->origin = sb_shard_index(s);
    r->nparts = n;
    atomic_init(&r->remaining, n);
    for (unsigned i = 0; i < n; i++) {
        r->parts[i].r = r;
        r->parts[i].shard = i;
    }
    for (unsigned i = 0; i < n; i++) {
        ready_part_t *p = &r->parts[i];
        if (i == r->origin) {
            ready_probe(s, p);
        } else if (sb_shard_exec(i, ready_probe, p) < 0) {
            ready_put(p->redis, sizeof p->redis, SB_ECLOSED, "shard stopped");
            ready_put(p->pg, sizeof p->pg, SB_ECLOSED, "shard stopped");
            ready_part_done(p);
        }
    }
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
    else if (sb_str_has_prefix(path, SB_STR("/v1/keys")) && sb_keys_handle(s, req))
        return;
    else if (sb_str_has_prefix(path, SB_STR("/v1/broadcasts")) && sb_broadcasts_handle(s, req))
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
