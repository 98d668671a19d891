/* Unit tests for proto/http1: the request head parser (request line, header syntax, framing headers and request
 * smuggling, Connection/Expect/Upgrade, Host, limits, pipelining, incremental arrival), header lookup, the chunked
 * body decoder (whole and byte by byte, extensions, trailers, limits), percent-decoding, and the response head
 * parser (status line, headers, limits, incremental arrival). Each strictness rule of
 * http1.h has at least one test here. */
#include "proto/http1.h"

#include "proto/err.h"
#include "tests/tap.h"

#include <stdio.h>
#include <string.h>

static sb_http1_req_t req;

/* Parses the string literal lit (embedded NULs allowed) with max_head 8192. */
#define P(lit) sb_http1_parse((lit), sizeof(lit) - 1, 8192, &req)
/* A minimal valid HTTP/1.1 request line plus Host, to which tests add header lines. */
#define GET11 "GET / HTTP/1.1\r\nHost: h\r\n"

static bool str_is(sb_str_t s, const char *want)
{
    return sb_str_eq_cstr(s, want);
}

/* True if s lies inside buf[0..len). */
static bool inside(sb_str_t s, const char *buf, size_t len)
{
    return s.p >= buf && s.p + s.len <= buf + len;
}

TEST(basic_get)
{
    const char in[] = "GET /hello/world?x=1&y=%20 HTTP/1.1\r\n"
                      "Host: example.com\r\n"
                      "User-Agent:   curl/8 \t \r\n"
                      "Accept:*/*\r\n"
                      "X-Empty:\r\n"
                      "X-Blank:   \r\n"
                      "\r\n";
    memset(&req, 0xa5, sizeof req);
    is_int(P(in), sizeof in - 1, "complete head: its whole length");
    ok(str_is(req.method, "GET"), "method");
    ok(str_is(req.target, "/hello/world?x=1&y=%20"), "raw target");
    ok(str_is(req.path, "/hello/world"), "path up to '?'");
    ok(str_is(req.query, "x=1&y=%20"), "query after '?', raw");
    is_int(req.minor, 1, "HTTP/1.1");
    is_int(req.nheaders, 5, "five headers");
    ok(str_is(req.headers[0].name, "Host") && str_is(req.headers[0].value, "example.com"), "Host");
    ok(str_is(req.headers[1].value, "curl/8"), "value trimmed of SP and HTAB at both ends");
    ok(str_is(req.headers[2].value, "*/*"), "no OWS after colon");
    ok(req.headers[3].value.len == 0 && str_is(req.headers[3].name, "X-Empty"), "empty value");
    ok(req.headers[4].value.len == 0, "blank value trims to empty");
    is_int(req.content_length, -1, "no Content-Length: -1");
    ok(!req.chunked && req.keep_alive && !req.upgrade && !req.expect_continue, "flags of a plain 1.1 GET");
    ok(req.method.p == in && req.target.p == in + 4, "borrows the buffer");
    bool all_inside = inside(req.method, in, sizeof in - 1) && inside(req.target, in, sizeof in - 1) &&
                      inside(req.path, in, sizeof in - 1) && inside(req.query, in, sizeof in - 1);
    for (int i = 0; i < req.nheaders; i++)
        all_inside = all_inside && inside(req.headers[i].name, in, sizeof in - 1) &&
                     inside(req.headers[i].value, in, sizeof in - 1);
    ok(all_inside, "every string inside the input");
}

TEST(target_forms)
{
    ok(P("GET /a?b=c?d HTTP/1.1\r\nHost: h\r\n\r\n") > 0 && str_is(req.path, "/a") && str_is(req.query, "b=c?d"),
       "query runs from the first '?'");
    ok(P("GET /a? HTTP/1.1\r\nHost: h\r\n\r\n") > 0 && str_is(req.path, "/a") && req.query.len == 0,
       "empty query");
    ok(P("GET / HTTP/1.1\r\nHost: h\r\n\r\n") > 0 && str_is(req.path, "/") && req.query.len == 0, "root, no query");
    ok(P("GET /?q HTTP/1.1\r\nHost: h\r\n\r\n") > 0 && str_is(req.path, "/") && str_is(req.query, "q"), "root+query");
    ok(P("GET //x/../%2e HTTP/1.1\r\nHost: h\r\n\r\n") > 0 && str_is(req.path, "//x/../%2e"),
       "path kept raw, not normalised");
    ok(P("OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n") > 0 && str_is(req.target, "*") && str_is(req.path, "*") &&
           req.query.len == 0,
       "asterisk-form with OPTIONS");
    is_int(P("GET * HTTP/1.1\r\nHost: h\r\n\r\n"), SB_EPARSE, "asterisk-form with GET");
    is_int(P("OPTIONS *x HTTP/1.1\r\nHost: h\r\n\r\n"), SB_EPARSE, "asterisk plus more");
    is_int(P("GET http://h/ HTTP/1.1\r\nHost: h\r\n\r\n"), SB_EPARSE, "absolute-form refused");
    is_int(P("CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n"), SB_EPARSE, "authority-form refused");
    is_int(P("GET a/b HTTP/1.1\r\nHost: h\r\n\r\n"), SB_EPARSE, "relative target refused");
    is_int(P("GET /a b HTTP/1.1\r\nHost: h\r\n\r\n"), SB_EPARSE, "space inside the target");
    is_int(P("GET /a\x7f HTTP/1.1\r\nHost: h\r\n\r\n"), SB_EPARSE, "DEL in target");
    is_int(P("GET /a\x01 HTTP/1.1\r\nHost: h\r\n\r\n"), SB_EPARSE, "control byte in target");
    is_int(P("GET /\xc3\xa9 HTTP/1.1\r\nHost: h\r\n\r\n"), SB_EPARSE, "non-ASCII in target");
    is_int(P("GET /a\tb HTTP/1.1\r\nHost: h\r\n\r\n"), SB_EPARSE, "HTAB in target");
    is_int(P("GET /a\0b HTTP/1.1\r\nHost: h\r\n\r\n"), SB_EPARSE, "NUL in target");
}

