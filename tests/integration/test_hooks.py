"""tests/integration/test_hooks.py — outgoing webhooks on the real stack: a tenant's events reach its own HTTP
endpoint in cursor order, each signed (HMAC-SHA256 over "<t>.<body>", checked here independently, with a fresh
timestamp) and named by an event id; an endpoint that fails is retried with backoff and the deliveries survive a
gateway restart without loss; events older than webhook_max_age are dead-lettered and delivery goes on.
Run: SB_BIN=build/release/switchboard python3 tests/integration/test_hooks.py"""

import hashlib
import hmac
import http.server
import json
import threading
import time
import uuid

import harness as h
from test_live import setup, sms
from test_webhooks import MASTER_KEY, admin


class Receiver:
    """The tenant's application: records what it accepts; answers `status` (200 unless told otherwise)."""

    def __init__(self):
        self.got = []
        self.refused = 0
        self.status = 200
        self.retry_after = None  # seconds, sent as Retry-After with a refusal
        me = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if me.status >= 300:
                    me.refused += 1
                    self.send_response(me.status)
                    if me.retry_after is not None:
                        self.send_header("Retry-After", str(me.retry_after))
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                me.got.append((dict(self.headers), body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d/hooks" % self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def events(self):
        return [json.loads(b) for _, b in self.got]

    def close(self):
        self.server.shutdown()


def verify(secret, headers, body):
    sig = headers.get("X-Switchboard-Signature", "")
    parts = dict(p.split("=", 1) for p in sig.split(",") if "=" in p)
    t = int(parts.get("t", "0"))
    want = hmac.new(secret.encode(), ("%d." % t).encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(want, parts.get("v1", "")) and abs(time.time() - t) < 300


def hook(gw, t, url):
    return h.request(gw.port, "POST", "/v1/admin/tenants/%s/webhook" % t["tenant"],
                     {"Authorization": "Bearer " + h.ADMIN_TOKEN, "Content-Type": "application/json"},
                     json.dumps({"url": url}).encode())


def test_delivery_and_restart():
    rx = Receiver()
    gw = h.Gateway(master_key=MASTER_KEY)
    gw.start()
    try:
        t = setup(gw)
        r = hook(gw, t, rx.url)
        secret = r.json().get("secret", "") if r.status == 200 else ""
        h.ok(r.status == 200 and secret.startswith("whsec_") and r.json()["url"] == rx.url,
             "POST /v1/admin/tenants/{id}/webhook: the URL and its signing secret", r)
        r = hook(gw, t, "ftp://nope")
        h.ok(r.status == 400, "a URL that is not http(s): 400", r)
        r = hook(gw, t, rx.url)  # a new secret: the old one stops working
        secret = r.json().get("secret", "")
        for i in range(3):
            sms(gw, t, "hook %d" % i)
        h.wait_for(lambda: len(rx.got) >= 6, 10)
        evs = rx.events()
        h.ok([e["cursor"] for e in evs] == list(range(1, 7)), "six events, in cursor order, each once",
             [e["cursor"] for e in evs])
        h.ok(all(verify(secret, hd, b) for hd, b in rx.got), "each signed with the tenant's current secret")
        h.ok(all(hd.get("X-Switchboard-Event") == "%s:%d" % (t["tenant"], json.loads(b)["cursor"])
                 for hd, b in rx.got), "each named tenant:cursor")
        h.ok(evs and evs[0]["type"] == "message.created" and evs[0]["data"]["body"] == "hook 0" and
             evs[0]["tenant_id"] == t["tenant"], "the same events the inbox streams", evs[:1])

        rx.status = 503  # the application is down
        for i in range(3, 5):
            sms(gw, t, "hook %d" % i)
        h.wait_for(lambda: rx.refused >= 2, 10)
        h.ok(rx.refused >= 2, "a failing endpoint is retried (%d refusals)" % rx.refused)
        gw.stop()
        rx.status = 200
        gw.start()  # the restart resumes from the last acknowledged event
        h.wait_for(lambda: len(rx.got) >= 10, 20)
        cursors = [e["cursor"] for e in rx.events()]
        h.ok(cursors == list(range(1, 11)), "after the restart the rest arrives: 1..10, none lost, none twice",
             cursors)
        h.ok(h.sql("SELECT webhook_cursor FROM tenants WHERE id = %s" % t["tenant"]) == "10",
             "the acknowledged cursor is committed")
    finally:
        gw.stop()
        gw.finish()
        rx.close()


def test_dead_letter():
    rx = Receiver()
    rx.status = 500
    rx.retry_after = 60  # a backoff far past the events' max age: they must still go when they reach it
    with h.Gateway(master_key=MASTER_KEY, webhook_max_age=1) as gw:
        t = setup(gw)
        hook(gw, t, rx.url)
        sms(gw, t, "too late")
        dead = h.wait_for(lambda: h.sql("SELECT count(*) FROM webhook_dead_letters WHERE tenant_id = %s"
                                      % t["tenant"]) == "2", 8)
        h.ok(dead, "events undelivered after webhook_max_age go to webhook_dead_letters when they reach it, "
             "whatever the backoff (Retry-After: 60)")
        rx.retry_after = None
        rx.status = 200
        sms(gw, t, "on time")
        h.wait_for(lambda: len(rx.got) >= 2, 10)
        evs = rx.events()
        h.ok([e["cursor"] for e in evs] == [3, 4] and evs[0]["data"]["body"] == "on time",
             "and delivery goes on with the next events", evs)
    rx.close()


if __name__ == "__main__":
    h.main(test_delivery_and_restart, test_dead_letter)
