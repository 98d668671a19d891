/* Outbound sends, pure: what a message must look like to be accepted, the provider request that sends it, what the
 * provider's answer means, and when to try again. No I/O: the caller hands the request to sb_http_client_request
 * and the response it gets back to sb_outbound_classify.
 *
 * One module for both providers (rather than functions in twilio.c and meta.c, which parse inbound webhooks): the
 * session actor handles "a send" the same way whatever the channel, and the rules that decide between retrying and
 * failing must be the same for both, so they live side by side.
 *
 * Channels: twilio_sms and twilio_whatsapp (Twilio's Messages API: POST {twilio_api_base}/2010-04-01/Accounts/
 * {AccountSid}/Messages.json, a form, HTTP basic auth AccountSid:AuthToken), meta_whatsapp (WhatsApp Cloud API:
 * POST {meta_graph_base}/{phone_number_id}/messages, JSON, "Authorization: Bearer <access token>"), meta_messenger
 * and meta_instagram (the Messenger Platform's Send API: POST {meta_graph_base}/{page id or Instagram account id}/
 * messages, JSON, the same bearer token; the recipient is a page-scoped id, PSID, or an Instagram-scoped id, IGSID).
 * Every other channel type is refused with -ENOTSUP (error code "unsupported_channel").
 *
 * The 24-hour customer-service window (sb_outbound_window): WhatsApp (Meta's and Twilio's), Messenger and Instagram
 * take free-form messages only within 24 hours of the customer's last message; outside it WhatsApp needs a template
 * (Meta: name/language/components; Twilio: a Content API ContentSid), Messenger a message tag, Instagram the
 * HUMAN_AGENT tag (and that within 7 days, as on Messenger). The session actor, which knows when each conversation's
 * last inbound message came, asks before it stores a send.
 *
 * Flow: POST /v1/messages (or the inbox "send") calls sb_outbound_validate before anything is stored and answers 400
 * with its error; the session actor later calls sb_outbound_build with the channel's decrypted credentials, sends,
 * and calls sb_outbound_classify on the answer: SENT records the provider id, FAILED records the provider's error,
 * RETRY waits sb_retry_backoff_ms and sends again (at most SB_RETRY_MAX_ATTEMPTS in all, then dead letter),
 * UNKNOWN must not be sent again blindly: the provider may have the message (status "unknown", reconciled).
 *
 * Addresses. Recipients are E.164: '+', then 8 to 15 digits, the first not 0. For twilio_whatsapp the recipient may
 * also be given as "whatsapp:+E164"; the stored form (sb_outbound_valid_t.to) is always the bare number, as every
 * inbound event carries it (adapters/twilio.h strips the prefix), so replies land in the same conversation; the
 * request puts "whatsapp:" in front of To and From. Meta gets the number with its '+'.
 *
 * Secrets. The credentials in sb_outbound_msg_t are borrowed and never copied anywhere but into the request, whose
 * cleanup wipes them; nothing here logs, and no error message quotes a credential, a body or an address. */
#ifndef SB_OUTBOUND_H
#define SB_OUTBOUND_H

#include "adapters/net/http_client.h"
#include "proto/event.h"
#include "proto/retry.h"
#include "proto/str.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SB_OUTBOUND_TWILIO_API_BASE "https://api.twilio.com"            /* twilio_api_base's default */
#define SB_OUTBOUND_META_GRAPH_BASE "https://graph.facebook.com/v21.0"  /* meta_graph_base's default */

#define SB_OUTBOUND_MAX_MEDIA 10            /* media URLs per message (Twilio's limit; Meta and Twilio WhatsApp: 1) */
#define SB_OUTBOUND_TWILIO_MAX_BODY 1600    /* code points in a Twilio body */
#define SB_OUTBOUND_META_MAX_TEXT 4096      /* code points in a Meta text message */
#define SB_OUTBOUND_META_MAX_CAPTION 1024   /* code points in a Meta media caption */
#define SB_OUTBOUND_MAX_URL 2048            /* bytes in a media or status callback URL */
#define SB_OUTBOUND_MAX_TEMPLATE_NAME 512   /* bytes in a Meta template name */
#define SB_OUTBOUND_MAX_COMPONENTS 16384    /* bytes of template components (JSON text) */
#define SB_OUTBOUND_MAX_VARIABLES 16384     /* bytes of Twilio ContentVariables (JSON text) */
#define SB_OUTBOUND_MESSENGER_MAX_TEXT 2000 /* code points in a Messenger text message */
#define SB_OUTBOUND_INSTAGRAM_MAX_TEXT 1000 /* bytes (UTF-8) in an Instagram text message */
#define SB_OUTBOUND_MAX_SCOPED_ID 32        /* digits in a PSID or IGSID */
#define SB_OUTBOUND_ADDR_MAX 40             /* room for a canonical recipient (E.164, or a PSID / IGSID) and its NUL */
#define SB_OUTBOUND_WINDOW_MS (24 * 3600 * 1000LL)        /* the customer-service window */
#define SB_OUTBOUND_HUMAN_AGENT_MS (7 * 24 * 3600 * 1000LL) /* how long after it the HUMAN_AGENT tag may reply */

