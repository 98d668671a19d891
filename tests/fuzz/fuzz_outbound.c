/* libFuzzer target for adapters/outbound: the response classifier on provider answers (outside bytes), and the
 * accept-path validation and request builder on client messages (outside bytes too).
 *
 * Byte 0 chooses the channel (bits 0-1 and 3: twilio_sms, twilio_whatsapp, meta_whatsapp, or twilio_voice, a channel
 * that cannot send; with bit 3 set meta_messenger, meta_instagram for the first two) and the mode (bit 7); in builder
 * mode bit 2 chooses the mock's base URLs or the defaults.
 *
 * Classifier mode (bit 7 clear): byte 1 picks the transport error (mostly none), byte 2 the sent flag (bit 0), bytes
 * 3-4 the HTTP status (0..699), byte 5 the Retry-After (255 = none); the rest is the response body, and also, cut at
 * its first NUL, curl's detail text. The result must be one of the four outcomes; every string NUL-terminated inside
 * its array, valid UTF-8, the message free of control characters, the id 1..SB_OUTBOUND_MAX_ID printable ASCII bytes
 * exactly when SENT, an error code of printable ASCII exactly when not; a transport failure never SENT and without
 * status or Retry-After; SENT only on a 2xx; Retry-After only with RETRY and within its cap; provider_status from our
 * vocabulary; classifying twice gives the same bytes. The body is also fed to the status normalizer and its bytes
 * to the backoff, whose delay must stay within the ceiling or the capped Retry-After.
 *
 * Builder mode (bit 7 set): the rest is a message, field after field, each a length byte and that many bytes: to,
 * body, media count (mod 12) then that many URLs, media_type, template name, language, components, address, account
 * sid, auth token / access token, status callback, content sid, content variables, tag, and one byte of hours since
 * the customer's last message (255: never) for the window rule, which must answer 0 or SB_EACCES "outside_window".
 * Validation must answer 0, SB_EINVAL or -ENOTSUP with a documented
 * code and a printable message; the builder must agree with it, leave the request zeroed on failure, and on success
 * produce a request that says what the message said: a Twilio form that parses back to the same To, From, Body and
 * media (or ContentSid), a Meta JSON object with the same recipient, type and text, a Send API object with the same
 * recipient.id, text or attachment and tag. Any violation traps; LeakSanitizer sees leaks. */
#include "tests/fuzz/fuzz.h"
#include "adapters/outbound.h"
#include "proto/retry.h"

#include "proto/err.h"
#include "proto/form.h"
#include "proto/line.h"
#include "proto/str.h"

#include <errno.h>
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>


static const sb_channel_type_t channels[8] = {SB_CH_TWILIO_SMS,     SB_CH_TWILIO_WHATSAPP, SB_CH_META_WHATSAPP,
                                              SB_CH_TWILIO_VOICE,   SB_CH_META_MESSENGER,  SB_CH_META_INSTAGRAM,
                                              SB_CH_META_WHATSAPP,  SB_CH_TWILIO_VOICE};

static bool in_set(const char *s, const char *const *set)
{
    for (; *set; set++)
        if (strcmp(s, *set) == 0)
            return true;
    return false;
}

static const char *const statuses[] = {"queued", "sent", "delivered", "read", "failed", "undelivered", NULL};

/* A NUL-terminated string inside an array of cap bytes; its length. */
static size_t terminated(const char *s, size_t cap)
{
    const char *z = memchr(s, '\0', cap);
    CHECK(z != NULL);
    return (size_t)(z - s);
}

static bool printable(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x21 || (unsigned char)s[i] > 0x7e)
            return false;
    return true;
}

/* ---- classifier ----------------------------------------------------------------------------------------------- */

