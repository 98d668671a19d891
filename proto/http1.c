/* HTTP/1.1 request head parser, chunked body decoder and percent-decoding; see http1.h.
 *
 * The head is parsed in two passes. The first finds its end with one memchr() per line, checking on the way that
 * every LF follows a CR and that no line starts or ends with a stray CR; it is all an incomplete head costs, and
 * the caller repeats it after each read. The second runs only over a complete head, so it can rely on the head
 * ending in "\r\n\r\n": every scanning loop stops at a byte no character class contains ('\r' at the latest) and
 * needs no bounds check of its own. Character classes are one 256-byte table computed at compile time. */
#include "proto/http1.h"

#include "proto/codec.h"
#include "proto/err.h"

#include <limits.h>
#include <string.h>

/* --- character classes ---------------------------------------------------------------------------------------- */

enum {
    C_TCHAR = 1, /* RFC 9110 tchar: token characters (methods, field names, list tokens) */
    C_VCHAR = 2, /* visible ASCII 0x21..0x7e (request-target) */
    C_FIELD = 4, /* field-value bytes: SP, HTAB, 0x21..0x7e, obs-text 0x80..0xff */
    C_HOST = 8   /* bytes a Host value may hold: unreserved, pct-encoded, sub-delims, ':' and IP-literal brackets */
};

#define IS_ALNUM(c) (((c) >= '0' && (c) <= '9') || ((c) >= 'a' && (c) <= 'z') || ((c) >= 'A' && (c) <= 'Z'))
#define IS_TCHAR(c)                                                                                                  \
    (IS_ALNUM(c) || (c) == '!' || (c) == '#' || (c) == '$' || (c) == '%' || (c) == '&' || (c) == '\'' ||             \
     (c) == '*' || (c) == '+' || (c) == '-' || (c) == '.' || (c) == '^' || (c) == '_' || (c) == '`' || (c) == '|' || \
     (c) == '~')
#define IS_HOST(c)                                                                                                   \
    (IS_ALNUM(c) || (c) == '-' || (c) == '.' || (c) == '_' || (c) == '~' || (c) == '%' || (c) == '!' ||              \
     (c) == '$' || (c) == '&' || (c) == '\'' || (c) == '(' || (c) == ')' || (c) == '*' || (c) == '+' ||              \
     (c) == ',' || (c) == ';' || (c) == '=' || (c) == ':' || (c) == '[' || (c) == ']')
#define CLASS(c)                                                                                                     \
    ((IS_TCHAR(c) ? C_TCHAR : 0) | ((c) >= 0x21 && (c) <= 0x7e ? C_VCHAR : 0) |                                      \
     ((((c) >= 0x20 && (c) != 0x7f) || (c) == '\t') ? C_FIELD : 0) | (IS_HOST(c) ? C_HOST : 0))
#define CLASS4(c) CLASS(c), CLASS((c) + 1), CLASS((c) + 2), CLASS((c) + 3)
#define CLASS16(c) CLASS4(c), CLASS4((c) + 4), CLASS4((c) + 8), CLASS4((c) + 12)
#define CLASS64(c) CLASS16(c), CLASS16((c) + 16), CLASS16((c) + 32), CLASS16((c) + 48)

static const unsigned char cls[256] = {CLASS64(0), CLASS64(64), CLASS64(128), CLASS64(192)};

#define HAS(c, k) (cls[(unsigned char)(c)] & (k))

static inline unsigned char lower(unsigned char c)
{
    return c >= 'A' && c <= 'Z' ? (unsigned char)(c + ('a' - 'A')) : c;
}

/* True if s[0..n) equals the lower-case literal lit[0..n) ASCII case-insensitively. */
static bool ieq(const char *s, const char *lit, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (lower((unsigned char)s[i]) != (unsigned char)lit[i])
            return false;
    return true;
}

#define IEQ_LIT(s, n, lit) ((n) == sizeof(lit) - 1 && ieq((s), (lit), sizeof(lit) - 1))

