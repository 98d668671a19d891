/* Unit tests for proto/form: splitting and decoding of form-urlencoded bodies (order, duplicates, empty segments,
 * names without '=', '+' and %XX), the errors (bad escapes, invalid UTF-8, pair and name limits), lookups, and
 * real Twilio bodies as the providers send them. */
#include "proto/form.h"

#include "proto/err.h"
#include "tests/tap.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Parses a NUL-terminated body. */
static int parse(sb_form_t *f, const char *body)
{
    return sb_form_parse(f, sb_str_cstr(body));
}

/* The value of the first pair called name as a C string, or NULL. */
static const char *val(const sb_form_t *f, const char *name)
{
    const sb_form_pair_t *p = sb_form_find_cstr(f, name);
    return p ? p->value.p : NULL;
}

static bool pair_is(const sb_form_t *f, size_t i, const char *name, const char *value)
{
    return i < f->n && sb_str_eq_cstr(f->pairs[i].name, name) && sb_str_eq_cstr(f->pairs[i].value, value);
}

TEST(empty)
{
    sb_form_t f;
    is_int(sb_form_parse(&f, sb_str(NULL, 0)), 0, "NULL, 0 is an empty form");
    is_int((long long)f.n, 0, "zero pairs");
    ok(f.pairs == NULL, "nothing allocated");
    sb_form_cleanup(&f);

    is_int(parse(&f, ""), 0, "empty body");
    is_int((long long)f.n, 0, "zero pairs");
    is_int(parse(&f, "&&&"), 0, "only separators");
    is_int((long long)f.n, 0, "still zero pairs");
    ok(sb_form_find_cstr(&f, "") == NULL, "nothing to find");
    sb_form_cleanup(&f);
    sb_form_cleanup(&f);
    ok(f.pairs == NULL && f.n == 0, "cleanup twice is harmless");
}

TEST(split)
{
    sb_form_t f;
    is_int(parse(&f, "a=1&b=2&c=3"), 0, "three pairs");
    is_int((long long)f.n, 3, "count");
    ok(pair_is(&f, 0, "a", "1") && pair_is(&f, 1, "b", "2") && pair_is(&f, 2, "c", "3"), "in body order");
    sb_form_cleanup(&f);

    is_int(parse(&f, "&a=1&&b=2&"), 0, "empty segments anywhere");
    is_int((long long)f.n, 2, "skipped");
    ok(pair_is(&f, 0, "a", "1") && pair_is(&f, 1, "b", "2"), "the real pairs kept");
    sb_form_cleanup(&f);

    is_int(parse(&f, "a"), 0, "a name alone");
    is_int((long long)f.n, 1, "one pair");
    ok(pair_is(&f, 0, "a", ""), "empty value");
    sb_form_cleanup(&f);

    is_int(parse(&f, "a=&b&=&=x"), 0, "empty values and names");
    is_int((long long)f.n, 4, "four pairs");
    ok(pair_is(&f, 0, "a", "") && pair_is(&f, 1, "b", "") && pair_is(&f, 2, "", "") && pair_is(&f, 3, "", "x"),
       "a=, b, =, =x");
    sb_form_cleanup(&f);

    is_int(parse(&f, "a=b=c&d==&e=%3D"), 0, "'=' inside values");
    ok(pair_is(&f, 0, "a", "b=c") && pair_is(&f, 1, "d", "=") && pair_is(&f, 2, "e", "="), "first '=' splits");
    sb_form_cleanup(&f);
}

TEST(decode)
{
    sb_form_t f;
    is_int(parse(&f, "Body=hello+world&To=%2B15551234567&x%2By=a%2bb&sp%20ace=%7e"), 0, "escapes");
    is_str(val(&f, "Body"), "hello world", "'+' is a space");
    is_str(val(&f, "To"), "+15551234567", "%%2B is '+'");
    is_str(val(&f, "x+y"), "a+b", "names decoded too; lower-case hex");
    is_str(val(&f, "sp ace"), "~", "%%20 in a name");
    sb_form_cleanup(&f);

    is_int(parse(&f, "q=a%26b%3Dc&r=%25"), 0, "encoded separators");
    is_int((long long)f.n, 2, "%%26 does not split");
    is_str(val(&f, "q"), "a&b=c", "decoded after splitting");
    is_str(val(&f, "r"), "%", "%%25 is '%%'");
    sb_form_cleanup(&f);

    is_int(parse(&f, "Body=Ol%C3%A1+%F0%9F%98%80&raw=\xc3\xa9t\xc3\xa9"), 0, "UTF-8, encoded and raw");
    is_str(val(&f, "Body"), "Ol\xc3\xa1 \xf0\x9f\x98\x80", "multi-byte characters");
    is_str(val(&f, "raw"), "\xc3\xa9t\xc3\xa9", "raw UTF-8 bytes pass through");
    sb_form_cleanup(&f);

    is_int(parse(&f, "n=a%00b"), 0, "%%00 is valid UTF-8");
    const sb_form_pair_t *p = sb_form_find_cstr(&f, "n");
    ok(p && p->value.len == 3 && memcmp(p->value.p, "a\0b", 3) == 0, "NUL kept, counted length");
    sb_form_cleanup(&f);

    /* every name and value is NUL-terminated in the form's storage */
    is_int(parse(&f, "a=1&bb&=ccc"), 0, "terminators");
    bool terminated = true;
    for (size_t i = 0; i < f.n; i++)
        terminated = terminated && f.pairs[i].name.p[f.pairs[i].name.len] == '\0' &&
                     f.pairs[i].value.p[f.pairs[i].value.len] == '\0';
    ok(terminated, "name.p[len] and value.p[len] are NUL");
    sb_form_cleanup(&f);
}