static void check_result(const sb_outbound_result_t *o, const sb_http_client_res_t *res)
{
    CHECK(o->outcome >= SB_OUTBOUND_SENT && o->outcome <= SB_OUTBOUND_UNKNOWN);
    CHECK(sb_outbound_outcome_name(o->outcome) != NULL);

    size_t nid = terminated(o->provider_id, sizeof o->provider_id);
    size_t ncode = terminated(o->error_code, sizeof o->error_code);
    size_t nmsg = terminated(o->error_message, sizeof o->error_message);
    CHECK(nid <= SB_OUTBOUND_MAX_ID && ncode <= SB_OUTBOUND_MAX_CODE && nmsg <= SB_OUTBOUND_MAX_ERRMSG);
    CHECK(printable(o->provider_id, nid) && printable(o->error_code, ncode));
    CHECK(sb_utf8_valid(o->error_message, nmsg));
    for (size_t i = 0; i < nmsg; i++)
        CHECK((unsigned char)o->error_message[i] >= 0x20 && o->error_message[i] != 0x7f);

    if (o->outcome == SB_OUTBOUND_SENT) {
        CHECK(nid > 0 && ncode == 0 && nmsg == 0);
        CHECK(res->err == 0 && res->status >= 200 && res->status <= 299);
    } else {
        CHECK(ncode > 0 && nmsg > 0);
        if (nid) /* only a 2xx that reports failure names the message */
            CHECK(o->outcome == SB_OUTBOUND_FAILED && res->status >= 200 && res->status <= 299);
    }
    if (o->provider_status)
        CHECK(in_set(o->provider_status, statuses));
    if (o->outcome == SB_OUTBOUND_RETRY)
        CHECK(o->retry_after_s >= -1 && o->retry_after_s <= SB_RETRY_AFTER_MAX_S);
    else
        CHECK(o->retry_after_s == -1);
    if (res->err) {
        CHECK(o->outcome != SB_OUTBOUND_SENT && o->http_status == 0 && o->retry_after_s == -1);
        if (res->sent && res->err != SB_EINVAL)
            CHECK(o->outcome == SB_OUTBOUND_UNKNOWN); /* never a blind resend */
    } else {
        CHECK(o->http_status == res->status);
    }
}

static void classify(sb_channel_type_t ch, const uint8_t *data, size_t size)
{
    static const int errs[] = {0, 0, 0, 0, 0, 0, 0, 0, SB_ETIMEDOUT, -ECONNRESET, SB_EUNAVAIL, SB_E2BIG,
                               SB_EPARSE, SB_EINVAL, SB_ECANCELED, -EIO, SB_ENOMEM, SB_ECLOSED};
    if (size < 5)
        return;
    int err = errs[data[0] % (sizeof errs / sizeof errs[0])];
    bool sent = data[1] & 1;
    int status = ((data[2] << 8) | data[3]) % 700;
    int retry_after = data[4] == 255 ? -1 : data[4] * 37;
    sb_str_t body = sb_str(size > 5 ? (const char *)data + 5 : NULL, size - 5);

    char *detail = malloc(body.len + 1);
    memcpy(detail, body.p ? body.p : "", body.len);
    detail[body.len] = '\0';

    sb_http_client_res_t res = {.err = err,
                                .status = err ? 0 : status,
                                .sent = err ? sent : true,
                                .body = err ? sb_str("", 0) : body,
                                .retry_after_s = err ? -1 : retry_after,
                                .detail = err ? detail : ""};
    sb_outbound_result_t a, b;
    memset(&a, 0x55, sizeof a);
    memset(&b, 0xaa, sizeof b);
    sb_outbound_classify(ch, &res, &a);
    sb_outbound_classify(ch, &res, &b);
    CHECK(memcmp(&a, &b, sizeof a) == 0); /* no hidden state, every byte written */
    check_result(&a, &res);

    /* the same answer as the Calls API's: a sid of printable ASCII exactly on success, a printable message else */
    char sid[72];
    sb_outbound_error_t cerr = {.code = ""};
    int crc = sb_outbound_call_answer(&res, sid, sizeof sid, &cerr);
    CHECK(crc == 0 || crc == SB_EUNAVAIL || crc == SB_EACCES || crc == SB_EPARSE);
    size_t nsid = terminated(sid, sizeof sid);
    CHECK(crc == 0 ? nsid > 0 && printable(sid, nsid) && res.status >= 200 && res.status < 300 : nsid == 0);
    if (crc) {
        size_t nm = terminated(cerr.message, sizeof cerr.message);
        for (size_t i = 0; i < nm; i++)
            CHECK((unsigned char)cerr.message[i] >= 0x20 && (unsigned char)cerr.message[i] < 0x7f);
    }

    /* the same bytes as a status value */
    const char *out = NULL;
    int rc = sb_outbound_status_normalize(ch, body, &out);
    CHECK(rc == 0 || rc == SB_ENOENT || rc == SB_EPARSE || rc == -ENOTSUP);
    CHECK((rc == 0) == (out != NULL));
    if (out)
        CHECK(in_set(out, statuses));
    CHECK((rc == -ENOTSUP) == (ch == SB_CH_TWILIO_VOICE));

    /* and as backoff inputs */
    uint64_t rnd = 0;
    memcpy(&rnd, data, size < sizeof rnd ? size : sizeof rnd);
    unsigned attempt = data[1];
    int ra = data[4] == 255 ? -1 : (int)((uint32_t)data[2] << 24 | (uint32_t)data[3] << 16) >> 1;
    uint64_t d = sb_retry_backoff_ms(attempt, ra, rnd);
    uint64_t ceil = sb_retry_ceiling_ms(attempt);
    CHECK(ceil >= SB_RETRY_BASE_MS && ceil <= SB_RETRY_CAP_MS);
    CHECK(ceil >= sb_retry_ceiling_ms(attempt ? attempt - 1 : 0));
    CHECK(d <= ceil ||
          (ra >= 0 && d == (uint64_t)(ra < SB_RETRY_AFTER_MAX_S ? ra : SB_RETRY_AFTER_MAX_S) * 1000));
    free(detail);
}

