/* The ports: the small function tables through which the domain actors (tenant, session) store, count, send,
 * publish and answer. The shard fills one sb_ports_t with the adapters it owns (the store over PostgreSQL, the
 * counters over Redis, the provider over curl) and hands it to its runtime as the environment (sb_rt_env); a test
 * fills one with fakes. Actors never see a PGresult, a socket or a thread: only these calls and proto values.
 *
 * Requests that come from a front door (an inbox subscription, a send to accept) carry their own answer function,
 * callable from any thread, which takes the answer back to the front door's shard.
 *
 * Every call that takes a callback follows libuv's rule: it returns 0 and calls the callback exactly once, later, on
 * the caller's shard thread; or it returns a negative code and never calls it. Strings and arrays passed in are
 * borrowed for the call only (the port copies what it keeps); results handed to a callback are borrowed for the
 * callback only. */
#ifndef SB_PORTS_H
#define SB_PORTS_H

#include "proto/event.h"
#include "proto/inbox.h"
#include "proto/str.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SB_TIME_LEN 40 /* "2026-12-05T13:36:27.969263+00:00" and its NUL: the API's timestamps */

/* ---- what the store keeps --------------------------------------------------------------------------------------- */

/* A conversation as its session actor holds it: its contact and where its messages have got to. */
typedef struct sb_conv_info {
    int64_t id, contact_id;
    int64_t last_seq;              /* the seq of its newest message, 0 when it has none */
    const char *address;           /* the contact's address */
    const char *profile_name;      /* NULL when unknown */
    char created_at[SB_TIME_LEN];
    char last_message_at[SB_TIME_LEN]; /* "" when it has no message */
    int64_t last_inbound_ms;       /* Unix ms of its newest inbound message, 0 when it has none (Meta's 24-hour
                                    * customer-service window runs from it) */
} sb_conv_info_t;

/* A channel as its session actor needs it. */
typedef struct sb_channel_info {
    int64_t tenant, channel;
    sb_channel_type_t type;
    const char *address;
    double rate_per_second;        /* settings.rate_per_second, 0 when not set (the type's default applies) */
    int64_t max_sending;           /* settings.max_concurrent_sends, 0 when not set (SB_SESSION_MAX_SENDING) */
    int64_t tenant_max_sending;    /* the tenant's max_concurrent_sends, 0 when not set */
    const char *credentials_sealed;/* opened by the provider port, never by an actor */
} sb_channel_info_t;

/* An outbound message not finished yet (queued, retrying or sending), as activation finds it. */
typedef struct sb_pending_send {
    int64_t id, conversation_id;
    const char *to, *body, *media_json, *template_json; /* template_json NULL when none */
    const char *status;            /* "queued", "scheduled", "retrying", "sending" */
    unsigned attempts;
    int64_t retry_in_ms;           /* retrying: ms until it is due (<= 0: due now) */
    int64_t sending_for_ms;        /* sending: ms since it was claimed */
    const char *priority;          /* "interactive", "normal", "bulk" */
    int64_t send_in_ms;            /* scheduled: ms until its send_at (<= 0: due now) */
    int64_t broadcast_id, fallback_of; /* 0 when none */
    const char *fallback_json;     /* NULL when none */
} sb_pending_send_t;

/* A message whose fallback is watched (sql/0018), as activation finds it: what to send again and when. */
typedef struct sb_fallback_watch {
    int64_t id;
    const char *to, *body, *media_json, *template_json; /* template_json NULL when none */
    const char *fallback_json;     /* {"channels": [id, ...], "after_s": N} */
    const char *priority;          /* "interactive", "normal", "bulk" */
    const char *status;            /* the message's: failed, undelivered and dead mean it failed for good */
    int64_t due_in_ms;             /* <= 0: due now */
} sb_fallback_watch_t;

