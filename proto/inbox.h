/* The live inbox wire protocol (API.md "Live inbox (WebSocket /v1/inbox)"), without the I/O: client frames into
 * operations, server frames into bytes.
 *
 * A WebSocket connection speaks one of two subprotocols that carry the same maps: switchboard.v1.json (text frames,
 * one JSON object each) and switchboard.v1.msgpack (binary frames, one MessagePack map each). Frames reach this
 * module already de-framed; nothing here reads sockets, keeps state between calls or logs.
 *
 * Decoding is strict because every byte comes from a browser or a script we do not control, and is forgiving in
 * one way only: keys a version of the protocol does not know are ignored, so clients can be newer than the gateway.
 * A MessagePack frame must hold exactly what a JSON frame could: one map and nothing after it, str keys, str values
 * that are valid UTF-8 without NUL (as jansson demands of JSON text), integers within int64, finite floats, no
 * duplicate keys at any depth, nesting at most SB_INBOX_MAX_DEPTH deep; bin and ext values are refused wherever they
 * appear, so a bin where a string is expected never passes for one. Known fields are then checked alike for both
 * formats, in one code path, so a frame means the same thing whichever way it was written.
 *
 * Error replies never echo what the client sent: messages name our fields and limits only (jansson's own parse
 * messages quote the input, so they are not passed on), and a token can never end up in a log or an error frame. */
#ifndef SB_INBOX_H
#define SB_INBOX_H

#include "proto/str.h"

#include <stdatomic.h>

#include <stdbool.h>
#include <stdint.h>

typedef enum { SB_INBOX_JSON, SB_INBOX_MSGPACK } sb_inbox_fmt_t;

#define SB_INBOX_MAX_TOKEN 4096             /* longest "token" of a hello, in bytes (as SB_JWT_MAX_LEN) */
#define SB_INBOX_MAX_IDEMPOTENCY_KEY 255    /* longest "idempotency_key" of a send, in bytes */
#define SB_INBOX_MAX_CURSOR 9007199254740991 /* 2^53 - 1: the largest cursor a JavaScript number holds exactly */
#define SB_INBOX_MAX_DEPTH 2048             /* deepest nesting of a MessagePack frame (jansson's limit for JSON) */

typedef enum sb_inbox_kind {
    SB_INBOX_NONE = 0, /* after a failed decode or a cleanup */
    SB_INBOX_HELLO,
    SB_INBOX_SEND,
    SB_INBOX_PING
} sb_inbox_kind_t;

/* A decoded client frame. Caller's storage. Every present string is a view into one allocation the op owns (mem),
 * NUL-terminated there (s.p[s.len] == '\0'), valid UTF-8 and free of NUL bytes, so it can be used as sb_str_t or as
 * a C string, and outlives the frame it came from. An absent optional string is {NULL, 0}; a present empty one has
 * a non-NULL p. Fields of other kinds are zero. */
typedef struct sb_inbox_op {
    sb_inbox_kind_t kind;

    /* SB_INBOX_HELLO */
    sb_str_t token;            /* 1..SB_INBOX_MAX_TOKEN bytes; an API key or a JWT, unchecked here */
    bool has_resume_after;     /* false when "resume_after" was absent or null */
    int64_t resume_after;      /* 0..SB_INBOX_MAX_CURSOR when has_resume_after, else 0 */

    /* SB_INBOX_SEND */
    int64_t channel_id;        /* 1..INT64_MAX, given as a JSON integer or a string of decimal digits */
    sb_str_t to;               /* non-empty */
    sb_str_t body;             /* optional */
    sb_str_t media_url;        /* optional; at least one of body and media_url is present and non-empty */
    sb_str_t idempotency_key;  /* optional; 1..SB_INBOX_MAX_IDEMPOTENCY_KEY bytes when present */
    sb_str_t tag;              /* optional; a Messenger / Instagram message tag (HUMAN_AGENT: an agent's reply
                                * within 7 days), checked by the front door that takes the send */
    int priority;              /* optional "priority": "interactive" (0, also when absent), "normal" (1) or "bulk"
                                * (2): the order of actors/session.h's sb_priority_t */
    int64_t send_at_ms;        /* "send_at" (optional, RFC 3339 with its offset) in Unix ms; 0 when absent or null */

    char *mem; /* the one allocation behind every string above, or NULL; freed by sb_inbox_op_cleanup */
} sb_inbox_op_t;

#define SB_INBOX_ERR_MAX 128

/* Why a frame was refused, ready for an error frame: code is "bad_frame", "unknown_op" or "bad_field" (a static
 * string), message a sentence in English that names the field and the rule, never the value. Caller's storage. */
typedef struct sb_inbox_err {
    const char *code;
    char message[SB_INBOX_ERR_MAX];
} sb_inbox_err_t;

/* Decodes one client frame (borrowed; frame.p may be NULL when frame.len is 0) of format fmt into *op, which need
 * not be initialised and owns everything it points to afterwards. The rules, checked in this order:
 *   - the frame is one JSON object (optionally surrounded by whitespace), or exactly one MessagePack map, within
 *     the limits in the comment at the top of this file. JSON is parsed by jansson with JSON_REJECT_DUPLICATES and
 *     without JSON_ALLOW_NUL, so "\u0000", lone surrogates and integers beyond int64 are refused there as well.
 *     Otherwise: SB_EPARSE, code "bad_frame";
 *   - "op" is present and a string: otherwise SB_EINVAL, "bad_field"; it is "hello", "send" or "ping":
 *     otherwise SB_ENOENT, "unknown_op";
 *   - the fields of that op, in the order of sb_inbox_op_t, have their documented types and ranges: otherwise
 *     SB_EINVAL, "bad_field", with the first offending field named. Integers must be integers (1.0 is a float, and
 *     refused like 1.5). A null value is the same as an absent key, for every field. Fields of other ops are
 *     ignored like any other unknown key.
 * Returns 0 and fills *op, or a negative code with *op zeroed (kind SB_INBOX_NONE) and, when err is not NULL, *err
 * filled. Memory use is proportional to frame.len, whatever lengths a MessagePack frame declares. */
