/* The live inbox wire protocol: client frames into sb_inbox_op_t, server frames into bytes (see inbox.h).
 *
 * Both formats meet in a jansson tree. A JSON frame is parsed by jansson; a MessagePack frame is read here by a
 * small strict reader that builds the same tree, refusing what JSON could not carry. The reader trusts no declared
 * length: a count larger than the bytes left is refused before anything is allocated, and every value it builds
 * was read from at least one byte of input, so memory stays proportional to the frame. One function then reads the
 * op and its fields from the tree, so both formats share every rule and every error message.
 *
 * Encoding goes through a tiny writer with the same calls for both formats (map, key, string, integer, null), so
 * a frame's shape is written once. */
#include "proto/inbox.h"

#include "proto/err.h"
#include "proto/line.h"
#include "proto/mem.h"
#include "proto/rfc3339.h"

#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <mbedtls/platform_util.h>
#include <msgpack.h>
#include <stdio.h>
#include <string.h>

/* ---- errors ---------------------------------------------------------------------------------------------------- */

static int fail(sb_inbox_err_t *err, int rc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Fills err (if any) with the code that goes with rc and a formatted message; returns rc. */
static int fail(sb_inbox_err_t *err, int rc, const char *fmt, ...)
{
    if (!err)
        return rc;
    err->code = rc == SB_EPARSE ? "bad_frame" : rc == SB_ENOENT ? "unknown_op" : "bad_field";
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    return rc;
}

/* ---- MessagePack reader ---------------------------------------------------------------------------------------- */

typedef struct mp_in {
    const unsigned char *p, *end;
} mp_in_t;

/* Why a MessagePack frame was refused; each has its message in mp_reason. */
enum mp_err { MP_OK, MP_MALFORMED, MP_BINEXT, MP_STR, MP_KEY, MP_DUP, MP_INT, MP_FLOAT, MP_DEPTH };

static const char *const mp_reason[] = {
    [MP_MALFORMED] = "frame is not well-formed MessagePack",
    [MP_BINEXT] = "frame holds a MessagePack bin or ext value; strings must be str",
    [MP_STR] = "frame holds a string that is not valid UTF-8 or contains NUL",
    [MP_KEY] = "frame holds a map key that is not a string",
    [MP_DUP] = "frame holds a duplicate key",
    [MP_INT] = "frame holds an integer beyond int64",
    [MP_FLOAT] = "frame holds a float that is not finite",
    [MP_DEPTH] = "frame is nested too deeply",
};

/* Takes n bytes from in: true and *p pointing at them, or false if fewer are left. */
static bool mp_take(mp_in_t *in, size_t n, const unsigned char **p)
{
    if ((size_t)(in->end - in->p) < n)
        return false;
    *p = in->p;
    in->p += n;
    return true;
}

/* Reads an n-byte big-endian unsigned integer (n is 1, 2, 4 or 8). */
static bool mp_uint(mp_in_t *in, size_t n, uint64_t *v)
{
    const unsigned char *p;
    if (!mp_take(in, n, &p))
        return false;
    *v = 0;
    for (size_t i = 0; i < n; i++)
        *v = *v << 8 | p[i];
    return true;
}

static int mp_value(mp_in_t *in, int depth, json_t **out);

/* Reads a str of len bytes (the header already read) into a new jansson string. */
static int mp_str(mp_in_t *in, uint64_t len, json_t **out)
{
    const unsigned char *p;
    if (len > (uint64_t)(in->end - in->p) || !mp_take(in, (size_t)len, &p))
        return MP_MALFORMED;
    if (!sb_utf8_valid((const char *)p, (size_t)len) || memchr(p, '\0', (size_t)len))
        return MP_STR;
    *out = json_stringn_nocheck((const char *)p, (size_t)len);
    return *out ? MP_OK : MP_MALFORMED;
}

/* Reads n elements into a new array; each needs at least one byte, so a count beyond the input is refused unread. */
static int mp_array(mp_in_t *in, uint64_t n, int depth, json_t **out)
{
    if (n > (uint64_t)(in->end - in->p))
        return MP_MALFORMED;
    if (depth > SB_INBOX_MAX_DEPTH)
        return MP_DEPTH;
    json_t *a = json_array();
    SB_BUG_ON(!a);
    for (uint64_t i = 0; i < n; i++) {
        json_t *v = NULL;
        int rc = mp_value(in, depth + 1, &v);
        if (rc != MP_OK) {
            json_decref(a);
            return rc;
        }
        json_array_append_new(a, v);
    }
    *out = a;
    return MP_OK;
}

/* Reads n key/value pairs into a new object; keys must be str, and unique. */
static int mp_map(mp_in_t *in, uint64_t n, int depth, json_t **out)
{
    if (n > (uint64_t)(in->end - in->p) / 2)
        return MP_MALFORMED;
    if (depth > SB_INBOX_MAX_DEPTH)
        return MP_DEPTH;
    json_t *o = json_object();
    SB_BUG_ON(!o);
    int rc = MP_OK;
    for (uint64_t i = 0; i < n; i++) {
        json_t *k = NULL, *v = NULL;
        const unsigned char *t;
        uint64_t klen;
        if (!mp_take(in, 1, &t)) {
            rc = MP_MALFORMED;
            break;
        }
        if (*t >= 0xa0 && *t <= 0xbf) {
            klen = *t & 0x1f;
        } else if (*t >= 0xd9 && *t <= 0xdb) {
            if (!mp_uint(in, (size_t)1 << (*t - 0xd9), &klen)) {
                rc = MP_MALFORMED;
                break;
            }
        } else {
            rc = MP_KEY;
            break;
        }
        if ((rc = mp_str(in, klen, &k)) != MP_OK)
            break;
        const char *key = json_string_value(k);
        size_t key_len = json_string_length(k);
        if (json_object_getn(o, key, key_len)) {
            json_decref(k);
            rc = MP_DUP;
            break;
        }
        if ((rc = mp_value(in, depth + 1, &v)) != MP_OK) {
            json_decref(k);
            break;
        }
        json_object_setn_new_nocheck(o, key, key_len, v);
        json_decref(k);
    }
    if (rc != MP_OK) {
        json_decref(o);
        return rc;
    }
    *out = o;
    return MP_OK;
}

/* Reads one value of any type into a new jansson value at nesting depth (the top level is 1). */
static int mp_value(mp_in_t *in, int depth, json_t **out)
{
    const unsigned char *t, *p;
    uint64_t u;

    if (!mp_take(in, 1, &t))
        return MP_MALFORMED;
    unsigned c = *t;
    if (c <= 0x7f) {
        *out = json_integer(c);
        return MP_OK;
    }
    if (c >= 0xe0) {
        *out = json_integer((int)c - 256);
        return MP_OK;
    }
    if (c >= 0x80 && c <= 0x8f)
        return mp_map(in, c & 0x0f, depth, out);
    if (c >= 0x90 && c <= 0x9f)
        return mp_array(in, c & 0x0f, depth, out);
    if (c >= 0xa0 && c <= 0xbf)
        return mp_str(in, c & 0x1f, out);

    switch (c) {
    case 0xc0:
        *out = json_null();
        return MP_OK;
    case 0xc2:
    case 0xc3:
        *out = json_boolean(c == 0xc3);
        return MP_OK;
    case 0xc4: /* bin 8, 16, 32: skipped over only to report the right error */
    case 0xc5:
    case 0xc6:
        if (!mp_uint(in, (size_t)1 << (c - 0xc4), &u) || u > (uint64_t)(in->end - in->p))
            return MP_MALFORMED;
        return MP_BINEXT;
    case 0xc7: /* ext 8, 16, 32: length, type, data */
    case 0xc8:
    case 0xc9:
        if (!mp_uint(in, (size_t)1 << (c - 0xc7), &u) || u >= (uint64_t)(in->end - in->p))
            return MP_MALFORMED;
        return MP_BINEXT;
    case 0xd4: /* fixext 1, 2, 4, 8, 16 */
    case 0xd5:
    case 0xd6:
    case 0xd7:
    case 0xd8:
        if (!mp_take(in, 1 + ((size_t)1 << (c - 0xd4)), &p))
            return MP_MALFORMED;
        return MP_BINEXT;
    case 0xca: {
        uint32_t bits;
        float f;
        if (!mp_uint(in, 4, &u))
            return MP_MALFORMED;
        bits = (uint32_t)u;
        memcpy(&f, &bits, sizeof f);
        if (!isfinite(f))
            return MP_FLOAT;
        *out = json_real((double)f);
        return MP_OK;
    }
    case 0xcb: {
        double d;
        if (!mp_uint(in, 8, &u))
            return MP_MALFORMED;
        memcpy(&d, &u, sizeof d);
        if (!isfinite(d))
            return MP_FLOAT;
        *out = json_real(d);
        return MP_OK;
    }
    case 0xcc: /* uint 8, 16, 32, 64 */
    case 0xcd:
    case 0xce:
    case 0xcf:
        if (!mp_uint(in, (size_t)1 << (c - 0xcc), &u))
            return MP_MALFORMED;
        if (u > INT64_MAX)
            return MP_INT;
        *out = json_integer((json_int_t)u);
        return MP_OK;
    case 0xd0: /* int 8, 16, 32, 64 */
    case 0xd1:
    case 0xd2:
    case 0xd3: {
        size_t n = (size_t)1 << (c - 0xd0);
        if (!mp_uint(in, n, &u))
            return MP_MALFORMED;
        int64_t v;
        if (n < 8 && (u >> (8 * n - 1)) != 0) /* negative: extend the sign */
            u |= ~(uint64_t)0 << (8 * n);
        memcpy(&v, &u, sizeof v);
        *out = json_integer(v);
        return MP_OK;
    }
    case 0xd9: /* str 8, 16, 32 */
    case 0xda:
    case 0xdb:
        if (!mp_uint(in, (size_t)1 << (c - 0xd9), &u))
            return MP_MALFORMED;
        return mp_str(in, u, out);
    case 0xdc: /* array 16, 32 */
    case 0xdd:
        if (!mp_uint(in, c == 0xdc ? 2 : 4, &u))
            return MP_MALFORMED;
        return mp_array(in, u, depth, out);
    case 0xde: /* map 16, 32 */
    case 0xdf:
        if (!mp_uint(in, c == 0xde ? 2 : 4, &u))
            return MP_MALFORMED;
        return mp_map(in, u, depth, out);
    default: /* 0xc1, never used */
        return MP_MALFORMED;
    }
}

/* Parses a whole MessagePack frame, which must be one map and nothing more, into a new jansson object. */
static int mp_frame(sb_str_t frame, json_t **out, sb_inbox_err_t *err)
{
    unsigned c = frame.len ? (unsigned char)frame.p[0] : 0;
    if (!((c >= 0x80 && c <= 0x8f) || c == 0xde || c == 0xdf)) /* also an empty frame, whose p may be NULL */
        return fail(err, SB_EPARSE, "frame must be a MessagePack map");

    mp_in_t in = {(const unsigned char *)frame.p, (const unsigned char *)frame.p + frame.len};
    int rc = mp_value(&in, 1, out);
    if (rc != MP_OK)
        return fail(err, SB_EPARSE, "%s", mp_reason[rc]);
    if (in.p != in.end) {
        json_decref(*out);
        *out = NULL;
        return fail(err, SB_EPARSE, "frame has bytes after the MessagePack map");
    }
    return 0;
}

/* Parses a whole JSON frame into a new jansson object. jansson's messages quote the input, so they are replaced by
 * our own, from its error code. */
static int json_frame(sb_str_t frame, json_t **out, sb_inbox_err_t *err)
{
    json_error_t je;
    *out = json_loadb(frame.len ? frame.p : "", frame.len, JSON_REJECT_DUPLICATES, &je);
    if (!*out) {
        switch (json_error_code(&je)) {
        case json_error_invalid_utf8:
            return fail(err, SB_EPARSE, "frame is not valid UTF-8");
        case json_error_null_character:
        case json_error_null_byte_in_key:
            return fail(err, SB_EPARSE, "frame holds a string that contains NUL");
        case json_error_duplicate_key:
            return fail(err, SB_EPARSE, "frame holds a duplicate key");
        case json_error_numeric_overflow:
            return fail(err, SB_EPARSE, "frame holds a number out of range");
        case json_error_stack_overflow:
            return fail(err, SB_EPARSE, "frame is nested too deeply");
        case json_error_end_of_input_expected:
            return fail(err, SB_EPARSE, "frame has bytes after the JSON object");
        default:
            return fail(err, SB_EPARSE, "frame is not a valid JSON object (error at byte %d)", je.position);
        }
    }
    if (!json_is_object(*out)) {
        json_decref(*out);
        *out = NULL;
        return fail(err, SB_EPARSE, "frame must be a JSON object");
    }
    return 0;
}

/* ---- fields ------------------------------------------------------------------------------------------------------ */

/* Reads an optional (required == false) or required string field; null counts as absent. Absent: *s = {NULL, 0}.
 * Strings in the tree are already valid UTF-8 without NUL (jansson, or mp_str). */
static int get_str(const json_t *obj, const char *name, bool required, sb_str_t *s, sb_inbox_err_t *err)
{
    const json_t *v = json_object_get(obj, name);
    *s = sb_str(NULL, 0);
    if (!v || json_is_null(v))
        return required ? fail(err, SB_EINVAL, "%s is required", name) : 0;
    if (!json_is_string(v))
        return fail(err, SB_EINVAL, "%s must be a string", name);
    *s = sb_str(json_string_value(v), json_string_length(v));
    return 0;
}

/* "channel_id": an integer, or a string of decimal digits without sign or leading zero, in 1..INT64_MAX. */
static int get_channel_id(const json_t *obj, int64_t *id, sb_inbox_err_t *err)
{
    const json_t *v = json_object_get(obj, "channel_id");
    if (!v || json_is_null(v))
        return fail(err, SB_EINVAL, "channel_id is required");
    if (json_is_integer(v)) {
        if (json_integer_value(v) < 1)
            return fail(err, SB_EINVAL, "channel_id must be positive");
        *id = json_integer_value(v);
        return 0;
    }
    if (!json_is_string(v))
        return fail(err, SB_EINVAL, "channel_id must be a string of digits or an integer");
    sb_str_t s = sb_str(json_string_value(v), json_string_length(v));
    long long n;
    int rc = s.len && s.p[0] >= '1' && s.p[0] <= '9' ? sb_str_to_ll(s, 1, INT64_MAX, &n) : SB_EPARSE;
    if (rc == SB_EPARSE)
        return fail(err, SB_EINVAL, "channel_id must be a decimal number without sign or leading zeros");
    if (rc != 0)
        return fail(err, SB_EINVAL, "channel_id is out of range");
    *id = n;
    return 0;
}

/* Copies the present strings of src (p == NULL: absent) into one allocation, NUL-terminated, and points dst at
 * the copies. The first string is the token when there is one, so cleanup knows where to wipe. */
static char *own_strings(const sb_str_t *src, sb_str_t *const *dst, size_t n)
{
    size_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += src[i].p ? src[i].len + 1 : 0;
    if (total == 0)
        return NULL;
    char *mem = sb_malloc(total), *w = mem;
    for (size_t i = 0; i < n; i++) {
        if (!src[i].p)
            continue;
        memcpy(w, src[i].p, src[i].len);
        w[src[i].len] = '\0';
        *dst[i] = sb_str(w, src[i].len);
        w += src[i].len + 1;
    }
    return mem;
}

static int decode_hello(const json_t *obj, sb_inbox_op_t *op, sb_inbox_err_t *err)
{
    sb_str_t token;
    int rc = get_str(obj, "token", true, &token, err);
    if (rc)
        return rc;
    if (token.len == 0)
        return fail(err, SB_EINVAL, "token must not be empty");
    if (token.len > SB_INBOX_MAX_TOKEN)
        return fail(err, SB_EINVAL, "token is longer than %d bytes", SB_INBOX_MAX_TOKEN);

    const json_t *v = json_object_get(obj, "resume_after");
    if (v && !json_is_null(v)) {
        if (!json_is_integer(v))
            return fail(err, SB_EINVAL, "resume_after must be an integer");
        if (json_integer_value(v) < 0 || json_integer_value(v) > SB_INBOX_MAX_CURSOR)
            return fail(err, SB_EINVAL, "resume_after must be between 0 and %lld", (long long)SB_INBOX_MAX_CURSOR);
        op->has_resume_after = true;
        op->resume_after = json_integer_value(v);
    }
    sb_str_t *const dst[] = {&op->token};
    op->mem = own_strings(&token, dst, 1);
    return 0;
}

static int decode_send(const json_t *obj, sb_inbox_op_t *op, sb_inbox_err_t *err)
{
    enum { TO, BODY, MEDIA_URL, KEY, TAG, N };
    sb_str_t s[N];
    int rc;

    if ((rc = get_channel_id(obj, &op->channel_id, err)) != 0)
        return rc;
    if ((rc = get_str(obj, "to", true, &s[TO], err)) != 0)
        return rc;
    if (s[TO].len == 0)
        return fail(err, SB_EINVAL, "to must not be empty");
    if ((rc = get_str(obj, "body", false, &s[BODY], err)) != 0 ||
        (rc = get_str(obj, "media_url", false, &s[MEDIA_URL], err)) != 0 ||
        (rc = get_str(obj, "idempotency_key", false, &s[KEY], err)) != 0 ||
        (rc = get_str(obj, "tag", false, &s[TAG], err)) != 0)
        return rc;
    if (s[KEY].p && (s[KEY].len == 0 || s[KEY].len > SB_INBOX_MAX_IDEMPOTENCY_KEY))
        return fail(err, SB_EINVAL, "idempotency_key must be 1 to %d bytes long", SB_INBOX_MAX_IDEMPOTENCY_KEY);
    if (s[BODY].len == 0 && s[MEDIA_URL].len == 0)
        return fail(err, SB_EINVAL, "body or media_url is required");
    static const char *const priorities[] = {"interactive", "normal", "bulk"};
    sb_str_t prio;
    if ((rc = get_str(obj, "priority", false, &prio, err)) != 0)
        return rc;
    op->priority = -1;
    for (int i = 0; i < 3 && op->priority < 0; i++)
        if (!prio.p || sb_str_eq_cstr(prio, priorities[i]))
            op->priority = prio.p ? i : 0;
    if (op->priority < 0)
        return fail(err, SB_EINVAL, "priority must be interactive, normal or bulk");
    sb_str_t at;
    if ((rc = get_str(obj, "send_at", false, &at, err)) != 0)
        return rc;
    op->send_at_ms = 0;
    if (at.p && sb_rfc3339_parse(at, &op->send_at_ms) < 0)
        return fail(err, SB_EINVAL, "send_at must be an RFC 3339 time with its offset, such as 2026-12-05T14:30:00Z");

    sb_str_t *const dst[N] = {&op->to, &op->body, &op->media_url, &op->idempotency_key, &op->tag};
    op->mem = own_strings(s, dst, N);
    return 0;
}

int sb_inbox_decode(sb_inbox_fmt_t fmt, sb_str_t frame, sb_inbox_op_t *op, sb_inbox_err_t *err)
{
    json_t *obj = NULL;
    int rc;

    memset(op, 0, sizeof *op);
    rc = fmt == SB_INBOX_MSGPACK ? mp_frame(frame, &obj, err) : json_frame(frame, &obj, err);
    if (rc)
        return rc;

    const json_t *v = json_object_get(obj, "op");
    if (!v || json_is_null(v)) {
        rc = fail(err, SB_EINVAL, "op is required");
        goto out;
    }
    if (!json_is_string(v)) {
        rc = fail(err, SB_EINVAL, "op must be a string");
        goto out;
    }
    sb_str_t name = sb_str(json_string_value(v), json_string_length(v));
    if (sb_str_eq_cstr(name, "hello")) {
        rc = decode_hello(obj, op, err);
        op->kind = SB_INBOX_HELLO;
    } else if (sb_str_eq_cstr(name, "send")) {
        rc = decode_send(obj, op, err);
        op->kind = SB_INBOX_SEND;
    } else if (sb_str_eq_cstr(name, "ping")) {
        op->kind = SB_INBOX_PING;
    } else {
        rc = fail(err, SB_ENOENT, "op must be one of hello, send, ping");
    }
out:
    json_decref(obj);
    if (rc)
        sb_inbox_op_cleanup(op);
    return rc;
}

void sb_inbox_op_cleanup(sb_inbox_op_t *op)
{
    if (op->mem && op->token.p)
        mbedtls_platform_zeroize(op->mem, op->token.len); /* the token is the first string in mem */
    sb_free(op->mem);
    memset(op, 0, sizeof *op);
}

/* ---- encoding ---------------------------------------------------------------------------------------------------- */

/* One frame being written: a map of known size whose keys and values come in order. */
typedef struct enc {
    sb_inbox_fmt_t fmt;
    sb_buf_t *out;
    msgpack_packer pk;
    bool first; /* JSON: no key written yet, so no comma before the next */
} enc_t;

static int pk_write(void *data, const char *buf, size_t len)
{
    sb_buf_append(data, buf, len);
    return 0;
}

/* Starts a map of nkeys entries whose first entry is "op": name. */
static void enc_begin(enc_t *e, sb_inbox_fmt_t fmt, sb_buf_t *out, size_t nkeys, const char *name);

static void enc_key(enc_t *e, const char *key)
{
    if (e->fmt == SB_INBOX_MSGPACK) {
        msgpack_pack_str_with_body(&e->pk, key, strlen(key));
        return;
    }
    if (!e->first)
        sb_buf_append(e->out, ",", 1);
    e->first = false;
    sb_buf_append(e->out, "\"", 1);
    sb_buf_puts(e->out, key); /* our own key names need no escaping */
    sb_buf_append(e->out, "\":", 2);
}

static void enc_str(enc_t *e, sb_str_t s)
{
    if (e->fmt == SB_INBOX_MSGPACK) {
        msgpack_pack_str_with_body(&e->pk, s.p, s.len);
        return;
    }
    sb_buf_append(e->out, "\"", 1);
    sb_buf_json_escape(e->out, s);
    sb_buf_append(e->out, "\"", 1);
}

static void enc_int(enc_t *e, int64_t v)
{
    if (e->fmt == SB_INBOX_MSGPACK)
        msgpack_pack_int64(&e->pk, v);
    else
        sb_buf_printf(e->out, "%" PRId64, v);
}

static void enc_null(enc_t *e)
{
    if (e->fmt == SB_INBOX_MSGPACK)
        msgpack_pack_nil(&e->pk);
    else
        sb_buf_append(e->out, "null", 4);
}

static void enc_begin(enc_t *e, sb_inbox_fmt_t fmt, sb_buf_t *out, size_t nkeys, const char *name)
{
    e->fmt = fmt;
    e->out = out;
    e->first = true;
    if (fmt == SB_INBOX_MSGPACK) {
        msgpack_packer_init(&e->pk, out, pk_write);
        msgpack_pack_map(&e->pk, nkeys);
    } else {
        sb_buf_append(out, "{", 1);
    }
    enc_key(e, "op");
    enc_str(e, sb_str_cstr(name));
}

static void enc_end(enc_t *e)
{
    if (e->fmt == SB_INBOX_JSON)
        sb_buf_append(e->out, "}", 1);
}

static bool cursor_ok(int64_t cursor)
{
    return cursor >= 0 && cursor <= SB_INBOX_MAX_CURSOR;
}

int sb_inbox_encode_welcome(sb_inbox_fmt_t fmt, sb_str_t tenant_id, int64_t cursor, sb_buf_t *out)
{
    enc_t e;
    if (!sb_utf8_valid(tenant_id.p, tenant_id.len))
        return SB_EINVAL;
    if (!cursor_ok(cursor))
        return SB_ERANGE;
    enc_begin(&e, fmt, out, 3, "welcome");
    enc_key(&e, "tenant_id");
    enc_str(&e, tenant_id);
    enc_key(&e, "cursor");
    enc_int(&e, cursor);
    enc_end(&e);
    return 0;
}

/* Appends JSON text that jansson has accepted, without the whitespace outside strings. */
static void append_compact(sb_buf_t *out, sb_str_t text)
{
    bool in_str = false, escaped = false;
    size_t run = 0; /* start of the bytes not yet copied */

    for (size_t i = 0; i < text.len; i++) {
        char c = text.p[i];
        if (in_str) {
            if (escaped)
                escaped = false;
            else if (c == '\\')
                escaped = true;
            else if (c == '"')
                in_str = false;
        } else if (c == '"') {
            in_str = true;
        } else if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
            sb_buf_append(out, text.p + run, i - run);
            run = i + 1;
        }
    }
    sb_buf_append(out, text.p + run, text.len - run);
}