static inline bool is_ows(char c)
{
    return c == ' ' || c == '\t';
}

/* --- head ------------------------------------------------------------------------------------------------------ */

/* Finds the end of the head in buf[0..lim): returns the offset just past its empty line, 0 if there is none yet, or
 * SB_EPARSE at the first LF not preceded by CR or line starting or ending in a bare CR. *start is set to where the
 * request line begins (after leading empty lines). */
static long head_end(const char *buf, size_t lim, size_t *start)
{
    size_t pos = 0; /* start of the current line */
    bool started = false;

    *start = 0;
    while (pos < lim) {
        const char *lf = memchr(buf + pos, '\n', lim - pos);
        if (!lf)
            return 0;
        size_t i = (size_t)(lf - buf);
        if (i == pos || buf[i - 1] != '\r') /* i == pos: the byte before is the previous LF, or there is none */
            return SB_EPARSE;
        if (i - 1 == pos) { /* an empty line */
            if (started)
                return (long)(i + 1);
            *start = i + 1;
        } else {
            if (buf[pos] == '\r' || buf[i - 2] == '\r')
                return SB_EPARSE; /* a bare CR starting or ending a line: cheap to see now, and never valid */
            started = true;
        }
        pos = i + 1;
    }
    return 0;
}

/* Parses the request line at *pp (a complete head follows, ending at end); advances *pp past its CRLF. */
static int parse_request_line(const char **pp, const char *end, sb_http1_req_t *out)
{
    const char *p = *pp, *s = p;

    while (HAS(*p, C_TCHAR))
        p++;
    if (p == s || p - s > SB_HTTP1_MAX_METHOD || *p != ' ')
        return SB_EPARSE;
    out->method = sb_str(s, (size_t)(p - s));

    s = ++p;
    while (HAS(*p, C_VCHAR))
        p++;
    if (p == s || *p != ' ')
        return SB_EPARSE;
    out->target = sb_str(s, (size_t)(p - s));
    if (s[0] == '/') {
        const char *q = memchr(s, '?', out->target.len);
        if (q) {
            out->path = sb_str(s, (size_t)(q - s));
            out->query = sb_str(q + 1, (size_t)(p - q - 1));
        } else {
            out->path = out->target;
            out->query = sb_str(p, 0);
        }
    } else if (out->target.len == 1 && s[0] == '*' && sb_str_eq_cstr(out->method, "OPTIONS")) {
        out->path = out->target;
        out->query = sb_str(p, 0);
    } else {
        return SB_EPARSE; /* absolute-form, authority-form, "*" with another method, or garbage */
    }

    p++;
    if (end - p < 10 || memcmp(p, "HTTP/", 5) != 0 || p[5] < '0' || p[5] > '9' || p[6] != '.' || p[7] < '0' ||
        p[7] > '9' || p[8] != '\r' || p[9] != '\n')
        return SB_EPARSE;
    if (p[5] != '1' || (p[7] != '0' && p[7] != '1'))
        return SB_ERANGE;
    out->minor = p[7] - '0';
    *pp = p + 10;
    return 0;
}

/* Parses the field line at *pp, "name:" OWS value OWS CRLF, inside a complete head (which ends in CRLF CRLF, so the
 * scan stops in it), into *h; advances *pp past its CRLF. False if malformed: no name, whitespace before the colon,
 * obs-fold (a line starting with SP or HTAB), a control byte or a bare CR. */
static inline bool parse_field_line(const char **pp, sb_http1_header_t *h)
{
    const char *p = *pp, *name = p;
    while (HAS(*p, C_TCHAR))
        p++;
    if (p == name || *p != ':')
        return false;
    h->name = sb_str(name, (size_t)(p - name));
    p++;
    while (is_ows(*p))
        p++;
    const char *v = p;
    while (HAS(*p, C_FIELD))
        p++;
    if (p[0] != '\r' || p[1] != '\n')
        return false;
    const char *vend = p;
    while (vend > v && is_ows(vend[-1]))
        vend--;
    h->value = sb_str(v, (size_t)(vend - v));
    *pp = p + 2;
    return true;
}

