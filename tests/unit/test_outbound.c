/* Unit tests for adapters/outbound: the accept-path validation of a send, the exact provider requests (URL, headers,
 * basic auth, form and JSON bytes) for twilio_sms, twilio_whatsapp, meta_whatsapp, meta_messenger and meta_instagram
 * (Twilio Content API templates, Messenger tags), the 24-hour window rule, the classification of every
 * kind of answer (transport failures with and without bytes sent, successes, the providers' error bodies, shaped
 * after the ones their documentation shows, with made-up ids), the status vocabularies, and the backoff. */
#include "adapters/outbound.h"

#include "proto/err.h"
#include "proto/form.h"
#include "proto/line.h"
#include "tests/tap.h"

#include <errno.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SID "AC0123456789abcdef0123456789abcdef"
#define TOKEN "f00dfeedf00dfeedf00dfeedf00dfeed"
#define META_TOKEN "EAAGm0PX4ZCpsBAKZCwQ7example"
#define PNID "106540352242922"

static sb_str_t S(const char *s)
{
    return sb_str_cstr(s);
}

static bool zeroed(const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        if (b[i])
            return false;
    return true;
}

static sb_outbound_msg_t twilio_msg(sb_channel_type_t ch, const char *to, const char *body)
{
    sb_outbound_msg_t m = {.channel = ch,
                           .address = S("+14155550199"),
                           .account_sid = S(SID),
                           .auth_token = S(TOKEN),
                           .to = S(to),
                           .body = S(body)};
    return m;
}

static sb_outbound_msg_t meta_msg(const char *to, const char *body)
{
    sb_outbound_msg_t m = {.channel = SB_CH_META_WHATSAPP,
                           .address = S(PNID),
                           .access_token = S(META_TOKEN),
                           .to = S(to),
                           .body = S(body)};
    return m;
}

/* Expects validation (and the builder) to refuse m with rc and code, the message naming field and not quoting the
 * recipient. */
static void refused(const sb_outbound_msg_t *m, int rc, const char *code, const char *field, const char *what)
{
    sb_outbound_error_t err;
    sb_outbound_valid_t v;
    memset(&v, 0xa5, sizeof v);
    is_int(sb_outbound_validate(m, &v, &err), rc, "%s: refused", what);
    is_str(err.code, code, "%s: code", what);
    ok(strstr(err.message, field) != NULL, "%s: message names %s (\"%s\")", what, field, err.message);
    ok(m->to.len < 10 || !memmem(err.message, strlen(err.message), m->to.p, m->to.len),
       "%s: message does not quote the recipient", what);

    sb_outbound_request_t r;
    memset(&r, 0xa5, sizeof r);
    sb_outbound_error_t err2;
    is_int(sb_outbound_build(m, NULL, &r, &err2), rc, "%s: the builder refuses it too", what);
    ok(zeroed(&r, sizeof r), "%s: request left zeroed", what);
    is_str(err2.code, code, "%s: same code from the builder", what);
}

static void accepted(const sb_outbound_msg_t *m, const char *what)
{
    sb_outbound_error_t err = {0};
    int rc = sb_outbound_validate(m, NULL, &err);
    is_int(rc, 0, "%s: accepted (%s %s)", what, rc ? err.code : "", rc ? err.message : "");
    if (rc == 0)
        is_str(err.code, "", "%s: no error code", what);
}

/* n copies of the UTF-8 character c, heap (the caller frees). */
static char *repeat(const char *c, size_t n)
{
    size_t cl = strlen(c);
    char *s = malloc(cl * n + 1);
    for (size_t i = 0; i < n; i++)
        memcpy(s + i * cl, c, cl);
    s[cl * n] = '\0';
    return s;
}

/* ---- validation ----------------------------------------------------------------------------------------------- */

TEST(channels)
{
    static const sb_channel_type_t bad[] = {SB_CH_NONE, SB_CH_TWILIO_VOICE, SB_CH_LINKED, (sb_channel_type_t)99};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        sb_outbound_msg_t m = twilio_msg(bad[i], "+14155550100", "hi");
        char what[48];
        snprintf(what, sizeof what, "channel %d", (int)bad[i]);
        refused(&m, -ENOTSUP, "unsupported_channel", "channel", what);
    }
    sb_outbound_msg_t m = twilio_msg(SB_CH_TWILIO_SMS, "+14155550100", "hi");
    accepted(&m, "twilio_sms");
    m.channel = SB_CH_TWILIO_WHATSAPP;
    accepted(&m, "twilio_whatsapp");
    m = meta_msg("+14155550100", "hi");
    accepted(&m, "meta_whatsapp");

    /* validation needs nothing of the channel's own: no sender, no credentials */
    sb_outbound_msg_t bare = {.channel = SB_CH_META_WHATSAPP, .to = S("+14155550100"), .body = S("x")};
    accepted(&bare, "without address or credentials");
}

TEST(recipients)
{
    static const char *const bad[] = {"",           "14155550100",       "+",
                                      "+0123456789", "+1234567",          "+1234567890123456",
                                      "+1415555010a", " +14155550100",     "+1 415 555 0100",
                                      "++14155550100", "+14155550100\n",  "whatsapp:",
                                      "tel:+14155550100", "+١٤١٥٥٥٥٠١٠٠"};
    static const sb_channel_type_t chans[] = {SB_CH_TWILIO_SMS, SB_CH_TWILIO_WHATSAPP, SB_CH_META_WHATSAPP};
    for (size_t c = 0; c < 3; c++) {
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
            sb_outbound_msg_t m = twilio_msg(chans[c], bad[i], "hi");
            char what[80];
            snprintf(what, sizeof what, "%s to \"%s\"", sb_channel_type_name(chans[c]), bad[i]);
            refused(&m, SB_EINVAL, "invalid_recipient", "to:", what);
        }
    }

    sb_outbound_valid_t v;
    sb_outbound_msg_t m = twilio_msg(SB_CH_TWILIO_SMS, "+12345678", "hi");
    is_int(sb_outbound_validate(&m, &v, NULL), 0, "8 digits");
    is_str(v.to, "+12345678", "stored as given");
    m.to = S("+123456789012345");
    is_int(sb_outbound_validate(&m, &v, NULL), 0, "15 digits");
    is_str(v.to, "+123456789012345", "15 digits kept");

    /* whatsapp: only on twilio_whatsapp, where it is dropped for storage */
    m.to = S("whatsapp:+14155550100");
    refused(&m, SB_EINVAL, "invalid_recipient", "to:", "whatsapp: prefix on twilio_sms");
    sb_outbound_msg_t mm = meta_msg("whatsapp:+14155550100", "hi");
    refused(&mm, SB_EINVAL, "invalid_recipient", "to:", "whatsapp: prefix on meta_whatsapp");
    m.channel = SB_CH_TWILIO_WHATSAPP;
    is_int(sb_outbound_validate(&m, &v, NULL), 0, "whatsapp:+E164 on twilio_whatsapp");
    is_str(v.to, "+14155550100", "stored without the prefix (as inbound events carry it)");
    m.to = S("WhatsApp:+14155550100");
    is_int(sb_outbound_validate(&m, &v, NULL), 0, "prefix in any case");
    is_str(v.to, "+14155550100", "dropped too");
    m.to = S("+14155550100");
    is_int(sb_outbound_validate(&m, &v, NULL), 0, "plain E.164 on twilio_whatsapp");
    is_str(v.to, "+14155550100", "kept");
    m.to = S("whatsapp:whatsapp:+14155550100");
    refused(&m, SB_EINVAL, "invalid_recipient", "to:", "a doubled prefix");
}

TEST(bodies)
{
    static const struct {
        const char *bytes;
        size_t len;
        const char *what;
    } bad[] = {
        {"\xff", 1, "a 0xff byte"},
        {"ab\0cd", 5, "a NUL"},
        {"\xc0\xaf", 2, "an overlong '/'"},
        {"\xed\xa0\x80", 3, "a surrogate"},
        {"caf\xc3", 4, "a cut sequence"},
        {"\xf4\x90\x80\x80", 4, "beyond U+10FFFF"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        sb_outbound_msg_t m = twilio_msg(SB_CH_TWILIO_SMS, "+14155550100", NULL);
        m.body = sb_str(bad[i].bytes, bad[i].len);
        refused(&m, SB_EINVAL, "invalid_body", "body:", bad[i].what);
        sb_outbound_msg_t mm = meta_msg("+14155550100", NULL);
        mm.body = m.body;
        refused(&mm, SB_EINVAL, "invalid_body", "body:", bad[i].what);
    }

    sb_outbound_msg_t m = twilio_msg(SB_CH_TWILIO_SMS, "+14155550100", NULL);
    refused(&m, SB_EINVAL, "empty_message", "body", "no body, media or template");
    m.body = S("");
    refused(&m, SB_EINVAL, "empty_message", "body", "an empty body");
    sb_outbound_msg_t mm = meta_msg("+14155550100", "");
    refused(&mm, SB_EINVAL, "empty_message", "body", "an empty Meta message");

    /* controls other than NUL are text: newlines and tabs are common */
    m.body = S("line 1\nline 2\tend\r\n");
    accepted(&m, "newlines and tabs");
}

/* The limits count code points: n characters of c pass, n + 1 fail. */
static void limit(sb_outbound_msg_t m, const char *c, size_t n, const char *what)
{
    char *at = repeat(c, n), *past = repeat(c, n + 1);
    sb_outbound_valid_t v;
    m.body = S(at);
    is_int(sb_outbound_validate(&m, &v, NULL), 0, "%s: %zu characters (%zu bytes) pass", what, n, strlen(at));
    is_int((long long)v.body_chars, (long long)n, "%s: counted as characters", what);
    m.body = S(past);
    refused(&m, SB_EINVAL, "body_too_long", "body:", what);
    free(at);
    free(past);
}

TEST(body_limits)
{
    sb_outbound_msg_t t = twilio_msg(SB_CH_TWILIO_SMS, "+14155550100", NULL);
    limit(t, "a", SB_OUTBOUND_TWILIO_MAX_BODY, "twilio ASCII");
    limit(t, "\xc3\xa9", SB_OUTBOUND_TWILIO_MAX_BODY, "twilio e-acute");
    limit(t, "\xf0\x9f\x98\x80", SB_OUTBOUND_TWILIO_MAX_BODY, "twilio emoji");
    t.channel = SB_CH_TWILIO_WHATSAPP;
    limit(t, "\xe6\x97\xa5", SB_OUTBOUND_TWILIO_MAX_BODY, "twilio_whatsapp CJK");
    t.media = (sb_str_t[]){S("https://cdn.example.com/a.png")};
    t.nmedia = 1;
    limit(t, "x", SB_OUTBOUND_TWILIO_MAX_BODY, "twilio with media: same limit");

    sb_outbound_msg_t m = meta_msg("+14155550100", NULL);
    limit(m, "a", SB_OUTBOUND_META_MAX_TEXT, "meta text ASCII");
    limit(m, "\xf0\x9f\x98\x80", SB_OUTBOUND_META_MAX_TEXT, "meta text emoji");
    m.media = (sb_str_t[]){S("https://cdn.example.com/a.jpg")};
    m.nmedia = 1;
    limit(m, "\xe6\x97\xa5", SB_OUTBOUND_META_MAX_CAPTION, "meta caption");
}

TEST(media)
{
    sb_str_t urls[12];
    for (size_t i = 0; i < 12; i++)
        urls[i] = S("https://cdn.example.com/a.png");

    sb_outbound_msg_t m = twilio_msg(SB_CH_TWILIO_SMS, "+14155550100", NULL);
    m.media = urls;
    m.nmedia = SB_OUTBOUND_MAX_MEDIA;
    sb_outbound_valid_t v;
    is_int(sb_outbound_validate(&m, &v, NULL), 0, "ten media, no body, on twilio_sms");
    is_str(v.type, "media", "type media");
    m.nmedia = SB_OUTBOUND_MAX_MEDIA + 1;
    refused(&m, SB_EINVAL, "too_many_media", "media_url", "eleven media");
    m.channel = SB_CH_TWILIO_WHATSAPP;
    m.nmedia = 2;
    refused(&m, SB_EINVAL, "too_many_media", "media_url", "two media on twilio_whatsapp");
    sb_outbound_msg_t mm = meta_msg("+14155550100", NULL);
    mm.media = urls;
    mm.nmedia = 2;
    refused(&mm, SB_EINVAL, "too_many_media", "media_url", "two media on meta_whatsapp");

    static const char *const bad[] = {
        "",
        "ftp://cdn.example.com/a.png",
        "cdn.example.com/a.png",
        "/a.png",
        "https://",
        "https:///a.png",
        "https://:443/a.png",
        "https://user@/a.png",
        "https://cdn.example.com/a b.png",
        "https://cdn.example.com/a\tb.png",
        "https://cdn.example.com/\x7f",
        "https://cdn.example.com/caf\xc3\xa9.png",
        "https://cdn.example.com/a<b>.png",
        "https://cdn.example.com/a\".png",
        "https://cdn.example.com/a\\b.png",
        "javascript:alert(1)",
        "data:image/png;base64,AAAA",
    };
    m.channel = SB_CH_TWILIO_SMS;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        sb_str_t one[2] = {S("https://ok.example.com/1.png"), S(bad[i])};
        m.media = one;
        m.nmedia = 2;
        char what[96];
        snprintf(what, sizeof what, "media url \"%s\"", bad[i]);
        refused(&m, SB_EINVAL, "invalid_media_url", "media_url[1]", what);
    }
    char *longurl = repeat("a", SB_OUTBOUND_MAX_URL);
    memcpy(longurl, "https://x.io/", 13);
    sb_str_t lu = S(longurl);
    m.media = &lu;
    m.nmedia = 1;
    accepted(&m, "a URL of SB_OUTBOUND_MAX_URL bytes");
    lu.len = 0;
    free(longurl);
    longurl = repeat("a", SB_OUTBOUND_MAX_URL + 1);
    memcpy(longurl, "https://x.io/", 13);
    lu = S(longurl);
    refused(&m, SB_EINVAL, "invalid_media_url", "media_url[0]", "a URL one byte too long");
    free(longurl);

    static const char *const good[] = {
        "https://cdn.example.com/a.png",
        "HTTPS://CDN.example.com/A.PNG",
        "http://user:pw@cdn.example.com:8080/x/y.jpg?sig=a%20b&x=1#frag",
        "https://[2001:db8::1]:8443/a.pdf",
        "https://cdn.example.com",
        "https://cdn.example.com?x=1",
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        sb_str_t one = S(good[i]);
        m.media = &one;
        m.nmedia = 1;
        char what[96];
        snprintf(what, sizeof what, "media url \"%s\"", good[i]);
        accepted(&m, what);
    }

    sb_str_t one = S("https://cdn.example.com/a.png");
    m.media = &one;
    m.media_type = S("gif");
    refused(&m, SB_EINVAL, "invalid_media_type", "media_type", "an unknown media_type on twilio");
    m.media_type = S("image");
    accepted(&m, "a known media_type on twilio (ignored)");
}

