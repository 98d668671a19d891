/* libFuzzer target for proto/ws: the reader (server and client mode), the writers (plain and masked), the accept key.
 *
 * The first input byte is a setting: its top three bits choose the reader's max_msg (0 to 70000), its low five how
 * the rest is split (fixed pieces of 1 to 16 bytes, or pseudo-random pieces seeded from the input). The rest is what
 * a client sent. It is read three ways: by a slow reference written here from ws.h and RFC 6455 (whole buffer,
 * frame by frame, every check in the documented order), by sb_ws_feed on the whole buffer, and by sb_ws_feed on
 * the pieces. All three must give the same events, the same end (waiting, an error, or closed) and the same count
 * of bytes used. While feeding, each result is checked against the contract: a message within max_msg, text and
 * close reasons valid UTF-8, control payloads within 125 bytes, close codes allowed on the wire, views within the
 * bytes consumed, nothing returned after an error or a close (the same code again, nothing consumed). Then the rest
 * of the input is sent the other way: written with the writers as a fragmented message with pings between the
 * fragments and a close, masked by a tiny masker here, and read back, which must give back the same payload, pings,
 * code and (cut) reason. The reader's client mode goes through the same three readings of the same bytes (where
 * frames must be unmasked); in the round trip the masked writer must give byte for byte what the tiny masker makes
 * of the server writer's frames, and a client reader must read the server frames back the same way. Any violation
 * traps. */
#include "tests/fuzz/fuzz.h"
#include "proto/ws.h"

#include "proto/err.h"
#include "proto/line.h"
#include "proto/mem.h"
#include "proto/str.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>


static const size_t MAXES[8] = {0, 1, 2, 7, 125, 126, 300, 70000};

/* ---- the event log, the common form of all three readings ----------------------------------------------------- */

static void log_event(sb_buf_t *log, unsigned op, sb_str_t payload, unsigned code, sb_str_t reason)
{
    uint8_t h[3] = {(uint8_t)op, (uint8_t)(code >> 8), (uint8_t)code};
    sb_buf_append(log, h, 3);
    sb_buf_append(log, &payload.len, sizeof payload.len);
    if (payload.len)
        sb_buf_append(log, payload.p, payload.len);
    sb_buf_append(log, &reason.len, sizeof reason.len);
    if (reason.len)
        sb_buf_append(log, reason.p, reason.len);
}

static void log_end(sb_buf_t *log, int rc, size_t used)
{
    sb_buf_append(log, "end", 3);
    sb_buf_append(log, &rc, sizeof rc);
    sb_buf_append(log, &used, sizeof used);
}

static bool buf_eq(const sb_buf_t *a, const sb_buf_t *b)
{
    return a->len == b->len && (a->len == 0 || memcmp(a->p, b->p, a->len) == 0);
}

/* ---- the reference -------------------------------------------------------------------------------------------- */

static bool close_code_allowed(unsigned c)
{
    return (c >= 1000 && c <= 1003) || (c >= 1007 && c <= 1014) || (c >= 3000 && c <= 4999);
}

/* Reads d[0..n) whole, logging each event; returns how it ends and stores the bytes used. */
static int reference(const uint8_t *d, size_t n, size_t max, bool client, sb_buf_t *log, size_t *used)
{
    sb_buf_t msg;
    unsigned msg_op = 0;
    size_t i = 0;
    int rc = 0;

    sb_buf_init(&msg);
    for (;;) {
        if (n - i < 2) {
            i = n;
            break;
        }
        unsigned fin = d[i] >> 7, rsv = d[i] & 0x70, op = d[i] & 0x0f;
        unsigned masked = d[i + 1] >> 7, len7 = d[i + 1] & 0x7f;
        bool control = op >= 8, data = op == 1 || op == 2;
        if (rsv || !(op <= 2 || (op >= 8 && op <= 10)) || masked == client || (control && (!fin || len7 > 125)) ||
            (op == 0 && !msg_op) || (data && msg_op)) {
            i += 2;
            rc = SB_EPARSE;
            break;
        }
        size_t ext = len7 == 126 ? 2 : len7 == 127 ? 8 : 0;
        uint64_t len = len7;
        if (ext) {
            if (n - i - 2 < ext) {
                i = n;
                break;
            }
            len = 0;
            for (size_t j = 0; j < ext; j++)
                len = len << 8 | d[i + 2 + j];
            if ((ext == 2 && len < 126) || (ext == 8 && (len >> 63 || len < 65536))) {
                i += 2 + ext;
                rc = SB_EPARSE;
                break;
            }
        }
        if (!control && len > max - msg.len) {
            i += 2 + ext;
            rc = SB_E2BIG;
            break;
        }
        size_t head = 2 + ext + (client ? 0 : 4);
        if (n - i < head || n - i - head < len) {
            i = n;
            break;
        }
        const uint8_t *key = d + i + 2 + ext, *p = d + i + head;
        uint8_t *plain = sb_malloc(len ? (size_t)len : 1);
        for (size_t j = 0; j < len; j++)
            plain[j] = p[j] ^ (client ? 0 : key[j & 3]);
        i += head + (size_t)len;

        if (control) {
            unsigned code = 0;
            sb_str_t reason = sb_str("", 0);
            if (op == 8) {
                code = SB_WS_CLOSE_NO_STATUS;
                if (len == 1) {
                    rc = SB_EPARSE;
                } else if (len >= 2) {
                    code = (unsigned)plain[0] << 8 | plain[1];
                    reason = sb_str((const char *)plain + 2, (size_t)len - 2);
                    if (!close_code_allowed(code))
                        rc = SB_EPARSE;
                    else if (!sb_utf8_valid(reason.p, reason.len))
                        rc = SB_EINVAL;
                }
            }
            if (rc == 0)
                log_event(log, op, sb_str((const char *)plain, (size_t)len), code, reason);
            free(plain);
            if (rc == 0 && op == 8)
                rc = SB_ECLOSED;
            if (rc)
                break;
            continue;
        }
        if (len)
            sb_buf_append(&msg, plain, (size_t)len);
        free(plain);
        if (op)
            msg_op = op;
        if (!fin)
            continue;
        if (msg_op == 1 && !sb_utf8_valid(msg.p, msg.len)) {
            rc = SB_EINVAL;
            break;
        }
        log_event(log, msg_op, sb_str(msg.p, msg.len), 0, sb_str("", 0));
        msg.len = 0;
        msg_op = 0;
    }
    sb_buf_cleanup(&msg);
    *used = i;
    return rc;
}