/* Packs a jansson value (from a parse, so at most jansson's depth limit deep). */
static void pack_json(msgpack_packer *pk, const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        const char *key;
        size_t key_len;
        json_t *m;
        msgpack_pack_map(pk, json_object_size(v));
        json_object_keylen_foreach((json_t *)v, key, key_len, m) {
            msgpack_pack_str_with_body(pk, key, key_len);
            pack_json(pk, m);
        }
        break;
    }
    case JSON_ARRAY:
        msgpack_pack_array(pk, json_array_size(v));
        for (size_t i = 0; i < json_array_size(v); i++)
            pack_json(pk, json_array_get(v, i));
        break;
    case JSON_STRING:
        msgpack_pack_str_with_body(pk, json_string_value(v), json_string_length(v));
        break;
    case JSON_INTEGER:
        msgpack_pack_int64(pk, json_integer_value(v));
        break;
    case JSON_REAL:
        msgpack_pack_double(pk, json_real_value(v));
        break;
    case JSON_TRUE:
        msgpack_pack_true(pk);
        break;
    case JSON_FALSE:
        msgpack_pack_false(pk);
        break;
    case JSON_NULL:
        msgpack_pack_nil(pk);
        break;
    }
}

int sb_inbox_encode_event(sb_inbox_fmt_t fmt, int64_t cursor, sb_str_t type, sb_str_t data, sb_buf_t *out)
{
    enc_t e;
    if (!sb_utf8_valid(type.p, type.len))
        return SB_EINVAL;
    if (!cursor_ok(cursor))
        return SB_ERANGE;
    /* JSON keeps the text, so integers beyond int64 are fine there: jansson need only check them as reals */
    size_t flags = JSON_REJECT_DUPLICATES | (fmt == SB_INBOX_JSON ? JSON_DECODE_INT_AS_REAL : 0);
    json_t *j = json_loadb(data.len ? data.p : "", data.len, flags, NULL);
    if (!json_is_object(j)) {
        json_decref(j);
        return SB_EPARSE;
    }
    enc_begin(&e, fmt, out, 4, "event");
    enc_key(&e, "cursor");
    enc_int(&e, cursor);
    enc_key(&e, "type");
    enc_str(&e, type);
    enc_key(&e, "data");
    if (fmt == SB_INBOX_MSGPACK)
        pack_json(&e.pk, j);
    else
        append_compact(out, data);
    enc_end(&e);
    json_decref(j);
    return 0;
}

