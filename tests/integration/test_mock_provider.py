"""tests/integration/test_mock_provider.py — the mock provider (ops/mock_provider.c) on a random port: Twilio's
Messages API (basic auth, validation, the message resource), Meta's WhatsApp Cloud messages endpoint (bearer token,
validation, wamid), behaviours (fail_next, permanent, Retry-After, delay), what it records (received, stats with
monotonic timestamps and the sliding one-second maximum, the bounded store), status callbacks posted to a small HTTP
server in this test and verified with independent HMAC implementations (Twilio: HMAC-SHA1 over URL + sorted params;
Meta: HMAC-SHA256 of the raw body), and a clean exit on SIGTERM with work still pending.

Needs no Redis or PostgreSQL. The binary is mock-provider next to $SB_BIN (tests/run.sh sets SB_BIN to
build/release/switchboard, then build/asan/switchboard).
Run: SB_BIN=build/release/switchboard python3 tests/integration/test_mock_provider.py"""

import base64
import hashlib
import hmac
import http.server
import json
import os
import re
import signal
import subprocess
import tempfile
import threading
import time
import urllib.parse

import harness as h
import wsclient

MOCK_BIN = os.path.join(os.path.dirname(h.SB_BIN), "mock-provider")
ACCOUNT = "AC" + "5" * 32
TOKEN = "twilio-auth-token-0123456789abcdef"
APP_SECRET = "meta-app-secret-fedcba9876543210"
PNID = "106540352242922"


# --- an independent implementation of both signatures ---------------------------------------------------------------


def twilio_signature(token, url, params):
    """X-Twilio-Signature as Twilio documents it: the full URL, then each POST parameter sorted by name, name+value,
    HMAC-SHA1 with the auth token, base64."""
    data = url + "".join(k + v for k, v in sorted(params))
    return base64.b64encode(hmac.new(token.encode(), data.encode(), hashlib.sha1).digest()).decode()


def meta_signature(secret, body):
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


# --- a tiny HTTP server that receives the callbacks -----------------------------------------------------------------


class Hooks:
    """Records every POST it receives as (path, headers, body) and answers 200."""

    def __init__(self):
        self.lock = threading.Lock()
        self.posts = []
        self.answers = {}  # path prefix -> (status, content type, body), or a function (path, body) -> that
        hooks = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802 — the stdlib's name
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with hooks.lock:
                    hooks.posts.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                    answer = next((a for prefix, a in hooks.answers.items() if self.path.startswith(prefix)),
                                  None)
                hdrs = {k.lower(): v for k, v in self.headers.items()}
                status, ctype, data = answer(self.path, body, hdrs) if callable(answer) else \
                    (answer or (200, None, b""))
                self.send_response(status)
                if ctype:
                    self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def take(self, path_prefix, n, timeout=5.0):
        """Wait until n posts whose path starts with path_prefix arrived; return (and forget) them, in order."""
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                got = [p for p in self.posts if p[0].startswith(path_prefix)]
                if len(got) >= n or time.monotonic() >= deadline:
                    self.posts = [p for p in self.posts if not p[0].startswith(path_prefix)]
                    return got
            time.sleep(0.02)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


# --- the mock process ----------------------------------------------------------------------------------------------


