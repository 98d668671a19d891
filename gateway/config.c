/* Configuration defaults, parsing and checks; see config.h for the format and the keys.
 *
 * Every key is a row of one table (name, kind, bounds, field), so the file parser, the environment loader and the
 * dump all walk the same list and cannot disagree about which keys exist. Values are checked completely before the
 * struct is touched, so a rejected value leaves the previous one in place. Messages name keys, lines and variables,
 * never values: a database_url may embed a password, and admin_token / master_key are secrets. */
#include "gateway/config.h"

#include "proto/codec.h"
#include "proto/err.h"
#include "proto/mem.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

enum key_kind {
    KIND_ADDR,      /* sb_addr_t: host:port forms */
    KIND_INT,       /* int in [min, max] */
    KIND_HTTP_URL,  /* char *: http(s):// URL, trailing slashes removed */
    KIND_TOKEN,     /* admin_token */
    KIND_REDIS_URL, /* redis_url, plus redis and redis_db */
    KIND_TEXT,      /* char *: any non-empty text (database_url) */
    KIND_HEX_KEY,   /* master_key */
    KIND_NODE_ID,
    KIND_LOG_LEVEL,
    KIND_LOG_FORMAT,
    KIND_MODE,
    KIND_SWITCH,    /* int: on = 1, off = 0 */
    KIND_ORIGINS,   /* char *: "*" or comma-separated scheme://host[:port], stored lower case without blanks */
    KIND_CIDRS      /* trusted_proxies: char * (normalized text) plus the parsed list */
};

typedef struct key_def {
    const char *name;
    enum key_kind kind;
    size_t off; /* offset of the field in sb_config_t */
    long long min, max;
} key_def_t;

#define F(field) offsetof(sb_config_t, field)

/* In the order of config.h's table, which is also the order of sb_config_dump. */
static const key_def_t keys[] = {
    {"listen", KIND_ADDR, F(listen), 0, 0},
    {"admin_listen", KIND_ADDR, F(admin_listen), 0, 0},
    {"admin_token", KIND_TOKEN, F(admin_token), 0, 0},
    {"public_url", KIND_HTTP_URL, F(public_url), 0, 0},
    {"shards", KIND_INT, F(shards), 1, 256},
    {"redis_url", KIND_REDIS_URL, F(redis_url), 0, 0},
    {"database_url", KIND_TEXT, F(database_url), 0, 0},
    {"master_key", KIND_HEX_KEY, F(master_key), 0, 0},
    {"twilio_api_base", KIND_HTTP_URL, F(twilio_api_base), 0, 0},
    {"meta_graph_base", KIND_HTTP_URL, F(meta_graph_base), 0, 0},
    {"node_id", KIND_NODE_ID, F(node_id), 0, 0},
    {"slots", KIND_INT, F(slots), 1, 65536},
    {"cluster", KIND_SWITCH, F(cluster), 0, 0},
    {"node_lease_ttl", KIND_INT, F(node_lease_ttl_s), 1, 3600},
    {"advertise", KIND_ADDR, F(advertise), 0, 0},
    {"log_level", KIND_LOG_LEVEL, F(log_level), 0, 0},
    {"log_format", KIND_LOG_FORMAT, F(log_format), 0, 0},
    {"mode", KIND_MODE, F(mode_dev), 0, 0},
    {"header_timeout", KIND_INT, F(header_timeout_s), 1, 3600},
    {"idle_timeout", KIND_INT, F(idle_timeout_s), 1, 86400},
    {"max_header_bytes", KIND_INT, F(max_header_bytes), 1024, 65536},
    {"max_body_bytes", KIND_INT, F(max_body_bytes), 1024, 67108864},
    {"max_broadcast_bytes", KIND_INT, F(max_broadcast_bytes), 1024, 268435456},
    {"drain_timeout", KIND_INT, F(drain_timeout_s), 0, 3600},
    {"console_auth_timeout", KIND_INT, F(console_auth_timeout_s), 1, 3600},
    {"inbox_origins", KIND_ORIGINS, F(inbox_origins), 0, 0},
    {"inbox_send_buffer", KIND_INT, F(inbox_send_buffer), 4096, 67108864},
    {"webhook_max_age", KIND_INT, F(webhook_max_age_s), 1, 2592000},
    {"actor_idle_timeout", KIND_INT, F(actor_idle_timeout_s), 0, 86400},
    {"max_concurrent_calls", KIND_INT, F(max_concurrent_calls), 0, 10000000},
    {"call_lease_ttl", KIND_INT, F(call_lease_ttl_s), 3, 3600},
    {"max_call_duration", KIND_INT, F(max_call_duration_s), 1, 604800},
    {"trusted_proxies", KIND_CIDRS, F(trusted_proxies), 0, 0},
    {"www_dir", KIND_TEXT, F(www_dir), 0, 0},
};

