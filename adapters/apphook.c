/* The hooks port; see apphook.h. */
#include "adapters/apphook.h"

#include "adapters/net/http_client.h"
#include "proto/codec.h"
#include "proto/digest.h"
#include "proto/err.h"
#include "proto/mem.h"

#include <inttypes.h>
#include <stdlib.h>
#include <time.h>

#define POST_TIMEOUT_MS 10000

typedef struct post {
    void (*cb)(void *arg, int status, int retry_after_s, int err);
    void *arg;
} post_t;

static void posted(void *arg, const sb_http_client_res_t *res)
{
    post_t *p = arg;
    p->cb(p->arg, res->err ? 0 : res->status, res->err ? -1 : res->retry_after_s, res->err);
    free(p);
}

void sb_apphook_signature(sb_buf_t *out, const char *secret, sb_str_t payload)
{
    sb_buf_t sig;
    sb_buf_init(&sig);
    long long t = (long long)time(NULL);
    sb_buf_printf(&sig, "%lld.", t);
    sb_buf_append(&sig, payload.p, payload.len);
    unsigned char mac[SB_DIGEST_SHA256_LEN];
    sb_digest_hmac_sha256(sb_str_cstr(secret), sb_str(sig.p, sig.len), mac);
    sb_buf_printf(out, "t=%lld,v1=", t);
    sb_codec_hex_append(out, mac, sizeof mac);
    sb_buf_cleanup(&sig);
}

static int port_post(void *ctx, const sb_hook_post_t *h, void (*cb)(void *, int, int, int), void *arg)
{
    sb_http_client_t *client = ctx;
    if (!client)
        return SB_EUNAVAIL;
    sb_buf_t body, head_sig, head_event;
    sb_buf_init(&body);
    sb_buf_init(&head_sig);
    sb_buf_init(&head_event);
    sb_buf_printf(&body, "{\"tenant_id\":\"%" PRId64 "\",\"cursor\":%" PRId64 ",\"type\":\"", h->tenant, h->cursor);
    sb_buf_json_escape(&body, sb_str_cstr(h->type));
    sb_buf_puts(&body, "\",\"data\":");
    sb_buf_append_str(&body, h->data);
    sb_buf_puts(&body, "}");
    sb_buf_puts(&head_sig, "X-Switchboard-Signature: ");
    sb_apphook_signature(&head_sig, h->secret, sb_str(body.p, body.len));
    sb_buf_printf(&head_event, "X-Switchboard-Event: %" PRId64 ":%" PRId64, h->tenant, h->cursor);
    const char *headers[] = {"Content-Type: application/json", sb_buf_cstr(&head_sig), sb_buf_cstr(&head_event),
                             NULL};
    sb_http_client_req_t req = {.method = "POST",
                                .url = h->url,
                                .headers = headers,
                                .body = sb_str(body.p, body.len),
                                .timeout_ms = POST_TIMEOUT_MS};
    post_t *p = sb_malloc(sizeof *p);
    p->cb = cb;
    p->arg = arg;
    int rc = sb_http_client_request(client, &req, posted, p);
    if (rc < 0)
        free(p);
    sb_buf_cleanup(&body);
    sb_buf_cleanup(&head_sig);
    sb_buf_cleanup(&head_event);
    return rc;
}

typedef struct fetch {
    void (*cb)(void *arg, int status, sb_str_t body);
    void *arg;
} fetch_t;

static void fetched(void *arg, const sb_http_client_res_t *res)
{
    fetch_t *f = arg;
    f->cb(f->arg, res->err ? 0 : res->status, res->err ? sb_str("", 0) : res->body);
    free(f);
}

/* A call's TwiML from the tenant's application: the call's form POSTed as Twilio would, signed as our events are
 * (over the form's bytes) when the tenant has a webhook secret. */
static int port_fetch(void *ctx, const char *url, const char *secret, sb_str_t form, unsigned timeout_ms,
                      void (*cb)(void *, int, sb_str_t), void *arg)
{
    sb_http_client_t *client = ctx;
    if (!client)
        return SB_EUNAVAIL;
    sb_buf_t head_sig;
    sb_buf_init(&head_sig);
    if (secret) {
        sb_buf_puts(&head_sig, "X-Switchboard-Signature: ");
        sb_apphook_signature(&head_sig, secret, form);
    }
    const char *headers[] = {"Content-Type: application/x-www-form-urlencoded", "Accept: application/xml, text/xml",
                             secret ? sb_buf_cstr(&head_sig) : NULL, NULL};
    sb_http_client_req_t req = {
        .method = "POST", .url = url, .headers = headers, .body = form, .timeout_ms = timeout_ms};
    fetch_t *f = sb_malloc(sizeof *f);
    f->cb = cb;
    f->arg = arg;
    int rc = sb_http_client_request(client, &req, fetched, f);
    if (rc < 0)
        free(f);
    sb_buf_cleanup(&head_sig);
    return rc;
}

void sb_apphook_port(struct sb_http_client *client, sb_hooks_port_t *out)
{
    *out = (sb_hooks_port_t){.ctx = client, .post = port_post, .fetch = port_fetch};
}
