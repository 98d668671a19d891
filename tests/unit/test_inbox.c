/* Unit tests for proto/inbox: the live inbox wire protocol. Every client op in both formats (MessagePack inputs
 * built with msgpack-c's own packer, so the reader is checked against an independent writer), every class of
 * refusal with its code and message (and that no message ever repeats the token), integer edges in each msgpack
 * width, Unicode, ownership of decoded strings, every server frame byte for byte in JSON and unpacked by msgpack-c
 * in MessagePack, both formats of each server frame carrying the same map, and client ops written in one format
 * and read back from the other. */
#include "proto/inbox.h"

#include "proto/err.h"
#include "tests/tap.h"

#include <inttypes.h>
#include <jansson.h>
#include <msgpack.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define TOKEN "tok-s3cr3t-value" /* no error message may ever contain "s3cr3t" */

/* ---- building MessagePack frames with msgpack-c ---------------------------------------------------------------- */

typedef struct mp {
    sb_buf_t b;
    msgpack_packer pk;
} mp_t;

static int mp_write(void *data, const char *buf, size_t len)
{
    sb_buf_append(data, buf, len);
    return 0;
}

static void mp_init(mp_t *m)
{
    sb_buf_init(&m->b);
    msgpack_packer_init(&m->pk, &m->b, mp_write);
}

static void mp_s(mp_t *m, const char *s)
{
    msgpack_pack_str_with_body(&m->pk, s, strlen(s));
}

/* A key and a string value. */
static void mp_kv(mp_t *m, const char *k, const char *v)
{
    mp_s(m, k);
    mp_s(m, v);
}

static void mp_raw(mp_t *m, const char *bytes, size_t n)
{
    sb_buf_append(&m->b, bytes, n);
}

#define MP_RAW(m, lit) mp_raw((m), (lit), sizeof(lit) - 1)

static sb_str_t mp_str(const mp_t *m)
{
    return sb_str(m->b.p, m->b.len);
}

/* ---- decoding helpers ---------------------------------------------------------------------------------------- */

static int dj(const char *text, sb_inbox_op_t *op, sb_inbox_err_t *err)
{
    return sb_inbox_decode(SB_INBOX_JSON, sb_str_cstr(text), op, err);
}

static int dm(const mp_t *m, sb_inbox_op_t *op, sb_inbox_err_t *err)
{
    return sb_inbox_decode(SB_INBOX_MSGPACK, mp_str(m), op, err);
}

static bool zeroed(const sb_inbox_op_t *op)
{
    static const sb_inbox_op_t zero;
    return memcmp(op, &zero, sizeof zero) == 0;
}

/* Checks a refusal: the code returned, the error code, a word of the message, the op left zeroed, no token. */
static void check_refused(int rc, const sb_inbox_op_t *op, const sb_inbox_err_t *err, int want_rc,
                          const char *want_code, const char *want_in_msg, const char *what)
{
    is_int(rc, want_rc, "%s: refused", what);
    is_str(err->code, want_code, "%s: code", what);
    if (!ok(strstr(err->message, want_in_msg) != NULL, "%s: message mentions \"%s\"", what, want_in_msg))
        printf("#   message: %s\n", err->message);
    ok(!strstr(err->message, "s3cr3t"), "%s: message does not repeat the token", what);
    ok(zeroed(op), "%s: op zeroed", what);
}

static void refused_json(const char *text, int want_rc, const char *want_code, const char *want_in_msg)
{
    sb_inbox_op_t op;
    sb_inbox_err_t err = {0};
    int rc = dj(text, &op, &err);
    check_refused(rc, &op, &err, want_rc, want_code, want_in_msg, text);
}

static void refused_mp(mp_t *m, int want_rc, const char *want_code, const char *want_in_msg, const char *what)
{
    sb_inbox_op_t op;
    sb_inbox_err_t err = {0};
    int rc = dm(m, &op, &err);
    check_refused(rc, &op, &err, want_rc, want_code, want_in_msg, what);
    sb_buf_cleanup(&m->b);
}

static void refused_bytes(const char *bytes, size_t n, const char *want_in_msg, const char *what)
{
    sb_inbox_op_t op;
    sb_inbox_err_t err = {0};
    int rc = sb_inbox_decode(SB_INBOX_MSGPACK, sb_str(bytes, n), &op, &err);
    check_refused(rc, &op, &err, SB_EPARSE, "bad_frame", want_in_msg, what);
}

/* Refuses the bytes of a string literal (which may hold NULs) as bad_frame. */
#define REFUSED_BYTES(lit, want_in_msg, what) refused_bytes((lit), sizeof(lit) - 1, (want_in_msg), (what))

/* A hello in msgpack whose resume_after is written by pack (called with the packer). */
static int mp_hello_resume(void (*pack)(msgpack_packer *, int64_t), int64_t v, sb_inbox_op_t *op,
                           sb_inbox_err_t *err)
{
    mp_t m;
    mp_init(&m);
    msgpack_pack_map(&m.pk, 3);
    mp_kv(&m, "op", "hello");
    mp_kv(&m, "token", TOKEN);
    mp_s(&m, "resume_after");
    pack(&m.pk, v);
    int rc = dm(&m, op, err);
    sb_buf_cleanup(&m.b);
    return rc;
}

static void pk_u8(msgpack_packer *pk, int64_t v) { msgpack_pack_fix_uint8(pk, (uint8_t)v); }
static void pk_u16(msgpack_packer *pk, int64_t v) { msgpack_pack_fix_uint16(pk, (uint16_t)v); }
static void pk_u32(msgpack_packer *pk, int64_t v) { msgpack_pack_fix_uint32(pk, (uint32_t)v); }
static void pk_u64(msgpack_packer *pk, int64_t v) { msgpack_pack_fix_uint64(pk, (uint64_t)v); }
static void pk_i8(msgpack_packer *pk, int64_t v) { msgpack_pack_fix_int8(pk, (int8_t)v); }
static void pk_i16(msgpack_packer *pk, int64_t v) { msgpack_pack_fix_int16(pk, (int16_t)v); }
static void pk_i32(msgpack_packer *pk, int64_t v) { msgpack_pack_fix_int32(pk, (int32_t)v); }
static void pk_i64(msgpack_packer *pk, int64_t v) { msgpack_pack_fix_int64(pk, v); }
static void pk_small(msgpack_packer *pk, int64_t v) { msgpack_pack_int64(pk, v); }
static void pk_f64(msgpack_packer *pk, int64_t v) { msgpack_pack_double(pk, (double)v); }
static void pk_f32(msgpack_packer *pk, int64_t v) { msgpack_pack_float(pk, (float)v); }

/* ---- hello ------------------------------------------------------------------------------------------------------- */

TEST(hello_json)
{
    sb_inbox_op_t op;
    sb_inbox_err_t err;

    is_int(dj("{\"op\":\"hello\",\"token\":\"" TOKEN "\"}", &op, &err), 0, "minimal hello");
    is_int(op.kind, SB_INBOX_HELLO, "kind");
    is_str(op.token.p, TOKEN, "token");
    is_int((long long)op.token.len, strlen(TOKEN), "token length");
    ok(!op.has_resume_after && op.resume_after == 0, "no resume_after");
    ok(op.to.p == NULL && op.body.p == NULL && op.channel_id == 0, "send fields zero");
    sb_inbox_op_cleanup(&op);
    ok(zeroed(&op), "cleanup zeroes");

    is_int(dj(" \n{ \"token\" : \"" TOKEN "\" , \"resume_after\" : 0, \"op\" : \"hello\" }\t\r\n", &op, &err), 0,
           "whitespace, op last, resume_after 0");
    ok(op.has_resume_after && op.resume_after == 0, "resume_after 0 is given, not absent");
    sb_inbox_op_cleanup(&op);

    is_int(dj("{\"op\":\"hello\",\"token\":\"t\",\"resume_after\":9007199254740991}", &op, &err), 0, "2^53-1");
    ok(op.has_resume_after && op.resume_after == 9007199254740991LL, "kept exactly");
    sb_inbox_op_cleanup(&op);

    is_int(dj("{\"op\":\"hello\",\"token\":\"t\",\"resume_after\":null}", &op, &err), 0, "null resume_after");
    ok(!op.has_resume_after, "null is absent");
    sb_inbox_op_cleanup(&op);

    is_int(dj("{\"op\":\"hello\",\"token\":\"t\",\"resume_after\":-0}", &op, &err), 0, "-0 is 0");
    ok(op.has_resume_after && op.resume_after == 0, "zero");
    sb_inbox_op_cleanup(&op);

    is_int(dj("{\"op\":\"hello\",\"token\":\"t\",\"v\":2,\"extra\":{\"a\":[1,2,{\"b\":null}]},\"channel_id\":true}",
              &op, &err),
           0, "unknown keys and other ops' fields ignored");
    sb_inbox_op_cleanup(&op);

    is_int(dj("{\"op\":\"hello\",\"token\":\"\\u00e9\\ud83d\\ude00\\\"\\\\\\/\"}", &op, &err), 0, "escapes");
    is_str(op.token.p, "\xc3\xa9\xf0\x9f\x98\x80\"\\/", "decoded: e-acute, emoji, quote, backslash, slash");
    sb_inbox_op_cleanup(&op);

    char big[SB_INBOX_MAX_TOKEN + 64];
    memcpy(big, "{\"op\":\"hello\",\"token\":\"", 23);
    memset(big + 23, 'a', SB_INBOX_MAX_TOKEN);
    strcpy(big + 23 + SB_INBOX_MAX_TOKEN, "\"}");
    is_int(dj(big, &op, &err), 0, "token of %d bytes", SB_INBOX_MAX_TOKEN);
    is_int((long long)op.token.len, SB_INBOX_MAX_TOKEN, "kept whole");
    sb_inbox_op_cleanup(&op);
    memset(big + 23, 'a', SB_INBOX_MAX_TOKEN + 1);
    strcpy(big + 24 + SB_INBOX_MAX_TOKEN, "\"}");
    refused_json(big, SB_EINVAL, "bad_field", "token is longer than 4096 bytes");

    /* 4096 bytes counted in UTF-8, not characters: 1365 three-byte characters + 1 byte = 4096 */
    sb_buf_t b;
    sb_buf_init(&b);
    sb_buf_puts(&b, "{\"op\":\"hello\",\"token\":\"");
    for (int i = 0; i < 1365; i++)
        sb_buf_puts(&b, "\xe2\x82\xac");
    sb_buf_puts(&b, "x\"}");
    is_int(dj(sb_buf_cstr(&b), &op, &err), 0, "4096 bytes of euro signs and an x");
    sb_inbox_op_cleanup(&op);
    b.len -= 3;
    sb_buf_puts(&b, "xy\"}");
    refused_json(sb_buf_cstr(&b), SB_EINVAL, "bad_field", "token is longer");
    sb_buf_cleanup(&b);
}

