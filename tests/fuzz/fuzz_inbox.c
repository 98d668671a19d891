/* libFuzzer target for proto/inbox: client frames from hostile peers, and the server-side encoders.
 *
 * The first input byte chooses the format (bit 0: JSON or MessagePack) and how ops are written back (bit 1: a
 * channel_id as a string or an integer); the rest is the frame. Each input is used three ways:
 *   1. decoded: the result is 0 or one of the three documented codes with its matching error code and a short
 *      ASCII message; a failure leaves the op zeroed; a success satisfies everything sb_inbox_op_t promises (strings
 *      inside the op's one allocation, NUL-terminated, valid UTF-8 without NUL, limits, cursor and id ranges, the
 *      fields of other ops zero, send_at as proto/rfc3339 reads it). The op is then written again by a small client-side encoder here, in the other
 *      format and in the same one, and decoding that must give an equal op;
 *   2. as event data: sb_inbox_encode_event must accept it in JSON whenever it accepts it in MessagePack; a
 *      MessagePack frame must unpack completely with msgpack-c and carry exactly what jansson reads from the text;
 *      a JSON frame must parse with jansson and carry the same data;
 *   3. as each string a server frame carries (tenant_id, type, idempotency_key, id, code, message): encoded in both
 *      formats if and only if it is valid UTF-8, read back unchanged, the two formats carrying the same map.
 * Any violation traps. */
#include "tests/fuzz/fuzz.h"
#include "proto/inbox.h"

#include "proto/err.h"
#include "proto/line.h"
#include "proto/rfc3339.h"
#include "proto/str.h"

#include <inttypes.h>
#include <jansson.h>
#include <msgpack.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


static int buf_write(void *data, const char *buf, size_t len)
{
    sb_buf_append(data, buf, len);
    return 0;
}

/* ---- the decoded op ---------------------------------------------------------------------------------------------- */

static bool absent(sb_str_t s)
{
    return s.p == NULL && s.len == 0;
}

/* A present string of the op: inside mem, NUL-terminated there, valid UTF-8 without NUL. */
static void check_str(const sb_inbox_op_t *op, sb_str_t s)
{
    CHECK(s.p != NULL && op->mem != NULL);
    CHECK(s.p >= op->mem);
    CHECK(s.p[s.len] == '\0');
    CHECK(!memchr(s.p, '\0', s.len));
    CHECK(sb_utf8_valid(s.p, s.len));
}

static void check_op(const sb_inbox_op_t *op)
{
    switch (op->kind) {
    case SB_INBOX_HELLO:
        check_str(op, op->token);
        CHECK(op->token.len >= 1 && op->token.len <= SB_INBOX_MAX_TOKEN);
        CHECK(op->token.p == op->mem); /* first, so that cleanup wipes it */
        CHECK(op->has_resume_after ? op->resume_after >= 0 && op->resume_after <= SB_INBOX_MAX_CURSOR
                                   : op->resume_after == 0);
        CHECK(op->channel_id == 0 && absent(op->to) && absent(op->body) && absent(op->media_url) &&
              absent(op->idempotency_key) && op->send_at_ms == 0);
        break;
    case SB_INBOX_SEND:
        CHECK(op->channel_id >= 1);
        check_str(op, op->to);
        CHECK(op->to.len >= 1);
        if (!absent(op->body))
            check_str(op, op->body);
        if (!absent(op->media_url))
            check_str(op, op->media_url);
        CHECK(op->body.len > 0 || op->media_url.len > 0);
        if (!absent(op->idempotency_key)) {
            check_str(op, op->idempotency_key);
            CHECK(op->idempotency_key.len >= 1 && op->idempotency_key.len <= SB_INBOX_MAX_IDEMPOTENCY_KEY);
        }
        CHECK(absent(op->token) && !op->has_resume_after && op->resume_after == 0);
        break;
    case SB_INBOX_PING:
        CHECK(op->mem == NULL && absent(op->token) && !op->has_resume_after && op->resume_after == 0 &&
              op->channel_id == 0 && absent(op->to) && absent(op->body) && absent(op->media_url) &&
              absent(op->idempotency_key) && op->send_at_ms == 0);
        break;
    default:
        CHECK(0);
    }
}

static bool zeroed(const sb_inbox_op_t *op)
{
    static const sb_inbox_op_t zero;
    return memcmp(op, &zero, sizeof zero) == 0;
}

