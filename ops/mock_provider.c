/* mock-provider: Twilio's Messages API, Meta's WhatsApp Cloud and Messenger / Instagram Send API messages endpoints,
 * the 24-hour customer-service window (when told to keep it), and Twilio voice (the Calls API,
 * simulated incoming calls with their Media Streams, an echo voice app: ops/mock_voice.c) on one libuv loop, for
 * offline use (`make run`), the integration tests and the send and voice benchmarks (API.md "Mock provider").
 *
 *   mock-provider --listen 127.0.0.1:PORT [--meta-webhook URL --meta-app-secret S] [--max-records N]
 *
 * It answers like the real APIs (shapes below), can be told to fail or slow down, records every send per sender
 * with a monotonic timestamp, and posts signed status callbacks back (Twilio: to the request's StatusCallback,
 * signed X-Twilio-Signature with the auth token of the request's basic auth; Meta: a WhatsApp Cloud "statuses"
 * webhook to --meta-webhook, signed X-Hub-Signature-256 with --meta-app-secret). One thread, our own HTTP server
 * (adapters/net/http_server) and client (adapters/net/http_client): it has to outrun the gateway it measures.
 *
 * ---- provider endpoints -------------------------------------------------------------------------------------------
 *
 * POST /2010-04-01/Accounts/{AccountSid}/Messages.json        (Twilio; form body)
 *   Basic auth AccountSid:AuthToken required, user == {AccountSid}, any non-empty token; else 401
 *   {"code":20003,"message":"Authenticate","more_info":...,"status":401}. Params: To, From or MessagingServiceSid,
 *   Body and/or MediaUrl (repeatable), or ContentSid ("HX" + 32 hex, else 400 code 21655) with ContentVariables (a
 *   JSON object, else 400 code 21656) for a Content API template, StatusCallback. Missing To: 400 code 21604;
 *   missing From and MessagingServiceSid: 400 code 21603; neither Body, MediaUrl nor ContentSid: 400 code 21602.
 *   With the window kept (behaviour "window"), a From of "whatsapp:..." without ContentSid outside the 24 hours is
 *   refused 400 code 63016 (Twilio reports that one in the status callback of a message it queued; the mock answers
 *   at once, and records it). A ContentSid send is recorded with "content_sid" and "content_variables" (the JSON
 *   text as given, or null). Success: 201 with a message
 *   resource (sid "SM" + 32 hex, account_sid, to, from, body, status "queued" — "accepted" when sent through a
 *   MessagingServiceSid without From, as Twilio does —, num_segments (GSM-7 or UCS-2), num_media, date_created,
 *   uri, ...). The sender is From (or MessagingServiceSid).
 *
 * POST /{version}/{phone_number_id}/messages, or POST /{phone_number_id}/messages         (Meta; JSON body)
 *   {version} is "v" + digits ["." digits], as in meta_graph_base "http://127.0.0.1:PORT/v21.0".
 *   "Authorization: Bearer <any non-empty token>" required; else 401 {"error":{"message",
 *   "type":"OAuthException","code":190,"fbtrace_id"}}. Body: messaging_product "whatsapp", to, type (default
 *   "text"): text needs text.body, image needs image.link or image.id, template needs template.name; other types
 *   pass as they are. Malformed: 400 with code 100. Success: 200 {"messaging_product":"whatsapp","contacts":
 *   [{"input":to,"wa_id":to's digits}],"messages":[{"id":"wamid.<random>"}]} (plus "message_status":"accepted"
 *   for templates). The sender is {phone_number_id}. A template is recorded with "template" (the object as sent).
 *   With the window kept, a message other than a template outside the 24 hours is refused 400 code 131047
 *   "Re-engagement message" (error_data.details says why; the Cloud API reports it in a failed status webhook, the
 *   mock answers at once, and records it).
 *   A body with "recipient" and no "messaging_product" is the Send API of Messenger and Instagram (same path,
 *   {id} the page or Instagram account id, the sender): recipient.id (the PSID / IGSID), messaging_type RESPONSE,
 *   UPDATE or MESSAGE_TAG, tag (with MESSAGE_TAG only: HUMAN_AGENT, CONFIRMED_EVENT_UPDATE, POST_PURCHASE_UPDATE,
 *   ACCOUNT_UPDATE), message.text or message.attachment {type image/video/audio/file, payload.url} (one of the two);
 *   else 400 code 100. Success: 200 {"recipient_id","message_id":"m_<random>"}; recorded with "messaging_type" and
 *   "tag" (type = text or the attachment's type). With the window kept, outside the 24 hours only MESSAGE_TAG goes
 *   (HUMAN_AGENT only within 7 days of the customer's message); else 400 {"error":{"message":"(#10) This message is
 *   sent outside of allowed window.","type":"OAuthException","code":10,"error_subcode":2018278,...}}, recorded.
 *
 * The 24-hour window is off unless a behaviour says "window":true (existing senders, tests and benchmarks send
 * free-form to numbers that never wrote). The mock cannot see the customers' messages (they go from Meta or Twilio
 * to the gateway, which the mock does not sit in front of): POST /_mock/inbound tells it, and a test that posts an
 * inbound webhook to the gateway tells the mock the same.
 *
 * A send is "received" (recorded and counted) once it is authenticated and well-formed, whether the behaviour then
 * makes it fail or not. Validation and authentication errors are answered and not recorded.
 *
 * POST /2010-04-01/Accounts/{AccountSid}/Calls.json        (Twilio; form body; basic auth as for Messages)
 *   To (else 400 code 21201), From (else 21213), Url or Twiml (else 21205), StatusCallback, StatusCallbackEvent
 *   (space-separated or repeated: initiated ringing answered completed; default completed), StatusCallbackMethod
 *   (POST default, or GET). The behaviour of From applies (fail_next, permanent, delay_ms); the call is recorded in
 *   /_mock/received with type "call" and id the CallSid. 201: a call resource (sid "CA" + 32 hex, status "queued",
 *   account_sid, to, from, direction "outbound-api", api_version, date_created, uri, subresource_uris, ...). Then:
 *   "initiated" callback, 0.1 s ringing ("ringing"), answered ("in-progress"); the Url is fetched with a signed POST
 *   (AccountSid, ApiVersion, CallSid, CallStatus, Called, Caller, Direction, From, To) or the Twiml used; a Stream
 *   is opened as for incoming calls and sends media until the call is ended; Dial stays up until ended; Say,
 *   Hangup and other verbs complete at once, Reject ends busy (reason busy) or no-answer. Callbacks are signed with
 *   the request's auth token and carry AccountSid, ApiVersion, CallSid, CallStatus, Called, Caller, CallbackSource,
 *   Direction, From, SequenceNumber (0, 1, ...), Timestamp, To, and CallDuration (seconds) on final statuses.
 * POST /2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json   Status=completed ends a call (its stream gets stop
 *   and a close 1000, then the final callback: completed, or canceled if never answered); Status=canceled ends a
 *   call not yet answered. 200 with the call resource. GET answers the resource. Unknown call (or another
 *   account's): 404 {"code":20404,"message":"The requested resource ... was not found","more_info",
 *   "status":404}.
 *
 * ---- voice control endpoints (JSON; ops/mock_voice.c) -------------------------------------------------------------
 *
 * POST /_mock/calls   places incoming calls, as Twilio would when someone dials the channel's number:
 *     {"webhook":"http://127.0.0.1:PORT/webhooks/twilio/CHANNEL/voice", required unless direct_stream_url
 *      "auth_token":"..",                 required: signs the webhook, the upgrade, the status callbacks
 *      "account_sid":"AC..",              default "AC" + 32 zeros
 *      "from":"+1555..", "to":"+1444..",  defaults +15550100000, +15550200000
 *      "count":1,                         calls placed (1..10000), each with its own CallSid
 *      "spread_ms":0,                     their webhooks are spread evenly over this long (0..600000)
 *      "frames":250,                      20 ms media frames each stream sends (0..180000; 250 = 5 s)
 *      "dtmf":"12",                       digits sent one per frame from the middle frame on (0-9 * # A-D, <= 32)
 *      "mark":false,                      true: a mark "mark-<n>" after every 50th frame (an echo app answers it)
 *      "hangup":"caller",                 "caller": after the frames (and their echoes, or linger_ms), stop, close
 *                                         1000, completed; "none": stay up until POST .../Calls/{sid}.json
 *      "linger_ms":1000,                  how long to wait for the last echoes before hanging up (0..60000)
 *      "bad_signature":false,             true: the upgrade's X-Twilio-Signature is wrong
 *      "status_events":"answered completed",   as StatusCallbackEvent; final statuses come with "completed"
 *      "direct_stream_url":"ws://..."}    instead of "webhook": no webhook and no status callbacks, each call
 *                                         streams straight to this URL (the voice benchmark's reference: the
 *                                         mock's echo app with no gateway in between)
 *   An unknown field or a bad value is a 400. Answers 202 {"calls":["CA...",...]}. For each call: the voice webhook
 *   (a signed form: AccountSid, ApiVersion, CallSid, CallStatus=ringing, Called, Caller, Direction=inbound, From,
 *   To); its HTTP status and TwiML are recorded. <Connect><Stream url> (or <Start><Stream>): the mock dials that
 *   URL (upgrade signed: base64 HMAC-SHA1(token, the exact URL)), sends connected, start (streamSid "MZ" + 32 hex,
 *   the TwiML's <Parameter>s as customParameters, sequenceNumber 1), a media frame every 20 ms (track inbound,
 *   chunk from 1, timestamp (chunk-1)*20, a µ-law 440 Hz tone whose first 8 bytes are the frame number and the
 *   call's tag, so echoes are matched exactly), then stop; sequenceNumber counts every event. Status callbacks go
 *   to the webhook URL + "/status": in-progress when the stream starts (at once for Dial or Say), then the final
 *   one (completed; busy/no-answer for Reject; failed when the webhook failed, answered non-2xx or invalid TwiML).
 *   A Dial lasts frames x 20 ms. What comes back on the stream is parsed as the app's frames (media, mark, clear).
 * GET /_mock/calls   {"count":N,"calls":[{"sid","direction":"inbound"|"outbound-api","from","to","status",
 *     "twiml_status","twiml_kind","stream_state","close_code","frames_sent","frames_received","in_order"}]}
 *   twiml_status: the webhook's HTTP status, 0 for inline Twiml, -1 before it answered; twiml_kind: none, stream,
 *   dial, say, reject, hangup, other, invalid; stream_state: none, connecting, open, closed.
 * GET /_mock/calls?summary=1   {"calls","live","streams","streams_open","in_order_streams","status":{"queued":N,
 *     "ringing","in-progress","completed","busy","failed","no-answer","canceled"},"frames_sent","frames_received",
 *     "lost","late","out_of_order","duplicates","foreign","dropped","parse_errors","marks_sent","marks_received",
 *     "clears","delay_us":{"count","p50","p99","max"},"callbacks":{"posted","ok","failed"}}
 * GET /_mock/calls/{CallSid}   {"sid","direction","account_sid","from","to","status","created_t_us",
 *     "answered_t_us","ended_t_us","url","status_callback",
 *     "twiml":{"status","error","body","kind","invalid","stream_url","parameters":{name:value},"dial","say",
 *              "reject_reason"},
 *     "stream":{"state","url","stream_sid","bad_signature","error","http_status","close_code","closed_by":"mock"|
 *               "peer"|null,"frames_total","frames_sent","frames_received","in_order","out_of_order","duplicates",
 *               "foreign","late","lost","dropped","wrong_stream_sid","parse_errors","other_events",
 *               "delay_us":{"count","p50","p99","max"},"marks_sent","marks_received":[names],
 *               "marks_received_count","clears","dtmf_sent"},
 *     "last_error", "callbacks":[{"status","t_us","http_status","error"}]}   404 for an unknown call.
 *   delay_us: from sending frame k to receiving its echo, in µs; in_order: no echo came before an earlier frame's,
 *   none twice, none of another call's (foreign); lost: sent and never echoed, once the stream closed; late: echoed
 *   more than 512 frames later; dropped: evicted by the WebSocket client's output bound (the peer did not read).
 * GET /_mock/voice-app (WebSocket)   an echo voice app: on start it remembers streamSid; each media frame is echoed
 *   as {"event":"media","streamSid":..,"media":{"payload":..}}, each mark answered with the same mark. Query:
 *   delay_ms=N (hold each echo N ms), stall=1 (never read: a dead app), refuse=1 (answer the upgrade 403).
 * GET /_mock/voice-app (plain)   {"count","open","refused","sessions":[{"id","open","t_open_us","t_close_us",
 *     "target","signature" (X-Switchboard-Signature),"twilio_signature","delay_ms","stall","stream_sid","call_sid",
 *     "account_sid","parameters":{name:value},"connected","starts","media","marks":[names],"marks_count","dtmf",
 *     "stops","other","parse_errors","last_error"}]}   the last 10000 sessions.
 * POST /_mock/reset also forgets every call (streams are closed 1001, nothing more is posted) and the app's
 * sessions (open ones are closed 1001).
 *
 * ---- control endpoints (JSON) -------------------------------------------------------------------------------------
 *
 * POST /_mock/behaviour   sets how sends are answered, for one sender or (no "sender") for all senders that have
 *   no behaviour of their own. Fields present are changed, fields absent keep their value:
 *     {"sender":"+15550001111",          optional; a Twilio From / MessagingServiceSid or a Meta phone_number_id
 *      "fail_next":3,                     the next 3 sends fail with fail_status / fail_code, then it counts down
 *      "fail_status":500,                 HTTP status of those failures, 400..599 (default 500)
 *      "fail_code":20500,                 the provider error code in the body (default: Twilio 20429 for a 429,
 *                                         else 20500; Meta 130429 for a 429, else 131000)
 *      "retry_after":2,                   seconds, sent as Retry-After on every failure; null = none (default)
 *      "delay_ms":200,                    every answer (success or failure) is sent this much later
 *      "permanent":{"status":400,"code":21211},   every send fails so until "permanent":null
 *      "callbacks":["sent","delivered"],  status callbacks posted after each successful send, in this order, one
 *                                         after the other (each of queued, sending, sent, delivered, undelivered,
 *                                         failed, read; at most 8); [] = none (default)
 *      "callback_delay_ms":100,           before each callback (default 0)
 *      "delivery_delay_ms":3000,          before each final callback (delivered, undelivered, failed, read)
 *                                         instead: a delivery that comes that much later (fallback tests: sent at
 *                                         once, delivered after 3 s); null = callback_delay_ms (default)
 *      "callback_error_code":30008,       ErrorCode (Twilio) or errors[0].code (Meta) of failed/undelivered
 *                                         callbacks (default 30008 for Twilio, 131026 for Meta)
 *      "window":true,                     keep the 24-hour customer-service window (above; default false)
 *      "clear":true}                      with "sender": drop that sender's own behaviour first (it then follows
 *                                         the global one); without: reset the global behaviour to the defaults
 *   A sender's own behaviour, once it has one, replaces the global behaviour for it entirely; it starts from the
 *   defaults, not from the global one. An unknown field or a bad value is a 400. Answers 200 with the behaviour now
 *   in force for that sender (or the global one): the same fields, "permanent" null or an object.
 * GET /_mock/behaviour[?sender=S]  the behaviour in force, same shape.
 * GET /_mock/received[?sender=S][&limit=N]  the recorded sends, oldest first (the last N with limit):
 *     {"count":N, "retained":K, "requests":[{"t_us":..,"sender":..,"provider":"twilio"|"meta","type":..,
 *      "to":..,"body":..,"media":[..],"id":"SM..."|"wamid..."|null,"status":201}]}
 *   count is exact (all sends of S, or of everyone); requests holds those still retained: the store keeps the last
 *   --max-records sends of all senders together (default 100000), bodies cut at 4096 bytes. t_us is
 *   CLOCK_MONOTONIC in microseconds at arrival; status is what was answered (201/200, or the injected failure).
 * GET /_mock/stats  {"total":N,"senders":{"S":{"count":N,"accepted":N,"failed":N,"first_t_us":..,"last_t_us":..,
 *     "max_per_second":M}},"callbacks":{"posted":N,"ok":N,"failed":N,"pending":N}}
 *   max_per_second is the largest number of sends of that sender in any sliding one-second window (pacing checks).
 *   accepted = answered 2xx, failed = answered with an injected failure.
 * POST /_mock/inbound {"sender":"..","user":"..","ago_s":0}   the customer `user` wrote to `sender` ago_s seconds ago
 *   (0..1 year; default now): the window's start for that pair. sender: a page / IG account id, phone_number_id or
 *   Twilio From; user: the PSID / IGSID or number. "whatsapp:" and a leading '+' are ignored on both, so
 *   "whatsapp:+1555..." and "1555..." name the same. 200 {"ok":true}; 400 for a missing or unknown field.
 * POST /_mock/reset  forgets every record, count, behaviour and customer message, and drops the callbacks not yet
 *   posted. {"ok":true}
 *
 * In a query, a sender is percent-encoded ("%2B1555..."); a value starting with a space (an unencoded "+") is read
 * with "+" in its place.
 *
 * SIGTERM or SIGINT: stop listening, answer nothing more, cancel what is pending, exit 0. */
