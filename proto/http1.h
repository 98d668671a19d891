/* HTTP/1.1 without the I/O: the request head parser, the chunked body decoder, percent-decoding, and a response
 * head parser (for the WebSocket client's upgrade answer).
 *
 * The gateway's HTTP server reads bytes from libuv into a buffer and calls sb_http1_parse() on all of it after each
 * read; the head faces the internet (Twilio and Meta webhooks, browsers), so the parser is strict where RFC 9110 and
 * RFC 9112 let a server be strict, and refuses every ambiguity that could let two servers disagree on where a
 * request ends (request smuggling): bare LF or CR, obs-fold, whitespace before a colon, conflicting Content-Length,
 * Content-Length together with Transfer-Encoding, any transfer coding but "chunked". It is on the hot path, so it
 * neither allocates nor calls through pointers: an incomplete head costs one memchr() per line, a complete one a
 * single pass of table lookups. Results borrow the caller's buffer. The chunked decoder is incremental (any split of
 * the input gives the same result) and bounded (body, extensions and trailers all have limits). */
#ifndef SB_HTTP1_H
#define SB_HTTP1_H

#include "proto/str.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SB_HTTP1_MAX_HEADERS 64      /* header field lines in one head; one more is SB_E2BIG (431) */
#define SB_HTTP1_MAX_METHOD 32       /* longest accepted method token */
#define SB_HTTP1_MAX_CL_DIGITS 18    /* longest accepted Content-Length value (fits an int64_t) */
#define SB_HTTP1_MAX_CHUNK_EXT 4096  /* bytes after the size on one chunk-size line (BWS and extensions) */
#define SB_HTTP1_MAX_TRAILERS 4096   /* trailer section bytes, including its final CRLF */

typedef struct sb_http1_header {
    sb_str_t name;  /* 1+ token characters, as sent */
    sb_str_t value; /* trimmed of SP/HTAB at both ends; may be empty */
} sb_http1_header_t;

typedef struct sb_http1_req {
    sb_str_t method; /* as sent, case-sensitive token, 1..SB_HTTP1_MAX_METHOD bytes */
    sb_str_t target; /* the raw request-target, byte for byte: origin-form "/p?q", or "*" (OPTIONS only) */
    sb_str_t path;   /* target up to the first '?' (raw, not decoded); "*" for the asterisk form */
    sb_str_t query;  /* after the first '?' (raw, without the '?'); empty (len 0) if none */
    int minor;       /* HTTP/1.<minor>: 0 or 1 */
    sb_http1_header_t headers[SB_HTTP1_MAX_HEADERS]; /* in the order received; repeated names kept apart */
    int nheaders;
    int64_t content_length; /* -1 when absent */
    bool chunked;           /* Transfer-Encoding: chunked (then content_length is -1) */
    bool keep_alive;        /* 1.1: unless "Connection: close"; 1.0: only with "Connection: keep-alive", no close */
    bool upgrade;           /* 1.1 only: Connection has the token "upgrade" and a non-empty Upgrade header is present */
    bool expect_continue;   /* 1.1 only: Expect has the token "100-continue" (RFC 9110: ignored in 1.0 requests) */
} sb_http1_req_t;

/* Parses a request head from buf[0..len) (borrowed; buf may be NULL when len is 0). Call it again from the start
 * with the whole buffer each time more bytes arrive: an incomplete head costs one memchr() per line so far.
 *
 * Lines end in CRLF. Empty lines before the request line (left over from a previous request) are skipped but count
 * toward max_head and toward the returned length. The request line is "method SP target SP HTTP/1.x", single spaces;
 * method is 1..32 tchar; target is visible ASCII, starting with '/' (origin-form) or exactly "*" with method OPTIONS.
 * Header lines are "name:" OWS value OWS with name 1+ tchar and value bytes SP, HTAB, 0x21..0x7e or 0x80..0xff.
 *
 * Returns:
 *   > 0        the head is complete: the number of bytes it took, up to and including its empty line; *out is
 *              filled and every sb_str_t in it points into buf[0..returned);
 *   0          more bytes are needed: no complete head yet, and len <= max_head;
 *   SB_E2BIG   the head is longer than max_head bytes, or has more than SB_HTTP1_MAX_HEADERS header lines (431);
 *   SB_EPARSE  malformed (400): bare LF or CR, obs-fold, bad syntax or bytes, not origin-form, bad or conflicting
 *              Content-Length, Content-Length with Transfer-Encoding, Transfer-Encoding in HTTP/1.0, non-token in
 *              Connection, HTTP/1.1 without Host, more than one Host, a Host value with bytes no host has;
 *   SB_ERANGE  well-formed but unsupported version, "HTTP/d.d" other than 1.0 and 1.1 (505);
 *   SB_EINVAL  a Transfer-Encoding other than one header saying exactly "chunked", case-insensitively (501).
 * A bare LF, or a line starting or ending in a bare CR, is SB_EPARSE as soon as it is seen, even before the head is
 * complete; a bare CR inside a line once the head is complete. max_head values above INT_MAX act as INT_MAX. On any
 * return but > 0, *out is unspecified (when 0, untouched). Never reads beyond buf[len). */
