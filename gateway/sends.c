/* Accepting outbound sends; see sends.h.
 *
 * The request is checked where it arrived, copied into the session's request and handed to the channel's session
 * on the tenant's shard, which checks it against its channel, numbers it in its conversation and stores it (with
 * its outbox entry and events) before it answers; the answer comes back to the shard the request came from. A send
 * with fallback channels first looks each of them up (gateway/chancache, on the shard the request came from): each
 * must be a channel of the tenant that can send messages. */
#include "gateway/sends.h"

#include "actors/session.h"
#include "gateway/chancache.h"
#include "proto/err.h"
#include "proto/fallback.h"
#include "proto/line.h"
#include "proto/mem.h"
#include "shards/cluster.h"
#include "shards/domain.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- checks that need no database ----------------------------------------------------------------------------- */

/* "+" and 8 to 15 digits, the first not 0 (E.164), optionally after "whatsapp:"; or 1 to 32 digits (a Messenger
 * PSID or Instagram IGSID: which one a channel takes, its session checks). */
static bool is_recipient(sb_str_t to)
{
    if (to.len >= 1 && to.len <= 32 && to.p[0] >= '0' && to.p[0] <= '9') {
        for (size_t i = 0; i < to.len; i++)
            if (to.p[i] < '0' || to.p[i] > '9')
                return false;
        return true;
    }
    if (sb_str_has_prefix(to, SB_STR("whatsapp:")))
        to = sb_str(to.p + 9, to.len - 9);
    if (to.len < 9 || to.len > 16 || to.p[0] != '+' || to.p[1] == '0')
        return false;
    for (size_t i = 1; i < to.len; i++)
        if (to.p[i] < '0' || to.p[i] > '9')
            return false;
    return true;
}

static size_t code_points(sb_str_t s)
{
    size_t n = 0;
    for (size_t i = 0; i < s.len; i++)
        n += ((unsigned char)s.p[i] & 0xC0) != 0x80;
    return n;
}

static bool is_media_url(sb_str_t u)
{
    if (!sb_str_has_prefix(u, SB_STR("https://")) && !sb_str_has_prefix(u, SB_STR("http://")))
        return false;
    const char *host = memchr(u.p, ':', u.len) + 3;
    if (host >= u.p + u.len || *host == '/' || u.len > SB_SENDS_MAX_URL)
        return false;
    for (size_t i = 0; i < u.len; i++)
        if ((unsigned char)u.p[i] <= 0x20 || u.p[i] == 0x7f)
            return false;
    return true;
}

const char *sb_sends_check(const sb_send_t *s, const char **code)
{
    *code = "invalid_request";
    if (!s->to.len || !is_recipient(s->to)) {
        *code = "invalid_recipient";
        return "'to' must be an E.164 number such as +14155550100 (or whatsapp:+14155550100), or the PSID / IGSID "
               "of a Messenger or Instagram customer";
    }
    if (s->tag.p) {
        bool ok = s->tag.len > 0 && s->tag.len <= 64;
        for (size_t i = 0; ok && i < s->tag.len; i++)
            ok = (s->tag.p[i] >= 'A' && s->tag.p[i] <= 'Z') || s->tag.p[i] == '_';
        if (!ok) {
            *code = "invalid_tag";
            return "'tag' must be a Messenger message tag such as HUMAN_AGENT";
        }
        if (s->template_json.len) {
            *code = "invalid_tag";
            return "a message takes a 'template' or a 'tag', not both";
        }
    }
    if (!s->body.len && !s->media_url.len && !s->template_json.len)
        return "a message needs 'body', 'media_url' or 'template'";
    if (s->body.len && !sb_utf8_valid(s->body.p, s->body.len))
        return "'body' must be valid UTF-8";
    if (memchr(s->body.p ? s->body.p : "", '\0', s->body.len))
        return "'body' must not contain NUL characters";
    if (code_points(s->body) > SB_SENDS_MAX_BODY) {
        *code = "body_too_long";
        return "'body' is longer than 4096 characters";
    }
    if (s->media_url.len && !is_media_url(s->media_url)) {
        *code = "invalid_media_url";
        return "'media_url' must be an absolute http(s) URL without spaces, at most 2048 bytes";
    }
    if (s->idempotency_key.p && (s->idempotency_key.len == 0 || s->idempotency_key.len > SB_SENDS_MAX_KEY ||
                                 !sb_utf8_valid(s->idempotency_key.p, s->idempotency_key.len) ||
                                 memchr(s->idempotency_key.p, '\0', s->idempotency_key.len)))
        return "'idempotency_key' must be 1 to 255 bytes of UTF-8 text";
    if (sb_str_has_prefix(s->idempotency_key, SB_STR("sb-fallback:"))) /* the session's own (actors/session.c) */
        return "'idempotency_key' must not start with sb-fallback: (the gateway's keys for fallback messages)";
    return NULL;
}

