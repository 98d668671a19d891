/* Twilio webhooks, parsed: a decoded form (proto/form.h) in, normalized values out.
 *
 * Twilio posts four kinds of webhook to a channel (API.md "Webhooks"): an inbound message (SMS, MMS or WhatsApp) to
 * /webhooks/twilio/{channel_id}, a status callback for a message we sent to .../status, an incoming voice call to
 * .../voice and a call status callback to .../voice/status. The first two become proto/event.h events; calls are
 * not messages and get a small struct of their own, sb_twilio_call_t, for the voice session and call actors.
 *
 * These functions only read the form: the signature must have been verified over the same form before, and nothing
 * here does I/O. Field names are Twilio's (MessageSid, NumMedia, MediaUrl0, ...); fields we do not use are ignored,
 * because Twilio adds parameters without notice. Where a field appears twice the first one counts (sb_form_find).
 * Every string handed out is a heap copy (NUL-terminated, valid UTF-8 since the form is, and never holding a NUL
 * byte: a field we copy that contains one is refused as malformed).
 *
 * Addresses. A WhatsApp address is "whatsapp:+14155238886"; the prefix selects the channel SB_CH_TWILIO_WHATSAPP and
 * is stripped from every address we hand out. An address without prefix is SMS/MMS (SB_CH_TWILIO_SMS): E.164, a short
 * code or an alphanumeric sender id. Any other "scheme:" prefix (Twilio also serves "messenger:", "rcs:", ...) is a
 * channel Switchboard does not speak and is refused. Voice addresses ("client:alice", "sip:...") are kept as given.
 *
 * Errors. Every parser returns 0, or a negative SB_E* code with a one-line message in err (NUL-terminated,
 * truncated to errlen; err may be NULL when errlen is 0) that names the offending field, e.g. "missing MessageSid",
 * "NumMedia: more than 10 media". Messages never quote bodies or addresses; they quote a peer's status
 * value only after reducing it to at most 32 printable ASCII characters. */
#ifndef SB_ADAPTERS_TWILIO_H
#define SB_ADAPTERS_TWILIO_H

#include "proto/event.h"
#include "proto/form.h"
#include "proto/str.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Parses an inbound message webhook into ev, which must be zeroed (= {0}, or fresh from sb_event_list_push).
 * Reads: MessageSid (falling back to SmsMessageSid, then SmsSid) -> provider_id; From -> from; To -> to and account
 * (our number); the "whatsapp:" prefix of From/To -> channel; Body -> body ("" when absent or empty); ProfileName ->
 * profile_name (NULL when absent or empty); NumMedia (absent = 0; present, it must be a plain decimal number) and,
 * for each N < NumMedia, MediaUrlN -> url and MediaContentTypeN -> content_type (NULL when absent or empty).
 * kind = SB_EV_MESSAGE, timestamp = 0 (Twilio gives none). AccountSid, WaId and the rest are not read (the event
 * has no place for them).
 * Required: a message sid, a non-empty From and To (non-empty after the prefix too), MediaUrlN (non-empty) for every
 * N < NumMedia. From and To must agree on the channel (both "whatsapp:" or neither).
 * Returns 0 with ev filled (the caller owns it: sb_event_cleanup), or, with ev still zeroed:
 *   SB_EPARSE  a required field missing or empty, a field holding a NUL byte, an unsupported address prefix, From
 *              and To on different channels, NumMedia not a plain decimal number or above SB_EVENT_MAX_MEDIA. */
int sb_twilio_parse_message(const sb_form_t *f, sb_event_t *ev, char *err, size_t errlen);

/* Parses a message status callback into ev, which must be zeroed. Reads: MessageSid (falling back to SmsSid) ->
 * provider_id; MessageStatus (falling back to SmsStatus) -> status, normalized by sb_twilio_status_normalize;
 * From -> account (our number, prefix stripped) and, with To, the channel; ErrorCode -> error_code and ErrorMessage
 * -> error_message (NULL when absent or empty; kept whatever the status, as Twilio gives them). kind = SB_EV_STATUS;
 * from, to, body and media stay NULL/empty. Required: a message sid, a status, a non-empty From. To is optional, but
 * when present it must agree with From on the channel.
 * Returns 0 with ev filled (caller owns it), or, with ev still zeroed:
 *   SB_EPARSE  a required field missing or empty, a NUL byte, a bad prefix or channel mismatch, or an unknown status;
 *   SB_ENOENT  a known status that is not news about a message we sent ("receiving", "received": Twilio's states of
 *              an inbound message). There is nothing to record: answer 200 and drop the callback. */
int sb_twilio_parse_status(const sb_form_t *f, sb_event_t *ev, char *err, size_t errlen);

/* Maps a Twilio message status (as spelled in MessageStatus/SmsStatus, or the "status" of a Messages API answer) to
 * the event model's vocabulary and stores a static string in *out:
 *   accepted, scheduled, queued   -> "queued"       (still ours to cancel; not yet handed to a carrier)
 *   sending, sent                 -> "sent"         (left Twilio's queue for the carrier)
 *   delivered, partially_delivered-> "delivered"    (partially: at least part of it reached the handset)
 *   read                          -> "read"
 *   undelivered                   -> "undelivered"  (the carrier or handset refused it)
 *   failed, canceled              -> "failed"       (never sent; canceled is a scheduled message called off)
 *   receiving, received           -> SB_ENOENT      (states of inbound messages, not of ours)
 *   anything else                 -> SB_EPARSE
 * Exact, case-sensitive match, as Twilio spells them. The order queued < sent < delivered < read is a progression;
 * callbacks can arrive out of order, so a consumer keeps the furthest one and treats failed/undelivered as final.
 * Returns 0, SB_ENOENT or SB_EPARSE; *out is set only on 0. */