static void check_err(int rc, const sb_inbox_err_t *err)
{
    CHECK(rc == SB_EPARSE || rc == SB_EINVAL || rc == SB_ENOENT);
    const char *want = rc == SB_EPARSE ? "bad_frame" : rc == SB_ENOENT ? "unknown_op" : "bad_field";
    CHECK(err->code && strcmp(err->code, want) == 0);
    size_t n = strnlen(err->message, sizeof err->message);
    CHECK(n > 0 && n < sizeof err->message);
    for (size_t i = 0; i < n; i++) /* our own words only: never a byte of the peer's that is not plain ASCII */
        CHECK(err->message[i] >= 0x20 && err->message[i] < 0x7f);
}

/* ---- writing client ops, as a client would --------------------------------------------------------------------- */

static void write_op(sb_inbox_fmt_t fmt, const sb_inbox_op_t *op, bool id_as_str, sb_buf_t *out)
{
    const char *keys[6];
    sb_str_t vals[6];
    char at[SB_RFC3339_TEXT_LEN];
    size_t n = 0;
    const char *name = op->kind == SB_INBOX_HELLO ? "hello" : op->kind == SB_INBOX_SEND ? "send" : "ping";
    char id[24];
    snprintf(id, sizeof id, "%" PRId64, op->channel_id);

    if (op->kind == SB_INBOX_HELLO) {
        keys[n] = "token", vals[n++] = op->token;
    } else if (op->kind == SB_INBOX_SEND) {
        keys[n] = "to", vals[n++] = op->to;
        if (op->body.p)
            keys[n] = "body", vals[n++] = op->body;
        if (op->media_url.p)
            keys[n] = "media_url", vals[n++] = op->media_url;
        if (op->idempotency_key.p)
            keys[n] = "idempotency_key", vals[n++] = op->idempotency_key;
        if (op->send_at_ms && sb_rfc3339_format(op->send_at_ms, at) > 0)
            keys[n] = "send_at", vals[n++] = sb_str_cstr(at);
    }
    bool has_int = op->kind == SB_INBOX_HELLO ? op->has_resume_after : op->kind == SB_INBOX_SEND;
    bool int_as_str = id_as_str && op->kind == SB_INBOX_SEND;
    const char *int_key = op->kind == SB_INBOX_HELLO ? "resume_after" : "channel_id";
    int64_t int_val = op->kind == SB_INBOX_HELLO ? op->resume_after : op->channel_id;

    if (fmt == SB_INBOX_JSON) {
        sb_buf_printf(out, "{\"op\":\"%s\"", name);
        if (has_int && int_as_str)
            sb_buf_printf(out, ",\"%s\":\"%s\"", int_key, id);
        else if (has_int)
            sb_buf_printf(out, ",\"%s\":%" PRId64, int_key, int_val);
        for (size_t i = 0; i < n; i++) {
            sb_buf_printf(out, ",\"%s\":\"", keys[i]);
            sb_buf_json_escape(out, vals[i]);
            sb_buf_puts(out, "\"");
        }
        sb_buf_puts(out, "}");
        return;
    }
    msgpack_packer pk;
    msgpack_packer_init(&pk, out, buf_write);
    msgpack_pack_map(&pk, 1 + n + (has_int ? 1 : 0));
    for (size_t i = n; i-- > 0;) { /* the other order than JSON, to show order does not matter */
        msgpack_pack_str_with_body(&pk, keys[i], strlen(keys[i]));
        msgpack_pack_str_with_body(&pk, vals[i].p, vals[i].len);
    }
    if (has_int) {
        msgpack_pack_str_with_body(&pk, int_key, strlen(int_key));
        if (int_as_str)
            msgpack_pack_str_with_body(&pk, id, strlen(id));
        else
            msgpack_pack_int64(&pk, int_val);
    }
    msgpack_pack_str_with_body(&pk, "op", 2);
    msgpack_pack_str_with_body(&pk, name, strlen(name));
}

static bool str_same(sb_str_t a, sb_str_t b)
{
    return (a.p == NULL) == (b.p == NULL) && sb_str_eq(a, b);
}

static bool op_same(const sb_inbox_op_t *a, const sb_inbox_op_t *b)
{
    return a->kind == b->kind && str_same(a->token, b->token) && a->has_resume_after == b->has_resume_after &&
           a->resume_after == b->resume_after && a->channel_id == b->channel_id && str_same(a->to, b->to) &&
           str_same(a->body, b->body) && str_same(a->media_url, b->media_url) &&
           str_same(a->idempotency_key, b->idempotency_key) && a->send_at_ms == b->send_at_ms;
}

/* ---- reading server frames back ------------------------------------------------------------------------------- */

