/* The admin console; see console.h for the protocol.
 *
 * Framing and word splitting are proto/line's (fuzzed separately); this file owns sessions, the command table and
 * the two output forms. Every answer is built as a table (named columns, rows of cells) and then rendered either
 * as aligned text or as one line of JSON, so the two forms can never disagree. */
#include "gateway/console.h"

#include "adapters/counters.h"
#include "adapters/net/accept.h"
#include "gateway/authguard.h"
#include "actors/session.h"
#include "adapters/store/queries.h"
#include "adapters/store/store.h"
#include "shards/domain.h"
#include "gateway/live.h"
#include "gateway/log.h"
#include "gateway/metrics.h"
#include "gateway/voice.h"
#include "proto/version.h"
#include "proto/codec.h"
#include "proto/err.h"
#include "proto/guard.h"
#include "proto/line.h"
#include "proto/mem.h"
#include "proto/str.h"
#include "shards/cluster.h"
#include "shards/placement.h"
#include "shards/shard.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_SESSIONS 256      /* authenticated sessions */
#define MAX_UNAUTHED 64       /* sessions still to authenticate; when full, the oldest makes room for a newcomer */
#define MAX_PENDING_OUTPUT (1u << 20) /* unwritten output past this closes the session (a trace nobody reads) */
#define OUTPUT_HIGH (256u << 10) /* unwritten output past this: no further command runs ... */
#define OUTPUT_LOW (64u << 10)   /* ... until the peer has read it down to this */
#define MAX_QUEUED_INPUT 65536 /* bytes received and not yet run (a command waits): reading stops beyond */
#define SWEEP_MS 500
#define END_MS 10000          /* a session ending (quit, refused) has this long to read its last answer */
#define ACTORS_LIMIT 100
#define TRACE_EVERY_MS 200
#define TRACE_PAGE 500

typedef struct session session_t;

struct sb_console {
    uv_loop_t *loop;
    uv_tcp_t listener;
    sb_console_opts_t opts;
    session_t *sessions; /* newest first */
    unsigned nsessions, nauthed;
    uint64_t started_ms;
    bool closing;
    int open_handles; /* listener + sweep timer + sessions: freed at zero once closing */
    sb_metrics_t *m;
    sb_accept_guard_t accept;
    uv_timer_t sweep;  /* auth deadlines, and sessions that take too long to end */
    char rbuf[65536];
};

struct session {
    uv_tcp_t tcp;
    uv_shutdown_t shutdown;
    sb_console_t *con;
    session_t *prev, *next;
    sb_line_reader_t lr;
    sb_buf_t in;       /* received, not yet run: a command that waits holds back the ones after it */
    size_t pending;
    int refs; /* the handle, plus each listing in flight, plus a trace's or a held answer's timer, plus a shutdown */
    uint64_t opened_ms, ending_ms;
    sb_guard_addr_t addr; /* the peer's, for its failure budget */
    bool authed, prompt, closing;
    bool busy;         /* a command waits (database, other shards, a held answer): the next line waits for it */
    bool pumping, reading, ending;
    bool eof;          /* the peer shut its side: the queued lines run, then the session ends as on quit */
    bool partial;      /* the last byte received was not a newline (a last line without one still runs at EOF) */
    bool held;         /* unwritten output passed OUTPUT_HIGH: no command runs until it is down to OUTPUT_LOW */
    uv_timer_t *hold_timer; /* holds a wrong `auth` back (the guard's delay) */
    /* trace: the tenant's cursor is read (the session is busy meanwhile), then the event log is polled after it */
    bool trace_json, trace_polling;
    int64_t trace_tenant, trace_cursor; /* trace_tenant > 0 while tracing */
    uv_timer_t *trace_timer;
};

/* ---- output --------------------------------------------------------------------------------------------------- */

typedef struct write_req {
    uv_write_t req;
    session_t *s;
    size_t len;
    char data[];
} write_req_t;

static void session_close(session_t *s);
static void session_end(session_t *s);
static void session_unref(session_t *s);
static void wait_begin(session_t *s);
static void wait_end(session_t *s);

static void pump(session_t *s);

/* A write finished: once the peer has read the backlog down to OUTPUT_LOW, the commands held back by it run. */
static void on_written(uv_write_t *w, int status)
{
    write_req_t *wr = (write_req_t *)w;
    session_t *s = wr->s;
    s->pending -= wr->len;
    (void)status;
    free(wr);
    if (!s->closing && s->held && s->pending <= OUTPUT_LOW) {
        s->held = false;
        pump(s);
    }
}

static void out(session_t *s, const char *p, size_t len)
{
    if (s->closing || len == 0)
        return;
    if (s->pending + len > MAX_PENDING_OUTPUT) {
        sb_log_warn("console: closing a session that does not read its output");
        session_close(s);
        return;
    }
    write_req_t *wr = sb_malloc(sizeof *wr + len);
    memcpy(wr->data, p, len);
    wr->s = s;
    wr->len = len;
    uv_buf_t buf = uv_buf_init(wr->data, (unsigned)len);
    if (uv_write(&wr->req, (uv_stream_t *)&s->tcp, &buf, 1, on_written) < 0) {
        free(wr);
        session_close(s);
        return;
    }
    s->pending += len;
}

/* Sends an answer: body (which ends with a newline, or is empty), then the empty line, then the prompt. */
static void answer(session_t *s, const sb_buf_t *body)
{
    sb_buf_t b;
    sb_buf_init(&b);
    sb_buf_append(&b, body->p, body->len);
    sb_buf_puts(&b, "\n");
    if (s->prompt)
        sb_buf_puts(&b, "sb> ");
    out(s, b.p, b.len);
    sb_buf_cleanup(&b);
}

/* "ERR " and the message, escaped (it may quote a database's multi-line error). */
static void __attribute__((format(printf, 2, 3))) answer_err(session_t *s, const char *fmt, ...)
{
    sb_buf_t msg, b;
    va_list ap;
    sb_buf_init(&msg);
    sb_buf_init(&b);
    va_start(ap, fmt);
    sb_buf_vprintf(&msg, fmt, ap);
    va_end(ap);
    sb_buf_puts(&b, "ERR ");
    sb_line_escape(&b, sb_str(sb_buf_cstr(&msg), msg.len));
    sb_buf_puts(&b, "\n");
    answer(s, &b);
    sb_buf_cleanup(&b);
    sb_buf_cleanup(&msg);
}

/* The empty line alone: the end of an answer whose lines went out as they came (trace). */
static void answer_empty(session_t *s)
{
    sb_buf_t b;
    sb_buf_init(&b);
    answer(s, &b);
}

static void answer_line(session_t *s, const char *line)
{
    sb_buf_t b;
    sb_buf_init(&b);
    sb_buf_printf(&b, "%s\n", line);
    answer(s, &b);
    sb_buf_cleanup(&b);
}

/* ---- tables: one structure, two renderings -------------------------------------------------------------------- */

#define MAX_COLS 10     /* columns of a table (shards has 10) */
#define MAX_ROW_COLS 8  /* columns of a database listing shown */

typedef struct table {
    int ncols;
    const char *cols[MAX_COLS];
    bool num[MAX_COLS]; /* JSON number (unquoted) rather than string */
    char **cells;
    size_t ncells, cap;
} table_t;

static void table_init(table_t *t, int ncols, const char *const *cols, const bool *num)
{
    memset(t, 0, sizeof *t);
    t->ncols = ncols;
    for (int i = 0; i < ncols; i++) {
        t->cols[i] = cols[i];
        t->num[i] = num[i];
    }
}

static void __attribute__((format(printf, 2, 0))) table_vcell(table_t *t, const char *fmt, va_list ap)
{
    sb_buf_t b;
    sb_buf_init(&b);
    sb_buf_vprintf(&b, fmt, ap);
    if (t->ncells == t->cap) {
        t->cap = t->cap ? t->cap * 2 : 32;
        t->cells = sb_realloc(t->cells, t->cap * sizeof *t->cells);
    }
    t->cells[t->ncells++] = b.p ? b.p : sb_strdup("");
}

static void __attribute__((format(printf, 2, 3))) table_cell(table_t *t, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    table_vcell(t, fmt, ap);
    va_end(ap);
}

static void table_cleanup(table_t *t)
{
    for (size_t i = 0; i < t->ncells; i++)
        free(t->cells[i]);
    free(t->cells);
}

/* Aligned columns. Cells are shown escaped (sb_line_escape): a tenant's name can neither break the answer's framing
 * nor send control codes to the operator's terminal. */