/* A call as it is stored (a row of calls, sql/0013). Strings NULL when unknown; duration_s -1 when unknown. */
typedef struct sb_call_row {
    int64_t id, tenant, channel;
    const char *call_key;          /* what its call actor is found by: the CallSid, or "SB..." for a call we place */
    const char *call_sid;
    const char *direction;         /* "in", "out" */
    const char *from, *to, *status;
    const char *voice_mode;        /* "stream", "forward", "twiml_url" */
    const char *rejected_cap;      /* "fleet", "tenant", "channel": a call refused at capacity */
    const char *ended_by, *end_reason;
    const char *idempotency_key;
    int64_t duration_s;
    int64_t age_ms;                /* found: how long ago it was created */
} sb_call_row_t;

/* The tenant's own state. */
typedef struct sb_tenant_info {
    bool found;
    int64_t last_cursor;           /* the newest event's cursor, 0 when none */
    const char *webhook_url;       /* NULL when none */
    const char *webhook_secret;    /* opened; NULL when none */
    int64_t webhook_cursor;        /* the last event the tenant's application acknowledged */
} sb_tenant_info_t;

/* One event of the log. */
typedef struct sb_event_rec {
    int64_t cursor;
    const char *type;
    sb_str_t data;                 /* JSON text */
    int64_t age_ms;                /* how long ago it was stored */
} sb_event_rec_t;

/* ---- what a tenant writes: one atomic statement ------------------------------------------------------------------ */

/* A new message. Strings borrowed until the write's callback. */
typedef struct sb_new_message {
    int64_t id, conversation_id, channel_id, seq;
    bool out;
    const char *sender, *recipient, *body;
    const char *media_json;        /* a JSON array */
    const char *provider_id;       /* NULL for an outbound message until it is sent */
    const char *status;            /* "received" or "queued" */
    const char *idempotency_key, *template_json; /* NULL when none */
    const char *created_at;
    int64_t receipt_id;            /* inbound: the receipt this message applies (marked processed with it); 0 none */
    /* outbound only (sql/0015): NULL or 0 when none */
    const char *priority;          /* "interactive", "normal" (NULL), "bulk" */
    const char *send_at;           /* not before this time (status "scheduled") */
    int64_t broadcast_id, fallback_of;
    const char *fallback_json;     /* {"channels": [id, ...], "after_s": N} */
} sb_new_message_t;

/* A status change of a stored message, kept in its history. */
typedef struct sb_status_change {
    int64_t message_id, channel_id;
    const char *status;
    const char *provider_id;       /* set when the change learns it (sent), else NULL */
    const char *error_code, *error_message; /* NULL when none */
    int64_t retry_in_ms;           /* retrying: when it is due again */
    bool finished;                 /* its send is over: it leaves the outbox */
    bool counts_attempt;           /* a claim: attempts + 1 (status "sending"; no history, no event) */
    int64_t receipt_id;            /* an inbound status callback: its receipt, marked processed with it; 0 none */
    /* fallback (sql/0018): what the change does to the message's fallback watch */
    enum {
        SB_FALLBACK_KEEP = 0,      /* nothing (delivered and read clear it in any case) */
        SB_FALLBACK_WATCH,         /* due in fallback_in_ms */
        SB_FALLBACK_LINK,          /* it went out again as message fallback_to: recorded, no longer watched */
        SB_FALLBACK_DROP           /* no longer watched: no channel of its list took it */
    } fallback;
    int64_t fallback_in_ms, fallback_to;
    bool history_only;             /* status goes to the history (and its event) only: the message keeps its own
                                    * status and error ("fallback", "fallback_failed") */
} sb_status_change_t;

/* Everything one tenant write holds; the store makes it one statement. */
typedef struct sb_tenant_write {
    int64_t tenant;
    const sb_new_message_t *messages;
    size_t nmessages;
    const sb_call_row_t *calls;    /* written whole (inserted, or updated by id) */
    size_t ncalls;
    const sb_status_change_t *changes;
    size_t nchanges;
    const int64_t *receipts;       /* receipts applied that made nothing (a status of no message of ours, a
                                    * duplicate): marked processed */
    size_t nreceipts;
    int64_t first_cursor;          /* the events, cursors first_cursor .. first_cursor + nevents - 1 */
    size_t nevents;
    sb_str_t events_json;          /* a JSON array of {"type","data"} objects, in cursor order; empty when none */
} sb_tenant_write_t;