/* ---- the reader, checked as it goes --------------------------------------------------------------------------- */

/* Checks one event against the contract. in[0..used) is what the call that returned it consumed. */
static void check_event(const sb_ws_event_t *ev, size_t max, const char *in, size_t used)
{
    CHECK(ev->payload.p && ev->reason.p);
    switch (ev->op) {
    case SB_WS_OP_TEXT:
    case SB_WS_OP_BINARY:
        if (ev->op == SB_WS_OP_TEXT)
            CHECK(sb_utf8_valid(ev->payload.p, ev->payload.len));
        CHECK(ev->payload.len <= max);
        CHECK(ev->code == 0 && ev->reason.len == 0);
        break;
    case SB_WS_OP_PING:
    case SB_WS_OP_PONG:
        CHECK(ev->payload.len <= SB_WS_CONTROL_MAX);
        CHECK(ev->code == 0 && ev->reason.len == 0);
        break;
    case SB_WS_OP_CLOSE:
        CHECK(ev->payload.len <= SB_WS_CONTROL_MAX && ev->payload.len != 1);
        if (ev->payload.len == 0) {
            CHECK(ev->code == SB_WS_CLOSE_NO_STATUS && ev->reason.len == 0);
        } else {
            CHECK(close_code_allowed(ev->code));
            CHECK(ev->code == ((unsigned)(uint8_t)ev->payload.p[0] << 8 | (uint8_t)ev->payload.p[1]));
            CHECK(ev->reason.p == ev->payload.p + 2 && ev->reason.len == ev->payload.len - 2);
            CHECK(sb_utf8_valid(ev->reason.p, ev->reason.len));
        }
        break;
    default:
        CHECK(0);
    }
    /* a view into the fed bytes lies within what this call consumed */
    uintptr_t p = (uintptr_t)ev->payload.p, lo = (uintptr_t)in, hi = lo + used;
    if (p >= lo && p < hi)
        CHECK(p + ev->payload.len <= hi);
}

/* Feeds d[0..n) (copied: the reader unmasks in place) in pieces: sizes[k] bytes each, cycling through nsizes sizes
 * (a single size of n or more is the whole buffer at once). Logs what comes back. */