class Mock:
    def __init__(self, *args, hooks=None):
        self.port = h.free_port()
        self.args = ["--listen", "127.0.0.1:%d" % self.port] + list(args)
        if hooks:
            self.args += ["--meta-webhook", "http://127.0.0.1:%d/meta/webhook" % hooks.port,
                          "--meta-app-secret", APP_SECRET]
        self.proc = None
        self.log = tempfile.NamedTemporaryFile(prefix="sb-mock-", suffix=".log", delete=False)
        self.failed_at_start = h.failures()

    def __enter__(self):
        if not os.access(MOCK_BIN, os.X_OK):
            h.ok(False, "mock binary %s exists" % MOCK_BIN)
            raise h.GatewayFailed()
        self.proc = subprocess.Popen([MOCK_BIN] + self.args, stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        up = h.wait_for(lambda: self.get("/_mock/stats", timeout=1).status == 200, 10, 0.05)
        if not h.ok(up, "mock-provider started and answers /_mock/stats"):
            self.proc.kill()
            self.proc.wait()
            self.dump()
            raise h.GatewayFailed()
        return self

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            rc = None
        h.ok(rc == 0, "mock-provider exits 0 on SIGTERM", "exit code %r" % rc)
        return rc

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None and not issubclass(exc_type, h.GatewayFailed):
            import traceback
            h.ok(False, "test code raised", "".join(traceback.format_exception(exc_type, exc, tb)))
        if self.proc.poll() is None:
            self.stop()
        self.dump()
        return exc_type is not None and issubclass(exc_type, h.GatewayFailed)

    def dump(self):
        self.log.close()
        if h.failures() > self.failed_at_start:
            with open(self.log.name, "rb") as f:
                h.diag("---- mock-provider log ----\n" + f.read().decode(errors="replace")[-20000:])
        os.unlink(self.log.name)

    # requests
    def request(self, method, path, headers=None, body=b"", timeout=5.0):
        return h.request(self.port, method, path, headers, body, timeout)

    def get(self, path, timeout=5.0):
        return self.request("GET", path, timeout=timeout)

    def control(self, path, obj=None):
        r = self.request("POST", path, {"Content-Type": "application/json"},
                         json.dumps(obj if obj is not None else {}).encode())
        return r

    def behaviour(self, **fields):
        r = self.control("/_mock/behaviour", fields)
        if r.status != 200:
            raise AssertionError("behaviour %r refused: %r" % (fields, r))
        return r.json()

    def received(self, sender=None, limit=None):
        q = {}
        if sender is not None:
            q["sender"] = sender
        if limit is not None:
            q["limit"] = str(limit)
        return self.get("/_mock/received" + ("?" + urllib.parse.urlencode(q) if q else "")).json()

    def stats(self):
        return self.get("/_mock/stats").json()

    def most_per_second(self, sender, jitter_ms=50):
        """The most sends of sender that arrived within any (1 s - jitter_ms) window, from the retained t_us.

        The gateway's pace spaces the *starts* of a sender's requests by 1/rate (GCRA, burst 1); the mock sees their
        arrivals, and on a loaded machine each request is delayed on its way by a few ms, not all by the same. Two
        starts exactly 1 s apart can then arrive 0.99 s apart, and an exact one-second window (the mock's own
        max_per_second) catches a sixth send of a 5/s pace that was never early. Narrowing the window by jitter_ms
        forgives that much delay and no more: a real excess (two tokens granted at once, two paces for one sender)
        still puts rate + 1 arrivals well inside it."""
        t = sorted(q["t_us"] for q in self.received(sender=sender).get("requests", []))
        span, best, lo = 1000000 - jitter_ms * 1000, 0, 0
        for hi in range(len(t)):
            while t[hi] - t[lo] >= span:
                lo += 1
            best = max(best, hi - lo + 1)
        return best

    def twilio(self, params, account=ACCOUNT, auth=(ACCOUNT, TOKEN)):
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        if auth:
            headers["Authorization"] = "Basic " + base64.b64encode(("%s:%s" % auth).encode()).decode()
        return self.request("POST", "/2010-04-01/Accounts/%s/Messages.json" % account, headers,
                            urllib.parse.urlencode(params).encode())

    def meta(self, payload, pnid=PNID, version="v21.0", token="EAAB-token"):
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = "Bearer " + token
        path = ("/%s/%s/messages" % (version, pnid)) if version else ("/%s/messages" % pnid)
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        return self.request("POST", path, headers, body)


def sms(sender, to="+14155550123", body="hello", **extra):
    p = [("To", to), ("From", sender), ("Body", body)]
    p += list(extra.items())
    return p


def text(to="+447700900123", body="hi there"):
    return {"messaging_product": "whatsapp", "recipient_type": "individual", "to": to, "type": "text",
            "text": {"preview_url": False, "body": body}}


# --- tests ----------------------------------------------------------------------------------------------------------


def test_twilio(m):
    sender = "+15550001001"
    r = m.twilio(sms(sender), auth=None)
    j = r.json()
    h.ok(r.status == 401 and j.get("code") == 20003 and j.get("status") == 401 and j.get("message") == "Authenticate"
         and "more_info" in j, "no basic auth: 401 in Twilio's error shape, code 20003", r)
    r = m.twilio(sms(sender), account="AC" + "6" * 32)
    h.ok(r.status == 401 and r.json().get("code") == 20003, "basic-auth user is not the path's AccountSid: 401", r)

    r = m.twilio(sms(sender, body="Héllo wörld"))
    j = r.json()
    h.ok(r.status == 201, "authenticated send: 201", r)
    h.ok(re.fullmatch(r"SM[0-9a-f]{32}", j.get("sid", "")) is not None, "sid is SM + 32 hex digits", j.get("sid"))
    h.ok(j.get("status") == "queued" and j.get("account_sid") == ACCOUNT and j.get("to") == "+14155550123" and
         j.get("from") == sender and j.get("body") == "Héllo wörld" and j.get("direction") == "outbound-api",
         "the message resource echoes account, to, from, body; status queued", j)
    h.ok(j.get("num_segments") == "1" and j.get("num_media") == "0" and j.get("api_version") == "2010-04-01" and
         j.get("uri") == "/2010-04-01/Accounts/%s/Messages/%s.json" % (ACCOUNT, j.get("sid")) and
         re.fullmatch(r"\w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d \+0000", j.get("date_created", "")) is not None,
         "num_segments, num_media, uri and an RFC 2822 date_created", j)

    r = m.twilio(sms(sender, body="a" * 161))
    h.ok(r.json().get("num_segments") == "2", "161 GSM-7 characters: 2 segments", r)
    r = m.twilio(sms(sender, body="é" * 160))
    h.ok(r.json().get("num_segments") == "1", "160 GSM-7 Latin letters: 1 segment", r)
    r = m.twilio(sms(sender, body="👋" * 36))
    h.ok(r.json().get("num_segments") == "2", "36 emoji (72 UTF-16 units): 2 UCS-2 segments", r)

    r = m.twilio([("From", sender), ("Body", "x")])
    h.ok(r.status == 400 and r.json().get("code") == 21604, "no To: 400 code 21604", r)
    r = m.twilio([("To", "+14155550123"), ("Body", "x")])
    h.ok(r.status == 400 and r.json().get("code") == 21603, "no From nor MessagingServiceSid: 400 code 21603", r)
    r = m.twilio([("To", "+14155550123"), ("From", sender)])
    h.ok(r.status == 400 and r.json().get("code") == 21602, "neither Body nor MediaUrl: 400 code 21602", r)
    r = m.twilio([("To", "+14155550123"), ("From", sender), ("MediaUrl", "https://example.com/a.jpg"),
                  ("MediaUrl", "https://example.com/b.png")])
    h.ok(r.status == 201 and r.json().get("num_media") == "2", "MediaUrl twice, no Body: 201 with num_media 2", r)
    mg = "MG" + "7" * 32
    r = m.twilio([("To", "+14155550123"), ("MessagingServiceSid", mg), ("Body", "x")])
    j = r.json()
    h.ok(r.status == 201 and j.get("status") == "accepted" and j.get("messaging_service_sid") == mg and
         j.get("from") is None, "MessagingServiceSid without From: 201, status accepted (as Twilio does)", r)

    rec = m.received(sender)
    h.ok(rec["count"] == 5, "only the 5 valid, authenticated sends of that sender were recorded", rec["count"])
    media = [q for q in rec["requests"] if q["media"]]
    h.ok(len(media) == 1 and media[0]["media"] == ["https://example.com/a.jpg", "https://example.com/b.png"],
         "media URLs recorded in order", media)
    h.ok(m.received(mg)["count"] == 1, "a MessagingServiceSid is a sender of its own")


def test_meta(m):
    r = m.meta(text(), token=None)
    j = r.json()
    h.ok(r.status == 401 and j.get("error", {}).get("code") == 190 and
         j["error"].get("type") == "OAuthException" and "fbtrace_id" in j["error"],
         "no bearer token: 401 in Graph's error shape, code 190", r)
    r = m.meta(text(to="+44 7700 900123", body="hi 👋"))
    j = r.json()
    h.ok(r.status == 200 and j.get("messaging_product") == "whatsapp" and
         j.get("contacts") == [{"input": "+44 7700 900123", "wa_id": "447700900123"}] and
         re.fullmatch(r"wamid\.[A-Za-z0-9+/=]+", j.get("messages", [{}])[0].get("id", "")) is not None,
         "text message under /v21.0/{phone_number_id}/messages: 200 with contacts and a wamid", r)
    wamid = j["messages"][0]["id"]
    r = m.meta(text(), version=None)
    h.ok(r.status == 200, "and without the version segment", r)
    r = m.meta({"messaging_product": "whatsapp", "to": "447700900123", "type": "template",
                "template": {"name": "hello_world", "language": {"code": "en_US"}}})
    h.ok(r.status == 200 and r.json()["messages"][0].get("message_status") == "accepted",
         "template: 200 with message_status accepted", r)
    r = m.meta({"messaging_product": "whatsapp", "to": "447700900123", "type": "image",
                "image": {"link": "https://example.com/cat.jpg", "caption": "cat"}})
    h.ok(r.status == 200, "image by link: 200", r)

    for payload, what in ((dict(text(), messaging_product="sms"), "messaging_product not whatsapp"),
                          ({"messaging_product": "whatsapp", "type": "text", "text": {"body": "x"}}, "no to"),
                          ({"messaging_product": "whatsapp", "to": "1", "type": "text", "text": {}}, "no text.body"),
                          ({"messaging_product": "whatsapp", "to": "1", "type": "image", "image": {}}, "image without link"),
                          (b"{not json", "not JSON")):
        r = m.meta(payload)
        h.ok(r.status == 400 and r.json().get("error", {}).get("code") == 100, "%s: 400 code 100" % what, r)

    rec = m.received(PNID)
    h.ok(rec["count"] == 4, "4 valid sends recorded under the phone_number_id", rec["count"])
    first = rec["requests"][0]
    h.ok(first["provider"] == "meta" and first["type"] == "text" and first["to"] == "+44 7700 900123" and
         first["body"] == "hi 👋" and first["id"] == wamid and first["status"] == 200,
         "the record: provider, type, to, body, wamid, status", first)
    img = [q for q in rec["requests"] if q["type"] == "image"]
    h.ok(img and img[0]["media"] == ["https://example.com/cat.jpg"] and img[0]["body"] == "cat",
         "an image's link and caption recorded", img)


def test_failures(m):
    a, b = "+15550002001", "+15550002002"
    beh = m.behaviour(sender=a, fail_next=2, fail_status=500)
    h.ok(beh.get("sender") == a and beh.get("fail_next") == 2 and beh.get("permanent") is None,
         "behaviour answers with what is now in force", beh)
    statuses = [m.twilio(sms(a)).status for _ in range(3)]
    h.ok(statuses == [500, 500, 201], "fail_next 2: two 500s, then 201", statuses)
    m.behaviour(sender=a, fail_next=1)
    r = m.twilio(sms(a))
    j = r.json()
    h.ok(r.status == 500 and j.get("code") == 20500 and j.get("status") == 500 and r.header("retry-after") is None,
         "the failure body is Twilio's error shape, default code 20500, no Retry-After", r)
    h.ok(m.twilio(sms(b)).status == 201, "another sender is not affected")

    m.behaviour(sender=a, fail_next=1, fail_status=429, retry_after=3)
    r = m.twilio(sms(a))
    h.ok(r.status == 429 and r.header("retry-after") == "3" and r.json().get("code") == 20429,
         "429 with Retry-After: 3 and code 20429", r)
    m.behaviour(sender=a, retry_after=None)

    m.behaviour(sender=a, permanent={"status": 400, "code": 21211})
    statuses = [(r.status, r.json().get("code")) for r in (m.twilio(sms(a)) for _ in range(3))]
    h.ok(statuses == [(400, 21211)] * 3, "permanent 400/21211: every send fails so", statuses)
    m.behaviour(sender=a, permanent=None)
    h.ok(m.twilio(sms(a)).status == 201, "permanent null: sends succeed again")

    m.behaviour(fail_next=1, fail_status=503)
    r = m.meta(text(), pnid="999000111")
    j = r.json()
    h.ok(r.status == 503 and j.get("error", {}).get("code") == 131000, "global fail_next on a Meta sender: 503 "
         "with Graph's error shape, code 131000", r)
    h.ok(m.twilio(sms(b)).status == 201, "the global failure was used up")
    h.ok(m.behaviour(sender=a, clear=True).get("fail_next") == 0, "clear drops the sender's own behaviour")

    rec = m.received(a)
    fails = [q for q in rec["requests"] if q["status"] >= 400]
    h.ok(len(fails) == 7 and all(q["id"] is None for q in fails),
         "failed sends are recorded too, with their status and no id", [q["status"] for q in rec["requests"]])
    st = m.stats()["senders"][a]
    h.ok(st["failed"] == 7 and st["accepted"] == st["count"] - 7, "stats split accepted and failed", st)

    r = m.control("/_mock/behaviour", {"fail_nxt": 1})
    h.ok(r.status == 400 and "fail_nxt" in r.body.decode(), "an unknown field is refused, named", r)
    r = m.control("/_mock/behaviour", {"fail_status": 200})
    h.ok(r.status == 400, "fail_status outside 400..599: 400", r)
    r = m.control("/_mock/behaviour", {"callbacks": ["bogus"]})
    h.ok(r.status == 400, "an unknown callback status: 400", r)


def test_delay(m):
    slow, fast = "+15550003001", "+15550003002"
    m.behaviour(sender=slow, delay_ms=300)
    t0 = time.monotonic()
    r = m.twilio(sms(slow))
    dt = time.monotonic() - t0
    h.ok(r.status == 201 and 0.28 <= dt < 2.0, "delay_ms 300: answered 201 after %.3f s" % dt, r)
    results = {}

    def send(name, sender):
        t = time.monotonic()
        results[name] = (m.twilio(sms(sender)).status, time.monotonic() - t)

    threads = [threading.Thread(target=send, args=("slow", slow)), threading.Thread(target=send, args=("fast", fast))]
    for t in threads:
        t.start()
    time.sleep(0.05)
    for t in threads:
        t.join()
    h.ok(results["fast"][0] == 201 and results["fast"][1] < 0.25 and results["slow"][1] >= 0.28,
         "a delayed answer does not hold up another sender's (fast %.3f s, slow %.3f s)"
         % (results["fast"][1], results["slow"][1]))
    m.behaviour(sender=slow, delay_ms=0, fail_next=1, fail_status=503)
    m.behaviour(sender=slow, delay_ms=200)
    t0 = time.monotonic()
    r = m.twilio(sms(slow))
    h.ok(r.status == 503 and time.monotonic() - t0 >= 0.18, "failures are delayed too", r)
    rec = m.received(slow)["requests"]
    h.ok(rec[-1]["t_us"] - rec[-2]["t_us"] > 0, "t_us is the arrival time, strictly increasing")


def test_received_and_stats(m):
    r = m.control("/_mock/reset")
    h.ok(r.status == 200 and r.json() == {"ok": True}, "reset answers {\"ok\":true}", r)
    st = m.stats()
    h.ok(st["total"] == 0 and st["senders"] == {}, "after reset nothing is counted", st)
    a, b = "+15550004001", "+15550004002"
    t_before = time.monotonic()
    for i in range(5):
        m.twilio(sms(a, body="burst %d" % i, to="+1415555%04d" % i))
    for i in range(2):
        m.meta(text(body="m%d" % i), pnid=b)
    rec = m.received(a)
    h.ok(rec["count"] == 5 and rec["retained"] == 5 and len(rec["requests"]) == 5, "5 received for %s" % a, rec)
    ts = [q["t_us"] for q in rec["requests"]]
    h.ok(ts == sorted(ts) and ts[-1] - ts[0] < (time.monotonic() - t_before) * 1e6 + 1000,
         "oldest first, monotonic microseconds spanning no more than the wall time", ts)
    h.ok([q["body"] for q in rec["requests"]] == ["burst %d" % i for i in range(5)] and
         all(re.fullmatch(r"SM[0-9a-f]{32}", q["id"]) for q in rec["requests"]) and
         rec["requests"][3]["to"] == "+14155550003", "with body, to and id")
    last2 = m.received(a, limit=2)
    h.ok(last2["count"] == 5 and [q["body"] for q in last2["requests"]] == ["burst 3", "burst 4"],
         "limit=2: the last two, count still exact", last2)
    raw = m.get("/_mock/received?sender=" + a).json()  # '+' unencoded, read as a space by form rules
    h.ok(raw["count"] == 5, "an unencoded '+' in ?sender= still finds the sender", raw["count"])
    h.ok(m.received()["count"] == 7, "no sender: every send")
    h.ok(m.received("+19999999999")["count"] == 0, "unknown sender: count 0")

    # pacing: 3 sends 0.6 s apart never share a one-second window with more than one other
    c = "+15550004003"
    for i in range(3):
        if i:
            time.sleep(0.6)
        m.twilio(sms(c))
    st = m.stats()
    sa, sb, sc = st["senders"][a], st["senders"][b], st["senders"][c]
    h.ok(st["total"] == 10 and sa["count"] == 5 and sb["count"] == 2 and sc["count"] == 3, "totals per sender", st)
    h.ok(sa["max_per_second"] == 5 and sb["max_per_second"] == 2, "a burst: max_per_second = its size", st)
    h.ok(sc["max_per_second"] == 2, "sends 0.6 s apart: at most 2 in any one-second window", sc)
    h.ok(sc["last_t_us"] - sc["first_t_us"] >= 1.15e6 and sa["first_t_us"] <= sa["last_t_us"],
         "first and last arrival times", sc)


def test_bounded_store():
    with Mock("--max-records", "3") as m:
        s = "+15550005001"
        for i in range(5):
            m.twilio(sms(s, body="n%d" % i))
        m.meta(text(body="other"), pnid="555")
        rec = m.received(s)
        h.ok(rec["count"] == 5 and rec["retained"] == 2 and [q["body"] for q in rec["requests"]] == ["n3", "n4"],
             "--max-records 3: counts stay exact, only the last 3 sends (of anyone) are kept", rec)
        h.ok(m.stats()["senders"][s]["count"] == 5, "stats count all 5")


def test_twilio_callbacks(m, hooks):
    s = "+15550006001"
    m.behaviour(sender=s, callbacks=["sent", "delivered"], callback_delay_ms=50)
    cb_url = "http://127.0.0.1:%d/twilio/status?channel=42&x=a%%20b" % hooks.port
    r = m.twilio(sms(s, StatusCallback=cb_url))
    sid = r.json().get("sid")
    posts = hooks.take("/twilio/status", 2)
    h.ok(len(posts) == 2, "two status callbacks arrived", posts)
    if len(posts) != 2:
        return
    for (path, headers, body), want in zip(posts, ("sent", "delivered")):
        params = urllib.parse.parse_qsl(body.decode(), keep_blank_values=True, strict_parsing=True)
        d = dict(params)
        h.ok(d.get("MessageStatus") == want and d.get("SmsStatus") == want and d.get("MessageSid") == sid and
             d.get("SmsSid") == sid and d.get("AccountSid") == ACCOUNT and d.get("From") == s and
             d.get("To") == "+14155550123" and d.get("ApiVersion") == "2010-04-01" and "ErrorCode" not in d,
             "callback %s: MessageSid, MessageStatus, To, From, AccountSid, ApiVersion" % want, d)
        h.ok(headers.get("content-type") == "application/x-www-form-urlencoded", "posted as a form", headers)
        sig = headers.get("x-twilio-signature", "")
        h.ok(sig == twilio_signature(TOKEN, cb_url, params),
             "callback %s: X-Twilio-Signature verifies (HMAC-SHA1, auth token, URL + sorted params)" % want,
             (sig, cb_url, params))
        h.ok(sig != twilio_signature(TOKEN + "x", cb_url, params), "and would not under another token")
        h.ok(path == "/twilio/status?channel=42&x=a%20b", "to the StatusCallback URL as given", path)

    m.behaviour(sender=s, callbacks=["failed"], callback_error_code=30007, callback_delay_ms=0)
    r = m.twilio(sms(s, StatusCallback=cb_url))
    posts = hooks.take("/twilio/status", 1)
    d = dict(urllib.parse.parse_qsl(posts[0][2].decode())) if posts else {}
    h.ok(d.get("MessageStatus") == "failed" and d.get("ErrorCode") == "30007" and
         posts[0][1].get("x-twilio-signature") ==
         twilio_signature(TOKEN, cb_url, urllib.parse.parse_qsl(posts[0][2].decode())),
         "a failed callback carries ErrorCode and is signed over it", d)

    r = m.twilio(sms(s))
    h.ok(r.status == 201 and hooks.take("/twilio/status", 1, timeout=0.5) == [],
         "no StatusCallback: nothing is posted")
    m.behaviour(sender=s, fail_next=1)
    r = m.twilio(sms(s, StatusCallback=cb_url))
    h.ok(r.status == 500 and hooks.take("/twilio/status", 1, timeout=0.5) == [],
         "a send that failed gets no callback")
    m.behaviour(sender=s, clear=True)


def test_meta_callbacks(m, hooks):
    m.behaviour(sender=PNID, callbacks=["sent", "delivered", "read"], callback_delay_ms=20)
    r = m.meta(text(to="447700900123"))
    wamid = r.json()["messages"][0]["id"]
    posts = hooks.take("/meta/webhook", 3)
    h.ok(len(posts) == 3, "three WhatsApp status webhooks arrived", posts)
    for (path, headers, body), want in zip(posts, ("sent", "delivered", "read")):
        h.ok(headers.get("x-hub-signature-256") == meta_signature(APP_SECRET, body),
             "%s: X-Hub-Signature-256 verifies (HMAC-SHA256 of the raw body, app secret)" % want, headers)
        j = json.loads(body)
        value = j["entry"][0]["changes"][0]["value"]
        st = value["statuses"][0]
        h.ok(j["object"] == "whatsapp_business_account" and j["entry"][0]["changes"][0]["field"] == "messages" and
             value["metadata"]["phone_number_id"] == PNID and st["id"] == wamid and st["status"] == want and
             st["recipient_id"] == "447700900123" and st["timestamp"].isdigit(),
             "%s: a WhatsApp Cloud statuses webhook for the wamid" % want, j)
    m.behaviour(sender=PNID, callbacks=["failed"], callback_delay_ms=0)
    m.meta(text())
    posts = hooks.take("/meta/webhook", 1)
    st = json.loads(posts[0][2])["entry"][0]["changes"][0]["value"]["statuses"][0] if posts else {}
    h.ok(st.get("status") == "failed" and st.get("errors", [{}])[0].get("code") == 131026,
         "a failed status carries errors[0].code 131026", st)
    m.behaviour(sender=PNID, clear=True)
    cb = m.stats()["callbacks"]
    h.ok(cb["posted"] >= 4 and cb["ok"] == cb["posted"] and cb["failed"] == 0 and cb["pending"] == 0,
         "stats count the callbacks posted, all answered 200", cb)


def test_shutdown_with_work_pending(hooks):
    m = Mock(hooks=hooks)
    with m:
        s = "+15550007001"
        m.behaviour(sender=s, callbacks=["delivered"], callback_delay_ms=5000)
        m.twilio(sms(s, StatusCallback="http://127.0.0.1:%d/late" % hooks.port))
        m.behaviour(sender=s, delay_ms=5000)
        def held():
            try:
                m.twilio(sms(s))
            except OSError:
                pass  # the mock closed the connection as it stopped: expected

        t = threading.Thread(target=held, daemon=True)
        t.start()
        h.wait_for(lambda: m.received(s)["count"] == 2, 5)
        t0 = time.monotonic()
        rc = m.stop()
        h.ok(rc == 0 and time.monotonic() - t0 < 3,
             "with a delayed answer and a callback still pending, SIGTERM exits at once (%.2f s)"
             % (time.monotonic() - t0))
    h.ok(hooks.take("/late", 1, timeout=0.3) == [], "the dropped callback was never posted")


# --- voice: Twilio's Calls API ----------------------------------------------------------------------------------------


def twilio_form(body):
    return urllib.parse.parse_qsl(body.decode(), keep_blank_values=True, strict_parsing=True)


def calls_api(m, params, account=ACCOUNT, auth=(ACCOUNT, TOKEN), sid=None):
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if auth:
        headers["Authorization"] = "Basic " + base64.b64encode(("%s:%s" % auth).encode()).decode()
    path = "/2010-04-01/Accounts/%s/Calls%s.json" % (account, "/" + sid if sid else "")
    return m.request("POST", path, headers, urllib.parse.urlencode(params).encode())


def check_call_callbacks(posts, url, sid, statuses, what):
    got = [dict(twilio_form(b)).get("CallStatus") for _, _, b in posts]
    h.ok(got == statuses, "%s: status callbacks %s, in order" % (what, statuses), got)
    for path, headers, body in posts:
        params = twilio_form(body)
        d = dict(params)
        h.ok(headers.get("x-twilio-signature") == twilio_signature(TOKEN, url, params),
             "%s: callback %s signed (auth token, URL + sorted params)" % (what, d.get("CallStatus")), d)
        if d.get("CallSid") != sid or d.get("AccountSid") != ACCOUNT or d.get("ApiVersion") != "2010-04-01" or \
                not d.get("SequenceNumber", "").isdigit() or not d.get("Timestamp"):
            h.ok(False, "%s: callback fields CallSid, AccountSid, ApiVersion, SequenceNumber, Timestamp" % what, d)
    seqs = [int(dict(twilio_form(b)).get("SequenceNumber", "-1")) for _, _, b in posts]
    h.ok(seqs == sorted(seqs) and len(set(seqs)) == len(seqs), "%s: SequenceNumber counts up" % what, seqs)


def test_calls_api(m, hooks):
    frm, to = "+15550008001", "+14445550001"
    dial = "<Response><Dial>+14445550999</Dial></Response>"
    r = calls_api(m, [("To", to), ("From", frm), ("Twiml", dial)], auth=None)
    h.ok(r.status == 401 and r.json().get("code") == 20003, "Calls.json without basic auth: 401 code 20003", r)
    r = calls_api(m, [("From", frm), ("Twiml", dial)])
    h.ok(r.status == 400 and r.json().get("code") == 21201, "no To: 400 code 21201", r)
    r = calls_api(m, [("To", to), ("Twiml", dial)])
    h.ok(r.status == 400 and r.json().get("code") == 21213, "no From: 400 code 21213", r)
    r = calls_api(m, [("To", to), ("From", frm)])
    h.ok(r.status == 400 and r.json().get("code") == 21205, "neither Url nor Twiml: 400 code 21205", r)

    cb_url = "http://127.0.0.1:%d/calls/status?leg=a" % hooks.port
    r = calls_api(m, [("To", to), ("From", frm), ("Twiml", dial), ("StatusCallback", cb_url),
                      ("StatusCallbackEvent", "initiated ringing answered completed")])
    j = r.json()
    sid = j.get("sid", "")
    h.ok(r.status == 201 and re.fullmatch(r"CA[0-9a-f]{32}", sid) is not None and j.get("status") == "queued" and
         j.get("to") == to and j.get("from") == frm and j.get("account_sid") == ACCOUNT and
         j.get("direction") == "outbound-api" and j.get("uri") == "/2010-04-01/Accounts/%s/Calls/%s.json"
         % (ACCOUNT, sid) and j.get("api_version") == "2010-04-01", "Calls.json: 201, a call resource, queued", j)
    posts = hooks.take("/calls/status", 3)
    check_call_callbacks(posts, cb_url, sid, ["initiated", "ringing", "in-progress"], "API call")
    d = m.get("/_mock/calls/" + sid).json()
    h.ok(d.get("status") == "in-progress" and d["twiml"]["kind"] == "dial" and d["twiml"]["dial"] == "+14445550999"
         and d["direction"] == "outbound-api", "the call is in progress on its Dial", d)

    r = calls_api(m, [("Status", "completed")], sid=sid)
    h.ok(r.status == 200 and r.json().get("status") == "completed" and r.json().get("sid") == sid,
         "Status=completed: 200, the call completed", r)
    posts = hooks.take("/calls/status", 1)
    check_call_callbacks(posts, cb_url, sid, ["completed"], "API call end")
    h.ok(posts and dict(twilio_form(posts[0][2])).get("CallDuration", "").isdigit() and
         dict(twilio_form(posts[0][2])).get("Direction") == "outbound-api", "completed carries CallDuration",
         posts[0][2] if posts else None)
    # (the hook has the request; the mock records its answer when the answer reaches it: wait for that)
    h.wait_for(lambda: all(c["http_status"] for c in m.get("/_mock/calls/" + sid).json()["callbacks"]), 5, 0.05)
    d = m.get("/_mock/calls/" + sid).json()
    h.ok([c["status"] for c in d["callbacks"]] == ["initiated", "ringing", "in-progress", "completed"] and
         all(c["http_status"] == 200 and c["error"] is None for c in d["callbacks"]),
         "the call's details list each callback with the answer it got", d["callbacks"])

    unknown = "CA" + "0" * 32
    r = calls_api(m, [("Status", "completed")], sid=unknown)
    j = r.json()
    h.ok(r.status == 404 and j.get("code") == 20404 and j.get("status") == 404 and unknown in j.get("message", ""),
         "an unknown CallSid: 404 code 20404, Twilio's shape", r)
    r = calls_api(m, [("Status", "completed")], sid=sid, account="AC" + "9" * 32, auth=("AC" + "9" * 32, TOKEN))
    h.ok(r.status == 404, "another account's call: 404", r)

    # Url: fetched with a signed POST; only the default "completed" event; Say + Hangup ends at once
    hooks.answers["/calls/twiml"] = (200, "text/xml", b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>"
                                     b"<Response><Say>Hello &amp; bye</Say><Hangup/></Response>")
    twiml_url = "http://127.0.0.1:%d/calls/twiml" % hooks.port
    r = calls_api(m, [("To", to), ("From", frm), ("Url", twiml_url), ("StatusCallback", cb_url)])
    sid2 = r.json().get("sid")
    fetch = hooks.take("/calls/twiml", 1)
    params = twilio_form(fetch[0][2]) if fetch else []
    d = dict(params)
    h.ok(fetch and fetch[0][1].get("x-twilio-signature") == twilio_signature(TOKEN, twiml_url, params) and
         d.get("CallSid") == sid2 and d.get("CallStatus") == "in-progress" and d.get("Direction") == "outbound-api"
         and d.get("From") == frm and d.get("To") == to, "the Url is fetched with a signed POST of the call", d)
    posts = hooks.take("/calls/status", 1)
    check_call_callbacks(posts, cb_url, sid2, ["completed"], "Url call (default events)")
    d = m.get("/_mock/calls/" + sid2).json()
    h.ok(d["twiml"]["status"] == 200 and d["twiml"]["kind"] == "say" and d["twiml"]["say"] == "Hello & bye" and
         d["status"] == "completed", "Say + Hangup: read, the call completed", d["twiml"])
    del hooks.answers["/calls/twiml"]

    # a queued call canceled before it is answered
    r = calls_api(m, [("To", to), ("From", frm), ("Twiml", dial), ("StatusCallback", cb_url)])
    sid3 = r.json().get("sid")
    r = calls_api(m, [("Status", "canceled")], sid=sid3)
    h.ok(r.status == 200 and r.json().get("status") == "canceled", "Status=canceled while queued: canceled", r)
    posts = hooks.take("/calls/status", 1)
    check_call_callbacks(posts, cb_url, sid3, ["canceled"], "canceled call")

    m.behaviour(sender=frm, fail_next=1, fail_status=503)
    r = calls_api(m, [("To", to), ("From", frm), ("Twiml", dial)])
    h.ok(r.status == 503 and r.json().get("code") == 20500, "the sender's behaviour fails calls too: 503", r)
    rec = m.received(frm)
    h.ok(rec["count"] == 4 and [q["type"] for q in rec["requests"]] == ["call"] * 4 and
         rec["requests"][0]["id"] == sid and rec["requests"][-1]["status"] == 503,
         "calls are recorded in /_mock/received (type call, id the CallSid)", rec)
    lst = m.get("/_mock/calls").json()
    h.ok(lst["count"] == 3 and [c["sid"] for c in lst["calls"]] == [sid, sid2, sid3],
         "GET /_mock/calls lists the calls in order", lst)
    m.behaviour(sender=frm, clear=True)


# --- voice: the echo app -------------------------------------------------------------------------------------------


def ms_start(stream_sid, call_sid, params):
    return {"event": "start", "sequenceNumber": "1", "streamSid": stream_sid,
            "start": {"streamSid": stream_sid, "callSid": call_sid, "accountSid": ACCOUNT, "tracks": ["inbound"],
                      "customParameters": params,
                      "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}}


def ms_media(stream_sid, seq, chunk, payload):
    return {"event": "media", "sequenceNumber": str(seq), "streamSid": stream_sid,
            "media": {"track": "inbound", "chunk": str(chunk), "timestamp": str(20 * (chunk - 1)),
                      "payload": base64.b64encode(payload).decode()}}


def app_session(m, i=-1):
    return m.get("/_mock/voice-app").json()["sessions"][i]


def test_echo_app(m):
    m.control("/_mock/reset")
    sig = "t=1700000000,v1=" + "ab" * 32
    ws = wsclient.WebSocket.connect(m.port, "/_mock/voice-app?x=1", headers={"X-Switchboard-Signature": sig})
    ss, cs = "MZ" + "1" * 32, "CA" + "2" * 32
    ws.send_op({"event": "connected", "protocol": "Call", "version": "1.0.0"})
    ws.send_op(ms_start(ss, cs, {"tenant": "t1", "channel": "ch-9"}))
    payloads = [bytes([i]) * 160 for i in range(20)]
    for i, p in enumerate(payloads):
        ws.send_op(ms_media(ss, i + 2, i + 1, p))
    ws.send_op({"event": "mark", "sequenceNumber": "22", "streamSid": ss, "mark": {"name": "greeting"}})
    got = [ws.recv_op(timeout=5) for _ in range(21)]
    echoes = [g for g in got if g.get("event") == "media"]
    h.ok([base64.b64decode(g["media"]["payload"]) for g in echoes] == payloads,
         "the echo app sends every media payload back, in order", [g.get("event") for g in got])
    h.ok(all(g.get("streamSid") == ss and set(g) == {"event", "streamSid", "media"} and set(g["media"]) == {"payload"}
             for g in echoes), "in the app's form: event, streamSid, media.payload only", echoes[:1])
    h.ok(got[-1] == {"event": "mark", "streamSid": ss, "mark": {"name": "greeting"}},
         "a mark is answered with the same mark, after the media before it", got[-1])
    s = app_session(m)
    h.ok(s["signature"] == sig and s["parameters"] == {"tenant": "t1", "channel": "ch-9"} and s["stream_sid"] == ss
         and s["call_sid"] == cs and s["media"] == 20 and s["marks"] == ["greeting"] and s["open"] and
         s["target"] == "/_mock/voice-app?x=1", "GET /_mock/voice-app: signature, customParameters, counts", s)
    ws.send_op({"event": "stop", "sequenceNumber": "23", "streamSid": ss,
                "stop": {"accountSid": ACCOUNT, "callSid": cs}})
    ws.close()
    h.wait_for(lambda: not app_session(m)["open"], 3)
    s = app_session(m)
    h.ok(s["stops"] == 1 and not s["open"] and s["t_close_us"] >= s["t_open_us"] > 0, "stop seen, then closed", s)

    ws = wsclient.WebSocket.connect(m.port, "/_mock/voice-app?delay_ms=200")
    ws.send_op(ms_start(ss, cs, {}))
    t0 = time.monotonic()
    ws.send_op(ms_media(ss, 2, 1, b"\x7f" * 160))
    g = ws.recv_op(timeout=5)
    dt = time.monotonic() - t0
    h.ok(g.get("event") == "media" and 0.18 <= dt < 2, "delay_ms=200: the echo comes %.3f s later" % dt, g)
    ws.close()

    ws = wsclient.WebSocket.connect(m.port, "/_mock/voice-app?stall=1")
    ws.send_op(ms_start(ss, cs, {}))
    ws.send_op(ms_media(ss, 2, 1, b"\x7f" * 160))
    try:
        ws.recv_op(timeout=0.5)
        h.ok(False, "stall=1: no echo")
    except TimeoutError:
        h.ok(True, "stall=1: the app reads nothing and echoes nothing")
    s = app_session(m)
    h.ok(s["stall"] and s["media"] == 0 and s["starts"] == 0 and s["open"], "and has seen nothing", s)
    ws.shutdown()

    try:
        wsclient.WebSocket.connect(m.port, "/_mock/voice-app?refuse=1")
        h.ok(False, "refuse=1: the upgrade is refused")
    except wsclient.HandshakeRefused as e:
        h.ok(e.status == 403, "refuse=1: the upgrade is answered 403", e.status)
    h.ok(m.get("/_mock/voice-app").json()["refused"] == 1, "and counted as refused")
    m.control("/_mock/reset")
    h.ok(h.wait_for(lambda: m.get("/_mock/voice-app").json()["count"] == 0, 3),
         "reset forgets the app's sessions")


# --- voice: incoming calls through a fake gateway to the mock's own echo app ------------------------------------------


class FakeGateway:
    """Answers the voice webhook as the gateway will: verifies X-Twilio-Signature, answers Stream TwiML pointing at the
    mock's echo app (or what self.twiml says), and records the voice status callbacks."""

    def __init__(self, mock_port):
        self.hooks = Hooks()
        self.port = self.hooks.port
        self.mock_port = mock_port
        self.bad_signatures = 0
        self.twiml = {}  # channel -> (status, body)
        self.hooks.answers["/webhooks/twilio/"] = self.answer

    def url(self, channel):
        return "http://127.0.0.1:%d/webhooks/twilio/%s/voice" % (self.port, channel)

    def stream_url(self):
        return "ws://127.0.0.1:%d/_mock/voice-app" % self.mock_port

    def answer(self, path, body, headers):
        channel = path.split("/")[3]
        if path.endswith("/voice/status"):
            return 200, None, b""
        params = twilio_form(body)
        if headers.get("x-twilio-signature") != twilio_signature(TOKEN, self.url(channel), params):
            self.bad_signatures += 1
            return 403, None, b""
        if channel in self.twiml:
            status, doc = self.twiml[channel]
            return status, "text/xml", doc.encode()
        d = dict(params)
        doc = ('<?xml version="1.0" encoding="UTF-8"?><Response><Connect><Stream url="%s">'
               '<Parameter name="channel" value="%s"/><Parameter name="call" value="%s"/>'
               '<Parameter name="note" value="a &amp; b"/></Stream></Connect></Response>'
               % (self.stream_url(), channel, d.get("CallSid")))
        return 200, "text/xml", doc.encode()

    def close(self):
        self.hooks.close()


def place(m, gw, channel, **fields):
    body = {"webhook": gw.url(channel), "auth_token": TOKEN, "account_sid": ACCOUNT, "from": "+15551230000",
            "to": "+14445550000"}
    body.update(fields)
    r = m.control("/_mock/calls", body)
    if r.status != 202:
        raise AssertionError("POST /_mock/calls refused: %r" % r)
    return r.json()["calls"]


def wait_final(m, sids, timeout=20):
    final = ("completed", "busy", "failed", "no-answer", "canceled")
    h.wait_for(lambda: all(m.get("/_mock/calls/" + s).json()["status"] in final for s in sids), timeout, 0.1)
    return [m.get("/_mock/calls/" + s).json() for s in sids]


def test_incoming_calls(m):
    m.control("/_mock/reset")
    gw = FakeGateway(m.port)
    try:
        r = m.control("/_mock/calls", {"webhook": "ftp://x", "auth_token": TOKEN})
        h.ok(r.status == 400 and "webhook" in r.body.decode(), "POST /_mock/calls: a bad webhook is a 400", r)
        r = m.control("/_mock/calls", {"webhook": gw.url("c"), "auth_token": TOKEN, "frame": 3})
        h.ok(r.status == 400 and "frame" in r.body.decode(), "an unknown field is a 400, named", r)

        sids = place(m, gw, "ch-1", count=2, frames=60, dtmf="12", mark=True)
        h.ok(len(sids) == 2 and all(re.fullmatch(r"CA[0-9a-f]{32}", s) for s in sids), "202 with two CallSids",
             sids)
        calls = wait_final(m, sids)
        for c in calls:
            st = c["stream"]
            h.ok(c["status"] == "completed" and c["direction"] == "inbound" and c["twiml"]["status"] == 200 and
                 c["twiml"]["kind"] == "stream" and c["twiml"]["stream_url"] == gw.stream_url() and
                 c["twiml"]["parameters"] == {"channel": "ch-1", "call": c["sid"], "note": "a & b"},
                 "the webhook's Stream TwiML was read: url and Parameters", c["twiml"])
            h.ok(st["state"] == "closed" and st["close_code"] == 1000 and st["closed_by"] == "mock" and
                 re.fullmatch(r"MZ[0-9a-f]{32}", st["stream_sid"] or "") is not None,
                 "the stream opened, and the caller hung up with 1000", st)
            h.ok(st["frames_sent"] == 60 and st["frames_received"] == 60 and st["in_order"] and st["lost"] == 0 and
                 st["duplicates"] == 0 and st["foreign"] == 0 and st["wrong_stream_sid"] == 0,
                 "60 frames sent, 60 echoes back, in order, none lost, none crossed", st)
            dl = st["delay_us"]
            h.ok(dl["count"] == 60 and 0 < dl["p50"] <= dl["p99"] <= dl["max"] < 1000000,
                 "relay delay p50 %s µs, p99 %s µs" % (dl["p50"], dl["p99"]), dl)
            h.ok(st["marks_sent"] == 1 and st["marks_received"] == ["mark-1"] and st["dtmf_sent"] == "12",
                 "a mark went out after frame 50 and came back; DTMF 1, 2 sent", st)
            h.ok([x["status"] for x in c["callbacks"]] == ["in-progress", "completed"] and
                 all(x["http_status"] == 200 for x in c["callbacks"]), "callbacks in-progress, completed: 200",
                 c["callbacks"])
        sessions = m.get("/_mock/voice-app").json()["sessions"]
        by_call = {s["call_sid"]: s for s in sessions}
        for c in calls:
            s = by_call.get(c["sid"], {})
            h.ok(s.get("parameters") == {"channel": "ch-1", "call": c["sid"], "note": "a & b"} and
                 s.get("media") == 60 and s.get("dtmf") == "12" and s.get("stops") == 1 and
                 s.get("connected") == 1 and s.get("stream_sid") == c["stream"]["stream_sid"] and
                 s.get("account_sid") == ACCOUNT, "the app saw connected, start with the Parameters, 60 media, "
                 "DTMF 12, stop", s)
            h.ok(s.get("twilio_signature") == twilio_signature(TOKEN, gw.stream_url(), []),
                 "the upgrade carried X-Twilio-Signature over the exact stream URL", s.get("twilio_signature"))
        posts = gw.hooks.take("/webhooks/twilio/ch-1/voice", 6)
        hooks_ = [p for p in posts if p[0] == "/webhooks/twilio/ch-1/voice"]
        d = dict(twilio_form(hooks_[0][2])) if hooks_ else {}
        h.ok(len(hooks_) == 2 and d.get("CallStatus") == "ringing" and d.get("Direction") == "inbound" and
             d.get("AccountSid") == ACCOUNT and d.get("From") == "+15551230000" and d.get("To") == "+14445550000" and
             d.get("Called") == "+14445550000" and d.get("Caller") == "+15551230000" and
             d.get("ApiVersion") == "2010-04-01" and gw.bad_signatures == 0,
             "the voice webhook: a signed form as Twilio sends it", d)
        st_posts = [p for p in posts if p[0] == "/webhooks/twilio/ch-1/voice/status"]
        status_url = gw.url("ch-1") + "/status"
        for sid in sids:
            mine = [p for p in st_posts if dict(twilio_form(p[2])).get("CallSid") == sid]
            check_call_callbacks(mine, status_url, sid, ["in-progress", "completed"], "incoming call")

        summ = m.get("/_mock/calls?summary=1").json()
        h.ok(summ["calls"] == 2 and summ["frames_sent"] == 120 and summ["frames_received"] == 120 and
             summ["lost"] == 0 and summ["in_order_streams"] == 2 and summ["status"]["completed"] == 2 and
             summ["delay_us"]["count"] == 120 and summ["delay_us"]["p99"] >= summ["delay_us"]["p50"] > 0,
             "?summary=1: totals and delays over all calls", summ)

        # the app delays its echoes: the delay shows
        gw.twiml["slow"] = (200, '<Response><Connect><Stream url="%s?delay_ms=100"/></Connect></Response>'
                            % gw.stream_url())
        [sid] = place(m, gw, "slow", frames=10)
        [c] = wait_final(m, [sid])
        h.ok(c["stream"]["frames_received"] == 10 and c["stream"]["delay_us"]["p50"] >= 95000,
             "an app holding echoes 100 ms: p50 delay %s µs" % c["stream"]["delay_us"]["p50"], c["stream"])

        # a stalled app: nothing comes back; the caller still hangs up after linger_ms
        gw.twiml["dead"] = (200, '<Response><Connect><Stream url="%s?stall=1"/></Connect></Response>'
                            % gw.stream_url())
        [sid] = place(m, gw, "dead", frames=10, linger_ms=200)
        wait_final(m, [sid])
        # the call ends at once; its stream once our close frame went unanswered for connect_timeout_ms (5 s): a
        # dead app never sends the close reply the client waits for (libwebsockets did not wait)
        h.wait_for(lambda: m.get("/_mock/calls/" + sid).json()["stream"]["state"] == "closed", 10, 0.1)
        c = m.get("/_mock/calls/" + sid).json()
        h.ok(c["status"] == "completed" and c["stream"]["frames_sent"] == 10 and
             c["stream"]["frames_received"] == 0 and c["stream"]["lost"] == 10,
             "a dead app: 10 sent, none back, counted lost", c["stream"])

        # bad_signature: the upgrade's X-Twilio-Signature is wrong (the echo app records it; a gateway refuses it)
        [sid] = place(m, gw, "badsig", frames=5, bad_signature=True)
        wait_final(m, [sid])
        s = [x for x in m.get("/_mock/voice-app").json()["sessions"] if x["call_sid"] == sid]
        h.ok(s and s[0]["twilio_signature"] != twilio_signature(TOKEN, gw.stream_url(), []) and
             len(s[0]["twilio_signature"]) == 28, "bad_signature: the upgrade is signed wrongly", s)

        # a refused upgrade: the stream never opens, the call still ends
        gw.twiml["refused"] = (200, '<Response><Connect><Stream url="%s?refuse=1"/></Connect></Response>'
                               % gw.stream_url())
        [sid] = place(m, gw, "refused", frames=5)
        [c] = wait_final(m, [sid])
        h.ok(c["stream"]["http_status"] == 403 and c["stream"]["frames_sent"] == 0 and c["status"] == "completed" and
             [x["status"] for x in c["callbacks"]] == ["completed"], "an upgrade answered 403: recorded, the call "
             "completes without in-progress", c)

        gw.twiml["full"] = (200, "<Response><Say>We are busy.</Say><Hangup/></Response>")
        gw.twiml["reject"] = (200, '<Response><Reject reason="busy"/></Response>')
        gw.twiml["fwd"] = (200, "<Response><Dial>+14445557777</Dial></Response>")
        gw.twiml["down"] = (503, "")
        gw.twiml["junk"] = (200, "<Response><Say>unclosed</Response>")
        got = {}
        for ch in ("full", "reject", "fwd", "down", "junk"):
            [sid] = place(m, gw, ch, frames=10)
            got[ch] = sid
        res = {ch: c for ch, c in zip(got, wait_final(m, list(got.values())))}
        h.ok(res["full"]["twiml"]["kind"] == "say" and res["full"]["twiml"]["say"] == "We are busy." and
             res["full"]["status"] == "completed", "Say + Hangup: completed", res["full"]["twiml"])
        h.ok(res["reject"]["twiml"]["kind"] == "reject" and res["reject"]["twiml"]["reject_reason"] == "busy" and
             res["reject"]["status"] == "busy" and [x["status"] for x in res["reject"]["callbacks"]] == ["busy"],
             "Reject busy: the call ends busy", res["reject"])
        h.ok(res["fwd"]["twiml"]["kind"] == "dial" and res["fwd"]["twiml"]["dial"] == "+14445557777" and
             res["fwd"]["status"] == "completed", "Dial: read, completed after the call's frames", res["fwd"]["twiml"])
        h.ok(res["down"]["twiml"]["status"] == 503 and res["down"]["status"] == "failed",
             "a webhook answered 503: the call fails", res["down"])
        h.ok(res["junk"]["twiml"]["kind"] == "invalid" and res["junk"]["twiml"]["invalid"] and
             res["junk"]["status"] == "failed", "unbalanced TwiML: invalid, the call fails", res["junk"]["twiml"])

        # hangup none: the call stays up until the Calls API ends it
        [sid] = place(m, gw, "ch-2", frames=5, hangup="none")
        h.wait_for(lambda: m.get("/_mock/calls/" + sid).json()["stream"]["frames_received"] == 5, 5)
        time.sleep(0.2)
        c = m.get("/_mock/calls/" + sid).json()
        h.ok(c["status"] == "in-progress" and c["stream"]["state"] == "open", "hangup none: still up after its frames",
             c["stream"]["state"])
        r = calls_api(m, [("Status", "completed")], sid=sid)
        [c] = wait_final(m, [sid])
        h.ok(r.status == 200 and c["status"] == "completed" and c["stream"]["close_code"] == 1000 and
             [x["status"] for x in c["callbacks"]] == ["in-progress", "completed"],
             "ended by Status=completed: stop, close, completed callback", c)
        s = [x for x in m.get("/_mock/voice-app").json()["sessions"] if x["call_sid"] == sid]
        h.ok(s and s[0]["stops"] == 1, "the app saw the stop", s)
    finally:
        gw.close()


def test_many_calls(m):
    """A small load: 50 calls at once, 50 frames each, all through one mock thread."""
    m.control("/_mock/reset")
    gw = FakeGateway(m.port)
    try:
        sids = place(m, gw, "load", count=50, frames=50, spread_ms=200)
        wait_final(m, sids, 30)
        summ = m.get("/_mock/calls?summary=1").json()
        h.ok(summ["calls"] == 50 and summ["status"]["completed"] == 50 and summ["frames_sent"] == 2500 and
             summ["frames_received"] == 2500 and summ["in_order_streams"] == 50 and summ["foreign"] == 0,
             "50 concurrent calls: 2500 frames each way, in order (p50 %s µs, p99 %s µs)"
             % (summ["delay_us"]["p50"], summ["delay_us"]["p99"]), summ)
    finally:
        gw.close()


def test_file():
    hooks = Hooks()
    try:
        with Mock(hooks=hooks) as m:
            for t in (test_twilio, test_meta, test_failures, test_delay, test_received_and_stats):
                h.subtest(t, m)
            h.subtest(test_twilio_callbacks, m, hooks)
            h.subtest(test_meta_callbacks, m, hooks)
            h.subtest(test_calls_api, m, hooks)
            h.subtest(test_echo_app, m)
            h.subtest(test_incoming_calls, m)
            h.subtest(test_many_calls, m)
        h.subtest(test_bounded_store)
        h.subtest(test_shutdown_with_work_pending, hooks)
    finally:
        hooks.close()


if __name__ == "__main__":
    h.main(test_file)