enum { CONN_CLOSE = 1, CONN_KEEP_ALIVE = 2, CONN_UPGRADE = 4, EXPECT_CONTINUE = 8 };

/* Walks a list value (RFC 9110 section 5.6.1): elements separated by commas, each trimmed of OWS. */
typedef struct elems {
    const char *p, *end;
    bool done;
} elems_t;

static inline elems_t elems(sb_str_t v)
{
    return (elems_t){v.p, v.p + v.len, false};
}

/* Sets *e to the next element (possibly empty); false once the list is used up. */
static bool elem_next(elems_t *it, sb_str_t *e)
{
    if (it->done)
        return false;
    const char *comma = memchr(it->p, ',', (size_t)(it->end - it->p));
    const char *stop = comma ? comma : it->end;
    *e = sb_str_trim(sb_str(it->p, (size_t)(stop - it->p)));
    if (comma)
        it->p = comma + 1;
    else
        it->done = true;
    return true;
}

/* Connection: a list of tokens; records close, keep-alive and upgrade. Empty elements are ignored, as lists allow;
 * SB_EPARSE on an element that is no token. */
static int parse_connection(sb_str_t v, unsigned *flags)
{
    elems_t it = elems(v);
    sb_str_t e;
    while (elem_next(&it, &e)) {
        for (size_t k = 0; k < e.len; k++)
            if (!HAS(e.p[k], C_TCHAR))
                return SB_EPARSE;
        if (IEQ_LIT(e.p, e.len, "close"))
            *flags |= CONN_CLOSE;
        else if (IEQ_LIT(e.p, e.len, "keep-alive"))
            *flags |= CONN_KEEP_ALIVE;
        else if (IEQ_LIT(e.p, e.len, "upgrade"))
            *flags |= CONN_UPGRADE;
    }
    return 0;
}

/* Expect: a list of expectations; only "100-continue" means anything here, the others are ignored. */
static void parse_expect(sb_str_t v, unsigned *flags)
{
    elems_t it = elems(v);
    sb_str_t e;
    while (elem_next(&it, &e)) {
        if (IEQ_LIT(e.p, e.len, "100-continue"))
            *flags |= EXPECT_CONTINUE;
    }
}

/* Content-Length: 1*DIGIT, or a list of them that all agree (RFC 9110 section 8.6); *cl is -1 or an earlier
 * header's value, which every element must equal. */
static int parse_content_length(sb_str_t v, int64_t *cl)
{
    elems_t it = elems(v);
    sb_str_t e;

    while (elem_next(&it, &e)) {
        if (e.len == 0 || e.len > SB_HTTP1_MAX_CL_DIGITS)
            return SB_EPARSE; /* empty elements are refused here: "5," is not a length */
        int64_t n = 0;
        for (size_t k = 0; k < e.len; k++) {
            if (e.p[k] < '0' || e.p[k] > '9')
                return SB_EPARSE;
            n = n * 10 + (e.p[k] - '0');
        }
        if (*cl != -1 && *cl != n)
            return SB_EPARSE;
        *cl = n;
    }
    return 0;
}