int sb_inbox_encode_accepted(sb_inbox_fmt_t fmt, sb_str_t idempotency_key, sb_str_t id, sb_buf_t *out)
{
    enc_t e;
    if (!sb_utf8_valid(idempotency_key.p, idempotency_key.len) || !sb_utf8_valid(id.p, id.len))
        return SB_EINVAL;
    enc_begin(&e, fmt, out, 3, "accepted");
    enc_key(&e, "idempotency_key");
    if (idempotency_key.p)
        enc_str(&e, idempotency_key);
    else
        enc_null(&e);
    enc_key(&e, "id");
    enc_str(&e, id);
    enc_end(&e);
    return 0;
}

void sb_inbox_encode_pong(sb_inbox_fmt_t fmt, sb_buf_t *out)
{
    enc_t e;
    enc_begin(&e, fmt, out, 1, "pong");
    enc_end(&e);
}

int sb_inbox_encode_error(sb_inbox_fmt_t fmt, sb_str_t code, sb_str_t message, sb_buf_t *out)
{
    enc_t e;
    if (!sb_utf8_valid(code.p, code.len) || !sb_utf8_valid(message.p, message.len))
        return SB_EINVAL;
    enc_begin(&e, fmt, out, 3, "error");
    enc_key(&e, "code");
    enc_str(&e, code);
    enc_key(&e, "message");
    enc_str(&e, message);
    enc_end(&e);
    return 0;
}