TEST(hello_json_refused)
{
    refused_json("{\"op\":\"hello\"}", SB_EINVAL, "bad_field", "token is required");
    refused_json("{\"op\":\"hello\",\"token\":null}", SB_EINVAL, "bad_field", "token is required");
    refused_json("{\"op\":\"hello\",\"token\":\"\"}", SB_EINVAL, "bad_field", "token must not be empty");
    refused_json("{\"op\":\"hello\",\"token\":42}", SB_EINVAL, "bad_field", "token must be a string");
    refused_json("{\"op\":\"hello\",\"token\":[\"" TOKEN "\"]}", SB_EINVAL, "bad_field", "token must be a string");

    static const char *const bad_resume[] = {
        "9007199254740992", /* 2^53 */
        "9223372036854775807", "-1", "-9223372036854775808",
    };
    for (size_t i = 0; i < sizeof bad_resume / sizeof bad_resume[0]; i++) {
        char text[160];
        snprintf(text, sizeof text, "{\"op\":\"hello\",\"token\":\"" TOKEN "\",\"resume_after\":%s}", bad_resume[i]);
        refused_json(text, SB_EINVAL, "bad_field", "resume_after must be between 0 and 9007199254740991");
    }
    static const char *const not_int[] = {"1.0", "1.5", "1e3", "0.0", "\"5\"", "true", "[1]", "{}"};
    for (size_t i = 0; i < sizeof not_int / sizeof not_int[0]; i++) {
        char text[160];
        snprintf(text, sizeof text, "{\"op\":\"hello\",\"token\":\"" TOKEN "\",\"resume_after\":%s}", not_int[i]);
        refused_json(text, SB_EINVAL, "bad_field", "resume_after must be an integer");
    }
    /* beyond int64, jansson refuses the number itself */
    refused_json("{\"op\":\"hello\",\"token\":\"" TOKEN "\",\"resume_after\":9223372036854775808}", SB_EPARSE,
                 "bad_frame", "number out of range");
    /* the token is checked first */
    refused_json("{\"op\":\"hello\",\"token\":\"\",\"resume_after\":-1}", SB_EINVAL, "bad_field", "token");
}

TEST(hello_msgpack)
{
    sb_inbox_op_t op;
    sb_inbox_err_t err;
    mp_t m;

    mp_init(&m);
    msgpack_pack_map(&m.pk, 2);
    mp_kv(&m, "token", TOKEN);
    mp_kv(&m, "op", "hello");
    is_int(dm(&m, &op, &err), 0, "minimal hello, op second");
    is_int(op.kind, SB_INBOX_HELLO, "kind");
    is_str(op.token.p, TOKEN, "token");
    ok(!op.has_resume_after, "no resume_after");
    sb_inbox_op_cleanup(&op);
    sb_buf_cleanup(&m.b);

    /* every integer width msgpack has, at the edges the contract draws */
    static const struct {
        void (*pack)(msgpack_packer *, int64_t);
        const char *name;
        int64_t v;
        bool good;
    } ints[] = {
        {pk_small, "positive fixint 0", 0, true},
        {pk_small, "positive fixint 127", 127, true},
        {pk_u8, "uint8 0", 0, true},
        {pk_u8, "uint8 255", 255, true},
        {pk_u16, "uint16 65535", 65535, true},
        {pk_u32, "uint32 4294967295", 4294967295LL, true},
        {pk_u64, "uint64 0", 0, true},
        {pk_u64, "uint64 2^53-1", 9007199254740991LL, true},
        {pk_u64, "uint64 2^53", 9007199254740992LL, false},
        {pk_u64, "uint64 2^63-1", INT64_MAX, false},
        {pk_i8, "int8 0", 0, true},
        {pk_i8, "int8 127", 127, true},
        {pk_i8, "int8 -1", -1, false},
        {pk_i16, "int16 300", 300, true},
        {pk_i16, "int16 -300", -300, false},
        {pk_i32, "int32 70000", 70000, true},
        {pk_i64, "int64 2^53-1", 9007199254740991LL, true},
        {pk_i64, "int64 2^53", 9007199254740992LL, false},
        {pk_i64, "int64 min", INT64_MIN, false},
        {pk_small, "negative fixint -1", -1, false},
        {pk_small, "negative fixint -32", -32, false},
    };
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        int rc = mp_hello_resume(ints[i].pack, ints[i].v, &op, &err);
        if (ints[i].good) {
            is_int(rc, 0, "%s accepted", ints[i].name);
            ok(op.has_resume_after && op.resume_after == ints[i].v, "%s: value kept", ints[i].name);
        } else {
            check_refused(rc, &op, &err, SB_EINVAL, "bad_field", "resume_after must be between", ints[i].name);
        }
        sb_inbox_op_cleanup(&op);
    }

    int rc = mp_hello_resume(pk_f64, 1, &op, &err);
    check_refused(rc, &op, &err, SB_EINVAL, "bad_field", "resume_after must be an integer", "float64 1.0");
    rc = mp_hello_resume(pk_f32, 7, &op, &err);
    check_refused(rc, &op, &err, SB_EINVAL, "bad_field", "resume_after must be an integer", "float32 7.0");

    /* uint64 beyond int64 cannot be carried by JSON either: the frame is refused, as jansson refuses it */
    mp_init(&m);
    msgpack_pack_map(&m.pk, 3);
    mp_kv(&m, "op", "hello");
    mp_kv(&m, "token", TOKEN);
    mp_s(&m, "resume_after");
    msgpack_pack_uint64(&m.pk, UINT64_MAX);
    refused_mp(&m, SB_EPARSE, "bad_frame", "beyond int64", "uint64 max");

    mp_init(&m);
    msgpack_pack_map(&m.pk, 3);
    mp_kv(&m, "op", "hello");
    mp_kv(&m, "token", TOKEN);
    mp_s(&m, "resume_after");
    msgpack_pack_nil(&m.pk);
    is_int(dm(&m, &op, &err), 0, "nil resume_after");
    ok(!op.has_resume_after, "nil is absent");
    sb_inbox_op_cleanup(&op);
    sb_buf_cleanup(&m.b);

    /* a token as bin is not a string */
    mp_init(&m);
    msgpack_pack_map(&m.pk, 2);
    mp_kv(&m, "op", "hello");
    mp_s(&m, "token");
    msgpack_pack_bin_with_body(&m.pk, TOKEN, strlen(TOKEN));
    refused_mp(&m, SB_EPARSE, "bad_frame", "bin or ext", "bin token");

    mp_init(&m);
    msgpack_pack_map(&m.pk, 2);
    mp_kv(&m, "op", "hello");
    mp_s(&m, "token");
    msgpack_pack_int64(&m.pk, 5);
    refused_mp(&m, SB_EINVAL, "bad_field", "token must be a string", "int token");

    mp_init(&m);
    msgpack_pack_map(&m.pk, 2);
    mp_kv(&m, "op", "hello");
    mp_kv(&m, "token", "");
    refused_mp(&m, SB_EINVAL, "bad_field", "token must not be empty", "empty token");

    /* the same string in every str width: fixstr (from the packer), str8, str16, str32 by hand */
    static const char hdr[][6] = {"\xd9\x03", "\xda\x00\x03", "\xdb\x00\x00\x00\x03"};
    static const size_t hdr_len[] = {2, 3, 5};
    for (size_t i = 0; i < 3; i++) {
        mp_init(&m);
        msgpack_pack_map(&m.pk, 2);
        mp_kv(&m, "op", "hello");
        mp_s(&m, "token");
        mp_raw(&m, hdr[i], hdr_len[i]);
        mp_raw(&m, "abc", 3);
        is_int(dm(&m, &op, &err), 0, "str of width %zu bytes", hdr_len[i] - 1);
        is_str(op.token.p, "abc", "read through");
        sb_inbox_op_cleanup(&op);
        sb_buf_cleanup(&m.b);
    }
    /* map16 and map32 headers for the top level, keys as str8 */
    mp_init(&m);
    MP_RAW(&m, "\xde\x00\x02");
    MP_RAW(&m, "\xd9\x02op");
    mp_s(&m, "ping");
    MP_RAW(&m, "\xd9\x01x\xdf\x00\x00\x00\x00");
    is_int(dm(&m, &op, &err), 0, "map16 top level holding an empty map32");
    is_int(op.kind, SB_INBOX_PING, "a ping");
    sb_buf_cleanup(&m.b);
}

