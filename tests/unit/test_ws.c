/* Unit tests for proto/ws: the accept key (RFC 6455 section 1.3), the reader on the examples of section 5.7 (masked,
 * as a server must require), every way of splitting the input down to one byte per feed, fragmentation with control
 * frames in between, each protocol violation with the close code it calls for, the size limit at and one past the
 * edge, 16- and 64-bit lengths, close frames, when payloads are views and when copies, and the writers (frame heads
 * at every length boundary, close payloads cut at a UTF-8 boundary, round trips through the reader). Client mode:
 * server frames read unmasked at every split, a masked one refused, and the masked writer byte for byte the frame
 * a server reads back. */
#include "proto/ws.h"

#include "proto/err.h"
#include "proto/mem.h"
#include "tests/tap.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define FIN 0x80

static const uint8_t KEY[4] = {0x37, 0xfa, 0x21, 0x3d}; /* the mask key of the section 5.7 examples */

/* ---- building client frames ----------------------------------------------------------------------------------- */

/* Appends a client frame: first byte b0 as given (FIN, RSV, opcode), the payload length declared as len in lenbytes
 * extended bytes (0: the 7-bit field; 2 or 8: forced, even if not minimal), masked with KEY unless masked is false,
 * then the n payload bytes of p (n may differ from len, to send a head alone). */
static void raw_frame(sb_buf_t *b, uint8_t b0, bool masked, int lenbytes, uint64_t len, const void *p, size_t n)
{
    uint8_t h[14];
    size_t hn = 0;
    h[hn++] = b0;
    uint8_t m = masked ? 0x80 : 0;
    if (lenbytes == 0) {
        h[hn++] = (uint8_t)(m | len);
    } else {
        h[hn++] = (uint8_t)(m | (lenbytes == 2 ? 126 : 127));
        for (int j = lenbytes - 1; j >= 0; j--)
            h[hn++] = (uint8_t)(len >> (8 * j));
    }
    if (masked) {
        memcpy(h + hn, KEY, 4);
        hn += 4;
    }
    sb_buf_append(b, h, hn);
    for (size_t i = 0; i < n; i++) {
        uint8_t c = ((const uint8_t *)p)[i] ^ (masked ? KEY[i & 3] : 0);
        sb_buf_append(b, &c, 1);
    }
}

/* Appends a well-formed masked client frame with the shortest length encoding. */
static void frame(sb_buf_t *b, uint8_t b0, const void *p, size_t n)
{
    raw_frame(b, b0, true, n < 126 ? 0 : n <= 0xffff ? 2 : 8, n, p, n);
}

static void frame_str(sb_buf_t *b, uint8_t b0, const char *s)
{
    frame(b, b0, s, strlen(s));
}

/* Turns a server frame (as the writers make it) in s[0..n) into the client frame that carries the same payload:
 * mask bit set, a key inserted after the head, the payload masked. Appends it to out; returns bytes of s used. */
static size_t mask_server_frame(sb_buf_t *out, const uint8_t *s, size_t n, const uint8_t key[4])
{
    size_t hn = (s[1] & 0x7f) == 126 ? 4 : (s[1] & 0x7f) == 127 ? 10 : 2;
    uint64_t len = s[1] & 0x7f;
    if (hn > 2) {
        len = 0;
        for (size_t j = 2; j < hn; j++)
            len = len << 8 | s[j];
    }
    if (n < hn + len)
        return 0;
    uint8_t h[SB_WS_HEAD_MAX];
    memcpy(h, s, hn);
    h[1] |= 0x80;
    sb_buf_append(out, h, hn);
    sb_buf_append(out, key, 4);
    for (uint64_t i = 0; i < len; i++) {
        uint8_t c = s[hn + i] ^ key[i & 3];
        sb_buf_append(out, &c, 1);
    }
    return hn + (size_t)len;
}

/* ---- feeding and recording ------------------------------------------------------------------------------------ */

typedef struct rec {
    int op;
    char *data; /* a copy of the payload, NUL-terminated */
    size_t len;
    int code;
    char reason[SB_WS_CONTROL_MAX + 1];
    size_t rlen;
} rec_t;

typedef struct log {
    rec_t ev[64];
    int n;
    int rc;      /* how it ended: 0 (waiting for more), an error, or SB_ECLOSED after a close */
    size_t used; /* bytes consumed in all */
} log_t;

static void log_free(log_t *l)
{
    for (int i = 0; i < l->n; i++)
        sb_free(l->ev[i].data);
    l->n = 0;
}

static bool log_eq(const log_t *a, const log_t *b)
{
    if (a->n != b->n || a->rc != b->rc || a->used != b->used)
        return false;
    for (int i = 0; i < a->n; i++) {
        const rec_t *x = &a->ev[i], *y = &b->ev[i];
        if (x->op != y->op || x->len != y->len || memcmp(x->data, y->data, x->len) != 0 || x->code != y->code ||
            x->rlen != y->rlen || memcmp(x->reason, y->reason, x->rlen) != 0)
            return false;
    }
    return true;
}

static void record(log_t *l, const sb_ws_event_t *ev)
{
    if (l->n == 64)
        return;
    rec_t *r = &l->ev[l->n++];
    r->op = ev->op;
    r->len = ev->payload.len;
    r->data = sb_malloc(r->len + 1);
    memcpy(r->data, ev->payload.p, r->len);
    r->data[r->len] = '\0';
    r->code = ev->code;
    r->rlen = ev->reason.len < sizeof r->reason ? ev->reason.len : sizeof r->reason - 1;
    memcpy(r->reason, ev->reason.p, r->rlen);
    r->reason[r->rlen] = '\0';
}

static bool client_mode; /* run() reads as a client (unmasked server frames) */

/* Feeds a copy of bytes[0..n) (the reader unmasks in place) in pieces of chunk bytes, recording every event, then
 * one empty feed to learn how it ended. */
static void run(const void *bytes, size_t n, size_t chunk, size_t max, log_t *l)
{
    char *copy = sb_malloc(n ? n : 1);
    sb_ws_reader_t r;
    sb_ws_event_t ev;

    if (n)
        memcpy(copy, bytes, n);
    memset(l, 0, sizeof *l);
    if (client_mode)
        sb_ws_reader_init_client(&r, max);
    else
        sb_ws_reader_init(&r, max);
    l->rc = 0;
    for (size_t off = 0; off < n && l->rc == 0;) {
        size_t piece = n - off < chunk ? n - off : chunk, at = 0;
        while (l->rc == 0) {
            size_t used = 0;
            int rc = sb_ws_feed(&r, copy + off + at, piece - at, &used, &ev);
            at += used;
            l->used += used;
            if (rc == 1) {
                record(l, &ev);
                continue;
            }
            if (rc < 0)
                l->rc = rc;
            break;
        }
        off += piece;
    }
    if (l->rc == 0) {
        size_t used = 99;
        int rc = sb_ws_feed(&r, NULL, 0, &used, &ev);
        l->rc = rc == 0 && used == 0 ? 0 : rc;
    }
    sb_ws_reader_cleanup(&r);
    sb_free(copy);
}