TEST(request_line)
{
    ok(P("get / HTTP/1.1\r\nHost: h\r\n\r\n") > 0 && str_is(req.method, "get"), "method is case-sensitive, as sent");
    ok(P("M-SEARCH / HTTP/1.1\r\nHost: h\r\n\r\n") > 0, "any token is a method");
    ok(P("ABCDEFGHIJKLMNOPQRSTUVWXYZABCDEF / HTTP/1.1\r\nHost: h\r\n\r\n") > 0 && req.method.len == 32,
       "32-byte method");
    is_int(P("ABCDEFGHIJKLMNOPQRSTUVWXYZABCDEFG / HTTP/1.1\r\nHost: h\r\n\r\n"), SB_EPARSE, "33-byte method");
    is_int(P("GE(T / HTTP/1.1\r\nHost: h\r\n\r\n"), SB_EPARSE, "non-tchar in method");
    is_int(P(" GET / HTTP/1.1\r\nHost: h\r\n\r\n"), SB_EPARSE, "leading space");
    is_int(P("GET  / HTTP/1.1\r\nHost: h\r\n\r\n"), SB_EPARSE, "two spaces after method");
    is_int(P("GET /  HTTP/1.1\r\nHost: h\r\n\r\n"), SB_EPARSE, "two spaces after target");
    is_int(P("GET\t/ HTTP/1.1\r\nHost: h\r\n\r\n"), SB_EPARSE, "HTAB as separator");
    is_int(P("GET / HTTP/1.1 \r\nHost: h\r\n\r\n"), SB_EPARSE, "trailing space");
    is_int(P("GET /\r\nHost: h\r\n\r\n"), SB_EPARSE, "no version (HTTP/0.9 style)");
    is_int(P("GET / \r\nHost: h\r\n\r\n"), SB_EPARSE, "empty version");
    is_int(P("GET\r\nHost: h\r\n\r\n"), SB_EPARSE, "method only");
    is_int(P("/ HTTP/1.1\r\nHost: h\r\n\r\n"), SB_EPARSE, "no method");
}

TEST(versions)
{
    ok(P("GET / HTTP/1.0\r\n\r\n") > 0 && req.minor == 0, "HTTP/1.0");
    ok(P("GET / HTTP/1.1\r\nHost: h\r\n\r\n") > 0 && req.minor == 1, "HTTP/1.1");
    is_int(P("GET / HTTP/2.0\r\nHost: h\r\n\r\n"), SB_ERANGE, "HTTP/2.0: 505");
    is_int(P("GET / HTTP/1.2\r\nHost: h\r\n\r\n"), SB_ERANGE, "HTTP/1.2: 505");
    is_int(P("GET / HTTP/0.9\r\n\r\n"), SB_ERANGE, "HTTP/0.9: 505");
    is_int(P("GET / HTTP/3.0\r\nHost: h\r\n\r\n"), SB_ERANGE, "HTTP/3.0: 505");
    is_int(P("GET / HTTP/9.9\r\n\r\n"), SB_ERANGE, "HTTP/9.9: 505");
    is_int(P("GET / http/1.1\r\nHost: h\r\n\r\n"), SB_EPARSE, "lower-case name");
    is_int(P("GET / HTTP/1\r\nHost: h\r\n\r\n"), SB_EPARSE, "no minor");
    is_int(P("GET / HTTP/1.10\r\nHost: h\r\n\r\n"), SB_EPARSE, "two-digit minor");
    is_int(P("GET / HTTP/11\r\nHost: h\r\n\r\n"), SB_EPARSE, "no dot");
    is_int(P("GET / HTTP/1,1\r\nHost: h\r\n\r\n"), SB_EPARSE, "comma for dot");
    is_int(P("GET / HTTPS/1.1\r\nHost: h\r\n\r\n"), SB_EPARSE, "HTTPS");
    is_int(P("GET / HTTP/a.b\r\nHost: h\r\n\r\n"), SB_EPARSE, "letters");
    is_int(P("GET / HTTP/2\r\nHost: h\r\n\r\n"), SB_EPARSE, "HTTP/2 without minor");
}

TEST(line_endings)
{
    is_int(P("GET / HTTP/1.1\nHost: h\n\n"), SB_EPARSE, "LF-only head");
    is_int(P("GET / HTTP/1.1\r\nHost: h\n\r\n"), SB_EPARSE, "bare LF ending a header");
    is_int(P("GET / HTTP/1.1\r\nHost: h\r\n\n"), SB_EPARSE, "bare LF as the empty line");
    is_int(P("\nGET / HTTP/1.1\r\nHost: h\r\n\r\n"), SB_EPARSE, "bare LF before the request line");
    is_int(P("GET / HTTP/1.1\r\nX: a\nb\r\nHost: h\r\n\r\n"), SB_EPARSE, "bare LF inside a value");
    is_int(P("GET / HTTP/1.1\r\nHost: h"), 0, "incomplete head: 0");
    is_int(P("GET / HTTP/1.1\nHost: h"), SB_EPARSE, "bare LF caught before the head is complete");
    is_int(P("GET / HTTP/1.1\r\r\nHost: h\r\n\r\n"), SB_EPARSE, "CR CR LF");
    is_int(P("GET / HTTP/1.1\rHost: h\r\n\r\n"), SB_EPARSE, "bare CR ending the request line");
    is_int(P("GET / HTTP/1.1\r\nX: a\rb\r\nHost: h\r\n\r\n"), SB_EPARSE, "bare CR inside a value");
    is_int(P("GET / HTTP/1.1\r\nHost: h\r\n\rX: y\r\n\r\n"), SB_EPARSE, "bare CR starting a line");
    is_int(P("GET /\r HTTP/1.1\r\nHost: h\r\n\r\n"), SB_EPARSE, "bare CR in the target");
    is_int(P("GET / HTTP/1.1\r\nHost: h\r\n\r\r\n"), SB_EPARSE, "CR CR LF as the empty line");
    is_int(P("GET / HTTP/1.1\r\r\nHost: h"), SB_EPARSE, "CR CR LF caught before the head is complete");
    is_int(P("GET / HTTP/1.1\r\n\rX: y\r\nHost"), SB_EPARSE, "line starting with CR caught early");
}

TEST(leading_empty_lines)
{
    const char in[] = "\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n";
    is_int(P(in), sizeof in - 1, "leading CRLFs skipped and counted");
    ok(str_is(req.method, "GET") && req.method.p == in + 4, "request line after them");
    is_int(P("\r\n"), 0, "a lone CRLF: more needed");
    is_int(P("\r\n\r\n\r\n"), 0, "only CRLFs: more needed");
    is_int(P("\r\n\r"), 0, "CRLF CR: more needed");
    is_int(P("\r\nGET / HTTP/1.1\r\nHost: h\r\n"), 0, "incomplete after a leading CRLF");
    is_int(sb_http1_parse(in, sizeof in - 1, sizeof in - 2, &req), SB_E2BIG, "leading CRLFs count toward max_head");
    is_int(sb_http1_parse("\r\n\r\n\r\n", 6, 5, &req), SB_E2BIG, "CRLFs alone past max_head");
    is_int(P(" \r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n"), SB_EPARSE, "a blank line is no empty line");
}