TEST(meta_media_types)
{
    static const struct {
        const char *url, *type;
    } cases[] = {
        {"https://cdn.example.com/a.jpg", "image"},
        {"https://cdn.example.com/a.JPEG?v=2", "image"},
        {"https://cdn.example.com/dir/a.png#x", "image"},
        {"https://cdn.example.com/clip.mp4", "video"},
        {"https://cdn.example.com/clip.3gp", "video"},
        {"https://cdn.example.com/voice.ogg", "audio"},
        {"https://cdn.example.com/voice.opus", "audio"},
        {"https://cdn.example.com/song.mp3", "audio"},
        {"https://cdn.example.com/s.webp", "sticker"},
        {"https://cdn.example.com/invoice.pdf", "document"},
        {"https://cdn.example.com/download", "document"},
        {"https://cdn.example.com/dir.jpg/", "document"},
        {"https://cdn.example.com", "document"},
        {"https://cdn.example.jpg", "document"},
        {"https://cdn.example.com/a.jpg.exe", "document"},
        {"https://cdn.example.com/get?file=a.jpg", "document"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        sb_outbound_msg_t m = meta_msg("+14155550100", NULL);
        sb_str_t u = S(cases[i].url);
        m.media = &u;
        m.nmedia = 1;
        sb_outbound_valid_t v;
        is_int(sb_outbound_validate(&m, &v, NULL), 0, "%s accepted", cases[i].url);
        is_str(v.type, cases[i].type, "%s is %s", cases[i].url, cases[i].type);
    }

    sb_outbound_msg_t m = meta_msg("+14155550100", NULL);
    sb_str_t u = S("https://cdn.example.com/download");
    m.media = &u;
    m.nmedia = 1;
    m.media_type = S("video");
    sb_outbound_valid_t v;
    is_int(sb_outbound_validate(&m, &v, NULL), 0, "explicit media_type");
    is_str(v.type, "video", "wins over the extension");
    m.media_type = S("Video");
    refused(&m, SB_EINVAL, "invalid_media_type", "media_type", "media_type is case-sensitive");

    /* captions: not on audio or stickers */
    m.media_type = S("audio");
    m.body = S("listen");
    refused(&m, SB_EINVAL, "invalid_body", "body:", "a caption on audio");
    m.media_type = S("sticker");
    refused(&m, SB_EINVAL, "invalid_body", "body:", "a caption on a sticker");
    m.media_type = S("document");
    accepted(&m, "a caption on a document");
    m.media_type = S("");
    u = S("https://cdn.example.com/voice.ogg");
    refused(&m, SB_EINVAL, "invalid_body", "body:", "a caption on audio by extension");
}

TEST(templates)
{
    sb_outbound_msg_t m = meta_msg("+14155550100", NULL);
    m.template_name = S("order_update_2");
    m.template_language = S("en_US");
    sb_outbound_valid_t v;
    is_int(sb_outbound_validate(&m, &v, NULL), 0, "a template without components");
    is_str(v.type, "template", "type template");
    m.template_components = S("[{\"type\":\"body\",\"parameters\":[{\"type\":\"text\",\"text\":\"42\"}]}]");
    accepted(&m, "with components");
    m.template_components = S("[]");
    accepted(&m, "with no components");

    static const struct {
        const char *name, *lang, *comps, *field, *what;
    } bad[] = {
        {"", "en_US", NULL, "template.name", "no name"},
        {"Order_Update", "en_US", NULL, "template.name", "upper case in the name"},
        {"order-update", "en_US", NULL, "template.name", "a dash in the name"},
        {"order update", "en_US", NULL, "template.name", "a space in the name"},
        {"order_update", "", NULL, "template.language", "no language"},
        {"order_update", "e", NULL, "template.language", "a one-letter language"},
        {"order_update", "en US", NULL, "template.language", "a space in the language"},
        {"order_update", "en_US", "{}", "template.components", "components an object"},
        {"order_update", "en_US", "[1]", "template.components", "components of numbers"},
        {"order_update", "en_US", "[{\"a\":1,\"a\":2}]", "template.components", "duplicate keys"},
        {"order_update", "en_US", "[{}] x", "template.components", "trailing bytes"},
        {"order_update", "en_US", "[{\"a\":\"\\u0000\"}]", "template.components", "an escaped NUL"},
        {NULL, NULL, "[]", "template.name", "components alone"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        sb_outbound_msg_t t = meta_msg("+14155550100", NULL);
        t.template_name = S(bad[i].name);
        t.template_language = S(bad[i].lang);
        t.template_components = S(bad[i].comps);
        refused(&t, SB_EINVAL, "invalid_template", bad[i].field, bad[i].what);
    }
    char *big = repeat(" ", SB_OUTBOUND_MAX_COMPONENTS - 1);
    big[0] = '[';
    big[SB_OUTBOUND_MAX_COMPONENTS - 2] = ']';
    m.template_components = S(big);
    accepted(&m, "components of SB_OUTBOUND_MAX_COMPONENTS - 1 bytes");
    free(big);
    big = repeat(" ", SB_OUTBOUND_MAX_COMPONENTS + 1);
    big[0] = '[';
    big[SB_OUTBOUND_MAX_COMPONENTS] = ']';
    m.template_components = S(big);
    refused(&m, SB_EINVAL, "invalid_template", "template.components", "components too large");
    free(big);

    m.template_components = S("");
    m.body = S("hello");
    refused(&m, SB_EINVAL, "invalid_template", "template", "a template with a body");
    m.body = S("");
    sb_str_t u = S("https://cdn.example.com/a.png");
    m.media = &u;
    m.nmedia = 1;
    refused(&m, SB_EINVAL, "invalid_template", "template", "a template with media");

    sb_outbound_msg_t t = twilio_msg(SB_CH_TWILIO_WHATSAPP, "+14155550100", NULL);
    t.template_name = S("order_update");
    t.template_language = S("en_US");
    refused(&t, SB_EINVAL, "invalid_template", "template", "a template on twilio_whatsapp");
}

TEST(error_optional)
{
    sb_outbound_msg_t m = twilio_msg(SB_CH_TWILIO_SMS, "nope", "hi");
    is_int(sb_outbound_validate(&m, NULL, NULL), SB_EINVAL, "err and out may be NULL");
    sb_outbound_request_t r;
    is_int(sb_outbound_build(&m, NULL, &r, NULL), SB_EINVAL, "the builder's err may be NULL");
}

/* ---- requests ------------------------------------------------------------------------------------------------- */

static void is_headers(const sb_outbound_request_t *r, const char *const *want, const char *what)
{
    size_t i = 0;
    for (; want[i]; i++)
        is_str(r->http.headers[i], want[i], "%s: header %zu", what, i);
    ok(r->http.headers[i] == NULL, "%s: %zu headers, no more", what, i);
}

static void is_body(const sb_outbound_request_t *r, const char *want, const char *what)
{
    is_int((long long)r->http.body.len, (long long)strlen(want), "%s: body length", what);
    ok(r->http.body.len == strlen(want) && memcmp(r->http.body.p, want, r->http.body.len) == 0, "%s: body bytes",
       what);
    if (r->http.body.len != strlen(want) || memcmp(r->http.body.p, want, r->http.body.len) != 0)
        printf("#   got  %.*s\n#   want %s\n", (int)r->http.body.len, r->http.body.p, want);
}

static const char *const form_headers[] = {"Content-Type: application/x-www-form-urlencoded",
                                           "Accept: application/json", NULL};

TEST(twilio_sms_request)
{
    sb_str_t media[2] = {S("https://cdn.example.com/a.png"), S("https://cdn.example.com/b?x=1&y=a%20b")};
    sb_outbound_msg_t m = twilio_msg(SB_CH_TWILIO_SMS, "+14155550100", "Hello world \xf0\x9f\x98\x80 & 5+5=10%");
    m.media = media;
    m.nmedia = 2;
    m.status_callback = S("https://gw.example.com/webhooks/twilio/7/status");
    sb_outbound_request_t r;
    sb_outbound_error_t err;
    is_int(sb_outbound_build(&m, NULL, &r, &err), 0, "built (%s)", err.message);
    is_str(r.http.method, "POST", "POST");
    is_str(r.http.url, "https://api.twilio.com/2010-04-01/Accounts/" SID "/Messages.json", "URL on the default base");
    is_headers(&r, form_headers, "twilio");
    is_str(r.http.basic_auth, SID ":" TOKEN, "basic auth sid:token");
    is_body(&r,
            "To=%2B14155550100&From=%2B14155550199&Body=Hello+world+%F0%9F%98%80+%26+5%2B5%3D10%25"
            "&MediaUrl=https%3A%2F%2Fcdn.example.com%2Fa.png"
            "&MediaUrl=https%3A%2F%2Fcdn.example.com%2Fb%3Fx%3D1%26y%3Da%2520b"
            "&StatusCallback=https%3A%2F%2Fgw.example.com%2Fwebhooks%2Ftwilio%2F7%2Fstatus",
            "twilio sms");
    is_int(r.http.timeout_ms, 0, "the client's timeout");
    ok(!memmem(r.http.url, strlen(r.http.url), TOKEN, strlen(TOKEN)), "no token in the URL");
    ok(!memmem(r.http.body.p, r.http.body.len, TOKEN, strlen(TOKEN)), "no token in the body");

    /* what the provider decodes is what we meant (proto/form, the mock provider's parser) */
    sb_form_t f;
    is_int(sb_form_parse(&f, r.http.body), 0, "the body is a valid form");
    is_int((long long)f.n, 6, "six pairs");
    ok(sb_str_eq_cstr(sb_form_find_cstr(&f, "To")->value, "+14155550100"), "To decodes");
    ok(sb_str_eq_cstr(sb_form_find_cstr(&f, "Body")->value, "Hello world \xf0\x9f\x98\x80 & 5+5=10%"), "Body decodes");
    ok(sb_str_eq_cstr(f.pairs[4].value, "https://cdn.example.com/b?x=1&y=a%20b"), "second MediaUrl decodes");
    sb_form_cleanup(&f);
    sb_outbound_request_cleanup(&r);
    ok(zeroed(&r, sizeof r), "cleanup zeroes");
    sb_outbound_request_cleanup(&r);
    ok(zeroed(&r, sizeof r), "cleanup twice is fine");

    /* minimal: body only, no callback */
    m.media = NULL;
    m.nmedia = 0;
    m.status_callback = S(NULL);
    m.body = S("~*-._ !'()");
    sb_outbound_endpoints_t ep = {.twilio_api_base = "http://127.0.0.1:9000//"};
    is_int(sb_outbound_build(&m, &ep, &r, NULL), 0, "built on the mock's base");
    is_str(r.http.url, "http://127.0.0.1:9000/2010-04-01/Accounts/" SID "/Messages.json",
           "trailing slashes of the base dropped: no double slash");
    is_body(&r, "To=%2B14155550100&From=%2B14155550199&Body=%7E*-._+%21%27%28%29", "form serializer's safe set");
    sb_outbound_request_cleanup(&r);

    /* media only: no Body pair at all */
    m.body = S(NULL);
    m.media = media;
    m.nmedia = 1;
    is_int(sb_outbound_build(&m, NULL, &r, NULL), 0, "media only");
    is_body(&r, "To=%2B14155550100&From=%2B14155550199&MediaUrl=https%3A%2F%2Fcdn.example.com%2Fa.png",
            "no Body when empty");
    sb_outbound_request_cleanup(&r);

    /* an account sid that needs encoding in the path */
    m.account_sid = S("AC1/2?#%&");
    is_int(sb_outbound_build(&m, NULL, &r, NULL), 0, "odd sid");
    is_str(r.http.url, "https://api.twilio.com/2010-04-01/Accounts/AC1%2F2%3F%23%25%26/Messages.json",
           "the sid is percent-encoded as one path segment");
    is_str(r.http.basic_auth, "AC1/2?#%&:" TOKEN, "and given verbatim to basic auth");
    sb_outbound_request_cleanup(&r);
}

TEST(twilio_whatsapp_request)
{
    sb_outbound_msg_t m = twilio_msg(SB_CH_TWILIO_WHATSAPP, "+5582981234567", "Ol\xc3\xa1!");
    sb_outbound_request_t r;
    is_int(sb_outbound_build(&m, NULL, &r, NULL), 0, "built");
    is_body(&r, "To=whatsapp%3A%2B5582981234567&From=whatsapp%3A%2B14155550199&Body=Ol%C3%A1%21",
            "whatsapp: added to To and From");
    sb_outbound_request_cleanup(&r);

    m.to = S("whatsapp:+5582981234567");
    m.address = S("whatsapp:+14155550199");
    is_int(sb_outbound_build(&m, NULL, &r, NULL), 0, "prefixed forms");
    is_body(&r, "To=whatsapp%3A%2B5582981234567&From=whatsapp%3A%2B14155550199&Body=Ol%C3%A1%21",
            "not doubled");
    sb_outbound_request_cleanup(&r);

    m.to = S("WHATSAPP:+5582981234567");
    is_int(sb_outbound_build(&m, NULL, &r, NULL), 0, "upper-case prefix");
    is_body(&r, "To=whatsapp%3A%2B5582981234567&From=whatsapp%3A%2B14155550199&Body=Ol%C3%A1%21",
            "normalized to whatsapp:+");
    sb_outbound_request_cleanup(&r);

    /* a Messaging Service as the sender */
    m.address = S("MGdb23ec0f89ee2632e46e91d8128f5e2b");
    is_int(sb_outbound_build(&m, NULL, &r, NULL), 0, "messaging service");
    is_body(&r, "To=whatsapp%3A%2B5582981234567&MessagingServiceSid=MGdb23ec0f89ee2632e46e91d8128f5e2b&Body=Ol%C3%A1%21",
            "MessagingServiceSid instead of From");
    sb_outbound_request_cleanup(&r);
}

static const char *const meta_headers[] = {"Content-Type: application/json", "Accept: application/json",
                                           "Authorization: Bearer " META_TOKEN, NULL};

TEST(meta_requests)
{
    sb_outbound_msg_t m = meta_msg("+16505551234", "Hi \"Ann\"\n\xf0\x9f\x98\x80 </b> \\ \x01");
    sb_outbound_request_t r;
    sb_outbound_error_t err;
    is_int(sb_outbound_build(&m, NULL, &r, &err), 0, "text built (%s)", err.message);
    is_str(r.http.method, "POST", "POST");
    is_str(r.http.url, "https://graph.facebook.com/v21.0/" PNID "/messages", "URL on the default base");
    is_headers(&r, meta_headers, "meta");
    ok(r.http.basic_auth == NULL, "no basic auth");
    is_body(&r,
            "{\"messaging_product\":\"whatsapp\",\"recipient_type\":\"individual\",\"to\":\"+16505551234\","
            "\"type\":\"text\",\"text\":{\"preview_url\":false,\"body\":\"Hi \\\"Ann\\\"\\n\xf0\x9f\x98\x80 </b> \\\\ "
            "\\u0001\"}}",
            "meta text");
    sb_outbound_request_cleanup(&r);

    sb_outbound_endpoints_t ep = {.meta_graph_base = "http://127.0.0.1:9000/v21.0/"};
    sb_str_t u = S("https://cdn.example.com/p/a.JPG?sig=1");
    m.body = S("Your receipt");
    m.media = &u;
    m.nmedia = 1;
    is_int(sb_outbound_build(&m, &ep, &r, NULL), 0, "image built");
    is_str(r.http.url, "http://127.0.0.1:9000/v21.0/" PNID "/messages", "mock base, one slash");
    is_body(&r,
            "{\"messaging_product\":\"whatsapp\",\"recipient_type\":\"individual\",\"to\":\"+16505551234\","
            "\"type\":\"image\",\"image\":{\"link\":\"https://cdn.example.com/p/a.JPG?sig=1\","
            "\"caption\":\"Your receipt\"}}",
            "meta image with caption");
    sb_outbound_request_cleanup(&r);

    m.body = S(NULL);
    u = S("https://cdn.example.com/invoice.pdf");
    is_int(sb_outbound_build(&m, NULL, &r, NULL), 0, "document built");
    is_body(&r,
            "{\"messaging_product\":\"whatsapp\",\"recipient_type\":\"individual\",\"to\":\"+16505551234\","
            "\"type\":\"document\",\"document\":{\"link\":\"https://cdn.example.com/invoice.pdf\"}}",
            "meta document, no caption");
    sb_outbound_request_cleanup(&r);

    m.media_type = S("audio");
    is_int(sb_outbound_build(&m, NULL, &r, NULL), 0, "audio built");
    is_body(&r,
            "{\"messaging_product\":\"whatsapp\",\"recipient_type\":\"individual\",\"to\":\"+16505551234\","
            "\"type\":\"audio\",\"audio\":{\"link\":\"https://cdn.example.com/invoice.pdf\"}}",
            "meta audio by media_type");
    sb_outbound_request_cleanup(&r);

    sb_outbound_msg_t t = meta_msg("+16505551234", NULL);
    t.template_name = S("order_shipped");
    t.template_language = S("pt_BR");
    t.template_components = S(" [ {\"type\": \"body\", \"parameters\": [{\"type\": \"text\", \"text\": \"Jo\\u00e3o\"},"
                              " {\"type\":\"currency\",\"currency\":{\"fallback_value\":\"$10.99\",\"code\":\"USD\","
                              "\"amount_1000\":10990}}]} ] ");
    is_int(sb_outbound_build(&t, NULL, &r, NULL), 0, "template built");
    is_body(&r,
            "{\"messaging_product\":\"whatsapp\",\"recipient_type\":\"individual\",\"to\":\"+16505551234\","
            "\"type\":\"template\",\"template\":{\"name\":\"order_shipped\",\"language\":{\"code\":\"pt_BR\"},"
            "\"components\":[{\"type\":\"body\",\"parameters\":[{\"type\":\"text\",\"text\":\"Jo\xc3\xa3o\"},"
            "{\"type\":\"currency\",\"currency\":{\"fallback_value\":\"$10.99\",\"code\":\"USD\","
            "\"amount_1000\":10990}}]}]}}",
            "meta template with components (re-serialized compactly, in order)");
    sb_outbound_request_cleanup(&r);

    t.template_components = S(NULL);
    is_int(sb_outbound_build(&t, NULL, &r, NULL), 0, "template without components");
    is_body(&r,
            "{\"messaging_product\":\"whatsapp\",\"recipient_type\":\"individual\",\"to\":\"+16505551234\","
            "\"type\":\"template\",\"template\":{\"name\":\"order_shipped\",\"language\":{\"code\":\"pt_BR\"}}}",
            "meta template, no components member");
    sb_outbound_request_cleanup(&r);

    /* every body parses back as JSON with the right recipient */
    m = meta_msg("+16505551234", "x");
    is_int(sb_outbound_build(&m, NULL, &r, NULL), 0, "built again");
    json_t *j = json_loadb(r.http.body.p, r.http.body.len, JSON_REJECT_DUPLICATES, NULL);
    ok(j && strcmp(json_string_value(json_object_get(j, "to")), "+16505551234") == 0, "JSON parses back");
    json_decref(j);
    sb_outbound_request_cleanup(&r);

    /* a phone_number_id is one path segment whatever it holds */
    m.address = S("12/34?x");
    is_int(sb_outbound_build(&m, NULL, &r, NULL), 0, "odd phone_number_id");
    is_str(r.http.url, "https://graph.facebook.com/v21.0/12%2F34%3Fx/messages", "percent-encoded");
    sb_outbound_request_cleanup(&r);
}

static void build_refused(const sb_outbound_msg_t *m, const sb_outbound_endpoints_t *ep, const char *code,
                          const char *field, const char *what)
{
    sb_outbound_request_t r;
    sb_outbound_error_t err;
    memset(&r, 0x5a, sizeof r);
    is_int(sb_outbound_build(m, ep, &r, &err), SB_EINVAL, "%s: refused", what);
    is_str(err.code, code, "%s: code", what);
    ok(strstr(err.message, field) != NULL, "%s: names %s (\"%s\")", what, field, err.message);
    ok(!strstr(err.message, TOKEN) && !strstr(err.message, META_TOKEN), "%s: no secret in the message", what);
    ok(zeroed(&r, sizeof r), "%s: request zeroed", what);
}

TEST(build_errors)
{
    sb_outbound_msg_t t = twilio_msg(SB_CH_TWILIO_SMS, "+14155550100", "hi");
    sb_outbound_msg_t m = meta_msg("+14155550100", "hi");
    static const char *const bad_bases[] = {"", "ftp://api.twilio.com", "api.twilio.com", "https://",
                                            "https://api.twilio.com?x=1", "https://api.twilio.com/#f",
                                            "https://api.twilio.com /v1", "https://api.twilio.com/\n"};
    for (size_t i = 0; i < sizeof bad_bases / sizeof bad_bases[0]; i++) {
        sb_outbound_endpoints_t ep = {.twilio_api_base = bad_bases[i], .meta_graph_base = bad_bases[i]};
        char what[80];
        snprintf(what, sizeof what, "base \"%s\"", bad_bases[i]);
        build_refused(&t, &ep, "invalid_config", "twilio_api_base", what);
        build_refused(&m, &ep, "invalid_config", "meta_graph_base", what);
    }

    sb_outbound_msg_t x = t;
    x.address = S("");
    build_refused(&x, NULL, "invalid_sender", "address", "no sender");
    x.address = S("+1 415");
    build_refused(&x, NULL, "invalid_sender", "address", "a space in the sender");
    x.address = S("sms:+14155550199");
    build_refused(&x, NULL, "invalid_sender", "address", "another scheme");
    x.address = S("whatsapp:+14155550199");
    build_refused(&x, NULL, "invalid_sender", "address", "whatsapp: on twilio_sms");
    x = m;
    x.address = S("");
    build_refused(&x, NULL, "invalid_sender", "address", "no phone_number_id");

    x = t;
    x.auth_token = S("");
    build_refused(&x, NULL, "invalid_credentials", "credentials", "no auth token");
    x.auth_token = S("tok\r\nX-Evil: 1");
    build_refused(&x, NULL, "invalid_credentials", "credentials", "CRLF in the token");
    x = t;
    x.account_sid = S("AC1:2");
    build_refused(&x, NULL, "invalid_credentials", "credentials", "a colon in the sid");
    x.account_sid = S("");
    build_refused(&x, NULL, "invalid_credentials", "credentials", "no sid");
    x = m;
    x.access_token = S("");
    build_refused(&x, NULL, "invalid_credentials", "credentials", "no access token");
    x.access_token = S("EAA token");
    build_refused(&x, NULL, "invalid_credentials", "credentials", "a space in the access token");
    x.access_token = S("EAA\r\nX-Evil: 1");
    build_refused(&x, NULL, "invalid_credentials", "credentials", "CRLF in the access token");

    x = t;
    x.status_callback = S("/webhooks/twilio/7/status");
    build_refused(&x, NULL, "invalid_callback", "status_callback", "a relative callback");

    /* Meta ignores status_callback: its statuses go to the app's webhook */
    x = m;
    x.status_callback = S("https://gw.example.com/cb");
    sb_outbound_request_t r;
    is_int(sb_outbound_build(&x, NULL, &r, NULL), 0, "Meta with a callback");
    ok(!memmem(r.http.body.p, r.http.body.len, "gw.example.com", 14), "not sent to Meta");
    sb_outbound_request_cleanup(&r);
}

/* ---- classification ------------------------------------------------------------------------------------------- */

static sb_http_client_res_t http(int status, const char *body, int retry_after)
{
    sb_http_client_res_t res = {.status = status,
                                .sent = true,
                                .body = S(body ? body : ""),
                                .content_type = SB_STR("application/json"),
                                .retry_after_s = retry_after,
                                .detail = ""};
    return res;
}

static sb_outbound_result_t classify(sb_channel_type_t ch, sb_http_client_res_t res)
{
    sb_outbound_result_t out;
    memset(&out, 0x77, sizeof out);
    sb_outbound_classify(ch, &res, &out);
    return out;
}

/* Invariants of every result. */
static void sane(const sb_outbound_result_t *o, const char *what)
{
    ok(o->outcome >= SB_OUTBOUND_SENT && o->outcome <= SB_OUTBOUND_UNKNOWN, "%s: an outcome", what);
    ok(memchr(o->provider_id, 0, sizeof o->provider_id) && memchr(o->error_code, 0, sizeof o->error_code) &&
           memchr(o->error_message, 0, sizeof o->error_message),
       "%s: strings terminated", what);
    ok(sb_utf8_valid(o->error_message, strlen(o->error_message)), "%s: message is UTF-8", what);
    if (o->outcome == SB_OUTBOUND_SENT)
        ok(o->provider_id[0] && !o->error_code[0] && !o->error_message[0], "%s: SENT has an id, no error", what);
    else
        ok(o->error_code[0] && o->error_message[0], "%s: an error code and message", what);
    if (o->outcome != SB_OUTBOUND_RETRY)
        is_int(o->retry_after_s, -1, "%s: retry_after only for RETRY", what);
}

static void expect(sb_channel_type_t ch, sb_http_client_res_t res, sb_outbound_outcome_t want, const char *code,
                   bool fault, const char *what)
{
    sb_outbound_result_t o = classify(ch, res);
    is_str(sb_outbound_outcome_name(o.outcome), sb_outbound_outcome_name(want), "%s: outcome", what);
    is_str(o.error_code, code, "%s: error code", what);
    is_int(o.endpoint_fault, fault, "%s: endpoint fault", what);
    sane(&o, what);
}

/* Twilio's 201 answer to a create (as the mock gives it, which follows the Messages API resource). */
static const char twilio_created[] =
    "{\"account_sid\":\"" SID "\",\"api_version\":\"2010-04-01\",\"body\":\"Hello\",\"date_created\":\"Thu, 24 Aug "
    "2023 05:01:45 +0000\",\"date_sent\":null,\"date_updated\":\"Thu, 24 Aug 2023 05:01:45 +0000\",\"direction\":"
    "\"outbound-api\",\"error_code\":null,\"error_message\":null,\"from\":\"+14155550199\",\"messaging_service_sid\":"
    "null,\"num_media\":\"0\",\"num_segments\":\"1\",\"price\":null,\"price_unit\":\"USD\",\"sid\":"
    "\"SM1f0e2d3c4b5a69788796a5b4c3d2e1f0\",\"status\":\"queued\",\"subresource_uris\":{\"media\":\"/2010-04-01/"
    "Accounts/" SID "/Messages/SM1f0e2d3c4b5a69788796a5b4c3d2e1f0/Media.json\"},\"to\":\"+14155550100\",\"uri\":"
    "\"/2010-04-01/Accounts/" SID "/Messages/SM1f0e2d3c4b5a69788796a5b4c3d2e1f0.json\"}";

/* Twilio's error answers: the shape of its REST error responses (code, message, more_info, status). */
static const char twilio_21211[] =
    "{\"code\": 21211, \"message\": \"The 'To' number +1555 is not a valid phone number.\", \"more_info\": "
    "\"https://www.twilio.com/docs/errors/21211\", \"status\": 400}";
static const char twilio_20003[] =
    "{\"code\":20003,\"detail\":\"Your AccountSid or AuthToken was incorrect.\",\"message\":\"Authentication Error - "
    "invalid username\",\"more_info\":\"https://www.twilio.com/docs/errors/20003\",\"status\":401}";
static const char twilio_21610[] =
    "{\"code\":21610,\"message\":\"Attempt to send to unsubscribed recipient\",\"more_info\":"
    "\"https://www.twilio.com/docs/errors/21610\",\"status\":400}";
static const char twilio_20429[] =
    "{\"code\":20429,\"message\":\"Too Many Requests\",\"more_info\":\"https://www.twilio.com/docs/errors/20429\","
    "\"status\":429}";
static const char twilio_21611[] =
    "{\"code\":21611,\"message\":\"This 'From' number has exceeded the maximum number of queued messages\","
    "\"more_info\":\"https://www.twilio.com/docs/errors/21611\",\"status\":400}";
static const char twilio_20500[] =
    "{\"code\":20500,\"message\":\"Internal Server Error\",\"more_info\":\"https://www.twilio.com/docs/errors/20500\","
    "\"status\":500}";

/* Meta's answers: a send's 200, and Graph API error objects as the WhatsApp Cloud API documents them. */
static const char meta_ok[] =
    "{\"messaging_product\":\"whatsapp\",\"contacts\":[{\"input\":\"+16505551234\",\"wa_id\":\"16505551234\"}],"
    "\"messages\":[{\"id\":\"wamid.HBgLMTY1MDUwNzY1MjAVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA\"}]}";
static const char meta_ok_template[] =
    "{\"messaging_product\":\"whatsapp\",\"contacts\":[{\"input\":\"+16505551234\",\"wa_id\":\"16505551234\"}],"
    "\"messages\":[{\"id\":\"wamid.HBgLMTY1MDUwNzY1MjAVAgARGBJDQjZCMzlEQUE4OTJBMTE4RTUA\",\"message_status\":"
    "\"accepted\"}]}";
static const char meta_131026[] =
    "{\"error\":{\"message\":\"(#131026) Message Undeliverable.\",\"type\":\"OAuthException\",\"code\":131026,"
    "\"error_data\":{\"messaging_product\":\"whatsapp\",\"details\":\"Message Undeliverable.\"},"
    "\"fbtrace_id\":\"AbCdEfGhIjKlMnOpQrStUvW\"}}";
static const char meta_131030[] =
    "{\"error\":{\"message\":\"(#131030) Recipient phone number not in allowed list\",\"type\":\"OAuthException\","
    "\"code\":131030,\"error_data\":{\"messaging_product\":\"whatsapp\",\"details\":\"Recipient phone number not in "
    "allowed list: Add recipient phone number to recipient list and try again.\"},\"error_subcode\":2655007,"
    "\"fbtrace_id\":\"Az8or2yhqkZfEZ-_4Qn_Bam\"}}";
static const char meta_190[] =
    "{\"error\":{\"message\":\"Error validating access token: Session has expired on Friday, 01-Mar-24 10:00:00 "
    "PST.\",\"type\":\"OAuthException\",\"code\":190,\"error_subcode\":463,\"fbtrace_id\":\"A1b2C3d4E5f6G7h8I9j0K\"}}";
static const char meta_130429[] =
    "{\"error\":{\"message\":\"(#130429) Rate limit hit\",\"type\":\"OAuthException\",\"code\":130429,"
    "\"error_data\":{\"messaging_product\":\"whatsapp\",\"details\":\"Cloud API message throughput has been "
    "reached.\"},\"fbtrace_id\":\"AzXyWvUtSrQpOnMlKjIhGfE\"}}";
static const char meta_131056[] =
    "{\"error\":{\"message\":\"(#131056) (Business Account, Consumer Account) pair rate limit hit\",\"type\":"
    "\"OAuthException\",\"code\":131056,\"error_data\":{\"messaging_product\":\"whatsapp\",\"details\":\"Message "
    "failed to send because there were too many messages sent from this phone number to the same phone number in a "
    "short period of time.\"},\"fbtrace_id\":\"A4O5a8RAgePwbcGSu1x2y3z\"}}";
static const char meta_131000[] =
    "{\"error\":{\"message\":\"(#131000) Something went wrong\",\"type\":\"OAuthException\",\"code\":131000,"
    "\"error_data\":{\"messaging_product\":\"whatsapp\",\"details\":\"Message failed to send due to an unknown "
    "error.\"},\"fbtrace_id\":\"AqWeRtYuIoPaSdFgHjKlZxC\"}}";
static const char meta_100[] =
    "{\"error\":{\"message\":\"(#100) Invalid parameter\",\"type\":\"OAuthException\",\"code\":100,"
    "\"error_data\":{\"messaging_product\":\"whatsapp\",\"details\":\"Parameter value is not valid\"},"
    "\"error_subcode\":2494010,\"fbtrace_id\":\"AMnBvCxZlKjHgFdSaPoIuYt\"}}";
static const char meta_131048[] =
    "{\"error\":{\"message\":\"(#131048) Spam rate limit hit\",\"type\":\"OAuthException\",\"code\":131048,"
    "\"fbtrace_id\":\"AtRe1Wq2Er3Ty4Ui5Op6As7\"}}";

TEST(classify_twilio)
{
    sb_outbound_result_t o = classify(SB_CH_TWILIO_SMS, http(201, twilio_created, -1));
    is_int(o.outcome, SB_OUTBOUND_SENT, "201 created: SENT");
    is_str(o.provider_id, "SM1f0e2d3c4b5a69788796a5b4c3d2e1f0", "the sid");
    is_str(o.provider_status, "queued", "status queued");
    is_int(o.http_status, 201, "status kept");
    sane(&o, "201");

    o = classify(SB_CH_TWILIO_WHATSAPP, http(201, "{\"sid\":\"SMabc\",\"status\":\"accepted\"}", -1));
    is_int(o.outcome, SB_OUTBOUND_SENT, "messaging service answer: SENT");
    is_str(o.provider_status, "queued", "accepted is queued");
    o = classify(SB_CH_TWILIO_SMS, http(200, "{\"sid\":\"SMabc\"}", -1));
    is_int(o.outcome, SB_OUTBOUND_SENT, "a 200 with a sid: SENT");
    ok(o.provider_status == NULL, "no status: NULL");
    o = classify(SB_CH_TWILIO_SMS, http(201, "{\"sid\":\"SMabc\",\"status\":\"galloping\"}", -1));
    is_int(o.outcome, SB_OUTBOUND_SENT, "an unknown status is still SENT");
    ok(o.provider_status == NULL, "unknown status: NULL");

    o = classify(SB_CH_TWILIO_SMS,
                 http(201, "{\"sid\":\"SMdead\",\"status\":\"failed\",\"error_code\":30007,\"error_message\":"
                           "\"Carrier violation\"}", -1));
    is_int(o.outcome, SB_OUTBOUND_FAILED, "a 201 that says failed: FAILED");
    is_str(o.provider_id, "SMdead", "with the sid, for later callbacks");
    is_str(o.error_code, "30007", "its error code");
    is_str(o.error_message, "Carrier violation", "its message");
    o = classify(SB_CH_TWILIO_SMS, http(201, "{\"sid\":\"SMdead\",\"status\":\"undelivered\"}", -1));
    is_int(o.outcome, SB_OUTBOUND_FAILED, "undelivered in a 201: FAILED");
    is_str(o.error_code, "undelivered", "the status as the code");
    sane(&o, "undelivered 201");

    static const struct {
        const char *body, *what;
    } unknown[] = {
        {"", "an empty 201"},
        {"<html>ok</html>", "HTML"},
        {"{\"sid\":\"SMabc\"", "truncated JSON"},
        {"{}", "no sid"},
        {"[{\"sid\":\"SMabc\"}]", "an array"},
        {"{\"sid\":\"\"}", "an empty sid"},
        {"{\"sid\":42}", "a number sid"},
        {"{\"sid\":\"SM abc\"}", "a space in the sid"},
        {"{\"sid\":\"SM\\u00e9\"}", "a non-ASCII sid"},
        {"{\"sid\":\"SM\\u0000x\"}", "a NUL in the sid"},
        {"{\"messages\":[{\"id\":\"wamid.x\"}]}", "Meta's shape on a Twilio channel"},
    };
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++)
        expect(SB_CH_TWILIO_SMS, http(201, unknown[i].body, -1), SB_OUTBOUND_UNKNOWN, "bad_response", false,
               unknown[i].what);
    char longsid[256];
    snprintf(longsid, sizeof longsid, "{\"sid\":\"SM%0*d\"}", SB_OUTBOUND_MAX_ID - 2, 0);
    o = classify(SB_CH_TWILIO_SMS, http(201, longsid, -1));
    is_int(o.outcome, SB_OUTBOUND_SENT, "a sid of SB_OUTBOUND_MAX_ID bytes");
    is_int((long long)strlen(o.provider_id), SB_OUTBOUND_MAX_ID, "kept whole");
    snprintf(longsid, sizeof longsid, "{\"sid\":\"SM%0*d\"}", SB_OUTBOUND_MAX_ID - 1, 0);
    expect(SB_CH_TWILIO_SMS, http(201, longsid, -1), SB_OUTBOUND_UNKNOWN, "bad_response", false, "a sid too long");

    o = classify(SB_CH_TWILIO_SMS, http(400, twilio_21211, -1));
    is_int(o.outcome, SB_OUTBOUND_FAILED, "21211 invalid To: FAILED");
    is_str(o.error_code, "21211", "the code");
    is_str(o.error_message, "The 'To' number +1555 is not a valid phone number.", "the message");
    is_int(o.http_status, 400, "400");
    sane(&o, "21211");
    expect(SB_CH_TWILIO_SMS, http(401, twilio_20003, -1), SB_OUTBOUND_FAILED, "20003", false, "401 bad credentials");
    expect(SB_CH_TWILIO_SMS, http(400, twilio_21610, -1), SB_OUTBOUND_FAILED, "21610", false, "unsubscribed");
    expect(SB_CH_TWILIO_SMS, http(404, "{\"code\":20404,\"message\":\"The requested resource was not found\"}", -1),
           SB_OUTBOUND_FAILED, "20404", false, "404");
    expect(SB_CH_TWILIO_SMS, http(400, "{\"code\":\"21211\",\"message\":\"x\"}", -1), SB_OUTBOUND_FAILED, "21211",
           false, "a code as a string");
    expect(SB_CH_TWILIO_SMS, http(400, "{\"code\":\"21x\",\"message\":\"x\"}", -1), SB_OUTBOUND_FAILED, "http_400",
           false, "a code that is no number");
    expect(SB_CH_TWILIO_SMS, http(400, "{\"code\":21211.5}", -1), SB_OUTBOUND_FAILED, "http_400", false,
           "a fractional code");

    o = classify(SB_CH_TWILIO_SMS, http(429, twilio_20429, 7));
    is_int(o.outcome, SB_OUTBOUND_RETRY, "429: RETRY");
    is_int(o.retry_after_s, 7, "Retry-After kept");
    is_str(o.error_code, "20429", "its code");
    ok(!o.endpoint_fault, "throttling is not an endpoint fault");
    sane(&o, "429");
    o = classify(SB_CH_TWILIO_SMS, http(429, "", -1));
    is_int(o.outcome, SB_OUTBOUND_RETRY, "429 without body: RETRY");
    is_int(o.retry_after_s, -1, "no Retry-After");
    is_str(o.error_code, "http_429", "http_429");
    is_str(o.error_message, "HTTP 429", "HTTP 429");
    o = classify(SB_CH_TWILIO_SMS, http(400, twilio_21611, 3));
    is_int(o.outcome, SB_OUTBOUND_RETRY, "21611 queue full under a 400: RETRY");
    is_int(o.retry_after_s, 3, "with its Retry-After");
    expect(SB_CH_TWILIO_SMS, http(400, "{\"code\":63017,\"message\":\"Rate limit exceeded\"}", -1),
           SB_OUTBOUND_RETRY, "63017", false, "63017 rate limit");
    expect(SB_CH_TWILIO_SMS, http(408, "", -1), SB_OUTBOUND_RETRY, "http_408", false, "408");

    o = classify(SB_CH_TWILIO_SMS, http(500, twilio_20500, -1));
    is_int(o.outcome, SB_OUTBOUND_RETRY, "500: RETRY");
    ok(o.endpoint_fault, "500 is an endpoint fault");
    is_str(o.error_code, "20500", "its code");
    o = classify(SB_CH_TWILIO_SMS, http(503, "<html><body>Service Unavailable</body></html>", 99999));
    is_int(o.outcome, SB_OUTBOUND_RETRY, "503 HTML: RETRY");
    is_int(o.retry_after_s, SB_RETRY_AFTER_MAX_S, "a huge Retry-After is capped");
    is_str(o.error_code, "http_503", "http_503");
    is_str(o.error_message, "HTTP 503", "HTTP 503");
    sane(&o, "503");
    for (int st = 500; st <= 599; st += 11) {
        char code[16];
        snprintf(code, sizeof code, "http_%d", st);
        expect(SB_CH_TWILIO_SMS, http(st, "", -1), SB_OUTBOUND_RETRY, code, true, code);
    }
}

TEST(classify_statuses)
{
    /* every status class, on an empty body */
    static const struct {
        int status;
        sb_outbound_outcome_t outcome;
        bool fault;
    } cases[] = {
        {200, SB_OUTBOUND_UNKNOWN, false}, {204, SB_OUTBOUND_UNKNOWN, false}, {299, SB_OUTBOUND_UNKNOWN, false},
        {301, SB_OUTBOUND_FAILED, false},  {307, SB_OUTBOUND_FAILED, false},  {400, SB_OUTBOUND_FAILED, false},
        {401, SB_OUTBOUND_FAILED, false},  {403, SB_OUTBOUND_FAILED, false},  {404, SB_OUTBOUND_FAILED, false},
        {408, SB_OUTBOUND_RETRY, false},   {409, SB_OUTBOUND_FAILED, false},  {413, SB_OUTBOUND_FAILED, false},
        {422, SB_OUTBOUND_FAILED, false},  {429, SB_OUTBOUND_RETRY, false},   {499, SB_OUTBOUND_FAILED, false},
        {500, SB_OUTBOUND_RETRY, true},    {502, SB_OUTBOUND_RETRY, true},    {503, SB_OUTBOUND_RETRY, true},
        {504, SB_OUTBOUND_RETRY, true},    {599, SB_OUTBOUND_RETRY, true},    {100, SB_OUTBOUND_UNKNOWN, false},
        {199, SB_OUTBOUND_UNKNOWN, false}, {600, SB_OUTBOUND_UNKNOWN, false}, {0, SB_OUTBOUND_UNKNOWN, false},
        {-1, SB_OUTBOUND_UNKNOWN, false},
    };
    static const sb_channel_type_t chans[] = {SB_CH_TWILIO_SMS, SB_CH_META_WHATSAPP, SB_CH_TWILIO_VOICE};
    for (size_t c = 0; c < 3; c++) {
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
            char what[64], code[32];
            snprintf(what, sizeof what, "%s HTTP %d", sb_channel_type_name(chans[c]), cases[i].status);
            if (cases[i].status >= 200 && cases[i].status <= 299)
                snprintf(code, sizeof code, "bad_response");
            else
                snprintf(code, sizeof code, "http_%d", cases[i].status);
            expect(chans[c], http(cases[i].status, NULL, 5), cases[i].outcome, code, cases[i].fault, what);
        }
    }
    /* a channel with no known answer format: a 2xx names no message */
    expect(SB_CH_TWILIO_VOICE, http(201, twilio_created, -1), SB_OUTBOUND_UNKNOWN, "bad_response", false,
           "a Twilio body on a voice channel");
    expect(SB_CH_TWILIO_VOICE, http(400, twilio_21211, -1), SB_OUTBOUND_FAILED, "http_400", false,
           "errors keep only the status");
    sb_outbound_result_t o = classify(SB_CH_TWILIO_SMS, http(503, NULL, 0));
    is_int(o.retry_after_s, 0, "Retry-After: 0 is kept");
}