static void render_text(const table_t *t, sb_buf_t *b)
{
    size_t n = (size_t)t->ncols + t->ncells, w[MAX_COLS] = {0};
    sb_buf_t *shown = sb_calloc(n, sizeof *shown);
    for (size_t i = 0; i < n; i++) {
        const char *cell = i < (size_t)t->ncols ? t->cols[i] : t->cells[i - (size_t)t->ncols];
        sb_line_escape(&shown[i], sb_str_cstr(cell));
        if (shown[i].len > w[i % (size_t)t->ncols])
            w[i % (size_t)t->ncols] = shown[i].len;
    }
    for (size_t i = 0; i < n; i++) {
        int c = (int)(i % (size_t)t->ncols);
        if (c + 1 < t->ncols)
            sb_buf_printf(b, "%-*s  ", (int)w[c], sb_buf_cstr(&shown[i]));
        else
            sb_buf_printf(b, "%s\n", sb_buf_cstr(&shown[i]));
        sb_buf_cleanup(&shown[i]);
    }
    free(shown);
}

static void json_value(sb_buf_t *b, const char *v, bool num)
{
    if (num) {
        sb_buf_puts(b, v);
        return;
    }
    sb_buf_puts(b, "\"");
    sb_buf_json_escape(b, sb_str_cstr(v));
    sb_buf_puts(b, "\"");
}

/* Rows as a JSON array of objects. */
static void render_json_rows(const table_t *t, sb_buf_t *b)
{
    sb_buf_puts(b, "[");
    for (size_t i = 0; i < t->ncells; i++) {
        int c = (int)(i % (size_t)t->ncols);
        sb_buf_puts(b, c == 0 ? (i ? ",{" : "{") : ",");
        sb_buf_printf(b, "\"%s\":", t->cols[c]);
        json_value(b, t->cells[i], t->num[c]);
        if (c + 1 == t->ncols)
            sb_buf_puts(b, "}");
    }
    sb_buf_puts(b, "]");
}

/* Answers t as aligned text, or as {"<key>":[rows]}; cleans t up. */
static void answer_table(session_t *s, table_t *t, bool json, const char *key)
{
    sb_buf_t b;
    sb_buf_init(&b);
    if (json) {
        sb_buf_printf(&b, "{\"%s\":", key);
        render_json_rows(t, &b);
        sb_buf_puts(&b, "}\n");
    } else {
        render_text(t, &b);
    }
    answer(s, &b);
    sb_buf_cleanup(&b);
    table_cleanup(t);
}

/* A key/value list: the text form is aligned "key  value" lines, the JSON form one object. */
typedef struct kv {
    table_t t;
} kv_t;

static void kv_init(kv_t *kv)
{
    static const char *const cols[] = {"key", "value"};
    static const bool num[] = {false, false};
    table_init(&kv->t, 2, cols, num);
}

static void __attribute__((format(printf, 4, 5))) kv_add(kv_t *kv, const char *key, bool num, const char *fmt, ...)
{
    va_list ap;
    table_cell(&kv->t, "%s%s", num ? "#" : "", key); /* '#' marks numbers for the JSON form */
    va_start(ap, fmt);
    table_vcell(&kv->t, fmt, ap);
    va_end(ap);
}

static void kv_answer(session_t *s, kv_t *kv, bool json)
{
    sb_buf_t b;
    sb_buf_init(&b);
    if (json) {
        sb_buf_puts(&b, "{");
        for (size_t i = 0; i < kv->t.ncells; i += 2) {
            const char *k = kv->t.cells[i];
            bool num = k[0] == '#';
            sb_buf_printf(&b, "%s\"%s\":", i ? "," : "", k + num);
            json_value(&b, kv->t.cells[i + 1], num);
        }
        sb_buf_puts(&b, "}\n");
    } else {
        size_t w = 0;
        for (size_t i = 0; i < kv->t.ncells; i += 2) {
            size_t n = strlen(kv->t.cells[i]) - (kv->t.cells[i][0] == '#');
            w = n > w ? n : w;
        }
        for (size_t i = 0; i < kv->t.ncells; i += 2) {
            const char *k = kv->t.cells[i];
            sb_buf_printf(&b, "%-*s  ", (int)w, k + (k[0] == '#'));
            sb_line_escape(&b, sb_str_cstr(kv->t.cells[i + 1]));
            sb_buf_puts(&b, "\n");
        }
    }
    answer(s, &b);
    sb_buf_cleanup(&b);
    table_cleanup(&kv->t);
}

/* ---- commands ------------------------------------------------------------------------------------------------- */

typedef struct command {
    const char *name, *args, *help;
    bool open; /* allowed before auth */
    void (*fn)(session_t *s, const sb_line_cmd_t *cmd);
} command_t;

static const command_t commands[];

static void cmd_help(session_t *s, const sb_line_cmd_t *cmd)
{
    static const char *const cols[] = {"command", "args", "description"};
    static const bool num[] = {false, false, false};
    table_t t;
    table_init(&t, 3, cols, num);
    for (const command_t *c = commands; c->name; c++) {
        table_cell(&t, "%s", c->name);
        table_cell(&t, "%s", c->args);
        table_cell(&t, "%s", c->help);
    }
    sb_buf_t b;
    sb_buf_init(&b);
    if (cmd->json) {
        sb_buf_puts(&b, "{\"commands\":");
        render_json_rows(&t, &b);
        sb_buf_puts(&b, "}\n");
    } else {
        render_text(&t, &b);
        sb_buf_puts(&b, "Add -j to any command for one line of JSON.\n");
    }
    answer(s, &b);
    sb_buf_cleanup(&b);
    table_cleanup(&t);
}

static void hold_timer_closed(uv_handle_t *h)
{
    session_t *s = h->data;
    free(h);
    session_unref(s);
}

static void hold_stop(session_t *s)
{
    if (s->hold_timer) {
        uv_close((uv_handle_t *)s->hold_timer, hold_timer_closed);
        s->hold_timer = NULL;
    }
}

static void on_hold(uv_timer_t *t)
{
    session_t *s = t->data;
    hold_stop(s);
    answer_err(s, "bad token");
    s->busy = false;
    pump(s);
}

/* Checks the token; the process-wide failure budget of the peer's address (gateway/authguard.h, on this shard)
 * says how to answer: after a few wrong ones each ERR comes later than the one before (the session waits, its next
 * lines too), then the address is refused for a while and the session ends. */
static void cmd_auth(session_t *s, const sb_line_cmd_t *cmd)
{
    sb_console_t *con = s->con;
    if (cmd->argc != 2) {
        answer_err(s, "usage: auth <admin_token>");
        return;
    }
    if (!con->opts.admin_token) {
        answer_err(s, "no admin_token is configured: the console refuses everyone");
        return;
    }
    bool token_ok = sb_codec_ct_eq(cmd->argv[1], sb_str_cstr(con->opts.admin_token));
    sb_auth_verdict_t v = sb_authguard_judge(&s->addr, token_ok, "console");
    if (v.blocked_ms) {
        answer_err(s, "too many failed auth attempts from this address; try again in %llu s",
                   (unsigned long long)(v.blocked_ms + 999) / 1000);
        session_end(s);
    } else if (!v.ok && v.delay_ms) { /* busy until the timer fires; a session closing first just closes it */
        s->busy = true;
        s->hold_timer = sb_malloc(sizeof *s->hold_timer);
        uv_timer_init(con->loop, s->hold_timer);
        s->hold_timer->data = s;
        s->refs++; /* the timer's, given back when it has closed */
        uv_timer_start(s->hold_timer, on_hold, v.delay_ms, 0);
    } else if (!v.ok) {
        answer_err(s, "bad token");
    } else if (!s->authed && con->nauthed >= MAX_SESSIONS) {
        answer_err(s, "too many console sessions (%d)", MAX_SESSIONS);
        session_end(s);
    } else {
        con->nauthed += !s->authed;
        s->authed = true;
        answer_line(s, cmd->json ? "{\"ok\":true}" : "OK");
    }
}

static uint64_t total_connections(void)
{
    int64_t n = 0;
    for (unsigned i = 0; i < sb_shards_count(); i++)
        n += sb_gauge_get(&sb_metrics_shard(i)->http_connections) +
             sb_gauge_get(&sb_metrics_shard(i)->console_sessions);
    return n > 0 ? (uint64_t)n : 0;
}

static double uptime_s(const sb_console_t *con)
{
    return (double)(uv_now(con->loop) - con->started_ms) / 1000.0;
}