#define NKEYS (sizeof keys / sizeof keys[0])
#define ADMIN_TOKEN_MAX 512
#define NODE_ID_MAX 64

/* v as a C string in buf (cap bytes), for the parsers of one-word values; false when it does not fit. */
static bool short_word(sb_str_t v, char *buf, size_t cap)
{
    if (v.len >= cap)
        return false;
    memcpy(buf, v.p, v.len);
    buf[v.len] = '\0';
    return true;
}

static const char *const level_names[] = {"error", "warn", "info", "debug"};
static const char *const format_names[] = {"text", "json"};

static void __attribute__((format(printf, 3, 4))) errf(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    if (!err || !errlen)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* Writes s into dst for a message: printable ASCII as is, other bytes as \xNN, at most 48 input bytes. */
static void show(char *dst, size_t dstlen, sb_str_t s)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0, i;
    for (i = 0; i < s.len && i < 48 && o + 5 < dstlen; i++) {
        unsigned char ch = (unsigned char)s.p[i];
        if (ch >= 0x20 && ch < 0x7f && ch != '\\') {
            dst[o++] = (char)ch;
        } else {
            dst[o++] = '\\';
            dst[o++] = 'x';
            dst[o++] = hex[ch >> 4];
            dst[o++] = hex[ch & 15];
        }
    }
    if (i < s.len && o + 4 < dstlen) {
        memcpy(dst + o, "...", 3);
        o += 3;
    }
    dst[o] = '\0';
}

/* Overwrites n bytes in a way the compiler may not drop, for secrets about to be freed. */
static void wipe(void *p, size_t n)
{
    volatile unsigned char *v = p;
    while (n--)
        *v++ = 0;
}

static void free_secret(char **s)
{
    if (*s)
        wipe(*s, strlen(*s));
    sb_free(*s);
}

static void set_str(char **slot, sb_str_t v)
{
    sb_free(*slot);
    *slot = sb_strndup(v.p, v.len);
}

static const key_def_t *key_find(sb_str_t name)
{
    for (size_t i = 0; i < NKEYS; i++) {
        if (sb_str_eq_cstr(name, keys[i].name))
            return &keys[i];
    }
    return NULL;
}

static bool all_digits(sb_str_t s)
{
    if (!s.len)
        return false;
    for (size_t i = 0; i < s.len; i++) {
        if (s.p[i] < '0' || s.p[i] > '9')
            return false;
    }
    return true;
}

static bool is_visible_ascii(sb_str_t s)
{
    for (size_t i = 0; i < s.len; i++) {
        if (s.p[i] < 0x21 || s.p[i] > 0x7e)
            return false;
    }
    return true;
}

static const char *parse_port(sb_str_t s, int *port)
{
    long long v;
    if (!all_digits(s) || sb_str_to_ll(s, 1, 65535, &v) != 0)
        return "the port must be a number from 1 to 65535";
    *port = (int)v;
    return NULL;
}

/* A host name or IPv4 literal, not bracketed. Empty is accepted here; callers decide what empty means. */
static const char *check_host(sb_str_t h)
{
    bool numeric = true;
    if (h.len > 253)
        return "the host name is too long";
    for (size_t i = 0; i < h.len; i++) {
        char ch = h.p[i];
        if (ch == ':')
            return "IPv6 addresses must be in brackets, e.g. [::1]:8080";
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '.' ||
              ch == '-' || ch == '_'))
            return "the host may only hold letters, digits, '.', '-' and '_'";
        if (!((ch >= '0' && ch <= '9') || ch == '.'))
            numeric = false;
    }
    if (h.len && numeric) {
        char buf[256];
        struct in_addr a4;
        memcpy(buf, h.p, h.len);
        buf[h.len] = '\0';
        if (inet_pton(AF_INET, buf, &a4) != 1)
            return "not a valid IPv4 address";
    }
    return NULL;
}