/* Runs b whole, then checks that every chunk size 1..9, 13 and 64 gives the same events, end and bytes used. */
static void run_all(const sb_buf_t *b, size_t max, log_t *l)
{
    static const size_t chunks[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 13, 64};
    bool same = true;
    run(b->p, b->len, b->len ? b->len : 1, max, l);
    for (size_t i = 0; i < sizeof chunks / sizeof chunks[0]; i++) {
        log_t c;
        run(b->p, b->len, chunks[i], max, &c);
        same = same && log_eq(l, &c);
        log_free(&c);
    }
    ok(same, "same result at every split");
}

static bool ev_is(const log_t *l, int i, int op, const char *data)
{
    return i < l->n && l->ev[i].op == op && l->ev[i].len == strlen(data) && memcmp(l->ev[i].data, data, l->ev[i].len) == 0;
}

/* Expects b to end in error err (and its close code) after nev events. */
static void expect_err(const sb_buf_t *b, size_t max, int nev, int err, int code, const char *what)
{
    log_t l;
    run_all(b, max, &l);
    is_int(l.rc, err, "%s: error", what);
    is_int(sb_ws_close_code(l.rc), code, "%s: close code %d", what, code);
    is_int(l.n, nev, "%s: %d events before it", what, nev);
    log_free(&l);
}

/* ---- the tests ------------------------------------------------------------------------------------------------ */

