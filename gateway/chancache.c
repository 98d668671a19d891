/* The channel cache; see chancache.h.
 *
 * Beside the channels found, the ids found to be no channel are kept for NEG_TTL_MS (at most NEG_MAX of them per
 * shard; past it they are all forgotten), so that a flood of webhooks to an unknown channel id costs one lookup per
 * shard and interval, not one per request. The interval is short: a channel made under an id that was asked for just
 * before (ids are drawn in order, so only by someone guessing the next one) is found at most that much later. */
#include "gateway/chancache.h"

#include "adapters/crypto.h"
#include "adapters/store/queries.h"
#include "gateway/log.h"
#include "gateway/metrics.h"
#include "proto/err.h"
#include "proto/htable.h"
#include "proto/mem.h"
#include "shards/domain.h"

#include <jansson.h>
#include <stdio.h>
#include <string.h>

#define CACHE_TTL_MS 60000
#define CACHE_MAX 65536 /* channels kept per shard; past it the cache starts again */
#define NEG_TTL_MS 5000
#define NEG_MAX 4096    /* unknown ids kept per shard */

static const sb_config_t *cfg;

void sb_chancache_init(const sb_config_t *c)
{
    cfg = c;
}

typedef struct entry {
    sb_hnode_t node;
    sb_chan_t ch;
    uint64_t expires;
} entry_t;

typedef struct missing {
    sb_hnode_t node;
    int64_t id;
    uint64_t expires;
} missing_t;

typedef struct cache {
    sb_htable_t map;
    sb_htable_t missing; /* missing_t: ids that are no channel */
} cache_t;

static void voice_free(sb_voice_channel_t *vc)
{
    if (!vc)
        return;
    free(vc->address);
    free(vc->credentials_sealed);
    sb_free_secret(vc->secret);
    sb_voice_settings_cleanup(&vc->v);
    free(vc);
}

static void entry_free(entry_t *e)
{
    sb_free_secret(e->ch.auth_token);
    voice_free(e->ch.voice);
    free(e);
}

static bool entry_eq(const sb_hnode_t *n, const void *key)
{
    return sb_container_of(n, entry_t, node)->ch.id == *(const int64_t *)key;
}

static cache_t *cache_of(sb_shard_t *s)
{
    return sb_shard_state(s, &sb_chancache_module);
}

static void cache_clear(cache_t *k)
{
    size_t pos = 0;
    for (sb_hnode_t *n; (n = sb_htable_next(&k->map, &pos));) {
        sb_htable_remove_at(&k->map, &pos);
        entry_free(sb_container_of(n, entry_t, node));
    }
}

static bool missing_eq(const sb_hnode_t *n, const void *key)
{
    return sb_container_of(n, missing_t, node)->id == *(const int64_t *)key;
}

static void missing_clear(cache_t *k)
{
    size_t pos = 0;
    for (sb_hnode_t *n; (n = sb_htable_next(&k->missing, &pos));) {
        sb_htable_remove_at(&k->missing, &pos);
        free(sb_container_of(n, missing_t, node));
    }
}

/* True when id was found to be no channel less than NEG_TTL_MS ago. */
static bool missing_find(sb_shard_t *s, int64_t id)
{
    cache_t *k = cache_of(s);
    sb_hnode_t *n = sb_htable_find(&k->missing, sb_hash_u64((uint64_t)id), missing_eq, &id);
    if (!n)
        return false;
    missing_t *m = sb_container_of(n, missing_t, node);
    if (uv_now(sb_shard_loop(s)) < m->expires)
        return true;
    sb_htable_remove(&k->missing, n);
    free(m);
    return false;
}

static void missing_add(sb_shard_t *s, int64_t id)
{
    cache_t *k = cache_of(s);
    if (sb_htable_find(&k->missing, sb_hash_u64((uint64_t)id), missing_eq, &id))
        return;
    if (k->missing.n >= NEG_MAX)
        missing_clear(k);
    missing_t *m = sb_malloc(sizeof *m);
    m->id = id;
    m->expires = uv_now(sb_shard_loop(s)) + NEG_TTL_MS;
    m->node.hash = sb_hash_u64((uint64_t)id);
    sb_htable_insert(&k->missing, &m->node);
}