#define SB_OUTBOUND_MAX_ID 128              /* bytes in a provider message id we accept (Twilio sid 34, wamid ~60) */
#define SB_OUTBOUND_MAX_CODE 31             /* bytes in an error code */
#define SB_OUTBOUND_MAX_ERRMSG 255          /* bytes in an error message taken from a provider */


/* ---- the message -------------------------------------------------------------------------------------------- */

/* One send, as the gateway holds it. Every field is borrowed; absent fields are {NULL, 0}. */
typedef struct sb_outbound_msg {
    sb_channel_type_t channel;  /* SB_CH_TWILIO_SMS, SB_CH_TWILIO_WHATSAPP, SB_CH_META_WHATSAPP,
                                 * SB_CH_META_MESSENGER or SB_CH_META_INSTAGRAM */
    sb_str_t address;           /* the channel's own address, the sender: E.164 for Twilio (a "whatsapp:" prefix is
                                 * accepted and not doubled; "MG" + 32 hex is a Messaging Service and is sent as
                                 * MessagingServiceSid), phone_number_id for Meta WhatsApp, the page id (Messenger)
                                 * or Instagram account id (Instagram) */
    sb_str_t account_sid;       /* Twilio, decrypted: AccountSid (the basic-auth user and part of the URL) */
    sb_str_t auth_token;        /* Twilio, decrypted: AuthToken (the basic-auth password) */
    sb_str_t access_token;      /* Meta, decrypted: the bearer token */
    sb_str_t to;                /* the recipient, as the client gave it */
    sb_str_t body;              /* UTF-8 text; empty = none (then media or a template is needed) */
    const sb_str_t *media;      /* nmedia absolute http(s) URLs */
    size_t nmedia;
    sb_str_t media_type;        /* Meta only: "image", "video", "audio", "document" or "sticker"; empty = chosen
                                 * from the URL's file extension (see sb_outbound_validate) */
    sb_str_t template_name;     /* Meta template: name; empty = no template */
    sb_str_t template_language; /* Meta template: language code ("en_US") */
    sb_str_t template_components; /* Meta template: the "components" array as JSON text; empty = none */
    sb_str_t content_sid;       /* Twilio Content API template: "HX" + 32 hex; empty = none */
    sb_str_t content_variables; /* Twilio Content API: ContentVariables, a JSON object of strings as text; empty =
                                 * none */
    sb_str_t tag;               /* Messenger / Instagram message tag (sent with messaging_type MESSAGE_TAG); empty =
                                 * none (messaging_type RESPONSE) */
    sb_str_t status_callback;   /* Twilio: StatusCallback URL (our status webhook); empty = none. Meta: ignored
                                 * (Meta posts statuses to the app's webhook) */
} sb_outbound_msg_t;

/* Why a message or a request was refused. Caller's storage. */
typedef struct sb_outbound_error {
    const char *code;  /* static snake_case code for the API's {"error":{"code"}}; "" when there is no error */
    char message[160]; /* one line naming the field ("to: ...", "media_url[2]: ..."); never quotes its value */
} sb_outbound_error_t;

/* What validation learnt. Caller's storage. */
typedef struct sb_outbound_valid {
    char to[SB_OUTBOUND_ADDR_MAX]; /* the recipient to store: bare E.164, "whatsapp:" dropped; a PSID / IGSID */
    const char *type;              /* static: Meta's message type ("text", "image", "video", "audio", "document",
                                    * "sticker", "template"; Messenger and Instagram: "text", "image", "video",
                                    * "audio", "file"); for Twilio "text", "media" or "template" (ContentSid) */
    size_t body_chars;             /* code points in body */
} sb_outbound_valid_t;