/* ---- broadcasts (issue 16): one content to many recipients of a channel, written set-based ------------------------ */

/* A broadcast being accepted, with its recipients as rendered (their messages' address, body and template).
 * Strings and arrays borrowed for the call. */
typedef struct sb_broadcast_head {
    int64_t tenant, channel;
    const char *body;              /* as given (before {{var}} substitution); NULL with a template */
    const char *template_json;     /* as given; NULL with a body */
    const char *send_at;           /* RFC 3339; NULL: at once */
    const char *idempotency_key;   /* NULL: none */
    const char *const *to, *const *bodies, *const *templates; /* recipients arrays: bodies "" with a template,
                                                               * templates NULL (the array) with a body */
    size_t recipients;
} sb_broadcast_head_t;

/* The next batch of a staged broadcast's recipients into messages, each one outbound message in the bulk lane: its
 * contact and conversation made when missing, its seq the conversation's newest + 1 (taken by the store: the
 * channel's session numbers nothing meanwhile), its id from a block of the messages identity, its outbox entry;
 * status queued, or scheduled when the broadcast's send_at is ahead. */
typedef struct sb_broadcast_rows {
    int64_t tenant, channel, broadcast_id;
    const char *sender;            /* the channel's address */
    const char *created_at;        /* the messages' created_at */
    size_t max;                    /* recipients at most */
} sb_broadcast_rows_t;

/* ---- the ports -------------------------------------------------------------------------------------------------- */

typedef void (*sb_done_cb)(void *arg, int err);