#include "adapters/crypto.h"
#include "adapters/net/http_client.h"
#include "adapters/net/http_server.h"
#include "gateway/log.h"
#include "ops/mock_voice.h"
#include "proto/version.h"
#include "proto/codec.h"
#include "proto/err.h"
#include "proto/form.h"
#include "proto/mem.h"
#include "proto/sig.h"
#include "proto/str.h"

#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define DEFAULT_MAX_RECORDS 100000
#define BODY_KEEP 4096        /* recorded body bytes */
#define MAX_CALLBACKS 8
#define SENDER_BUCKETS 4096
#define MAX_DELAY_MS 600000
#define TWILIO_PREFIX "/2010-04-01/Accounts/"

enum provider { P_TWILIO, P_META };

/* ---- options and state ---------------------------------------------------------------------------------------- */

static struct {
    char host[64];
    int port;
    const char *meta_webhook;
    const char *meta_secret;
    size_t max_records;
} opt = {.max_records = DEFAULT_MAX_RECORDS};

static uv_loop_t *loop;
static sb_http_server_t *server;
static sb_http_client_t *client;
static uv_signal_t sig_term, sig_int;
static bool stopping;
static sb_buf_t out; /* answers are built here (sb_http_respond copies) */

typedef struct behaviour {
    long fail_next, fail_status, fail_code; /* fail_code 0 = the provider's default */
    long retry_after;                       /* -1 = none */
    long delay_ms;
    long perm_status, perm_code;            /* perm_status 0 = off */
    char callbacks[MAX_CALLBACKS][12];
    int ncallbacks;
    long callback_delay_ms;
    long callback_error_code;               /* 0 = the provider's default */
    bool window;                            /* enforce the 24-hour customer-service window */
    long delivery_delay_ms;                 /* -1 = callback_delay_ms */
} behaviour_t;

static const behaviour_t behaviour_default = {.fail_status = 500, .retry_after = -1, .delivery_delay_ms = -1};
static behaviour_t global_beh;

typedef struct sender {
    struct sender *next; /* hash chain */
    char *name;
    behaviour_t *beh;    /* own behaviour, or NULL: the global one */
    uint64_t count, accepted, failed, first_us, last_us, max_per_s;
    uint64_t *win;       /* arrival times in the last second: a ring */
    size_t win_cap, win_head, win_len;
} sender_t;

static sender_t *senders[SENDER_BUCKETS];
static uint64_t total_count;

typedef struct record {
    sender_t *sender;
    uint64_t t_us;
    char *to, *body, *media, *id; /* media: URLs separated by '\n', or NULL; id NULL for failures */
    char *extra;                  /* more members of its JSON (",\"tag\":..."), or NULL */
    char type[16];
    int status;
    enum provider provider;
} record_t;

static record_t *ring;
static size_t ring_head, ring_len; /* oldest at ring_head */

static struct {
    uint64_t posted, ok, failed;
} cb_stats;

/* ---- small helpers -------------------------------------------------------------------------------------------- */

static uint64_t now_us(void)
{
    return uv_hrtime() / 1000;
}

static uint64_t rng_state;

/* splitmix64: ids need to be unique and look random, not to be secret */
static uint64_t rng_next(void)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void random_hex(char *dst, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    uint64_t r = 0;
    for (size_t i = 0; i < n; i++) {
        if (i % 16 == 0)
            r = rng_next();
        dst[i] = hex[r & 15];
        r >>= 4;
    }
}

static char *dup_str(sb_str_t s)
{
    return sb_strndup(s.p ? s.p : "", s.len);
}

/* The first n bytes of s at most, not cutting a UTF-8 sequence. */
static sb_str_t utf8_prefix(sb_str_t s, size_t n)
{
    if (s.len <= n)
        return s;
    while (n > 0 && ((unsigned char)s.p[n] & 0xC0) == 0x80)
        n--;
    return sb_str(s.p, n);
}

