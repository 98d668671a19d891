/* The normalized event model; see event.h. */
#include "proto/event.h"

#include "proto/err.h"
#include "proto/mem.h"
#include "proto/str.h"

#include <jansson.h>

#include <string.h>

static const char *const type_names[] = {
    [SB_CH_TWILIO_SMS] = "twilio_sms",         [SB_CH_TWILIO_WHATSAPP] = "twilio_whatsapp",
    [SB_CH_TWILIO_VOICE] = "twilio_voice",     [SB_CH_META_WHATSAPP] = "meta_whatsapp",
    [SB_CH_META_MESSENGER] = "meta_messenger", [SB_CH_META_INSTAGRAM] = "meta_instagram",
    [SB_CH_LINKED] = "linked",
};

const char *sb_channel_type_name(sb_channel_type_t t)
{
    return (size_t)t < sizeof type_names / sizeof type_names[0] ? type_names[t] : NULL;
}

sb_channel_type_t sb_channel_type_parse(const char *name)
{
    for (size_t i = 1; i < sizeof type_names / sizeof type_names[0]; i++)
        if (type_names[i] && strcmp(type_names[i], name) == 0)
            return (sb_channel_type_t)i;
    return SB_CH_NONE;
}

void sb_event_cleanup(sb_event_t *ev)
{
    free(ev->account);
    free(ev->provider_id);
    free(ev->from);
    free(ev->to);
    free(ev->body);
    free(ev->profile_name);
    for (size_t i = 0; i < SB_EVENT_MAX_MEDIA; i++) { /* (every slot: a packed event may fill one past nmedia) */
        free(ev->media[i].url);
        free(ev->media[i].id);
        free(ev->media[i].content_type);
    }
    free(ev->status);
    free(ev->error_code);
    free(ev->error_message);
    free(ev->media_json);
    free(ev->template_json);
    free(ev->idempotency_key);
    free(ev->fallback_json);
    free(ev->priority);
    free(ev->raw);
    memset(ev, 0, sizeof *ev);
}

sb_event_t *sb_event_list_push(sb_event_list_t *l)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 4;
        l->v = sb_realloc(l->v, l->cap * sizeof *l->v);
    }
    sb_event_t *ev = &l->v[l->n++];
    memset(ev, 0, sizeof *ev);
    return ev;
}

void sb_event_list_cleanup(sb_event_list_t *l)
{
    for (size_t i = 0; i < l->n; i++)
        sb_event_cleanup(&l->v[i]);
    sb_free(l->v);
    l->n = l->cap = 0;
}

static void put(json_t *o, const char *key, const char *v)
{
    if (v)
        json_object_set_new(o, key, json_string(v));
}

static const char *kind_name(sb_event_kind_t k)
{
    return k == SB_EV_STATUS ? "status" : k == SB_EV_SEND ? "send" : "message";
}

json_t *sb_event_json(const sb_event_t *ev)
{
    json_t *o = json_object();
    json_object_set_new(o, "kind", json_string(kind_name(ev->kind)));
    put(o, "channel", sb_channel_type_name(ev->channel));
    put(o, "account", ev->account);
    put(o, "provider_id", ev->provider_id);
    if (ev->timestamp)
        json_object_set_new(o, "timestamp", json_integer(ev->timestamp));
    if (ev->kind == SB_EV_STATUS) {
        put(o, "status", ev->status);
        put(o, "error_code", ev->error_code);
        put(o, "error_message", ev->error_message);
        return o;
    }
    if (ev->kind == SB_EV_SEND) {
        json_object_set_new(o, "message_id", json_integer(ev->message_id));
        if (ev->send_at_ms)
            json_object_set_new(o, "send_at_ms", json_integer(ev->send_at_ms));
        put(o, "to", ev->to);
        put(o, "body", ev->body ? ev->body : "");
        put(o, "media_json", ev->media_json);
        put(o, "template_json", ev->template_json);
        put(o, "idempotency_key", ev->idempotency_key);
        put(o, "fallback_json", ev->fallback_json);
        put(o, "priority", ev->priority);
        return o;
    }
    put(o, "from", ev->from);
    put(o, "to", ev->to);
    put(o, "body", ev->body ? ev->body : "");
    put(o, "profile_name", ev->profile_name);
    json_t *media = json_array();
    for (size_t i = 0; i < ev->nmedia; i++) {
        json_t *m = json_object();
        put(m, "url", ev->media[i].url);
        put(m, "id", ev->media[i].id);
        put(m, "content_type", ev->media[i].content_type);
        json_array_append_new(media, m);
    }
    json_object_set_new(o, "media", media);
    return o;
}