/* ---- builder -------------------------------------------------------------------------------------------------- */

typedef struct reader {
    const uint8_t *p;
    size_t n;
} reader_t;

/* The next length-prefixed field; {NULL, 0} once the input is used up. */
static sb_str_t field(reader_t *r)
{
    if (r->n == 0)
        return sb_str(NULL, 0);
    size_t len = r->p[0];
    r->p++;
    r->n--;
    if (len > r->n)
        len = r->n;
    sb_str_t s = sb_str(len ? (const char *)r->p : NULL, len);
    r->p += len;
    r->n -= len;
    return s;
}

static bool str_eq(sb_str_t a, const char *b, size_t blen)
{
    return a.len == blen && (blen == 0 || memcmp(a.p, b, blen) == 0);
}

static const char *const validate_codes[] = {"unsupported_channel", "invalid_recipient", "invalid_body",
                                             "body_too_long",       "empty_message",     "too_many_media",
                                             "invalid_media_url",   "invalid_media_type", "invalid_template",
                                             "invalid_tag",         NULL};
static const char *const build_codes[] = {"invalid_config", "invalid_sender", "invalid_credentials",
                                          "invalid_callback", NULL};

static void check_error(const sb_outbound_error_t *e, const char *const *codes)
{
    CHECK(e->code && in_set(e->code, codes));
    size_t n = terminated(e->message, sizeof e->message);
    CHECK(n > 0);
    for (size_t i = 0; i < n; i++)
        CHECK(e->message[i] >= 0x20 && e->message[i] < 0x7f);
}

static bool zeroed(const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        if (b[i])
            return false;
    return true;
}

static void check_twilio(const sb_outbound_msg_t *m, const sb_outbound_valid_t *v, const sb_outbound_request_t *r)
{
    bool wa = m->channel == SB_CH_TWILIO_WHATSAPP;
    CHECK(strstr(r->http.url, "/2010-04-01/Accounts/") && strstr(r->http.url, "/Messages.json"));
    CHECK(r->http.basic_auth && strlen(r->http.basic_auth) == m->account_sid.len + 1 + m->auth_token.len);
    CHECK(r->http.headers[0] && r->http.headers[1] && !r->http.headers[2]);

    sb_form_t f;
    CHECK(sb_form_parse(&f, r->http.body) == 0);
    const sb_form_pair_t *to = sb_form_find_cstr(&f, "To"), *body = sb_form_find_cstr(&f, "Body");
    CHECK(to);
    sb_str_t want_to = to->value;
    if (wa) {
        CHECK(sb_str_has_prefix(want_to, SB_STR("whatsapp:")));
        want_to.p += 9;
        want_to.len -= 9;
    }
    CHECK(sb_str_eq_cstr(want_to, v->to));
    CHECK(sb_form_find_cstr(&f, "From") || sb_form_find_cstr(&f, "MessagingServiceSid"));
    if (m->body.len)
        CHECK(body && sb_str_eq(body->value, m->body));
    else
        CHECK(!body);
    const sb_form_pair_t *csid = sb_form_find_cstr(&f, "ContentSid");
    CHECK(m->content_sid.len ? csid && sb_str_eq(csid->value, m->content_sid) && !body : !csid);
    size_t nmedia = 0;
    for (size_t i = 0; i < f.n; i++)
        if (sb_str_eq_cstr(f.pairs[i].name, "MediaUrl"))
            CHECK(sb_str_eq(f.pairs[i].value, m->media[nmedia++]));
    CHECK(nmedia == m->nmedia);
    const sb_form_pair_t *cb = sb_form_find_cstr(&f, "StatusCallback");
    CHECK(m->status_callback.len ? cb && sb_str_eq(cb->value, m->status_callback) : !cb);
    sb_form_cleanup(&f);
}

