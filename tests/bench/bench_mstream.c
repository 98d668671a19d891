/* Media Streams frame benchmark: prints figures, asserts nothing.
 *
 *   parse media      ns per sb_ms_parse of a typical Twilio "media" frame (20 ms of µ-law: 160 bytes, 216 characters
 *                    of base64; the frame is 300-odd bytes), from Twilio
 *   parse app media  the same for the app's shorter form, from the app
 *   parse start      ns per sb_ms_parse of a "start" frame with two customParameters
 *   write media      ns per sb_ms_write_media into a buffer emptied before each call (no allocation once warm)
 *   write app media  ns per sb_ms_write_app_media, the same way
 *   write mark       ns per sb_ms_write_mark
 *
 * The relay's budget is 4 µs of CPU per frame in all, so the parse should cost well under 1 µs. Each figure is the
 * best of ROUNDS runs of N calls (the least disturbed by whatever else runs on the machine).
 * Usage: bench_mstream [calls per round] */
#include "proto/codec.h"
#include "proto/mstream.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define ROUNDS 7

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static volatile int64_t sink; /* keeps the compiler from dropping the work */

typedef void (*work_fn)(long n);

static sb_str_t text;
static sb_ms_from_t from;
static sb_buf_t scratch, out;
static sb_str_t payload;

static void parse_n(long n)
{
    sb_ms_frame_t f;
    char err[128];
    for (long k = 0; k < n; k++) {
        if (sb_ms_parse(text, from, &f, &scratch, err, sizeof err) != 0) {
            fprintf(stderr, "bench_mstream: the frame does not parse: %s\n", err);
            exit(1);
        }
        sink += f.seq + (int64_t)f.payload.len;
    }
}

static void write_media_n(long n)
{
    for (long k = 0; k < n; k++) {
        out.len = 0;
        sb_ms_write_media(&out, k, SB_STR("MZ18ad3ab5a668481ce02b83e7395059f0"), SB_STR("outbound"), k, k * 20,
                          payload);
        sink += (int64_t)out.len;
    }
}

static void write_app_media_n(long n)
{
    for (long k = 0; k < n; k++) {
        out.len = 0;
        sb_ms_write_app_media(&out, SB_STR("MZ18ad3ab5a668481ce02b83e7395059f0"), payload);
        sink += (int64_t)out.len;
    }
}

static void write_mark_n(long n)
{
    for (long k = 0; k < n; k++) {
        out.len = 0;
        sb_ms_write_mark(&out, k, SB_STR("MZ18ad3ab5a668481ce02b83e7395059f0"), SB_STR("end of greeting"));
        sink += (int64_t)out.len;
    }
}

static double best_ns(work_fn fn, long n)
{
    double best = 0;
    fn(n / 10 + 1); /* warm: caches, the scratch and output buffers at their size */
    for (int r = 0; r < ROUNDS; r++) {
        double t0 = now_ns();
        fn(n);
        double per = (now_ns() - t0) / (double)n;
        if (r == 0 || per < best)
            best = per;
    }
    return best;
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 1000000;
    unsigned char ulaw[160];
    sb_buf_t media, app_media, start, b64;

    if (n < 1)
        n = 1;
    for (size_t k = 0; k < sizeof ulaw; k++)
        ulaw[k] = (unsigned char)(k * 37 + 11);
    sb_buf_init(&b64);
    sb_codec_b64_append(&b64, ulaw, sizeof ulaw, SB_B64_STD);
    payload = sb_str(b64.p, b64.len);

    sb_buf_init(&media);
    sb_buf_printf(&media,
                  "{\"event\":\"media\",\"sequenceNumber\":\"3418\",\"media\":{\"track\":\"inbound\",\"chunk\":"
                  "\"3417\",\"timestamp\":\"68340\",\"payload\":\"%s\"},\"streamSid\":"
                  "\"MZ18ad3ab5a668481ce02b83e7395059f0\"}",
                  b64.p);
    sb_buf_init(&app_media);
    sb_ms_write_app_media(&app_media, SB_STR("MZ18ad3ab5a668481ce02b83e7395059f0"), payload);
    sb_buf_init(&start);
    sb_buf_puts(&start,
                "{\"event\":\"start\",\"sequenceNumber\":\"1\",\"start\":{\"accountSid\":"
                "\"AC123456789abcdef0123456789abcdef0\",\"streamSid\":\"MZ18ad3ab5a668481ce02b83e7395059f0\","
                "\"callSid\":\"CA123456789abcdef0123456789abcdef0\",\"tracks\":[\"inbound\"],\"mediaFormat\":{"
                "\"encoding\":\"audio/x-mulaw\",\"sampleRate\":8000,\"channels\":1},\"customParameters\":{"
                "\"FirstName\":\"Jane\",\"LastName\":\"Doe\"}},\"streamSid\":\"MZ18ad3ab5a668481ce02b83e7395059f0\"}");
    sb_buf_init(&scratch);
    sb_buf_init(&out);

    text = sb_str(media.p, media.len);
    from = SB_MS_FROM_TWILIO;
    printf("parse media       %6.1f ns  (%zu-byte frame, Twilio's shape)\n", best_ns(parse_n, n), media.len);
    text = sb_str(app_media.p, app_media.len);
    from = SB_MS_FROM_APP;
    printf("parse app media   %6.1f ns  (%zu-byte frame)\n", best_ns(parse_n, n), app_media.len);
    text = sb_str(start.p, start.len);
    from = SB_MS_FROM_TWILIO;
    printf("parse start       %6.1f ns  (%zu-byte frame, 2 customParameters)\n", best_ns(parse_n, n / 4 + 1),
           start.len);
    printf("write media       %6.1f ns\n", best_ns(write_media_n, n));
    printf("write app media   %6.1f ns\n", best_ns(write_app_media_n, n));
    printf("write mark        %6.1f ns\n", best_ns(write_mark_n, n));

    sb_buf_cleanup(&media);
    sb_buf_cleanup(&app_media);
    sb_buf_cleanup(&start);
    sb_buf_cleanup(&b64);
    sb_buf_cleanup(&scratch);
    sb_buf_cleanup(&out);
    return 0;
}
