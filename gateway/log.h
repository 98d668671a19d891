/* Logging: one line per event on stderr, with level, time and the thread's context ("shard 2", "main").
 *
 * A leaf header, usable from every layer. The context is set once per thread (sb_log_set_context), so callers
 * never repeat it. Never log payloads, tokens or keys. */
#ifndef SB_LOG_H
#define SB_LOG_H

enum sb_log_level { SB_LOG_ERROR = 0, SB_LOG_WARN = 1, SB_LOG_INFO = 2, SB_LOG_DEBUG = 3 };

/* Sets the process-wide threshold; lines above it are dropped cheaply. */
void sb_log_set_level(enum sb_log_level level);
enum sb_log_level sb_log_get_level(void);
/* Parses "error" / "warn" / "info" / "debug". Returns 0 or SB_EINVAL. */
int sb_log_level_parse(const char *s, enum sb_log_level *out);
/* Sets this thread's context label (copied; at most 31 bytes kept). */
void sb_log_set_context(const char *ctx);

void sb_log(enum sb_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define sb_log_error(...) sb_log(SB_LOG_ERROR, __VA_ARGS__)
#define sb_log_warn(...) sb_log(SB_LOG_WARN, __VA_ARGS__)
#define sb_log_info(...) sb_log(SB_LOG_INFO, __VA_ARGS__)
#define sb_log_debug(...) sb_log(SB_LOG_DEBUG, __VA_ARGS__)

#endif