TEST(accept_key)
{
    char out[SB_WS_ACCEPT_LEN + 1];
    is_int(sb_ws_accept_key(SB_STR("dGhlIHNhbXBsZSBub25jZQ=="), out), 0, "RFC 6455 section 1.3 key");
    is_str(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", "its accept value, as printed in the RFC");
    is_int((long long)strlen(out), SB_WS_ACCEPT_LEN, "28 characters and a NUL");

    /* two more, checked with `printf '<key>258EAFA5-E914-47DA-95CA-C5AB0DC85B11' | openssl sha1 -binary | base64` */
    is_int(sb_ws_accept_key(SB_STR("x3JJHMbDL1EzLkh9GBhXDw=="), out), 0, "another key");
    is_str(out, "HSmrc0sMlYUkAGmm5OPpG2HaGWk=", "its accept value");
    is_int(sb_ws_accept_key(SB_STR("AAAAAAAAAAAAAAAAAAAAAA=="), out), 0, "16 zero bytes");
    is_str(out, "ICX+Yqv66kxgM0FcWaLWlFLwTAI=", "its accept value");

    static const char *const bad[] = {
        "",                           /* absent */
        "dGhlIHNhbXBsZSBub25jZQ=",    /* 23 */
        "dGhlIHNhbXBsZSBub25jZQ===",  /* 25 */
        "dGhlIHNhbXBsZSBub25jZQ",     /* unpadded */
        "dGhlIHNhbXBsZSBub25jZSBh",   /* 24 characters but 18 bytes */
        "dGhlIHNhbXBsZSBub25jZXM=",   /* 24 characters but 17 bytes */
        "dGhlIHNhbXBsZSBub25jZR==",   /* unused bits set */
        "dGhlIHNhbXBsZSBub25jZQ== ",  /* trailing space */
        " dGhlIHNhbXBsZSBub25jZQ==",  /* leading space */
        "dGhlIHNhbXBsZSBub25j*Q==",   /* not base64 */
        "dGhlIHNhbXBsZSBub25jZQ-_",   /* URL alphabet, no padding */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        memset(out, 'x', sizeof out);
        is_int(sb_ws_accept_key(sb_str_cstr(bad[i]), out), SB_EINVAL, "bad key \"%s\"", bad[i]);
        ok(out[0] == 'x', "out untouched");
    }
}

TEST(rfc_examples)
{
    /* section 5.7, byte for byte: a single-frame masked text message */
    static const uint8_t hello[] = {0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58};
    sb_buf_t b;
    log_t l;
    sb_buf_init(&b);
    sb_buf_append(&b, hello, sizeof hello);
    run_all(&b, 1024, &l);
    is_int(l.n, 1, "one event");
    ok(ev_is(&l, 0, SB_WS_OP_TEXT, "Hello"), "text \"Hello\"");
    is_int(l.rc, 0, "then waiting for more");
    is_int((long long)l.used, sizeof hello, "all bytes used");
    log_free(&l);

    /* the same unmasked: a server must refuse it */
    sb_buf_cleanup(&b);
    static const uint8_t unmasked[] = {0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f};
    sb_buf_append(&b, unmasked, sizeof unmasked);
    expect_err(&b, 1024, 0, SB_EPARSE, 1002, "unmasked \"Hello\"");

    /* a fragmented unmasked text message (0x01 0x03 "Hel", 0x80 0x02 "lo"): refused at its first frame */
    sb_buf_cleanup(&b);
    static const uint8_t frag_unmasked[] = {0x01, 0x03, 0x48, 0x65, 0x6c, 0x80, 0x02, 0x6c, 0x6f};
    sb_buf_append(&b, frag_unmasked, sizeof frag_unmasked);
    expect_err(&b, 1024, 0, SB_EPARSE, 1002, "unmasked fragments");

    /* its masked variant */
    sb_buf_cleanup(&b);
    frame_str(&b, 0x01, "Hel");
    frame_str(&b, FIN | 0x00, "lo");
    run_all(&b, 1024, &l);
    is_int(l.n, 1, "fragments: one event");
    ok(ev_is(&l, 0, SB_WS_OP_TEXT, "Hello"), "reassembled \"Hello\"");
    log_free(&l);

    /* unmasked ping (0x89 0x05 "Hello") refused; the masked ping and the masked pong of the example accepted */
    sb_buf_cleanup(&b);
    static const uint8_t ping_unmasked[] = {0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f};
    sb_buf_append(&b, ping_unmasked, sizeof ping_unmasked);
    expect_err(&b, 1024, 0, SB_EPARSE, 1002, "unmasked ping");
    sb_buf_cleanup(&b);
    frame_str(&b, FIN | SB_WS_OP_PING, "Hello");
    static const uint8_t pong[] = {0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58};
    sb_buf_append(&b, pong, sizeof pong);
    run_all(&b, 1024, &l);
    is_int(l.n, 2, "ping and pong");
    ok(ev_is(&l, 0, SB_WS_OP_PING, "Hello") && ev_is(&l, 1, SB_WS_OP_PONG, "Hello"), "both say \"Hello\"");
    ok(l.ev[0].code == 0 && l.ev[0].rlen == 0, "no code or reason on a ping");
    log_free(&l);

    /* 256 bytes of binary data in one frame (16-bit length: 0x82 0x7e 0x01 0x00) */
    uint8_t big[65536];
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = (uint8_t)(i * 7 + 3);
    sb_buf_cleanup(&b);
    frame(&b, FIN | SB_WS_OP_BINARY, big, 256);
    ok((uint8_t)b.p[1] == 0xfe && (uint8_t)b.p[2] == 0x01 && b.p[3] == 0x00, "head 0x82 0xfe 0x01 0x00");
    run_all(&b, 1 << 20, &l);
    ok(l.n == 1 && l.ev[0].op == SB_WS_OP_BINARY && l.ev[0].len == 256 && memcmp(l.ev[0].data, big, 256) == 0,
       "256 binary bytes");
    log_free(&l);

    /* 64 KiB of binary data in one frame (64-bit length: 0x82 0x7f 0x00..0x01 0x00 0x00) */
    sb_buf_cleanup(&b);
    frame(&b, FIN | SB_WS_OP_BINARY, big, 65536);
    ok((uint8_t)b.p[1] == 0xff && b.p[7] == 0x01 && b.p[8] == 0 && b.p[9] == 0, "64-bit length head");
    run_all(&b, 1 << 20, &l);
    ok(l.n == 1 && l.ev[0].op == SB_WS_OP_BINARY && l.ev[0].len == 65536 && memcmp(l.ev[0].data, big, 65536) == 0,
       "65536 binary bytes");
    log_free(&l);
    sb_buf_cleanup(&b);
}

TEST(byte_at_a_time)
{
    sb_buf_t b;
    sb_buf_init(&b);
    uint8_t payload[300];
    for (size_t i = 0; i < sizeof payload; i++)
        payload[i] = (uint8_t)('a' + i % 26);
    frame_str(&b, FIN | SB_WS_OP_TEXT, "one");
    frame(&b, FIN | SB_WS_OP_BINARY, payload, sizeof payload);
    frame_str(&b, FIN | SB_WS_OP_PING, "");
    frame_str(&b, FIN | SB_WS_OP_TEXT, "");
    frame_str(&b, SB_WS_OP_BINARY, "ab");
    frame_str(&b, SB_WS_OP_CONT, "");
    frame_str(&b, FIN | SB_WS_OP_CONT, "cd");
    frame(&b, FIN | SB_WS_OP_PONG, payload, 125);

    /* run() with chunk 1 is byte at a time; run_all compares it (and other splits) with the whole feed */
    log_t l;
    run_all(&b, 1024, &l);
    is_int(l.n, 6, "six events");
    ok(ev_is(&l, 0, SB_WS_OP_TEXT, "one"), "text");
    ok(l.ev[1].op == SB_WS_OP_BINARY && l.ev[1].len == 300 && memcmp(l.ev[1].data, payload, 300) == 0, "binary 300");
    ok(ev_is(&l, 2, SB_WS_OP_PING, ""), "empty ping");
    ok(ev_is(&l, 3, SB_WS_OP_TEXT, ""), "empty text message");
    ok(ev_is(&l, 4, SB_WS_OP_BINARY, "abcd"), "binary from three fragments, one empty");
    ok(l.ev[5].op == SB_WS_OP_PONG && l.ev[5].len == 125 && memcmp(l.ev[5].data, payload, 125) == 0, "pong of 125");
    is_int((long long)l.used, (long long)b.len, "every byte used");
    log_free(&l);

    /* a feed that ends exactly at a frame boundary returns its event and uses every byte */
    sb_ws_reader_t r;
    sb_ws_event_t ev;
    size_t used;
    sb_ws_reader_init(&r, 1024);
    sb_buf_cleanup(&b);
    frame_str(&b, FIN | SB_WS_OP_TEXT, "x");
    is_int(sb_ws_feed(&r, b.p, b.len, &used, &ev), 1, "event");
    is_int((long long)used, (long long)b.len, "all used");
    is_int(sb_ws_feed(&r, b.p + used, 0, &used, &ev), 0, "nothing left: 0");
    is_int((long long)used, 0, "0 used");
    is_int(sb_ws_feed(&r, NULL, 0, &used, &ev), 0, "NULL, 0 is fine");
    sb_ws_reader_cleanup(&r);
    sb_buf_cleanup(&b);
}

TEST(fragments_and_control)
{
    sb_buf_t b;
    log_t l;
    sb_buf_init(&b);
    frame_str(&b, SB_WS_OP_TEXT, "Hel");
    frame_str(&b, FIN | SB_WS_OP_PING, "p1");
    frame_str(&b, SB_WS_OP_CONT, "lo, ");
    frame_str(&b, FIN | SB_WS_OP_PONG, "p2");
    frame_str(&b, FIN | SB_WS_OP_PING, "");
    frame_str(&b, FIN | SB_WS_OP_CONT, "world");
    frame_str(&b, FIN | SB_WS_OP_TEXT, "next");
    run_all(&b, 1024, &l);
    is_int(l.n, 5, "five events");
    ok(ev_is(&l, 0, SB_WS_OP_PING, "p1"), "ping between fragments comes first");
    ok(ev_is(&l, 1, SB_WS_OP_PONG, "p2"), "then the pong");
    ok(ev_is(&l, 2, SB_WS_OP_PING, ""), "then an empty ping");
    ok(ev_is(&l, 3, SB_WS_OP_TEXT, "Hello, world"), "the message, undisturbed");
    ok(ev_is(&l, 4, SB_WS_OP_TEXT, "next"), "a new message after it");
    log_free(&l);

    /* a multi-byte character split across fragments is fine: UTF-8 is checked on the whole message */
    sb_buf_cleanup(&b);
    frame_str(&b, SB_WS_OP_TEXT, "caf\xc3");
    frame_str(&b, FIN | SB_WS_OP_PING, "");
    frame_str(&b, FIN | SB_WS_OP_CONT, "\xa9");
    run_all(&b, 1024, &l);
    ok(l.n == 2 && ev_is(&l, 1, SB_WS_OP_TEXT, "caf\xc3\xa9"), "\"caf\\u00e9\" split inside the \\u00e9");
    log_free(&l);

    /* a close between fragments is returned; the half message is dropped and nothing more is read */
    sb_buf_cleanup(&b);
    frame_str(&b, SB_WS_OP_BINARY, "half");
    frame_str(&b, FIN | SB_WS_OP_CLOSE, "\x03\xe8" "bye");
    frame_str(&b, FIN | SB_WS_OP_CONT, "rest");
    run_all(&b, 1024, &l);
    is_int(l.n, 1, "only the close");
    ok(l.ev[0].op == SB_WS_OP_CLOSE && l.ev[0].code == 1000 && strcmp(l.ev[0].reason, "bye") == 0, "1000 \"bye\"");
    is_int(l.rc, SB_ECLOSED, "then SB_ECLOSED");
    log_free(&l);
    sb_buf_cleanup(&b);
}

TEST(protocol_errors)
{
    sb_buf_t b;
    sb_buf_init(&b);
#define CASE(nev, err, code, what, ...)                                                                            \
    do {                                                                                                           \
        sb_buf_cleanup(&b);                                                                                        \
        __VA_ARGS__;                                                                                               \
        expect_err(&b, 1024, nev, err, code, what);                                                                \
    } while (0)

    CASE(0, SB_EPARSE, 1002, "unmasked text", raw_frame(&b, FIN | SB_WS_OP_TEXT, false, 0, 2, "hi", 2));
    CASE(0, SB_EPARSE, 1002, "unmasked empty close", raw_frame(&b, FIN | SB_WS_OP_CLOSE, false, 0, 0, "", 0));
    CASE(1, SB_EPARSE, 1002, "unmasked after a good frame", frame_str(&b, FIN | SB_WS_OP_TEXT, "ok");
         raw_frame(&b, FIN | SB_WS_OP_BINARY, false, 0, 1, "x", 1));
    CASE(0, SB_EPARSE, 1002, "RSV1 (no permessage-deflate)", frame_str(&b, FIN | 0x40 | SB_WS_OP_TEXT, "x"));
    CASE(0, SB_EPARSE, 1002, "RSV2", frame_str(&b, FIN | 0x20 | SB_WS_OP_TEXT, "x"));
    CASE(0, SB_EPARSE, 1002, "RSV3", frame_str(&b, FIN | 0x10 | SB_WS_OP_BINARY, "x"));
    CASE(0, SB_EPARSE, 1002, "RSV on a ping", frame_str(&b, FIN | 0x40 | SB_WS_OP_PING, ""));
    for (unsigned op = 3; op <= 0xf; op++) {
        if (op >= 8 && op <= 0xa)
            continue;
        char what[32];
        snprintf(what, sizeof what, "opcode 0x%x", op);
        CASE(0, SB_EPARSE, 1002, what, frame_str(&b, (uint8_t)(FIN | op), ""));
    }
    CASE(0, SB_EPARSE, 1002, "ping without FIN", frame_str(&b, SB_WS_OP_PING, "x"));
    CASE(0, SB_EPARSE, 1002, "close without FIN", frame_str(&b, SB_WS_OP_CLOSE, "\x03\xe8"));
    CASE(0, SB_EPARSE, 1002, "pong without FIN", frame_str(&b, SB_WS_OP_PONG, ""));
    uint8_t z[200] = {0};
    CASE(0, SB_EPARSE, 1002, "ping of 126 bytes", frame(&b, FIN | SB_WS_OP_PING, z, 126));
    CASE(0, SB_EPARSE, 1002, "close of 126 bytes", frame(&b, FIN | SB_WS_OP_CLOSE, z, 126));
    CASE(0, SB_EPARSE, 1002, "pong with 64-bit length", raw_frame(&b, FIN | SB_WS_OP_PONG, true, 8, 5, z, 5));
    CASE(0, SB_EPARSE, 1002, "continuation with no message", frame_str(&b, FIN | SB_WS_OP_CONT, "x"));
    CASE(0, SB_EPARSE, 1002, "unfinished continuation with no message", frame_str(&b, SB_WS_OP_CONT, "x"));
    CASE(1, SB_EPARSE, 1002, "continuation after a finished message", frame_str(&b, FIN | SB_WS_OP_TEXT, "a");
         frame_str(&b, FIN | SB_WS_OP_CONT, "b"));
    CASE(0, SB_EPARSE, 1002, "text while a message is open", frame_str(&b, SB_WS_OP_TEXT, "a");
         frame_str(&b, FIN | SB_WS_OP_TEXT, "b"));
    CASE(0, SB_EPARSE, 1002, "binary while a message is open", frame_str(&b, SB_WS_OP_TEXT, "a");
         frame_str(&b, SB_WS_OP_BINARY, "b"));
    CASE(1, SB_EPARSE, 1002, "new message after a ping inside one", frame_str(&b, SB_WS_OP_BINARY, "a");
         frame_str(&b, FIN | SB_WS_OP_PING, ""); frame_str(&b, FIN | SB_WS_OP_BINARY, "b"));
    CASE(0, SB_EPARSE, 1002, "16-bit length of 5", raw_frame(&b, FIN | SB_WS_OP_BINARY, true, 2, 5, z, 5));
    CASE(0, SB_EPARSE, 1002, "16-bit length of 125", raw_frame(&b, FIN | SB_WS_OP_BINARY, true, 2, 125, z, 125));
    CASE(0, SB_EPARSE, 1002, "64-bit length of 5", raw_frame(&b, FIN | SB_WS_OP_BINARY, true, 8, 5, z, 5));
    CASE(0, SB_EPARSE, 1002, "64-bit length of 65535",
         raw_frame(&b, FIN | SB_WS_OP_BINARY, true, 8, 65535, z, 0));
    CASE(0, SB_EPARSE, 1002, "64-bit length, top bit set",
         raw_frame(&b, FIN | SB_WS_OP_BINARY, true, 8, UINT64_C(1) << 63 | 1, z, 0));
    CASE(0, SB_EPARSE, 1002, "64-bit length all ones", raw_frame(&b, FIN | SB_WS_OP_BINARY, true, 8, UINT64_MAX, z, 0));

    /* found from the head alone: a reader given only the first two bytes already knows */
    sb_ws_reader_t r;
    sb_ws_event_t ev;
    size_t used;
    char two[2] = {(char)(FIN | 0x40 | SB_WS_OP_TEXT), (char)0x85};
    sb_ws_reader_init(&r, 1024);
    is_int(sb_ws_feed(&r, two, 1, &used, &ev), 0, "one byte of a bad head: need more");
    is_int(sb_ws_feed(&r, two + 1, 1, &used, &ev), SB_EPARSE, "the second byte: refused");
    is_int(sb_ws_feed(&r, two, 2, &used, &ev), SB_EPARSE, "sticky");
    is_int((long long)used, 0, "nothing consumed after the error");
    sb_ws_reader_cleanup(&r);
#undef CASE
    sb_buf_cleanup(&b);
}

TEST(utf8_errors)
{
    sb_buf_t b;
    sb_buf_init(&b);
    static const char *const bad[] = {"\xff", "\xc0\x80", "\xed\xa0\x80", "\xf4\x90\x80\x80", "ok\xc3", "\x80"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        sb_buf_cleanup(&b);
        frame_str(&b, FIN | SB_WS_OP_TEXT, bad[i]);
        expect_err(&b, 1024, 0, SB_EINVAL, 1007, "bad UTF-8 text");
    }
    sb_buf_cleanup(&b);
    frame_str(&b, SB_WS_OP_TEXT, "caf\xc3");
    frame_str(&b, FIN | SB_WS_OP_CONT, "e");
    expect_err(&b, 1024, 0, SB_EINVAL, 1007, "truncated sequence at a fragment end");

    sb_buf_cleanup(&b);
    frame_str(&b, FIN | SB_WS_OP_BINARY, "\xff\xfe");
    frame_str(&b, FIN | SB_WS_OP_PING, "\xff");
    frame_str(&b, FIN | SB_WS_OP_PONG, "\xc0");
    log_t l;
    run_all(&b, 1024, &l);
    ok(l.rc == 0 && l.n == 3, "binary, ping and pong payloads may be any bytes");
    log_free(&l);

    sb_buf_cleanup(&b);
    frame_str(&b, FIN | SB_WS_OP_CLOSE, "\x03\xe8" "\xff");
    expect_err(&b, 1024, 0, SB_EINVAL, 1007, "close reason not UTF-8");
    sb_buf_cleanup(&b);
}

TEST(close_frames)
{
    sb_buf_t b;
    log_t l;
    sb_buf_init(&b);

    frame_str(&b, FIN | SB_WS_OP_CLOSE, "");
    run_all(&b, 1024, &l);
    ok(l.n == 1 && l.ev[0].op == SB_WS_OP_CLOSE, "empty close");
    is_int(l.ev[0].code, SB_WS_CLOSE_NO_STATUS, "reported as 1005");
    ok(l.ev[0].len == 0 && l.ev[0].rlen == 0, "no payload, no reason");
    is_int(l.rc, SB_ECLOSED, "reader finished");
    log_free(&l);

    sb_buf_cleanup(&b);
    frame_str(&b, FIN | SB_WS_OP_CLOSE, "\x0f\xa0");
    run_all(&b, 1024, &l);
    ok(l.n == 1 && l.ev[0].code == 4000 && l.ev[0].rlen == 0, "4000, no reason");
    log_free(&l);

    sb_buf_cleanup(&b);
    frame_str(&b, FIN | SB_WS_OP_CLOSE, "\x03\xe9" "going \xe2\x86\x92 away");
    run_all(&b, 1024, &l);
    ok(l.n == 1 && l.ev[0].code == 1001, "1001");
    is_str(l.ev[0].reason, "going \xe2\x86\x92 away", "UTF-8 reason");
    ok(l.ev[0].len == 2 + strlen("going \xe2\x86\x92 away") && memcmp(l.ev[0].data, "\x03\xe9", 2) == 0,
       "payload is code and reason as sent");
    log_free(&l);

    /* a 125-byte close: code and a 123-byte reason */
    char big[126];
    big[0] = 0x03;
    big[1] = (char)0xe8;
    memset(big + 2, 'r', 123);
    sb_buf_cleanup(&b);
    frame(&b, FIN | SB_WS_OP_CLOSE, big, 125);
    run_all(&b, 0, &l);
    ok(l.n == 1 && l.ev[0].code == 1000 && l.ev[0].rlen == 123, "125-byte close, even with max_msg 0");
    log_free(&l);

    sb_buf_cleanup(&b);
    frame_str(&b, FIN | SB_WS_OP_CLOSE, "\x03");
    expect_err(&b, 1024, 0, SB_EPARSE, 1002, "close payload of 1 byte");

    static const unsigned badcodes[] = {0, 1, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535};
    for (size_t i = 0; i < sizeof badcodes / sizeof badcodes[0]; i++) {
        char p[2] = {(char)(badcodes[i] >> 8), (char)badcodes[i]};
        sb_buf_cleanup(&b);
        frame(&b, FIN | SB_WS_OP_CLOSE, p, 2);
        char what[32];
        snprintf(what, sizeof what, "close code %u", badcodes[i]);
        expect_err(&b, 1024, 0, SB_EPARSE, 1002, what);
    }
    static const unsigned goodcodes[] = {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014,
                                         3000, 4401, 4999};
    bool all = true;
    for (size_t i = 0; i < sizeof goodcodes / sizeof goodcodes[0]; i++) {
        char p[3] = {(char)(goodcodes[i] >> 8), (char)goodcodes[i], 'x'};
        sb_buf_cleanup(&b);
        frame(&b, FIN | SB_WS_OP_CLOSE, p, 3);
        run(b.p, b.len, b.len, 1024, &l);
        all = all && l.n == 1 && l.ev[0].code == (int)goodcodes[i] && l.rc == SB_ECLOSED;
        log_free(&l);
    }
    ok(all, "codes 1000-1003, 1007-1014, 3000-4999 accepted");

    /* after the close, even good frames are not read */
    sb_ws_reader_t r;
    sb_ws_event_t ev;
    size_t used;
    sb_buf_cleanup(&b);
    frame_str(&b, FIN | SB_WS_OP_CLOSE, "");
    size_t first = b.len;
    frame_str(&b, FIN | SB_WS_OP_TEXT, "late");
    sb_ws_reader_init(&r, 1024);
    is_int(sb_ws_feed(&r, b.p, b.len, &used, &ev), 1, "close");
    is_int((long long)used, (long long)first, "stops after the close frame");
    is_int(sb_ws_feed(&r, b.p + used, b.len - used, &used, &ev), SB_ECLOSED, "then SB_ECLOSED");
    is_int((long long)used, 0, "consuming nothing");
    sb_ws_reader_cleanup(&r);
    sb_buf_cleanup(&b);
}

TEST(max_size)
{
    sb_buf_t b;
    log_t l;
    uint8_t p[70000];
    memset(p, 'm', sizeof p);
    sb_buf_init(&b);

    frame(&b, FIN | SB_WS_OP_TEXT, p, 100);
    run_all(&b, 100, &l);
    ok(l.n == 1 && l.ev[0].len == 100, "single frame at the limit");
    log_free(&l);
    sb_buf_cleanup(&b);
    frame(&b, FIN | SB_WS_OP_TEXT, p, 101);
    expect_err(&b, 100, 0, SB_E2BIG, 1009, "single frame one past");

    /* found from the head, before any payload: the head alone is enough */
    sb_buf_cleanup(&b);
    raw_frame(&b, FIN | SB_WS_OP_BINARY, true, 8, UINT64_C(1) << 40, p, 0);
    b.len = 10; /* not even the mask key */
    expect_err(&b, 1 << 20, 0, SB_E2BIG, 1009, "a terabyte announced");
    sb_buf_cleanup(&b);
    raw_frame(&b, FIN | SB_WS_OP_BINARY, true, 0, 101, p, 0);
    b.len = 2;
    expect_err(&b, 100, 0, SB_E2BIG, 1009, "7-bit length past the limit, two bytes in");

    /* fragmented: the sum counts */
    sb_buf_cleanup(&b);
    frame(&b, SB_WS_OP_BINARY, p, 60);
    frame(&b, FIN | SB_WS_OP_PING, p, 125);
    frame(&b, FIN | SB_WS_OP_CONT, p, 40);
    run_all(&b, 100, &l);
    ok(l.n == 2 && l.ev[1].op == SB_WS_OP_BINARY && l.ev[1].len == 100, "fragments adding up to the limit");
    log_free(&l);
    sb_buf_cleanup(&b);
    frame(&b, SB_WS_OP_BINARY, p, 60);
    frame(&b, SB_WS_OP_CONT, p, 40);
    frame(&b, FIN | SB_WS_OP_CONT, p, 1);
    expect_err(&b, 100, 0, SB_E2BIG, 1009, "fragments one past");
    sb_buf_cleanup(&b);
    frame(&b, SB_WS_OP_BINARY, p, 100);
    frame(&b, SB_WS_OP_CONT, p, 0);
    frame(&b, FIN | SB_WS_OP_CONT, p, 0);
    run_all(&b, 100, &l);
    ok(l.n == 1 && l.ev[0].len == 100, "empty fragments after reaching the limit");
    log_free(&l);

    /* max 0: only empty messages */
    sb_buf_cleanup(&b);
    frame(&b, FIN | SB_WS_OP_TEXT, p, 0);
    frame(&b, FIN | SB_WS_OP_TEXT, p, 1);
    expect_err(&b, 0, 1, SB_E2BIG, 1009, "max 0");

    /* bigger limits, 16- and 64-bit lengths at theirs */
    sb_buf_cleanup(&b);
    frame(&b, FIN | SB_WS_OP_BINARY, p, 65535);
    run_all(&b, 65535, &l);
    ok(l.n == 1 && l.ev[0].len == 65535, "65535 at a limit of 65535");
    log_free(&l);
    sb_buf_cleanup(&b);
    frame(&b, FIN | SB_WS_OP_BINARY, p, 65536);
    expect_err(&b, 65535, 0, SB_E2BIG, 1009, "65536 one past 65535");
    sb_buf_cleanup(&b);
    frame(&b, FIN | SB_WS_OP_BINARY, p, 65536);
    run_all(&b, 65536, &l);
    ok(l.n == 1 && l.ev[0].len == 65536 && (uint8_t)b.p[1] == 0xff, "65536 in a 64-bit length at its limit");
    log_free(&l);
    sb_buf_cleanup(&b);
    frame(&b, FIN | SB_WS_OP_TEXT, p, 125);
    frame(&b, FIN | SB_WS_OP_TEXT, p, 126);
    run_all(&b, 1000, &l);
    ok(l.n == 2 && l.ev[0].len == 125 && l.ev[1].len == 126 && (uint8_t)b.p[1] == 0xfd, "125 (7-bit), 126 (16-bit)");
    log_free(&l);
    sb_buf_cleanup(&b);
}

TEST(views_and_copies)
{
    sb_ws_reader_t r;
    sb_ws_event_t ev;
    sb_buf_t b;
    size_t used;
    sb_buf_init(&b);
    sb_ws_reader_init(&r, 1 << 20);

    frame_str(&b, FIN | SB_WS_OP_TEXT, "in place");
    is_int(sb_ws_feed(&r, b.p, b.len, &used, &ev), 1, "one frame in one feed");
    ok(ev.payload.p == b.p + 6 && ev.payload.len == 8, "a view into the fed bytes, no copy");
    ok(memcmp(b.p + 6, "in place", 8) == 0, "unmasked where it lay");

    /* the same frame in two feeds is copied */
    sb_buf_cleanup(&b);
    frame_str(&b, FIN | SB_WS_OP_TEXT, "copied");
    is_int(sb_ws_feed(&r, b.p, 8, &used, &ev), 0, "head and two bytes");
    is_int(sb_ws_feed(&r, b.p + 8, b.len - 8, &used, &ev), 1, "the rest");
    ok(ev.payload.len == 6 && memcmp(ev.payload.p, "copied", 6) == 0, "whole message");
    uintptr_t at = (uintptr_t)ev.payload.p, lo = (uintptr_t)b.p;
    ok(at < lo || at >= lo + b.len, "from the reader's buffer");

    /* a ping split over feeds comes from the reader's 125 bytes */
    sb_buf_cleanup(&b);
    frame_str(&b, FIN | SB_WS_OP_PING, "pp");
    is_int(sb_ws_feed(&r, b.p, 7, &used, &ev), 0, "half a ping");
    is_int(sb_ws_feed(&r, b.p + 7, 1, &used, &ev), 1, "the other half");
    ok(ev.payload.len == 2 && memcmp(ev.payload.p, "pp", 2) == 0, "ping payload");

    /* a large reassembled message: its buffer is freed at the next feed rather than kept */
    static uint8_t big[100000];
    sb_buf_cleanup(&b);
    frame(&b, SB_WS_OP_BINARY, big, 50000);
    frame(&b, FIN | SB_WS_OP_CONT, big, 50000);
    is_int(sb_ws_feed(&r, b.p, b.len, &used, &ev), 1, "100000 bytes in two fragments");
    is_int((long long)ev.payload.len, 100000, "reassembled");
    ok(r.msg.cap >= 100000, "held while the event is valid");
    is_int(sb_ws_feed(&r, NULL, 0, &used, &ev), 0, "next feed");
    ok(r.msg.cap == 0, "the big buffer is gone");

    ok(sb_ws_close_code(SB_EPARSE) == 1002 && sb_ws_close_code(SB_EINVAL) == 1007 &&
       sb_ws_close_code(SB_E2BIG) == 1009 && sb_ws_close_code(SB_ENOMEM) == 1011, "close codes for errors");

    sb_ws_reader_cleanup(&r);
    sb_ws_reader_cleanup(&r);
    ok(r.msg.p == NULL, "cleanup twice is harmless");
    sb_buf_cleanup(&b);
}

TEST(frame_head)
{
    uint8_t h[SB_WS_HEAD_MAX];
    is_int(sb_ws_frame_head(h, SB_WS_OP_TEXT, true, 0), 2, "length 0: 2 bytes");
    ok(h[0] == 0x81 && h[1] == 0x00, "81 00");
    is_int(sb_ws_frame_head(h, SB_WS_OP_BINARY, true, 125), 2, "125: 2 bytes");
    ok(h[0] == 0x82 && h[1] == 125, "82 7d");
    is_int(sb_ws_frame_head(h, SB_WS_OP_BINARY, true, 126), 4, "126: 4 bytes");
    ok(h[1] == 126 && h[2] == 0x00 && h[3] == 126, "82 7e 00 7e");
    is_int(sb_ws_frame_head(h, SB_WS_OP_TEXT, false, 65535), 4, "65535: 4 bytes");
    ok(h[0] == 0x01 && h[1] == 126 && h[2] == 0xff && h[3] == 0xff, "01 7e ff ff (no FIN)");
    is_int(sb_ws_frame_head(h, SB_WS_OP_CONT, true, 65536), 10, "65536: 10 bytes");
    static const uint8_t want[] = {0x80, 127, 0, 0, 0, 0, 0, 1, 0, 0};
    ok(memcmp(h, want, 10) == 0, "80 7f 00 00 00 00 00 01 00 00");
    is_int(sb_ws_frame_head(h, SB_WS_OP_BINARY, true, UINT64_C(0x0102030405060708)), 10, "large");
    static const uint8_t want2[] = {0x82, 127, 1, 2, 3, 4, 5, 6, 7, 8};
    ok(memcmp(h, want2, 10) == 0, "big-endian");
    is_int(sb_ws_frame_head(h, SB_WS_OP_PING, true, 125), 2, "ping of 125");
    ok(h[0] == 0x89 && h[1] == 125, "89 7d");
    is_int(sb_ws_frame_head(h, SB_WS_OP_CLOSE, true, 2), 2, "close");
    ok(h[0] == 0x88 && h[1] == 2, "88 02, never masked");

    sb_buf_t b;
    sb_buf_init(&b);
    sb_ws_frame_append(&b, SB_WS_OP_TEXT, true, SB_STR("Hello"));
    ok(b.len == 7 && memcmp(b.p, "\x81\x05Hello", 7) == 0, "section 5.7's unmasked \"Hello\"");
    sb_ws_frame_append(&b, SB_WS_OP_PONG, true, sb_str(NULL, 0));
    ok(b.len == 9 && memcmp(b.p + 7, "\x8a\x00", 2) == 0, "empty pong appended after it");
    sb_buf_cleanup(&b);
}

TEST(close_payload)
{
    uint8_t out[SB_WS_CONTROL_MAX];
    is_int(sb_ws_close_payload(out, 1000, sb_str(NULL, 0)), 2, "code only");
    ok(out[0] == 0x03 && out[1] == 0xe8, "1000 big-endian");
    is_int(sb_ws_close_payload(out, 4401, SB_STR("bad token")), 11, "code and reason");
    ok(out[0] == 0x11 && out[1] == 0x31 && memcmp(out + 2, "bad token", 9) == 0, "4401 \"bad token\"");
    is_int(sb_ws_close_payload(out, SB_WS_CLOSE_NO_STATUS, SB_STR("ignored")), 0, "1005: empty payload");

    char reason[300];
    memset(reason, 'a', sizeof reason);
    is_int(sb_ws_close_payload(out, 1011, sb_str(reason, 123)), 125, "123 bytes of reason fit");
    is_int(sb_ws_close_payload(out, 1011, sb_str(reason, 300)), 125, "300 cut to 123");
    /* 122 ASCII, then a 2-byte character straddling the cut */
    memcpy(reason + 122, "\xc3\xa9", 2);
    is_int(sb_ws_close_payload(out, 1011, sb_str(reason, 124)), 124, "cut before a 2-byte character");
    /* 121 ASCII, then a 4-byte character from 121 to 124 */
    memset(reason, 'a', sizeof reason);
    memcpy(reason + 121, "\xf0\x9f\x98\x80", 4);
    is_int(sb_ws_close_payload(out, 1011, sb_str(reason, 125)), 123, "cut before a 4-byte character");
    memset(reason, 'a', sizeof reason);
    memcpy(reason + 119, "\xf0\x9f\x98\x80", 4);
    is_int(sb_ws_close_payload(out, 1011, sb_str(reason, 200)), 125, "a 4-byte character ending at 123 stays");
    ok(memcmp(out + 121, "\xf0\x9f\x98\x80", 4) == 0, "whole");

    is_int(sb_ws_close_payload(out, 1000, SB_STR("bad \xff")), 2, "invalid UTF-8 reason dropped");
    is_int(sb_ws_close_payload(out, 1000, SB_STR("\xc3")), 2, "truncated UTF-8 reason dropped");

    /* what it builds, sent and masked, is read back the same */
    sb_buf_t server, client;
    log_t l;
    sb_buf_init(&server);
    sb_buf_init(&client);
    memset(reason, 'a', sizeof reason);
    memcpy(reason + 122, "\xc3\xa9", 2);
    size_t n = sb_ws_close_payload(out, 3000, sb_str(reason, 200));
    sb_ws_frame_append(&server, SB_WS_OP_CLOSE, true, sb_str((const char *)out, n));
    mask_server_frame(&client, (const uint8_t *)server.p, server.len, KEY);
    run_all(&client, 0, &l);
    ok(l.n == 1 && l.ev[0].code == 3000 && l.ev[0].rlen == 122, "read back: 3000 and the 122 bytes before the cut");
    log_free(&l);
    sb_buf_cleanup(&server);
    sb_buf_cleanup(&client);
}

TEST(round_trip)
{
    static const size_t sizes[] = {0, 1, 125, 126, 127, 65535, 65536, 70000};
    static uint8_t payload[70000];
    for (size_t i = 0; i < sizeof payload; i++)
        payload[i] = (uint8_t)(i % 95 + 32); /* printable ASCII: valid as text too */
    static const uint8_t key2[4] = {0x00, 0xff, 0x5a, 0xa5};
    bool all = true;

    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        for (int frags = 1; frags <= 3; frags++) {
            sb_buf_t server, client;
            sb_buf_init(&server);
            sb_buf_init(&client);
            size_t n = sizes[s], per = n / (size_t)frags, off = 0;
            sb_ws_op_t op = s % 2 ? SB_WS_OP_TEXT : SB_WS_OP_BINARY;
            for (int f = 0; f < frags; f++) {
                size_t part = f == frags - 1 ? n - off : per;
                sb_ws_frame_append(&server, f ? SB_WS_OP_CONT : op, f == frags - 1,
                                   sb_str((const char *)payload + off, part));
                if (f < frags - 1)
                    sb_ws_frame_append(&server, SB_WS_OP_PING, true, SB_STR("between"));
                off += part;
            }
            for (size_t at = 0; at < server.len;)
                at += mask_server_frame(&client, (const uint8_t *)server.p + at, server.len - at, key2);
            log_t l;
            run(client.p, client.len, client.len, n, &l);
            int last = l.n - 1;
            all = all && l.rc == 0 && l.n == frags && l.ev[last].op == (int)op && l.ev[last].len == n &&
                  memcmp(l.ev[last].data, payload, n) == 0;
            log_free(&l);
            run(client.p, client.len, 1000, n, &l);
            all = all && l.rc == 0 && l.n == frags && l.ev[l.n - 1].len == n;
            log_free(&l);
            sb_buf_cleanup(&server);
            sb_buf_cleanup(&client);
        }
    }
    ok(all, "written, masked, read back: every size, 1 to 3 fragments with pings between");
}