TEST(bad_escapes)
{
    static const char *const bad[] = {"%",     "a=%",     "a=%2",  "a=%G0", "a=%0G", "a=1&b=%zz",
                                      "%4=x",  "a=50%",   "a=%%41", "a=%+1", "a=% 1", "a=x%2"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        sb_form_t f;
        is_int(parse(&f, bad[i]), SB_EPARSE, "\"%s\" refused", bad[i]);
        ok(f.n == 0 && f.pairs == NULL, "\"%s\": form left empty", bad[i]);
        sb_form_cleanup(&f);
    }
}

TEST(bad_utf8)
{
    static const char *const bad[] = {
        "a=%C3",        /* truncated */
        "a=%C0%80",     /* overlong NUL */
        "a=%ED%A0%80",  /* surrogate */
        "a=%F4%90%80%80", /* above U+10FFFF */
        "a=%FF",        /* never valid */
        "a=\xff",       /* raw invalid byte */
        "%80=x",        /* in a name */
        "ok=1&a=%E2%82", /* after a good pair */
        "a=%C3+%A9",    /* the '+' becomes a space and breaks the sequence */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        sb_form_t f;
        is_int(parse(&f, bad[i]), SB_EPARSE, "bad UTF-8 #%zu refused", i);
        ok(f.n == 0 && f.pairs == NULL, "bad UTF-8 #%zu: form left empty", i);
    }
    /* a sequence split across pairs is invalid in each */
    sb_form_t f;
    is_int(parse(&f, "a=%E2%82&%AC"), SB_EPARSE, "UTF-8 does not continue across '&'");
}

TEST(limits)
{
    static char body[16384];
    size_t len = 0;
    sb_form_t f;

    for (int i = 0; i < SB_FORM_MAX_PAIRS; i++)
        len += (size_t)snprintf(body + len, sizeof body - len, "%sk%d=v%d", i ? "&" : "", i, i);
    is_int(sb_form_parse(&f, sb_str(body, len)), 0, "%d pairs accepted", SB_FORM_MAX_PAIRS);
    is_int((long long)f.n, SB_FORM_MAX_PAIRS, "all kept");
    ok(pair_is(&f, SB_FORM_MAX_PAIRS - 1, "k511", "v511"), "last pair right");
    is_str(val(&f, "k300"), "v300", "lookup in a big form");
    sb_form_cleanup(&f);

    size_t with_empty = len;
    memcpy(body + with_empty, "&&&", 3);
    is_int(sb_form_parse(&f, sb_str(body, with_empty + 3)), 0, "empty segments do not count");
    sb_form_cleanup(&f);

    memcpy(body + len, "&x", 2);
    is_int(sb_form_parse(&f, sb_str(body, len + 2)), SB_E2BIG, "one pair more: E2BIG");
    ok(f.n == 0 && f.pairs == NULL, "form left empty");
    memcpy(body + len, "&%", 2);
    is_int(sb_form_parse(&f, sb_str(body, len + 2)), SB_E2BIG, "the pair count is checked before decoding");

    /* names: SB_FORM_MAX_NAME decoded bytes, however they were encoded */
    memset(body, 'n', SB_FORM_MAX_NAME);
    memcpy(body + SB_FORM_MAX_NAME, "=v", 2);
    is_int(sb_form_parse(&f, sb_str(body, SB_FORM_MAX_NAME + 2)), 0, "name of %d bytes", SB_FORM_MAX_NAME);
    is_int((long long)f.pairs[0].name.len, SB_FORM_MAX_NAME, "full name kept");
    sb_form_cleanup(&f);
    memset(body, 'n', SB_FORM_MAX_NAME + 1);
    memcpy(body + SB_FORM_MAX_NAME + 1, "=v", 2);
    is_int(sb_form_parse(&f, sb_str(body, SB_FORM_MAX_NAME + 3)), SB_E2BIG, "one byte more: E2BIG");
    is_int(sb_form_parse(&f, sb_str(body, SB_FORM_MAX_NAME + 1)), SB_E2BIG, "also without '='");

    len = 0;
    for (int i = 0; i < SB_FORM_MAX_NAME; i++)
        len += (size_t)snprintf(body + len, sizeof body - len, "%%41");
    is_int(sb_form_parse(&f, sb_str(body, len)), 0, "%d encoded bytes (%zu raw) decode to the limit",
           SB_FORM_MAX_NAME, len);
    sb_form_cleanup(&f);

    /* values have no limit of their own (the HTTP layer bounds the body) */
    memcpy(body, "v=", 2);
    memset(body + 2, 'x', 10000);
    is_int(sb_form_parse(&f, sb_str(body, 10002)), 0, "long value");
    is_int((long long)f.pairs[0].value.len, 10000, "kept whole");
    sb_form_cleanup(&f);
}