int sb_http1_parse(const char *buf, size_t len, size_t max_head, sb_http1_req_t *out)
{
    if (max_head > INT_MAX)
        max_head = INT_MAX;
    if (len == 0)
        return 0;

    size_t lim = len < max_head ? len : max_head, start;
    long endoff = head_end(buf, lim, &start);
    if (endoff < 0)
        return (int)endoff;
    if (endoff == 0)
        return len > max_head ? SB_E2BIG : 0;

    const char *p = buf + start, *end = buf + endoff;
    int rc = parse_request_line(&p, end, out);
    if (rc < 0)
        return rc;

    int n = 0, hosts = 0, te = 0;
    bool te_chunked = false, upgrade_hdr = false;
    unsigned flags = 0;
    int64_t cl = -1;

    while (*p != '\r') {
        if (n == SB_HTTP1_MAX_HEADERS)
            return SB_E2BIG;
        if (!parse_field_line(&p, &out->headers[n]))
            return SB_EPARSE;
        const char *name = out->headers[n].name.p;
        size_t nlen = out->headers[n].name.len;
        sb_str_t value = out->headers[n].value;
        n++;

        switch (nlen) {
        case 4:
            if (ieq(name, "host", 4)) {
                if (++hosts > 1)
                    return SB_EPARSE;
                for (size_t k = 0; k < value.len; k++)
                    if (!HAS(value.p[k], C_HOST))
                        return SB_EPARSE;
            }
            break;
        case 6:
            if (ieq(name, "expect", 6))
                parse_expect(value, &flags);
            break;
        case 7:
            if (ieq(name, "upgrade", 7) && value.len)
                upgrade_hdr = true;
            break;
        case 10:
            if (ieq(name, "connection", 10) && (rc = parse_connection(value, &flags)) < 0)
                return rc;
            break;
        case 14:
            if (ieq(name, "content-length", 14) && (rc = parse_content_length(value, &cl)) < 0)
                return rc;
            break;
        case 17:
            if (ieq(name, "transfer-encoding", 17)) {
                te++;
                te_chunked = IEQ_LIT(value.p, value.len, "chunked");
            }
            break;
        default:
            break;
        }
    }
    if (p + 2 != end || p[1] != '\n')
        return SB_EPARSE; /* a line starting with a bare CR: head_end() refuses it already; kept as a guard */

    if (out->minor == 1 && hosts == 0)
        return SB_EPARSE;
    if (te) {
        if (cl != -1 || out->minor == 0)
            return SB_EPARSE; /* both framings, or one HTTP/1.0 cannot have: smuggling */
        if (te > 1 || !te_chunked)
            return SB_EINVAL;
    }

    out->nheaders = n;
    out->content_length = cl;
    out->chunked = te > 0;
    if (out->minor == 1) {
        out->keep_alive = !(flags & CONN_CLOSE);
        out->upgrade = (flags & CONN_UPGRADE) && upgrade_hdr;
        out->expect_continue = flags & EXPECT_CONTINUE;
    } else {
        out->keep_alive = (flags & CONN_KEEP_ALIVE) && !(flags & CONN_CLOSE);
        out->upgrade = false;         /* RFC 9110 7.8: Upgrade in an HTTP/1.0 request is ignored */
        out->expect_continue = false; /* RFC 9110 10.1.1: so is 100-continue */
    }
    return (int)endoff;
}

static const sb_str_t *find_header(const sb_http1_header_t *headers, int nheaders, const char *name)
{
    size_t n = strlen(name);
    for (int i = 0; i < nheaders; i++) {
        const sb_http1_header_t *h = &headers[i];
        if (h->name.len != n)
            continue;
        size_t k = 0;
        while (k < n && lower((unsigned char)h->name.p[k]) == lower((unsigned char)name[k]))
            k++;
        if (k == n)
            return &h->value;
    }
    return NULL;
}

const sb_str_t *sb_http1_header(const sb_http1_req_t *req, const char *name)
{
    return find_header(req->headers, req->nheaders, name);
}

/* --- response head --------------------------------------------------------------------------------------------- */

