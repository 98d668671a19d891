/* Fallback lists; see fallback.h. */
#include "proto/fallback.h"

#include "proto/err.h"

#include <jansson.h>

#include <string.h>

/* A channel id as a client or the store writes it: an integer >= 1, or a string of 1 to 19 digits with that value. */
static int64_t channel_id(const json_t *v)
{
    if (json_is_integer(v))
        return json_integer_value(v) >= 1 ? (int64_t)json_integer_value(v) : 0;
    if (!json_is_string(v))
        return 0;
    long long id = 0;
    if (sb_str_to_ll(sb_str(json_string_value(v), json_string_length(v)), 1, INT64_MAX, &id) < 0)
        return 0;
    return (int64_t)id;
}

static bool add_channel(sb_fallback_t *f, int64_t id, int64_t primary, const char **why)
{
    if (id == primary) {
        *why = "'fallback' must not name the message's own channel";
        return false;
    }
    for (size_t i = 0; i < f->n; i++)
        if (f->channels[i] == id) {
            *why = "'fallback' names a channel twice";
            return false;
        }
    f->channels[f->n++] = id;
    return true;
}

int sb_fallback_from_request(const json_t *list, const json_t *after, int64_t primary, sb_fallback_t *out,
                             const char **why)
{
    memset(out, 0, sizeof *out);
    out->after_s = SB_FALLBACK_AFTER_DEFAULT;
    *why = NULL;
    bool has_list = list && !json_is_null(list);
    if (has_list && !json_is_array(list)) {
        *why = "'fallback' must be an array of {\"channel_id\"} objects";
        return SB_EINVAL;
    }
    if (has_list && json_array_size(list) > SB_FALLBACK_MAX) {
        *why = "'fallback' names at most 5 channels";
        return SB_EINVAL;
    }
    for (size_t i = 0; has_list && i < json_array_size(list); i++) {
        const json_t *o = json_array_get(list, i);
        int64_t id = json_is_object(o) ? channel_id(json_object_get(o, "channel_id")) : 0;
        if (!id) {
            *why = "each 'fallback' entry must be an object with a 'channel_id'";
            return SB_EINVAL;
        }
        if (!add_channel(out, id, primary, why))
            return SB_EINVAL;
    }
    if (after && !json_is_null(after)) {
        if (!json_is_integer(after) || json_integer_value(after) < SB_FALLBACK_AFTER_MIN ||
            json_integer_value(after) > SB_FALLBACK_AFTER_MAX) {
            *why = "'fallback_after' must be a whole number of seconds from 1 to 86400";
            return SB_EINVAL;
        }
        if (!out->n) {
            *why = "'fallback_after' needs a 'fallback' list";
            return SB_EINVAL;
        }
        out->after_s = (int64_t)json_integer_value(after);
    }
    return 0;
}

int sb_fallback_parse(const char *text, size_t len, sb_fallback_t *out)
{
    memset(out, 0, sizeof *out);
    json_t *j = text ? json_loadb(text, len, 0, NULL) : NULL;
    json_t *list = json_object_get(j, "channels"), *after = json_object_get(j, "after_s");
    int rc = SB_EPARSE;
    if (!json_is_array(list) || json_array_size(list) > SB_FALLBACK_MAX || !json_is_integer(after) ||
        json_integer_value(after) < SB_FALLBACK_AFTER_MIN || json_integer_value(after) > SB_FALLBACK_AFTER_MAX)
        goto done;
    out->after_s = (int64_t)json_integer_value(after);
    for (size_t i = 0; i < json_array_size(list); i++) {
        int64_t id = channel_id(json_array_get(list, i));
        if (!id) {
            out->n = 0;
            goto done;
        }
        out->channels[out->n++] = id;
    }
    rc = 0;
done:
    json_decref(j);
    return rc;
}

size_t sb_fallback_format(const sb_fallback_t *f, size_t from, sb_buf_t *b)
{
    if (from >= f->n)
        return 0;
    sb_buf_puts(b, "{\"channels\":[");
    for (size_t i = from; i < f->n; i++) {
        if (i > from)
            sb_buf_puts(b, ",");
        sb_buf_append_i64(b, f->channels[i]);
    }
    sb_buf_printf(b, "],\"after_s\":%lld}", (long long)f->after_s);
    return f->n - from;
}

bool sb_fallback_keeps_template(const char *template_json)
{
    if (!template_json)
        return false;
    json_t *t = json_loads(template_json, 0, NULL);
    bool tag_only = json_is_object(t) && json_object_size(t) == 1 && json_object_get(t, "tag");
    json_decref(t);
    return !tag_only;
}
