/* Unit tests for gateway/config: defaults, every key with good, bad and boundary values, the file format (quotes,
 * comments, CRLF, NUL bytes, overlong lines, missing '='), files, environment overrides, cross-key validation and
 * the dump's handling of secrets. */
#include "gateway/config.h"

#include "proto/err.h"
#include "proto/mem.h"
#include "tests/tap.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char err[512];

static int set(sb_config_t *c, const char *key, const char *value)
{
    err[0] = '\0';
    return sb_config_set(c, sb_str_cstr(key), sb_str_cstr(value), err, sizeof err);
}

static int parse(sb_config_t *c, const char *text)
{
    err[0] = '\0';
    return sb_config_parse(c, text, strlen(text), "test.conf", err, sizeof err);
}

static bool contains(const char *hay, const char *needle)
{
    return strstr(hay, needle) != NULL;
}

TEST(defaults)
{
    sb_config_t c;
    sb_config_init(&c);
    is_str(c.listen.host, "0.0.0.0", "listen host");
    is_int(c.listen.port, 8080, "listen port");
    is_str(c.admin_listen.host, "127.0.0.1", "admin_listen host");
    is_int(c.admin_listen.port, 7070, "admin_listen port");
    ok(c.admin_token == NULL, "admin_token unset");
    ok(c.public_url == NULL, "public_url unset");
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    is_int(c.shards, cores < 1 ? 1 : cores > 256 ? 256 : cores, "shards = online cores");
    is_str(c.redis_url, "redis://127.0.0.1:6390/0", "redis_url");
    is_str(c.redis.host, "127.0.0.1", "redis host");
    is_int(c.redis.port, 6390, "redis port");
    is_int(c.redis_db, 0, "redis db");
    is_str(c.database_url, "host=127.0.0.1 port=5440 dbname=switchboard user=switchboard", "database_url");
    ok(!c.has_master_key, "no master_key");
    is_str(c.twilio_api_base, "https://api.twilio.com", "twilio_api_base");
    is_str(c.meta_graph_base, "https://graph.facebook.com/v21.0", "meta_graph_base");
    ok(c.node_id && c.node_id[0], "node_id set");
    char host[256] = "";
    gethostname(host, sizeof host);
    host[255] = '\0';
    if (strlen(host) <= 64 && host[0] &&
        strspn(host, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") == strlen(host))
        is_str(c.node_id, host, "node_id = hostname");
    else
        is_str(c.node_id, "localhost", "node_id falls back to localhost");
    is_int(c.slots, 1024, "slots");
    is_int(c.log_level, SB_LOG_INFO, "log_level");
    is_int(c.log_format, SB_LOG_TEXT, "log_format text by default");
    is_int(c.mode_dev, 0, "production by default");
    is_int(c.header_timeout_s, 10, "header_timeout");
    is_int(c.idle_timeout_s, 60, "idle_timeout");
    is_int(c.max_header_bytes, 8192, "max_header_bytes");
    is_int(c.max_body_bytes, 1048576, "max_body_bytes");
    is_int(c.drain_timeout_s, 10, "drain_timeout");
    is_int(c.console_auth_timeout_s, 10, "console_auth_timeout");
    sb_config_cleanup(&c);
    ok(c.redis_url == NULL && c.node_id == NULL, "cleanup frees and zeroes");
    sb_config_init(&c);
    is_int(c.listen.port, 8080, "init again after cleanup");
    sb_config_cleanup(&c);
}

TEST(integers)
{
    static const struct {
        const char *key;
        long long min, max;
        size_t off;
    } ints[] = {
        {"shards", 1, 256, offsetof(sb_config_t, shards)},
        {"slots", 1, 65536, offsetof(sb_config_t, slots)},
        {"node_lease_ttl", 1, 3600, offsetof(sb_config_t, node_lease_ttl_s)},
        {"header_timeout", 1, 3600, offsetof(sb_config_t, header_timeout_s)},
        {"idle_timeout", 1, 86400, offsetof(sb_config_t, idle_timeout_s)},
        {"max_header_bytes", 1024, 65536, offsetof(sb_config_t, max_header_bytes)},
        {"max_body_bytes", 1024, 67108864, offsetof(sb_config_t, max_body_bytes)},
        {"drain_timeout", 0, 3600, offsetof(sb_config_t, drain_timeout_s)},
        {"console_auth_timeout", 1, 3600, offsetof(sb_config_t, console_auth_timeout_s)},
        {"max_concurrent_calls", 0, 10000000, offsetof(sb_config_t, max_concurrent_calls)},
        {"call_lease_ttl", 3, 3600, offsetof(sb_config_t, call_lease_ttl_s)},
        {"max_call_duration", 1, 604800, offsetof(sb_config_t, max_call_duration_s)},
    };
    sb_config_t c;
    sb_config_init(&c);
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        char v[64], want[160];
        const char *k = ints[i].key;
        int *field = (int *)((char *)&c + ints[i].off);

        snprintf(v, sizeof v, "%lld", ints[i].min);
        is_int(set(&c, k, v), 0, "%s = min %s", k, v);
        is_int(*field, ints[i].min, "%s stored min", k);
        snprintf(v, sizeof v, "  %lld\t", ints[i].max);
        is_int(set(&c, k, v), 0, "%s = max, blanks trimmed", k);
        is_int(*field, ints[i].max, "%s stored max", k);

        snprintf(v, sizeof v, "%lld", ints[i].min - 1);
        is_int(set(&c, k, v), SB_EINVAL, "%s = min-1 refused", k);
        snprintf(want, sizeof want, "bad value for '%s': must be an integer from %lld to %lld", k, ints[i].min,
                 ints[i].max);
        is_str(err, want, "%s message", k);
        is_int(*field, ints[i].max, "%s unchanged after a bad value", k);
        snprintf(v, sizeof v, "%lld", ints[i].max + 1);
        is_int(set(&c, k, v), SB_EINVAL, "%s = max+1 refused", k);
        is_int(set(&c, k, ""), SB_EINVAL, "%s empty refused", k);
        is_int(set(&c, k, "4x"), SB_EINVAL, "%s = 4x refused", k);
        is_int(set(&c, k, "1.5"), SB_EINVAL, "%s = 1.5 refused", k);
        is_int(set(&c, k, "99999999999999999999999"), SB_EINVAL, "%s huge refused", k);
    }
    is_int(set(&c, "shards", "\"8\""), 0, "quoted integer");
    is_int(c.shards, 8, "quoted integer stored");
    sb_config_cleanup(&c);
}

TEST(addresses)
{
    static const struct {
        const char *in, *host;
        int port;
    } good[] = {
        {"127.0.0.1:9000", "127.0.0.1", 9000},
        {"0.0.0.0:1", "0.0.0.0", 1},
        {"localhost:65535", "localhost", 65535},
        {"gw-1.example.com:443", "gw-1.example.com", 443},
        {"[::1]:9000", "::1", 9000},
        {"[::]:8080", "::", 8080},
        {"[2001:db8::7]:80", "2001:db8::7", 80},
        {"[::ffff:10.0.0.1]:80", "::ffff:10.0.0.1", 80},
        {":9000", "0.0.0.0", 9000},
        {"9000", "0.0.0.0", 9000},
    };
    static const char *const bad[] = {
        "",           "localhost",
        "host:",      "host:0",
        "host:65536", "host:-1",
        "host:+80",   "host: 80",
        "::1:80",     "::1",
        "[::1]",      "[::1]x",
        "[::1]:",     "[::1]:0",
        "[zz]:80",    "[]:80",
        "[::1:80",    "999.1.1.1:80",
        "1.2.3:80",   "a b:80",
        "host:80:90", "h@st:80",
        "0",          "65536",
        "*:80",       "[fe80::1%eth0]:80",
    };
    sb_config_t c;
    sb_config_init(&c);
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        is_int(set(&c, "listen", good[i].in), 0, "listen = %s", good[i].in);
        is_str(c.listen.host, good[i].host, "listen host of %s", good[i].in);
        is_int(c.listen.port, good[i].port, "listen port of %s", good[i].in);
        is_int(set(&c, "admin_listen", good[i].in), 0, "admin_listen = %s", good[i].in);
        is_str(c.admin_listen.host, good[i].host, "admin_listen host of %s", good[i].in);
    }
    set(&c, "listen", "10.0.0.1:81");
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        is_int(set(&c, "listen", bad[i]), SB_EINVAL, "listen = '%s' refused", bad[i]);
        ok(contains(err, "bad value for 'listen': "), "message names the key: %s", err);
        is_int(set(&c, "admin_listen", bad[i]), SB_EINVAL, "admin_listen = '%s' refused", bad[i]);
    }
    is_str(c.listen.host, "10.0.0.1", "listen unchanged after bad values");
    is_int(c.listen.port, 81, "listen port unchanged");
    set(&c, "listen", "::1:80");
    ok(contains(err, "brackets"), "unbracketed IPv6 explained: %s", err);
    /* 253 characters of host name are fine, 254 are not */
    char longhost[300];
    memset(longhost, 'a', 253);
    strcpy(longhost + 253, ":80");
    is_int(set(&c, "listen", longhost), 0, "253-byte host");
    is_int((long long)strlen(c.listen.host), 253, "253-byte host stored");
    memset(longhost, 'a', 254);
    strcpy(longhost + 254, ":80");
    is_int(set(&c, "listen", longhost), SB_EINVAL, "254-byte host refused");
    sb_config_cleanup(&c);
}

