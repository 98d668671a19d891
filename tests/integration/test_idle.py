"""tests/integration/test_idle.py — what idle connections cost the gateway, and what it does at its descriptor limit,
on the real stack over real sockets.

  1. IDLE_CLIENTS (3000) live inbox clients of one tenant, connected and welcomed, then idle: the gateway's RSS
     (from /proc) grows by at most 1.5 KiB per connection; one event to all of them reaches every one, and the RSS
     afterwards is back within 10% of the idle figure; a ping from every one of them (bytes in on every connection)
     leaves it there too.
  2. A gateway started with 256 descriptors: connections past its limit (less the reserve it keeps for its own
     connections) are closed at once and counted in sb_connections_refused_total, the burst is logged once when it
     starts and once when connections are taken again, and the gateway serves again once clients leave.

The memory bounds hold for the release build; under ASan (whose allocator keeps freed memory in quarantine and pads
every block) the figures are printed, not checked.
Run: SB_BIN=build/release/switchboard python3 tests/integration/test_idle.py"""

import json
import os
import re
import resource
import select
import socket
import struct
import time
import uuid

import harness as h
from test_webhooks import AUTH_TOKEN, MASTER_KEY, admin, post, sms_params

ASAN = "asan" in h.SB_BIN
CLIENTS = int(os.environ.get("IDLE_CLIENTS", "3000"))