/* Checks the client's part of m (channel, to, body, media, media_type, template) for the accept path: everything
 * that would make the provider refuse the message for its shape. The channel's own part (address, credentials,
 * status_callback) is not looked at; sb_outbound_build checks it. out and err may be NULL.
 * Rules:
 *   - channel one of the five supported;
 *   - to: E.164 ("+" then 8..15 digits, not starting with 0); twilio_whatsapp also "whatsapp:+E164" (any case of
 *     the prefix); meta_messenger and meta_instagram: the PSID / IGSID, 1..SB_OUTBOUND_MAX_SCOPED_ID digits;
 *   - body: valid UTF-8 without NUL; at most SB_OUTBOUND_TWILIO_MAX_BODY code points (Twilio),
 *     SB_OUTBOUND_META_MAX_TEXT (Meta text) or SB_OUTBOUND_META_MAX_CAPTION (Meta, as the caption of a media);
 *   - something to send: a body, a media URL or a template;
 *   - media: at most SB_OUTBOUND_MAX_MEDIA; exactly one per message on meta_whatsapp and twilio_whatsapp (both
 *     APIs take a single attachment per WhatsApp message; a message with more is refused rather than split, since one
 *     accepted message is one provider message with one id); each an absolute URL: "http://" or "https://" (any case),
 *     a non-empty host, printable ASCII only (no spaces, controls or raw non-ASCII: percent-encode them), at most
 *     SB_OUTBOUND_MAX_URL bytes;
 *   - media_type (Meta): empty, or one of image, video, audio, document, sticker. When empty, the URL path's extension
 *     decides: jpg/jpeg/png -> image, mp4/3gp -> video, aac/amr/mp3/m4a/ogg/opus -> audio, webp -> sticker, anything
 *     else -> document. Audio and stickers take no caption, so a body with them is refused. Twilio ignores
 *     media_type (it reads the media's Content-Type) but a non-empty one must still be one of the five;
 *   - template (template_*): meta_whatsapp only; name of 1..SB_OUTBOUND_MAX_TEMPLATE_NAME bytes of [a-z0-9_];
 *     language of 2..15 bytes of letters, '_' and '-'; components, when given, a JSON array of objects of at most
 *     SB_OUTBOUND_MAX_COMPONENTS bytes; no body or media beside it (a template carries its own content);
 *   - Content API template (content_sid): twilio_sms and twilio_whatsapp only; "HX" + 32 hex digits; variables,
 *     when given, a JSON object of at most SB_OUTBOUND_MAX_VARIABLES bytes whose keys are non-empty and values
 *     strings; no body or media beside it (Twilio refuses them together);
 *   - Messenger and Instagram: a text (Messenger at most SB_OUTBOUND_MESSENGER_MAX_TEXT code points, Instagram
 *     SB_OUTBOUND_INSTAGRAM_MAX_TEXT bytes) or one attachment, not both (the Send API has no captions); the
 *     attachment's type from media_type (image, video, audio; document -> file; sticker is refused) or the URL's
 *     extension (jpg/jpeg/png/gif/webp -> image, mp4/mov/webm/avi/3gp -> video, aac/m4a/mp3/ogg/opus/wav/amr ->
 *     audio, else file); Instagram takes no file attachments;
 *   - tag: meta_messenger: HUMAN_AGENT, CONFIRMED_EVENT_UPDATE, POST_PURCHASE_UPDATE or ACCOUNT_UPDATE (the tags
 *     Meta still honours); meta_instagram: HUMAN_AGENT only; any other channel: none.
 * Returns 0 with out filled; or, with err set:
 *   -ENOTSUP   "unsupported_channel";
 *   SB_EINVAL  "invalid_recipient", "invalid_body" (not UTF-8, NUL, or a caption where none is allowed),
 *              "body_too_long", "empty_message", "too_many_media", "invalid_media_url", "invalid_media_type",
 *              "invalid_template", "invalid_tag". The first problem found is reported. */
int sb_outbound_validate(const sb_outbound_msg_t *m, sb_outbound_valid_t *out, sb_outbound_error_t *err);

