/* Meta webhook bodies into normalized events, and the verification handshake; see meta.h for what maps to what.
 *
 * The body is checked before jansson sees it (size, UTF-8, nesting depth by a string-aware bracket count), then
 * parsed with duplicate keys refused. After the envelope ("object", "entry") everything is read defensively: a
 * member of the wrong type is as absent, an item missing what its event needs is skipped and counted, and no
 * event is half-built (all fields are found and checked before one is appended). Strings are copied out of the
 * jansson tree, which is freed before returning. */
#include "adapters/meta.h"

#include "proto/err.h"
#include "proto/line.h"
#include "proto/mem.h"
#include "proto/str.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define MAX_URL 4096                    /* bytes in an attachment URL */
#define MS_THRESHOLD 100000000000LL     /* 10^11: below, a time is seconds (year 5138); above, milliseconds */
#define MAX_UNIX_SECONDS 253402300799LL /* 9999-12-31T23:59:59Z; later times are taken as absent */

typedef struct ctx {
    sb_event_list_t *out;
    size_t n0;            /* events in out before this body */
    size_t skipped;
    int err;              /* SB_E2BIG once the event cap is hit; everything stops */
    sb_channel_type_t channel;
    const json_t *item;   /* the message, status or messaging item being read: its JSON goes with its first event */
    bool item_kept;
} ctx_t;

/* Integer ids are formatted here; a string id is returned in place. */
typedef struct idbuf {
    char s[24];
} idbuf_t;

/* ---- reading values ------------------------------------------------------------------------------------------- */

static bool printable_ascii(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x21 || c > 0x7e)
            return false;
    }
    return true;
}

/* An identifier: a string of 1..SB_META_MAX_ID printable ASCII bytes, or an integer (formatted into buf).
 * NULL for anything else. */
