/* The Media Streams relay; see media.h.
 *
 * A relay is two connections on one loop: Twilio's (tw, server side) and the voice app's (app, client side). It is
 * freed once both have closed: tw's on_close, and app's on_close if an app was ever dialled. */
#include "gateway/media.h"

#include "actors/call.h"
#include "adapters/apphook.h"
#include "adapters/net/wsclient.h"
#include "adapters/net/wsconn.h"
#include "gateway/log.h"
#include "gateway/metrics.h"
#include "proto/err.h"
#include "proto/list.h"
#include "proto/mem.h"
#include "proto/mstream.h"
#include "shards/cluster.h"
#include "shards/domain.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#define MAX_FRAME 65536
#define TW_MAX_QUEUED (1024 * 1024) /* the app's audio toward Twilio: Twilio reads at line rate */
#define APP_MAX_QUEUED 65536        /* ~1.6 s of audio frames toward a voice app, then the oldest go */
#define APP_CONNECT_MS 2000

typedef struct media {
    sb_wsclient_ctx_t *ctx; /* NULL when libwebsockets could not start: every stream gets its fallback */
    sb_list_t relays;
} media_t;

typedef struct relay {
    sb_list_t link;
    sb_shard_t *s;
    sb_metrics_t *mx;
    sb_wsconn_t *tw;
    sb_wsclient_t *app;
    bool tw_closed, app_pending;   /* app_pending: dialled, its on_close not come yet */
    bool started, failed, stopped; /* stopped: Twilio's stop came, the app's close that follows is no failure */
    int64_t channel, tenant, last_seq;
    char *call_key, *stream_sid, *media_url, *secret;
    char *connected; /* Twilio's "connected" frame, sent to the app first */
    uint64_t frames_in, frames_out;
    sb_buf_t scratch;
} relay_t;

static media_t *media_of(sb_shard_t *s)
{
    return sb_shard_state(s, &sb_media_module);
}

static void relay_free(relay_t *r)
{
    sb_list_remove(&r->link);
    sb_gauge_add(&r->mx->media_streams, -1);
    free(r->call_key);
    free(r->stream_sid);
    free(r->media_url);
    sb_free_secret(r->secret);
    free(r->connected);
    sb_buf_cleanup(&r->scratch);
    free(r);
}

static void maybe_free(relay_t *r)
{
    if (r->tw_closed && !r->app_pending)
        relay_free(r);
}

static void tell(relay_t *r, sb_call_stream_news_t news)
{
    if (!r->call_key)
        return;
    sb_call_stream_t n = {.news = news,
                          .channel = r->channel,
                          .frames_in = r->frames_in,
                          .frames_out = r->frames_out,
                          .dropped = r->app ? sb_wsclient_dropped(r->app) : 0};
    if (sb_cluster_owns(r->tenant))
        sb_call_stream(sb_shard_rt(r->s), sb_domain_owner(r->tenant), r->call_key, &n);
    else /* the call's actor is on the node that owns the tenant */
        sb_cluster_call_stream(r->tenant, r->call_key, &n);
}

/* The voice app is out of reach (never answered, refused, or went away): the call's actor applies the fallback. */
static void app_failed(relay_t *r, const char *why)
{
    if (r->failed || r->tw_closed)
        return;
    r->failed = true;
    sb_log_warn("media: channel %" PRId64 ": the voice app %s: the call gets its fallback", r->channel, why);
    tell(r, SB_CALL_STREAM_APP_FAILED);
}

/* ---- the voice app's side ------------------------------------------------------------------------------------- */

static void app_message(void *arg, sb_wsclient_t *c, bool binary, sb_str_t text)
{
    relay_t *r = arg;
    char err[128];
    sb_ms_frame_t f;
    if (binary) {
        sb_wsclient_close(c, 1003, "Media Streams frames are text");
        return;
    }
    if (sb_ms_parse(text, SB_MS_FROM_APP, &f, &r->scratch, err, sizeof err) < 0) {
        sb_wsclient_close(c, 1007, err);
        return;
    }
    if (!r->stream_sid || !sb_str_eq_cstr(f.stream_sid, r->stream_sid)) {
        sb_wsclient_close(c, 1008, "streamSid is not this call's");
        return;
    }
    if (!r->tw_closed && r->tw) {
        sb_wsconn_send(r->tw, SB_WS_OP_TEXT, text);
        r->frames_out++;
        sb_metric_add(&r->mx->media_frames, 1);
    }
}

