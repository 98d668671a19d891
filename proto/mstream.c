/* Twilio Media Streams frames; see mstream.h.
 *
 * One pass over the frame by recursive descent, bounded by SB_MS_MAX_DEPTH (so the stack is bounded too). The
 * objects the gateway reads (the top level, and "start", "media", "dtmf", "mark", "stop" inside it) are each
 * described by a small table: the keys it knows, the field each one fills and the kind of value it must hold. Any
 * other key's value is validated and skipped. Fields are collected by number into the scan state whatever the event
 * says (the event may come last); once the whole text is known to be good, the event's own fields are copied out and
 * the direction's rules (allowed events, required fields) applied. A known key holding the wrong kind of value is
 * refused wherever it appears, even in an object the event does not use: a frame the relay forwards unchanged must
 * not mean one thing to us and another to the far end.
 *
 * Strings are read in place: a string without escapes is a view into the frame. The first escape switches that
 * string to decoding into the scratch buffer, which was reserved to the frame's length before the scan so that it
 * never moves and views into it stay valid (a decoded string is never longer than its JSON text, and strings do not
 * overlap, so the frame's length is enough for all of them). Validating UTF-8 inside strings validates the whole
 * text: outside strings, JSON is ASCII. A byte class table makes the common case, printable ASCII, one load and one
 * compare per byte. */
#include "proto/mstream.h"

#include "proto/err.h"
#include "proto/line.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#define MS_MAX_INT ((int64_t)1 << 53) /* the largest number a JSON reader with doubles carries exactly */

/* ---- byte classes --------------------------------------------------------------------------------------------- */

enum { C_PLAIN, C_QUOTE, C_BACKSLASH, C_CONTROL, C_HIGH };

#define ROW(x) x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x

/* What a byte means inside a JSON string. */
static const unsigned char str_class[256] = {
    ROW(C_CONTROL), ROW(C_CONTROL),                                 /* 0x00-0x1f: must be escaped */
    0, 0, C_QUOTE, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,           /* 0x20-0x2f */
    ROW(0), ROW(0),                                                 /* 0x30-0x4f */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, C_BACKSLASH, 0, 0, 0,       /* 0x50-0x5f */
    ROW(0), ROW(0),                                                 /* 0x60-0x7f (DEL needs no escape) */
    ROW(C_HIGH), ROW(C_HIGH), ROW(C_HIGH), ROW(C_HIGH),             /* 0x80-0xff: UTF-8, checked per sequence */
    ROW(C_HIGH), ROW(C_HIGH), ROW(C_HIGH), ROW(C_HIGH),
};

/* The base64 alphabet (RFC 4648 §4), '=' excluded. */
static const unsigned char b64_char[256] = {
    ROW(0), ROW(0),
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, /* '+' '/' */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, /* '0'-'9' */
    0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 'A'-'O' */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, /* 'P'-'Z' */
    0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 'a'-'o' */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, /* 'p'-'z' */
};

#undef ROW

/* SWAR (eight bytes in a uint64_t): whether any byte of w is below 0x20, or equal to a or to b. Exact as a yes/no
 * (the borrows that make these tests imprecise about *which* byte matched never make a false "yes"). */
#define ONES UINT64_C(0x0101010101010101)
#define HIGHS UINT64_C(0x8080808080808080)
static inline bool any_ctl_or(uint64_t w, unsigned char a, unsigned char b)
{
    uint64_t xa = w ^ (ONES * a), xb = w ^ (ONES * b);
    return (((w - ONES * 0x20) & ~w) | ((xa - ONES) & ~xa) | ((xb - ONES) & ~xb)) & HIGHS;
}

static inline uint64_t load8(const unsigned char *p)
{
    uint64_t w;
    memcpy(&w, p, 8);
    return w;
}