def raise_nofile(need):
    """Lets this process (and the gateway it starts, which inherits it) hold `need` descriptors: the soft limit up to
    the hard one, and the hard one too when allowed (root). Returns the soft limit it got."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < need:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (need, need))
            return need
        except (ValueError, OSError):
            pass
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard
BOUND = 1536  # bytes of gateway RSS per idle inbox connection


def rss_kb(gw):
    with open("/proc/%d/status" % gw.proc.pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise ValueError("VmRSS")


def setup(gw):
    t = admin(gw, "/v1/admin/tenants", {"name": "idle " + uuid.uuid4().hex[:6]})
    key = admin(gw, "/v1/admin/tenants/%s/keys" % t["id"], {})["key"]
    number = "+1777%07d" % (uuid.uuid4().int % 10 ** 7)
    ch = admin(gw, "/v1/admin/tenants/%s/channels" % t["id"],
               {"type": "twilio_sms", "address": number,
                "credentials": {"account_sid": "AC" + "3" * 32, "auth_token": AUTH_TOKEN}})
    return key, ch["id"], number


def text_frame(obj):
    """A client text frame (masked with a zero key: masked as RFC 6455 requires, bytes unchanged)."""
    data = json.dumps(obj).encode()
    assert len(data) < 126
    return bytes([0x81, 0x80 | len(data)]) + b"\0\0\0\0" + data


class Client:
    """A bare inbox client: the upgrade and the hello in one write, then frames read as they come."""

    def __init__(self, port, key):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.setblocking(False)
        self.buf = b""
        self.head = False
        self.ops = []
        req = ("GET /v1/inbox HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
               "Sec-WebSocket-Protocol: switchboard.v1.json\r\n\r\n" % port).encode()
        self.sock.sendall(req + text_frame({"op": "hello", "token": key}))

    def feed(self):
        """Reads what is there; False once the connection is gone."""
        try:
            data = self.sock.recv(65536)
        except BlockingIOError:
            return True
        if not data:
            return False
        self.buf += data
        if not self.head:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return True
            if not self.buf.startswith(b"HTTP/1.1 101"):
                raise AssertionError("handshake refused: %r" % self.buf[:80])
            self.head = True
            self.buf = self.buf[end + 4:]
        while len(self.buf) >= 2:
            n, off = self.buf[1] & 0x7F, 2
            if n == 126:
                if len(self.buf) < 4:
                    break
                n, off = struct.unpack(">H", self.buf[2:4])[0], 4
            if len(self.buf) < off + n:
                break
            self.ops.append(json.loads(self.buf[off:off + n]))
            self.buf = self.buf[off + n:]
        return True


def pump(clients, done, timeout):
    """Reads from the clients until done(client) holds for every one, or timeout; the clients still not done."""
    waiting = {c.sock.fileno(): c for c in clients if not done(c)}
    deadline = time.monotonic() + timeout
    poller = select.epoll()
    for fd in waiting:
        poller.register(fd, select.EPOLLIN)
    while waiting and time.monotonic() < deadline:
        for fd, _ in poller.poll(0.2):
            c = waiting.get(fd)
            if c is None:
                continue
            if not c.feed():
                raise AssertionError("an inbox client was disconnected")
            if done(c):
                poller.unregister(fd)
                del waiting[fd]
    poller.close()
    return list(waiting.values())


def welcomed(c):
    return any(op.get("op") == "welcome" for op in c.ops)


def open_clients(gw, key, n):
    clients = []
    for start in range(0, n, 500):  # in steps, so the listen queue never overflows
        batch = [Client(gw.port, key) for _ in range(min(500, n - start))]
        left = pump(batch, welcomed, 30)
        if left:
            raise AssertionError("%d of %d clients not welcomed within 30 s" % (len(left), len(batch)))
        clients += batch
    return clients


def settle():
    time.sleep(6.0)  # (the gateway returns free memory to the kernel every 5 s)


def test_idle_clients():
    global CLIENTS
    got = raise_nofile(CLIENTS + 1000)
    if got < CLIENTS + 1000:  # (a machine that allows fewer descriptors than this test wants: fewer clients)
        CLIENTS = max(500, got - 1000)
        h.diag("only %d descriptors allowed: %d clients" % (got, CLIENTS))
    with h.Gateway(master_key=MASTER_KEY) as gw:
        key, cid, number = setup(gw)
        for c in open_clients(gw, key, 200):  # warm-up: the tenant's actor, the key, the pools
            c.sock.close()
        settle()
        before = rss_kb(gw)
        t0 = time.monotonic()
        clients = open_clients(gw, key, CLIENTS)
        h.diag("%d clients connected and welcomed in %.1f s" % (CLIENTS, time.monotonic() - t0))
        settle()
        idle = rss_kb(gw)
        per = (idle - before) * 1024 / CLIENTS
        h.diag("gateway RSS %d KiB before, %d KiB with %d idle clients: %.0f bytes each" % (before, idle, CLIENTS, per))
        if not ASAN:
            h.ok(per <= BOUND, "an idle inbox connection costs at most %d bytes of RSS (%.0f)" % (BOUND, per))

        def got_event(c):
            return any(op.get("op") == "event" and op.get("type") == "message.created" for op in c.ops)

        r = post(gw, "/webhooks/twilio/%s" % cid, sms_params("SM" + uuid.uuid4().hex, number, "to everyone"))
        h.ok(r.status == 200, "the webhook is acknowledged")
        left = pump(clients, got_event, 30)
        h.ok(not left, "the event reached every one of the %d clients (%d did not)" % (CLIENTS, len(left)))
        settle()
        after = rss_kb(gw)
        h.diag("gateway RSS after the event: %d KiB (%+.1f%% of the idle figure)" % (after, 100.0 * (after - idle) / idle))
        if not ASAN:
            h.ok(after <= idle * 1.10, "RSS after one event to all is within 10%% of the idle figure (%d, %d KiB)"
                 % (after, idle))

        for c in clients:
            c.ops.clear()
            c.sock.sendall(text_frame({"op": "ping"}))
        left = pump(clients, lambda c: any(op.get("op") == "pong" for op in c.ops), 30)
        h.ok(not left, "every client's ping is answered (%d not)" % len(left))
        settle()
        pinged = rss_kb(gw)
        h.diag("gateway RSS after a ping from every client: %d KiB (%+.1f%%)" % (pinged, 100.0 * (pinged - idle) / idle))
        if not ASAN:
            h.ok(pinged <= idle * 1.10, "and after a message from every client, within 10%% too (%d KiB)" % pinged)
        for c in clients:
            c.sock.close()
        h.ok(re.search(r"open files: soft limit \d+ \(it was \d+\), hard limit \d+", gw.log()) is not None,
             "the gateway logs its descriptor limits at start")


def refused_total(gw):
    r = h.get(gw.port, "/metrics")
    return sum(int(float(v)) for v in re.findall(r'^sb_connections_refused_total\{shard="\d+"\} (\S+)$',
                                                 r.body.decode(), re.M))


def test_descriptor_limit():
    with h.Gateway(nofile=256) as gw:
        socks, closed = [], 0
        for _ in range(300):
            socks.append(socket.create_connection(("127.0.0.1", gw.port), timeout=5))
        time.sleep(0.5)
        for s in socks:  # a refused connection is closed by the gateway at once: it reads as ended
            s.setblocking(False)
            try:
                if s.recv(1) == b"":
                    closed += 1
            except BlockingIOError:
                pass
            except ConnectionResetError:
                closed += 1
        h.ok(closed > 0, "connections past the limit are closed at once (%d of 300)" % closed)
        h.ok(closed < 300, "those within it stay open (%d)" % (300 - closed))
        for s in socks:
            s.close()
        time.sleep(0.3)
        # (a few requests, so that each shard's listener takes one: each logs the end of its own burst)
        h.ok(all(h.get(gw.port, "/healthz").status == 200 for _ in range(20)),
             "once they left, the gateway serves again")
        n = refused_total(gw)
        h.ok(n == closed, "sb_connections_refused_total counts them (%d)" % n)
        log = gw.log()
        starts = log.count("out of descriptors")
        h.ok(1 <= starts <= int(gw.config["shards"]),
             "the burst is logged when it starts, once per listener that saw it (%d lines)" % starts)
        h.ok(log.count("taking connections again") >= 1, "and when connections are taken again")
        h.ok("open files: soft limit 256" in log, "the limit it ran with is in the log")


if __name__ == "__main__":
    h.main(test_idle_clients, test_descriptor_limit)
