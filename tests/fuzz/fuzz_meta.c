/* libFuzzer target for adapters/meta: Meta webhook bodies and the verification handshake.
 *
 * The input is a webhook body. It is parsed twice: into an empty list, and into a list already holding one event,
 * which must come out untouched whatever happens (kept and followed by the same events on success, alone on
 * failure). The results are checked against the contract of meta.h: only the documented codes; on failure an empty
 * list and a reason; on success at most SB_META_MAX_EVENTS events, each of a valid kind and Meta channel, with its
 * identifiers present and printable ASCII, every string valid UTF-8, nmedia <= SB_EVENT_MAX_MEDIA, media named by an
 * id (WhatsApp) or an http(s) URL (Messenger, Instagram), statuses from the normalized set, and timestamps in range.
 * The same bytes, cut at newlines into mode, token, challenge and expected token, go through
 * sb_meta_verify_challenge, whose verdict is compared with a plain reference. Any violation traps; everything is
 * freed, so the leak checker sees what the parser leaves behind. */
#include "tests/fuzz/fuzz.h"
#include "adapters/meta.h"

#include "proto/err.h"
#include "proto/event.h"
#include "proto/line.h"
#include "proto/mem.h"
#include "proto/str.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>


static bool valid_text(const char *s)
{
    return s == NULL || sb_utf8_valid(s, strlen(s));
}

static bool valid_id(const char *s)
{
    if (!s)
        return false;
    size_t n = strlen(s);
    if (n == 0 || n > SB_META_MAX_ID)
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x21 || (unsigned char)s[i] > 0x7e)
            return false;
    return true;
}

static bool opt_id(const char *s)
{
    return s == NULL || valid_id(s);
}

static bool is_status(const char *s)
{
    static const char *const set[] = {"sent", "delivered", "read", "failed"};
    for (size_t i = 0; i < sizeof set / sizeof set[0]; i++)
        if (s && strcmp(s, set[i]) == 0)
            return true;
    return false;
}

static void check_event(const sb_event_t *e)
{
    CHECK(e->kind == SB_EV_MESSAGE || e->kind == SB_EV_STATUS);
    CHECK(e->channel == SB_CH_META_WHATSAPP || e->channel == SB_CH_META_MESSENGER ||
          e->channel == SB_CH_META_INSTAGRAM);
    CHECK(valid_id(e->account) && valid_id(e->provider_id));
    CHECK(e->timestamp >= 0 && e->timestamp <= 253402300799LL);
    CHECK(opt_id(e->to));
    CHECK(e->nmedia <= SB_EVENT_MAX_MEDIA);
    CHECK(valid_text(e->body) && valid_text(e->profile_name) && valid_text(e->error_message));
    CHECK(opt_id(e->error_code));
    for (size_t i = 0; i < e->nmedia; i++) {
        const sb_media_t *m = &e->media[i];
        CHECK(valid_text(m->url) && valid_text(m->content_type));
        if (e->channel == SB_CH_META_WHATSAPP) {
            CHECK(valid_id(m->id) && m->url == NULL);
        } else {
            CHECK(m->id == NULL && m->url != NULL && m->content_type == NULL);
            CHECK(strncmp(m->url, "https://", 8) == 0 || strncmp(m->url, "http://", 7) == 0);
        }
    }
    for (size_t i = e->nmedia; i < SB_EVENT_MAX_MEDIA; i++)
        CHECK(e->media[i].url == NULL && e->media[i].id == NULL && e->media[i].content_type == NULL);

    if (e->kind == SB_EV_MESSAGE) {
        CHECK(valid_id(e->from) && valid_id(e->to) && e->body != NULL);
        CHECK(e->status == NULL && e->error_code == NULL && e->error_message == NULL);
        CHECK(e->profile_name == NULL || e->profile_name[0] != '\0');
        CHECK(e->body[0] != '\0' || e->nmedia > 0); /* never an empty message */
    } else {
        CHECK(is_status(e->status));
        CHECK(e->from == NULL && e->body == NULL && e->profile_name == NULL && e->nmedia == 0);
        CHECK(e->error_message == NULL || e->error_message[0] != '\0');
    }
}