/* Percent-encodes s into b as application/x-www-form-urlencoded does. */
static void form_escape(sb_buf_t *b, sb_str_t s)
{
    static const char hex[] = "0123456789ABCDEF";
    for (size_t i = 0; i < s.len; i++) {
        unsigned char ch = (unsigned char)s.p[i];
        if ((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-' ||
            ch == '.' || ch == '_' || ch == '~') {
            sb_buf_append(b, &s.p[i], 1);
        } else if (ch == ' ') {
            sb_buf_puts(b, "+");
        } else {
            char e[3] = {'%', hex[ch >> 4], hex[ch & 15]};
            sb_buf_append(b, e, 3);
        }
    }
}

/* Twilio's num_segments: GSM-7 (160 septets, 153 per part) when every character is in the GSM 03.38 default
 * alphabet or its extension table (2 septets each), else UCS-2 (70 UTF-16 units, 67 per part). */
static int num_segments(sb_str_t body)
{
    static const unsigned latin[] = {0xA3, 0xA5, 0xE8, 0xE9, 0xF9, 0xEC, 0xF2, 0xC7, 0xD8, 0xF8, 0xC5, 0xE5,
                                     0x394, 0x3A6, 0x393, 0x39B, 0x3A9, 0x3A0, 0x3A8, 0x3A3, 0x398, 0x39E, 0xC6,
                                     0xE6, 0xDF, 0xC9, 0xA4, 0xA1, 0xC4, 0xD6, 0xD1, 0xDC, 0xA7, 0xBF, 0xE4,
                                     0xF6, 0xF1, 0xFC, 0xE0};
    size_t septets = 0, units = 0;
    bool gsm = true;
    for (size_t i = 0; i < body.len;) {
        unsigned char c0 = (unsigned char)body.p[i];
        unsigned cp;
        size_t n = c0 < 0x80 ? 1 : c0 < 0xE0 ? 2 : c0 < 0xF0 ? 3 : 4;
        if (i + n > body.len)
            n = body.len - i;
        cp = n == 1 ? c0 : n == 2 ? (c0 & 0x1Fu) : n == 3 ? (c0 & 0x0Fu) : (c0 & 0x07u);
        for (size_t k = 1; k < n; k++)
            cp = (cp << 6) | ((unsigned char)body.p[i + k] & 0x3Fu);
        i += n;
        units += cp > 0xFFFF ? 2 : 1;
        if (!gsm)
            continue;
        if (cp < 0x80) {
            if (cp && strchr("^{}\\[~]|", (int)cp))
                septets += 2;
            else if ((cp >= 0x20 && cp != '`' && cp < 0x7F) || cp == '\n' || cp == '\r')
                septets += 1;
            else
                gsm = false;
        } else if (cp == 0x20AC) {
            septets += 2;
        } else {
            bool found = false;
            for (size_t k = 0; k < sizeof latin / sizeof latin[0]; k++)
                found |= latin[k] == cp;
            if (found)
                septets++;
            else
                gsm = false;
        }
    }
    if (gsm)
        return septets <= 160 ? 1 : (int)((septets + 152) / 153);
    return units <= 70 ? 1 : (int)((units + 66) / 67);
}

/* "Mon, 01 Jan 2024 12:00:00 +0000", as Twilio dates its resources. */
static void rfc2822_now(char *dst, size_t cap)
{
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(dst, cap, "%a, %d %b %Y %H:%M:%S +0000", &tm);
}

/* A query parameter (decoded), or an empty view; a value starting with a space had an unencoded '+'. */
static bool query_param(const sb_form_t *q, const char *name, char *dst, size_t cap)
{
    const sb_form_pair_t *p = sb_form_find_cstr(q, name);
    if (!p || p->value.len >= cap)
        return false;
    memcpy(dst, p->value.p, p->value.len);
    dst[p->value.len] = '\0';
    if (dst[0] == ' ')
        dst[0] = '+';
    return true;
}

/* ---- senders and records -------------------------------------------------------------------------------------- */

static size_t hash_name(sb_str_t s)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < s.len; i++)
        h = (h ^ (unsigned char)s.p[i]) * 1099511628211ull;
    return (size_t)(h % SENDER_BUCKETS);
}

static sender_t *sender_find(sb_str_t name, bool create)
{
    size_t b = hash_name(name);
    for (sender_t *s = senders[b]; s; s = s->next)
        if (sb_str_eq_cstr(name, s->name))
            return s;
    if (!create)
        return NULL;
    sender_t *s = sb_calloc(1, sizeof *s);
    s->name = dup_str(name);
    s->next = senders[b];
    senders[b] = s;
    return s;
}

static behaviour_t *behaviour_of(sender_t *s)
{
    return s && s->beh ? s->beh : &global_beh;
}

/* Adds an arrival at t to the sender's sliding one-second window and updates its maximum. */
static void window_push(sender_t *s, uint64_t t)
{
    while (s->win_len && s->win[s->win_head] + 1000000 <= t) {
        s->win_head = (s->win_head + 1) % s->win_cap;
        s->win_len--;
    }
    if (s->win_len == s->win_cap) {
        size_t cap = s->win_cap ? s->win_cap * 2 : 64;
        uint64_t *w = sb_malloc(cap * sizeof *w);
        for (size_t i = 0; i < s->win_len; i++)
            w[i] = s->win[(s->win_head + i) % s->win_cap];
        free(s->win);
        s->win = w;
        s->win_cap = cap;
        s->win_head = 0;
    }
    s->win[(s->win_head + s->win_len) % s->win_cap] = t;
    s->win_len++;
    if (s->win_len > s->max_per_s)
        s->max_per_s = s->win_len;
}

static void record_clear(record_t *r)
{
    free(r->to);
    free(r->body);
    free(r->media);
    free(r->id);
    free(r->extra);
    memset(r, 0, sizeof *r);
}

/* Counts a send and keeps it (evicting the oldest record when the store is full). Takes ownership of the strings. */
static void record_add(sender_t *s, enum provider p, const char *type, uint64_t t, char *to, char *body,
                       char *media, char *id, int status)
{
    if (s->count == 0)
        s->first_us = t;
    s->count++;
    s->last_us = t;
    total_count++;
    if (status >= 200 && status < 300)
        s->accepted++;
    else
        s->failed++;
    window_push(s, t);
    record_t *r;
    if (ring_len == opt.max_records) {
        r = &ring[ring_head];
        record_clear(r);
        ring_head = (ring_head + 1) % opt.max_records;
    } else {
        r = &ring[(ring_head + ring_len) % opt.max_records];
        ring_len++;
    }
    *r = (record_t){.sender = s, .t_us = t, .to = to, .body = body, .media = media, .id = id, .status = status,
                    .provider = p};
    snprintf(r->type, sizeof r->type, "%s", type);
}

/* Gives the newest record (the one record_add just kept) more members for its JSON; takes extra. */
static void record_extra(char *extra)
{
    record_t *r = &ring[(ring_head + ring_len - 1) % opt.max_records];
    free(r->extra);
    r->extra = extra;
}

/* ---- the 24-hour customer-service window -----------------------------------------------------------------------
 * What the mock knows of customers' messages: POST /_mock/inbound tells it (a test posts the matching webhook to the
 * gateway itself). Keyed by (sender, user), each without "whatsapp:" and a leading '+', so that a Twilio From/To,
 * a Meta phone_number_id and a WhatsApp number written either way name the same pair. */

typedef struct inbound {
    struct inbound *next;
    char *key;       /* sender '\n' user */
    int64_t at_us;   /* now_us() clock (before its start for an old message: may be negative) */
} inbound_t;

static inbound_t *inbounds[SENDER_BUCKETS];

/* Appends the pair's key to b: sender '\n' user, each without "whatsapp:" and a leading '+'. */
static void inbound_key(sb_buf_t *b, sb_str_t sender, sb_str_t user)
{
    sb_str_t parts[2] = {sender, user};
    for (int i = 0; i < 2; i++) {
        sb_str_t x = parts[i];
        if (x.len >= 9 && strncasecmp(x.p, "whatsapp:", 9) == 0)
            x = sb_str(x.p + 9, x.len - 9);
        if (x.len && x.p[0] == '+')
            x = sb_str(x.p + 1, x.len - 1);
        if (i)
            sb_buf_puts(b, "\n");
        sb_buf_append_str(b, x);
    }
}

/* The slot of (sender, user) in its hash chain: where its entry is, or where a new one goes (*slot NULL). key
 * (caller's, empty) receives the pair's key. */
static inbound_t **inbound_slot(sb_str_t sender, sb_str_t user, sb_buf_t *key)
{
    inbound_key(key, sender, user);
    inbound_t **pp = &inbounds[hash_name(sb_str(key->p, key->len))];
    while (*pp && strcmp((*pp)->key, sb_buf_cstr(key)) != 0)
        pp = &(*pp)->next;
    return pp;
}

/* How long ago (µs) user last wrote to sender, or -1 when never. */
static int64_t inbound_age_us(sb_str_t sender, sb_str_t user)
{
    sb_buf_t key;
    sb_buf_init(&key);
    inbound_t *in = *inbound_slot(sender, user, &key);
    sb_buf_cleanup(&key);
    if (!in)
        return -1;
    int64_t age = (int64_t)now_us() - in->at_us;
    return age > 0 ? age : 0;
}

/* user wrote to sender ago_us ago: remembered (replacing what was known of the pair). */
static void inbound_note(sb_str_t sender, sb_str_t user, uint64_t ago_us)
{
    sb_buf_t key;
    sb_buf_init(&key);
    inbound_t **pp = inbound_slot(sender, user, &key);
    if (!*pp) {
        *pp = sb_calloc(1, sizeof **pp);
        (*pp)->key = sb_strndup(key.p, key.len);
    }
    (*pp)->at_us = (int64_t)now_us() - (int64_t)ago_us;
    sb_buf_cleanup(&key);
}

/* Forgets every customer's message (reset). */
static void inbounds_clear(void)
{
    for (size_t b = 0; b < SENDER_BUCKETS; b++)
        while (inbounds[b]) {
            inbound_t *in = inbounds[b];
            inbounds[b] = in->next;
            free(in->key);
            free(in);
        }
}

#define WINDOW_US (24ull * 3600 * 1000000)
#define HUMAN_AGENT_US (7ull * 24 * 3600 * 1000000)

/* ---- answers, now or later ------------------------------------------------------------------------------------ */

typedef struct pending {
    uv_timer_t timer;
    struct pending *prev, *next;
    sb_http_req_t *req;
    int status;
    char ctype[64];
    sb_buf_t body;
} pending_t;

static pending_t *pendings;

static void pending_closed(uv_handle_t *h)
{
    pending_t *p = h->data;
    sb_buf_cleanup(&p->body);
    free(p);
}

static void pending_fire(uv_timer_t *t)
{
    pending_t *p = t->data;
    if (p->prev)
        p->prev->next = p->next;
    else
        pendings = p->next;
    if (p->next)
        p->next->prev = p->prev;
    sb_http_respond(p->req, p->status, p->ctype, p->body.p, p->body.len);
    uv_close((uv_handle_t *)&p->timer, pending_closed);
}

/* Answers req with status and the bytes in `out`, after delay_ms when it is positive. retry_after >= 0 adds a
 * Retry-After header (sb_http_respond takes no extra headers: the content-type line carries it). */
static void answer(sb_http_req_t *req, int status, long delay_ms, long retry_after)
{
    char ctype[64] = "application/json";
    if (retry_after >= 0)
        snprintf(ctype, sizeof ctype, "application/json\r\nretry-after: %ld", retry_after);
    if (delay_ms <= 0) {
        sb_http_respond(req, status, ctype, out.p, out.len);
        return;
    }
    pending_t *p = sb_calloc(1, sizeof *p);
    p->req = req;
    p->status = status;
    memcpy(p->ctype, ctype, sizeof ctype);
    sb_buf_init(&p->body);
    sb_buf_append(&p->body, out.p, out.len);
    uv_timer_init(loop, &p->timer);
    p->timer.data = p;
    uv_timer_start(&p->timer, pending_fire, (uint64_t)delay_ms, 0);
    p->next = pendings;
    if (pendings)
        pendings->prev = p;
    pendings = p;
}

static void twilio_error(int code, const char *message, int status)
{
    out.len = 0;
    sb_buf_printf(&out, "{\"code\":%d,\"message\":\"", code);
    sb_buf_json_escape(&out, sb_str_cstr(message));
    sb_buf_printf(&out, "\",\"more_info\":\"https://www.twilio.com/docs/errors/%d\",\"status\":%d}", code, status);
}

static void meta_error(int code, const char *type, const char *message)
{
    char trace[24];
    random_hex(trace, 23);
    trace[23] = '\0';
    out.len = 0;
    sb_buf_puts(&out, "{\"error\":{\"message\":\"");
    sb_buf_json_escape(&out, sb_str_cstr(message));
    sb_buf_printf(&out, "\",\"type\":\"%s\",\"code\":%d,\"fbtrace_id\":\"A%s\"}}", type, code, trace);
}