static void app_open(void *arg, sb_wsclient_t *c)
{
    relay_t *r = arg;
    (void)c;
    tell(r, SB_CALL_STREAM_APP_OPEN);
}

static void app_closed(void *arg, sb_wsclient_t *c, int err, uint16_t code, int http_status)
{
    relay_t *r = arg;
    (void)c;
    r->app = NULL;
    r->app_pending = false;
    if (!r->tw_closed && !r->stopped) {
        char why[96];
        if (err == SB_EACCES)
            snprintf(why, sizeof why, "refused its upgrade (HTTP %d)", http_status);
        else if (err)
            snprintf(why, sizeof why, "could not be reached: %s", sb_strerror(err));
        else
            snprintf(why, sizeof why, "closed the stream (%u)", (unsigned)code);
        app_failed(r, why);
    }
    maybe_free(r);
}

static const sb_wsclient_ops_t app_ops = {.on_open = app_open, .on_message = app_message, .on_close = app_closed};

/* Dials the voice app at start; what Twilio sent so far goes first. */
static void app_dial(relay_t *r, sb_str_t start)
{
    media_t *m = media_of(r->s);
    if (!r->media_url || !m->ctx) {
        app_failed(r, r->media_url ? "cannot be dialled (no WebSocket client)" : "is not set (settings.media_url)");
        return;
    }
    sb_buf_t sig, call, chan;
    sb_buf_init(&sig);
    sb_buf_init(&call);
    sb_buf_init(&chan);
    if (r->secret) {
        sb_buf_puts(&sig, "X-Switchboard-Signature: ");
        sb_apphook_signature(&sig, r->secret, sb_str_cstr(r->media_url));
    }
    sb_buf_printf(&call, "X-Switchboard-Call: %s", r->call_key);
    sb_buf_printf(&chan, "X-Switchboard-Channel: %" PRId64, r->channel);
    const char *headers[] = {sb_buf_cstr(&call), sb_buf_cstr(&chan), r->secret ? sb_buf_cstr(&sig) : NULL, NULL};
    sb_wsclient_opts_t o = {.url = r->media_url,
                            .headers = headers,
                            .connect_timeout_ms = APP_CONNECT_MS,
                            .max_message = MAX_FRAME,
                            .max_queued = APP_MAX_QUEUED};
    int rc = sb_wsclient_connect(m->ctx, &o, &app_ops, r, &r->app);
    sb_buf_cleanup(&sig);
    sb_buf_cleanup(&call);
    sb_buf_cleanup(&chan);
    if (rc < 0) {
        r->app = NULL;
        app_failed(r, "has a media_url that cannot be dialled");
        return;
    }
    r->app_pending = true;
    if (r->connected)
        sb_wsclient_send(r->app, false, sb_str_cstr(r->connected), false);
    sb_wsclient_send(r->app, false, start, false);
}

/* ---- Twilio's side -------------------------------------------------------------------------------------------- */

static bool on_start(relay_t *r, const sb_ms_frame_t *f, sb_str_t text)
{
    if (r->started)
        return false;
    r->started = true;
    r->stream_sid = sb_strndup(f->stream_sid.p, f->stream_sid.len);
    sb_str_t key = f->call_sid;
    for (size_t i = 0; i < f->nparams; i++)
        if (sb_str_eq_cstr(f->params[i].name, "call_key") && f->params[i].value.len)
            key = f->params[i].value;
    r->call_key = sb_strndup(key.p, key.len);
    tell(r, SB_CALL_STREAM_STARTED);
    app_dial(r, text);
    return true;
}

