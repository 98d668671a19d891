/* Unit tests for proto/event: the three kinds through both of their forms, the JSON the receipts store (read back by
 * the sweeper) and the packed bytes an event travels in (a session's mailbox, a node's stream), and the packed form's
 * refusal of what is not one event. */
#include "proto/event.h"

#include "proto/err.h"
#include "proto/mem.h"
#include "proto/str.h"
#include "tests/tap.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

static sb_event_t send_event(void)
{
    return (sb_event_t){.kind = SB_EV_SEND,
                        .channel = SB_CH_META_WHATSAPP,
                        .provider_id = sb_strdup("send"),
                        .message_id = 1025,
                        .send_at_ms = 1796000000123,
                        .to = sb_strdup("+14155550100"),
                        .body = sb_strdup("Olá 👋"),
                        .media_json = sb_strdup("[{\"url\":\"https://example.com/a.png\"}]"),
                        .template_json = NULL,
                        .idempotency_key = sb_strdup("order-7"),
                        .fallback_json = sb_strdup("{\"channels\":[12],\"after_s\":60}"),
                        .priority = sb_strdup("bulk")};
}

static void same_send(const sb_event_t *got, const sb_event_t *want, const char *how)
{
    ok(got->kind == SB_EV_SEND && got->channel == want->channel, "%s: a send of its channel type", how);
    is_int(got->message_id, want->message_id, "%s: message_id", how);
    is_int(got->send_at_ms, want->send_at_ms, "%s: send_at_ms", how);
    is_str(got->to, want->to, "%s: to", how);
    is_str(got->body, want->body, "%s: body", how);
    is_str(got->media_json, want->media_json, "%s: media_json", how);
    ok(got->template_json == NULL, "%s: no template", how);
    is_str(got->idempotency_key, want->idempotency_key, "%s: idempotency_key", how);
    is_str(got->fallback_json, want->fallback_json, "%s: fallback_json", how);
    is_str(got->priority, want->priority, "%s: priority", how);
}

TEST(send_round_trips)
{
    sb_event_t ev = send_event(), back;

    json_t *j = sb_event_json(&ev);
    is_str(json_string_value(json_object_get(j, "kind")), "send", "its JSON says kind send");
    is_int(sb_event_from_json(j, &back), 0, "read back from its JSON");
    same_send(&back, &ev, "JSON");
    sb_event_cleanup(&back);
    json_decref(j);

    sb_buf_t b;
    sb_buf_init(&b);
    sb_event_pack(&ev, &b);
    is_int(sb_event_unpack(b.p, b.len, &back), 0, "unpacked");
    same_send(&back, &ev, "packed");
    sb_event_cleanup(&back);
    int taken = 0;
    for (size_t cut = 0; cut < b.len; cut++)
        if (sb_event_unpack(b.p, cut, &back) == 0) {
            taken++;
            sb_event_cleanup(&back);
        }
    is_int(taken, 0, "a packed send cut short anywhere (%zu places) is refused", b.len);
    b.p[0] = 9;
    is_int(sb_event_unpack(b.p, b.len, &back), SB_EPARSE, "an unknown kind is refused");
    sb_buf_cleanup(&b);
    sb_event_cleanup(&ev);
}

TEST(send_json_needs_its_members)
{
    static const char *const bad[] = {
        "{\"kind\":\"send\",\"provider_id\":\"send\",\"to\":\"+1415\",\"media_json\":\"[]\"}",      /* no id */
        "{\"kind\":\"send\",\"provider_id\":\"send\",\"message_id\":5,\"media_json\":\"[]\"}",    /* no to */
        "{\"kind\":\"send\",\"provider_id\":\"send\",\"message_id\":5,\"to\":\"+1415\"}",         /* no media */
        "{\"kind\":\"send\",\"provider_id\":\"send\",\"message_id\":-5,\"to\":\"+1\",\"media_json\":\"[]\"}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        json_t *j = json_loads(bad[i], 0, NULL);
        sb_event_t ev;
        is_int(sb_event_from_json(j, &ev), SB_EPARSE, "incomplete send %zu refused", i);
        json_decref(j);
    }
    json_t *j = json_loads("{\"kind\":\"send\",\"provider_id\":\"send\",\"message_id\":5,\"to\":\"+14155550100\","
                           "\"media_json\":\"[]\"}",
                           0, NULL);
    sb_event_t ev;
    is_int(sb_event_from_json(j, &ev), 0, "the least a send needs");
    is_str(ev.body, "", "no body: empty");
    ok(!ev.send_at_ms && !ev.priority && !ev.idempotency_key, "the rest absent");
    sb_event_cleanup(&ev);
    json_decref(j);
}

TEST(message_and_status_unchanged)
{
    sb_event_t ev = {.kind = SB_EV_MESSAGE,
                     .channel = SB_CH_TWILIO_SMS,
                     .account = sb_strdup("+15550001111"),
                     .provider_id = sb_strdup("SM1"),
                     .timestamp = 1796000000,
                     .from = sb_strdup("+14155550100"),
                     .to = sb_strdup("+15550001111"),
                     .body = sb_strdup("hi"),
                     .nmedia = 1,
                     .media = {{.url = sb_strdup("https://example.com/m"), .content_type = sb_strdup("image/png")}}};
    sb_buf_t b;
    sb_buf_init(&b);
    sb_event_pack(&ev, &b);
    sb_event_t back;
    is_int(sb_event_unpack(b.p, b.len, &back), 0, "a message unpacked");
    ok(back.kind == SB_EV_MESSAGE && back.timestamp == ev.timestamp && back.message_id == 0 && back.nmedia == 1,
       "its kind, time and media");
    is_str(back.from, "+14155550100", "its sender");
    is_str(back.media[0].content_type, "image/png", "its media's type");
    sb_event_cleanup(&back);
    sb_buf_cleanup(&b);
    json_t *j = sb_event_json(&ev);
    ok(!json_object_get(j, "message_id") && !json_object_get(j, "media_json"), "a message's JSON has no send members");
    json_decref(j);
    sb_event_cleanup(&ev);
}

/* A packed event may carry a media slot past its nmedia (another node's bytes, or a damaged entry): its string is the
 * event's all the same, and cleanup frees it (LeakSanitizer, in the ASan run, sees the leak otherwise). */
TEST(media_past_nmedia_freed)
{
    sb_event_t ev = {.kind = SB_EV_MESSAGE, .provider_id = sb_strdup("SM9"), .from = sb_strdup("+14155550100"),
                     .nmedia = 0};
    ev.media[3].url = sb_strdup("https://example.com/stray");
    sb_buf_t b;
    sb_buf_init(&b);
    sb_event_pack(&ev, &b);
    sb_event_t back;
    is_int(sb_event_unpack(b.p, b.len, &back), 0, "unpacked");
    is_str(back.media[3].url, "https://example.com/stray", "the stray slot read");
    sb_event_cleanup(&back); /* (what checks it: LeakSanitizer at exit) */
    sb_buf_cleanup(&b);
    sb_event_cleanup(&ev);
}

int main(void)
{
    RUN(send_round_trips);
    RUN(send_json_needs_its_members);
    RUN(message_and_status_unchanged);
    RUN(media_past_nmedia_freed);
    return tap_done();
}
