/* libFuzzer target for proto/mstream: Media Streams frames from Twilio and from a tenant's voice app.
 *
 * Each input is used two ways:
 *   1. as a frame, parsed from each direction. A failure leaves the frame blank and scratch empty, with a short
 *      message of printable ASCII. A success satisfies the contract (an event the direction may send, its required
 *      fields present and not empty, numbers -1 or within 0..2^53, every view inside the frame or the scratch buffer,
 *      other events' fields absent). The frame is then written again with the writer of its event and parsed from
 *      the same direction, which must give the same fields (dtmf's track aside: its writer always says
 *      "inbound_track"; clear's writer carries no sequenceNumber);
 *   2. as field values: when the input is valid UTF-8, its two halves become a streamSid and a name/digit/callSid
 *      (and the whole input, base64-encoded, the payload), every writer writes a frame with them, and that frame must
 *      parse to exactly those values.
 * Any violation traps. */
#include "tests/fuzz/fuzz.h"
#include "proto/mstream.h"

#include "proto/codec.h"
#include "proto/err.h"
#include "proto/line.h"
#include "proto/str.h"

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#define MAX_INT ((int64_t)1 << 53)

static bool absent(sb_str_t s)
{
    return s.p != NULL && s.len == 0;
}

static bool blank(const sb_ms_frame_t *f)
{
    return f->event == 0 && f->seq == -1 && f->chunk == -1 && f->timestamp == -1 && absent(f->stream_sid) &&
           absent(f->call_sid) && absent(f->account_sid) && absent(f->track) && absent(f->payload) &&
           absent(f->name) && absent(f->digit) && f->nparams == 0;
}

static bool inside(sb_str_t s, sb_str_t text, const sb_buf_t *scratch)
{
    if (s.len == 0)
        return s.p != NULL;
    bool in_text = s.p >= text.p && s.p + s.len <= text.p + text.len;
    bool in_scratch = scratch->p && s.p >= scratch->p && s.p + s.len <= scratch->p + scratch->len;
    return (in_text || in_scratch) && sb_utf8_valid(s.p, s.len);
}

static bool num_ok(int64_t v)
{
    return v == -1 || (v >= 0 && v <= MAX_INT);
}

static void check_err(const char *err)
{
    size_t n = strnlen(err, 160);
    CHECK(n > 0 && n < 160);
    for (size_t k = 0; k < n; k++)
        CHECK(err[k] >= 0x20 && err[k] < 0x7f);
}

static void check_frame(const sb_ms_frame_t *f, sb_ms_from_t from, sb_str_t text, const sb_buf_t *scratch)
{
    sb_ms_event_t e = f->event;
    if (from == SB_MS_FROM_APP)
        CHECK(e == SB_MS_MEDIA || e == SB_MS_MARK || e == SB_MS_CLEAR);
    else
        CHECK(e >= SB_MS_CONNECTED && e <= SB_MS_STOP);
    CHECK(sb_ms_event_name(e) != NULL);
    CHECK(num_ok(f->seq) && num_ok(f->chunk) && num_ok(f->timestamp));
    CHECK(inside(f->stream_sid, text, scratch) && inside(f->call_sid, text, scratch) &&
          inside(f->account_sid, text, scratch) && inside(f->track, text, scratch) &&
          inside(f->payload, text, scratch) && inside(f->name, text, scratch) && inside(f->digit, text, scratch));
    CHECK(f->nparams <= SB_MS_MAX_PARAMS);
    for (size_t k = 0; k < f->nparams; k++)
        CHECK(inside(f->params[k].name, text, scratch) && inside(f->params[k].value, text, scratch));
    CHECK(scratch->len <= text.len);

    if (e == SB_MS_CONNECTED) {
        sb_ms_frame_t g = *f;
        g.event = 0;
        CHECK(blank(&g)); /* "connected" reports nothing but itself */
        return;
    }
    CHECK(f->stream_sid.len > 0);
    if (from == SB_MS_FROM_TWILIO)
        CHECK(f->seq >= 0);
    if (e != SB_MS_START)
        CHECK(f->nparams == 0);
    if (e != SB_MS_START && e != SB_MS_STOP)
        CHECK(absent(f->call_sid) && absent(f->account_sid));
    if (e == SB_MS_START)
        CHECK(f->call_sid.len > 0);
    if (e != SB_MS_MEDIA)
        CHECK(absent(f->payload) && f->chunk == -1 && f->timestamp == -1);
    if (e == SB_MS_MEDIA)
        CHECK(f->payload.len > 0 && f->payload.len % 4 == 0);
    if (e != SB_MS_MEDIA && e != SB_MS_DTMF)
        CHECK(absent(f->track));
    CHECK((e == SB_MS_MARK) == (f->name.len > 0));
    CHECK((e == SB_MS_DTMF) == (f->digit.len > 0));
}

