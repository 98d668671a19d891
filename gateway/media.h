/* The Media Streams relay: WS /webhooks/twilio/{channel_id}/media, Twilio's audio stream of a call, relayed both
 * ways to the tenant's voice app (the channel's settings.media_url), in Twilio's own JSON frames.
 *
 * webhooks.c checks the upgrade's X-Twilio-Signature first; here the connection is accepted (adapters/net/wsconn)
 * and its frames are scanned (proto/mstream). At "start" the relay dials the voice app (adapters/net/wsclient), its
 * upgrade carrying X-Switchboard-Signature (t=..,v1=HMAC-SHA256 of "<t>.<media_url>" with the tenant's webhook
 * secret), X-Switchboard-Call (the call's key) and X-Switchboard-Channel; connected and start go first, then every
 * frame as it came: Twilio's media, dtmf, mark and stop to the app, the app's media, mark and clear to Twilio. The
 * relay runs on the shard whose loop accepted Twilio's connection (both sockets on one loop: a frame is scanned once
 * and written once, with no hop between threads); the call's actor hears of the stream's start, of a voice app that
 * could not be reached (its fallback: forward or hang up) and of its end.
 *
 * Bounds: a frame is at most 64 KiB; toward the app, audio past 64 KiB not yet written is dropped oldest first
 * (sb_media_dropped_total), while marks, dtmf, start and stop always go; a voice app gets 2 s to answer its upgrade.
 * Refusals close with a clear code: 1003 a binary frame, 1007 a frame that is not a Media Streams event (the reason
 * says why), 1008 a frame out of order (sequenceNumber not increasing, media before start, a foreign streamSid). */
#ifndef SB_MEDIA_H
#define SB_MEDIA_H

#include "adapters/net/http_server.h"
#include "gateway/chancache.h"
#include "shards/shard.h"

/* Accepts the upgrade of a verified request for voice channel ch (borrowed for the call). */
void sb_media_accept(sb_shard_t *s, sb_http_req_t *req, const sb_chan_t *ch);

extern const sb_shard_module_t sb_media_module;

#endif
