/* Unit tests for proto/mstream: Twilio Media Streams frames. Every event Twilio sends and every one the app sends,
 * in Twilio's documented shapes and with their fields in other orders; each required field missing, with its
 * message; unknown fields of every JSON kind skipped; escapes (\uXXXX and surrogate pairs) decoded into the scratch
 * buffer; many kinds of bad JSON refused with the byte they were found at; integer and base64 rules; which direction
 * may send which event; and every writer's output read back to what was written. */
#include "proto/mstream.h"

#include "proto/err.h"
#include "tests/tap.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static sb_buf_t scratch;
static sb_ms_frame_t f;
static char err[160];

static int parse_from(sb_ms_from_t from, const char *text)
{
    return sb_ms_parse(sb_str_cstr(text), from, &f, &scratch, err, sizeof err);
}

static int tw(const char *text)
{
    return parse_from(SB_MS_FROM_TWILIO, text);
}

static int app(const char *text)
{
    return parse_from(SB_MS_FROM_APP, text);
}

/* A view as a C string, for is_str (views are not NUL-terminated). */
static const char *cs(sb_str_t s)
{
    static char bufs[4][512];
    static int k;
    char *b = bufs[k++ & 3];
    size_t n = s.len < sizeof bufs[0] - 1 ? s.len : sizeof bufs[0] - 1;
    memcpy(b, s.p, n);
    b[n] = '\0';
    return b;
}

static bool absent_str(sb_str_t s)
{
    return s.p != NULL && s.len == 0;
}

/* The frame is all absent, as after a failure. */
static bool blank(void)
{
    return f.event == 0 && f.seq == -1 && f.chunk == -1 && f.timestamp == -1 && absent_str(f.stream_sid) &&
           absent_str(f.call_sid) && absent_str(f.account_sid) && absent_str(f.track) && absent_str(f.payload) &&
           absent_str(f.name) && absent_str(f.digit) && f.nparams == 0;
}

/* text is refused from Twilio with exactly msg. */
#define REFUSED(text, msg)                                                                                        \
    do {                                                                                                          \
        is_int(tw(text), SB_EPARSE, "refused: %s", text);                                                         \
        is_str(err, msg, "message for %s", text);                                                                 \
        ok(blank(), "frame left blank after %s", text);                                                           \
    } while (0)

#define BAD_JSON(text, why_prefix)                                                                                \
    do {                                                                                                          \
        is_int(tw(text), SB_EPARSE, "bad JSON refused: %s", text);                                                \
        ok(strncmp(err, why_prefix, strlen(why_prefix)) == 0, "message for %s: \"%s\"", text, err);               \
    } while (0)

#define SID "MZ18ad3ab5a668481ce02b83e7395059f0"
#define CALL "CA123456789abcdef0123456789abcdef0"
#define ACCT "AC123456789abcdef0123456789abcdef0"

/* ---- Twilio's events ------------------------------------------------------------------------------------------ */

TEST(twilio_events)
{
    is_int(tw("{\"event\":\"connected\",\"protocol\":\"Call\",\"version\":\"1.0.0\"}"), 0, "connected");
    is_int(f.event, SB_MS_CONNECTED, "connected: event");
    ok(f.seq == -1 && absent_str(f.stream_sid), "connected: no seq, no streamSid");

    is_int(tw("{\"event\":\"start\",\"sequenceNumber\":\"1\",\"start\":{\"accountSid\":\"" ACCT "\",\"streamSid\":\"" SID
              "\",\"callSid\":\"" CALL "\",\"tracks\":[\"inbound\"],\"mediaFormat\":{\"encoding\":\"audio/x-mulaw\","
              "\"sampleRate\":8000,\"channels\":1},\"customParameters\":{\"FirstName\":\"Jane\",\"LastName\":\"Doe\"}},"
              "\"streamSid\":\"" SID "\"}"),
           0, "start: %s", err);
    is_int(f.event, SB_MS_START, "start: event");
    is_int(f.seq, 1, "start: seq");
    is_str(cs(f.stream_sid), SID, "start: streamSid");
    is_str(cs(f.call_sid), CALL, "start: callSid");
    is_str(cs(f.account_sid), ACCT, "start: accountSid");
    is_int(f.nparams, 2, "start: two customParameters");
    is_str(cs(f.params[0].name), "FirstName", "start: first parameter's name");
    is_str(cs(f.params[0].value), "Jane", "start: first parameter's value");
    is_str(cs(f.params[1].name), "LastName", "start: second parameter, in order");
    is_str(cs(f.params[1].value), "Doe", "start: second parameter's value");
    ok(absent_str(f.payload) && f.chunk == -1, "start: no media fields");

    is_int(tw("{\"event\":\"media\",\"sequenceNumber\":\"3\",\"media\":{\"track\":\"inbound\",\"chunk\":\"1\","
              "\"timestamp\":\"5\",\"payload\":\"no+JhoaJjpz/\"},\"streamSid\":\"" SID "\"}"),
           0, "media: %s", err);
    is_int(f.event, SB_MS_MEDIA, "media: event");
    is_int(f.seq, 3, "media: seq");
    is_str(cs(f.track), "inbound", "media: track");
    is_int(f.chunk, 1, "media: chunk");
    is_int(f.timestamp, 5, "media: timestamp");
    is_str(cs(f.payload), "no+JhoaJjpz/", "media: payload");
    is_str(cs(f.stream_sid), SID, "media: streamSid");
    ok(f.payload.p > (const char *)0 && scratch.len == 0, "media: nothing decoded, all views into the frame");

    is_int(tw("{\"event\":\"dtmf\",\"streamSid\":\"" SID "\",\"sequenceNumber\":\"5\",\"dtmf\":{\"track\":"
              "\"inbound_track\",\"digit\":\"1\"}}"),
           0, "dtmf: %s", err);
    is_int(f.event, SB_MS_DTMF, "dtmf: event");
    is_str(cs(f.digit), "1", "dtmf: digit");
    is_str(cs(f.track), "inbound_track", "dtmf: track");
    is_int(f.seq, 5, "dtmf: seq");

    is_int(tw("{\"event\":\"mark\",\"sequenceNumber\":\"4\",\"streamSid\":\"" SID "\",\"mark\":{\"name\":\"my label\"}}"),
           0, "mark: %s", err);
    is_int(f.event, SB_MS_MARK, "mark: event");
    is_str(cs(f.name), "my label", "mark: name");

    is_int(tw("{\"event\":\"stop\",\"sequenceNumber\":\"5\",\"streamSid\":\"" SID "\",\"stop\":{\"accountSid\":\"" ACCT
              "\",\"callSid\":\"" CALL "\"}}"),
           0, "stop: %s", err);
    is_int(f.event, SB_MS_STOP, "stop: event");
    is_str(cs(f.call_sid), CALL, "stop: callSid");
    is_str(cs(f.account_sid), ACCT, "stop: accountSid");
    is_str(err, "", "no message after success");
}

