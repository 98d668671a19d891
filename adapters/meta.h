/* Meta webhooks: the bodies Meta POSTs to /webhooks/meta/{app_id} (WhatsApp Cloud API, Messenger, Instagram) turned
 * into normalized events (proto/event.h), and the GET verification handshake that precedes them.
 *
 * One Meta app posts every event of every page, IG account and WhatsApp number it serves to one URL, so a body is a
 * batch: "entry" holds many entries, each with many changes (WhatsApp) or messaging items (Messenger, Instagram),
 * each of which may be a message, a status, or something we do not handle. The parser keeps what maps cleanly to an
 * sb_event_t and counts the rest as skipped; it fails only when the body as a whole is unusable (not JSON, not an
 * object, no "object" or "entry"), so that one odd item never makes Meta retry, and finally drop, a whole batch.
 *
 * What becomes an event (account = the id that selects our channel, see API.md "Tenancy"):
 *   object "whatsapp_business_account" (SB_CH_META_WHATSAPP), changes with field "messages":
 *     messages[]  -> SB_EV_MESSAGE. account = metadata.phone_number_id; to = metadata.display_phone_number (else
 *                    phone_number_id); from, provider_id (wamid), timestamp (unix seconds, string or integer);
 *                    profile_name from the contacts[] entry whose wa_id equals from (or the only contact when the
 *                    change holds exactly one contact and one message: wa_id and phone number may differ).
 *                    text: body = text.body (not ""). image, audio, video, document, sticker: one media {id, mime_type},
 *                    body = caption or "". location: body = name, address and "lat,long", one per line.
 *                    interactive: body = button_reply.title or list_reply.title. button: body = button.text.
 *                    Skipped: reaction, contacts, order, system, unsupported, unknown and any other type.
 *     statuses[]  -> SB_EV_STATUS for status sent, delivered, read, failed (others, e.g. "deleted", skipped).
 *                    account = phone_number_id; provider_id = id (the wamid we sent); to = recipient_id;
 *                    errors[0]: error_code = code, error_message = message (else title), then ": " and
 *                    error_data.details when that adds something.
 *     Changes with another field (template status, account updates ...) and value.errors are skipped.
 *   object "page" (SB_CH_META_MESSENGER) and "instagram" (SB_CH_META_INSTAGRAM), entry[].messaging[]:
 *     message     -> SB_EV_MESSAGE. from = sender.id; to = account = recipient.id (else entry.id); provider_id =
 *                    message.mid; body = message.text or ""; each attachment with a payload.url -> one media {url}
 *                    (at most SB_EVENT_MAX_MEDIA). Skipped: is_echo (our own sends), is_deleted, and messages
 *                    with neither text nor a usable attachment.
 *     postback    -> SB_EV_MESSAGE with body = postback.title, when it carries a mid (the analogue of WhatsApp's
 *                    button replies); without a mid it cannot be deduplicated and is skipped.
 *     delivery    -> one SB_EV_STATUS "delivered" per id in delivery.mids (to = sender.id, the customer); the
 *                    watermark alone names no message and is not turned into anything.
 *     read        -> SB_EV_STATUS "read" when read.mid names the message (Instagram's messaging_seen does);
 *                    Messenger's watermark-only reads name no message and are skipped.
 *     Skipped: reactions, referrals, optins, handover and standby items (another app owns the thread).
 *   Messenger and Instagram timestamps are milliseconds; values of 10^11 and above are divided by 1000, so a
 *   seconds value (some Instagram logins send those) is kept as it is. An item without its timestamp takes the
 *   entry's "time" (when Meta sent it), else 0.
 *   Any other "object" is accepted with no events (every entry counted as skipped).
 *
 * An event's raw is the compact JSON of the item it came from (messages[i], statuses[i] or messaging[i]), on the
 * first event of that item only: what a receipt keeps of the provider's bytes is its own, and a batch's receipts
 * together keep about the batch's size, not the whole body once per event.
 *
 * Every string of every event is valid UTF-8 without NUL (the whole body is checked, and JSON escapes are decoded by
 * jansson, which refuses NUL and lone surrogates). Identifiers (account, from, to, provider_id, media id, error
 * code) are additionally 1..SB_META_MAX_ID printable ASCII bytes: an item whose identifiers are not is skipped.
 * Nothing here does I/O, keeps state between calls or logs; messages never quote the body. */
