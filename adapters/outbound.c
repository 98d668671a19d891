/* Outbound sends: validation, Twilio and Meta requests, answers into outcomes, backoff; see outbound.h.
 *
 * Validation walks the message once in a fixed order (channel, recipient, body encoding, template, content, media,
 * lengths) and stops at the first problem, so a client sees one error naming one field. The builder validates again
 * before it writes anything: a request is only ever made of a message that would have been accepted. Request bytes
 * are produced here, not by curl (which would only add its basic-auth header), so tests can compare them exactly.
 *
 * The classifier reads provider bodies defensively (they are outside bytes, and a proxy may answer in their place):
 * a member of the wrong type counts as absent, and every string copied out is reduced to bounded, valid UTF-8. */
#include "adapters/outbound.h"

#include "adapters/crypto.h"
#include "adapters/twilio.h"
#include "proto/err.h"
#include "proto/line.h"
#include "proto/mem.h"

#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#define MAX_SENDER 64          /* bytes in a channel address */
#define MAX_TWILIO_CRED 512    /* bytes in an account sid or auth token (the admin API's limit) */
#define MAX_META_TOKEN 4096    /* bytes in a Meta access token */
#define MAX_PARSED_BODY (1024 * 1024) /* answers larger than this are not parsed (http_client's default limit) */

typedef enum provider { P_NONE, P_TWILIO, P_META } provider_t;

static provider_t provider_of(sb_channel_type_t ch)
{
    switch (ch) {
    case SB_CH_TWILIO_SMS:
    case SB_CH_TWILIO_WHATSAPP:
        return P_TWILIO;
    case SB_CH_META_WHATSAPP:
    case SB_CH_META_MESSENGER:
    case SB_CH_META_INSTAGRAM:
        return P_META;
    default:
        return P_NONE;
    }
}

/* Messenger Platform channels (the Send API's shape), as opposed to WhatsApp's. */
static bool is_fb(sb_channel_type_t ch)
{
    return ch == SB_CH_META_MESSENGER || ch == SB_CH_META_INSTAGRAM;
}

static int __attribute__((format(printf, 4, 5)))
fail(sb_outbound_error_t *err, int rc, const char *code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        err->code = code;
        va_start(ap, fmt);
        vsnprintf(err->message, sizeof err->message, fmt, ap);
        va_end(ap);
    }
    return rc;
}

/* ---- small checks --------------------------------------------------------------------------------------------- */

static bool ieq_prefix(sb_str_t s, const char *prefix)
{
    size_t n = strlen(prefix);
    return s.len >= n && strncasecmp(s.p, prefix, n) == 0;
}

/* '+', then 8..15 digits, the first not 0. */
static bool is_e164(sb_str_t s)
{
    if (s.len < 9 || s.len > 16 || s.p[0] != '+' || s.p[1] < '1' || s.p[1] > '9')
        return false;
    for (size_t i = 2; i < s.len; i++)
        if (s.p[i] < '0' || s.p[i] > '9')
            return false;
    return true;
}

/* A PSID or IGSID: 1..SB_OUTBOUND_MAX_SCOPED_ID digits. */
static bool is_scoped_id(sb_str_t s)
{
    if (s.len == 0 || s.len > SB_OUTBOUND_MAX_SCOPED_ID)
        return false;
    for (size_t i = 0; i < s.len; i++)
        if (s.p[i] < '0' || s.p[i] > '9')
            return false;
    return true;
}

/* Every byte in 0x21..0x7e. */
static bool printable_ascii(sb_str_t s)
{
    for (size_t i = 0; i < s.len; i++)
        if ((unsigned char)s.p[i] < 0x21 || (unsigned char)s.p[i] > 0x7e)
            return false;
    return true;
}

/* Counts the code points of s into *n; false when s is not valid UTF-8 or holds a NUL. */
static bool utf8_chars(sb_str_t s, size_t *n)
{
    if (s.len && (memchr(s.p, '\0', s.len) || !sb_utf8_valid(s.p, s.len)))
        return false;
    size_t c = 0;
    for (size_t i = 0; i < s.len; i++)
        c += ((unsigned char)s.p[i] & 0xc0) != 0x80;
    *n = c;
    return true;
}

/* Why u is not an absolute http(s) URL we will hand to a provider, or NULL when it is one. */
static const char *url_problem(sb_str_t u)
{
    if (u.len == 0)
        return "is empty";
    if (u.len > SB_OUTBOUND_MAX_URL)
        return "is too long";
    if (!printable_ascii(u))
        return "holds a space, a control character or a non-ASCII byte (percent-encode them)";
    for (size_t i = 0; i < u.len; i++)
        if (strchr("\"<>\\^`{|}", u.p[i]))
            return "holds a character that URLs do not allow";
    size_t skip;
    if (ieq_prefix(u, "https://"))
        skip = 8;
    else if (ieq_prefix(u, "http://"))
        skip = 7;
    else
        return "is not an absolute http:// or https:// URL";
    size_t end = skip;
    while (end < u.len && u.p[end] != '/' && u.p[end] != '?' && u.p[end] != '#')
        end++;
    sb_str_t host = sb_str(u.p + skip, end - skip);
    const char *at = host.len ? memrchr(host.p, '@', host.len) : NULL;
    if (at) {
        host.len -= (size_t)(at + 1 - host.p);
        host.p = at + 1;
    }
    if (host.len == 0 || host.p[0] == ':')
        return "has no host";
    return NULL;
}

static bool in_list(sb_str_t s, const char *const *list)
{
    for (; *list; list++)
        if (sb_str_eq_cstr(s, *list))
            return true;
    return false;
}

static const char *const media_types[] = {"image", "video", "audio", "document", "sticker", NULL};

typedef struct ext_type {
    const char *ext, *type;
} ext_type_t;

/* The type map gives the extension of an http(s) URL's path's last segment (case aside), or fallback when it has
 * none or one the map does not name. */