/* ---- on its way to the session and back ------------------------------------------------------------------------ */

typedef struct job {
    sb_session_send_t req;     /* first: the session hands back this pointer */
    unsigned origin;           /* the shard to answer on */
    sb_sends_fn cb;
    void *arg;
    sb_fallback_t fallback;    /* its fallback channels, looked up one after the other ... */
    size_t checked;            /* ... this many so far */
} job_t;

static void job_free(job_t *j)
{
    sb_session_send_cleanup(&j->req);
    free(j);
}

static void answer_on_origin(sb_shard_t *s, void *arg)
{
    job_t *j = arg;
    (void)s;
    char id[24] = "";
    if (j->req.status == 202 || j->req.status == 200)
        snprintf(id, sizeof id, "%lld", (long long)j->req.id);
    bool ok = j->req.status == 202 || j->req.status == 200;
    j->cb(j->arg, ok ? 202 : j->req.status, ok ? (j->req.accepted ? j->req.accepted : "queued") : j->req.code,
          ok ? NULL : j->req.message, id, j->req.created);
    job_free(j);
}

/* The session's answer, on the tenant's shard: back to the shard the request came from (never freed unanswered: if
 * that shard is gone, so is its client). */
static void answered(sb_session_send_t *req)
{
    job_t *j = (job_t *)req;
    sb_shard_t *self = sb_shard_self();
    if (self && sb_shard_index(self) == j->origin)
        answer_on_origin(self, j);
    else if (sb_shard_exec(j->origin, answer_on_origin, j) < 0)
        job_free(j);
}

static void post(job_t *j)
{
    sb_shard_t *self = sb_shard_self();
    if (!sb_cluster_owns(j->req.tenant)) /* another node's tenant: to its session there */
        sb_cluster_session_send(self, &j->req);
    else
        sb_session_send(sb_shard_rt(self), sb_domain_owner(j->req.tenant), &j->req);
}

static void check_fallbacks(job_t *j);

/* A fallback channel looked up: the tenant's own, and one that can send messages; else the send is answered. */
static void fallback_found(void *arg, int err, const sb_chan_t *ch)
{
    job_t *j = arg;
    int64_t id = j->fallback.channels[j->checked];
    char msg[160];
    if (err == SB_ENOENT || (!err && ch->tenant != j->req.tenant)) {
        snprintf(msg, sizeof msg, "fallback channel %lld not found", (long long)id);
        j->cb(j->arg, 404, "not_found", msg, NULL, false);
    } else if (err) {
        j->cb(j->arg, 503, "unavailable", "the fallback channels could not be checked now; retry", NULL, false);
    } else if (ch->type == SB_CH_TWILIO_VOICE || ch->type == SB_CH_LINKED || ch->type == SB_CH_NONE) {
        snprintf(msg, sizeof msg, "fallback channel %lld is a %s channel: it cannot send messages", (long long)id,
                 sb_channel_type_name(ch->type) ? sb_channel_type_name(ch->type) : "unknown");
        j->cb(j->arg, 400, "invalid_fallback", msg, NULL, false);
    } else {
        j->checked++;
        check_fallbacks(j);
        return;
    }
    job_free(j);
}

/* Looks the next fallback channel up, or (all found) hands the send to its session. */
static void check_fallbacks(job_t *j)
{
    if (j->checked >= j->fallback.n) {
        post(j);
        return;
    }
    sb_chancache_get(sb_shard_self(), j->fallback.channels[j->checked], fallback_found, j);
}