TEST(admin_token)
{
    sb_config_t c;
    sb_config_init(&c);
    is_int(set(&c, "admin_token", "s3cr3t-T0ken"), 0, "token set");
    is_str(c.admin_token, "s3cr3t-T0ken", "token stored");
    is_int(set(&c, "admin_token", ""), SB_EINVAL, "empty token refused");
    ok(contains(err, "'admin_token'") && contains(err, "empty"), "empty token message: %s", err);
    is_int(set(&c, "admin_token", "\"\""), SB_EINVAL, "quoted empty token refused");
    is_int(set(&c, "admin_token", "two words"), SB_EINVAL, "token with a space refused");
    ok(!contains(err, "two") && !contains(err, "words"), "message does not show the token: %s", err);
    is_int(set(&c, "admin_token", "\"tab\tbed\""), SB_EINVAL, "token with a tab refused");
    is_int(set(&c, "admin_token", "caf\xc3\xa9"), SB_EINVAL, "non-ASCII token refused");
    is_str(c.admin_token, "s3cr3t-T0ken", "token unchanged");
    char big[600];
    memset(big, 'k', 512);
    big[512] = '\0';
    is_int(set(&c, "admin_token", big), 0, "512-byte token");
    big[512] = 'k';
    big[513] = '\0';
    is_int(set(&c, "admin_token", big), SB_EINVAL, "513-byte token refused");
    sb_config_cleanup(&c);
}

