/* Accepting outbound sends; see sends.h.
 *
 * The request is checked where it arrived, copied into one job and handed to the tenant's shard, which runs one
 * statement: it finds an earlier message with the same idempotency key (then nothing else happens), or upserts the
 * contact and the conversation, stores the message with status queued and its first status history entry, and
 * takes the tenant's next inbox cursors for message.created and conversation.updated. After COMMIT the events go
 * to the live inbox and the answer goes back to the shard the request came from. */
#include "gateway/sends.h"

#include "adapters/outbound.h"
#include "adapters/pg.h"
#include "gateway/inbound.h"
#include "gateway/live.h"
#include "gateway/log.h"
#include "gateway/sender.h"
#include "proto/err.h"
#include "proto/line.h"
#include "proto/mem.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const sb_config_t *cfg;

void sb_sends_init(const sb_config_t *c)
{
    cfg = c;
}

/* ---- checks that need no database ----------------------------------------------------------------------------- */

/* "+" and 8 to 15 digits, the first not 0 (E.164), optionally after "whatsapp:". */
static bool is_recipient(sb_str_t to)
{
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
        return "'to' must be an E.164 number such as +14155550100 (or whatsapp:+14155550100)";
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
    return NULL;
}

/* ---- the job: one send on its way to the tenant's shard and back ---------------------------------------------- */

typedef struct job {
    unsigned origin;              /* the shard to answer on */
    sb_sends_fn cb;
    void *arg;
    int64_t tenant, channel;
    char *to, *body, *media, *template_json, *key; /* media: a JSON array; key and template NULL when absent */
    /* the outcome, carried back */
    int status;
    const char *code, *message;
    char id[24];
    bool created;
    char errbuf[160]; /* a refusal's message, carried back */
} job_t;

static void job_free(job_t *j)
{
    free(j->to);
    free(j->body);
    free(j->media);
    free(j->template_json);
    free(j->key);
    free(j);
}

static void answer_on_origin(sb_shard_t *s, void *arg)
{
    job_t *j = arg;
    (void)s;
    j->cb(j->arg, j->status, j->code, j->message, j->id, j->created);
    job_free(j);
}

/* Back to the shard the request came from (never freed unanswered: if that shard is gone, so is its client). */
static void finish(job_t *j, int status, const char *code, const char *message)
{
    j->status = status;
    j->code = code;
    j->message = message;
    sb_shard_t *self = sb_shard_self();
    if (self && sb_shard_index(self) == j->origin)
        answer_on_origin(self, j);
    else if (sb_shard_exec(j->origin, answer_on_origin, j) < 0)
        job_free(j);
}

/* ---- the outbox insert: a loop turn's sends of all the shard's tenants in one statement ------------------------ */

/* A batch of sends as parallel arrays, in arrival order (ord): $1 tenant, $2 channel, $3 to, $4 body, $5 media (JSON
 * arrays), $6 idempotency key (NULL: none), $7 template (JSON or NULL).
 *
 * Each send with a key its tenant used before answers that earlier message and changes nothing; of the sends of one
 * batch that share a tenant and a key, the first creates the message and the others answer it. The others upsert
 * their contacts and conversations once per conversation, take their places in it in arrival order, are stored
 * queued with their first status history entry, and make message.created and conversation.updated, numbered with
 * their tenant's inbox cursors in arrival order.
 *
 * Rows: one per send (ord; id, the new or earlier message's, NULL when the channel is not the tenant's or cannot
 * send; created 1 or 0; channel_type, NULL when no such channel), then the events (tenant_id, cursor, type, data),
 * grouped by tenant in cursor order. */