/* A msgpack-c object as a jansson value; NULL for what JSON cannot hold (which the encoder must never write). */
static json_t *mp_to_json(const msgpack_object *o)
{
    switch (o->type) {
    case MSGPACK_OBJECT_NIL:
        return json_null();
    case MSGPACK_OBJECT_BOOLEAN:
        return json_boolean(o->via.boolean);
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        return o->via.u64 <= INT64_MAX ? json_integer((json_int_t)o->via.u64) : NULL;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        return json_integer(o->via.i64);
    case MSGPACK_OBJECT_FLOAT64:
        return json_real(o->via.f64);
    case MSGPACK_OBJECT_STR:
        return json_stringn(o->via.str.ptr, o->via.str.size);
    case MSGPACK_OBJECT_ARRAY: {
        json_t *a = json_array();
        for (uint32_t i = 0; i < o->via.array.size; i++) {
            json_t *v = mp_to_json(&o->via.array.ptr[i]);
            if (!v) {
                json_decref(a);
                return NULL;
            }
            json_array_append_new(a, v);
        }
        return a;
    }
    case MSGPACK_OBJECT_MAP: {
        json_t *m = json_object();
        for (uint32_t i = 0; i < o->via.map.size; i++) {
            const msgpack_object_kv *kv = &o->via.map.ptr[i];
            json_t *v = kv->key.type == MSGPACK_OBJECT_STR ? mp_to_json(&kv->val) : NULL;
            if (!v || json_object_getn(m, kv->key.via.str.ptr, kv->key.via.str.size)) {
                json_decref(v);
                json_decref(m);
                return NULL;
            }
            json_object_setn_new(m, kv->key.via.str.ptr, kv->key.via.str.size, v);
        }
        return m;
    }
    default:
        return NULL;
    }
}

/* Unpacks the whole buffer, which must hold exactly one object, into a jansson value. */
static json_t *unpack_whole(const sb_buf_t *b)
{
    msgpack_unpacked u;
    size_t off = 0;
    msgpack_unpacked_init(&u);
    CHECK(msgpack_unpack_next(&u, b->p, b->len, &off) == MSGPACK_UNPACK_SUCCESS);
    CHECK(off == b->len);
    json_t *j = mp_to_json(&u.data);
    CHECK(j != NULL);
    msgpack_unpacked_destroy(&u);
    return j;
}

static void check_event(sb_str_t text)
{
    sb_buf_t m, j;
    sb_buf_init(&m);
    sb_buf_init(&j);

    int rm = sb_inbox_encode_event(SB_INBOX_MSGPACK, 12345, SB_STR("message.created"), text, &m);
    int rj = sb_inbox_encode_event(SB_INBOX_JSON, 12345, SB_STR("message.created"), text, &j);
    CHECK(rm == 0 || rm == SB_EPARSE);
    CHECK(rj == 0 || rj == SB_EPARSE);
    CHECK(rm != 0 || rj == 0); /* MessagePack is the stricter of the two */
    CHECK(rm == 0 || m.len == 0);
    CHECK(rj == 0 || j.len == 0);

    if (rm == 0) {
        json_t *want = json_loadb(text.p, text.len, JSON_REJECT_DUPLICATES, NULL);
        CHECK(json_is_object(want));
        json_t *got = unpack_whole(&m);
        CHECK(json_object_size(got) == 4);
        CHECK(json_integer_value(json_object_get(got, "cursor")) == 12345);
        CHECK(json_equal(json_object_get(got, "data"), want));
        json_decref(got);
        json_decref(want);
    }
    if (rj == 0) {
        json_t *want = json_loadb(text.p, text.len, JSON_REJECT_DUPLICATES | JSON_DECODE_INT_AS_REAL, NULL);
        CHECK(json_is_object(want));
        CHECK(sb_utf8_valid(j.p, j.len));
        json_t *got = json_loadb(j.p, j.len, JSON_REJECT_DUPLICATES | JSON_DECODE_INT_AS_REAL, NULL);
        CHECK(json_is_object(got) && json_object_size(got) == 4);
        CHECK(json_equal(json_object_get(got, "data"), want));
        json_decref(got);
        json_decref(want);
    }
    sb_buf_cleanup(&m);
    sb_buf_cleanup(&j);
}

/* Encodes server frame number which (welcome, event type, accepted key, accepted id, error code, error message)
 * with s in its one string field; *key is set to that field's name. */
static int encode_with(int which, sb_inbox_fmt_t fmt, sb_str_t s, sb_buf_t *out, const char **key)
{
    switch (which) {
    case 0:
        *key = "tenant_id";
        return sb_inbox_encode_welcome(fmt, s, SB_INBOX_MAX_CURSOR, out);
    case 1:
        *key = "type";
        return sb_inbox_encode_event(fmt, 0, s, SB_STR("{\"a\": [1, 2.5, \"\\u00e9\"]}"), out);
    case 2:
        *key = "idempotency_key";
        return sb_inbox_encode_accepted(fmt, s, SB_STR("1"), out);
    case 3:
        *key = "id";
        return sb_inbox_encode_accepted(fmt, sb_str(NULL, 0), s, out);
    case 4:
        *key = "code";
        return sb_inbox_encode_error(fmt, s, SB_STR("m"), out);
    default:
        *key = "message";
        return sb_inbox_encode_error(fmt, SB_STR("bad_field"), s, out);
    }
}