/* ---- send -------------------------------------------------------------------------------------------------------- */

TEST(send_json)
{
    sb_inbox_op_t op;
    sb_inbox_err_t err;

    is_int(dj("{\"op\":\"send\",\"channel_id\":\"42\",\"to\":\"+14155550100\",\"body\":\"hi\","
              "\"idempotency_key\":\"k-1\"}",
              &op, &err),
           0, "send, channel_id as a string");
    is_int(op.kind, SB_INBOX_SEND, "kind");
    is_int(op.channel_id, 42, "channel_id");
    is_str(op.to.p, "+14155550100", "to");
    is_str(op.body.p, "hi", "body");
    ok(op.media_url.p == NULL && op.media_url.len == 0, "media_url absent");
    is_str(op.idempotency_key.p, "k-1", "idempotency_key");
    ok(op.token.p == NULL && !op.has_resume_after, "hello fields zero");
    is_int(op.send_at_ms, 0, "no send_at: 0");
    sb_inbox_op_cleanup(&op);

    is_int(dj("{\"op\":\"send\",\"channel_id\":1,\"to\":\"x\",\"body\":\"b\","
              "\"send_at\":\"2026-12-05T15:30:00.250+01:00\"}",
              &op, &err),
           0, "send with send_at");
    is_int(op.send_at_ms, 1796481000250LL, "send_at in Unix ms (its offset applied)");
    sb_inbox_op_cleanup(&op);
    is_int(dj("{\"op\":\"send\",\"channel_id\":1,\"to\":\"x\",\"body\":\"b\",\"send_at\":null}", &op, &err), 0,
           "send_at null");
    is_int(op.send_at_ms, 0, "null: at once");
    sb_inbox_op_cleanup(&op);
    refused_json("{\"op\":\"send\",\"channel_id\":1,\"to\":\"x\",\"body\":\"b\",\"send_at\":\"2026-12-05T15:30:00\"}",
                 SB_EINVAL, "bad_field", "send_at must be an RFC 3339 time");
    refused_json("{\"op\":\"send\",\"channel_id\":1,\"to\":\"x\",\"body\":\"b\",\"send_at\":1796481000}", SB_EINVAL,
                 "bad_field", "send_at must be a string");

    is_int(dj("{\"op\":\"send\",\"channel_id\":9223372036854775807,\"to\":\"x\",\"media_url\":\"https://e.x/a.jpg\","
              "\"body\":null,\"idempotency_key\":null}",
              &op, &err),
           0, "channel_id as an integer, media only, nulls");
    is_int(op.channel_id, INT64_MAX, "int64 max");
    ok(op.body.p == NULL && op.idempotency_key.p == NULL, "nulls are absent");
    is_str(op.media_url.p, "https://e.x/a.jpg", "media_url");
    ok(op.tag.p == NULL, "no tag");
    sb_inbox_op_cleanup(&op);

    is_int(dj("{\"op\":\"send\",\"channel_id\":7,\"to\":\"6000000000000001\",\"body\":\"an agent here\","
              "\"tag\":\"HUMAN_AGENT\"}",
              &op, &err),
           0, "a Messenger reply with its tag");
    is_str(op.tag.p, "HUMAN_AGENT", "tag");
    sb_inbox_op_cleanup(&op);
    is_int(dj("{\"op\":\"send\",\"channel_id\":7,\"to\":\"1\",\"body\":\"x\",\"tag\":1}", &op, &err), SB_EINVAL,
           "a tag that is not a string");
    sb_inbox_op_cleanup(&op);

    is_int(dj("{\"op\":\"send\",\"channel_id\":\"9223372036854775807\",\"to\":\"x\",\"body\":\"\","
              "\"media_url\":\"u\"}",
              &op, &err),
           0, "empty body beside a media_url");
    is_int(op.channel_id, INT64_MAX, "max as a string");
    ok(op.body.p != NULL && op.body.len == 0 && op.body.p[0] == '\0', "present empty body: non-NULL, empty");
    sb_inbox_op_cleanup(&op);

    is_int(dj("{\"op\":\"send\",\"channel_id\":1,\"to\":\"\xe2\x98\x83\",\"body\":\"Ol\xc3\xa1 \xf0\x9f\x98\x80 "
              "\xf4\x8f\xbf\xbf\\n\"}",
              &op, &err),
           0, "Unicode to and body");
    is_str(op.to.p, "\xe2\x98\x83", "snowman");
    is_str(op.body.p, "Ol\xc3\xa1 \xf0\x9f\x98\x80 \xf4\x8f\xbf\xbf\n", "emoji and U+10FFFF kept");
    sb_inbox_op_cleanup(&op);

    char text[600];
    char key[300];
    memset(key, 'k', 255);
    key[255] = '\0';
    snprintf(text, sizeof text, "{\"op\":\"send\",\"channel_id\":1,\"to\":\"x\",\"body\":\"b\",\"idempotency_key\":\"%s\"}",
             key);
    is_int(dj(text, &op, &err), 0, "idempotency_key of 255 bytes");
    is_int((long long)op.idempotency_key.len, 255, "kept");
    sb_inbox_op_cleanup(&op);
    strcat(key, "k");
    snprintf(text, sizeof text, "{\"op\":\"send\",\"channel_id\":1,\"to\":\"x\",\"body\":\"b\",\"idempotency_key\":\"%s\"}",
             key);
    refused_json(text, SB_EINVAL, "bad_field", "idempotency_key must be 1 to 255 bytes");

    /* priority: interactive unless said otherwise (sb_priority_t's order) */
    is_int(dj("{\"op\":\"send\",\"channel_id\":1,\"to\":\"x\",\"body\":\"b\"}", &op, &err), 0, "no priority");
    is_int(op.priority, 0, "interactive by default");
    sb_inbox_op_cleanup(&op);
    is_int(dj("{\"op\":\"send\",\"channel_id\":1,\"to\":\"x\",\"body\":\"b\",\"priority\":null}", &op, &err), 0,
           "priority null");
    is_int(op.priority, 0, "null: interactive");
    sb_inbox_op_cleanup(&op);
    static const char *const names[] = {"interactive", "normal", "bulk"};
    for (int i = 0; i < 3; i++) {
        snprintf(text, sizeof text, "{\"op\":\"send\",\"channel_id\":1,\"to\":\"x\",\"body\":\"b\",\"priority\":\"%s\"}",
                 names[i]);
        is_int(dj(text, &op, &err), 0, "priority %s", names[i]);
        is_int(op.priority, i, "priority %s is lane %d", names[i], i);
        sb_inbox_op_cleanup(&op);
    }
}

TEST(send_json_refused)
{
#define SEND(rest) "{\"op\":\"send\"," rest "}"
    refused_json(SEND("\"to\":\"x\",\"body\":\"b\""), SB_EINVAL, "bad_field", "channel_id is required");
    refused_json(SEND("\"channel_id\":null,\"to\":\"x\",\"body\":\"b\""), SB_EINVAL, "bad_field",
                 "channel_id is required");
    refused_json(SEND("\"channel_id\":true,\"to\":\"x\",\"body\":\"b\""), SB_EINVAL, "bad_field",
                 "channel_id must be a string of digits or an integer");
    static const char *const bad_id_str[] = {"\"\"",   "\"0\"",   "\"007\"",  "\"-1\"", "\"+1\"", "\" 1\"",
                                             "\"1 \"", "\"12a\"", "\"1.0\"",  "\"0x1\"", "\"\xd9\xa1\""};
    for (size_t i = 0; i < sizeof bad_id_str / sizeof bad_id_str[0]; i++) {
        char text[160];
        snprintf(text, sizeof text, SEND("\"channel_id\":%s,\"to\":\"x\",\"body\":\"b\""), bad_id_str[i]);
        refused_json(text, SB_EINVAL, "bad_field", "channel_id must be a decimal number");
    }
    refused_json(SEND("\"channel_id\":\"9223372036854775808\",\"to\":\"x\",\"body\":\"b\""), SB_EINVAL, "bad_field",
                 "channel_id is out of range");
    refused_json(SEND("\"channel_id\":\"99999999999999999999999\",\"to\":\"x\",\"body\":\"b\""), SB_EINVAL,
                 "bad_field", "channel_id is out of range");
    refused_json(SEND("\"channel_id\":0,\"to\":\"x\",\"body\":\"b\""), SB_EINVAL, "bad_field",
                 "channel_id must be positive");
    refused_json(SEND("\"channel_id\":-5,\"to\":\"x\",\"body\":\"b\""), SB_EINVAL, "bad_field",
                 "channel_id must be positive");
    refused_json(SEND("\"channel_id\":1.0,\"to\":\"x\",\"body\":\"b\""), SB_EINVAL, "bad_field",
                 "channel_id must be a string of digits or an integer");
    refused_json(SEND("\"channel_id\":1,\"body\":\"b\""), SB_EINVAL, "bad_field", "to is required");
    refused_json(SEND("\"channel_id\":1,\"to\":null,\"body\":\"b\""), SB_EINVAL, "bad_field", "to is required");
    refused_json(SEND("\"channel_id\":1,\"to\":\"\",\"body\":\"b\""), SB_EINVAL, "bad_field", "to must not be empty");
    refused_json(SEND("\"channel_id\":1,\"to\":15551234567,\"body\":\"b\""), SB_EINVAL, "bad_field",
                 "to must be a string");
    refused_json(SEND("\"channel_id\":1,\"to\":\"x\",\"body\":5"), SB_EINVAL, "bad_field", "body must be a string");
    refused_json(SEND("\"channel_id\":1,\"to\":\"x\",\"body\":\"b\",\"media_url\":{}"), SB_EINVAL, "bad_field",
                 "media_url must be a string");
    refused_json(SEND("\"channel_id\":1,\"to\":\"x\",\"body\":\"b\",\"idempotency_key\":7"), SB_EINVAL, "bad_field",
                 "idempotency_key must be a string");
    refused_json(SEND("\"channel_id\":1,\"to\":\"x\",\"body\":\"b\",\"idempotency_key\":\"\""), SB_EINVAL,
                 "bad_field", "idempotency_key must be 1 to 255 bytes");
    refused_json(SEND("\"channel_id\":1,\"to\":\"x\""), SB_EINVAL, "bad_field", "body or media_url is required");
    refused_json(SEND("\"channel_id\":1,\"to\":\"x\",\"body\":\"b\",\"priority\":\"urgent\""), SB_EINVAL, "bad_field",
                 "priority must be interactive, normal or bulk");
    refused_json(SEND("\"channel_id\":1,\"to\":\"x\",\"body\":\"b\",\"priority\":\"Bulk\""), SB_EINVAL, "bad_field",
                 "priority must be interactive, normal or bulk");
    refused_json(SEND("\"channel_id\":1,\"to\":\"x\",\"body\":\"b\",\"priority\":2"), SB_EINVAL, "bad_field",
                 "priority must be a string");
    refused_json(SEND("\"channel_id\":1,\"to\":\"x\",\"body\":\"\",\"media_url\":null"), SB_EINVAL, "bad_field",
                 "body or media_url is required");
    /* fields are checked in order: channel_id before to */
    refused_json(SEND("\"to\":\"\",\"channel_id\":\"x\""), SB_EINVAL, "bad_field", "channel_id");
#undef SEND
}