static const char *id_of(const json_t *v, idbuf_t *buf)
{
    if (json_is_integer(v)) {
        snprintf(buf->s, sizeof buf->s, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        return buf->s;
    }
    const char *s = json_string_value(v);
    if (!s)
        return NULL;
    size_t n = json_string_length(v);
    if (n == 0 || n > SB_META_MAX_ID || !printable_ascii(s, n))
        return NULL;
    return s;
}

/* Text meant for people: a string that is valid UTF-8 without NUL (jansson ensures both unless told otherwise; this
 * keeps the promise of meta.h whatever flags or version). NULL for anything else. */
static const char *text_of(const json_t *v)
{
    const char *s = json_string_value(v);
    if (!s)
        return NULL;
    size_t n = json_string_length(v);
    if (memchr(s, '\0', n) || !sb_utf8_valid(s, n))
        return NULL;
    return s;
}

/* As text_of, but "" counts as absent. */
static const char *nonempty_text_of(const json_t *v)
{
    const char *s = text_of(v);
    return s && *s ? s : NULL;
}

/* An http(s) URL of printable ASCII, at most MAX_URL bytes. */
static const char *url_of(const json_t *v)
{
    const char *s = json_string_value(v);
    if (!s)
        return NULL;
    size_t n = json_string_length(v);
    if (n > MAX_URL || !printable_ascii(s, n))
        return NULL;
    sb_str_t u = sb_str(s, n);
    if (!sb_str_has_prefix(u, SB_STR("https://")) && !sb_str_has_prefix(u, SB_STR("http://")))
        return NULL;
    return s;
}

/* A time as unix seconds: a non-negative integer or a string of digits; 10^11 and above is milliseconds. 0 when
 * absent, malformed or beyond year 9999. */
static int64_t time_of(const json_t *v)
{
    long long t;
    if (json_is_integer(v)) {
        t = json_integer_value(v);
    } else {
        const char *s = json_string_value(v);
        size_t n = json_string_length(v);
        if (!s || n == 0 || s[0] < '0' || s[0] > '9' || sb_str_to_ll(sb_str(s, n), 0, INT64_MAX, &t) != 0)
            return 0;
    }
    if (t < 0)
        return 0;
    if (t >= MS_THRESHOLD)
        t /= 1000;
    return t <= MAX_UNIX_SECONDS ? (int64_t)t : 0;
}

static json_t *get(const json_t *obj, const char *key)
{
    return json_object_get(obj, key); /* NULL when obj is NULL or not an object */
}

static char *dup_or_null(const char *s)
{
    return s ? sb_strdup(s) : NULL;
}

/* ---- emitting events ------------------------------------------------------------------------------------------ */

/* Appends a zeroed event of kind, or returns NULL (and stops the parse) when the body already gave the maximum. */
static sb_event_t *emit(ctx_t *c, sb_event_kind_t kind)
{
    if (c->out->n - c->n0 >= SB_META_MAX_EVENTS) {
        c->err = SB_E2BIG;
        return NULL;
    }
    sb_event_t *ev = sb_event_list_push(c->out);
    ev->kind = kind;
    ev->channel = c->channel;
    if (c->item && !c->item_kept) {
        ev->raw = json_dumps(c->item, JSON_COMPACT);
        c->item_kept = true;
    }
    return ev;
}

/* The item the next events come from. */
static void item_begin(ctx_t *c, const json_t *item)
{
    c->item = item;
    c->item_kept = false;
}

typedef struct msg {
    const char *account, *provider_id, *from, *to, *body, *profile_name;
    int64_t timestamp;
    size_t nmedia;
    struct {
        const char *url, *id, *content_type;
    } media[SB_EVENT_MAX_MEDIA];
} msg_t;

static void emit_message(ctx_t *c, const msg_t *m)
{
    sb_event_t *ev = emit(c, SB_EV_MESSAGE);
    if (!ev)
        return;
    ev->account = sb_strdup(m->account);
    ev->provider_id = sb_strdup(m->provider_id);
    ev->timestamp = m->timestamp;
    ev->from = sb_strdup(m->from);
    ev->to = sb_strdup(m->to);
    ev->body = sb_strdup(m->body ? m->body : "");
    ev->profile_name = dup_or_null(m->profile_name);
    for (size_t i = 0; i < m->nmedia; i++) {
        ev->media[i].url = dup_or_null(m->media[i].url);
        ev->media[i].id = dup_or_null(m->media[i].id);
        ev->media[i].content_type = dup_or_null(m->media[i].content_type);
    }
    ev->nmedia = m->nmedia;
}

static void emit_status(ctx_t *c, const char *account, const char *provider_id, const char *status, const char *to,
                        int64_t timestamp, const char *error_code, const char *error_message)
{
    sb_event_t *ev = emit(c, SB_EV_STATUS);
    if (!ev)
        return;
    ev->account = sb_strdup(account);
    ev->provider_id = sb_strdup(provider_id);
    ev->status = sb_strdup(status);
    ev->timestamp = timestamp;
    ev->to = dup_or_null(to);
    ev->error_code = dup_or_null(error_code);
    ev->error_message = dup_or_null(error_message);
}

/* ---- WhatsApp Cloud API ----------------------------------------------------------------------------------------- */

static bool is_wa_media_type(const char *t)
{
    static const char *const kinds[] = {"image", "audio", "video", "document", "sticker"};
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
        if (strcmp(t, kinds[i]) == 0)
            return true;
    return false;
}

/* The profile name of the contact whose wa_id is from; failing that, of the only contact when the change carries
 * exactly one contact and one message (a user's wa_id and phone number may differ). */
static const char *wa_profile_name(const json_t *contacts, const char *from, size_t nmessages)
{
    for (size_t i = 0; i < json_array_size(contacts); i++) {
        const json_t *ct = json_array_get(contacts, i);
        idbuf_t b;
        const char *wa_id = id_of(get(ct, "wa_id"), &b);
        if (wa_id && strcmp(wa_id, from) == 0)
            return nonempty_text_of(get(get(ct, "profile"), "name"));
    }
    if (json_array_size(contacts) == 1 && nmessages == 1)
        return nonempty_text_of(get(get(json_array_get(contacts, 0), "profile"), "name"));
    return NULL;
}

/* "name\naddress\nlat,long" from the parts present; false when there is none. */
static bool wa_location_body(const json_t *loc, sb_buf_t *b)
{
    const char *name = nonempty_text_of(get(loc, "name"));
    const char *address = nonempty_text_of(get(loc, "address"));
    const json_t *lat = get(loc, "latitude"), *lon = get(loc, "longitude");

    if (name)
        sb_buf_puts(b, name);
    if (address) {
        if (b->len)
            sb_buf_puts(b, "\n");
        sb_buf_puts(b, address);
    }
    if (json_is_number(lat) && json_is_number(lon)) {
        double la = json_number_value(lat), lo = json_number_value(lon);
        if (la >= -90.0 && la <= 90.0 && lo >= -180.0 && lo <= 180.0) {
            if (b->len)
                sb_buf_puts(b, "\n");
            sb_buf_printf(b, "%.6f,%.6f", la, lo);
        }
    }
    return b->len > 0;
}

static void wa_message(ctx_t *c, const json_t *m, const char *account, const char *to, const json_t *contacts,
                       size_t nmessages)
{
    idbuf_t fb, ib, mb;
    msg_t msg = {0};
    sb_buf_t loc;
    sb_buf_init(&loc);

    msg.account = account;
    msg.to = to;
    msg.from = id_of(get(m, "from"), &fb);
    msg.provider_id = id_of(get(m, "id"), &ib);
    msg.timestamp = time_of(get(m, "timestamp"));
    const char *type = json_string_value(get(m, "type"));
    if (!msg.from || !msg.provider_id || !type)
        goto skip;

    if (strcmp(type, "text") == 0) {
        msg.body = nonempty_text_of(get(get(m, "text"), "body"));
        if (!msg.body)
            goto skip;
    } else if (is_wa_media_type(type)) {
        const json_t *o = get(m, type);
        msg.media[0].id = id_of(get(o, "id"), &mb);
        if (!msg.media[0].id)
            goto skip;
        msg.media[0].content_type = nonempty_text_of(get(o, "mime_type"));
        msg.nmedia = 1;
        msg.body = text_of(get(o, "caption"));
    } else if (strcmp(type, "location") == 0) {
        if (!wa_location_body(get(m, "location"), &loc))
            goto skip;
        msg.body = sb_buf_cstr(&loc);
    } else if (strcmp(type, "interactive") == 0) {
        const json_t *it = get(m, "interactive");
        const char *kind = json_string_value(get(it, "type"));
        if (kind && (strcmp(kind, "button_reply") == 0 || strcmp(kind, "list_reply") == 0))
            msg.body = nonempty_text_of(get(get(it, kind), "title"));
        if (!msg.body)
            goto skip;
    } else if (strcmp(type, "button") == 0) {
        msg.body = nonempty_text_of(get(get(m, "button"), "text"));
        if (!msg.body)
            goto skip;
    } else {
        goto skip; /* reaction, contacts, order, system, unsupported, unknown, request_welcome ... */
    }

    msg.profile_name = wa_profile_name(contacts, msg.from, nmessages);
    char e164[24];
    size_t nd = strspn(msg.from, "0123456789");
    if (nd >= 8 && nd <= 15 && msg.from[nd] == '\0' && msg.from[0] != '0') { /* a wa_id: the number as E.164 */
        snprintf(e164, sizeof e164, "+%s", msg.from);
        msg.from = e164;
    }
    emit_message(c, &msg);
    sb_buf_cleanup(&loc);
    return;

skip:
    c->skipped++;
    sb_buf_cleanup(&loc);
}

static bool is_wa_status(const char *s)
{
    return strcmp(s, "sent") == 0 || strcmp(s, "delivered") == 0 || strcmp(s, "read") == 0 ||
           strcmp(s, "failed") == 0;
}

static void wa_status(ctx_t *c, const json_t *st, const char *account)
{
    idbuf_t ib, rb, cb;
    const char *id = id_of(get(st, "id"), &ib);
    const char *status = json_string_value(get(st, "status"));
    if (!id || !status || !is_wa_status(status)) {
        c->skipped++;
        return;
    }
    const char *recipient = id_of(get(st, "recipient_id"), &rb);

    const json_t *e0 = json_array_get(get(st, "errors"), 0);
    const char *code = id_of(get(e0, "code"), &cb);
    const char *text = nonempty_text_of(get(e0, "message"));
    if (!text)
        text = nonempty_text_of(get(e0, "title"));
    const char *details = nonempty_text_of(get(get(e0, "error_data"), "details"));

    sb_buf_t msg;
    sb_buf_init(&msg);
    if (text)
        sb_buf_puts(&msg, text);
    if (details && (!text || strcmp(details, text) != 0)) {
        if (text)
            sb_buf_puts(&msg, ": ");
        sb_buf_puts(&msg, details);
    }
    emit_status(c, account, id, status, recipient, time_of(get(st, "timestamp")), code,
                msg.len ? sb_buf_cstr(&msg) : NULL);
    sb_buf_cleanup(&msg);
}

static void wa_value(ctx_t *c, const json_t *value)
{
    const json_t *meta = get(value, "metadata");
    const json_t *messages = get(value, "messages"), *statuses = get(value, "statuses");
    size_t nm = json_array_size(messages), ns = json_array_size(statuses);
    idbuf_t pb, db;
    const char *account = id_of(get(meta, "phone_number_id"), &pb);
    const char *to = id_of(get(meta, "display_phone_number"), &db);

    if (!account || nm + ns == 0) { /* nothing routable, or an errors-only / empty change */
        c->skipped += nm + ns ? nm + ns : 1;
        return;
    }
    if (!to)
        to = account;
    const json_t *contacts = get(value, "contacts");
    for (size_t i = 0; i < nm && !c->err; i++) {
        item_begin(c, json_array_get(messages, i));
        wa_message(c, c->item, account, to, contacts, nm);
    }
    for (size_t i = 0; i < ns && !c->err; i++) {
        item_begin(c, json_array_get(statuses, i));
        wa_status(c, c->item, account);
    }
}

static void wa_entry(ctx_t *c, const json_t *entry)
{
    const json_t *changes = get(entry, "changes");
    if (!json_is_array(changes) || json_array_size(changes) == 0) {
        c->skipped++;
        return;
    }
    for (size_t i = 0; i < json_array_size(changes) && !c->err; i++) {
        const json_t *ch = json_array_get(changes, i);
        const char *field = json_string_value(get(ch, "field"));
        const json_t *value = get(ch, "value");
        if (!field || strcmp(field, "messages") != 0 || !json_is_object(value)) {
            c->skipped++;
            continue;
        }
        wa_value(c, value);
    }
}

/* ---- Messenger and Instagram ------------------------------------------------------------------------------------ */

static void fb_message(ctx_t *c, const json_t *m, const char *account, const char *from, int64_t ts)
{
    idbuf_t mb;
    msg_t msg = {0};

    if (json_is_true(get(m, "is_echo")) || json_is_true(get(m, "is_deleted")))
        goto skip;
    msg.provider_id = id_of(get(m, "mid"), &mb);
    if (!account || !from || !msg.provider_id)
        goto skip;
    msg.account = account;
    msg.to = account;
    msg.from = from;
    msg.timestamp = ts;
    msg.body = nonempty_text_of(get(m, "text"));

    const json_t *atts = get(m, "attachments");
    for (size_t i = 0; i < json_array_size(atts) && msg.nmedia < SB_EVENT_MAX_MEDIA; i++) {
        const char *url = url_of(get(get(json_array_get(atts, i), "payload"), "url"));
        if (url)
            msg.media[msg.nmedia++].url = url;
    }
    if (!msg.body && msg.nmedia == 0)
        goto skip; /* nothing to show: a fallback without payload, a booking, a template ... */
    emit_message(c, &msg);
    return;

skip:
    c->skipped++;
}

static void fb_item(ctx_t *c, const json_t *item, const char *entry_id, int64_t entry_time)
{
    idbuf_t sb, rb, mb;
    const char *sender = id_of(get(get(item, "sender"), "id"), &sb);
    const char *account = id_of(get(get(item, "recipient"), "id"), &rb);
    if (!account)
        account = entry_id;
    int64_t ts = time_of(get(item, "timestamp"));
    if (!ts)
        ts = entry_time;

    const json_t *o;
    if ((o = get(item, "message")) && json_is_object(o)) {
        fb_message(c, o, account, sender, ts);
    } else if ((o = get(item, "postback")) && json_is_object(o)) {
        msg_t msg = {.account = account, .to = account, .from = sender, .timestamp = ts};
        msg.provider_id = id_of(get(o, "mid"), &mb);
        msg.body = nonempty_text_of(get(o, "title"));
        if (account && sender && msg.provider_id && msg.body)
            emit_message(c, &msg);
        else
            c->skipped++;
    } else if ((o = get(item, "delivery")) && json_is_object(o)) {
        const json_t *mids = get(o, "mids");
        if (!account || json_array_size(mids) == 0) {
            c->skipped++;
            return;
        }
        for (size_t i = 0; i < json_array_size(mids) && !c->err; i++) {
            const char *mid = id_of(json_array_get(mids, i), &mb);
            if (mid)
                emit_status(c, account, mid, "delivered", sender, ts, NULL, NULL);
            else
                c->skipped++;
        }
    } else if ((o = get(item, "read")) && json_is_object(o)) {
        const char *mid = id_of(get(o, "mid"), &mb);
        if (account && mid)
            emit_status(c, account, mid, "read", sender, ts, NULL, NULL);
        else
            c->skipped++; /* Messenger: a watermark names no message */
    } else {
        c->skipped++; /* reaction, referral, optin, handover ... */
    }
}

static void fb_entry(ctx_t *c, const json_t *entry)
{
    idbuf_t eb;
    const char *entry_id = id_of(get(entry, "id"), &eb);
    int64_t entry_time = time_of(get(entry, "time"));
    const json_t *messaging = get(entry, "messaging");

    /* standby items belong to the app that controls the thread; changes (feed, comments) are not messaging */
    size_t other = json_array_size(get(entry, "standby")) + json_array_size(get(entry, "changes"));
    c->skipped += other;
    if (json_array_size(messaging) == 0 && other == 0)
        c->skipped++; /* an entry with nothing we know */
    for (size_t i = 0; i < json_array_size(messaging) && !c->err; i++) {
        item_begin(c, json_array_get(messaging, i));
        fb_item(c, c->item, entry_id, entry_time);
    }
}

/* ---- the body ----------------------------------------------------------------------------------------------------- */

/* Whether brackets nest at most max deep, counting only those outside strings. Exact for valid JSON; for invalid
 * input it may be off, but jansson then refuses the text anyway (and bounds its own recursion). */
static bool depth_ok(const char *p, size_t len, int max)
{
    int depth = 0;
    bool in_string = false;
    for (size_t i = 0; i < len; i++) {
        char ch = p[i];
        if (in_string) {
            if (ch == '\\')
                i++;
            else if (ch == '"')
                in_string = false;
        } else if (ch == '"') {
            in_string = true;
        } else if (ch == '{' || ch == '[') {
            if (++depth > max)
                return false;
        } else if ((ch == '}' || ch == ']') && depth > 0) {
            depth--;
        }
    }
    return true;
}

static void diag_set(sb_meta_diag_t *diag, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void diag_set(sb_meta_diag_t *diag, const char *fmt, ...)
{
    if (!diag)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(diag->error, sizeof diag->error, fmt, ap);
    va_end(ap);
}

int sb_meta_parse(const char *body, size_t len, sb_event_list_t *out, sb_meta_diag_t *diag)
{
    ctx_t c = {.out = out, .n0 = out->n};
    json_t *root = NULL;
    json_error_t jerr;
    int rc;

    if (diag) {
        diag->skipped = 0;
        diag->error[0] = '\0';
    }
    if (len > SB_META_MAX_BODY) {
        rc = SB_E2BIG;
        diag_set(diag, "body larger than %d bytes", SB_META_MAX_BODY);
        goto fail;
    }
    if (len == 0) {
        rc = SB_EPARSE;
        diag_set(diag, "empty body");
        goto fail;
    }
    if (!sb_utf8_valid(body, len)) {
        rc = SB_EPARSE;
        diag_set(diag, "body is not valid UTF-8");
        goto fail;
    }
    if (!depth_ok(body, len, SB_META_MAX_DEPTH)) {
        rc = SB_EPARSE;
        diag_set(diag, "JSON nested deeper than %d levels", SB_META_MAX_DEPTH);
        goto fail;
    }
    root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        /* jerr.text may quote the body ("near '...'"), so it is not passed on */
        switch (json_error_code(&jerr)) {
        case json_error_out_of_memory:
            rc = SB_ENOMEM;
            diag_set(diag, "out of memory parsing JSON");
            break;
        case json_error_duplicate_key:
            rc = SB_EPARSE;
            diag_set(diag, "duplicate key in a JSON object (line %d, column %d)", jerr.line, jerr.column);
            break;
        default:
            rc = SB_EPARSE;
            diag_set(diag, "body is not valid JSON (line %d, column %d)", jerr.line, jerr.column);
            break;
        }
        goto fail;
    }
    if (!json_is_object(root)) {
        rc = SB_EPARSE;
        diag_set(diag, "body is not a JSON object");
        goto fail;
    }
    const char *object = json_string_value(get(root, "object"));
    const json_t *entry = get(root, "entry");
    if (!object) {
        rc = SB_EPARSE;
        diag_set(diag, "body has no \"object\" string");
        goto fail;
    }
    if (!json_is_array(entry)) {
        rc = SB_EPARSE;
        diag_set(diag, "body has no \"entry\" array");
        goto fail;
    }

    void (*per_entry)(ctx_t *, const json_t *) = NULL;
    if (strcmp(object, "whatsapp_business_account") == 0) {
        c.channel = SB_CH_META_WHATSAPP;
        per_entry = wa_entry;
    } else if (strcmp(object, "page") == 0) {
        c.channel = SB_CH_META_MESSENGER;
        per_entry = fb_entry;
    } else if (strcmp(object, "instagram") == 0) {
        c.channel = SB_CH_META_INSTAGRAM;
        per_entry = fb_entry;
    }
    for (size_t i = 0; i < json_array_size(entry) && !c.err; i++) {
        const json_t *e = json_array_get(entry, i);
        if (per_entry && json_is_object(e))
            per_entry(&c, e);
        else
            c.skipped++;
    }
    if (c.err) {
        rc = c.err;
        diag_set(diag, "more than %d events in one body", SB_META_MAX_EVENTS);
        goto fail;
    }

    json_decref(root);
    if (diag)
        diag->skipped = c.skipped;
    return 0;

fail:
    json_decref(root);
    for (size_t i = c.n0; i < out->n; i++)
        sb_event_cleanup(&out->v[i]);
    out->n = c.n0;
    if (c.n0 == 0)
        sb_event_list_cleanup(out);
    return rc;
}

/* ---- verification handshake --------------------------------------------------------------------------------- */

/* Equality of a and b in time that depends on b's length only (b is the secret we hold). */
static bool const_time_eq(sb_str_t a, sb_str_t b)
{
    volatile unsigned char diff = a.len != b.len;
    for (size_t i = 0; i < b.len; i++) {
        unsigned char x = i < a.len ? (unsigned char)a.p[i] : 0;
        diff |= x ^ (unsigned char)b.p[i];
    }
    return diff == 0;
}

int sb_meta_verify_challenge(sb_str_t mode, sb_str_t verify_token, sb_str_t challenge, sb_str_t expected_token,
                             sb_str_t *echo)
{
    *echo = sb_str(NULL, 0);
    if (!sb_str_eq_cstr(mode, "subscribe"))
        return SB_EINVAL;
    if (expected_token.len == 0 || verify_token.len == 0 || verify_token.len > SB_META_MAX_TOKEN)
        return SB_EINVAL;
    if (!const_time_eq(verify_token, expected_token))
        return SB_EINVAL;
    if (challenge.len == 0 || challenge.len > SB_META_MAX_CHALLENGE || !printable_ascii(challenge.p, challenge.len))
        return SB_EPARSE;
    *echo = challenge;
    return 0;
}