static void cmd_info(session_t *s, const sb_line_cmd_t *cmd)
{
    kv_t kv;
    kv_init(&kv);
    kv_add(&kv, "version", false, "%s", SB_VERSION);
    kv_add(&kv, "node", false, "%s", s->con->opts.node_id);
    kv_add(&kv, "pid", true, "%d", (int)getpid());
    kv_add(&kv, "uptime_s", true, "%.1f", uptime_s(s->con));
    kv_add(&kv, "shards", true, "%u", sb_shards_count());
    kv_add(&kv, "slots", true, "%u", s->con->opts.slots);
    kv_add(&kv, "connections", true, "%llu", (unsigned long long)total_connections());
    kv_answer(s, &kv, cmd->json);
}

static void cmd_shards(session_t *s, const sb_line_cmd_t *cmd)
{
    static const char *const cols[] = {"shard",    "actors",   "mailbox_depth",    "loop_lag_ms", "connections",
                                       "messages", "restarts", "lane_interactive", "lane_normal", "lane_bulk"};
    static const bool num[] = {true, true, true, true, true, true, true, true, true, true};
    table_t t;
    table_init(&t, 10, cols, num);
    for (unsigned i = 0; i < sb_shards_count(); i++) {
        sb_shard_stats_t st;
        sb_shard_get_stats(i, &st);
        sb_metrics_t *m = sb_metrics_shard(i);
        table_cell(&t, "%u", i);
        table_cell(&t, "%llu", (unsigned long long)st.actors);
        table_cell(&t, "%llu", (unsigned long long)st.mailbox_depth);
        table_cell(&t, "%.3f", (double)st.loop_lag_us / 1000.0);
        table_cell(&t, "%lld", (long long)(sb_gauge_get(&m->http_connections) + sb_gauge_get(&m->console_sessions)));
        table_cell(&t, "%llu", (unsigned long long)st.processed);
        table_cell(&t, "%llu", (unsigned long long)st.restarts);
        for (int p = 0; p < 3; p++) /* the sessions' lanes: interactive, normal, bulk */
            table_cell(&t, "%lld", (long long)sb_gauge_get(&m->lane_depth[p]));
    }
    sb_buf_t b;
    sb_buf_init(&b);
    if (cmd->json) {
        render_json_rows(&t, &b);
        sb_buf_puts(&b, "\n");
    } else {
        render_text(&t, &b);
    }
    answer(s, &b);
    sb_buf_cleanup(&b);
    table_cleanup(&t);
}

static void cmd_stats(session_t *s, const sb_line_cmd_t *cmd)
{
    uint64_t req = 0, cls[6] = {0}, actors = 0, depth = 0, msgs = 0, restarts = 0, dead = 0, cmds = 0;
    for (unsigned i = 0; i < sb_shards_count(); i++) {
        sb_metrics_t *m = sb_metrics_shard(i);
        sb_shard_stats_t st;
        sb_shard_get_stats(i, &st);
        req += sb_metric_get(&m->http_requests);
        for (int c = 1; c <= 5; c++)
            cls[c] += sb_metric_get(&m->http_status[c]);
        cmds += sb_metric_get(&m->console_commands);
        actors += st.actors;
        depth += st.mailbox_depth;
        msgs += st.processed;
        restarts += st.restarts;
        dead += st.dead_letters;
    }
    kv_t kv;
    kv_init(&kv);
    kv_add(&kv, "uptime_s", true, "%.1f", uptime_s(s->con));
    kv_add(&kv, "http_requests", true, "%llu", (unsigned long long)req);
    for (int c = 1; c <= 5; c++) {
        char key[16];
        snprintf(key, sizeof key, "http_%dxx", c);
        kv_add(&kv, key, true, "%llu", (unsigned long long)cls[c]);
    }
    kv_add(&kv, "connections", true, "%llu", (unsigned long long)total_connections());
    kv_add(&kv, "console_commands", true, "%llu", (unsigned long long)cmds);
    kv_add(&kv, "actors", true, "%llu", (unsigned long long)actors);
    kv_add(&kv, "mailbox_depth", true, "%llu", (unsigned long long)depth);
    kv_add(&kv, "actor_messages", true, "%llu", (unsigned long long)msgs);
    kv_add(&kv, "actor_restarts", true, "%llu", (unsigned long long)restarts);
    kv_add(&kv, "dead_letters", true, "%llu", (unsigned long long)dead);
    kv_answer(s, &kv, cmd->json);
}

static void cmd_prompt(session_t *s, const sb_line_cmd_t *cmd)
{
    s->prompt = !s->prompt;
    if (cmd->json)
        answer_line(s, s->prompt ? "{\"prompt\":true}" : "{\"prompt\":false}");
    else
        answer_line(s, s->prompt ? "prompt on" : "prompt off");
}

static void cmd_quit(session_t *s, const sb_line_cmd_t *cmd)
{
    (void)cmd;
    s->prompt = false;
    answer_line(s, "bye");
    session_end(s);
}

/* ---- listings gathered from every shard ----------------------------------------------------------------------- */

typedef struct gather gather_t;

typedef struct part {
    gather_t *g;
    unsigned shard;
    sb_actor_info_t rows[ACTORS_LIMIT];
    unsigned n;
    uint64_t total;
} part_t;

struct gather {
    session_t *s;
    bool json;
    unsigned remaining;
    sb_actor_id_t one; /* `actor <id>`: only this one */
    part_t *parts;
    unsigned nparts;
};

static void gather_render(gather_t *g)
{
    session_t *s = g->s;
    if (g->one) {
        part_t *p = &g->parts[0];
        if (!p->n) {
            answer_err(s, "no such actor: %llu", (unsigned long long)g->one);
        } else {
            kv_t kv;
            kv_init(&kv);
            kv_add(&kv, "id", true, "%llu", (unsigned long long)p->rows[0].id);
            kv_add(&kv, "kind", false, "%s", p->rows[0].kind);
            kv_add(&kv, "shard", true, "%u", p->shard);
            kv_add(&kv, "mailbox", true, "%u", p->rows[0].mailbox);
            kv_add(&kv, "restarts", true, "%u", p->rows[0].restarts);
            kv_add(&kv, "suspended", true, "%s", p->rows[0].suspended ? "true" : "false");
            kv_answer(s, &kv, g->json);
        }
        return;
    }
    static const char *const cols[] = {"id", "kind", "shard", "mailbox", "restarts", "suspended"};
    static const bool num[] = {true, false, true, true, true, true};
    table_t t;
    table_init(&t, 6, cols, num);
    uint64_t total = 0;
    unsigned shown = 0;
    for (unsigned i = 0; i < g->nparts; i++) {
        part_t *p = &g->parts[i];
        total += p->total;
        for (unsigned r = 0; r < p->n && shown < ACTORS_LIMIT; r++, shown++) {
            table_cell(&t, "%llu", (unsigned long long)p->rows[r].id);
            table_cell(&t, "%s", p->rows[r].kind);
            table_cell(&t, "%u", p->shard);
            table_cell(&t, "%u", p->rows[r].mailbox);
            table_cell(&t, "%u", p->rows[r].restarts);
            table_cell(&t, "%s", p->rows[r].suspended ? "true" : "false");
        }
    }
    sb_buf_t b;
    sb_buf_init(&b);
    if (g->json) {
        sb_buf_puts(&b, "{\"actors\":");
        render_json_rows(&t, &b);
        sb_buf_printf(&b, ",\"total\":%llu,\"shown\":%u}\n", (unsigned long long)total, shown);
    } else {
        render_text(&t, &b);
        sb_buf_printf(&b, "%llu actor(s)%s\n", (unsigned long long)total,
                      total > shown ? ", first ones shown" : "");
    }
    answer(s, &b);
    sb_buf_cleanup(&b);
    table_cleanup(&t);
}

static void gather_part_done(sb_shard_t *shard, void *arg)
{
    part_t *p = arg;
    gather_t *g = p->g;
    (void)shard;
    if (--g->remaining)
        return;
    if (!g->s->closing)
        gather_render(g);
    wait_end(g->s);
    free(g->parts);
    free(g);
}

static bool collect_row(void *arg, const sb_actor_info_t *info)
{
    part_t *p = arg;
    p->total++;
    if (p->n < ACTORS_LIMIT)
        p->rows[p->n++] = *info;
    return true;
}

/* Runs on each shard being listed, then hands its part back to the console's shard. */
static void gather_collect(sb_shard_t *shard, void *arg)
{
    part_t *p = arg;
    gather_t *g = p->g;
    if (g->one) {
        if (sb_rt_actor_info(sb_shard_rt(shard), g->one, &p->rows[0]) == 0)
            p->n = p->total = 1;
    } else {
        sb_rt_foreach(sb_shard_rt(shard), collect_row, p);
    }
    if (sb_shard_exec(g->s->con->opts.shard, gather_part_done, p) < 0)
        sb_log_warn("console: listing reply lost (console shard closed)");
}