TEST(http_urls)
{
    static const char *const keys[] = {"public_url", "twilio_api_base", "meta_graph_base"};
    static const struct {
        const char *in, *want;
    } good[] = {
        {"http://example.com", "http://example.com"},
        {"https://example.com/", "https://example.com"},
        {"https://example.com/sb//", "https://example.com/sb"},
        {"http://127.0.0.1:9999", "http://127.0.0.1:9999"},
        {"http://[::1]:9999/mock", "http://[::1]:9999/mock"},
        {"https://graph.facebook.com/v21.0", "https://graph.facebook.com/v21.0"},
    };
    static const char *const bad[] = {
        "",
        "example.com",
        "ftp://example.com",
        "http://",
        "https:///path",
        "http://a b",
        "http://x?y=1",
        "http://x#frag",
        "https://user:pw@x",
        "http://x:0",
        "http://x:99999",
        "HTTP://x",
        "http://::1/",
        "http://caf\xc3\xa9.com",
    };
    sb_config_t c;
    sb_config_init(&c);
    for (size_t k = 0; k < 3; k++) {
        char **field = k == 0 ? &c.public_url : k == 1 ? &c.twilio_api_base : &c.meta_graph_base;
        for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
            is_int(set(&c, keys[k], good[i].in), 0, "%s = %s", keys[k], good[i].in);
            is_str(*field, good[i].want, "%s stored without trailing slash", keys[k]);
        }
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
            is_int(set(&c, keys[k], bad[i]), SB_EINVAL, "%s = '%s' refused", keys[k], bad[i]);
        is_str(*field, good[sizeof good / sizeof good[0] - 1].want, "%s unchanged after bad values", keys[k]);
    }
    set(&c, "public_url", "example.com");
    ok(contains(err, "'public_url'") && contains(err, "http://"), "message: %s", err);
    sb_config_cleanup(&c);
}

TEST(redis_url)
{
    static const struct {
        const char *in, *host;
        int port, db;
    } good[] = {
        {"redis://h", "h", 6379, 0},
        {"redis://h/", "h", 6379, 0},
        {"redis://10.1.2.3:7000", "10.1.2.3", 7000, 0},
        {"redis://cache.internal:7000/3", "cache.internal", 7000, 3},
        {"redis://[::1]:6380/15", "::1", 6380, 15},
        {"redis://[::1]/2", "::1", 6379, 2},
        {"redis://h/0", "h", 6379, 0},
    };
    static const char *const bad[] = {
        "",
        "h:6379",
        "http://h",
        "rediss://h",
        "redis://",
        "redis:///0",
        "redis://:6379",
        "redis://h/16",
        "redis://h/-1",
        "redis://h/x",
        "redis://h/1/2",
        "redis://h:0",
        "redis://h:70000",
        "redis://u:p@h",
        "redis://h?db=1",
        "redis://h/1#x",
        "redis://::1/0",
        "REDIS://h",
        "redis://h /0",
    };
    sb_config_t c;
    sb_config_init(&c);
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        is_int(set(&c, "redis_url", good[i].in), 0, "redis_url = %s", good[i].in);
        is_str(c.redis_url, good[i].in, "redis_url kept as given");
        is_str(c.redis.host, good[i].host, "host of %s", good[i].in);
        is_int(c.redis.port, good[i].port, "port of %s", good[i].in);
        is_int(c.redis_db, good[i].db, "db of %s", good[i].in);
    }
    set(&c, "redis_url", "redis://keep:1234/5");
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        is_int(set(&c, "redis_url", bad[i]), SB_EINVAL, "redis_url = '%s' refused", bad[i]);
        ok(contains(err, "bad value for 'redis_url'"), "message names the key");
    }
    is_str(c.redis_url, "redis://keep:1234/5", "redis_url unchanged");
    is_str(c.redis.host, "keep", "redis host unchanged");
    is_int(c.redis.port, 1234, "redis port unchanged");
    is_int(c.redis_db, 5, "redis db unchanged");
    set(&c, "redis_url", "redis://u:hunter2@h");
    ok(!contains(err, "hunter2"), "password not echoed: %s", err);
    sb_config_cleanup(&c);
}

TEST(master_key)
{
    const char *hex = "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF";
    sb_config_t c;
    sb_config_init(&c);
    is_int(set(&c, "master_key", hex), 0, "64 hex digits");
    ok(c.has_master_key, "has_master_key");
    ok(c.master_key[0] == 0x00 && c.master_key[1] == 0x11 && c.master_key[15] == 0xff && c.master_key[31] == 0xff,
       "bytes decoded, either case");
    unsigned char saved[32];
    memcpy(saved, c.master_key, sizeof saved);
    is_int(set(&c, "master_key", "0011"), SB_EINVAL, "too short");
    ok(!contains(err, "0011"), "message does not show the key: %s", err);
    char buf[80];
    memcpy(buf, hex, 64);
    buf[63] = '\0';
    is_int(set(&c, "master_key", buf), SB_EINVAL, "63 digits");
    memcpy(buf, hex, 64);
    buf[64] = '0';
    buf[65] = '\0';
    is_int(set(&c, "master_key", buf), SB_EINVAL, "65 digits");
    memcpy(buf, hex, 65);
    buf[40] = 'g';
    is_int(set(&c, "master_key", buf), SB_EINVAL, "non-hex digit");
    ok(memcmp(c.master_key, saved, sizeof saved) == 0 && c.has_master_key, "key unchanged on failure");
    is_int(set(&c, "master_key", ""), SB_EINVAL, "empty");
    sb_config_cleanup(&c);

    sb_config_init(&c);
    memcpy(buf, hex, 65);
    buf[63] = 'x';
    is_int(set(&c, "master_key", buf), SB_EINVAL, "bad last digit on a fresh config");
    ok(!c.has_master_key, "still no master_key");
    sb_config_cleanup(&c);
}