/* The client side: server frames as the writers make them read at every split; a masked frame refused; frames of
 * the masked writer equal to what mask_server_frame makes of the server writer's, and read back by the server. */
TEST(client_mode)
{
    static const size_t sizes[] = {0, 1, 7, 8, 9, 125, 126, 65535, 65536, 70000};
    static uint8_t payload[70000];
    for (size_t i = 0; i < sizeof payload; i++)
        payload[i] = (uint8_t)(i * 7 + 3);
    static const uint8_t key[4] = {0x12, 0x34, 0x56, 0x78};
    bool same = true, back = true;

    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        sb_buf_t server, masked, ours;
        sb_buf_init(&server);
        sb_buf_init(&masked);
        sb_buf_init(&ours);
        sb_str_t p = sb_str((const char *)payload, sizes[s]);
        sb_ws_frame_append(&server, SB_WS_OP_BINARY, true, p);
        mask_server_frame(&masked, (const uint8_t *)server.p, server.len, key);
        sb_ws_frame_append_masked(&ours, SB_WS_OP_BINARY, true, p, key);
        same = same && ours.len == masked.len && memcmp(ours.p, masked.p, ours.len) == 0;
        log_t l;
        run(ours.p, ours.len, 1000, sizes[s], &l); /* a server reads our frame */
        back = back && l.rc == 0 && l.n == 1 && l.ev[0].len == sizes[s] && memcmp(l.ev[0].data, payload, sizes[s]) == 0;
        log_free(&l);
        client_mode = true;
        run(server.p, server.len, 999, sizes[s], &l); /* we read the server's */
        back = back && l.rc == 0 && l.n == 1 && l.ev[0].len == sizes[s] && memcmp(l.ev[0].data, payload, sizes[s]) == 0;
        log_free(&l);
        client_mode = false;
        sb_buf_cleanup(&server);
        sb_buf_cleanup(&masked);
        sb_buf_cleanup(&ours);
    }
    ok(same, "the masked writer's frames are the server writer's, masked (every length boundary)");
    ok(back, "and each side reads the other's");

    client_mode = true;
    sb_buf_t b;
    sb_buf_init(&b);
    sb_ws_frame_append(&b, SB_WS_OP_TEXT, false, SB_STR("Hel"));
    sb_ws_frame_append(&b, SB_WS_OP_PING, true, SB_STR("p"));
    sb_ws_frame_append(&b, SB_WS_OP_CONT, true, SB_STR("lo"));
    uint8_t cp[SB_WS_CONTROL_MAX];
    size_t cn = sb_ws_close_payload(cp, 4001, SB_STR("bye"));
    sb_ws_frame_append(&b, SB_WS_OP_CLOSE, true, sb_str((const char *)cp, cn));
    log_t l;
    run_all(&b, 100, &l);
    ok(ev_is(&l, 0, SB_WS_OP_PING, "p") && ev_is(&l, 1, SB_WS_OP_TEXT, "Hello") && l.n == 3 &&
       l.ev[2].code == 4001 && strcmp(l.ev[2].reason, "bye") == 0 && l.rc == SB_ECLOSED,
       "client mode: fragments with a ping between, then a close");
    log_free(&l);
    b.len = 0;
    frame_str(&b, FIN | SB_WS_OP_TEXT, "masked"); /* a client frame, masked: a server must not send it */
    expect_err(&b, 100, 0, SB_EPARSE, 1002, "a masked frame from the server");
    b.len = 0;
    sb_ws_frame_append(&b, SB_WS_OP_TEXT, true, SB_STR("\xff"));
    expect_err(&b, 100, 0, SB_EINVAL, 1007, "text that is not UTF-8, client mode");
    b.len = 0;
    sb_ws_frame_append(&b, SB_WS_OP_BINARY, true, sb_str((const char *)payload, 101));
    expect_err(&b, 100, 0, SB_E2BIG, 1009, "over max_msg, client mode");
    b.len = 0;
    raw_frame(&b, FIN | SB_WS_OP_BINARY, false, 2, 5, "12345", 5);
    expect_err(&b, 100, 0, SB_EPARSE, 1002, "a 16-bit length that fits 7 bits, client mode");
    sb_buf_cleanup(&b);
    client_mode = false;
}

int main(void)
{
    RUN(accept_key);
    RUN(rfc_examples);
    RUN(byte_at_a_time);
    RUN(fragments_and_control);
    RUN(protocol_errors);
    RUN(utf8_errors);
    RUN(close_frames);
    RUN(max_size);
    RUN(views_and_copies);
    RUN(frame_head);
    RUN(close_payload);
    RUN(round_trip);
    RUN(client_mode);
    return tap_done();
}
