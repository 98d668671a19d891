/* The normalized event model: what every provider adapter turns its webhook bytes into.
 *
 * Twilio posts forms, Meta posts JSON with three different shapes (WhatsApp Cloud, Messenger, Instagram); past the
 * adapter, the gateway sees only sb_event_t. An event is either an inbound message or a status change of a message
 * we sent; or, third, a send that a node of a cluster accepted for its channel's session (gateway/sends: committed
 * as a receipt, so it travels, waits and is swept as a webhook's event does). Every string is owned by the event
 * (heap, NUL-terminated, valid UTF-8) and freed by sb_event_cleanup; absent optional fields are NULL. */
#ifndef SB_EVENT_H
#define SB_EVENT_H

#include <stddef.h>
#include <stdint.h>

typedef enum sb_channel_type {
    SB_CH_NONE = 0,
    SB_CH_TWILIO_SMS,
    SB_CH_TWILIO_WHATSAPP,
    SB_CH_TWILIO_VOICE,
    SB_CH_META_WHATSAPP,
    SB_CH_META_MESSENGER,
    SB_CH_META_INSTAGRAM,
    SB_CH_LINKED
} sb_channel_type_t;

/* "twilio_sms", ... as in API.md; NULL for SB_CH_NONE. */
const char *sb_channel_type_name(sb_channel_type_t t);
/* Parses a name of API.md; SB_CH_NONE if unknown. */
sb_channel_type_t sb_channel_type_parse(const char *name);

typedef enum sb_event_kind { SB_EV_MESSAGE = 1, SB_EV_STATUS = 2, SB_EV_SEND = 3 } sb_event_kind_t;

typedef struct sb_media {
    char *url;          /* Twilio MediaUrlN; NULL for Meta (media arrive as ids) */
    char *id;           /* Meta media id; NULL for Twilio */
    char *content_type; /* MIME type, if given */
} sb_media_t;

#define SB_EVENT_MAX_MEDIA 10

typedef struct sb_event {
    sb_event_kind_t kind;
    sb_channel_type_t channel;  /* as far as the payload tells (Twilio "whatsapp:" prefix, Meta object) */
    char *account;       /* the receiving account: Twilio To (our number) / phone_number_id / page id / IG id;
                            for statuses, the sending account (Twilio From / phone_number_id / page id) */
    char *provider_id;   /* MessageSid / wamid / mid: the deduplication key; for statuses, the message's id */
    int64_t timestamp;   /* provider time, unix seconds; 0 when not given */

    /* SB_EV_MESSAGE */
    char *from;          /* the customer's address, without the "whatsapp:" prefix */
    char *to;            /* our address, without prefix */
    char *body;          /* text; "" when there is none (media only) */
    char *profile_name;  /* the customer's profile name, when the provider gives one */
    sb_media_t media[SB_EVENT_MAX_MEDIA];
    size_t nmedia;

    /* SB_EV_STATUS */
    char *status;        /* normalized: "queued", "sent", "delivered", "read", "failed", "undelivered" */
    char *error_code;    /* provider error code, when failed */
    char *error_message;

    /* SB_EV_SEND (with to, the recipient as its channel stores it, and body; provider_id "send:<message_id>") */
    int64_t message_id;  /* the id the send was accepted as */
    int64_t send_at_ms;  /* not before (Unix ms); 0: at once */
    char *media_json, *template_json, *idempotency_key, *fallback_json; /* as sb_session_send_t holds them; media
                                                                         * "[]" when none, the others NULL */
    char *priority;      /* "interactive", "normal" or "bulk" */

    /* The provider's own bytes for this event, when the adapter keeps them apart from the request's body: a Meta
     * body is a batch, and each event keeps the JSON of the item it came from (the message, status or messaging
     * object), so that a receipt stores its own bytes, never another event's or another tenant's. NULL when the
     * body is the event's (Twilio), or when an earlier event of the same item holds it (one Messenger delivery
     * names many messages). */
    char *raw;
} sb_event_t;

/* Frees every string of ev and zeroes it. */
void sb_event_cleanup(sb_event_t *ev);

/* The event as a JSON object (a new reference, the caller's): kind ("message", "status", "send"), channel, account,
 * provider_id, timestamp, and the members of its kind; absent fields are left out. */
typedef struct json_t json_t;
json_t *sb_event_json(const sb_event_t *ev);

/* The event read back from its JSON (as sb_event_json writes it: the receipts store that), into *ev (zeroed first;
 * its strings owned by it). Returns 0, or SB_EPARSE when j is no such object (kind and provider_id are needed, and
 * what its kind cannot do without: a message's from, a status's status, a send's message_id, to and media_json). */
int sb_event_from_json(const json_t *j, sb_event_t *ev);

/* The media of a message event as the JSON array messages and their events carry: [{"url","id","content_type"}]
 * with absent members left out; appended to out. */
struct sb_buf;
void sb_event_media_json(const sb_event_t *ev, struct sb_buf *out);

/* The rank of a message status in the order statuses move in: unknown -1 (our own doubt: yields to any news),
 * queued and received 0, sending and retrying 1, sent 2, delivered, undelivered and failed 3, read 4, anything else
 * (dead) 5. A status counts only if it ranks above the one stored. */
int sb_status_rank(const char *status);

/* Packs ev into out (appended): a compact binary form for handing an event to an actor in a message. */
void sb_event_pack(const sb_event_t *ev, struct sb_buf *out);
/* Reads a packed event (p, len: borrowed) into *ev (zeroed first; its strings owned by it). Returns 0, or SB_EPARSE
 * when the bytes are not one packed event. */
int sb_event_unpack(const void *p, size_t len, sb_event_t *ev);

/* A growable list of events (one Meta POST may carry many). */
typedef struct sb_event_list {
    sb_event_t *v;
    size_t n, cap;
} sb_event_list_t;

/* Appends a zeroed event and returns it (owned by the list). */
sb_event_t *sb_event_list_push(sb_event_list_t *l);
void sb_event_list_cleanup(sb_event_list_t *l);

#endif