TEST(other_keys)
{
    sb_config_t c;
    sb_config_init(&c);
    is_int(set(&c, "database_url", "postgresql://sb@db/sb"), 0, "database_url URI");
    is_str(c.database_url, "postgresql://sb@db/sb", "database_url stored");
    is_int(set(&c, "database_url", "host=db\tport=5432"), 0, "database_url with a tab");
    is_int(set(&c, "database_url", ""), SB_EINVAL, "empty database_url refused");

    is_int(set(&c, "node_id", "node-1.eu_west"), 0, "node_id");
    is_str(c.node_id, "node-1.eu_west", "node_id stored");
    char id[80];
    memset(id, 'n', 64);
    id[64] = '\0';
    is_int(set(&c, "node_id", id), 0, "64-byte node_id");
    id[64] = 'n';
    id[65] = '\0';
    is_int(set(&c, "node_id", id), SB_EINVAL, "65-byte node_id refused");
    is_int(set(&c, "node_id", ""), SB_EINVAL, "empty node_id refused");
    is_int(set(&c, "node_id", "a b"), SB_EINVAL, "node_id with a space refused");
    is_int(set(&c, "node_id", "a/b"), SB_EINVAL, "node_id with a slash refused");

    static const char *const levels[] = {"error", "warn", "info", "debug"};
    for (int i = 0; i < 4; i++) {
        is_int(set(&c, "log_level", levels[i]), 0, "log_level = %s", levels[i]);
        is_int(c.log_level, i, "log_level %s stored", levels[i]);
    }
    is_int(set(&c, "log_level", "verbose"), SB_EINVAL, "log_level = verbose refused");
    is_str(err, "bad value for 'log_level': must be error, warn, info or debug", "log_level message");
    is_int(set(&c, "log_level", "INFO"), SB_EINVAL, "log_level is lower case");
    is_int(set(&c, "log_level", "debugging"), SB_EINVAL, "log_level = debugging refused");
    is_int(c.log_level, SB_LOG_DEBUG, "log_level unchanged");

    is_int(set(&c, "log_format", "json"), 0, "log_format = json");
    is_int(c.log_format, SB_LOG_JSON, "json stored");
    is_int(set(&c, "log_format", "text"), 0, "log_format = text");
    is_int(c.log_format, SB_LOG_TEXT, "text stored");
    is_int(set(&c, "log_format", "JSON"), SB_EINVAL, "log_format is lower case");
    is_str(err, "bad value for 'log_format': must be text or json", "log_format message");
    is_int(set(&c, "log_format", "jsonlines"), SB_EINVAL, "log_format = jsonlines refused");
    is_int(set(&c, "log_format", ""), SB_EINVAL, "empty log_format refused");
    is_int(c.log_format, SB_LOG_TEXT, "log_format unchanged by refusals");

    is_int(set(&c, "mode", "dev"), 0, "mode = dev");
    is_int(c.mode_dev, 1, "dev stored");
    is_int(set(&c, "mode", "production"), 0, "mode = production");
    is_int(c.mode_dev, 0, "production stored");
    is_int(set(&c, "mode", "prod"), SB_EINVAL, "mode = prod refused");
    is_int(set(&c, "mode", ""), SB_EINVAL, "empty mode refused");

    is_int(c.cluster, 0, "cluster is off by default");
    is_int(set(&c, "cluster", "on"), 0, "cluster = on");
    is_int(c.cluster, 1, "on stored");
    is_int(set(&c, "cluster", "off"), 0, "cluster = off");
    is_int(c.cluster, 0, "off stored");
    is_int(set(&c, "cluster", "yes"), SB_EINVAL, "cluster = yes refused");
    is_str(err, "bad value for 'cluster': must be on or off", "cluster message");
    is_int(c.advertise.port, 0, "advertise unset by default");
    is_int(set(&c, "advertise", "10.0.0.7:8080"), 0, "advertise host:port");
    is_str(c.advertise.host, "10.0.0.7", "advertise host stored");
    is_int(c.advertise.port, 8080, "advertise port stored");
    is_int(set(&c, "advertise", "10.0.0.7"), SB_EINVAL, "advertise without a port refused");

    is_int(set(&c, "nope", "1"), SB_ENOENT, "unknown key");
    is_str(err, "unknown key 'nope'", "unknown key message");
    is_int(set(&c, "redis", "x"), SB_ENOENT, "derived field is not a key");
    is_int(set(&c, "Shards", "2"), SB_ENOENT, "keys are lower case");
    is_int(sb_config_set(&c, sb_str("bad\x01key", 7), SB_STR("1"), err, sizeof err), SB_ENOENT, "binary key");
    is_str(err, "unknown key 'bad\\x01key'", "binary key shown escaped");
    is_int(sb_config_set(&c, SB_STR("x"), SB_STR("1"), NULL, 0), SB_ENOENT, "NULL err buffer is fine");
    char tiny[8];
    is_int(sb_config_set(&c, SB_STR("x"), SB_STR("1"), tiny, sizeof tiny), SB_ENOENT, "small err buffer");
    is_int((long long)strlen(tiny), 7, "message truncated, NUL-terminated");
    sb_config_cleanup(&c);
}

