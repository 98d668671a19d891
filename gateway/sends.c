/* Accepting outbound sends; see sends.h.
 *
 * The request is checked where it arrived, copied into the session's request and handed to the channel's session
 * on the tenant's shard, which checks it against its channel, numbers it in its conversation and stores it (with
 * its outbox entry and events) before it answers; the answer comes back to the shard the request came from. A send
 * with fallback channels first looks each of them up (gateway/chancache, on the shard the request came from): each
 * must be a channel of the tenant that can send messages.
 *
 * On a node of a cluster the node that took the send commits it, whichever node owns the tenant (durability does not
 * wait for the owner), and its session numbers it later: the checks the session would make are made here (the
 * channel, from the channel cache; what its type can send, and Meta's 24-hour window from the conversation's last
 * inbound message, through the provider adapter's rules), then the send is committed as a receipt of kind send
 * under a message id reserved from the store's block, unless its idempotency key names a message already
 * (sb_store_intake_add: the loop turn's sends one statement); it goes to the owner's stream (shards/cluster) and is answered 202 once
 * Redis has it, so that a client's next send, to any node, follows it in that stream. */
#include "gateway/sends.h"

#include "actors/session.h"
#include "adapters/provider.h"
#include "adapters/store/queries.h"
#include "gateway/chancache.h"
#include "gateway/log.h"
#include "proto/err.h"
#include "proto/fallback.h"
#include "proto/line.h"
#include "proto/mem.h"
#include "shards/cluster.h"
#include "shards/domain.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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
    sb_channel_type_t type;    /* a node of a cluster: its channel's type, once looked up ... */
    sb_store_intake_t intake;  /* ... and its commit (event_json heap while under way) */
} job_t;