/* A Meta error with an error_subcode (0: none) and error_data.details (NULL: none), as the Graph API writes them. */
static void meta_error_full(int code, int subcode, const char *message, const char *details)
{
    char trace[24];
    random_hex(trace, 23);
    trace[23] = '\0';
    out.len = 0;
    sb_buf_puts(&out, "{\"error\":{\"message\":\"");
    sb_buf_json_escape(&out, sb_str_cstr(message));
    sb_buf_printf(&out, "\",\"type\":\"OAuthException\",\"code\":%d", code);
    if (subcode)
        sb_buf_printf(&out, ",\"error_subcode\":%d", subcode);
    if (details) {
        sb_buf_puts(&out, ",\"error_data\":{\"messaging_product\":\"whatsapp\",\"details\":\"");
        sb_buf_json_escape(&out, sb_str_cstr(details));
        sb_buf_puts(&out, "\"}");
    }
    sb_buf_printf(&out, ",\"fbtrace_id\":\"A%s\"}}", trace);
}

static void respond_twilio_error(sb_http_req_t *req, int status, int code, const char *message)
{
    twilio_error(code, message, status);
    sb_http_respond(req, status, "application/json", out.p, out.len);
}

static void respond_meta_error(sb_http_req_t *req, int status, int code, const char *message)
{
    meta_error(code, "OAuthException", message);
    sb_http_respond(req, status, "application/json", out.p, out.len);
}

/* The outcome the behaviour decides for one send: 0 = succeed, else the failure's status and code. */
typedef struct verdict {
    int status, code;
    long retry_after, delay_ms;
} verdict_t;

static verdict_t decide(behaviour_t *b, enum provider p)
{
    verdict_t v = {.retry_after = -1, .delay_ms = b->delay_ms};
    if (b->perm_status) {
        v.status = (int)b->perm_status;
        v.code = (int)b->perm_code;
    } else if (b->fail_next > 0) {
        b->fail_next--;
        v.status = (int)b->fail_status;
        v.code = (int)b->fail_code;
    } else {
        return v;
    }
    if (!v.code)
        v.code = p == P_TWILIO ? (v.status == 429 ? 20429 : 20500) : (v.status == 429 ? 130429 : 131000);
    v.retry_after = b->retry_after;
    return v;
}

/* ---- status callbacks ----------------------------------------------------------------------------------------- */

typedef struct job {
    uv_timer_t timer;
    struct job *prev, *next;
    enum provider provider;
    char *url, *token; /* token: the Twilio auth token (wiped) */
    char *account, *from, *to, *id;
    char statuses[MAX_CALLBACKS][12];
    int n, at;
    long delay_ms, error_code;
    long delivery_delay_ms;  /* -1: delay_ms */
    bool in_flight, canceled;
} job_t;

static job_t *jobs;
static uint64_t jobs_pending;

static void job_freed(uv_handle_t *h)
{
    job_t *j = h->data;
    if (j->token) {
        sb_crypto_wipe(j->token, strlen(j->token));
        free(j->token);
    }
    free(j->url);
    free(j->account);
    free(j->from);
    free(j->to);
    free(j->id);
    free(j);
}

static void job_close(job_t *j)
{
    if (j->prev)
        j->prev->next = j->next;
    else
        jobs = j->next;
    if (j->next)
        j->next->prev = j->prev;
    jobs_pending--;
    uv_close((uv_handle_t *)&j->timer, job_freed);
}

static void job_fire(uv_timer_t *t);

static bool is_final_status(const char *st)
{
    return strcmp(st, "delivered") == 0 || strcmp(st, "undelivered") == 0 || strcmp(st, "failed") == 0 ||
           strcmp(st, "read") == 0;
}

/* How long before callback number i of j. */
static uint64_t job_delay(const job_t *j, int i)
{
    return (uint64_t)(j->delivery_delay_ms >= 0 && is_final_status(j->statuses[i]) ? j->delivery_delay_ms
                                                                                    : j->delay_ms);
}

static void job_done(void *arg, const sb_http_client_res_t *res)
{
    job_t *j = arg;
    j->in_flight = false;
    if (res->err == 0 && res->status >= 200 && res->status < 300) {
        cb_stats.ok++;
    } else {
        cb_stats.failed++;
        if (res->err != SB_ECANCELED)
            sb_log_warn("status callback %s: %s (HTTP %d)", j->statuses[j->at],
                        res->err ? sb_strerror(res->err) : "refused", res->status);
    }
    j->at++;
    if (j->canceled || stopping || j->at >= j->n) {
        job_close(j);
        return;
    }
    uv_timer_start(&j->timer, job_fire, job_delay(j, j->at), 0);
}

static bool is_failure_status(const char *st)
{
    return strcmp(st, "failed") == 0 || strcmp(st, "undelivered") == 0;
}

static void twilio_callback_body(job_t *j, const char *status, sb_buf_t *body, char sig[SB_SIG_TWILIO_LEN])
{
    char code[24];
    snprintf(code, sizeof code, "%ld", j->error_code ? j->error_code : 30008);
    sb_sig_param_t params[] = {
        {SB_STR("AccountSid"), sb_str_cstr(j->account)}, {SB_STR("ApiVersion"), SB_STR("2010-04-01")},
        {SB_STR("From"), sb_str_cstr(j->from)},         {SB_STR("MessageSid"), sb_str_cstr(j->id)},
        {SB_STR("MessageStatus"), sb_str_cstr(status)}, {SB_STR("SmsSid"), sb_str_cstr(j->id)},
        {SB_STR("SmsStatus"), sb_str_cstr(status)},     {SB_STR("To"), sb_str_cstr(j->to)},
        {SB_STR("ErrorCode"), sb_str_cstr(code)},
    };
    size_t n = sizeof params / sizeof params[0] - (is_failure_status(status) ? 0 : 1);
    for (size_t i = 0; i < n; i++) {
        if (i)
            sb_buf_puts(body, "&");
        form_escape(body, params[i].name);
        sb_buf_puts(body, "=");
        form_escape(body, params[i].value);
    }
    sb_sig_twilio_compute(sb_str_cstr(j->token), sb_str_cstr(j->url), params, n, sig);
}

static void meta_callback_body(job_t *j, const char *status, sb_buf_t *b)
{
    sb_buf_puts(b, "{\"object\":\"whatsapp_business_account\",\"entry\":[{\"id\":\"100000000000001\",\"changes\":[{"
                   "\"value\":{\"messaging_product\":\"whatsapp\",\"metadata\":{\"display_phone_number\":");
    sb_buf_json_str(b, sb_str_cstr(j->from));
    sb_buf_puts(b, ",\"phone_number_id\":");
    sb_buf_json_str(b, sb_str_cstr(j->from));
    sb_buf_puts(b, "},\"statuses\":[{\"id\":");
    sb_buf_json_str(b, sb_str_cstr(j->id));
    sb_buf_printf(b, ",\"status\":\"%s\",\"timestamp\":\"%lld\",\"recipient_id\":", status, (long long)time(NULL));
    sb_buf_json_str(b, sb_str_cstr(j->to));
    if (is_failure_status(status))
        sb_buf_printf(b, ",\"errors\":[{\"code\":%ld,\"title\":\"Message undeliverable\","
                         "\"message\":\"Message undeliverable\",\"error_data\":{\"details\":\"mock failure\"}}]",
                      j->error_code ? j->error_code : 131026);
    sb_buf_puts(b, "}]},\"field\":\"messages\"}]}]}");
}

static void job_fire(uv_timer_t *t)
{
    job_t *j = t->data;
    const char *status = j->statuses[j->at];
    sb_buf_t body;
    sb_buf_init(&body);
    char sig_line[32 + SB_SIG_META_LEN + 1];
    const char *headers[3] = {NULL, NULL, NULL};
    if (j->provider == P_TWILIO) {
        char sig[SB_SIG_TWILIO_LEN];
        twilio_callback_body(j, status, &body, sig);
        snprintf(sig_line, sizeof sig_line, "X-Twilio-Signature: %.*s", SB_SIG_TWILIO_LEN, sig);
        headers[0] = "Content-Type: application/x-www-form-urlencoded";
    } else {
        char sig[SB_SIG_META_LEN];
        meta_callback_body(j, status, &body);
        sb_sig_meta_compute(sb_str_cstr(opt.meta_secret), sb_str(body.p, body.len), sig);
        snprintf(sig_line, sizeof sig_line, "X-Hub-Signature-256: %.*s", SB_SIG_META_LEN, sig);
        headers[0] = "Content-Type: application/json";
    }
    headers[1] = sig_line;
    sb_http_client_req_t q = {.method = "POST", .url = j->url, .headers = headers,
                              .body = sb_str(body.p, body.len), .timeout_ms = 10000};
    int rc = sb_http_client_request(client, &q, job_done, j);
    sb_buf_cleanup(&body);
    cb_stats.posted++;
    if (rc < 0) {
        cb_stats.failed++;
        sb_log_warn("status callback %s: cannot post: %s", status, sb_strerror(rc));
        job_close(j);
        return;
    }
    j->in_flight = true;
}

/* Schedules b's callbacks for one accepted send. Takes ownership of the strings. */
static void job_start(const behaviour_t *b, enum provider p, char *url, char *token, char *account, char *from,
                      char *to, char *id)
{
    job_t *j = sb_calloc(1, sizeof *j);
    j->provider = p;
    j->url = url;
    j->token = token;
    j->account = account;
    j->from = from;
    j->to = to;
    j->id = id;
    memcpy(j->statuses, b->callbacks, sizeof j->statuses);
    j->n = b->ncallbacks;
    j->delay_ms = b->callback_delay_ms;
    j->delivery_delay_ms = b->delivery_delay_ms;
    j->error_code = b->callback_error_code;
    uv_timer_init(loop, &j->timer);
    j->timer.data = j;
    j->next = jobs;
    if (jobs)
        jobs->prev = j;
    jobs = j;
    jobs_pending++;
    uv_timer_start(&j->timer, job_fire, job_delay(j, 0), 0);
}

/* Drops every job not being posted now; the ones in flight end when their post does. */
static void jobs_cancel(void)
{
    for (job_t *j = jobs, *next; j; j = next) {
        next = j->next;
        j->canceled = true;
        if (!j->in_flight)
            job_close(j);
    }
}

/* ---- Twilio --------------------------------------------------------------------------------------------------- */

/* Decodes "Authorization: Basic base64(user:password)" into dst (NUL-terminated) and splits it. */
static bool basic_auth(sb_http_req_t *req, char *dst, size_t cap, sb_str_t *user, sb_str_t *password)
{
    sb_str_t h;
    if (!sb_http_req_header(req, "authorization", &h))
        return false;
    h = sb_str_trim(h);
    if (h.len < 6 || strncasecmp(h.p, "basic ", 6) != 0)
        return false;
    size_t n = 0;
    if (sb_codec_b64_decode(sb_str_trim(sb_str(h.p + 6, h.len - 6)), SB_B64_STD, dst, cap - 1, &n) < 0)
        return false;
    dst[n] = '\0';
    char *colon = memchr(dst, ':', n);
    if (!colon || colon == dst || colon + 1 == dst + n || memchr(dst, '\0', n))
        return false;
    *user = sb_str(dst, (size_t)(colon - dst));
    *password = sb_str(colon + 1, n - user->len - 1);
    return true;
}