static bool frames_equal(const sb_ms_frame_t *a, const sb_ms_frame_t *b)
{
    if (a->event != b->event || a->seq != b->seq || a->chunk != b->chunk || a->timestamp != b->timestamp ||
        !sb_str_eq(a->stream_sid, b->stream_sid) || !sb_str_eq(a->call_sid, b->call_sid) ||
        !sb_str_eq(a->account_sid, b->account_sid) || !sb_str_eq(a->track, b->track) ||
        !sb_str_eq(a->payload, b->payload) || !sb_str_eq(a->name, b->name) || !sb_str_eq(a->digit, b->digit) ||
        a->nparams != b->nparams)
        return false;
    for (size_t k = 0; k < a->nparams; k++)
        if (!sb_str_eq(a->params[k].name, b->params[k].name) || !sb_str_eq(a->params[k].value, b->params[k].value))
            return false;
    return true;
}

/* Writes f with its event's writer; *want is what parsing the output must give. */
static void rewrite(const sb_ms_frame_t *f, sb_buf_t *out, sb_ms_frame_t *want)
{
    *want = *f;
    switch (f->event) {
    case SB_MS_CONNECTED:
        sb_ms_write_connected(out);
        break;
    case SB_MS_START:
        sb_ms_write_start(out, f->seq, f->stream_sid, f->account_sid, f->call_sid, f->params, f->nparams);
        break;
    case SB_MS_MEDIA:
        if (f->seq < 0 && f->track.len == 0 && f->chunk < 0 && f->timestamp < 0)
            sb_ms_write_app_media(out, f->stream_sid, f->payload);
        else
            sb_ms_write_media(out, f->seq, f->stream_sid, f->track, f->chunk, f->timestamp, f->payload);
        break;
    case SB_MS_DTMF:
        sb_ms_write_dtmf(out, f->seq, f->stream_sid, f->digit);
        want->track = SB_STR("inbound_track");
        break;
    case SB_MS_MARK:
        sb_ms_write_mark(out, f->seq, f->stream_sid, f->name);
        break;
    case SB_MS_STOP:
        sb_ms_write_stop(out, f->seq, f->stream_sid, f->account_sid, f->call_sid);
        break;
    default:
        sb_ms_write_clear(out, f->stream_sid);
        want->seq = -1;
        break;
    }
}

static void check_parse(sb_str_t text, sb_ms_from_t from)
{
    static sb_buf_t scratch, scratch2, out; /* kept across inputs: scratch is reused, as the relay does */
    sb_ms_frame_t f, again, want;
    char err[160];

    memset(err, 0x55, sizeof err);
    int rc = sb_ms_parse(text, from, &f, &scratch, err, sizeof err);
    if (rc != 0) {
        CHECK(rc == SB_EPARSE);
        check_err(err);
        CHECK(blank(&f) && scratch.len == 0);
        CHECK(sb_ms_parse(text, from, &f, &scratch, NULL, 0) == rc);
        return;
    }
    CHECK(err[0] == '\0');
    check_frame(&f, from, text, &scratch);

    out.len = 0;
    rewrite(&f, &out, &want);
    CHECK(sb_utf8_valid(out.p, out.len));
    rc = sb_ms_parse(sb_str(out.p, out.len), from, &again, &scratch2, err, sizeof err);
    CHECK(rc == 0);
    CHECK(frames_equal(&again, &want));
}