static void feed(const uint8_t *d, size_t n, const size_t *sizes, size_t nsizes, size_t max, bool client,
                 sb_buf_t *log)
{
    char *copy = sb_malloc(n ? n : 1);
    sb_ws_reader_t r;
    sb_ws_event_t ev;
    size_t total = 0, k = 0;
    int end = 0;

    if (n)
        memcpy(copy, d, n);
    if (client)
        sb_ws_reader_init_client(&r, max);
    else
        sb_ws_reader_init(&r, max);
    for (size_t off = 0; off < n && end == 0; k++) {
        size_t piece = sizes[k % nsizes];
        if (piece > n - off)
            piece = n - off;
        size_t at = 0;
        for (;;) {
            size_t used = SIZE_MAX;
            int rc = sb_ws_feed(&r, copy + off + at, piece - at, &used, &ev);
            CHECK(used <= piece - at);
            if (rc == 1) {
                check_event(&ev, max, copy + off + at, used);
                log_event(log, ev.op, ev.payload, ev.code, ev.reason);
                at += used;
                total += used;
                if (ev.op == SB_WS_OP_CLOSE) {
                    /* nothing after a close */
                    CHECK(sb_ws_feed(&r, copy + off + at, piece - at, &used, &ev) == SB_ECLOSED && used == 0);
                }
                continue;
            }
            at += used;
            total += used;
            if (rc == 0) {
                CHECK(at == piece);
                break;
            }
            CHECK(rc == SB_EPARSE || rc == SB_E2BIG || rc == SB_EINVAL || rc == SB_ECLOSED);
            end = rc;
            /* sticky: the same code again, nothing consumed, nothing returned */
            sb_ws_event_t before;
            memset(&ev, 0xa5, sizeof ev);
            memcpy(&before, &ev, sizeof ev);
            CHECK(sb_ws_feed(&r, copy + off + at, piece - at, &used, &ev) == rc && used == 0);
            CHECK(memcmp(&ev, &before, sizeof ev) == 0);
            break;
        }
        off += piece;
    }
    if (end == 0) {
        size_t used = SIZE_MAX;
        end = sb_ws_feed(&r, NULL, 0, &used, &ev);
        CHECK(used == 0 && (end == 0 || end == SB_ECLOSED));
    }
    log_end(log, end, total);
    sb_ws_reader_cleanup(&r);
    free(copy);
}

/* ---- round trip through the writers --------------------------------------------------------------------------- */

/* Appends the client version of the server frame at s (as the writers make it): mask bit, key, masked payload.
 * Returns the server frame's length. */
static size_t mask_frame(sb_buf_t *out, const uint8_t *s, size_t n, const uint8_t key[4])
{
    CHECK(n >= 2 && !(s[1] & 0x80));
    size_t head = (s[1] & 0x7f) == 126 ? 4 : (s[1] & 0x7f) == 127 ? 10 : 2;
    CHECK(n >= head);
    uint64_t len = s[1] & 0x7f;
    if (head > 2) {
        len = 0;
        for (size_t j = 2; j < head; j++)
            len = len << 8 | s[j];
    }
    CHECK(n - head >= len);
    uint8_t h[SB_WS_HEAD_MAX];
    memcpy(h, s, head);
    h[1] |= 0x80;
    sb_buf_append(out, h, head);
    sb_buf_append(out, key, 4);
    for (size_t j = 0; j < len; j++) {
        uint8_t c = s[head + j] ^ key[j & 3];
        sb_buf_append(out, &c, 1);
    }
    return head + (size_t)len;
}

