"""tests/integration/test_protocol.py — HTTP/1.1 framing of the gateway's own server (adapters/
http_server.c over proto/http1.c), with hand-built bytes: pipelining, Content-Length and chunked
bodies, 100-continue, HEAD, HTTP/1.0, half-closed clients, and every malformed or unsupported head
answered with the right status and a closed connection.
Run: SB_BIN=build/release/switchboard python3 tests/integration/test_protocol.py"""

import socket
import time

import harness as h

HOST = b"Host: 127.0.0.1\r\n"


def test_pipelining(gw):
    with h.HttpConn(gw.port) as c:
        c.send(b"GET /healthz HTTP/1.1\r\n" + HOST + b"\r\n"
               b"GET /nope HTTP/1.1\r\n" + HOST + b"\r\n"
               b"GET /metrics HTTP/1.1\r\n" + HOST + b"\r\n")
        rs = [c.read_response() for _ in range(3)]
    got = [r.status if r else None for r in rs]
    h.ok(got == [200, 404, 200], "three pipelined requests answered in order (%r)" % got)
    h.ok(rs[2] is not None and b"sb_actors" in rs[2].body, "third answer is the metrics page")


def test_content_length_body(gw):
    with h.HttpConn(gw.port) as c:
        c.send(b"POST /healthz HTTP/1.1\r\n" + HOST + b"Content-Length: 11\r\n\r\nhello")
        time.sleep(0.2)
        c.send(b" world" + b"GET /healthz HTTP/1.1\r\n" + HOST + b"\r\n")
        r1, r2 = c.read_response(), c.read_response()
    h.ok(r1 is not None and r1.status == 405, "POST with a body split over two sends: 405", r1)
    h.ok(r2 is not None and r2.status == 200, "the body was consumed exactly: next request 200", r2)


def test_chunked_body(gw):
    with h.HttpConn(gw.port) as c:
        c.send(b"POST /healthz HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n\r\n"
               b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n"
               b"GET /healthz HTTP/1.1\r\n" + HOST + b"\r\n")
        r1, r2 = c.read_response(), c.read_response()
    h.ok(r1 is not None and r1.status == 405, "chunked POST read whole: 405", r1)
    h.ok(r2 is not None and r2.status == 200, "chunk framing consumed exactly: next request 200", r2)


def test_chunked_too_big(gw):
    big = b"%x\r\n" % 5000 + b"x" * 5000 + b"\r\n0\r\n\r\n"
    with h.HttpConn(gw.port) as c:
        c.send(b"POST /healthz HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n\r\n" + big)
        r = c.read_response()
        closed = c.closed_within(3)
    h.ok(r is not None and r.status == 413 and h.error_code(r) == "payload_too_large",
         "chunked body over max_body_bytes: 413 payload_too_large", r)
    h.ok(closed, "and the connection closes")


def test_expect_continue(gw):
    with h.HttpConn(gw.port) as c:
        c.send(b"POST /healthz HTTP/1.1\r\n" + HOST + b"Content-Length: 4\r\nExpect: 100-continue\r\n\r\n")
        interim = c.read_response()
        c.send(b"body")
        final = c.read_response()
    h.ok(interim is not None and interim.status == 100, "Expect: 100-continue gets 100 Continue first", interim)
    h.ok(final is not None and final.status == 405, "then the final answer", final)


def test_head(gw):
    with h.HttpConn(gw.port) as c:
        c.send(b"HEAD /healthz HTTP/1.1\r\n" + HOST + b"\r\n")
        r = c.read_response(method="HEAD")
        c.send(b"GET /healthz HTTP/1.1\r\n" + HOST + b"\r\n")
        r2 = c.read_response()
    h.ok(r is not None and r.status == 200 and int(r.header("content-length", "0")) > 0 and r.body == b"",
         "HEAD: 200 with a content-length and no body", r)
    h.ok(r2 is not None and r2.status == 200 and r2.body.startswith(b"{"),
         "no stray body bytes: the next response parses", r2)


