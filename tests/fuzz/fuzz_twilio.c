/* libFuzzer target for adapters/twilio: every Twilio webhook parser on one form.
 *
 * The input is a form body. It is parsed with sb_form_parse; when that succeeds, the same form goes through the
 * inbound message, message status, incoming call and call status parsers and the status normalizer. Each result is
 * checked against twilio.h: the documented codes only; on failure the output stays zeroed and err holds a non-empty
 * message of printable ASCII; on success every string is valid UTF-8 with no NUL inside, the required fields are set
 * and non-empty, nmedia is within SB_EVENT_MAX_MEDIA with exactly the first nmedia media filled, addresses carry no
 * channel prefix, channel and status come from the documented sets, a call's enums and numbers are in range and its
 * account is the side the direction says. Each parse is also run twice and must agree (no hidden state). Everything
 * is cleaned up, so LeakSanitizer sees any leak on an error path. Any violation traps. */
#include "tests/fuzz/fuzz.h"
#include "adapters/twilio.h"

#include "proto/err.h"
#include "proto/event.h"
#include "proto/form.h"
#include "proto/line.h"

#include <stdint.h>
#include <string.h>


static bool zeroed(const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        if (b[i])
            return false;
    return true;
}

/* An owned string of the contract: NULL, or valid UTF-8 (strlen stops at the end: no NUL inside). */
static void check_str(const char *s, bool required)
{
    if (!s) {
        CHECK(!required);
        return;
    }
    size_t n = strlen(s);
    CHECK(sb_utf8_valid(s, n));
    if (required)
        CHECK(n > 0);
}

static void check_err(const char *err)
{
    size_t n = strnlen(err, 256);
    CHECK(n > 0 && n < 256);
    for (size_t i = 0; i < n; i++)
        CHECK(err[i] >= 0x20 && err[i] < 0x7f);
}

static bool no_prefix(const char *addr)
{
    return strchr(addr, ':') == NULL;
}

static bool in_set(const char *s, const char *const *set)
{
    for (; *set; set++)
        if (strcmp(s, *set) == 0)
            return true;
    return false;
}

static const char *const statuses[] = {"queued", "sent", "delivered", "read", "failed", "undelivered", NULL};

static void check_event(const sb_event_t *ev, bool message)
{
    CHECK(ev->kind == (message ? SB_EV_MESSAGE : SB_EV_STATUS));
    CHECK(ev->channel == SB_CH_TWILIO_SMS || ev->channel == SB_CH_TWILIO_WHATSAPP);
    check_str(ev->provider_id, true);
    check_str(ev->account, true);
    CHECK(no_prefix(ev->account));
    CHECK(ev->timestamp == 0);
    if (message) {
        check_str(ev->from, true);
        check_str(ev->to, true);
        CHECK(no_prefix(ev->from) && no_prefix(ev->to));
        CHECK(strcmp(ev->to, ev->account) == 0);
        check_str(ev->body, false);
        CHECK(ev->body != NULL);
        check_str(ev->profile_name, ev->profile_name != NULL);
        CHECK(ev->nmedia <= SB_EVENT_MAX_MEDIA);
        for (size_t i = 0; i < SB_EVENT_MAX_MEDIA; i++) {
            const sb_media_t *m = &ev->media[i];
            CHECK(m->id == NULL);
            if (i < ev->nmedia) {
                check_str(m->url, true);
                check_str(m->content_type, m->content_type != NULL);
            } else {
                CHECK(m->url == NULL && m->content_type == NULL);
            }
        }
        CHECK(!ev->status && !ev->error_code && !ev->error_message);
    } else {
        CHECK(ev->status && in_set(ev->status, statuses));
        check_str(ev->error_code, ev->error_code != NULL);
        check_str(ev->error_message, ev->error_message != NULL);
        CHECK(!ev->from && !ev->to && !ev->body && !ev->profile_name && ev->nmedia == 0);
    }
}

