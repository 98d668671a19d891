/* TwiML documents, written and checked; see twiml.h.
 *
 * The checker is a single forward pass with no recursion: the names of the open elements sit on an explicit stack
 * of SB_TWIML_MAX_DEPTH views into the document (nothing is copied), and the state is only "in the prolog", "inside
 * the root" (the stack is not empty) or "after the root". Character-level rules (valid UTF-8, no character XML 1.0
 * cannot carry) are checked once over the whole document first, so the grammar below never looks at code points.
 * The grammar is XML 1.0's, restricted where TwiML never goes: names are ASCII, an element has at most
 * TWIML_MAX_ATTRS attributes, the declaration may only name UTF-8, and DOCTYPE and processing instructions (hence
 * external entities and every other way to make a parser fetch or expand something) are refused outright. */
#include "proto/twiml.h"

#include "proto/err.h"
#include "proto/line.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#define TWIML_MAX_ATTRS 32

/* ---- writers -------------------------------------------------------------------------------------------------- */

#define PUT(out, lit) sb_buf_append((out), (lit), sizeof(lit) - 1)
#define XML_DECL "<?xml version=\"1.0\" encoding=\"UTF-8\"?>"

void sb_twiml_escape(sb_buf_t *out, sb_str_t s)
{
    const unsigned char *p = (const unsigned char *)s.p;
    size_t run = 0; /* the start of the bytes that are copied as they are */

    if (s.len == 0)
        return;
    sb_buf_reserve(out, s.len);
    for (size_t i = 0; i < s.len;) {
        unsigned c = p[i];
        const char *e;
        size_t k = 1;
        if (c >= 0x80) {
            k = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 1;
            if (k > 1 && s.len - i >= k && sb_utf8_valid(s.p + i, k)) {
                if (!(k == 3 && c == 0xef && p[i + 1] == 0xbf && p[i + 2] >= 0xbe)) {
                    i += k;
                    continue;
                }
                e = ""; /* U+FFFE, U+FFFF: not XML characters */
            } else {
                k = 1;
                e = "\xef\xbf\xbd"; /* a byte of invalid UTF-8: U+FFFD */
            }
        } else if (c >= 0x20 && c != '&' && c != '<' && c != '>' && c != '"' && c != '\'') {
            i++;
            continue;
        } else {
            switch (c) {
            case '&': e = "&amp;"; break;
            case '<': e = "&lt;"; break;
            case '>': e = "&gt;"; break;
            case '"': e = "&quot;"; break;
            case '\'': e = "&apos;"; break;
            case '\t': e = "&#9;"; break;  /* as references, so that an attribute keeps them (XML normalizes */
            case '\n': e = "&#10;"; break; /* a literal tab, LF or CR in an attribute value to a space) */
            case '\r': e = "&#13;"; break;
            default: e = ""; break;        /* another C0 control: XML 1.0 cannot carry it */
            }
        }
        sb_buf_append(out, s.p + run, i - run);
        sb_buf_puts(out, e);
        i += k;
        run = i;
    }
    sb_buf_append(out, s.p + run, s.len - run);
}

static void esc(sb_buf_t *out, const char *s)
{
    sb_twiml_escape(out, sb_str_cstr(s));
}

void sb_twiml_stream(sb_buf_t *out, const char *url, const sb_twiml_param_t *params, size_t nparams)
{
    PUT(out, XML_DECL "<Response><Connect><Stream url=\"");
    esc(out, url);
    if (nparams == 0) {
        PUT(out, "\"/></Connect></Response>");
        return;
    }
    PUT(out, "\">");
    for (size_t k = 0; k < nparams; k++) {
        PUT(out, "<Parameter name=\"");
        esc(out, params[k].name);
        PUT(out, "\" value=\"");
        esc(out, params[k].value);
        PUT(out, "\"/>");
    }
    PUT(out, "</Stream></Connect></Response>");
}

void sb_twiml_dial(sb_buf_t *out, const char *number)
{
    PUT(out, XML_DECL "<Response><Dial>");
    esc(out, number);
    PUT(out, "</Dial></Response>");
}

void sb_twiml_say_hangup(sb_buf_t *out, const char *text)
{
    PUT(out, XML_DECL "<Response><Say>");
    esc(out, text);
    PUT(out, "</Say><Hangup/></Response>");
}

void sb_twiml_reject(sb_buf_t *out, const char *reason)
{
    SB_BUG_ON(!reason || (strcmp(reason, "busy") != 0 && strcmp(reason, "rejected") != 0));
    PUT(out, XML_DECL "<Response><Reject reason=\"");
    sb_buf_puts(out, reason);
    PUT(out, "\"/></Response>");
}