static const char *type_by_extension(sb_str_t u, const ext_type_t *map, size_t n, const char *fallback)
{
    size_t i = ieq_prefix(u, "https://") ? 8 : 7, end;
    while (i < u.len && u.p[i] != '/' && u.p[i] != '?' && u.p[i] != '#') /* past the host */
        i++;
    for (end = i; end < u.len && u.p[end] != '?' && u.p[end] != '#'; end++)
        ;
    size_t dot = end;
    while (dot > i && u.p[dot - 1] != '.' && u.p[dot - 1] != '/')
        dot--;
    if (dot == i || u.p[dot - 1] != '.')
        return fallback;
    sb_str_t ext = sb_str(u.p + dot, end - dot);
    for (size_t k = 0; k < n; k++)
        if (ext.len == strlen(map[k].ext) && strncasecmp(ext.p, map[k].ext, ext.len) == 0)
            return map[k].type;
    return fallback;
}

/* Meta's message type for a media URL, from the extension of its path's last segment. */
static const char *media_type_of_url(sb_str_t u)
{
    static const ext_type_t map[] = {
        {"jpg", "image"}, {"jpeg", "image"}, {"png", "image"},  {"mp4", "video"}, {"3gp", "video"},
        {"aac", "audio"}, {"amr", "audio"},  {"mp3", "audio"},  {"m4a", "audio"}, {"ogg", "audio"},
        {"opus", "audio"}, {"webp", "sticker"},
    };
    return type_by_extension(u, map, sizeof map / sizeof map[0], "document");
}

static bool is_template_name(sb_str_t s)
{
    if (s.len == 0 || s.len > SB_OUTBOUND_MAX_TEMPLATE_NAME)
        return false;
    for (size_t i = 0; i < s.len; i++) {
        char c = s.p[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_'))
            return false;
    }
    return true;
}

static bool is_language(sb_str_t s)
{
    if (s.len < 2 || s.len > 15)
        return false;
    for (size_t i = 0; i < s.len; i++) {
        char c = s.p[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == '-'))
            return false;
    }
    return true;
}

/* Parses template components: a JSON array of objects. Returns the array (the caller's) or NULL. */
static json_t *parse_components(sb_str_t s)
{
    if (s.len > SB_OUTBOUND_MAX_COMPONENTS)
        return NULL;
    json_error_t jerr;
    json_t *j = json_loadb(s.p, s.len, JSON_REJECT_DUPLICATES, &jerr);
    if (!json_is_array(j))
        goto bad;
    for (size_t i = 0; i < json_array_size(j); i++)
        if (!json_is_object(json_array_get(j, i)))
            goto bad;
    return j;
bad:
    json_decref(j);
    return NULL;
}

/* ---- validation ----------------------------------------------------------------------------------------------- */

/* Messenger / Instagram attachment type for a media URL, from its path's extension. */
static const char *fb_type_of_url(sb_str_t u)
{
    static const ext_type_t map[] = {
        {"jpg", "image"}, {"jpeg", "image"}, {"png", "image"}, {"gif", "image"}, {"webp", "image"},
        {"mp4", "video"}, {"mov", "video"},  {"webm", "video"}, {"avi", "video"}, {"3gp", "video"},
        {"aac", "audio"}, {"m4a", "audio"},  {"mp3", "audio"}, {"ogg", "audio"}, {"opus", "audio"},
        {"wav", "audio"}, {"amr", "audio"},
    };
    return type_by_extension(u, map, sizeof map / sizeof map[0], "file");
}

/* "HX" and 32 hex digits. */
static bool is_content_sid(sb_str_t s)
{
    if (s.len != 34 || s.p[0] != 'H' || s.p[1] != 'X')
        return false;
    for (size_t i = 2; i < s.len; i++)
        if (!strchr("0123456789abcdefABCDEF", s.p[i]))
            return false;
    return true;
}

/* Twilio ContentVariables: a JSON object of at most SB_OUTBOUND_MAX_VARIABLES bytes, non-empty keys, string
 * values. */
static bool good_variables(sb_str_t s)
{
    if (s.len > SB_OUTBOUND_MAX_VARIABLES)
        return false;
    json_error_t jerr;
    json_t *j = json_loadb(s.p, s.len, JSON_REJECT_DUPLICATES, &jerr);
    bool ok = json_is_object(j);
    const char *k;
    json_t *v;
    json_object_foreach(ok ? j : NULL, k, v) if (!*k || !json_is_string(v)) ok = false;
    json_decref(j);
    return ok;
}

static const char *const messenger_tags[] = {"HUMAN_AGENT", "CONFIRMED_EVENT_UPDATE", "POST_PURCHASE_UPDATE",
                                             "ACCOUNT_UPDATE", NULL};
static const char *const instagram_tags[] = {"HUMAN_AGENT", NULL};

