/* WebSocket framing; see ws.h.
 *
 * The reader is a two-state machine per frame: the head (collected byte by byte into r->head, since it may be split
 * anywhere, and checked in three steps as soon as each part is in: the first two bytes, the extended length, the
 * mask key), then the payload (unmasked in place, returned as a view when it is all in the caller's bytes and makes a
 * whole message, else copied into r->msg or r->ctl). Checking each part as soon as it is complete, never later,
 * makes the error, and where it is found, independent of how the input was split. Data frames that complete no
 * message produce no event and the loop goes on to the next frame; every completed control frame and every completed
 * message ends the call. */
#include "proto/ws.h"

#include "proto/codec.h"
#include "proto/err.h"
#include "proto/line.h"
#include "proto/mem.h"

#include <mbedtls/sha1.h>
#include <mbedtls/version.h>

#include <string.h>

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#define WS_KEY_LEN 24          /* base64 of 16 bytes */

/* ---- handshake ------------------------------------------------------------------------------------------------ */

int sb_ws_accept_key(sb_str_t client_key, char out[SB_WS_ACCEPT_LEN + 1])
{
    unsigned char raw[16], digest[20];
    char text[WS_KEY_LEN + sizeof WS_GUID - 1];
    size_t n = 0;

    if (client_key.len != WS_KEY_LEN ||
        sb_codec_b64_decode(client_key, SB_B64_STD, raw, sizeof raw, &n) != 0 || n != sizeof raw)
        return SB_EINVAL;

    /* the hash is over the key as sent (its base64 text), not over the decoded bytes */
    memcpy(text, client_key.p, WS_KEY_LEN);
    memcpy(text + WS_KEY_LEN, WS_GUID, sizeof WS_GUID - 1);
#if MBEDTLS_VERSION_NUMBER >= 0x03000000
    int rc = mbedtls_sha1((const unsigned char *)text, sizeof text, digest);
#else
    int rc = mbedtls_sha1_ret((const unsigned char *)text, sizeof text, digest);
#endif
    SB_BUG_ON(rc != 0); /* SHA-1 over a buffer cannot fail */

    size_t w = sb_codec_b64_encode(out, digest, sizeof digest, SB_B64_STD);
    SB_BUG_ON(w != SB_WS_ACCEPT_LEN);
    out[w] = '\0';
    return 0;
}

/* ---- shared rules --------------------------------------------------------------------------------------------- */

static bool is_control(unsigned op)
{
    return op >= 0x8;
}

static bool known_op(unsigned op)
{
    return op <= SB_WS_OP_BINARY || (op >= SB_WS_OP_CLOSE && op <= SB_WS_OP_PONG);
}

/* RFC 6455 section 7.4: the codes an endpoint may put in a close frame. 1004 is reserved, 1005 and 1006 mean "none"
 * and "no close frame" locally, 1015 is the TLS failure marker; 1012-1014 are registered with IANA; 1016-2999 are
 * unassigned (reserved for the RFC and its extensions); 3000-4999 belong to libraries and applications. */
static bool close_code_ok(unsigned code)
{
    return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) || (code >= 3000 && code <= 4999);
}

uint16_t sb_ws_close_code(int err)
{
    switch (err) {
    case SB_EPARSE: return SB_WS_CLOSE_PROTOCOL;
    case SB_EINVAL: return SB_WS_CLOSE_BAD_DATA;
    case SB_E2BIG: return SB_WS_CLOSE_TOO_BIG;
    default: return SB_WS_CLOSE_INTERNAL;
    }
}

/* ---- reader --------------------------------------------------------------------------------------------------- */

void sb_ws_reader_init(sb_ws_reader_t *r, size_t max_msg)
{
    memset(r, 0, sizeof *r);
    r->max_msg = max_msg;
    sb_buf_init(&r->msg);
}

void sb_ws_reader_init_client(sb_ws_reader_t *r, size_t max_msg)
{
    sb_ws_reader_init(r, max_msg);
    r->client = true;
}

void sb_ws_reader_cleanup(sb_ws_reader_t *r)
{
    sb_buf_cleanup(&r->msg);
}

