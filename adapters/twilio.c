/* Twilio webhook payloads into events and call records; see twilio.h.
 *
 * Each parser fills a local value and copies it out only on success, so a failure halfway (a bad MediaUrl2 after two
 * good ones) frees what was copied and leaves the caller's storage zeroed. The only peer text that ever reaches an
 * error message is a status value, reduced to printable ASCII by quote(). */
#include "adapters/twilio.h"

#include "proto/err.h"
#include "proto/mem.h"

#include <ctype.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

static void __attribute__((format(printf, 3, 4))) set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* A peer's value made safe to quote in a message: at most 32 bytes, anything but printable ASCII shown as '?'. */
typedef struct quoted {
    char s[36];
} quoted_t;

static quoted_t quote(sb_str_t v)
{
    quoted_t q;
    size_t n = v.len < 32 ? v.len : 32, i;
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)v.p[i];
        q.s[i] = c >= 0x20 && c < 0x7f ? (char)c : '?';
    }
    if (v.len > n) {
        memcpy(q.s + i, "...", 3);
        i += 3;
    }
    q.s[i] = '\0';
    return q;
}

/* The value of the first field called name when present and non-empty. */
static bool get(const sb_form_t *f, const char *name, sb_str_t *out)
{
    const sb_form_pair_t *p = sb_form_find_cstr(f, name);
    if (!p || p->value.len == 0)
        return false;
    *out = p->value;
    return true;
}

/* Copies v (the value of field name) into *out as a C string; a NUL byte inside would silently cut it, so it is an
 * error instead. */
static int copy(sb_str_t v, const char *name, char **out, char *err, size_t errlen)
{
    if (v.len && memchr(v.p, '\0', v.len)) {
        set_err(err, errlen, "%s: contains a NUL byte", name);
        return SB_EPARSE;
    }
    *out = sb_strndup(v.p ? v.p : "", v.len);
    return 0;
}

/* Copies the optional field name into *out when present and non-empty; leaves *out NULL otherwise. */
static int copy_opt(const sb_form_t *f, const char *name, char **out, char *err, size_t errlen)
{
    sb_str_t v;
    if (!get(f, name, &v))
        return 0;
    return copy(v, name, out, err, errlen);
}

/* The first of names[] present and non-empty; its name goes to *which. */
static bool get_any(const sb_form_t *f, const char *const *names, sb_str_t *out, const char **which)
{
    for (; *names; names++) {
        if (get(f, *names, out)) {
            *which = *names;
            return true;
        }
    }
    return false;
}

/* A plain decimal number (digits only, no sign, no blanks) in [0, max]. */
static int plain_uint(sb_str_t v, long long max, long long *out)
{
    if (v.len == 0)
        return SB_EPARSE;
    for (size_t i = 0; i < v.len; i++)
        if (v.p[i] < '0' || v.p[i] > '9')
            return SB_EPARSE;
    return sb_str_to_ll(v, 0, max, out);
}

/* Splits a messaging address (the value of field name) into its bare address and whether it is WhatsApp. */
static int messaging_addr(sb_str_t v, const char *name, bool *whatsapp, sb_str_t *bare, char *err, size_t errlen)
{
    static const char wa[] = "whatsapp:";
    const size_t wa_len = sizeof wa - 1;

    *whatsapp = v.len >= wa_len && strncasecmp(v.p, wa, wa_len) == 0;
    if (*whatsapp) {
        v.p += wa_len;
        v.len -= wa_len;
    }
    /* E.164 numbers, short codes and alphanumeric sender ids never hold a ':'; one means a (further) channel prefix */
    if (v.len && memchr(v.p, ':', v.len)) {
        set_err(err, errlen, "%s: unsupported channel prefix", name);
        return SB_EPARSE;
    }
    if (v.len == 0) {
        set_err(err, errlen, "%s: empty address", name);
        return SB_EPARSE;
    }
    *bare = v;
    return 0;
}