int sb_http1_parse_response(const char *buf, size_t len, size_t max_head, sb_http1_resp_t *out)
{
    if (max_head > INT_MAX)
        max_head = INT_MAX;
    if (len == 0)
        return 0;

    size_t lim = len < max_head ? len : max_head, start;
    long endoff = head_end(buf, lim, &start);
    if (endoff < 0)
        return (int)endoff;
    if (start != 0)
        return SB_EPARSE; /* an empty line before the status line: a response has none */
    if (endoff == 0)
        return len > max_head ? SB_E2BIG : 0;

    /* status-line = HTTP-version SP 3DIGIT SP reason-phrase CRLF (the SP before an empty reason may be missing) */
    const char *p = buf, *end = buf + endoff;
    if (end - p < 14 || memcmp(p, "HTTP/1.", 7) != 0 || (p[7] != '0' && p[7] != '1') || p[8] != ' ' ||
        p[9] < '1' || p[9] > '5' || p[10] < '0' || p[10] > '9' || p[11] < '0' || p[11] > '9')
        return SB_EPARSE;
    out->minor = p[7] - '0';
    out->status = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
    p += 12;
    if (*p == ' ')
        p++;
    const char *r = p;
    while (HAS(*p, C_FIELD))
        p++;
    if (p[0] != '\r' || p[1] != '\n' || (p > r && r[-1] != ' '))
        return SB_EPARSE;
    out->reason = sb_str(r, (size_t)(p - r));
    p += 2;

    int n = 0;
    while (*p != '\r') {
        if (n == SB_HTTP1_MAX_HEADERS)
            return SB_E2BIG;
        if (!parse_field_line(&p, &out->headers[n]))
            return SB_EPARSE;
        n++;
    }
    if (p + 2 != end || p[1] != '\n')
        return SB_EPARSE;
    out->nheaders = n;
    return (int)endoff;
}

const sb_str_t *sb_http1_resp_header(const sb_http1_resp_t *resp, const char *name)
{
    return find_header(resp->headers, resp->nheaders, name);
}

/* --- chunked body ---------------------------------------------------------------------------------------------- */

enum {
    CH_SIZE0,    /* first hex digit of a chunk-size */
    CH_SIZE,     /* more hex digits, or what follows them */
    CH_BWS,      /* whitespace after the size: only a ';' may follow */
    CH_EXT,      /* chunk extensions, skipped up to CR */
    CH_SIZE_LF,  /* the LF of the chunk-size line */
    CH_DATA,     /* chunk data */
    CH_DATA_CR,  /* the CRLF after chunk data */
    CH_DATA_LF,
    CH_TR_START, /* start of a trailer line, or the CR of the final empty line */
    CH_TR_NAME,
    CH_TR_VALUE,
    CH_TR_LF,
    CH_END_LF,   /* the LF of the final empty line */
    CH_DONE,
    CH_ERROR
};

void sb_http1_chunked_init(sb_http1_chunked_t *c)
{
    memset(c, 0, sizeof *c);
    c->state = CH_SIZE0;
}

/* Room left in out under max_body. */
static inline size_t room(const sb_buf_t *out, size_t max_body)
{
    return out->len < max_body ? max_body - out->len : 0;
}