TEST(any_order_and_numbers)
{
    is_int(tw(" {\"streamSid\":\"" SID "\",\"media\":{\"payload\":\"AAAA\",\"timestamp\":20,\"chunk\":0,\"track\":"
              "\"outbound\"},\"sequenceNumber\":9007199254740992,\"event\":\"media\"}\r\n\t "),
           0, "event last, integers as numbers, blanks around: %s", err);
    is_int(f.event, SB_MS_MEDIA, "event read last");
    is_int(f.seq, 9007199254740992LL, "2^53 as a number");
    is_int(f.chunk, 0, "chunk 0");
    is_int(f.timestamp, 20, "timestamp as a number");
    is_int(tw("{\"event\":\"media\",\"sequenceNumber\":\"9007199254740992\",\"streamSid\":\"s\",\"media\":{\"payload\":"
              "\"AA==\"}}"),
           0, "2^53 as a string");
    is_int(f.seq, 9007199254740992LL, "2^53 read from a string");
    ok(f.chunk == -1 && f.timestamp == -1 && absent_str(f.track), "absent media fields are -1 and empty");

    REFUSED("{\"event\":\"media\",\"sequenceNumber\":\"9007199254740993\",\"streamSid\":\"s\",\"media\":{\"payload\":"
            "\"AA==\"}}",
            "sequenceNumber is not an integer from 0 to 2^53");
    REFUSED("{\"event\":\"media\",\"sequenceNumber\":9007199254740993,\"streamSid\":\"s\",\"media\":{\"payload\":"
            "\"AA==\"}}",
            "sequenceNumber is not an integer from 0 to 2^53");
    REFUSED("{\"event\":\"media\",\"sequenceNumber\":-1,\"streamSid\":\"s\",\"media\":{\"payload\":\"AA==\"}}",
            "sequenceNumber is not an integer from 0 to 2^53");
    REFUSED("{\"event\":\"media\",\"sequenceNumber\":\"-1\",\"streamSid\":\"s\",\"media\":{\"payload\":\"AA==\"}}",
            "sequenceNumber is not an integer from 0 to 2^53");
    REFUSED("{\"event\":\"media\",\"sequenceNumber\":1.0,\"streamSid\":\"s\",\"media\":{\"payload\":\"AA==\"}}",
            "sequenceNumber is not an integer from 0 to 2^53");
    REFUSED("{\"event\":\"media\",\"sequenceNumber\":1e2,\"streamSid\":\"s\",\"media\":{\"payload\":\"AA==\"}}",
            "sequenceNumber is not an integer from 0 to 2^53");
    REFUSED("{\"event\":\"media\",\"sequenceNumber\":\"01\",\"streamSid\":\"s\",\"media\":{\"payload\":\"AA==\"}}",
            "sequenceNumber is not an integer from 0 to 2^53");
    REFUSED("{\"event\":\"media\",\"sequenceNumber\":\"\",\"streamSid\":\"s\",\"media\":{\"payload\":\"AA==\"}}",
            "sequenceNumber is not an integer from 0 to 2^53");
    REFUSED("{\"event\":\"media\",\"sequenceNumber\":\" 1\",\"streamSid\":\"s\",\"media\":{\"payload\":\"AA==\"}}",
            "sequenceNumber is not an integer from 0 to 2^53");
    REFUSED("{\"event\":\"media\",\"sequenceNumber\":null,\"streamSid\":\"s\",\"media\":{\"payload\":\"AA==\"}}",
            "sequenceNumber is not an integer from 0 to 2^53");
    REFUSED("{\"event\":\"media\",\"sequenceNumber\":\"1\",\"streamSid\":\"s\",\"media\":{\"payload\":\"AA==\","
            "\"chunk\":\"x\"}}",
            "media.chunk is not an integer from 0 to 2^53");
    REFUSED("{\"event\":\"media\",\"sequenceNumber\":\"1\",\"streamSid\":\"s\",\"media\":{\"payload\":\"AA==\","
            "\"timestamp\":true}}",
            "media.timestamp is not an integer from 0 to 2^53");
}