/* Parses "host", "host:port", "[v6]" or "[v6]:port" into out. default_port 0 means the port is required. An empty
 * host is left empty in out->host. */
static const char *parse_hostport(sb_str_t s, int default_port, sb_addr_t *out)
{
    sb_str_t host, port = {NULL, 0};
    bool has_port;
    const char *why;

    if (s.len && s.p[0] == '[') {
        const char *close = memchr(s.p, ']', s.len);
        if (!close)
            return "missing ']' after an IPv6 address";
        host = sb_str(s.p + 1, (size_t)(close - s.p) - 1);
        sb_str_t rest = sb_str(close + 1, s.len - (size_t)(close - s.p) - 1);
        has_port = rest.len > 0;
        if (has_port) {
            if (rest.p[0] != ':')
                return "expected ':port' after ']'";
            port = sb_str(rest.p + 1, rest.len - 1);
        }
        char buf[64];
        struct in6_addr a6;
        if (host.len == 0 || host.len >= sizeof buf)
            return "not a valid IPv6 address";
        memcpy(buf, host.p, host.len);
        buf[host.len] = '\0';
        if (inet_pton(AF_INET6, buf, &a6) != 1)
            return "not a valid IPv6 address";
    } else {
        const char *colon = NULL;
        for (size_t i = s.len; i > 0; i--) {
            if (s.p[i - 1] == ':') {
                colon = s.p + i - 1;
                break;
            }
        }
        has_port = colon != NULL;
        host = has_port ? sb_str(s.p, (size_t)(colon - s.p)) : s;
        if (has_port)
            port = sb_str(colon + 1, s.len - (size_t)(colon - s.p) - 1);
        if ((why = check_host(host)) != NULL)
            return why;
    }

    int p = default_port;
    if (has_port && (why = parse_port(port, &p)) != NULL)
        return why;
    if (!p)
        return "missing port";
    memcpy(out->host, host.p, host.len);
    out->host[host.len] = '\0';
    out->port = p;
    return NULL;
}

/* listen / admin_listen: "host:port", "[v6]:port", ":port" or "port"; no host means 0.0.0.0. */
static const char *parse_listen(sb_str_t s, sb_addr_t *out)
{
    const char *why;
    sb_addr_t a;
    if (!s.len)
        return "must be host:port, [ipv6]:port, :port or port";
    if (all_digits(s)) {
        strcpy(a.host, "0.0.0.0");
        if ((why = parse_port(s, &a.port)) != NULL)
            return why;
    } else {
        if ((why = parse_hostport(s, 0, &a)) != NULL)
            return why;
        if (!a.host[0])
            strcpy(a.host, "0.0.0.0");
    }
    *out = a;
    return NULL;
}

/* Splits "scheme://authority/rest" after the scheme: authority up to the first '/', path is the rest. */
static void split_authority(sb_str_t s, sb_str_t *authority, sb_str_t *path)
{
    const char *slash = memchr(s.p, '/', s.len);
    size_t n = slash ? (size_t)(slash - s.p) : s.len;
    *authority = sb_str(s.p, n);
    *path = sb_str(s.p + n, s.len - n);
}

/* An http:// or https:// URL without credentials, query or fragment. *norm is s without trailing slashes. */
static const char *parse_http_url(sb_str_t s, sb_str_t *norm)
{
    sb_str_t rest, authority, path;
    sb_addr_t a;
    const char *why;

    if (sb_str_has_prefix(s, SB_STR("http://")))
        rest = sb_str(s.p + 7, s.len - 7);
    else if (sb_str_has_prefix(s, SB_STR("https://")))
        rest = sb_str(s.p + 8, s.len - 8);
    else
        return "must be a URL starting with http:// or https://";
    if (!is_visible_ascii(s))
        return "a URL may not contain blanks or non-ASCII bytes";
    if (memchr(s.p, '?', s.len) || memchr(s.p, '#', s.len))
        return "a base URL may not have a query or fragment";
    split_authority(rest, &authority, &path);
    if (memchr(authority.p, '@', authority.len))
        return "credentials in the URL are not supported";
    if ((why = parse_hostport(authority, 1, &a)) != NULL)
        return why;
    if (!a.host[0])
        return "the URL has no host";
    *norm = s;
    while (norm->len && norm->p[norm->len - 1] == '/')
        norm->len--;
    return NULL;
}