TEST(incremental)
{
    const char in[] = "POST /hook HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello";
    size_t head = sizeof in - 1 - 5;
    bool all_zero = true;
    for (size_t k = 0; k < head; k++)
        all_zero = all_zero && sb_http1_parse(in, k, 8192, &req) == 0;
    ok(all_zero, "every proper prefix of the head: 0");
    is_int(sb_http1_parse(in, head, 8192, &req), head, "complete at its last byte");
    is_int(sb_http1_parse(in, sizeof in - 1, 8192, &req), head, "body bytes not counted");
    is_int(req.content_length, 5, "Content-Length");
    is_int(sb_http1_parse(NULL, 0, 8192, &req), 0, "no bytes at all: 0");
}

TEST(pipelined)
{
    const char in[] = "GET /one HTTP/1.1\r\nHost: h\r\n\r\n"
                      "GET /two HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n";
    size_t first = strlen("GET /one HTTP/1.1\r\nHost: h\r\n\r\n");
    int rc = P(in);
    is_int(rc, first, "first parse: exactly the first head");
    ok(str_is(req.path, "/one") && req.keep_alive, "first request");
    rc = sb_http1_parse(in + first, sizeof in - 1 - first, 8192, &req);
    is_int(rc, sizeof in - 1 - first, "second head");
    ok(str_is(req.path, "/two") && !req.keep_alive, "second request, not polluted by the first");
}

TEST(max_head)
{
    char in[600];
    size_t len = (size_t)snprintf(in, sizeof in, "GET / HTTP/1.1\r\nHost: h\r\nX: %0300d\r\n\r\n", 7);
    is_int(sb_http1_parse(in, len, len, &req), len, "head of exactly max_head bytes: OK");
    is_int(sb_http1_parse(in, len, len - 1, &req), SB_E2BIG, "head of max_head+1 bytes: SB_E2BIG");
    is_int(sb_http1_parse(in, len - 1, len - 1, &req), 0, "incomplete, len == max_head: 0");
    is_int(sb_http1_parse(in, len - 1, len - 2, &req), SB_E2BIG, "incomplete, len == max_head+1: SB_E2BIG");
    is_int(sb_http1_parse(in, 200, 100, &req), SB_E2BIG, "incomplete, well past max_head: SB_E2BIG");
    is_int(sb_http1_parse(in, len, 0, &req), SB_E2BIG, "max_head 0");
    is_int(sb_http1_parse(in, len, (size_t)-1, &req), len, "huge max_head acts as INT_MAX");

    /* a complete head followed by more bytes than max_head: only the head counts */
    char big[1200];
    memcpy(big, in, len);
    memset(big + len, 'x', sizeof big - len);
    is_int(sb_http1_parse(big, sizeof big, len, &req), len, "pipelined bytes after the head do not count");

    /* a long header, a long target */
    static char huge[20000];
    len = (size_t)snprintf(huge, sizeof huge, "GET /%09000d HTTP/1.1\r\nHost: h\r\n\r\n", 1);
    is_int(sb_http1_parse(huge, len, 8192, &req), SB_E2BIG, "9000-byte target over 8192: 431");
    ok(sb_http1_parse(huge, len, 16384, &req) > 0 && req.target.len == 9001, "same under 16384: OK");
}

/* Builds "GET / HTTP/1.1" with n header lines (the first is Host) into buf; returns its length. */
static size_t with_headers(char *buf, size_t size, int n)
{
    size_t len = (size_t)snprintf(buf, size, "GET / HTTP/1.1\r\nHost: h\r\n");
    for (int i = 1; i < n; i++)
        len += (size_t)snprintf(buf + len, size - len, "X-%d: %d\r\n", i, i);
    len += (size_t)snprintf(buf + len, size - len, "\r\n");
    return len;
}

TEST(header_count)
{
    static char buf[4096];
    size_t len = with_headers(buf, sizeof buf, SB_HTTP1_MAX_HEADERS);
    is_int(sb_http1_parse(buf, len, 8192, &req), len, "64 headers: OK");
    is_int(req.nheaders, 64, "all 64 recorded");
    ok(str_is(req.headers[63].name, "X-63") && str_is(req.headers[63].value, "63"), "the last one");
    len = with_headers(buf, sizeof buf, SB_HTTP1_MAX_HEADERS + 1);
    is_int(sb_http1_parse(buf, len, 8192, &req), SB_E2BIG, "65 headers: SB_E2BIG");
    ok(P("GET / HTTP/1.0\r\n\r\n") > 0 && req.nheaders == 0, "no headers at all (1.0)");
}

TEST(header_syntax)
{
    is_int(P(GET11 "X-Name : v\r\n\r\n"), SB_EPARSE, "space before the colon");
    is_int(P(GET11 "X-Name\t: v\r\n\r\n"), SB_EPARSE, "HTAB before the colon");
    is_int(P(GET11 "X-Name v\r\n\r\n"), SB_EPARSE, "no colon");
    is_int(P(GET11 ": v\r\n\r\n"), SB_EPARSE, "empty name");
    is_int(P(GET11 "X(y): v\r\n\r\n"), SB_EPARSE, "non-tchar in name");
    is_int(P(GET11 "X\xc3\xa9: v\r\n\r\n"), SB_EPARSE, "non-ASCII name");
    is_int(P(GET11 "X: a\r\n b\r\n\r\n"), SB_EPARSE, "obs-fold with SP");
    is_int(P(GET11 "X: a\r\n\tb\r\n\r\n"), SB_EPARSE, "obs-fold with HTAB");
    is_int(P("GET / HTTP/1.1\r\n Host: h\r\n\r\n"), SB_EPARSE, "first header line starts with SP");
    is_int(P(GET11 "X: a\0b\r\n\r\n"), SB_EPARSE, "NUL in value");
    is_int(P(GET11 "X: a\x7f\r\n\r\n"), SB_EPARSE, "DEL in value");
    is_int(P(GET11 "X: a\x01\r\n\r\n"), SB_EPARSE, "SOH in value");
    is_int(P(GET11 "X: a\x1b[31m\r\n\r\n"), SB_EPARSE, "ESC in value");
    ok(P(GET11 "X: a\tb \xc3\xa9\xff\x80 \"q\"\r\n\r\n") > 0 &&
           str_is(req.headers[1].value, "a\tb \xc3\xa9\xff\x80 \"q\""),
       "HTAB, SP, obs-text and quotes inside a value");
    ok(P(GET11 "X:\t\tv\t\r\n\r\n") > 0 && str_is(req.headers[1].value, "v"), "HTAB as OWS");
    ok(P(GET11 "x-lower: 1\r\nX-LOWER: 2\r\n\r\n") > 0 && req.nheaders == 3, "repeated names kept apart");
}

