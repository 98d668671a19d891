"""tests/integration/test_live.py — the live inbox (WebSocket /v1/inbox) on the real stack, with an independent
client (wsclient.py, written from RFC 6455 and the MessagePack spec): the handshake and its refusals, hello with an
API key or a token and every bad credential, live events in both subprotocols with their fields (Unicode intact),
tenant isolation, ping/pong, resume after a disconnect with no gap and no duplicate, framing errors and their close
codes, a slow client closed with 4408, and shutdown closing with 1001.
Run: SB_BIN=build/release/switchboard python3 tests/integration/test_live.py"""

import json
import re
import signal
import socket
import struct
import time
import uuid

import harness as h
from test_webhooks import AUTH_TOKEN, MASTER_KEY, admin, post, sms_params
from wsclient import BINARY, CLOSE, PING, PONG, TEXT, Closed, HandshakeRefused, WebSocket, mp_pack

JSON, MSGPACK = "switchboard.v1.json", "switchboard.v1.msgpack"


def setup(gw, kind="twilio_sms"):
    t = admin(gw, "/v1/admin/tenants", {"name": "live " + uuid.uuid4().hex[:6]})
    key = admin(gw, "/v1/admin/tenants/%s/keys" % t["id"], {})["key"]
    number = "+1888%07d" % (uuid.uuid4().int % 10 ** 7)
    ch = admin(gw, "/v1/admin/tenants/%s/channels" % t["id"],
               {"type": kind, "address": number,
                "credentials": {"account_sid": "AC" + "3" * 32, "auth_token": AUTH_TOKEN}})
    return {"tenant": t["id"], "key": key, "channel": ch["id"], "number": number}


def connect(gw, key, protocol=JSON, resume_after=None, **kw):
    ws = WebSocket.connect(gw.port, protocols=[protocol] if protocol else None, **kw)
    hello = {"op": "hello", "token": key}
    if resume_after is not None:
        hello["resume_after"] = resume_after
    ws.send_op(hello)
    return ws


def sms(gw, t, body, sid=None):
    sid = sid or "SM" + uuid.uuid4().hex
    r = post(gw, "/webhooks/twilio/%s" % t["channel"], sms_params(sid, t["number"], body))
    return sid, r


def barrier(ws):
    """Sends a ping op and returns every event that arrived before its pong."""
    ws.send_op({"op": "ping"})
    got = []
    while True:
        m = ws.recv_op()
        if m.get("op") == "pong":
            return got
        got.append(m)


def events(ws, n, timeout=10):
    out = []
    deadline = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        m = ws.recv_op(timeout=max(0.01, deadline - time.monotonic()))
        if m.get("op") == "event":
            out.append(m)
    return out


def refused(gw, **kw):
    try:
        ws = WebSocket.connect(gw.port, **kw)
        ws.shutdown()
        return None
    except HandshakeRefused as e:
        return e


def test_handshake(gw, t):
    ws = WebSocket.connect(gw.port, protocols=[MSGPACK, JSON])
    h.ok(ws.protocol == MSGPACK, "the client's first supported subprotocol is chosen (msgpack)", ws.headers)
    ws.shutdown()
    ws = WebSocket.connect(gw.port, protocols=["chat", JSON])
    h.ok(ws.protocol == JSON, "unknown subprotocols are skipped (json chosen)", ws.headers)
    ws.shutdown()
    ws = WebSocket.connect(gw.port)
    h.ok("sec-websocket-protocol" not in ws.headers and ws.protocol == JSON,
         "no subprotocol offered: none named, JSON spoken", ws.headers)
    ws.send_op({"op": "hello", "token": t["key"]})
    m = ws.recv_op()
    h.ok(m.get("op") == "welcome" and m.get("tenant_id") == t["tenant"] and isinstance(m.get("cursor"), int),
         "hello with an API key: welcome with tenant_id and cursor", m)
    ws.close()
    ws.shutdown()

    r = h.request(gw.port, "GET", "/v1/inbox")
    h.ok(r.status == 426 and h.error_code(r) == "upgrade_required", "plain GET /v1/inbox: 426", r)
    r = h.request(gw.port, "POST", "/v1/inbox")
    h.ok(r.status == 405, "POST /v1/inbox: 405", r)
    e = refused(gw, protocols=["chat"])
    h.ok(e is not None and e.status == 400 and e.json()["error"]["code"] == "unsupported_subprotocol",
         "only unknown subprotocols: 400 unsupported_subprotocol", e)
    e = refused(gw, key="c2hvcnQ=")
    h.ok(e is not None and e.status == 400, "a Sec-WebSocket-Key that is not 16 bytes: 400", e)
    e = refused(gw, origin="https://evil.example")
    h.ok(e is not None and e.status == 403 and e.json()["error"]["code"] == "origin_not_allowed",
         "a foreign browser Origin: 403 origin_not_allowed", e)
    ws = WebSocket.connect(gw.port, origin="http://127.0.0.1:%d" % gw.port)
    h.ok(ws is not None, "the gateway's own origin is allowed")
    ws.shutdown()
    raw = ("GET /v1/inbox HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n")
    r = h.raw(gw.port, raw.encode())
    h.ok(r.status == 426, "Sec-WebSocket-Version 8: 426", r)


