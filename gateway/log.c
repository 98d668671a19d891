/* Line logger; see log.h. Each line is formatted into a stack buffer and written with one write(2), so lines
 * from different shard threads never interleave. */
#include "gateway/log.h"

#include "proto/err.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static atomic_int log_level = SB_LOG_INFO;
static _Thread_local char log_ctx[32] = "main";
static const char *const level_names[] = {"error", "warn", "info", "debug"};

void sb_log_set_level(enum sb_log_level level)
{
    atomic_store(&log_level, (int)level);
}

enum sb_log_level sb_log_get_level(void)
{
    return (enum sb_log_level)atomic_load(&log_level);
}

int sb_log_level_parse(const char *s, enum sb_log_level *out)
{
    for (int i = 0; i < 4; i++) {
        if (strcmp(s, level_names[i]) == 0) {
            *out = (enum sb_log_level)i;
            return 0;
        }
    }
    return SB_EINVAL;
}

void sb_log_set_context(const char *ctx)
{
    snprintf(log_ctx, sizeof log_ctx, "%s", ctx);
}

void sb_log(enum sb_log_level level, const char *fmt, ...)
{
    if ((int)level > atomic_load_explicit(&log_level, memory_order_relaxed))
        return;

    char line[1024];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %-5s [%s] ", tm.tm_year + 1900,
                     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000,
                     level_names[level], log_ctx);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    va_end(ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len > sizeof line - 2)
        len = sizeof line - 2;
    line[len++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
}