TEST(header_lookup)
{
    ok(P(GET11 "Content-Type: a/b\r\nX-Dup: one\r\nx-dup: two\r\n\r\n") > 0, "parsed");
    const sb_str_t *v = sb_http1_header(&req, "content-type");
    ok(v && str_is(*v, "a/b"), "case-insensitive lookup");
    v = sb_http1_header(&req, "X-DUP");
    ok(v && str_is(*v, "one"), "first match");
    ok(sb_http1_header(&req, "X-Du") == NULL, "prefix is no match");
    ok(sb_http1_header(&req, "X-Dupe") == NULL, "longer is no match");
    ok(sb_http1_header(&req, "Absent") == NULL, "absent: NULL");
    ok(sb_http1_header(&req, "") == NULL, "empty name: NULL");
}

TEST(content_length)
{
    ok(P("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 42\r\n\r\n") > 0 && req.content_length == 42, "42");
    ok(P("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n") > 0 && req.content_length == 0, "0");
    ok(P("POST / HTTP/1.1\r\nHost: h\r\ncontent-length:7\r\n\r\n") > 0 && req.content_length == 7,
       "name case-insensitive");
    ok(P(GET11 "Content-Length: 999999999999999999\r\n\r\n") > 0 && req.content_length == 999999999999999999LL,
       "18 digits");
    ok(P(GET11 "Content-Length: 000000000000000012\r\n\r\n") > 0 && req.content_length == 12,
       "18 digits with leading zeros");
    is_int(P(GET11 "Content-Length: 1000000000000000000\r\n\r\n"), SB_EPARSE, "19 digits");
    is_int(P(GET11 "Content-Length: 0000000000000000001\r\n\r\n"), SB_EPARSE, "19 digits, small value");
    is_int(P(GET11 "Content-Length: -1\r\n\r\n"), SB_EPARSE, "negative");
    is_int(P(GET11 "Content-Length: +5\r\n\r\n"), SB_EPARSE, "plus sign");
    is_int(P(GET11 "Content-Length: 0x10\r\n\r\n"), SB_EPARSE, "hex");
    is_int(P(GET11 "Content-Length: 1 2\r\n\r\n"), SB_EPARSE, "space inside");
    is_int(P(GET11 "Content-Length: 5a\r\n\r\n"), SB_EPARSE, "trailing letter");
    is_int(P(GET11 "Content-Length:\r\n\r\n"), SB_EPARSE, "empty");
    ok(P(GET11 "Content-Length: 5\r\nContent-Length: 5\r\n\r\n") > 0 && req.content_length == 5,
       "repeated, same value");
    is_int(P(GET11 "Content-Length: 5\r\nContent-Length: 6\r\n\r\n"), SB_EPARSE, "repeated, different values");
    ok(P(GET11 "Content-Length: 5, 5,5\r\n\r\n") > 0 && req.content_length == 5, "list of same values");
    is_int(P(GET11 "Content-Length: 5, 6\r\n\r\n"), SB_EPARSE, "list of different values");
    is_int(P(GET11 "Content-Length: 5,\r\n\r\n"), SB_EPARSE, "empty list element");
    is_int(P(GET11 "Content-Length: 5\r\nContent-Length: 5, 7\r\n\r\n"), SB_EPARSE, "list disagrees with header");
    ok(P(GET11 "Content-Length: 05\r\nContent-Length: 5\r\n\r\n") > 0, "same value, different spelling");
}

TEST(transfer_encoding)
{
    ok(P("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n") > 0 && req.chunked &&
           req.content_length == -1,
       "chunked");
    ok(P("POST / HTTP/1.1\r\nHost: h\r\ntransfer-encoding: ChUnKeD \r\n\r\n") > 0 && req.chunked,
       "case-insensitive, trimmed");
    is_int(P(GET11 "Transfer-Encoding: gzip\r\n\r\n"), SB_EINVAL, "gzip: 501");
    is_int(P(GET11 "Transfer-Encoding: gzip, chunked\r\n\r\n"), SB_EINVAL, "gzip, chunked: 501");
    is_int(P(GET11 "Transfer-Encoding: chunked, chunked\r\n\r\n"), SB_EINVAL, "chunked twice in a list: 501");
    is_int(P(GET11 "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"), SB_EINVAL,
           "two headers: 501");
    is_int(P(GET11 "Transfer-Encoding: xchunked\r\n\r\n"), SB_EINVAL, "xchunked");
    is_int(P(GET11 "Transfer-Encoding: chunked;q=1\r\n\r\n"), SB_EINVAL, "with parameters");
    is_int(P(GET11 "Transfer-Encoding:\r\n\r\n"), SB_EINVAL, "empty");
    is_int(P(GET11 "Transfer-Encoding: identity\r\n\r\n"), SB_EINVAL, "identity");
    /* request smuggling */
    is_int(P(GET11 "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"), SB_EPARSE, "CL then TE");
    is_int(P(GET11 "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"), SB_EPARSE, "TE then CL");
    is_int(P(GET11 "Transfer-Encoding: gzip\r\nContent-Length: 5\r\n\r\n"), SB_EPARSE, "CL with unknown TE");
    is_int(P("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"), SB_EPARSE, "TE in HTTP/1.0");
    is_int(P(GET11 "Transfer-Encoding : chunked\r\n\r\n"), SB_EPARSE, "space before colon (smuggling classic)");
    is_int(P(GET11 "Transfer-Encoding: chunked\r\n\x0bTransfer-Encoding: x\r\n\r\n"), SB_EPARSE,
           "vertical tab before a name");
    is_int(P(GET11 "Transfer-Encoding:\x0b" "chunked\r\n\r\n"), SB_EPARSE, "vertical tab as OWS");
    is_int(P(GET11 "X: y\r\n Transfer-Encoding: chunked\r\n\r\n"), SB_EPARSE, "folded TE");
}

