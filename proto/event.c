/* The normalized event model; see event.h. */
#include "proto/event.h"

#include "proto/mem.h"

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
    for (size_t i = 0; i < ev->nmedia; i++) {
        free(ev->media[i].url);
        free(ev->media[i].id);
        free(ev->media[i].content_type);
    }
    free(ev->status);
    free(ev->error_code);
    free(ev->error_message);
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

json_t *sb_event_json(const sb_event_t *ev)
{
    json_t *o = json_object();
    json_object_set_new(o, "kind", json_string(ev->kind == SB_EV_STATUS ? "status" : "message"));
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