static const char *const message_sid_fields[] = {"MessageSid", "SmsMessageSid", "SmsSid", NULL};
static const char *const status_sid_fields[] = {"MessageSid", "SmsSid", NULL};
static const char *const status_fields[] = {"MessageStatus", "SmsStatus", NULL};

int sb_twilio_parse_message(const sb_form_t *f, sb_event_t *ev, char *err, size_t errlen)
{
    sb_event_t e;
    sb_str_t sid, from, to, v;
    const char *which;
    bool from_wa, to_wa;
    long long nmedia = 0;
    int rc;

    memset(&e, 0, sizeof e);
    e.kind = SB_EV_MESSAGE;

    if (!get_any(f, message_sid_fields, &sid, &which)) {
        set_err(err, errlen, "missing MessageSid");
        rc = SB_EPARSE;
        goto fail;
    }
    if (!get(f, "From", &from)) {
        set_err(err, errlen, "missing From");
        rc = SB_EPARSE;
        goto fail;
    }
    if (!get(f, "To", &to)) {
        set_err(err, errlen, "missing To");
        rc = SB_EPARSE;
        goto fail;
    }
    if ((rc = messaging_addr(from, "From", &from_wa, &from, err, errlen)) < 0 ||
        (rc = messaging_addr(to, "To", &to_wa, &to, err, errlen)) < 0)
        goto fail;
    if (from_wa != to_wa) {
        set_err(err, errlen, "From and To are on different channels");
        rc = SB_EPARSE;
        goto fail;
    }
    e.channel = to_wa ? SB_CH_TWILIO_WHATSAPP : SB_CH_TWILIO_SMS;

    const sb_form_pair_t *nm = sb_form_find_cstr(f, "NumMedia");
    if (nm) {
        rc = plain_uint(nm->value, SB_EVENT_MAX_MEDIA, &nmedia);
        if (rc == SB_ERANGE) {
            set_err(err, errlen, "NumMedia: more than %d media", SB_EVENT_MAX_MEDIA);
            rc = SB_EPARSE;
            goto fail;
        }
        if (rc < 0) {
            set_err(err, errlen, "NumMedia: not a number");
            rc = SB_EPARSE;
            goto fail;
        }
    }

    if ((rc = copy(sid, which, &e.provider_id, err, errlen)) < 0 || (rc = copy(from, "From", &e.from, err, errlen)) < 0 ||
        (rc = copy(to, "To", &e.to, err, errlen)) < 0 || (rc = copy(to, "To", &e.account, err, errlen)) < 0)
        goto fail;
    if (!get(f, "Body", &v))
        v = SB_STR("");
    if ((rc = copy(v, "Body", &e.body, err, errlen)) < 0 ||
        (rc = copy_opt(f, "ProfileName", &e.profile_name, err, errlen)) < 0)
        goto fail;

    for (unsigned i = 0; i < (unsigned)nmedia; i++) {
        char url_name[32], type_name[40]; /* room for any unsigned, so no truncation whatever the compiler assumes */
        snprintf(url_name, sizeof url_name, "MediaUrl%u", i);
        snprintf(type_name, sizeof type_name, "MediaContentType%u", i);
        if (!get(f, url_name, &v)) {
            set_err(err, errlen, "missing %s (NumMedia is %lld)", url_name, nmedia);
            rc = SB_EPARSE;
            goto fail;
        }
        sb_media_t *m = &e.media[e.nmedia++]; /* counted before filling: cleanup frees what is there */
        if ((rc = copy(v, url_name, &m->url, err, errlen)) < 0 ||
            (rc = copy_opt(f, type_name, &m->content_type, err, errlen)) < 0)
            goto fail;
    }

    *ev = e;
    return 0;

fail:
    sb_event_cleanup(&e);
    return rc;
}

int sb_twilio_status_normalize(sb_str_t s, const char **out)
{
    static const struct {
        const char *twilio, *ours;
    } map[] = {
        {"accepted", "queued"},     {"scheduled", "queued"},        {"queued", "queued"},
        {"sending", "sent"},        {"sent", "sent"},               {"delivered", "delivered"},
        {"partially_delivered", "delivered"},                       {"read", "read"},
        {"undelivered", "undelivered"},                             {"failed", "failed"},
        {"canceled", "failed"},     {"receiving", NULL},            {"received", NULL},
    };
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++) {
        if (!sb_str_eq_cstr(s, map[i].twilio))
            continue;
        if (!map[i].ours)
            return SB_ENOENT;
        *out = map[i].ours;
        return 0;
    }
    return SB_EPARSE;
}