#ifndef SB_META_H
#define SB_META_H

#include "proto/event.h"
#include "proto/str.h"

#include <stddef.h>

#define SB_META_MAX_BODY (1024 * 1024) /* bytes; larger bodies are SB_E2BIG (as max_body_bytes' default) */
#define SB_META_MAX_DEPTH 32           /* JSON nesting; real payloads use about 12 */
#define SB_META_MAX_EVENTS 4096        /* per body; Meta batches up to 1000 WhatsApp updates */
#define SB_META_MAX_ID 512             /* bytes in an identifier (wamid, mid, ids, error code) */
#define SB_META_MAX_CHALLENGE 256      /* bytes in a hub.challenge we echo */
#define SB_META_MAX_TOKEN 256          /* bytes in a verify token */
#define SB_META_ERR_MAX 128

/* What sb_meta_parse tells besides the events: why it failed, and how much it passed over. Caller's storage. */
typedef struct sb_meta_diag {
    size_t skipped;              /* items (messages, statuses, messaging items, changes, entries) that gave no event */
    char error[SB_META_ERR_MAX]; /* "" on success; on failure one line saying why, never quoting the body */
} sb_meta_diag_t;

/* Parses one Meta webhook POST body (len bytes at body, borrowed, need not be NUL-terminated; body may be NULL when
 * len is 0) and appends its events to out, in the order they appear in the body.
 * out must be a valid list (zeroed, or emptied by sb_event_list_cleanup); events already in it are kept.
 * diag may be NULL; otherwise it is always filled.
 * Returns 0 on success (possibly with no events: an empty batch, or only items we skip); the appended events and
 * their strings are then the caller's, freed with sb_event_list_cleanup. On failure out is left as it was (an empty
 * list stays empty, nothing leaks) and the result is:
 *   SB_E2BIG   len > SB_META_MAX_BODY, or more than SB_META_MAX_EVENTS events in one body;
 *   SB_EPARSE  invalid UTF-8, nesting deeper than SB_META_MAX_DEPTH, not JSON (including duplicate keys and trailing
 *              bytes), not a JSON object, or no string "object" or no array "entry";
 *   SB_ENOMEM  jansson could not allocate (our own allocations abort instead).
 * Never asserts on the body. */
int sb_meta_parse(const char *body, size_t len, sb_event_list_t *out, sb_meta_diag_t *diag);

/* Checks Meta's subscription handshake: GET ?hub.mode=subscribe&hub.verify_token=T&hub.challenge=C. The three
 * request values are the decoded query parameters (borrowed; absent ones are {NULL, 0}); expected_token is the Meta
 * app's verify token (borrowed). Returns 0 and sets *echo to the challenge (borrowing challenge's bytes) to send
 * back as the 200 body; or, with *echo set to {NULL, 0}, a negative code to answer with 403:
 *   SB_EINVAL  mode is not exactly "subscribe", or the token is absent, longer than SB_META_MAX_TOKEN or not equal
 *              to expected_token (compared in time independent of where they differ), or expected_token is empty
 *              (an app without a verify token refuses every handshake);
 *   SB_EPARSE  the challenge is empty, longer than SB_META_MAX_CHALLENGE, or holds a byte outside printable ASCII
 *              0x21..0x7e (it is echoed verbatim into a response body). */
int sb_meta_verify_challenge(sb_str_t mode, sb_str_t verify_token, sb_str_t challenge, sb_str_t expected_token,
                             sb_str_t *echo);

#endif
