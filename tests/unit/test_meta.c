/* Unit tests for adapters/meta: Meta webhook bodies (WhatsApp Cloud API, Messenger, Instagram) into events, what is
 * skipped, what fails the whole body, the bounds, and the verification handshake.
 *
 * The payloads follow Meta's documentation (ids and texts are the documentation's own examples where it gives them):
 *   WhatsApp  messages webhook reference, and its per-type pages (text, image, location, interactive, status, errors):
 *             https://developers.facebook.com/documentation/business-messaging/whatsapp/webhooks/reference/messages
 *             .../reference/messages/image, .../location, .../interactive, .../status, .../errors
 *             Status payloads with conversation and pricing are shaped as captured deliveries published alongside
 *             (e.g. phone_number_id 590968830767958 / 114896151713920 in public webhook dumps).
 *   Messenger messages, message_deliveries, message_reads, message_echoes, message_reactions event references:
 *             https://developers.facebook.com/documentation/business-messaging/messenger-platform/webhooks/webhook-events/messages
 *             .../webhook-events/message-deliveries, .../message-reads, .../message-echoes, .../message-reactions
 *   Instagram https://developers.facebook.com/documentation/business-messaging/instagram-messaging/webhooks and
 *             https://developers.facebook.com/documentation/instagram-platform/webhooks/examples (object "instagram",
 *             entry.id = the IG professional account id, messaging[] as Messenger's, is_echo for our own sends);
 *             messaging_seen arrives as {"read":{"mid":...}} without a watermark, sometimes without sender and
 *             recipient (as in captures published by integrators).
 *   Verification: the hub.mode / hub.verify_token / hub.challenge GET of Meta's webhooks getting-started guide. */
#include "adapters/meta.h"

#include "proto/err.h"
#include "proto/line.h"
#include "proto/str.h"
#include "tests/tap.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* JSON written as C tokens: the preprocessor adds the quoting (string literals inside keep their quotes). */
#define JSON(...) #__VA_ARGS__

static sb_event_list_t L;
static sb_meta_diag_t D;

/* Parses a NUL-terminated body into the global list (emptied first); returns the code. */
static int parse(const char *body)
{
    sb_event_list_cleanup(&L);
    memset(&D, 0x5a, sizeof D);
    return sb_meta_parse(body, strlen(body), &L, &D);
}

static int parse_n(const char *body, size_t len)
{
    sb_event_list_cleanup(&L);
    memset(&D, 0x5a, sizeof D);
    return sb_meta_parse(body, len, &L, &D);
}

static const char *s_or(const char *s)
{
    return s ? s : "(null)";
}

/* ---- WhatsApp -------------------------------------------------------------------------------------------------- */

TEST(wa_text)
{
    /* the text message example of the messages webhook reference */
    const char *body = JSON({
        "object": "whatsapp_business_account",
        "entry": [{
            "id": "102290129340398",
            "changes": [{
                "value": {
                    "messaging_product": "whatsapp",
                    "metadata": {"display_phone_number": "15550783881", "phone_number_id": "106540352242922"},
                    "contacts": [{"profile": {"name": "Sheena Nelson"}, "wa_id": "16505551234"}],
                    "messages": [{
                        "from": "16505551234",
                        "id": "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA=",
                        "timestamp": "1749416383",
                        "type": "text",
                        "text": {"body": "Does it come in another color?"}
                    }]
                },
                "field": "messages"
            }]
        }]
    });
    is_int(parse(body), 0, "parses");
    is_int(L.n, 1, "one event");
    is_int(D.skipped, 0, "nothing skipped");
    is_str(D.error, "", "no error text");
    sb_event_t *e = &L.v[0];
    is_int(e->kind, SB_EV_MESSAGE, "message");
    is_int(e->channel, SB_CH_META_WHATSAPP, "channel meta_whatsapp");
    is_str(e->account, "106540352242922", "account = phone_number_id");
    is_str(e->provider_id, "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA=", "wamid");
    is_int(e->timestamp, 1749416383, "timestamp from a string");
    is_str(e->from, "+16505551234", "from: the wa_id as E.164 (as sends store their recipient)");
    is_str(e->to, "15550783881", "to = display number");
    is_str(e->body, "Does it come in another color?", "body");
    is_str(e->profile_name, "Sheena Nelson", "profile name");
    is_int(e->nmedia, 0, "no media");
    ok(e->status == NULL && e->error_code == NULL && e->error_message == NULL, "no status fields");
}

/* One WhatsApp change holding the given messages array (and the Sheena contact). */
#define WA_MSGS(...)                                                                                                 \
    JSON({"object": "whatsapp_business_account",                                                                     \
          "entry": [{"id": "102290129340398",                                                                        \
                     "changes": [{"value": {"messaging_product": "whatsapp",                                         \
                                            "metadata": {"display_phone_number": "15550783881",                      \
                                                         "phone_number_id": "106540352242922"},                      \
                                            "contacts": [{"profile": {"name": "Sheena Nelson"},                      \
                                                          "wa_id": "16505551234"}],                                  \
                                            "messages": [__VA_ARGS__]},                                              \
                                  "field": "messages"}]}]})

TEST(wa_media)
{
    /* image messages webhook reference: image {caption, mime_type, sha256, id, url} */
    is_int(parse(WA_MSGS({"from": "16505551234", "id": "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQUFERjg0NDEzNDdFODU3MUMxMAA=",
                          "timestamp": "1744344496", "type": "image",
                          "image": {"caption": "Best succulent ever?", "mime_type": "image/jpeg",
                                    "sha256": "ZgO7ahTeMsDUR0gRo4VedCjpb9T5k9SGOMg6bhjYVUo=",
                                    "id": "1003383421387256",
                                    "url": "https://lookaside.fbsbx.com/whatsapp_business/attachments/?mid=1003383421387256"}})),
           0, "image parses");
    is_int(L.n, 1, "one event");
    sb_event_t *e = &L.v[0];
    is_int(e->nmedia, 1, "one media");
    is_str(e->media[0].id, "1003383421387256", "media id");
    is_str(e->media[0].content_type, "image/jpeg", "mime type");
    ok(e->media[0].url == NULL, "no url: media arrive as ids");
    is_str(e->body, "Best succulent ever?", "caption is the body");

    const char *kinds[] = {"audio", "video", "document", "sticker"};
    for (size_t i = 0; i < 4; i++) {
        char body[1024];
        snprintf(body, sizeof body,
                 "{\"object\":\"whatsapp_business_account\",\"entry\":[{\"id\":\"1\",\"changes\":[{\"field\":"
                 "\"messages\",\"value\":{\"metadata\":{\"phone_number_id\":\"106540352242922\"},\"messages\":[{"
                 "\"from\":\"16505551234\",\"id\":\"wamid.%zu\",\"timestamp\":\"1744344496\",\"type\":\"%s\","
                 "\"%s\":{\"mime_type\":\"x/y\",\"sha256\":\"h\",\"id\":\"77%zu\",\"filename\":\"a.pdf\"}}]}}]}]}",
                 i, kinds[i], kinds[i], i);
        is_int(parse(body), 0, "%s parses", kinds[i]);
        is_int(L.n, 1, "%s: one event", kinds[i]);
        if (L.n != 1)
            continue;
        is_str(L.v[0].body, "", "%s: no caption, empty body", kinds[i]);
        is_int(L.v[0].nmedia, 1, "%s: one media", kinds[i]);
        char want[16];
        snprintf(want, sizeof want, "77%zu", i);
        is_str(L.v[0].media[0].id, want, "%s: media id", kinds[i]);
        is_str(L.v[0].to, "106540352242922", "%s: no display number, to = phone_number_id", kinds[i]);
        ok(L.v[0].profile_name == NULL, "%s: no contacts, no profile name", kinds[i]);
    }

    /* a media message without its media id names nothing to fetch */
    is_int(parse(WA_MSGS({"from": "16505551234", "id": "wamid.X", "timestamp": "1", "type": "image",
                          "image": {"mime_type": "image/jpeg"}})),
           0, "image without id parses");
    is_int(L.n, 0, "skipped");
    is_int(D.skipped, 1, "counted");
}