/* redis://host[:port][/db] */
static const char *parse_redis_url(sb_str_t s, sb_addr_t *addr, int *db)
{
    sb_str_t rest, authority, path;
    const char *why;
    long long n = 0;

    if (sb_str_has_prefix(s, SB_STR("rediss://")))
        return "TLS (rediss://) is not supported";
    if (!sb_str_has_prefix(s, SB_STR("redis://")))
        return "must be redis://host[:port][/db]";
    if (!is_visible_ascii(s))
        return "a URL may not contain blanks or non-ASCII bytes";
    rest = sb_str(s.p + 8, s.len - 8);
    if (memchr(rest.p, '?', rest.len) || memchr(rest.p, '#', rest.len))
        return "query parameters are not supported; use redis://host[:port][/db]";
    split_authority(rest, &authority, &path);
    if (memchr(authority.p, '@', authority.len))
        return "credentials (user:password@) are not supported";
    if ((why = parse_hostport(authority, 6379, addr)) != NULL)
        return why;
    if (!addr->host[0])
        return "missing host; use redis://host[:port][/db]";
    if (path.len > 1) {
        sb_str_t d = sb_str(path.p + 1, path.len - 1);
        if (!all_digits(d) || sb_str_to_ll(d, 0, 15, &n) != 0)
            return "the database must be a number from 0 to 15";
    }
    *db = (int)n;
    return NULL;
}


static bool node_id_valid(sb_str_t s)
{
    if (s.len < 1 || s.len > NODE_ID_MAX)
        return false;
    for (size_t i = 0; i < s.len; i++) {
        char ch = s.p[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '.' ||
              ch == '-' || ch == '_'))
            return false;
    }
    return true;
}

/* inbox_origins: "*", or a comma-separated list of browser origins (scheme://host[:port], no path). Stores the
 * normalized list (lower case, no blanks) in *out (caller frees) or returns why not. */
static const char *parse_origins(sb_str_t v, char **out)
{
    sb_buf_t b;
    sb_buf_init(&b);
    if (sb_str_eq_cstr(v, "*")) {
        *out = sb_strdup("*");
        return NULL;
    }
    size_t start = 0;
    for (size_t i = 0; i <= v.len; i++) {
        if (i < v.len && v.p[i] != ',')
            continue;
        sb_str_t item = sb_str_trim(sb_str(v.p + start, i - start)), norm;
        start = i + 1;
        const char *scheme_end = item.len ? memchr(item.p, ':', item.len) : NULL;
        if (!item.len || parse_http_url(item, &norm) || norm.len != item.len || !scheme_end ||
            memchr(scheme_end + 3, '/', item.len - (size_t)(scheme_end + 3 - item.p))) {
            sb_buf_cleanup(&b);
            return "must be * or a comma-separated list of origins like https://app.example.com";
        }
        if (b.len)
            sb_buf_puts(&b, ",");
        for (size_t k = 0; k < item.len; k++) {
            char ch = item.p[k];
            sb_buf_append(&b, &(char){ch >= 'A' && ch <= 'Z' ? (char)(ch + 32) : ch}, 1);
        }
    }
    *out = sb_strndup(b.p, b.len);
    sb_buf_cleanup(&b);
    return NULL;
}