/* Every writer, with s1 and s2 (valid UTF-8, not empty) as its strings and payload as base64. */
static void check_writers(sb_str_t s1, sb_str_t s2, sb_str_t payload, int64_t n)
{
    static sb_buf_t scratch, out;
    sb_ms_frame_t f;
    sb_ms_param_t params[2] = {{s1, s2}, {s2, s1}};
    size_t np = sb_str_eq(s1, s2) ? 1 : 2;

    out.len = 0;
    sb_ms_write_start(&out, n, s1, s2, s2, params, np);
    CHECK(sb_ms_parse(sb_str(out.p, out.len), SB_MS_FROM_TWILIO, &f, &scratch, NULL, 0) == 0);
    CHECK(f.event == SB_MS_START && f.seq == n && sb_str_eq(f.stream_sid, s1) && sb_str_eq(f.account_sid, s2) &&
          sb_str_eq(f.call_sid, s2) && f.nparams == np && sb_str_eq(f.params[0].name, s1) &&
          sb_str_eq(f.params[0].value, s2));

    out.len = 0;
    sb_ms_write_media(&out, n, s1, s2, n, n, payload);
    CHECK(sb_ms_parse(sb_str(out.p, out.len), SB_MS_FROM_TWILIO, &f, &scratch, NULL, 0) == 0);
    CHECK(f.event == SB_MS_MEDIA && f.seq == n && sb_str_eq(f.stream_sid, s1) && sb_str_eq(f.track, s2) &&
          f.chunk == n && f.timestamp == n && sb_str_eq(f.payload, payload));

    out.len = 0;
    sb_ms_write_app_media(&out, s1, payload);
    CHECK(sb_ms_parse(sb_str(out.p, out.len), SB_MS_FROM_APP, &f, &scratch, NULL, 0) == 0);
    CHECK(f.event == SB_MS_MEDIA && f.seq == -1 && sb_str_eq(f.stream_sid, s1) && sb_str_eq(f.payload, payload));

    out.len = 0;
    sb_ms_write_dtmf(&out, n, s1, s2);
    CHECK(sb_ms_parse(sb_str(out.p, out.len), SB_MS_FROM_TWILIO, &f, &scratch, NULL, 0) == 0);
    CHECK(f.event == SB_MS_DTMF && f.seq == n && sb_str_eq(f.stream_sid, s1) && sb_str_eq(f.digit, s2));

    for (int app = 0; app < 2; app++) {
        out.len = 0;
        sb_ms_write_mark(&out, app ? -1 : n, s1, s2);
        CHECK(sb_ms_parse(sb_str(out.p, out.len), app ? SB_MS_FROM_APP : SB_MS_FROM_TWILIO, &f, &scratch, NULL,
                          0) == 0);
        CHECK(f.event == SB_MS_MARK && f.seq == (app ? -1 : n) && sb_str_eq(f.stream_sid, s1) &&
              sb_str_eq(f.name, s2));
    }

    out.len = 0;
    sb_ms_write_stop(&out, n, s1, s2, s1);
    CHECK(sb_ms_parse(sb_str(out.p, out.len), SB_MS_FROM_TWILIO, &f, &scratch, NULL, 0) == 0);
    CHECK(f.event == SB_MS_STOP && sb_str_eq(f.account_sid, s2) && sb_str_eq(f.call_sid, s1));

    out.len = 0;
    sb_ms_write_clear(&out, s2);
    CHECK(sb_ms_parse(sb_str(out.p, out.len), SB_MS_FROM_APP, &f, &scratch, NULL, 0) == 0);
    CHECK(f.event == SB_MS_CLEAR && sb_str_eq(f.stream_sid, s2));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    sb_str_t text = sb_str(size ? (const char *)data : "", size);
    check_parse(text, SB_MS_FROM_TWILIO);
    check_parse(text, SB_MS_FROM_APP);

    if (size >= 2 && sb_utf8_valid(text.p, size)) {
        size_t half = size / 2;
        while (half < size && ((unsigned char)text.p[half] & 0xc0) == 0x80) /* cut between characters */
            half++;
        if (half > 0 && half < size) {
            static sb_buf_t b64;
            b64.len = 0;
            sb_codec_b64_append(&b64, data, size, SB_B64_STD);
            int64_t n = (int64_t)data[0] << 45 | (int64_t)data[size - 1];
            check_writers(sb_str(text.p, half), sb_str(text.p + half, size - half), sb_str(b64.p, b64.len), n);
        }
    }
    return 0;
}