static void check_meta(const sb_outbound_msg_t *m, const sb_outbound_valid_t *v, const sb_outbound_request_t *r)
{
    CHECK(strstr(r->http.url, "/messages") && !r->http.basic_auth);
    CHECK(r->http.headers[2] && strncmp(r->http.headers[2], "Authorization: Bearer ", 22) == 0 && !r->http.headers[3]);
    json_error_t jerr;
    json_t *j = json_loadb(r->http.body.p, r->http.body.len, JSON_REJECT_DUPLICATES, &jerr);
    CHECK(json_is_object(j));
    CHECK(strcmp(json_string_value(json_object_get(j, "messaging_product")), "whatsapp") == 0);
    CHECK(strcmp(json_string_value(json_object_get(j, "to")), v->to) == 0);
    CHECK(strcmp(json_string_value(json_object_get(j, "type")), v->type) == 0);
    json_t *content = json_object_get(j, v->type);
    CHECK(json_is_object(content));
    if (strcmp(v->type, "text") == 0) {
        json_t *b = json_object_get(content, "body");
        CHECK(str_eq(m->body, json_string_value(b), json_string_length(b)));
    } else if (strcmp(v->type, "template") == 0) {
        json_t *n = json_object_get(content, "name");
        CHECK(str_eq(m->template_name, json_string_value(n), json_string_length(n)));
    } else {
        json_t *l = json_object_get(content, "link"), *c = json_object_get(content, "caption");
        CHECK(str_eq(m->media[0], json_string_value(l), json_string_length(l)));
        CHECK(m->body.len ? str_eq(m->body, json_string_value(c), json_string_length(c)) : c == NULL);
    }
    json_decref(j);
}

static void check_fb(const sb_outbound_msg_t *m, const sb_outbound_valid_t *v, const sb_outbound_request_t *r)
{
    CHECK(strstr(r->http.url, "/messages") && !r->http.basic_auth);
    json_error_t jerr;
    json_t *j = json_loadb(r->http.body.p, r->http.body.len, JSON_REJECT_DUPLICATES, &jerr);
    CHECK(json_is_object(j) && !json_object_get(j, "messaging_product"));
    CHECK(strcmp(json_string_value(json_object_get(json_object_get(j, "recipient"), "id")), v->to) == 0);
    json_t *tag = json_object_get(j, "tag"), *msg = json_object_get(j, "message");
    CHECK(strcmp(json_string_value(json_object_get(j, "messaging_type")), m->tag.len ? "MESSAGE_TAG" : "RESPONSE") ==
          0);
    CHECK(m->tag.len ? str_eq(m->tag, json_string_value(tag), json_string_length(tag)) : tag == NULL);
    json_t *text = json_object_get(msg, "text"), *att = json_object_get(msg, "attachment");
    if (strcmp(v->type, "text") == 0) {
        CHECK(str_eq(m->body, json_string_value(text), json_string_length(text)) && !att);
    } else {
        json_t *u = json_object_get(json_object_get(att, "payload"), "url");
        CHECK(!text && strcmp(json_string_value(json_object_get(att, "type")), v->type) == 0);
        CHECK(str_eq(m->media[0], json_string_value(u), json_string_length(u)));
    }
    json_decref(j);
}

