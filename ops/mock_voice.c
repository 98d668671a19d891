/* The mock provider's voice: Twilio's Calls API, simulated incoming calls with their Media Streams, and an echo voice
 * app — test tooling for the gateway's voice path and its benchmark (endpoints: ops/mock_provider.c's header).
 *
 * A call is a small state machine driven by three things: HTTP answers (the TwiML fetch, the status callbacks, one
 * request at a time per call, in order), its Media Stream (an sb_wsclient as Twilio's side) and one shared tick
 * (5 ms, finer than a frame, so calls started at different times send at different times) for everything timed:
 * every live stream's next media frames, a call's next step (ringing, a Dial's end, the spread of a batch's starts). No per-call timer, no per-frame allocation: a frame is written into one scratch
 * buffer from a precomputed tone (a µ-law 440 Hz sine, 50 distinct frames) whose first 8 bytes are replaced by the
 * frame number and the call's tag, so each echo that comes back names the frame it echoes: the relay delay (from
 * sending frame k to receiving its echo), order, duplicates, losses and crossed calls are measured exactly.
 *
 * Calls are freed on reset only, and then only once nothing of theirs is in flight (a reference count: the
 * table, the stream, the HTTP request).
 *
 * The echo app (GET /_mock/voice-app, a WebSocket over the mock's own HTTP server through adapters/net/wsconn):
 * echoes media and answers marks in the app's form, optionally delaying, stalling or refusing, and records what
 * each connection saw. */
#include "ops/mock_voice.h"

#include "adapters/net/wsclient.h"
#include "adapters/net/wsconn.h"
#include "gateway/log.h"
#include "proto/codec.h"
#include "proto/err.h"
#include "proto/form.h"
#include "proto/list.h"
#include "proto/mem.h"
#include "proto/mstream.h"
#include "proto/sig.h"
#include "proto/str.h"
#include "proto/twiml.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TWILIO_PREFIX "/2010-04-01/Accounts/"
#define FRAME_MS 20
#define TICK_MS 5 /* finer than a frame: the calls started at different times send at different times */
#define FRAME_BYTES 160
#define FRAME_B64 216          /* base64 of 160 bytes */
#define TONE_FRAMES 50         /* 440 Hz at 8 kHz repeats every second: 50 frames */
#define SENT_RING 512          /* frames whose send time is kept: an echo 10 s late is "late" */
#define MAX_PARAMS 16
#define MAX_CB 12              /* status callbacks recorded per call */
#define MAX_MARKS 32           /* mark names recorded per call or app session */
#define TWIML_KEEP 8192
#define MAX_BURST 5            /* frames one tick may send to catch up */
#define OUTBOUND_FRAMES 180000 /* an API call's stream: an hour, unless ended first */
#define MAX_SESSIONS 10000     /* echo app sessions kept */

enum { EV_INITIATED = 1, EV_RINGING = 2, EV_ANSWERED = 4, EV_COMPLETED = 8 };
enum twiml_kind { TW_NONE, TW_STREAM, TW_DIAL, TW_SAY, TW_REJECT, TW_HANGUP, TW_OTHER, TW_INVALID };
static const char *const twiml_kind_name[] = {"none", "stream", "dial", "say", "reject", "hangup", "other",
                                              "invalid"};
enum ws_state { WS_NONE, WS_CONNECTING, WS_OPEN, WS_CLOSED };
static const char *const ws_state_name[] = {"none", "connecting", "open", "closed"};
/* what the tick does next for a call */
enum step { ST_IDLE, ST_START, ST_RING, ST_ANSWER, ST_HANGUP, ST_STREAM };

typedef struct twiml {
    enum twiml_kind kind;
    char *stream_url, *dial, *say;
    char reason[16];
    char *pname[MAX_PARAMS], *pvalue[MAX_PARAMS];
    size_t nparams;
    char error[96];
} twiml_t;

typedef struct cb_rec {
    char status[16];
    int http_status, err;
    uint64_t t_us;
} cb_rec_t;

typedef struct call {
    sb_list_t tick_link; /* on `ticking` while the tick has something to do for it */
    int refs;            /* the table, a stream not yet closed, an HTTP request in flight */
    bool forgotten;      /* reset: no more callbacks, freed when refs reach 0 */
    bool inbound;
    uint32_t tag;        /* in every frame's payload: bytes 4..7 */
    char sid[35], stream_sid[35];
    char *account, *from, *to, *token, *url, *twiml_inline, *status_url, *method;
    char *redirect;      /* TwiML a call update redirected the call to (its stream stopped), or NULL */
    const char *status;  /* queued, ringing, in-progress, completed, busy, failed, no-answer, canceled */
    unsigned events;
    uint64_t created_us, answered_us, ended_us;
    enum step step;
    uint64_t step_at_us;
    /* the TwiML answer */
    int twiml_status, twiml_err;
    sb_buf_t twiml_body;
    twiml_t tw;
    /* the stream */
    sb_wsclient_t *ws;
    enum ws_state ws_state;
    int ws_err, ws_http;
    uint16_t close_code;
    const char *closed_by;   /* "mock", "peer", NULL */
    bool bad_signature, mark, hangup_caller, stop_sent, ending;
    const char *end_status;  /* the final status posted once the stream closed */
    char dtmf[33];
    uint32_t frames_total, linger_ms;
    int64_t seq;
    uint64_t stream_t0_us, last_frame_us;
    uint32_t frames_sent, frames_recv, dup, ooo, foreign, late, wrong_sid, parse_errors, clears, other_recv;
    uint32_t marks_sent, dtmf_sent, last_recv_frame;
    uint64_t dropped;
    uint64_t *sent_at;       /* SENT_RING send times by frame number, 0 once echoed */
    uint32_t *delays;        /* µs, one per echo */
    size_t ndelays, cap_delays;
    char *marks_recv[MAX_MARKS];
    uint32_t nmarks_recv;
    char last_error[96];
    /* status callbacks: posted one at a time, in order */
    char cbq[8][16];
    int cbq_head, cbq_len, cb_seq;
    bool cb_in_flight, fetch_in_flight;
    cb_rec_t cbs[MAX_CB];
    int ncbs;
} call_t;

static uv_loop_t *loop;
static sb_http_client_t *client;
static sb_wsclient_ctx_t *wsctx;
static uv_timer_t tick;
static bool tick_running, stopping;
static sb_list_t ticking;
static call_t **calls;
static size_t ncalls, cap_calls;
static uint32_t next_tag = 1;
static sb_buf_t vout, frame_buf, scratch;
static char tone_b64[TONE_FRAMES][FRAME_B64];
static uint8_t tone_raw[TONE_FRAMES][FRAME_BYTES];
static struct {
    uint64_t posted, ok, failed;
} cb_stats;

static void call_unref(call_t *c);
static void call_end(call_t *c, const char *status);
static void stream_open(call_t *c);

/* ---- small helpers -------------------------------------------------------------------------------------------- */

static char *dup_str(sb_str_t s)
{
    return sb_strndup(s.p ? s.p : "", s.len);
}

static void set_error(char *dst, size_t cap, const char *what, int err)
{
    snprintf(dst, cap, "%s: %s", what, sb_strerror(err));
}

/* G.711 µ-law of one 16-bit sample. */
static uint8_t ulaw(int pcm)
{
    int sign = pcm < 0 ? 0x80 : 0;
    if (pcm < 0)
        pcm = -pcm;
    if (pcm > 32635)
        pcm = 32635;
    pcm += 0x84;
    int exponent = 7;
    for (int mask = 0x4000; !(pcm & mask) && exponent > 0; mask >>= 1)
        exponent--;
    int mantissa = (pcm >> (exponent + 3)) & 0x0F;
    return (uint8_t)~(sign | (exponent << 4) | mantissa);
}

static void tone_init(void)
{
    for (int f = 0; f < TONE_FRAMES; f++) {
        for (int i = 0; i < FRAME_BYTES; i++) {
            double t = (double)(f * FRAME_BYTES + i) / 8000.0;
            tone_raw[f][i] = ulaw((int)(8000.0 * sin(2.0 * M_PI * 440.0 * t)));
        }
        sb_codec_b64_encode(tone_b64[f], tone_raw[f], FRAME_BYTES, SB_B64_STD);
    }
}

/* The base64 payload of frame n (1-based) of the call tagged tag into dst (FRAME_B64 characters): the tone with
 * bytes 0..3 = n and 4..7 = tag, big-endian. */
static void frame_payload(char dst[FRAME_B64], uint32_t n, uint32_t tag)
{
    int f = (int)((n - 1) % TONE_FRAMES);
    uint8_t head[9] = {(uint8_t)(n >> 24), (uint8_t)(n >> 16), (uint8_t)(n >> 8), (uint8_t)n,
                       (uint8_t)(tag >> 24), (uint8_t)(tag >> 16), (uint8_t)(tag >> 8), (uint8_t)tag,
                       tone_raw[f][8]};
    memcpy(dst, tone_b64[f], FRAME_B64);
    sb_codec_b64_encode(dst, head, sizeof head, SB_B64_STD); /* 9 bytes: exactly the first 12 characters */
}

/* Reads frame number and tag back from a payload; false when it is not one of ours. */
static bool frame_ident(sb_str_t payload, uint32_t *n, uint32_t *tag)
{
    uint8_t head[9];
    size_t len = 0;
    if (payload.len != FRAME_B64 || sb_codec_b64_decode(sb_str(payload.p, 12), SB_B64_STD, head, sizeof head,
                                                        &len) < 0 || len != 9)
        return false;
    *n = (uint32_t)head[0] << 24 | (uint32_t)head[1] << 16 | (uint32_t)head[2] << 8 | head[3];
    *tag = (uint32_t)head[4] << 24 | (uint32_t)head[5] << 16 | (uint32_t)head[6] << 8 | head[7];
    return true;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* {"count":N,"p50":..,"p99":..,"max":..} of v (sorted in place); nulls when empty. */
static void delay_json(sb_buf_t *b, uint32_t *v, size_t n)
{
    if (!n) {
        sb_buf_puts(b, "{\"count\":0,\"p50\":null,\"p99\":null,\"max\":null}");
        return;
    }
    qsort(v, n, sizeof *v, cmp_u32);
    sb_buf_printf(b, "{\"count\":%zu,\"p50\":%u,\"p99\":%u,\"max\":%u}", n, v[(n - 1) / 2], v[(n * 99 + 99) / 100 - 1],
                  v[n - 1]);
}

/* Builds a form body of the n params. */
static void form_body(sb_buf_t *b, const sb_sig_param_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (i)
            sb_buf_puts(b, "&");
        mock_form_escape(b, p[i].name);
        sb_buf_puts(b, "=");
        mock_form_escape(b, p[i].value);
    }
}

/* ---- TwiML: the few shapes the gateway answers --------------------------------------------------------------- */

static void twiml_clear(twiml_t *t)
{
    free(t->stream_url);
    free(t->dial);
    free(t->say);
    for (size_t i = 0; i < t->nparams; i++) {
        free(t->pname[i]);
        free(t->pvalue[i]);
    }
    memset(t, 0, sizeof *t);
}