def test_origins():
    with h.Gateway(master_key=MASTER_KEY, inbox_origins="https://app.example.com, http://localhost:3000") as gw:
        for origin, want in [("https://app.example.com", True), ("http://localhost:3000", True),
                             ("https://APP.example.com", True), ("https://app.example.com:8443", False),
                             ("https://other.example.com", False)]:
            e = refused(gw, origin=origin)
            h.ok((e is None) == want, "inbox_origins: %s %s" % (origin, "allowed" if want else "refused (403)"),
                 e)


def test_credentials(gw, t):
    for proto in (JSON, MSGPACK):
        ws = connect(gw, "sb_live_" + "A" * 43, proto)
        m = ws.recv_op()
        code = ws.close_code()
        h.ok(m.get("op") == "error" and m.get("code") == "unauthorized" and code == 4401,
             "%s: an unknown key gets an error frame, then close 4401" % proto, (m, code))
    ws = connect(gw, "not-a-key")
    m = ws.recv_op()
    h.ok(m.get("op") == "error" and ws.close_code() == 4401, "a malformed credential: error, 4401", m)

    tok = h.request(gw.port, "POST", "/v1/tokens", {"Authorization": "Bearer " + t["key"],
                                                    "Content-Type": "application/json"},
                    json.dumps({"ttl_s": 1}).encode()).json()["token"]
    ws = connect(gw, tok)
    m = ws.recv_op()
    h.ok(m.get("op") == "welcome" and m.get("tenant_id") == t["tenant"], "hello with a fresh token: welcome", m)
    ws.shutdown()
    time.sleep(2.1)
    ws = connect(gw, tok)
    m = ws.recv_op()
    h.ok(m.get("op") == "error" and m.get("code") == "token_expired" and ws.close_code() == 4401,
         "an expired token: error token_expired, close 4401", m)
    head, body, sig = tok.split(".")
    ws = connect(gw, "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0." + body + ".")
    m = ws.recv_op()
    h.ok(m.get("code") == "token_alg_not_allowed" and ws.close_code() == 4401, "alg none: refused, 4401", m)

    ws = WebSocket.connect(gw.port)
    ws.send_op({"op": "ping"})
    m = ws.recv_op()
    h.ok(m.get("code") == "hello_required" and ws.close_code() == 4401, "ping before hello: hello_required, 4401",
         m)
    ws = WebSocket.connect(gw.port)
    ws.send(TEXT, b'{"op":"hello",')
    m = ws.recv_op()
    h.ok(m.get("code") == "bad_frame" and ws.close_code() == 4400, "a broken JSON hello: bad_frame, close 4400", m)
    ws = WebSocket.connect(gw.port, protocols=[JSON])
    ws.send(BINARY, mp_pack({"op": "hello", "token": t["key"]}))
    h.ok(ws.close_code() == 1003, "a binary frame on the JSON subprotocol: close 1003")
    ws = WebSocket.connect(gw.port, protocols=[MSGPACK])
    ws.send(BINARY, b"\xc1")
    m = ws.recv_op()
    h.ok(m.get("code") == "bad_frame" and ws.close_code() == 4400, "msgpack garbage: bad_frame, close 4400", m)


