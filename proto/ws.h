/* WebSocket framing (RFC 6455) without the I/O: the handshake's accept key, an incremental reader of frames, and
 * writers of frames. Server side by default (the reader wants masked client frames, the writers do not mask); the
 * reader's client mode (sb_ws_reader_init_client) reads unmasked server frames and sb_ws_frame_append_masked writes
 * masked client frames, for adapters/net/wsclient's own ws:// client.
 *
 * The gateway answers the opening handshake on its own HTTP/1.1 server and then reads the connection's bytes with
 * sb_ws_feed(). The reader faces the internet, so it is strict and bounded: client frames must be masked, no
 * extension is ever negotiated (RSV bits must be 0), lengths must use their shortest encoding, a message larger than
 * the reader's limit is refused from its frame header before a byte of payload is stored, and text must be UTF-8.
 * Every violation is an error the caller turns into the close code to send (sb_ws_close_code) before closing. It
 * returns one event at a time: a whole data message (fragments reassembled), a ping, a pong or a close, with
 * control frames that arrive between fragments returned without disturbing the message being reassembled. Input
 * may be split anywhere, down to one byte per feed; the events and errors do not depend on where.
 *
 * Memory: payloads are unmasked in place in the caller's bytes. A message that arrives as one frame whose payload
 * is wholly inside one feed is returned as a view into those bytes, without copying; a fragmented message, or one
 * frame spread over several feeds, is copied into the reader's reassembly buffer, the only thing here that grows
 * (never past the reader's max_msg). Control frames spread over several feeds are copied into 125 bytes inside the
 * reader. Writers never mask (servers must not) and allocate only by growing the caller's sb_buf_t. */
#ifndef SB_WS_H
#define SB_WS_H

#include "proto/str.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SB_WS_ACCEPT_LEN 28   /* characters of a Sec-WebSocket-Accept value (base64 of 20 bytes) */
#define SB_WS_HEAD_MAX 10     /* longest server frame head: 2 bytes + 64-bit length, no mask */
#define SB_WS_CLIENT_HEAD_MAX 14 /* longest client frame head: the same and a 4-byte mask key */
#define SB_WS_CONTROL_MAX 125 /* longest control frame payload */

typedef enum sb_ws_op {
    SB_WS_OP_CONT = 0x0,
    SB_WS_OP_TEXT = 0x1,
    SB_WS_OP_BINARY = 0x2,
    SB_WS_OP_CLOSE = 0x8,
    SB_WS_OP_PING = 0x9,
    SB_WS_OP_PONG = 0xa
} sb_ws_op_t;

/* Close codes (RFC 6455 section 7.4.1) the gateway sends or sees. 1005 is never sent on the wire: the reader reports
 * it for a close frame without a payload. */
enum {
    SB_WS_CLOSE_NORMAL = 1000,
    SB_WS_CLOSE_GOING_AWAY = 1001,
    SB_WS_CLOSE_PROTOCOL = 1002,   /* sb_ws_feed returned SB_EPARSE */
    SB_WS_CLOSE_UNSUPPORTED = 1003,
    SB_WS_CLOSE_NO_STATUS = 1005,
    SB_WS_CLOSE_BAD_DATA = 1007,   /* sb_ws_feed returned SB_EINVAL */
    SB_WS_CLOSE_POLICY = 1008,
    SB_WS_CLOSE_TOO_BIG = 1009,    /* sb_ws_feed returned SB_E2BIG */
    SB_WS_CLOSE_INTERNAL = 1011
};

/* Computes the Sec-WebSocket-Accept value for client_key (borrowed), the Sec-WebSocket-Key header value as sent:
 * base64(SHA-1(client_key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11")), written to out (caller's) as
 * SB_WS_ACCEPT_LEN characters and a NUL. Returns 0, or SB_EINVAL (out untouched) if client_key is not the canonical
 * base64 of exactly 16 bytes (24 characters ending in "=="), which RFC 6455 section 4.1 requires of the client. */