TEST(lookup)
{
    sb_form_t f;
    is_int(parse(&f, "From=%2B1&Body=&From=%2B2&body=x"), 0, "duplicates");
    is_int((long long)f.n, 4, "duplicates kept");
    ok(pair_is(&f, 0, "From", "+1") && pair_is(&f, 2, "From", "+2"), "both, in order");
    is_str(val(&f, "From"), "+1", "lookup finds the first");
    const sb_form_pair_t *p = sb_form_find(&f, SB_STR("Body"));
    ok(p == &f.pairs[1], "by sb_str_t: the pair itself");
    ok(p && p->value.len == 0, "present with an empty value");
    ok(sb_form_find_cstr(&f, "To") == NULL, "absent is NULL, not empty");
    is_str(val(&f, "body"), "x", "names are case-sensitive");
    ok(sb_form_find(&f, sb_str("Fromage", 4)) == &f.pairs[0], "counted name, not NUL-terminated");
    ok(sb_form_find(&f, sb_str("From", 3)) == NULL, "no prefix match");
    sb_form_cleanup(&f);

    sb_form_init(&f);
    ok(sb_form_find_cstr(&f, "x") == NULL, "lookup on an empty form");
}

TEST(twilio_bodies)
{
    /* An inbound SMS as Twilio posts it (as recorded in nyaruka/courier's Twilio handler tests). */
    static const char sms[] =
        "ToCountry=US&ToState=District+Of+Columbia&SmsMessageSid=SMe287d7109a5a925f182f0e07fe5b223b&NumMedia=0&"
        "ToCity=&FromZip=01022&SmsSid=SMe287d7109a5a925f182f0e07fe5b223b&FromState=MA&SmsStatus=received&"
        "FromCity=CHICOPEE&Body=Msg&FromCountry=US&To=%2B12028831111&ToZip=&NumSegments=1&"
        "MessageSid=SMe287d7109a5a925f182f0e07fe5b223b&AccountSid=acctid&From=%2B14133881111&ApiVersion=2010-04-01";
    sb_form_t f;
    is_int(parse(&f, sms), 0, "SMS webhook parses");
    is_int((long long)f.n, 19, "every parameter kept");
    ok(pair_is(&f, 0, "ToCountry", "US") && pair_is(&f, 18, "ApiVersion", "2010-04-01"), "in order");
    is_str(val(&f, "ToState"), "District Of Columbia", "'+' decoded");
    is_str(val(&f, "To"), "+12028831111", "%%2B decoded");
    is_str(val(&f, "ToCity"), "", "empty value kept");
    sb_form_cleanup(&f);

    /* A call progress callback with %20 spaces, and a name without '=' (both seen from Twilio-compatible senders) */
    static const char call[] =
        "Called=%2B551135892112&Direction=outbound-api&Timestamp=Sun%2C%2025%20Mar%202018%2009%3A53%3A19%20%2B0000&"
        "CallbackSource=call-progress-events&ForwardedFrom&CalledCity=S%C3%A3o%20Paulo&CallStatus=completed";
    is_int(parse(&f, call), 0, "call status callback parses");
    is_str(val(&f, "Timestamp"), "Sun, 25 Mar 2018 09:53:19 +0000", "date decoded");
    is_str(val(&f, "CalledCity"), "S\xc3\xa3o Paulo", "UTF-8 city");
    ok(sb_form_find_cstr(&f, "ForwardedFrom") && !*val(&f, "ForwardedFrom"), "bare name is an empty value");
    sb_form_cleanup(&f);
}

int main(void)
{
    RUN(empty);
    RUN(split);
    RUN(decode);
    RUN(bad_escapes);
    RUN(bad_utf8);
    RUN(limits);
    RUN(lookup);
    RUN(twilio_bodies);
    return tap_done();
}