/* Checks v for key k and stores it in c. Returns 0, or SB_EINVAL with the reason in why; c is then unchanged. */
static int apply(sb_config_t *c, const key_def_t *k, sb_str_t v, char *why, size_t whylen)
{
    void *field = (char *)c + k->off;
    const char *reason = NULL;

    switch (k->kind) {
    case KIND_ADDR:
        reason = parse_listen(v, field);
        break;
    case KIND_INT: {
        long long n;
        if (sb_str_to_ll(v, k->min, k->max, &n) != 0) {
            errf(why, whylen, "must be an integer from %lld to %lld", k->min, k->max);
            return SB_EINVAL;
        }
        *(int *)field = (int)n;
        break;
    }
    case KIND_HTTP_URL: {
        sb_str_t norm;
        if ((reason = parse_http_url(v, &norm)) == NULL)
            set_str(field, norm);
        break;
    }
    case KIND_TOKEN:
        if (v.len == 0)
            reason = "must not be empty (leave the key out to refuse all admin access)";
        else if (v.len > ADMIN_TOKEN_MAX)
            reason = "must be at most 512 bytes";
        else if (!is_visible_ascii(v))
            reason = "may only hold visible ASCII characters, no blanks";
        if (!reason) {
            free_secret(&c->admin_token);
            c->admin_token = sb_strndup(v.p, v.len);
        }
        break;
    case KIND_REDIS_URL: {
        sb_addr_t a;
        int db;
        if ((reason = parse_redis_url(v, &a, &db)) == NULL) {
            set_str(&c->redis_url, v);
            c->redis = a;
            c->redis_db = db;
        }
        break;
    }
    case KIND_TEXT:
        if (v.len == 0)
            reason = "must not be empty";
        else
            set_str(field, v);
        break;
    case KIND_HEX_KEY: {
        unsigned char key[32];
        if (v.len != 64) {
            reason = "must be exactly 64 hex digits (32 bytes)";
            break;
        }
        size_t got = 0;
        if (sb_codec_hex_decode(v, key, sizeof key, &got) < 0 || got != sizeof key)
            reason = "must be exactly 64 hex digits (32 bytes)";
        if (!reason) {
            memcpy(c->master_key, key, sizeof key);
            c->has_master_key = true;
        }
        wipe(key, sizeof key);
        break;
    }
    case KIND_NODE_ID:
        if (!node_id_valid(v))
            reason = "must be 1 to 64 letters, digits, '.', '-' or '_'";
        else
            set_str(&c->node_id, v);
        break;
    case KIND_LOG_LEVEL: {
        char buf[8];
        enum sb_log_level level;
        reason = "must be error, warn, info or debug";
        if (short_word(v, buf, sizeof buf) && sb_log_level_parse(buf, &level) == 0) {
            c->log_level = level;
            reason = NULL;
        }
        break;
    }
    case KIND_LOG_FORMAT: {
        char buf[8];
        enum sb_log_format format;
        reason = "must be text or json";
        if (short_word(v, buf, sizeof buf) && sb_log_format_parse(buf, &format) == 0) {
            c->log_format = format;
            reason = NULL;
        }
        break;
    }
    case KIND_ORIGINS: {
        char *list = NULL;
        if ((reason = parse_origins(v, &list)) == NULL) {
            sb_free(c->inbox_origins);
            c->inbox_origins = list;
        }
        break;
    }
    case KIND_CIDRS: {
        sb_cidr_t *list = NULL;
        size_t n = 0;
        if (sb_cidr_list_parse(v, &list, &n) < 0) {
            reason = "must be IP addresses or CIDR networks (10.0.0.0/8, ::1), separated by commas, at most 64";
            break;
        }
        sb_free(c->trusted_proxies);
        sb_free(c->trusted);
        c->trusted = list;
        c->ntrusted = n;
        if (n) {
            sb_buf_t b;
            sb_buf_init(&b);
            for (size_t i = 0; i < n; i++) {
                if (i)
                    sb_buf_puts(&b, ", ");
                sb_cidr_format(&list[i], &b);
            }
            c->trusted_proxies = sb_strndup(b.p, b.len);
            sb_buf_cleanup(&b);
        }
        break;
    }
    case KIND_SWITCH:
        if (sb_str_eq_cstr(v, "on"))
            *(int *)field = 1;
        else if (sb_str_eq_cstr(v, "off"))
            *(int *)field = 0;
        else
            reason = "must be on or off";
        break;
    case KIND_MODE:
        if (sb_str_eq_cstr(v, "dev"))
            c->mode_dev = 1;
        else if (sb_str_eq_cstr(v, "production"))
            c->mode_dev = 0;
        else
            reason = "must be dev or production";
        break;
    }
    if (reason) {
        errf(why, whylen, "%s", reason);
        return SB_EINVAL;
    }
    return 0;
}

