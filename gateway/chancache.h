/* The channels the front doors look up by id (a webhook URL names its channel): a per-shard cache of what a request
 * needs of a channel, loaded from the store on a miss and kept for a minute, so a rotated token or changed settings
 * take effect within a minute without a lookup per request. An id that is no channel is remembered as such for five
 * seconds (bounded), so that a flood of webhooks to an unknown channel costs the database next to nothing.
 *
 * A Twilio channel carries its auth token (opened from the sealed credentials: it verifies X-Twilio-Signature); a
 * twilio_voice channel also its voice settings, its address and sealed credentials (the call actors' provider
 * requests) and its tenant's webhook secret, opened (a voice app's upgrade and a twiml_url fetch are signed with
 * it). */
#ifndef SB_CHANCACHE_H
#define SB_CHANCACHE_H

#include "actors/call.h"
#include "gateway/config.h"
#include "proto/event.h"
#include "shards/shard.h"

#include <stdint.h>

/* A twilio_voice channel as the voice front doors need it. */
typedef struct sb_voice_channel {
    int64_t id, tenant;
    char *address;            /* our number */
    char *credentials_sealed; /* for the provider (placing, hanging up, a stream's fallback) */
    char *secret;             /* the tenant's webhook secret, opened; NULL when none */
    sb_voice_settings_t v;
} sb_voice_channel_t;

typedef struct sb_chan {
    int64_t id, tenant;
    sb_channel_type_t type;
    char *auth_token;          /* Twilio channels; NULL for the others */
    sb_voice_channel_t *voice; /* twilio_voice channels; NULL for the others */
} sb_chan_t;

/* Remembers the configuration (borrowed) for opening credentials. */
void sb_chancache_init(const sb_config_t *cfg);
extern const sb_shard_module_t sb_chancache_module;

/* Finds channel id for shard s's front doors: cb(arg, 0, ch) with ch borrowed for the call, or cb(arg, err, NULL)
 * with SB_ENOENT (no such channel), SB_EUNAVAIL (the database is away) or SB_EACCES (its credentials cannot be
 * opened: master_key changed?). cb may run before this returns (a hit) or later (a load). */
void sb_chancache_get(sb_shard_t *s, int64_t id, void (*cb)(void *arg, int err, const sb_chan_t *ch), void *arg);

/* Copies a channel's voice settings into out (caller's; cleaned with sb_voice_settings_cleanup). */
void sb_voice_settings_copy(sb_voice_settings_t *out, const sb_voice_settings_t *in);

#endif