static const char accept_sql[] =
    "WITH u AS ("
    "  SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::jsonb[], $6::text[],"
    "                       $7::jsonb[]) WITH ORDINALITY AS u(tenant_id, channel_id, recipient, body, media, key,"
    "                                                        template, ord)),"
    " ch AS (SELECT u.ord, c.type, c.address FROM u JOIN channels c ON c.tenant_id = u.tenant_id AND c.id = u.channel_id),"
    " ok AS (SELECT u.*, ch.address FROM u JOIN ch USING (ord)"
    "        WHERE ch.type IN ('twilio_sms', 'twilio_whatsapp', 'meta_whatsapp')),"
    " old AS (SELECT ok.ord, m.id FROM ok JOIN messages m ON m.tenant_id = ok.tenant_id AND m.idempotency_key = ok.key),"
    " fresh AS (SELECT ok.*, min(ok.ord) OVER (PARTITION BY ok.tenant_id, ok.key,"
    "                                          CASE WHEN ok.key IS NULL THEN ok.ord END) AS lead"
    "           FROM ok WHERE NOT EXISTS (SELECT 1 FROM old WHERE old.ord = ok.ord)),"
    " mk AS MATERIALIZED (SELECT * FROM fresh WHERE lead = ord),"
    " ct AS ("
    "  INSERT INTO contacts AS c (tenant_id, channel_id, address)"
    "  SELECT DISTINCT tenant_id, channel_id, recipient FROM mk"
    "  ON CONFLICT (tenant_id, channel_id, address) DO UPDATE SET updated_at = now()"
    "  RETURNING id, tenant_id, channel_id, address, profile_name),"
    " mc AS MATERIALIZED (SELECT mk.*, ct.id AS contact_id, ct.profile_name FROM mk JOIN ct"
    "        ON ct.tenant_id = mk.tenant_id AND ct.channel_id = mk.channel_id AND ct.address = mk.recipient),"
    " cv AS ("
    "  INSERT INTO conversations AS v (tenant_id, channel_id, contact_id, last_seq, last_message_at)"
    "  SELECT tenant_id, channel_id, contact_id, count(*), now() FROM mc GROUP BY tenant_id, channel_id, contact_id"
    "  ON CONFLICT (tenant_id, channel_id, contact_id) DO UPDATE"
    "  SET last_seq = v.last_seq + EXCLUDED.last_seq, last_message_at = now()"
    "  RETURNING id, tenant_id, contact_id, last_seq, last_message_at, created_at),"
    " mn AS MATERIALIZED ("
    "  SELECT mc.*, cv.id AS conversation_id, cv.last_message_at, cv.created_at AS conversation_created_at,"
    "         cv.last_seq - count(*) OVER (PARTITION BY cv.id) + row_number() OVER (PARTITION BY cv.id ORDER BY mc.ord)"
    "         AS seq"
    "  FROM mc JOIN cv ON cv.tenant_id = mc.tenant_id AND cv.contact_id = mc.contact_id),"
    " m AS ("
    "  INSERT INTO messages (tenant_id, conversation_id, channel_id, seq, direction, sender, recipient, body, media,"
    "                        status, idempotency_key, template)"
    "  SELECT tenant_id, conversation_id, channel_id, seq, 'out', address, recipient, body, media, 'queued', key,"
    "         template FROM mn"
    "  RETURNING id, tenant_id, conversation_id, seq, created_at),"
    " mo AS MATERIALIZED (SELECT mn.*, m.id, m.created_at FROM mn JOIN m"
    "        ON m.tenant_id = mn.tenant_id AND m.conversation_id = mn.conversation_id AND m.seq = mn.seq),"
    " sh AS (INSERT INTO message_status_history (tenant_id, message_id, status) SELECT tenant_id, id, 'queued' FROM mo),"
    " ev AS ("
    "  SELECT tenant_id, ord, 1 AS n, 'message.created' AS type, jsonb_build_object('id', id::text, 'conversation_id',"
    "         conversation_id::text, 'channel_id', channel_id::text, 'direction', 'out', 'from', address, 'to',"
    "         recipient, 'body', body, 'media', media, 'provider_id', NULL, 'status', 'queued',"
    "         'created_at', created_at) AS data FROM mo"
    "  UNION ALL"
    "  SELECT tenant_id, ord, 2, 'conversation.updated', jsonb_build_object('id', conversation_id::text, 'channel_id',"
    "         channel_id::text, 'contact', jsonb_build_object('id', contact_id::text, 'address', recipient,"
    "         'profile_name', profile_name), 'last_seq', seq, 'last_message_at', last_message_at,"
    "         'created_at', conversation_created_at) FROM mo),"
    " cur AS ("
    "  UPDATE tenants t SET inbox_cursor = t.inbox_cursor + g.n"
    "  FROM (SELECT tenant_id, count(*) AS n FROM ev GROUP BY tenant_id) g WHERE t.id = g.tenant_id"
    "  RETURNING t.id, t.inbox_cursor - g.n AS base),"
    " ins AS ("
    "  INSERT INTO inbox_events (tenant_id, cursor, type, data)"
    "  SELECT ev.tenant_id, cur.base + row_number() OVER (PARTITION BY ev.tenant_id ORDER BY ev.ord, ev.n), ev.type,"
    "         ev.data FROM ev JOIN cur ON cur.id = ev.tenant_id"
    "  RETURNING tenant_id, cursor, type, data)"
    " SELECT u.ord, coalesce(mo.id, old.id, lead.id)::text AS id, (mo.id IS NOT NULL)::int AS created,"
    "        ch.type AS channel_type, NULL::bigint AS tenant_id, NULL::bigint AS cursor, NULL::text AS type,"
    "        NULL::text AS data"
    " FROM u LEFT JOIN ch USING (ord) LEFT JOIN mo USING (ord) LEFT JOIN old USING (ord) LEFT JOIN fresh USING (ord)"
    "        LEFT JOIN mo lead ON lead.ord = fresh.lead"
    " UNION ALL SELECT NULL, NULL, NULL, NULL, tenant_id, cursor, type, data::text FROM ins"
    " ORDER BY tenant_id NULLS FIRST, cursor, ord";