typedef struct sb_store_port {
    void *ctx;
    int (*load_tenant)(void *ctx, int64_t tenant, void (*cb)(void *arg, int err, const sb_tenant_info_t *t),
                       void *arg);
    /* The channel (found false: no such channel) and its unfinished outbound messages, oldest first (but those of a
     * broadcast still being accepted: they are loaded once it is whole). */
    int (*load_channel)(void *ctx, int64_t channel,
                        void (*cb)(void *arg, int err, const sb_channel_info_t *c, const sb_pending_send_t *pending,
                                   size_t npending),
                        void *arg);
    /* The channel's pace and caps as they are stored now: rate_per_second, max_sending and tenant_max_sending of c
     * (its other members unset); found false when there is no such channel. May be NULL (settings never re-read). */
    int (*load_limits)(void *ctx, int64_t channel,
                       void (*cb)(void *arg, int err, bool found, const sb_channel_info_t *c), void *arg);
    /* The conversations with these contact addresses on the channel, made when missing (contact and conversation),
     * with the profile names given (NULL: none) stored on new contacts and on those whose name changed. Results in
     * the order of the addresses. */
    int (*ensure_conversations)(void *ctx, int64_t tenant, int64_t channel, const char *const *addresses,
                                const char *const *profile_names, size_t n,
                                void (*cb)(void *arg, int err, const sb_conv_info_t *convs, size_t n), void *arg);
    /* The tenant's write: all of it committed, or none (err). */
    int (*write)(void *ctx, const sb_tenant_write_t *w, sb_done_cb cb, void *arg);
    /* The message ids of a channel's provider ids (a status callback's message), with their status; a provider id
     * of no message of the channel is left out. */
    int (*find_by_provider)(void *ctx, int64_t tenant, int64_t channel, const char *const *provider_ids, size_t n,
                            void (*cb)(void *arg, int err, const char *const *provider_ids, const int64_t *ids,
                                       const char *const *statuses, size_t n),
                            void *arg);
    /* The channel's messages whose fallback is watched (sql/0018), in id order. NULL in a port that has none. */
    int (*load_fallbacks)(void *ctx, int64_t tenant, int64_t channel,
                          void (*cb)(void *arg, int err, const sb_fallback_watch_t *w, size_t n), void *arg);
    /* The message a tenant's idempotency key names, or 0. */
    int (*find_idempotent)(void *ctx, int64_t tenant, const char *key,
                           void (*cb)(void *arg, int err, int64_t id, int64_t channel), void *arg);
    /* Events of the tenant after cursor `after`, at most limit, in order. */
    int (*events_after)(void *ctx, int64_t tenant, int64_t after, size_t limit,
                        void (*cb)(void *arg, int err, const sb_event_rec_t *events, size_t n), void *arg);
    /* The tenant's application acknowledged events up to cursor. */
    int (*hook_acked)(void *ctx, int64_t tenant, int64_t cursor, sb_done_cb cb, void *arg);
    /* An event the tenant's application never took goes to the dead letters (and counts as acknowledged). */
    int (*hook_dead)(void *ctx, int64_t tenant, const sb_event_rec_t *ev, const char *error, sb_done_cb cb,
                     void *arg);
    /* A fresh message id (from a block the store reserves ahead), or 0 when none is at hand right now: ask again a
     * few ms later, the next block is on its way. */
    int64_t (*message_id)(void *ctx);
    /* The call of a channel with this key, or (channel 0, key NULL) the tenant's call with this idempotency key;
     * found false when there is none. */
    int (*find_call)(void *ctx, int64_t tenant, int64_t channel, const char *call_key, const char *idempotency_key,
                     void (*cb)(void *arg, int err, bool found, const sb_call_row_t *c), void *arg);
    /* A receipt that can never be applied here (its channel is gone, it names another tenant, its event cannot be
     * read): marked processed, so the sweeper stops handing it back (fire and forget; logged by the caller). */
    void (*receipt_done)(void *ctx, int64_t tenant, int64_t receipt_id);
    /* Broadcasts (adapters/store/broadcasts.h). begin: the broadcast's row (status accepting) with its recipients
     * staged, committed: the broadcast is accepted; or the one the tenant's idempotency key already names (created
     * false; its channel may be another). */
    int (*broadcast_begin)(void *ctx, const sb_broadcast_head_t *b,
                           void (*cb)(void *arg, int err, int64_t id, bool created), void *arg);
    /* The next batch of its staged recipients into messages (see sb_broadcast_rows_t), one statement: how many it
     * wrote, and whether the broadcast is whole now (active; also when it is not accepting any more: canceled). */
    int (*broadcast_rows)(void *ctx, const sb_broadcast_rows_t *r,
                          void (*cb)(void *arg, int err, size_t written, bool whole), void *arg);
    /* The channel's broadcasts still accepting (staged, not expanded whole): a session resumes them at activation. */
    int (*broadcast_accepting)(void *ctx, int64_t tenant, int64_t channel,
                               void (*cb)(void *arg, int err, const int64_t *ids, size_t n), void *arg);
    /* Cancels what has not gone: its messages still queued, scheduled or retrying (but those of keep[0..nkeep), the
     * session's sends already under way) become canceled and leave the outbox. abandon: a broadcast that could not
     * be written whole (status failed, its idempotency key freed for a retry); broadcast_id 0 with abandon: every
     * broadcast of the channel left accepting (by a stop while it was written). found false: no such broadcast of
     * the channel. */
    int (*broadcast_cancel)(void *ctx, int64_t tenant, int64_t channel, int64_t broadcast_id, bool abandon,
                            const int64_t *keep, size_t nkeep,
                            void (*cb)(void *arg, int err, bool found, int64_t canceled), void *arg);
    /* The broadcast as GET /v1/broadcasts/{id} shows it (JSON text, borrowed for the call; counts by status), and
     * whether any of its messages is still to go (queued, scheduled, sending or retrying). */
    int (*broadcast_counts)(void *ctx, int64_t tenant, int64_t broadcast_id,
                            void (*cb)(void *arg, int err, sb_str_t json, bool open), void *arg);
} sb_store_port_t;