TEST(send_msgpack)
{
    sb_inbox_op_t op;
    sb_inbox_err_t err;
    mp_t m;

    mp_init(&m);
    msgpack_pack_map(&m.pk, 6);
    mp_kv(&m, "op", "send");
    mp_s(&m, "channel_id");
    msgpack_pack_fix_uint64(&m.pk, 77);
    mp_kv(&m, "to", "whatsapp:+44 7700 900123");
    mp_kv(&m, "body", "\xe4\xbd\xa0\xe5\xa5\xbd \xf0\x9f\x91\x8b");
    mp_kv(&m, "media_url", "https://example.com/i.png");
    mp_kv(&m, "idempotency_key", "6f1c");
    is_int(dm(&m, &op, &err), 0, "send with every field");
    is_int(op.channel_id, 77, "channel_id as uint64");
    is_str(op.to.p, "whatsapp:+44 7700 900123", "to");
    is_str(op.body.p, "\xe4\xbd\xa0\xe5\xa5\xbd \xf0\x9f\x91\x8b", "Chinese and an emoji");
    is_str(op.media_url.p, "https://example.com/i.png", "media_url");
    is_str(op.idempotency_key.p, "6f1c", "idempotency_key");
    sb_inbox_op_cleanup(&op);
    sb_buf_cleanup(&m.b);

    mp_init(&m);
    msgpack_pack_map(&m.pk, 4);
    mp_kv(&m, "op", "send");
    mp_kv(&m, "channel_id", "9223372036854775807");
    mp_kv(&m, "to", "x");
    mp_kv(&m, "body", "b");
    is_int(dm(&m, &op, &err), 0, "channel_id as str");
    is_int(op.channel_id, INT64_MAX, "int64 max");
    sb_inbox_op_cleanup(&op);
    sb_buf_cleanup(&m.b);

    mp_init(&m);
    msgpack_pack_map(&m.pk, 4);
    mp_kv(&m, "op", "send");
    mp_s(&m, "channel_id");
    msgpack_pack_fix_int64(&m.pk, INT64_MAX);
    mp_kv(&m, "to", "x");
    mp_kv(&m, "body", "b");
    is_int(dm(&m, &op, &err), 0, "channel_id as int64 max");
    is_int(op.channel_id, INT64_MAX, "kept");
    sb_inbox_op_cleanup(&op);
    sb_buf_cleanup(&m.b);

    mp_init(&m);
    msgpack_pack_map(&m.pk, 4);
    mp_kv(&m, "op", "send");
    mp_s(&m, "channel_id");
    msgpack_pack_fix_int8(&m.pk, -1);
    mp_kv(&m, "to", "x");
    mp_kv(&m, "body", "b");
    refused_mp(&m, SB_EINVAL, "bad_field", "channel_id must be positive", "int8 -1 channel_id");

    mp_init(&m);
    msgpack_pack_map(&m.pk, 4);
    mp_kv(&m, "op", "send");
    mp_s(&m, "channel_id");
    msgpack_pack_uint64(&m.pk, (uint64_t)INT64_MAX + 1);
    mp_kv(&m, "to", "x");
    mp_kv(&m, "body", "b");
    refused_mp(&m, SB_EPARSE, "bad_frame", "beyond int64", "uint64 2^63 channel_id");

    mp_init(&m);
    msgpack_pack_map(&m.pk, 4);
    mp_kv(&m, "op", "send");
    mp_s(&m, "channel_id");
    msgpack_pack_double(&m.pk, 3.0);
    mp_kv(&m, "to", "x");
    mp_kv(&m, "body", "b");
    refused_mp(&m, SB_EINVAL, "bad_field", "channel_id must be a string of digits or an integer", "float64 id");

    mp_init(&m);
    msgpack_pack_map(&m.pk, 4);
    mp_kv(&m, "op", "send");
    mp_kv(&m, "channel_id", "1");
    mp_kv(&m, "to", "x");
    mp_s(&m, "body");
    msgpack_pack_bin_with_body(&m.pk, "hello", 5);
    refused_mp(&m, SB_EPARSE, "bad_frame", "bin or ext", "bin body");

    mp_init(&m);
    msgpack_pack_map(&m.pk, 3);
    mp_kv(&m, "op", "send");
    mp_kv(&m, "channel_id", "1");
    mp_kv(&m, "to", "x");
    refused_mp(&m, SB_EINVAL, "bad_field", "body or media_url is required", "no content");
}

/* ---- ping, op, unknown keys -------------------------------------------------------------------------------------- */

TEST(ping_and_op)
{
    sb_inbox_op_t op;
    sb_inbox_err_t err;
    mp_t m;

    is_int(dj("{\"op\":\"ping\"}", &op, &err), 0, "ping");
    is_int(op.kind, SB_INBOX_PING, "kind");
    ok(op.mem == NULL, "nothing allocated");
    sb_inbox_op_cleanup(&op);
    is_int(dj("{\"op\":\"ping\",\"token\":5,\"channel_id\":[],\"future\":{\"x\":1}}", &op, &err), 0,
           "ping ignores fields of other ops and unknown keys");
    is_int(op.kind, SB_INBOX_PING, "still a ping");
    ok(op.token.p == NULL, "no token picked up");

    mp_init(&m);
    msgpack_pack_map(&m.pk, 1);
    mp_kv(&m, "op", "ping");
    is_int(dm(&m, &op, &err), 0, "msgpack ping");
    is_int(op.kind, SB_INBOX_PING, "kind");
    sb_buf_cleanup(&m.b);

    mp_init(&m);
    msgpack_pack_map(&m.pk, 3);
    mp_s(&m, "later");
    msgpack_pack_array(&m.pk, 3);
    msgpack_pack_true(&m.pk);
    msgpack_pack_double(&m.pk, 2.5);
    msgpack_pack_map(&m.pk, 1);
    mp_kv(&m, "k", "v");
    mp_kv(&m, "op", "ping");
    mp_s(&m, "n");
    msgpack_pack_nil(&m.pk);
    is_int(dm(&m, &op, &err), 0, "msgpack ping with unknown nested values");
    sb_buf_cleanup(&m.b);

    refused_json("{}", SB_EINVAL, "bad_field", "op is required");
    refused_json("{\"op\":null}", SB_EINVAL, "bad_field", "op is required");
    refused_json("{\"op\":1}", SB_EINVAL, "bad_field", "op must be a string");
    refused_json("{\"op\":[\"ping\"]}", SB_EINVAL, "bad_field", "op must be a string");
    refused_json("{\"op\":\"pong\"}", SB_ENOENT, "unknown_op", "op must be one of hello, send, ping");
    refused_json("{\"op\":\"PING\"}", SB_ENOENT, "unknown_op", "one of");
    refused_json("{\"op\":\"\"}", SB_ENOENT, "unknown_op", "one of");
    refused_json("{\"op\":\"ping \"}", SB_ENOENT, "unknown_op", "one of");
    refused_json("{\"op\":\"" TOKEN "\"}", SB_ENOENT, "unknown_op", "one of");

    mp_init(&m);
    msgpack_pack_map(&m.pk, 0);
    refused_mp(&m, SB_EINVAL, "bad_field", "op is required", "empty map");
    mp_init(&m);
    msgpack_pack_map(&m.pk, 1);
    mp_kv(&m, "op", "welcome");
    refused_mp(&m, SB_ENOENT, "unknown_op", "one of", "op welcome");
    mp_init(&m);
    msgpack_pack_map(&m.pk, 1);
    mp_s(&m, "op");
    msgpack_pack_bin_with_body(&m.pk, "ping", 4);
    refused_mp(&m, SB_EPARSE, "bad_frame", "bin or ext", "bin op");
}