static void run_event(const sb_form_t *f, int (*parse)(const sb_form_t *, sb_event_t *, char *, size_t), bool message)
{
    sb_event_t ev, ev2;
    char err[256], err2[256];
    memset(&ev, 0, sizeof ev);
    memset(&ev2, 0, sizeof ev2);
    err[0] = err2[0] = '\0';

    int rc = parse(f, &ev, err, sizeof err);
    int rc2 = parse(f, &ev2, err2, sizeof err2);
    CHECK(rc == rc2);
    if (rc == 0) {
        check_event(&ev, message);
        CHECK(strcmp(ev.provider_id, ev2.provider_id) == 0 && ev.nmedia == ev2.nmedia && ev.channel == ev2.channel);
    } else {
        CHECK(rc == SB_EPARSE || (!message && rc == SB_ENOENT));
        CHECK(zeroed(&ev, sizeof ev));
        check_err(err);
        CHECK(strcmp(err, err2) == 0);
    }
    sb_event_cleanup(&ev);
    sb_event_cleanup(&ev2);

    /* a tiny error buffer and none at all must be fine too */
    char tiny[3];
    rc2 = parse(f, &ev2, tiny, sizeof tiny);
    CHECK(rc2 == rc);
    if (rc)
        CHECK(strlen(tiny) < sizeof tiny);
    sb_event_cleanup(&ev2);
    CHECK(parse(f, &ev2, NULL, 0) == rc);
    sb_event_cleanup(&ev2);
}

static void check_call(const sb_twilio_call_t *c, bool incoming)
{
    check_str(c->call_sid, true);
    CHECK(sb_twilio_call_status_name(c->status) != NULL);
    CHECK(c->direction >= SB_TWILIO_DIR_INBOUND && c->direction <= SB_TWILIO_DIR_OTHER);
    const char *const strs[] = {c->account_sid, c->parent_call_sid, c->from, c->to, c->account, c->caller_name,
                                c->forwarded_from, c->direction_name};
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++)
        check_str(strs[i], strs[i] != NULL);
    if (incoming)
        CHECK(c->from && c->to && c->direction_name);
    if (c->direction == SB_TWILIO_DIR_INBOUND)
        CHECK(c->to ? c->account && strcmp(c->account, c->to) == 0 : !c->account);
    else if (c->direction == SB_TWILIO_DIR_OTHER)
        CHECK(!c->account);
    else
        CHECK(c->from ? c->account && strcmp(c->account, c->from) == 0 : !c->account);
    if (c->direction != SB_TWILIO_DIR_OTHER)
        CHECK(c->direction_name);
    CHECK(c->duration >= -1 && c->sequence >= -1 && c->timestamp >= 0);
}

static void run_call(const sb_form_t *f, int (*parse)(const sb_form_t *, sb_twilio_call_t *, char *, size_t),
                     bool incoming)
{
    sb_twilio_call_t c;
    char err[256];
    memset(&c, 0, sizeof c);
    err[0] = '\0';
    int rc = parse(f, &c, err, sizeof err);
    if (rc == 0) {
        check_call(&c, incoming);
    } else {
        CHECK(rc == SB_EPARSE);
        CHECK(zeroed(&c, sizeof c));
        check_err(err);
    }
    sb_twilio_call_cleanup(&c);
    CHECK(zeroed(&c, sizeof c));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    sb_form_t f;
    if (sb_form_parse(&f, sb_str(size ? (const char *)data : NULL, size)) != 0)
        return 0;

    run_event(&f, sb_twilio_parse_message, true);
    run_event(&f, sb_twilio_parse_status, false);
    run_call(&f, sb_twilio_parse_call, true);
    run_call(&f, sb_twilio_parse_call_status, false);

    /* the normalizer on every value, as the REST client will call it on answers */
    for (size_t i = 0; i < f.n; i++) {
        const char *out = NULL;
        int rc = sb_twilio_status_normalize(f.pairs[i].value, &out);
        CHECK(rc == 0 || rc == SB_ENOENT || rc == SB_EPARSE);
        CHECK((rc == 0) == (out != NULL));
        if (rc == 0)
            CHECK(in_set(out, statuses));
    }

    /* the incoming-call parser is the stricter one: whatever it accepts, the status parser accepts */
    sb_twilio_call_t a, b;
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    if (sb_twilio_parse_call(&f, &a, NULL, 0) == 0)
        CHECK(sb_twilio_parse_call_status(&f, &b, NULL, 0) == 0 && a.status == b.status && a.sequence == b.sequence);
    sb_twilio_call_cleanup(&a);
    sb_twilio_call_cleanup(&b);

    sb_form_cleanup(&f);
    return 0;
}