TEST(connection)
{
    ok(P("GET / HTTP/1.1\r\nHost: h\r\n\r\n") > 0 && req.keep_alive, "1.1: keep-alive by default");
    ok(P(GET11 "Connection: close\r\n\r\n") > 0 && !req.keep_alive, "1.1: close");
    ok(P(GET11 "Connection: Keep-Alive, CLOSE\r\n\r\n") > 0 && !req.keep_alive, "close wins, any case");
    ok(P(GET11 "Connection: keep-alive\r\nConnection: close\r\n\r\n") > 0 && !req.keep_alive,
       "across repeated headers");
    ok(P("GET / HTTP/1.0\r\n\r\n") > 0 && !req.keep_alive, "1.0: close by default");
    ok(P("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n") > 0 && req.keep_alive, "1.0: keep-alive");
    ok(P("GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n") > 0 && !req.keep_alive, "1.0: both: close");
    ok(P(GET11 "Connection: , ,close,\r\n\r\n") > 0 && !req.keep_alive, "empty list elements ignored");
    ok(P(GET11 "Connection: closed\r\n\r\n") > 0 && req.keep_alive, "tokens compared whole");
    is_int(P(GET11 "Connection: keep alive\r\n\r\n"), SB_EPARSE, "not a token");
    is_int(P(GET11 "Connection: \"close\"\r\n\r\n"), SB_EPARSE, "quoted");

    ok(P(GET11 "Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n") > 0 && req.upgrade, "upgrade");
    ok(P(GET11 "Upgrade: websocket\r\nConnection: keep-alive, upgrade\r\n\r\n") > 0 && req.upgrade &&
           req.keep_alive,
       "upgrade in a list, Upgrade first");
    ok(P(GET11 "Connection: keep-alive\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n") > 0 && req.upgrade,
       "upgrade token in a repeated header");
    ok(P(GET11 "Connection: upgrade\r\n\r\n") > 0 && !req.upgrade, "no Upgrade header: no upgrade");
    ok(P(GET11 "Connection: upgrade\r\nUpgrade:\r\n\r\n") > 0 && !req.upgrade, "empty Upgrade: no upgrade");
    ok(P(GET11 "Upgrade: websocket\r\n\r\n") > 0 && !req.upgrade, "Upgrade without the token: no upgrade");
    ok(P("GET / HTTP/1.0\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n") > 0 && !req.upgrade,
       "1.0: Upgrade ignored");
}

TEST(expect)
{
    ok(P("POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n") > 0 &&
           req.expect_continue,
       "100-continue");
    ok(P(GET11 "expect: 100-Continue\r\n\r\n") > 0 && req.expect_continue, "case-insensitive");
    ok(P(GET11 "Expect: foo=bar, 100-continue\r\n\r\n") > 0 && req.expect_continue, "in a list");
    ok(P(GET11 "Expect: foo\r\nExpect: 100-continue\r\n\r\n") > 0 && req.expect_continue, "repeated headers");
    ok(P(GET11 "Expect: 100-continued\r\n\r\n") > 0 && !req.expect_continue, "compared whole");
    ok(P(GET11 "Expect: foo\r\n\r\n") > 0 && !req.expect_continue, "other expectations ignored");
    ok(P("POST / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n") > 0 && !req.expect_continue, "1.0: ignored");
}

TEST(host)
{
    is_int(P("GET / HTTP/1.1\r\n\r\n"), SB_EPARSE, "1.1 without Host");
    is_int(P("GET / HTTP/1.1\r\nX-Host: h\r\n\r\n"), SB_EPARSE, "X-Host is not Host");
    is_int(P("GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n"), SB_EPARSE, "two Host headers, same value");
    is_int(P("GET / HTTP/1.0\r\nHost: a\r\nhost: b\r\n\r\n"), SB_EPARSE, "two Host headers in 1.0");
    ok(P("GET / HTTP/1.0\r\n\r\n") > 0, "1.0 without Host");
    ok(P("GET / HTTP/1.1\r\nhOsT: example.com:8443\r\n\r\n") > 0, "host:port, any case");
    ok(P("GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n") > 0, "IPv6 literal");
    ok(P("GET / HTTP/1.1\r\nHost:\r\n\r\n") > 0, "empty Host (RFC 9112 allows it)");
    is_int(P("GET / HTTP/1.1\r\nHost: a b\r\n\r\n"), SB_EPARSE, "space in Host");
    is_int(P("GET / HTTP/1.1\r\nHost: a/b\r\n\r\n"), SB_EPARSE, "slash in Host");
    is_int(P("GET / HTTP/1.1\r\nHost: user@h\r\n\r\n"), SB_EPARSE, "userinfo in Host");
    is_int(P("GET / HTTP/1.1\r\nHost: h\xc3\xa9\r\n\r\n"), SB_EPARSE, "non-ASCII Host");
}

TEST(smuggling_mix)
{
    /* a pipelined second request hidden in a body the parser must not guess at */
    const char in[] = "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\nContent-Length: 44\r\n\r\n"
                      "GET /admin HTTP/1.1\r\nHost: h\r\n\r\n";
    is_int(P(in), SB_EPARSE, "two Content-Lengths");
    is_int(P(GET11 "Content-Length: 5\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n\r\n"), SB_EPARSE,
           "CL and two TE");
    is_int(P(GET11 "Transfer-Encoding: \xff" "chunked\r\n\r\n"), SB_EINVAL, "obs-text before chunked");
    is_int(P(GET11 "Content-Length: 5\0\r\n\r\n"), SB_EPARSE, "NUL after the length");
}

/* --- chunked ------------------------------------------------------------------------------------------------- */

/* Feeds in[0..len) to a fresh decoder in pieces of step bytes (0: all at once) while it returns 0. Returns the last
 * result; *total is the sum of *used, out gets the body. */
static int feed(const char *in, size_t len, size_t step, size_t max_body, sb_buf_t *out, size_t *total)
{
    sb_http1_chunked_t c;
    sb_http1_chunked_init(&c);
    *total = 0;
    if (step == 0)
        step = len ? len : 1;
    int rc = 0;
    for (size_t i = 0; i < len && rc == 0; i += step) {
        size_t n = len - i < step ? len - i : step, used = (size_t)-1;
        rc = sb_http1_chunked_feed(&c, in + i, n, out, max_body, &used);
        if (used > n)
            return -9999; /* contract broken */
        *total += used;
        if (rc == 0 && used != n)
            return -9998;
    }
    return rc;
}

/* Decodes a string literal whole and byte by byte; both must give want_rc, want body and consume want_used. */
#define CHUNKED(lit, max_body, want_rc, want_body, want_used, what)                                                  \
    chunked_case((lit), sizeof(lit) - 1, (max_body), (want_rc), (want_body), (want_used), (what))

static void chunked_case(const char *in, size_t len, size_t max_body, int want_rc, const char *want_body,
                         size_t want_used, const char *what)
{
    for (size_t step = 0; step <= 3; step++) {
        sb_buf_t out;
        sb_buf_init(&out);
        size_t used = 0;
        int rc = feed(in, len, step, max_body, &out, &used);
        is_int(rc, want_rc, "%s (step %zu): result", what, step);
        if (want_body)
            ok(out.len == strlen(want_body) && (out.len == 0 || memcmp(out.p, want_body, out.len) == 0),
               "%s (step %zu): body", what, step);
        if (want_used != (size_t)-1)
            is_int(used, want_used, "%s (step %zu): bytes used", what, step);
        ok(out.len <= max_body, "%s (step %zu): within max_body", what, step);
        sb_buf_cleanup(&out);
    }
}