static void handle_twilio(sb_http_req_t *req, sb_str_t path)
{
    sb_str_t rest = sb_str(path.p + sizeof TWILIO_PREFIX - 1, path.len - (sizeof TWILIO_PREFIX - 1));
    const char *slash = memchr(rest.p, '/', rest.len);
    if (!slash || !sb_str_eq_cstr(sb_str(slash, rest.len - (size_t)(slash - rest.p)), "/Messages.json")) {
        respond_twilio_error(req, 404, 20404, "The requested resource was not found");
        return;
    }
    sb_str_t sid = sb_str(rest.p, (size_t)(slash - rest.p));
    if (sb_http_req_method(req) != SB_HTTP_POST) {
        respond_twilio_error(req, 405, 20004, "Method not allowed");
        return;
    }
    char cred[512];
    sb_str_t user, token;
    if (!basic_auth(req, cred, sizeof cred, &user, &token) || !sb_str_eq(user, sid)) {
        twilio_error(20003, "Authenticate", 401);
        sb_http_respond(req, 401, "application/json\r\nwww-authenticate: Basic realm=\"Twilio API\"", out.p,
                        out.len);
        sb_crypto_wipe(cred, sizeof cred);
        return;
    }
    sb_form_t f;
    sb_form_init(&f);
    if (sb_form_parse(&f, sb_http_req_body(req)) < 0) {
        sb_crypto_wipe(cred, sizeof cred);
        respond_twilio_error(req, 400, 21602, "The request body is not a valid form");
        return;
    }
    const sb_form_pair_t *to = sb_form_find_cstr(&f, "To"), *from = sb_form_find_cstr(&f, "From"),
                         *mss = sb_form_find_cstr(&f, "MessagingServiceSid"), *body = sb_form_find_cstr(&f, "Body"),
                         *cb = sb_form_find_cstr(&f, "StatusCallback"),
                         *csid = sb_form_find_cstr(&f, "ContentSid"), *cvars = sb_form_find_cstr(&f, "ContentVariables");
    sb_buf_t media;
    sb_buf_init(&media);
    size_t nmedia = 0;
    for (size_t i = 0; i < f.n; i++) {
        if (sb_str_eq_cstr(f.pairs[i].name, "MediaUrl") && f.pairs[i].value.len) {
            if (nmedia++)
                sb_buf_puts(&media, "\n");
            sb_buf_append_str(&media, f.pairs[i].value);
        }
    }
    if (from && !from->value.len)
        from = NULL;
    if (mss && !mss->value.len)
        mss = NULL;
    if (csid && !csid->value.len)
        csid = NULL;
    bool csid_ok = csid && csid->value.len == 34 && csid->value.p[0] == 'H' && csid->value.p[1] == 'X';
    for (size_t i = 2; csid_ok && i < 34; i++)
        csid_ok = strchr("0123456789abcdefABCDEF", csid->value.p[i]) != NULL;
    json_t *vars = cvars ? json_loadb(cvars->value.p, cvars->value.len, 0, NULL) : NULL;
    bool vars_ok = !cvars || json_is_object(vars);
    json_decref(vars);
    bool wa = from && from->value.len >= 9 && strncasecmp(from->value.p, "whatsapp:", 9) == 0;
    int64_t age = -1;
    if (!to || !to->value.len) {
        respond_twilio_error(req, 400, 21604, "A 'To' phone number is required.");
    } else if (!from && !mss) {
        respond_twilio_error(req, 400, 21603, "A 'From' phone number is required.");
    } else if ((!body || !body->value.len) && !nmedia && !csid) {
        respond_twilio_error(req, 400, 21602, "Message body is required.");
    } else if (csid && !csid_ok) {
        respond_twilio_error(req, 400, 21655, "The ContentSid is Invalid.");
    } else if (!vars_ok) {
        respond_twilio_error(req, 400, 21656, "The ContentVariables Parameter is invalid.");
    } else if (wa && !csid && behaviour_of(sender_find(from->value, true))->window &&
               ((age = inbound_age_us(from->value, to->value)) < 0 || (uint64_t)age >= WINDOW_US)) {
        /* (Twilio reports 63016 in the status callback of a message it queued; the mock answers it at once) */
        sender_t *s = sender_find(from->value, true);
        record_add(s, P_TWILIO, "message", now_us(), dup_str(to->value),
                   dup_str(utf8_prefix(body ? body->value : SB_STR(""), BODY_KEEP)),
                   nmedia ? dup_str(sb_str(media.p, media.len)) : NULL, NULL, 400);
        twilio_error(63016, "Failed to send freeform message because you are outside the allowed window. If you are "
                            "using WhatsApp, please use a Message Template.", 400);
        answer(req, 400, behaviour_of(s)->delay_ms, -1);
    } else {
        sb_str_t sender_name = from ? from->value : mss->value;
        sb_str_t text = body ? body->value : SB_STR("");
        uint64_t t = now_us();
        sender_t *s = sender_find(sender_name, true);
        behaviour_t *b = behaviour_of(s);
        verdict_t v = decide(b, P_TWILIO);
        char msid[35] = "SM";
        if (v.status) {
            twilio_error(v.code, "Mock provider: injected failure", v.status);
            record_add(s, P_TWILIO, "message", t, dup_str(to->value), dup_str(utf8_prefix(text, BODY_KEEP)),
                       nmedia ? dup_str(sb_str(media.p, media.len)) : NULL, NULL, v.status);
            answer(req, v.status, v.delay_ms, v.retry_after);
        } else {
            random_hex(msid + 2, 32);
            msid[34] = '\0';
            char date[48];
            rfc2822_now(date, sizeof date);
            out.len = 0;
            sb_buf_puts(&out, "{\"account_sid\":");
            sb_buf_json_str(&out, sid);
            sb_buf_puts(&out, ",\"api_version\":\"2010-04-01\",\"body\":");
            sb_buf_json_str(&out, text);
            sb_buf_printf(&out, ",\"date_created\":\"%s\",\"date_sent\":null,\"date_updated\":\"%s\","
                                "\"direction\":\"outbound-api\",\"error_code\":null,\"error_message\":null,"
                                "\"from\":",
                          date, date);
            if (from)
                sb_buf_json_str(&out, from->value);
            else
                sb_buf_puts(&out, "null");
            sb_buf_puts(&out, ",\"messaging_service_sid\":");
            if (mss)
                sb_buf_json_str(&out, mss->value);
            else
                sb_buf_puts(&out, "null");
            sb_buf_printf(&out, ",\"num_media\":\"%zu\",\"num_segments\":\"%d\",\"price\":null,"
                                "\"price_unit\":\"USD\",\"sid\":\"%s\",\"status\":\"%s\",\"subresource_uris\":"
                                "{\"media\":\"/2010-04-01/Accounts/%.*s/Messages/%s/Media.json\"},\"to\":",
                          nmedia, num_segments(text), msid, from ? "queued" : "accepted", (int)sid.len, sid.p, msid);
            sb_buf_json_str(&out, to->value);
            sb_buf_printf(&out, ",\"uri\":\"/2010-04-01/Accounts/%.*s/Messages/%s.json\"}", (int)sid.len, sid.p,
                          msid);
            record_add(s, P_TWILIO, "message", t, dup_str(to->value), dup_str(utf8_prefix(text, BODY_KEEP)),
                       nmedia ? dup_str(sb_str(media.p, media.len)) : NULL, sb_strdup(msid), 201);
            if (csid) { /* a Content API template: its sid and variables (JSON text) as given */
                sb_buf_t x;
                sb_buf_init(&x);
                sb_buf_puts(&x, ",\"content_sid\":");
                sb_buf_json_str(&x, csid->value);
                sb_buf_puts(&x, ",\"content_variables\":");
                if (cvars)
                    sb_buf_json_str(&x, cvars->value);
                else
                    sb_buf_puts(&x, "null");
                record_extra(sb_strndup(x.p, x.len));
                sb_buf_cleanup(&x);
            }
            if (cb && cb->value.len && b->ncallbacks)
                job_start(b, P_TWILIO, dup_str(cb->value), dup_str(token), dup_str(sid),
                          dup_str(from ? from->value : mss->value), dup_str(to->value), sb_strdup(msid));
            answer(req, 201, v.delay_ms, -1);
        }
    }
    sb_buf_cleanup(&media);
    sb_form_cleanup(&f);
    sb_crypto_wipe(cred, sizeof cred);
}

/* ---- what voice borrows (ops/mock_voice.h) -------------------------------------------------------------------- */

void mock_random_hex(char *dst, size_t n)
{
    random_hex(dst, n);
}

uint64_t mock_now_us(void)
{
    return now_us();
}

void mock_form_escape(sb_buf_t *b, sb_str_t s)
{
    form_escape(b, s);
}

void mock_rfc2822_now(char *dst, size_t cap)
{
    rfc2822_now(dst, cap);
}

bool mock_twilio_auth(sb_http_req_t *req, sb_str_t sid, char *token, size_t cap)
{
    char cred[512];
    sb_str_t user, password;
    bool ok = basic_auth(req, cred, sizeof cred, &user, &password) && sb_str_eq(user, sid) && password.len < cap;
    if (ok) {
        memcpy(token, password.p, password.len);
        token[password.len] = '\0';
    } else {
        twilio_error(20003, "Authenticate", 401);
        sb_http_respond(req, 401, "application/json\r\nwww-authenticate: Basic realm=\"Twilio API\"", out.p,
                        out.len);
    }
    sb_crypto_wipe(cred, sizeof cred);
    return ok;
}

void mock_twilio_error(sb_http_req_t *req, int status, int code, const char *message)
{
    respond_twilio_error(req, status, code, message);
}

int mock_twilio_verdict(sb_http_req_t *req, sb_str_t sender, const char *type, sb_str_t to, sb_str_t body,
                        const char *id, long *delay_ms)
{
    uint64_t t = now_us();
    sender_t *s = sender_find(sender, true);
    verdict_t v = decide(behaviour_of(s), P_TWILIO);
    record_add(s, P_TWILIO, type, t, dup_str(to), dup_str(utf8_prefix(body, BODY_KEEP)), NULL,
               v.status ? NULL : sb_strdup(id), v.status ? v.status : 201);
    *delay_ms = v.delay_ms;
    if (!v.status)
        return 0;
    twilio_error(v.code, "Mock provider: injected failure", v.status);
    answer(req, v.status, v.delay_ms, v.retry_after);
    return v.status;
}

void mock_answer_json(sb_http_req_t *req, int status, long delay_ms, const char *body, size_t len)
{
    if (body != out.p) {
        out.len = 0;
        sb_buf_append(&out, body, len);
    }
    answer(req, status, delay_ms, -1);
}

/* ---- Meta ----------------------------------------------------------------------------------------------------- */

/* "v" digits ["." digits] */
static bool is_graph_version(sb_str_t s)
{
    if (s.len < 2 || s.p[0] != 'v')
        return false;
    bool dot = false, digit = false;
    for (size_t i = 1; i < s.len; i++) {
        if (s.p[i] >= '0' && s.p[i] <= '9') {
            digit = true;
        } else if (s.p[i] == '.' && digit && !dot) {
            dot = true;
            digit = false;
        } else {
            return false;
        }
    }
    return digit;
}