TEST(required_fields)
{
    REFUSED("{}", "missing event");
    REFUSED("{\"sequenceNumber\":\"1\"}", "missing event");
    REFUSED("{\"event\":\"media\",\"sequenceNumber\":\"1\",\"media\":{\"payload\":\"AAAA\"}}", "missing streamSid");
    REFUSED("{\"event\":\"media\",\"streamSid\":\"\",\"sequenceNumber\":\"1\",\"media\":{\"payload\":\"AAAA\"}}",
            "streamSid is empty");
    REFUSED("{\"event\":\"media\",\"streamSid\":\"s\",\"media\":{\"payload\":\"AAAA\"}}", "missing sequenceNumber");
    REFUSED("{\"event\":\"media\",\"streamSid\":\"s\",\"sequenceNumber\":\"1\"}", "missing media");
    REFUSED("{\"event\":\"media\",\"streamSid\":\"s\",\"sequenceNumber\":\"1\",\"media\":{\"track\":\"inbound\"}}",
            "media: missing payload");
    REFUSED("{\"event\":\"mark\",\"streamSid\":\"s\",\"sequenceNumber\":\"1\",\"mark\":{}}", "mark: missing name");
    REFUSED("{\"event\":\"mark\",\"streamSid\":\"s\",\"sequenceNumber\":\"1\",\"mark\":{\"name\":\"\"}}",
            "mark.name is empty");
    REFUSED("{\"event\":\"mark\",\"streamSid\":\"s\",\"sequenceNumber\":\"1\"}", "missing mark");
    REFUSED("{\"event\":\"dtmf\",\"streamSid\":\"s\",\"sequenceNumber\":\"1\",\"dtmf\":{\"track\":\"inbound_track\"}}",
            "dtmf: missing digit");
    REFUSED("{\"event\":\"dtmf\",\"streamSid\":\"s\",\"sequenceNumber\":\"1\"}", "missing dtmf");
    REFUSED("{\"event\":\"stop\",\"sequenceNumber\":\"1\",\"stop\":{}}", "missing streamSid");
    REFUSED("{\"event\":\"start\",\"sequenceNumber\":\"1\",\"streamSid\":\"s\"}", "missing start");
    REFUSED("{\"event\":\"start\",\"sequenceNumber\":\"1\",\"start\":{\"callSid\":\"c\"}}", "start: missing streamSid");
    REFUSED("{\"event\":\"start\",\"sequenceNumber\":\"1\",\"start\":{\"streamSid\":\"s\"}}", "start: missing callSid");
    REFUSED("{\"event\":\"start\",\"start\":{\"streamSid\":\"s\",\"callSid\":\"c\"}}", "missing sequenceNumber");
    REFUSED("{\"event\":\"start\",\"sequenceNumber\":\"1\",\"streamSid\":\"t\",\"start\":{\"streamSid\":\"s\","
            "\"callSid\":\"c\"}}",
            "streamSid and start.streamSid differ");

    /* start's streamSid may stand alone inside "start"; stop needs no callSid */
    is_int(tw("{\"event\":\"start\",\"sequenceNumber\":\"1\",\"start\":{\"streamSid\":\"s\",\"callSid\":\"c\"}}"), 0,
           "start with start.streamSid only");
    is_str(cs(f.stream_sid), "s", "stream_sid taken from start.streamSid");
    is_int(tw("{\"event\":\"stop\",\"sequenceNumber\":\"1\",\"streamSid\":\"s\",\"stop\":{}}"), 0, "stop: empty stop");
    is_int(tw("{\"event\":\"stop\",\"sequenceNumber\":\"1\",\"streamSid\":\"s\"}"), 0, "stop: no stop object");
}