static void accept_row(const void *item, size_t k, const char **v, char (*num)[24])
{
    const job_t *j = item;
    (void)k;
    snprintf(num[0], sizeof num[0], "%lld", (long long)j->tenant);
    snprintf(num[1], sizeof num[1], "%lld", (long long)j->channel);
    const char *w[7] = {num[0], num[1], j->to, j->body, j->media, j->key, j->template_json};
    memcpy(v, w, sizeof w);
}

static void accepted(void **jobs, size_t n, int err, const char *detail, const PGresult *res)
{
    if (err == SB_ECANCELED) { /* never sent: nothing was stored */
        for (size_t i = 0; i < n; i++)
            finish(jobs[i], 503, "unavailable", "the gateway is stopping; retry with the same idempotency_key");
        return;
    }
    if (err) {
        sb_log_warn("sends: %zu send(s) not accepted: %s", n, detail);
        for (size_t i = 0; i < n; i++)
            finish(jobs[i], 503, "unavailable", "the database is not reachable; retry with the same idempotency_key");
        return;
    }
    int rows = PQntuples(res);
    for (int i = 0, j; i < rows; i = j) { /* the events, grouped by tenant, after the sends' rows */
        j = i + 1;
        if (PQgetisnull(res, i, 4))
            continue;
        while (j < rows && !strcmp(PQgetvalue(res, j, 4), PQgetvalue(res, i, 4)))
            j++;
        sb_live_publish_rows(strtoll(PQgetvalue(res, i, 4), NULL, 10), res, i, j - i);
    }
    for (int i = 0; i < rows && !PQgetisnull(res, i, 0); i++) {
        long long ord = strtoll(PQgetvalue(res, i, 0), NULL, 10);
        SB_BUG_ON(ord < 1 || (size_t)ord > n || !jobs[ord - 1]);
        job_t *j = jobs[ord - 1];
        jobs[ord - 1] = NULL;
        if (PQgetisnull(res, i, 1)) {
            if (!PQgetisnull(res, i, 3))
                finish(j, 400, "unsupported_channel", "this channel type cannot send (twilio_sms, twilio_whatsapp "
                                                      "and meta_whatsapp can)");
            else
                finish(j, 404, "not_found", "no such channel");
            continue;
        }
        snprintf(j->id, sizeof j->id, "%s", PQgetvalue(res, i, 1));
        j->created = strcmp(PQgetvalue(res, i, 2), "0") != 0;
        if (j->created)
            sb_inbound_send(j->tenant, j->channel, strtoll(j->id, NULL, 10));
        finish(j, 202, NULL, NULL);
    }
    for (size_t i = 0; i < n; i++) /* every send has its row; none may be left unanswered */
        SB_BUG_ON(jobs[i]);
}