def test_http10(gw):
    with h.HttpConn(gw.port) as c:
        c.send(b"GET /healthz HTTP/1.0\r\n\r\n")
        r = c.read_response()
        closed = c.closed_within(3)
    h.ok(r is not None and r.status == 200 and r.header("connection") == "close",
         "HTTP/1.0 without keep-alive: 200 with Connection: close", r)
    h.ok(closed, "and the connection closes")


def test_half_close(gw):
    s = socket.create_connection(("127.0.0.1", gw.port), timeout=5)
    s.sendall(b"GET /readyz HTTP/1.1\r\n" + HOST + b"\r\n")
    s.shutdown(socket.SHUT_WR)
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    h.ok(data.startswith(b"HTTP/1.1 200"), "a client that half-closes after its request still gets the answer",
         data[:200])


def rejected(gw, data, status, code, what):
    with h.HttpConn(gw.port) as c:
        c.send(data)
        try:
            r = c.read_response()
        except (OSError, ValueError) as e:
            r = e
        closed = c.closed_within(3)
    h.ok(isinstance(r, h.Response) and r.status == status and h.error_code(r) == code,
         "%s: %d %s" % (what, status, code), r)
    h.ok(closed, "%s: connection closed after the answer" % what)


def test_rejections(gw):
    rejected(gw, b"GET /healthz HTTP/2.0\r\n" + HOST + b"\r\n", 505, "http_version_not_supported",
             "HTTP/2.0 head")
    rejected(gw, b"GET /healthz HTTP/1.1\n" + HOST + b"\r\n", 400, "bad_request", "bare LF")
    rejected(gw, b"POST /healthz HTTP/1.1\r\n" + HOST + b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
             400, "bad_request", "Content-Length with Transfer-Encoding (smuggling)")
    rejected(gw, b"POST /healthz HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: gzip\r\n\r\n", 501, "not_implemented",
             "Transfer-Encoding gzip")
    rejected(gw, b"GET /healthz HTTP/1.1\r\n\r\n", 400, "bad_request", "HTTP/1.1 without Host")
    rejected(gw, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400, "bad_request",
             "binary bytes (a TLS hello)")
    rejected(gw, b"GET http://example.com/ HTTP/1.1\r\n" + HOST + b"\r\n", 400, "bad_request",
             "absolute-form target")


def test_slow_body(gw):
    with h.HttpConn(gw.port, timeout=10) as c:
        c.send(b"POST /healthz HTTP/1.1\r\n" + HOST + b"Content-Length: 10\r\n\r\nabc")
        t0 = time.monotonic()
        r = c.read_response()
        took = time.monotonic() - t0
        closed = c.closed_within(3)
    h.ok(r is not None and r.status == 408 and h.error_code(r) == "request_timeout",
         "a body that stops arriving: 408 request_timeout", r)
    h.ok(2.5 <= took <= 5, "after header_timeout (3 s), not before (%.1f s)" % took)
    h.ok(closed, "and the connection closes")


def test_idle_close(gw):
    with h.HttpConn(gw.port, timeout=10) as c:
        c.send(b"GET /healthz HTTP/1.1\r\n" + HOST + b"\r\n")
        r = c.read_response()
        t0 = time.monotonic()
        closed = c.closed_within(6)
        took = time.monotonic() - t0
    h.ok(r is not None and r.status == 200, "first request answered")
    h.ok(closed and 3.5 <= took <= 6, "an idle keep-alive connection closes after idle_timeout (4 s): %.1f s" % took)


def test_file():
    with h.Gateway(header_timeout=3, idle_timeout=4, max_body_bytes=2048) as gw:
        for t in (test_pipelining, test_content_length_body, test_chunked_body, test_chunked_too_big,
                  test_expect_continue, test_head, test_http10, test_half_close, test_rejections,
                  test_slow_body, test_idle_close):
            h.subtest(t, gw)


h.main(test_file)
