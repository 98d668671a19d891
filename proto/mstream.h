/* Twilio Media Streams frames: the JSON text messages of a call's audio stream, scanned and written.
 *
 * Twilio → us (and us → the tenant's voice app, relayed unchanged): "connected", "start", "media", "dtmf", "mark",
 * "stop". The voice app → us (and us → Twilio, unchanged): "media", "mark", "clear". Numbers Twilio sends as
 * strings ("sequenceNumber":"3", "chunk", "timestamp") are read from strings; a number literal is accepted too.
 *
 * The scanner is the relay's hot path (50 frames a second each way for every call): it reads the frame in place,
 * validates that the whole text is one well-formed JSON object (RFC 8259, strict: no trailing bytes, no duplicate
 * "event", depth at most SB_MS_MAX_DEPTH, valid UTF-8), and hands back borrowed views of the fields the gateway
 * needs; fields it does not know are skipped, because Twilio adds fields without notice. A string holding escapes
 * is decoded into the caller's scratch buffer (reserved once to the frame's length, so views never move). The
 * payload of "media" must be base64 text (the alphabet and '=' padding, length a multiple of 4); it is not
 * decoded: the relay forwards the frame as it came.
 *
 * A known key ("event", "streamSid", "media.payload", ...) may appear once, and must hold the kind of value it is
 * for wherever it appears, even inside an object the event does not use; numbers (sequenceNumber, chunk, timestamp)
 * are integers from 0 to 2^53, as digits alone (a JSON number without sign, fraction or exponent, or a string of
 * decimal digits without a leading zero). A required string must not be empty.
 *
 * Errors: SB_EPARSE with a one-line message naming what is wrong ("not JSON at byte 17: leading zero", byte offsets
 * counted from 0; "media: missing payload"; "duplicate \"event\""; "unknown event 'foo'" reduced to printable ASCII,
 * at most 32 characters of it). Messages never quote a field's value. Fuzzed: tests/fuzz/fuzz_mstream.c.
 * Cost: about 330 ns for a 380-byte media frame (tests/bench/bench_mstream.c). */
#ifndef SB_MSTREAM_H
#define SB_MSTREAM_H

#include "proto/str.h"

#include <stddef.h>
#include <stdint.h>

#define SB_MS_MAX_DEPTH 8
#define SB_MS_MAX_PARAMS 16 /* start.customParameters kept; more is an error */

typedef enum sb_ms_event {
    SB_MS_CONNECTED = 1,
    SB_MS_START,
    SB_MS_MEDIA,
    SB_MS_DTMF,
    SB_MS_MARK,
    SB_MS_STOP,
    SB_MS_CLEAR
} sb_ms_event_t;

/* Who sent the frame: which events are allowed and which fields are required. */
typedef enum sb_ms_from {
    SB_MS_FROM_TWILIO = 1, /* connected, start, media, dtmf, mark, stop; sequenceNumber and streamSid required on all
                            * but connected (start: start.streamSid and start.callSid stand for it; a top-level
                            * streamSid, if any, must be the same); media.payload, dtmf.digit, mark.name required */
    SB_MS_FROM_APP         /* media (media.payload), mark (mark.name), clear; streamSid required on each */
} sb_ms_from_t;

typedef struct sb_ms_param {
    sb_str_t name, value;
} sb_ms_param_t;

/* One frame; views into the frame's text or the scratch buffer; absent strings are {"", 0}, absent numbers -1. Only
 * the fields of the frame's event are filled ("connected" fills none); the others stay absent. */
typedef struct sb_ms_frame {
    sb_ms_event_t event;
    int64_t seq;                    /* sequenceNumber */
    sb_str_t stream_sid;            /* top-level streamSid (start: start.streamSid when the top level has none) */
    sb_str_t call_sid, account_sid; /* start.callSid / stop.callSid, start.accountSid / stop.accountSid */
    sb_str_t track;                 /* media.track ("inbound", "outbound"), dtmf.track */
    int64_t chunk, timestamp;       /* media.chunk, media.timestamp (ms since the stream started) */
    sb_str_t payload;               /* media.payload: base64 µ-law, not decoded */
    sb_str_t name;                  /* mark.name */
    sb_str_t digit;                 /* dtmf.digit */
    sb_ms_param_t params[SB_MS_MAX_PARAMS]; /* start.customParameters, in order */
    size_t nparams;
} sb_ms_frame_t;

/* Scans text (one whole text message; borrowed, and the views in f point into it) into f. scratch is the caller's
 * and is reset (len 0) first; decoded strings live there until the next call. Returns 0 or SB_EPARSE (err says why;
 * err may be NULL when errlen is 0); on failure f is all absent (event 0) and scratch empty. Allocates only when
 * scratch is smaller than the frame. */
int sb_ms_parse(sb_str_t text, sb_ms_from_t from, sb_ms_frame_t *f, sb_buf_t *scratch, char *err, size_t errlen);

/* "media", "mark", ... for an event; NULL outside the enum. */
const char *sb_ms_event_name(sb_ms_event_t e);

/* Writers of the frames the gateway and the mock provider make themselves, appended to out in Twilio's exact shape
 * (strings JSON-escaped, numbers as strings where Twilio sends strings). Strings are borrowed and must be valid
 * UTF-8; an optional one that is empty (track, accountSid, stop's callSid) and a number that is negative are left
 * out. sb_ms_parse of the output gives back what was written (dtmf's track is always "inbound_track"). */
void sb_ms_write_connected(sb_buf_t *out);
void sb_ms_write_start(sb_buf_t *out, int64_t seq, sb_str_t stream_sid, sb_str_t account_sid, sb_str_t call_sid,
                       const sb_ms_param_t *params, size_t nparams);
/* payload: base64 text already */
void sb_ms_write_media(sb_buf_t *out, int64_t seq, sb_str_t stream_sid, sb_str_t track, int64_t chunk,
                       int64_t timestamp, sb_str_t payload);
void sb_ms_write_dtmf(sb_buf_t *out, int64_t seq, sb_str_t stream_sid, sb_str_t digit);
/* seq < 0: the app's form (no sequenceNumber) */
void sb_ms_write_mark(sb_buf_t *out, int64_t seq, sb_str_t stream_sid, sb_str_t name);
void sb_ms_write_stop(sb_buf_t *out, int64_t seq, sb_str_t stream_sid, sb_str_t account_sid, sb_str_t call_sid);
/* The app's "media" toward Twilio: {"event":"media","streamSid":..,"media":{"payload":..}} */
void sb_ms_write_app_media(sb_buf_t *out, sb_str_t stream_sid, sb_str_t payload);
void sb_ms_write_clear(sb_buf_t *out, sb_str_t stream_sid);

#endif