#define ANY ((size_t)-1)

TEST(chunked_basic)
{
    CHUNKED("5\r\nhello\r\n0\r\n\r\n", 100, 1, "hello", 15, "one chunk");
    CHUNKED("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", 100, 1, "hello world", 26, "two chunks");
    CHUNKED("0\r\n\r\n", 100, 1, "", 5, "empty body");
    CHUNKED("A\r\n0123456789\r\na\r\nabcdefghij\r\n0\r\n\r\n", 100, 1, "0123456789abcdefghij", ANY,
            "hex digits in both cases");
    CHUNKED("000005\r\nhello\r\n000\r\n\r\n", 100, 1, "hello", ANY, "leading zeros");
    CHUNKED("5\r\nhello\r\n0\r\n\r\nGET / HTTP/1.1\r\n", 100, 1, "hello", 15,
            "pipelined bytes after the body not consumed");
    CHUNKED("5\r\nhel", 100, 0, "hel", 6, "incomplete: 0, all consumed");
    CHUNKED("5\r\nhello\r\n0\r\n", 100, 0, "hello", 13, "incomplete before the final CRLF");

    /* a done decoder returns 1 and consumes nothing */
    sb_http1_chunked_t c;
    sb_buf_t out;
    size_t used;
    sb_buf_init(&out);
    sb_http1_chunked_init(&c);
    is_int(sb_http1_chunked_feed(&c, "0\r\n\r\n", 5, &out, 10, &used), 1, "done");
    is_int(sb_http1_chunked_feed(&c, "0\r\n\r\n", 5, &out, 10, &used), 1, "done again");
    is_int(used, 0, "nothing consumed after done");
    sb_http1_chunked_init(&c);
    is_int(sb_http1_chunked_feed(&c, NULL, 0, &out, 10, &used), 0, "empty feed");
    is_int(used, 0, "empty feed consumes nothing");
    sb_buf_cleanup(&out);
}

TEST(chunked_extensions_trailers)
{
    CHUNKED("5;name=value\r\nhello\r\n0\r\n\r\n", 100, 1, "hello", ANY, "extension");
    CHUNKED("5;a;b=\"q;x\"\r\nhello\r\n0;last\r\n\r\n", 100, 1, "hello", ANY, "several extensions, quoted");
    CHUNKED("5 ;a\r\nhello\r\n0\t; b\r\n\r\n", 100, 1, "hello", ANY, "BWS before ';'");
    CHUNKED("5\r\nhello\r\n0\r\nX-Sum: abc\r\nX-Other:\tv \r\n\r\n", 100, 1, "hello", ANY, "trailers discarded");
    CHUNKED("5\r\nhello\r\n0\r\nX: 1\r\n\r\nNEXT", 100, 1, "hello", 21, "used stops after the trailers");
    CHUNKED("5 \r\nhello\r\n0\r\n\r\n", 100, SB_EPARSE, NULL, 2, "whitespace after size without extension");
    CHUNKED("5;a\x01\r\nhello\r\n0\r\n\r\n", 100, SB_EPARSE, NULL, 3, "control byte in extension");
    CHUNKED("5;a\nhello\r\n0\r\n\r\n", 100, SB_EPARSE, NULL, 3, "bare LF in extension");
    CHUNKED("0\r\n X: 1\r\n\r\n", 100, SB_EPARSE, NULL, 3, "obs-fold in trailers");
    CHUNKED("0\r\nX : 1\r\n\r\n", 100, SB_EPARSE, NULL, 4, "space before colon in trailer");
    CHUNKED("0\r\nX\r\n\r\n", 100, SB_EPARSE, NULL, 4, "trailer without colon");
    CHUNKED("0\r\nX: 1\n\r\n", 100, SB_EPARSE, NULL, 7, "bare LF in trailer");
    CHUNKED("0\r\nX: 1\r\n\n", 100, SB_EPARSE, NULL, 9, "bare LF as the final line");
    CHUNKED("0\r\nX: a\0b\r\n\r\n", 100, SB_EPARSE, NULL, 7, "NUL in a trailer value");
    CHUNKED("0\r\n\rX", 100, SB_EPARSE, NULL, 4, "CR not followed by LF at the end");

    /* limits: extension bytes per size line, trailer section bytes */
    static char in[10000];
    size_t len;
    in[0] = '1';
    in[1] = ';';
    memset(in + 2, 'e', SB_HTTP1_MAX_CHUNK_EXT - 1); /* ';' + 4095 bytes: exactly the limit */
    len = 2 + SB_HTTP1_MAX_CHUNK_EXT - 1;
    len += (size_t)snprintf(in + len, sizeof in - len, "\r\nx\r\n0\r\n\r\n");
    chunked_case(in, len, 100, 1, "x", len, "extensions of exactly the limit");
    memmove(in + 3, in + 2, len - 2);
    in[2] = 'e';
    chunked_case(in, len + 1, 100, SB_E2BIG, NULL, 1 + SB_HTTP1_MAX_CHUNK_EXT, "extensions one byte over");

    len = (size_t)snprintf(in, sizeof in, "0\r\nX: ");
    size_t fill = SB_HTTP1_MAX_TRAILERS - strlen("X: ") - 4; /* "X: " value CRLF CRLF = exactly the limit */
    memset(in + len, 'v', fill);
    len += fill;
    len += (size_t)snprintf(in + len, sizeof in - len, "\r\n\r\n");
    chunked_case(in, len, 100, 1, "", len, "trailers of exactly the limit");
    memmove(in + 4, in + 3, len - 3);
    in[3] = 'v';
    chunked_case(in, len + 1, 100, SB_E2BIG, NULL, 3 + SB_HTTP1_MAX_TRAILERS, "trailers one byte over");
}