/* The 24-hour customer-service window: may m (its channel, template, content_sid and tag; nothing else is looked
 * at) go out when the conversation's last inbound message is since_inbound_ms old (-1: it has none)?
 *   twilio_sms, and any channel within SB_OUTBOUND_WINDOW_MS: yes;
 *   meta_whatsapp outside it: only a template; twilio_whatsapp: only a Content API template (content_sid);
 *   meta_messenger: only with a tag: HUMAN_AGENT within SB_OUTBOUND_HUMAN_AGENT_MS, the other tags at any time;
 *   meta_instagram: only with HUMAN_AGENT, within SB_OUTBOUND_HUMAN_AGENT_MS.
 * Returns 0, or SB_EACCES with err set: "outside_window" and a message saying what would go. */
int sb_outbound_window(const sb_outbound_msg_t *m, int64_t since_inbound_ms, sb_outbound_error_t *err);

/* ---- the request -------------------------------------------------------------------------------------------- */

/* Base URLs (borrowed; NULL = the defaults above). Trailing slashes are ignored. */
typedef struct sb_outbound_endpoints {
    const char *twilio_api_base;
    const char *meta_graph_base;
} sb_outbound_endpoints_t;

/* A built provider request. `http` is ready for sb_http_client_request and points into the members after it, which
 * this struct owns; sb_http_client_request copies what it needs, so the request may be cleaned up right after it
 * returns. Fill with sb_outbound_build, free with sb_outbound_request_cleanup. */
typedef struct sb_outbound_request {
    sb_http_client_req_t http;
    char *url;                /* the full URL */
    char *basic_auth;         /* Twilio: "AccountSid:AuthToken" (secret), else NULL */
    char *authorization;      /* Meta: "Authorization: Bearer <token>" (secret), else NULL */
    const char *headers[4];   /* NULL-terminated; Content-Type, Accept, and for Meta the authorization line */
    sb_buf_t body;            /* the request body: a form (Twilio) or JSON (Meta) */
} sb_outbound_request_t;

/* Builds the provider request for m into req (caller's storage; its previous contents are ignored). Runs
 * sb_outbound_validate first, so an invalid message never becomes a request. ep may be NULL (defaults).
 * Twilio: POST {base}/2010-04-01/Accounts/{AccountSid, percent-encoded}/Messages.json; headers
 * "Content-Type: application/x-www-form-urlencoded" and "Accept: application/json"; basic_auth "sid:token"; body
 * To, From (or MessagingServiceSid), Body (when not empty), one MediaUrl per media, or instead of those two
 * ContentSid and ContentVariables (when given) for a Content API template, StatusCallback (when given), in that order, encoded as the WHATWG urlencoded serializer does: A-Z a-z 0-9 * - . _ as they are, space as '+',
 * every other byte (UTF-8 included) as %XX in upper case — so "+14155550100" is "%2B14155550100". No idempotency
 * header: Twilio's Messages API has none (a resend after UNKNOWN is a second message; see sb_outbound_classify).
 * Meta: POST {base}/{phone_number_id, percent-encoded}/messages; headers "Content-Type: application/json",
 * "Accept: application/json", "Authorization: Bearer <token>"; body, compact JSON in this member order:
 *   {"messaging_product":"whatsapp","recipient_type":"individual","to":"+1...","type":"text",
 *    "text":{"preview_url":false,"body":...}}
 *   or "type":"image" (video, audio, document, sticker) with "image":{"link":...[,"caption":...]}
 *   or "type":"template" with "template":{"name":...,"language":{"code":...}[,"components":[...]]}.
 * Messenger and Instagram: POST {base}/{page or Instagram account id, percent-encoded}/messages, the same headers;
 *   {"recipient":{"id":"<PSID>"},"messaging_type":"RESPONSE","message":{"text":...}}
 *   or "message":{"attachment":{"type":"image" (video, audio, file),"payload":{"url":...}}}, and with a tag
 *   "messaging_type":"MESSAGE_TAG","tag":"HUMAN_AGENT" in place of RESPONSE.
 * Returns 0 with req filled (the caller must call sb_outbound_request_cleanup); or, with req zeroed and err set:
 *   what sb_outbound_validate returns; or SB_EINVAL with
 *   "invalid_config"       a base URL that is not absolute http(s) of printable ASCII without query or fragment;
 *   "invalid_sender"       address empty, over 64 bytes, not printable ASCII, or holding ':' past "whatsapp:";
 *   "invalid_credentials"  Twilio: account_sid or auth_token empty, over 512 bytes or not printable ASCII (a ':' in
 *                          the sid would move the basic-auth split), Meta: access_token empty, over 4096 bytes or
 *                          not printable ASCII (no spaces);
 *   "invalid_callback"     status_callback given but not a URL as media URLs must be. */