TEST(events_and_directions)
{
    const char *clear = "{\"event\":\"clear\",\"streamSid\":\"" SID "\"}";
    REFUSED("{\"event\":\"clear\",\"streamSid\":\"s\",\"sequenceNumber\":\"1\"}", "event 'clear' is not one Twilio sends");
    is_int(app(clear), 0, "clear from the app");
    is_int(f.event, SB_MS_CLEAR, "clear: event");
    is_str(cs(f.stream_sid), SID, "clear: streamSid");
    ok(f.seq == -1, "clear: no seq");

    is_int(app("{\"event\":\"media\",\"streamSid\":\"" SID "\",\"media\":{\"payload\":\"AAAA\"}}"), 0,
           "media from the app, no sequenceNumber");
    is_str(cs(f.payload), "AAAA", "app media: payload");
    is_int(app("{\"event\":\"mark\",\"streamSid\":\"" SID "\",\"mark\":{\"name\":\"x\"}}"), 0, "mark from the app");
    is_str(cs(f.name), "x", "app mark: name");

    is_int(app("{\"event\":\"media\",\"media\":{\"payload\":\"AAAA\"}}"), SB_EPARSE, "app media without streamSid");
    is_str(err, "missing streamSid", "app media without streamSid: message");
    is_int(app("{\"event\":\"media\",\"streamSid\":\"s\",\"media\":{}}"), SB_EPARSE, "app media without payload");
    is_str(err, "media: missing payload", "app media without payload: message");
    is_int(app("{\"event\":\"clear\"}"), SB_EPARSE, "app clear without streamSid");
    is_int(app("{\"event\":\"mark\",\"streamSid\":\"s\"}"), SB_EPARSE, "app mark without mark");
    is_str(err, "missing mark", "app mark without mark: message");

    const char *not_app[] = {"connected", "start", "dtmf", "stop"};
    for (size_t k = 0; k < 4; k++) {
        char text[128], want[64];
        snprintf(text, sizeof text, "{\"event\":\"%s\",\"streamSid\":\"s\"}", not_app[k]);
        snprintf(want, sizeof want, "event '%s' is not one the app sends", not_app[k]);
        is_int(app(text), SB_EPARSE, "app may not send %s", not_app[k]);
        is_str(err, want, "message for %s from the app", not_app[k]);
    }

    REFUSED("{\"event\":\"foo\"}", "unknown event 'foo'");
    REFUSED("{\"event\":\"\"}", "unknown event ''");
    REFUSED("{\"event\":\"Media\"}", "unknown event 'Media'");
    REFUSED("{\"event\":\"a\\u0000b\\n\\u00e9'\"}", "unknown event 'a?b?\?\?\?'");
    REFUSED("{\"event\":\"0123456789012345678901234567890123456789\"}",
            "unknown event '01234567890123456789012345678901'");
    REFUSED("{\"event\":1}", "event is not a string");
    REFUSED("{\"event\":{\"x\":1}}", "event is not a string");
    REFUSED("{\"event\":\"media\",\"event\":\"media\"}", "duplicate \"event\"");
    REFUSED("{\"event\":\"mark\",\"streamSid\":\"s\",\"sequenceNumber\":\"1\",\"mark\":{\"name\":\"a\",\"name\":\"b\"}}",
            "duplicate \"mark.name\"");
    REFUSED("{\"streamSid\":\"a\",\"streamSid\":\"a\",\"event\":\"clear\"}", "duplicate \"streamSid\"");
    REFUSED("{\"event\":\"mark\",\"streamSid\":\"s\",\"sequenceNumber\":\"1\",\"mark\":\"x\"}", "mark is not an object");
    REFUSED("{\"event\":\"mark\",\"streamSid\":7,\"sequenceNumber\":\"1\",\"mark\":{\"name\":\"x\"}}",
            "streamSid is not a string");

    is_str(sb_ms_event_name(SB_MS_MEDIA), "media", "event name: media");
    is_str(sb_ms_event_name(SB_MS_CLEAR), "clear", "event name: clear");
    ok(sb_ms_event_name(0) == NULL && sb_ms_event_name((sb_ms_event_t)99) == NULL, "event name outside the enum");
}

TEST(unknown_fields_skipped)
{
    is_int(tw("{\"x\":null,\"event\":\"mark\",\"y\":[1,-2.5e+3,true,false,null,\"s\",{\"a\":[{}],\"b\":{}},[]],"
              "\"streamSid\":\"s\",\"sequenceNumber\":\"1\",\"mark\":{\"name\":\"n\",\"extra\":{\"deep\":[[[1]]]}},"
              "\"protocol\":\"Call\",\"z\":0,\"w\":-0,\"v\":1E-7,\"media\":{\"payload\":\"AAAA\"}}"),
           0, "unknown keys of every kind skipped: %s", err);
    is_int(f.event, SB_MS_MARK, "mark despite the noise");
    is_str(cs(f.name), "n", "mark name");
    ok(absent_str(f.payload), "another event's object is not reported");
    /* another event's object is still held to its kinds */
    REFUSED("{\"event\":\"mark\",\"streamSid\":\"s\",\"sequenceNumber\":\"1\",\"mark\":{\"name\":\"n\"},"
            "\"media\":{\"payload\":\"!!!!\"}}",
            "media.payload is not base64");
    /* "connected" reports none of the fields around it */
    is_int(tw("{\"event\":\"connected\",\"streamSid\":\"s\",\"sequenceNumber\":\"0\"}"), 0, "connected with extras");
    ok(f.seq == -1 && absent_str(f.stream_sid), "connected reports nothing");
}

TEST(escapes)
{
    is_int(tw("{\"\\u0065vent\":\"m\\u0061rk\",\"streamSid\":\"s\\/1\",\"sequenceNumber\":\"\\u0031\\u0032\","
              "\"mark\":{\"name\":\"q\\\"b\\\\s\\/f\\bf\\fn\\nr\\rt\\t \\u00e9\\u20AC\\ud83d\\ude00 \\u0000.\"}}"),
           0, "escapes in keys and values: %s", err);
    is_int(f.event, SB_MS_MARK, "an escaped key and value still name the event");
    is_str(cs(f.stream_sid), "s/1", "\\/ decoded");
    is_int(f.seq, 12, "a number string with escapes");
    static const char want[] = "q\"b\\s/f\bf\fn\nr\rt\t \xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80 \0.";
    ok(f.name.len == sizeof want - 1 && memcmp(f.name.p, want, sizeof want - 1) == 0, "every escape decoded");
    ok(f.name.p >= scratch.p && f.name.p + f.name.len <= scratch.p + scratch.len, "the decoded name is in scratch");
    ok(scratch.len <= strlen("{\"\\u0065vent\"...") + 200 && scratch.p[scratch.len] == '\0', "scratch NUL-ended");

    is_int(tw("{\"event\":\"media\",\"sequenceNumber\":\"1\",\"streamSid\":\"s\",\"media\":{\"payload\":"
              "\"ab\\/+\"}}"),
           0, "a payload with an escaped '/' (PHP's json_encode writes those)");
    is_str(cs(f.payload), "ab/+", "payload decoded");
    is_int(tw("{\"event\":\"mark\",\"streamSid\":\"s\",\"sequenceNumber\":\"1\",\"mark\":{\"name\":\"\xc3\xa9\xe2\x82\xac"
              "\xf0\x9f\x98\x80\x7f\"}}"),
           0, "raw UTF-8 and DEL in a string");
    is_str(cs(f.name), "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\x7f", "raw UTF-8 kept as a view");

    is_int(tw("{\"event\":\"start\",\"sequenceNumber\":\"1\",\"start\":{\"streamSid\":\"s\",\"callSid\":\"c\","
              "\"customParameters\":{\"n\\u00e4me\":\"v\\u00e4l\",\"b\":\"\"}}}"),
           0, "escaped customParameters");
    is_str(cs(f.params[0].name), "n\xc3\xa4me", "escaped parameter name kept");
    is_str(cs(f.params[0].value), "v\xc3\xa4l", "escaped parameter value kept");
    is_str(cs(f.params[1].value), "", "an empty parameter value");
}