/* The counters (Redis): a token of the channel's rate and a slot of its and its tenant's in-flight sends. */
typedef struct sb_send_limits {
    uint64_t interval_us;          /* between two sends of the channel */
    uint32_t burst, channel_max, tenant_max, lease_ms;
} sb_send_limits_t;

typedef struct sb_grant {
    bool granted;
    uint64_t wait_us;              /* not granted: ask again after this */
    char lease[64];                /* granted: what release needs */
    bool busy;                     /* not granted because a cap (not the pace) was full */
    int64_t tokens;                /* granted: sends the pace still admits right now (-1: not paced) */
} sb_grant_t;

/* A call's slot of the three caps (fleet, tenant, channel): see adapters/counters.h. */
typedef struct sb_call_limits {
    int64_t tenant_max, channel_max; /* 0: not limited (the fleet's cap is the configuration's) */
    int64_t interval_us;             /* a call we place: between two dials of the channel; 0: an incoming call */
} sb_call_limits_t;

typedef struct sb_call_grant {
    bool admitted;
    const char *full;              /* not admitted: the cap that was full, "fleet", "tenant" or "channel" */
    uint64_t dial_in_us;           /* admitted: how long until the dial is due */
} sb_call_grant_t;

typedef struct sb_counters_port {
    void *ctx;
    int (*acquire)(void *ctx, int64_t tenant, int64_t channel, const sb_send_limits_t *lim,
                   void (*cb)(void *arg, int err, const sb_grant_t *g), void *arg);
    void (*release)(void *ctx, int64_t tenant, int64_t channel, const char *lease);
    /* A call's slot (its lease lives call_lease_ttl unless renewed). */
    int (*call_admit)(void *ctx, int64_t tenant, int64_t channel, const char *call_key, const sb_call_limits_t *lim,
                      void (*cb)(void *arg, int err, const sb_call_grant_t *g), void *arg);
    /* Renews it: cb err 0, SB_ENOENT (the lease had expired: the slot may be someone else's now), or an error. */
    int (*call_renew)(void *ctx, int64_t tenant, int64_t channel, const char *call_key, sb_done_cb cb, void *arg);
    void (*call_release)(void *ctx, int64_t tenant, int64_t channel, const char *call_key);
} sb_counters_port_t;

/* The provider: one message sent, and what came of it. */
typedef struct sb_send_request {
    const sb_channel_info_t *channel;
    int64_t message_id;
    const char *to, *body, *media_json, *template_json; /* template_json NULL when none */
} sb_send_request_t;

typedef enum sb_send_result {
    SB_SEND_SENT = 1, /* provider_id set */
    SB_SEND_RETRY,    /* not taken; try again after retry_after_s (-1: our backoff) */
    SB_SEND_FAILED,   /* refused for good */
    SB_SEND_UNKNOWN   /* it may have it: never sent again */
} sb_send_result_t;

typedef struct sb_send_outcome {
    sb_send_result_t result;
    int retry_after_s;
    const char *provider_id, *error_code, *error_message; /* "" when none */
} sb_send_outcome_t;

/* A call at the provider (Twilio's Calls API): placed (to, from, twiml set) or updated (call_sid set, and twiml or
 * hangup). */
typedef struct sb_call_request {
    const sb_channel_info_t *channel;
    const char *call_sid;          /* an update: the call */
    const char *to, *from;         /* placing */
    const char *twiml;             /* the TwiML it runs (placing; an update that redirects it) */
    const char *status_callback;   /* placing: the absolute URL of its status callbacks */
    bool hangup;                   /* an update: end the call */
} sb_call_request_t;

typedef struct sb_call_outcome {
    bool ok;
    const char *call_sid;          /* placed: the provider's id */
    const char *error_code, *error_message; /* "" when none */
} sb_call_outcome_t;