int sb_http1_chunked_feed(sb_http1_chunked_t *c, const char *in, size_t len, sb_buf_t *out, size_t max_body,
                          size_t *used)
{
    size_t i = 0;
    int err = 0;

    if (c->state == CH_DONE) {
        *used = 0;
        return 1;
    }
    if (c->state == CH_ERROR) {
        *used = 0;
        return c->err;
    }

    while (i < len) {
        unsigned char b = (unsigned char)in[i];
        int d;

        if (c->state >= CH_TR_START && c->state <= CH_END_LF && ++c->trailers > SB_HTTP1_MAX_TRAILERS) {
            err = SB_E2BIG;
            goto fail;
        }
        switch (c->state) {
        case CH_SIZE0:
        case CH_SIZE:
            if ((d = sb_codec_hex_digit(b)) >= 0) {
                if (++c->digits > 16)
                    goto bad;
                c->remaining = c->remaining * 16 + (uint64_t)d;
                if (c->remaining > room(out, max_body)) {
                    err = SB_E2BIG;
                    goto fail;
                }
                c->state = CH_SIZE;
                break;
            }
            if (c->state == CH_SIZE0)
                goto bad;
            if (b == '\r')
                c->state = CH_SIZE_LF;
            else if (b == ';')
                c->state = CH_EXT;
            else if (is_ows((char)b))
                c->state = CH_BWS;
            else
                goto bad;
            c->ext = b == '\r' ? 0 : 1;
            break;
        case CH_BWS:
        case CH_EXT:
            if (b == '\r') {
                if (c->state == CH_BWS)
                    goto bad; /* whitespace after the size is allowed only before an extension */
                c->state = CH_SIZE_LF;
                break;
            }
            if (++c->ext > SB_HTTP1_MAX_CHUNK_EXT) {
                err = SB_E2BIG;
                goto fail;
            }
            if (c->state == CH_BWS) {
                if (b == ';')
                    c->state = CH_EXT;
                else if (!is_ows((char)b))
                    goto bad;
            } else if (!HAS(b, C_FIELD)) {
                goto bad;
            }
            break;
        case CH_SIZE_LF:
            if (b != '\n')
                goto bad;
            c->state = c->remaining ? CH_DATA : CH_TR_START;
            c->digits = 0;
            break;
        case CH_DATA: {
            size_t n = len - i;
            if (n > c->remaining)
                n = (size_t)c->remaining;
            if (n > room(out, max_body)) { /* only if the caller shrank max_body or grew out between feeds */
                err = SB_E2BIG;
                goto fail;
            }
            sb_buf_append(out, in + i, n);
            c->remaining -= n;
            if (c->remaining == 0)
                c->state = CH_DATA_CR;
            i += n;
            continue;
        }
        case CH_DATA_CR:
            if (b != '\r')
                goto bad;
            c->state = CH_DATA_LF;
            break;
        case CH_DATA_LF:
            if (b != '\n')
                goto bad;
            c->state = CH_SIZE0;
            break;
        case CH_TR_START:
            if (b == '\r')
                c->state = CH_END_LF;
            else if (HAS(b, C_TCHAR))
                c->state = CH_TR_NAME;
            else
                goto bad; /* obs-fold, bare LF, or a byte no field name has */
            break;
        case CH_TR_NAME:
            if (b == ':')
                c->state = CH_TR_VALUE;
            else if (!HAS(b, C_TCHAR))
                goto bad;
            break;
        case CH_TR_VALUE:
            if (b == '\r')
                c->state = CH_TR_LF;
            else if (!HAS(b, C_FIELD))
                goto bad;
            break;
        case CH_TR_LF:
            if (b != '\n')
                goto bad;
            c->state = CH_TR_START;
            break;
        case CH_END_LF:
            if (b != '\n')
                goto bad;
            c->state = CH_DONE;
            *used = i + 1;
            return 1;
        default:
            SB_BUG_ON(1); /* CH_DONE and CH_ERROR returned above */
        }
        i++;
    }
    *used = i;
    return 0;

bad:
    err = SB_EPARSE;
fail:
    c->state = CH_ERROR;
    c->err = err;
    *used = i;
    return err;
}

/* --- percent-decoding ------------------------------------------------------------------------------------------ */

int sb_http1_pct_decode(sb_str_t s, sb_buf_t *out)
{
    size_t orig = out->len, i = 0;

    if (s.len)
        sb_buf_reserve(out, s.len);
    while (i < s.len) {
        const char *pct = memchr(s.p + i, '%', s.len - i);
        size_t run = pct ? (size_t)(pct - s.p) - i : s.len - i;
        if (run)
            sb_buf_append(out, s.p + i, run);
        i += run;
        if (!pct)
            break;
        int hi, lo;
        if (s.len - i < 3 || (hi = sb_codec_hex_digit((unsigned char)s.p[i + 1])) < 0 ||
            (lo = sb_codec_hex_digit((unsigned char)s.p[i + 2])) < 0) {
            out->len = orig;
            if (out->p)
                out->p[orig] = '\0';
            return SB_EPARSE;
        }
        char byte = (char)(hi << 4 | lo);
        sb_buf_append(out, &byte, 1);
        i += 3;
    }
    return 0;
}
