/* Voice front doors: Twilio's voice webhooks and the REST API's calls, handed to call actors (actors/call).
 *
 *   POST /webhooks/twilio/{channel_id}/voice          an incoming call: the call actor admits it and the TwiML it
 *                                                     answers goes back to Twilio (200 text/xml)
 *   POST /webhooks/twilio/{channel_id}/voice/status   a call's status callback (?call=<key> names a call we placed)
 *   POST /v1/calls, GET /v1/calls, GET /v1/calls/{id} the tenant's calls (api.c authenticates, then calls here)
 *
 * webhooks.c finds the channel (gateway/chancache) and checks Twilio's signature first; here the request becomes a
 * call request. */
#ifndef SB_VOICE_H
#define SB_VOICE_H

#include "actors/call.h"
#include "adapters/net/http_server.h"
#include "adapters/twilio.h"
#include "gateway/chancache.h"
#include "gateway/config.h"
#include "shards/shard.h"

#include <stdint.h>

/* Appends the request's base URL (public_url, else the Host header) as ws:// or wss://. False when neither is
 * known. */
bool sb_voice_ws_base(sb_http_req_t *req, const sb_config_t *cfg, sb_buf_t *out);
/* The ws:// or wss:// URL of the channel's Media Streams endpoint, from the request's base URL (public_url, else
 * the Host header). False when neither is known. */
bool sb_voice_stream_url(sb_http_req_t *req, const sb_config_t *cfg, int64_t channel, sb_buf_t *out);

/* The voice webhook (verified, form parsed) and a status callback. Answer req. */
void sb_voice_incoming(sb_shard_t *s, sb_http_req_t *req, const sb_config_t *cfg, const sb_voice_channel_t *vc,
                       const sb_twilio_call_t *call);
void sb_voice_status(sb_shard_t *s, sb_http_req_t *req, const sb_voice_channel_t *vc, const sb_twilio_call_t *call);

/* /v1/calls[/{id}] for an authenticated tenant. False when the path is not a calls route. */
bool sb_voice_api(sb_shard_t *s, sb_http_req_t *req, const sb_config_t *cfg, int64_t tenant);

/* The console's hangup: asks call id's actor to hang it up; cb gets an HTTP-like status (202, 404, 409, 503) and a
 * message. On shard s (the console's). */
void sb_voice_hangup(sb_shard_t *s, int64_t id, void (*cb)(void *arg, int status, const char *message), void *arg);

#endif