TEST(wa_location_interactive_button)
{
    /* location messages webhook reference (example values of its parameter table) */
    is_int(parse(WA_MSGS({"from": "16505551234", "id": "wamid.LOC", "timestamp": "1744344496",
                          "location": {"address": "101 Forest Ave, Palo Alto, CA 94301",
                                       "latitude": 37.44221496582, "longitude": -122.16139984131,
                                       "name": "Philz Coffee", "url": "https://philzcoffee.com/"},
                          "type": "location"})),
           0, "location parses");
    is_int(L.n, 1, "one event");
    is_str(L.v[0].body, "Philz Coffee\n101 Forest Ave, Palo Alto, CA 94301\n37.442215,-122.161400",
           "name, address, coordinates");

    is_int(parse(WA_MSGS({"from": "16505551234", "id": "wamid.LOC2", "timestamp": "1", "type": "location",
                          "location": {"latitude": 91, "longitude": 0}})),
           0, "location out of range parses");
    is_int(L.n, 0, "nothing to show: skipped");

    is_int(parse(WA_MSGS({"from": "16505551234", "id": "wamid.LOC3", "timestamp": "1", "type": "location",
                          "location": {"latitude": -33.5, "longitude": 151}})),
           0, "bare coordinates");
    is_str(L.n ? L.v[0].body : NULL, "-33.500000,151.000000", "coordinates only");

    /* interactive messages webhook reference: list_reply and button_reply */
    is_int(parse(WA_MSGS({"context": {"from": "15550783881", "id": "wamid.HBgLMTQxMjU1NTA4MjkVAgASGBQzQUNCNjk5RDUwNUZGMUZEM0VBRAA="},
                          "from": "16505551234", "id": "wamid.LIST", "timestamp": "1739321024", "type": "interactive",
                          "interactive": {"type": "list_reply",
                                          "list_reply": {"id": "priority_express", "title": "Priority Mail Express",
                                                         "description": "Next Day to 2 Days"}}},
                         {"from": "16505551234", "id": "wamid.BTN", "timestamp": "1739321025", "type": "interactive",
                          "interactive": {"type": "button_reply",
                                          "button_reply": {"id": "cancel-button", "title": "Cancel"}}},
                         {"from": "16505551234", "id": "wamid.NFM", "timestamp": "1739321026", "type": "interactive",
                          "interactive": {"type": "nfm_reply", "nfm_reply": {"response_json": "{}"}}})),
           0, "interactive parses");
    is_int(L.n, 2, "list and button replies");
    is_int(D.skipped, 1, "flow reply skipped");
    is_str(L.v[0].body, "Priority Mail Express", "list_reply title");
    is_str(L.v[1].body, "Cancel", "button_reply title");
    is_str(L.v[1].profile_name, "Sheena Nelson", "profile by wa_id with two messages");

    /* quick-reply button of a template */
    is_int(parse(WA_MSGS({"context": {"from": "15550783881", "id": "wamid.CTX"}, "from": "16505551234",
                          "id": "wamid.QR", "timestamp": "1739321024", "type": "button",
                          "button": {"payload": "Unsubscribe", "text": "Stop promotions"}})),
           0, "button parses");
    is_str(L.n ? L.v[0].body : NULL, "Stop promotions", "button text");
}

TEST(wa_skipped_types)
{
    is_int(parse(WA_MSGS({"from": "16505551234", "id": "wamid.E", "timestamp": "1", "type": "text", "text": {"body": ""}},
                         {"from": "16505551234", "id": "wamid.R", "timestamp": "1", "type": "reaction",
                          "reaction": {"message_id": "wamid.X", "emoji": "\\u2764"}},
                         {"from": "16505551234", "id": "wamid.U", "timestamp": "1", "type": "unsupported",
                          "errors": [{"code": 131051, "title": "Message type unknown"}]},
                         {"from": "16505551234", "id": "wamid.S", "timestamp": "1", "type": "system",
                          "system": {"body": "User changed number", "type": "user_changed_number"}},
                         {"from": "16505551234", "id": "wamid.C", "timestamp": "1", "type": "contacts",
                          "contacts": [{"name": {"formatted_name": "A"}}]},
                         {"from": "16505551234", "id": "wamid.T", "timestamp": "1", "type": "text",
                          "text": {"body": "kept"}},
                         {"from": "16505551234", "id": "wamid.NOTYPE", "timestamp": "1"},
                         {"id": "wamid.NOFROM", "timestamp": "1", "type": "text", "text": {"body": "x"}},
                         "not an object")),
           0, "parses");
    is_int(L.n, 1, "only the text");
    is_str(L.n ? L.v[0].provider_id : NULL, "wamid.T", "the text kept");
    is_int(D.skipped, 8, "eight skipped (an empty text among them)");

    /* changes that are not messages, and the errors webhook */
    const char *body = JSON({"object": "whatsapp_business_account", "entry": [{"id": "102290129340398", "changes": [
        {"value": {"event": "APPROVED", "message_template_id": 12345678, "message_template_name": "my_template",
                   "message_template_language": "en_US", "reason": "NONE"},
         "field": "message_template_status_update"},
        {"value": {"messaging_product": "whatsapp",
                   "metadata": {"display_phone_number": "15550783881", "phone_number_id": "106540352242922"},
                   "errors": [{"code": 130429, "title": "Rate limit hit", "message": "Rate limit hit",
                               "error_data": {"details": "Message failed to send because there were too many messages sent from this phone number in a short period of time"},
                               "href": "/documentation/business-messaging/whatsapp/support/error-codes"}]},
         "field": "messages"},
        {"field": "messages", "value": "not an object"},
        {"value": {"metadata": {"phone_number_id": "106540352242922"}, "messages": []}}
    ]}, {"id": "2"}, {"id": "3", "changes": []}, 42]});
    is_int(parse(body), 0, "parses");
    is_int(L.n, 0, "no events");
    is_int(D.skipped, 7, "4 changes, 2 empty entries, 1 non-object entry");
}