typedef struct sb_provider_port {
    void *ctx;
    int (*call)(void *ctx, const sb_call_request_t *req, void (*cb)(void *arg, const sb_call_outcome_t *o), void *arg);
    /* Checks a message against what its channel's type can send (lengths, media, templates; a type that cannot send
     * at all) before it is accepted (req->channel NULL, req->message_id 0). 0, with the recipient in the form to
     * store in to (bare E.164); or a negative code, with an error code for the client (static) in *code and a
     * one-line message in message. */
    int (*check)(void *ctx, sb_channel_type_t type, const sb_send_request_t *req, char *to, size_t to_cap,
                 const char **code, char *message, size_t message_cap);
    int (*send)(void *ctx, const sb_send_request_t *req, void (*cb)(void *arg, const sb_send_outcome_t *o),
                void *arg);
    /* 0 when the channel type's provider endpoint takes requests, else the ms until it may again (its circuit is
     * open): a send then waits without being claimed or counted as an attempt. */
    uint64_t (*held_ms)(void *ctx, sb_channel_type_t type);
    /* The 24-hour customer-service window: may req (as for check) go out on a channel of this type when its
     * conversation's last inbound message is since_inbound_ms old (-1: none)? 0; or a negative code, with the error
     * code ("outside_window", static) and a one-line message for the client. NULL: no window rule (test fakes). */
    int (*window)(void *ctx, sb_channel_type_t type, const sb_send_request_t *req, int64_t since_inbound_ms,
                  const char **code, char *message, size_t message_cap);
} sb_provider_port_t;

/* The tenant's own application (outgoing webhooks). */
typedef struct sb_hook_post {
    const char *url, *secret;
    int64_t tenant, cursor;
    const char *type;
    sb_str_t data;
} sb_hook_post_t;

typedef struct sb_hooks_port {
    void *ctx;
    /* Fetches a call's TwiML from the tenant's application: POSTs the form (Twilio's call fields) to url, signed with
     * secret, within timeout_ms. cb: the HTTP status (0 when no answer came) and the body, borrowed. */
    int (*fetch)(void *ctx, const char *url, const char *secret, sb_str_t form, unsigned timeout_ms,
                 void (*cb)(void *arg, int status, sb_str_t body), void *arg);
    /* POSTs one event, signed. cb: status (0 when no answer came: err says why), retry_after_s (-1 none). */
    int (*post)(void *ctx, const sb_hook_post_t *p, void (*cb)(void *arg, int status, int retry_after_s, int err),
                void *arg);
} sb_hooks_port_t;

/* Committed events on their way to live inbox clients (proto/inbox: immutable, shared). */
typedef struct sb_publish_port {
    void *ctx;
    /* Delivers batch to the live inbox clients of its tenant on shard `shard`; takes a reference of its own. */
    void (*publish)(void *ctx, unsigned shard, sb_inbox_batch_t *batch);
    /* Optional (several nodes): every committed batch of the tenant also goes to the live inbox clients of every
     * node, whoever subscribed here or not: its events' types and data (borrowed for the call), cursors prev + 1 ...
     * (not made into a batch here: the nodes with clients encode their frames). NULL: a node alone. */
    void (*everywhere)(void *ctx, int64_t tenant, int64_t prev, size_t n, const char *const *types,
                       const sb_str_t *data);
} sb_publish_port_t;

typedef struct sb_ports {
    sb_store_port_t store;
    sb_counters_port_t counters;
    sb_provider_port_t provider;
    sb_hooks_port_t hooks;
    sb_publish_port_t publish;
    unsigned shard;                /* the shard these ports belong to */
    /* The shard a tenant's actors live on (placement). */
    unsigned (*owner)(void *ctx, int64_t tenant);
    /* Wall-clock time (microseconds since 1970), for timestamps; random numbers, for backoff jitter. */
    int64_t (*now_us)(void *ctx);
    uint64_t (*random)(void *ctx);
    void *ctx;
    const struct sb_domain_config *config;
} sb_ports_t;

/* What the domain actors read of the configuration. */
typedef struct sb_domain_config {
    int webhook_max_age_s;
    const char *public_url;        /* NULL when not configured */
    int64_t max_concurrent_calls;  /* the fleet's cap */
    int64_t call_lease_ttl_ms, max_call_duration_ms;
} sb_domain_config_t;

#endif