/* ---- batches ---------------------------------------------------------------------------------------------------- */

sb_inbox_batch_t *sb_inbox_batch_new(int64_t tenant, int64_t prev, int64_t first, size_t n, const char *const *types,
                                     const sb_str_t *data)
{
    sb_buf_t frames, frame;
    sb_buf_init(&frames);
    sb_buf_init(&frame);
    size_t *flen = sb_calloc(n ? n : 1, sizeof *flen), bytes = 0;
    for (size_t i = 0; i < n; i++) {
        frame.len = 0;
        if (sb_inbox_encode_event(SB_INBOX_JSON, first + (int64_t)i, sb_str_cstr(types[i]), data[i], &frame) == 0) {
            sb_buf_append(&frames, frame.p, frame.len);
            flen[i] = frame.len;
        }
        bytes += strlen(types[i]) + 1 + data[i].len + 1;
    }
    sb_inbox_batch_t *b = sb_malloc(sizeof *b + n * sizeof b->ev[0] + bytes + frames.len + 1);
    atomic_init(&b->refs, 1);
    b->tenant = tenant;
    b->prev = prev;
    b->n = n;
    char *w = (char *)&b->ev[n];
    const char *f = sb_buf_cstr(&frames);
    for (size_t i = 0; i < n; i++) {
        size_t tl = strlen(types[i]);
        b->ev[i].cursor = first + (int64_t)i;
        memcpy(w, types[i], tl + 1);
        b->ev[i].type = sb_str(w, tl);
        w += tl + 1;
        if (data[i].len)
            memcpy(w, data[i].p, data[i].len);
        w[data[i].len] = '\0';
        b->ev[i].data = sb_str(w, data[i].len);
        w += data[i].len + 1;
        if (flen[i])
            memcpy(w, f, flen[i]);
        b->ev[i].json = sb_str(w, flen[i]);
        w += flen[i];
        f += flen[i];
    }
    free(flen);
    sb_buf_cleanup(&frames);
    sb_buf_cleanup(&frame);
    return b;
}