int sb_outbound_validate(const sb_outbound_msg_t *m, sb_outbound_valid_t *out, sb_outbound_error_t *err)
{
    sb_outbound_valid_t v;
    memset(&v, 0, sizeof v);
    if (err) {
        err->code = "";
        err->message[0] = '\0';
    }

    provider_t p = provider_of(m->channel);
    const char *chname = sb_channel_type_name(m->channel);
    if (p == P_NONE)
        return fail(err, -ENOTSUP, "unsupported_channel", "channel: %s channels cannot send messages",
                    chname ? chname : "this type of");
    bool whatsapp = m->channel != SB_CH_TWILIO_SMS && !is_fb(m->channel);
    bool fb = is_fb(m->channel);

    sb_str_t to = m->to;
    if (m->channel == SB_CH_TWILIO_WHATSAPP && ieq_prefix(to, "whatsapp:")) {
        to.p += 9;
        to.len -= 9;
    }
    if (fb ? !is_scoped_id(to) : !is_e164(to))
        return fail(err, SB_EINVAL, "invalid_recipient", fb ? "to: must be the %s (digits) the customer wrote from"
                                                            : "to: must be an E.164 number such as +15005550006%s",
                    fb ? (m->channel == SB_CH_META_MESSENGER ? "page-scoped id (PSID)" : "Instagram-scoped id (IGSID)")
                    : m->channel == SB_CH_TWILIO_WHATSAPP ? " (optionally prefixed with whatsapp:)"
                                                          : "");
    memcpy(v.to, to.p, to.len);
    v.to[to.len] = '\0';

    if (!utf8_chars(m->body, &v.body_chars))
        return fail(err, SB_EINVAL, "invalid_body", "body: must be valid UTF-8 without NUL characters");

    if (m->tag.len) {
        const char *const *tags = m->channel == SB_CH_META_MESSENGER   ? messenger_tags
                                  : m->channel == SB_CH_META_INSTAGRAM ? instagram_tags
                                                                       : NULL;
        if (!tags)
            return fail(err, SB_EINVAL, "invalid_tag", "tag: only Messenger and Instagram messages take a tag");
        if (!in_list(m->tag, tags))
            return fail(err, SB_EINVAL, "invalid_tag",
                        m->channel == SB_CH_META_INSTAGRAM
                            ? "tag: Instagram takes only HUMAN_AGENT"
                            : "tag: must be HUMAN_AGENT, CONFIRMED_EVENT_UPDATE, POST_PURCHASE_UPDATE or ACCOUNT_UPDATE");
    }

    if (m->content_sid.len || m->content_variables.len) {
        if (p != P_TWILIO)
            return fail(err, SB_EINVAL, "invalid_template",
                        "template.content_sid: Content API templates are Twilio's (%s channels take %s)", chname,
                        m->channel == SB_CH_META_WHATSAPP ? "a template with name and language" : "no template");
        if (m->body.len || m->nmedia)
            return fail(err, SB_EINVAL, "invalid_template", "template: cannot be combined with body or media_url");
        if (!is_content_sid(m->content_sid))
            return fail(err, SB_EINVAL, "invalid_template",
                        "template.content_sid: must be a Content SID, HX and 32 hex digits");
        if (m->content_variables.len && !good_variables(m->content_variables))
            return fail(err, SB_EINVAL, "invalid_template",
                        "template.variables: must be an object of strings of at most %d bytes",
                        SB_OUTBOUND_MAX_VARIABLES);
        v.type = "template";
        if (out)
            *out = v;
        return 0;
    }

    bool tmpl = m->template_name.len || m->template_language.len || m->template_components.len;
    if (tmpl) {
        if (m->channel != SB_CH_META_WHATSAPP)
            return fail(err, SB_EINVAL, "invalid_template", "template: %s",
                        p == P_TWILIO ? "Twilio channels take a Content API template {content_sid, variables}"
                                      : "Messenger and Instagram take no templates (send a body, with a tag outside "
                                        "the 24-hour window)");
        if (m->body.len || m->nmedia)
            return fail(err, SB_EINVAL, "invalid_template", "template: cannot be combined with body or media_url");
        if (!is_template_name(m->template_name))
            return fail(err, SB_EINVAL, "invalid_template",
                        "template.name: must be 1 to %d lower-case letters, digits and underscores",
                        SB_OUTBOUND_MAX_TEMPLATE_NAME);
        if (!is_language(m->template_language))
            return fail(err, SB_EINVAL, "invalid_template",
                        "template.language: must be a language code such as en_US");
        if (m->template_components.len) {
            json_t *c = parse_components(m->template_components);
            if (!c)
                return fail(err, SB_EINVAL, "invalid_template",
                            "template.components: must be a JSON array of objects of at most %d bytes",
                            SB_OUTBOUND_MAX_COMPONENTS);
            json_decref(c);
        }
        v.type = "template";
        if (out)
            *out = v;
        return 0;
    }

    if (m->body.len == 0 && m->nmedia == 0)
        return fail(err, SB_EINVAL, "empty_message", "body: a body, a media_url or a template is required");

    size_t max_media = whatsapp || fb ? 1 : SB_OUTBOUND_MAX_MEDIA;
    if (m->nmedia > max_media)
        return fail(err, SB_EINVAL, "too_many_media", "media_url: at most %zu per message on %s channels", max_media,
                    chname);
    for (size_t i = 0; i < m->nmedia; i++) {
        const char *why = url_problem(m->media[i]);
        if (why)
            return fail(err, SB_EINVAL, "invalid_media_url", "media_url[%zu]: %s", i, why);
    }
    if (m->media_type.len && !in_list(m->media_type, media_types))
        return fail(err, SB_EINVAL, "invalid_media_type",
                    "media_type: must be image, video, audio, document or sticker");

    size_t limit;
    if (fb) {
        if (m->nmedia && m->body.len)
            return fail(err, SB_EINVAL, "invalid_body",
                        "body: %s sends a text or one attachment per message, not both (no captions)", chname);
        if (m->nmedia) {
            v.type = m->media_type.len ? NULL : fb_type_of_url(m->media[0]);
            if (sb_str_eq_cstr(m->media_type, "image") || sb_str_eq_cstr(m->media_type, "video") ||
                sb_str_eq_cstr(m->media_type, "audio"))
                v.type = sb_str_eq_cstr(m->media_type, "image")   ? "image"
                         : sb_str_eq_cstr(m->media_type, "video") ? "video"
                                                                  : "audio";
            else if (sb_str_eq_cstr(m->media_type, "document"))
                v.type = "file";
            else if (m->media_type.len)
                return fail(err, SB_EINVAL, "invalid_media_type", "media_type: %s takes image, video, audio or "
                                                                  "document", chname);
            if (m->channel == SB_CH_META_INSTAGRAM && strcmp(v.type, "file") == 0)
                return fail(err, SB_EINVAL, "invalid_media_type",
                            "media_url: Instagram sends images, video and audio only (not files)");
        } else {
            v.type = "text";
        }
        bool ig = m->channel == SB_CH_META_INSTAGRAM;
        if (ig ? m->body.len > SB_OUTBOUND_INSTAGRAM_MAX_TEXT : v.body_chars > SB_OUTBOUND_MESSENGER_MAX_TEXT)
            return fail(err, SB_EINVAL, "body_too_long", "body: longer than %d %s", ig ? 1000 : 2000,
                        ig ? "bytes (Instagram's limit)" : "characters (Messenger's limit)");
        if (out)
            *out = v;
        return 0;
    }
    if (p == P_TWILIO) {
        v.type = m->nmedia ? "media" : "text";
        limit = SB_OUTBOUND_TWILIO_MAX_BODY;
    } else if (m->nmedia) {
        v.type = media_type_of_url(m->media[0]);
        for (size_t k = 0; media_types[k]; k++) /* an explicit media_type wins (a static string either way) */
            if (sb_str_eq_cstr(m->media_type, media_types[k]))
                v.type = media_types[k];
        if (m->body.len && (strcmp(v.type, "audio") == 0 || strcmp(v.type, "sticker") == 0))
            return fail(err, SB_EINVAL, "invalid_body", "body: %s messages take no caption on meta_whatsapp",
                        v.type);
        limit = SB_OUTBOUND_META_MAX_CAPTION;
    } else {
        v.type = "text";
        limit = SB_OUTBOUND_META_MAX_TEXT;
    }
    if (v.body_chars > limit)
        return fail(err, SB_EINVAL, "body_too_long", "body: longer than %zu characters%s", limit,
                    p == P_META && m->nmedia ? " (the limit of a caption)" : "");

    if (out)
        *out = v;
    return 0;
}

