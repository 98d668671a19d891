/* The call actor: one per call, on its tenant's shard, keyed by its call key (sb_call_key_hash: the CallSid of a
 * call that came in, "SB" and a random number for one we place, since Twilio names that only once it exists).
 *
 * It owns the call's slot of the three caps (fleet, tenant, channel; counters port), its row and its events:
 *   - an incoming call (SB_CALL_OP_INCOMING, the voice webhook) is admitted or refused in one Redis round trip. A
 *     refused call is stored as "rejected" with a call.rejected event naming the full cap and answered with the
 *     channel's at-capacity TwiML. An admitted one is stored with a call.started event, then answered with the TwiML
 *     of the channel's voice mode: a Media Stream to the gateway (stream), a <Dial> (forward), or the tenant's own
 *     TwiML fetched within 2 s (twiml_url, else the channel's fallback). A retried webhook gets the same answer.
 *   - a call we place (SB_CALL_OP_PLACE, POST /v1/calls) takes its slot and its dial time on the channel's pace
 *     first (429 at_capacity when a cap is full), is stored with call.started, answered 202, then dialled through
 *     the provider at its time;
 *   - status callbacks (SB_CALL_OP_STATUS) move it on in Twilio's SequenceNumber order (an older one changes
 *     nothing), each with a call.updated event; a final status ends it (call.ended with duration, who ended it and
 *     why) and releases the slot at once;
 *   - while live, the lease is renewed every third of call_lease_ttl; after max_call_duration the actor asks the
 *     provider to hang up and ends the call itself, so a call whose status never comes does not hold a slot;
 *   - SB_CALL_OP_HANGUP (console, API) asks the provider to end it; the final status follows;
 *   - the media relay (gateway/media) reports the stream (SB_CALL_STREAM): a voice app that could not be reached
 *     gets the channel's fallback: the call forwarded to settings.forward_to, or hung up.
 * One request is worked at a time; others wait in order. The actor can be passivated once the call has ended; a
 * status callback for a call no actor holds activates one, which finds the call in the store. Stopping the actor
 * (a node's shutdown) does not release a live call's slot: the call goes on at the provider, and the lease runs
 * out unless an actor renews it again. */
#ifndef SB_CALL_H
#define SB_CALL_H

#include "actors/actor.h"
#include "actors/ports.h"
#include "proto/str.h"

#include <stdbool.h>
#include <stdint.h>

enum {
    SB_CALL_REQUEST = 1, /* payload: sb_call_req_t * (the actor takes it) */
    SB_CALL_STREAM = 2,  /* payload: sb_call_stream_t */
    SB_CALL_WRITTEN = 3, /* the tenant's answer: sb_tenant_written_t */
    SB_CALL_INTERNAL = 16
};

typedef enum sb_call_op {
    SB_CALL_OP_INCOMING = 1,
    SB_CALL_OP_STATUS,
    SB_CALL_OP_PLACE,
    SB_CALL_OP_HANGUP
} sb_call_op_t;

/* A channel's voice settings (channels.settings; README "Voice"). Strings are heap copies or NULL. */
typedef struct sb_voice_settings {
    char *mode;       /* "stream" (default), "forward", "twiml_url" */
    char *forward_to; /* forward, and the fallback of a stream whose app cannot be reached */
    char *twiml_url, *fallback_twiml, *at_capacity_twiml;
    char *media_url;         /* stream: the tenant's voice app */
    char *media_fallback;    /* "hangup" (default) or "forward" */
    int64_t channel_max;     /* settings.max_concurrent_calls, 0: not limited */
    int64_t tenant_max;      /* the tenant's max_concurrent_calls, 0: not limited */
    double calls_per_second; /* settings.calls_per_second: the pace of calls we place (default 1) */
} sb_voice_settings_t;

/* A request for a call actor, from a front door. The front door allocates it (sb_call_req_new), the actor fills the
 * outcome and calls answer(req) exactly once, from any thread (answer takes it back to the front door's shard,
 * which frees it with sb_call_req_free). */
typedef struct sb_call_req {
    sb_call_op_t op;
    int64_t tenant, channel;
    char *call_key;
    /* incoming, status */
    char *call_sid, *from, *to;
    const char *status; /* status: Twilio's CallStatus (static: adapters/twilio's name for it) */
    bool final;         /* status: the call is over (completed, busy, no-answer, failed, canceled) */
    int64_t duration, sequence;
    char *form;       /* incoming: the webhook's body (a twiml_url fetch forwards it) */
    char *stream_url; /* incoming, place: the ws:// or wss:// URL of the channel's Media Streams endpoint */
    /* place */
    char *status_url; /* the absolute URL of its status callbacks */
    char *idempotency_key;
    /* place, hangup, and a stream's fallback: the channel as the provider needs it */
    char *channel_address, *credentials_sealed;
    char *secret;    /* the tenant's webhook secret (a twiml_url fetch is signed with it), or NULL */
    int64_t call_id; /* hangup: the call's id (a check) */
    sb_voice_settings_t v;
    void (*answer)(struct sb_call_req *req);
    void *arg; /* the front door's */
    /* the outcome */
    int http_status;         /* 200 (TwiML in body; or JSON), 202, 404, 409, 429, 503 */
    const char *code;        /* not 2xx: the error code (static) ... */
    char message[160];       /* ... and message */
    sb_buf_t body;           /* incoming: the TwiML */
    int64_t id;              /* place, hangup: the call's id */
    const char *call_status; /* place: its status (static) */
} sb_call_req_t;

sb_call_req_t *sb_call_req_new(sb_call_op_t op);
void sb_call_req_free(sb_call_req_t *req);
void sb_voice_settings_cleanup(sb_voice_settings_t *v);

/* What the media relay tells a call's actor. */
typedef enum sb_call_stream_news {
    SB_CALL_STREAM_STARTED = 1, /* Twilio's stream began; the app is being dialled */
    SB_CALL_STREAM_APP_OPEN,    /* the voice app answered */
    SB_CALL_STREAM_APP_FAILED,  /* the voice app could not be reached in time, or went away: the fallback */
    SB_CALL_STREAM_ENDED        /* the stream is over */
} sb_call_stream_news_t;

typedef struct sb_call_stream {
    sb_call_stream_news_t news;
    int64_t channel;
    uint64_t frames_in, frames_out, dropped; /* ENDED: media frames relayed each way, and dropped toward the app */
} sb_call_stream_t;

/* The actor key of a call key. */
uint64_t sb_call_key_hash(const char *call_key);
/* Sends req to its call's actor on the tenant's shard owner. Takes req: it is answered in every case. */
void sb_call_request(sb_rt_t *rt, unsigned owner, sb_call_req_t *req);
/* Tells the call's actor news of its stream (fire and forget). */
void sb_call_stream(sb_rt_t *rt, unsigned owner, const char *call_key, const sb_call_stream_t *news);

extern const sb_actor_kind_t sb_call_kind;

#endif