/* Matches /{version}/{id}/messages or /{id}/messages; stores the id. */
static bool meta_path(sb_str_t path, sb_str_t *pnid)
{
    sb_str_t seg[4];
    size_t n = 0;
    if (!path.len || path.p[0] != '/')
        return false;
    size_t i = 1;
    while (i <= path.len) {
        size_t j = i;
        while (j < path.len && path.p[j] != '/')
            j++;
        if (n == 4 || j == i)
            return false;
        seg[n++] = sb_str(path.p + i, j - i);
        i = j + 1;
    }
    if (n == 3 && is_graph_version(seg[0]) && sb_str_eq_cstr(seg[2], "messages")) {
        *pnid = seg[1];
        return true;
    }
    if (n == 2 && sb_str_eq_cstr(seg[1], "messages") && !is_graph_version(seg[0])) {
        *pnid = seg[0];
        return true;
    }
    return false;
}

static const char *jstr(const json_t *o, const char *key)
{
    const json_t *v = json_object_get(o, key);
    return json_is_string(v) && json_string_length(v) ? json_string_value(v) : NULL;
}

static const char *const fb_tags[] = {"HUMAN_AGENT", "CONFIRMED_EVENT_UPDATE", "POST_PURCHASE_UPDATE",
                                      "ACCOUNT_UPDATE", NULL};

/* Whether s (NULL: no) is one of list's strings (NULL-terminated). */
static bool in_cstr_list(const char *s, const char *const *list)
{
    for (; s && *list; list++)
        if (strcmp(s, *list) == 0)
            return true;
    return false;
}

/* The Messenger Platform's Send API (Messenger and Instagram): POST /{page or IG account id}/messages with
 * {"recipient":{"id"},"messaging_type","tag"?,"message":{"text"} or {"attachment":{"type","payload":{"url"}}}}. j is
 * the parsed body (borrowed). */
static void handle_fb(sb_http_req_t *req, sb_str_t account, json_t *j)
{
    const json_t *recipient = json_object_get(j, "recipient"), *msg = json_object_get(j, "message");
    const json_t *att = json_object_get(msg, "attachment");
    const char *rid = jstr(recipient, "id"), *mtype = jstr(j, "messaging_type"), *tag = jstr(j, "tag");
    const char *text = jstr(msg, "text"), *atype = jstr(att, "type");
    const char *url = jstr(json_object_get(att, "payload"), "url");
    char problem[128] = "";
    if (!rid)
        snprintf(problem, sizeof problem, "(#100) The parameter recipient is required");
    else if (!mtype || (strcmp(mtype, "RESPONSE") != 0 && strcmp(mtype, "UPDATE") != 0 &&
                        strcmp(mtype, "MESSAGE_TAG") != 0))
        snprintf(problem, sizeof problem, "(#100) param messaging_type must be one of {RESPONSE, UPDATE, "
                                          "MESSAGE_TAG}");
    else if (strcmp(mtype, "MESSAGE_TAG") == 0 ? !in_cstr_list(tag, fb_tags) : tag != NULL)
        snprintf(problem, sizeof problem, "(#100) Param tag must be one of {HUMAN_AGENT, CONFIRMED_EVENT_UPDATE, "
                                          "POST_PURCHASE_UPDATE, ACCOUNT_UPDATE} with MESSAGE_TAG");
    else if (!json_is_object(msg) || (text ? att != NULL : !att))
        snprintf(problem, sizeof problem, "(#100) Must send either message text or an attachment");
    else if (att && (!url || !atype || (strcmp(atype, "image") != 0 && strcmp(atype, "video") != 0 &&
                                        strcmp(atype, "audio") != 0 && strcmp(atype, "file") != 0)))
        snprintf(problem, sizeof problem, "(#100) param message[attachment] must have a type (image, video, "
                                          "audio, file) and payload[url]");
    if (problem[0]) {
        respond_meta_error(req, 400, 100, problem);
        return;
    }
    uint64_t t = now_us();
    sender_t *s = sender_find(account, true);
    behaviour_t *b = behaviour_of(s);
    const char *type = att ? atype : "text";
    sb_buf_t x;
    sb_buf_init(&x);
    sb_buf_printf(&x, ",\"messaging_type\":\"%s\",\"tag\":", mtype);
    sb_buf_json_cstr(&x, tag);
    char *rec_body = dup_str(utf8_prefix(sb_str_cstr(text ? text : ""), BODY_KEEP));
    char *rec_media = url ? sb_strdup(url) : NULL;
    int64_t age = b->window ? inbound_age_us(account, sb_str_cstr(rid)) : 0;
    bool open = age >= 0 && (uint64_t)age < WINDOW_US;
    bool tagged = tag && (strcmp(tag, "HUMAN_AGENT") != 0 || (age >= 0 && (uint64_t)age < HUMAN_AGENT_US));
    if (b->window && !open && !tagged) {
        meta_error_full(10, 2018278, "(#10) This message is sent outside of allowed window.", NULL);
        record_add(s, P_META, type, t, sb_strdup(rid), rec_body, rec_media, NULL, 400);
        record_extra(sb_strndup(x.p, x.len));
        sb_buf_cleanup(&x);
        answer(req, 400, b->delay_ms, -1);
        return;
    }
    verdict_t v = decide(b, P_META);
    if (v.status) {
        meta_error(v.code, "OAuthException", "Mock provider: injected failure");
        record_add(s, P_META, type, t, sb_strdup(rid), rec_body, rec_media, NULL, v.status);
        record_extra(sb_strndup(x.p, x.len));
        sb_buf_cleanup(&x);
        answer(req, v.status, v.delay_ms, v.retry_after);
        return;
    }
    char mid[2 + 40 + 1] = "m_";
    random_hex(mid + 2, 40);
    mid[sizeof mid - 1] = '\0';
    out.len = 0;
    sb_buf_puts(&out, "{\"recipient_id\":");
    sb_buf_json_str(&out, sb_str_cstr(rid));
    sb_buf_printf(&out, ",\"message_id\":\"%s\"}", mid);
    record_add(s, P_META, type, t, sb_strdup(rid), rec_body, rec_media, sb_strdup(mid), 200);
    record_extra(sb_strndup(x.p, x.len));
    sb_buf_cleanup(&x);
    answer(req, 200, v.delay_ms, -1);
}

static void handle_meta(sb_http_req_t *req, sb_str_t pnid)
{
    if (sb_http_req_method(req) != SB_HTTP_POST) {
        respond_meta_error(req, 400, 100, "Unsupported get request.");
        return;
    }
    sb_str_t h;
    if (!sb_http_req_header(req, "authorization", &h) || (h = sb_str_trim(h)).len <= 7 ||
        strncasecmp(h.p, "bearer ", 7) != 0 || !sb_str_trim(sb_str(h.p + 7, h.len - 7)).len) {
        respond_meta_error(req, 401, 190, "Invalid OAuth access token - Cannot parse access token");
        return;
    }
    sb_str_t raw = sb_http_req_body(req);
    json_error_t jerr;
    json_t *j = json_loadb(raw.p ? raw.p : "", raw.len, 0, &jerr);
    if (json_is_object(j) && json_object_get(j, "recipient") && !json_object_get(j, "messaging_product")) {
        handle_fb(req, pnid, j); /* Messenger or Instagram */
        json_decref(j);
        return;
    }
    const char *mp = j ? jstr(j, "messaging_product") : NULL, *to = j ? jstr(j, "to") : NULL;
    const char *type = j && jstr(j, "type") ? jstr(j, "type") : "text";
    const json_t *content = j ? json_object_get(j, type) : NULL;
    const char *text = NULL, *media = NULL;
    char problem[96] = "";
    if (!j || !json_is_object(j)) {
        snprintf(problem, sizeof problem, "(#100) The request body is not a JSON object");
    } else if (!mp || strcmp(mp, "whatsapp") != 0) {
        snprintf(problem, sizeof problem, "(#100) The parameter messaging_product is required.");
    } else if (!to) {
        snprintf(problem, sizeof problem, "(#100) The parameter to is required.");
    } else if (strcmp(type, "text") == 0) {
        if (!(text = jstr(content, "body")))
            snprintf(problem, sizeof problem, "(#100) The parameter text['body'] is required.");
    } else if (strcmp(type, "image") == 0 || strcmp(type, "video") == 0 || strcmp(type, "audio") == 0 ||
               strcmp(type, "document") == 0 || strcmp(type, "sticker") == 0) {
        media = jstr(content, "link") ? jstr(content, "link") : jstr(content, "id");
        text = jstr(content, "caption");
        if (!media)
            snprintf(problem, sizeof problem, "(#100) The parameter %s['link'] or %s['id'] is required.", type,
                     type);
    } else if (strcmp(type, "template") == 0) {
        if (!(text = jstr(content, "name")))
            snprintf(problem, sizeof problem, "(#100) The parameter template['name'] is required.");
    }
    if (problem[0]) {
        json_decref(j);
        respond_meta_error(req, 400, 100, problem);
        return;
    }
    uint64_t t = now_us();
    sender_t *s = sender_find(pnid, true);
    behaviour_t *b = behaviour_of(s);
    char *rec_body = dup_str(utf8_prefix(sb_str_cstr(text ? text : ""), BODY_KEEP));
    char *rec_media = media ? sb_strdup(media) : NULL;
    int64_t age = b->window ? inbound_age_us(pnid, sb_str_cstr(to)) : 0;
    if (b->window && strcmp(type, "template") != 0 && (age < 0 || (uint64_t)age >= WINDOW_US)) {
        /* (the Cloud API reports this one in a failed status webhook; the mock answers it at once) */
        meta_error_full(131047, 0, "(#131047) Re-engagement message",
                        "Message failed to send because more than 24 hours have passed since the customer last "
                        "replied to this number.");
        record_add(s, P_META, type, t, sb_strdup(to), rec_body, rec_media, NULL, 400);
        answer(req, 400, b->delay_ms, -1);
        json_decref(j);
        return;
    }
    verdict_t v = decide(b, P_META);
    if (v.status) {
        meta_error(v.code, "OAuthException", "Mock provider: injected failure");
        record_add(s, P_META, type, t, sb_strdup(to), rec_body, rec_media, NULL, v.status);
        answer(req, v.status, v.delay_ms, v.retry_after);
        json_decref(j);
        return;
    }
    unsigned char rnd[27];
    for (size_t i = 0; i < sizeof rnd; i += 8) {
        uint64_t r = rng_next();
        memcpy(rnd + i, &r, sizeof rnd - i < 8 ? sizeof rnd - i : 8);
    }
    char wamid[6 + 36 + 1] = "wamid.";
    sb_codec_b64_encode(wamid + 6, rnd, sizeof rnd, SB_B64_STD);
    wamid[sizeof wamid - 1] = '\0';
    char digits[64];
    size_t nd = 0;
    for (const char *p = to; *p && nd < sizeof digits - 1; p++)
        if (*p >= '0' && *p <= '9')
            digits[nd++] = *p;
    digits[nd] = '\0';
    out.len = 0;
    sb_buf_puts(&out, "{\"messaging_product\":\"whatsapp\",\"contacts\":[{\"input\":");
    sb_buf_json_str(&out, sb_str_cstr(to));
    sb_buf_printf(&out, ",\"wa_id\":\"%s\"}],\"messages\":[{\"id\":\"%s\"%s}]}", digits, wamid,
                  strcmp(type, "template") == 0 ? ",\"message_status\":\"accepted\"" : "");
    record_add(s, P_META, type, t, sb_strdup(to), rec_body, rec_media, sb_strdup(wamid), 200);
    if (strcmp(type, "template") == 0) { /* the template as it came: name, language, components */
        sb_buf_t x;
        sb_buf_init(&x);
        char *tj = json_dumps(content, JSON_COMPACT);
        sb_buf_printf(&x, ",\"template\":%s", tj ? tj : "null");
        free(tj);
        record_extra(sb_strndup(x.p, x.len));
        sb_buf_cleanup(&x);
    }
    if (opt.meta_webhook && b->ncallbacks)
        job_start(b, P_META, sb_strdup(opt.meta_webhook), NULL, NULL, dup_str(pnid), sb_strdup(digits),
                  sb_strdup(wamid));
    answer(req, 200, v.delay_ms, -1);
    json_decref(j);
}