TEST(classify_meta)
{
    sb_outbound_result_t o = classify(SB_CH_META_WHATSAPP, http(200, meta_ok, -1));
    is_int(o.outcome, SB_OUTBOUND_SENT, "200: SENT");
    is_str(o.provider_id, "wamid.HBgLMTY1MDUwNzY1MjAVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA", "messages[0].id");
    ok(o.provider_status == NULL, "no message_status");
    sane(&o, "meta 200");
    o = classify(SB_CH_META_WHATSAPP, http(200, meta_ok_template, -1));
    is_int(o.outcome, SB_OUTBOUND_SENT, "template 200: SENT");
    is_str(o.provider_status, "queued", "message_status accepted is queued");
    o = classify(SB_CH_META_WHATSAPP, http(200, "{\"messages\":[{\"id\":\"wamid.a+b/c==\"}]}", -1));
    is_str(o.provider_id, "wamid.a+b/c==", "the mock's base64 wamid");

    static const struct {
        const char *body, *what;
    } unknown[] = {
        {"{\"messages\":[]}", "no messages"},
        {"{\"messages\":{}}", "messages an object"},
        {"{\"messages\":[{}]}", "no id"},
        {"{\"messages\":[{\"id\":7}]}", "a number id"},
        {"{\"messages\":[\"wamid.x\"]}", "a bare string"},
        {"{\"sid\":\"SMabc\"}", "Twilio's shape on Meta"},
        {"{\"success\":true}", "another Graph answer"},
        {"null", "null"},
    };
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++)
        expect(SB_CH_META_WHATSAPP, http(200, unknown[i].body, -1), SB_OUTBOUND_UNKNOWN, "bad_response", false,
               unknown[i].what);

    o = classify(SB_CH_META_WHATSAPP, http(400, meta_131026, -1));
    is_int(o.outcome, SB_OUTBOUND_FAILED, "131026 undeliverable: FAILED");
    is_str(o.error_code, "131026", "the code");
    is_str(o.error_message, "Message Undeliverable.", "details equal to the title: said once");
    sane(&o, "131026");
    o = classify(SB_CH_META_WHATSAPP, http(400, meta_131030, -1));
    is_int(o.outcome, SB_OUTBOUND_FAILED, "131030: FAILED");
    is_str(o.error_code, "131030", "the code, not the subcode");
    is_str(o.error_message,
           "Recipient phone number not in allowed list: Add recipient phone number to recipient list and try again.",
           "details that repeat the title and say more: the details");
    o = classify(SB_CH_META_WHATSAPP, http(400, meta_130429, -1));
    is_str(o.error_message, "(#130429) Rate limit hit: Cloud API message throughput has been reached.",
           "details that say something else: message, then details");
    o = classify(SB_CH_META_WHATSAPP,
                 http(400, "{\"error\":{\"code\":1,\"message\":\"(#1) \",\"error_data\":{\"details\":\"x\"}}}", -1));
    is_str(o.error_message, "(#1) : x", "an empty title is not matched");
    o = classify(SB_CH_META_WHATSAPP,
                 http(400, "{\"error\":{\"code\":1,\"message\":\"(#1\",\"error_data\":{\"details\":\"(#1 more\"}}}", -1));
    is_str(o.error_message, "(#1 more", "a title without its closing parenthesis");
    expect(SB_CH_META_WHATSAPP, http(401, meta_190, -1), SB_OUTBOUND_FAILED, "190", false, "expired token");
    expect(SB_CH_META_WHATSAPP, http(400, meta_100, -1), SB_OUTBOUND_FAILED, "100", false, "invalid parameter");
    expect(SB_CH_META_WHATSAPP, http(400, meta_131048, -1), SB_OUTBOUND_FAILED, "131048", false, "spam rate limit");
    o = classify(SB_CH_META_WHATSAPP, http(400, meta_130429, 2));
    is_int(o.outcome, SB_OUTBOUND_RETRY, "130429 throughput under a 400: RETRY");
    is_int(o.retry_after_s, 2, "Retry-After kept");
    ok(!o.endpoint_fault, "not an endpoint fault");
    expect(SB_CH_META_WHATSAPP, http(400, meta_131056, -1), SB_OUTBOUND_RETRY, "131056", false, "pair rate limit");
    static const int transient[] = {1, 2, 4, 80007};
    for (size_t i = 0; i < 4; i++) {
        char body[128], code[16];
        snprintf(body, sizeof body, "{\"error\":{\"message\":\"m\",\"type\":\"OAuthException\",\"code\":%d}}",
                 transient[i]);
        snprintf(code, sizeof code, "%d", transient[i]);
        expect(SB_CH_META_WHATSAPP, http(400, body, -1), SB_OUTBOUND_RETRY, code, false, "transient Meta code");
        expect(SB_CH_TWILIO_SMS, http(400, body, -1), SB_OUTBOUND_FAILED, "http_400", false,
               "Meta's body on Twilio: no code");
    }
    expect(SB_CH_TWILIO_SMS, http(400, "{\"code\":130429}", -1), SB_OUTBOUND_FAILED, "130429", false,
           "a Meta code on Twilio is not transient");
    o = classify(SB_CH_META_WHATSAPP, http(500, meta_131000, -1));
    is_int(o.outcome, SB_OUTBOUND_RETRY, "131000 under a 500: RETRY");
    ok(o.endpoint_fault, "an endpoint fault");
    is_str(o.error_message, "(#131000) Something went wrong: Message failed to send due to an unknown error.",
           "message and details");
    expect(SB_CH_META_WHATSAPP, http(400, "{\"error\":{\"code\":\"131026\"}}", -1), SB_OUTBOUND_FAILED, "131026",
           false, "a string code");
    o = classify(SB_CH_META_WHATSAPP, http(400, "{\"error\":{\"code\":131026}}", -1));
    is_str(o.error_message, "HTTP 400", "no message: HTTP status");
    o = classify(SB_CH_META_WHATSAPP, http(400, "{\"error\":{\"code\":1,\"error_data\":{\"details\":\"only d\"}}}", -1));
    is_str(o.error_message, "only d", "details alone");
    expect(SB_CH_META_WHATSAPP, http(400, "{\"error\":\"bad\"}", -1), SB_OUTBOUND_FAILED, "http_400", false,
           "error a string");
    expect(SB_CH_META_WHATSAPP, http(400, "{\"error\":{\"code\":-5}}", -1), SB_OUTBOUND_FAILED, "-5", false,
           "a negative code, as given");

    /* the mock's injected failures (ops/mock_provider.c) */
    expect(SB_CH_META_WHATSAPP,
           http(500, "{\"error\":{\"message\":\"Mock provider: injected failure\",\"type\":\"OAuthException\","
                     "\"code\":131000,\"fbtrace_id\":\"Aabc\"}}", -1),
           SB_OUTBOUND_RETRY, "131000", true, "mock 500");
    expect(SB_CH_META_WHATSAPP,
           http(429, "{\"error\":{\"message\":\"Mock provider: injected failure\",\"type\":\"OAuthException\","
                     "\"code\":130429,\"fbtrace_id\":\"Aabc\"}}", 1),
           SB_OUTBOUND_RETRY, "130429", false, "mock 429");
    expect(SB_CH_TWILIO_SMS,
           http(400, "{\"code\":21211,\"message\":\"Mock provider: injected failure\",\"more_info\":"
                     "\"https://www.twilio.com/docs/errors/21211\",\"status\":400}", -1),
           SB_OUTBOUND_FAILED, "21211", false, "mock permanent 400");
}