TEST(bad_json)
{
    BAD_JSON("", "not a JSON object");
    BAD_JSON("   ", "not a JSON object");
    BAD_JSON("[]", "not a JSON object");
    BAD_JSON("\"event\"", "not a JSON object");
    BAD_JSON("null", "not a JSON object");
    BAD_JSON("{", "not JSON at byte 1: expected a key");
    BAD_JSON("{\"event\":\"clear\",}", "not JSON at byte 17: trailing comma");
    BAD_JSON("{\"a\":[1,]}", "not JSON at byte 8: trailing comma");
    BAD_JSON("{\"a\":01}", "not JSON at byte 5: leading zero");
    BAD_JSON("{\"a\":-01}", "not JSON at byte 6: leading zero");
    BAD_JSON("{\"a\":1.}", "not JSON at byte 7: bad number");
    BAD_JSON("{\"a\":.5}", "not JSON at byte 5: unexpected byte");
    BAD_JSON("{\"a\":1e}", "not JSON at byte 7: bad number");
    BAD_JSON("{\"a\":+1}", "not JSON at byte 5: unexpected byte");
    BAD_JSON("{\"a\":-}", "not JSON at byte 6: bad number");
    BAD_JSON("{\"a\":0x10}", "not JSON at byte 6: expected ',' or '}'");
    BAD_JSON("{\"a\":NaN}", "not JSON at byte 5: unexpected byte");
    BAD_JSON("{\"a\":tru}", "not JSON at byte 5: unexpected byte");
    BAD_JSON("{\"a\":True}", "not JSON at byte 5: unexpected byte");
    BAD_JSON("{\"a\":nul}", "not JSON at byte 5: unexpected byte");
    BAD_JSON("{\"a\":\"\\x\"}", "not JSON at byte 6: bad escape");
    BAD_JSON("{\"a\":\"\\'\"}", "not JSON at byte 6: bad escape");
    BAD_JSON("{\"a\":\"\\u12\"}", "not JSON at byte 6: bad \\u escape");
    BAD_JSON("{\"a\":\"\\u12g4\"}", "not JSON at byte 6: bad \\u escape");
    BAD_JSON("{\"a\":\"\\ud800\"}", "not JSON at byte 6: lone surrogate");
    BAD_JSON("{\"a\":\"\\ud800\\u0041\"}", "not JSON at byte 6: lone surrogate");
    BAD_JSON("{\"a\":\"\\ud800\\ud800\"}", "not JSON at byte 6: lone surrogate");
    BAD_JSON("{\"a\":\"\\udc00\"}", "not JSON at byte 6: lone surrogate");
    BAD_JSON("{\"a\":\"\\ud800x\"}", "not JSON at byte 6: lone surrogate");
    BAD_JSON("{\"event\":\"\\udc00\\ud800\"}", "not JSON at byte 10: lone surrogate");
    BAD_JSON("{\"a\":\"\xc3\"}", "not JSON at byte 6: invalid UTF-8");
    BAD_JSON("{\"a\":\"\xc0\xaf\"}", "not JSON at byte 6: invalid UTF-8");       /* overlong '/' */
    BAD_JSON("{\"a\":\"\xed\xa0\x80\"}", "not JSON at byte 6: invalid UTF-8");   /* a surrogate in UTF-8 */
    BAD_JSON("{\"a\":\"\xf4\x90\x80\x80\"}", "not JSON at byte 6: invalid UTF-8"); /* above U+10FFFF */
    BAD_JSON("{\"a\":\"\x80\"}", "not JSON at byte 6: invalid UTF-8");
    BAD_JSON("{\"a\":\"\xff\"}", "not JSON at byte 6: invalid UTF-8");
    BAD_JSON("{\"a\xe2\x82\":1}", "not JSON at byte 3: invalid UTF-8");
    BAD_JSON("{\"a\":\"x\ty\"}", "not JSON at byte 7: control byte in a string");
    BAD_JSON("{\"a\":\"x\ny\"}", "not JSON at byte 7: control byte in a string");
    BAD_JSON("{\"a\":\"abc", "not JSON at byte 5: unterminated string");
    BAD_JSON("{\"a\":\"abc\\", "not JSON at byte 9: unterminated string");
    BAD_JSON("{\"a\" 1}", "not JSON at byte 5: expected ':'");
    BAD_JSON("{a:1}", "not JSON at byte 1: expected a key");
    BAD_JSON("{'a':1}", "not JSON at byte 1: expected a key");
    BAD_JSON("{\"a\":1 \"b\":2}", "not JSON at byte 7: expected ',' or '}'");
    BAD_JSON("{\"a\":[1 2]}", "not JSON at byte 8: expected ',' or ']'");
    BAD_JSON("{\"a\":1}}", "not JSON at byte 7: trailing bytes");
    BAD_JSON("{\"a\":1} {}", "not JSON at byte 8: trailing bytes");
    BAD_JSON("{\"a\":1}\v", "not JSON at byte 7: trailing bytes");
    BAD_JSON("\xef\xbb\xbf{\"a\":1}", "not a JSON object"); /* no byte order mark in RFC 8259 text we receive */
    BAD_JSON("{\"a\":1,,\"b\":2}", "not JSON at byte 7: expected a key");
    BAD_JSON("{\"a\":[1,,2]}", "not JSON at byte 8: unexpected byte");
    BAD_JSON("{\"a\":}", "not JSON at byte 5: unexpected byte");
    BAD_JSON("{\"a\":1", "not JSON at byte 6: unexpected end");
    BAD_JSON("{\"a\":[", "not JSON at byte 6: unexpected end");
    BAD_JSON("{\"a\":/*c*/1}", "not JSON at byte 5: unexpected byte");

    /* a NUL inside the text (the sb_str_cstr helpers cannot pass one) */
    static const char nul[] = "{\"event\":\"clear\",\"streamSid\":\"s\"}\0";
    is_int(sb_ms_parse(sb_str(nul, sizeof nul - 1), SB_MS_FROM_APP, &f, &scratch, err, sizeof err), SB_EPARSE,
           "a NUL after the object");
    static const char nul2[] = "{\"event\":\"clear\",\"streamSid\":\"s\0\"}";
    is_int(sb_ms_parse(sb_str(nul2, sizeof nul2 - 1), SB_MS_FROM_APP, &f, &scratch, err, sizeof err), SB_EPARSE,
           "a raw NUL in a string");
    ok(blank() && scratch.len == 0, "a failed parse leaves the frame blank and scratch empty");
}