int sb_twilio_status_normalize(sb_str_t twilio_status, const char **out);

/* CallStatus values, as Twilio spells them in sb_twilio_call_status_name. */
typedef enum sb_twilio_call_status {
    SB_TWILIO_CALL_QUEUED = 1,  /* "queued" */
    SB_TWILIO_CALL_INITIATED,   /* "initiated" (status callback of an outbound call being dialled) */
    SB_TWILIO_CALL_RINGING,     /* "ringing" */
    SB_TWILIO_CALL_IN_PROGRESS, /* "in-progress": answered */
    SB_TWILIO_CALL_COMPLETED,   /* "completed"   (final) */
    SB_TWILIO_CALL_BUSY,        /* "busy"        (final) */
    SB_TWILIO_CALL_NO_ANSWER,   /* "no-answer"   (final) */
    SB_TWILIO_CALL_FAILED,      /* "failed"      (final) */
    SB_TWILIO_CALL_CANCELED     /* "canceled"    (final) */
} sb_twilio_call_status_t;

typedef enum sb_twilio_call_dir {
    SB_TWILIO_DIR_INBOUND = 1,   /* "inbound": someone called our number */
    SB_TWILIO_DIR_OUTBOUND_API,  /* "outbound-api": we created the call over the REST API */
    SB_TWILIO_DIR_OUTBOUND_DIAL, /* "outbound-dial": a child leg of <Dial> */
    SB_TWILIO_DIR_OTHER          /* absent, or a value Twilio may add (e.g. trunking); see direction_name */
} sb_twilio_call_dir_t;

/* One voice webhook (incoming call or call status callback). Every string is owned (heap, NUL-terminated, valid
 * UTF-8, no NUL inside) and freed by sb_twilio_call_cleanup; absent optional fields are NULL / -1 / 0 as noted. */
typedef struct sb_twilio_call {
    char *call_sid;        /* CallSid: the call's id and deduplication key (with sequence for status callbacks) */
    char *account_sid;     /* AccountSid, or NULL */
    char *parent_call_sid; /* ParentCallSid: set on a child leg (<Dial>), else NULL */
    char *from;            /* From, as given ("+1555...", "client:alice", "sip:..."); NULL if absent */
    char *to;              /* To, as given; NULL if absent */
    char *account;         /* our side: To for inbound calls, From for outbound-api/-dial ones; NULL when that
                              field is absent or the direction is none of those three */
    char *caller_name;     /* CallerName (caller id lookup), or NULL */
    char *forwarded_from;  /* ForwardedFrom, or NULL */
    char *direction_name;  /* Direction as given, or NULL when absent */
    sb_twilio_call_status_t status;
    sb_twilio_call_dir_t direction;
    int64_t duration;      /* CallDuration in seconds (final status callbacks), -1 when absent */
    int64_t sequence;      /* SequenceNumber (status callbacks count up from 0 per call), -1 when absent */
    int64_t timestamp;     /* Timestamp (RFC 2822, "Sun, 25 Mar 2018 09:53:19 +0000") as unix seconds; 0 when
                              absent or not in that format (it is informational: sequence orders the callbacks) */
} sb_twilio_call_t;

/* Parses an incoming-call webhook into call, which must be zeroed. Required: CallSid, From, To, CallStatus (a known
 * value), Direction (any non-empty value; unknown ones are SB_TWILIO_DIR_OTHER). Optional: AccountSid,
 * ParentCallSid, CallerName, ForwardedFrom, CallDuration, SequenceNumber, Timestamp (empty counts as absent).
 * Returns 0 with call filled (caller owns it: sb_twilio_call_cleanup), or SB_EPARSE with call still zeroed: a
 * required field missing or empty, an unknown CallStatus, CallDuration or SequenceNumber not a plain decimal number,
 * a NUL byte in a field. */
int sb_twilio_parse_call(const sb_form_t *f, sb_twilio_call_t *call, char *err, size_t errlen);

/* Parses a call status callback into call, which must be zeroed. As sb_twilio_parse_call, except that only CallSid
 * and CallStatus are required: From, To and Direction are read when present (Twilio sends them, but a status update
 * is still meaningful without them; account is then NULL). Returns 0 or SB_EPARSE as above. */
int sb_twilio_parse_call_status(const sb_form_t *f, sb_twilio_call_t *call, char *err, size_t errlen);

/* Frees every string of call and zeroes it. Safe on a zeroed call. */
void sb_twilio_call_cleanup(sb_twilio_call_t *call);

/* "queued", "in-progress", ... for a status; NULL for a value outside the enum. */
const char *sb_twilio_call_status_name(sb_twilio_call_status_t s);

/* True for the statuses after which the call is over (completed, busy, no-answer, failed, canceled): the call actor
 * releases its concurrency slot. */
bool sb_twilio_call_status_is_final(sb_twilio_call_status_t s);

#endif
