/* Unit tests for proto/fallback: the request's list and fallback_after (every refusal and its message), the stored
 * form written and read back (also as PostgreSQL writes jsonb), and the rest of a list. */
#include "proto/fallback.h"

#include "proto/err.h"
#include "tests/tap.h"

#include <jansson.h>
#include <string.h>

/* sb_fallback_from_request on the "fallback" and "fallback_after" of a JSON object text; *why the refusal. */
static int from(const char *text, int64_t primary, sb_fallback_t *f, const char **why)
{
    json_t *j = json_loads(text, 0, NULL);
    int rc = sb_fallback_from_request(json_object_get(j, "fallback"), json_object_get(j, "fallback_after"), primary, f,
                                      why);
    json_decref(j);
    return rc;
}

static bool refused(const char *text, const char *needle)
{
    sb_fallback_t f;
    const char *why = NULL;
    return from(text, 7, &f, &why) == SB_EINVAL && why && strstr(why, needle);
}

TEST(request)
{
    sb_fallback_t f;
    const char *why = "x";
    is_int(from("{}", 7, &f, &why), 0, "no list: fine");
    ok(f.n == 0 && f.after_s == SB_FALLBACK_AFTER_DEFAULT && !why, "none, the default after_s");
    is_int(from("{\"fallback\": null, \"fallback_after\": null}", 7, &f, &why), 0, "nulls: none");
    is_int(from("{\"fallback\": []}", 7, &f, &why), 0, "an empty list: none");
    ok(f.n == 0, "(n 0)");
    is_int(from("{\"fallback\": [{\"channel_id\": \"12\"}, {\"channel_id\": 9}], \"fallback_after\": 5}", 7, &f, &why),
           0, "strings and integers");
    ok(f.n == 2 && f.channels[0] == 12 && f.channels[1] == 9 && f.after_s == 5, "in order, with after_s");
    is_int(from("{\"fallback\": [{\"channel_id\": \"9223372036854775807\"}], \"fallback_after\": 86400}", 7, &f,
                &why), 0, "the largest id and after_s");

    ok(refused("{\"fallback\": {\"channel_id\": 1}}", "must be an array"), "an object: refused");
    ok(refused("{\"fallback\": \"12\"}", "must be an array"), "a string: refused");
    ok(refused("{\"fallback\": [12]}", "'channel_id'"), "a bare id: refused");
    ok(refused("{\"fallback\": [{\"id\": 12}]}", "'channel_id'"), "no channel_id: refused");
    ok(refused("{\"fallback\": [{\"channel_id\": 0}]}", "'channel_id'"), "id 0: refused");
    ok(refused("{\"fallback\": [{\"channel_id\": -3}]}", "'channel_id'"), "a negative id: refused");
    ok(refused("{\"fallback\": [{\"channel_id\": \"1e3\"}]}", "'channel_id'"), "not digits: refused");
    ok(refused("{\"fallback\": [{\"channel_id\": \"\"}]}", "'channel_id'"), "empty: refused");
    ok(refused("{\"fallback\": [{\"channel_id\": \"92233720368547758070\"}]}", "'channel_id'"), "too large: refused");
    ok(refused("{\"fallback\": [{\"channel_id\": 1.5}]}", "'channel_id'"), "a real: refused");
    ok(refused("{\"fallback\": [{\"channel_id\": 7}]}", "own channel"), "the message's own channel: refused");
    ok(refused("{\"fallback\": [{\"channel_id\": 8}, {\"channel_id\": \"8\"}]}", "twice"), "twice: refused");
    ok(refused("{\"fallback\": [{\"channel_id\": 1}, {\"channel_id\": 2}, {\"channel_id\": 3}, {\"channel_id\": 4},"
               " {\"channel_id\": 5}, {\"channel_id\": 6}]}", "at most 5"), "six: refused");
    is_int(from("{\"fallback\": [{\"channel_id\": 1}, {\"channel_id\": 2}, {\"channel_id\": 3}, {\"channel_id\": 4},"
                " {\"channel_id\": 5}]}", 7, &f, &why), 0, "five: fine");
    ok(refused("{\"fallback\": [{\"channel_id\": 1}], \"fallback_after\": 0}", "fallback_after"), "after 0: refused");
    ok(refused("{\"fallback\": [{\"channel_id\": 1}], \"fallback_after\": 86401}", "fallback_after"),
       "after 86401: refused");
    ok(refused("{\"fallback\": [{\"channel_id\": 1}], \"fallback_after\": \"60\"}", "fallback_after"),
       "after as a string: refused");
    ok(refused("{\"fallback\": [{\"channel_id\": 1}], \"fallback_after\": 2.5}", "fallback_after"),
       "after as a real: refused");
    ok(refused("{\"fallback_after\": 30}", "needs a 'fallback'"), "after without a list: refused");
    ok(refused("{\"fallback\": [], \"fallback_after\": 30}", "needs a 'fallback'"), "after with an empty list: refused");
}

