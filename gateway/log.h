/* Logging: one line per event on stderr, with level, time and the thread's context ("shard 2", "main").
 *
 * A leaf header, usable from every layer. The context is set once per thread (sb_log_set_context), so callers
 * never repeat it. Never log payloads, tokens or keys: a message body, a token, an API key, a secret never goes into a
 * line, at any level, and a contact address only through sb_redact_address (proto/redact.h). Under that rule every
 * line also passes through sb_redact_line, which masks what looks like a phone number, an API key, a webhook secret
 * or a JWT in text that came from outside (a provider's or a database's error message).
 *
 * Two formats: text (the default), "2026-01-02T03:04:05.678Z info  [shard 1] message", and JSON lines for log
 * shippers, {"ts":"2026-01-02T03:04:05.678Z","level":"info","shard":1,"ctx":"shard 1","msg":"message"} ("shard" is
 * null on threads that are not shards). */
#ifndef SB_LOG_H
#define SB_LOG_H

#include <stddef.h>
#include <time.h>

enum sb_log_level { SB_LOG_ERROR = 0, SB_LOG_WARN = 1, SB_LOG_INFO = 2, SB_LOG_DEBUG = 3 };
enum sb_log_format { SB_LOG_TEXT = 0, SB_LOG_JSON = 1 };

/* Sets the process-wide threshold; lines above it are dropped cheaply. */
void sb_log_set_level(enum sb_log_level level);
enum sb_log_level sb_log_get_level(void);
/* Parses "error" / "warn" / "info" / "debug". Returns 0 or SB_EINVAL. */
int sb_log_level_parse(const char *s, enum sb_log_level *out);
/* Sets the process-wide line format (set it before the threads start). */
void sb_log_set_format(enum sb_log_format format);
/* Parses "text" / "json". Returns 0 or SB_EINVAL. */
int sb_log_format_parse(const char *s, enum sb_log_format *out);
/* Sets this thread's context label (copied; at most 31 bytes kept). */
void sb_log_set_context(const char *ctx);

void sb_log(enum sb_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* What sb_log writes, without the writing (for the tests): the line of msg (msglen bytes, redacted first, in place)
 * in format, with its time, level and context, into out (size bytes; at least 64), cut to fit and always ending in
 * '\n' (a JSON line stays a whole object). Returns its length. */
size_t sb_log_render(char *out, size_t size, enum sb_log_format format, enum sb_log_level level, const char *ctx,
                     const struct timespec *ts, char *msg, size_t msglen);

#define sb_log_error(...) sb_log(SB_LOG_ERROR, __VA_ARGS__)
#define sb_log_warn(...) sb_log(SB_LOG_WARN, __VA_ARGS__)
#define sb_log_info(...) sb_log(SB_LOG_INFO, __VA_ARGS__)
#define sb_log_debug(...) sb_log(SB_LOG_DEBUG, __VA_ARGS__)

#endif