/* Asks shards [first, first + count) for their actors. */
static void gather_start(session_t *s, bool json, unsigned first, unsigned count, sb_actor_id_t one)
{
    gather_t *g = sb_calloc(1, sizeof *g);
    g->s = s;
    g->json = json;
    g->one = one;
    g->parts = sb_calloc(count, sizeof *g->parts);
    g->nparts = count;
    g->remaining = count;
    wait_begin(s);
    for (unsigned i = 0; i < count; i++) {
        g->parts[i].g = g;
        g->parts[i].shard = first + i;
    }
    for (unsigned i = 0; i < count; i++) {
        if (sb_shard_exec(first + i, gather_collect, &g->parts[i]) < 0)
            gather_part_done(NULL, &g->parts[i]); /* a stopped shard lists nothing */
    }
}

static void cmd_actors(session_t *s, const sb_line_cmd_t *cmd)
{
    if (cmd->argc > 2) {
        answer_err(s, "usage: actors [<tenant_id>]");
        return;
    }
    if (cmd->argc == 2) { /* a tenant's actors all live on the shard its slot maps to */
        uint32_t slot = sb_place_slot(cmd->argv[1], s->con->opts.slots);
        gather_start(s, cmd->json, sb_place_shard(slot, sb_shards_count()), 1, 0);
        return;
    }
    gather_start(s, cmd->json, 0, sb_shards_count(), 0);
}

static void cmd_actor(session_t *s, const sb_line_cmd_t *cmd)
{
    long long id;
    if (cmd->argc != 2 || sb_str_to_ll(cmd->argv[1], 1, INT64_MAX, &id) < 0) {
        answer_err(s, "usage: actor <id>");
        return;
    }
    unsigned shard = sb_actor_id_shard((sb_actor_id_t)id);
    if (shard >= sb_shards_count()) {
        answer_err(s, "no such actor: %lld", id);
        return;
    }
    gather_start(s, cmd->json, shard, 1, (sb_actor_id_t)id);
}

/* ---- listings from PostgreSQL --------------------------------------------------------------------------------- */

typedef struct dbq {
    session_t *s;
    bool json;
    const char *key; /* JSON member holding the rows */
    void (*after)(const sb_rows_t *rows); /* on success, before answering (or NULL) */
} dbq_t;

/* Answers rows as a table: {"key":[...]<json_tail>} with -j, else the table, "N row(s)" or text_tail (NULL: none). */
static void answer_rows(session_t *s, const sb_rows_t *rows, bool json, const char *key, const char *json_tail,
                        const char *text_tail)
{
    int nc = rows->ncols < MAX_ROW_COLS ? (int)rows->ncols : MAX_ROW_COLS;
    table_t t;
    table_init(&t, nc, rows->names, rows->integer);
    for (size_t r = 0; r < rows->nrows; r++)
        for (int c = 0; c < nc; c++) {
            const char *v = sb_rows_cell(rows, r, (size_t)c);
            table_cell(&t, "%s", v ? v : rows->integer[c] ? "null" : "");
        }
    sb_buf_t b;
    sb_buf_init(&b);
    if (json) {
        sb_buf_printf(&b, "{\"%s\":", key);
        render_json_rows(&t, &b);
        sb_buf_printf(&b, "%s}\n", json_tail ? json_tail : "");
    } else {
        render_text(&t, &b);
        if (text_tail)
            sb_buf_printf(&b, "%s\n", text_tail);
        else
            sb_buf_printf(&b, "%zu row(s)\n", rows->nrows);
    }
    answer(s, &b);
    sb_buf_cleanup(&b);
    table_cleanup(&t);
}

/* Answers the rows as a table (after calling q->after, if any, with them). */
static void dbq_done(void *arg, int err, const char *detail, const sb_rows_t *rows)
{
    dbq_t *q = arg;
    session_t *s = q->s;
    if (s->closing) {
        /* nothing to say to anyone */
    } else if (err) {
        answer_err(s, "database: %s", detail);
    } else {
        if (q->after)
            q->after(rows);
        answer_rows(s, rows, q->json, q->key, NULL, NULL);
    }
    wait_end(s);
    free(q);
}

/* A listing's store call: query(store, id, done, q) — id only for the calls that take one. */
typedef int (*listing_fn)(sb_store_t *st, int64_t id, sb_query_rows_cb done, void *q);

/* Asks this shard's store for a listing and answers its rows as a table (after calling after, if not NULL, with
 * them). */
static void db_query(session_t *s, bool json, const char *key, listing_fn query, int64_t id,
                     void (*after)(const sb_rows_t *))
{
    sb_shard_t *shard = sb_shard_self();
    dbq_t *q = sb_calloc(1, sizeof *q);
    q->s = s;
    q->json = json;
    q->key = key;
    q->after = after;
    wait_begin(s);
    if (!shard || query(sb_domain_store(shard), id, dbq_done, q) < 0) {
        answer_err(s, "database not reachable");
        wait_end(s);
        free(q);
    }
}

/* The command's one argument as a positive id. False, with the usage answered, when there is not exactly one
 * argument or it is not such an id. */
static bool one_id(session_t *s, const sb_line_cmd_t *cmd, const char *usage, int64_t *id)
{
    long long v;
    if (cmd->argc != 2 || sb_str_to_ll(cmd->argv[1], 1, INT64_MAX, &v) < 0) {
        answer_err(s, "usage: %s", usage);
        return false;
    }
    *id = v;
    return true;
}

static void cmd_dead(session_t *s, const sb_line_cmd_t *cmd)
{
    long long tid = 0;
    if (cmd->argc > 2 || (cmd->argc == 2 && sb_str_to_ll(cmd->argv[1], 1, INT64_MAX, &tid) < 0)) {
        answer_err(s, "usage: dead [<tenant_id>]");
        return;
    }
    db_query(s, cmd->json, "messages", sb_query_dead_messages, tid, NULL);
}

/* The channel's session loads its outbox again (activated if it was not). */
static void replayed(const sb_rows_t *rows)
{
    sb_shard_t *shard = sb_shard_self();
    for (size_t i = 0; shard && i < rows->nrows; i++) {
        int64_t tenant = strtoll(sb_rows_cell(rows, i, 1), NULL, 10);
        int64_t channel = strtoll(sb_rows_cell(rows, i, 2), NULL, 10);
        if (sb_cluster_owns(tenant)) /* (another node's: its session loads the outbox when it next activates) */
            sb_rt_send_key(sb_shard_rt(shard), sb_domain_owner(tenant), &sb_session_kind, (uint64_t)channel,
                           SB_SESSION_RESUME, NULL, 0);
    }
}

/* replay <message_id>: a dead, failed or unknown outbound message is queued again, its attempts from zero (for an
 * unknown one the operator decides the provider did not have it). */
static void cmd_replay(session_t *s, const sb_line_cmd_t *cmd)
{
    int64_t id;
    if (one_id(s, cmd, "replay <message_id>", &id))
        db_query(s, cmd->json, "replayed", sb_query_message_replay, id, replayed);
}

/* counters <tenant_id> [<channel_id>]: the live figures the senders keep in Redis and, for a channel, its session's
 * (activated if it was not): the messages in each lane, the pace and the caps in force. */
typedef struct counters_q {
    session_t *s;
    bool json, channel;
    unsigned home;                /* the console's shard: the session's answer comes back to it */
    sb_counters_state_t st;       /* Redis's figures */
    sb_session_figures_t f;       /* the session's */
} counters_q_t;

static void counters_answer(counters_q_t *q)
{
    session_t *s = q->s;
    if (!s->closing) {
        const sb_counters_state_t *st = &q->st;
        kv_t kv;
        kv_init(&kv);
        kv_add(&kv, "tenant_inflight", true, "%lld", (long long)st->tenant_inflight);
        if (q->channel) {
            kv_add(&kv, "channel_inflight", true, "%lld", (long long)st->channel_inflight);
            kv_add(&kv, "rate_per_second", true, "%.3f", st->interval_us ? 1e6 / (double)st->interval_us : 0.0);
            kv_add(&kv, "tokens_now", true, "%lld", (long long)st->tokens);
            kv_add(&kv, "next_free_in_ms", true, "%lld",
                   (long long)(st->next_free_us > st->now_us ? (st->next_free_us - st->now_us) / 1000 : 0));
        }
        if (q->channel && q->f.found) {
            const sb_session_figures_t *f = &q->f;
            kv_add(&kv, "pace_per_second", true, "%.3f", f->rate_per_second);
            kv_add(&kv, "pace_from", false, "%s", f->rate_set ? "settings" : "default");
            kv_add(&kv, "channel_max", true, "%u", f->channel_max);
            kv_add(&kv, "channel_max_from", false, "%s", f->channel_max_set ? "settings" : "default");
            kv_add(&kv, "tenant_max", true, "%u", f->tenant_max);
            kv_add(&kv, "tenant_max_from", false, "%s", f->tenant_max_set ? "settings" : "default");
            kv_add(&kv, "sending", true, "%u", f->sending);
            for (int p = 0; p < SB_PRIORITY_N; p++) {
                char key[32];
                snprintf(key, sizeof key, "lane_%s", sb_priority_names[p]);
                kv_add(&kv, key, true, "%lld", (long long)f->lanes[p]);
            }
        }
        kv_answer(s, &kv, q->json);
    }
    wait_end(s);
    free(q);
}