static char *dup_member(const json_t *o, const char *key)
{
    const char *v = json_string_value(json_object_get(o, key));
    return v ? sb_strdup(v) : NULL;
}

int sb_event_from_json(const json_t *j, sb_event_t *ev)
{
    memset(ev, 0, sizeof *ev);
    const char *kind = json_string_value(json_object_get(j, "kind"));
    if (!kind || !json_is_string(json_object_get(j, "provider_id")))
        return SB_EPARSE;
    ev->kind = strcmp(kind, "status") == 0 ? SB_EV_STATUS : strcmp(kind, "send") == 0 ? SB_EV_SEND : SB_EV_MESSAGE;
    const char *ch = json_string_value(json_object_get(j, "channel"));
    ev->channel = ch ? sb_channel_type_parse(ch) : SB_CH_NONE;
    ev->account = dup_member(j, "account");
    ev->provider_id = dup_member(j, "provider_id");
    ev->timestamp = json_integer_value(json_object_get(j, "timestamp"));
    if (ev->kind == SB_EV_STATUS) {
        ev->status = dup_member(j, "status");
        ev->error_code = dup_member(j, "error_code");
        ev->error_message = dup_member(j, "error_message");
        if (!ev->status) {
            sb_event_cleanup(ev);
            return SB_EPARSE;
        }
        return 0;
    }
    if (ev->kind == SB_EV_SEND) {
        ev->message_id = json_integer_value(json_object_get(j, "message_id"));
        ev->send_at_ms = json_integer_value(json_object_get(j, "send_at_ms"));
        ev->to = dup_member(j, "to");
        ev->body = dup_member(j, "body");
        ev->media_json = dup_member(j, "media_json");
        ev->template_json = dup_member(j, "template_json");
        ev->idempotency_key = dup_member(j, "idempotency_key");
        ev->fallback_json = dup_member(j, "fallback_json");
        ev->priority = dup_member(j, "priority");
        if (ev->message_id <= 0 || !ev->to || !ev->media_json) {
            sb_event_cleanup(ev);
            return SB_EPARSE;
        }
        if (!ev->body)
            ev->body = sb_strdup("");
        return 0;
    }
    ev->from = dup_member(j, "from");
    ev->to = dup_member(j, "to");
    ev->body = dup_member(j, "body");
    ev->profile_name = dup_member(j, "profile_name");
    const json_t *media = json_object_get(j, "media");
    for (size_t i = 0; i < json_array_size(media) && ev->nmedia < SB_EVENT_MAX_MEDIA; i++) {
        const json_t *m = json_array_get(media, i);
        ev->media[ev->nmedia].url = dup_member(m, "url");
        ev->media[ev->nmedia].id = dup_member(m, "id");
        ev->media[ev->nmedia].content_type = dup_member(m, "content_type");
        ev->nmedia++;
    }
    if (!ev->from) {
        sb_event_cleanup(ev);
        return SB_EPARSE;
    }
    if (!ev->body)
        ev->body = sb_strdup("");
    return 0;
}

void sb_event_media_json(const sb_event_t *ev, sb_buf_t *out)
{
    static const char *const names[] = {"url", "id", "content_type"};
    sb_buf_puts(out, "[");
    for (size_t i = 0; i < ev->nmedia; i++) {
        const char *v[3] = {ev->media[i].url, ev->media[i].id, ev->media[i].content_type};
        sb_buf_puts(out, i ? ",{" : "{");
        bool first = true;
        for (int k = 0; k < 3; k++) {
            if (!v[k])
                continue;
            sb_buf_printf(out, "%s\"%s\":\"", first ? "" : ",", names[k]);
            sb_buf_json_escape(out, sb_str_cstr(v[k]));
            sb_buf_puts(out, "\"");
            first = false;
        }
        sb_buf_puts(out, "}");
    }
    sb_buf_puts(out, "]");
}