TEST(depth)
{
    /* the top-level object is depth 1; eight levels in all are allowed */
    is_int(tw("{\"event\":\"clear\",\"x\":[[[[[[[1]]]]]]]}"), SB_EPARSE, "depth 8 is JSON (clear from Twilio)");
    is_str(err, "event 'clear' is not one Twilio sends", "depth 8 passed the scan");
    BAD_JSON("{\"event\":\"clear\",\"x\":[[[[[[[[1]]]]]]]]}", "not JSON at byte 28: nested deeper than 8");
    BAD_JSON("{\"x\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{}}}}}}}}}", "not JSON at byte 40: nested deeper");
    BAD_JSON("{\"start\":{\"customParameters\":{\"a\":[[[[[[1]]]]]]}}}", "not JSON");
    /* deep enough to smash a stack if depth were not bounded */
    sb_buf_t deep;
    sb_buf_init(&deep);
    sb_buf_puts(&deep, "{\"x\":");
    for (int k = 0; k < 100000; k++)
        sb_buf_puts(&deep, "[");
    is_int(sb_ms_parse(sb_str(deep.p, deep.len), SB_MS_FROM_TWILIO, &f, &scratch, err, sizeof err), SB_EPARSE,
           "100,000 open brackets");
    sb_buf_cleanup(&deep);
}

TEST(base64)
{
    static const char *good[] = {"AAAA", "AA==", "AAA=", "+/+/", "QUJDRA==", "no+JhoaJjpz/"};
    static const char *bad[] = {"A", "AA", "AAA", "AAAAA", "A===", "====", "AA=A", "=AAA", "AA A", "AA-_",
                                "AA\\n=", "AAA\\u00e9"};
    char text[160];
    for (size_t k = 0; k < sizeof good / sizeof *good; k++) {
        snprintf(text, sizeof text, "{\"event\":\"media\",\"streamSid\":\"s\",\"media\":{\"payload\":\"%s\"}}", good[k]);
        is_int(app(text), 0, "base64 \"%s\" accepted", good[k]);
    }
    for (size_t k = 0; k < sizeof bad / sizeof *bad; k++) {
        snprintf(text, sizeof text, "{\"event\":\"media\",\"streamSid\":\"s\",\"media\":{\"payload\":\"%s\"}}", bad[k]);
        is_int(app(text), SB_EPARSE, "base64 \"%s\" refused", bad[k]);
        is_str(err, "media.payload is not base64", "message for \"%s\"", bad[k]);
    }
    is_int(app("{\"event\":\"media\",\"streamSid\":\"s\",\"media\":{\"payload\":\"\"}}"), SB_EPARSE, "empty payload");
    is_str(err, "media.payload is not base64", "empty payload: message");
    is_int(app("{\"event\":\"media\",\"streamSid\":\"s\",\"media\":{\"payload\":12}}"), SB_EPARSE, "payload a number");
    is_str(err, "media.payload is not a string", "payload a number: message");
}