static void round_trip(uint8_t setting, const uint8_t *d, size_t n)
{
    static const uint16_t codes[] = {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1014, 3000, 4401,
                                     4999, SB_WS_CLOSE_NO_STATUS};
    sb_str_t payload = sb_str(n ? (const char *)d : "", n);
    sb_ws_op_t op = sb_utf8_valid(payload.p, payload.len) ? SB_WS_OP_TEXT : SB_WS_OP_BINARY;
    size_t frags = 1 + setting % 4, per = n / frags, off = 0;
    sb_str_t ping = sb_str(payload.p, n < SB_WS_CONTROL_MAX ? n : SB_WS_CONTROL_MAX);
    uint16_t code = codes[(setting + n) % (sizeof codes / sizeof codes[0])];
    uint8_t close[SB_WS_CONTROL_MAX];
    size_t close_len = sb_ws_close_payload(close, code, payload);
    sb_buf_t server, client, want, got;

    /* the close payload: code, then the longest prefix of the reason that fits and is UTF-8 */
    CHECK(close_len <= SB_WS_CONTROL_MAX);
    if (code == SB_WS_CLOSE_NO_STATUS) {
        CHECK(close_len == 0);
    } else {
        size_t rn = close_len - 2;
        CHECK(close_len >= 2 && close[0] == code >> 8 && close[1] == (code & 0xff));
        CHECK(rn <= n && memcmp(close + 2, payload.p, rn) == 0 && sb_utf8_valid(payload.p, rn));
        if (rn < n && rn > 0)
            CHECK(((uint8_t)payload.p[rn] & 0xc0) != 0x80); /* cut at a character boundary */
        if (op == SB_WS_OP_TEXT)
            CHECK(rn == n || rn >= SB_WS_CONTROL_MAX - 2 - 3); /* a valid reason loses at most one character */
    }

    sb_buf_init(&server);
    sb_buf_init(&client);
    sb_buf_init(&want);
    sb_buf_init(&got);
    for (size_t f = 0; f < frags; f++) {
        size_t part = f == frags - 1 ? n - off : per;
        sb_ws_frame_append(&server, f ? SB_WS_OP_CONT : op, f == frags - 1, sb_str(payload.p + off, part));
        off += part;
        if (f < frags - 1) {
            sb_ws_frame_append(&server, SB_WS_OP_PING, true, ping);
            log_event(&want, SB_WS_OP_PING, ping, 0, sb_str("", 0));
        }
    }
    log_event(&want, op, payload, 0, sb_str("", 0));
    sb_ws_frame_append(&server, SB_WS_OP_CLOSE, true, sb_str((const char *)close, close_len));
    log_event(&want, SB_WS_OP_CLOSE, sb_str((const char *)close, close_len), code,
              sb_str(close_len ? (const char *)close + 2 : "", close_len ? close_len - 2 : 0));

    const uint8_t key[4] = {setting, (uint8_t)~setting, (uint8_t)(setting * 7u), 0x5a};
    for (size_t at = 0; at < server.len;)
        at += mask_frame(&client, (const uint8_t *)server.p + at, server.len - at, key);
    log_end(&want, SB_ECLOSED, client.len);

    /* the masked writer makes exactly those client frames */
    sb_buf_t masked;
    sb_buf_init(&masked);
    off = 0;
    for (size_t f = 0; f < frags; f++) {
        size_t part = f == frags - 1 ? n - off : per;
        sb_ws_frame_append_masked(&masked, f ? SB_WS_OP_CONT : op, f == frags - 1, sb_str(payload.p + off, part),
                                  key);
        off += part;
        if (f < frags - 1)
            sb_ws_frame_append_masked(&masked, SB_WS_OP_PING, true, ping, key);
    }
    sb_ws_frame_append_masked(&masked, SB_WS_OP_CLOSE, true, sb_str((const char *)close, close_len), key);
    CHECK(buf_eq(&masked, &client));
    sb_buf_cleanup(&masked);

    size_t whole = client.len + 1, small[] = {1 + setting % 7, 3};
    feed((const uint8_t *)client.p, client.len, &whole, 1, n, false, &got);
    CHECK(buf_eq(&got, &want));
    got.len = 0;
    feed((const uint8_t *)client.p, client.len, small, 2, n, false, &got);
    CHECK(buf_eq(&got, &want));

    /* a client reads the server frames the same way (the same events; bytes used: the unmasked length) */
    want.len -= 3 + sizeof(int) + sizeof(size_t); /* the end log_end wrote */
    log_end(&want, SB_ECLOSED, server.len);
    got.len = 0;
    whole = server.len + 1;
    feed((const uint8_t *)server.p, server.len, &whole, 1, n, true, &got);
    CHECK(buf_eq(&got, &want));
    got.len = 0;
    feed((const uint8_t *)server.p, server.len, small, 2, n, true, &got);
    CHECK(buf_eq(&got, &want));

    sb_buf_cleanup(&server);
    sb_buf_cleanup(&client);
    sb_buf_cleanup(&want);
    sb_buf_cleanup(&got);
}

/* ---- the target ----------------------------------------------------------------------------------------------- */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    uint8_t setting = data[0];
    const uint8_t *d = data + 1;
    size_t n = size - 1, max = MAXES[setting >> 5];
    sb_buf_t ref, whole, pieces;
    size_t sizes[16], nsizes, used = 0;

    if (setting & 0x10) {
        uint32_t x = (uint32_t)setting * 2654435761u ^ (uint32_t)n;
        for (nsizes = 0; nsizes < 16; nsizes++) {
            x = x * 1103515245u + 12345u;
            sizes[nsizes] = 1 + (x >> 16) % 40;
        }
    } else {
        sizes[0] = 1 + (setting & 0x0f);
        nsizes = 1;
    }

    sb_buf_init(&ref);
    sb_buf_init(&whole);
    sb_buf_init(&pieces);
    for (int client = 0; client < 2; client++) { /* the same bytes read by a server, then by a client */
        ref.len = whole.len = pieces.len = 0;
        int rc = reference(d, n, max, client, &ref, &used);
        log_end(&ref, rc, used);
        size_t all = n + 1;
        feed(d, n, &all, 1, max, client, &whole);
        feed(d, n, sizes, nsizes, max, client, &pieces);
        CHECK(buf_eq(&whole, &ref));
        CHECK(buf_eq(&pieces, &ref));
    }
    sb_buf_cleanup(&ref);
    sb_buf_cleanup(&whole);
    sb_buf_cleanup(&pieces);

    round_trip(setting, d, n);

    /* the accept key: only a 24-character key can succeed, and then the answer is 28 base64 characters */
    char out[SB_WS_ACCEPT_LEN + 1];
    if (sb_ws_accept_key(sb_str((const char *)d, n), out) == 0)
        CHECK(n == 24 && strlen(out) == SB_WS_ACCEPT_LEN && out[27] == '=');
    return 0;
}