static entry_t *cache_find(sb_shard_t *s, int64_t id)
{
    cache_t *k = cache_of(s);
    sb_hnode_t *n = sb_htable_find(&k->map, sb_hash_u64((uint64_t)id), entry_eq, &id);
    if (!n)
        return NULL;
    entry_t *e = sb_container_of(n, entry_t, node);
    if (uv_now(sb_shard_loop(s)) < e->expires)
        return e;
    sb_htable_remove(&k->map, n); /* stale: look it up again */
    entry_free(e);
    return NULL;
}

static int cache_start(sb_shard_t *s, void **state)
{
    (void)s;
    cache_t *k = sb_calloc(1, sizeof *k);
    sb_htable_init(&k->map);
    sb_htable_init(&k->missing);
    *state = k;
    return 0;
}

static void cache_finish(sb_shard_t *s, void *state)
{
    cache_t *k = state;
    (void)s;
    cache_clear(k);
    sb_htable_cleanup(&k->map);
    missing_clear(k);
    sb_htable_cleanup(&k->missing);
    free(k);
}

const sb_shard_module_t sb_chancache_module = {
    .name = "channels",
    .start = cache_start,
    .finish = cache_finish,
};

/* ---- opening a row -------------------------------------------------------------------------------------------- */

static char *opt_str(json_t *o, const char *key)
{
    const char *v = json_string_value(json_object_get(o, key));
    return v && *v ? sb_strdup(v) : NULL;
}

static char *dup_or_null(const char *s)
{
    return s ? sb_strdup(s) : NULL;
}

void sb_voice_settings_copy(sb_voice_settings_t *out, const sb_voice_settings_t *in)
{
    *out = (sb_voice_settings_t){.mode = dup_or_null(in->mode),
                                 .forward_to = dup_or_null(in->forward_to),
                                 .twiml_url = dup_or_null(in->twiml_url),
                                 .fallback_twiml = dup_or_null(in->fallback_twiml),
                                 .at_capacity_twiml = dup_or_null(in->at_capacity_twiml),
                                 .media_url = dup_or_null(in->media_url),
                                 .media_fallback = dup_or_null(in->media_fallback),
                                 .channel_max = in->channel_max,
                                 .tenant_max = in->tenant_max,
                                 .calls_per_second = in->calls_per_second};
}

static sb_voice_channel_t *voice_open(int64_t id, const sb_query_channel_t *row)
{
    sb_voice_channel_t *vc = sb_calloc(1, sizeof *vc);
    vc->id = id;
    vc->tenant = row->tenant;
    vc->address = sb_strdup(row->address ? row->address : "");
    vc->credentials_sealed = sb_strdup(row->credentials_sealed ? row->credentials_sealed : "");
    json_t *set = json_loads(row->settings_json ? row->settings_json : "{}", 0, NULL);
    vc->v.mode = opt_str(set, "voice_mode");
    vc->v.forward_to = opt_str(set, "forward_to");
    vc->v.twiml_url = opt_str(set, "twiml_url");
    vc->v.fallback_twiml = opt_str(set, "fallback_twiml");
    vc->v.at_capacity_twiml = opt_str(set, "at_capacity_twiml");
    vc->v.media_url = opt_str(set, "media_url");
    vc->v.media_fallback = opt_str(set, "media_fallback");
    json_t *max = json_object_get(set, "max_concurrent_calls");
    vc->v.channel_max = json_is_integer(max) && json_integer_value(max) > 0 ? json_integer_value(max) : 0;
    json_t *cps = json_object_get(set, "calls_per_second");
    vc->v.calls_per_second = json_is_number(cps) ? json_number_value(cps) : 0;
    vc->v.tenant_max = row->tenant_max_calls > 0 ? row->tenant_max_calls : 0;
    json_decref(set);
    if (row->webhook_secret_sealed) {
        sb_buf_t plain;
        sb_buf_init(&plain);
        char ad[40];
        snprintf(ad, sizeof ad, "tenant:%lld:webhook", (long long)row->tenant);
        if (cfg->has_master_key &&
            sb_crypto_open(cfg->master_key, sb_str_cstr(row->webhook_secret_sealed), sb_str_cstr(ad), &plain) == 0)
            vc->secret = sb_strndup(plain.p, plain.len);
        else
            sb_log_error("channels: tenant %lld: webhook secret cannot be opened (master_key changed?)",
                         (long long)row->tenant);
        sb_crypto_buf_wipe(&plain);
    }
    return vc;
}