TEST(quotes_and_control)
{
    sb_config_t c;
    sb_config_init(&c);
    is_int(set(&c, "database_url", "  \"  host=x  \"  "), 0, "quoted value");
    is_str(c.database_url, "  host=x  ", "blanks inside quotes kept");
    is_int(set(&c, "database_url", "\"a\"b\""), 0, "inner quote literal");
    is_str(c.database_url, "a\"b", "only the outer quotes removed");
    is_int(set(&c, "database_url", "x\"y\""), 0, "quote not at the start is literal");
    is_str(c.database_url, "x\"y\"", "kept as is");
    is_int(set(&c, "database_url", "\"unterminated"), SB_EINVAL, "unterminated quote");
    is_str(err, "bad value for 'database_url': unterminated double quote", "unterminated message");
    is_int(set(&c, "database_url", "\""), SB_EINVAL, "lone quote");
    is_int(set(&c, "database_url", "\"\""), SB_EINVAL, "quoted empty still empty");
    is_int(set(&c, "database_url", "a\rb"), SB_EINVAL, "CR in a value");
    ok(contains(err, "control characters"), "control message: %s", err);
    is_int(set(&c, "database_url", "a\x7f"), SB_EINVAL, "DEL in a value");
    is_int(sb_config_set(&c, SB_STR("database_url"), sb_str("a\0b", 3), err, sizeof err), SB_EINVAL,
           "NUL in a counted value");
    is_str(c.database_url, "x\"y\"", "unchanged after refusals");
    sb_config_cleanup(&c);
}

TEST(parse_file_format)
{
    sb_config_t c;
    sb_config_init(&c);
    const char *text = "# Switchboard\n"
                       "\n"
                       "   # indented comment\n"
                       "listen = 127.0.0.1:9000\n"
                       "\tshards=3\t\n"
                       "admin_token = \"tok#en\"\n"
                       "database_url = host=a # not a comment\n"
                       "slots = 10\n"
                       "slots = 20\n"
                       "mode = dev";
    is_int(parse(&c, text), 0, "file parses");
    is_int(c.listen.port, 9000, "listen");
    is_int(c.shards, 3, "no blanks around '='");
    is_str(c.admin_token, "tok#en", "'#' inside quotes");
    is_str(c.database_url, "host=a # not a comment", "'#' after a value is part of it");
    is_int(c.slots, 20, "duplicate key: last wins");
    is_int(c.mode_dev, 1, "last line without newline");

    is_int(parse(&c, "shards = 5\r\n\r\n# c\r\nslots = 7\r\n"), 0, "CRLF file");
    is_int(c.shards, 5, "CRLF value trimmed");
    is_int(c.slots, 7, "CRLF second value");
    is_int(parse(&c, "\xef\xbb\xbfshards = 6\n"), 0, "UTF-8 BOM skipped");
    is_int(c.shards, 6, "value after BOM");
    is_int(parse(&c, ""), 0, "empty file");
    is_int(parse(&c, "\n\n# only comments\n"), 0, "comments only");
    is_int(parse(&c, "log_level = \n"), SB_EINVAL, "empty value refused by the key");
    is_str(err, "test.conf:1: bad value for 'log_level': must be error, warn, info or debug", "empty value message");

    is_int(parse(&c, "shards = 2\nfoo = 1\n"), SB_ENOENT, "unknown key in a file");
    is_str(err, "test.conf:2: unknown key 'foo'", "unknown key names file:line");
    is_int(parse(&c, "\r\n\r\nshards = 0\r\n"), SB_EINVAL, "bad value in a CRLF file");
    is_str(err, "test.conf:3: bad value for 'shards': must be an integer from 1 to 256", "bad value names file:line");
    is_int(parse(&c, "shards 4\n"), SB_EINVAL, "missing '='");
    is_str(err, "test.conf:1: expected 'key = value' but found no '='", "missing '=' message");
    is_int(parse(&c, "# ok\n = 4\n"), SB_EINVAL, "missing key");
    ok(contains(err, "test.conf:2:") && contains(err, "no key"), "missing key message: %s", err);
    is_int(parse(&c, "listen = 1.2.3.4:5 \r\r\n"), SB_EINVAL, "second CR is a control character");
    is_int(parse(&c, "shards = 4\rslots = 5\n"), SB_EINVAL, "bare CR does not end a line");

    const char nul[] = "shards = 4\nslots = 1\0 2\n";
    err[0] = '\0';
    is_int(sb_config_parse(&c, nul, sizeof nul - 1, "nul.conf", err, sizeof err), SB_EINVAL, "NUL byte");
    is_str(err, "nul.conf:2: NUL byte in the line (is this a text file?)", "NUL message names the line");
    const char nul2[] = "# comment \0 with NUL\n";
    is_int(sb_config_parse(&c, nul2, sizeof nul2 - 1, "nul.conf", err, sizeof err), SB_EINVAL, "NUL in a comment");

    /* counted input: the bytes after len are not read */
    const char counted[] = "shards = 9\nshards = x";
    is_int(sb_config_parse(&c, counted, 11, "c.conf", err, sizeof err), 0, "counted input");
    is_int(c.shards, 9, "counted value");
    is_int(sb_config_parse(&c, NULL, 0, NULL, err, sizeof err), 0, "no input at all");
    is_int(sb_config_parse(&c, "x\n", 2, NULL, err, sizeof err), SB_EINVAL, "no origin");
    ok(strncmp(err, "config:1: ", 10) == 0, "default origin: %s", err);
    sb_config_cleanup(&c);
}