static void utf8_put(sb_buf_t *b, unsigned long cp)
{
    char u[4];
    size_t n;
    if (cp < 0x80) {
        u[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        u[0] = (char)(0xC0 | (cp >> 6));
        u[1] = (char)(0x80 | (cp & 0x3F));
        n = 2;
    } else if (cp < 0x10000) {
        u[0] = (char)(0xE0 | (cp >> 12));
        u[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        u[2] = (char)(0x80 | (cp & 0x3F));
        n = 3;
    } else {
        u[0] = (char)(0xF0 | (cp >> 18));
        u[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        u[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
        u[3] = (char)(0x80 | (cp & 0x3F));
        n = 4;
    }
    sb_buf_append(b, u, n);
}

/* Appends s with XML's entities decoded; false on an unknown or broken one. */
static bool xml_decode(sb_buf_t *b, sb_str_t s)
{
    static const struct {
        const char *name;
        char ch;
    } ents[] = {{"amp", '&'}, {"lt", '<'}, {"gt", '>'}, {"quot", '"'}, {"apos", '\''}};
    for (size_t i = 0; i < s.len; i++) {
        if (s.p[i] != '&') {
            sb_buf_append(b, &s.p[i], 1);
            continue;
        }
        const char *semi = memchr(s.p + i, ';', s.len - i);
        if (!semi)
            return false;
        sb_str_t e = sb_str(s.p + i + 1, (size_t)(semi - s.p) - i - 1);
        bool ok = false;
        if (e.len >= 2 && e.p[0] == '#') {
            char num[12];
            bool hex = e.p[1] == 'x';
            size_t off = hex ? 2 : 1;
            if (e.len - off > 0 && e.len - off < sizeof num) {
                memcpy(num, e.p + off, e.len - off);
                num[e.len - off] = '\0';
                char *end;
                unsigned long cp = strtoul(num, &end, hex ? 16 : 10);
                if (*end == '\0' && cp > 0 && cp <= 0x10FFFF) {
                    utf8_put(b, cp);
                    ok = true;
                }
            }
        } else {
            for (size_t k = 0; k < sizeof ents / sizeof ents[0] && !ok; k++)
                if (sb_str_eq_cstr(e, ents[k].name)) {
                    sb_buf_append(b, &ents[k].ch, 1);
                    ok = true;
                }
        }
        if (!ok)
            return false;
        i = (size_t)(semi - s.p);
    }
    return true;
}

static char *xml_dup(sb_str_t s)
{
    sb_buf_t b;
    sb_buf_init(&b);
    if (!xml_decode(&b, s)) {
        sb_buf_cleanup(&b);
        return NULL;
    }
    char *r = sb_strdup(sb_buf_cstr(&b));
    sb_buf_cleanup(&b);
    return r;
}

static bool is_name_char(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '_' ||
           ch == ':' || ch == '-' || ch == '.';
}

/* The value of attribute name in a tag's attribute text, or false. */
static bool xml_attr(sb_str_t attrs, const char *name, sb_str_t *val)
{
    size_t i = 0;
    while (i < attrs.len) {
        while (i < attrs.len && !is_name_char(attrs.p[i]))
            i++;
        size_t ns = i;
        while (i < attrs.len && is_name_char(attrs.p[i]))
            i++;
        sb_str_t an = sb_str(attrs.p + ns, i - ns);
        while (i < attrs.len && (attrs.p[i] == ' ' || attrs.p[i] == '\t' || attrs.p[i] == '\n' || attrs.p[i] == '\r'))
            i++;
        if (i >= attrs.len || attrs.p[i] != '=')
            continue;
        i++;
        while (i < attrs.len && (attrs.p[i] == ' ' || attrs.p[i] == '\t' || attrs.p[i] == '\n' || attrs.p[i] == '\r'))
            i++;
        if (i >= attrs.len || (attrs.p[i] != '"' && attrs.p[i] != '\''))
            return false;
        char q = attrs.p[i++];
        const char *end = memchr(attrs.p + i, q, attrs.len - i);
        if (!end)
            return false;
        if (sb_str_eq_cstr(an, name)) {
            *val = sb_str(attrs.p + i, (size_t)(end - attrs.p) - i);
            return true;
        }
        i = (size_t)(end - attrs.p) + 1;
    }
    return false;
}

/* Extracts from a TwiML document what the mock acts on: the first verb of <Response> (Connect/Start with a Stream:
 * its url and Parameters; Dial: its number; Say: its text; Reject: its reason; Hangup), tolerant of everything else
 * but unbalanced tags, a root other than Response and broken entities (TW_INVALID with a reason). */
static void twiml_extract(sb_str_t doc, twiml_t *t)
{
    char stack[32][24];
    int depth = 0;
    bool in_stream = false, root = false;
    sb_buf_t text;
    sb_buf_init(&text);
    int text_for = 0; /* 1: Dial, 2: Say */
    size_t i = 0;
    memset(t, 0, sizeof *t);
    while (i < doc.len) {
        const char *lt = memchr(doc.p + i, '<', doc.len - i);
        size_t upto = lt ? (size_t)(lt - doc.p) : doc.len;
        if (text_for && depth > 0 && !xml_decode(&text, sb_str(doc.p + i, upto - i))) {
            snprintf(t->error, sizeof t->error, "bad entity at byte %zu", i);
            goto invalid;
        }
        if (!lt)
            break;
        i = upto;
        sb_str_t rest = sb_str(doc.p + i, doc.len - i);
        const char *close_seq = NULL;
        if (sb_str_has_prefix(rest, SB_STR("<?")))
            close_seq = "?>";
        else if (sb_str_has_prefix(rest, SB_STR("<!--")))
            close_seq = "-->";
        if (close_seq) {
            const char *e = memmem(rest.p, rest.len, close_seq, strlen(close_seq));
            if (!e) {
                snprintf(t->error, sizeof t->error, "unterminated %s at byte %zu", close_seq, i);
                goto invalid;
            }
            i = (size_t)(e - doc.p) + strlen(close_seq);
            continue;
        }
        if (sb_str_has_prefix(rest, SB_STR("<![CDATA["))) {
            const char *e = memmem(rest.p, rest.len, "]]>", 3);
            if (!e) {
                snprintf(t->error, sizeof t->error, "unterminated CDATA at byte %zu", i);
                goto invalid;
            }
            if (text_for)
                sb_buf_append(&text, rest.p + 9, (size_t)(e - rest.p) - 9);
            i = (size_t)(e - doc.p) + 3;
            continue;
        }
        const char *gt = memchr(rest.p, '>', rest.len);
        if (!gt) {
            snprintf(t->error, sizeof t->error, "unterminated tag at byte %zu", i);
            goto invalid;
        }
        sb_str_t tag = sb_str(rest.p + 1, (size_t)(gt - rest.p) - 1);
        i = (size_t)(gt - doc.p) + 1;
        bool closing = tag.len && tag.p[0] == '/';
        bool selfclose = tag.len && tag.p[tag.len - 1] == '/';
        if (closing) {
            tag = sb_str(tag.p + 1, tag.len - 1);
        } else if (selfclose) {
            tag.len--;
        }
        size_t nl = 0;
        while (nl < tag.len && is_name_char(tag.p[nl]))
            nl++;
        sb_str_t name = sb_str(tag.p, nl), attrs = sb_str(tag.p + nl, tag.len - nl);
        if (!nl || nl >= sizeof stack[0]) {
            snprintf(t->error, sizeof t->error, "bad tag at byte %zu", (size_t)(tag.p - doc.p) - 1);
            goto invalid;
        }
        if (closing) {
            if (!depth || !sb_str_eq_cstr(name, stack[depth - 1])) {
                snprintf(t->error, sizeof t->error, "unbalanced </%.*s>", (int)(nl > 24 ? 24 : nl), name.p);
                goto invalid;
            }
            depth--;
            if (sb_str_eq_cstr(name, "Stream"))
                in_stream = false;
            if ((text_for == 1 && sb_str_eq_cstr(name, "Dial")) || (text_for == 2 && sb_str_eq_cstr(name, "Say"))) {
                char **dst = text_for == 1 ? &t->dial : &t->say;
                *dst = sb_strdup(sb_buf_cstr(&text));
                text_for = 0;
            }
            continue;
        }
        if (depth == 0 && !sb_str_eq_cstr(name, "Response")) {
            snprintf(t->error, sizeof t->error, "root is <%.*s>, not <Response>", (int)(nl > 24 ? 24 : nl), name.p);
            goto invalid;
        }
        root = true;
        if (depth == 1 && t->kind == TW_NONE) {
            if (sb_str_eq_cstr(name, "Connect") || sb_str_eq_cstr(name, "Start"))
                t->kind = TW_STREAM; /* confirmed by a Stream below */
            else if (sb_str_eq_cstr(name, "Dial"))
                t->kind = TW_DIAL;
            else if (sb_str_eq_cstr(name, "Say"))
                t->kind = TW_SAY;
            else if (sb_str_eq_cstr(name, "Reject"))
                t->kind = TW_REJECT;
            else if (sb_str_eq_cstr(name, "Hangup"))
                t->kind = TW_HANGUP;
            else
                t->kind = TW_OTHER;
            if (t->kind == TW_DIAL || t->kind == TW_SAY) {
                text.len = 0;
                text_for = t->kind == TW_DIAL ? 1 : 2;
            }
        }
        sb_str_t v;
        if (sb_str_eq_cstr(name, "Stream") && !t->stream_url && xml_attr(attrs, "url", &v)) {
            t->stream_url = xml_dup(v);
            in_stream = true;
        } else if (sb_str_eq_cstr(name, "Parameter") && in_stream && t->nparams < MAX_PARAMS) {
            sb_str_t pn = SB_STR(""), pv = SB_STR("");
            xml_attr(attrs, "name", &pn);
            xml_attr(attrs, "value", &pv);
            char *a = xml_dup(pn), *b = xml_dup(pv);
            if (!a || !b) {
                free(a);
                free(b);
                snprintf(t->error, sizeof t->error, "bad entity in a Parameter");
                goto invalid;
            }
            t->pname[t->nparams] = a;
            t->pvalue[t->nparams++] = b;
        } else if (sb_str_eq_cstr(name, "Reject") && depth == 1) {
            snprintf(t->reason, sizeof t->reason, "rejected");
            if (xml_attr(attrs, "reason", &v) && v.len < sizeof t->reason)
                snprintf(t->reason, sizeof t->reason, "%.*s", (int)v.len, v.p);
        }
        if (!selfclose) {
            if (depth == 32) {
                snprintf(t->error, sizeof t->error, "nested deeper than 32");
                goto invalid;
            }
            memcpy(stack[depth], name.p, nl);
            stack[depth++][nl] = '\0';
            if (sb_str_eq_cstr(name, "Stream"))
                in_stream = t->stream_url != NULL;
        } else if (sb_str_eq_cstr(name, "Stream")) {
            in_stream = false;
        }
    }
    if (depth) {
        snprintf(t->error, sizeof t->error, "<%s> not closed", stack[depth - 1]);
        goto invalid;
    }
    if (t->kind == TW_STREAM && !t->stream_url)
        t->kind = TW_OTHER;
    if (t->kind == TW_NONE && root)
        t->kind = TW_HANGUP; /* <Response/>: nothing to do, the call ends */
    else if (t->kind == TW_NONE)
        snprintf(t->error, sizeof t->error, "no <Response>");
    sb_buf_cleanup(&text);
    if (t->kind == TW_NONE)
        t->kind = TW_INVALID;
    return;
invalid:
    sb_buf_cleanup(&text);
    {
        char err[96];
        memcpy(err, t->error, sizeof err);
        twiml_clear(t);
        memcpy(t->error, err, sizeof err);
    }
    t->kind = TW_INVALID;
}

/* ---- calls: table, references, the tick ---------------------------------------------------------------------- */

static void call_free(call_t *c)
{
    free(c->account);
    free(c->from);
    free(c->to);
    if (c->token) {
        memset(c->token, 0, strlen(c->token));
        free(c->token);
    }
    free(c->url);
    free(c->twiml_inline);
    free(c->redirect);
    free(c->status_url);
    free(c->method);
    sb_buf_cleanup(&c->twiml_body);
    twiml_clear(&c->tw);
    free(c->sent_at);
    free(c->delays);
    for (uint32_t i = 0; i < c->nmarks_recv && i < MAX_MARKS; i++)
        free(c->marks_recv[i]);
    free(c);
}

static void call_unref(call_t *c)
{
    SB_BUG_ON(c->refs <= 0);
    if (--c->refs == 0) {
        sb_list_remove(&c->tick_link);
        call_free(c);
    }
}

static void tick_fire(uv_timer_t *t);

/* Asks the tick to run c's step at `at` (µs, monotonic). */
static void call_schedule(call_t *c, enum step s, uint64_t at)
{
    c->step = s;
    c->step_at_us = at;
    if (!sb_list_linked(&c->tick_link))
        sb_list_push_back(&ticking, &c->tick_link);
    if (!tick_running && !stopping) {
        tick_running = true;
        uv_timer_start(&tick, tick_fire, TICK_MS, TICK_MS);
    }
}

static void call_unschedule(call_t *c)
{
    c->step = ST_IDLE;
    sb_list_remove(&c->tick_link);
}

static call_t *call_new(bool inbound)
{
    call_t *c = sb_calloc(1, sizeof *c);
    sb_list_init(&c->tick_link);
    c->refs = 1;
    c->inbound = inbound;
    c->tag = next_tag++;
    memcpy(c->sid, "CA", 2);
    mock_random_hex(c->sid + 2, 32);
    c->created_us = mock_now_us();
    c->twiml_status = -1;
    sb_buf_init(&c->twiml_body);
    if (ncalls == cap_calls) {
        cap_calls = cap_calls ? cap_calls * 2 : 64;
        calls = sb_realloc(calls, cap_calls * sizeof *calls);
    }
    calls[ncalls++] = c;
    return c;
}

static call_t *call_find(sb_str_t sid)
{
    for (size_t i = 0; i < ncalls; i++)
        if (sb_str_eq_cstr(sid, calls[i]->sid))
            return calls[i];
    return NULL;
}

static bool is_final(const char *status)
{
    return strcmp(status, "completed") == 0 || strcmp(status, "busy") == 0 || strcmp(status, "failed") == 0 ||
           strcmp(status, "no-answer") == 0 || strcmp(status, "canceled") == 0;
}

/* ---- status callbacks ---------------------------------------------------------------------------------------- */

static void cb_next(call_t *c);

static void cb_done(void *arg, const sb_http_client_res_t *res)
{
    call_t *c = arg;
    c->cb_in_flight = false;
    cb_rec_t *r = &c->cbs[c->ncbs - 1];
    r->err = res->err;
    r->http_status = res->status;
    if (res->err == 0 && res->status >= 200 && res->status < 300) {
        cb_stats.ok++;
    } else {
        cb_stats.failed++;
        if (res->err != SB_ECANCELED)
            sb_log_warn("call %s: status callback %s: %s (HTTP %d)", c->sid, r->status,
                        res->err ? sb_strerror(res->err) : "refused", res->status);
    }
    cb_next(c);
    call_unref(c);
}

/* Posts the next queued status callback, if none is in flight. */
static void cb_next(call_t *c)
{
    if (c->cb_in_flight || !c->cbq_len || c->forgotten || stopping)
        return;
    const char *status = c->cbq[c->cbq_head];
    char st[16];
    snprintf(st, sizeof st, "%s", status);
    c->cbq_head = (c->cbq_head + 1) % 8;
    c->cbq_len--;
    char seq[16], dur[24], ts[48];
    snprintf(seq, sizeof seq, "%d", c->cb_seq++);
    uint64_t end = c->ended_us ? c->ended_us : mock_now_us();
    snprintf(dur, sizeof dur, "%llu",
             c->answered_us ? (unsigned long long)((end - c->answered_us + 500000) / 1000000) : 0ull);
    mock_rfc2822_now(ts, sizeof ts);
    const char *direction = c->inbound ? "inbound" : "outbound-api";
    sb_sig_param_t p[] = {
        {SB_STR("AccountSid"), sb_str_cstr(c->account)},  {SB_STR("ApiVersion"), SB_STR("2010-04-01")},
        {SB_STR("CallSid"), sb_str_cstr(c->sid)},         {SB_STR("CallStatus"), sb_str_cstr(st)},
        {SB_STR("Called"), sb_str_cstr(c->to)},           {SB_STR("Caller"), sb_str_cstr(c->from)},
        {SB_STR("CallbackSource"), SB_STR("call-progress-events")},
        {SB_STR("Direction"), sb_str_cstr(direction)},    {SB_STR("From"), sb_str_cstr(c->from)},
        {SB_STR("SequenceNumber"), sb_str_cstr(seq)},     {SB_STR("Timestamp"), sb_str_cstr(ts)},
        {SB_STR("To"), sb_str_cstr(c->to)},               {SB_STR("CallDuration"), sb_str_cstr(dur)},
    };
    size_t n = sizeof p / sizeof p[0] - (is_final(st) ? 0 : 1);
    bool get = c->method && strcmp(c->method, "GET") == 0;
    sb_buf_t body, url;
    sb_buf_init(&body);
    sb_buf_init(&url);
    form_body(&body, p, n);
    sb_buf_puts(&url, c->status_url);
    if (get) {
        sb_buf_puts(&url, strchr(c->status_url, '?') ? "&" : "?");
        sb_buf_append(&url, body.p, body.len);
    }
    char sig[SB_SIG_TWILIO_LEN], sig_line[64];
    sb_sig_twilio_compute(sb_str_cstr(c->token), sb_str(url.p, url.len), p, get ? 0 : n, sig);
    snprintf(sig_line, sizeof sig_line, "X-Twilio-Signature: %.*s", SB_SIG_TWILIO_LEN, sig);
    const char *headers[] = {"Content-Type: application/x-www-form-urlencoded", sig_line, NULL};
    sb_http_client_req_t q = {.method = get ? "GET" : "POST", .url = sb_buf_cstr(&url),
                              .headers = get ? headers + 1 : headers, .body = get ? SB_STR("") : sb_str(body.p, body.len),
                              .timeout_ms = 10000};
    if (c->ncbs == MAX_CB) {
        memmove(&c->cbs[0], &c->cbs[1], (MAX_CB - 1) * sizeof c->cbs[0]);
        c->ncbs--;
    }
    cb_rec_t *r = &c->cbs[c->ncbs++];
    memset(r, 0, sizeof *r);
    snprintf(r->status, sizeof r->status, "%s", st);
    r->t_us = mock_now_us();
    cb_stats.posted++;
    int rc = sb_http_client_request(client, &q, cb_done, c);
    sb_buf_cleanup(&body);
    sb_buf_cleanup(&url);
    if (rc < 0) {
        r->err = rc;
        cb_stats.failed++;
        sb_log_warn("call %s: status callback %s: cannot post: %s", c->sid, st, sb_strerror(rc));
        cb_next(c);
        return;
    }
    c->cb_in_flight = true;
    c->refs++;
}

/* Queues the status callback for `status` when the call asked for its event. */
static void cb_queue(call_t *c, const char *status)
{
    unsigned ev = strcmp(status, "initiated") == 0 ? EV_INITIATED
                  : strcmp(status, "ringing") == 0 ? EV_RINGING
                  : strcmp(status, "in-progress") == 0 ? EV_ANSWERED
                                                       : EV_COMPLETED;
    if (!(c->events & ev) || !c->status_url || c->cbq_len == 8)
        return;
    snprintf(c->cbq[(c->cbq_head + c->cbq_len) % 8], sizeof c->cbq[0], "%s", status);
    c->cbq_len++;
    cb_next(c);
}

/* ---- the call's life ----------------------------------------------------------------------------------------- */

static void answered(call_t *c)
{
    if (c->answered_us)
        return;
    c->answered_us = mock_now_us();
    c->status = "in-progress";
    cb_queue(c, "in-progress");
}

/* Ends the call with a final status: the stream (if any) is stopped and closed first, the final callback follows
 * its close; otherwise it is posted now. */
static void call_end(call_t *c, const char *status)
{
    if (c->ending || is_final(c->status))
        return;
    c->ending = true;
    if (!c->answered_us && strcmp(status, "completed") == 0)
        status = "canceled";
    c->status = status;
    c->ended_us = mock_now_us();
    call_unschedule(c);
    if (c->ws_state == WS_CONNECTING || c->ws_state == WS_OPEN) {
        c->end_status = status;
        if (c->ws_state == WS_OPEN && !c->stop_sent) {
            frame_buf.len = 0;
            sb_ms_write_stop(&frame_buf, c->seq++, sb_str_cstr(c->stream_sid), sb_str_cstr(c->account),
                             sb_str_cstr(c->sid));
            sb_wsclient_send(c->ws, false, sb_str(frame_buf.p, frame_buf.len), false);
            c->stop_sent = true;
        }
        if (!c->closed_by)
            c->closed_by = "mock";
        sb_wsclient_close(c->ws, 1000, "call ended");
        return;
    }
    cb_queue(c, status);
}

/* Acts on the TwiML answer (fetched or inline). */
static void twiml_act(call_t *c)
{
    twiml_extract(sb_str(c->twiml_body.p, c->twiml_body.len), &c->tw);
    switch (c->tw.kind) {
    case TW_STREAM:
        if (c->inbound) { /* answered now; its in-progress callback waits for the stream's start */
            c->answered_us = mock_now_us();
            c->status = "in-progress";
        } else {
            answered(c);
        }
        stream_open(c);
        break;
    case TW_DIAL:
        answered(c);
        if (c->hangup_caller)
            call_schedule(c, ST_HANGUP, mock_now_us() + (uint64_t)c->frames_total * FRAME_MS * 1000);
        break;
    case TW_REJECT:
        call_end(c, strcmp(c->tw.reason, "busy") == 0 ? "busy" : "no-answer");
        break;
    case TW_SAY:
    case TW_HANGUP:
    case TW_OTHER:
        answered(c);
        call_end(c, "completed");
        break;
    case TW_NONE:
    case TW_INVALID:
        call_end(c, "failed");
        break;
    }
}

static void fetch_done(void *arg, const sb_http_client_res_t *res)
{
    call_t *c = arg;
    c->fetch_in_flight = false;
    c->twiml_status = res->status;
    c->twiml_err = res->err;
    sb_buf_append(&c->twiml_body, res->body.p, res->body.len < TWIML_KEEP ? res->body.len : TWIML_KEEP);
    if (c->forgotten || stopping || is_final(c->status)) {
        call_unref(c);
        return;
    }
    if (res->err) {
        set_error(c->last_error, sizeof c->last_error, "TwiML fetch", res->err);
        call_end(c, "failed");
    } else if (res->status < 200 || res->status > 299) {
        snprintf(c->last_error, sizeof c->last_error, "TwiML fetch: HTTP %d", res->status);
        call_end(c, "failed");
    } else {
        twiml_act(c);
    }
    call_unref(c);
}

/* Asks for the TwiML: the voice webhook (inbound, CallStatus ringing) or the call's Url (API, in-progress), a
 * signed form POST as Twilio makes it. */
static void fetch_twiml(call_t *c)
{
    if (c->twiml_inline) {
        c->twiml_status = 0;
        sb_buf_puts(&c->twiml_body, c->twiml_inline);
        twiml_act(c);
        return;
    }
    const char *direction = c->inbound ? "inbound" : "outbound-api";
    sb_sig_param_t p[] = {
        {SB_STR("AccountSid"), sb_str_cstr(c->account)}, {SB_STR("ApiVersion"), SB_STR("2010-04-01")},
        {SB_STR("CallSid"), sb_str_cstr(c->sid)},        {SB_STR("CallStatus"), sb_str_cstr(c->status)},
        {SB_STR("Called"), sb_str_cstr(c->to)},          {SB_STR("Caller"), sb_str_cstr(c->from)},
        {SB_STR("Direction"), sb_str_cstr(direction)},   {SB_STR("From"), sb_str_cstr(c->from)},
        {SB_STR("To"), sb_str_cstr(c->to)},
    };
    size_t n = sizeof p / sizeof p[0];
    sb_buf_t body;
    sb_buf_init(&body);
    form_body(&body, p, n);
    char sig[SB_SIG_TWILIO_LEN], sig_line[64];
    sb_sig_twilio_compute(sb_str_cstr(c->token), sb_str_cstr(c->url), p, n, sig);
    snprintf(sig_line, sizeof sig_line, "X-Twilio-Signature: %.*s", SB_SIG_TWILIO_LEN, sig);
    const char *headers[] = {"Content-Type: application/x-www-form-urlencoded", sig_line, NULL};
    sb_http_client_req_t q = {.method = "POST", .url = c->url, .headers = headers, .body = sb_str(body.p, body.len),
                              .timeout_ms = 10000};
    int rc = sb_http_client_request(client, &q, fetch_done, c);
    sb_buf_cleanup(&body);
    if (rc < 0) {
        set_error(c->last_error, sizeof c->last_error, "TwiML fetch", rc);
        c->twiml_err = rc;
        call_end(c, "failed");
        return;
    }
    c->fetch_in_flight = true;
    c->refs++;
}

/* ---- the Media Stream (Twilio's side) ------------------------------------------------------------------------ */

static void ws_on_open(void *arg, sb_wsclient_t *ws)
{
    call_t *c = arg;
    (void)ws;
    c->ws_state = WS_OPEN;
    memcpy(c->stream_sid, "MZ", 2);
    mock_random_hex(c->stream_sid + 2, 32);
    c->stream_sid[34] = '\0';
    frame_buf.len = 0;
    sb_ms_write_connected(&frame_buf);
    sb_wsclient_send(c->ws, false, sb_str(frame_buf.p, frame_buf.len), false);
    sb_ms_param_t params[MAX_PARAMS];
    for (size_t i = 0; i < c->tw.nparams; i++)
        params[i] = (sb_ms_param_t){sb_str_cstr(c->tw.pname[i]), sb_str_cstr(c->tw.pvalue[i])};
    frame_buf.len = 0;
    c->seq = 1;
    sb_ms_write_start(&frame_buf, c->seq++, sb_str_cstr(c->stream_sid), sb_str_cstr(c->account),
                      sb_str_cstr(c->sid), params, c->tw.nparams);
    sb_wsclient_send(c->ws, false, sb_str(frame_buf.p, frame_buf.len), false);
    c->stream_t0_us = mock_now_us();
    c->sent_at = sb_calloc(SENT_RING, sizeof *c->sent_at);
    if (c->inbound)
        cb_queue(c, "in-progress");
    call_schedule(c, ST_STREAM, c->stream_t0_us);
}

static void record_mark(call_t *c, sb_str_t name)
{
    if (c->nmarks_recv < MAX_MARKS)
        c->marks_recv[c->nmarks_recv] = dup_str(name);
    c->nmarks_recv++;
}

static void ws_on_message(void *arg, sb_wsclient_t *ws, bool binary, sb_str_t payload)
{
    call_t *c = arg;
    (void)ws;
    uint64_t now = mock_now_us();
    sb_ms_frame_t f;
    char err[96];
    if (binary || sb_ms_parse(payload, SB_MS_FROM_APP, &f, &scratch, err, sizeof err) < 0) {
        c->parse_errors++;
        snprintf(c->last_error, sizeof c->last_error, "from the gateway: %.70s", binary ? "a binary message" : err);
        return;
    }
    if (!sb_str_eq_cstr(f.stream_sid, c->stream_sid))
        c->wrong_sid++;
    switch (f.event) {
    case SB_MS_MEDIA: {
        uint32_t n, tag;
        if (!frame_ident(f.payload, &n, &tag) || tag != c->tag || n == 0 || n > c->frames_sent) {
            c->foreign++;
            return;
        }
        if (n <= c->last_recv_frame)
            c->ooo++;
        else
            c->last_recv_frame = n;
        uint64_t *at = &c->sent_at[n % SENT_RING];
        if (c->frames_sent - n >= SENT_RING) {
            c->late++;
            c->frames_recv++;
            return;
        }
        if (!*at) {
            c->dup++;
            return;
        }
        c->frames_recv++;
        if (c->ndelays == c->cap_delays) {
            c->cap_delays = c->cap_delays ? c->cap_delays * 2 : 256;
            c->delays = sb_realloc(c->delays, c->cap_delays * sizeof *c->delays);
        }
        uint64_t d = now - *at;
        c->delays[c->ndelays++] = d > UINT32_MAX ? UINT32_MAX : (uint32_t)d;
        *at = 0;
        break;
    }
    case SB_MS_MARK:
        record_mark(c, f.name);
        break;
    case SB_MS_CLEAR:
        c->clears++;
        break;
    default:
        c->other_recv++;
        break;
    }
}

static void ws_on_close(void *arg, sb_wsclient_t *ws, int err, uint16_t code, int http_status)
{
    call_t *c = arg;
    (void)ws;
    c->ws = NULL;
    c->ws_state = WS_CLOSED;
    c->ws_err = err;
    c->close_code = code;
    c->ws_http = http_status;
    if (err && err != SB_ECANCELED)
        set_error(c->last_error, sizeof c->last_error, "stream", err);
    if (!c->closed_by)
        c->closed_by = "peer";
    if (!c->forgotten && !stopping) {
        if (c->ending) {
            cb_queue(c, c->end_status ? c->end_status : c->status);
        } else {
            call_end(c, "completed"); /* the gateway hung up, or the stream never opened */
        }
    }
    call_unref(c);
}

static const sb_wsclient_ops_t ws_ops = {.on_open = ws_on_open, .on_message = ws_on_message,
                                         .on_close = ws_on_close};

/* Dials the TwiML's Stream url as Twilio does: the upgrade signed over that exact URL (wrongly on request). */
static void stream_open(call_t *c)
{
    if (!wsctx) {
        snprintf(c->last_error, sizeof c->last_error, "stream: libwebsockets is not available");
        call_end(c, "failed");
        return;
    }
    char sig[SB_SIG_TWILIO_LEN], sig_line[64];
    sb_sig_twilio_compute(sb_str_cstr(c->token), sb_str_cstr(c->tw.stream_url), NULL, 0, sig);
    if (c->bad_signature)
        sig[0] = sig[0] == 'A' ? 'B' : 'A';
    snprintf(sig_line, sizeof sig_line, "X-Twilio-Signature: %.*s", SB_SIG_TWILIO_LEN, sig);
    const char *headers[] = {sig_line, NULL};
    sb_wsclient_opts_t o = {.url = c->tw.stream_url, .headers = headers, .connect_timeout_ms = 5000,
                            .max_message = 65536, .max_queued = 65536};
    int rc = sb_wsclient_connect(wsctx, &o, &ws_ops, c, &c->ws);
    if (rc < 0) {
        set_error(c->last_error, sizeof c->last_error, "stream", rc);
        c->ws_err = rc;
        c->ws_state = WS_CLOSED;
        call_end(c, "failed");
        return;
    }
    c->ws_state = WS_CONNECTING;
    c->refs++;
}

static void send_frame(call_t *c, sb_str_t text, bool droppable)
{
    int rc = sb_wsclient_send(c->ws, false, text, droppable);
    if (rc > 0)
        c->dropped += (uint64_t)rc;
}

/* The tick's work for one streaming call: the media frames now due (at most MAX_BURST), the DTMF digits and marks
 * among them, then, once all are sent and echoes are in (or linger_ms passed), stop and close. */
static void stream_step(call_t *c, uint64_t now)
{
    char payload[FRAME_B64];
    for (int burst = 0; burst < MAX_BURST && c->frames_sent < c->frames_total; burst++) {
        uint32_t n = c->frames_sent + 1;
        if (c->stream_t0_us + (uint64_t)(n - 1) * FRAME_MS * 1000 > now)
            break;
        frame_payload(payload, n, c->tag);
        frame_buf.len = 0;
        sb_ms_write_media(&frame_buf, c->seq++, sb_str_cstr(c->stream_sid), SB_STR("inbound"), n,
                          (int64_t)(n - 1) * FRAME_MS, sb_str(payload, FRAME_B64));
        c->sent_at[n % SENT_RING] = mock_now_us();
        send_frame(c, sb_str(frame_buf.p, frame_buf.len), true);
        c->frames_sent = n;
        c->last_frame_us = now;
        size_t nd = strlen(c->dtmf);
        uint32_t at = c->frames_total / 2;
        if (nd && n >= at && n - at < nd && c->dtmf_sent < nd) {
            frame_buf.len = 0;
            sb_ms_write_dtmf(&frame_buf, c->seq++, sb_str_cstr(c->stream_sid), sb_str(&c->dtmf[c->dtmf_sent], 1));
            send_frame(c, sb_str(frame_buf.p, frame_buf.len), false);
            c->dtmf_sent++;
        }
        if (c->mark && n % 50 == 0) {
            char name[24];
            snprintf(name, sizeof name, "mark-%u", ++c->marks_sent);
            frame_buf.len = 0;
            sb_ms_write_mark(&frame_buf, c->seq++, sb_str_cstr(c->stream_sid), sb_str_cstr(name));
            send_frame(c, sb_str(frame_buf.p, frame_buf.len), false);
        }
    }
    if (c->frames_sent < c->frames_total || !c->hangup_caller)
        return;
    bool echoed = c->frames_recv + c->late >= c->frames_sent;
    if (echoed || now >= c->last_frame_us + (uint64_t)c->linger_ms * 1000)
        call_end(c, "completed");
}

static void tick_fire(uv_timer_t *t)
{
    (void)t;
    uint64_t now = mock_now_us();
    sb_list_t *it, *next;
    for (it = ticking.next; it != &ticking; it = next) {
        next = it->next;
        call_t *c = sb_container_of(it, call_t, tick_link);
        if (c->step_at_us > now)
            continue;
        switch (c->step) {
        case ST_STREAM:
            if (c->ws_state == WS_OPEN)
                stream_step(c, now);
            break;
        case ST_START: /* an inbound call rings: its webhook */
            call_unschedule(c);
            c->status = "ringing";
            fetch_twiml(c);
            break;
        case ST_RING: /* an API call: initiated, then ringing */
            c->status = "ringing";
            cb_queue(c, "ringing");
            call_schedule(c, ST_ANSWER, now + 100000);
            break;
        case ST_ANSWER:
            call_unschedule(c);
            answered(c);
            fetch_twiml(c);
            break;
        case ST_HANGUP:
            call_end(c, "completed");
            break;
        case ST_IDLE:
            call_unschedule(c);
            break;
        }
    }
    if (sb_list_empty(&ticking)) {
        uv_timer_stop(&tick);
        tick_running = false;
    }
}

/* ---- JSON of a call ------------------------------------------------------------------------------------------ */

static void call_resource(sb_buf_t *b, const call_t *c)
{
    char date[48];
    mock_rfc2822_now(date, sizeof date);
    sb_buf_puts(b, "{\"account_sid\":");
    sb_buf_json_cstr(b, c->account);
    sb_buf_printf(b, ",\"annotation\":null,\"answered_by\":null,\"api_version\":\"2010-04-01\",\"caller_name\":null,"
                     "\"date_created\":\"%s\",\"date_updated\":\"%s\",\"direction\":\"%s\",\"duration\":null,"
                     "\"end_time\":null,\"forwarded_from\":null,\"from\":",
                  date, date, c->inbound ? "inbound" : "outbound-api");
    sb_buf_json_cstr(b, c->from);
    sb_buf_puts(b, ",\"from_formatted\":");
    sb_buf_json_cstr(b, c->from);
    sb_buf_printf(b, ",\"group_sid\":null,\"parent_call_sid\":null,\"phone_number_sid\":null,\"price\":null,"
                     "\"price_unit\":\"USD\",\"queue_time\":\"0\",\"sid\":\"%s\",\"start_time\":null,\"status\":\"%s\","
                     "\"subresource_uris\":{\"notifications\":\"/2010-04-01/Accounts/%s/Calls/%s/Notifications.json\","
                     "\"recordings\":\"/2010-04-01/Accounts/%s/Calls/%s/Recordings.json\"},\"to\":",
                  c->sid, c->status, c->account, c->sid, c->account, c->sid);
    sb_buf_json_cstr(b, c->to);
    sb_buf_puts(b, ",\"to_formatted\":");
    sb_buf_json_cstr(b, c->to);
    sb_buf_printf(b, ",\"trunk_sid\":null,\"uri\":\"/2010-04-01/Accounts/%s/Calls/%s.json\"}", c->account, c->sid);
}

static bool call_in_order(const call_t *c)
{
    return c->ooo == 0 && c->dup == 0 && c->foreign == 0;
}

static uint32_t call_lost(const call_t *c)
{
    return c->ws_state == WS_CLOSED && c->frames_sent > c->frames_recv ? c->frames_sent - c->frames_recv : 0;
}

static void call_summary(sb_buf_t *b, const call_t *c)
{
    sb_buf_printf(b, "{\"sid\":\"%s\",\"direction\":\"%s\",\"from\":", c->sid, c->inbound ? "inbound" : "outbound-api");
    sb_buf_json_cstr(b, c->from);
    sb_buf_puts(b, ",\"to\":");
    sb_buf_json_cstr(b, c->to);
    sb_buf_printf(b, ",\"status\":\"%s\",\"twiml_status\":%d,\"twiml_kind\":\"%s\",\"stream_state\":\"%s\","
                     "\"close_code\":%u,\"frames_sent\":%u,\"frames_received\":%u,\"in_order\":%s}",
                  c->status, c->twiml_status, twiml_kind_name[c->tw.kind], ws_state_name[c->ws_state],
                  (unsigned)c->close_code, c->frames_sent, c->frames_recv, call_in_order(c) ? "true" : "false");
}

static void call_details(sb_buf_t *b, const call_t *c)
{
    sb_buf_printf(b, "{\"sid\":\"%s\",\"direction\":\"%s\",\"account_sid\":", c->sid,
                  c->inbound ? "inbound" : "outbound-api");
    sb_buf_json_cstr(b, c->account);
    sb_buf_puts(b, ",\"from\":");
    sb_buf_json_cstr(b, c->from);
    sb_buf_puts(b, ",\"to\":");
    sb_buf_json_cstr(b, c->to);
    sb_buf_printf(b, ",\"status\":\"%s\",\"created_t_us\":%llu,\"answered_t_us\":%llu,\"ended_t_us\":%llu,"
                     "\"url\":",
                  c->status, (unsigned long long)c->created_us, (unsigned long long)c->answered_us,
                  (unsigned long long)c->ended_us);
    sb_buf_json_cstr(b, c->url);
    sb_buf_puts(b, ",\"status_callback\":");
    sb_buf_json_cstr(b, c->status_url);
    sb_buf_printf(b, ",\"twiml\":{\"status\":%d,\"error\":", c->twiml_status);
    if (c->twiml_err)
        sb_buf_json_cstr(b, sb_strerror(c->twiml_err));
    else
        sb_buf_puts(b, "null");
    sb_buf_puts(b, ",\"body\":");
    sb_buf_json_str(b, sb_str(c->twiml_body.p, c->twiml_body.len));
    sb_buf_printf(b, ",\"kind\":\"%s\",\"invalid\":", twiml_kind_name[c->tw.kind]);
    sb_buf_json_cstr(b, c->tw.kind == TW_INVALID ? c->tw.error : NULL);
    sb_buf_puts(b, ",\"stream_url\":");
    sb_buf_json_cstr(b, c->tw.stream_url);
    sb_buf_puts(b, ",\"parameters\":{");
    for (size_t i = 0; i < c->tw.nparams; i++) {
        if (i)
            sb_buf_puts(b, ",");
        sb_buf_json_cstr(b, c->tw.pname[i]);
        sb_buf_puts(b, ":");
        sb_buf_json_cstr(b, c->tw.pvalue[i]);
    }
    sb_buf_puts(b, "},\"dial\":");
    sb_buf_json_cstr(b, c->tw.dial);
    sb_buf_puts(b, ",\"say\":");
    sb_buf_json_cstr(b, c->tw.say);
    sb_buf_puts(b, ",\"reject_reason\":");
    sb_buf_json_cstr(b, c->tw.kind == TW_REJECT ? c->tw.reason : NULL);
    sb_buf_puts(b, ",\"redirect\":");
    sb_buf_json_cstr(b, c->redirect);
    sb_buf_printf(b, "},\"stream\":{\"state\":\"%s\",\"url\":", ws_state_name[c->ws_state]);
    sb_buf_json_cstr(b, c->tw.kind == TW_STREAM ? c->tw.stream_url : NULL);
    sb_buf_puts(b, ",\"stream_sid\":");
    sb_buf_json_cstr(b, c->stream_sid[0] ? c->stream_sid : NULL);
    sb_buf_printf(b, ",\"bad_signature\":%s,\"error\":", c->bad_signature ? "true" : "false");
    sb_buf_json_cstr(b, c->ws_err ? sb_strerror(c->ws_err) : NULL);
    sb_buf_printf(b, ",\"http_status\":%d,\"close_code\":%u,\"closed_by\":", c->ws_http, (unsigned)c->close_code);
    sb_buf_json_cstr(b, c->closed_by);
    sb_buf_printf(b, ",\"frames_total\":%u,\"frames_sent\":%u,\"frames_received\":%u,\"in_order\":%s,"
                     "\"out_of_order\":%u,\"duplicates\":%u,\"foreign\":%u,\"late\":%u,\"lost\":%u,\"dropped\":%llu,"
                     "\"wrong_stream_sid\":%u,\"parse_errors\":%u,\"other_events\":%u,\"delay_us\":",
                  c->frames_total, c->frames_sent, c->frames_recv, call_in_order(c) ? "true" : "false", c->ooo, c->dup,
                  c->foreign, c->late, call_lost(c), (unsigned long long)c->dropped, c->wrong_sid, c->parse_errors,
                  c->other_recv);
    uint32_t *d = c->ndelays ? sb_malloc(c->ndelays * sizeof *d) : NULL;
    if (d)
        memcpy(d, c->delays, c->ndelays * sizeof *d);
    delay_json(b, d, c->ndelays);
    free(d);
    sb_buf_printf(b, ",\"marks_sent\":%u,\"marks_received\":[", c->marks_sent);
    for (uint32_t i = 0; i < c->nmarks_recv && i < MAX_MARKS; i++) {
        if (i)
            sb_buf_puts(b, ",");
        sb_buf_json_cstr(b, c->marks_recv[i]);
    }
    sb_buf_printf(b, "],\"marks_received_count\":%u,\"clears\":%u,\"dtmf_sent\":", c->nmarks_recv, c->clears);
    sb_buf_json_str(b, sb_str(c->dtmf, c->dtmf_sent));
    sb_buf_puts(b, "},\"last_error\":");
    sb_buf_json_cstr(b, c->last_error[0] ? c->last_error : NULL);
    sb_buf_puts(b, ",\"callbacks\":[");
    for (int i = 0; i < c->ncbs; i++) {
        const cb_rec_t *r = &c->cbs[i];
        sb_buf_printf(b, "%s{\"status\":\"%s\",\"t_us\":%llu,\"http_status\":%d,\"error\":", i ? "," : "", r->status,
                      (unsigned long long)r->t_us, r->http_status);
        sb_buf_json_cstr(b, r->err ? sb_strerror(r->err) : NULL);
        sb_buf_puts(b, "}");
    }
    sb_buf_puts(b, "]}");
}

static void calls_summary(sb_buf_t *b)
{
    uint64_t sent = 0, recv = 0, lost = 0, ooo = 0, dup = 0, foreign = 0, late = 0, dropped = 0, marks_s = 0,
             marks_r = 0, clears = 0, parse = 0, cbfail = 0;
    size_t live = 0, open = 0, in_order = 0, nd = 0, streams = 0;
    size_t by_status[8] = {0};
    static const char *const st_names[] = {"queued", "ringing", "in-progress", "completed", "busy", "failed",
                                           "no-answer", "canceled"};
    for (size_t i = 0; i < ncalls; i++) {
        const call_t *c = calls[i];
        sent += c->frames_sent;
        recv += c->frames_recv;
        lost += call_lost(c);
        ooo += c->ooo;
        dup += c->dup;
        foreign += c->foreign;
        late += c->late;
        dropped += c->dropped;
        marks_s += c->marks_sent;
        marks_r += c->nmarks_recv;
        clears += c->clears;
        parse += c->parse_errors;
        live += !is_final(c->status);
        open += c->ws_state == WS_OPEN;
        streams += c->ws_state != WS_NONE;
        in_order += c->ws_state != WS_NONE && call_in_order(c);
        nd += c->ndelays;
        for (size_t k = 0; k < 8; k++)
            by_status[k] += strcmp(c->status, st_names[k]) == 0;
        for (int k = 0; k < c->ncbs; k++)
            cbfail += c->cbs[k].err || c->cbs[k].http_status < 200 || c->cbs[k].http_status > 299;
    }
    uint32_t *d = nd ? sb_malloc(nd * sizeof *d) : NULL;
    size_t at = 0;
    for (size_t i = 0; i < ncalls; i++) {
        if (calls[i]->ndelays)
            memcpy(d + at, calls[i]->delays, calls[i]->ndelays * sizeof *d);
        at += calls[i]->ndelays;
    }
    sb_buf_printf(b, "{\"calls\":%zu,\"live\":%zu,\"streams\":%zu,\"streams_open\":%zu,\"in_order_streams\":%zu,"
                     "\"status\":{",
                  ncalls, live, streams, open, in_order);
    for (size_t k = 0; k < 8; k++)
        sb_buf_printf(b, "%s\"%s\":%zu", k ? "," : "", st_names[k], by_status[k]);
    sb_buf_printf(b, "},\"frames_sent\":%llu,\"frames_received\":%llu,\"lost\":%llu,\"late\":%llu,"
                     "\"out_of_order\":%llu,\"duplicates\":%llu,\"foreign\":%llu,\"dropped\":%llu,\"parse_errors\":%llu,"
                     "\"marks_sent\":%llu,\"marks_received\":%llu,\"clears\":%llu,\"delay_us\":",
                  (unsigned long long)sent, (unsigned long long)recv, (unsigned long long)lost,
                  (unsigned long long)late, (unsigned long long)ooo, (unsigned long long)dup,
                  (unsigned long long)foreign, (unsigned long long)dropped, (unsigned long long)parse,
                  (unsigned long long)marks_s, (unsigned long long)marks_r, (unsigned long long)clears);
    delay_json(b, d, nd);
    free(d);
    sb_buf_printf(b, ",\"callbacks\":{\"posted\":%llu,\"ok\":%llu,\"failed\":%llu}}",
                  (unsigned long long)cb_stats.posted, (unsigned long long)cb_stats.ok,
                  (unsigned long long)cb_stats.failed);
    (void)cbfail;
}

/* ---- Twilio's Calls API -------------------------------------------------------------------------------------- */

static bool parse_events(sb_str_t s, unsigned *out)
{
    unsigned ev = 0;
    size_t i = 0;
    while (i < s.len) {
        while (i < s.len && (s.p[i] == ' ' || s.p[i] == ','))
            i++;
        size_t st = i;
        while (i < s.len && s.p[i] != ' ' && s.p[i] != ',')
            i++;
        sb_str_t w = sb_str(s.p + st, i - st);
        if (!w.len)
            continue;
        if (sb_str_eq_cstr(w, "initiated"))
            ev |= EV_INITIATED;
        else if (sb_str_eq_cstr(w, "ringing"))
            ev |= EV_RINGING;
        else if (sb_str_eq_cstr(w, "answered") || sb_str_eq_cstr(w, "in-progress"))
            ev |= EV_ANSWERED;
        else if (sb_str_eq_cstr(w, "completed"))
            ev |= EV_COMPLETED;
        else
            return false;
    }
    *out = ev;
    return true;
}

static bool is_http_url(sb_str_t s)
{
    return sb_str_has_prefix(s, SB_STR("http://")) || sb_str_has_prefix(s, SB_STR("https://"));
}

static void calls_create(sb_http_req_t *req, sb_str_t account)
{
    char token[256];
    if (!mock_twilio_auth(req, account, token, sizeof token))
        return;
    sb_form_t f;
    sb_form_init(&f);
    if (sb_form_parse(&f, sb_http_req_body(req)) < 0) {
        memset(token, 0, sizeof token);
        mock_twilio_error(req, 400, 21205, "The request body is not a valid form");
        return;
    }
    const sb_form_pair_t *to = sb_form_find_cstr(&f, "To"), *from = sb_form_find_cstr(&f, "From"),
                         *url = sb_form_find_cstr(&f, "Url"), *twiml = sb_form_find_cstr(&f, "Twiml"),
                         *cb = sb_form_find_cstr(&f, "StatusCallback"),
                         *ev = sb_form_find_cstr(&f, "StatusCallbackEvent"),
                         *method = sb_form_find_cstr(&f, "StatusCallbackMethod");
    unsigned events = EV_COMPLETED;
    /* StatusCallbackEvent may come once space-separated or repeated */
    bool ev_ok = true, ev_seen = false;
    for (size_t i = 0; i < f.n; i++) {
        if (!sb_str_eq_cstr(f.pairs[i].name, "StatusCallbackEvent"))
            continue;
        unsigned e;
        if (!parse_events(f.pairs[i].value, &e))
            ev_ok = false;
        events = (ev_seen ? events : 0) | e;
        ev_seen = true;
    }
    (void)ev;
    if (!to || !to->value.len) {
        mock_twilio_error(req, 400, 21201, "No 'To' number is specified");
    } else if (!from || !from->value.len) {
        mock_twilio_error(req, 400, 21213, "No 'From' number is specified");
    } else if ((!url || !url->value.len) && (!twiml || !twiml->value.len)) {
        mock_twilio_error(req, 400, 21205, "Url parameter is required.");
    } else if (url && url->value.len && !is_http_url(url->value)) {
        mock_twilio_error(req, 400, 21205, "Url is not a valid URL.");
    } else if (cb && cb->value.len && !is_http_url(cb->value)) {
        mock_twilio_error(req, 400, 21609, "StatusCallback is not a valid URL.");
    } else if (!ev_ok) {
        mock_twilio_error(req, 400, 21626, "StatusCallbackEvent: initiated, ringing, answered, completed.");
    } else if (method && !sb_str_eq_cstr(method->value, "POST") && !sb_str_eq_cstr(method->value, "GET")) {
        mock_twilio_error(req, 400, 21628, "StatusCallbackMethod: GET or POST.");
    } else {
        char sid[35] = "CA";
        mock_random_hex(sid + 2, 32);
        sid[34] = '\0';
        long delay_ms = 0;
        sb_str_t what = url && url->value.len ? url->value : twiml->value;
        if (mock_twilio_verdict(req, from->value, "call", to->value, what, sid, &delay_ms) == 0) {
            call_t *c = call_new(false);
            memcpy(c->sid, sid, sizeof sid);
            c->account = dup_str(account);
            c->from = dup_str(from->value);
            c->to = dup_str(to->value);
            c->token = sb_strdup(token);
            if (url && url->value.len)
                c->url = dup_str(url->value);
            else
                c->twiml_inline = dup_str(twiml->value);
            if (cb && cb->value.len)
                c->status_url = dup_str(cb->value);
            c->method = method ? dup_str(method->value) : NULL;
            c->events = events;
            c->status = "queued";
            c->frames_total = OUTBOUND_FRAMES;
            c->linger_ms = 1000;
            c->hangup_caller = false;
            vout.len = 0;
            call_resource(&vout, c);
            mock_answer_json(req, 201, delay_ms, vout.p, vout.len);
            cb_queue(c, "initiated");
            call_schedule(c, ST_RING, mock_now_us() + (uint64_t)delay_ms * 1000);
        }
    }
    sb_form_cleanup(&f);
    memset(token, 0, sizeof token);
}

static void call_not_found(sb_http_req_t *req, sb_str_t path)
{
    char msg[200];
    snprintf(msg, sizeof msg, "The requested resource %.*s was not found", (int)(path.len > 150 ? 150 : path.len),
             path.p);
    mock_twilio_error(req, 404, 20404, msg);
}

static void calls_update(sb_http_req_t *req, sb_str_t path, sb_str_t account, sb_str_t sid)
{
    char token[256];
    if (!mock_twilio_auth(req, account, token, sizeof token))
        return;
    memset(token, 0, sizeof token);
    call_t *c = call_find(sid);
    if (!c || !sb_str_eq_cstr(account, c->account)) {
        call_not_found(req, path);
        return;
    }
    if (sb_http_req_method(req) == SB_HTTP_POST) {
        sb_form_t f;
        sb_form_init(&f);
        if (sb_form_parse(&f, sb_http_req_body(req)) < 0) {
            mock_twilio_error(req, 400, 21218, "The request body is not a valid form");
            return;
        }
        const sb_form_pair_t *st = sb_form_find_cstr(&f, "Status"), *tw = sb_form_find_cstr(&f, "Twiml");
        if (!st && tw && !is_final(c->status)) { /* a redirect: the stream (if any) stops, the call goes on */
            free(c->redirect);
            c->redirect = sb_strndup(tw->value.p, tw->value.len);
            sb_form_cleanup(&f);
            if (c->ws_state == WS_OPEN && !c->stop_sent) {
                frame_buf.len = 0;
                sb_ms_write_stop(&frame_buf, c->seq++, sb_str_cstr(c->stream_sid), sb_str_cstr(c->account),
                                 sb_str_cstr(c->sid));
                sb_wsclient_send(c->ws, false, sb_str(frame_buf.p, frame_buf.len), false);
                c->stop_sent = true;
                c->closed_by = "mock";
                sb_wsclient_close(c->ws, 1000, "call redirected");
            }
            vout.len = 0;
            call_resource(&vout, c);
            mock_answer_json(req, 200, 0, vout.p, vout.len);
            return;
        }
        if (!st || (!sb_str_eq_cstr(st->value, "completed") && !sb_str_eq_cstr(st->value, "canceled"))) {
            sb_form_cleanup(&f);
            mock_twilio_error(req, 400, 21218, "Status: completed or canceled, or Twiml to redirect the call");
            return;
        }
        bool completed = sb_str_eq_cstr(st->value, "completed");
        sb_form_cleanup(&f);
        if (!is_final(c->status) && (completed || !c->answered_us))
            call_end(c, completed ? "completed" : "canceled");
    }
    vout.len = 0;
    call_resource(&vout, c);
    mock_answer_json(req, 200, 0, vout.p, vout.len);
}

/* ---- /_mock/calls ---------------------------------------------------------------------------------------------- */

static const char *jstr(json_t *o, const char *key, const char *dflt)
{
    json_t *v = json_object_get(o, key);
    return json_is_string(v) ? json_string_value(v) : dflt;
}

static bool jbool(json_t *o, const char *key, bool *dst, char *err, size_t errlen)
{
    json_t *v = json_object_get(o, key);
    if (!v)
        return true;
    if (!json_is_boolean(v)) {
        snprintf(err, errlen, "%s: true or false", key);
        return false;
    }
    *dst = json_is_true(v);
    return true;
}

/* The status URL of a voice webhook: ".../voice" + "/status", before any query. */
static char *status_url_of(const char *webhook)
{
    const char *q = strchr(webhook, '?');
    size_t n = q ? (size_t)(q - webhook) : strlen(webhook);
    sb_buf_t b;
    sb_buf_init(&b);
    sb_buf_append(&b, webhook, n);
    sb_buf_puts(&b, "/status");
    if (q)
        sb_buf_puts(&b, q);
    char *r = sb_strdup(sb_buf_cstr(&b));
    sb_buf_cleanup(&b);
    return r;
}

static void control_place_calls(sb_http_req_t *req)
{
    static const char *const known[] = {"webhook", "auth_token", "account_sid", "from", "to", "count", "frames",
                                        "dtmf", "mark", "hangup", "bad_signature", "linger_ms", "spread_ms",
                                        "status_events", "direct_stream_url"};
    sb_str_t raw = sb_http_req_body(req);
    json_error_t jerr;
    json_t *o = json_loadb(raw.p ? raw.p : "", raw.len, JSON_REJECT_DUPLICATES, &jerr);
    char err[160] = "";
    if (!o || !json_is_object(o)) {
        snprintf(err, sizeof err, "the body must be a JSON object");
        goto fail;
    }
    const char *key;
    json_t *v;
    json_object_foreach(o, key, v) {
        bool found = false;
        for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
            found |= strcmp(key, known[i]) == 0;
        if (!found) {
            snprintf(err, sizeof err, "unknown field %.64s", key);
            goto fail;
        }
    }
    const char *webhook = jstr(o, "webhook", NULL), *token = jstr(o, "auth_token", NULL);
    const char *direct = jstr(o, "direct_stream_url", NULL);
    const char *account = jstr(o, "account_sid", "AC00000000000000000000000000000000");
    const char *from = jstr(o, "from", "+15550100000"), *to = jstr(o, "to", "+15550200000");
    const char *dtmf = jstr(o, "dtmf", ""), *hangup = jstr(o, "hangup", "caller");
    const char *events_s = jstr(o, "status_events", "answered completed");
    long count = 1, frames = 250, linger = 1000, spread = 0;
    bool mark = false, bad_sig = false;
    unsigned events;
    if (json_object_get(o, "direct_stream_url") &&
        (!direct || (!sb_str_has_prefix(sb_str_cstr(direct), SB_STR("ws://")) &&
                     !sb_str_has_prefix(sb_str_cstr(direct), SB_STR("wss://"))))) {
        snprintf(err, sizeof err, "direct_stream_url: a ws:// or wss:// URL");
    } else if (direct && webhook) {
        snprintf(err, sizeof err, "webhook or direct_stream_url, not both");
    } else if (!direct && (!webhook || !is_http_url(sb_str_cstr(webhook)))) {
        snprintf(err, sizeof err, "webhook: an http:// or https:// URL");
    } else if (!token || !*token) {
        snprintf(err, sizeof err, "auth_token: a non-empty string");
    } else if (!mock_json_int(o, "count", 1, 10000, &count, err, sizeof err) ||
               !mock_json_int(o, "frames", 0, OUTBOUND_FRAMES, &frames, err, sizeof err) ||
               !mock_json_int(o, "linger_ms", 0, 60000, &linger, err, sizeof err) ||
               !mock_json_int(o, "spread_ms", 0, 600000, &spread, err, sizeof err) || !jbool(o, "mark", &mark, err, sizeof err) ||
               !jbool(o, "bad_signature", &bad_sig, err, sizeof err)) {
        /* err is set */
    } else if (strlen(dtmf) > 32 || strspn(dtmf, "0123456789*#ABCD") != strlen(dtmf)) {
        snprintf(err, sizeof err, "dtmf: at most 32 of 0-9 * # A-D");
    } else if (strcmp(hangup, "caller") != 0 && strcmp(hangup, "none") != 0) {
        snprintf(err, sizeof err, "hangup: \"caller\" or \"none\"");
    } else if (!parse_events(sb_str_cstr(events_s), &events)) {
        snprintf(err, sizeof err, "status_events: space-separated initiated, ringing, answered, completed");
    }
    for (const char *k = "account_sid\0from\0to\0"; *k; k += strlen(k) + 1) {
        json_t *x = json_object_get(o, k);
        if (!err[0] && x && (!json_is_string(x) || !json_string_length(x)))
            snprintf(err, sizeof err, "%s: a non-empty string", k);
    }
    if (err[0])
        goto fail;
    vout.len = 0;
    sb_buf_puts(&vout, "{\"calls\":[");
    uint64_t now = mock_now_us();
    for (long long i = 0; i < count; i++) {
        call_t *c = call_new(true);
        c->account = sb_strdup(account);
        c->from = sb_strdup(from);
        c->to = sb_strdup(to);
        c->token = sb_strdup(token);
        if (direct) { /* no webhook, no callbacks: the TwiML is a Stream straight to that URL */
            sb_buf_t tw;
            sb_buf_init(&tw);
            sb_twiml_stream(&tw, direct, NULL, 0);
            c->twiml_inline = sb_strdup(sb_buf_cstr(&tw));
            sb_buf_cleanup(&tw);
        } else {
            c->url = sb_strdup(webhook);
            c->status_url = status_url_of(webhook);
        }
        c->events = events;
        c->status = "queued";
        c->frames_total = (uint32_t)frames;
        c->linger_ms = (uint32_t)linger;
        c->mark = mark;
        c->bad_signature = bad_sig;
        c->hangup_caller = strcmp(hangup, "caller") == 0;
        snprintf(c->dtmf, sizeof c->dtmf, "%s", dtmf);
        sb_buf_printf(&vout, "%s\"%s\"", i ? "," : "", c->sid);
        call_schedule(c, ST_START, now + (uint64_t)(spread * 1000 * i / count));
    }
    sb_buf_puts(&vout, "]}");
    json_decref(o);
    mock_answer_json(req, 202, 0, vout.p, vout.len);
    return;
fail:
    json_decref(o);
    sb_http_respond_error(req, 400, "bad_request", err);
}

static void control_calls(sb_http_req_t *req, sb_str_t rest)
{
    sb_http_method_t m = sb_http_req_method(req);
    if (rest.len == 0 && m == SB_HTTP_POST) {
        control_place_calls(req);
        return;
    }
    if (m != SB_HTTP_GET) {
        sb_http_respond_error(req, 405, "bad_request", "GET, or POST to /_mock/calls");
        return;
    }
    vout.len = 0;
    if (rest.len == 0) {
        sb_form_t q;
        sb_form_init(&q);
        sb_form_parse(&q, sb_http_req_query(req));
        const sb_form_pair_t *s = sb_form_find_cstr(&q, "summary");
        bool summary = s && !sb_str_eq_cstr(s->value, "0");
        sb_form_cleanup(&q);
        if (summary) {
            calls_summary(&vout);
        } else {
            sb_buf_printf(&vout, "{\"count\":%zu,\"calls\":[", ncalls);
            for (size_t i = 0; i < ncalls; i++) {
                if (i)
                    sb_buf_puts(&vout, ",");
                call_summary(&vout, calls[i]);
            }
            sb_buf_puts(&vout, "]}");
        }
    } else {
        call_t *c = rest.p[0] == '/' ? call_find(sb_str(rest.p + 1, rest.len - 1)) : NULL;
        if (!c) {
            sb_http_respond_error(req, 404, "not_found", "no such call");
            return;
        }
        call_details(&vout, c);
    }
    mock_answer_json(req, 200, 0, vout.p, vout.len);
}

/* ---- the echo voice app -------------------------------------------------------------------------------------- */

typedef struct app_sess {
    sb_list_t link;      /* on `sessions` while remembered */
    uint64_t id;
    sb_wsconn_t *ws;     /* NULL once closed */
    bool forgotten, timer_on;
    uv_timer_t timer;    /* delay_ms > 0 only */
    uint32_t delay_ms;
    bool stall;
    char *signature, *twilio_signature, *target;
    char stream_sid[64], call_sid[64], account_sid[64];
    char *pname[MAX_PARAMS], *pvalue[MAX_PARAMS];
    size_t nparams;
    uint64_t t_open_us, t_close_us;
    uint32_t connected, starts, media, marks, dtmf_n, stops, clears, parse_errors, other;
    char dtmf[33];
    char *marks_seen[MAX_MARKS];
    char last_error[96];
    sb_buf_t q; /* delayed echoes: [u64 due][u32 len][bytes] ... */
    size_t qhead;
} app_sess_t;

static sb_list_t sessions;
static size_t nsessions;
static uint64_t next_sess_id = 1, app_refused;

static void sess_free(app_sess_t *s)
{
    free(s->signature);
    free(s->twilio_signature);
    free(s->target);
    for (size_t i = 0; i < s->nparams; i++) {
        free(s->pname[i]);
        free(s->pvalue[i]);
    }
    for (uint32_t i = 0; i < s->marks && i < MAX_MARKS; i++)
        free(s->marks_seen[i]);
    sb_buf_cleanup(&s->q);
    free(s);
}

static void sess_timer_closed(uv_handle_t *h)
{
    sess_free(h->data);
}

/* Frees s once it is both closed and forgotten. */
static void sess_maybe_free(app_sess_t *s)
{
    if (s->ws || !s->forgotten)
        return;
    if (s->timer_on)
        uv_close((uv_handle_t *)&s->timer, sess_timer_closed);
    else
        sess_free(s);
}

static void sess_forget(app_sess_t *s)
{
    sb_list_remove(&s->link);
    nsessions--;
    s->forgotten = true;
    sess_maybe_free(s);
}

static void sess_flush(uv_timer_t *t)
{
    app_sess_t *s = t->data;
    uint64_t now = mock_now_us();
    while (s->qhead < s->q.len) {
        uint64_t due;
        uint32_t len;
        memcpy(&due, s->q.p + s->qhead, 8);
        memcpy(&len, s->q.p + s->qhead + 8, 4);
        if (due > now) {
            uv_timer_start(&s->timer, sess_flush, (due - now + 999) / 1000, 0);
            return;
        }
        if (s->ws)
            sb_wsconn_send(s->ws, SB_WS_OP_TEXT, sb_str(s->q.p + s->qhead + 12, len));
        s->qhead += 12 + len;
    }
    s->q.len = s->qhead = 0;
}

static void sess_send(app_sess_t *s, sb_buf_t *b)
{
    if (!s->delay_ms) {
        sb_wsconn_send(s->ws, SB_WS_OP_TEXT, sb_str(b->p, b->len));
        return;
    }
    uint64_t due = mock_now_us() + (uint64_t)s->delay_ms * 1000;
    uint32_t len = (uint32_t)b->len;
    bool was_empty = s->qhead == s->q.len;
    sb_buf_append(&s->q, &due, 8);
    sb_buf_append(&s->q, &len, 4);
    sb_buf_append(&s->q, b->p, b->len);
    if (was_empty)
        uv_timer_start(&s->timer, sess_flush, s->delay_ms, 0);
}

static void app_on_message(void *arg, sb_wsconn_t *ws, sb_ws_op_t op, sb_str_t payload)
{
    app_sess_t *s = arg;
    (void)ws;
    sb_ms_frame_t f;
    char err[96];
    if (op != SB_WS_OP_TEXT || sb_ms_parse(payload, SB_MS_FROM_TWILIO, &f, &scratch, err, sizeof err) < 0) {
        s->parse_errors++;
        snprintf(s->last_error, sizeof s->last_error, "%s", op != SB_WS_OP_TEXT ? "a binary message" : err);
        return;
    }
    sb_str_t sid = s->stream_sid[0] ? sb_str_cstr(s->stream_sid) : f.stream_sid;
    switch (f.event) {
    case SB_MS_CONNECTED:
        s->connected++;
        break;
    case SB_MS_START:
        s->starts++;
        snprintf(s->stream_sid, sizeof s->stream_sid, "%.*s", (int)f.stream_sid.len, f.stream_sid.p);
        snprintf(s->call_sid, sizeof s->call_sid, "%.*s", (int)f.call_sid.len, f.call_sid.p);
        snprintf(s->account_sid, sizeof s->account_sid, "%.*s", (int)f.account_sid.len, f.account_sid.p);
        for (size_t i = 0; i < f.nparams && s->nparams < MAX_PARAMS; i++) {
            s->pname[s->nparams] = dup_str(f.params[i].name);
            s->pvalue[s->nparams++] = dup_str(f.params[i].value);
        }
        break;
    case SB_MS_MEDIA:
        s->media++;
        frame_buf.len = 0;
        sb_ms_write_app_media(&frame_buf, sid, f.payload);
        sess_send(s, &frame_buf);
        break;
    case SB_MS_MARK:
        if (s->marks < MAX_MARKS)
            s->marks_seen[s->marks] = dup_str(f.name);
        s->marks++;
        frame_buf.len = 0;
        sb_ms_write_mark(&frame_buf, -1, sid, f.name);
        sess_send(s, &frame_buf);
        break;
    case SB_MS_DTMF:
        if (s->dtmf_n < sizeof s->dtmf - 1 && f.digit.len == 1)
            s->dtmf[s->dtmf_n] = f.digit.p[0];
        s->dtmf_n++;
        break;
    case SB_MS_STOP:
        s->stops++;
        break;
    default:
        s->other++;
        break;
    }
}

static void app_on_close(void *arg, sb_wsconn_t *ws)
{
    app_sess_t *s = arg;
    (void)ws;
    s->ws = NULL;
    s->t_close_us = mock_now_us();
    if (s->timer_on)
        uv_timer_stop(&s->timer);
    sess_maybe_free(s);
}

static const sb_wsconn_ops_t app_ops = {.on_message = app_on_message, .on_close = app_on_close};

static void app_accept(sb_http_req_t *req)
{
    sb_form_t q;
    sb_form_init(&q);
    sb_form_parse(&q, sb_http_req_query(req));
    const sb_form_pair_t *d = sb_form_find_cstr(&q, "delay_ms"), *st = sb_form_find_cstr(&q, "stall"),
                         *rf = sb_form_find_cstr(&q, "refuse");
    long long delay = 0;
    bool bad = d && sb_str_to_ll(d->value, 0, 60000, &delay) < 0;
    bool stall = st && !sb_str_eq_cstr(st->value, "0"), refuse = rf && !sb_str_eq_cstr(rf->value, "0");
    sb_form_cleanup(&q);
    if (bad) {
        sb_http_respond_error(req, 400, "bad_request", "delay_ms: 0..60000");
        return;
    }
    if (refuse) {
        app_refused++;
        sb_http_respond_error(req, 403, "forbidden", "the mock voice app refuses (refuse=1)");
        return;
    }
    app_sess_t *s = sb_calloc(1, sizeof *s);
    sb_list_init(&s->link);
    sb_buf_init(&s->q);
    s->id = next_sess_id++;
    s->delay_ms = (uint32_t)delay;
    s->stall = stall;
    sb_str_t h;
    if (sb_http_req_header(req, "x-switchboard-signature", &h))
        s->signature = dup_str(h);
    if (sb_http_req_header(req, "x-twilio-signature", &h)) /* when the mock's own calls dial it directly */
        s->twilio_signature = dup_str(h);
    s->target = dup_str(sb_http_req_target(req));
    sb_wsconn_opts_t o = {.max_message = 65536, .max_queued = 1 << 20, .slow_code = 1008,
                          .slow_reason = "the gateway does not read", .what = "the mock voice app"};
    int subprotocol;
    s->ws = sb_wsconn_accept(req, &o, &app_ops, s, &subprotocol);
    if (!s->ws) {
        sess_free(s);
        return;
    }
    s->t_open_us = mock_now_us();
    if (s->delay_ms) {
        uv_timer_init(loop, &s->timer);
        s->timer.data = s;
        s->timer_on = true;
    }
    if (stall)
        sb_wsconn_set_reading(s->ws, false);
    sb_list_push_back(&sessions, &s->link);
    if (++nsessions > MAX_SESSIONS) {
        for (sb_list_t *it = sessions.next; it != &sessions; it = it->next) {
            app_sess_t *old = sb_container_of(it, app_sess_t, link);
            if (!old->ws) {
                sess_forget(old);
                break;
            }
        }
    }
}

static void app_json(sb_buf_t *b)
{
    size_t open = 0;
    for (sb_list_t *it = sessions.next; it != &sessions; it = it->next)
        open += sb_container_of(it, app_sess_t, link)->ws != NULL;
    sb_buf_printf(b, "{\"count\":%zu,\"open\":%zu,\"refused\":%llu,\"sessions\":[", nsessions, open,
                  (unsigned long long)app_refused);
    bool first = true;
    for (sb_list_t *it = sessions.next; it != &sessions; it = it->next) {
        const app_sess_t *s = sb_container_of(it, app_sess_t, link);
        sb_buf_printf(b, "%s{\"id\":%llu,\"open\":%s,\"t_open_us\":%llu,\"t_close_us\":%llu,\"target\":",
                      first ? "" : ",", (unsigned long long)s->id, s->ws ? "true" : "false",
                      (unsigned long long)s->t_open_us, (unsigned long long)s->t_close_us);
        first = false;
        sb_buf_json_cstr(b, s->target);
        sb_buf_puts(b, ",\"signature\":");
        sb_buf_json_cstr(b, s->signature);
        sb_buf_puts(b, ",\"twilio_signature\":");
        sb_buf_json_cstr(b, s->twilio_signature);
        sb_buf_printf(b, ",\"delay_ms\":%u,\"stall\":%s,\"stream_sid\":", s->delay_ms, s->stall ? "true" : "false");
        sb_buf_json_cstr(b, s->stream_sid[0] ? s->stream_sid : NULL);
        sb_buf_puts(b, ",\"call_sid\":");
        sb_buf_json_cstr(b, s->call_sid[0] ? s->call_sid : NULL);
        sb_buf_puts(b, ",\"account_sid\":");
        sb_buf_json_cstr(b, s->account_sid[0] ? s->account_sid : NULL);
        sb_buf_puts(b, ",\"parameters\":{");
        for (size_t i = 0; i < s->nparams; i++) {
            if (i)
                sb_buf_puts(b, ",");
            sb_buf_json_cstr(b, s->pname[i]);
            sb_buf_puts(b, ":");
            sb_buf_json_cstr(b, s->pvalue[i]);
        }
        sb_buf_printf(b, "},\"connected\":%u,\"starts\":%u,\"media\":%u,\"marks\":[", s->connected, s->starts,
                      s->media);
        for (uint32_t i = 0; i < s->marks && i < MAX_MARKS; i++) {
            if (i)
                sb_buf_puts(b, ",");
            sb_buf_json_cstr(b, s->marks_seen[i]);
        }
        sb_buf_printf(b, "],\"marks_count\":%u,\"dtmf\":", s->marks);
        sb_buf_json_str(b, sb_str(s->dtmf, s->dtmf_n < sizeof s->dtmf ? s->dtmf_n : sizeof s->dtmf - 1));
        sb_buf_printf(b, ",\"stops\":%u,\"other\":%u,\"parse_errors\":%u,\"last_error\":", s->stops, s->other,
                      s->parse_errors);
        sb_buf_json_cstr(b, s->last_error[0] ? s->last_error : NULL);
        sb_buf_puts(b, "}");
    }
    sb_buf_puts(b, "]}");
}

static void control_voice_app(sb_http_req_t *req)
{
    if (sb_http_req_upgrade(req)) {
        app_accept(req);
        return;
    }
    if (sb_http_req_method(req) != SB_HTTP_GET) {
        sb_http_respond_error(req, 405, "bad_request", "GET (a WebSocket upgrade, or the app's records)");
        return;
    }
    vout.len = 0;
    app_json(&vout);
    mock_answer_json(req, 200, 0, vout.p, vout.len);
}

/* ---- entry points -------------------------------------------------------------------------------------------- */

bool mock_voice_handle(sb_http_req_t *req, sb_str_t path)
{
    if (sb_str_eq_cstr(path, "/_mock/voice-app")) {
        control_voice_app(req);
        return true;
    }
    if (sb_str_has_prefix(path, SB_STR("/_mock/calls")) &&
        (path.len == 12 || path.p[12] == '/')) {
        control_calls(req, sb_str(path.p + 12, path.len - 12));
        return true;
    }
    if (!sb_str_has_prefix(path, SB_STR(TWILIO_PREFIX)))
        return false;
    sb_str_t rest = sb_str(path.p + sizeof TWILIO_PREFIX - 1, path.len - (sizeof TWILIO_PREFIX - 1));
    const char *slash = memchr(rest.p, '/', rest.len);
    if (!slash)
        return false;
    sb_str_t account = sb_str(rest.p, (size_t)(slash - rest.p));
    sb_str_t tail = sb_str(slash, rest.len - (size_t)(slash - rest.p));
    if (sb_str_eq_cstr(tail, "/Calls.json")) {
        if (sb_http_req_method(req) != SB_HTTP_POST)
            mock_twilio_error(req, 405, 20004, "Method not allowed");
        else
            calls_create(req, account);
        return true;
    }
    if (sb_str_has_prefix(tail, SB_STR("/Calls/")) && tail.len > 12 &&
        memcmp(tail.p + tail.len - 5, ".json", 5) == 0) {
        sb_str_t sid = sb_str(tail.p + 7, tail.len - 12);
        if (memchr(sid.p, '/', sid.len))
            return false;
        if (sb_http_req_method(req) != SB_HTTP_POST && sb_http_req_method(req) != SB_HTTP_GET)
            mock_twilio_error(req, 405, 20004, "Method not allowed");
        else
            calls_update(req, path, account, sid);
        return true;
    }
    return false;
}

void mock_voice_init(uv_loop_t *l, sb_http_client_t *c)
{
    loop = l;
    client = c;
    sb_list_init(&ticking);
    sb_list_init(&sessions);
    sb_buf_init(&vout);
    sb_buf_init(&frame_buf);
    sb_buf_init(&scratch);
    tone_init();
    uv_timer_init(loop, &tick);
    wsctx = sb_wsclient_ctx_new(loop);
    if (!wsctx)
        sb_log_warn("voice: no WebSocket client: calls cannot open Media Streams");
}

void mock_voice_reset(void)
{
    for (size_t i = 0; i < ncalls; i++) {
        call_t *c = calls[i];
        c->forgotten = true;
        call_unschedule(c);
        c->cbq_len = 0;
        if (c->ws)
            sb_wsclient_close(c->ws, 1001, "mock reset");
        call_unref(c);
    }
    ncalls = 0;
    memset(&cb_stats, 0, sizeof cb_stats);
    while (!sb_list_empty(&sessions)) {
        app_sess_t *s = sb_container_of(sessions.next, app_sess_t, link);
        if (s->ws)
            sb_wsconn_close(s->ws, 1001, "mock reset");
        sess_forget(s);
    }
    app_refused = 0;
}

void mock_voice_stop(void)
{
    stopping = true;
    mock_voice_reset();
    uv_timer_stop(&tick);
    uv_close((uv_handle_t *)&tick, NULL);
    if (wsctx)
        sb_wsclient_ctx_free(wsctx); /* every stream's on_close runs, dropping its reference */
    wsctx = NULL;
    free(calls);
    calls = NULL;
    cap_calls = 0;
    sb_buf_cleanup(&vout);
    sb_buf_cleanup(&frame_buf);
    sb_buf_cleanup(&scratch);
}