/* XORs n bytes at p with the frame's mask, p[0] being payload byte number pos. Eight bytes at a time when it can:
 * the mask repeats every four bytes, so a word of it rotated to pos fits every word that follows. */
static void unmask(uint8_t *p, size_t n, const uint8_t key[4], uint64_t pos)
{
    uint8_t k[8];
    size_t i = 0;

    for (int j = 0; j < 8; j++)
        k[j] = key[(pos + (unsigned)j) & 3];
    if (n >= 8) {
        uint64_t kw, w;
        memcpy(&kw, k, 8);
        for (; n - i >= 8; i += 8) {
            memcpy(&w, p + i, 8);
            w ^= kw;
            memcpy(p + i, &w, 8);
        }
    }
    for (; i < n; i++)
        p[i] ^= k[i & 7];
}

/* Bytes of mask key in a frame head: 4 from a client, none from a server. */
static unsigned mask_len(const sb_ws_reader_t *r)
{
    return r->client ? 0 : 4;
}

/* Copies up to want - r->head_len bytes of in[*i..len) into the head. True when head_len reached want. */
static bool take_head(sb_ws_reader_t *r, const uint8_t *in, size_t len, size_t *i, unsigned want)
{
    size_t n = want - r->head_len;
    if (n > len - *i)
        n = len - *i;
    if (n == 0) /* in may be NULL when len is 0 */
        return r->head_len == want;
    memcpy(r->head + r->head_len, in + *i, n);
    r->head_len = (uint8_t)(r->head_len + n);
    *i += n;
    return r->head_len == want;
}

/* The size check of a data frame whose payload length is known: the message so far plus this frame. */
static int check_size(const sb_ws_reader_t *r, uint64_t flen)
{
    if (is_control(r->op))
        return 0;
    /* msg.len <= max_msg always holds: every frame appended to msg passed this check */
    if (flen > (uint64_t)(r->max_msg - r->msg.len))
        return SB_E2BIG;
    return 0;
}

/* Checks the first two bytes of a head and sets head_need. */
static int check_start(sb_ws_reader_t *r)
{
    uint8_t b0 = r->head[0], b1 = r->head[1];
    unsigned op = b0 & 0x0f, len7 = b1 & 0x7f;

    r->fin = b0 >> 7;
    r->op = (uint8_t)op;
    if (b0 & 0x70)
        return SB_EPARSE; /* RSV1-3: we negotiate no extension */
    if (!known_op(op))
        return SB_EPARSE;
    if (!(b1 & 0x80) != r->client)
        return SB_EPARSE; /* clients must mask, servers must not (section 5.1) */
    if (is_control(op) && (!r->fin || len7 > SB_WS_CONTROL_MAX))
        return SB_EPARSE;
    if (op == SB_WS_OP_CONT && !r->msg_op)
        return SB_EPARSE;
    if ((op == SB_WS_OP_TEXT || op == SB_WS_OP_BINARY) && r->msg_op)
        return SB_EPARSE;
    r->head_need = (uint8_t)(2 + (len7 == 126 ? 2 : len7 == 127 ? 8 : 0) + mask_len(r));
    if (len7 < 126) {
        r->remaining = len7;
        return check_size(r, len7);
    }
    return 0;
}

/* Checks the extended length, which is now complete in the head. */
static int check_length(sb_ws_reader_t *r)
{
    uint64_t n = 0;
    unsigned bytes = r->head_need - 2u - mask_len(r);

    for (unsigned j = 0; j < bytes; j++)
        n = n << 8 | r->head[2 + j];
    if (bytes == 2 && n < 126)
        return SB_EPARSE; /* would have fit in 7 bits */
    if (bytes == 8 && (n >> 63 || n <= 0xffff))
        return SB_EPARSE; /* top bit set, or would have fit in 16 bits */
    r->remaining = n;
    return check_size(r, n);
}

static sb_str_t view(const void *p, size_t len)
{
    return sb_str(len ? (const char *)p : "", len);
}