TEST(wa_statuses)
{
    /* status messages webhook reference; sent with conversation and pricing, then delivered, then read */
    const char *body = JSON({"object": "whatsapp_business_account", "entry": [{"id": "1314702302917944", "changes": [{
        "value": {"messaging_product": "whatsapp",
                  "metadata": {"display_phone_number": "15556459128", "phone_number_id": "590968830767958"},
                  "statuses": [
                      {"id": "wamid.HBgNNTUxNjk5MjMxODIyMhUCABEYEjgxQkVFRDVBQTVDODFDOTg3MQA=", "status": "sent",
                       "timestamp": "1750857384", "recipient_id": "5516992318222",
                       "conversation": {"id": "a75d17ad06104c51166f948319b03c6a", "expiration_timestamp": "1750943820",
                                        "origin": {"type": "service"}},
                       "pricing": {"billable": true, "pricing_model": "CBP", "category": "service"}},
                      {"id": "wamid.HBgNNTUxNjk5MjMxODIyMhUCABEYEjgxQkVFRDVBQTVDODFDOTg3MQA=", "status": "delivered",
                       "timestamp": "1750857385", "recipient_id": "5516992318222"},
                      {"id": "wamid.HBgNNTUxNjk5MjMxODIyMhUCABEYEjgxQkVFRDVBQTVDODFDOTg3MQA=", "status": "read",
                       "timestamp": "1750857390", "recipient_id": "5516992318222"},
                      {"id": "wamid.DEL", "status": "deleted", "timestamp": "1750857390"},
                      {"status": "sent", "timestamp": "1750857390"}]},
        "field": "messages"}]}]});
    is_int(parse(body), 0, "parses");
    is_int(L.n, 3, "three statuses");
    is_int(D.skipped, 2, "unknown status and missing id skipped");
    const char *want[] = {"sent", "delivered", "read"};
    for (size_t i = 0; i < 3 && i < L.n; i++) {
        sb_event_t *e = &L.v[i];
        is_int(e->kind, SB_EV_STATUS, "%s: status", want[i]);
        is_int(e->channel, SB_CH_META_WHATSAPP, "%s: channel", want[i]);
        is_str(e->status, want[i], "%s: status value", want[i]);
        is_str(e->account, "590968830767958", "%s: account", want[i]);
        is_str(e->provider_id, "wamid.HBgNNTUxNjk5MjMxODIyMhUCABEYEjgxQkVFRDVBQTVDODFDOTg3MQA=", "%s: wamid", want[i]);
        is_str(e->to, "5516992318222", "%s: to = recipient_id", want[i]);
        ok(e->error_code == NULL && e->error_message == NULL, "%s: no error", want[i]);
        ok(e->from == NULL && e->body == NULL, "%s: no message fields", want[i]);
    }
    is_int(L.n == 3 ? L.v[2].timestamp : 0, 1750857390, "read timestamp");
}

TEST(wa_failed_status)
{
    /* a failed status carries errors[] with code, title, message, error_data.details (status and errors pages) */
    const char *body = JSON({"object": "whatsapp_business_account", "entry": [{"id": "102290129340398", "changes": [{
        "value": {"messaging_product": "whatsapp",
                  "metadata": {"display_phone_number": "15550783881", "phone_number_id": "106540352242922"},
                  "statuses": [
                      {"id": "wamid.HBgLMTY1MDM4Nzk0MzkVAgARGBI3MTE5MjVBOTE3MDk5QUVFM0YA", "status": "failed",
                       "timestamp": "1739321024", "recipient_id": "16505551234",
                       "errors": [{"code": 131050, "title": "Unable to deliver the message. This recipient has chosen to stop receiving marketing messages on WhatsApp from your business",
                                   "message": "Unable to deliver the message. This recipient has chosen to stop receiving marketing messages on WhatsApp from your business",
                                   "error_data": {"details": "Unable to deliver the message. This recipient has chosen to stop receiving marketing messages on WhatsApp from your business"},
                                   "href": "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/"}]},
                      {"id": "wamid.RATE", "status": "failed", "timestamp": "1739321025", "recipient_id": "16505551234",
                       "errors": [{"code": 130429, "title": "Rate limit hit", "message": "Rate limit hit",
                                   "error_data": {"details": "Message failed to send because there were too many messages sent from this phone number in a short period of time"}}]},
                      {"id": "wamid.TITLE", "status": "failed", "timestamp": "1739321026",
                       "errors": [{"code": "131047", "title": "Re-engagement message"}]},
                      {"id": "wamid.BARE", "status": "failed", "timestamp": "1739321027"}]},
        "field": "messages"}]}]});
    is_int(parse(body), 0, "parses");
    is_int(L.n, 4, "four failed statuses");
    if (L.n != 4)
        return;
    is_str(L.v[0].status, "failed", "failed");
    is_str(L.v[0].error_code, "131050", "integer code as decimal");
    is_str(L.v[0].error_message,
           "Unable to deliver the message. This recipient has chosen to stop receiving marketing messages on WhatsApp "
           "from your business",
           "message; details equal to it not repeated");
    is_str(L.v[1].error_code, "130429", "second code");
    is_str(L.v[1].error_message,
           "Rate limit hit: Message failed to send because there were too many messages sent from this phone number "
           "in a short period of time",
           "message and details");
    is_str(L.v[2].error_code, "131047", "string code");
    is_str(L.v[2].error_message, "Re-engagement message", "title when no message");
    ok(L.v[2].to == NULL, "no recipient_id, no to");
    ok(L.v[3].error_code == NULL && L.v[3].error_message == NULL, "failed without errors[]");
}

TEST(wa_batch_and_profiles)
{
    /* two entries, several changes, messages and statuses mixed: all kept, in body order */
    const char *body = JSON({"object": "whatsapp_business_account", "entry": [
        {"id": "A", "changes": [
            {"field": "messages", "value": {"metadata": {"display_phone_number": "15550000001", "phone_number_id": "111"},
             "contacts": [{"profile": {"name": "Ann"}, "wa_id": "441"}, {"profile": {"name": "Bob"}, "wa_id": "442"}],
             "messages": [{"from": "442", "id": "wamid.1", "timestamp": "100", "type": "text", "text": {"body": "one"}},
                          {"from": "441", "id": "wamid.2", "timestamp": "101", "type": "text", "text": {"body": "two"}},
                          {"from": "443", "id": "wamid.3", "timestamp": "102", "type": "text", "text": {"body": "three"}}]}},
            {"field": "messages", "value": {"metadata": {"phone_number_id": "111"},
             "statuses": [{"id": "wamid.out1", "status": "delivered", "timestamp": 103, "recipient_id": "441"}]}}]},
        {"id": "B", "changes": [
            {"field": "messages", "value": {"metadata": {"display_phone_number": "15550000002", "phone_number_id": 222},
             "contacts": [{"profile": {"name": "Cy"}, "wa_id": "999"}],
             "messages": [{"from": "16505550000", "id": "wamid.4", "timestamp": "104", "type": "text", "text": {"body": "four"}}],
             "statuses": [{"id": "wamid.out2", "status": "read", "timestamp": "105", "recipient_id": "999"}]}}]}
    ]});
    is_int(parse(body), 0, "parses");
    is_int(L.n, 6, "six events");
    is_int(D.skipped, 0, "none skipped");
    if (L.n != 6)
        return;
    const char *ids[] = {"wamid.1", "wamid.2", "wamid.3", "wamid.out1", "wamid.4", "wamid.out2"};
    for (size_t i = 0; i < 6; i++)
        is_str(L.v[i].provider_id, ids[i], "order %zu", i);
    is_str(L.v[0].profile_name, "Bob", "matched by wa_id");
    is_str(L.v[1].profile_name, "Ann", "matched by wa_id");
    ok(L.v[2].profile_name == NULL, "no contact for 443 among several messages");
    is_str(L.v[3].account, "111", "status account");
    is_int(L.v[3].timestamp, 103, "integer timestamp");
    is_str(L.v[4].account, "222", "integer phone_number_id");
    is_str(L.v[4].profile_name, "Cy", "the only contact of a one-message change");
    is_str(L.v[4].to, "15550000002", "to");
    is_str(L.v[5].status, "read", "status after messages of the same change");
}