TEST(chunked_framing_errors)
{
    CHUNKED("\r\nhello\r\n0\r\n\r\n", 100, SB_EPARSE, NULL, 0, "empty size");
    CHUNKED("x\r\n", 100, SB_EPARSE, NULL, 0, "non-hex size");
    CHUNKED("0x5\r\nhello\r\n0\r\n\r\n", 100, SB_EPARSE, NULL, 1, "0x prefix");
    CHUNKED("-5\r\nhello\r\n0\r\n\r\n", 100, SB_EPARSE, NULL, 0, "negative size");
    CHUNKED(" 5\r\nhello\r\n0\r\n\r\n", 100, SB_EPARSE, NULL, 0, "whitespace before size");
    CHUNKED("5\nhello\r\n0\r\n\r\n", 100, SB_EPARSE, NULL, 1, "bare LF after size");
    CHUNKED("5\rhello\r\n0\r\n\r\n", 100, SB_EPARSE, NULL, 2, "bare CR after size");
    CHUNKED("5\r\nhelloX\r\n0\r\n\r\n", 100, SB_EPARSE, "hello", 8, "data longer than its size");
    CHUNKED("5\r\nhello\n0\r\n\r\n", 100, SB_EPARSE, "hello", 8, "bare LF after data");
    CHUNKED("5\r\nhello\r0\r\n\r\n", 100, SB_EPARSE, "hello", 9, "bare CR after data");
    CHUNKED("5\r\nhello0\r\n\r\n", 100, SB_EPARSE, "hello", 8, "no CRLF after data");
    CHUNKED("0\r\n", 100, 0, "", 3, "last chunk, trailers pending");

    /* errors are sticky */
    sb_http1_chunked_t c;
    sb_buf_t out;
    size_t used;
    sb_buf_init(&out);
    sb_http1_chunked_init(&c);
    is_int(sb_http1_chunked_feed(&c, "z", 1, &out, 10, &used), SB_EPARSE, "error");
    is_int(sb_http1_chunked_feed(&c, "0\r\n\r\n", 5, &out, 10, &used), SB_EPARSE, "same error again");
    is_int(used, 0, "nothing consumed after an error");
    sb_buf_cleanup(&out);
}

TEST(chunked_limits)
{
    CHUNKED("0000000000000005\r\nhello\r\n0\r\n\r\n", 100, 1, "hello", ANY, "16 hex digits");
    CHUNKED("00000000000000005\r\nhello\r\n0\r\n\r\n", 100, SB_EPARSE, NULL, 16, "17 hex digits, small value");
    CHUNKED("ffffffffffffffff\r\n", (size_t)-1, 0, "", ANY, "16 f's with an unbounded body: only needs more");
    CHUNKED("fffffffffffffffff\r\n", (size_t)-1, SB_EPARSE, NULL, 16, "17 f's: overflow refused");
    CHUNKED("ffffffffffffffff\r\n", 100, SB_E2BIG, NULL, 1, "size over max_body: on the digit that passes it");
    CHUNKED("a\r\n0123456789\r\n0\r\n\r\n", 10, 1, "0123456789", ANY, "body of exactly max_body");
    CHUNKED("b\r\n0123456789a\r\n0\r\n\r\n", 10, SB_E2BIG, "", 0, "one byte over, in one chunk");
    CHUNKED("5\r\n01234\r\n6\r\n56789a\r\n0\r\n\r\n", 10, SB_E2BIG, "01234", 10, "one byte over, across chunks");
    CHUNKED("0\r\n\r\n", 0, 1, "", 5, "empty body with max_body 0");

    /* what out held already counts toward max_body */
    sb_http1_chunked_t c;
    sb_buf_t out;
    size_t used;
    sb_buf_init(&out);
    sb_buf_append(&out, "abcdefgh", 8);
    sb_http1_chunked_init(&c);
    is_int(sb_http1_chunked_feed(&c, "3\r\n", 3, &out, 10, &used), SB_E2BIG, "8 held + 3 > 10");
    is_int(out.len, 8, "out untouched");
    sb_http1_chunked_init(&c);
    is_int(sb_http1_chunked_feed(&c, "2\r\nij\r\n0\r\n\r\n", 12, &out, 10, &used), 1, "8 held + 2 == 10");
    ok(out.len == 10 && memcmp(out.p, "abcdefghij", 10) == 0, "appended");
    sb_buf_cleanup(&out);
}

TEST(chunked_split_everywhere)
{
    /* every two-piece split of a body with extensions and trailers gives the same result */
    const char in[] = "4;x=y\r\nWiki\r\n5\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nExpires: never\r\n\r\nPIPE";
    size_t len = sizeof in - 1;
    bool all = true;
    for (size_t cut = 0; cut <= len; cut++) {
        sb_http1_chunked_t c;
        sb_buf_t out;
        size_t u1 = 0, u2 = 0;
        sb_buf_init(&out);
        sb_http1_chunked_init(&c);
        int rc = sb_http1_chunked_feed(&c, in, cut, &out, 100, &u1);
        if (rc == 0)
            rc = sb_http1_chunked_feed(&c, in + u1, len - u1, &out, 100, &u2);
        all = all && rc == 1 && u1 + u2 == len - 4 && out.len == 23 &&
              memcmp(out.p, "Wikipedia in\r\n\r\nchunks.", 23) == 0;
        sb_buf_cleanup(&out);
    }
    ok(all, "all %zu splits agree", len + 1);
}

/* --- percent-decoding ------------------------------------------------------------------------------------------ */

/* Decodes lit into a buffer holding "pre"; returns the code, and the decoded bytes (after "pre") in dec. */
static int pct(const char *lit, size_t len, char *dec, size_t *dlen)
{
    sb_buf_t out;
    sb_buf_init(&out);
    sb_buf_append(&out, "pre", 3);
    int rc = sb_http1_pct_decode(sb_str(lit, len), &out);
    *dlen = out.len - 3;
    memcpy(dec, out.p + 3, *dlen);
    dec[*dlen] = '\0';
    bool kept = memcmp(out.p, "pre", 3) == 0 && out.p[out.len] == '\0';
    sb_buf_cleanup(&out);
    return kept ? rc : -9999;
}

#define PCT(lit) pct((lit), sizeof(lit) - 1, dec, &dlen)

TEST(pct_decode)
{
    char dec[64];
    size_t dlen;
    ok(PCT("/a%20b") == 0 && strcmp(dec, "/a b") == 0, "%%20");
    ok(PCT("%41%62%2f%2F") == 0 && strcmp(dec, "Ab//") == 0, "upper and lower hex, %%2F decoded");
    ok(PCT("a+b") == 0 && strcmp(dec, "a+b") == 0, "'+' is not a space");
    ok(PCT("%2B") == 0 && strcmp(dec, "+") == 0, "%%2B");
    ok(PCT("%C3%A9") == 0 && strcmp(dec, "\xc3\xa9") == 0, "UTF-8 bytes");
    ok(PCT("%00") == 0 && dlen == 1 && dec[0] == '\0', "%%00 gives a NUL byte (counted output)");
    ok(PCT("%ff") == 0 && dlen == 1 && (unsigned char)dec[0] == 0xff, "%%ff");
    ok(PCT("%2541") == 0 && strcmp(dec, "%41") == 0, "decoded once only");
    ok(PCT("") == 0 && dlen == 0, "empty");
    ok(PCT("plain") == 0 && strcmp(dec, "plain") == 0, "nothing to decode");
    is_int(PCT("%"), SB_EPARSE, "lone '%%'");
    is_int(PCT("%4"), SB_EPARSE, "one hex digit at the end");
    is_int(PCT("ab%4"), SB_EPARSE, "truncated after text");
    is_int(PCT("%4g"), SB_EPARSE, "non-hex second digit");
    is_int(PCT("%g4"), SB_EPARSE, "non-hex first digit");
    is_int(PCT("%%41"), SB_EPARSE, "'%%%%'");
    is_int(PCT("%+1"), SB_EPARSE, "sign is no hex digit");
    is_int(PCT("ok%20then%zz"), SB_EPARSE, "bad escape after good ones");
    is_int(dlen, 0, "out left as it was on error");
    const char s[] = "%41%42";
    sb_buf_t out;
    sb_buf_init(&out);
    is_int(sb_http1_pct_decode(sb_str(s, 5), &out), SB_EPARSE, "counted: '%%4' cut by len");
    is_int(sb_http1_pct_decode(sb_str(s, 3), &out), 0, "counted: only the first escape");
    is_str(sb_buf_cstr(&out), "A", "first escape");
    sb_buf_cleanup(&out);
}