int sb_twilio_parse_status(const sb_form_t *f, sb_event_t *ev, char *err, size_t errlen)
{
    sb_event_t e;
    sb_str_t sid, status, from, to;
    const char *sid_field, *status_field, *norm = NULL;
    bool from_wa, to_wa;
    int rc;

    memset(&e, 0, sizeof e);
    e.kind = SB_EV_STATUS;

    if (!get_any(f, status_sid_fields, &sid, &sid_field)) {
        set_err(err, errlen, "missing MessageSid");
        rc = SB_EPARSE;
        goto fail;
    }
    if (!get_any(f, status_fields, &status, &status_field)) {
        set_err(err, errlen, "missing MessageStatus");
        rc = SB_EPARSE;
        goto fail;
    }
    rc = sb_twilio_status_normalize(status, &norm);
    if (rc == SB_ENOENT) {
        set_err(err, errlen, "%s '%s' is a state of an inbound message, not of one we sent", status_field,
                quote(status).s);
        goto fail;
    }
    if (rc < 0) {
        set_err(err, errlen, "%s: unknown status '%s'", status_field, quote(status).s);
        rc = SB_EPARSE;
        goto fail;
    }
    if (!get(f, "From", &from)) {
        set_err(err, errlen, "missing From");
        rc = SB_EPARSE;
        goto fail;
    }
    if ((rc = messaging_addr(from, "From", &from_wa, &from, err, errlen)) < 0)
        goto fail;
    if (get(f, "To", &to)) {
        if ((rc = messaging_addr(to, "To", &to_wa, &to, err, errlen)) < 0)
            goto fail;
        if (from_wa != to_wa) {
            set_err(err, errlen, "From and To are on different channels");
            rc = SB_EPARSE;
            goto fail;
        }
    }
    e.channel = from_wa ? SB_CH_TWILIO_WHATSAPP : SB_CH_TWILIO_SMS;

    if ((rc = copy(sid, sid_field, &e.provider_id, err, errlen)) < 0 ||
        (rc = copy(from, "From", &e.account, err, errlen)) < 0 ||
        (rc = copy_opt(f, "ErrorCode", &e.error_code, err, errlen)) < 0 ||
        (rc = copy_opt(f, "ErrorMessage", &e.error_message, err, errlen)) < 0)
        goto fail;
    e.status = sb_strdup(norm);

    *ev = e;
    return 0;

fail:
    sb_event_cleanup(&e);
    return rc;
}

/* --- voice ------------------------------------------------------------------------------------------------------ */

static const char *const call_status_names[] = {
    [SB_TWILIO_CALL_QUEUED] = "queued",       [SB_TWILIO_CALL_INITIATED] = "initiated",
    [SB_TWILIO_CALL_RINGING] = "ringing",     [SB_TWILIO_CALL_IN_PROGRESS] = "in-progress",
    [SB_TWILIO_CALL_COMPLETED] = "completed", [SB_TWILIO_CALL_BUSY] = "busy",
    [SB_TWILIO_CALL_NO_ANSWER] = "no-answer", [SB_TWILIO_CALL_FAILED] = "failed",
    [SB_TWILIO_CALL_CANCELED] = "canceled",
};

const char *sb_twilio_call_status_name(sb_twilio_call_status_t s)
{
    return (size_t)s < sizeof call_status_names / sizeof call_status_names[0] ? call_status_names[s] : NULL;
}

bool sb_twilio_call_status_is_final(sb_twilio_call_status_t s)
{
    switch (s) {
    case SB_TWILIO_CALL_COMPLETED:
    case SB_TWILIO_CALL_BUSY:
    case SB_TWILIO_CALL_NO_ANSWER:
    case SB_TWILIO_CALL_FAILED:
    case SB_TWILIO_CALL_CANCELED:
        return true;
    default:
        return false;
    }
}