/* ---- packing: kind, channel, nmedia (one byte each), timestamp, message_id and send_at_ms (8 each), then each
 * string as a 4-byte length (0xffffffff for NULL) and its bytes, in a fixed order --------------------------------- */

#define HEAD 27
#define NFIXED 14
#define NSTR (NFIXED + 3 * SB_EVENT_MAX_MEDIA)

/* The event's string fields, in packing order. */
static void string_slots(sb_event_t *ev, char **slots[NSTR])
{
    char **fixed[NFIXED] = {&ev->account,       &ev->provider_id,  &ev->from,          &ev->to,
                            &ev->body,          &ev->profile_name, &ev->status,        &ev->error_code,
                            &ev->error_message, &ev->media_json,   &ev->template_json, &ev->idempotency_key,
                            &ev->fallback_json, &ev->priority};
    memcpy(slots, fixed, sizeof fixed);
    for (size_t i = 0; i < SB_EVENT_MAX_MEDIA; i++) {
        slots[NFIXED + 3 * i] = &ev->media[i].url;
        slots[NFIXED + 1 + 3 * i] = &ev->media[i].id;
        slots[NFIXED + 2 + 3 * i] = &ev->media[i].content_type;
    }
}

void sb_event_pack(const sb_event_t *ev, sb_buf_t *out)
{
    unsigned char head[HEAD] = {(unsigned char)ev->kind, (unsigned char)ev->channel, (unsigned char)ev->nmedia};
    uint64_t nums[3] = {(uint64_t)ev->timestamp, (uint64_t)ev->message_id, (uint64_t)ev->send_at_ms};
    memcpy(head + 3, nums, sizeof nums);
    sb_buf_append(out, head, sizeof head);
    char **slots[NSTR];
    string_slots((sb_event_t *)ev, slots); /* read only */
    for (size_t i = 0; i < NSTR; i++) {
        const char *v = *slots[i];
        uint32_t n = v ? (uint32_t)strlen(v) : UINT32_MAX;
        sb_buf_append(out, &n, 4);
        if (v)
            sb_buf_append(out, v, n);
    }
}

int sb_event_unpack(const void *p, size_t len, sb_event_t *ev)
{
    const unsigned char *b = p;
    memset(ev, 0, sizeof *ev);
    if (len < HEAD || b[2] > SB_EVENT_MAX_MEDIA)
        return SB_EPARSE;
    ev->kind = (sb_event_kind_t)b[0];
    ev->channel = (sb_channel_type_t)b[1];
    ev->nmedia = b[2];
    uint64_t v[3];
    memcpy(v, b + 3, sizeof v);
    ev->timestamp = (int64_t)v[0];
    ev->message_id = (int64_t)v[1];
    ev->send_at_ms = (int64_t)v[2];
    size_t off = HEAD;
    char **slots[NSTR];
    string_slots(ev, slots);
    for (size_t i = 0; i < NSTR; i++) {
        uint32_t n;
        if (len - off < 4)
            goto bad;
        memcpy(&n, b + off, 4);
        off += 4;
        if (n == UINT32_MAX)
            continue;
        if (len - off < n)
            goto bad;
        *slots[i] = sb_strndup((const char *)b + off, n);
        off += n;
    }
    if (off != len || (ev->kind != SB_EV_MESSAGE && ev->kind != SB_EV_STATUS && ev->kind != SB_EV_SEND))
        goto bad;
    return 0;
bad:
    sb_event_cleanup(ev);
    return SB_EPARSE;
}

int sb_status_rank(const char *status)
{
    static const struct {
        const char *name;
        int rank;
    } t[] = {{"unknown", -1}, {"queued", 0},    {"received", 0},    {"sending", 1}, {"retrying", 1}, {"sent", 2},
             {"delivered", 3}, {"undelivered", 3}, {"failed", 3}, {"read", 4}};
    for (size_t i = 0; status && i < sizeof t / sizeof t[0]; i++)
        if (strcmp(status, t[i].name) == 0)
            return t[i].rank;
    return 5;
}