static bool is_ws(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static bool is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

/* ---- the fields a frame may carry ----------------------------------------------------------------------------- */

enum field {
    F_EVENT, F_SEQ, F_SID,
    F_START, F_MEDIA, F_DTMF, F_MARK, F_STOP,
    F_START_ACCOUNT, F_START_SID, F_START_CALL, F_START_PARAMS,
    F_MEDIA_TRACK, F_MEDIA_CHUNK, F_MEDIA_TS, F_MEDIA_PAYLOAD,
    F_DTMF_TRACK, F_DTMF_DIGIT,
    F_MARK_NAME,
    F_STOP_ACCOUNT, F_STOP_CALL,
    F_COUNT
};

/* Each field's path, as error messages name it. */
static const char *const field_path[F_COUNT] = {
    [F_EVENT] = "event", [F_SEQ] = "sequenceNumber", [F_SID] = "streamSid",
    [F_START] = "start", [F_MEDIA] = "media", [F_DTMF] = "dtmf", [F_MARK] = "mark", [F_STOP] = "stop",
    [F_START_ACCOUNT] = "start.accountSid", [F_START_SID] = "start.streamSid", [F_START_CALL] = "start.callSid",
    [F_START_PARAMS] = "start.customParameters",
    [F_MEDIA_TRACK] = "media.track", [F_MEDIA_CHUNK] = "media.chunk", [F_MEDIA_TS] = "media.timestamp",
    [F_MEDIA_PAYLOAD] = "media.payload",
    [F_DTMF_TRACK] = "dtmf.track", [F_DTMF_DIGIT] = "dtmf.digit",
    [F_MARK_NAME] = "mark.name",
    [F_STOP_ACCOUNT] = "stop.accountSid", [F_STOP_CALL] = "stop.callSid",
};

enum kind {
    K_STR,    /* a string */
    K_INT,    /* a non-negative integer up to 2^53, as a number or as a string of decimal digits */
    K_B64,    /* a non-empty string of base64 text */
    K_OBJ,    /* an object with keys of its own */
    K_PARAMS, /* an object of string values, kept in order */
};

typedef struct ms_key {
    const char *name;
    unsigned char len, field, kind;
    const struct ms_key *inner; /* K_OBJ: the object's keys */
} ms_key_t;

#define KEY(s, f, k, in) {s, sizeof(s) - 1, f, k, in}
#define END {NULL, 0, 0, 0, NULL}

static const ms_key_t start_keys[] = {
    KEY("accountSid", F_START_ACCOUNT, K_STR, NULL), KEY("streamSid", F_START_SID, K_STR, NULL),
    KEY("callSid", F_START_CALL, K_STR, NULL), KEY("customParameters", F_START_PARAMS, K_PARAMS, NULL), END};
static const ms_key_t media_keys[] = {
    KEY("track", F_MEDIA_TRACK, K_STR, NULL), KEY("chunk", F_MEDIA_CHUNK, K_INT, NULL),
    KEY("timestamp", F_MEDIA_TS, K_INT, NULL), KEY("payload", F_MEDIA_PAYLOAD, K_B64, NULL), END};
static const ms_key_t dtmf_keys[] = {
    KEY("track", F_DTMF_TRACK, K_STR, NULL), KEY("digit", F_DTMF_DIGIT, K_STR, NULL), END};
static const ms_key_t mark_keys[] = {KEY("name", F_MARK_NAME, K_STR, NULL), END};
static const ms_key_t stop_keys[] = {
    KEY("accountSid", F_STOP_ACCOUNT, K_STR, NULL), KEY("callSid", F_STOP_CALL, K_STR, NULL), END};
static const ms_key_t top_keys[] = {
    KEY("event", F_EVENT, K_STR, NULL),        KEY("sequenceNumber", F_SEQ, K_INT, NULL),
    KEY("streamSid", F_SID, K_STR, NULL),      KEY("media", F_MEDIA, K_OBJ, media_keys),
    KEY("mark", F_MARK, K_OBJ, mark_keys),     KEY("start", F_START, K_OBJ, start_keys),
    KEY("dtmf", F_DTMF, K_OBJ, dtmf_keys),     KEY("stop", F_STOP, K_OBJ, stop_keys),
    END};

#undef KEY
#undef END

static const ms_key_t *find_key(const ms_key_t *keys, sb_str_t k)
{
    for (; keys->name; keys++) /* the first byte first: it tells every key of a table from the others but one */
        if (keys->len == k.len && keys->name[0] == k.p[0] && memcmp(keys->name, k.p, k.len) == 0)
            return keys;
    return NULL;
}

/* ---- the scan ------------------------------------------------------------------------------------------------- */

typedef struct scan {
    const unsigned char *p;
    size_t n, i;        /* the frame's length, the read position */
    sb_buf_t *scratch;  /* reserved to n bytes: decoded strings go at scratch->p + scratch->len */
    char *err;
    size_t errlen;
    uint32_t seen;      /* bit f: field f was read; str[f] / num[f] are set only then */
    sb_str_t str[F_COUNT];
    int64_t num[F_COUNT];
    sb_ms_param_t *params; /* the frame's, filled as read */
    size_t nparams;
} scan_t;

static int fail(scan_t *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int fail(scan_t *s, const char *fmt, ...)
{
    if (s->errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(s->err, s->errlen, fmt, ap);
        va_end(ap);
    }
    return SB_EPARSE;
}

/* A syntax error: the text is not (strict) JSON at byte at, counted from 0. */
static int bad(scan_t *s, size_t at, const char *why)
{
    return fail(s, "not JSON at byte %zu: %s", at, why);
}

static void skip_ws(scan_t *s)
{
    while (s->i < s->n && is_ws(s->p[s->i]))
        s->i++;
}

static int hex4(const unsigned char *p)
{
    int v = 0;
    for (int k = 0; k < 4; k++) {
        unsigned char c = p[k];
        int d = is_digit(c) ? c - '0' : (c | 0x20) >= 'a' && (c | 0x20) <= 'f' ? (c | 0x20) - 'a' + 10 : -1;
        if (d < 0)
            return -1;
        v = v << 4 | d;
    }
    return v;
}

static size_t put_utf8(char *o, unsigned cp)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xc0 | cp >> 6);
        o[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xe0 | cp >> 12);
        o[1] = (char)(0x80 | (cp >> 6 & 0x3f));
        o[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    o[0] = (char)(0xf0 | cp >> 18);
    o[1] = (char)(0x80 | (cp >> 12 & 0x3f));
    o[2] = (char)(0x80 | (cp >> 6 & 0x3f));
    o[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/* Reads the escape whose backslash is at p[i]: stores the code point in *cp and the escape's length in *len.
 * A \uXXXX high surrogate must be followed at once by a \uXXXX low one; the pair is one code point. */
static int scan_escape(scan_t *s, size_t i, unsigned *cp, size_t *len)
{
    const unsigned char *p = s->p;
    if (s->n - i < 2)
        return bad(s, i, "unterminated string");
    switch (p[i + 1]) {
    case '"': *cp = '"'; break;
    case '\\': *cp = '\\'; break;
    case '/': *cp = '/'; break;
    case 'b': *cp = '\b'; break;
    case 'f': *cp = '\f'; break;
    case 'n': *cp = '\n'; break;
    case 'r': *cp = '\r'; break;
    case 't': *cp = '\t'; break;
    case 'u': {
        int hi = s->n - i >= 6 ? hex4(p + i + 2) : -1;
        if (hi < 0)
            return bad(s, i, "bad \\u escape");
        if (hi >= 0xdc00 && hi <= 0xdfff)
            return bad(s, i, "lone surrogate");
        if (hi < 0xd800 || hi > 0xdbff) {
            *cp = (unsigned)hi;
            *len = 6;
            return 0;
        }
        int lo = s->n - i >= 12 && p[i + 6] == '\\' && p[i + 7] == 'u' ? hex4(p + i + 8) : -1;
        if (lo < 0xdc00 || lo > 0xdfff)
            return bad(s, i, "lone surrogate");
        *cp = 0x10000 + ((unsigned)(hi - 0xd800) << 10) + (unsigned)(lo - 0xdc00);
        *len = 12;
        return 0;
    }
    default:
        return bad(s, i, "bad escape");
    }
    *len = 2;
    return 0;
}

/* Scans the string whose opening quote is at s->i. With out, stores its value there: a view into the frame when it
 * holds no escape, else its decoded bytes appended to the scratch buffer. Without out, only validates it. */
static int scan_string(scan_t *s, sb_str_t *out)
{
    const unsigned char *p = s->p;
    size_t n = s->n, start = ++s->i, i = start, run = start;
    char *o = NULL, *begin = NULL; /* decoding: where the next byte goes, where this string's value starts */

    for (;;) {
        /* eight bytes at a time while they are all printable ASCII without '"' or '\\' */
        while (n - i >= 8) {
            uint64_t w = load8(p + i);
            if ((w & HIGHS) || any_ctl_or(w, '"', '\\'))
                break;
            i += 8;
        }
        while (i < n && str_class[p[i]] == C_PLAIN)
            i++;
        if (i == n)
            return bad(s, start - 1, "unterminated string");
        switch (str_class[p[i]]) {
        case C_QUOTE:
            if (o) {
                memcpy(o, p + run, i - run);
                o += i - run;
                *out = sb_str(begin, (size_t)(o - begin));
                s->scratch->len = (size_t)(o - s->scratch->p);
            } else if (out) {
                *out = sb_str((const char *)p + start, i - start);
            }
            s->i = i + 1;
            return 0;
        case C_CONTROL:
            return bad(s, i, "control byte in a string");
        case C_HIGH: {
            unsigned c = p[i];
            size_t k = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 1;
            if (k == 1 || n - i < k || !sb_utf8_valid((const char *)p + i, k))
                return bad(s, i, "invalid UTF-8");
            i += k;
            break;
        }
        default: { /* C_BACKSLASH */
            unsigned cp = 0;
            size_t len = 0;
            int rc = scan_escape(s, i, &cp, &len);
            if (rc)
                return rc;
            if (out) {
                if (!o)
                    o = begin = s->scratch->p + s->scratch->len;
                memcpy(o, p + run, i - run);
                o += i - run;
                o += put_utf8(o, cp);
            }
            i += len;
            run = i;
            break;
        }
        }
    }
}

/* Scans a number (RFC 8259 §6) at s->i. *plain: it is digits alone (no sign, fraction or exponent). */
static int scan_number(scan_t *s, bool *plain)
{
    const unsigned char *p = s->p;
    size_t n = s->n, i = s->i;

    *plain = true;
    if (p[i] == '-') {
        *plain = false;
        i++;
    }
    if (i == n || !is_digit(p[i]))
        return bad(s, i, "bad number");
    if (p[i] == '0') {
        if (++i < n && is_digit(p[i]))
            return bad(s, i - 1, "leading zero");
    } else {
        while (i < n && is_digit(p[i]))
            i++;
    }
    if (i < n && p[i] == '.') {
        *plain = false;
        if (++i == n || !is_digit(p[i]))
            return bad(s, i, "bad number");
        while (i < n && is_digit(p[i]))
            i++;
    }
    if (i < n && (p[i] == 'e' || p[i] == 'E')) {
        *plain = false;
        if (++i < n && (p[i] == '+' || p[i] == '-'))
            i++;
        if (i == n || !is_digit(p[i]))
            return bad(s, i, "bad number");
        while (i < n && is_digit(p[i]))
            i++;
    }
    s->i = i;
    return 0;
}

/* The value of len decimal digits at d (no sign, no leading zero), or -1 if that is not what d holds or the value is
 * above 2^53. */
static int64_t safe_int(const char *d, size_t len)
{
    if (len == 0 || len > 16 || (d[0] == '0' && len > 1))
        return -1;
    int64_t v = 0;
    for (size_t k = 0; k < len; k++) {
        if (!is_digit((unsigned char)d[k]))
            return -1;
        v = v * 10 + (d[k] - '0');
    }
    return v <= MS_MAX_INT ? v : -1;
}

static bool is_b64(sb_str_t s)
{
    size_t n = s.len;
    if (n == 0 || n % 4)
        return false;
    const unsigned char *p = (const unsigned char *)s.p;
    if (p[n - 1] == '=')
        n -= p[n - 2] == '=' ? 2 : 1;
    unsigned ok = 1;
    size_t k = 0;
    for (; n - k >= 4; k += 4) /* no branch per byte: the payload is most of a media frame */
        ok &= b64_char[p[k]] & b64_char[p[k + 1]] & b64_char[p[k + 2]] & b64_char[p[k + 3]];
    for (; k < n; k++)
        ok &= b64_char[p[k]];
    return ok;
}

static int scan_literal(scan_t *s, const char *lit, size_t len)
{
    if (s->n - s->i < len || memcmp(s->p + s->i, lit, len) != 0)
        return bad(s, s->i, "unexpected byte");
    s->i += len;
    return 0;
}

/* After a key: optional blanks, ':', optional blanks. */
static int scan_colon(scan_t *s)
{
    skip_ws(s);
    if (s->i == s->n || s->p[s->i] != ':')
        return bad(s, s->i, "expected ':'");
    s->i++;
    skip_ws(s);
    return 0;
}

/* After a member or element: optional blanks, then ',' (true in *more) or the closing byte. A ',' followed by the
 * closing byte is a trailing comma, which JSON does not have. */
static int scan_next(scan_t *s, unsigned char close, bool *more)
{
    skip_ws(s);
    if (s->i == s->n)
        return bad(s, s->i, "unexpected end");
    if (s->p[s->i] == close) {
        s->i++;
        *more = false;
        return 0;
    }
    if (s->p[s->i] != ',')
        return bad(s, s->i, close == '}' ? "expected ',' or '}'" : "expected ',' or ']'");
    s->i++;
    skip_ws(s);
    if (s->i < s->n && s->p[s->i] == close)
        return bad(s, s->i, "trailing comma");
    *more = true;
    return 0;
}

/* Opens the object or array at s->i, which sits at depth (the top level is 1). *empty: it closed at once. */
static int scan_open(scan_t *s, int depth, bool *empty)
{
    if (depth > SB_MS_MAX_DEPTH)
        return bad(s, s->i, "nested deeper than " SB_STRINGIFY(SB_MS_MAX_DEPTH));
    unsigned char close = s->p[s->i] == '{' ? '}' : ']';
    s->i++;
    skip_ws(s);
    *empty = s->i < s->n && s->p[s->i] == close;
    if (*empty)
        s->i++;
    return 0;
}

static int skip_value(scan_t *s, int depth);

/* Validates the object or array at s->i, at depth, and everything in it. */
static int skip_container(scan_t *s, int depth)
{
    bool obj = s->p[s->i] == '{', more;
    int rc = scan_open(s, depth, &more);
    if (rc || more)
        return rc;
    do {
        if (obj) {
            if (s->i == s->n || s->p[s->i] != '"')
                return bad(s, s->i, "expected a key");
            if ((rc = scan_string(s, NULL)) || (rc = scan_colon(s)))
                return rc;
        }
        if ((rc = skip_value(s, depth + 1)) || (rc = scan_next(s, obj ? '}' : ']', &more)))
            return rc;
    } while (more);
    return 0;
}

/* Validates the value at s->i, which sits at depth, without keeping anything of it. */
static int skip_value(scan_t *s, int depth)
{
    bool plain;
    if (s->i == s->n)
        return bad(s, s->i, "unexpected end");
    switch (s->p[s->i]) {
    case '"':
        return scan_string(s, NULL);
    case '{':
    case '[':
        return skip_container(s, depth);
    case 't':
        return scan_literal(s, "true", 4);
    case 'f':
        return scan_literal(s, "false", 5);
    case 'n':
        return scan_literal(s, "null", 4);
    case '-':
    case '0': case '1': case '2': case '3': case '4': case '5': case '6': case '7': case '8': case '9':
        return scan_number(s, &plain);
    default:
        return bad(s, s->i, "unexpected byte");
    }
}

/* start.customParameters at s->i: an object of string values, kept in order, names unique. */
static int read_params(scan_t *s, int depth)
{
    bool more;
    int rc = scan_open(s, depth, &more);
    if (rc || more)
        return rc;
    do {
        sb_str_t name, value;
        if (s->i == s->n || s->p[s->i] != '"')
            return bad(s, s->i, "expected a key");
        if ((rc = scan_string(s, &name)) || (rc = scan_colon(s)))
            return rc;
        if (s->i == s->n || s->p[s->i] != '"') {
            if ((rc = skip_value(s, depth + 1)))
                return rc;
            return fail(s, "start.customParameters: a value is not a string");
        }
        if ((rc = scan_string(s, &value)))
            return rc;
        if (s->nparams == SB_MS_MAX_PARAMS)
            return fail(s, "start.customParameters: more than " SB_STRINGIFY(SB_MS_MAX_PARAMS) " entries");
        for (size_t k = 0; k < s->nparams; k++)
            if (sb_str_eq(s->params[k].name, name))
                return fail(s, "start.customParameters: duplicate name");
        s->params[s->nparams++] = (sb_ms_param_t){name, value};
        if ((rc = scan_next(s, '}', &more)))
            return rc;
    } while (more);
    return 0;
}

static int read_object(scan_t *s, const ms_key_t *keys, int depth);

/* The value of known key k at s->i, in an object at depth. */
static int read_field(scan_t *s, const ms_key_t *k, int depth)
{
    unsigned f = k->field;
    unsigned char c = s->i < s->n ? s->p[s->i] : 0;
    int rc;

    switch (k->kind) {
    case K_STR:
    case K_B64:
        if (c != '"')
            break;
        if ((rc = scan_string(s, &s->str[f])))
            return rc;
        if (k->kind == K_B64 && !is_b64(s->str[f]))
            return fail(s, "%s is not base64", field_path[f]);
        return 0;
    case K_INT: {
        size_t at = s->i;
        sb_str_t digits;
        bool plain = false;
        if (c == '"') {
            if ((rc = scan_string(s, &digits)))
                return rc;
        } else if (c == '-' || is_digit(c)) {
            if ((rc = scan_number(s, &plain)))
                return rc;
            if (!plain)
                return fail(s, "%s is not an integer from 0 to 2^53", field_path[f]);
            digits = sb_str((const char *)s->p + at, s->i - at);
        } else {
            break;
        }
        if ((s->num[f] = safe_int(digits.p, digits.len)) < 0)
            return fail(s, "%s is not an integer from 0 to 2^53", field_path[f]);
        return 0;
    }
    case K_OBJ:
        if (c != '{')
            break;
        return read_object(s, k->inner, depth + 1);
    default: /* K_PARAMS */
        if (c != '{')
            break;
        return read_params(s, depth + 1);
    }
    /* the wrong kind of value: still JSON, or the error is a syntax error */
    if ((rc = skip_value(s, depth + 1)))
        return rc;
    return fail(s, "%s is not %s", field_path[f],
                k->kind == K_INT ? "an integer from 0 to 2^53" : k->kind >= K_OBJ ? "an object" : "a string");
}

/* The object at s->i, at depth, whose known keys are keys. */
static int read_object(scan_t *s, const ms_key_t *keys, int depth)
{
    bool more;
    int rc = scan_open(s, depth, &more);
    if (rc || more)
        return rc;
    do {
        sb_str_t name;
        if (s->i == s->n || s->p[s->i] != '"')
            return bad(s, s->i, "expected a key");
        size_t mark = s->scratch->len; /* a key decoded into scratch is dropped once looked up */
        if ((rc = scan_string(s, &name)) || (rc = scan_colon(s)))
            return rc;
        const ms_key_t *k = find_key(keys, name);
        s->scratch->len = mark;
        if (!k) {
            rc = skip_value(s, depth + 1);
        } else if (s->seen & 1u << k->field) {
            return fail(s, "duplicate \"%s\"", field_path[k->field]);
        } else {
            rc = read_field(s, k, depth);
            s->seen |= 1u << k->field;
        }
        if (rc || (rc = scan_next(s, '}', &more)))
            return rc;
    } while (more);
    return 0;
}

/* ---- events and directions ------------------------------------------------------------------------------------ */

static const char *const event_names[] = {
    [SB_MS_CONNECTED] = "connected", [SB_MS_START] = "start", [SB_MS_MEDIA] = "media", [SB_MS_DTMF] = "dtmf",
    [SB_MS_MARK] = "mark",           [SB_MS_STOP] = "stop",   [SB_MS_CLEAR] = "clear",
};

static const unsigned char event_lens[] = {
    [SB_MS_CONNECTED] = 9, [SB_MS_START] = 5, [SB_MS_MEDIA] = 5, [SB_MS_DTMF] = 4,
    [SB_MS_MARK] = 4,      [SB_MS_STOP] = 4,  [SB_MS_CLEAR] = 5,
};

#define EV(e) (1u << (e))
static const unsigned from_twilio = EV(SB_MS_CONNECTED) | EV(SB_MS_START) | EV(SB_MS_MEDIA) | EV(SB_MS_DTMF) |
                                    EV(SB_MS_MARK) | EV(SB_MS_STOP);
static const unsigned from_app = EV(SB_MS_MEDIA) | EV(SB_MS_MARK) | EV(SB_MS_CLEAR);

const char *sb_ms_event_name(sb_ms_event_t e)
{
    return e >= SB_MS_CONNECTED && e <= SB_MS_CLEAR ? event_names[e] : NULL;
}

static void frame_reset(sb_ms_frame_t *f)
{
    sb_str_t none = sb_str("", 0);
    f->event = 0;
    f->seq = f->chunk = f->timestamp = -1;
    f->stream_sid = f->call_sid = f->account_sid = f->track = f->payload = f->name = f->digit = none;
    f->nparams = 0;
}

/* A required string: present and not empty. */
static int need(scan_t *s, unsigned f, const char *what)
{
    if (!(s->seen & 1u << f))
        return fail(s, "%s", what);
    if (s->str[f].len == 0)
        return fail(s, "%s is empty", field_path[f]);
    return 0;
}

static sb_str_t opt_str(const scan_t *s, unsigned f)
{
    return s->seen & 1u << f ? s->str[f] : sb_str("", 0);
}

static int64_t opt_num(const scan_t *s, unsigned f)
{
    return s->seen & 1u << f ? s->num[f] : -1;
}

/* Applies the direction's rules to a well-formed frame and copies the event's fields into f. */
static int finish(scan_t *s, sb_ms_from_t from, sb_ms_frame_t *f)
{
    sb_ms_event_t e = 0;
    int rc;

    if (!(s->seen & 1u << F_EVENT))
        return fail(s, "missing event");
    for (unsigned k = SB_MS_CONNECTED; k <= SB_MS_CLEAR && !e; k++)
        if (s->str[F_EVENT].len == event_lens[k] && memcmp(s->str[F_EVENT].p, event_names[k], event_lens[k]) == 0)
            e = (sb_ms_event_t)k;
    if (!e) {
        char shown[33];
        size_t n = s->str[F_EVENT].len < 32 ? s->str[F_EVENT].len : 32;
        for (size_t k = 0; k < n; k++) {
            unsigned char c = (unsigned char)s->str[F_EVENT].p[k];
            shown[k] = c >= 0x20 && c < 0x7f && c != '\'' ? (char)c : '?';
        }
        shown[n] = '\0';
        return fail(s, "unknown event '%s'", shown);
    }
    if (!((from == SB_MS_FROM_APP ? from_app : from_twilio) & EV(e)))
        return fail(s, "event '%s' is not one %s sends", event_names[e],
                    from == SB_MS_FROM_APP ? "the app" : "Twilio");
    if (e == SB_MS_CONNECTED) {
        f->event = e;
        return 0;
    }

    if (e == SB_MS_START) {
        if (!(s->seen & 1u << F_START))
            return fail(s, "missing start");
        if ((rc = need(s, F_START_SID, "start: missing streamSid")) ||
            (rc = need(s, F_START_CALL, "start: missing callSid")))
            return rc;
        if (s->seen & 1u << F_SID && !sb_str_eq(s->str[F_SID], s->str[F_START_SID]))
            return fail(s, "streamSid and start.streamSid differ");
        f->stream_sid = s->str[F_START_SID];
    } else {
        if ((rc = need(s, F_SID, "missing streamSid")))
            return rc;
        f->stream_sid = s->str[F_SID];
    }
    if (from == SB_MS_FROM_TWILIO && !(s->seen & 1u << F_SEQ))
        return fail(s, "missing sequenceNumber");
    f->seq = opt_num(s, F_SEQ);

    switch (e) {
    case SB_MS_START:
        f->account_sid = opt_str(s, F_START_ACCOUNT);
        f->call_sid = s->str[F_START_CALL];
        f->nparams = s->nparams;
        break;
    case SB_MS_MEDIA:
        if (!(s->seen & 1u << F_MEDIA))
            return fail(s, "missing media");
        if (!(s->seen & 1u << F_MEDIA_PAYLOAD))
            return fail(s, "media: missing payload");
        f->track = opt_str(s, F_MEDIA_TRACK);
        f->chunk = opt_num(s, F_MEDIA_CHUNK);
        f->timestamp = opt_num(s, F_MEDIA_TS);
        f->payload = s->str[F_MEDIA_PAYLOAD];
        break;
    case SB_MS_DTMF:
        if (!(s->seen & 1u << F_DTMF))
            return fail(s, "missing dtmf");
        if ((rc = need(s, F_DTMF_DIGIT, "dtmf: missing digit")))
            return rc;
        f->track = opt_str(s, F_DTMF_TRACK);
        f->digit = s->str[F_DTMF_DIGIT];
        break;
    case SB_MS_MARK:
        if (!(s->seen & 1u << F_MARK))
            return fail(s, "missing mark");
        if ((rc = need(s, F_MARK_NAME, "mark: missing name")))
            return rc;
        f->name = s->str[F_MARK_NAME];
        break;
    case SB_MS_STOP:
        f->account_sid = opt_str(s, F_STOP_ACCOUNT);
        f->call_sid = opt_str(s, F_STOP_CALL);
        break;
    default: /* clear */
        break;
    }
    f->event = e;
    return 0;
}

int sb_ms_parse(sb_str_t text, sb_ms_from_t from, sb_ms_frame_t *f, sb_buf_t *scratch, char *err, size_t errlen)
{
    scan_t s;
    int rc;

    frame_reset(f);
    if (errlen)
        err[0] = '\0';
    scratch->len = 0;
    sb_buf_reserve(scratch, text.len);
    s.p = (const unsigned char *)text.p;
    s.n = text.len;
    s.i = 0;
    s.scratch = scratch;
    s.err = err;
    s.errlen = errlen;
    s.seen = 0;
    s.params = f->params;
    s.nparams = 0;

    skip_ws(&s);
    if (s.i == s.n || s.p[s.i] != '{') {
        rc = fail(&s, "not a JSON object");
        goto fail;
    }
    if ((rc = read_object(&s, top_keys, 1)))
        goto fail;
    skip_ws(&s);
    if (s.i != s.n) {
        rc = bad(&s, s.i, "trailing bytes");
        goto fail;
    }
    if ((rc = finish(&s, from, f)))
        goto fail;
    scratch->p[scratch->len] = '\0';
    return 0;

fail:
    frame_reset(f);
    scratch->len = 0;
    scratch->p[0] = '\0';
    return rc;
}

/* ---- writers -------------------------------------------------------------------------------------------------- */

#define PUT(out, lit) sb_buf_append((out), (lit), sizeof(lit) - 1)

/* Appends v JSON-escaped, exactly as sb_buf_json_escape does, but in one copy when nothing needs an escape (a SID,
 * a base64 payload: nearly always). */
static void put_escaped(sb_buf_t *out, sb_str_t v)
{
    const unsigned char *p = (const unsigned char *)v.p;
    size_t k = 0;
    for (; v.len - k >= 8; k += 8)
        if (any_ctl_or(load8(p + k), '"', '\\') || any_ctl_or(load8(p + k), 0x7f, 0x7f))
            break;
    for (; k < v.len; k++)
        if (p[k] < 0x20 || p[k] == '"' || p[k] == '\\' || p[k] == 0x7f)
            break;
    if (k == v.len)
        sb_buf_append(out, v.p, v.len);
    else
        sb_buf_json_escape(out, v);
}

/* key"value" (key a literal: the leading comma if any, the quoted name and the colon) */
static void put_str(sb_buf_t *out, const char *key, size_t klen, sb_str_t v)
{
    sb_buf_reserve(out, klen + v.len + 2);
    memcpy(out->p + out->len, key, klen);
    out->p[out->len + klen] = '"';
    out->len += klen + 1;
    put_escaped(out, v);
    PUT(out, "\"");
}

/* key"digits" */
static void put_num(sb_buf_t *out, const char *key, size_t klen, int64_t v)
{
    char t[24];
    size_t n = sb_i64_text(t, v);
    sb_buf_reserve(out, klen + n + 2);
    char *o = out->p + out->len;
    memcpy(o, key, klen);
    o[klen] = '"';
    memcpy(o + klen + 1, t, n);
    o[klen + 1 + n] = '"';
    o[klen + 2 + n] = '\0';
    out->len += klen + n + 2;
}

#define STR(out, key, v) put_str((out), (key), sizeof(key) - 1, (v))
#define NUM(out, key, v) put_num((out), (key), sizeof(key) - 1, (v))

void sb_ms_write_connected(sb_buf_t *out)
{
    PUT(out, "{\"event\":\"connected\",\"protocol\":\"Call\",\"version\":\"1.0.0\"}");
}

void sb_ms_write_start(sb_buf_t *out, int64_t seq, sb_str_t stream_sid, sb_str_t account_sid, sb_str_t call_sid,
                       const sb_ms_param_t *params, size_t nparams)
{
    PUT(out, "{\"event\":\"start\"");
    if (seq >= 0)
        NUM(out, ",\"sequenceNumber\":", seq);
    PUT(out, ",\"start\":{");
    if (account_sid.len) {
        STR(out, "\"accountSid\":", account_sid);
        PUT(out, ",");
    }
    STR(out, "\"streamSid\":", stream_sid);
    STR(out, ",\"callSid\":", call_sid);
    PUT(out, ",\"tracks\":[\"inbound\"],\"mediaFormat\":{\"encoding\":\"audio/x-mulaw\",\"sampleRate\":8000,"
             "\"channels\":1},\"customParameters\":{");
    for (size_t k = 0; k < nparams; k++) {
        if (k)
            PUT(out, ",");
        STR(out, "", params[k].name);
        STR(out, ":", params[k].value);
    }
    PUT(out, "}}");
    STR(out, ",\"streamSid\":", stream_sid);
    PUT(out, "}");
}

void sb_ms_write_media(sb_buf_t *out, int64_t seq, sb_str_t stream_sid, sb_str_t track, int64_t chunk,
                       int64_t timestamp, sb_str_t payload)
{
    sb_buf_reserve(out, 128 + stream_sid.len + track.len + payload.len);
    PUT(out, "{\"event\":\"media\"");
    if (seq >= 0)
        NUM(out, ",\"sequenceNumber\":", seq);
    PUT(out, ",\"media\":{");
    if (track.len) {
        STR(out, "\"track\":", track);
        PUT(out, ",");
    }
    if (chunk >= 0) {
        NUM(out, "\"chunk\":", chunk);
        PUT(out, ",");
    }
    if (timestamp >= 0) {
        NUM(out, "\"timestamp\":", timestamp);
        PUT(out, ",");
    }
    STR(out, "\"payload\":", payload);
    STR(out, "},\"streamSid\":", stream_sid);
    PUT(out, "}");
}

void sb_ms_write_dtmf(sb_buf_t *out, int64_t seq, sb_str_t stream_sid, sb_str_t digit)
{
    PUT(out, "{\"event\":\"dtmf\"");
    STR(out, ",\"streamSid\":", stream_sid);
    if (seq >= 0)
        NUM(out, ",\"sequenceNumber\":", seq);
    STR(out, ",\"dtmf\":{\"track\":\"inbound_track\",\"digit\":", digit);
    PUT(out, "}}");
}

void sb_ms_write_mark(sb_buf_t *out, int64_t seq, sb_str_t stream_sid, sb_str_t name)
{
    PUT(out, "{\"event\":\"mark\"");
    if (seq >= 0)
        NUM(out, ",\"sequenceNumber\":", seq);
    STR(out, ",\"streamSid\":", stream_sid);
    STR(out, ",\"mark\":{\"name\":", name);
    PUT(out, "}}");
}

void sb_ms_write_stop(sb_buf_t *out, int64_t seq, sb_str_t stream_sid, sb_str_t account_sid, sb_str_t call_sid)
{
    PUT(out, "{\"event\":\"stop\"");
    if (seq >= 0)
        NUM(out, ",\"sequenceNumber\":", seq);
    STR(out, ",\"streamSid\":", stream_sid);
    PUT(out, ",\"stop\":{");
    if (account_sid.len) {
        STR(out, "\"accountSid\":", account_sid);
        if (call_sid.len)
            PUT(out, ",");
    }
    if (call_sid.len)
        STR(out, "\"callSid\":", call_sid);
    PUT(out, "}}");
}

void sb_ms_write_app_media(sb_buf_t *out, sb_str_t stream_sid, sb_str_t payload)
{
    sb_buf_reserve(out, 64 + stream_sid.len + payload.len);
    PUT(out, "{\"event\":\"media\"");
    STR(out, ",\"streamSid\":", stream_sid);
    STR(out, ",\"media\":{\"payload\":", payload);
    PUT(out, "}}");
}

void sb_ms_write_clear(sb_buf_t *out, sb_str_t stream_sid)
{
    PUT(out, "{\"event\":\"clear\"");
    STR(out, ",\"streamSid\":", stream_sid);
    PUT(out, "}");
}
