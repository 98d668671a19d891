/* The gateway's configuration: defaults, the `-c FILE` format, SB_<KEY> environment overrides, and the checks that
 * stop start-up on anything doubtful.
 *
 * File format (API.md "Configuration"): one `key = value` per line; blank lines and lines whose first non-blank
 * character is `#` are ignored; there are no trailing comments (a `#` after a value is part of the value). Keys are
 * lower case. Blanks around keys and values are trimmed; a value wrapped in double quotes is taken literally between
 * them, blanks included (no escapes: the outermost quotes are removed, nothing else). "\r\n" line endings and a
 * leading UTF-8 BOM are accepted. A line longer than 4096 bytes, a NUL byte, a line without `=`, an unknown key or a
 * bad value is an error naming file:line and the key. A repeated key: the last one wins. Values never contain
 * control characters (tab aside, where a value allows blanks at all).
 *
 * Environment: SB_<KEY> (the key in any case, e.g. SB_SHARDS) overrides the file. Any SB_ variable naming no key
 * is an error, so a typo in a deployment does not silently fall back to a default.
 *
 * Start-up order: sb_config_init, sb_config_load_file, sb_config_load_env, sb_config_validate.
 *
 * Keys (API.md's, plus our operational limits at the end):
 *   listen           0.0.0.0:8080        "host:port", "[v6]:port", ":port" or "port" (the last two: 0.0.0.0)
 *   admin_listen     127.0.0.1:7070      same forms
 *   admin_token      unset               console and admin API refuse everyone while unset. 1..512 visible ASCII
 *                                        bytes: no blanks, since the console reads it as one word of `auth <token>`
 *   public_url       unset               http(s):// URL; unset = "http://" + the request's Host header
 *   shards           online cores        1..256 shard threads
 *   redis_url        redis://127.0.0.1:6390/0   redis://host[:port][/db], port default 6379, db 0..15; no
 *                                        credentials, query or TLS (rediss://)
 *   database_url     "host=127.0.0.1 port=5440 dbname=switchboard user=switchboard"  libpq string, non-empty
 *   master_key       unset               64 hex digits (32 bytes); required unless mode = dev
 *   twilio_api_base  https://api.twilio.com               http(s):// URL
 *   meta_graph_base  https://graph.facebook.com/v21.0     http(s):// URL
 *   node_id          gethostname()       1..64 bytes of [A-Za-z0-9._-]; "localhost" if the hostname does not fit
 *   slots            1024                1..65536
 *   cluster          off                 on: this node shares the slots with the other nodes on the same Redis and
 *                                        PostgreSQL (shards/cluster: leases, fencing, routing); off: it owns them all
 *   node_lease_ttl   5                   seconds, 1..3600: a member without a heartbeat this long is gone (a slot's
 *                                        lease is the shorter of this and 2 s)
 *   advertise        listen              host:port other nodes and operators reach this node at (`nodes`); unset: the
 *                                        listen address
 *   log_level        info                error | warn | info | debug
 *   log_format       text                text | json (one JSON object per line, for log shippers)
 *   mode             production          dev | production
 *   header_timeout   10                  seconds, 1..3600: a request's headers must have arrived within this
 *   idle_timeout     60                  seconds, 1..86400: a keep-alive connection idle this long is closed
 *   max_header_bytes 8192                1024..65536: a request line plus headers larger than this is refused
 *   max_body_bytes   1048576             1024..67108864: a request body larger than this is refused
 *   max_broadcast_bytes 33554432         1024..268435456: the same for POST /v1/broadcasts (100,000 recipients with a
 *                                        few variables each are about 6 MB); the larger of the two applies there
 *   drain_timeout    10                  seconds, 0..3600: graceful shutdown waits at most this for connections
 *   console_auth_timeout 10              seconds, 1..3600: a console session that has not authenticated by then is
 *                                        closed
 *   inbox_origins    unset               browser origins allowed to open the live inbox: "*" or a comma-separated
 *                                        list of scheme://host[:port]; unset = only the gateway's own origin.
 *                                        Clients that send no Origin (not browsers) are always let through
 *   inbox_send_buffer 1048576            4096..67108864 bytes a live inbox client may fall behind before it is
 *                                        closed with 4408 (it then resumes from its cursor)
 *   webhook_max_age  86400               seconds, 1..2592000: an event a tenant's webhook URL has not taken after this
 *                                        long is dead-lettered (webhook_dead_letters) and delivery goes on
 *   actor_idle_timeout 300               seconds, 0..86400: a tenant or session actor idle this long (nothing queued,
 *                                        in flight or waiting) is passivated, its memory returned; 0 = never
 *   max_concurrent_calls 1000            0..10000000 live calls across the whole fleet (0: not limited; tenants and
 *                                        channels have caps of their own)
 *   call_lease_ttl   15                  seconds, 3..3600: a call's slot lives this long without renewal (the slots
 *                                        of a crashed node's calls come back within it)
 *   max_call_duration 14400              seconds, 1..604800: a call still live after this is hung up and ended
 *   trusted_proxies  unset (empty)       addresses / CIDR networks of reverse proxies (nginx) separated by commas or
 *                                        blanks, at most 64: only a request whose peer is one of them has its
 *                                        X-Forwarded-For client believed (logs, per-address guards) and, while
 *                                        public_url is unset, its X-Forwarded-Proto / X-Forwarded-Host used for the
 *                                        URL a provider signed. Stored normalized ("127.0.0.1/32, 10.0.0.0/8")
 *   www_dir          www                 the directory of the inbox page's files (inbox.html, inbox.js, inbox.css);
 *                                        relative to the working directory
 *
 * URLs (public_url, twilio_api_base, meta_graph_base) are stored without trailing slashes, so callers append
 * "/path". Hosts in sb_addr_t are stored without IPv6 brackets, ready for getaddrinfo/uv_ip6_addr.
 *
 * Secrets (admin_token, master_key) never appear in messages or dumps; neither do any values in error messages,
 * since database_url may embed a password. */