void sb_config_init(sb_config_t *c)
{
    char host[256];
    long cores = sysconf(_SC_NPROCESSORS_ONLN);

    memset(c, 0, sizeof *c);
    strcpy(c->listen.host, "0.0.0.0");
    c->listen.port = 8080;
    strcpy(c->admin_listen.host, "127.0.0.1");
    c->admin_listen.port = 7070;
    c->shards = cores < 1 ? 1 : cores > 256 ? 256 : (int)cores;
    c->redis_url = sb_strdup("redis://127.0.0.1:6390/0");
    strcpy(c->redis.host, "127.0.0.1");
    c->redis.port = 6390;
    c->redis_db = 0;
    c->database_url = sb_strdup("host=127.0.0.1 port=5440 dbname=switchboard user=switchboard");
    c->twilio_api_base = sb_strdup("https://api.twilio.com");
    c->meta_graph_base = sb_strdup("https://graph.facebook.com/v21.0");
    if (gethostname(host, sizeof host) != 0)
        host[0] = '\0';
    host[sizeof host - 1] = '\0';
    c->node_id = sb_strdup(node_id_valid(sb_str_cstr(host)) ? host : "localhost");
    c->slots = 1024;
    c->node_lease_ttl_s = 5;
    c->log_level = SB_LOG_INFO;
    c->log_format = SB_LOG_TEXT;
    c->mode_dev = 0;
    c->header_timeout_s = 10;
    c->idle_timeout_s = 60;
    c->max_header_bytes = 8192;
    c->max_body_bytes = 1048576;
    c->max_broadcast_bytes = 33554432;
    c->drain_timeout_s = 10;
    c->console_auth_timeout_s = 10;
    c->inbox_send_buffer = 1048576;
    c->webhook_max_age_s = 86400;
    c->actor_idle_timeout_s = 300;
    c->max_concurrent_calls = 1000;
    c->call_lease_ttl_s = 15;
    c->max_call_duration_s = 14400;
    c->www_dir = sb_strdup("www");
}

void sb_config_cleanup(sb_config_t *c)
{
    free_secret(&c->admin_token);
    sb_free(c->public_url);
    sb_free(c->redis_url);
    sb_free(c->database_url);
    sb_free(c->twilio_api_base);
    sb_free(c->meta_graph_base);
    sb_free(c->node_id);
    sb_free(c->inbox_origins);
    sb_free(c->trusted_proxies);
    sb_free(c->trusted);
    sb_free(c->www_dir);
    wipe(c, sizeof *c);
}

int sb_config_set(sb_config_t *c, sb_str_t key, sb_str_t value, char *err, size_t errlen)
{
    char why[160];
    const key_def_t *k;
    sb_str_t v;

    key = sb_str_trim(key);
    k = key_find(key);
    if (!k) {
        char shown[200];
        show(shown, sizeof shown, key);
        errf(err, errlen, "unknown key '%s'", shown);
        return SB_ENOENT;
    }

    v = sb_str_trim(value);
    if (v.len && v.p[0] == '"') {
        if (v.len < 2 || v.p[v.len - 1] != '"') {
            errf(err, errlen, "bad value for '%s': unterminated double quote", k->name);
            return SB_EINVAL;
        }
        v = sb_str(v.p + 1, v.len - 2);
    }
    for (size_t i = 0; i < v.len; i++) {
        unsigned char ch = (unsigned char)v.p[i];
        if ((ch < 0x20 && ch != '\t') || ch == 0x7f) {
            errf(err, errlen, "bad value for '%s': must not contain control characters", k->name);
            return SB_EINVAL;
        }
    }
    if (apply(c, k, v, why, sizeof why) != 0) {
        errf(err, errlen, "bad value for '%s': %s", k->name, why);
        return SB_EINVAL;
    }
    return 0;
}

