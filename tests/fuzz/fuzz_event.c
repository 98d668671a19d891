/* libFuzzer target for proto/event's two readers of bytes that come from outside the process: the packed form
 * (sb_event_unpack: a receipt's event in a node's Redis stream, written by another node) and the JSON the receipts
 * store (sb_event_from_json: what the sweeper reads back). Whatever either takes must be written again and read back
 * as the same event: packed again, the bytes are those of the first packing; as JSON, the kind, the ids and the
 * strings a send carries survive. Any violation traps. */
#include "tests/fuzz/fuzz.h"
#include "proto/event.h"

#include "proto/str.h"

#include <jansson.h>
#include <string.h>

static bool same_str(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    sb_event_t ev, again;
    if (sb_event_unpack(data, size, &ev) == 0) {
        CHECK(ev.kind == SB_EV_MESSAGE || ev.kind == SB_EV_STATUS || ev.kind == SB_EV_SEND);
        CHECK(ev.nmedia <= SB_EVENT_MAX_MEDIA);
        sb_buf_t a, b;
        sb_buf_init(&a);
        sb_buf_init(&b);
        sb_event_pack(&ev, &a);
        CHECK(sb_event_unpack(a.p, a.len, &again) == 0);
        sb_event_pack(&again, &b);
        CHECK(a.len == b.len && memcmp(a.p, b.p, a.len) == 0);
        CHECK(again.message_id == ev.message_id && again.send_at_ms == ev.send_at_ms);
        sb_event_cleanup(&again);
        sb_buf_cleanup(&a);
        sb_buf_cleanup(&b);
        sb_event_cleanup(&ev);
    }
    json_t *j = json_loadb((const char *)data, size, 0, NULL);
    if (j && sb_event_from_json(j, &ev) == 0) {
        json_t *k = sb_event_json(&ev);
        CHECK(sb_event_from_json(k, &again) == 0);
        CHECK(again.kind == ev.kind && again.message_id == ev.message_id && again.send_at_ms == ev.send_at_ms);
        CHECK(same_str(again.provider_id, ev.provider_id) && same_str(again.to, ev.to) &&
              same_str(again.body, ev.body) && same_str(again.media_json, ev.media_json) &&
              same_str(again.idempotency_key, ev.idempotency_key));
        if (ev.kind == SB_EV_SEND)
            CHECK(ev.message_id > 0 && ev.to && ev.media_json && ev.body);
        sb_event_cleanup(&again);
        json_decref(k);
        sb_event_cleanup(&ev);
    }
    json_decref(j);
    return 0;
}