TEST(params)
{
    sb_buf_t b;
    sb_buf_init(&b);
    sb_buf_puts(&b, "{\"event\":\"start\",\"sequenceNumber\":\"1\",\"start\":{\"streamSid\":\"s\",\"callSid\":\"c\","
                    "\"customParameters\":{");
    for (int k = 0; k < SB_MS_MAX_PARAMS; k++)
        sb_buf_printf(&b, "%s\"p%d\":\"v%d\"", k ? "," : "", k, k);
    size_t at = b.len;
    sb_buf_puts(&b, "}}}");
    is_int(tw(b.p), 0, "%d customParameters", SB_MS_MAX_PARAMS);
    is_int(f.nparams, SB_MS_MAX_PARAMS, "all kept");
    is_str(cs(f.params[15].value), "v15", "the last one");
    b.len = at;
    sb_buf_puts(&b, ",\"p16\":\"v\"}}}");
    is_int(tw(b.p), SB_EPARSE, "one more is refused");
    is_str(err, "start.customParameters: more than 16 entries", "too many: message");
    sb_buf_cleanup(&b);

    REFUSED("{\"event\":\"start\",\"sequenceNumber\":\"1\",\"start\":{\"streamSid\":\"s\",\"callSid\":\"c\","
            "\"customParameters\":{\"a\":\"1\",\"a\":\"2\"}}}",
            "start.customParameters: duplicate name");
    REFUSED("{\"event\":\"start\",\"sequenceNumber\":\"1\",\"start\":{\"streamSid\":\"s\",\"callSid\":\"c\","
            "\"customParameters\":{\"a\":1}}}",
            "start.customParameters: a value is not a string");
    REFUSED("{\"event\":\"start\",\"sequenceNumber\":\"1\",\"start\":{\"streamSid\":\"s\",\"callSid\":\"c\","
            "\"customParameters\":[]}}",
            "start.customParameters is not an object");
    is_int(tw("{\"event\":\"start\",\"sequenceNumber\":\"1\",\"start\":{\"streamSid\":\"s\",\"callSid\":\"c\","
              "\"customParameters\":{}}}"),
           0, "no customParameters");
    is_int(f.nparams, 0, "none kept");
}

TEST(error_buffer)
{
    char small[8];
    is_int(sb_ms_parse(SB_STR("{\"event\":\"foo\"}"), SB_MS_FROM_TWILIO, &f, &scratch, small, sizeof small), SB_EPARSE,
           "a small error buffer");
    is_str(small, "unknown", "the message is cut to the buffer");
    is_int(sb_ms_parse(SB_STR("{\"event\":\"foo\"}"), SB_MS_FROM_TWILIO, &f, &scratch, NULL, 0), SB_EPARSE,
           "no error buffer at all");
}

/* ---- writers round trip --------------------------------------------------------------------------------------- */

static bool same(sb_str_t a, const char *b)
{
    return sb_str_eq_cstr(a, b);
}