/* ---- frame-level refusals ---------------------------------------------------------------------------------------- */

TEST(json_frames_refused)
{
    sb_inbox_op_t op;
    sb_inbox_err_t err = {0};

    int rc = sb_inbox_decode(SB_INBOX_JSON, sb_str(NULL, 0), &op, &err);
    check_refused(rc, &op, &err, SB_EPARSE, "bad_frame", "not a valid JSON object", "empty frame");
    refused_json("   ", SB_EPARSE, "bad_frame", "not a valid JSON object");
    refused_json("[]", SB_EPARSE, "bad_frame", "frame must be a JSON object");
    refused_json("[{\"op\":\"ping\"}]", SB_EPARSE, "bad_frame", "frame must be a JSON object");
    refused_json("\"ping\"", SB_EPARSE, "bad_frame", "not a valid JSON object");
    refused_json("5", SB_EPARSE, "bad_frame", "not a valid JSON object");
    refused_json("null", SB_EPARSE, "bad_frame", "not a valid JSON object");
    refused_json("{", SB_EPARSE, "bad_frame", "not a valid JSON object");
    refused_json("{\"op\":\"ping\"", SB_EPARSE, "bad_frame", "not a valid JSON object");
    refused_json("{\"op\":\"ping\",}", SB_EPARSE, "bad_frame", "not a valid JSON object");
    refused_json("{'op':'ping'}", SB_EPARSE, "bad_frame", "not a valid JSON object");
    refused_json("{\"op\":\"ping\"}x", SB_EPARSE, "bad_frame", "bytes after the JSON object");
    refused_json("{\"op\":\"ping\"}{}", SB_EPARSE, "bad_frame", "bytes after the JSON object");
    refused_json("{\"op\":\"ping\",\"op\":\"ping\"}", SB_EPARSE, "bad_frame", "duplicate key");
    refused_json("{\"op\":\"ping\",\"x\":{\"a\":1,\"a\":2}}", SB_EPARSE, "bad_frame", "duplicate key");
    refused_json("{\"op\":\"ping\",\"x\":\"\\u0000\"}", SB_EPARSE, "bad_frame", "NUL");
    refused_json("{\"op\":\"ping\",\"x\\u0000\":1}", SB_EPARSE, "bad_frame", "NUL");
    refused_json("{\"op\":\"ping\",\"x\":\"\\ud800\"}", SB_EPARSE, "bad_frame", "not a valid JSON object");
    refused_json("{\"op\":\"ping\",\"x\":\"\xff\"}", SB_EPARSE, "bad_frame", "not valid UTF-8");
    refused_json("{\"op\":\"ping\",\"x\":\"\xed\xa0\x80\"}", SB_EPARSE, "bad_frame", "not valid UTF-8");
    refused_json("{\"op\":\"ping\",\"x\":\"\xc0\xaf\"}", SB_EPARSE, "bad_frame", "not valid UTF-8");
    refused_json("{\"op\":\"ping\",\"x\":\"a\tb\"}", SB_EPARSE, "bad_frame", "not a valid JSON object");
    refused_json("{\"op\":\"ping\",\"x\":1e400}", SB_EPARSE, "bad_frame", "number out of range");
    refused_json("{\"op\":\"ping\",\"x\":NaN}", SB_EPARSE, "bad_frame", "not a valid JSON object");
    refused_json("{\"op\":\"hello\",\"token\":\"" TOKEN, SB_EPARSE, "bad_frame", "at byte");
    refused_json("{\"op\":\"hello\",\"token\":" TOKEN "}", SB_EPARSE, "bad_frame", "at byte");

    /* a raw NUL byte inside the frame */
    static const char nul[] = "{\"op\":\"ping\",\"x\":\"a\0b\"}";
    rc = sb_inbox_decode(SB_INBOX_JSON, sb_str(nul, sizeof nul - 1), &op, &err);
    check_refused(rc, &op, &err, SB_EPARSE, "bad_frame", "", "raw NUL");

    /* nesting: jansson stops at 2048 levels */
    size_t depth = 5000;
    sb_buf_t b;
    sb_buf_init(&b);
    sb_buf_puts(&b, "{\"op\":\"ping\",\"x\":");
    for (size_t i = 0; i < depth; i++)
        sb_buf_append(&b, "[", 1);
    for (size_t i = 0; i < depth; i++)
        sb_buf_append(&b, "]", 1);
    sb_buf_puts(&b, "}");
    refused_json(sb_buf_cstr(&b), SB_EPARSE, "bad_frame", "nested too deeply");
    sb_buf_cleanup(&b);

    /* error is optional */
    rc = dj("{", &op, NULL);
    is_int(rc, SB_EPARSE, "err may be NULL");
    ok(zeroed(&op), "op zeroed");
}

TEST(msgpack_frames_refused)
{
    mp_t m;
    sb_inbox_op_t op;
    sb_inbox_err_t err = {0};

    int rc = sb_inbox_decode(SB_INBOX_MSGPACK, sb_str(NULL, 0), &op, &err);
    check_refused(rc, &op, &err, SB_EPARSE, "bad_frame", "must be a MessagePack map", "empty frame");

    mp_init(&m);
    msgpack_pack_array(&m.pk, 1);
    msgpack_pack_map(&m.pk, 1);
    mp_kv(&m, "op", "ping");
    refused_mp(&m, SB_EPARSE, "bad_frame", "must be a MessagePack map", "array around the map");
    mp_init(&m);
    mp_s(&m, "{\"op\":\"ping\"}");
    refused_mp(&m, SB_EPARSE, "bad_frame", "must be a MessagePack map", "JSON text in a str");
    REFUSED_BYTES("{\"op\":\"ping\"}", "must be a MessagePack map", "JSON text as a binary frame");
    REFUSED_BYTES("\xc0", "must be a MessagePack map", "nil");

    mp_init(&m);
    msgpack_pack_map(&m.pk, 1);
    mp_kv(&m, "op", "ping");
    msgpack_pack_nil(&m.pk);
    refused_mp(&m, SB_EPARSE, "bad_frame", "bytes after the MessagePack map", "a trailing nil");
    mp_init(&m);
    msgpack_pack_map(&m.pk, 1);
    mp_kv(&m, "op", "ping");
    msgpack_pack_map(&m.pk, 1);
    mp_kv(&m, "op", "ping");
    refused_mp(&m, SB_EPARSE, "bad_frame", "bytes after", "two maps");

    /* truncation at every byte of a good frame */
    mp_init(&m);
    msgpack_pack_map(&m.pk, 3);
    mp_kv(&m, "op", "hello");
    mp_kv(&m, "token", TOKEN);
    mp_s(&m, "resume_after");
    msgpack_pack_fix_uint32(&m.pk, 1000);
    bool all = true, none_echo = true;
    for (size_t n = 1; n < m.b.len; n++) {
        rc = sb_inbox_decode(SB_INBOX_MSGPACK, sb_str(m.b.p, n), &op, &err);
        all = all && rc == SB_EPARSE && strcmp(err.code, "bad_frame") == 0 && zeroed(&op);
        none_echo = none_echo && !strstr(err.message, "s3cr3t");
    }
    ok(all, "every truncation of a %zu-byte hello is bad_frame", m.b.len);
    ok(none_echo, "no truncation echoes the token");
    is_int(dm(&m, &op, &err), 0, "the whole frame is fine");
    sb_inbox_op_cleanup(&op);
    sb_buf_cleanup(&m.b);

    /* declared lengths are not trusted: huge counts with nothing behind them */
    REFUSED_BYTES("\xdf\xff\xff\xff\xff", "not well-formed", "map32 of 4G pairs");
    REFUSED_BYTES("\x81\xa1x\xdd\xff\xff\xff\xff\xc0", "not well-formed", "array32 of 4G elements");
    REFUSED_BYTES("\x81\xa1x\xdb\xff\xff\xff\xff", "not well-formed", "str32 of 4G bytes");
    REFUSED_BYTES("\x81\xa1x\xc6\xff\xff\xff\xff", "not well-formed", "bin32 of 4G bytes");
    REFUSED_BYTES("\x81\xa1x\xc9\xff\xff\xff\xff\x01", "not well-formed", "ext32 of 4G bytes");
    REFUSED_BYTES("\x81\xa1x\xc1", "not well-formed", "0xc1, never used");

    /* keys */
    REFUSED_BYTES("\x81\x01\xa4ping", "map key that is not a string", "integer key");
    REFUSED_BYTES("\x81\xc4\x02op\xa4ping", "map key that is not a string", "bin key");
    REFUSED_BYTES("\x81\xa1x\x81\xc0\xc0", "map key that is not a string", "nil key in a nested map");
    REFUSED_BYTES("\x82\xa2op\xa4ping\xa2op\xa4ping", "duplicate key", "duplicate op");
    REFUSED_BYTES("\x82\xa2op\xa4ping\xa1x\x82\xa1" "a\x01\xa1" "a\x02", "duplicate key", "nested duplicate");

    /* strings */
    REFUSED_BYTES("\x81\xa2op\xa4pi\xffg", "not valid UTF-8 or contains NUL", "invalid UTF-8 in op");
    REFUSED_BYTES("\x81\xa2op\xa4pi\0g", "not valid UTF-8 or contains NUL", "NUL in op");
    REFUSED_BYTES("\x82\xa2op\xa4ping\xa1x\xa3\xed\xa0\x80", "not valid UTF-8", "surrogate in an unknown value");
    REFUSED_BYTES("\x82\xa2op\xa4ping\xa2\xc0\x80\x01", "not valid UTF-8", "overlong NUL in a key");
    REFUSED_BYTES("\x82\xa2op\xa4ping\xa1x\xa2\xc3", "not well-formed", "str running past the end");

    /* types JSON cannot carry, even where nobody looks */
    REFUSED_BYTES("\x82\xa2op\xa4ping\xa1x\xc4\x01\x00", "bin or ext", "bin in an unknown key");
    REFUSED_BYTES("\x82\xa2op\xa4ping\xa1x\xd4\x01\x00", "bin or ext", "fixext1");
    REFUSED_BYTES("\x82\xa2op\xa4ping\xa1x\xd8\x01" "0123456789abcdef", "bin or ext", "fixext16");
    REFUSED_BYTES("\x82\xa2op\xa4ping\xa1x\xc7\x01\x05\x00", "bin or ext", "ext8");
    REFUSED_BYTES("\x82\xa2op\xa4ping\xa1x\xcb\x7f\xf8\0\0\0\0\0\0", "not finite", "float64 NaN");
    REFUSED_BYTES("\x82\xa2op\xa4ping\xa1x\xca\x7f\x80\0\0", "not finite", "float32 infinity");
    REFUSED_BYTES("\x82\xa2op\xa4ping\xa1x\xcf\x80\0\0\0\0\0\0\0", "beyond int64", "uint64 2^63");

    /* nesting: the top map is level 1; SB_INBOX_MAX_DEPTH levels pass, one more does not */
    for (int extra = 0; extra <= 1; extra++) {
        mp_init(&m);
        msgpack_pack_map(&m.pk, 2);
        mp_kv(&m, "op", "ping");
        mp_s(&m, "x");
        for (int i = 0; i < SB_INBOX_MAX_DEPTH - 1 + extra; i++)
            msgpack_pack_array(&m.pk, 1);
        msgpack_pack_nil(&m.pk);
        if (!extra) {
            is_int(dm(&m, &op, &err), 0, "%d levels accepted", SB_INBOX_MAX_DEPTH);
            sb_buf_cleanup(&m.b);
        } else {
            refused_mp(&m, SB_EPARSE, "bad_frame", "nested too deeply", "one level more");
        }
    }
}