#ifndef SB_CONFIG_H
#define SB_CONFIG_H

#include "gateway/log.h"
#include "proto/cidr.h"
#include "proto/str.h"

#include <stdbool.h>
#include <stddef.h>

#define SB_CONFIG_MAX_LINE 4096          /* bytes per file line, excluding "\n" / "\r\n" */
#define SB_CONFIG_MAX_FILE (1024 * 1024) /* bytes per file */

typedef struct sb_addr {
    char host[256]; /* host name or IP literal, NUL-terminated, without brackets */
    int port;       /* 1..65535 */
} sb_addr_t;

typedef struct sb_config {
    sb_addr_t listen;
    sb_addr_t admin_listen;
    char *admin_token; /* NULL = unset */
    char *public_url;  /* NULL = unset */
    int shards;
    char *redis_url; /* as given (trimmed, unquoted); parsed into redis and redis_db */
    sb_addr_t redis;
    int redis_db;
    char *database_url;
    unsigned char master_key[32];
    bool has_master_key;
    char *twilio_api_base;
    char *meta_graph_base;
    char *node_id;
    int slots;
    int cluster;          /* 1: cluster = on */
    int node_lease_ttl_s;
    sb_addr_t advertise;  /* port 0: unset (the listen address) */
    enum sb_log_level log_level;
    enum sb_log_format log_format;
    int mode_dev; /* 1 for mode = dev, 0 for production */
    int header_timeout_s;
    int idle_timeout_s;
    int max_header_bytes;
    int max_body_bytes;
    int max_broadcast_bytes;
    int drain_timeout_s;
    int console_auth_timeout_s;
    char *inbox_origins; /* NULL = unset */
    int inbox_send_buffer;
    int webhook_max_age_s;
    int actor_idle_timeout_s; /* 0: actors are never passivated */
    int max_concurrent_calls;
    int call_lease_ttl_s;
    int max_call_duration_s;
    char *trusted_proxies;    /* NULL = unset; the normalized list, for the dump */
    sb_cidr_t *trusted;       /* the same list parsed (ntrusted entries; NULL when empty) */
    size_t ntrusted;
    char *www_dir;
} sb_config_t;

/* Fills c (caller's storage, previous contents ignored) with the defaults. The strings it allocates belong to c;
 * release them with sb_config_cleanup. Never fails. */
void sb_config_init(sb_config_t *c);

/* Sets one key. key and value are borrowed; value is trimmed and unquoted, then checked, and copied into c.
 * Returns 0, SB_ENOENT for an unknown key (err: "unknown key 'foo'"), or SB_EINVAL for a bad value (err: "bad value
 * for 'shards': must be an integer from 1 to 256"); on failure c is unchanged. err (errlen bytes, may be NULL when
 * errlen is 0) receives a NUL-terminated message on failure only; it never contains the value. */
int sb_config_set(sb_config_t *c, sb_str_t key, sb_str_t value, char *err, size_t errlen);

/* Parses a whole file's bytes (text, len bytes, borrowed; need not be NUL-terminated, may lack a final newline) and
 * applies every `key = value` in order. origin (borrowed; NULL reads "config") names the source in messages.
 * Returns 0, or the first error: SB_ENOENT for an unknown key, SB_EINVAL for anything else, with err set to
 * "origin:line: ...". On failure the lines before the bad one have been applied; c stays valid for cleanup. */
int sb_config_parse(sb_config_t *c, const char *text, size_t len, const char *origin, char *err, size_t errlen);

/* Reads the file at path (borrowed; at most SB_CONFIG_MAX_FILE bytes) and calls sb_config_parse with path as origin.
 * Returns 0, a parse error, SB_E2BIG for a file that is too large, or -errno when it cannot be read; err says which
 * ("cannot read 'path': No such file or directory"). */
int sb_config_load_file(sb_config_t *c, const char *path, char *err, size_t errlen);

/* Applies the SB_<KEY>=value entries of envp (borrowed, NULL-terminated like environ; NULL is treated as empty),
 * in order; the key is the lower-cased rest of the name. Other variables are ignored. Returns 0, or the first error:
 * SB_ENOENT when an SB_ variable names no key ("environment variable SB_FOO names no configuration key ..."),
 * SB_EINVAL for a bad value ("environment variable SB_SHARDS: bad value for 'shards': ..."). */
int sb_config_load_env(sb_config_t *c, char *const *envp, char *err, size_t errlen);

/* Cross-key checks, run once after file and environment: outside mode = dev a master_key is required; listen and
 * admin_listen must not claim the same port on overlapping addresses. Returns 0 or SB_EINVAL with err set.
 * Does not modify c. */
int sb_config_validate(sb_config_t *c, char *err, size_t errlen);

/* Frees the strings c owns and wipes the secrets; c is then zeroed and may be sb_config_init'ed again. */
void sb_config_cleanup(sb_config_t *c);

/* Appends (borrowing out) one "key = value\n" line per key, in the order of the table in this header. admin_token and
 * master_key read "(set)" or "(unset)", public_url "(unset)" when unset, and database_url "(set, contains a
 * password)" when it embeds one. For people and logs: not meant to be parsed back. */
void sb_config_dump(const sb_config_t *c, sb_buf_t *out);

#endif