TEST(wa_identifiers_and_text)
{
    /* identifiers must be printable ASCII; text is any UTF-8 (here via escapes, a surrogate pair included) */
    const char body[] = "{\"object\":\"whatsapp_business_account\",\"entry\":[{\"id\":\"1\",\"changes\":[{\"field\":"
                        "\"messages\",\"value\":{\"metadata\":{\"phone_number_id\":\"106540352242922\"},"
                        "\"contacts\":[{\"profile\":{\"name\":\"Jos\\u00e9 \xf0\x9f\x98\x80\"},\"wa_id\":\"1\"}],"
                        "\"messages\":["
                        "{\"from\":\"1\",\"id\":\"wamid.ok\",\"timestamp\":\"5\",\"type\":\"text\","
                        "\"text\":{\"body\":\"caf\\u00e9 \\ud83d\\ude00 \xe2\x82\xac\"}},"
                        "{\"from\":\"1 2\",\"id\":\"wamid.space\",\"timestamp\":\"5\",\"type\":\"text\",\"text\":{\"body\":\"x\"}},"
                        "{\"from\":\"1\",\"id\":\"wamid.\\u00e9\",\"timestamp\":\"5\",\"type\":\"text\",\"text\":{\"body\":\"x\"}},"
                        "{\"from\":\"1\",\"id\":\"wamid.\\n\",\"timestamp\":\"5\",\"type\":\"text\",\"text\":{\"body\":\"x\"}},"
                        "{\"from\":\"1\",\"id\":\"\",\"timestamp\":\"5\",\"type\":\"text\",\"text\":{\"body\":\"x\"}},"
                        "{\"from\":\"1\",\"id\":[\"wamid.array\"],\"timestamp\":\"5\",\"type\":\"text\",\"text\":{\"body\":\"x\"}},"
                        "{\"from\":\"1\",\"id\":\"wamid.nobody\",\"timestamp\":\"5\",\"type\":\"text\",\"text\":{\"body\":7}}"
                        "]}}]}]}";
    is_int(parse(body), 0, "parses");
    is_int(L.n, 1, "one good message");
    is_int(D.skipped, 6, "bad identifiers and a non-string body skipped");
    is_str(L.n ? L.v[0].body : NULL, "caf\xc3\xa9 \xf0\x9f\x98\x80 \xe2\x82\xac", "escapes decoded to UTF-8");
    is_str(L.n ? L.v[0].profile_name : NULL, "Jos\xc3\xa9 \xf0\x9f\x98\x80", "raw and escaped UTF-8 name");

    /* an identifier of exactly SB_META_MAX_ID bytes is kept; one more byte is not */
    char *big = malloc(2 * SB_META_MAX_ID + 600);
    for (int extra = 0; extra <= 1; extra++) {
        char id[SB_META_MAX_ID + 2];
        memset(id, 'w', sizeof id);
        id[SB_META_MAX_ID + extra] = '\0';
        snprintf(big, 2 * SB_META_MAX_ID + 600,
                 "{\"object\":\"whatsapp_business_account\",\"entry\":[{\"changes\":[{\"field\":\"messages\","
                 "\"value\":{\"metadata\":{\"phone_number_id\":\"1\"},\"statuses\":[{\"id\":\"%s\",\"status\":"
                 "\"sent\"}]}}]}]}",
                 id);
        is_int(parse(big), 0, "id of %d bytes parses", SB_META_MAX_ID + extra);
        is_int(L.n, extra ? 0 : 1, "id of %d bytes %s", SB_META_MAX_ID + extra, extra ? "skipped" : "kept");
    }
    free(big);
}

TEST(timestamps)
{
    struct {
        const char *ts;
        long long want;
    } cases[] = {
        {"\"1749416383\"", 1749416383}, {"1749416383", 1749416383},   {"1458692752478", 1458692752},
        {"\"1458692752478\"", 1458692752}, {"99999999999", 99999999999LL}, {"100000000000", 100000000},
        {"0", 0},                         {"-5", 0},                  {"\"-5\"", 0},
        {"\"+5\"", 0},                    {"\" 5\"", 0},               {"\"12x\"", 0},
        {"\"\"", 0},                      {"1.5e9", 0},                {"null", 0},
        {"\"99999999999999999999\"", 0},  {"9223372036854775807", 0},  {"253402300799999", 253402300799LL},
        {"253402300800000", 0},           {"253402300799", 253402300},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char body[512];
        snprintf(body, sizeof body,
                 "{\"object\":\"whatsapp_business_account\",\"entry\":[{\"changes\":[{\"field\":\"messages\","
                 "\"value\":{\"metadata\":{\"phone_number_id\":\"1\"},\"statuses\":[{\"id\":\"w\",\"status\":"
                 "\"sent\",\"timestamp\":%s}]}}]}]}",
                 cases[i].ts);
        is_int(parse(body), 0, "timestamp %s parses", cases[i].ts);
        is_int(L.n ? L.v[0].timestamp : -1, cases[i].want, "timestamp %s", cases[i].ts);
    }
}

/* ---- Messenger ------------------------------------------------------------------------------------------------- */