void sb_twiml_hangup(sb_buf_t *out)
{
    PUT(out, XML_DECL "<Response><Hangup/></Response>");
}

/* ---- the checker ---------------------------------------------------------------------------------------------- */

typedef struct xin {
    const char *p;
    size_t n, i;
    char *err;
    size_t errlen;
} xin_t;

static int xfail(xin_t *x, int rc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int xfail(xin_t *x, int rc, const char *fmt, ...)
{
    if (x->errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(x->err, x->errlen, fmt, ap);
        va_end(ap);
    }
    return rc;
}

/* Not well-formed at byte at (counted from 0). */
static int xbad(xin_t *x, size_t at, const char *why)
{
    return xfail(x, SB_EPARSE, "%s at byte %zu", why, at);
}

static bool x_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static bool name_start(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
}

static bool name_char(char c)
{
    return name_start(c) || (c >= '0' && c <= '9') || c == '-' || c == '.';
}

/* True if the document continues with lit at x->i. */
static bool at(const xin_t *x, const char *lit)
{
    size_t len = strlen(lit);
    return x->n - x->i >= len && memcmp(x->p + x->i, lit, len) == 0;
}

/* Skips blanks; returns how many. */
static size_t skip_s(xin_t *x)
{
    size_t from = x->i;
    while (x->i < x->n && x_ws(x->p[x->i]))
        x->i++;
    return x->i - from;
}

/* A name at x->i (ASCII: letters, '_', ':' first; then also digits, '-', '.'). */
static int scan_name(xin_t *x, sb_str_t *name)
{
    size_t from = x->i;
    if (x->i == x->n || !name_start(x->p[x->i]))
        return xbad(x, x->i, "expected a name");
    while (x->i < x->n && name_char(x->p[x->i]))
        x->i++;
    *name = sb_str(x->p + from, x->i - from);
    return 0;
}

/* Whether code point cp is a Char of XML 1.0 (§2.2). */
static bool xml_char(unsigned long cp)
{
    return cp == 0x9 || cp == 0xa || cp == 0xd || (cp >= 0x20 && cp <= 0xd7ff) || (cp >= 0xe000 && cp <= 0xfffd) ||
           (cp >= 0x10000 && cp <= 0x10ffff);
}

/* The reference whose '&' is at x->i: one of the five predefined entities or a character reference to a Char. */
static int scan_ref(xin_t *x)
{
    static const char *const named[] = {"&amp;", "&lt;", "&gt;", "&quot;", "&apos;"};
    size_t from = x->i;
    for (size_t k = 0; k < sizeof named / sizeof *named; k++)
        if (at(x, named[k])) {
            x->i += strlen(named[k]);
            return 0;
        }
    if (!at(x, "&#"))
        return xbad(x, from, "unknown entity");
    x->i += 2;
    bool hex = x->i < x->n && x->p[x->i] == 'x';
    x->i += hex;
    unsigned long cp = 0;
    size_t digits = 0;
    for (; x->i < x->n; x->i++, digits++) {
        char c = x->p[x->i];
        int d = c >= '0' && c <= '9' ? c - '0'
                : hex && (c | 0x20) >= 'a' && (c | 0x20) <= 'f' ? (c | 0x20) - 'a' + 10
                                                                 : -1;
        if (d < 0)
            break;
        if (cp <= 0x10ffff)
            cp = cp * (hex ? 16 : 10) + (unsigned)d;
    }
    if (digits == 0 || x->i == x->n || x->p[x->i] != ';')
        return xbad(x, from, "bad character reference");
    if (!xml_char(cp))
        return xbad(x, from, "character reference to a character XML cannot carry");
    x->i++;
    return 0;
}

/* The comment whose "<!--" is at x->i: no "--" inside, ends with "-->". */
static int scan_comment(xin_t *x)
{
    size_t from = x->i;
    x->i += 4;
    const char *dd = memmem(x->p + x->i, x->n - x->i, "--", 2);
    if (!dd)
        return xbad(x, from, "unterminated comment");
    x->i = (size_t)(dd - x->p);
    if (!at(x, "-->"))
        return xbad(x, x->i, "\"--\" inside a comment");
    x->i += 3;
    return 0;
}

/* The declaration at the very start: <?xml version="1.x" (encoding="UTF-8")? (standalone="yes|no")? ?> */
static int scan_decl(xin_t *x)
{
    static const char *const attrs[] = {"version", "encoding", "standalone"};
    size_t from = x->i;
    size_t next = 0; /* the attributes come in this order, version first and required */

    x->i += 5;
    for (;;) {
        size_t blanks = skip_s(x);
        if (at(x, "?>")) {
            if (next == 0)
                return xbad(x, from, "XML declaration without a version");
            x->i += 2;
            return 0;
        }
        if (!blanks)
            return xbad(x, x->i, "bad XML declaration");
        size_t k = next;
        while (k < 3 && !at(x, attrs[k]))
            k++;
        if (k == 3 || (next == 0 && k != 0))
            return xbad(x, x->i, "bad XML declaration");
        x->i += strlen(attrs[k]);
        next = k + 1;
        skip_s(x);
        if (x->i == x->n || x->p[x->i] != '=')
            return xbad(x, x->i, "bad XML declaration");
        x->i++;
        skip_s(x);
        if (x->i == x->n || (x->p[x->i] != '"' && x->p[x->i] != '\''))
            return xbad(x, x->i, "bad XML declaration");
        char q = x->p[x->i++];
        const char *end = memchr(x->p + x->i, q, x->n - x->i);
        if (!end)
            return xbad(x, x->i, "bad XML declaration");
        sb_str_t v = sb_str(x->p + x->i, (size_t)(end - (x->p + x->i)));
        bool good;
        if (k == 0) {
            good = v.len > 2 && memcmp(v.p, "1.", 2) == 0;
            for (size_t d = 2; good && d < v.len; d++)
                good = v.p[d] >= '0' && v.p[d] <= '9';
        } else if (k == 1) {
            good = v.len == 5 && strncasecmp(v.p, "utf-8", 5) == 0;
        } else {
            good = sb_str_eq_cstr(v, "yes") || sb_str_eq_cstr(v, "no");
        }
        if (!good)
            return xbad(x, x->i, k == 1 ? "encoding other than UTF-8" : "bad XML declaration");
        x->i = (size_t)(end - x->p) + 1;
    }
}

/* Comments and blanks between the declaration and the root, or after the root. Stops at anything else; refuses
 * what may never be there. */
static int scan_misc(xin_t *x)
{
    for (;;) {
        skip_s(x);
        int rc;
        if (at(x, "<!--")) {
            if ((rc = scan_comment(x)))
                return rc;
        } else if (at(x, "<!DOCTYPE")) {
            return xbad(x, x->i, "DOCTYPE not allowed");
        } else if (at(x, "<?")) {
            return xbad(x, x->i, "processing instruction not allowed");
        } else {
            return 0;
        }
    }
}

/* The start tag whose '<' is at x->i: its name, its attributes (unique, values quoted, references good). *empty:
 * it ended in "/>". */
static int scan_start_tag(xin_t *x, sb_str_t *name, bool *empty)
{
    sb_str_t seen[TWIML_MAX_ATTRS];
    size_t nattrs = 0;
    int rc;

    x->i++;
    if ((rc = scan_name(x, name)))
        return rc;
    for (;;) {
        size_t blanks = skip_s(x);
        if (x->i == x->n)
            return xbad(x, x->i, "unterminated tag");
        if (x->p[x->i] == '>' || at(x, "/>")) {
            *empty = x->p[x->i] == '/';
            x->i += *empty ? 2 : 1;
            return 0;
        }
        if (!blanks)
            return xbad(x, x->i, "expected a blank before an attribute");
        size_t from = x->i;
        sb_str_t attr;
        if ((rc = scan_name(x, &attr)))
            return rc;
        for (size_t k = 0; k < nattrs; k++)
            if (sb_str_eq(seen[k], attr))
                return xbad(x, from, "duplicate attribute");
        if (nattrs == TWIML_MAX_ATTRS)
            return xbad(x, from, "more than " SB_STRINGIFY(TWIML_MAX_ATTRS) " attributes");
        seen[nattrs++] = attr;
        skip_s(x);
        if (x->i == x->n || x->p[x->i] != '=')
            return xbad(x, x->i, "expected '='");
        x->i++;
        skip_s(x);
        if (x->i == x->n || (x->p[x->i] != '"' && x->p[x->i] != '\''))
            return xbad(x, x->i, "expected a quoted value");
        char q = x->p[x->i++];
        for (;;) {
            if (x->i == x->n)
                return xbad(x, from, "unterminated attribute value");
            char c = x->p[x->i];
            if (c == q) {
                x->i++;
                break;
            }
            if (c == '<')
                return xbad(x, x->i, "'<' in an attribute value");
            if (c == '&') {
                if ((rc = scan_ref(x)))
                    return rc;
            } else {
                x->i++;
            }
        }
    }
}

/* Characters no XML 1.0 document may hold: C0 controls other than tab, LF, CR; U+FFFE and U+FFFF. The rest of
 * Char's exclusions (surrogates, above U+10FFFF) are not UTF-8. Returns the offset of the first, or n. */
static size_t first_non_char(const char *p, size_t n)
{
    const unsigned char *s = (const unsigned char *)p;
    for (size_t i = 0; i < n; i++) {
        unsigned c = s[i];
        if (c < 0x20 && c != '\t' && c != '\n' && c != '\r')
            return i;
        if (c == 0xef && n - i >= 3 && s[i + 1] == 0xbf && s[i + 2] >= 0xbe)
            return i;
    }
    return n;
}

int sb_twiml_check(sb_str_t doc, char *err, size_t errlen)
{
    xin_t x = {doc.p, doc.len, 0, err, errlen};
    sb_str_t stack[SB_TWIML_MAX_DEPTH];
    size_t depth = 0;
    int rc;

    if (errlen)
        err[0] = '\0';
    if (doc.len > SB_TWIML_MAX_BYTES)
        return xfail(&x, SB_E2BIG, "document is %zu bytes, more than " SB_STRINGIFY(SB_TWIML_MAX_BYTES), doc.len);
    if (!sb_utf8_valid(doc.p, doc.len))
        return xfail(&x, SB_EPARSE, "not valid UTF-8");
    size_t bad_char = first_non_char(doc.p, doc.len);
    if (bad_char < doc.len)
        return xbad(&x, bad_char, "character XML cannot carry");

    if (at(&x, "\xef\xbb\xbf")) /* a byte order mark */
        x.i += 3;
    if (at(&x, "<?xml") && (x.n - x.i == 5 || x_ws(x.p[x.i + 5]) || x.p[x.i + 5] == '?') &&
        (rc = scan_decl(&x)))
        return rc;
    if ((rc = scan_misc(&x)))
        return rc;
    if (x.i == x.n)
        return xfail(&x, SB_EPARSE, "no root element");
    if (x.p[x.i] != '<')
        return xbad(&x, x.i, "text before the root element");

    /* x.i is at the '<' of a start tag: the root's first, then each nested one's */
    for (;;) {
        sb_str_t name;
        bool empty;
        size_t from = x.i;
        if (depth == SB_TWIML_MAX_DEPTH)
            return xbad(&x, from, "nested deeper than " SB_STRINGIFY(SB_TWIML_MAX_DEPTH));
        if ((rc = scan_start_tag(&x, &name, &empty)))
            return rc;
        if (depth == 0 && !sb_str_eq_cstr(name, "Response"))
            return xfail(&x, SB_EPARSE, "root is <%.*s>, not <Response>", name.len > 32 ? 32 : (int)name.len,
                         name.p);
        if (!empty)
            stack[depth++] = name;

        /* content, until the next start tag (continue) or the root's end (break) */
        bool next_tag = false;
        while (depth > 0 && !next_tag) {
            if (x.i == x.n)
                return xfail(&x, SB_EPARSE, "unclosed <%.*s> at the end",
                             stack[depth - 1].len > 32 ? 32 : (int)stack[depth - 1].len, stack[depth - 1].p);
            char c = x.p[x.i];
            if (c == '&') {
                if ((rc = scan_ref(&x)))
                    return rc;
            } else if (c != '<') {
                if (c == ']' && at(&x, "]]>"))
                    return xbad(&x, x.i, "\"]]>\" in text");
                x.i++;
            } else if (at(&x, "<!--")) {
                if ((rc = scan_comment(&x)))
                    return rc;
            } else if (at(&x, "<![CDATA[")) {
                const char *end = memmem(x.p + x.i + 9, x.n - x.i - 9, "]]>", 3);
                if (!end)
                    return xbad(&x, x.i, "unterminated CDATA section");
                x.i = (size_t)(end - x.p) + 3;
            } else if (at(&x, "<!")) {
                return xbad(&x, x.i, "markup declaration not allowed");
            } else if (at(&x, "<?")) {
                return xbad(&x, x.i, "processing instruction not allowed");
            } else if (at(&x, "</")) {
                size_t tag = x.i;
                sb_str_t end;
                x.i += 2;
                if ((rc = scan_name(&x, &end)))
                    return rc;
                skip_s(&x);
                if (x.i == x.n || x.p[x.i] != '>')
                    return xbad(&x, x.i, "expected '>'");
                x.i++;
                if (!sb_str_eq(end, stack[depth - 1]))
                    return xfail(&x, SB_EPARSE, "unbalanced </%.*s> at byte %zu", end.len > 32 ? 32 : (int)end.len,
                                 end.p, tag);
                depth--;
            } else {
                next_tag = true;
            }
        }
        if (!next_tag)
            break;
    }

    if ((rc = scan_misc(&x)))
        return rc;
    if (x.i < x.n)
        return xbad(&x, x.i, x.p[x.i] == '<' ? "a second root element" : "text after the root element");
    return 0;
}