/* ---- ownership ----------------------------------------------------------------------------------------------- */

TEST(ownership)
{
    sb_inbox_op_t op;
    sb_inbox_err_t err;
    static const char text[] =
        "{\"op\":\"send\",\"channel_id\":\"5\",\"to\":\"t\",\"body\":\"bb\",\"media_url\":\"mmm\",\"idempotency_key\":\"k\"}";
    char *frame = strdup(text);
    is_int(sb_inbox_decode(SB_INBOX_JSON, sb_str(frame, strlen(frame)), &op, &err), 0, "decoded");
    memset(frame, 'X', strlen(frame));
    free(frame);
    is_str(op.to.p, "t", "to outlives the frame");
    is_str(op.body.p, "bb", "body outlives the frame");
    is_str(op.media_url.p, "mmm", "media_url outlives the frame");
    is_str(op.idempotency_key.p, "k", "key outlives the frame");
    ok(op.to.p >= op.mem && op.idempotency_key.p < op.mem + 11, "all in the op's one allocation");
    ok(op.to.p[op.to.len] == '\0' && op.body.p[op.body.len] == '\0' && op.media_url.p[op.media_url.len] == '\0',
       "NUL-terminated");
    sb_inbox_op_cleanup(&op);
    sb_inbox_op_cleanup(&op);
    ok(zeroed(&op), "cleanup twice is harmless");

    /* a failed decode after a good one leaves nothing behind (the caller cleaned up; decode zeroes anyway) */
    is_int(dj("{\"op\":\"hello\",\"token\":\"" TOKEN "\"}", &op, &err), 0, "hello");
    sb_inbox_op_cleanup(&op);
    is_int(dj("{\"op\":\"hello\",\"token\":7}", &op, &err), SB_EINVAL, "then a bad one");
    ok(zeroed(&op), "zeroed");
    sb_inbox_op_cleanup(&op);
}

/* ---- encoding: JSON ---------------------------------------------------------------------------------------------- */

/* Encodes into a buffer that already holds "prefix|", to show the encoders append. */
#define PREFIX "prefix|"

TEST(encode_json)
{
    sb_buf_t b;
    sb_buf_init(&b);

    sb_buf_puts(&b, PREFIX);
    is_int(sb_inbox_encode_welcome(SB_INBOX_JSON, SB_STR("12"), 9007199254740991LL, &b), 0, "welcome");
    is_str(sb_buf_cstr(&b), PREFIX "{\"op\":\"welcome\",\"tenant_id\":\"12\",\"cursor\":9007199254740991}",
           "welcome, appended");
    b.len = 0;

    is_int(sb_inbox_encode_event(SB_INBOX_JSON, 0, SB_STR("message.created"),
                                 SB_STR("{\"id\": \"5\", \"to\": \"a b\\\" c\",\n \"media\": [ ],\t\"n\": 12345678901234567890123,"
                                        " \"r\": 1.50}"),
                                 &b),
           0, "event");
    is_str(sb_buf_cstr(&b),
           "{\"op\":\"event\",\"cursor\":0,\"type\":\"message.created\",\"data\":{\"id\":\"5\",\"to\":\"a b\\\" c\","
           "\"media\":[],\"n\":12345678901234567890123,\"r\":1.50}}",
           "data compacted; spaces inside strings kept; numbers keep their spelling");
    b.len = 0;

    is_int(sb_inbox_encode_accepted(SB_INBOX_JSON, SB_STR("k-1"), SB_STR("981"), &b), 0, "accepted");
    is_str(sb_buf_cstr(&b), "{\"op\":\"accepted\",\"idempotency_key\":\"k-1\",\"id\":\"981\"}", "accepted");
    b.len = 0;
    is_int(sb_inbox_encode_accepted(SB_INBOX_JSON, sb_str(NULL, 0), SB_STR("982"), &b), 0, "accepted without key");
    is_str(sb_buf_cstr(&b), "{\"op\":\"accepted\",\"idempotency_key\":null,\"id\":\"982\"}", "null key");
    b.len = 0;
    is_int(sb_inbox_encode_accepted(SB_INBOX_JSON, SB_STR(""), SB_STR("983"), &b), 0, "accepted, empty key");
    is_str(sb_buf_cstr(&b), "{\"op\":\"accepted\",\"idempotency_key\":\"\",\"id\":\"983\"}", "empty is not null");
    b.len = 0;

    sb_inbox_encode_pong(SB_INBOX_JSON, &b);
    is_str(sb_buf_cstr(&b), "{\"op\":\"pong\"}", "pong");
    b.len = 0;

    is_int(sb_inbox_encode_error(SB_INBOX_JSON, SB_STR("bad_field"),
                                 SB_STR("\"q\" \\ \n\r\t\x01\x7f caf\xc3\xa9 \xf0\x9f\x98\x80"), &b),
           0, "error");
    is_str(sb_buf_cstr(&b),
           "{\"op\":\"error\",\"code\":\"bad_field\",\"message\":\"\\\"q\\\" \\\\ \\n\\r\\t\\u0001\\u007f caf\xc3\xa9 "
           "\xf0\x9f\x98\x80\"}",
           "escaped; UTF-8 kept");
    json_t *j = json_loadb(b.p, b.len, JSON_REJECT_DUPLICATES, NULL);
    ok(j && json_is_object(j), "the error frame is valid JSON");
    json_decref(j);
    b.len = 0;

    /* refusals leave the buffer as it was */
    sb_buf_puts(&b, PREFIX);
    is_int(sb_inbox_encode_welcome(SB_INBOX_JSON, SB_STR("1"), 9007199254740992LL, &b), SB_ERANGE, "cursor 2^53");
    is_int(sb_inbox_encode_welcome(SB_INBOX_JSON, SB_STR("1"), -1, &b), SB_ERANGE, "cursor -1");
    is_int(sb_inbox_encode_welcome(SB_INBOX_JSON, SB_STR("\xff"), 1, &b), SB_EINVAL, "invalid UTF-8 tenant");
    is_int(sb_inbox_encode_event(SB_INBOX_JSON, INT64_MAX, SB_STR("t"), SB_STR("{}"), &b), SB_ERANGE,
           "event cursor too big");
    is_int(sb_inbox_encode_event(SB_INBOX_JSON, 1, SB_STR("t\xc3"), SB_STR("{}"), &b), SB_EINVAL, "bad type");
    static const char *const bad_data[] = {"",        "{",       "[]",           "\"x\"",           "5",
                                           "null",    "{} {}",   "{\"a\":1,}",   "{\"a\":\"\xff\"}", "{\"a\":1e400}",
                                           "{\"a\":1,\"a\":2}", "{\"a\":\"\\u0000\"}"};
    for (size_t i = 0; i < sizeof bad_data / sizeof bad_data[0]; i++)
        is_int(sb_inbox_encode_event(SB_INBOX_JSON, 1, SB_STR("t"), sb_str_cstr(bad_data[i]), &b), SB_EPARSE,
               "bad data #%zu refused", i);
    is_int(sb_inbox_encode_event(SB_INBOX_JSON, 1, SB_STR("t"), sb_str(NULL, 0), &b), SB_EPARSE, "no data");
    is_int(sb_inbox_encode_accepted(SB_INBOX_JSON, SB_STR("\xc0\x80"), SB_STR("1"), &b), SB_EINVAL, "bad key");
    is_int(sb_inbox_encode_accepted(SB_INBOX_JSON, SB_STR("k"), SB_STR("\xed\xa0\x80"), &b), SB_EINVAL, "bad id");
    is_int(sb_inbox_encode_error(SB_INBOX_JSON, SB_STR("c"), SB_STR("\x80"), &b), SB_EINVAL, "bad message");
    is_str(sb_buf_cstr(&b), PREFIX, "buffer untouched by every refusal");
    is_int((long long)b.len, strlen(PREFIX), "length too");
    sb_buf_cleanup(&b);
}