static void tw_message(void *arg, sb_wsconn_t *c, sb_ws_op_t op, sb_str_t text)
{
    relay_t *r = arg;
    char err[128];
    sb_ms_frame_t f;
    if (op != SB_WS_OP_TEXT) {
        sb_wsconn_close(c, 1003, "Media Streams frames are text");
        return;
    }
    if (sb_ms_parse(text, SB_MS_FROM_TWILIO, &f, &r->scratch, err, sizeof err) < 0) {
        sb_log_warn("media: channel %" PRId64 ": a malformed frame from Twilio: %s", r->channel, err);
        sb_wsconn_close(c, 1007, err);
        return;
    }
    r->frames_in++;
    if (f.event == SB_MS_CONNECTED) {
        if (!r->connected && !r->started)
            r->connected = sb_strndup(text.p, text.len);
        return;
    }
    if (f.seq <= r->last_seq) {
        sb_wsconn_close(c, 1008, "sequenceNumber did not increase");
        return;
    }
    r->last_seq = f.seq;
    if (f.event == SB_MS_START) {
        if (!on_start(r, &f, text))
            sb_wsconn_close(c, 1008, "a second start");
        return;
    }
    if (!r->started || !sb_str_eq_cstr(f.stream_sid, r->stream_sid)) {
        sb_wsconn_close(c, 1008, r->started ? "streamSid is not this stream's" : "start must come first");
        return;
    }
    if (r->app) {
        sb_wsclient_send(r->app, false, text, f.event == SB_MS_MEDIA);
        sb_metric_add(&r->mx->media_frames, 1);
    }
    if (f.event == SB_MS_STOP) {
        r->stopped = true;
        if (r->app)
            sb_wsclient_close(r->app, 1000, "the call's stream stopped");
        sb_wsconn_close(c, 1000, "stopped");
    }
}

static void tw_closed(void *arg, sb_wsconn_t *c)
{
    relay_t *r = arg;
    (void)c;
    r->tw_closed = true;
    r->tw = NULL;
    if (r->app) {
        uint64_t dropped = sb_wsclient_dropped(r->app);
        sb_metric_add(&r->mx->media_dropped, dropped);
        sb_wsclient_close(r->app, 1000, "the call's stream ended");
    }
    tell(r, SB_CALL_STREAM_ENDED);
    maybe_free(r);
}

static const sb_wsconn_ops_t tw_ops = {.on_message = tw_message, .on_close = tw_closed};

static const sb_wsconn_opts_t tw_opts = {.max_message = MAX_FRAME,
                                         .max_queued = TW_MAX_QUEUED,
                                         .slow_code = 1008,
                                         .slow_reason = "Twilio fell behind the voice app's audio",
                                         .what = "the Media Streams endpoint"};

void sb_media_accept(sb_shard_t *s, sb_http_req_t *req, const sb_chan_t *ch)
{
    media_t *m = media_of(s);
    relay_t *r = sb_calloc(1, sizeof *r);
    r->s = s;
    r->mx = sb_metrics_shard(sb_shard_index(s));
    r->channel = ch->id;
    r->tenant = ch->tenant;
    r->last_seq = 0;
    sb_buf_init(&r->scratch);
    if (ch->voice) {
        r->media_url = ch->voice->v.media_url ? sb_strdup(ch->voice->v.media_url) : NULL;
        r->secret = ch->voice->secret ? sb_strdup(ch->voice->secret) : NULL;
    }
    sb_list_push_back(&m->relays, &r->link);
    sb_gauge_add(&r->mx->media_streams, 1);
    int proto;
    r->tw = sb_wsconn_accept(req, &tw_opts, &tw_ops, r, &proto);
    if (!r->tw) {
        r->tw_closed = true;
        maybe_free(r);
    }
}

/* ---- the module ----------------------------------------------------------------------------------------------- */

static int media_start(sb_shard_t *s, void **state)
{
    media_t *m = sb_calloc(1, sizeof *m);
    sb_list_init(&m->relays);
    m->ctx = sb_wsclient_ctx_new(sb_shard_loop(s));
    if (!m->ctx)
        sb_log_error("media: no WebSocket client on shard %u: calls streamed to a voice app get their fallback",
                     sb_shard_index(s));
    *state = m;
    return 0;
}

/* The voice apps' connections close first (their relays' Twilio side is the HTTP server's, closed with it). */
static void media_stop(sb_shard_t *s, void *state)
{
    media_t *m = state;
    (void)s;
    if (m->ctx)
        sb_wsclient_ctx_free(m->ctx);
    m->ctx = NULL;
}

static void media_finish(sb_shard_t *s, void *state)
{
    media_t *m = state;
    (void)s;
    while (!sb_list_empty(&m->relays)) /* what the server's close did not reach (it always does: a guard) */
        relay_free(sb_container_of(sb_list_first(&m->relays), relay_t, link));
    free(m);
}

const sb_shard_module_t sb_media_module = {
    .name = "media",
    .start = media_start,
    .stop = media_stop,
    .finish = media_finish,
};