int sb_ws_accept_key(sb_str_t client_key, char out[SB_WS_ACCEPT_LEN + 1]);

/* What sb_ws_feed returns when it returns 1. Every sb_str_t in it is valid until the next sb_ws_feed or
 * sb_ws_reader_cleanup on the same reader, and, when it points into the bytes the caller fed, as long as the caller
 * keeps those bytes; p is never NULL, even when len is 0. */
typedef struct sb_ws_event {
    sb_ws_op_t op;    /* SB_WS_OP_TEXT, _BINARY, _PING, _PONG or _CLOSE; never _CONT */
    sb_str_t payload; /* the message (TEXT: valid UTF-8; at most max_msg bytes), or the control frame's payload
                       * (at most SB_WS_CONTROL_MAX bytes; for CLOSE, code and reason as sent) */
    uint16_t code;    /* CLOSE: the status code, one allowed on the wire, or SB_WS_CLOSE_NO_STATUS for an empty
                       * payload; 0 for other events */
    sb_str_t reason;  /* CLOSE: the reason after the code, valid UTF-8, possibly empty; empty for other events */
} sb_ws_event_t;

/* The state of one connection's incoming frames. Caller's storage; the fields are internal (read them only through
 * the functions below). End it with sb_ws_reader_cleanup, which frees the reassembly buffer. */
typedef struct sb_ws_reader {
    size_t max_msg;            /* largest data message accepted, in bytes after reassembly */
    bool client;               /* client mode: frames come from a server, unmasked */
    int err;                   /* the sticky error, or 0 */
    bool closed;               /* a close frame was returned: nothing more is read */
    bool reset;                /* an event was returned from msg: empty it at the next feed */
    uint8_t head[14];          /* the frame head being read: 2 bytes, 0/2/8 length bytes, 4 mask bytes */
    uint8_t head_len;          /* bytes of head received */
    uint8_t head_need;         /* bytes the whole head takes, known once its first 2 bytes are in */
    bool in_payload;           /* the head is complete: reading payload bytes */
    uint8_t op, fin;           /* of the current frame */
    uint64_t remaining;        /* payload bytes of the current frame not yet read */
    uint64_t pos;              /* payload bytes of the current frame read so far (the mask index) */
    uint8_t msg_op;            /* SB_WS_OP_TEXT or _BINARY while a fragmented message is open, else 0 */
    sb_buf_t msg;              /* reassembly buffer for data messages */
    uint8_t ctl[SB_WS_CONTROL_MAX]; /* payload of a control frame spread over feeds */
} sb_ws_reader_t;

/* Prepares r for a new connection whose data messages may be up to max_msg bytes long (control frames are bounded
 * by SB_WS_CONTROL_MAX whatever max_msg is). Allocates nothing. */
void sb_ws_reader_init(sb_ws_reader_t *r, size_t max_msg);

/* The same for the client side of a connection: the reader then requires frames to be unmasked (a server must not
 * mask, section 5.1: a masked frame is SB_EPARSE) and reads them as they are; everything else is as for the server
 * side. */
void sb_ws_reader_init_client(sb_ws_reader_t *r, size_t max_msg);

/* Frees what r holds; r may be initialised again. Safe to call twice. */
void sb_ws_reader_cleanup(sb_ws_reader_t *r);