/* ---- encoding: MessagePack --------------------------------------------------------------------------------------- */

/* A msgpack-c object as a jansson value, to compare with json_equal (maps must have string keys). */
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
    case MSGPACK_OBJECT_FLOAT32:
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

/* Unpacks exactly one object from the whole buffer into a jansson value, or NULL. */
static json_t *unpack_json(const sb_buf_t *b)
{
    msgpack_unpacked u;
    size_t off = 0;
    json_t *j = NULL;
    msgpack_unpacked_init(&u);
    if (msgpack_unpack_next(&u, b->p, b->len, &off) == MSGPACK_UNPACK_SUCCESS && off == b->len)
        j = mp_to_json(&u.data);
    msgpack_unpacked_destroy(&u);
    return j;
}

/* The keys of the top-level map of a msgpack buffer, joined with ",". */
static void unpack_keys(const sb_buf_t *b, char *out, size_t cap)
{
    msgpack_unpacked u;
    size_t off = 0;
    out[0] = '\0';
    msgpack_unpacked_init(&u);
    if (msgpack_unpack_next(&u, b->p, b->len, &off) == MSGPACK_UNPACK_SUCCESS && u.data.type == MSGPACK_OBJECT_MAP) {
        for (uint32_t i = 0; i < u.data.via.map.size; i++) {
            const msgpack_object *k = &u.data.via.map.ptr[i].key;
            if (i)
                strncat(out, ",", cap - strlen(out) - 1);
            if (k->type == MSGPACK_OBJECT_STR)
                strncat(out, k->via.str.ptr, k->via.str.size < cap - strlen(out) - 1 ? k->via.str.size
                                                                                      : cap - strlen(out) - 1);
        }
    }
    msgpack_unpacked_destroy(&u);
}

/* Checks that the msgpack frame in b unpacks completely and equals the JSON text want; clears b. */
static void mp_is(sb_buf_t *b, const char *want, const char *keys, const char *what)
{
    json_t *got = unpack_json(b);
    json_t *w = json_loads(want, JSON_REJECT_DUPLICATES, NULL);
    ok(got && w && json_equal(got, w), "%s: unpacks to %s", what, want);
    char k[256];
    unpack_keys(b, k, sizeof k);
    is_str(k, keys, "%s: keys in order", what);
    json_decref(got);
    json_decref(w);
    b->len = 0;
}

TEST(encode_msgpack)
{
    sb_buf_t b;
    sb_buf_init(&b);

    is_int(sb_inbox_encode_welcome(SB_INBOX_MSGPACK, SB_STR("12"), 5, &b), 0, "welcome");
    static const char welcome[] = "\x83\xa2op\xa7welcome\xa9tenant_id\xa2" "12\xa6" "cursor\x05";
    ok(b.len == sizeof welcome - 1 && memcmp(b.p, welcome, b.len) == 0, "welcome byte for byte (fixint cursor)");
    mp_is(&b, "{\"op\":\"welcome\",\"tenant_id\":\"12\",\"cursor\":5}", "op,tenant_id,cursor", "welcome");

    is_int(sb_inbox_encode_welcome(SB_INBOX_MSGPACK, SB_STR(""), 9007199254740991LL, &b), 0, "welcome, big cursor");
    ok(b.len >= 9 && memcmp(b.p + b.len - 9, "\xcf\x00\x1f\xff\xff\xff\xff\xff\xff", 9) == 0,
       "2^53-1 as uint64");
    mp_is(&b, "{\"op\":\"welcome\",\"tenant_id\":\"\",\"cursor\":9007199254740991}", "op,tenant_id,cursor",
          "welcome 2^53-1");

    is_int(sb_inbox_encode_accepted(SB_INBOX_MSGPACK, sb_str(NULL, 0), SB_STR("9"), &b), 0, "accepted, null key");
    mp_is(&b, "{\"op\":\"accepted\",\"idempotency_key\":null,\"id\":\"9\"}", "op,idempotency_key,id", "accepted");
    is_int(sb_inbox_encode_accepted(SB_INBOX_MSGPACK, SB_STR("\xc3\xa9"), SB_STR("9"), &b), 0, "accepted, key");
    mp_is(&b, "{\"op\":\"accepted\",\"idempotency_key\":\"\xc3\xa9\",\"id\":\"9\"}", "op,idempotency_key,id",
          "accepted with key");

    sb_inbox_encode_pong(SB_INBOX_MSGPACK, &b);
    static const char pong[] = "\x81\xa2op\xa4pong";
    ok(b.len == sizeof pong - 1 && memcmp(b.p, pong, b.len) == 0, "pong byte for byte");
    mp_is(&b, "{\"op\":\"pong\"}", "op", "pong");

    is_int(sb_inbox_encode_error(SB_INBOX_MSGPACK, SB_STR("bad_frame"), SB_STR("line\nbreak"), &b), 0, "error");
    mp_is(&b, "{\"op\":\"error\",\"code\":\"bad_frame\",\"message\":\"line\\nbreak\"}", "op,code,message", "error");

    /* the event: nested data of every JSON type, keys kept in text order */
    static const char data[] =
        "{\"id\": \"981\", \"direction\": \"in\", \"body\": \"Ol\\u00e1 \\ud83d\\ude00 \xe2\x82\xac\","
        " \"media\": [{\"url\": \"https://e.x/1\", \"size\": 1024}, {\"url\": null}],"
        " \"n\": [0, -1, 127, 128, -33, 65536, 9223372036854775807, -9223372036854775808],"
        " \"r\": [1.5, -0.25, 1e300, 1.0], \"b\": [true, false, null], \"empty\": {}, \"deep\": {\"a\": {\"b\": [[[]]]}},"
        " \"created_at\": \"2024-05-01T12:00:00Z\"}";
    is_int(sb_inbox_encode_event(SB_INBOX_MSGPACK, 42, SB_STR("message.created"), SB_STR(data), &b), 0, "event");
    json_t *got = unpack_json(&b);
    json_t *want_data = json_loads(data, 0, NULL);
    ok(got != NULL, "event unpacks completely");
    is_int((long long)json_object_size(got), 4, "four keys");
    is_str(json_string_value(json_object_get(got, "op")), "event", "op");
    is_int(json_integer_value(json_object_get(got, "cursor")), 42, "cursor");
    is_str(json_string_value(json_object_get(got, "type")), "message.created", "type");
    ok(json_equal(json_object_get(got, "data"), want_data), "data equals the JSON it came from");
    ok(json_is_real(json_array_get(json_object_get(json_object_get(got, "data"), "r"), 3)), "1.0 stays a float");
    char keys[256];
    unpack_keys(&b, keys, sizeof keys);
    is_str(keys, "op,cursor,type,data", "frame keys in order");
    json_decref(got);
    json_decref(want_data);

    /* key order of the data map, and the smallest encodings, checked on the raw unpacked object */
    msgpack_unpacked u;
    size_t off = 0;
    msgpack_unpacked_init(&u);
    is_int(msgpack_unpack_next(&u, b.p, b.len, &off), MSGPACK_UNPACK_SUCCESS, "msgpack-c unpacks it");
    const msgpack_object *d = &u.data.via.map.ptr[3].val;
    ok(d->type == MSGPACK_OBJECT_MAP && d->via.map.size == 10, "data is a map of 10");
    static const char *const order[] = {"id", "direction", "body", "media", "n", "r", "b", "empty", "deep",
                                        "created_at"};
    bool in_order = d->type == MSGPACK_OBJECT_MAP && d->via.map.size == 10;
    for (uint32_t i = 0; in_order && i < 10; i++)
        in_order = d->via.map.ptr[i].key.via.str.size == strlen(order[i]) &&
                   memcmp(d->via.map.ptr[i].key.via.str.ptr, order[i], strlen(order[i])) == 0;
    ok(in_order, "data keys in text order");
    const msgpack_object *body = &d->via.map.ptr[2].val;
    ok(body->type == MSGPACK_OBJECT_STR && body->via.str.size == 13 &&
           memcmp(body->via.str.ptr, "Ol\xc3\xa1 \xf0\x9f\x98\x80 \xe2\x82\xac", 13) == 0,
       "escapes decoded to UTF-8 in str");
    const msgpack_object *r = &d->via.map.ptr[5].val;
    ok(r->type == MSGPACK_OBJECT_ARRAY && r->via.array.ptr[0].type == MSGPACK_OBJECT_FLOAT64 &&
           r->via.array.ptr[0].via.f64 == 1.5,
       "reals as float64");
    msgpack_unpacked_destroy(&u);
    ok(memmem(b.p, b.len, "\xa1n\x98\x00\xff\x7f\xcc\x80\xd0\xdf\xce\x00\x01\x00\x00", 15) != NULL,
       "integers in their smallest forms");
    b.len = 0;

    /* what msgpack cannot carry, and what no format accepts */
    sb_buf_puts(&b, PREFIX);
    is_int(sb_inbox_encode_event(SB_INBOX_MSGPACK, 1, SB_STR("t"), SB_STR("{\"n\":9223372036854775808}"), &b),
           SB_EPARSE, "integer beyond int64 refused for msgpack");
    is_int(sb_inbox_encode_event(SB_INBOX_MSGPACK, 1, SB_STR("t"), SB_STR("[1]"), &b), SB_EPARSE, "array data");
    is_int(sb_inbox_encode_event(SB_INBOX_MSGPACK, 1, SB_STR("t"), SB_STR("{\"a\":tru}"), &b), SB_EPARSE, "bad JSON");
    is_int(sb_inbox_encode_event(SB_INBOX_MSGPACK, -1, SB_STR("t"), SB_STR("{}"), &b), SB_ERANGE, "cursor -1");
    is_int(sb_inbox_encode_welcome(SB_INBOX_MSGPACK, SB_STR("\xf8"), 1, &b), SB_EINVAL, "bad tenant");
    is_str(sb_buf_cstr(&b), PREFIX, "buffer untouched");
    b.len = 0;

    /* the same integer beyond int64 is fine in JSON, where the text is copied */
    is_int(sb_inbox_encode_event(SB_INBOX_JSON, 1, SB_STR("t"), SB_STR("{\"n\":9223372036854775808}"), &b), 0,
           "JSON keeps it");
    sb_buf_cleanup(&b);
}

