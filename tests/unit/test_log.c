/* Unit tests for gateway/log's line rendering: the text format, the JSON-lines format (escaping, invalid UTF-8, the
 * shard number, cut lines that stay whole objects) and the redaction every line goes through. */
#include "gateway/log.h"

#include "proto/err.h"
#include "tests/tap.h"

#include <string.h>

static char out[4096];

static const char *render(enum sb_log_format f, size_t size, enum sb_log_level lv, const char *ctx, const char *msg)
{
    static char m[2048];
    struct timespec ts = {.tv_sec = 1767322800, .tv_nsec = 123456789}; /* 2026-01-02T03:00:00.123Z */
    size_t n = strlen(msg);
    memcpy(m, msg, n);
    size_t len = sb_log_render(out, size, f, lv, ctx, &ts, m, n);
    out[len] = '\0';
    return out;
}

TEST(text)
{
    is_str(render(SB_LOG_TEXT, 1024, SB_LOG_INFO, "shard 1", "postgres: connected"),
           "2026-01-02T03:00:00.123Z info  [shard 1] postgres: connected\n", "a text line");
    is_str(render(SB_LOG_TEXT, 1024, SB_LOG_WARN, "main", "to +14155550123 with sb_live_abcdef"),
           "2026-01-02T03:00:00.123Z warn  [main] to +1415*****23 with sb_live_***\n", "redacted");
    char big[1500];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    const char *l = render(SB_LOG_TEXT, 1024, SB_LOG_INFO, "main", big);
    is_int((long long)strlen(l), 1024, "a long line is cut to the buffer");
    ok(l[1023] == '\n', "and still ends in a newline");
}

TEST(json)
{
    is_str(render(SB_LOG_JSON, 2048, SB_LOG_ERROR, "shard 12", "store: \"x\" \\ refused\n\ttab \x01"),
           "{\"ts\":\"2026-01-02T03:00:00.123Z\",\"level\":\"error\",\"shard\":12,\"ctx\":\"shard 12\","
           "\"msg\":\"store: \\\"x\\\" \\\\ refused\\n\\ttab \\u0001\"}\n",
           "a JSON line, escaped");
    is_str(render(SB_LOG_JSON, 2048, SB_LOG_DEBUG, "main", "caf\xc3\xa9 \xff \xe2\x82"),
           "{\"ts\":\"2026-01-02T03:00:00.123Z\",\"level\":\"debug\",\"shard\":null,\"ctx\":\"main\","
           "\"msg\":\"caf\xc3\xa9 \\ufffd \\ufffd\\ufffd\"}\n",
           "UTF-8 kept, invalid bytes as U+FFFD, no shard outside shard threads");
    ok(strstr(render(SB_LOG_JSON, 2048, SB_LOG_INFO, "shard 3x", "m"), "\"shard\":null"),
       "a context that is not exactly a shard has no shard number");
    is_str(render(SB_LOG_JSON, 2048, SB_LOG_INFO, "mock", "from whatsapp:+447700900123"),
           "{\"ts\":\"2026-01-02T03:00:00.123Z\",\"level\":\"info\",\"shard\":null,\"ctx\":\"mock\","
           "\"msg\":\"from whatsapp:+4477******23\"}\n",
           "redacted in JSON too");
    char big[1500];
    memset(big, '"', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    const char *l = render(SB_LOG_JSON, 200, SB_LOG_INFO, "shard 0", big);
    size_t n = strlen(l);
    ok(n <= 200 && n > 100, "a long JSON line is cut to the buffer (%zu bytes)", n);
    ok(n >= 3 && !strcmp(l + n - 3, "\"}\n"), "and still closes its object");
    ok(n >= 4 && l[n - 4] == '"' && l[n - 5] == '\\', "cut between two escapes, not inside one");
}

TEST(parse)
{
    enum sb_log_format f;
    ok(sb_log_format_parse("json", &f) == 0 && f == SB_LOG_JSON, "json");
    ok(sb_log_format_parse("text", &f) == 0 && f == SB_LOG_TEXT, "text");
    is_int(sb_log_format_parse("Json", &f), SB_EINVAL, "case matters");
}

int main(void)
{
    RUN(text);
    RUN(json);
    RUN(parse);
    return tap_done();
}