TEST(writers)
{
    sb_buf_t out;
    sb_buf_init(&out);

    sb_ms_write_connected(&out);
    is_str(out.p, "{\"event\":\"connected\",\"protocol\":\"Call\",\"version\":\"1.0.0\"}", "connected: Twilio's text");
    is_int(parse_from(SB_MS_FROM_TWILIO, out.p), 0, "connected reads back");
    is_int(f.event, SB_MS_CONNECTED, "connected: event");

    sb_ms_param_t params[] = {{SB_STR("FirstName"), SB_STR("Jane")}, {SB_STR("q\"\\\n\x01"), SB_STR("\xc3\xa9")}};
    out.len = 0;
    sb_ms_write_start(&out, 1, SB_STR(SID), SB_STR(ACCT), SB_STR(CALL), params, 2);
    is_str(out.p,
           "{\"event\":\"start\",\"sequenceNumber\":\"1\",\"start\":{\"accountSid\":\"" ACCT "\",\"streamSid\":\"" SID
           "\",\"callSid\":\"" CALL "\",\"tracks\":[\"inbound\"],\"mediaFormat\":{\"encoding\":\"audio/x-mulaw\","
           "\"sampleRate\":8000,\"channels\":1},\"customParameters\":{\"FirstName\":\"Jane\",\"q\\\"\\\\\\n\\u0001\":"
           "\"\xc3\xa9\"}},\"streamSid\":\"" SID "\"}",
           "start: Twilio's shape, strings escaped");
    is_int(tw(out.p), 0, "start reads back: %s", err);
    ok(f.event == SB_MS_START && f.seq == 1 && same(f.stream_sid, SID) && same(f.account_sid, ACCT) &&
           same(f.call_sid, CALL) && f.nparams == 2,
       "start: same fields");
    ok(sb_str_eq(f.params[1].name, params[1].name) && sb_str_eq(f.params[1].value, params[1].value),
       "start: escaped parameter comes back");

    out.len = 0;
    sb_ms_write_media(&out, 3, SB_STR(SID), SB_STR("inbound"), 1, 5, SB_STR("no+JhoaJjpz/"));
    is_str(out.p,
           "{\"event\":\"media\",\"sequenceNumber\":\"3\",\"media\":{\"track\":\"inbound\",\"chunk\":\"1\","
           "\"timestamp\":\"5\",\"payload\":\"no+JhoaJjpz/\"},\"streamSid\":\"" SID "\"}",
           "media: Twilio's shape");
    is_int(tw(out.p), 0, "media reads back");
    ok(f.event == SB_MS_MEDIA && f.seq == 3 && same(f.track, "inbound") && f.chunk == 1 && f.timestamp == 5 &&
           same(f.payload, "no+JhoaJjpz/") && same(f.stream_sid, SID),
       "media: same fields");
    out.len = 0;
    sb_ms_write_media(&out, 9007199254740992LL, SB_STR("x\"y"), SB_STR(""), -1, -1, SB_STR("AA=="));
    is_int(tw(out.p), 0, "media with optional fields left out reads back: %s", out.p);
    ok(f.seq == 9007199254740992LL && same(f.stream_sid, "x\"y") && absent_str(f.track) && f.chunk == -1 &&
           f.timestamp == -1,
       "media: left-out fields come back absent");

    out.len = 0;
    sb_ms_write_dtmf(&out, 5, SB_STR(SID), SB_STR("#"));
    is_str(out.p,
           "{\"event\":\"dtmf\",\"streamSid\":\"" SID "\",\"sequenceNumber\":\"5\",\"dtmf\":{\"track\":"
           "\"inbound_track\",\"digit\":\"#\"}}",
           "dtmf: Twilio's shape");
    is_int(tw(out.p), 0, "dtmf reads back");
    ok(f.event == SB_MS_DTMF && f.seq == 5 && same(f.digit, "#") && same(f.track, "inbound_track"), "dtmf: same");

    out.len = 0;
    sb_ms_write_mark(&out, 4, SB_STR(SID), SB_STR("my label"));
    is_str(out.p, "{\"event\":\"mark\",\"sequenceNumber\":\"4\",\"streamSid\":\"" SID "\",\"mark\":{\"name\":"
                  "\"my label\"}}",
           "mark: Twilio's shape");
    is_int(tw(out.p), 0, "mark reads back");
    ok(f.event == SB_MS_MARK && f.seq == 4 && same(f.name, "my label"), "mark: same");
    out.len = 0;
    sb_ms_write_mark(&out, -1, SB_STR(SID), SB_STR("\xe2\x82\xac\t\x7f"));
    is_str(out.p, "{\"event\":\"mark\",\"streamSid\":\"" SID "\",\"mark\":{\"name\":\"\xe2\x82\xac\\t\\u007f\"}}",
           "mark: the app's shape, escaped");
    is_int(app(out.p), 0, "app mark reads back");
    ok(f.seq == -1 && same(f.name, "\xe2\x82\xac\t\x7f"), "app mark: same");

    out.len = 0;
    sb_ms_write_stop(&out, 5, SB_STR(SID), SB_STR(ACCT), SB_STR(CALL));
    is_str(out.p, "{\"event\":\"stop\",\"sequenceNumber\":\"5\",\"streamSid\":\"" SID "\",\"stop\":{\"accountSid\":\""
                  ACCT "\",\"callSid\":\"" CALL "\"}}",
           "stop: Twilio's shape");
    is_int(tw(out.p), 0, "stop reads back");
    ok(f.event == SB_MS_STOP && same(f.call_sid, CALL) && same(f.account_sid, ACCT), "stop: same");
    out.len = 0;
    sb_ms_write_stop(&out, 6, SB_STR(SID), SB_STR(""), SB_STR(CALL));
    is_int(tw(out.p), 0, "stop without accountSid reads back: %s", out.p);
    ok(absent_str(f.account_sid) && same(f.call_sid, CALL), "stop without accountSid: same");

    out.len = 0;
    sb_ms_write_app_media(&out, SB_STR(SID), SB_STR("AAAA"));
    is_str(out.p, "{\"event\":\"media\",\"streamSid\":\"" SID "\",\"media\":{\"payload\":\"AAAA\"}}",
           "app media: Twilio's documented shape");
    is_int(app(out.p), 0, "app media reads back");
    ok(f.event == SB_MS_MEDIA && same(f.payload, "AAAA") && f.seq == -1, "app media: same");

    out.len = 0;
    sb_ms_write_clear(&out, SB_STR(SID));
    is_str(out.p, "{\"event\":\"clear\",\"streamSid\":\"" SID "\"}", "clear: Twilio's documented shape");
    is_int(app(out.p), 0, "clear reads back");
    ok(f.event == SB_MS_CLEAR && same(f.stream_sid, SID), "clear: same");

    /* writers append */
    out.len = 0;
    sb_buf_puts(&out, "x");
    sb_ms_write_clear(&out, SB_STR("s"));
    ok(out.p[0] == 'x' && out.len == 1 + strlen("{\"event\":\"clear\",\"streamSid\":\"s\"}"), "writers append");
    sb_buf_cleanup(&out);
}

TEST(scratch_reuse)
{
    /* scratch keeps its storage across calls: no allocation once it is as large as the frames */
    is_int(tw("{\"event\":\"mark\",\"streamSid\":\"s\",\"sequenceNumber\":\"1\",\"mark\":{\"name\":\"\\u00e9\"}}"), 0,
           "an escaped frame");
    char *before = scratch.p;
    size_t cap = scratch.cap;
    for (int k = 0; k < 100; k++)
        tw("{\"event\":\"mark\",\"streamSid\":\"s\",\"sequenceNumber\":\"1\",\"mark\":{\"name\":\"\\u00e9\"}}");
    ok(scratch.p == before && scratch.cap == cap, "scratch did not move");
    is_str(cs(f.name), "\xc3\xa9", "decoded again");
}

int main(void)
{
    sb_buf_init(&scratch);
    RUN(twilio_events);
    RUN(any_order_and_numbers);
    RUN(required_fields);
    RUN(events_and_directions);
    RUN(unknown_fields_skipped);
    RUN(escapes);
    RUN(bad_json);
    RUN(depth);
    RUN(base64);
    RUN(params);
    RUN(error_buffer);
    RUN(writers);
    RUN(scratch_reuse);
    sb_buf_cleanup(&scratch);
    return tap_done();
}