static void figures_home(sb_shard_t *shard, void *arg)
{
    (void)shard;
    counters_answer(arg);
}

/* The session's answer, on its shard: taken home to the console's. */
static void figures_answered(sb_session_figures_t *f)
{
    counters_q_t *q = f->arg;
    sb_shard_t *self = sb_shard_self();
    if (self && sb_shard_index(self) == q->home)
        counters_answer(q);
    else if (sb_shard_exec(q->home, figures_home, q) < 0)
        sb_log_warn("console: a channel's figures could not be taken back to the console's shard");
}

static void counters_read(void *arg, int err, const sb_counters_state_t *st)
{
    counters_q_t *q = arg;
    session_t *s = q->s;
    if (!s->closing && err) {
        answer_err(s, "redis: %s", sb_strerror(err));
    } else if (!s->closing) {
        q->st = *st;
        sb_shard_t *shard = sb_shard_self();
        if (q->channel && shard && sb_cluster_owns(q->f.tenant)) { /* the session's own figures, then the answer */
            sb_session_figures(sb_shard_rt(shard), sb_domain_owner(q->f.tenant), &q->f);
            return;
        }
        counters_answer(q);
        return;
    }
    wait_end(s);
    free(q);
}

static void cmd_counters(session_t *s, const sb_line_cmd_t *cmd)
{
    long long tid, cid = SB_COUNTERS_NO_CHANNEL;
    if (cmd->argc < 2 || cmd->argc > 3 || sb_str_to_ll(cmd->argv[1], 1, INT64_MAX, &tid) < 0 ||
        (cmd->argc == 3 && sb_str_to_ll(cmd->argv[2], 1, INT64_MAX, &cid) < 0)) {
        answer_err(s, "usage: counters <tenant_id> [<channel_id>]");
        return;
    }
    sb_shard_t *shard = sb_shard_self();
    counters_q_t *q = sb_calloc(1, sizeof *q);
    q->s = s;
    q->json = cmd->json;
    q->channel = cmd->argc == 3;
    q->home = shard ? sb_shard_index(shard) : 0;
    q->f = (sb_session_figures_t){.tenant = tid, .channel = cid, .answer = figures_answered, .arg = q};
    wait_begin(s);
    if (!shard || sb_counters_read(sb_shard_redis(shard), tid, cid, counters_read, q) < 0) {
        answer_err(s, "redis not reachable");
        wait_end(s);
        free(q);
    }
}

/* The tenants' listing takes no id: the shape of the others, for db_query. */
static int tenant_overview(sb_store_t *st, int64_t unused, sb_query_rows_cb done, void *q)
{
    (void)unused;
    return sb_query_tenant_overview(st, done, q);
}

static void cmd_tenants(session_t *s, const sb_line_cmd_t *cmd)
{
    if (cmd->argc != 1) {
        answer_err(s, "usage: tenants");
        return;
    }
    db_query(s, cmd->json, "tenants", tenant_overview, 0, NULL);
}

static void cmd_channels(session_t *s, const sb_line_cmd_t *cmd)
{
    int64_t tenant;
    if (one_id(s, cmd, "channels <tenant_id>", &tenant))
        db_query(s, cmd->json, "channels", sb_query_channel_overview, tenant, NULL);
}

static void cmd_nodes(session_t *s, const sb_line_cmd_t *cmd)
{
    static const char *const cols[] = {"node", "self", "address", "shards", "slots", "heartbeat_age_ms", "draining"};
    static const bool num[] = {false, false, false, true, true, true, false};
    if (cmd->argc != 1) {
        answer_err(s, "usage: nodes");
        return;
    }
    /* The live members as of the cluster's last round (a node alone: itself, with every slot). */
    sb_cluster_node_t nodes[64];
    size_t n = sb_cluster_nodes(nodes, sizeof nodes / sizeof nodes[0]);
    table_t t;
    table_init(&t, 7, cols, num);
    for (size_t i = 0; i < n; i++) {
        table_cell(&t, "%s", nodes[i].id);
        table_cell(&t, "%s", nodes[i].self ? "yes" : "no");
        table_cell(&t, "%s", nodes[i].address);
        table_cell(&t, "%u", nodes[i].shards);
        table_cell(&t, "%u", nodes[i].slots);
        table_cell(&t, "%lld", (long long)nodes[i].heartbeat_age_ms);
        table_cell(&t, "%s", nodes[i].draining ? "yes" : "no");
    }
    answer_table(s, &t, cmd->json, "nodes");
}

static void cmd_slots(session_t *s, const sb_line_cmd_t *cmd)
{
    uint32_t slots = s->con->opts.slots;
    unsigned shards = sb_shards_count();
    if (cmd->argc > 2) {
        answer_err(s, "usage: slots [<tenant_id>]");
        return;
    }
    if (cmd->argc == 2) { /* where one tenant lives */
        long long tid;
        if (sb_str_to_ll(cmd->argv[1], 1, INT64_MAX, &tid) < 0) {
            answer_err(s, "usage: slots [<tenant_id>]");
            return;
        }
        uint32_t slot = sb_place_slot(cmd->argv[1], slots);
        char owner[72];
        int64_t epoch;
        sb_cluster_slot_owner(slot, owner, &epoch);
        kv_t kv;
        kv_init(&kv);
        kv_add(&kv, "tenant", true, "%lld", tid);
        kv_add(&kv, "slot", true, "%u", slot);
        kv_add(&kv, "node", false, "%s", owner);
        kv_add(&kv, "shard", true, "%u", sb_place_shard(slot, shards));
        kv_add(&kv, "epoch", true, "%lld", (long long)epoch);
        kv_answer(s, &kv, cmd->json);
        return;
    }
    if (sb_cluster_enabled()) { /* each node's slots, as this node last heard */
        static const char *const ccols[] = {"node", "slots", "first"};
        static const bool cnum[] = {false, true, false};
        sb_cluster_node_t nodes[64];
        size_t n = sb_cluster_nodes(nodes, sizeof nodes / sizeof nodes[0]);
        table_t t;
        table_init(&t, 3, ccols, cnum);
        for (size_t i = 0; i < n; i++) {
            sb_buf_t first;
            sb_buf_init(&first);
            uint32_t k = 0;
            for (uint32_t slot = 0; slot < slots; slot++) {
                char owner[72];
                int64_t epoch;
                sb_cluster_slot_owner(slot, owner, &epoch);
                if (strcmp(owner, nodes[i].id))
                    continue;
                if (k < 4)
                    sb_buf_printf(&first, "%s%u", k ? " " : "", slot);
                k++;
            }
            if (k > 4)
                sb_buf_puts(&first, " ...");
            table_cell(&t, "%s", nodes[i].id);
            table_cell(&t, "%u", k);
            table_cell(&t, "%.*s", (int)first.len, first.p ? first.p : "");
            sb_buf_cleanup(&first);
        }
        answer_table(s, &t, cmd->json, "slots");
        return;
    }
    static const char *const cols[] = {"shard", "node", "slots", "first"};
    static const bool num[] = {true, false, true, false};
    table_t t;
    table_init(&t, 4, cols, num);
    for (unsigned i = 0; i < shards; i++) {
        uint32_t n = 0;
        sb_buf_t first;
        sb_buf_init(&first);
        for (uint32_t slot = 0; slot < slots; slot++) {
            if (sb_place_shard(slot, shards) != i)
                continue;
            if (n < 4)
                sb_buf_printf(&first, "%s%u", n ? " " : "", slot);
            n++;
        }
        if (n > 4)
            sb_buf_puts(&first, " ...");
        table_cell(&t, "%u", i);
        table_cell(&t, "%s", s->con->opts.node_id);
        table_cell(&t, "%u", n);
        table_cell(&t, "%.*s", (int)first.len, first.p ? first.p : "");
        sb_buf_cleanup(&first);
    }
    answer_table(s, &t, cmd->json, "slots");
}

