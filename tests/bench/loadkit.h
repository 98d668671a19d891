/* Pieces the load generators share (bench_live, loadgen): writing on a libuv stream without waiting for it, a signed
 * Twilio inbound-SMS webhook request, and the frames of a server's WebSocket stream. Static functions in a header:
 * each load generator is one program of its own (each .c of tests/bench is built as one binary). Our own code for the
 * signature (HMAC-SHA1 + base64 over Twilio's published algorithm), from proto's pure helpers only: nothing here is
 * the gateway's I/O code. */
#ifndef SB_LOADKIT_H
#define SB_LOADKIT_H

#include "proto/codec.h"
#include "proto/digest.h"
#include "proto/mem.h"
#include "proto/str.h"

#include <stdio.h>
#include <string.h>
#include <uv.h>

static void lk_written(uv_write_t *req, int status)
{
    (void)status;
    free(req);
}

/* Writes n bytes on s: what the kernel takes now, the rest from a copy. Returns 0, or a libuv error code. */
static int __attribute__((unused)) lk_write_copy(uv_stream_t *s, const char *p, size_t n)
{
    uv_buf_t b = uv_buf_init((char *)p, (unsigned)n);
    int w = uv_try_write(s, &b, 1);
    if (w == (int)n)
        return 0;
    if (w < 0 && w != UV_EAGAIN)
        return w;
    if (w < 0)
        w = 0;
    uv_write_t *req = sb_malloc(sizeof *req + n - (size_t)w);
    char *copy = (char *)(req + 1);
    memcpy(copy, p + w, n - (size_t)w);
    b = uv_buf_init(copy, (unsigned)(n - (size_t)w));
    int rc = uv_write(req, s, &b, 1, lk_written);
    if (rc < 0)
        free(req);
    return rc;
}

/* Appends to req a POST of an inbound SMS to /webhooks/twilio/{channel} on 127.0.0.1:port, signed with token as
 * Twilio signs it: MessageSid sid, From from, To number (both E.164), Body text (letters, digits and spaces). */
static void __attribute__((unused)) lk_twilio_sms(sb_buf_t *req, int port, const char *channel, const char *number,
                                                  const char *token, const char *sid, const char *from,
                                                  const char *text)
{
    static const char account[] = "AC00000000000000000000000000000000";
    char url[160], path[64];
    snprintf(path, sizeof path, "/webhooks/twilio/%s", channel);
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", port, path);
    /* the signed string: the URL, then every parameter sorted by name: AccountSid, Body, From, MessageSid, To */
    sb_digest_hmac_t mac;
    sb_digest_hmac_init(&mac, SB_DIGEST_SHA1, sb_str_cstr(token));
    const char *parts[] = {url, "AccountSid", account, "Body", text, "From", from, "MessageSid", sid, "To", number};
    for (size_t k = 0; k < sizeof parts / sizeof parts[0]; k++)
        sb_digest_hmac_update(&mac, sb_str_cstr(parts[k]));
    unsigned char d[SB_DIGEST_SHA1_LEN];
    sb_digest_hmac_finish(&mac, d);
    sb_buf_t sig, form;
    sb_buf_init(&sig);
    sb_buf_init(&form);
    sb_codec_b64_append(&sig, d, sizeof d, SB_B64_STD);
    sb_buf_printf(&form, "AccountSid=%s&Body=", account);
    for (const char *c = text; *c; c++) /* a space is '+' in a form */
        sb_buf_append(&form, *c == ' ' ? "+" : c, 1);
    /* '+' in the numbers must be sent as %2B */
    sb_buf_printf(&form, "&From=%%2B%s&MessageSid=%s&To=%%2B%s", from + 1, sid, number + 1);
    sb_buf_printf(req,
                  "POST %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                  "X-Twilio-Signature: %s\r\nContent-Length: %zu\r\n\r\n%s",
                  path, port, sb_buf_cstr(&sig), form.len, sb_buf_cstr(&form));
    sb_buf_cleanup(&sig);
    sb_buf_cleanup(&form);
}

/* The request that opens a live inbox WebSocket on 127.0.0.1:port (JSON subprotocol). */
static int __attribute__((unused)) lk_inbox_upgrade(char *out, size_t len, int port)
{
    return snprintf(out, len,
                    "GET /v1/inbox HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                    "Sec-WebSocket-Protocol: switchboard.v1.json\r\n\r\n",
                    port);
}

/* The server's answer to lk_inbox_upgrade at the start of in[0..len): 0 while it is not whole, -1 when it is no
 * 101, else the bytes it takes (the frames follow). */
static long __attribute__((unused)) lk_ws_handshake(const char *p, size_t len)
{
    const char *end = memmem(p, len, "\r\n\r\n", 4);
    if (!end)
        return 0;
    if (len < 12 || memcmp(p, "HTTP/1.1 101", 12) != 0)
        return -1;
    return (long)(end + 4 - p);
}

/* A client's text frame holding text (masked with a zero key: masked as RFC 6455 requires, bytes unchanged), into
 * out (at least strlen(text) + 14 bytes). Returns its length. */
static size_t __attribute__((unused)) lk_ws_text(unsigned char *out, const char *text)
{
    size_t n = strlen(text), h = 2;
    out[0] = 0x81;
    if (n < 126) {
        out[1] = (unsigned char)(0x80 | n);
    } else {
        out[1] = 0x80 | 126;
        out[2] = (unsigned char)(n >> 8);
        out[3] = (unsigned char)n;
        h = 4;
    }
    memset(out + h, 0, 4);
    memcpy(out + h + 4, text, n);
    return h + 4 + n;
}

/* Calls fn(arg, opcode, payload, len) for each whole server frame at p[0..len); returns the bytes they took (the
 * rest is an unfinished frame). */
static size_t __attribute__((unused)) lk_ws_frames(const char *p, size_t len,
                                                   void (*fn)(void *arg, int opcode, const char *payload, size_t n),
                                                   void *arg)
{
    size_t off = 0;
    for (;;) {
        size_t avail = len - off;
        if (avail < 2)
            break;
        const unsigned char *h = (const unsigned char *)p + off;
        size_t n = h[1] & 0x7f, hl = 2;
        if (n == 126) {
            if (avail < 4)
                break;
            n = (size_t)h[2] << 8 | h[3];
            hl = 4;
        } else if (n == 127) {
            if (avail < 10)
                break;
            n = 0;
            for (int i = 2; i < 10; i++)
                n = n << 8 | h[i];
            hl = 10;
        }
        if (avail < hl + n)
            break;
        fn(arg, h[0] & 0x0f, (const char *)h + hl, n);
        off += hl + n;
    }
    return off;
}

#endif