void sb_sends_accept(const sb_send_t *send, sb_sends_fn cb, void *arg)
{
    const char *code, *why = sb_sends_check(send, &code);
    if (why) {
        cb(arg, 400, code, why, NULL, false);
        return;
    }
    sb_shard_t *self = sb_shard_self();
    SB_BUG_ON(!self);
    job_t *j = sb_calloc(1, sizeof *j);
    j->origin = sb_shard_index(self);
    j->cb = cb;
    j->arg = arg;
    j->req.tenant = send->tenant;
    j->req.channel = send->channel;
    j->req.to = sb_strndup(send->to.p, send->to.len);
    j->req.body = sb_strndup(send->body.p ? send->body.p : "", send->body.len);
    if (send->media_url.len) {
        json_t *a = json_pack("[{s:s%}]", "url", send->media_url.p, send->media_url.len);
        j->req.media_json = json_dumps(a, JSON_COMPACT);
        json_decref(a);
    } else {
        j->req.media_json = sb_strdup("[]");
    }
    j->req.template_json =
        send->template_json.len ? sb_strndup(send->template_json.p, send->template_json.len) : NULL;
    if (send->tag.len) { /* (checked: no template beside it) */
        json_t *t = json_pack("{s:s%}", "tag", send->tag.p, send->tag.len);
        j->req.template_json = json_dumps(t, JSON_COMPACT);
        json_decref(t);
    }
    j->req.idempotency_key =
        send->idempotency_key.p ? sb_strndup(send->idempotency_key.p, send->idempotency_key.len) : NULL;
    j->req.priority = send->priority;
    j->req.send_at_ms = send->send_at_ms;
    j->req.fallback_json = send->fallback_json.len ? sb_strndup(send->fallback_json.p, send->fallback_json.len) : NULL;
    j->req.answer = answered;
    if (j->req.fallback_json &&
        sb_fallback_parse(j->req.fallback_json, strlen(j->req.fallback_json), &j->fallback) < 0) {
        cb(arg, 400, "invalid_fallback", "the fallback list cannot be read", NULL, false);
        job_free(j);
        return;
    }
    check_fallbacks(j);
}

/* ---- cancels -------------------------------------------------------------------------------------------------- */

typedef struct cancel_job {
    sb_session_cancel_t req;   /* first: the session hands back this pointer */
    unsigned origin;
    sb_sends_cancel_fn cb;
    void *arg;
} cancel_job_t;

/* On the shard the cancel came from: the outcome to the caller, and the job freed. */
static void cancel_on_origin(sb_shard_t *s, void *arg)
{
    cancel_job_t *j = arg;
    (void)s;
    j->cb(j->arg, j->req.status, j->req.status == 200 ? NULL : j->req.code,
          j->req.status == 200 ? NULL : j->req.message);
    free(j);
}

/* The session's answer, on the tenant's shard: back to the shard the request came from (as answered() does). */
static void cancel_answered(sb_session_cancel_t *req)
{
    cancel_job_t *j = (cancel_job_t *)req;
    sb_shard_t *self = sb_shard_self();
    if (self && sb_shard_index(self) == j->origin)
        cancel_on_origin(self, j);
    else if (sb_shard_exec(j->origin, cancel_on_origin, j) < 0)
        free(j);
}

void sb_sends_cancel(int64_t tenant, int64_t channel, int64_t id, sb_sends_cancel_fn cb, void *arg)
{
    sb_shard_t *self = sb_shard_self();
    SB_BUG_ON(!self);
    cancel_job_t *j = sb_calloc(1, sizeof *j);
    j->origin = sb_shard_index(self);
    j->cb = cb;
    j->arg = arg;
    j->req = (sb_session_cancel_t){.tenant = tenant, .channel = channel, .id = id, .answer = cancel_answered};
    if (!sb_cluster_owns(tenant)) /* another node's tenant: to its session there */
        sb_cluster_session_cancel(self, &j->req);
    else
        sb_session_cancel(sb_shard_rt(self), sb_domain_owner(tenant), &j->req);
}