int sb_outbound_window(const sb_outbound_msg_t *m, int64_t since, sb_outbound_error_t *err)
{
    if (err) {
        err->code = "";
        err->message[0] = '\0';
    }
    bool open = since >= 0 && since < SB_OUTBOUND_WINDOW_MS;
    bool agent = since >= 0 && since < SB_OUTBOUND_HUMAN_AGENT_MS;
    const char *last = since < 0 ? "the customer has not written on this channel yet"
                                 : "the customer's last message is more than 24 hours old";
    switch (m->channel) {
    case SB_CH_META_WHATSAPP:
        if (open || m->template_name.len)
            return 0;
        return fail(err, SB_EACCES, "outside_window", "%s: WhatsApp takes only a template (name, language)", last);
    case SB_CH_TWILIO_WHATSAPP:
        if (open || m->content_sid.len)
            return 0;
        return fail(err, SB_EACCES, "outside_window",
                    "%s: WhatsApp takes only a Content API template (template.content_sid)", last);
    case SB_CH_META_MESSENGER:
        if (open || (m->tag.len && (!sb_str_eq_cstr(m->tag, "HUMAN_AGENT") || agent)))
            return 0;
        return fail(err, SB_EACCES, "outside_window",
                    m->tag.len ? "%s: HUMAN_AGENT replies only within 7 days of it"
                               : "%s: Messenger takes only a message with a tag (HUMAN_AGENT, CONFIRMED_EVENT_UPDATE, "
                                 "POST_PURCHASE_UPDATE, ACCOUNT_UPDATE)",
                    last);
    case SB_CH_META_INSTAGRAM:
        if (open || (sb_str_eq_cstr(m->tag, "HUMAN_AGENT") && agent))
            return 0;
        return fail(err, SB_EACCES, "outside_window", "%s: Instagram takes only a HUMAN_AGENT reply, within 7 days",
                    last);
    default:
        return 0;
    }
}

/* ---- requests ------------------------------------------------------------------------------------------------- */

static const char hexd[] = "0123456789ABCDEF";

/* Appends s percent-encoded for a URL path segment: RFC 3986 unreserved bytes as they are, the rest as %XX. */
static void append_segment(sb_buf_t *b, sb_str_t s)
{
    for (size_t i = 0; i < s.len; i++) {
        unsigned char c = (unsigned char)s.p[i];
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' ||
            c == '_' || c == '~') {
            sb_buf_append(b, &s.p[i], 1);
        } else {
            char e[3] = {'%', hexd[c >> 4], hexd[c & 15]};
            sb_buf_append(b, e, 3);
        }
    }
}

/* Appends s encoded as the WHATWG application/x-www-form-urlencoded serializer does. */
static void append_form_value(sb_buf_t *b, sb_str_t s)
{
    for (size_t i = 0; i < s.len; i++) {
        unsigned char c = (unsigned char)s.p[i];
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '*' || c == '-' ||
            c == '.' || c == '_') {
            sb_buf_append(b, &s.p[i], 1);
        } else if (c == ' ') {
            sb_buf_append(b, "+", 1);
        } else {
            char e[3] = {'%', hexd[c >> 4], hexd[c & 15]};
            sb_buf_append(b, e, 3);
        }
    }
}

/* Appends "&name=value" (no '&' for the first pair). */
static void append_pair(sb_buf_t *b, const char *name, const char *prefix, sb_str_t value)
{
    if (b->len)
        sb_buf_append(b, "&", 1);
    sb_buf_puts(b, name);
    sb_buf_append(b, "=", 1);
    if (prefix)
        append_form_value(b, sb_str_cstr(prefix));
    append_form_value(b, value);
}

/* The base URL (configured or default) without its trailing slashes, or false when it is unusable. */
static bool base_url(const char *configured, const char *dflt, sb_str_t *out)
{
    sb_str_t b = sb_str_cstr(configured ? configured : dflt);
    if (url_problem(b) || memchr(b.p, '?', b.len) || memchr(b.p, '#', b.len))
        return false;
    while (b.len && b.p[b.len - 1] == '/')
        b.len--;
    *out = b;
    return true;
}

static bool is_messaging_service(sb_str_t s)
{
    if (s.len != 34 || s.p[0] != 'M' || s.p[1] != 'G')
        return false;
    for (size_t i = 2; i < s.len; i++)
        if (!strchr("0123456789abcdefABCDEF", s.p[i]))
            return false;
    return true;
}

static bool good_secret(sb_str_t s, size_t max)
{
    return s.len > 0 && s.len <= max && printable_ascii(s);
}

/* Owned NUL-terminated copy of the bytes in b, which is then freed (wiped first when secret). */
static char *take_cstr(sb_buf_t *b)
{
    char *s = sb_strndup(sb_buf_cstr(b), b->len);
    sb_crypto_buf_wipe(b);
    return s;
}

/* jansson allocation failure: abort, as our own allocations do (proto/mem.h). */
static void jset(json_t *obj, const char *key, json_t *value)
{
    SB_BUG_ON(!value || json_object_set_new(obj, key, value) != 0);
}