static void build(sb_channel_type_t ch, bool mock_base, const uint8_t *data, size_t size)
{
    reader_t r = {data, size};
    sb_outbound_msg_t m = {.channel = ch};
    sb_str_t media[12];
    m.to = field(&r);
    m.body = field(&r);
    m.nmedia = r.n ? (size_t)(r.p[0] % 12) : 0;
    if (r.n) {
        r.p++;
        r.n--;
    }
    for (size_t i = 0; i < m.nmedia; i++)
        media[i] = field(&r);
    m.media = m.nmedia ? media : NULL;
    m.media_type = field(&r);
    m.template_name = field(&r);
    m.template_language = field(&r);
    m.template_components = field(&r);
    m.address = field(&r);
    m.account_sid = field(&r);
    m.auth_token = field(&r);
    m.access_token = m.auth_token;
    m.status_callback = field(&r);
    m.content_sid = field(&r);
    m.content_variables = field(&r);
    m.tag = field(&r);
    int64_t since = r.n ? (r.p[0] == 255 ? -1 : (int64_t)r.p[0] * 3600 * 1000) : -1;
    sb_outbound_error_t werr;
    int wrc = sb_outbound_window(&m, since, &werr);
    CHECK(wrc == 0 ? werr.code[0] == '\0' : wrc == SB_EACCES && strcmp(werr.code, "outside_window") == 0);
    if (wrc)
        CHECK(since < 0 || since >= SB_OUTBOUND_WINDOW_MS);

    sb_outbound_valid_t v;
    sb_outbound_error_t err;
    int rc = sb_outbound_validate(&m, &v, &err);
    CHECK(rc == 0 || rc == SB_EINVAL || rc == -ENOTSUP);
    CHECK((rc == -ENOTSUP) == (ch == SB_CH_TWILIO_VOICE));
    if (rc) {
        check_error(&err, validate_codes);
    } else {
        CHECK(err.code && err.code[0] == '\0');
        size_t n = terminated(v.to, sizeof v.to);
        if (ch == SB_CH_META_MESSENGER || ch == SB_CH_META_INSTAGRAM)
            CHECK(n >= 1 && n <= SB_OUTBOUND_MAX_SCOPED_ID && strspn(v.to, "0123456789") == n);
        else
            CHECK(n >= 9 && n <= 16 && v.to[0] == '+');
        CHECK(v.type != NULL);
        CHECK(v.body_chars <= SB_OUTBOUND_META_MAX_TEXT && v.body_chars <= m.body.len);
        CHECK(m.body.len == 0 || sb_utf8_valid(m.body.p, m.body.len));
    }

    static const sb_outbound_endpoints_t eps[2] = {{"http://127.0.0.1:9000/", "http://127.0.0.1:9000/v21.0"},
                                                   {NULL, NULL}};
    sb_outbound_request_t req;
    sb_outbound_error_t berr;
    memset(&req, 0x33, sizeof req);
    const sb_outbound_endpoints_t *ep = &eps[mock_base ? 0 : 1];
    int brc = sb_outbound_build(&m, ep, &req, &berr);
    if (rc) {
        CHECK(brc == rc && zeroed(&req, sizeof req) && strcmp(berr.code, err.code) == 0);
        return;
    }
    if (brc) {
        CHECK(brc == SB_EINVAL && zeroed(&req, sizeof req));
        check_error(&berr, build_codes);
        return;
    }
    CHECK(strcmp(req.http.method, "POST") == 0 && req.http.url == req.url && req.http.headers == req.headers);
    CHECK(strncmp(req.http.url, mock_base ? "http://127.0.0.1:9000/" : "https://", mock_base ? 22 : 8) == 0);
    CHECK(!strstr(req.http.url, "//2010") && !strstr(req.http.url, "//messages"));
    for (size_t i = 0; req.headers[i]; i++)
        CHECK(!strchr(req.headers[i], '\r') && !strchr(req.headers[i], '\n'));
    if (ch == SB_CH_META_WHATSAPP)
        check_meta(&m, &v, &req);
    else if (ch == SB_CH_META_MESSENGER || ch == SB_CH_META_INSTAGRAM)
        check_fb(&m, &v, &req);
    else
        check_twilio(&m, &v, &req);
    sb_outbound_request_cleanup(&req);
    CHECK(zeroed(&req, sizeof req));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    sb_channel_type_t ch = channels[(data[0] & 3) | ((data[0] >> 1) & 4)];
    if (data[0] & 0x80)
        build(ch, data[0] & 4, data + 1, size - 1);
    else
        classify(ch, data + 1, size - 1);
    return 0;
}