TEST(parse_long_lines)
{
    static char text[3 * SB_CONFIG_MAX_LINE];
    sb_config_t c;
    sb_config_init(&c);

    /* exactly 4096 bytes, with LF and with CRLF */
    size_t n = (size_t)snprintf(text, sizeof text, "database_url = ");
    memset(text + n, 'd', SB_CONFIG_MAX_LINE - n);
    n = SB_CONFIG_MAX_LINE;
    memcpy(text + n, "\r\nshards = 2\n", 14);
    is_int(sb_config_parse(&c, text, n + 13, "l.conf", err, sizeof err), 0, "4096-byte line with CRLF");
    is_int((long long)strlen(c.database_url), SB_CONFIG_MAX_LINE - 15, "long value stored");
    memcpy(text + n, "\nshards = 2\n", 13);
    is_int(sb_config_parse(&c, text, n + 12, "l.conf", err, sizeof err), 0, "4096-byte line with LF");

    /* 4097 bytes */
    text[n] = 'd';
    memcpy(text + n + 1, "\nshards = 2\n", 13);
    is_int(sb_config_parse(&c, text, n + 13, "l.conf", err, sizeof err), SB_EINVAL, "4097-byte line");
    is_str(err, "l.conf:1: line too long (more than 4096 bytes)", "long line message");
    /* as a comment, still too long */
    text[0] = '#';
    is_int(sb_config_parse(&c, text, n + 13, "l.conf", err, sizeof err), SB_EINVAL, "4097-byte comment");
    /* as the last line, without newline */
    is_int(sb_config_parse(&c, text, n + 1, "l.conf", err, sizeof err), SB_EINVAL, "4097 bytes, no newline");
    sb_config_cleanup(&c);
}

/* Writes text to a fresh temporary file; returns its path in buf. */
static const char *temp_file(char *buf, size_t buflen, const void *text, size_t len)
{
    snprintf(buf, buflen, "/tmp/sb_test_config_XXXXXX");
    int fd = mkstemp(buf);
    if (fd < 0)
        return NULL;
    size_t off = 0;
    while (off < len) {
        ssize_t w = write(fd, (const char *)text + off, len - off);
        if (w <= 0)
            break;
        off += (size_t)w;
    }
    close(fd);
    return buf;
}

TEST(load_file)
{
    char path[64];
    sb_config_t c;
    sb_config_init(&c);
    const char *text = "shards = 4\nadmin_token = hello\n";
    ok(temp_file(path, sizeof path, text, strlen(text)) != NULL, "temp file");
    is_int(sb_config_load_file(&c, path, err, sizeof err), 0, "file loads");
    is_int(c.shards, 4, "value from file");
    is_str(c.admin_token, "hello", "token from file");
    unlink(path);

    is_int(sb_config_load_file(&c, "/nonexistent/sb.conf", err, sizeof err), -ENOENT, "missing file");
    is_str(err, "cannot read '/nonexistent/sb.conf': No such file or directory", "missing file message");
    is_int(sb_config_load_file(&c, "/tmp", err, sizeof err), -EISDIR, "directory");

    const char *bad = "# one\nshards = 4\nbogus = 1\n";
    temp_file(path, sizeof path, bad, strlen(bad));
    is_int(sb_config_load_file(&c, path, err, sizeof err), SB_ENOENT, "unknown key in a file");
    char want[128];
    snprintf(want, sizeof want, "%s:3: unknown key 'bogus'", path);
    is_str(err, want, "message names path:line");
    unlink(path);

    /* exactly the limit loads (comments only), one byte more does not */
    size_t big = SB_CONFIG_MAX_FILE + 1;
    char *huge = sb_malloc(big);
    for (size_t i = 0; i < big; i += 64) {
        size_t n = big - i < 64 ? big - i : 64;
        memset(huge + i, '#', n);
        huge[i + n - 1] = '\n';
    }
    temp_file(path, sizeof path, huge, big - 1);
    is_int(sb_config_load_file(&c, path, err, sizeof err), 0, "1 MiB file loads");
    unlink(path);
    temp_file(path, sizeof path, huge, big);
    is_int(sb_config_load_file(&c, path, err, sizeof err), SB_E2BIG, "1 MiB + 1 refused");
    ok(contains(err, "larger than"), "size message: %s", err);
    unlink(path);
    sb_free(huge);
    sb_config_cleanup(&c);
}