static bool same_event(const sb_event_t *a, const sb_event_t *b)
{
#define SAME(f) ((a->f == NULL && b->f == NULL) || (a->f && b->f && strcmp(a->f, b->f) == 0))
    if (a->kind != b->kind || a->channel != b->channel || a->timestamp != b->timestamp || a->nmedia != b->nmedia)
        return false;
    if (!SAME(account) || !SAME(provider_id) || !SAME(from) || !SAME(to) || !SAME(body) || !SAME(profile_name) ||
        !SAME(status) || !SAME(error_code) || !SAME(error_message))
        return false;
    for (size_t i = 0; i < a->nmedia; i++)
        if (!SAME(media[i].url) || !SAME(media[i].id) || !SAME(media[i].content_type))
            return false;
    return true;
#undef SAME
}

static void fuzz_parse(const char *p, size_t len)
{
    sb_event_list_t l = {0};
    sb_meta_diag_t d;
    memset(&d, 0xa5, sizeof d);
    int rc = sb_meta_parse(p, len, &l, &d);

    CHECK(rc == 0 || rc == SB_EPARSE || rc == SB_E2BIG || rc == SB_ENOMEM);
    CHECK(memchr(d.error, '\0', sizeof d.error) != NULL);
    if (rc != 0) {
        CHECK(l.n == 0 && l.v == NULL && d.error[0] != '\0' && d.skipped == 0);
    } else {
        CHECK(d.error[0] == '\0');
        CHECK(l.n <= SB_META_MAX_EVENTS);
        for (size_t i = 0; i < l.n; i++)
            check_event(&l.v[i]);
    }

    /* into a list that already holds an event */
    sb_event_list_t l2 = {0};
    sb_event_t *first = sb_event_list_push(&l2);
    first->kind = SB_EV_STATUS;
    first->account = sb_strdup("acct");
    first->provider_id = sb_strdup("prev");
    first->status = sb_strdup("sent");
    int rc2 = sb_meta_parse(p, len, &l2, NULL);
    CHECK(rc2 == rc);
    CHECK(l2.n == 1 + (rc == 0 ? l.n : 0));
    CHECK(strcmp(l2.v[0].provider_id, "prev") == 0 && strcmp(l2.v[0].account, "acct") == 0);
    for (size_t i = 0; rc == 0 && i < l.n; i++)
        CHECK(same_event(&l.v[i], &l2.v[i + 1]));

    sb_event_list_cleanup(&l);
    sb_event_list_cleanup(&l2);
}

/* Cuts the next line off *p (borrowing it); absent when the input is exhausted. */
static sb_str_t next_part(const char **p, const char *end)
{
    if (*p >= end)
        return sb_str(NULL, 0);
    const char *nl = memchr(*p, '\n', (size_t)(end - *p));
    const char *stop = nl ? nl : end;
    sb_str_t s = sb_str(*p, (size_t)(stop - *p));
    *p = nl ? nl + 1 : end;
    return s;
}

static void fuzz_verify(const char *p, size_t len)
{
    const char *cur = p, *end = p + len;
    sb_str_t mode = next_part(&cur, end), token = next_part(&cur, end), challenge = next_part(&cur, end);
    sb_str_t expected = next_part(&cur, end);
    sb_str_t echo = SB_STR("x");
    int rc = sb_meta_verify_challenge(mode, token, challenge, expected, &echo);

    bool mode_ok = sb_str_eq_cstr(mode, "subscribe");
    bool token_ok = expected.len > 0 && token.len > 0 && token.len <= SB_META_MAX_TOKEN && sb_str_eq(token, expected);
    bool challenge_ok = challenge.len > 0 && challenge.len <= SB_META_MAX_CHALLENGE;
    for (size_t i = 0; i < challenge.len; i++)
        if ((unsigned char)challenge.p[i] < 0x21 || (unsigned char)challenge.p[i] > 0x7e)
            challenge_ok = false;

    if (!mode_ok || !token_ok)
        CHECK(rc == SB_EINVAL);
    else if (!challenge_ok)
        CHECK(rc == SB_EPARSE);
    else
        CHECK(rc == 0);
    if (rc == 0)
        CHECK(echo.p == challenge.p && echo.len == challenge.len);
    else
        CHECK(echo.p == NULL && echo.len == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *p = (const char *)data;
    fuzz_parse(p, size);
    fuzz_verify(p, size);
    return 0;
}