void sb_inbox_pack_parts(int64_t tenant, int64_t prev, size_t n, const char *const *types, const sb_str_t *data,
                         sb_buf_t *out)
{
    sb_buf_printf(out, "SB1 %lld %lld %zu\n", (long long)tenant, (long long)prev, n);
    for (size_t i = 0; i < n; i++) {
        size_t tl = strlen(types[i]);
        sb_buf_printf(out, "%zu %zu\n", tl, data[i].len);
        sb_buf_append(out, types[i], tl);
        sb_buf_append(out, data[i].p, data[i].len);
    }
}

void sb_inbox_batch_pack(const sb_inbox_batch_t *b, sb_buf_t *out)
{
    const char **types = sb_malloc((b->n ? b->n : 1) * sizeof *types);
    sb_str_t *data = sb_malloc((b->n ? b->n : 1) * sizeof *data);
    for (size_t i = 0; i < b->n; i++) {
        types[i] = b->ev[i].type.p; /* (NUL-terminated: the batch keeps each type as a C string) */
        data[i] = b->ev[i].data;
    }
    sb_inbox_pack_parts(b->tenant, b->prev, b->n, types, data, out);
    free(types);
    free(data);
}

#define UNPACK_MAX_EVENTS 65536
#define UNPACK_MAX_TYPE 64
#define UNPACK_MAX_DATA (1024 * 1024)