/* drain node <id> | drain shard <n>: the slots handed to the other nodes (cluster = on). */
static void cmd_drain(session_t *s, const sb_line_cmd_t *cmd)
{
    bool node = cmd->argc == 3 && sb_str_eq_cstr(cmd->argv[1], "node");
    bool shard = cmd->argc == 3 && sb_str_eq_cstr(cmd->argv[1], "shard");
    long long n = 0;
    if ((!node && !shard) || (shard && sb_str_to_ll(cmd->argv[2], 0, SB_MAX_SHARDS - 1, &n) < 0) ||
        (node && cmd->argv[2].len >= 72)) {
        answer_err(s, "usage: drain node <node_id> | drain shard <n>");
        return;
    }
    if (!sb_cluster_enabled()) {
        answer_err(s, "drain needs cluster = on: a node alone has nobody to hand its slots to");
        return;
    }
    char id[72];
    snprintf(id, sizeof id, "%.*s", (int)cmd->argv[2].len, cmd->argv[2].p);
    int rc = node ? sb_cluster_drain_node(id) : sb_cluster_drain_shard((unsigned)n);
    if (rc == SB_ENOENT) {
        sb_buf_t shown;
        sb_buf_init(&shown);
        sb_line_escape(&shown, cmd->argv[2]);
        answer_err(s, "no such %s: %s", node ? "live node" : "shard", sb_buf_cstr(&shown));
        sb_buf_cleanup(&shown);
        return;
    }
    if (rc < 0) {
        answer_err(s, "drain failed: %s", sb_strerror(rc));
        return;
    }
    kv_t kv;
    kv_init(&kv);
    kv_add(&kv, "drain", false, "%s", node ? "node" : "shard");
    kv_add(&kv, "target", false, "%s", id);
    kv_add(&kv, "status", false, "started");
    kv_answer(s, &kv, cmd->json);
}

static void cmd_conns(session_t *s, const sb_line_cmd_t *cmd)
{
    static const char *const cols[] = {"shard", "http", "inbox", "console"};
    static const bool num[] = {true, true, true, true};
    if (cmd->argc != 1) {
        answer_err(s, "usage: conns");
        return;
    }
    table_t t;
    table_init(&t, 4, cols, num);
    for (unsigned i = 0; i < sb_shards_count(); i++) {
        sb_metrics_t *m = sb_metrics_shard(i);
        table_cell(&t, "%u", i);
        table_cell(&t, "%lld", (long long)sb_gauge_get(&m->http_connections));
        table_cell(&t, "%u", sb_live_clients(i));
        table_cell(&t, "%lld", (long long)sb_gauge_get(&m->console_sessions));
    }
    answer_table(s, &t, cmd->json, "conns");
}

/* ---- calls: live calls and the caps in use; hangup ------------------------------------------------------------ */

typedef struct calls_q {
    session_t *s;
    bool json;
    int64_t tenant;            /* 0: every tenant */
    int64_t fleet, in_tenant;  /* live calls in Redis (the caps' figures) */
} calls_q_t;

static void calls_listed(void *arg, int err, const char *detail, const sb_rows_t *rows)
{
    calls_q_t *q = arg;
    session_t *s = q->s;
    if (s->closing) {
        /* nothing to say to anyone */
    } else if (err) {
        answer_err(s, "database: %s", detail);
    } else {
        char json_tail[128], text_tail[160];
        int nj = snprintf(json_tail, sizeof json_tail, ",\"fleet_live\":%lld,\"fleet_max\":%d", (long long)q->fleet,
                          s->con->opts.max_concurrent_calls);
        int nt = snprintf(text_tail, sizeof text_tail, "%zu live call(s) listed; caps in use: fleet %lld of %d",
                          rows->nrows, (long long)q->fleet, s->con->opts.max_concurrent_calls);
        if (q->tenant) {
            snprintf(json_tail + nj, sizeof json_tail - (size_t)nj, ",\"tenant_live\":%lld", (long long)q->in_tenant);
            snprintf(text_tail + nt, sizeof text_tail - (size_t)nt, ", tenant %lld", (long long)q->in_tenant);
        }
        answer_rows(s, rows, q->json, "calls", json_tail, text_tail);
    }
    wait_end(s);
    free(q);
}

static void calls_counted(void *arg, int err, int64_t fleet, int64_t tenant)
{
    calls_q_t *q = arg;
    sb_shard_t *shard = sb_shard_self();
    q->fleet = err ? -1 : fleet;
    q->in_tenant = err ? -1 : tenant;
    if (q->s->closing || !shard || sb_query_calls_live(sb_domain_store(shard), q->tenant, calls_listed, q) < 0) {
        if (!q->s->closing)
            answer_err(q->s, "database not reachable");
        wait_end(q->s);
        free(q);
    }
}

static void cmd_calls(session_t *s, const sb_line_cmd_t *cmd)
{
    long long tid = 0;
    if (cmd->argc > 2 || (cmd->argc == 2 && sb_str_to_ll(cmd->argv[1], 1, INT64_MAX, &tid) < 0)) {
        answer_err(s, "usage: calls [<tenant_id>]");
        return;
    }
    sb_shard_t *shard = sb_shard_self();
    calls_q_t *q = sb_calloc(1, sizeof *q);
    *q = (calls_q_t){.s = s, .json = cmd->json, .tenant = tid};
    wait_begin(s);
    if (!shard || sb_counters_calls_read(sb_shard_redis(shard), tid ? tid : -1, calls_counted, q) < 0)
        calls_counted(q, SB_EUNAVAIL, 0, 0); /* the listing still answers, the caps' figures as -1 */
}

static void hung_up(void *arg, int status, const char *message)
{
    session_t *s = arg;
    if (!s->closing) {
        if (status == 202) {
            sb_buf_t b;
            sb_buf_init(&b);
            sb_buf_printf(&b, "OK %s\n", message);
            answer(s, &b);
            sb_buf_cleanup(&b);
        } else {
            answer_err(s, "%s", message);
        }
    }
    wait_end(s);
}

static void cmd_hangup(session_t *s, const sb_line_cmd_t *cmd)
{
    int64_t id;
    if (!one_id(s, cmd, "hangup <call_id>", &id))
        return;
    sb_shard_t *shard = sb_shard_self();
    wait_begin(s);
    if (!shard) {
        hung_up(s, 503, "no shard");
        return;
    }
    sb_voice_hangup(shard, id, hung_up, s);
}

/* ---- trace: a tenant's inbox events as they are committed ------------------------------------------------------ */

/* The event log (inbox_events) is what the live inbox streams and GET /v1/events pages through; a trace polls it
 * every TRACE_EVERY_MS after the last cursor written, on shard 0's connection: an operator's tail, a few hundred ms
 * behind at most, with no hook into the publish path. Lines go out as they come; an empty line from the operator
 * ends the trace with the empty line that ends every answer. */

static void trace_timer_closed(uv_handle_t *h)
{
    session_t *s = h->data;
    free(h);
    session_unref(s);
}

static void trace_stop(session_t *s)
{
    s->trace_tenant = 0;
    if (s->trace_timer) {
        uv_close((uv_handle_t *)s->trace_timer, trace_timer_closed);
        s->trace_timer = NULL;
    }
}

static void trace_polled(void *arg, int err, const sb_event_rec_t *ev, size_t n)
{
    session_t *s = arg;
    s->trace_polling = false;
    if (!s->closing && s->trace_tenant && err) {
        trace_stop(s);
        answer_err(s, "database: %s", sb_strerror(err));
    } else if (!s->closing && s->trace_tenant) {
        sb_buf_t b;
        sb_buf_init(&b);
        for (size_t r = 0; r < n; r++) {
            if (s->trace_json) {
                sb_buf_printf(&b, "{\"cursor\":%lld,\"type\":\"%s\",\"data\":", (long long)ev[r].cursor, ev[r].type);
                sb_buf_append_str(&b, ev[r].data);
                sb_buf_puts(&b, "}\n");
            } else {
                sb_buf_printf(&b, "%lld  %s  ", (long long)ev[r].cursor, ev[r].type);
                sb_line_escape(&b, ev[r].data);
                sb_buf_puts(&b, "\n");
            }
            s->trace_cursor = ev[r].cursor;
        }
        out(s, b.p, b.len);
        sb_buf_cleanup(&b);
    }
    session_unref(s);
}