/* Reads frames from in[0..len) (borrowed, and modified: masked payload bytes are unmasked in place; in may be NULL
 * when len is 0). Sets *used to the number of bytes consumed and returns:
 *   1          an event, in *ev: a data message, a ping, a pong or a close. *used stops right after the frame that
 *              completed it; handle the event, then feed the rest (in + *used, len - *used), until a call returns 0.
 *              Consumed bytes of unfinished frames are kept in r (or read in place), never needed again. After a
 *              close event the reader is finished;
 *   0          no event yet: all len bytes were consumed (*used == len), partial frames are kept in r;
 *   SB_EPARSE  protocol error, close with 1002: an unmasked frame (client mode: a masked one), a RSV bit set, an unknown opcode, a control frame
 *              without FIN or with more than 125 bytes, a continuation with no message open or a new data frame
 *              while one is open, a length not in its shortest encoding or with the top bit of 64 set, a close
 *              payload of 1 byte, or a close code not allowed on the wire (below 1000, 1004 to 1006, 1015 to
 *              2999, 5000 and above);
 *   SB_E2BIG   the data message would exceed max_msg bytes, close with 1009; found from the frame's header, before
 *              any of its payload is stored;
 *   SB_EINVAL  a text message, or a close reason, that is not valid UTF-8 (checked once the whole message or frame
 *              has arrived), close with 1007;
 *   SB_ECLOSED a close event was already returned: the peer must send nothing after it (section 5.5.1), so stop
 *              reading; nothing is consumed.
 * Errors are sticky: later feeds return the same code and consume nothing. On an error, *used counts the bytes
 * examined, up to the offending frame head or the end of the offending frame. *ev is written only when 1 is
 * returned. A text message's UTF-8 is checked when it is complete, not fragment by fragment. */
int sb_ws_feed(sb_ws_reader_t *r, char *in, size_t len, size_t *used, sb_ws_event_t *ev);

/* The close code to send for an error sb_ws_feed returned: 1002 for SB_EPARSE, 1007 for SB_EINVAL, 1009 for
 * SB_E2BIG, 1011 (internal error) for anything else. */
uint16_t sb_ws_close_code(int err);

/* Writes the head of a server frame (FIN bit as fin, no RSV bit, unmasked, len in its shortest encoding) into out
 * (caller's) and returns its length, 2, 4 or 10. op must be one of sb_ws_op_t; control frames (CLOSE, PING, PONG)
 * must have fin set and len at most SB_WS_CONTROL_MAX, and len must be below 2^63: these are the caller's own
 * frames, so a violation is a bug (SB_BUG_ON), not an error. */
size_t sb_ws_frame_head(uint8_t out[SB_WS_HEAD_MAX], sb_ws_op_t op, bool fin, uint64_t len);

/* Appends a whole server frame, head and payload (borrowed; p may be NULL when len is 0), to out. Same rules as
 * sb_ws_frame_head. To send a message in fragments, append a TEXT or BINARY frame without fin, then CONT frames,
 * the last with fin. */
void sb_ws_frame_append(sb_buf_t *out, sb_ws_op_t op, bool fin, sb_str_t payload);

/* Appends a whole client frame to out: the head as sb_ws_frame_head makes it but with the mask bit set and key
 * (caller's, 4 bytes: from a strong random source, a new one per frame, RFC 6455 section 5.3), then the payload
 * (borrowed) XORed with the key, 8 bytes at a time. Same rules as sb_ws_frame_head; out grows once. */
void sb_ws_frame_append_masked(sb_buf_t *out, sb_ws_op_t op, bool fin, sb_str_t payload, const uint8_t key[4]);

/* Builds a close frame's payload into out (caller's) and returns its length: code as 2 big-endian bytes, then as
 * much of reason (borrowed) as fits in SB_WS_CONTROL_MAX bytes in all, cut before a UTF-8 sequence that would not
 * fit whole. A reason that is not valid UTF-8 (after the cut) is dropped, so the payload is always one a client
 * accepts. code SB_WS_CLOSE_NO_STATUS gives an empty payload (no code, no reason), which is how to echo a close
 * that had none; any other code must be allowed on the wire (1000-1003, 1007-1014, 3000-4999), else SB_BUG_ON. */
size_t sb_ws_close_payload(uint8_t out[SB_WS_CONTROL_MAX], uint16_t code, sb_str_t reason);

#endif
