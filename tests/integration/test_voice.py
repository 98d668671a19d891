"""tests/integration/test_voice.py — voice on the real stack: Twilio's voice webhooks signed by an independent
implementation (Python's hmac), call actors admitting calls against the three caps held in Redis, the TwiML each
voice mode answers, status callbacks in order and the slot released by a final one, call.* events in the log, the
Media Streams endpoint refusing bad signatures and malformed frames with clear close codes, the relay to a voice
app both ways in order (a Python voice app here; the mock provider's simulated calls in test_mock_provider and the
benchmark), placed calls through the Calls API, the console's calls and hangup, and the caps across two gateway
nodes admitting at once, with a killed node's slots coming back within the lease.
Run: SB_BIN=build/release/switchboard python3 tests/integration/test_voice.py"""

import base64
import hashlib
import hmac
import json
import re
import subprocess
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import harness as h
from test_mock_provider import Mock
from wsclient import HandshakeRefused, WebSocket

MASTER_KEY = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
AUTH_TOKEN = "fedcba9876543210fedcba9876543210"
ACCOUNT = "AC" + "7" * 32


def admin(gw, method, path, body):
    headers = {"Authorization": "Bearer " + h.ADMIN_TOKEN, "Content-Type": "application/json"}
    return h.request(gw.port, method, path, headers, json.dumps(body).encode())


def sign(url, params):
    data = url + "".join(k + v for k, v in sorted(params))
    return base64.b64encode(hmac.new(AUTH_TOKEN.encode(), data.encode(), hashlib.sha1).digest()).decode()


def post(gw, path, params, signature=None):
    host = "127.0.0.1:%d" % gw.port
    headers = {"Host": host, "Content-Type": "application/x-www-form-urlencoded"}
    headers["X-Twilio-Signature"] = signature if signature is not None else sign("http://" + host + path, params)
    return h.request(gw.port, "POST", path, headers, urllib.parse.urlencode(params).encode())


def call_params(sid, number, caller="+14155550100", status="ringing"):
    return [("AccountSid", ACCOUNT), ("ApiVersion", "2010-04-01"), ("CallSid", sid), ("CallStatus", status),
            ("Called", number), ("Caller", caller), ("Direction", "inbound"), ("From", caller), ("To", number)]


def status_params(sid, status, seq, duration=None):
    p = [("AccountSid", ACCOUNT), ("CallSid", sid), ("CallStatus", status), ("SequenceNumber", str(seq)),
         ("Direction", "inbound")]
    if duration is not None:
        p.append(("CallDuration", str(duration)))
    return p


def new_sid():
    return "CA" + uuid.uuid4().hex


class Tenant:
    def __init__(self, gw, settings, max_calls=None, **extra):
        t = admin(gw, "POST", "/v1/admin/tenants", {"name": "voice " + uuid.uuid4().hex[:6]}).json()
        self.id = t["id"]
        self.key = admin(gw, "POST", "/v1/admin/tenants/%s/keys" % self.id, {}).json()["key"]
        if max_calls is not None:
            r = admin(gw, "PATCH", "/v1/admin/tenants/%s" % self.id, {"max_concurrent_calls": max_calls})
            h.ok(r.status == 200, "the tenant's max_concurrent_calls set", r.body)
        self.number = "+1888%07d" % (uuid.uuid4().int % 10 ** 7)
        r = admin(gw, "POST", "/v1/admin/tenants/%s/channels" % self.id,
                  {"type": "twilio_voice", "address": self.number,
                   "credentials": {"account_sid": ACCOUNT, "auth_token": AUTH_TOKEN}, "settings": settings})
        h.ok(r.status == 201, "voice channel made", r.body)
        self.channel = r.json()["id"]

    def voice(self, gw, sid, **kw):
        return post(gw, "/webhooks/twilio/%s/voice" % self.channel, call_params(sid, self.number, **kw))

    def status(self, gw, sid, status, seq, duration=None, query=""):
        return post(gw, "/webhooks/twilio/%s/voice/status%s" % (self.channel, query),
                    status_params(sid, status, seq, duration))

    def events(self, gw, after=0):
        r = h.request(gw.port, "GET", "/v1/events?after=%d" % after, {"Authorization": "Bearer " + self.key})
        return r.json().get("events", []) if r.status == 200 else []

    def wait_events(self, gw, pred, timeout=5):
        got = []
        h.wait_for(lambda: [e for e in self.events(gw) if pred(e)] or None, timeout)
        got = [e for e in self.events(gw) if pred(e)]
        return got

    def api(self, gw, method, path, body=None):
        headers = {"Authorization": "Bearer " + self.key}
        data = b""
        if body is not None:
            headers["Content-Type"] = "application/json"
            data = json.dumps(body).encode()
        return h.request(gw.port, method, path, headers, data)