/* A decimal number at *p (no sign, no leading zero unless it is 0, at most 18 digits) ended by `end`. */
static int unpack_num(const char **p, const char *lim, char end, int64_t *out)
{
    const char *q = *p;
    int64_t v = 0;
    size_t digits = 0;
    while (q < lim && *q >= '0' && *q <= '9' && digits < 19) { /* (a 19th digit is only looked at, to refuse it) */
        if (digits < 18)
            v = v * 10 + (*q - '0');
        q++;
        digits++;
    }
    if (!digits || digits > 18 || (digits > 1 && **p == '0') || q >= lim || *q != end)
        return SB_EPARSE;
    *out = v;
    *p = q + 1;
    return 0;
}

int sb_inbox_batch_unpack(const void *bytes, size_t len, sb_inbox_batch_t **out)
{
    const char *p = bytes, *lim = p + len;
    int64_t tenant, prev, n;
    *out = NULL;
    if (len < 4 || memcmp(p, "SB1 ", 4) != 0)
        return SB_EPARSE;
    p += 4;
    if (unpack_num(&p, lim, ' ', &tenant) || unpack_num(&p, lim, ' ', &prev) || unpack_num(&p, lim, '\n', &n) ||
        tenant <= 0 || n < 1 || n > UNPACK_MAX_EVENTS || prev > SB_INBOX_MAX_CURSOR - n)
        return SB_EPARSE;
    char **types = sb_calloc((size_t)n, sizeof *types);
    sb_str_t *data = sb_malloc((size_t)n * sizeof *data);
    int rc = 0;
    for (int64_t i = 0; i < n && !rc; i++) {
        int64_t tl, dl;
        if (unpack_num(&p, lim, ' ', &tl) || unpack_num(&p, lim, '\n', &dl) || tl < 1 || tl > UNPACK_MAX_TYPE ||
            dl > UNPACK_MAX_DATA || (size_t)(lim - p) < (size_t)(tl + dl)) {
            rc = SB_EPARSE;
            break;
        }
        for (int64_t k = 0; k < tl; k++)
            if (!((p[k] >= 'a' && p[k] <= 'z') || p[k] == '.' || p[k] == '_'))
                rc = SB_EPARSE;
        types[i] = sb_strndup(p, (size_t)tl);
        data[i] = sb_str(p + tl, (size_t)dl);
        p += tl + dl;
    }
    if (!rc && p != lim)
        rc = SB_EPARSE;
    if (!rc)
        *out = sb_inbox_batch_new(tenant, prev, prev + 1, (size_t)n, (const char *const *)types, data);
    for (int64_t i = 0; i < n; i++)
        free(types[i]);
    free(types);
    free(data);
    return rc;
}

void sb_inbox_batch_ref(sb_inbox_batch_t *b)
{
    atomic_fetch_add_explicit(&b->refs, 1, memory_order_relaxed);
}

void sb_inbox_batch_unref(sb_inbox_batch_t *b)
{
    if (b && atomic_fetch_sub_explicit(&b->refs, 1, memory_order_acq_rel) == 1)
        free(b);
}