static sb_http1_resp_t resp;
#define R(lit) sb_http1_parse_response((lit), sizeof(lit) - 1, 8192, &resp)

TEST(response)
{
    static const char up[] = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                             "Sec-WebSocket-Accept:  s3pPLMBiTxaQ9kYGzzhZRbK+xOo= \r\n\r\nframes";
    is_int(R(up), (int)sizeof up - 1 - 6, "a 101: the head's length, not the frames after it");
    is_int(resp.status, 101, "status");
    is_int(resp.minor, 1, "HTTP/1.1");
    ok(str_is(resp.reason, "Switching Protocols"), "reason");
    is_int(resp.nheaders, 3, "3 headers");
    const sb_str_t *v = sb_http1_resp_header(&resp, "sec-websocket-accept");
    ok(v && str_is(*v, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "a header by name, case-insensitively, trimmed");
    ok(!sb_http1_resp_header(&resp, "sec-websocket-protocol"), "an absent header: NULL");
    for (size_t n = 0; n < sizeof up - 1 - 6; n++)
        if (sb_http1_parse_response(up, n, 8192, &resp) != 0) {
            ok(0, "a prefix of %zu bytes needs more", n);
            break;
        }
    ok(1, "every proper prefix needs more");
    is_int(R("HTTP/1.0 403 Forbidden\r\n\r\n"), 26, "HTTP/1.0 403");
    is_int(resp.status, 403, "403");
    is_int(R("HTTP/1.1 200\r\n\r\n"), 16, "no SP before an empty reason");
    is_int(R("HTTP/1.1 200 \r\n\r\n"), 17, "an SP and an empty reason");
    ok(resp.reason.len == 0, "empty reason");
    is_int(R("HTTP/1.1 200OK\r\n\r\n"), SB_EPARSE, "a reason without SP");
    is_int(R("HTTP/2.0 200 OK\r\n\r\n"), SB_EPARSE, "HTTP/2.0");
    is_int(R("HTTP/1.2 200 OK\r\n\r\n"), SB_EPARSE, "HTTP/1.2");
    is_int(R("http/1.1 200 OK\r\n\r\n"), SB_EPARSE, "lower-case version");
    is_int(R("HTTP/1.1 099 Low\r\n\r\n"), SB_EPARSE, "status below 100");
    is_int(R("HTTP/1.1 600 High\r\n\r\n"), SB_EPARSE, "status above 599");
    is_int(R("HTTP/1.1 20 OK\r\n\r\n"), SB_EPARSE, "two digits");
    is_int(R("HTTP/1.1  200 OK\r\n\r\n"), SB_EPARSE, "two spaces");
    is_int(R("\r\nHTTP/1.1 200 OK\r\n\r\n"), SB_EPARSE, "an empty line first");
    is_int(R("HTTP/1.1 200 OK\nX: y\r\n\r\n"), SB_EPARSE, "a bare LF");
    is_int(R("HTTP/1.1 200 OK\r\nX : y\r\n\r\n"), SB_EPARSE, "whitespace before a colon");
    is_int(R("HTTP/1.1 200 OK\r\nX: y\r\n z\r\n\r\n"), SB_EPARSE, "obs-fold");
    is_int(R("HTTP/1.1 200 OK\r\nX: a\x01b\r\n\r\n"), SB_EPARSE, "a control byte in a value");
    is_int(R("HTTP/1.1 200 O\x01K\r\n\r\n"), SB_EPARSE, "a control byte in the reason");
    is_int(R("HTTP/1.1 200 OK\r\n: y\r\n\r\n"), SB_EPARSE, "no name");

    char big[9000];
    int n = snprintf(big, sizeof big, "HTTP/1.1 101 OK\r\nX: ");
    memset(big + n, 'a', sizeof big - (size_t)n);
    is_int(sb_http1_parse_response(big, 8192, 8192, &resp), 0, "8192 bytes, no end yet: more");
    is_int(sb_http1_parse_response(big, 8193, 8192, &resp), SB_E2BIG, "one more: too long");
    char many[4096];
    size_t m = (size_t)snprintf(many, sizeof many, "HTTP/1.1 101 OK\r\n");
    for (int i = 0; i < SB_HTTP1_MAX_HEADERS; i++)
        m += (size_t)snprintf(many + m, sizeof many - m, "H%d: v\r\n", i);
    m += (size_t)snprintf(many + m, sizeof many - m, "\r\n");
    is_int(sb_http1_parse_response(many, m, 8192, &resp), (int)m, "%d headers", SB_HTTP1_MAX_HEADERS);
    m -= 2;
    m += (size_t)snprintf(many + m, sizeof many - m, "One: more\r\n\r\n");
    is_int(sb_http1_parse_response(many, m, 8192, &resp), SB_E2BIG, "one more header: SB_E2BIG");
}

int main(void)
{
    RUN(basic_get);
    RUN(target_forms);
    RUN(request_line);
    RUN(versions);
    RUN(line_endings);
    RUN(leading_empty_lines);
    RUN(incremental);
    RUN(pipelined);
    RUN(max_head);
    RUN(header_count);
    RUN(header_syntax);
    RUN(header_lookup);
    RUN(content_length);
    RUN(transfer_encoding);
    RUN(connection);
    RUN(expect);
    RUN(host);
    RUN(smuggling_mix);
    RUN(chunked_basic);
    RUN(chunked_extensions_trailers);
    RUN(chunked_framing_errors);
    RUN(chunked_limits);
    RUN(chunked_split_everywhere);
    RUN(pct_decode);
    RUN(response);
    return tap_done();
}