/* Every server frame, encoded in both formats, carries the same map. */
TEST(server_frames_agree)
{
    sb_buf_t j, m;
    sb_buf_init(&j);
    sb_buf_init(&m);
    for (int f = 0; f < 6; f++) {
        for (int fmt = 0; fmt < 2; fmt++) {
            sb_buf_t *b = fmt ? &m : &j;
            sb_inbox_fmt_t x = fmt ? SB_INBOX_MSGPACK : SB_INBOX_JSON;
            switch (f) {
            case 0:
                sb_inbox_encode_welcome(x, SB_STR("t-\xe2\x9c\x93"), 123456, b);
                break;
            case 1:
                sb_inbox_encode_event(x, 7, SB_STR("message.status"),
                                      SB_STR("{ \"id\" : \"1\", \"status\" : \"failed\", \"error\" : {\"code\": 30003,"
                                             " \"message\": \"Unreachable \\\"handset\\\"\"}, \"x\": [1.25, null] }"),
                                      b);
                break;
            case 2:
                sb_inbox_encode_accepted(x, SB_STR("k"), SB_STR("5"), b);
                break;
            case 3:
                sb_inbox_encode_accepted(x, sb_str(NULL, 0), SB_STR("6"), b);
                break;
            case 4:
                sb_inbox_encode_pong(x, b);
                break;
            default:
                sb_inbox_encode_error(x, SB_STR("unknown_op"), SB_STR("tab\there \x01 \xf0\x9f\x92\xa9"), b);
                break;
            }
        }
        json_t *a = json_loadb(j.p, j.len, JSON_REJECT_DUPLICATES, NULL);
        json_t *c = unpack_json(&m);
        ok(a && c && json_equal(a, c), "frame %d: JSON and msgpack carry the same map", f);
        ok(memchr(j.p, ' ', j.len) == NULL || f == 1 || f == 5, "frame %d: compact", f);
        json_decref(a);
        json_decref(c);
        j.len = m.len = 0;
    }
    sb_buf_cleanup(&j);
    sb_buf_cleanup(&m);
}

/* ---- client ops across formats ------------------------------------------------------------------------------- */

/* Writes a client op the way a client would, in fmt; channel_id as a string when id_as_str. */
static void write_op(sb_inbox_fmt_t fmt, const sb_inbox_op_t *op, bool id_as_str, sb_buf_t *out)
{
    const char *keys[6];
    sb_str_t vals[6];
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
    }
    bool has_int = op->kind == SB_INBOX_HELLO ? op->has_resume_after : op->kind == SB_INBOX_SEND;
    const char *int_key = op->kind == SB_INBOX_HELLO ? "resume_after" : "channel_id";
    int64_t int_val = op->kind == SB_INBOX_HELLO ? op->resume_after : op->channel_id;

    if (fmt == SB_INBOX_JSON) {
        sb_buf_printf(out, "{\"op\":\"%s\"", name);
        for (size_t i = 0; i < n; i++) {
            sb_buf_printf(out, ",\"%s\":\"", keys[i]);
            sb_buf_json_escape(out, vals[i]);
            sb_buf_puts(out, "\"");
        }
        if (has_int && id_as_str && op->kind == SB_INBOX_SEND)
            sb_buf_printf(out, ",\"%s\":\"%s\"", int_key, id);
        else if (has_int)
            sb_buf_printf(out, ",\"%s\":%" PRId64, int_key, int_val);
        sb_buf_puts(out, "}");
        return;
    }
    msgpack_packer pk;
    msgpack_packer_init(&pk, out, mp_write);
    msgpack_pack_map(&pk, 1 + n + has_int);
    msgpack_pack_str_with_body(&pk, "op", 2);
    msgpack_pack_str_with_body(&pk, name, strlen(name));
    for (size_t i = 0; i < n; i++) {
        msgpack_pack_str_with_body(&pk, keys[i], strlen(keys[i]));
        msgpack_pack_str_with_body(&pk, vals[i].p, vals[i].len);
    }
    if (has_int) {
        msgpack_pack_str_with_body(&pk, int_key, strlen(int_key));
        if (id_as_str && op->kind == SB_INBOX_SEND)
            msgpack_pack_str_with_body(&pk, id, strlen(id));
        else
            msgpack_pack_int64(&pk, int_val);
    }
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
           str_same(a->idempotency_key, b->idempotency_key);
}

TEST(round_trips)
{
    static const char *const frames[] = {
        "{\"op\":\"hello\",\"token\":\"" TOKEN "\"}",
        "{\"op\":\"hello\",\"token\":\"\xf0\x9f\x94\x91\",\"resume_after\":0}",
        "{\"op\":\"hello\",\"token\":\"a\\\"b\\\\c\\n\",\"resume_after\":9007199254740991}",
        "{\"op\":\"send\",\"channel_id\":\"1\",\"to\":\"+1\",\"body\":\"\"  ,\"media_url\":\"u\"}",
        "{\"op\":\"send\",\"channel_id\":9223372036854775807,\"to\":\"\xe2\x98\x83\",\"body\":\"\\u0001\\u001f\\t\","
        "\"idempotency_key\":\"\xc3\xa9\"}",
        "{\"op\":\"ping\",\"z\":[1,{}]}",
    };
    for (size_t i = 0; i < sizeof frames / sizeof frames[0]; i++) {
        sb_inbox_op_t a, c;
        sb_inbox_err_t err;
        is_int(dj(frames[i], &a, &err), 0, "frame %zu decodes", i);
        for (int fmt = 0; fmt < 2; fmt++) {
            for (int as_str = 0; as_str < 2; as_str++) {
                sb_buf_t b;
                sb_buf_init(&b);
                sb_inbox_fmt_t x = fmt ? SB_INBOX_MSGPACK : SB_INBOX_JSON;
                write_op(x, &a, as_str, &b);
                is_int(sb_inbox_decode(x, sb_str(b.p, b.len), &c, &err), 0, "frame %zu written as %s%s decodes", i,
                       fmt ? "msgpack" : "JSON", as_str ? " (id as string)" : "");
                ok(op_same(&a, &c), "frame %zu: the same op", i);
                sb_inbox_op_cleanup(&c);
                sb_buf_cleanup(&b);
            }
        }
        sb_inbox_op_cleanup(&a);
    }

    /* an error frame built from a refusal is itself well-formed in both formats */
    sb_inbox_op_t op;
    sb_inbox_err_t err;
    is_int(dj("{\"op\":\"hello\",\"token\":\"" TOKEN "\",\"resume_after\":1.5}", &op, &err), SB_EINVAL, "refusal");
    for (int fmt = 0; fmt < 2; fmt++) {
        sb_buf_t b;
        sb_buf_init(&b);
        is_int(sb_inbox_encode_error(fmt ? SB_INBOX_MSGPACK : SB_INBOX_JSON, sb_str_cstr(err.code),
                                     sb_str_cstr(err.message), &b),
               0, "error frame from err (%s)", fmt ? "msgpack" : "JSON");
        json_t *j = fmt ? unpack_json(&b) : json_loadb(b.p, b.len, 0, NULL);
        is_str(json_string_value(json_object_get(j, "code")), "bad_field", "code carried");
        is_str(json_string_value(json_object_get(j, "message")), err.message, "message carried");
        json_decref(j);
        sb_buf_cleanup(&b);
    }
}

int main(void)
{
    RUN(hello_json);
    RUN(hello_json_refused);
    RUN(hello_msgpack);
    RUN(send_json);
    RUN(send_json_refused);
    RUN(send_msgpack);
    RUN(ping_and_op);
    RUN(json_frames_refused);
    RUN(msgpack_frames_refused);
    RUN(ownership);
    RUN(encode_json);
    RUN(encode_msgpack);
    RUN(server_frames_agree);
    RUN(round_trips);
    return tap_done();
}