TEST(classify_messages)
{
    /* controls become spaces, the length is bounded and cut at a character boundary */
    char body[2048];
    char *text = repeat("\xc3\xa9", 300);
    snprintf(body, sizeof body, "{\"code\":21211,\"message\":\"a\\nb\\t\\u0007c%s\"}", text);
    sb_outbound_result_t o = classify(SB_CH_TWILIO_SMS, http(400, body, -1));
    ok(strncmp(o.error_message, "a b  c\xc3\xa9", 8) == 0, "controls as spaces (\"%.10s\")", o.error_message);
    size_t n = strlen(o.error_message);
    ok(n <= SB_OUTBOUND_MAX_ERRMSG && n >= SB_OUTBOUND_MAX_ERRMSG - 1, "bounded (%zu bytes)", n);
    ok(sb_utf8_valid(o.error_message, n), "cut at a character boundary");
    free(text);

    /* an emoji straddling the limit is dropped whole */
    text = repeat("\xf0\x9f\x98\x80", 100);
    snprintf(body, sizeof body, "{\"error\":{\"code\":100,\"message\":\"ab%s\"}}", text);
    o = classify(SB_CH_META_WHATSAPP, http(400, body, -1));
    n = strlen(o.error_message);
    is_int((long long)n, 2 + 4 * ((SB_OUTBOUND_MAX_ERRMSG - 2) / 4), "whole emoji only (%zu bytes)", n);
    ok(sb_utf8_valid(o.error_message, n), "valid UTF-8");
    free(text);

    /* transport detail from curl goes through the same filter */
    sb_http_client_res_t res = {.err = SB_ETIMEDOUT, .sent = true, .retry_after_s = -1,
                                .detail = "Operation timed out after 30000 milliseconds\r\nwith 0 bytes \xff"};
    sb_outbound_classify(SB_CH_TWILIO_SMS, &res, &o);
    is_str(o.error_message, "Operation timed out after 30000 milliseconds  with 0 bytes ?", "detail cleaned");
    res.detail = "";
    sb_outbound_classify(SB_CH_TWILIO_SMS, &res, &o);
    is_str(o.error_message, sb_strerror(SB_ETIMEDOUT), "no detail: sb_strerror");
}