/* Fills ev for the control frame whose payload is p[0..n). 1, or an error for a bad close frame. */
static int control_event(sb_ws_reader_t *r, const uint8_t *p, size_t n, sb_ws_event_t *ev)
{
    sb_ws_event_t e = {.op = (sb_ws_op_t)r->op, .payload = view(p, n), .reason = view(NULL, 0)};

    if (r->op == SB_WS_OP_CLOSE) {
        if (n == 1)
            return SB_EPARSE;
        if (n == 0) {
            e.code = SB_WS_CLOSE_NO_STATUS;
        } else {
            e.code = (uint16_t)(p[0] << 8 | p[1]);
            if (!close_code_ok(e.code))
                return SB_EPARSE;
            if (!sb_utf8_valid((const char *)p + 2, n - 2))
                return SB_EINVAL;
            e.reason = sb_str((const char *)p + 2, n - 2); /* inside payload, even when empty */
        }
        r->closed = true;
    }
    *ev = e;
    return 1;
}

/* Fills ev for the data message op whose bytes are p[0..n). 1, or SB_EINVAL for text that is not UTF-8. */
static int data_event(unsigned op, const char *p, size_t n, sb_ws_event_t *ev)
{
    if (op == SB_WS_OP_TEXT && !sb_utf8_valid(p, n))
        return SB_EINVAL;
    *ev = (sb_ws_event_t){.op = (sb_ws_op_t)op, .payload = view(p, n), .reason = view(NULL, 0)};
    return 1;
}

/* The current frame's payload is complete; whole (if not NULL) points to all of it in the caller's bytes, else it
 * was copied to ctl or msg. Returns 1 with an event, 0 if the frame completes no message, or an error. */
static int frame_done(sb_ws_reader_t *r, const uint8_t *whole, size_t flen, sb_ws_event_t *ev)
{
    r->head_len = 0;
    r->in_payload = false;

    if (is_control(r->op))
        return control_event(r, whole ? whole : r->ctl, flen, ev);
    if (!r->fin) {
        if (r->op != SB_WS_OP_CONT)
            r->msg_op = r->op; /* first fragment; its bytes are in msg */
        return 0;
    }
    unsigned op = r->op == SB_WS_OP_CONT ? r->msg_op : r->op;
    r->msg_op = 0;
    if (whole)
        return data_event(op, (const char *)whole, flen, ev);
    r->reset = true;
    return data_event(op, r->msg.p, r->msg.len, ev);
}

int sb_ws_feed(sb_ws_reader_t *r, char *in, size_t len, size_t *used, sb_ws_event_t *ev)
{
    uint8_t *p = (uint8_t *)in;
    size_t i = 0;
    int rc = 0;

    *used = 0;
    if (r->err)
        return r->err;
    if (r->closed)
        return SB_ECLOSED;
    if (r->reset) { /* a reassembly buffer goes with its message: an idle connection holds none */
        r->reset = false;
        sb_buf_cleanup(&r->msg);
    }

    for (;;) {
        if (!r->in_payload) {
            if (r->head_len < 2) {
                if (!take_head(r, p, len, &i, 2))
                    break;
                if ((rc = check_start(r)) < 0)
                    goto fail;
            }
            unsigned len_end = r->head_need - mask_len(r);
            if (r->head_len < len_end) {
                if (!take_head(r, p, len, &i, len_end))
                    break;
                if ((rc = check_length(r)) < 0)
                    goto fail;
            }
            if (!take_head(r, p, len, &i, r->head_need))
                break;
            r->in_payload = true;
            r->pos = 0;
        }

        const uint8_t *key = r->client ? NULL : r->head + r->head_need - 4;
        size_t avail = len - i;
        bool whole_msg = is_control(r->op) || (r->fin && r->op != SB_WS_OP_CONT);

        if (r->pos == 0 && whole_msg && r->remaining <= avail) {
            /* the whole frame is a whole message and it is all here: unmask it where it lies */
            size_t n = (size_t)r->remaining;
            uint8_t *at = p + i;
            if (key)
                unmask(at, n, key, 0);
            i += n;
            r->remaining = 0;
            rc = frame_done(r, at, n, ev);
        } else {
            size_t n = r->remaining < avail ? (size_t)r->remaining : avail;
            if (n) {
                if (key)
                    unmask(p + i, n, key, r->pos);
                if (is_control(r->op))
                    memcpy(r->ctl + r->pos, p + i, n);
                else
                    sb_buf_append(&r->msg, p + i, n);
                i += n;
                r->pos += n;
                r->remaining -= n;
            }
            if (r->remaining)
                break;
            rc = frame_done(r, NULL, (size_t)r->pos, ev);
        }
        if (rc < 0)
            goto fail;
        if (rc > 0) {
            *used = i;
            return 1;
        }
    }
    SB_BUG_ON(i != len);
    *used = i;
    return 0;

fail:
    r->err = rc;
    *used = i;
    return rc;
}