int sb_http1_parse(const char *buf, size_t len, size_t max_head, sb_http1_req_t *out);

/* Returns the value of the first header named name (a NUL-terminated string, compared ASCII case-insensitively),
 * or NULL if there is none. The result borrows req, which borrows the parsed buffer. */
const sb_str_t *sb_http1_header(const sb_http1_req_t *req, const char *name);

typedef struct sb_http1_resp {
    int minor;      /* HTTP/1.<minor>: 0 or 1 */
    int status;     /* 100..599 */
    sb_str_t reason; /* the reason phrase, possibly empty */
    sb_http1_header_t headers[SB_HTTP1_MAX_HEADERS]; /* in the order received */
    int nheaders;
} sb_http1_resp_t;

/* Parses a response head from buf[0..len) (borrowed; NULL when len is 0), as sb_http1_parse does a request head:
 * call it again with the whole buffer as more arrives; the same line and header syntax (CRLF only, no obs-fold, no
 * whitespace before a colon, field-value bytes only). The status line is "HTTP/1.0" or "HTTP/1.1", SP, three
 * digits from 100 to 599, then SP and a reason phrase of field-value bytes (the SP may be missing when the reason
 * is empty). Nothing may come before it (no empty lines). Header values are not interpreted: the caller looks up
 * what it needs (sb_http1_resp_header). Returns the head's length (> 0, up to and including its empty line; *out
 * filled, pointing into buf), 0 when more bytes are needed (len <= max_head), SB_E2BIG (longer than max_head, or
 * more than SB_HTTP1_MAX_HEADERS header lines) or SB_EPARSE (anything malformed, another version included). On
 * any return but > 0, *out is unspecified. Never reads beyond buf[len). */
int sb_http1_parse_response(const char *buf, size_t len, size_t max_head, sb_http1_resp_t *out);

/* The value of the first header of resp named name (compared ASCII case-insensitively), or NULL. */
const sb_str_t *sb_http1_resp_header(const sb_http1_resp_t *resp, const char *name);

/* Incremental decoder of a chunked request body (RFC 9112 section 7.1). Caller's storage; plain data, no cleanup. */
typedef struct sb_http1_chunked {
    int state;          /* internal: where in the chunk framing the next byte falls */
    int err;            /* the error returned once, returned again by every later feed */
    uint64_t remaining; /* chunk-size being read, then data bytes left in the current chunk */
    size_t digits;      /* hex digits read of the current chunk-size */
    size_t ext;         /* bytes read after the chunk-size on its line (BWS and extensions) */
    size_t trailers;    /* bytes read of the trailer section */
} sb_http1_chunked_t;

/* Prepares c for a new body. */
void sb_http1_chunked_init(sb_http1_chunked_t *c);

/* Consumes bytes from in[0..len) (borrowed; NULL when len is 0), appending decoded body bytes to out (grown as
 * needed, never to more than max_body bytes in all, counting what out already held). Sets *used to the number of
 * bytes consumed. Returns:
 *   1          the body is complete (last chunk and trailer section read): *used stops right after its final CRLF,
 *              so bytes of a pipelined request that follow are left to the caller; later feeds return 1, *used 0;
 *   0          more input is needed; all len bytes were consumed;
 *   SB_EPARSE  malformed framing: a bad or missing hex size, more than 16 hex digits, whitespace not followed by
 *              an extension, control bytes, a chunk not followed by CRLF, a bad trailer line, bare CR or LF;
 *   SB_E2BIG   a chunk-size would take out past max_body (reported on the size itself, before any of its data), or
 *              the extensions of one size line exceed SB_HTTP1_MAX_CHUNK_EXT, or the trailer section exceeds
 *              SB_HTTP1_MAX_TRAILERS bytes.
 * On an error *used is the offset of the offending byte; errors are sticky (later feeds return the same code,
 * consume nothing). Chunk extensions are checked for stray control bytes and skipped; trailers are checked to be
 * "name: value" lines and discarded. The result and the decoded bytes do not depend on how the input is split. */
int sb_http1_chunked_feed(sb_http1_chunked_t *c, const char *in, size_t len, sb_buf_t *out, size_t max_body,
                          size_t *used);

/* Percent-decodes s (borrowed) and appends the result to out. "%XX" (hex, either case) becomes the byte 0xXX,
 * every other byte is copied; '+' is NOT special (paths, not forms). The output may therefore hold any byte,
 * NUL and '/' (from %2F) included: treat it as counted bytes, and route on the raw path. Returns 0, or SB_EPARSE
 * on a '%' not followed by two hex digits, in which case out is left as it was. */
int sb_http1_pct_decode(sb_str_t s, sb_buf_t *out);

#endif