TEST(stored)
{
    sb_fallback_t f = {.channels = {11, 22, 33}, .n = 3, .after_s = 45}, g;
    sb_buf_t b;
    sb_buf_init(&b);
    is_int((long long)sb_fallback_format(&f, 0, &b), 3, "three written");
    is_str(sb_buf_cstr(&b), "{\"channels\":[11,22,33],\"after_s\":45}", "the stored form");
    is_int(sb_fallback_parse(b.p, b.len, &g), 0, "read back");
    ok(g.n == 3 && g.channels[0] == 11 && g.channels[2] == 33 && g.after_s == 45, "the same list");
    b.len = 0;
    is_int((long long)sb_fallback_format(&f, 1, &b), 2, "the rest after the first");
    is_str(sb_buf_cstr(&b), "{\"channels\":[22,33],\"after_s\":45}", "what the fallback message carries");
    b.len = 0;
    is_int((long long)sb_fallback_format(&f, 3, &b), 0, "none left ...");
    is_int((long long)b.len, 0, "... writes nothing");
    const char *pg = "{\"after_s\": 60, \"channels\": [5, 6]}"; /* jsonb's output: keys by length, spaces */
    is_int(sb_fallback_parse(pg, strlen(pg), &g), 0, "jsonb's form");
    ok(g.n == 2 && g.channels[1] == 6 && g.after_s == 60, "read");
    static const char *const bad[] = {"", "[]", "{}", "{\"channels\":[1]}", "{\"after_s\":5}",
                                      "{\"channels\":[0],\"after_s\":5}", "{\"channels\":[1],\"after_s\":0}",
                                      "{\"channels\":{},\"after_s\":5}", "{\"channels\":[1,2,3,4,5,6],\"after_s\":5}",
                                      "{\"channels\":[\"x\"],\"after_s\":5}", "not json"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        g.n = 9;
        ok(sb_fallback_parse(bad[i], strlen(bad[i]), &g) == SB_EPARSE && g.n == 0, "refused: %s", bad[i]);
    }
    ok(sb_fallback_parse(NULL, 0, &g) == SB_EPARSE, "NULL: refused");
    sb_buf_cleanup(&b);
}

/* What goes along to the next channel: a template, never a Messenger tag. */
static void test_keeps_template(void)
{
    ok(!sb_fallback_keeps_template(NULL), "no template: nothing");
    ok(sb_fallback_keeps_template("{\"name\":\"hello\",\"language\":\"en_US\"}"), "a Meta template goes along");
    ok(sb_fallback_keeps_template("{\"content_sid\":\"HX1\",\"variables\":{\"1\":\"a\"}}"), "a Content API one");
    ok(!sb_fallback_keeps_template("{\"tag\": \"HUMAN_AGENT\"}"), "a message tag stays behind");
}

int main(void)
{
    RUN(request);
    RUN(stored);
    RUN(keeps_template);
    return tap_done();
}
