/* Forwarding a request to the tenant's node; see forward.h. */
#include "gateway/forward.h"

#include "adapters/net/http_client.h"
#include "gateway/log.h"
#include "proto/err.h"
#include "proto/mem.h"
#include "shards/cluster.h"

#include <stdio.h>
#include <string.h>

#define FORWARD_TIMEOUT_MS 30000

static const sb_shard_module_t *self_module(void);

static const char *const method_names[] = {
    [SB_HTTP_GET] = "GET",       [SB_HTTP_HEAD] = "HEAD",     [SB_HTTP_POST] = "POST",
    [SB_HTTP_PUT] = "PUT",       [SB_HTTP_PATCH] = "PATCH",   [SB_HTTP_DELETE] = "DELETE",
    [SB_HTTP_OPTIONS] = "OPTIONS",
};

/* The headers a forwarded request keeps (what the handlers read). */
static const char *const kept[] = {"host", "content-type", "authorization", "idempotency-key", "x-twilio-signature",
                                   NULL};

static void forwarded(void *arg, const sb_http_client_res_t *res)
{
    sb_http_req_t *req = arg;
    if (res->err) {
        sb_log_warn("forward: the tenant's node did not answer (%s)", sb_strerror(res->err));
        sb_http_respond_error(req, 503, "unavailable", "the tenant's node did not answer; retry");
        return;
    }
    char ct[128];
    snprintf(ct, sizeof ct, "%.*s", (int)res->content_type.len, res->content_type.p ? res->content_type.p : "");
    sb_http_respond(req, res->status, ct[0] ? ct : "application/octet-stream", res->body.p, res->body.len);
}

bool sb_forward_if_elsewhere(sb_shard_t *s, sb_http_req_t *req, int64_t tenant)
{
    sb_str_t v;
    char addr[272];
    sb_http_client_t **client = sb_shard_state(s, self_module());
    sb_http_method_t m = sb_http_req_method(req);
    if (!sb_cluster_enabled() || sb_cluster_owns(tenant) || !client || !*client ||
        sb_http_req_header(req, "x-switchboard-forwarded", &v) || m <= SB_HTTP_OTHER || m > SB_HTTP_OPTIONS ||
        !sb_cluster_owner_address(tenant, addr, sizeof addr))
        return false;
    sb_str_t target = sb_http_req_target(req);
    sb_buf_t url, lines;
    sb_buf_init(&url);
    sb_buf_init(&lines);
    sb_buf_printf(&url, "http://%s%.*s", addr, (int)target.len, target.p);
    const char *headers[8];
    size_t n = 0, offs[8];
    for (size_t i = 0; kept[i]; i++) {
        if (!sb_http_req_header(req, kept[i], &v))
            continue;
        offs[n++] = lines.len;
        sb_buf_printf(&lines, "%s: %.*s", kept[i], (int)v.len, v.p);
        sb_buf_append(&lines, "", 1);
    }
    offs[n++] = lines.len;
    sb_buf_printf(&lines, "x-switchboard-forwarded: %s", sb_cluster_node_id());
    sb_buf_append(&lines, "", 1);
    for (size_t i = 0; i < n; i++)
        headers[i] = lines.p + offs[i];
    headers[n] = NULL;
    sb_http_client_req_t creq = {.method = method_names[m],
                                 .url = sb_buf_cstr(&url),
                                 .headers = headers,
                                 .body = sb_http_req_body(req),
                                 .timeout_ms = FORWARD_TIMEOUT_MS};
    int rc = sb_http_client_request(*client, &creq, forwarded, req);
    sb_buf_cleanup(&url);
    sb_buf_cleanup(&lines);
    if (rc < 0) {
        sb_log_warn("forward: cannot forward to the tenant's node (%s)", sb_strerror(rc));
        return false;
    }
    return true;
}

static int forward_start(sb_shard_t *s, void **state)
{
    sb_http_client_t **client = sb_calloc(1, sizeof *client);
    *state = client;
    if (!sb_cluster_enabled())
        return 0;
    sb_http_client_opts_t o = {.max_host_connections = 32, .timeout_ms = FORWARD_TIMEOUT_MS,
                               .max_response_bytes = 64 * 1024 * 1024};
    if (sb_http_client_create(sb_shard_loop(s), &o, client) < 0)
        sb_log_error("forward: no HTTP client on this shard: requests for other nodes' tenants are answered here");
    return 0;
}

static void forward_stop(sb_shard_t *s, void *state)
{
    sb_http_client_t **client = state;
    (void)s;
    sb_http_client_destroy(*client); /* (requests in flight are answered 503: SB_ECANCELED) */
    *client = NULL;
}

static void forward_finish(sb_shard_t *s, void *state)
{
    (void)s;
    free(state);
}

const sb_shard_module_t sb_forward_module = {
    .name = "forward",
    .start = forward_start,
    .stop = forward_stop,
    .finish = forward_finish,
};

static const sb_shard_module_t *self_module(void)
{
    return &sb_forward_module;
}