static void on_trace_timer(uv_timer_t *t)
{
    session_t *s = t->data;
    if (s->trace_polling || !s->trace_tenant)
        return;
    sb_shard_t *shard = sb_shard_self();
    s->refs++;
    s->trace_polling = true;
    if (!shard || sb_store_events(sb_domain_store(shard), s->trace_tenant, s->trace_cursor, TRACE_PAGE, trace_polled,
                                  s) < 0) {
        s->trace_polling = false; /* the next tick tries again */
        session_unref(s);
    }
}

typedef struct trace_op {
    session_t *s;
    int64_t tenant;
} trace_op_t;

static void trace_started(void *arg, int err, bool found, int64_t cursor)
{
    trace_op_t *op = arg;
    session_t *s = op->s;
    if (s->closing) {
        /* nothing to say */
    } else if (err) {
        answer_err(s, "database: %s", sb_strerror(err));
    } else if (!found) {
        answer_err(s, "no such tenant");
    } else {
        s->trace_tenant = op->tenant;
        s->trace_cursor = cursor;
        sb_buf_t b;
        sb_buf_init(&b);
        if (s->trace_json)
            sb_buf_printf(&b, "{\"trace\":%lld,\"cursor\":%lld}\n", (long long)s->trace_tenant,
                          (long long)s->trace_cursor);
        else
            sb_buf_printf(&b, "tracing tenant %lld after cursor %lld; an empty line stops\n",
                          (long long)s->trace_tenant, (long long)s->trace_cursor);
        out(s, b.p, b.len);
        sb_buf_cleanup(&b);
        s->trace_timer = sb_malloc(sizeof *s->trace_timer);
        uv_timer_init(s->con->loop, s->trace_timer);
        s->trace_timer->data = s;
        s->refs++; /* the timer's, given back when it has closed */
        uv_timer_start(s->trace_timer, on_trace_timer, TRACE_EVERY_MS, TRACE_EVERY_MS);
    }
    wait_end(s);
    free(op);
}

static void cmd_trace(session_t *s, const sb_line_cmd_t *cmd)
{
    int64_t tenant;
    if (!one_id(s, cmd, "trace <tenant_id>", &tenant))
        return;
    sb_shard_t *shard = sb_shard_self();
    wait_begin(s);
    s->trace_json = cmd->json;
    trace_op_t *op = sb_malloc(sizeof *op);
    op->s = s;
    op->tenant = tenant;
    if (!shard || sb_store_cursor(sb_domain_store(shard), op->tenant, trace_started, op) < 0) {
        free(op);
        answer_err(s, "database not reachable");
        wait_end(s);
    }
}

static const command_t commands[] = {
    {"help", "", "this list", true, cmd_help},
    {"auth", "<admin_token>", "authenticate this session", true, cmd_auth},
    {"info", "", "version, node, uptime, shards, connections", false, cmd_info},
    {"shards", "", "per shard: actors, mailbox depth, loop lag, connections", false, cmd_shards},
    {"actors", "[<tenant_id>]", "live actors (of the tenant's shard)", false, cmd_actors},
    {"actor", "<id>", "one actor", false, cmd_actor},
    {"stats", "", "totals: requests by status, actors, messages, restarts", false, cmd_stats},
    {"tenants", "", "the newest 1000 tenants with their channel count and inbox cursor", false, cmd_tenants},
    {"channels", "<tenant_id>", "a tenant's channels (never their credentials)", false, cmd_channels},
    {"counters", "<tenant_id> [<channel_id>]", "in-flight sends and the sender's rate, live from Redis", false,
     cmd_counters},
    {"dead", "[<tenant_id>]", "outbound messages that ran out of attempts", false, cmd_dead},
    {"replay", "<message_id>", "queue a dead, failed or unknown outbound message again", false, cmd_replay},
    {"conns", "", "open connections per shard: HTTP (WebSockets included), live inbox clients, console", false,
     cmd_conns},
    {"nodes", "", "the live nodes of the cluster: address, shards, slots, heartbeat age", false, cmd_nodes},
    {"slots", "[<tenant_id>]", "slots per shard (or per node), or the node, shard and epoch of a tenant's slot", false,
     cmd_slots},
    {"drain", "node <id> | shard <n>", "hand a node's or one of this node's shards' slots to the other nodes", false,
     cmd_drain},
    {"trace", "<tenant_id>", "the tenant's events as they are committed, until an empty line", false, cmd_trace},
    {"calls", "[<tenant_id>]", "live calls (age, status) and the call caps in use", false, cmd_calls},
    {"hangup", "<call_id>", "hang a live call up (Twilio's call update, Status=completed)", false, cmd_hangup},
    {"prompt", "", "toggle the interactive sb> prompt", true, cmd_prompt},
    {"quit", "", "close this session", true, cmd_quit},
    {NULL, NULL, NULL, false, NULL},
};


static void on_line(void *arg, sb_str_t line, int err)
{
    session_t *s = arg;
    if (s->closing)
        return;
    if (err == SB_E2BIG) {
        if (!s->trace_tenant) /* (an answer now would end a trace's stream for its reader) */
            answer_err(s, "line too long (at most %d bytes)", SB_LINE_MAX);
        return;
    }
    sb_line_cmd_t cmd;
    int rc = sb_line_parse(line, &cmd);
    if (s->trace_tenant) { /* a trace runs: an empty line ends it, quit quits, the rest is not run */
        if (rc == SB_EINVAL) {
            trace_stop(s);
            answer_empty(s);
        } else if (rc >= 0 && sb_str_eq_cstr(cmd.argv[0], "quit")) {
            cmd_quit(s, &cmd);
        }
        return;
    }
    if (rc == SB_EINVAL) {
        answer_err(s, "empty command; try help");
        return;
    }
    if (rc == SB_EPARSE) {
        answer_err(s, "binary input is not accepted");
        return;
    }
    if (rc < 0) {
        answer_err(s, "too many arguments (at most %d)", SB_LINE_MAX_ARGS);
        return;
    }
    sb_metric_add(&s->con->m->console_commands, 1);
    for (const command_t *c = commands; c->name; c++) {
        if (!sb_str_eq_cstr(cmd.argv[0], c->name))
            continue;
        if (!c->open && !s->authed) {
            answer_err(s, "auth required");
            return;
        }
        c->fn(s, &cmd);
        return;
    }
    /* The name is printable (the parser rejected control bytes) but bound its length in the answer. */
    int n = cmd.argv[0].len > 64 ? 64 : (int)cmd.argv[0].len;
    answer_err(s, "unknown command '%.*s'; try help", n, cmd.argv[0].p);
}

/* ---- sessions ------------------------------------------------------------------------------------------------- */

static void console_maybe_free(sb_console_t *con)
{
    if (con->closing && con->open_handles == 0) {
        free((char *)con->opts.host);
        free((char *)con->opts.admin_token);
        free((char *)con->opts.node_id);
        free(con);
    }
}

static void session_unref(session_t *s)
{
    if (--s->refs == 0) {
        sb_console_t *con = s->con;
        sb_buf_cleanup(&s->in);
        sb_line_reader_cleanup(&s->lr);
        free(s);
        con->open_handles--;
        console_maybe_free(con);
    }
}

static void session_closed(uv_handle_t *h)
{
    session_unref(h->data);
}

static void session_close(session_t *s)
{
    if (s->closing)
        return;
    s->closing = true;
    trace_stop(s);
    hold_stop(s);
    sb_console_t *con = s->con;
    if (s->prev)
        s->prev->next = s->next;
    else
        con->sessions = s->next;
    if (s->next)
        s->next->prev = s->prev;
    con->nsessions--;
    con->nauthed -= s->authed;
    sb_gauge_add(&con->m->console_sessions, -1);
    uv_close((uv_handle_t *)&s->tcp, session_closed);
}

static void after_shutdown(uv_shutdown_t *req, int status)
{
    session_t *s = req->data;
    (void)status;
    session_close(s);
    session_unref(s);
}

/* Ends a session once what it was answered is written (quit, a refusal): nothing more is read or run, the write
 * side is shut down after the last answer, then the connection closes. A peer that does not read its last answers
 * is cut off END_MS later by the sweep. */
static void session_end(session_t *s)
{
    if (s->closing || s->ending)
        return;
    s->ending = true;
    s->ending_ms = uv_now(s->con->loop);
    if (s->reading)
        uv_read_stop((uv_stream_t *)&s->tcp);
    s->reading = false;
    s->shutdown.data = s;
    s->refs++; /* the shutdown request's */
    if (uv_shutdown(&s->shutdown, (uv_stream_t *)&s->tcp, after_shutdown) < 0) {
        session_close(s);
        session_unref(s);
    }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    session_t *s = h->data;
    (void)suggested;
    *buf = uv_buf_init(s->con->rbuf, sizeof s->con->rbuf);
}