/* The shard's sends of a loop turn go out as one statement, a batch of its connection. */
static const sb_pg_batch_def_t accept_def = {
    .what = "sends",
    .sql = accept_sql,
    .ncols = 7,
    .max = 256,
    .row = accept_row,
    .done = accepted,
};

static void commit_on_owner(sb_shard_t *s, job_t *j)
{
    if (sb_pg_batch_add(sb_shard_pg(s), &accept_def, j) < 0)
        finish(j, 503, "unavailable", "the database is not reachable; retry with the same idempotency_key");
}

/* The channel's type is known: the message must suit it (adapters/outbound: Twilio's 1,600 characters, one media on
 * WhatsApp, templates on Meta only, ...), and its recipient is stored in the channel's canonical form. */
static void typed(void *arg, int type)
{
    job_t *j = arg;
    if (type < 0) {
        finish(j, 503, "unavailable", "the database is not reachable; retry with the same idempotency_key");
        return;
    }
    if (type == SB_CH_NONE) {
        finish(j, 404, "not_found", "no such channel");
        return;
    }
    json_t *media = json_loads(j->media, 0, NULL), *tpl = j->template_json ? json_loads(j->template_json, 0, NULL)
                                                                           : NULL;
    sb_str_t url = sb_str(NULL, 0);
    if (json_array_size(media))
        url = sb_str_cstr(json_string_value(json_object_get(json_array_get(media, 0), "url")));
    json_t *lang = json_object_get(tpl, "language"), *comps = json_object_get(tpl, "components");
    char *comps_text = comps ? json_dumps(comps, JSON_COMPACT) : NULL;
    const char *name = json_string_value(json_object_get(tpl, "name")),
               *code = json_is_string(lang) ? json_string_value(lang) : json_string_value(json_object_get(lang, "code"));
    sb_outbound_msg_t m = {.channel = (sb_channel_type_t)type,
                           .to = sb_str_cstr(j->to),
                           .body = sb_str_cstr(j->body),
                           .media = &url,
                           .nmedia = url.len ? 1 : 0,
                           .template_name = sb_str_cstr(name ? name : ""),
                           .template_language = sb_str_cstr(code ? code : (tpl ? "en_US" : "")),
                           .template_components = sb_str_cstr(comps_text ? comps_text : "")};
    sb_outbound_valid_t valid;
    sb_outbound_error_t err;
    int rc = sb_outbound_validate(&m, &valid, &err);
    json_decref(media);
    json_decref(tpl);
    free(comps_text);
    if (rc < 0) {
        snprintf(j->errbuf, sizeof j->errbuf, "%s", err.message);
        finish(j, 400, err.code, j->errbuf);
        return;
    }
    free(j->to);
    j->to = sb_strdup(valid.to);
    commit_on_owner(sb_shard_self(), j);
}

static void accept_on_owner(sb_shard_t *s, void *arg)
{
    job_t *j = arg;
    sb_sender_channel_type(s, j->tenant, j->channel, typed, j);
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
    j->tenant = send->tenant;
    j->channel = send->channel;
    j->to = sb_strndup(send->to.p, send->to.len);
    j->body = sb_strndup(send->body.p ? send->body.p : "", send->body.len);
    if (send->media_url.len) {
        json_t *a = json_pack("[{s:s%}]", "url", send->media_url.p, send->media_url.len);
        j->media = json_dumps(a, JSON_COMPACT);
        json_decref(a);
    } else {
        j->media = sb_strdup("[]");
    }
    j->template_json = send->template_json.len ? sb_strndup(send->template_json.p, send->template_json.len) : NULL;
    j->key = send->idempotency_key.p ? sb_strndup(send->idempotency_key.p, send->idempotency_key.len) : NULL;
    unsigned owner = sb_inbound_owner(send->tenant);
    if (owner == j->origin)
        accept_on_owner(self, j);
    else if (sb_shard_exec(owner, accept_on_owner, j) < 0)
        finish(j, 503, "unavailable", "the gateway is shutting down; retry with the same idempotency_key");
}

void sb_sends_shard_stop(sb_shard_t *s)
{
    sb_pg_batch_cancel(sb_shard_pg(s), &accept_def);
}