TEST(messenger)
{
    /* messages event reference: a text (with quick_reply), a reply, an attachment; echoes, deliveries, reads,
     * reactions of their own references */
    const char *body = JSON({"object": "page", "entry": [
        {"id": "682498302938465", "time": 1518479195594, "messaging": [
            {"sender": {"id": "1254459154682919"}, "recipient": {"id": "682498302938465"}, "timestamp": 1458692752478,
             "message": {"mid": "mid.1457764197618:41d102a3e1ae206a38", "text": "hello, world!",
                         "quick_reply": {"payload": "DEVELOPER_DEFINED_PAYLOAD"}}},
            {"sender": {"id": "1254459154682919"}, "recipient": {"id": "682498302938465"}, "timestamp": 1518479195308,
             "message": {"mid": "mid.$cAAJdkrCd2ORnva8ErFhjGm0X_Q_c",
                         "attachments": [{"type": "image", "payload": {"url": "https://scontent.xx.fbcdn.net/v/t1.15752-9/image.png"}},
                                         {"type": "file", "payload": {"url": "https://cdn.fbsbx.com/v/t59.2708-21/doc.pdf"}},
                                         {"type": "fallback", "title": "shared link"},
                                         {"type": "image", "payload": {"url": "javascript:alert(1)"}}]}},
            {"sender": {"id": "682498302938465"}, "recipient": {"id": "1254459154682919"}, "timestamp": 1457764197627,
             "message": {"is_echo": true, "app_id": 1517776481860111, "metadata": "DEVELOPER_DEFINED_METADATA_STRING",
                         "mid": "mid.1457764197618:41d102a3e1ae206a38", "text": "our own reply"}},
            {"sender": {"id": "1254459154682919"}, "recipient": {"id": "682498302938465"},
             "delivery": {"mids": ["mid.1458668856218:ed81099e15d3f4f233", "mid.1458668856218:ed81099e15d3f4f234"],
                          "watermark": 1458668856253}},
            {"sender": {"id": "1254459154682919"}, "recipient": {"id": "682498302938465"}, "timestamp": 1458668856463,
             "read": {"watermark": 1458668856253}},
            {"sender": {"id": "1254459154682919"}, "recipient": {"id": "682498302938465"}, "timestamp": 1458668856463,
             "reaction": {"reaction": "love", "emoji": "\\u2764", "action": "react",
                          "mid": "mid.1458668856218:ed81099e15d3f4f233"}},
            {"sender": {"id": "1254459154682919"}, "recipient": {"id": "682498302938465"}, "timestamp": 1458668856463,
             "postback": {"mid": "m_AG5Hz2Uq7tuwNEhXfYYKj8mJEM_QPpz5jdCK48PnKAjSdjfipqxqMvK8ma6AC8fplwlqLP_5cgXIbu7I3rBN0P",
                          "title": "Get Started", "payload": "GET_STARTED"}},
            {"sender": {"id": "1254459154682919"}, "recipient": {"id": "682498302938465"}, "timestamp": 1458668856463,
             "postback": {"title": "No mid", "payload": "X"}},
            {"sender": {"id": "1254459154682919"}, "recipient": {"id": "682498302938465"}, "timestamp": 1458668856463,
             "delivery": {"watermark": 1458668856253}},
            {"sender": {"id": "1254459154682919"}, "recipient": {"id": "682498302938465"}, "timestamp": 1458668856463,
             "message": {"mid": "mid.empty", "text": "", "attachments": [{"type": "fallback"}]}}
        ]},
        {"id": "682498302938465", "time": 1570053170926, "standby": [
            {"sender": {"id": "1254459154682919"}, "recipient": {"id": "682498302938465"}, "timestamp": 1570053170673,
             "message": {"mid": "mid.standby", "text": "to the other app"}}]}
    ]});
    is_int(parse(body), 0, "parses");
    is_int(L.n, 5, "text, attachments, two deliveries, postback");
    is_int(D.skipped, 7, "echo, read watermark, reaction, postback without mid, delivery without mids, empty, standby");
    if (L.n != 5)
        return;
    sb_event_t *e = &L.v[0];
    is_int(e->kind, SB_EV_MESSAGE, "message");
    is_int(e->channel, SB_CH_META_MESSENGER, "channel meta_messenger");
    is_str(e->account, "682498302938465", "account = page id");
    is_str(e->to, "682498302938465", "to = page id");
    is_str(e->from, "1254459154682919", "from = PSID");
    is_str(e->provider_id, "mid.1457764197618:41d102a3e1ae206a38", "mid");
    is_int(e->timestamp, 1458692752, "milliseconds to seconds");
    is_str(e->body, "hello, world!", "text");
    ok(e->profile_name == NULL, "no profile name on Messenger");

    e = &L.v[1];
    is_str(e->body, "", "attachments only: empty body");
    is_int(e->nmedia, 2, "two usable attachments (no payload, non-http URL dropped)");
    is_str(e->media[0].url, "https://scontent.xx.fbcdn.net/v/t1.15752-9/image.png", "first url");
    is_str(e->media[1].url, "https://cdn.fbsbx.com/v/t59.2708-21/doc.pdf", "second url");
    ok(e->media[0].id == NULL && e->media[0].content_type == NULL, "no id, no MIME type");

    const char *mids[] = {"mid.1458668856218:ed81099e15d3f4f233", "mid.1458668856218:ed81099e15d3f4f234"};
    for (int i = 0; i < 2; i++) {
        e = &L.v[2 + i];
        is_int(e->kind, SB_EV_STATUS, "delivery %d: status", i);
        is_str(e->status, "delivered", "delivery %d: delivered", i);
        is_str(e->provider_id, mids[i], "delivery %d: mid", i);
        is_str(e->account, "682498302938465", "delivery %d: page", i);
        is_str(e->to, "1254459154682919", "delivery %d: to the customer", i);
        is_int(e->timestamp, 1518479195, "delivery %d: no timestamp, entry time", i);
    }
    e = &L.v[4];
    is_int(e->kind, SB_EV_MESSAGE, "postback is a message");
    is_str(e->body, "Get Started", "postback title");
}

TEST(messenger_many_attachments)
{
    char body[4096];
    size_t n = (size_t)snprintf(body, sizeof body,
                                "{\"object\":\"page\",\"entry\":[{\"id\":\"P\",\"messaging\":[{\"sender\":{\"id\":"
                                "\"U\"},\"recipient\":{\"id\":\"P\"},\"timestamp\":1,\"message\":{\"mid\":\"m1\","
                                "\"attachments\":[");
    for (int i = 0; i < 15; i++)
        n += (size_t)snprintf(body + n, sizeof body - n, "%s{\"type\":\"image\",\"payload\":{\"url\":\"https://x/%d\"}}",
                              i ? "," : "", i);
    snprintf(body + n, sizeof body - n, "]}}]}]}");
    is_int(parse(body), 0, "parses");
    is_int(L.n, 1, "one message");
    is_int(L.n ? L.v[0].nmedia : 0, SB_EVENT_MAX_MEDIA, "media capped");
    is_str(L.n ? L.v[0].media[9].url : NULL, "https://x/9", "first ten kept in order");
    is_int(L.n ? L.v[0].timestamp : -1, 1, "small value is seconds");
}

/* ---- Instagram ------------------------------------------------------------------------------------------------- */