int sb_outbound_build(const sb_outbound_msg_t *m, const sb_outbound_endpoints_t *ep, sb_outbound_request_t *req,
                      sb_outbound_error_t *err);

/* Wipes the secrets and the body of req, frees everything it owns and zeroes it. Safe on a zeroed request. */
void sb_outbound_request_cleanup(sb_outbound_request_t *req);

/* ---- the answer --------------------------------------------------------------------------------------------- */

typedef enum sb_outbound_outcome {
    SB_OUTBOUND_SENT = 1, /* the provider took the message; provider_id is its id */
    SB_OUTBOUND_RETRY,    /* it did not, and a later attempt may succeed: nothing was created at the provider */
    SB_OUTBOUND_FAILED,   /* it did not, and never will as it stands: a permanent error */
    SB_OUTBOUND_UNKNOWN   /* the provider may or may not have it: do not resend blindly */
} sb_outbound_outcome_t;

/* "sent", "retry", "failed", "unknown"; NULL outside the enum. */
const char *sb_outbound_outcome_name(sb_outbound_outcome_t o);

/* What an answer means. Caller's storage; every string is NUL-terminated valid UTF-8 within its array. */
/* Twilio's Calls API: a call placed (call_sid empty: POST {base}/2010-04-01/Accounts/{sid}/Calls.json with To,
 * From, Twiml and, with a status_callback, StatusCallback, StatusCallbackEvent "initiated ringing answered
 * completed", StatusCallbackMethod POST) or updated (POST .../Calls/{call_sid}.json with Status=completed when
 * hangup, else Twiml). Strings borrowed. */
typedef struct sb_outbound_call {
    sb_str_t account_sid, auth_token;
    sb_str_t call_sid;        /* an update */
    sb_str_t to, from, twiml, status_callback;
    bool hangup;
} sb_outbound_call_t;

/* Builds the request (as sb_outbound_build; cleanup with sb_outbound_request_cleanup). SB_EINVAL with err:
 * "invalid_config", "invalid_credentials", "invalid_call", "invalid_callback". */
int sb_outbound_call_build(const sb_outbound_call_t *c, const sb_outbound_endpoints_t *ep, sb_outbound_request_t *r,
                           sb_outbound_error_t *err);
/* Reads the Calls API's answer: 0 with the call's sid (2xx with a "sid"), or SB_EUNAVAIL (no answer), SB_EACCES
 * (refused: err has the status and Twilio's message), SB_EPARSE (a 2xx without a sid). */
int sb_outbound_call_answer(const sb_http_client_res_t *res, char *sid, size_t sidlen, sb_outbound_error_t *err);

typedef struct sb_outbound_result {
    sb_outbound_outcome_t outcome;
    int http_status;          /* the response's status, 0 when there was none */
    int retry_after_s;        /* RETRY with a Retry-After header: its seconds (at most SB_RETRY_AFTER_MAX_S);
                               * else -1 */
    bool endpoint_fault;      /* the endpoint itself looks unwell (no connection, timeout, reset, garbage, 5xx), as
                               * opposed to refusing this message or this sender's pace: what a circuit breaker
                               * counts */
    const char *provider_status; /* SENT (and FAILED from a 2xx): the answer's status normalized as
                               * sb_outbound_status_normalize does ("queued", ...), or NULL */
    char provider_id[SB_OUTBOUND_MAX_ID + 1]; /* SENT: Twilio "sid" / Meta "messages[0].id", 1..SB_OUTBOUND_MAX_ID
                               * printable ASCII bytes; FAILED from a 2xx: the sid; else "" */
    char error_code[SB_OUTBOUND_MAX_CODE + 1]; /* not SENT: the provider's code in decimal ("21211", "131026"), or
                               * ours: "http_<status>", "timeout", "connection_reset", "unavailable", "bad_response",
                               * "response_too_big", "canceled", "invalid_request", "transport_error"; SENT: "" */
    char error_message[SB_OUTBOUND_MAX_ERRMSG + 1]; /* not SENT: the provider's message, or the transport's
                               * description. Meta: error_data.details alone when it repeats the message's title (the
                               * text after "(#code) "), else message, then ": " and details when they add something.
                               * At most SB_OUTBOUND_MAX_ERRMSG bytes, cut at a character boundary, controls as
                               * spaces */
} sb_outbound_result_t;