/* A Twilio API request's URL, {base}/2010-04-01/Accounts/{sid}{what}[/{item}].json, and its basic auth. */
static void twilio_target(sb_outbound_request_t *r, sb_str_t base, sb_str_t account_sid, sb_str_t auth_token,
                          const char *what, sb_str_t item)
{
    sb_buf_t b;
    sb_buf_init(&b);
    sb_buf_append_str(&b, base);
    sb_buf_puts(&b, "/2010-04-01/Accounts/");
    append_segment(&b, account_sid);
    sb_buf_puts(&b, what);
    if (item.len) {
        sb_buf_puts(&b, "/");
        append_segment(&b, item);
    }
    sb_buf_puts(&b, ".json");
    r->url = take_cstr(&b);
    sb_buf_init(&b);
    sb_buf_reserve(&b, account_sid.len + 1 + auth_token.len); /* one allocation: no stray copy of the token */
    sb_buf_append_str(&b, account_sid);
    sb_buf_append(&b, ":", 1);
    sb_buf_append_str(&b, auth_token);
    r->basic_auth = take_cstr(&b);
}

static int build_twilio(const sb_outbound_msg_t *m, sb_str_t base, const sb_outbound_valid_t *v,
                        sb_outbound_request_t *r, sb_outbound_error_t *err)
{
    bool wa = m->channel == SB_CH_TWILIO_WHATSAPP;
    sb_str_t from = m->address;
    if (wa && ieq_prefix(from, "whatsapp:")) {
        from.p += 9;
        from.len -= 9;
    }
    if (from.len == 0 || from.len > MAX_SENDER || !printable_ascii(from) || memchr(from.p, ':', from.len))
        return fail(err, SB_EINVAL, "invalid_sender", "address: not a Twilio sender");
    if (!good_secret(m->account_sid, MAX_TWILIO_CRED) || memchr(m->account_sid.p, ':', m->account_sid.len) ||
        !good_secret(m->auth_token, MAX_TWILIO_CRED))
        return fail(err, SB_EINVAL, "invalid_credentials", "credentials: account_sid and auth_token required");
    if (m->status_callback.len && url_problem(m->status_callback))
        return fail(err, SB_EINVAL, "invalid_callback", "status_callback: %s", url_problem(m->status_callback));

    twilio_target(r, base, m->account_sid, m->auth_token, "/Messages", sb_str("", 0));

    const char *wa_prefix = wa ? "whatsapp:" : NULL;
    append_pair(&r->body, "To", wa_prefix, sb_str_cstr(v->to));
    if (is_messaging_service(from))
        append_pair(&r->body, "MessagingServiceSid", NULL, from);
    else
        append_pair(&r->body, "From", wa_prefix, from);
    if (m->body.len)
        append_pair(&r->body, "Body", NULL, m->body);
    for (size_t i = 0; i < m->nmedia; i++)
        append_pair(&r->body, "MediaUrl", NULL, m->media[i]);
    if (m->content_sid.len) {
        append_pair(&r->body, "ContentSid", NULL, m->content_sid);
        if (m->content_variables.len)
            append_pair(&r->body, "ContentVariables", NULL, m->content_variables);
    }
    if (m->status_callback.len)
        append_pair(&r->body, "StatusCallback", NULL, m->status_callback);

    r->headers[0] = "Content-Type: application/x-www-form-urlencoded";
    r->headers[1] = "Accept: application/json";
    r->headers[2] = NULL;
    r->http.basic_auth = r->basic_auth;
    return 0;
}

/* The WhatsApp Cloud API's message object into root (content: the member named by its type). Takes content. */
static void wa_message(const sb_outbound_msg_t *m, const sb_outbound_valid_t *v, json_t *root, json_t *content)
{
    jset(root, "messaging_product", json_string("whatsapp"));
    jset(root, "recipient_type", json_string("individual"));
    jset(root, "to", json_string(v->to));
    jset(root, "type", json_string(v->type));
    if (strcmp(v->type, "text") == 0) {
        jset(content, "preview_url", json_false());
        jset(content, "body", json_stringn(m->body.p, m->body.len));
    } else if (strcmp(v->type, "template") == 0) {
        json_t *lang = json_object();
        SB_BUG_ON(!lang);
        jset(content, "name", json_stringn(m->template_name.p, m->template_name.len));
        jset(lang, "code", json_stringn(m->template_language.p, m->template_language.len));
        jset(content, "language", lang);
        if (m->template_components.len)
            jset(content, "components", parse_components(m->template_components)); /* validated: not NULL */
    } else {
        jset(content, "link", json_stringn(m->media[0].p, m->media[0].len));
        if (m->body.len)
            jset(content, "caption", json_stringn(m->body.p, m->body.len));
    }
    jset(root, v->type, content);
}

/* The Send API's (Messenger, Instagram) message into root (content: its "message"). Takes content. */
static void fb_message(const sb_outbound_msg_t *m, const sb_outbound_valid_t *v, json_t *root, json_t *content)
{
    json_t *recipient = json_object();
    SB_BUG_ON(!recipient);
    jset(recipient, "id", json_string(v->to));
    jset(root, "recipient", recipient);
    jset(root, "messaging_type", json_string(m->tag.len ? "MESSAGE_TAG" : "RESPONSE"));
    if (m->tag.len)
        jset(root, "tag", json_stringn(m->tag.p, m->tag.len));
    if (strcmp(v->type, "text") == 0) {
        jset(content, "text", json_stringn(m->body.p, m->body.len));
    } else {
        json_t *att = json_object(), *payload = json_object();
        SB_BUG_ON(!att || !payload);
        jset(att, "type", json_string(v->type));
        jset(payload, "url", json_stringn(m->media[0].p, m->media[0].len));
        jset(att, "payload", payload);
        jset(content, "attachment", att);
    }
    jset(root, "message", content);
}