/* ---- control -------------------------------------------------------------------------------------------------- */

static void respond_json_out(sb_http_req_t *req, int status)
{
    sb_http_respond(req, status, "application/json", out.p, out.len);
}

static void control_error(sb_http_req_t *req, int status, const char *message)
{
    sb_http_respond_error(req, status, status == 404 ? "not_found" : "bad_request", message);
}

static void behaviour_json(const behaviour_t *b, const char *sender)
{
    out.len = 0;
    sb_buf_puts(&out, "{\"sender\":");
    sb_buf_json_cstr(&out, sender);
    sb_buf_printf(&out, ",\"fail_next\":%ld,\"fail_status\":%ld,\"fail_code\":%ld,\"retry_after\":", b->fail_next,
                  b->fail_status, b->fail_code);
    if (b->retry_after >= 0)
        sb_buf_printf(&out, "%ld", b->retry_after);
    else
        sb_buf_puts(&out, "null");
    sb_buf_printf(&out, ",\"delay_ms\":%ld,\"permanent\":", b->delay_ms);
    if (b->perm_status)
        sb_buf_printf(&out, "{\"status\":%ld,\"code\":%ld}", b->perm_status, b->perm_code);
    else
        sb_buf_puts(&out, "null");
    sb_buf_puts(&out, ",\"callbacks\":[");
    for (int i = 0; i < b->ncallbacks; i++)
        sb_buf_printf(&out, "%s\"%s\"", i ? "," : "", b->callbacks[i]);
    sb_buf_printf(&out, "],\"callback_delay_ms\":%ld,\"callback_error_code\":%ld,\"window\":%s,\"delivery_delay_ms\":",
                  b->callback_delay_ms, b->callback_error_code, b->window ? "true" : "false");
    if (b->delivery_delay_ms >= 0)
        sb_buf_printf(&out, "%ld}", b->delivery_delay_ms);
    else
        sb_buf_puts(&out, "null}");
}

bool mock_json_int(json_t *o, const char *key, long min, long max, long *dst, char *err, size_t errlen)
{
    json_t *v = json_object_get(o, key);
    if (!v)
        return true;
    if (!json_is_integer(v) || json_integer_value(v) < min || json_integer_value(v) > max) {
        snprintf(err, errlen, "%s: an integer in %ld..%ld", key, min, max);
        return false;
    }
    *dst = (long)json_integer_value(v);
    return true;
}

/* Applies the fields of o to a copy of *b; on success stores it. */
static bool behaviour_update(behaviour_t *b, json_t *o, char *err, size_t errlen)
{
    static const char *const known[] = {"sender", "fail_next", "fail_status", "fail_code", "retry_after",
                                        "delay_ms", "permanent", "callbacks", "callback_delay_ms",
                                        "callback_error_code", "delivery_delay_ms", "clear", "window"};
    static const char *const statuses[] = {"queued", "sending", "sent", "delivered", "undelivered", "failed",
                                           "read"};
    const char *key;
    json_t *v;
    json_object_foreach(o, key, v) {
        bool found = false;
        for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
            found |= strcmp(key, known[i]) == 0;
        if (!found) {
            snprintf(err, errlen, "unknown field %.64s", key);
            return false;
        }
    }
    behaviour_t n = *b;
    if (!mock_json_int(o, "fail_next", 0, 1000000000, &n.fail_next, err, errlen) ||
        !mock_json_int(o, "fail_status", 400, 599, &n.fail_status, err, errlen) ||
        !mock_json_int(o, "fail_code", 0, 100000000, &n.fail_code, err, errlen) ||
        !mock_json_int(o, "delay_ms", 0, MAX_DELAY_MS, &n.delay_ms, err, errlen) ||
        !mock_json_int(o, "callback_delay_ms", 0, MAX_DELAY_MS, &n.callback_delay_ms, err, errlen) ||
        !mock_json_int(o, "callback_error_code", 0, 100000000, &n.callback_error_code, err, errlen))
        return false;
    if ((v = json_object_get(o, "window"))) {
        if (!json_is_boolean(v)) {
            snprintf(err, errlen, "window: true or false");
            return false;
        }
        n.window = json_is_true(v);
    }
    if ((v = json_object_get(o, "delivery_delay_ms"))) {
        if (json_is_null(v))
            n.delivery_delay_ms = -1;
        else if (!mock_json_int(o, "delivery_delay_ms", 0, MAX_DELAY_MS, &n.delivery_delay_ms, err, errlen))
            return false;
    }
    if ((v = json_object_get(o, "retry_after"))) {
        if (json_is_null(v))
            n.retry_after = -1;
        else if (!mock_json_int(o, "retry_after", 0, 86400, &n.retry_after, err, errlen))
            return false;
    }
    if ((v = json_object_get(o, "permanent"))) {
        if (json_is_null(v)) {
            n.perm_status = n.perm_code = 0;
        } else if (!json_is_object(v)) {
            snprintf(err, errlen, "permanent: an object {\"status\",\"code\"} or null");
            return false;
        } else {
            n.perm_status = 500;
            n.perm_code = 0;
            if (!mock_json_int(v, "status", 400, 599, &n.perm_status, err, errlen) ||
                !mock_json_int(v, "code", 0, 100000000, &n.perm_code, err, errlen))
                return false;
        }
    }
    if ((v = json_object_get(o, "callbacks"))) {
        if (!json_is_array(v) || json_array_size(v) > MAX_CALLBACKS) {
            snprintf(err, errlen, "callbacks: an array of at most %d statuses", MAX_CALLBACKS);
            return false;
        }
        n.ncallbacks = 0;
        size_t i;
        json_t *e;
        json_array_foreach(v, i, e) {
            const char *st = json_string_value(e);
            bool ok = false;
            for (size_t k = 0; st && k < sizeof statuses / sizeof statuses[0]; k++)
                ok |= strcmp(st, statuses[k]) == 0;
            if (!ok) {
                snprintf(err, errlen, "callbacks: each one of queued, sending, sent, delivered, undelivered, "
                                      "failed, read");
                return false;
            }
            snprintf(n.callbacks[n.ncallbacks++], sizeof n.callbacks[0], "%s", st);
        }
    }
    *b = n;
    return true;
}

static void control_behaviour(sb_http_req_t *req, const sb_form_t *q)
{
    char sender_buf[256] = "";
    const char *sender = NULL;
    if (sb_http_req_method(req) == SB_HTTP_GET) {
        if (query_param(q, "sender", sender_buf, sizeof sender_buf))
            sender = sender_buf;
        sender_t *s = sender ? sender_find(sb_str_cstr(sender), false) : NULL;
        behaviour_json(sender ? behaviour_of(s) : &global_beh, sender);
        respond_json_out(req, 200);
        return;
    }
    if (sb_http_req_method(req) != SB_HTTP_POST) {
        control_error(req, 405, "GET or POST");
        return;
    }
    sb_str_t raw = sb_http_req_body(req);
    json_error_t jerr;
    json_t *o = json_loadb(raw.p ? raw.p : "", raw.len, JSON_REJECT_DUPLICATES, &jerr);
    if (!o || !json_is_object(o)) {
        json_decref(o);
        control_error(req, 400, "the body must be a JSON object");
        return;
    }
    json_t *sv = json_object_get(o, "sender"), *clear = json_object_get(o, "clear");
    if (sv && (!json_is_string(sv) || !json_string_length(sv) || json_string_length(sv) >= sizeof sender_buf)) {
        json_decref(o);
        control_error(req, 400, "sender: a non-empty string");
        return;
    }
    if (clear && !json_is_boolean(clear)) {
        json_decref(o);
        control_error(req, 400, "clear: true or false");
        return;
    }
    behaviour_t *b = &global_beh;
    if (sv) {
        snprintf(sender_buf, sizeof sender_buf, "%s", json_string_value(sv)); /* o is freed before the answer */
        sender = sender_buf;
        sender_t *s = sender_find(sb_str_cstr(sender), true);
        if (json_is_true(clear))
            sb_free(s->beh);
        if (!s->beh && json_object_size(o) > (clear ? 2u : 1u)) {
            s->beh = sb_malloc(sizeof *s->beh);
            *s->beh = behaviour_default;
        }
        b = behaviour_of(s);
    } else if (json_is_true(clear)) {
        global_beh = behaviour_default;
    }
    char err[160];
    bool ok = behaviour_update(b, o, err, sizeof err);
    json_decref(o);
    if (!ok) {
        control_error(req, 400, err);
        return;
    }
    behaviour_json(b, sender);
    respond_json_out(req, 200);
}

static void record_json(const record_t *r)
{
    sb_buf_printf(&out, "{\"t_us\":%llu,\"sender\":", (unsigned long long)r->t_us);
    sb_buf_json_str(&out, sb_str_cstr(r->sender->name));
    sb_buf_printf(&out, ",\"provider\":\"%s\",\"type\":", r->provider == P_TWILIO ? "twilio" : "meta");
    sb_buf_json_str(&out, sb_str_cstr(r->type));
    sb_buf_puts(&out, ",\"to\":");
    sb_buf_json_str(&out, sb_str_cstr(r->to));
    sb_buf_puts(&out, ",\"body\":");
    sb_buf_json_str(&out, sb_str_cstr(r->body));
    sb_buf_puts(&out, ",\"media\":[");
    for (const char *m = r->media; m && *m;) {
        const char *nl = strchr(m, '\n');
        size_t len = nl ? (size_t)(nl - m) : strlen(m);
        if (m != r->media)
            sb_buf_puts(&out, ",");
        sb_buf_json_str(&out, sb_str(m, len));
        m = nl ? nl + 1 : m + len;
    }
    sb_buf_puts(&out, "],\"id\":");
    sb_buf_json_cstr(&out, r->id);
    sb_buf_printf(&out, ",\"status\":%d", r->status);
    if (r->extra)
        sb_buf_puts(&out, r->extra);
    sb_buf_puts(&out, "}");
}

static void control_received(sb_http_req_t *req, const sb_form_t *q)
{
    char name[256], lim[24];
    sender_t *s = NULL;
    bool filter = query_param(q, "sender", name, sizeof name);
    long long limit = -1;
    if (query_param(q, "limit", lim, sizeof lim) && sb_str_to_ll(sb_str_cstr(lim), 0, 1000000000, &limit) < 0) {
        control_error(req, 400, "limit: a number");
        return;
    }
    if (filter)
        s = sender_find(sb_str_cstr(name), false);
    uint64_t count = filter ? (s ? s->count : 0) : total_count;
    size_t retained = 0;
    if (!filter || s)
        for (size_t i = 0; i < ring_len; i++)
            retained += !filter || ring[(ring_head + i) % opt.max_records].sender == s;
    size_t skip = limit >= 0 && (size_t)limit < retained ? retained - (size_t)limit : 0;
    out.len = 0;
    sb_buf_printf(&out, "{\"count\":%llu,\"retained\":%zu,\"requests\":[", (unsigned long long)count, retained);
    bool first = true;
    if (!filter || s) {
        for (size_t i = 0; i < ring_len; i++) {
            const record_t *r = &ring[(ring_head + i) % opt.max_records];
            if (filter && r->sender != s)
                continue;
            if (skip) {
                skip--;
                continue;
            }
            if (!first)
                sb_buf_puts(&out, ",");
            first = false;
            record_json(r);
        }
    }
    sb_buf_puts(&out, "]}");
    respond_json_out(req, 200);
}