TEST(load_env)
{
    char path[64];
    sb_config_t c;
    sb_config_init(&c);
    const char *text = "shards = 4\nslots = 10\n";
    temp_file(path, sizeof path, text, strlen(text));
    is_int(sb_config_load_file(&c, path, err, sizeof err), 0, "file");
    unlink(path);

    char *env[] = {"PATH=/bin", "SB_SHARDS=7",  "SB_Log_Level=debug", "SB_REDIS_URL=redis://r:1/2",
                   "SBX_FOO=1", "sb_shards=99", "SB_NOEQUALS",        "SB_ADMIN_TOKEN= \"tok\" ",
                   NULL};
    is_int(sb_config_load_env(&c, env, err, sizeof err), 0, "environment applies");
    is_int(c.shards, 7, "environment beats the file");
    is_int(c.slots, 10, "file value kept where no override");
    is_int(c.log_level, SB_LOG_DEBUG, "mixed-case variable name");
    char *fmt[] = {"SB_LOG_FORMAT=json", NULL};
    is_int(sb_config_load_env(&c, fmt, err, sizeof err), 0, "SB_LOG_FORMAT applies");
    is_int(c.log_format, SB_LOG_JSON, "log_format from the environment");
    is_int(c.redis_db, 2, "redis_url from the environment");
    is_str(c.admin_token, "tok", "env values trimmed and unquoted");

    char *unknown[] = {"SB_SHARDS=2", "SB_SHARD=3", NULL};
    is_int(sb_config_load_env(&c, unknown, err, sizeof err), SB_ENOENT, "unknown SB_ variable");
    is_str(err, "environment variable SB_SHARD names no configuration key (unknown key 'shard')", "unknown message");
    char *bare[] = {"SB_=1", NULL};
    is_int(sb_config_load_env(&c, bare, err, sizeof err), SB_ENOENT, "SB_ alone");
    char *bad[] = {"SB_SLOTS=0", NULL};
    is_int(sb_config_load_env(&c, bad, err, sizeof err), SB_EINVAL, "bad value from the environment");
    is_str(err, "environment variable SB_SLOTS: bad value for 'slots': must be an integer from 1 to 65536",
           "bad value message names the variable");
    char *secret[] = {"SB_MASTER_KEY=deadbeef", NULL};
    is_int(sb_config_load_env(&c, secret, err, sizeof err), SB_EINVAL, "bad master_key from the environment");
    ok(!contains(err, "deadbeef"), "message hides the key: %s", err);
    char longname[300] = "SB_";
    memset(longname + 3, 'X', 200);
    strcpy(longname + 203, "=1");
    char *longenv[] = {longname, NULL};
    is_int(sb_config_load_env(&c, longenv, err, sizeof err), SB_ENOENT, "very long variable name");
    ok(contains(err, "..."), "long name truncated in the message: %s", err);
    is_int(sb_config_load_env(&c, NULL, err, sizeof err), 0, "NULL environment");
    char *empty_val[] = {"SB_DATABASE_URL=", NULL};
    is_int(sb_config_load_env(&c, empty_val, err, sizeof err), SB_EINVAL, "empty value from the environment");
    sb_config_cleanup(&c);
}

TEST(validate)
{
    sb_config_t c;
    sb_config_init(&c);
    is_int(sb_config_validate(&c, err, sizeof err), SB_EINVAL, "production without master_key");
    ok(contains(err, "master_key is required"), "message: %s", err);
    set(&c, "mode", "dev");
    is_int(sb_config_validate(&c, err, sizeof err), 0, "dev without master_key");
    set(&c, "mode", "production");
    set(&c, "master_key", "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef");
    is_int(sb_config_validate(&c, err, sizeof err), 0, "production with master_key");

    set(&c, "admin_listen", "127.0.0.1:8080");
    is_int(sb_config_validate(&c, err, sizeof err), SB_EINVAL, "admin port inside the wildcard listen");
    ok(contains(err, "listen and admin_listen"), "overlap message: %s", err);
    set(&c, "listen", "10.0.0.1:8080");
    is_int(sb_config_validate(&c, err, sizeof err), 0, "same port, different hosts");
    set(&c, "listen", "127.0.0.1:8080");
    is_int(sb_config_validate(&c, err, sizeof err), SB_EINVAL, "same host and port");
    set(&c, "listen", "[::]:8080");
    is_int(sb_config_validate(&c, err, sizeof err), SB_EINVAL, "IPv6 wildcard overlaps");
    set(&c, "listen", "8081");
    is_int(sb_config_validate(&c, err, sizeof err), 0, "different ports");
    sb_config_cleanup(&c);
}

TEST(dump)
{
    sb_config_t c;
    sb_buf_t b;
    sb_config_init(&c);
    sb_buf_init(&b);
    sb_config_dump(&c, &b);
    const char *s = sb_buf_cstr(&b);
    ok(contains(s, "listen = 0.0.0.0:8080\n"), "listen line");
    ok(contains(s, "admin_listen = 127.0.0.1:7070\n"), "admin_listen line");
    ok(contains(s, "admin_token = (unset)\n"), "token unset");
    ok(contains(s, "master_key = (unset)\n"), "master_key unset");
    ok(contains(s, "public_url = (unset)\n"), "public_url unset");
    ok(contains(s, "redis_url = redis://127.0.0.1:6390/0\n"), "redis_url");
    ok(contains(s, "database_url = host=127.0.0.1 port=5440 dbname=switchboard user=switchboard\n"), "database_url");
    ok(contains(s, "log_level = info\n") && contains(s, "mode = production\n"), "enums by name");
    ok(contains(s, "log_format = text\n"), "log_format by name");
    ok(contains(s, "max_body_bytes = 1048576\n") && contains(s, "drain_timeout = 10\n") &&
       contains(s, "max_broadcast_bytes = 33554432\n"), "limits");
    int lines = 0;
    for (const char *p = s; *p; p++)
        lines += *p == '\n';
    ok(contains(s, "max_concurrent_calls = 1000\n") && contains(s, "call_lease_ttl = 15\n") &&
           contains(s, "max_call_duration = 14400\n"), "the call limits' defaults");
    is_int(lines, 34, "one line per key");
    ok(contains(s, "cluster = off\n") && contains(s, "node_lease_ttl = 5\n") &&
           contains(s, "advertise = 0.0.0.0:8080\n"), "cluster keys: off, 5, the listen address");
    sb_buf_cleanup(&b);

    set(&c, "admin_token", "TopSecretToken");
    set(&c, "master_key", "abababababababababababababababababababababababababababababababab");
    set(&c, "listen", "[::1]:9000");
    set(&c, "database_url", "host=db user=sb password=pgsecret");
    set(&c, "public_url", "https://sb.example.com/");
    sb_config_dump(&c, &b);
    s = sb_buf_cstr(&b);
    ok(contains(s, "admin_token = (set)\n") && !contains(s, "TopSecret"), "token hidden");
    ok(contains(s, "master_key = (set)\n") && !contains(s, "abab"), "master_key hidden");
    ok(contains(s, "listen = [::1]:9000\n"), "IPv6 bracketed");
    ok(contains(s, "database_url = (set, contains a password)\n") && !contains(s, "pgsecret"), "db password hidden");
    ok(contains(s, "public_url = https://sb.example.com\n"), "public_url normalised");
    sb_buf_cleanup(&b);

    set(&c, "database_url", "postgresql://sb:pw@db/sb");
    sb_config_dump(&c, &b);
    ok(!contains(sb_buf_cstr(&b), ":pw@"), "URI password hidden");
    sb_buf_cleanup(&b);
    set(&c, "database_url", "postgresql://sb@db/sb");
    sb_config_dump(&c, &b);
    ok(contains(sb_buf_cstr(&b), "database_url = postgresql://sb@db/sb\n"), "URI without password shown");
    sb_buf_cleanup(&b);
    sb_config_cleanup(&c);
}

