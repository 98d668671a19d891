"""tests/integration/test_http.py — the HTTP front door of a real gateway: health, readiness and
metrics endpoints, JSON errors (404, 405, 413), oversized headers, slowloris clients and
keep-alive. Run: SB_BIN=build/release/switchboard python3 tests/integration/test_http.py"""

import re
import select
import socket
import time

import harness as h

SHARDS = 2
METRICS = ["sb_http_requests_total", "sb_actors", "sb_mailbox_depth", "sb_loop_lag_seconds",
           "sb_connections"]


def test_healthz(gw):
    r = h.get(gw.port, "/healthz")
    h.ok(r is not None and r.status == 200, "GET /healthz answers 200", r)


def test_readyz(gw):
    # The shards connect to Redis and PostgreSQL at start; give them a moment.
    def green():
        x = h.get(gw.port, "/readyz")
        return x if x is not None and x.status == 200 else None

    r = h.wait_for(green, 5)
    h.ok(r is not None, "GET /readyz answers 200 within 5 s", r or h.get(gw.port, "/readyz"))
    if r is None:
        return
    try:
        body = r.json()
    except ValueError:
        body = None
    h.ok(isinstance(body, dict) and body.get("redis") == "ok" and body.get("postgres") == "ok",
         '/readyz body is {"redis":"ok","postgres":"ok"}', r.body)


def test_metrics(gw):
    h.get(gw.port, "/healthz")
    r = h.get(gw.port, "/metrics")
    h.ok(r is not None and r.status == 200, "GET /metrics answers 200", r)
    if r is None or r.status != 200:
        return
    ctype = r.header("content-type", "")
    h.ok(ctype.replace(" ", "").startswith("text/plain;version=0.0.4"),
         "/metrics content type is text/plain; version=0.0.4", ctype)
    text = r.body.decode("utf-8", errors="replace")
    for name in METRICS:
        for shard in range(SHARDS):
            m = re.search(r'^%s\{shard="%d"\} (\S+)$' % (re.escape(name), shard), text, re.M)
            value_ok = False
            if m:
                try:
                    float(m.group(1))
                    value_ok = True
                except ValueError:
                    pass
            h.ok(value_ok, '/metrics has %s{shard="%d"} <number>' % (name, shard),
                 text if not value_ok else None)


def expect_error(r, status, code, what):
    h.ok(r is not None and r.status == status, "%s answers %d" % (what, status), r)
    if r is None:
        return
    h.ok(r.header("content-type", "").startswith("application/json"),
         "%s error has Content-Type application/json" % what, r.header("content-type"))
    h.ok(h.error_code(r) == code, '%s body is {"error":{"code":"%s","message":...}}' % (what, code),
         r.body)


def test_not_found(gw):
    expect_error(h.get(gw.port, "/no/such/thing"), 404, "not_found", "GET /no/such/thing")


def test_method_not_allowed(gw):
    expect_error(h.request(gw.port, "POST", "/healthz", body=b""), 405, "method_not_allowed",
                 "POST /healthz")


def test_payload_too_large(gw):
    # Only the head is sent: the gateway must refuse on Content-Length alone, before any routing
    # or authentication, without waiting for 10 MB.
    head = (b"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 10000000\r\n\r\n")
    try:
        r = h.raw(gw.port, head + b"{", timeout=5)
    except socket.timeout:
        h.ok(False, "POST with Content-Length: 10000000 answers without waiting for the body")
        return
    expect_error(r, 413, "payload_too_large", "POST with Content-Length: 10000000")


def oversized(gw, extra, what):
    data = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n" + extra + b"Connection: close\r\n\r\n"
    t0 = time.monotonic()
    try:
        with h.HttpConn(gw.port, timeout=5) as c:
            c.send(data)
            r = c.read_response()
    except socket.timeout:
        h.ok(False, "%s: an answer or a close within 5 s (not a hang)" % what)
        return
    except ConnectionError:
        r = None  # closed in the middle of a response: no 2xx either
    h.ok(r is None or not 200 <= r.status < 300,
         "%s: 431 or closed without a 2xx (got %s in %.1f s)"
         % (what, "close" if r is None else r.status, time.monotonic() - t0), r)