int sb_inbox_decode(sb_inbox_fmt_t fmt, sb_str_t frame, sb_inbox_op_t *op, sb_inbox_err_t *err);

/* Wipes the token, frees the op's strings and zeroes *op. Harmless on a zeroed or already cleaned-up op. */
void sb_inbox_op_cleanup(sb_inbox_op_t *op);

/* The encoders append one server frame to out in format fmt: JSON compact (no whitespace outside strings) and
 * valid UTF-8, strings escaped with sb_buf_json_escape; MessagePack with every integer in its smallest form and
 * strings as str. Keys come in the order shown. String arguments are borrowed; they must be valid UTF-8, or the
 * encoder returns SB_EINVAL. Cursors must be 0..SB_INBOX_MAX_CURSOR, or SB_ERANGE. On failure out is as it was. */

/* {"op":"welcome","tenant_id":<string>,"cursor":<integer>} */
int sb_inbox_encode_welcome(sb_inbox_fmt_t fmt, sb_str_t tenant_id, int64_t cursor, sb_buf_t *out);

/* {"op":"event","cursor":<integer>,"type":<string>,"data":<data>}. data is JSON text (borrowed) as PostgreSQL
 * stores it and must be one JSON object, else SB_EPARSE: it is parsed with jansson either way, so corrupt data
 * never produces a broken frame (duplicate keys, "\u0000" and numbers beyond a double's range, such as 1e400, are
 * refused too). For JSON the text is copied with whitespace outside strings removed (numbers keep their spelling,
 * so integers beyond int64 pass unharmed); for MessagePack it is converted: objects become maps (keys in text
 * order), arrays arrays, strings str, integers int in their smallest form (beyond int64: SB_EPARSE), reals
 * float64, and true, false, null their MessagePack forms. */
int sb_inbox_encode_event(sb_inbox_fmt_t fmt, int64_t cursor, sb_str_t type, sb_str_t data, sb_buf_t *out);

/* {"op":"accepted","idempotency_key":<string or null>,"id":<string>}; idempotency_key is null when its p is
 * NULL (as in sb_inbox_op_t). */
int sb_inbox_encode_accepted(sb_inbox_fmt_t fmt, sb_str_t idempotency_key, sb_str_t id, sb_buf_t *out);

/* {"op":"pong"}. Cannot fail. */
void sb_inbox_encode_pong(sb_inbox_fmt_t fmt, sb_buf_t *out);

/* {"op":"error","code":<string>,"message":<string>}; for a refused frame, pass err->code and err->message. */
int sb_inbox_encode_error(sb_inbox_fmt_t fmt, sb_str_t code, sb_str_t message, sb_buf_t *out);

/* ---- batches: committed events on their way to every shard's clients --------------------------------------------
 * A tenant's events committed together, immutable once made and shared by every shard that delivers them (the
 * reference count is atomic): each event's JSON frame is encoded once, here, for all JSON clients everywhere. prev
 * is the tenant's last cursor before the batch: a shard that has seen a cursor below prev knows it missed some. */
typedef struct sb_inbox_event {
    int64_t cursor;
    sb_str_t type, data; /* the event */
    sb_str_t json;       /* its whole JSON frame; empty when the data could not be encoded (it is then skipped) */
} sb_inbox_event_t;

typedef struct sb_inbox_batch {
    _Atomic int refs;
    int64_t tenant, prev;
    size_t n;
    sb_inbox_event_t ev[]; /* cursors prev + 1 ..., their bytes after the array */
} sb_inbox_batch_t;

/* A batch of n events of tenant, cursors first, first + 1, ...: types[i] and data[i] (JSON object text) copied.
 * One reference, the caller's. */
sb_inbox_batch_t *sb_inbox_batch_new(int64_t tenant, int64_t prev, int64_t first, size_t n, const char *const *types,
                                     const sb_str_t *data);
/* A batch as bytes for another node (the live inbox across nodes, over Redis Pub/Sub), and back. The form:
 * "SB1 <tenant> <prev> <n>\n", then for each event "<type length> <data length>\n", the type, the data; the cursors
 * are prev + 1 ... (as every published batch has them). pack appends to out. unpack is strict (the bytes come from
 * the network): decimal numbers without signs or leading zeros, a tenant > 0, 0 <= prev, 1 <= n <= 65536, types of
 * 1..64 bytes of [a-z._], data up to 1 MiB each, nothing left over; *out a new batch (one reference, the caller's),
 * or SB_EPARSE and *out NULL. */
void sb_inbox_batch_pack(const sb_inbox_batch_t *b, sb_buf_t *out);
/* The same bytes from the events' parts, without making the batch (no frame is encoded: the nodes that receive it
 * and have clients do that). */
void sb_inbox_pack_parts(int64_t tenant, int64_t prev, size_t n, const char *const *types, const sb_str_t *data,
                         sb_buf_t *out);
int sb_inbox_batch_unpack(const void *bytes, size_t len, sb_inbox_batch_t **out);
void sb_inbox_batch_ref(sb_inbox_batch_t *b);
void sb_inbox_batch_unref(sb_inbox_batch_t *b);

#endif