static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf);

/* Runs the received lines one at a time, in order, while no command waits and the peer keeps up with the answers
 * (unwritten output under OUTPUT_HIGH); reads while there is room for more. Once the peer has shut its side (EOF)
 * and every line received has run and been answered, the session ends as on quit: shut down after the last answer. */
static void pump(session_t *s)
{
    if (s->pumping)
        return; /* a command answered from inside the loop below: the loop goes on by itself */
    s->pumping = true;
    size_t off = 0;
    while (!s->closing && !s->ending && !s->busy && !s->held && off < s->in.len) {
        if (s->pending > OUTPUT_HIGH) {
            s->held = true; /* on_written runs the rest once the peer has read most of it */
            break;
        }
        const char *nl = memchr(s->in.p + off, '\n', s->in.len - off);
        size_t n = nl ? (size_t)(nl - (s->in.p + off)) + 1 : s->in.len - off;
        sb_line_feed(&s->lr, s->in.p + off, n, on_line, s);
        off += n;
    }
    if (off) {
        memmove(s->in.p, s->in.p + off, s->in.len - off);
        s->in.len -= off;
    }
    if (!s->in.len) /* an idle session holds no input buffer */
        sb_buf_cleanup(&s->in);
    s->pumping = false;
    if (s->eof && !s->closing && !s->ending && !s->busy && !s->in.len) {
        if (s->trace_tenant) { /* no empty line can come to end it now: the end of input does */
            trace_stop(s);
            answer_empty(s);
        }
        session_end(s);
        return;
    }
    bool want = !s->closing && !s->ending && !s->eof && s->in.len < MAX_QUEUED_INPUT;
    if (want != s->reading) {
        if (want)
            uv_read_start((uv_stream_t *)&s->tcp, on_alloc, on_read);
        else
            uv_read_stop((uv_stream_t *)&s->tcp);
        s->reading = want;
    }
}

static void wait_begin(session_t *s)
{
    s->busy = true;
    s->refs++;
}

/* The command that waited has answered: the lines after it may run. */
static void wait_end(session_t *s)
{
    s->busy = false;
    if (!s->closing)
        pump(s);
    session_unref(s);
}

/* Bytes are queued for pump. EOF (the peer shut its side, as `nc -N` or a script's shutdown(SHUT_WR) does after its
 * last command) ends the input, not the session: the lines received still run and are answered, a last one without
 * a newline too, and then the session ends as on quit. Any other read error closes the session at once. */
static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
    session_t *s = st->data;
    if (n == UV_EOF && !s->ending) {
        s->eof = true;
        if (s->partial) /* ends the unterminated last line, so that it runs */
            sb_buf_append(&s->in, "\n", 1);
        pump(s);
        return;
    }
    if (n < 0) {
        session_close(s);
        return;
    }
    if (n == 0 || s->ending)
        return;
    sb_buf_append(&s->in, buf->base, (size_t)n);
    s->partial = buf->base[n - 1] != '\n';
    pump(s);
}

/* The oldest session still to authenticate (the list is newest first), or NULL. */
static session_t *oldest_unauthed(sb_console_t *con)
{
    session_t *found = NULL;
    for (session_t *s = con->sessions; s; s = s->next)
        if (!s->authed && !s->closing && !s->ending)
            found = s;
    return found;
}

static void on_connection(uv_stream_t *server, int status)
{
    sb_console_t *con = server->data;
    if (status < 0 || con->closing)
        return;
    session_t *s = sb_calloc(1, sizeof *s);
    s->con = con;
    s->refs = 1;
    s->opened_ms = uv_now(con->loop);
    sb_line_reader_init(&s->lr);
    sb_buf_init(&s->in);
    uv_tcp_init(con->loop, &s->tcp);
    s->tcp.data = s;
    con->open_handles++;
    if (!sb_accept_guarded(&con->accept, server, (uv_stream_t *)&s->tcp)) {
        s->closing = true;
        uv_close((uv_handle_t *)&s->tcp, session_closed);
        return;
    }
    struct sockaddr_storage ss;
    int sl = sizeof ss;
    memset(&ss, 0, sizeof ss);
    uv_tcp_getpeername(&s->tcp, (struct sockaddr *)&ss, &sl);
    sb_guard_addr_from(&s->addr, (const struct sockaddr *)&ss);
    /* Sessions still to authenticate are capped apart from the authenticated ones, and the oldest of them makes
     * room for a newcomer: whoever holds connections open without a word cannot lock an operator out. */
    if (con->nsessions - con->nauthed >= MAX_UNAUTHED) {
        session_t *old = oldest_unauthed(con);
        if (old) {
            answer_err(old, "closed to make room: too many sessions waiting to authenticate");
            session_end(old);
        }
    }
    s->next = con->sessions;
    if (con->sessions)
        con->sessions->prev = s;
    con->sessions = s;
    con->nsessions++;
    sb_gauge_add(&con->m->console_sessions, 1);
    char banner[256];
    int n = snprintf(banner, sizeof banner, "switchboard %s admin console on node %s; type help\n", SB_VERSION,
                     con->opts.node_id);
    out(s, banner, (size_t)n);
    pump(s); /* starts reading */
}

/* Every SWEEP_MS: sessions that did not authenticate within auth_timeout_s are told so and ended; sessions that
 * take more than END_MS to end (their peer does not read) are closed. */
static void on_sweep(uv_timer_t *t)
{
    sb_console_t *con = t->data;
    uint64_t now = uv_now(con->loop), limit = (uint64_t)con->opts.auth_timeout_s * 1000;
    for (session_t *s = con->sessions, *next; s; s = next) {
        next = s->next;
        if (s->ending && now - s->ending_ms >= END_MS) {
            session_close(s);
        } else if (!s->authed && !s->ending && now - s->opened_ms >= limit) {
            answer_err(s, "no auth within %d s; closing", con->opts.auth_timeout_s);
            session_end(s);
        }
    }
}

/* ---- life cycle ----------------------------------------------------------------------------------------------- */

static void handle_closed(uv_handle_t *h)
{
    sb_console_t *con = h->data;
    con->open_handles--;
    console_maybe_free(con);
}

int sb_console_open(uv_loop_t *loop, const sb_console_opts_t *opts, sb_console_t **out_con)
{
    struct sockaddr_storage addr;
    int rc = strchr(opts->host, ':') ? uv_ip6_addr(opts->host, opts->port, (struct sockaddr_in6 *)&addr)
                                     : uv_ip4_addr(opts->host, opts->port, (struct sockaddr_in *)&addr);
    if (rc < 0) {
        sb_log_error("console: bad address %s:%d: %s", opts->host, opts->port, uv_strerror(rc));
        return rc;
    }
    sb_console_t *con = sb_calloc(1, sizeof *con);
    con->loop = loop;
    con->opts = *opts;
    con->opts.host = sb_strdup(opts->host);
    con->opts.admin_token = opts->admin_token ? sb_strdup(opts->admin_token) : NULL;
    con->opts.node_id = sb_strdup(opts->node_id);
    con->started_ms = uv_now(loop);
    con->m = sb_metrics_shard(opts->shard);
    sb_accept_guard_init(&con->accept, "console", &con->m->connections_refused);
    uv_tcp_init(loop, &con->listener);
    con->listener.data = con;
    uv_timer_init(loop, &con->sweep);
    con->sweep.data = con;
    con->open_handles = 2;
    if ((rc = uv_tcp_bind(&con->listener, (struct sockaddr *)&addr, 0)) < 0 ||
        (rc = uv_listen((uv_stream_t *)&con->listener, 128, on_connection)) < 0) {
        sb_log_error("console: cannot listen on %s:%d: %s", opts->host, opts->port, uv_strerror(rc));
        con->closing = true;
        uv_close((uv_handle_t *)&con->listener, handle_closed);
        uv_close((uv_handle_t *)&con->sweep, handle_closed);
        return rc;
    }
    uv_timer_start(&con->sweep, on_sweep, SWEEP_MS, SWEEP_MS);
    sb_log_info("console listening on %s:%d", opts->host, opts->port);
    *out_con = con;
    return 0;
}

void sb_console_close(sb_console_t *con)
{
    if (!con || con->closing)
        return;
    con->closing = true;
    while (con->sessions)
        session_close(con->sessions);
    uv_close((uv_handle_t *)&con->listener, handle_closed);
    uv_close((uv_handle_t *)&con->sweep, handle_closed);
}

unsigned sb_console_sessions(const sb_console_t *con)
{
    return con ? con->nsessions : 0;
}