TEST(instagram)
{
    const char *body = JSON({"object": "instagram", "entry": [
        {"id": "17841405822304914", "time": 1569262486134, "messaging": [
            {"sender": {"id": "5872613349465137"}, "recipient": {"id": "17841405822304914"}, "timestamp": 1569262485349,
             "message": {"mid": "aWdfZAG1faXRlbToxOklHTWVzc2FnZAUlEOjE3ODQxNDA1ODIyMzA0OTE0OjM0MDI4MjM2Njg0MTcxMDMwMTI0NDI3NjAyMjcwMDc0Njg1NTg1OTozMTA4NTg3NzAyMjQ5MTU0NjI2NjQ5NDIxNzQ0Njc1MjY0MAZDZD",
                         "text": "Hi! Is this still available?"}},
            {"sender": {"id": "5872613349465137"}, "recipient": {"id": "17841405822304914"}, "timestamp": 1569262485350,
             "message": {"mid": "ig.mid.2", "attachments": [{"type": "image", "payload": {"url": "https://lookaside.fbsbx.com/ig_messaging_cdn/?asset_id=1"}},
                                                           {"type": "video", "payload": {"url": "https://lookaside.fbsbx.com/ig_messaging_cdn/?asset_id=2"}}]}},
            {"sender": {"id": "17841405822304914"}, "recipient": {"id": "5872613349465137"}, "timestamp": 1569262485351,
             "message": {"mid": "ig.mid.echo", "text": "thanks!", "is_echo": true}},
            {"sender": {"id": "5872613349465137"}, "recipient": {"id": "17841405822304914"}, "timestamp": 1569262485352,
             "message": {"mid": "ig.mid.deleted", "is_deleted": true}},
            {"sender": {"id": "5872613349465137"}, "recipient": {"id": "17841405822304914"}, "timestamp": 1569262485353,
             "read": {"mid": "ig.mid.ours"}},
            {"timestamp": 1784201823243, "read": {"mid": "ig.mid.ours2"}}
        ]}
    ]});
    is_int(parse(body), 0, "parses");
    is_int(L.n, 4, "text, attachments, two reads");
    is_int(D.skipped, 2, "echo and deleted skipped");
    if (L.n != 4)
        return;
    sb_event_t *e = &L.v[0];
    is_int(e->channel, SB_CH_META_INSTAGRAM, "channel meta_instagram");
    is_str(e->account, "17841405822304914", "account = IG id");
    is_str(e->from, "5872613349465137", "from = IGSID");
    is_str(e->body, "Hi! Is this still available?", "text");
    is_int(e->timestamp, 1569262485, "seconds");
    is_int(L.v[1].nmedia, 2, "two attachments");
    is_str(L.v[2].status, "read", "read with a mid");
    is_str(L.v[2].provider_id, "ig.mid.ours", "read mid");
    is_str(L.v[2].to, "5872613349465137", "read by the customer");
    is_str(L.v[3].account, "17841405822304914", "no recipient: entry id");
    ok(L.v[3].to == NULL, "no sender: no to");
    is_int(L.v[3].timestamp, 1784201823, "own timestamp");

    /* a message without a sender cannot be attributed */
    is_int(parse(JSON({"object": "instagram", "entry": [{"id": "1", "messaging": [
                          {"recipient": {"id": "1"}, "timestamp": 1, "message": {"mid": "m", "text": "who?"}}]}]})),
           0, "parses");
    is_int(L.n, 0, "skipped");
    is_int(D.skipped, 1, "counted");
}

/* ---- the envelope and the bounds --------------------------------------------------------------------------------- */