static int build_meta(const sb_outbound_msg_t *m, sb_str_t base, const sb_outbound_valid_t *v,
                      sb_outbound_request_t *r, sb_outbound_error_t *err)
{
    if (m->address.len == 0 || m->address.len > MAX_SENDER || !printable_ascii(m->address) ||
        memchr(m->address.p, ':', m->address.len))
        return fail(err, SB_EINVAL, "invalid_sender", "address: not a %s",
                    m->channel == SB_CH_META_MESSENGER   ? "page id"
                    : m->channel == SB_CH_META_INSTAGRAM ? "Instagram account id"
                                                         : "phone_number_id");
    if (!good_secret(m->access_token, MAX_META_TOKEN))
        return fail(err, SB_EINVAL, "invalid_credentials", "credentials: access_token required");

    json_t *root = json_object(), *content = json_object();
    SB_BUG_ON(!root || !content);
    if (is_fb(m->channel))
        fb_message(m, v, root, content);
    else
        wa_message(m, v, root, content);
    char *json = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    SB_BUG_ON(!json);
    size_t n = strlen(json);
    sb_buf_append(&r->body, json, n);
    sb_crypto_wipe(json, n);
    free(json);

    sb_buf_t b;
    sb_buf_init(&b);
    sb_buf_append_str(&b, base);
    sb_buf_append(&b, "/", 1);
    append_segment(&b, m->address);
    sb_buf_puts(&b, "/messages");
    r->url = take_cstr(&b);

    sb_buf_init(&b);
    sb_buf_reserve(&b, 22 + m->access_token.len); /* one allocation: no stray copy of the token */
    sb_buf_puts(&b, "Authorization: Bearer ");
    sb_buf_append_str(&b, m->access_token);
    r->authorization = take_cstr(&b);

    r->headers[0] = "Content-Type: application/json";
    r->headers[1] = "Accept: application/json";
    r->headers[2] = r->authorization;
    r->headers[3] = NULL;
    return 0;
}

int sb_outbound_build(const sb_outbound_msg_t *m, const sb_outbound_endpoints_t *ep, sb_outbound_request_t *req,
                      sb_outbound_error_t *err)
{
    sb_outbound_valid_t v;
    sb_str_t base;
    int rc;

    memset(req, 0, sizeof *req);
    if ((rc = sb_outbound_validate(m, &v, err)) < 0)
        return rc;

    bool twilio = provider_of(m->channel) == P_TWILIO;
    if (twilio ? !base_url(ep ? ep->twilio_api_base : NULL, SB_OUTBOUND_TWILIO_API_BASE, &base)
               : !base_url(ep ? ep->meta_graph_base : NULL, SB_OUTBOUND_META_GRAPH_BASE, &base))
        return fail(err, SB_EINVAL, "invalid_config", "%s: not an absolute http(s) URL without query",
                    twilio ? "twilio_api_base" : "meta_graph_base");

    sb_buf_init(&req->body);
    rc = twilio ? build_twilio(m, base, &v, req, err) : build_meta(m, base, &v, req, err);
    if (rc < 0) {
        sb_outbound_request_cleanup(req);
        return rc;
    }
    req->http.method = "POST";
    req->http.url = req->url;
    req->http.headers = req->headers;
    req->http.body = sb_str(sb_buf_cstr(&req->body), req->body.len);
    req->http.timeout_ms = 0;
    return 0;
}

void sb_outbound_request_cleanup(sb_outbound_request_t *req)
{
    free(req->url);
    sb_free_secret(req->basic_auth);
    sb_free_secret(req->authorization);
    sb_crypto_buf_wipe(&req->body);
    memset(req, 0, sizeof *req);
}

/* ---- Twilio's Calls API ------------------------------------------------------------------------------------------ */

int sb_outbound_call_build(const sb_outbound_call_t *c, const sb_outbound_endpoints_t *ep, sb_outbound_request_t *r,
                           sb_outbound_error_t *err)
{
    sb_str_t base;
    memset(r, 0, sizeof *r);
    if (!base_url(ep ? ep->twilio_api_base : NULL, SB_OUTBOUND_TWILIO_API_BASE, &base))
        return fail(err, SB_EINVAL, "invalid_config", "twilio_api_base: not an absolute http(s) URL without query");
    if (!good_secret(c->account_sid, MAX_TWILIO_CRED) || memchr(c->account_sid.p, ':', c->account_sid.len) ||
        !good_secret(c->auth_token, MAX_TWILIO_CRED))
        return fail(err, SB_EINVAL, "invalid_credentials", "credentials: account_sid and auth_token required");
    bool update = c->call_sid.len > 0;
    if (update ? !printable_ascii(c->call_sid) || c->call_sid.len > 64
               : !c->to.len || !c->from.len || !c->twiml.len || !printable_ascii(c->to) || !printable_ascii(c->from))
        return fail(err, SB_EINVAL, "invalid_call", update ? "call_sid: not a CallSid" : "to, from and twiml required");
    if (c->status_callback.len && url_problem(c->status_callback))
        return fail(err, SB_EINVAL, "invalid_callback", "status_callback: %s", url_problem(c->status_callback));

    twilio_target(r, base, c->account_sid, c->auth_token, "/Calls", c->call_sid);

    sb_buf_init(&r->body);
    if (update) {
        if (c->hangup)
            append_pair(&r->body, "Status", NULL, SB_STR("completed"));
        else
            append_pair(&r->body, "Twiml", NULL, c->twiml);
    } else {
        append_pair(&r->body, "To", NULL, c->to);
        append_pair(&r->body, "From", NULL, c->from);
        append_pair(&r->body, "Twiml", NULL, c->twiml);
        if (c->status_callback.len) {
            append_pair(&r->body, "StatusCallback", NULL, c->status_callback);
            append_pair(&r->body, "StatusCallbackEvent", NULL, SB_STR("initiated ringing answered completed"));
            append_pair(&r->body, "StatusCallbackMethod", NULL, SB_STR("POST"));
        }
    }
    r->headers[0] = "Content-Type: application/x-www-form-urlencoded";
    r->headers[1] = "Accept: application/json";
    r->headers[2] = NULL;
    r->http.method = "POST";
    r->http.url = r->url;
    r->http.headers = r->headers;
    r->http.basic_auth = r->basic_auth;
    r->http.body = sb_str(sb_buf_cstr(&r->body), r->body.len);
    return 0;
}

int sb_outbound_call_answer(const sb_http_client_res_t *res, char *sid, size_t sidlen, sb_outbound_error_t *err)
{
    if (sidlen)
        sid[0] = 0;
    if (res->err)
        return fail(err, SB_EUNAVAIL, "provider_unreachable", "no answer: %s", sb_strerror(res->err));
    json_error_t jerr;
    json_t *j = json_loadb(res->body.p, res->body.len, 0, &jerr);
    int rc = 0;
    const char *v = json_string_value(json_object_get(j, "sid"));
    if (res->status < 200 || res->status > 299) {
        /* Twilio's message, reduced to printable ASCII: it goes to a log line */
        const char *m = json_string_value(json_object_get(j, "message"));
        char clean[101];
        size_t n = 0;
        for (; m && *m && n < sizeof clean - 1; m++)
            clean[n++] = (unsigned char)*m >= 0x20 && (unsigned char)*m < 0x7f ? *m : '?';
        clean[n] = '\0';
        rc = fail(err, SB_EACCES, res->status == 404 ? "call_not_found" : "provider_refused", "HTTP %d: %s",
                  res->status, n ? clean : "no message");
    } else if (!v || !*v || strlen(v) >= sidlen || strlen(v) > SB_OUTBOUND_MAX_ID ||
               !printable_ascii(sb_str_cstr(v))) {
        rc = fail(err, SB_EPARSE, "bad_response", "the answer has no sid");
    } else {
        snprintf(sid, sidlen, "%s", v);
    }
    json_decref(j);
    return rc;
}