/* ---- writers -------------------------------------------------------------------------------------------------- */

size_t sb_ws_frame_head(uint8_t out[SB_WS_HEAD_MAX], sb_ws_op_t op, bool fin, uint64_t len)
{
    SB_BUG_ON(!known_op(op));
    SB_BUG_ON(is_control(op) && (!fin || len > SB_WS_CONTROL_MAX));
    SB_BUG_ON(len >> 63);

    out[0] = (uint8_t)((fin ? 0x80 : 0) | op);
    if (len < 126) {
        out[1] = (uint8_t)len;
        return 2;
    }
    if (len <= 0xffff) {
        out[1] = 126;
        out[2] = (uint8_t)(len >> 8);
        out[3] = (uint8_t)len;
        return 4;
    }
    out[1] = 127;
    for (int j = 0; j < 8; j++)
        out[2 + j] = (uint8_t)(len >> (56 - 8 * j));
    return 10;
}

void sb_ws_frame_append(sb_buf_t *out, sb_ws_op_t op, bool fin, sb_str_t payload)
{
    uint8_t head[SB_WS_HEAD_MAX];
    size_t n = sb_ws_frame_head(head, op, fin, payload.len);

    sb_buf_reserve(out, n + payload.len);
    sb_buf_append(out, head, n);
    if (payload.len)
        sb_buf_append(out, payload.p, payload.len);
}

void sb_ws_frame_append_masked(sb_buf_t *out, sb_ws_op_t op, bool fin, sb_str_t payload, const uint8_t key[4])
{
    uint8_t head[SB_WS_CLIENT_HEAD_MAX];
    size_t n = sb_ws_frame_head(head, op, fin, payload.len);

    head[1] |= 0x80;
    memcpy(head + n, key, 4);
    n += 4;
    sb_buf_reserve(out, n + payload.len);
    sb_buf_append(out, head, n);
    if (!payload.len)
        return;
    /* XOR while copying, a word at a time: the key repeats every 4 bytes, so doubled it fits every 8 */
    uint8_t *dst = (uint8_t *)out->p + out->len;
    const uint8_t *src = (const uint8_t *)payload.p;
    uint8_t k[8] = {key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3]};
    uint64_t kw, w;
    size_t i = 0;
    memcpy(&kw, k, 8);
    for (; payload.len - i >= 8; i += 8) {
        memcpy(&w, src + i, 8);
        w ^= kw;
        memcpy(dst + i, &w, 8);
    }
    for (; i < payload.len; i++)
        dst[i] = src[i] ^ k[i & 7];
    out->len += payload.len;
    out->p[out->len] = '\0';
}

size_t sb_ws_close_payload(uint8_t out[SB_WS_CONTROL_MAX], uint16_t code, sb_str_t reason)
{
    if (code == SB_WS_CLOSE_NO_STATUS)
        return 0;
    SB_BUG_ON(!close_code_ok(code));

    size_t n = reason.len;
    if (n > SB_WS_CONTROL_MAX - 2) {
        n = SB_WS_CONTROL_MAX - 2;
        /* back up to the start of the sequence the cut falls into (continuation bytes are 10xxxxxx) */
        while (n > 0 && ((unsigned char)reason.p[n] & 0xc0) == 0x80)
            n--;
    }
    if (!sb_utf8_valid(reason.p, n))
        n = 0;
    out[0] = (uint8_t)(code >> 8);
    out[1] = (uint8_t)code;
    if (n)
        memcpy(out + 2, reason.p, n);
    return 2 + n;
}