TEST(inbox_keys)
{
    sb_config_t c;
    sb_config_init(&c);
    ok(c.inbox_origins == NULL, "inbox_origins unset: only the gateway's own origin");
    is_int(c.inbox_send_buffer, 1048576, "inbox_send_buffer defaults to 1 MiB");
    is_int(c.actor_idle_timeout_s, 300, "actor_idle_timeout defaults to 300 s");
    is_int(set(&c, "actor_idle_timeout", "0"), 0, "actor_idle_timeout 0: never passivate");
    is_int(set(&c, "actor_idle_timeout", "86401"), SB_EINVAL, "actor_idle_timeout above a day refused");
    is_int(set(&c, "actor_idle_timeout", "-1"), SB_EINVAL, "actor_idle_timeout below 0 refused");
    is_int(set(&c, "inbox_origins", "*"), 0, "inbox_origins = *");
    is_str(c.inbox_origins, "*", "* stored");
    is_int(set(&c, "inbox_origins", " https://App.Example.com , http://localhost:3000"), 0, "a list of two");
    is_str(c.inbox_origins, "https://app.example.com,http://localhost:3000", "stored lower case without blanks");
    is_int(set(&c, "inbox_origins", "https://app.example.com/inbox"), SB_EINVAL, "an origin with a path refused");
    ok(contains(err, "'inbox_origins'"), "message names the key: %s", err);
    is_int(set(&c, "inbox_origins", "app.example.com"), SB_EINVAL, "an origin without a scheme refused");
    is_int(set(&c, "inbox_origins", "https://a.example.com,,https://b.example.com"), SB_EINVAL, "an empty item");
    is_int(set(&c, "inbox_origins", "https://a.example.com, *"), SB_EINVAL, "* only on its own");
    is_str(c.inbox_origins, "https://app.example.com,http://localhost:3000", "unchanged after refusals");
    is_int(set(&c, "inbox_send_buffer", "4095"), SB_EINVAL, "inbox_send_buffer below 4096 refused");
    is_int(set(&c, "inbox_send_buffer", "4096"), 0, "inbox_send_buffer 4096");
    sb_config_cleanup(&c);
}

TEST(edge_keys)
{
    sb_config_t c;
    sb_config_init(&c);
    ok(c.trusted_proxies == NULL && c.ntrusted == 0, "trusted_proxies unset: no peer is a proxy");
    is_str(c.www_dir, "www", "www_dir defaults to www");
    is_int(set(&c, "trusted_proxies", "127.0.0.1, 10.0.0.0/8 ::1"), 0, "a list of three");
    is_str(c.trusted_proxies, "127.0.0.1/32, 10.0.0.0/8, ::1/128", "stored normalized");
    is_int((long long)c.ntrusted, 3, "three networks parsed");
    is_int(set(&c, "trusted_proxies", "127.0.0.1, nginx"), SB_EINVAL, "a name refused");
    ok(contains(err, "'trusted_proxies'") && !contains(err, "nginx"), "message names the key, not the value: %s",
       err);
    is_int(set(&c, "trusted_proxies", "10.0.0.1/8"), SB_EINVAL, "host bits past the prefix refused");
    is_int((long long)c.ntrusted, 3, "unchanged after refusals");
    is_int(set(&c, "trusted_proxies", ""), 0, "empty: back to none");
    ok(c.trusted_proxies == NULL && c.ntrusted == 0 && c.trusted == NULL, "none trusted");
    is_int(set(&c, "www_dir", "/usr/share/switchboard/www"), 0, "www_dir set");
    is_str(c.www_dir, "/usr/share/switchboard/www", "www_dir stored");
    is_int(set(&c, "www_dir", ""), SB_EINVAL, "an empty www_dir refused");
    set(&c, "trusted_proxies", "192.168.0.0/16");
    sb_buf_t b;
    sb_buf_init(&b);
    sb_config_dump(&c, &b);
    ok(contains(sb_buf_cstr(&b), "trusted_proxies = 192.168.0.0/16\n") &&
           contains(sb_buf_cstr(&b), "www_dir = /usr/share/switchboard/www\n"),
       "the dump shows both");
    sb_buf_cleanup(&b);
    sb_config_cleanup(&c);
}

int main(void)
{
    RUN(defaults);
    RUN(integers);
    RUN(addresses);
    RUN(admin_token);
    RUN(http_urls);
    RUN(redis_url);
    RUN(master_key);
    RUN(other_keys);
    RUN(inbox_keys);
    RUN(edge_keys);
    RUN(quotes_and_control);
    RUN(parse_file_format);
    RUN(parse_long_lines);
    RUN(load_file);
    RUN(load_env);
    RUN(validate);
    RUN(dump);
    return tap_done();
}