/* ---- answers -------------------------------------------------------------------------------------------------- */

const char *sb_outbound_outcome_name(sb_outbound_outcome_t o)
{
    switch (o) {
    case SB_OUTBOUND_SENT:
        return "sent";
    case SB_OUTBOUND_RETRY:
        return "retry";
    case SB_OUTBOUND_FAILED:
        return "failed";
    case SB_OUTBOUND_UNKNOWN:
        return "unknown";
    }
    return NULL;
}

/* Copies text of n bytes into dst (cap bytes, NUL included) as valid UTF-8: invalid bytes become '?', controls a
 * space, and the copy stops before a character that would not fit whole. */
static void put_text(char *dst, size_t cap, const char *s, size_t n)
{
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        size_t len = c < 0x80 ? 1 : c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : 2;
        if (len > n - i || (len > 1 && !sb_utf8_valid(s + i, len)) || (c >= 0x80 && c < 0xc2))
            len = 0; /* not the start of a valid sequence: one '?' for this byte */
        size_t w = len ? len : 1;
        if (o + w > cap - 1)
            break;
        if (len == 0)
            dst[o] = '?';
        else if (len == 1)
            dst[o] = c < 0x20 || c == 0x7f ? ' ' : (char)c;
        else
            memcpy(dst + o, s + i, len);
        o += w;
        i += len ? len : 1;
    }
    dst[o] = '\0';
}