/* The row's entry, its secrets opened; NULL when they cannot be. */
static entry_t *entry_open(int64_t id, const sb_query_channel_t *row)
{
    entry_t *e = sb_calloc(1, sizeof *e);
    e->ch.id = id;
    e->ch.tenant = row->tenant;
    e->ch.type = row->type;
    bool twilio =
        row->type == SB_CH_TWILIO_SMS || row->type == SB_CH_TWILIO_WHATSAPP || row->type == SB_CH_TWILIO_VOICE;
    if (!twilio)
        return e;
    sb_buf_t plain;
    sb_buf_init(&plain);
    char ad[48];
    snprintf(ad, sizeof ad, "tenant:%lld", (long long)row->tenant);
    json_t *creds = NULL;
    if (!cfg->has_master_key ||
        sb_crypto_open(cfg->master_key, sb_str_cstr(row->credentials_sealed), sb_str_cstr(ad), &plain) < 0 ||
        !(creds = json_loadb(plain.p, plain.len, 0, NULL)) || !json_is_string(json_object_get(creds, "auth_token"))) {
        sb_log_error("channels: channel %lld: credentials cannot be opened (master_key changed?)", (long long)id);
        json_decref(creds);
        sb_crypto_buf_wipe(&plain);
        free(e);
        return NULL;
    }
    e->ch.auth_token = sb_strdup(json_string_value(json_object_get(creds, "auth_token")));
    json_decref(creds); /* jansson does not wipe; the plaintext buffer is wiped below */
    sb_crypto_buf_wipe(&plain);
    if (row->type == SB_CH_TWILIO_VOICE)
        e->ch.voice = voice_open(id, row);
    return e;
}

/* ---- lookups -------------------------------------------------------------------------------------------------- */

typedef struct lookup {
    sb_shard_t *s;
    int64_t id;
    void (*cb)(void *arg, int err, const sb_chan_t *ch);
    void *arg;
} lookup_t;

static void loaded(void *arg, int err, const sb_query_channel_t *row)
{
    lookup_t *op = arg;
    entry_t *e = NULL;
    if (err == SB_ENOENT)
        missing_add(op->s, op->id);
    if (!err && !(e = cache_find(op->s, op->id))) { /* another request may have loaded it meanwhile */
        if (!(e = entry_open(op->id, row))) {
            err = SB_EACCES;
        } else {
            cache_t *k = cache_of(op->s);
            if (k->map.n >= CACHE_MAX)
                cache_clear(k);
            e->expires = uv_now(sb_shard_loop(op->s)) + CACHE_TTL_MS;
            e->node.hash = sb_hash_u64((uint64_t)op->id);
            sb_htable_insert(&k->map, &e->node);
        }
    }
    op->cb(op->arg, err == SB_ENOENT || err == SB_EACCES ? err : err ? SB_EUNAVAIL : 0, err ? NULL : &e->ch);
    free(op);
}

void sb_chancache_get(sb_shard_t *s, int64_t id, void (*cb)(void *arg, int err, const sb_chan_t *ch), void *arg)
{
    entry_t *e = cache_find(s, id);
    if (e) {
        cb(arg, 0, &e->ch);
        return;
    }
    if (missing_find(s, id)) {
        cb(arg, SB_ENOENT, NULL);
        return;
    }
    sb_metric_add(&sb_metrics_shard(sb_shard_index(s))->channel_lookups, 1);
    lookup_t *op = sb_malloc(sizeof *op);
    *op = (lookup_t){s, id, cb, arg};
    if (sb_query_channel_route(sb_domain_store(s), id, loaded, op) < 0) {
        free(op);
        cb(arg, SB_EUNAVAIL, NULL);
    }
}