def test_big_headers(gw):
    many = b"".join(b"X-Pad-%03d: %s\r\n" % (i, b"a" * 100) for i in range(100))  # ~11.5 KiB
    oversized(gw, many, "100 headers of 100 bytes (>8 KiB)")
    oversized(gw, b"X-Big: " + b"b" * 9000 + b"\r\n", "one 9000-byte header")
    r = h.get(gw.port, "/healthz")
    h.ok(r is not None and r.status == 200, "gateway still answers after oversized headers", r)


def test_slowloris(gw):
    """20 clients that send one header byte per second must each be closed (header_timeout = 5)
    within ~12 s, and meanwhile a normal request on a new connection answers promptly."""
    n = 20
    payload = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"s" * 100
    t0 = time.monotonic()
    socks = [socket.create_connection(("127.0.0.1", gw.port), timeout=5) for _ in range(n)]
    for s in socks:
        s.setblocking(False)
    closed_at = {}
    sent = 0
    next_send = t0
    probed = None
    try:
        while len(closed_at) < n and time.monotonic() - t0 < 14:
            now = time.monotonic()
            if now >= next_send and sent < len(payload):
                for i, s in enumerate(socks):
                    if i in closed_at:
                        continue
                    try:
                        s.send(payload[sent:sent + 1])
                    except (BrokenPipeError, ConnectionResetError):
                        closed_at[i] = now - t0
                    except BlockingIOError:
                        pass
                sent += 1
                next_send += 1.0
            if probed is None and now - t0 >= 2.0:
                p0 = time.monotonic()
                try:
                    r = h.get(gw.port, "/healthz", timeout=3)
                except OSError as e:
                    r = e
                probed = (r, time.monotonic() - p0)
                continue
            open_socks = [s for i, s in enumerate(socks) if i not in closed_at]
            wait = max(0.0, min(next_send - time.monotonic(), 0.2))
            readable, _, _ = select.select(open_socks, [], [], wait)
            for s in readable:
                i = socks.index(s)
                try:
                    chunk = s.recv(65536)  # a 408 may come first; the close is what counts
                except BlockingIOError:
                    continue
                except ConnectionResetError:
                    chunk = b""
                if not chunk:
                    closed_at[i] = time.monotonic() - t0
    finally:
        for s in socks:
            s.close()
    r, dt = probed if probed else (None, 99.0)
    h.ok(isinstance(r, h.Response) and r.status == 200 and dt < 1.0,
         "while 20 slowloris clients are connected, /healthz answers 200 in < 1 s (%.2f s)" % dt, r)
    late = sorted(closed_at.values())
    h.ok(len(closed_at) == n and max(late) <= 12.0,
         "all %d slowloris connections closed within 12 s (%d closed, last at %.1f s)"
         % (n, len(closed_at), max(late) if late else -1))


def test_keepalive(gw):
    good = 0
    detail = None
    with h.HttpConn(gw.port, timeout=5) as c:
        for i in range(100):
            if not c.send(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"):
                detail = "send %d failed: connection closed" % i
                break
            try:
                r = c.read_response()
            except (OSError, ValueError) as e:
                detail = "response %d: %r" % (i, e)
                break
            if r is None:
                detail = "connection closed after %d responses" % i
                break
            if r.status != 200:
                detail = "response %d: %r" % (i, r)
                break
            good += 1
    h.ok(good == 100, "keep-alive: 100 requests on one connection all answer 200 (%d did)" % good,
         detail)


def test_file():
    with h.Gateway(header_timeout=5, idle_timeout=30) as gw:
        for t in (test_healthz, test_readyz, test_metrics, test_not_found, test_method_not_allowed,
                  test_payload_too_large, test_big_headers, test_keepalive, test_slowloris):
            h.subtest(t, gw)
        h.subtest(test_healthz, gw)


h.main(test_file)