int sb_config_parse(sb_config_t *c, const char *text, size_t len, const char *origin, char *err, size_t errlen)
{
    char msg[400];
    size_t pos = 0, lineno = 0;
    int rc = 0;

    if (!origin)
        origin = "config";
    if (len >= 3 && memcmp(text, "\xef\xbb\xbf", 3) == 0)
        pos = 3; /* UTF-8 byte order mark, as some editors write */

    while (pos < len) {
        const char *start = text + pos;
        const char *nl = memchr(start, '\n', len - pos);
        sb_str_t line = sb_str(start, nl ? (size_t)(nl - start) : len - pos);

        lineno++;
        pos += line.len + (nl ? 1 : 0);
        if (line.len && line.p[line.len - 1] == '\r')
            line.len--;
        if (line.len > SB_CONFIG_MAX_LINE) {
            rc = SB_EINVAL;
            errf(msg, sizeof msg, "line too long (more than %d bytes)", SB_CONFIG_MAX_LINE);
            goto fail;
        }
        if (memchr(line.p, '\0', line.len)) {
            rc = SB_EINVAL;
            errf(msg, sizeof msg, "NUL byte in the line (is this a text file?)");
            goto fail;
        }
        line = sb_str_trim(line);
        if (line.len == 0 || line.p[0] == '#')
            continue;

        const char *eq = memchr(line.p, '=', line.len);
        if (!eq) {
            rc = SB_EINVAL;
            errf(msg, sizeof msg, "expected 'key = value' but found no '='");
            goto fail;
        }
        sb_str_t key = sb_str_trim(sb_str(line.p, (size_t)(eq - line.p)));
        sb_str_t value = sb_str(eq + 1, line.len - (size_t)(eq - line.p) - 1);
        if (key.len == 0) {
            rc = SB_EINVAL;
            errf(msg, sizeof msg, "expected 'key = value' but found no key before '='");
            goto fail;
        }
        if ((rc = sb_config_set(c, key, value, msg, sizeof msg)) != 0)
            goto fail;
    }
    return 0;

fail:
    errf(err, errlen, "%s:%zu: %s", origin, lineno, msg);
    return rc;
}

int sb_config_load_file(sb_config_t *c, const char *path, char *err, size_t errlen)
{
    char *buf = NULL;
    size_t len = 0, cap = 0;
    int fd, rc;

    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        rc = -errno;
        errf(err, errlen, "cannot read '%s': %s", path, strerror(errno));
        goto fail;
    }
    for (;;) {
        if (len == cap) {
            /* grow by hand rather than realloc, so no copy of the old bytes (secrets) is left in freed memory */
            size_t ncap = cap ? cap * 2 : 4096;
            if (ncap > SB_CONFIG_MAX_FILE + 1)
                ncap = SB_CONFIG_MAX_FILE + 1;
            char *nbuf = sb_malloc(ncap);
            if (len)
                memcpy(nbuf, buf, len);
            wipe(buf, cap);
            sb_free(buf);
            buf = nbuf;
            cap = ncap;
        }
        ssize_t n = read(fd, buf + len, cap - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = -errno;
            errf(err, errlen, "cannot read '%s': %s", path, strerror(errno));
            goto fail;
        }
        if (n == 0)
            break;
        len += (size_t)n;
        if (len > SB_CONFIG_MAX_FILE) {
            rc = SB_E2BIG;
            errf(err, errlen, "cannot read '%s': larger than %d bytes", path, SB_CONFIG_MAX_FILE);
            goto fail;
        }
    }
    rc = sb_config_parse(c, buf, len, path, err, errlen);

fail:
    if (fd >= 0)
        close(fd);
    wipe(buf, cap);
    sb_free(buf);
    return rc;
}

int sb_config_load_env(sb_config_t *c, char *const *envp, char *err, size_t errlen)
{
    char msg[400], key[128], name[200];

    for (char *const *e = envp; e && *e; e++) {
        const char *s = *e, *eq;
        if (strncmp(s, "SB_", 3) != 0 || (eq = strchr(s, '=')) == NULL)
            continue;
        size_t klen = (size_t)(eq - s) - 3;
        sb_str_t k = sb_str(s + 3, klen);
        if (klen < sizeof key) {
            for (size_t i = 0; i < klen; i++) {
                char ch = s[3 + i];
                key[i] = ch >= 'A' && ch <= 'Z' ? (char)(ch - 'A' + 'a') : ch;
            }
            k = sb_str(key, klen);
        }
        int rc = sb_config_set(c, k, sb_str_cstr(eq + 1), msg, sizeof msg);
        if (rc == 0)
            continue;
        show(name, sizeof name, sb_str(s, (size_t)(eq - s)));
        if (rc == SB_ENOENT)
            errf(err, errlen, "environment variable %s names no configuration key (%s)", name, msg);
        else
            errf(err, errlen, "environment variable %s: %s", name, msg);
        return rc;
    }
    return 0;
}