def test_framing(gw, t):
    ws = WebSocket.connect(gw.port)
    msg = json.dumps({"op": "hello", "token": t["key"]}).encode()
    ws.send(TEXT, msg[:5], fin=False)
    ws.send(PING, b"between")
    ws.send(0, msg[5:12], fin=False)
    ws.send(0, msg[12:], fin=True)
    op, payload = ws.recv_frame()
    h.ok(op == PONG and payload == b"between", "a ping between fragments is answered with its payload",
         (op, payload))
    m = ws.recv_op()
    h.ok(m.get("op") == "welcome", "a hello in three fragments is reassembled", m)
    ws.send(PING, b"")
    op, payload = ws.recv_frame()
    h.ok(op == PONG and payload == b"", "an empty ping gets an empty pong", (op, payload))
    ws.send_op({"op": "ping"})
    h.ok(ws.recv_op() == {"op": "pong"}, "the ping op gets {op: pong}")
    ws.send_op({"op": "hello", "token": t["key"]})
    m = ws.recv_op()
    h.ok(m.get("code") == "already_authenticated", "a second hello: error already_authenticated", m)
    ws.send_op({"op": "bogus"})
    m = ws.recv_op()
    h.ok(m.get("code") == "unknown_op", "an unknown op after hello: error unknown_op, connection stays", m)
    ws.close(1000)
    op, payload = ws.recv_frame()
    h.ok(op == CLOSE and struct.unpack("!H", payload[:2])[0] == 1000, "a close is answered with close 1000",
         payload)
    ws.shutdown()

    ws = WebSocket.connect(gw.port)
    ws.send_raw(WebSocket.frame(TEXT, b'{"op":"ping"}', mask=False))
    h.ok(ws.close_code() == 1002, "an unmasked client frame: close 1002")
    ws = WebSocket.connect(gw.port)
    ws.send_raw(WebSocket.frame(TEXT, b'{"op":"ping"}', rsv=4))
    h.ok(ws.close_code() == 1002, "an RSV bit without an extension: close 1002")
    ws = WebSocket.connect(gw.port)
    ws.send(TEXT, b"x" * (64 * 1024 + 1))
    h.ok(ws.close_code() == 1009, "a message over 64 KiB: close 1009")
    ws = WebSocket.connect(gw.port)
    ws.send(TEXT, b'{"op":"hello","token":"\xff\xfe"}')
    h.ok(ws.close_code() == 1007, "invalid UTF-8 in a text frame: close 1007")


def check_created(m, t, sid, body):
    d = m.get("data", {})
    return (m.get("op") == "event" and m.get("type") == "message.created" and d.get("provider_id") == sid and
            d.get("body") == body and d.get("direction") == "in" and d.get("from") == "+14155550123" and
            d.get("to") == t["number"] and d.get("channel_id") == t["channel"] and d.get("media") == [] and
            "conversation_id" in d and "created_at" in d and "id" in d)


def test_live(gw, t):
    other = setup(gw)
    a = connect(gw, t["key"], JSON)
    b = connect(gw, t["key"], MSGPACK)
    c = connect(gw, other["key"], JSON)
    wa, wb, wc = a.recv_op(), b.recv_op(), c.recv_op()
    h.ok(wa["op"] == wb["op"] == wc["op"] == "welcome" and wa["cursor"] == wb["cursor"],
         "three clients welcomed (two of one tenant, same cursor)", (wa, wb, wc))
    body = "live — ünïcödé 🚀 " + uuid.uuid4().hex[:6]
    sid, r = sms(gw, t, body)
    h.ok(r.status == 200, "webhook acknowledged", r)
    ea, eb = events(a, 2), events(b, 2)
    h.ok(len(ea) == 2 and check_created(ea[0], t, sid, body), "JSON client: message.created with every field", ea)
    h.ok(len(eb) == 2 and check_created(eb[0], t, sid, body), "msgpack client: the same message.created", eb)
    h.ok(ea == eb, "both subprotocols carry identical maps", (ea, eb))
    h.ok(len(ea) == 2 and ea[1]["type"] == "conversation.updated" and
         ea[1]["data"]["id"] == ea[0]["data"]["conversation_id"] and ea[1]["cursor"] == ea[0]["cursor"] + 1,
         "then conversation.updated, next cursor", ea)
    h.ok(len(ea) == 2 and ea[0]["cursor"] == wa["cursor"] + 1, "the first live event follows the welcome cursor",
         (wa, ea))
    h.ok(barrier(c) == [], "the other tenant's client receives nothing")

    st = [("MessageSid", sid), ("MessageStatus", "read"), ("AccountSid", "AC" + "3" * 32),
          ("From", t["number"]), ("To", "+14155550123")]
    r = post(gw, "/webhooks/twilio/%s/status" % t["channel"], st)
    es = events(a, 1)
    h.ok(r.status == 200 and len(es) == 1 and es[0]["type"] == "message.status" and
         es[0]["data"] == {"id": ea[0]["data"]["id"], "status": "read"}, "a status callback: message.status live",
         es)
    events(b, 1)
    sms(gw, t, body, sid)  # a duplicate delivery
    h.ok(barrier(a) == [], "a duplicate webhook produces no event")
    for ws in (a, b, c):
        ws.shutdown()