/* A provider error code: a JSON integer, or a string of 1..20 digits. Written into buf; NULL when absent. */
static const char *code_of(const json_t *v, char buf[SB_OUTBOUND_MAX_CODE + 1], long long *num)
{
    if (json_is_integer(v)) {
        *num = json_integer_value(v);
        snprintf(buf, SB_OUTBOUND_MAX_CODE + 1, "%lld", *num);
        return buf;
    }
    const char *s = json_string_value(v);
    size_t n = json_string_length(v);
    if (!s || n == 0 || n > 20)
        return NULL;
    for (size_t i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return NULL;
    if (sb_str_to_ll(sb_str(s, n), 0, 999999999999999999LL, num) < 0)
        return NULL;
    memcpy(buf, s, n);
    buf[n] = '\0';
    return buf;
}

/* A provider id: 1..SB_OUTBOUND_MAX_ID printable ASCII bytes. */
static bool take_id(const json_t *v, char dst[SB_OUTBOUND_MAX_ID + 1])
{
    const char *s = json_string_value(v);
    size_t n = json_string_length(v);
    if (!s || n == 0 || n > SB_OUTBOUND_MAX_ID || !printable_ascii(sb_str(s, n)))
        return false;
    memcpy(dst, s, n);
    dst[n] = '\0';
    return true;
}

static bool in_codes(long long code, const long long *codes, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (codes[i] == code)
            return true;
    return false;
}

/* 4xx codes that name a passing condition (see sb_outbound_classify). */
static bool transient_code(provider_t p, long long code)
{
    static const long long twilio[] = {20429, 21611, 63017};
    static const long long meta[] = {1, 2, 4, 613, 80007, 130429, 131056};
    if (p == P_TWILIO)
        return in_codes(code, twilio, sizeof twilio / sizeof twilio[0]);
    if (p == P_META)
        return in_codes(code, meta, sizeof meta / sizeof meta[0]);
    return false;
}

static void set_text(sb_outbound_result_t *out, const char *s)
{
    put_text(out->error_message, sizeof out->error_message, s, strlen(s));
}

/* Reads the provider's error from an error answer into out (code and message); returns its numeric code or -1. */
static long long provider_error(provider_t p, const json_t *j, int status, sb_outbound_result_t *out)
{
    long long num = -1;
    const char *code = NULL;
    const json_t *msg = NULL;
    sb_buf_t text;
    sb_buf_init(&text);

    if (p == P_TWILIO && json_is_object(j)) {
        code = code_of(json_object_get(j, "code"), out->error_code, &num);
        msg = json_object_get(j, "message");
        if (json_is_string(msg))
            sb_buf_append(&text, json_string_value(msg), json_string_length(msg));
    } else if (p == P_META && json_is_object(json_object_get(j, "error"))) {
        const json_t *e = json_object_get(j, "error");
        code = code_of(json_object_get(e, "code"), out->error_code, &num);
        msg = json_object_get(e, "message");
        const json_t *details = json_object_get(json_object_get(e, "error_data"), "details");
        const char *d = json_string_length(details) ? json_string_value(details) : NULL; /* NULL unless a string */
        const char *title = json_string_value(msg);
        if (title && title[0] == '(' && title[1] == '#') { /* "(#131030) Recipient ...": the title after the code */
            const char *close = strstr(title, ") ");
            title = close ? close + 2 : title;
        }
        if (d && title && *title && strstr(d, title)) { /* the details repeat the title and say more */
            sb_buf_puts(&text, d);
        } else {
            if (json_is_string(msg))
                sb_buf_append(&text, json_string_value(msg), json_string_length(msg));
            if (d && !(text.len && strstr(sb_buf_cstr(&text), d))) {
                if (text.len)
                    sb_buf_puts(&text, ": ");
                sb_buf_puts(&text, d);
            }
        }
    }
    if (!code) {
        num = -1;
        snprintf(out->error_code, sizeof out->error_code, "http_%d", status);
    }
    if (text.len)
        put_text(out->error_message, sizeof out->error_message, text.p, text.len);
    else
        snprintf(out->error_message, sizeof out->error_message, "HTTP %d", status);
    sb_buf_cleanup(&text);
    return num;
}

/* A 2xx answer. */
static void success(provider_t p, sb_channel_type_t ch, const json_t *j, int status, sb_outbound_result_t *out)
{
    const char *st = NULL;
    if (p == P_TWILIO && json_is_object(j) && take_id(json_object_get(j, "sid"), out->provider_id)) {
        const json_t *s = json_object_get(j, "status");
        if (json_is_string(s))
            sb_outbound_status_normalize(ch, sb_str(json_string_value(s), json_string_length(s)), &st);
        out->provider_status = st;
        if (st && (strcmp(st, "failed") == 0 || strcmp(st, "undelivered") == 0)) {
            long long num;
            out->outcome = SB_OUTBOUND_FAILED;
            if (!code_of(json_object_get(j, "error_code"), out->error_code, &num))
                snprintf(out->error_code, sizeof out->error_code, "%s", st);
            const json_t *m = json_object_get(j, "error_message");
            if (json_is_string(m) && json_string_length(m))
                put_text(out->error_message, sizeof out->error_message, json_string_value(m), json_string_length(m));
            else
                set_text(out, "the provider took the message but reports it failed");
            return;
        }
        out->outcome = SB_OUTBOUND_SENT;
        return;
    }
    if (p == P_META && take_id(json_object_get(json_array_get(json_object_get(j, "messages"), 0), "id"),
                               out->provider_id)) {
        const json_t *s = json_object_get(json_array_get(json_object_get(j, "messages"), 0), "message_status");
        if (json_is_string(s))
            sb_outbound_status_normalize(ch, sb_str(json_string_value(s), json_string_length(s)), &st);
        out->provider_status = st;
        out->outcome = SB_OUTBOUND_SENT;
        return;
    }
    if (p == P_META && is_fb(ch) && take_id(json_object_get(j, "message_id"), out->provider_id)) {
        out->outcome = SB_OUTBOUND_SENT; /* the Send API: {"recipient_id", "message_id"} */
        return;
    }
    out->provider_id[0] = '\0';
    out->outcome = SB_OUTBOUND_UNKNOWN;
    snprintf(out->error_code, sizeof out->error_code, "bad_response");
    snprintf(out->error_message, sizeof out->error_message, "HTTP %d without a message id we can read", status);
}

static void transport(const sb_http_client_res_t *res, sb_outbound_result_t *out)
{
    const char *code;
    switch (res->err) {
    case SB_ECANCELED:
        out->outcome = SB_OUTBOUND_UNKNOWN;
        code = "canceled";
        break;
    case SB_EINVAL:
        out->outcome = SB_OUTBOUND_FAILED;
        code = "invalid_request";
        break;
    case SB_E2BIG:
        out->outcome = SB_OUTBOUND_UNKNOWN;
        code = "response_too_big";
        break;
    default:
        out->outcome = res->sent ? SB_OUTBOUND_UNKNOWN : SB_OUTBOUND_RETRY;
        code = res->err == SB_ETIMEDOUT  ? "timeout"
               : res->err == -ECONNRESET ? "connection_reset"
               : res->err == SB_EUNAVAIL ? "unavailable"
               : res->err == SB_EPARSE   ? "bad_response"
                                         : "transport_error";
        out->endpoint_fault = res->err == SB_ETIMEDOUT || res->err == -ECONNRESET || res->err == SB_EUNAVAIL ||
                              res->err == SB_EPARSE;
        break;
    }
    snprintf(out->error_code, sizeof out->error_code, "%s", code);
    set_text(out, res->detail && res->detail[0] ? res->detail : sb_strerror(res->err));
}

void sb_outbound_classify(sb_channel_type_t ch, const sb_http_client_res_t *res, sb_outbound_result_t *out)
{
    memset(out, 0, sizeof *out);
    out->retry_after_s = -1;
    if (res->err) {
        transport(res, out);
        return;
    }
    provider_t p = provider_of(ch);
    int status = res->status;
    out->http_status = status;

    json_t *j = NULL;
    if (res->body.len && res->body.len <= MAX_PARSED_BODY) {
        json_error_t jerr;
        j = json_loadb(res->body.p, res->body.len, 0, &jerr);
    }

    if (status >= 200 && status <= 299) {
        success(p, ch, j, status, out);
    } else {
        long long code = provider_error(p, j, status, out);
        if (status == 429 || status == 408) {
            out->outcome = SB_OUTBOUND_RETRY;
        } else if (status >= 500 && status <= 599) {
            out->outcome = SB_OUTBOUND_RETRY;
            out->endpoint_fault = true;
        } else if (status >= 400 && status <= 499) {
            out->outcome = code >= 0 && transient_code(p, code) ? SB_OUTBOUND_RETRY : SB_OUTBOUND_FAILED;
        } else if (status >= 300 && status <= 399) {
            out->outcome = SB_OUTBOUND_FAILED;
        } else {
            out->outcome = SB_OUTBOUND_UNKNOWN;
        }
        if (out->outcome == SB_OUTBOUND_RETRY && res->retry_after_s >= 0)
            out->retry_after_s =
                res->retry_after_s > SB_RETRY_AFTER_MAX_S ? SB_RETRY_AFTER_MAX_S : res->retry_after_s;
    }
    json_decref(j);
}

int sb_outbound_status_normalize(sb_channel_type_t ch, sb_str_t status, const char **out)
{
    static const struct {
        const char *meta, *ours;
    } map[] = {
        {"accepted", "queued"}, {"held_for_quality_assessment", "queued"}, {"paused", "queued"},
        {"sent", "sent"},       {"delivered", "delivered"},                {"read", "read"},
        {"failed", "failed"},   {"deleted", NULL},                         {"warning", NULL},
    };
    switch (provider_of(ch)) {
    case P_TWILIO:
        return sb_twilio_status_normalize(status, out);
    case P_META:
        for (size_t i = 0; i < sizeof map / sizeof map[0]; i++) {
            if (!sb_str_eq_cstr(status, map[i].meta))
                continue;
            if (!map[i].ours)
                return SB_ENOENT;
            *out = map[i].ours;
            return 0;
        }
        return SB_EPARSE;
    default:
        return -ENOTSUP;
    }
}

/* ---- retries -------------------------------------------------------------------------------------------------- */