/* Every string a server frame carries: encoded in both formats if and only if it is valid UTF-8, and read back
 * unchanged; JSON output is valid UTF-8 on one line, and both formats carry the same map. */
static void check_strings(sb_str_t s)
{
    if (!s.p)
        s = sb_str("", 0); /* an empty string, not the absent idempotency_key that {NULL, 0} means */
    bool valid = sb_utf8_valid(s.p, s.len);
    for (int which = 0; which < 6; which++) {
        json_t *seen[2] = {NULL, NULL};
        for (int fmt = 0; fmt < 2; fmt++) {
            sb_buf_t b;
            const char *key;
            sb_buf_init(&b);
            int rc = encode_with(which, fmt ? SB_INBOX_MSGPACK : SB_INBOX_JSON, s, &b, &key);
            CHECK(rc == (valid ? 0 : SB_EINVAL));
            if (rc == 0) {
                json_t *j = fmt ? unpack_whole(&b)
                                : json_loadb(b.p, b.len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, NULL);
                CHECK(json_is_object(j));
                if (!fmt)
                    CHECK(sb_utf8_valid(b.p, b.len) && !memchr(b.p, '\n', b.len));
                json_t *v = json_object_get(j, key);
                CHECK(json_is_string(v) && sb_str_eq(sb_str(json_string_value(v), json_string_length(v)), s));
                seen[fmt] = j;
            } else {
                CHECK(b.len == 0);
            }
            sb_buf_cleanup(&b);
        }
        CHECK((seen[0] == NULL) == (seen[1] == NULL));
        CHECK(!seen[0] || json_equal(seen[0], seen[1]));
        json_decref(seen[0]);
        json_decref(seen[1]);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    sb_inbox_fmt_t fmt = data[0] & 1 ? SB_INBOX_MSGPACK : SB_INBOX_JSON;
    bool id_as_str = data[0] & 2;
    sb_str_t frame = sb_str(size > 1 ? (const char *)data + 1 : NULL, size - 1);

    sb_inbox_op_t op, again;
    sb_inbox_err_t err;
    memset(&err, 0x55, sizeof err);
    int rc = sb_inbox_decode(fmt, frame, &op, &err);
    CHECK(sb_inbox_decode(fmt, frame, &again, NULL) == rc); /* err is optional and does not change the result */
    sb_inbox_op_cleanup(&again);

    if (rc != 0) {
        check_err(rc, &err);
        CHECK(zeroed(&op));
    } else {
        check_op(&op);
        char at[SB_RFC3339_TEXT_LEN];
        /* (a send_at whose offset took it outside years 0001..9999 in UTC cannot be written back as UTC) */
        bool writable = !op.send_at_ms || sb_rfc3339_format(op.send_at_ms, at) > 0;
        for (int f = 0; writable && f < 2; f++) {
            sb_inbox_fmt_t other = f ? fmt : (fmt == SB_INBOX_JSON ? SB_INBOX_MSGPACK : SB_INBOX_JSON);
            sb_buf_t b;
            sb_buf_init(&b);
            write_op(other, &op, id_as_str, &b);
            CHECK(sb_inbox_decode(other, sb_str(b.p, b.len), &again, &err) == 0);
            check_op(&again);
            CHECK(op_same(&op, &again));
            sb_inbox_op_cleanup(&again);
            sb_buf_cleanup(&b);
        }
    }
    sb_inbox_op_cleanup(&op);
    CHECK(zeroed(&op));

    check_event(frame);
    check_strings(frame);
    if (size == 1) { /* once per run is enough for the frame that takes nothing */
        sb_buf_t a, b;
        sb_buf_init(&a);
        sb_buf_init(&b);
        sb_inbox_encode_pong(SB_INBOX_JSON, &a);
        sb_inbox_encode_pong(SB_INBOX_MSGPACK, &b);
        json_t *x = json_loadb(a.p, a.len, 0, NULL), *y = unpack_whole(&b);
        CHECK(x && json_object_size(x) == 1 && json_equal(x, y));
        json_decref(x);
        json_decref(y);
        sb_buf_cleanup(&a);
        sb_buf_cleanup(&b);
    }
    return 0;
}