static void job_free(job_t *j)
{
    sb_session_send_cleanup(&j->req);
    free((char *)j->intake.event_json);
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

/* Whether a channel's type sends messages (a voice or linked channel does not). */
static bool sends_messages(const sb_chan_t *ch)
{
    return ch->type != SB_CH_TWILIO_VOICE && ch->type != SB_CH_LINKED && ch->type != SB_CH_NONE;
}

/* ---- a node of a cluster: committed here, numbered by the owner's session --------------------------------------- */

/* The job answered on its shard (this one) with status, and freed. */
static void settle(job_t *j, int status, const char *code, const char *message)
{
    j->req.status = status;
    j->req.code = code;
    snprintf(j->req.message, sizeof j->req.message, "%s", message ? message : "");
    answer_on_origin(sb_shard_self(), j);
}

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Back on the job's shard: Redis has its entry (or will not: the sweeper brings it to its session then). */
static void intake_answer(sb_shard_t *s, void *arg)
{
    (void)s;
    settle(arg, 202, NULL, NULL);
}

static void intake_routed(void *arg, int err)
{
    job_t *j = arg;
    if (err)
        sb_log_debug("sends: message %" PRId64 " committed, not handed on now (%s): the sweeper will",
                     j->req.id, sb_strerror(err));
    if (sb_shard_exec(j->origin, intake_answer, j) < 0)
        job_free(j); /* (that shard is gone, and its client with it) */
}

/* The send as a receipt's event: the request's strings, borrowed. */
static json_t *intake_event(const job_t *j, int64_t id, sb_buf_t *packed)
{
    sb_event_t ev = {.kind = SB_EV_SEND,
                     .channel = j->type,
                     .provider_id = (char *)"send",
                     .message_id = id,
                     .send_at_ms = j->req.send_at_ms,
                     .to = j->req.to,
                     .body = j->req.body,
                     .media_json = j->req.media_json,
                     .template_json = j->req.template_json,
                     .idempotency_key = j->req.idempotency_key,
                     .fallback_json = j->req.fallback_json,
                     .priority = (char *)sb_priority_names[j->req.priority]};
    if (packed) {
        sb_event_pack(&ev, packed);
        return NULL;
    }
    return sb_event_json(&ev);
}

static void intake_committed(sb_store_intake_t *r, int err)
{
    job_t *j = r->arg;
    if (err) {
        settle(j, 503, "unavailable", "the message could not be stored now; retry with the same idempotency_key");
        return;
    }
    j->req.id = r->id;
    if (!r->receipt) {
        if (!r->id) {
            settle(j, 503, "unavailable", "another request with the same idempotency_key is being accepted; retry");
        } else { /* the key's message */
            j->req.accepted = r->scheduled ? "scheduled" : "queued";
            settle(j, 200, NULL, NULL);
        }
        return;
    }
    j->req.created = true;
    j->req.accepted = j->req.send_at_ms > wall_ms() ? "scheduled" : "queued";
    sb_buf_t packed; /* (the cluster copies it) */
    sb_buf_init(&packed);
    intake_event(j, r->id, &packed);
    sb_session_receipt_t rc = {.receipt_id = r->receipt, .tenant = j->req.tenant};
    int routed = sb_cluster_route_intake(&rc, j->req.channel, packed.p, packed.len, intake_routed, j);
    sb_buf_cleanup(&packed);
    if (routed < 0)
        settle(j, 202, NULL, NULL); /* (stopping: the sweeper of the next start hands it on) */
}

static void intake_commit(job_t *j)
{
    sb_store_t *st = sb_domain_store(sb_shard_self());
    json_t *ev = intake_event(j, 0, NULL);
    j->intake = (sb_store_intake_t){.tenant = j->req.tenant,
                                    .channel = j->req.channel,
                                    .id = st ? sb_store_message_id(st) : 0,
                                    .key = j->req.idempotency_key,
                                    .event_json = json_dumps(ev, JSON_COMPACT),
                                    .done = intake_committed,
                                    .arg = j};
    json_decref(ev);
    if (!st || sb_store_intake_add(st, &j->intake) < 0)
        settle(j, 503, "unavailable", "the database is not reachable; retry with the same idempotency_key");
}

/* Meta's 24-hour window, as the session would apply it (actors/session.c: outside_window): since is how long ago the
 * conversation's last inbound message came (-1: none). True when the send may go; else answered 422. */
static bool window_open(job_t *j, int64_t since)
{
    sb_send_request_t m = sb_session_send_request(&j->req);
    const char *code = "outside_window";
    char message[160];
    if (sb_provider_window(j->type, &m, since, &code, message, sizeof message) == 0)
        return true;
    settle(j, 422, code, message);
    return false;
}

static void last_inbound_read(void *arg, int err, int64_t at_ms)
{
    job_t *j = arg;
    if (err) {
        settle(j, 503, "unavailable", "the database is not reachable; retry with the same idempotency_key");
        return;
    }
    int64_t now = wall_ms();
    if (window_open(j, at_ms ? (now > at_ms ? now - at_ms : 0) : -1))
        intake_commit(j);
}

/* The send's channel found: the tenant's own, one that can send messages, and the send something its type can
 * send (its recipient then in the form stored); then the window, which only a free-form message on a channel with
 * one needs the conversation for. */
static void intake_channel_found(void *arg, int err, const sb_chan_t *ch)
{
    job_t *j = arg;
    if (err == SB_ENOENT || (!err && (ch->tenant != j->req.tenant || !sends_messages(ch)))) {
        settle(j, 404, "not_found", "no such channel");
        return;
    }
    if (err) {
        settle(j, 503, "unavailable", "the channel could not be looked up now; retry");
        return;
    }
    j->type = ch->type;
    sb_send_request_t m = sb_session_send_request(&j->req);
    char to[64], message[160];
    const char *code = "invalid_request";
    if (sb_provider_check(j->type, &m, to, sizeof to, &code, message, sizeof message) < 0) {
        settle(j, 400, code, message);
        return;
    }
    free(j->req.to);
    j->req.to = sb_strdup(to);
    const char *why;
    char scratch[160];
    m.to = j->req.to;
    if (sb_provider_window(j->type, &m, -1, &why, scratch, sizeof scratch) == 0) { /* goes whatever the window */
        intake_commit(j);
        return;
    }
    if (sb_query_last_inbound(sb_domain_store(sb_shard_self()), j->req.tenant, j->req.channel, j->req.to,
                              last_inbound_read, j) < 0)
        settle(j, 503, "unavailable", "the database is not reachable; retry with the same idempotency_key");
}

static void post(job_t *j)
{
    sb_shard_t *self = sb_shard_self();
    if (sb_cluster_enabled()) /* a node of a cluster: committed here (see above) */
        sb_chancache_get(self, j->req.channel, intake_channel_found, j);
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
    } else if (!sends_messages(ch)) {
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

void sb_sends_cancel(int64_t tenant, int64_t channel, int64_t id, bool intake, sb_sends_cancel_fn cb, void *arg)
{
    sb_shard_t *self = sb_shard_self();
    SB_BUG_ON(!self);
    cancel_job_t *j = sb_calloc(1, sizeof *j);
    j->origin = sb_shard_index(self);
    j->cb = cb;
    j->arg = arg;
    j->req = (sb_session_cancel_t){
        .tenant = tenant, .channel = channel, .id = id, .intake = intake, .answer = cancel_answered};
    if (!sb_cluster_owns(tenant)) /* another node's tenant: to its session there */
        sb_cluster_session_cancel(self, &j->req);
    else
        sb_session_cancel(sb_shard_rt(self), sb_domain_owner(tenant), &j->req);
}