def redis(db, *args):
    r = subprocess.run(["redis-cli", "-p", "6390", "-n", str(db)] + [str(a) for a in args], capture_output=True,
                       text=True, timeout=5)
    return r.stdout.strip()


def zcount(key, db=1):
    """Live leases in a call-cap set (the expired ones are not counted)."""
    return int(redis(db, "ZCOUNT", key, "(%d" % int(time.time() * 1e6), "+inf") or -1)


def voice_app(mock, query=""):
    """The mock provider's echo voice app (echoes media, answers marks, records each session)."""
    return "ws://127.0.0.1:%d/_mock/voice-app%s" % (mock.port, query)


def app_sessions(mock):
    return mock.get("/_mock/voice-app").json()["sessions"]


def twilio_stream(gw, channel, url=None, signature=None):
    """Opens the Media Stream as Twilio does: the upgrade signed over the ws:// URL."""
    path = "/webhooks/twilio/%s/media" % channel
    full = url or "ws://127.0.0.1:%d%s" % (gw.port, path)
    sig = signature if signature is not None else sign(full, [])
    return WebSocket.connect(gw.port, path=path, headers={"X-Twilio-Signature": sig})


def frames(stream_sid, call_sid, call_key, n):
    """connected, start, n media frames (unique payloads), a mark, stop: Twilio's shapes and numbering."""
    out = [{"event": "connected", "protocol": "Call", "version": "1.0.0"},
           {"event": "start", "sequenceNumber": "1", "streamSid": stream_sid,
            "start": {"accountSid": ACCOUNT, "streamSid": stream_sid, "callSid": call_sid, "tracks": ["inbound"],
                      "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                      "customParameters": {"call_key": call_key}}}]
    for i in range(n):
        payload = base64.b64encode(i.to_bytes(4, "big") + bytes(156)).decode()
        out.append({"event": "media", "sequenceNumber": str(i + 2), "streamSid": stream_sid,
                    "media": {"track": "inbound", "chunk": str(i + 1), "timestamp": str(20 * i), "payload": payload}})
    out.append({"event": "mark", "sequenceNumber": str(n + 2), "streamSid": stream_sid, "mark": {"name": "m1"}})
    out.append({"event": "stop", "sequenceNumber": str(n + 3), "streamSid": stream_sid,
                "stop": {"accountSid": ACCOUNT, "callSid": call_sid}})
    return out


# ---- the tests -------------------------------------------------------------------------------------------------

def test_incoming_stream(gw, mock):
    t = Tenant(gw, {"voice_mode": "stream", "media_url": voice_app(mock)})
    sid = new_sid()
    r = t.voice(gw, sid)
    h.ok(r.status == 200 and r.headers.get("content-type", "").startswith("text/xml"), "the voice webhook answers "
         "200 text/xml", (r.status, r.body))
    body = r.body.decode()
    m = re.search(r'<Stream url="([^"]+)"', body)
    h.ok(m and m.group(1) == "ws://127.0.0.1:%d/webhooks/twilio/%s/media" % (gw.port, t.channel),
         "TwiML connects a Media Stream to the gateway's media endpoint", body)
    h.ok('<Parameter name="call_key" value="%s"/>' % sid in body and 'name="call_id"' in body,
         "the call's ids ride as Parameters", body)
    row = h.sql("SELECT status, direction, from_addr, to_addr FROM calls WHERE call_sid = '%s'" % sid)
    h.ok(row == "ringing|in|+14155550100|%s" % t.number, "the call is stored", row)
    h.ok(zcount("sb:{calls}:ch:%s" % t.channel) == 1, "its slot is held in Redis")
    evs = t.wait_events(gw, lambda e: e["type"] == "call.started")
    h.ok(len(evs) == 1 and evs[0]["data"]["call_sid"] == sid and evs[0]["data"]["direction"] == "in",
         "call.started in the event log", evs)
    again = t.voice(gw, sid)
    h.ok(again.status == 200 and again.body == r.body, "a retried webhook gets the same TwiML")
    h.ok(h.sql("SELECT count(*) FROM calls WHERE call_sid = '%s'" % sid) == "1", "and is stored once")

    # status callbacks, in order; an old one changes nothing; the final one frees the slot
    h.ok(t.status(gw, sid, "in-progress", 1).status == 200, "in-progress accepted")
    h.ok(t.status(gw, sid, "ringing", 0).status == 200, "an older callback is acknowledged")
    h.ok(h.sql("SELECT status, answered_at IS NOT NULL FROM calls WHERE call_sid = '%s'" % sid) == "in-progress|t",
         "the older one changed nothing; answered_at set")
    h.ok(t.status(gw, sid, "completed", 2, duration=42).status == 200, "completed accepted")
    row = h.sql("SELECT status, duration_s, ended_by, end_reason, ended_at IS NOT NULL FROM calls "
                "WHERE call_sid = '%s'" % sid)
    h.ok(row == "completed|42|caller|completed|t", "the call ended: duration, who, why", row)
    h.ok(zcount("sb:{calls}:ch:%s" % t.channel) == 0, "a final status releases the slot at once")
    evs = t.wait_events(gw, lambda e: e["type"].startswith("call."))
    types = [e["type"] for e in evs]
    h.ok(types == ["call.started", "call.updated", "call.ended"], "call.started, call.updated, call.ended in order",
         types)
    h.ok(evs[-1]["data"]["duration_s"] == 42 and evs[-1]["data"]["ended_by"] == "caller",
         "call.ended says how long and who hung up", evs[-1])
    h.ok(t.status(gw, sid, "completed", 3, duration=42).status == 200 and
         len([e for e in t.events(gw) if e["type"] == "call.ended"]) == 1, "a repeat of the end changes nothing")
    r = t.api(gw, "GET", "/v1/calls")
    calls = r.json().get("calls", [])
    h.ok(r.status == 200 and len(calls) == 1 and calls[0]["call_sid"] == sid and calls[0]["status"] == "completed",
         "GET /v1/calls lists it", r.body)
    r = t.api(gw, "GET", "/v1/calls/%s" % calls[0]["id"])
    h.ok(r.status == 200 and r.json()["duration_s"] == 42, "GET /v1/calls/{id}", r.body)
    other = Tenant(gw, {})
    h.ok(other.api(gw, "GET", "/v1/calls/%s" % calls[0]["id"]).status == 404, "another tenant's key sees 404")


def test_live_inbox(gw, mock):
    """call.* events reach a live inbox client like any other event, with their cursors."""
    t = Tenant(gw, {"voice_mode": "forward", "forward_to": "+14155550100", "max_concurrent_calls": 1})
    ws = WebSocket.connect(gw.port, protocols=["switchboard.v1.json"])
    ws.send_op({"op": "hello", "token": t.key})
    welcome = ws.recv_op()
    h.ok(welcome.get("op") == "welcome", "the live inbox welcomes the tenant's key", welcome)
    a, b = new_sid(), new_sid()
    t.voice(gw, a)
    t.voice(gw, b)
    t.status(gw, a, "completed", 1, duration=7)
    got = []
    while len(got) < 3:
        op = ws.recv_op(timeout=5)
        if op.get("op") == "event":
            got.append(op)
    h.ok([e["type"] for e in got] == ["call.started", "call.rejected", "call.ended"],
         "call.started, call.rejected, call.ended arrive live, in order", [e["type"] for e in got])
    h.ok(all(got[i]["cursor"] + 1 == got[i + 1]["cursor"] for i in range(2)), "with consecutive cursors")
    h.ok(got[2]["data"]["duration_s"] == 7 and got[1]["data"]["cap"] == "channel", "and their data", got)
    ws.shutdown()


def metric(gw, name):
    """The sum over shards of a per-shard figure on /metrics."""
    text = h.get(gw.port, "/metrics").body.decode()
    return sum(float(l.split()[-1]) for l in text.splitlines() if l.startswith(name + "{") or l.startswith(name + " "))


def test_live_gauge(gw, mock):
    t = Tenant(gw, {"voice_mode": "forward", "forward_to": "+14155550100"})
    before = metric(gw, "sb_calls_live")
    sids = [new_sid() for _ in range(3)]
    for sid in sids:
        t.voice(gw, sid)
    h.ok(metric(gw, "sb_calls_live") == before + 3, "sb_calls_live counts three more live calls",
         (before, metric(gw, "sb_calls_live")))
    for sid in sids:
        t.status(gw, sid, "completed", 1, duration=1)
    h.ok(metric(gw, "sb_calls_live") == before, "and is back where it was when they ended")


def test_lease_lost(gw, mock):
    """A live call whose lease Redis lost (a restart without persistence) is admitted again at its next renewal, so
    it keeps counting against the caps."""
    t = Tenant(gw, {"voice_mode": "forward", "forward_to": "+14155550100"})
    sid = new_sid()
    t.voice(gw, sid)
    for key in ("sb:{calls}:fleet", "sb:{calls}:t:%s" % t.id, "sb:{calls}:ch:%s" % t.channel):
        redis(1, "ZREM", key, sid)
    h.ok(zcount("sb:{calls}:ch:%s" % t.channel) == 0, "the lease is gone from Redis")
    back = h.wait_for(lambda: zcount("sb:{calls}:ch:%s" % t.channel) == 1 and
                      zcount("sb:{calls}:t:%s" % t.id) == 1, 7, 0.2)
    h.ok(back, "within a renewal period (5 s) the call holds its slot again")
    t.status(gw, sid, "completed", 1, duration=2)
    h.ok(zcount("sb:{calls}:ch:%s" % t.channel) == 0, "and releases it when it ends")


def test_modes_and_caps(gw):
    t = Tenant(gw, {"voice_mode": "forward", "forward_to": "+14155550199", "max_concurrent_calls": 2,
                    "at_capacity_twiml": '<?xml version="1.0"?><Response><Reject reason="busy"/></Response>'})
    a, b, c = new_sid(), new_sid(), new_sid()
    ra, rb = t.voice(gw, a), t.voice(gw, b)
    h.ok(b"<Dial>+14155550199</Dial>" in ra.body and b"<Dial>" in rb.body, "forward mode dials forward_to", ra.body)
    rc = t.voice(gw, c, caller="+14155550101")
    h.ok(rc.status == 200 and b'<Reject reason="busy"/>' in rc.body, "the third call gets the channel's "
         "at_capacity TwiML (channel cap 2)", rc.body)
    row = h.sql("SELECT status, rejected_cap, end_reason FROM calls WHERE call_sid = '%s'" % c)
    h.ok(row == "rejected|channel|at_capacity", "stored as rejected, naming the channel's cap", row)
    evs = t.wait_events(gw, lambda e: e["type"] == "call.rejected")
    h.ok(len(evs) == 1 and evs[0]["data"]["cap"] == "channel" and evs[0]["data"]["from"] == "+14155550101",
         "call.rejected names the cap that was full", evs)
    t.status(gw, a, "completed", 1, duration=3)
    d = new_sid()
    h.ok(b"<Dial>" in t.voice(gw, d).body, "once one ended, the next call is admitted")

    # the tenant's cap, set by the admin API; the default at-capacity answer
    u = Tenant(gw, {"voice_mode": "forward", "forward_to": "+14155550199"}, max_calls=1)
    h.ok(b"<Dial>" in u.voice(gw, new_sid()).body, "first call of a tenant with cap 1 admitted")
    r = u.voice(gw, new_sid())
    h.ok(b"<Say>" in r.body and b"<Hangup/>" in r.body, "the second gets the default <Say> and <Hangup/>", r.body)
    evs = u.wait_events(gw, lambda e: e["type"] == "call.rejected")
    h.ok(evs and evs[0]["data"]["cap"] == "tenant", "call.rejected names the tenant's cap", evs)


def test_twiml_url(gw):
    served = {"n": 0, "sig": None}

    class App(BaseHTTPRequestHandler):
        def do_POST(self):
            served["n"] += 1
            served["sig"] = self.headers.get("X-Switchboard-Signature")
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if self.path == "/slow":
                time.sleep(3)
            body = b'<?xml version="1.0"?><Response><Say>hello from the app</Say></Response>'
            if self.path == "/bad":
                body = b"<Response><Say>unclosed</Response>"
            try:
                self.send_response(200)
                self.send_header("Content-Type", "text/xml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except OSError:
                pass  # the gateway stopped waiting (the slow case): its fallback answered

        def log_message(self, *a):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), App)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    base = "http://127.0.0.1:%d" % srv.server_address[1]
    t = Tenant(gw, {"voice_mode": "twiml_url", "twiml_url": base + "/ok"})
    r = t.voice(gw, new_sid())
    h.ok(b"hello from the app" in r.body, "twiml_url: the tenant's TwiML is answered", r.body)
    fb = '<?xml version="1.0"?><Response><Say>fallback</Say></Response>'
    for path, what in (("/bad", "malformed TwiML"), ("/slow", "an app slower than 2 s")):
        u = Tenant(gw, {"voice_mode": "twiml_url", "twiml_url": base + path, "fallback_twiml": fb})
        t0 = time.monotonic()
        r = u.voice(gw, new_sid())
        took = time.monotonic() - t0
        h.ok(b"fallback" in r.body and took < 2.9, "%s: the channel's fallback TwiML (%.2f s)" % (what, took), r.body)
    srv.shutdown()


def test_refusals(gw, mock):
    t = Tenant(gw, {"voice_mode": "stream", "media_url": voice_app(mock)})
    sid = new_sid()
    r = post(gw, "/webhooks/twilio/%s/voice" % t.channel, call_params(sid, t.number), signature="x" * 28)
    h.ok(r.status == 403, "a bad signature on the voice webhook: 403")
    h.ok(h.sql("SELECT count(*) FROM calls WHERE call_sid = '%s'" % sid) == "0", "and nothing stored")
    sms = admin(gw, "POST", "/v1/admin/tenants/%s/channels" % t.id,
                {"type": "twilio_sms", "address": "+1999%07d" % (uuid.uuid4().int % 10 ** 7),
                 "credentials": {"account_sid": ACCOUNT, "auth_token": AUTH_TOKEN}}).json()
    r = post(gw, "/webhooks/twilio/%s/voice" % sms["id"], call_params(sid, t.number))
    h.ok(r.status == 404, "a messaging channel has no voice webhook: 404")
    try:
        twilio_stream(gw, t.channel, signature="y" * 28)
        h.ok(False, "a bad signature on the stream upgrade is refused")
    except HandshakeRefused as e:
        h.ok(e.status == 403, "a bad signature on the stream upgrade: 403", e.status)
    r = admin(gw, "POST", "/v1/admin/tenants/%s/channels" % t.id,
              {"type": "twilio_voice", "address": "+1999%07d" % (uuid.uuid4().int % 10 ** 7),
               "credentials": {"account_sid": ACCOUNT, "auth_token": AUTH_TOKEN},
               "settings": {"voice_mode": "ring", "media_url": "http://x"}})
    h.ok(r.status == 400 and "voice_mode" in r.body.decode(), "a bad voice_mode is refused when the channel is made",
         r.body)

    # malformed stream events: a clear close code each
    cases = [(b"not json", 1007, "not JSON"), (b'{"event":"media"}', 1007, "media without its fields"),
             (b'{"event":"telepathy","sequenceNumber":"1","streamSid":"MZ1"}', 1007, "an unknown event")]
    for data, code, what in cases:
        ws = twilio_stream(gw, t.channel)
        ws.send(1, data)
        h.ok(ws.close_code() == code, "%s: closed %d" % (what, code))
    ws = twilio_stream(gw, t.channel)
    ws.send(2, b"\x00\x01")
    h.ok(ws.close_code() == 1003, "a binary frame: closed 1003")
    ws = twilio_stream(gw, t.channel)
    f = frames("MZ" + "1" * 32, sid, sid, 1)
    ws.send(1, json.dumps(f[2]).encode())
    h.ok(ws.close_code() == 1008, "media before start: closed 1008")


def read_echoes(ws, n, stream_sid):
    got, marks, foreign = [], [], 0
    deadline = time.monotonic() + 10
    while (len(got) < n or not marks) and time.monotonic() < deadline:
        op, payload = ws.recv_frame(timeout=10)
        if op != 1:
            break
        ev = json.loads(payload)
        foreign += ev.get("streamSid") != stream_sid
        if ev["event"] == "media":
            got.append(int.from_bytes(base64.b64decode(ev["media"]["payload"])[:4], "big"))
        elif ev["event"] == "mark":
            marks.append(ev["mark"]["name"])
    return got, marks, foreign


def test_relay(gw, mock):
    t = Tenant(gw, {"voice_mode": "stream", "media_url": voice_app(mock)})
    secret = admin(gw, "POST", "/v1/admin/tenants/%s/webhook" % t.id,
                   {"url": "http://127.0.0.1:9/hook"}).json()["secret"]
    sid = new_sid()
    t.voice(gw, sid)
    ws = twilio_stream(gw, t.channel)
    n = 200
    stream_sid = "MZ" + uuid.uuid4().hex
    fs = frames(stream_sid, sid, sid, n)
    for f in fs[:-1]:
        ws.send(1, json.dumps(f).encode())
    got, marks, foreign = read_echoes(ws, n, stream_sid)
    h.ok(got == list(range(n)), "%d frames relayed to the app and back, in order" % n, got[:20])
    h.ok(marks == ["m1"] and foreign == 0, "the app's mark came back; every frame carries the streamSid", marks)
    ws.send(1, json.dumps(fs[-1]).encode())
    h.ok(ws.close_code() == 1000, "stop ends the stream: closed 1000")
    sess = h.wait_for(lambda: [x for x in app_sessions(mock) if x.get("call_sid") == sid and x["stops"] == 1], 5)
    x = sess[0] if sess else {}
    h.ok(x.get("starts") == 1 and x.get("media") == n and x.get("marks_count") == 1 and x.get("connected") == 1,
         "the voice app saw connected, start, %d media, the mark and stop" % n, x)
    h.ok(x.get("parameters", {}).get("call_key") == sid, "start's customParameters reached the app", x)
    m = re.match(r"^t=(\d+),v1=([0-9a-f]{64})$", x.get("signature") or "")
    want = m and hmac.new(secret.encode(), ("%s.%s" % (m.group(1), voice_app(mock))).encode(),
                          hashlib.sha256).hexdigest()
    h.ok(m and m.group(2) == want, "the app's upgrade carries X-Switchboard-Signature: HMAC-SHA256 of "
         "'<t>.<media_url>' with the tenant's webhook secret", x.get("signature"))
    t.status(gw, sid, "completed", 1, duration=5)


def test_simulated_calls(gw, mock):
    """Whole calls as Twilio places them (the mock): webhook, TwiML, Media Stream through the relay to the echo app
    and back, status callbacks; the channel's cap across the same traffic."""
    t = Tenant(gw, {"voice_mode": "stream", "media_url": voice_app(mock), "max_concurrent_calls": 3})
    url = "http://127.0.0.1:%d/webhooks/twilio/%s/voice" % (gw.port, t.channel)
    r = mock.control("/_mock/calls", {"webhook": url, "auth_token": AUTH_TOKEN, "account_sid": ACCOUNT,
                                      "to": t.number, "count": 5, "frames": 100, "mark": True})
    sids = r.json().get("calls", [])
    h.ok(r.status == 202 and len(sids) == 5, "five simulated calls placed", r)
    final = ("completed", "busy", "no-answer", "failed", "canceled")
    h.wait_for(lambda: all(mock.get("/_mock/calls/" + s).json()["status"] in final for s in sids), 20, 0.2)
    ds = [mock.get("/_mock/calls/" + s).json() for s in sids]
    streamed = [d for d in ds if d["twiml"].get("kind") == "stream"]
    refused = [d for d in ds if d["twiml"].get("kind") != "stream"]
    h.ok(len(streamed) == 3 and len(refused) == 2, "three admitted (the channel's cap), two told at capacity",
         [(d["twiml"].get("kind"), d["status"]) for d in ds])
    good = [d for d in streamed if d["stream"]["frames_received"] == 100 and d["stream"]["in_order"]
            and d["stream"]["lost"] == 0 and d["stream"]["close_code"] == 1000]
    h.ok(len(good) == 3, "every admitted call's 100 frames came back in order, nothing lost",
         [d["stream"] for d in streamed])
    h.ok(all(d["stream"]["marks_received_count"] >= 1 for d in streamed), "marks went round")
    done = lambda: h.sql("SELECT count(*) FROM calls WHERE channel_id = %s AND status = 'completed'" % t.channel)
    h.ok(h.wait_for(lambda: done() == "3", 5), "the three calls completed through their status callbacks", done())
    h.ok(zcount("sb:{calls}:ch:%s" % t.channel) == 0, "and gave their slots back")


def ended_row(where):
    if h.sql("SELECT ended_at IS NOT NULL FROM calls WHERE " + where) != "t":
        return None
    return h.sql("SELECT status, ended_by, end_reason FROM calls WHERE " + where)


def test_app_unreachable(gw, mock):
    """A voice app that refuses its upgrade: the call gets its fallback (a hang-up, through the Calls API)."""
    t = Tenant(gw, {"voice_mode": "stream", "media_url": voice_app(mock, "?refuse=1")})
    url = "http://127.0.0.1:%d/webhooks/twilio/%s/voice" % (gw.port, t.channel)
    sid = mock.control("/_mock/calls", {"webhook": url, "auth_token": AUTH_TOKEN, "account_sid": ACCOUNT,
                                        "to": t.number, "frames": 500}).json()["calls"][0]
    h.wait_for(lambda: mock.get("/_mock/calls/" + sid).json()["status"] == "completed", 10, 0.2)
    d = mock.get("/_mock/calls/" + sid).json()
    h.ok(d["status"] == "completed" and d["stream"].get("frames_sent", 0) < 500, "the call was hung up early",
         (d["status"], d["stream"].get("frames_sent")))
    row = h.wait_for(lambda: ended_row("call_sid = '%s'" % sid), 5)
    h.ok(row == "completed|switchboard|app_unavailable", "ended by the gateway: the app was unavailable", row)

    u = Tenant(gw, {"voice_mode": "stream", "media_url": voice_app(mock, "?refuse=1"), "media_fallback": "forward",
                    "forward_to": "+14155550177"})
    url = "http://127.0.0.1:%d/webhooks/twilio/%s/voice" % (gw.port, u.channel)
    sid = mock.control("/_mock/calls", {"webhook": url, "auth_token": AUTH_TOKEN, "account_sid": ACCOUNT,
                                        "to": u.number, "frames": 500}).json()["calls"][0]

    d = h.wait_for(lambda: mock.get("/_mock/calls/" + sid).json()["twiml"].get("redirect"), 10)
    h.ok(d and "<Dial>+14155550177</Dial>" in d, "the forward fallback: the call redirected to <Dial> forward_to", d)


def test_outgoing(gw, mock):
    t = Tenant(gw, {"voice_mode": "stream", "media_url": voice_app(mock), "calls_per_second": 5})
    r = t.api(gw, "POST", "/v1/calls", {"channel_id": t.channel, "to": "+14155550142", "idempotency_key": "k1"})
    h.ok(r.status == 202 and r.json()["status"] == "queued", "POST /v1/calls: 202 queued", r)
    cid = r.json()["id"]
    again = t.api(gw, "POST", "/v1/calls", {"channel_id": t.channel, "to": "+14155550142", "idempotency_key": "k1"})
    h.ok(again.status == 200 and again.json()["id"] == cid, "the same idempotency_key: the same call", again)
    h.ok(t.api(gw, "POST", "/v1/calls", {"channel_id": t.channel, "to": "555"}).status == 400, "a bad 'to': 400")

    def placed():
        lst = mock.get("/_mock/calls").json()["calls"]
        return [c for c in lst if c["to"] == "+14155550142" and c["direction"] == "outbound-api"] or None
    got = h.wait_for(placed, 10)
    h.ok(got, "the mock's Calls API got the call", got)
    sid = got[0]["sid"] if got else ""
    h.wait_for(lambda: mock.get("/_mock/calls/" + sid).json()["stream"].get("frames_received", 0) > 20, 10, 0.2)
    d = mock.get("/_mock/calls/" + sid).json()
    h.ok(d["stream"].get("frames_received", 0) > 20 and d["stream"]["in_order"], "its Media Stream runs through the "
         "relay to the voice app and back", d["stream"])
    h.ok(h.wait_for(lambda: h.sql("SELECT status FROM calls WHERE id = %s" % cid) == "in-progress", 5),
         "status callbacks move it to in-progress")
    con = h.Console(gw.admin_port)
    con.cmd("auth " + h.ADMIN_TOKEN)
    out = "\n".join(con.cmd("calls %s" % t.id))
    h.ok(str(cid) in out and "in-progress" in out and "caps in use" in out, "console calls lists it", out)
    out = "\n".join(con.cmd("hangup %s" % cid))
    h.ok(out.startswith("OK"), "console hangup", out)
    h.ok(con.cmd("hangup 999999999999")[0].startswith("ERR"), "hangup of no call: ERR")
    con.close()
    row = h.wait_for(lambda: ended_row("id = %s" % cid), 10)
    h.ok(row == "completed|switchboard|hangup", "the hung-up call completed, ended by the gateway", row)
    evs = t.wait_events(gw, lambda e: e["type"] == "call.ended" and str(e["data"]["id"]) == str(cid))
    h.ok(evs, "call.ended in the log")

    u = Tenant(gw, {"voice_mode": "stream", "media_url": voice_app(mock), "max_concurrent_calls": 1})
    first = u.api(gw, "POST", "/v1/calls", {"channel_id": u.channel, "to": "+14155550143"})
    second = u.api(gw, "POST", "/v1/calls", {"channel_id": u.channel, "to": "+14155550144"})
    h.ok(first.status == 202 and second.status == 429 and h.error_code(second) == "at_capacity",
         "a second call of a channel with cap 1: 429 at_capacity", second)


NODES_DB = 4  # a Redis database of its own: the fleet's cap counts only this test's calls


def test_two_nodes(mock):
    """Two gateway nodes (two shards each) admitting at once against one fleet cap; kill -9 of one frees its calls'
    slots within call_lease_ttl, while the other's live calls keep theirs by renewing. Each node's calls are of a
    tenant of its own: until slot leases (several nodes) land, one tenant's event log is written by one node."""
    redis(NODES_DB, "FLUSHDB")
    opts = dict(master_key=MASTER_KEY, twilio_api_base="http://127.0.0.1:%d" % mock.port, max_concurrent_calls=5,
                call_lease_ttl=3, redis_url="redis://127.0.0.1:6390/%d" % NODES_DB)
    with h.Gateway(**opts) as a, h.Gateway(**opts) as b:
        ta = Tenant(a, {"voice_mode": "forward", "forward_to": "+14155550100"})
        t = Tenant(b, {"voice_mode": "forward", "forward_to": "+14155550100"})
        n = 16
        sids = [new_sid() for _ in range(n)]
        answers = [None] * n

        def call(i):
            answers[i] = (ta.voice(a, sids[i]) if i % 2 else t.voice(b, sids[i])).body
        threads = [threading.Thread(target=call, args=(i,)) for i in range(n)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        admitted = [i for i in range(n) if answers[i] and b"<Dial>" in answers[i]]
        refused = [i for i in range(n) if answers[i] and b"<Hangup/>" in answers[i]]
        h.ok(len(admitted) == 5 and len(refused) == n - 5, "%d calls at once on two nodes: exactly the fleet's cap "
             "(5) admitted, the rest told at capacity" % n,
             (len(admitted), len(refused), [answers[i] for i in range(n) if i not in admitted and i not in refused]))
        h.ok(zcount("sb:{calls}:fleet", NODES_DB) == 5, "the fleet set holds 5 live leases")
        on_a = [i for i in admitted if i % 2]
        on_b = [i for i in admitted if not i % 2]
        h.diag("admitted on node A: %d, on node B: %d" % (len(on_a), len(on_b)))
        time.sleep(3.5)  # past one lease time: the live calls renewed theirs
        h.ok(zcount("sb:{calls}:fleet", NODES_DB) == 5, "after a lease time the live calls still hold their slots")
        a.kill()
        t0 = time.monotonic()
        freed = h.wait_for(lambda: zcount("sb:{calls}:fleet", NODES_DB) == len(on_b), 6, 0.1)
        took = time.monotonic() - t0
        h.ok(freed and took <= 3.5, "kill -9 of node A: its %d calls' slots came back in %.1f s (lease 3 s)"
             % (len(on_a), took), zcount("sb:{calls}:fleet", NODES_DB))
        more = [t.voice(b, new_sid()).body for _ in range(len(on_a) + 1)]
        got = sum(b"<Dial>" in x for x in more)
        h.ok(got == len(on_a), "node B admits exactly as many new calls as were freed (%d), then refuses" % got)
        for i in on_b:
            t.status(b, sids[i], "completed", 1, duration=1)
    redis(NODES_DB, "FLUSHDB")


def test_max_duration(mock):
    """A call whose final status never comes is ended by its actor after max_call_duration, and its slot freed."""
    with h.Gateway(master_key=MASTER_KEY, twilio_api_base="http://127.0.0.1:%d" % mock.port,
                   max_call_duration=2) as gw:
        t = Tenant(gw, {"voice_mode": "forward", "forward_to": "+14155550100"})
        sid = new_sid()
        h.ok(b"<Dial>" in t.voice(gw, sid).body, "admitted")
        t.status(gw, sid, "in-progress", 1)
        row = h.wait_for(lambda: ended_row("call_sid = '%s'" % sid), 5)
        h.ok(row == "completed|switchboard|max_duration", "ended by the gateway after max_call_duration", row)
        h.ok(zcount("sb:{calls}:ch:%s" % t.channel) == 0, "its slot released")
        evs = t.wait_events(gw, lambda e: e["type"] == "call.ended")
        h.ok(evs and evs[0]["data"]["reason"] == "max_duration", "call.ended says why", evs)


def test_slow_app(gw, mock):
    """A voice app that stops reading holds back nobody else: another call relays in order meanwhile."""
    slow = Tenant(gw, {"voice_mode": "stream", "media_url": voice_app(mock, "?stall=1")})
    fast = Tenant(gw, {"voice_mode": "stream", "media_url": voice_app(mock)})
    calls = []
    for t, frames_n in ((slow, 400), (fast, 250)):
        url = "http://127.0.0.1:%d/webhooks/twilio/%s/voice" % (gw.port, t.channel)
        calls.append(mock.control("/_mock/calls", {"webhook": url, "auth_token": AUTH_TOKEN, "account_sid": ACCOUNT,
                                                   "to": t.number, "frames": frames_n}).json()["calls"][0])
    final = ("completed", "busy", "no-answer", "failed", "canceled")
    h.wait_for(lambda: mock.get("/_mock/calls/" + calls[1]).json()["status"] in final, 15, 0.2)
    d = mock.get("/_mock/calls/" + calls[1]).json()["stream"]
    h.ok(d["frames_received"] == 250 and d["in_order"] and d["lost"] == 0,
         "beside a stalled app, another call's 250 frames came back in order", d)
    h.ok(d["delay_us"]["p99"] is not None and d["delay_us"]["p99"] < 100000,
         "with a p99 round trip of %s µs" % d["delay_us"]["p99"])
    s = mock.get("/_mock/calls/" + calls[0]).json()["stream"]
    h.ok(s["frames_received"] == 0, "the stalled app echoed nothing", s.get("frames_received"))


def test_file():
    with Mock() as mock:
        gw = h.Gateway(master_key=MASTER_KEY, twilio_api_base="http://127.0.0.1:%d" % mock.port)
        gw.config["public_url"] = "http://127.0.0.1:%d" % gw.port  # Twilio's URLs name the port
        with gw:
            for t in (test_incoming_stream, test_refusals, test_relay, test_simulated_calls, test_app_unreachable,
                      test_outgoing, test_slow_app, test_live_inbox, test_lease_lost, test_live_gauge):
                h.subtest(t, gw, mock)
            h.subtest(test_modes_and_caps, gw)
            h.subtest(test_twiml_url, gw)
        h.subtest(test_two_nodes, mock)
        h.subtest(test_max_duration, mock)


if __name__ == "__main__":
    h.main(test_file)