static void control_stats(sb_http_req_t *req)
{
    out.len = 0;
    sb_buf_printf(&out, "{\"total\":%llu,\"senders\":{", (unsigned long long)total_count);
    bool first = true;
    for (size_t b = 0; b < SENDER_BUCKETS; b++) {
        for (const sender_t *s = senders[b]; s; s = s->next) {
            if (!s->count)
                continue;
            if (!first)
                sb_buf_puts(&out, ",");
            first = false;
            sb_buf_json_str(&out, sb_str_cstr(s->name));
            sb_buf_printf(&out, ":{\"count\":%llu,\"accepted\":%llu,\"failed\":%llu,\"first_t_us\":%llu,"
                                "\"last_t_us\":%llu,\"max_per_second\":%llu}",
                          (unsigned long long)s->count, (unsigned long long)s->accepted,
                          (unsigned long long)s->failed, (unsigned long long)s->first_us,
                          (unsigned long long)s->last_us, (unsigned long long)s->max_per_s);
        }
    }
    sb_buf_printf(&out, "},\"callbacks\":{\"posted\":%llu,\"ok\":%llu,\"failed\":%llu,\"pending\":%llu}}",
                  (unsigned long long)cb_stats.posted, (unsigned long long)cb_stats.ok,
                  (unsigned long long)cb_stats.failed, (unsigned long long)jobs_pending);
    respond_json_out(req, 200);
}

static void forget_all(void)
{
    for (size_t i = 0; i < ring_len; i++)
        record_clear(&ring[(ring_head + i) % opt.max_records]);
    ring_head = ring_len = 0;
    for (size_t b = 0; b < SENDER_BUCKETS; b++) {
        while (senders[b]) {
            sender_t *s = senders[b];
            senders[b] = s->next;
            free(s->name);
            free(s->beh);
            free(s->win);
            free(s);
        }
    }
    total_count = 0;
    global_beh = behaviour_default;
    inbounds_clear();
}

static void control_reset(sb_http_req_t *req)
{
    if (sb_http_req_method(req) != SB_HTTP_POST) {
        control_error(req, 405, "POST");
        return;
    }
    forget_all();
    jobs_cancel();
    mock_voice_reset();
    memset(&cb_stats, 0, sizeof cb_stats);
    out.len = 0;
    sb_buf_puts(&out, "{\"ok\":true}");
    respond_json_out(req, 200);
}

/* POST /_mock/inbound {"sender","user","ago_s"?}: user wrote to sender ago_s seconds ago (default 0). */
static void control_inbound(sb_http_req_t *req)
{
    if (sb_http_req_method(req) != SB_HTTP_POST) {
        control_error(req, 405, "POST");
        return;
    }
    sb_str_t raw = sb_http_req_body(req);
    json_t *o = json_loadb(raw.p ? raw.p : "", raw.len, 0, NULL);
    const char *sender = jstr(o, "sender"), *user = jstr(o, "user");
    long ago = 0;
    char err[96] = "";
    const char *key;
    json_t *v;
    json_object_foreach(o, key, v) {
        if (strcmp(key, "sender") != 0 && strcmp(key, "user") != 0 && strcmp(key, "ago_s") != 0)
            snprintf(err, sizeof err, "unknown field %.40s", key);
    }
    if (!json_is_object(o) || !sender || !user)
        snprintf(err, sizeof err, "{\"sender\",\"user\",\"ago_s\"?} required");
    else if (!err[0])
        mock_json_int(o, "ago_s", 0, 365L * 86400, &ago, err, sizeof err);
    if (err[0]) {
        json_decref(o);
        control_error(req, 400, err);
        return;
    }
    inbound_note(sb_str_cstr(sender), sb_str_cstr(user), (uint64_t)ago * 1000000);
    json_decref(o);
    out.len = 0;
    sb_buf_puts(&out, "{\"ok\":true}");
    respond_json_out(req, 200);
}

static void handle_control(sb_http_req_t *req, sb_str_t path)
{
    sb_form_t q;
    sb_form_init(&q);
    if (sb_form_parse(&q, sb_http_req_query(req)) < 0) {
        control_error(req, 400, "malformed query");
        return;
    }
    if (sb_str_eq_cstr(path, "/_mock/behaviour"))
        control_behaviour(req, &q);
    else if (sb_str_eq_cstr(path, "/_mock/received"))
        control_received(req, &q);
    else if (sb_str_eq_cstr(path, "/_mock/stats"))
        control_stats(req);
    else if (sb_str_eq_cstr(path, "/_mock/reset"))
        control_reset(req);
    else if (sb_str_eq_cstr(path, "/_mock/inbound"))
        control_inbound(req);
    else
        control_error(req, 404, "no such control endpoint");
    sb_form_cleanup(&q);
}

static void handler(void *arg, sb_http_req_t *req)
{
    (void)arg;
    sb_str_t path = sb_http_req_path(req), pnid;
    if (mock_voice_handle(req, path))
        return;
    if (sb_str_has_prefix(path, SB_STR("/_mock/")))
        handle_control(req, path);
    else if (sb_str_has_prefix(path, SB_STR(TWILIO_PREFIX)))
        handle_twilio(req, path);
    else if (meta_path(path, &pnid))
        handle_meta(req, pnid);
    else
        control_error(req, 404, "no such endpoint");
}

/* ---- process -------------------------------------------------------------------------------------------------- */

static void stop(void)
{
    stopping = true;
    uv_signal_stop(&sig_term);
    uv_signal_stop(&sig_int);
    sb_http_server_close(server);
    while (pendings) /* their connections are gone: the answers are dropped, the requests freed */
        pending_fire(&pendings->timer);
    jobs_cancel();
    mock_voice_stop();
    sb_http_client_destroy(client); /* in-flight callbacks end with SB_ECANCELED, closing their jobs */
    uv_close((uv_handle_t *)&sig_term, NULL);
    uv_close((uv_handle_t *)&sig_int, NULL);
}

static void on_signal(uv_signal_t *h, int signum)
{
    (void)h;
    sb_log_info("%s: stopping", signum == SIGTERM ? "SIGTERM" : "SIGINT");
    stop();
}

static void usage(FILE *f)
{
    fprintf(f, "usage: mock-provider --listen HOST:PORT [--meta-webhook URL --meta-app-secret SECRET]\n"
               "                     [--max-records N]\n"
               "  Twilio:  POST /2010-04-01/Accounts/{sid}/Messages.json   Meta: POST [/vNN.N]/{id}/messages\n"
               "           POST /2010-04-01/Accounts/{sid}/Calls.json, POST .../Calls/{CallSid}.json\n"
               "  control: POST /_mock/behaviour, GET /_mock/received, GET /_mock/stats, POST /_mock/reset,\n"
               "           POST /_mock/inbound (the 24-hour window),\n"
               "           POST|GET /_mock/calls, GET /_mock/calls/{CallSid}, GET|WS /_mock/voice-app\n"
               "  (the file header of ops/mock_provider.c documents every field)\n");
}

static bool parse_listen(const char *s)
{
    const char *colon = strrchr(s, ':');
    if (!colon || colon == s || (size_t)(colon - s) >= sizeof opt.host)
        return false;
    const char *h = s;
    size_t hl = (size_t)(colon - s);
    if (h[0] == '[' && hl >= 2 && h[hl - 1] == ']') {
        h++;
        hl -= 2;
    }
    memcpy(opt.host, h, hl);
    opt.host[hl] = '\0';
    long long port;
    if (sb_str_to_ll(sb_str_cstr(colon + 1), 1, 65535, &port) < 0)
        return false;
    opt.port = (int)port;
    return true;
}

int main(int argc, char **argv)
{
    const char *listen = NULL;
    for (int i = 1; i < argc; i += 2) { /* every option but -h and -v takes a value */
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(a, "-v") == 0 || strcmp(a, "--version") == 0) {
            printf("mock-provider %s\n", SB_VERSION);
            return 0;
        } else if (v && strcmp(a, "--listen") == 0) {
            listen = v;
        } else if (v && strcmp(a, "--meta-webhook") == 0) {
            opt.meta_webhook = v;
        } else if (v && strcmp(a, "--meta-app-secret") == 0) {
            opt.meta_secret = v;
        } else if (v && strcmp(a, "--max-records") == 0) {
            long long n;
            if (sb_str_to_ll(sb_str_cstr(v), 1, 100000000, &n) < 0) {
                fprintf(stderr, "mock-provider: --max-records: a number in 1..100000000\n");
                return 2;
            }
            opt.max_records = (size_t)n;
        } else {
            usage(stderr);
            return 2;
        }
    }
    if (!listen || !parse_listen(listen)) {
        fprintf(stderr, "mock-provider: --listen HOST:PORT is required\n");
        usage(stderr);
        return 2;
    }
    if (!opt.meta_webhook != !opt.meta_secret) {
        fprintf(stderr, "mock-provider: --meta-webhook and --meta-app-secret go together\n");
        return 2;
    }
    sb_log_set_context("mock");
    signal(SIGPIPE, SIG_IGN);
    if (sb_crypto_random(&rng_state, sizeof rng_state) < 0)
        rng_state = uv_hrtime();
    global_beh = behaviour_default;
    ring = sb_calloc(opt.max_records, sizeof *ring);
    sb_buf_init(&out);

    loop = uv_default_loop();
    sb_http_server_opts_t so = {.host = opt.host, .port = opt.port, .max_header_bytes = 16384,
                                .max_body_bytes = 1 << 20, .header_timeout_s = 10, .idle_timeout_s = 120,
                                .handler = handler};
    int rc = sb_http_server_create(loop, &so, &server);
    if (rc < 0) {
        fprintf(stderr, "mock-provider: cannot listen on %s: %s\n", listen, sb_strerror(rc));
        free(ring);
        return 1;
    }
    sb_http_client_opts_t co = {.user_agent = "switchboard-mock-provider/" SB_VERSION, .timeout_ms = 10000};
    if ((rc = sb_http_client_create(loop, &co, &client)) < 0) {
        fprintf(stderr, "mock-provider: http client: %s\n", sb_strerror(rc));
        return 1;
    }
    mock_voice_init(loop, client);
    uv_signal_init(loop, &sig_term);
    uv_signal_init(loop, &sig_int);
    uv_signal_start(&sig_term, on_signal, SIGTERM);
    uv_signal_start(&sig_int, on_signal, SIGINT);
    sb_log_info("mock-provider %s listening on %s:%d (meta webhook %s, keeping %zu records)", SB_VERSION, opt.host,
                opt.port, opt.meta_webhook ? opt.meta_webhook : "off", opt.max_records);

    uv_run(loop, UV_RUN_DEFAULT);
    rc = uv_loop_close(loop);
    forget_all();
    free(ring);
    sb_buf_cleanup(&out);
    if (rc < 0) {
        sb_log_error("handles still open at exit");
        return 1;
    }
    sb_log_info("bye");
    return 0;
}