TEST(classify_transport)
{
    static const struct {
        int err;
        bool sent;
        sb_outbound_outcome_t outcome;
        const char *code;
        bool fault;
    } cases[] = {
        {SB_EUNAVAIL, false, SB_OUTBOUND_RETRY, "unavailable", true},
        {SB_EUNAVAIL, true, SB_OUTBOUND_UNKNOWN, "unavailable", true},
        {SB_ETIMEDOUT, false, SB_OUTBOUND_RETRY, "timeout", true},
        {SB_ETIMEDOUT, true, SB_OUTBOUND_UNKNOWN, "timeout", true},
        {-ECONNRESET, false, SB_OUTBOUND_RETRY, "connection_reset", true},
        {-ECONNRESET, true, SB_OUTBOUND_UNKNOWN, "connection_reset", true},
        {SB_EPARSE, false, SB_OUTBOUND_RETRY, "bad_response", true},
        {SB_EPARSE, true, SB_OUTBOUND_UNKNOWN, "bad_response", true},
        {-EIO, false, SB_OUTBOUND_RETRY, "transport_error", false},
        {-EIO, true, SB_OUTBOUND_UNKNOWN, "transport_error", false},
        {SB_ENOMEM, false, SB_OUTBOUND_RETRY, "transport_error", false},
        {SB_E2BIG, true, SB_OUTBOUND_UNKNOWN, "response_too_big", false},
        {SB_E2BIG, false, SB_OUTBOUND_UNKNOWN, "response_too_big", false},
        {SB_ECANCELED, false, SB_OUTBOUND_UNKNOWN, "canceled", false},
        {SB_ECANCELED, true, SB_OUTBOUND_UNKNOWN, "canceled", false},
        {SB_EINVAL, false, SB_OUTBOUND_FAILED, "invalid_request", false},
        {SB_ECLOSED, false, SB_OUTBOUND_RETRY, "transport_error", false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        sb_http_client_res_t res = {.err = cases[i].err,
                                    .sent = cases[i].sent,
                                    .retry_after_s = 30, /* never used without an answer */
                                    .body = SB_STR("{\"sid\":\"SMx\"}"),
                                    .detail = "curl says"};
        char what[64];
        snprintf(what, sizeof what, "%s, %s", sb_strerror(cases[i].err), cases[i].sent ? "sent" : "not sent");
        expect(SB_CH_TWILIO_SMS, res, cases[i].outcome, cases[i].code, cases[i].fault, what);
        sb_outbound_result_t o = classify(SB_CH_META_WHATSAPP, res);
        is_int(o.outcome, cases[i].outcome, "%s: the same on Meta", what);
        is_int(o.http_status, 0, "%s: no HTTP status", what);
        is_int(o.retry_after_s, -1, "%s: no Retry-After", what);
        is_str(o.error_message, "curl says", "%s: curl's detail", what);
    }
}

TEST(outcome_names)
{
    is_str(sb_outbound_outcome_name(SB_OUTBOUND_SENT), "sent", "sent");
    is_str(sb_outbound_outcome_name(SB_OUTBOUND_RETRY), "retry", "retry");
    is_str(sb_outbound_outcome_name(SB_OUTBOUND_FAILED), "failed", "failed");
    is_str(sb_outbound_outcome_name(SB_OUTBOUND_UNKNOWN), "unknown", "unknown");
    ok(sb_outbound_outcome_name((sb_outbound_outcome_t)0) == NULL, "0: NULL");
    ok(sb_outbound_outcome_name((sb_outbound_outcome_t)5) == NULL, "5: NULL");
}

/* ---- statuses ------------------------------------------------------------------------------------------------- */

TEST(status_mapping)
{
    static const struct {
        sb_channel_type_t ch;
        const char *in, *out;
        int rc;
    } cases[] = {
        {SB_CH_TWILIO_SMS, "queued", "queued", 0},
        {SB_CH_TWILIO_SMS, "accepted", "queued", 0},
        {SB_CH_TWILIO_SMS, "scheduled", "queued", 0},
        {SB_CH_TWILIO_SMS, "sending", "sent", 0},
        {SB_CH_TWILIO_SMS, "sent", "sent", 0},
        {SB_CH_TWILIO_SMS, "delivered", "delivered", 0},
        {SB_CH_TWILIO_SMS, "undelivered", "undelivered", 0},
        {SB_CH_TWILIO_SMS, "failed", "failed", 0},
        {SB_CH_TWILIO_SMS, "canceled", "failed", 0},
        {SB_CH_TWILIO_WHATSAPP, "read", "read", 0},
        {SB_CH_TWILIO_WHATSAPP, "accepted", "queued", 0},
        {SB_CH_TWILIO_SMS, "received", NULL, SB_ENOENT},
        {SB_CH_TWILIO_SMS, "receiving", NULL, SB_ENOENT},
        {SB_CH_TWILIO_SMS, "Queued", NULL, SB_EPARSE},
        {SB_CH_TWILIO_SMS, "", NULL, SB_EPARSE},
        {SB_CH_TWILIO_SMS, "held_for_quality_assessment", NULL, SB_EPARSE},
        {SB_CH_META_WHATSAPP, "sent", "sent", 0},
        {SB_CH_META_WHATSAPP, "delivered", "delivered", 0},
        {SB_CH_META_WHATSAPP, "read", "read", 0},
        {SB_CH_META_WHATSAPP, "failed", "failed", 0},
        {SB_CH_META_WHATSAPP, "accepted", "queued", 0},
        {SB_CH_META_WHATSAPP, "held_for_quality_assessment", "queued", 0},
        {SB_CH_META_WHATSAPP, "paused", "queued", 0},
        {SB_CH_META_WHATSAPP, "deleted", NULL, SB_ENOENT},
        {SB_CH_META_WHATSAPP, "warning", NULL, SB_ENOENT},
        {SB_CH_META_WHATSAPP, "queued", NULL, SB_EPARSE},
        {SB_CH_META_WHATSAPP, "undelivered", NULL, SB_EPARSE},
        {SB_CH_META_WHATSAPP, "SENT", NULL, SB_EPARSE},
        {SB_CH_META_WHATSAPP, "", NULL, SB_EPARSE},
        {SB_CH_TWILIO_VOICE, "sent", NULL, -ENOTSUP},
        {SB_CH_META_MESSENGER, "read", "read", 0}, /* (Messenger and Instagram send through the Graph API too) */
        {SB_CH_LINKED, "read", NULL, -ENOTSUP},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *out = "untouched";
        int rc = sb_outbound_status_normalize(cases[i].ch, S(cases[i].in), &out);
        is_int(rc, cases[i].rc, "%s \"%s\": code", sb_channel_type_name(cases[i].ch), cases[i].in);
        if (cases[i].out)
            is_str(out, cases[i].out, "%s \"%s\" -> %s", sb_channel_type_name(cases[i].ch), cases[i].in,
                   cases[i].out);
        else
            is_str(out, "untouched", "%s \"%s\": *out untouched", sb_channel_type_name(cases[i].ch), cases[i].in);
    }
    const char *out = NULL;
    is_int(sb_outbound_status_normalize(SB_CH_META_WHATSAPP, sb_str("sent\0x", 6), &out), SB_EPARSE,
           "a NUL after the status");
}

/* ---- Messenger, Instagram, Content API templates, the window ---------------------------------------------------- */

#define PAGE "109876543210987"
#define PSID "6000000000000001"

static sb_outbound_msg_t fb_msg(sb_channel_type_t ch, const char *to, const char *body)
{
    sb_outbound_msg_t m = {.channel = ch, .address = S(PAGE), .access_token = S(META_TOKEN), .to = S(to),
                           .body = S(body)};
    return m;
}

TEST(messenger_validation)
{
    sb_outbound_msg_t m = fb_msg(SB_CH_META_MESSENGER, PSID, "hi");
    sb_outbound_valid_t v;
    is_int(sb_outbound_validate(&m, &v, NULL), 0, "a Messenger text");
    is_str(v.to, PSID, "the PSID stored as given");
    is_str(v.type, "text", "type text");
    m.channel = SB_CH_META_INSTAGRAM;
    accepted(&m, "an Instagram text");
    static const char *const bad_to[] = {"", "+14155550100", "60000000a", "123456789012345678901234567890123",
                                         " 6000"};
    for (size_t i = 0; i < sizeof bad_to / sizeof bad_to[0]; i++) {
        sb_outbound_msg_t b = fb_msg(SB_CH_META_MESSENGER, bad_to[i], "hi");
        refused(&b, SB_EINVAL, "invalid_recipient", "to", bad_to[i]);
    }
    sb_str_t u = S("https://cdn.example.com/p/cat.gif");
    m = fb_msg(SB_CH_META_MESSENGER, PSID, "");
    m.media = &u;
    m.nmedia = 1;
    is_int(sb_outbound_validate(&m, &v, NULL), 0, "an image attachment");
    is_str(v.type, "image", "gif is an image");
    u = S("https://cdn.example.com/p/terms.pdf");
    is_int(sb_outbound_validate(&m, &v, NULL), 0, "a file attachment");
    is_str(v.type, "file", "pdf is a file");
    m.channel = SB_CH_META_INSTAGRAM;
    refused(&m, SB_EINVAL, "invalid_media_type", "media_url", "a file on Instagram");
    m.media_type = S("video");
    is_int(sb_outbound_validate(&m, &v, NULL), 0, "media_type wins");
    is_str(v.type, "video", "video as told");
    m.media_type = S("sticker");
    refused(&m, SB_EINVAL, "invalid_media_type", "media_type", "a sticker on Instagram");
    m.media_type = S("");
    u = S("https://cdn.example.com/p/clip.mp4");
    m.body = S("look");
    refused(&m, SB_EINVAL, "invalid_body", "body", "text and an attachment together");
    m.body = S("");
    sb_str_t two[2] = {S("https://cdn.example.com/a.png"), S("https://cdn.example.com/b.png")};
    m.media = two;
    m.nmedia = 2;
    refused(&m, SB_EINVAL, "too_many_media", "media_url", "two attachments");

    char *long_text = malloc(2002);
    memset(long_text, 'a', 2001);
    long_text[2001] = '\0';
    m = fb_msg(SB_CH_META_MESSENGER, PSID, long_text);
    refused(&m, SB_EINVAL, "body_too_long", "body", "2001 characters on Messenger");
    m.body.len = 2000;
    accepted(&m, "2000 characters on Messenger");
    m.body.len = 1001;
    m.channel = SB_CH_META_INSTAGRAM;
    refused(&m, SB_EINVAL, "body_too_long", "body", "1001 bytes on Instagram");
    m.body.len = 1000;
    accepted(&m, "1000 bytes on Instagram");
    free(long_text);

    m = fb_msg(SB_CH_META_MESSENGER, PSID, "your order shipped");
    m.tag = S("POST_PURCHASE_UPDATE");
    accepted(&m, "a Messenger tag");
    m.tag = S("PAIRING_UPDATE");
    refused(&m, SB_EINVAL, "invalid_tag", "tag", "a retired tag");
    m.channel = SB_CH_META_INSTAGRAM;
    m.tag = S("POST_PURCHASE_UPDATE");
    refused(&m, SB_EINVAL, "invalid_tag", "tag", "another tag than HUMAN_AGENT on Instagram");
    m.tag = S("HUMAN_AGENT");
    accepted(&m, "HUMAN_AGENT on Instagram");
    sb_outbound_msg_t t = meta_msg("+14155550100", "hi");
    t.tag = S("HUMAN_AGENT");
    refused(&t, SB_EINVAL, "invalid_tag", "tag", "a tag on WhatsApp");
    m = fb_msg(SB_CH_META_MESSENGER, PSID, "");
    m.template_name = S("order_update");
    m.template_language = S("en_US");
    refused(&m, SB_EINVAL, "invalid_template", "template", "a template on Messenger");
}

TEST(messenger_requests)
{
    sb_outbound_msg_t m = fb_msg(SB_CH_META_MESSENGER, PSID, "Hi \"Ann\" \xf0\x9f\x98\x80");
    sb_outbound_request_t r;
    sb_outbound_error_t err;
    is_int(sb_outbound_build(&m, NULL, &r, &err), 0, "text built (%s)", err.message);
    is_str(r.http.url, "https://graph.facebook.com/v21.0/" PAGE "/messages", "POST /{page id}/messages");
    is_headers(&r, meta_headers, "messenger");
    is_body(&r,
            "{\"recipient\":{\"id\":\"" PSID "\"},\"messaging_type\":\"RESPONSE\",\"message\":{\"text\":"
            "\"Hi \\\"Ann\\\" \xf0\x9f\x98\x80\"}}",
            "messenger text");
    sb_outbound_request_cleanup(&r);

    m.tag = S("HUMAN_AGENT");
    is_int(sb_outbound_build(&m, NULL, &r, NULL), 0, "tagged built");
    is_body(&r,
            "{\"recipient\":{\"id\":\"" PSID "\"},\"messaging_type\":\"MESSAGE_TAG\",\"tag\":\"HUMAN_AGENT\","
            "\"message\":{\"text\":\"Hi \\\"Ann\\\" \xf0\x9f\x98\x80\"}}",
            "messenger tagged text");
    sb_outbound_request_cleanup(&r);

    sb_str_t u = S("https://cdn.example.com/v/clip.MP4");
    m = fb_msg(SB_CH_META_INSTAGRAM, PSID, "");
    m.media = &u;
    m.nmedia = 1;
    sb_outbound_endpoints_t ep = {.meta_graph_base = "http://127.0.0.1:9000/v21.0"};
    is_int(sb_outbound_build(&m, &ep, &r, NULL), 0, "Instagram video built");
    is_str(r.http.url, "http://127.0.0.1:9000/v21.0/" PAGE "/messages", "POST /{IG account id}/messages");
    is_body(&r,
            "{\"recipient\":{\"id\":\"" PSID "\"},\"messaging_type\":\"RESPONSE\",\"message\":{\"attachment\":"
            "{\"type\":\"video\",\"payload\":{\"url\":\"https://cdn.example.com/v/clip.MP4\"}}}}",
            "instagram attachment");
    sb_outbound_request_cleanup(&r);

    m.address = S("page:1");
    is_int(sb_outbound_build(&m, NULL, &r, &err), SB_EINVAL, "a bad page id refused");
    is_str(err.code, "invalid_sender", "invalid_sender");

    sb_outbound_result_t o;
    sb_http_client_res_t res = http(200, "{\"recipient_id\":\"" PSID "\",\"message_id\":\"m_AG5Hz2Uq7tuwNEhX\"}", -1);
    sb_outbound_classify(SB_CH_META_MESSENGER, &res, &o);
    is_int(o.outcome, SB_OUTBOUND_SENT, "the Send API's answer: SENT");
    is_str(o.provider_id, "m_AG5Hz2Uq7tuwNEhX", "message_id is the provider id");
    res = http(400, "{\"error\":{\"message\":\"(#10) This message is sent outside of allowed window.\","
                    "\"type\":\"OAuthException\",\"code\":10,\"error_subcode\":2018278,\"fbtrace_id\":\"Ab\"}}", -1);
    sb_outbound_classify(SB_CH_META_INSTAGRAM, &res, &o);
    is_int(o.outcome, SB_OUTBOUND_FAILED, "outside the window: FAILED, not retried");
    is_str(o.error_code, "10", "Meta's code 10");
    res = http(400, "{\"error\":{\"message\":\"(#613) Calls to this api have exceeded the rate limit.\","
                    "\"type\":\"OAuthException\",\"code\":613}}", -1);
    sb_outbound_classify(SB_CH_META_MESSENGER, &res, &o);
    is_int(o.outcome, SB_OUTBOUND_RETRY, "the Send API's rate limit (613): RETRY");
}

TEST(content_templates)
{
    sb_outbound_msg_t m = twilio_msg(SB_CH_TWILIO_WHATSAPP, "whatsapp:+14155550100", NULL);
    m.content_sid = S("HXb5b62575e6e4ff6129ad7c8efe1f983e");
    m.content_variables = S("{\"1\":\"12/1\",\"2\":\"3pm \xc3\xa9\"}");
    sb_outbound_valid_t v;
    is_int(sb_outbound_validate(&m, &v, NULL), 0, "a Content API template");
    is_str(v.type, "template", "type template");
    sb_outbound_request_t r;
    is_int(sb_outbound_build(&m, NULL, &r, NULL), 0, "built");
    is_body(&r,
            "To=whatsapp%3A%2B14155550100&From=whatsapp%3A%2B14155550199&ContentSid=HXb5b62575e6e4ff6129ad7c8efe1f983e"
            "&ContentVariables=%7B%221%22%3A%2212%2F1%22%2C%222%22%3A%223pm+%C3%A9%22%7D",
            "ContentSid and ContentVariables in place of Body");
    sb_outbound_request_cleanup(&r);
    m.content_variables = S("");
    m.channel = SB_CH_TWILIO_SMS;
    m.to = S("+14155550100");
    is_int(sb_outbound_build(&m, NULL, &r, NULL), 0, "on SMS too, without variables");
    is_body(&r, "To=%2B14155550100&From=%2B14155550199&ContentSid=HXb5b62575e6e4ff6129ad7c8efe1f983e", "sid only");
    sb_outbound_request_cleanup(&r);

    static const struct {
        const char *sid, *vars, *field, *what;
    } bad[] = {
        {"HX123", NULL, "template.content_sid", "a short sid"},
        {"MGb5b62575e6e4ff6129ad7c8efe1f983e", NULL, "template.content_sid", "not HX"},
        {"HXb5b62575e6e4ff6129ad7c8efe1f98zz", NULL, "template.content_sid", "not hex"},
        {"HXb5b62575e6e4ff6129ad7c8efe1f983e", "[]", "template.variables", "variables an array"},
        {"HXb5b62575e6e4ff6129ad7c8efe1f983e", "{\"1\":2}", "template.variables", "a number value"},
        {"HXb5b62575e6e4ff6129ad7c8efe1f983e", "{\"\":\"x\"}", "template.variables", "an empty key"},
        {"HXb5b62575e6e4ff6129ad7c8efe1f983e", "{\"1\":\"a\",\"1\":\"b\"}", "template.variables", "duplicate keys"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        sb_outbound_msg_t t = twilio_msg(SB_CH_TWILIO_WHATSAPP, "+14155550100", NULL);
        t.content_sid = S(bad[i].sid);
        t.content_variables = S(bad[i].vars);
        refused(&t, SB_EINVAL, "invalid_template", bad[i].field, bad[i].what);
    }
    m = twilio_msg(SB_CH_TWILIO_WHATSAPP, "+14155550100", "hello");
    m.content_sid = S("HXb5b62575e6e4ff6129ad7c8efe1f983e");
    refused(&m, SB_EINVAL, "invalid_template", "template", "a content template with a body");
    m = meta_msg("+14155550100", NULL);
    m.content_sid = S("HXb5b62575e6e4ff6129ad7c8efe1f983e");
    refused(&m, SB_EINVAL, "invalid_template", "template.content_sid", "a content sid on Meta");
}

TEST(window)
{
    const int64_t H = 3600 * 1000LL;
    sb_outbound_error_t err;
    sb_outbound_msg_t sms = twilio_msg(SB_CH_TWILIO_SMS, "+14155550100", "hi");
    is_int(sb_outbound_window(&sms, -1, &err), 0, "SMS has no window");
    static const sb_channel_type_t windowed[] = {SB_CH_META_WHATSAPP, SB_CH_TWILIO_WHATSAPP, SB_CH_META_MESSENGER,
                                                 SB_CH_META_INSTAGRAM};
    for (size_t i = 0; i < 4; i++) {
        sb_outbound_msg_t m = {.channel = windowed[i], .body = S("hi")};
        is_int(sb_outbound_window(&m, 0, NULL), 0, "type %d: free-form just after the customer wrote", (int)windowed[i]);
        is_int(sb_outbound_window(&m, 24 * H - 1, NULL), 0, "type %d: and 1 ms before 24 h", (int)windowed[i]);
        is_int(sb_outbound_window(&m, 24 * H, &err), SB_EACCES, "type %d: not at 24 h", (int)windowed[i]);
        is_str(err.code, "outside_window", "type %d: outside_window", (int)windowed[i]);
        is_int(sb_outbound_window(&m, -1, &err), SB_EACCES, "type %d: nor when the customer never wrote",
               (int)windowed[i]);
        ok(strstr(err.message, "not written") != NULL, "type %d: the message says so (%s)", (int)windowed[i],
           err.message);
    }
    sb_outbound_msg_t wa = {.channel = SB_CH_META_WHATSAPP, .template_name = S("order_update"),
                            .template_language = S("en_US")};
    is_int(sb_outbound_window(&wa, -1, NULL), 0, "a WhatsApp template goes at any time");
    sb_outbound_msg_t tw = {.channel = SB_CH_TWILIO_WHATSAPP, .content_sid = S("HXb5b62575e6e4ff6129ad7c8efe1f983e")};
    is_int(sb_outbound_window(&tw, 48 * H, NULL), 0, "a Twilio Content template goes at any time");
    tw.content_sid = S("");
    tw.template_name = S("order_update");
    is_int(sb_outbound_window(&tw, 48 * H, NULL), SB_EACCES, "a Meta-style template does not open Twilio's");
    sb_outbound_msg_t fb = {.channel = SB_CH_META_MESSENGER, .body = S("hi"), .tag = S("ACCOUNT_UPDATE")};
    is_int(sb_outbound_window(&fb, -1, NULL), 0, "an ACCOUNT_UPDATE tag goes at any time");
    fb.tag = S("HUMAN_AGENT");
    is_int(sb_outbound_window(&fb, 6 * 24 * H, NULL), 0, "HUMAN_AGENT within 7 days");
    is_int(sb_outbound_window(&fb, 7 * 24 * H, &err), SB_EACCES, "HUMAN_AGENT not after 7 days");
    is_int(sb_outbound_window(&fb, -1, NULL), SB_EACCES, "nor to someone who never wrote");
    fb.channel = SB_CH_META_INSTAGRAM;
    is_int(sb_outbound_window(&fb, 3 * 24 * H, NULL), 0, "Instagram: HUMAN_AGENT within 7 days");
    fb.tag = S("ACCOUNT_UPDATE");
    is_int(sb_outbound_window(&fb, 3 * 24 * H, NULL), SB_EACCES, "Instagram: no other tag");
}

int main(void)
{
    RUN(channels);
    RUN(recipients);
    RUN(bodies);
    RUN(body_limits);
    RUN(media);
    RUN(meta_media_types);
    RUN(templates);
    RUN(error_optional);
    RUN(twilio_sms_request);
    RUN(twilio_whatsapp_request);
    RUN(meta_requests);
    RUN(build_errors);
    RUN(classify_twilio);
    RUN(classify_statuses);
    RUN(classify_meta);
    RUN(classify_messages);
    RUN(classify_transport);
    RUN(outcome_names);
    RUN(status_mapping);
    RUN(messenger_validation);
    RUN(messenger_requests);
    RUN(content_templates);
    RUN(window);
    return tap_done();
}