def test_resume(gw, t):
    a = connect(gw, t["key"])
    w = a.recv_op()
    sids = [sms(gw, t, "resume %d" % i)[0] for i in range(3)]
    got = events(a, 6)
    last = got[1]["cursor"]  # the client saw two events, then went away
    a.shutdown()
    more = [sms(gw, t, "while away %d" % i)[0] for i in range(2)]
    b = connect(gw, t["key"], MSGPACK, resume_after=last)
    w2 = b.recv_op()
    # A webhook is acknowledged at COMMIT and routed after it, so the two sent while away may still be on
    # their way: the welcome holds at least every event client a saw (w + 6) and at most all ten.
    h.ok(w2["op"] == "welcome" and w["cursor"] + 6 <= w2["cursor"] <= w["cursor"] + 10,
         "welcome carries the newest cursor", (w, w2))
    ev = events(b, 8)
    h.ok([e["cursor"] for e in ev] == list(range(last + 1, last + 9)),
         "resume_after: every later event once, in order", [e["cursor"] for e in ev])
    created = [e["data"]["provider_id"] for e in ev if e["type"] == "message.created"]
    h.ok(created == sids[1:] + more, "including those sent while the client was away", created)
    sid, _ = sms(gw, t, "after resume")
    ev = events(b, 2)
    h.ok(len(ev) == 2 and ev[0]["cursor"] == last + 9 and ev[0]["data"]["provider_id"] == sid,
         "then live events, continuing the sequence", ev)
    b.shutdown()
    c = connect(gw, t["key"], resume_after=w2["cursor"] + 1000)
    c.recv_op()
    m = c.recv_op()
    h.ok(m.get("code") == "bad_cursor" and c.close_code() == 4400, "resume_after beyond the newest: bad_cursor",
         m)
    d = connect(gw, t["key"], resume_after=0)
    d.recv_op()
    ev = events(d, last + 10)
    h.ok([e["cursor"] for e in ev] == list(range(1, last + 11)), "resume_after 0 replays the whole log",
         len(ev))
    d.shutdown()


def test_slow_client():
    with h.Gateway(master_key=MASTER_KEY, inbox_send_buffer=4096) as gw:
        t = setup(gw)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", gw.port))
        # hand the prepared socket to the client: same handshake, tiny receive window
        ws = connect_on(sock, gw.port, t["key"])
        welcome = ws.recv_op()
        h.ok(welcome.get("op") == "welcome", "slow client welcomed")
        stop = time.monotonic() + 30
        n = 0
        big = "x" * 1500
        while time.monotonic() < stop:  # until the gateway gives up on the client
            sms(gw, t, big)
            n += 1
            if n % 20 == 0 and re.search(rb'sb_inbox_too_slow_total\{shard="\d"\} 1', h.get(gw.port, "/metrics").body):
                break
        code = ws.close_code(timeout=20)
        h.ok(code == 4408, "a client that does not read is closed with 4408 (after %d webhooks)" % n, code)


def connect_on(sock, port, key):
    import base64
    import os
    k = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(("GET /v1/inbox HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n" % (port, k)).encode())
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(1)
    ws = WebSocket(sock, JSON)
    ws.send_op({"op": "hello", "token": key})
    return ws


def test_hello_timeout(gw):
    ws = WebSocket.connect(gw.port)
    t0 = time.monotonic()
    m = ws.recv_op(timeout=15)
    code = ws.close_code(timeout=5)
    took = time.monotonic() - t0
    h.ok(m.get("code") == "hello_timeout" and code == 4401 and 9 < took < 12,
         "no hello within 10 s: hello_timeout, close 4401 (%.1f s)" % took, (m, code))


def test_shutdown():
    gw = h.Gateway(master_key=MASTER_KEY)
    gw.start()
    try:
        t = setup(gw)
        ws = connect(gw, t["key"])
        ws.recv_op()
        gw.send_signal(signal.SIGTERM)
        h.ok(ws.close_code(timeout=10) == 1001, "SIGTERM: live clients are closed with 1001 (going away)")
        rc = gw.wait(10)
        h.ok(rc == 0, "and the gateway exits 0 without waiting for drain_timeout", rc)
    finally:
        gw.kill()
        gw.finish()


def test_file():
    with h.Gateway(master_key=MASTER_KEY) as gw:
        t = setup(gw)
        h.subtest(test_handshake, gw, t)
        h.subtest(test_credentials, gw, t)
        h.subtest(test_framing, gw, t)
        h.subtest(test_live, gw, t)
        h.subtest(test_resume, gw, setup(gw))
        h.subtest(test_hello_timeout, gw)
    test_origins()
    test_slow_client()
    test_shutdown()


if __name__ == "__main__":
    h.main(test_file)