TEST(envelope_errors)
{
    struct {
        const char *body;
        size_t len; /* 0: strlen */
        int want;
        const char *what;
    } cases[] = {
        {"", 0, SB_EPARSE, "empty"},
        {"not json", 0, SB_EPARSE, "not JSON"},
        {"[]", 0, SB_EPARSE, "array"},
        {"\"object\"", 0, SB_EPARSE, "string"},
        {"42", 0, SB_EPARSE, "number"},
        {"null", 0, SB_EPARSE, "null"},
        {"{}", 0, SB_EPARSE, "no object"},
        {"{\"entry\":[]}", 0, SB_EPARSE, "no object key"},
        {"{\"object\":\"page\"}", 0, SB_EPARSE, "no entry"},
        {"{\"object\":7,\"entry\":[]}", 0, SB_EPARSE, "object not a string"},
        {"{\"object\":\"page\",\"entry\":{}}", 0, SB_EPARSE, "entry not an array"},
        {"{\"object\":\"page\",\"entry\":[]} x", 0, SB_EPARSE, "trailing bytes"},
        {"{\"object\":\"page\",\"entry\":[]}{}", 0, SB_EPARSE, "two documents"},
        {"{\"object\":\"page\",\"object\":\"instagram\",\"entry\":[]}", 0, SB_EPARSE, "duplicate key"},
        {"{\"object\":\"page\",\"entry\":[{\"id\":\"1\",\"id\":\"2\"}]}", 0, SB_EPARSE, "nested duplicate key"},
        {"{\"object\":\"page\",\"entry\":[],}", 0, SB_EPARSE, "trailing comma"},
        {"{\"object\":\"pa\xffge\",\"entry\":[]}", 0, SB_EPARSE, "invalid UTF-8 in a string"},
        {"{\"object\":\"page\",\"entry\":[]}\xc3", 0, SB_EPARSE, "truncated UTF-8 at the end"},
        {"{\"object\":\"\xed\xa0\x80\",\"entry\":[]}", 0, SB_EPARSE, "encoded surrogate"},
        {"{\"object\":\"page\\u0000\",\"entry\":[]}", 0, SB_EPARSE, "escaped NUL"},
        {"{\"object\":\"page\\ud800\",\"entry\":[]}", 0, SB_EPARSE, "lone surrogate escape"},
        {"{\"object\":\"page\",\"entry\":[]}\0", 29, SB_EPARSE, "raw NUL after the document"},
        {"{\"object\":\"page\",\"entry\":[1e999]}", 0, SB_EPARSE, "real overflow"},
        {"{\"object\":\"page\",\"entry\":[99999999999999999999]}", 0, SB_EPARSE, "integer overflow"},
        {"{\"object\":\"page\",\"entry\":[}", 0, SB_EPARSE, "unbalanced"},
        {"\xef\xbb\xbf{\"object\":\"page\",\"entry\":[]}", 0, SB_EPARSE, "byte order mark"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t len = cases[i].len ? cases[i].len : strlen(cases[i].body);
        is_int(parse_n(cases[i].body, len), cases[i].want, "%s: refused", cases[i].what);
        ok(L.n == 0 && L.v == NULL, "%s: list left empty", cases[i].what);
        ok(D.error[0] != '\0' && strlen(D.error) < sizeof D.error, "%s: error says why (%s)", cases[i].what, D.error);
        is_int(D.skipped, 0, "%s: skipped 0", cases[i].what);
    }

    /* the message never quotes the body (jansson's own text would: "near 'secret'") */
    is_int(parse("{\"object\":\"page\",\"entry\":[secret-token]}"), SB_EPARSE, "bad token");
    ok(strstr(D.error, "secret") == NULL, "error does not quote the body: %s", D.error);
    ok(strstr(D.error, "line 1") != NULL, "error gives the position: %s", D.error);

    /* NULL body with length 0 */
    sb_event_list_cleanup(&L);
    is_int(sb_meta_parse(NULL, 0, &L, NULL), SB_EPARSE, "NULL body, no diag");
    is_int(L.n, 0, "empty");

    /* empty batches and objects we do not serve are fine */
    is_int(parse("{\"object\":\"page\",\"entry\":[]}"), 0, "empty entry");
    is_int(L.n, 0, "no events");
    is_int(D.skipped, 0, "nothing skipped");
    is_int(parse(JSON({"object": "permissions", "entry": [{"id": "1", "time": 1, "changes": [{"field": "email"}]},
                                                          {"id": "2"}]})),
           0, "another object");
    is_int(L.n, 0, "no events");
    is_int(D.skipped, 2, "its entries skipped");
    is_int(parse(JSON({"object": "page", "entry": [{"id": "1", "time": 1, "changes": [{"field": "feed", "value": {}}]}],
                       "extra": {"ignored": [1, 2, 3]}})),
           0, "page feed change");
    is_int(D.skipped, 1, "feed change skipped");
}

TEST(bounds)
{
    /* nesting: SB_META_MAX_DEPTH levels are fine (extra members are ignored), one more is not */
    for (int extra = 0; extra <= 1; extra++) {
        int depth = SB_META_MAX_DEPTH + extra;
        sb_buf_t b;
        sb_buf_init(&b);
        sb_buf_puts(&b, "{\"object\":\"page\",\"entry\":[],\"x\":");
        for (int i = 1; i < depth; i++)
            sb_buf_puts(&b, i % 2 ? "[" : "{\"k\":");
        sb_buf_puts(&b, "0");
        for (int i = depth - 1; i >= 1; i--)
            sb_buf_puts(&b, i % 2 ? "]" : "}");
        sb_buf_puts(&b, "}");
        is_int(parse_n(b.p, b.len), extra ? SB_EPARSE : 0, "depth %d", depth);
        sb_buf_cleanup(&b);
    }
    /* brackets inside strings (escaped quotes too) do not count */
    {
        sb_buf_t b;
        sb_buf_init(&b);
        sb_buf_puts(&b, "{\"object\":\"page\",\"entry\":[],\"x\":\"\\\"");
        for (int i = 0; i < 100; i++)
            sb_buf_puts(&b, "[{");
        sb_buf_puts(&b, "\\\\\"}");
        is_int(parse_n(b.p, b.len), 0, "brackets in strings are text");
        sb_buf_cleanup(&b);
    }
    /* a deeply nested body is refused before jansson recurses */
    {
        size_t n = 200000;
        char *deep = malloc(n);
        memset(deep, '[', n);
        is_int(parse_n(deep, n), SB_EPARSE, "200000 brackets");
        free(deep);
    }

    /* size */
    char *big = malloc(SB_META_MAX_BODY + 2);
    memset(big, ' ', SB_META_MAX_BODY + 1);
    memcpy(big, "{\"object\":\"page\",\"entry\":[]}", 28);
    is_int(parse_n(big, SB_META_MAX_BODY), 0, "exactly the maximum (trailing blanks)");
    is_int(parse_n(big, SB_META_MAX_BODY + 1), SB_E2BIG, "one byte more");
    ok(strstr(D.error, "larger") != NULL, "says so: %s", D.error);
    free(big);

    /* events: the maximum is fine, one more fails the body and leaves nothing behind */
    for (int extra = 0; extra <= 1; extra++) {
        sb_buf_t b;
        sb_buf_init(&b);
        sb_buf_puts(&b, "{\"object\":\"page\",\"entry\":[{\"id\":\"P\",\"messaging\":[{\"sender\":{\"id\":\"U\"},"
                        "\"recipient\":{\"id\":\"P\"},\"delivery\":{\"mids\":[");
        for (int i = 0; i < SB_META_MAX_EVENTS + extra; i++)
            sb_buf_printf(&b, "%s\"m%d\"", i ? "," : "", i);
        sb_buf_puts(&b, "]}}]}]}");
        int rc = parse_n(b.p, b.len);
        is_int(rc, extra ? SB_E2BIG : 0, "%d events", SB_META_MAX_EVENTS + extra);
        is_int(L.n, extra ? 0 : SB_META_MAX_EVENTS, "%d events: list", SB_META_MAX_EVENTS + extra);
        ok(!extra || L.v == NULL, "nothing left behind");
        sb_buf_cleanup(&b);
    }
}

TEST(list_ownership)
{
    /* events already in the list stay; on success new ones are appended, on failure the list is as it was */
    sb_event_list_t l = {0};
    const char *good = JSON({"object": "page", "entry": [{"id": "P", "messaging": [
        {"sender": {"id": "U"}, "recipient": {"id": "P"}, "timestamp": 1000, "message": {"mid": "m1", "text": "a"}}]}]});
    is_int(sb_meta_parse(good, strlen(good), &l, NULL), 0, "first body");
    is_int(sb_meta_parse(good, strlen(good), &l, NULL), 0, "second body");
    is_int(l.n, 2, "appended");
    is_int(sb_meta_parse("{", 1, &l, NULL), SB_EPARSE, "bad body");
    is_int(l.n, 2, "kept on failure");
    is_str(l.v[1].body, "a", "intact");

    sb_buf_t b;
    sb_buf_init(&b);
    sb_buf_puts(&b, "{\"object\":\"page\",\"entry\":[{\"id\":\"P\",\"messaging\":[{\"sender\":{\"id\":\"U\"},"
                    "\"recipient\":{\"id\":\"P\"},\"delivery\":{\"mids\":[");
    for (int i = 0; i <= SB_META_MAX_EVENTS; i++)
        sb_buf_printf(&b, "%s\"m%d\"", i ? "," : "", i);
    sb_buf_puts(&b, "]}}]}]}");
    is_int(sb_meta_parse(b.p, b.len, &l, NULL), SB_E2BIG, "too many after two");
    is_int(l.n, 2, "the two are kept, the partial ones gone");
    sb_buf_cleanup(&b);
    sb_event_list_cleanup(&l);
    ok(l.v == NULL && l.n == 0, "cleaned");
}

/* Every string of every event is valid UTF-8, every identifier printable ASCII. */
TEST(invariants_on_all_events)
{
    const char *bodies[] = {
        WA_MSGS({"from": "16505551234", "id": "wamid.T", "timestamp": "1", "type": "text", "text": {"body": "t"}}),
        JSON({"object": "page", "entry": [{"id": "P", "messaging": [{"sender": {"id": "U"}, "recipient": {"id": "P"},
                                                                      "message": {"mid": "m", "text": "x"}}]}]}),
    };
    for (size_t k = 0; k < 2; k++) {
        is_int(parse(bodies[k]), 0, "body %zu", k);
        for (size_t i = 0; i < L.n; i++) {
            sb_event_t *e = &L.v[i];
            const char *strs[] = {e->account, e->provider_id, e->from, e->to, e->body, e->profile_name};
            bool good = true;
            for (size_t j = 0; j < 6; j++)
                if (strs[j] && !sb_utf8_valid(strs[j], strlen(strs[j])))
                    good = false;
            ok(good && e->account && e->provider_id, "event %zu of body %zu: strings valid, ids present (%s)", i, k,
               s_or(e->provider_id));
        }
    }
}

/* ---- verification handshake ------------------------------------------------------------------------------------ */

static int verify(const char *mode, const char *token, const char *challenge, const char *expected, sb_str_t *echo)
{
    sb_str_t m = mode ? sb_str_cstr(mode) : sb_str(NULL, 0);
    sb_str_t t = token ? sb_str_cstr(token) : sb_str(NULL, 0);
    sb_str_t c = challenge ? sb_str_cstr(challenge) : sb_str(NULL, 0);
    sb_str_t x = expected ? sb_str_cstr(expected) : sb_str(NULL, 0);
    return sb_meta_verify_challenge(m, t, c, x, echo);
}

TEST(verify_challenge)
{
    sb_str_t echo;
    const char *challenge = "1158201444";
    is_int(verify("subscribe", "meatpie", challenge, "meatpie", &echo), 0, "accepted");
    ok(echo.p == challenge && echo.len == 10, "echo borrows the challenge");

    echo = SB_STR("junk");
    is_int(verify("unsubscribe", "meatpie", challenge, "meatpie", &echo), SB_EINVAL, "mode unsubscribe");
    ok(echo.p == NULL && echo.len == 0, "echo cleared on failure");
    is_int(verify("Subscribe", "meatpie", challenge, "meatpie", &echo), SB_EINVAL, "mode is case-sensitive");
    is_int(verify("subscribe ", "meatpie", challenge, "meatpie", &echo), SB_EINVAL, "mode with a blank");
    is_int(verify(NULL, "meatpie", challenge, "meatpie", &echo), SB_EINVAL, "no mode");
    is_int(verify("subscribe", NULL, challenge, "meatpie", &echo), SB_EINVAL, "no token");
    is_int(verify("subscribe", "", challenge, "", &echo), SB_EINVAL, "empty token against empty expected");
    is_int(verify("subscribe", "x", challenge, NULL, &echo), SB_EINVAL, "no expected token configured");
    is_int(verify("subscribe", "meatpiE", challenge, "meatpie", &echo), SB_EINVAL, "last byte differs");
    is_int(verify("subscribe", "Meatpie", challenge, "meatpie", &echo), SB_EINVAL, "first byte differs");
    is_int(verify("subscribe", "meatpi", challenge, "meatpie", &echo), SB_EINVAL, "prefix");
    is_int(verify("subscribe", "meatpies", challenge, "meatpie", &echo), SB_EINVAL, "longer");
    const char tok_nul[] = "meat\0pie";
    is_int(sb_meta_verify_challenge(SB_STR("subscribe"), sb_str(tok_nul, 8), sb_str_cstr(challenge),
                                    SB_STR("meatpie"), &echo),
           SB_EINVAL, "embedded NUL");

    char long_tok[SB_META_MAX_TOKEN + 2];
    memset(long_tok, 't', sizeof long_tok);
    long_tok[SB_META_MAX_TOKEN] = '\0';
    is_int(verify("subscribe", long_tok, challenge, long_tok, &echo), 0, "token of the maximum length");
    long_tok[SB_META_MAX_TOKEN] = 't';
    long_tok[SB_META_MAX_TOKEN + 1] = '\0';
    is_int(verify("subscribe", long_tok, challenge, long_tok, &echo), SB_EINVAL, "token over the maximum");

    is_int(verify("subscribe", "meatpie", NULL, "meatpie", &echo), SB_EPARSE, "no challenge");
    is_int(verify("subscribe", "meatpie", "", "meatpie", &echo), SB_EPARSE, "empty challenge");
    is_int(verify("subscribe", "meatpie", "12 34", "meatpie", &echo), SB_EPARSE, "blank in challenge");
    is_int(verify("subscribe", "meatpie", "1\r\nX-Evil: 1", "meatpie", &echo), SB_EPARSE, "CRLF in challenge");
    is_int(verify("subscribe", "meatpie", "caf\xc3\xa9", "meatpie", &echo), SB_EPARSE, "non-ASCII challenge");
    is_int(verify("subscribe", "meatpie", "<script>", "meatpie", &echo), 0, "printable punctuation is echoed as is");
    is_int(verify("subscribe", "wrong", "", "meatpie", &echo), SB_EINVAL, "token checked before challenge");

    char ch[SB_META_MAX_CHALLENGE + 2];
    memset(ch, '7', sizeof ch);
    ch[SB_META_MAX_CHALLENGE] = '\0';
    is_int(verify("subscribe", "meatpie", ch, "meatpie", &echo), 0, "challenge of the maximum length");
    is_int(echo.len, SB_META_MAX_CHALLENGE, "all of it");
    ch[SB_META_MAX_CHALLENGE] = '7';
    ch[SB_META_MAX_CHALLENGE + 1] = '\0';
    is_int(verify("subscribe", "meatpie", ch, "meatpie", &echo), SB_EPARSE, "challenge over the maximum");
}

/* Each event keeps the JSON of its own item, not the body: the first event of an item holds it, later events of the
 * same item (a Messenger delivery naming several messages) hold nothing. */
TEST(raw_per_item)
{
    const char *wa = JSON({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{
        "field": "messages", "value": {"metadata": {"display_phone_number": "15550783881", "phone_number_id": "123"},
        "messages": [{"from": "447700900123", "id": "wamid.A", "timestamp": "1700000000", "type": "text",
                      "text": {"body": "first"}},
                     {"from": "447700900123", "id": "wamid.B", "timestamp": "1700000001", "type": "text",
                      "text": {"body": "second"}}],
        "statuses": [{"id": "wamid.S", "status": "read", "timestamp": "1700000002"}]}}]}]});
    is_int(parse(wa), 0, "a WhatsApp body of two messages and a status parses");
    is_int((long long)L.n, 3, "three events");
    if (L.n == 3) {
        is_str(s_or(L.v[0].raw), "{\"from\":\"447700900123\",\"id\":\"wamid.A\",\"timestamp\":\"1700000000\","
               "\"type\":\"text\",\"text\":{\"body\":\"first\"}}", "the first message keeps its own object");
        ok(L.v[1].raw && strstr(L.v[1].raw, "wamid.B") && !strstr(L.v[1].raw, "wamid.A"),
           "the second keeps its own, not the first's");
        is_str(s_or(L.v[2].raw), "{\"id\":\"wamid.S\",\"status\":\"read\",\"timestamp\":\"1700000002\"}",
               "the status keeps its status object");
    }
    const char *fb = JSON({"object": "page", "entry": [{"id": "42", "time": 1700000000000, "messaging": [{
        "sender": {"id": "7"}, "recipient": {"id": "42"}, "timestamp": 1700000000123,
        "delivery": {"mids": ["m_1", "m_2", "m_3"], "watermark": 1700000000000}}]}]});
    is_int(parse(fb), 0, "a Messenger delivery of three messages parses");
    is_int((long long)L.n, 3, "three events");
    if (L.n == 3) {
        ok(L.v[0].raw && strstr(L.v[0].raw, "\"m_3\"") && strstr(L.v[0].raw, "\"sender\""),
           "the first event keeps the messaging item");
        ok(!L.v[1].raw && !L.v[2].raw, "the others of the same item keep nothing (the item is stored once)");
    }
}

int main(void)
{
    RUN(wa_text);
    RUN(wa_media);
    RUN(wa_location_interactive_button);
    RUN(wa_skipped_types);
    RUN(wa_statuses);
    RUN(wa_failed_status);
    RUN(wa_batch_and_profiles);
    RUN(wa_identifiers_and_text);
    RUN(timestamps);
    RUN(messenger);
    RUN(messenger_many_attachments);
    RUN(instagram);
    RUN(envelope_errors);
    RUN(bounds);
    RUN(list_ownership);
    RUN(invariants_on_all_events);
    RUN(verify_challenge);
    RUN(raw_per_item);
    sb_event_list_cleanup(&L);
    return tap_done();
}