static bool is_wildcard(const char *host)
{
    return strcmp(host, "0.0.0.0") == 0 || strcmp(host, "::") == 0;
}

int sb_config_validate(sb_config_t *c, char *err, size_t errlen)
{
    if (!c->mode_dev && !c->has_master_key) {
        errf(err, errlen, "master_key is required in production (64 hex digits; or set mode = dev)");
        return SB_EINVAL;
    }
    if (c->listen.port == c->admin_listen.port &&
        (strcmp(c->listen.host, c->admin_listen.host) == 0 || is_wildcard(c->listen.host) ||
         is_wildcard(c->admin_listen.host))) {
        errf(err, errlen, "listen and admin_listen overlap: both use port %d", c->listen.port);
        return SB_EINVAL;
    }
    return 0;
}

/* True if a libpq connection string seems to carry a password: a "password" keyword or parameter, or a URI whose
 * user information has a ':'. Errs on the side of hiding. */
static bool has_password(const char *s)
{
    sb_str_t v = sb_str_cstr(s);
    for (size_t i = 0; i + 8 <= v.len; i++) {
        if (strncasecmp(v.p + i, "password", 8) == 0)
            return true;
    }
    if (sb_str_has_prefix(v, SB_STR("postgres://")) || sb_str_has_prefix(v, SB_STR("postgresql://"))) {
        const char *a = strstr(s, "://") + 3;
        size_t n = strcspn(a, "/?#");
        const char *at = memchr(a, '@', n);
        return at && memchr(a, ':', (size_t)(at - a)) != NULL;
    }
    return false;
}

static void dump_addr(sb_buf_t *out, const char *name, const sb_addr_t *a)
{
    if (strchr(a->host, ':'))
        sb_buf_printf(out, "%s = [%s]:%d\n", name, a->host, a->port);
    else
        sb_buf_printf(out, "%s = %s:%d\n", name, a->host, a->port);
}

void sb_config_dump(const sb_config_t *c, sb_buf_t *out)
{
    for (size_t i = 0; i < NKEYS; i++) {
        const key_def_t *k = &keys[i];
        const void *field = (const char *)c + k->off;
        switch (k->kind) {
        case KIND_ADDR:
            /* advertise unset: the listen address, which is what it means */
            dump_addr(out, k->name, ((const sb_addr_t *)field)->port ? field : &c->listen);
            break;
        case KIND_INT:
            sb_buf_printf(out, "%s = %d\n", k->name, *(const int *)field);
            break;
        case KIND_HTTP_URL:
        case KIND_REDIS_URL:
        case KIND_NODE_ID:
        case KIND_ORIGINS:
        case KIND_CIDRS: {
            const char *s = *(char *const *)field;
            sb_buf_printf(out, "%s = %s\n", k->name, s ? s : "(unset)");
            break;
        }
        case KIND_TEXT: {
            const char *s = *(char *const *)field;
            if (s && has_password(s))
                s = "(set, contains a password)";
            sb_buf_printf(out, "%s = %s\n", k->name, s ? s : "(unset)");
            break;
        }
        case KIND_TOKEN:
            sb_buf_printf(out, "%s = %s\n", k->name, c->admin_token ? "(set)" : "(unset)");
            break;
        case KIND_HEX_KEY:
            sb_buf_printf(out, "%s = %s\n", k->name, c->has_master_key ? "(set)" : "(unset)");
            break;
        case KIND_LOG_LEVEL: {
            unsigned lv = (unsigned)c->log_level;
            sb_buf_printf(out, "%s = %s\n", k->name, lv < 4 ? level_names[lv] : "?");
            break;
        }
        case KIND_LOG_FORMAT: {
            unsigned f = (unsigned)c->log_format;
            sb_buf_printf(out, "%s = %s\n", k->name, f < 2 ? format_names[f] : "?");
            break;
        }
        case KIND_MODE:
            sb_buf_printf(out, "%s = %s\n", k->name, c->mode_dev ? "dev" : "production");
            break;
        case KIND_SWITCH:
            sb_buf_printf(out, "%s = %s\n", k->name, *(const int *)field ? "on" : "off");
            break;
        }
    }
}