void sb_twilio_call_cleanup(sb_twilio_call_t *c)
{
    free(c->call_sid);
    free(c->account_sid);
    free(c->parent_call_sid);
    free(c->from);
    free(c->to);
    free(c->account);
    free(c->caller_name);
    free(c->forwarded_from);
    free(c->direction_name);
    memset(c, 0, sizeof *c);
}

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

/* Reads 1..max digits at *i of s into *out. */
static bool digits(sb_str_t s, size_t *i, size_t min, size_t max, unsigned *out)
{
    size_t n = 0;
    unsigned v = 0;
    while (*i < s.len && n < max && s.p[*i] >= '0' && s.p[*i] <= '9') {
        v = v * 10 + (unsigned)(s.p[*i] - '0');
        (*i)++;
        n++;
    }
    *out = v;
    return n >= min;
}

static bool lit(sb_str_t s, size_t *i, char c)
{
    if (*i < s.len && s.p[*i] == c) {
        (*i)++;
        return true;
    }
    return false;
}

/* Parses the RFC 2822 date Twilio writes ("Sun, 25 Mar 2018 09:53:19 +0000"; the weekday and the seconds are
 * optional, the zone is +hhmm, -hhmm, GMT, UT or UTC). Returns unix seconds, or 0 when s is not such a date. */
static int64_t rfc2822_time(sb_str_t s)
{
    static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
    static const unsigned mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    size_t i = 0;
    unsigned day, mon, year, hh, mm, ss = 0;

    if (s.len >= 5 && isalpha((unsigned char)s.p[0]) && isalpha((unsigned char)s.p[1]) &&
        isalpha((unsigned char)s.p[2]) && s.p[3] == ',') {
        i = 4;
        while (i < s.len && s.p[i] == ' ')
            i++;
    }
    if (!digits(s, &i, 1, 2, &day) || !lit(s, &i, ' ') || s.len - i < 4)
        return 0;
    for (mon = 0; mon < 12; mon++)
        if (memcmp(s.p + i, months + 3 * mon, 3) == 0)
            break;
    if (mon == 12)
        return 0;
    i += 3;
    if (!lit(s, &i, ' ') || !digits(s, &i, 4, 4, &year) || !lit(s, &i, ' ') || !digits(s, &i, 2, 2, &hh) ||
        !lit(s, &i, ':') || !digits(s, &i, 2, 2, &mm))
        return 0;
    if (lit(s, &i, ':') && !digits(s, &i, 2, 2, &ss))
        return 0;
    if (!lit(s, &i, ' '))
        return 0;
    bool leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    if (year < 1970 || day < 1 || day > mdays[mon] || (mon == 1 && day == 29 && !leap) || hh > 23 || mm > 59 ||
        ss > 60)
        return 0;

    int64_t offset = 0;
    sb_str_t zone = sb_str(s.p + i, s.len - i);
    if (zone.len == 5 && (zone.p[0] == '+' || zone.p[0] == '-')) {
        size_t z = 1;
        unsigned zh, zm;
        if (!digits(zone, &z, 2, 2, &zh) || !digits(zone, &z, 2, 2, &zm) || zh > 23 || zm > 59)
            return 0;
        offset = (int64_t)(zh * 3600 + zm * 60) * (zone.p[0] == '-' ? -1 : 1);
    } else if (!sb_str_eq_cstr(zone, "GMT") && !sb_str_eq_cstr(zone, "UT") && !sb_str_eq_cstr(zone, "UTC")) {
        return 0;
    }
    int64_t t = days_from_civil(year, mon + 1, day) * 86400 + hh * 3600 + mm * 60 + ss - offset;
    return t > 0 ? t : 0;
}