/* Classifies the answer res (borrowed, as the http_client callback got it) to a send on channel; fills out (always).
 * Transport failures (res->err != 0), using res->sent (false when no byte of the request was written):
 *   SB_ECANCELED                      -> UNKNOWN "canceled": http_client does not say whether a canceled request
 *                                        was written (its sent is false), so it may have been
 *   SB_EINVAL (curl refused the URL)  -> FAILED "invalid_request": nothing was sent, and the same request never can
 *   SB_E2BIG (answer over the limit)  -> UNKNOWN "response_too_big": the provider answered, we cannot read it
 *   SB_ETIMEDOUT, -ECONNRESET, SB_EUNAVAIL, SB_EPARSE, -EIO, anything else:
 *                            !sent    -> RETRY   (connect failures and timeouts before the request went out:
 *                                        nothing reached the provider)
 *                             sent    -> UNKNOWN (it may have been acted on: "timeout", "connection_reset",
 *                                        "unavailable", "bad_response", "transport_error")
 * HTTP answers (res->err == 0):
 *   2xx   Twilio: a JSON object with a string "sid" -> SENT, provider_status from "status"; a status that normalizes
 *         to "failed" or "undelivered" -> FAILED with the sid and "error_code"/"error_message" when present.
 *         Meta: "messages"[0]."id" a string -> SENT, provider_status from "message_status" when present;
 *         Messenger / Instagram: "message_id" a string -> SENT.
 *         Anything else (not JSON, no id, an id that is empty, too long or not printable ASCII) -> UNKNOWN
 *         "bad_response": the provider accepted something we cannot name.
 *   429, 408                          -> RETRY, with Retry-After when present
 *   5xx                               -> RETRY (endpoint_fault), with Retry-After when present
 *   other 4xx                         -> FAILED with the provider's code and message — except the codes that
 *         name a passing condition, which RETRY: Twilio 20429 (too many requests), 21611 (the sender's queue is full),
 *         63017 (account rate limit); Meta 1 (unknown, possibly temporary), 2 (service temporarily unavailable),
 *         4 (application rate limit), 613 (the Send API's calls per second exceeded), 80007 (WhatsApp Business
 *         Account rate limit), 130429 (throughput limit),
 *         131056 (pair rate limit). Meta answers its throttling with 400, not 429, hence the list. Meta 131048
 *         (spam rate limit) is a quality restriction that minutes of backoff do not lift: FAILED.
 *   3xx                               -> FAILED "http_3xx" (a misconfigured base URL; retrying repeats it)
 *   any other status                  -> UNKNOWN "http_<status>"
 * Error bodies: Twilio {"code":21211,"message":...,"more_info":...,"status":400}; Meta {"error":{"message":...,
 * "type":...,"code":131026,"error_subcode":...,"error_data":{"details":...},"fbtrace_id":...}}. A code may be a JSON
 * integer or a string of digits. A body that is not of that shape (an HTML page from a proxy) gives
 * "http_<status>" and "HTTP <status>". Bodies over 1 MiB are not parsed. Other channels: no provider shape is
 * known, so a 2xx is UNKNOWN and errors keep only the HTTP status. */
void sb_outbound_classify(sb_channel_type_t channel, const sb_http_client_res_t *res, sb_outbound_result_t *out);

/* Maps a provider's message status (Twilio: MessageStatus or a Messages API "status"; Meta: a statuses[].status
 * webhook value or a send answer's "message_status") to ours, storing a static string in *out:
 *   Twilio (both channels)  as sb_twilio_status_normalize: accepted, scheduled, queued -> "queued"; sending, sent ->
 *                           "sent"; delivered, partially_delivered -> "delivered"; read -> "read"; undelivered ->
 *                           "undelivered"; failed, canceled -> "failed"; receiving, received -> SB_ENOENT
 *   Meta                    accepted, held_for_quality_assessment, paused -> "queued"; sent -> "sent"; delivered ->
 *                           "delivered"; read -> "read"; failed -> "failed"; deleted, warning -> SB_ENOENT (no
 *                           news about delivery)
 * Exact, case-sensitive. Returns 0 (*out set), SB_ENOENT, SB_EPARSE (unknown status) or -ENOTSUP (channel). */
int sb_outbound_status_normalize(sb_channel_type_t channel, sb_str_t status, const char **out);

#endif