/* An optional plain decimal field into *out (-1 when absent or empty). */
static int opt_number(const sb_form_t *f, const char *name, int64_t *out, char *err, size_t errlen)
{
    sb_str_t v;
    long long n;
    *out = -1;
    if (!get(f, name, &v))
        return 0;
    if (plain_uint(v, LLONG_MAX, &n) < 0) {
        set_err(err, errlen, "%s: not a number", name);
        return SB_EPARSE;
    }
    *out = n;
    return 0;
}

static int parse_call(const sb_form_t *f, sb_twilio_call_t *call, bool incoming, char *err, size_t errlen)
{
    static const struct {
        const char *name;
        sb_twilio_call_dir_t dir;
    } dirs[] = {
        {"inbound", SB_TWILIO_DIR_INBOUND},
        {"outbound-api", SB_TWILIO_DIR_OUTBOUND_API},
        {"outbound-dial", SB_TWILIO_DIR_OUTBOUND_DIAL},
    };
    sb_twilio_call_t c;
    sb_str_t v;
    int rc;

    memset(&c, 0, sizeof c);
    c.direction = SB_TWILIO_DIR_OTHER;

    if (!get(f, "CallSid", &v)) {
        set_err(err, errlen, "missing CallSid");
        rc = SB_EPARSE;
        goto fail;
    }
    if ((rc = copy(v, "CallSid", &c.call_sid, err, errlen)) < 0)
        goto fail;

    if (!get(f, "CallStatus", &v)) {
        set_err(err, errlen, "missing CallStatus");
        rc = SB_EPARSE;
        goto fail;
    }
    for (size_t i = 1; i < sizeof call_status_names / sizeof call_status_names[0]; i++)
        if (sb_str_eq_cstr(v, call_status_names[i]))
            c.status = (sb_twilio_call_status_t)i;
    if (!c.status) {
        set_err(err, errlen, "CallStatus: unknown status '%s'", quote(v).s);
        rc = SB_EPARSE;
        goto fail;
    }

    static const char *const required[] = {"From", "To", "Direction"};
    for (size_t i = 0; incoming && i < sizeof required / sizeof required[0]; i++) {
        if (!get(f, required[i], &v)) {
            set_err(err, errlen, "missing %s", required[i]);
            rc = SB_EPARSE;
            goto fail;
        }
    }

    if ((rc = copy_opt(f, "From", &c.from, err, errlen)) < 0 || (rc = copy_opt(f, "To", &c.to, err, errlen)) < 0 ||
        (rc = copy_opt(f, "Direction", &c.direction_name, err, errlen)) < 0 ||
        (rc = copy_opt(f, "AccountSid", &c.account_sid, err, errlen)) < 0 ||
        (rc = copy_opt(f, "ParentCallSid", &c.parent_call_sid, err, errlen)) < 0 ||
        (rc = copy_opt(f, "CallerName", &c.caller_name, err, errlen)) < 0 ||
        (rc = copy_opt(f, "ForwardedFrom", &c.forwarded_from, err, errlen)) < 0 ||
        (rc = opt_number(f, "CallDuration", &c.duration, err, errlen)) < 0 ||
        (rc = opt_number(f, "SequenceNumber", &c.sequence, err, errlen)) < 0)
        goto fail;

    if (c.direction_name) {
        for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++)
            if (strcmp(c.direction_name, dirs[i].name) == 0)
                c.direction = dirs[i].dir;
    }
    const char *ours = c.direction == SB_TWILIO_DIR_INBOUND ? c.to
                       : c.direction == SB_TWILIO_DIR_OTHER ? NULL
                                                            : c.from;
    if (ours)
        c.account = sb_strdup(ours);

    if (get(f, "Timestamp", &v))
        c.timestamp = rfc2822_time(v);

    *call = c;
    return 0;

fail:
    sb_twilio_call_cleanup(&c);
    return rc;
}

int sb_twilio_parse_call(const sb_form_t *f, sb_twilio_call_t *call, char *err, size_t errlen)
{
    return parse_call(f, call, true, err, errlen);
}

int sb_twilio_parse_call_status(const sb_form_t *f, sb_twilio_call_t *call, char *err, size_t errlen)
{
    return parse_call(f, call, false, err, errlen);
}
