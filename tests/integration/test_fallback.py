"""tests/integration/test_fallback.py — fallback channels (issue 16 item 4) on the real stack against the mock provider
(ops/mock_provider.c): a message sent with "fallback": [{"channel_id"}, ...] that fails for good (the provider's
permanent error, or a later failed/undelivered status callback) or is not delivered within fallback_after seconds goes
out again, the same content to the same recipient, as a new message on the next channel of its list; both messages
link to each other (fallback_to, fallback_of), the first one's history says "fallback", and the inbox gets a
message.status "fallback" naming the new message and the reason. Delivered in time: nothing more is sent. It fires
once: a chain goes on to the third channel only when the second fails too; a channel that refuses the content is
skipped; across gateway restarts a pending deadline is kept and a fallback whose link was not stored yet is not sent
twice (its idempotency key answers the message made the first time). Bad lists are refused with clear errors.
Run: SB_BIN=build/release/switchboard python3 tests/integration/test_fallback.py"""

import base64
import hashlib
import hmac
import json
import time
import uuid

import harness as h
from test_live import connect
from test_mock_provider import Mock
from test_outbound import ACCOUNT, TOKEN, message, setup, setup_channel
from test_webhooks import MASTER_KEY, admin, post

TO = "+14155550142"


def send(gw, t, payload):
    body = {"channel_id": t["channel"], "to": TO, "body": "fallback " + uuid.uuid4().hex[:8]}
    body.update(payload)
    return h.request(gw.port, "POST", "/v1/messages", {"Authorization": "Bearer " + t["key"],
                                                       "Content-Type": "application/json"},
                     json.dumps(body).encode())


def fb(*channels, after=None):
    p = {"fallback": [{"channel_id": c} for c in channels]}
    if after is not None:
        p["fallback_after"] = after
    return p


def collect(ws, until, timeout=20):
    """Events (their op frames' type and data) until until(events) is true or timeout; returns them all."""
    got = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not until(got):
        try:
            m = ws.recv_op(timeout=max(0.05, deadline - time.monotonic()))
        except (TimeoutError, OSError):
            break
        if m.get("op") == "event":
            got.append((m["type"], m["data"]))
    return got


def status_of(evs, mid, status):
    return [d for t, d in evs if t == "message.status" and d["id"] == mid and d["status"] == status]


def created_on(evs, channel):
    return [d for t, d in evs if t == "message.created" and d["channel_id"] == channel]


def address_for(kind):
    """A Meta channel's address is its phone_number_id (the mock's sender); the others' a number."""
    return str(100000000000000 + uuid.uuid4().int % 10 ** 14) if kind.startswith("meta_") else None


def tenant_with(gw, kinds):
    """A tenant, its key, and a channel of each kind (the first is t["channel"])."""
    t = setup(gw, kinds[0], address=address_for(kinds[0]))
    chans = [{"channel": t["channel"], "address": t["address"]}]
    for k in kinds[1:]:
        chans.append(setup_channel(gw, t["tenant"], k, address=address_for(k)))
    t["chans"] = chans
    return t


def customer_writes(gw, t, ch):
    """A signed Twilio WhatsApp webhook from TO to channel ch, waited for until applied: WhatsApp's 24-hour window is
    then open, so a free-form fallback may go out there."""
    path = "/webhooks/twilio/%s" % ch["channel"]
    params = [("MessageSid", "SM" + uuid.uuid4().hex), ("AccountSid", ACCOUNT), ("From", "whatsapp:" + TO),
              ("To", "whatsapp:" + ch["address"]), ("Body", "hello?"), ("NumMedia", "0")]
    data = "http://127.0.0.1:%d%s" % (gw.port, path) + "".join(k + v for k, v in sorted(params))
    sig = base64.b64encode(hmac.new(TOKEN.encode(), data.encode(), hashlib.sha1).digest()).decode()
    h.ok(post(gw, path, params, signature=sig).status == 200, "the customer wrote on WhatsApp (signed webhook)")
    q = ("SELECT count(*) FROM messages WHERE tenant_id = %s AND channel_id = %s AND direction = 'in'"
         % (t["tenant"], ch["channel"]))
    h.ok(h.wait_for(lambda: h.sql(q) != "0", 10), "and applied: the window is open")


def sent_to(mock, ch):
    return mock.received(sender=ch["address"]).get("requests", [])


# --- validation ---------------------------------------------------------------------------------------------------


def test_validation(gw, mock):
    t = tenant_with(gw, ["twilio_sms", "twilio_sms"])
    a, b = t["chans"]
    other = setup(gw)
    voice = admin(gw, "/v1/admin/tenants/%s/channels" % t["tenant"],
                  {"type": "twilio_voice", "address": "+1999%07d" % (uuid.uuid4().int % 10 ** 7),
                   "credentials": {"account_sid": "AC" + "5" * 32, "auth_token": "f" * 32}, "settings": {}})
    before = h.sql("SELECT count(*) FROM messages WHERE tenant_id = %s" % t["tenant"])
    cases = [
        ({"fallback": {"channel_id": b["channel"]}}, 400, "must be an array"),
        ({"fallback": [b["channel"]]}, 400, "'channel_id'"),
        ({"fallback": [{"channel": b["channel"]}]}, 400, "'channel_id'"),
        ({"fallback": [{"channel_id": "12x"}]}, 400, "'channel_id'"),
        (fb(a["channel"]), 400, "own channel"),
        (fb(b["channel"], b["channel"]), 400, "twice"),
        (fb(*["%d" % (10 ** 12 + i) for i in range(6)]), 400, "at most 5"),
        (fb(b["channel"], after=0), 400, "fallback_after"),
        (fb(b["channel"], after=86401), 400, "fallback_after"),
        (fb(b["channel"], after="60"), 400, "fallback_after"),
        ({"fallback_after": 30}, 400, "needs a 'fallback'"),
        (fb("9" * 15), 404, "fallback channel 999999999999999 not found"),
        (fb(other["channel"]), 404, "fallback channel %s not found" % other["channel"]),
        (fb(b["channel"], voice["id"]), 400, "twilio_voice channel"),
        ({"idempotency_key": "sb-fallback:1"}, 400, "must not start with sb-fallback:"),
    ]
    for payload, status, needle in cases:
        r = send(gw, t, payload)
        err = r.json().get("error", {}) if r.body else {}
        h.ok(r.status == status and needle in err.get("message", ""),
             "%s -> %d (%s)" % (json.dumps(payload), status, needle), r)
    h.ok(h.sql("SELECT count(*) FROM messages WHERE tenant_id = %s" % t["tenant"]) == before,
         "nothing stored for any of them")
    r = send(gw, t, fb(int(b["channel"])))
    h.ok(r.status == 202, "a good list (an integer id): 202", r)
    m = message(gw, t, r.json().get("id"))
    h.ok(m.get("fallback") == {"channels": [int(b["channel"])], "after_s": 60} and m.get("fallback_to") is None,
         "GET /v1/messages/{id} shows the list with the default fallback_after (60 s)", m)
    r = send(gw, t, {"fallback": None, "fallback_after": None})
    h.ok(r.status == 202 and message(gw, t, r.json().get("id")).get("fallback") is None,
         "null fallback and fallback_after: none", r)


# --- fallback fires ------------------------------------------------------------------------------------------------


def test_on_failure(gw, mock):
    """The provider refuses the first channel's request for good: the second channel sends it."""
    t = tenant_with(gw, ["twilio_sms", "twilio_whatsapp"])
    a, b = t["chans"]
    mock.behaviour(sender=a["address"], permanent={"status": 400, "code": 21211})
    mock.behaviour(sender="whatsapp:" + b["address"], callbacks=["delivered"], callback_delay_ms=50)
    customer_writes(gw, t, b)
    ws = connect(gw, t["key"])
    ws.recv_op()
    r = send(gw, t, dict(fb(b["channel"]), body="your code is 1234"))
    mid = r.json().get("id")
    evs = collect(ws, lambda e: status_of(e, mid, "fallback") and
                  any(t_ == "message.status" and d["status"] == "delivered" for t_, d in e))
    f = status_of(evs, mid, "fallback")
    h.ok(status_of(evs, mid, "failed") and f and f[0].get("reason") == "failed" and
         f[0].get("fallback_channel_id") == b["channel"],
         "live: failed (21211), then status fallback with reason failed naming the channel", evs)
    new = f[0]["fallback_to"] if f else None
    c = created_on(evs, b["channel"])
    h.ok(c and c[0]["id"] == new and c[0].get("fallback_of") == mid and c[0]["to"] == TO and
         c[0]["body"] == "your code is 1234", "message.created of the new message on the second channel, "
         "fallback_of the first, same recipient and body", evs)
    h.ok(status_of(evs, new, "sent") and status_of(evs, new, "delivered"), "the new one is sent and delivered", evs)
    got = sent_to(mock, {"address": "whatsapp:" + b["address"]})
    h.ok(len(got) == 1 and got[0]["to"] == "whatsapp:" + TO and got[0]["body"] == "your code is 1234",
         "the mock got it once on the WhatsApp channel, addressed whatsapp:+E.164", got)
    h.ok(len(sent_to(mock, a)) == 1, "the first channel was asked once (a permanent error is not retried)")
    m = message(gw, t, mid)
    h.ok(m.get("status") == "failed" and m.get("error_code") == "21211" and m.get("fallback_to") == new and
         [x["status"] for x in m.get("history", [])] == ["queued", "failed", "fallback"],
         "the first keeps its status and error, links to the new one, its history ends with fallback", m)
    n = message(gw, t, new)
    h.ok(n.get("fallback_of") == mid and n.get("channel_id") == b["channel"] and n.get("fallback") is None and
         n.get("status") == "delivered", "the new one links back, on its channel, with no list left", n)
    h.ok(h.sql("SELECT count(*) FROM messages WHERE tenant_id = %s AND fallback_due_at IS NOT NULL"
               % t["tenant"]) == "0", "nothing is watched any more")
    ws.shutdown()


def test_on_undelivered_callback(gw, mock):
    """Sent, then the provider's status callback says undelivered: the fallback fires at once, not at the deadline."""
    t = tenant_with(gw, ["twilio_sms", "twilio_sms"])
    a, b = t["chans"]
    mock.behaviour(sender=a["address"], callbacks=["sent", "undelivered"], callback_delay_ms=200)
    ws = connect(gw, t["key"])
    ws.recv_op()
    t0 = time.monotonic()
    mid = send(gw, t, fb(b["channel"], after=600)).json().get("id")
    evs = collect(ws, lambda e: status_of(e, mid, "fallback"), timeout=15)
    f = status_of(evs, mid, "fallback")
    h.ok(status_of(evs, mid, "undelivered") and f and f[0]["reason"] == "failed" and time.monotonic() - t0 < 10,
         "undelivered (the signed callback) -> fallback at once, reason failed", evs)
    h.wait_for(lambda: len(sent_to(mock, b)) == 1, 5)
    h.ok(len(sent_to(mock, b)) == 1, "the second channel sent it")
    ws.shutdown()


def test_not_delivered(gw, mock):
    """Sent but never delivered: the fallback fires fallback_after seconds after the send, not before."""
    t = tenant_with(gw, ["twilio_sms", "twilio_sms"])
    a, b = t["chans"]
    mock.behaviour(sender=a["address"], callbacks=["sent"])
    ws = connect(gw, t["key"])
    ws.recv_op()
    mid = send(gw, t, fb(b["channel"], after=2)).json().get("id")
    evs = collect(ws, lambda e: status_of(e, mid, "sent"), timeout=10)
    t_sent = time.monotonic()
    evs += collect(ws, lambda e: status_of(e, mid, "fallback"), timeout=10)
    waited = time.monotonic() - t_sent
    f = status_of(evs, mid, "fallback")
    h.ok(f and f[0]["reason"] == "not_delivered" and 1.5 <= waited <= 5,
         "not delivered within 2 s: fallback, reason not_delivered, about 2 s after sent (%.2f s)" % waited, evs)
    new = f[0]["fallback_to"] if f else None
    h.wait_for(lambda: message(gw, t, new).get("status") == "sent", 5)
    h.ok(len(sent_to(mock, b)) == 1 and message(gw, t, new).get("fallback_of") == mid,
         "the second channel sent it, linked back")
    m = message(gw, t, mid)
    h.ok(m.get("status") == "sent" and m.get("fallback_to") == new, "the first stays sent, linked forward", m)
    ws.shutdown()


def test_delivered_in_time(gw, mock):
    t = tenant_with(gw, ["twilio_sms", "twilio_sms"])
    a, b = t["chans"]
    beh = mock.behaviour(sender=a["address"], callbacks=["sent", "delivered"], delivery_delay_ms=1000)
    h.ok(beh.get("delivery_delay_ms") == 1000 and beh.get("callback_delay_ms") == 0,
         "the mock takes a delivery delay (sent at once, delivered 1 s later)", beh)
    bad = mock.control("/_mock/behaviour", {"sender": a["address"], "delivery_delay_ms": -5})
    h.ok(bad.status == 400 and mock.get("/_mock/behaviour?sender=" + a["address"].replace("+", "%2B")).json().get(
        "delivery_delay_ms") == 1000, "a negative delivery delay is refused, the behaviour unchanged", bad)
    ws = connect(gw, t["key"])
    ws.recv_op()
    mid = send(gw, t, fb(b["channel"], after=2)).json().get("id")
    evs = collect(ws, lambda e: status_of(e, mid, "delivered"), timeout=10)
    evs += collect(ws, lambda e: False, timeout=3.5)
    h.ok(status_of(evs, mid, "delivered") and not status_of(evs, mid, "fallback") and not created_on(evs, b["channel"]),
         "delivered within fallback_after: no fallback", evs)
    h.ok(len(sent_to(mock, b)) == 0, "nothing sent on the second channel")
    m = message(gw, t, mid)
    h.ok(m.get("status") == "delivered" and m.get("fallback_to") is None and
         h.sql("SELECT fallback_due_at IS NULL FROM messages WHERE tenant_id = %s AND id = %s"
               % (t["tenant"], mid)) == "t", "delivered, no link, no deadline left", m)
    ws.shutdown()


def test_late_delivery(gw, mock):
    """Delivered, but after fallback_after: the fallback has gone already; the late delivered is recorded on the first
    message and fires nothing more."""
    t = tenant_with(gw, ["twilio_sms", "twilio_sms"])
    a, b = t["chans"]
    mock.behaviour(sender=a["address"], callbacks=["sent", "delivered"], delivery_delay_ms=3500)
    ws = connect(gw, t["key"])
    ws.recv_op()
    mid = send(gw, t, fb(b["channel"], after=2)).json().get("id")
    evs = collect(ws, lambda e: status_of(e, mid, "delivered"), timeout=15)
    order = [d["status"] for t_, d in evs if t_ == "message.status" and d["id"] == mid]
    h.ok(order == ["sent", "fallback", "delivered"], "sent, fallback after 2 s, then the late delivered", evs)
    evs += collect(ws, lambda e: False, timeout=1.5)
    h.ok(len(status_of(evs, mid, "fallback")) == 1 and len(sent_to(mock, b)) == 1, "one fallback only", evs)
    m = message(gw, t, mid)
    h.ok(m.get("status") == "delivered" and m.get("fallback_to"), "stored: delivered, and still linked", m)
    ws.shutdown()


def test_chain(gw, mock):
    """The fallback fails too: the third channel; one message per channel, each linked to the one before."""
    t = tenant_with(gw, ["twilio_sms", "twilio_sms", "twilio_sms"])
    a, b, c = t["chans"]
    mock.behaviour(sender=a["address"], permanent={"status": 400, "code": 21211})
    mock.behaviour(sender=b["address"], permanent={"status": 400, "code": 21610})
    mid = send(gw, t, fb(b["channel"], c["channel"])).json().get("id")
    h.wait_for(lambda: len(sent_to(mock, c)) == 1, 15)
    time.sleep(1)
    m1 = message(gw, t, mid)
    m2 = message(gw, t, m1.get("fallback_to")) if m1.get("fallback_to") else {}
    m3 = message(gw, t, m2.get("fallback_to")) if m2.get("fallback_to") else {}
    h.ok(m2.get("channel_id") == b["channel"] and m2.get("status") == "failed" and m2.get("fallback_of") == mid and
         m2.get("fallback") == {"channels": [int(c["channel"])], "after_s": 60},
         "the second channel's message failed too, with the rest of the list", m2)
    h.ok(m3.get("channel_id") == c["channel"] and m3.get("fallback_of") == m2.get("id") and m3.get("status") == "sent",
         "the third channel sent it", m3)
    h.ok([len(sent_to(mock, x)) for x in (a, b, c)] == [1, 1, 1], "each channel asked once")


def test_refused_channel_skipped(gw, mock):
    """A channel that cannot take the content (a WhatsApp template on an SMS channel) is skipped: the next one gets it;
    a list that no channel takes ends in fallback_failed."""
    t = tenant_with(gw, ["meta_whatsapp", "twilio_sms", "meta_whatsapp"])
    a, b, c = t["chans"]
    mock.behaviour(sender=a["address"], permanent={"status": 400, "code": 131026})
    ws = connect(gw, t["key"])
    ws.recv_op()
    tpl = {"template": {"name": "order_update", "language": "en_US"}}
    mid = send(gw, t, dict(fb(b["channel"], c["channel"]), body=None, **tpl)).json().get("id")
    evs = collect(ws, lambda e: status_of(e, mid, "fallback"), timeout=15)
    f = status_of(evs, mid, "fallback")
    h.ok(f and f[0]["fallback_channel_id"] == c["channel"], "the SMS channel refused the template and was skipped: "
         "the third channel took it", evs)
    h.wait_for(lambda: len(sent_to(mock, c)) == 1, 5)
    h.ok(len(sent_to(mock, b)) == 0 and len(sent_to(mock, c)) == 1, "nothing went out on the SMS channel")

    mid = send(gw, t, dict(fb(b["channel"]), body=None, **tpl)).json().get("id")
    evs = collect(ws, lambda e: status_of(e, mid, "fallback_failed"), timeout=15)
    ff = status_of(evs, mid, "fallback_failed")
    h.ok(ff and ff[0].get("error", {}).get("code") == "invalid_template" and ff[0]["reason"] == "failed",
         "no channel left that takes it: fallback_failed with the refusal", evs)
    m = message(gw, t, mid)
    h.ok(m.get("status") == "failed" and m.get("fallback_to") is None and
         [x["status"] for x in m.get("history", [])] == ["queued", "failed", "fallback_failed"],
         "stored so: still failed, its history says why", m)
    ws.shutdown()


# --- exactly once, across restarts ---------------------------------------------------------------------------------


def test_restarts(mock):
    opts = dict(master_key=MASTER_KEY, twilio_api_base="http://127.0.0.1:%d" % mock.port,
                meta_graph_base="http://127.0.0.1:%d/v21.0" % mock.port)

    def gateway():
        gw = h.Gateway(**opts)
        gw.config["public_url"] = "http://127.0.0.1:%d" % gw.port
        gw.start()
        return gw

    gw = gateway()
    try:
        t = tenant_with(gw, ["twilio_sms", "twilio_sms"])
        a, b = t["chans"]
        mock.behaviour(sender=a["address"], callbacks=["sent"])
        pending = send(gw, t, fb(b["channel"], after=8)).json().get("id")
        h.ok(h.wait_for(lambda: message(gw, t, pending).get("status") == "sent", 10), "sent, never delivered")
        mock.behaviour(sender=a["address"], permanent={"status": 400, "code": 21211})
        failed = send(gw, t, fb(b["channel"])).json().get("id")
        h.ok(h.wait_for(lambda: message(gw, t, failed).get("fallback_to"), 10), "a failed one fell back")
    finally:
        gw.stop()
        gw.finish()
    due = h.sql("SELECT fallback_due_at IS NOT NULL AND fallback_to IS NULL FROM messages WHERE tenant_id = %s"
                " AND id = %s" % (t["tenant"], pending))
    h.ok(due == "t", "stopped before its deadline: the deadline is stored, nothing fired yet", due)
    # As if the gateway had died after the fallback message was accepted but before the link was stored.
    first = h.sql("SELECT fallback_to FROM messages WHERE tenant_id = %s AND id = %s" % (t["tenant"], failed))
    h.sql("UPDATE messages SET fallback_to = NULL, fallback_due_at = now() WHERE tenant_id = %s AND id = %s"
          % (t["tenant"], failed))

    gw = gateway()
    try:
        h.ok(h.wait_for(lambda: message(gw, t, failed).get("fallback_to") == first, 10),
             "after the restart the unlinked fallback is linked again, to the message made the first time")
        h.ok(h.wait_for(lambda: message(gw, t, pending).get("fallback_to"), 15),
             "the deadline kept across the restart fired (nothing else woke the channel)")
        time.sleep(1.5)
        n = h.sql("SELECT count(*) FROM messages WHERE tenant_id = %s AND fallback_of = %s" % (t["tenant"], failed))
        h.ok(n == "1", "one fallback message for the failed one, not two", n)
        n = h.sql("SELECT count(*) FROM messages WHERE tenant_id = %s AND fallback_of = %s" % (t["tenant"], pending))
        h.ok(n == "1", "one for the undelivered one", n)
        h.ok(len(sent_to(mock, b)) == 2, "the second channel was asked twice in all (once per message)",
             sent_to(mock, b))
    finally:
        gw.stop()
        gw.finish()

    gw = gateway()
    try:
        time.sleep(2)
        h.ok(len(sent_to(mock, b)) == 2, "a further restart sends nothing more")
        h.ok(h.sql("SELECT count(*) FROM messages WHERE tenant_id = %s AND fallback_due_at IS NOT NULL"
                   % t["tenant"]) == "0", "and nothing is watched")
    finally:
        gw.stop()
        gw.finish()


def test_file():
    with Mock() as mock:
        gw = h.Gateway(master_key=MASTER_KEY, twilio_api_base="http://127.0.0.1:%d" % mock.port,
                       meta_graph_base="http://127.0.0.1:%d/v21.0" % mock.port)
        gw.config["public_url"] = "http://127.0.0.1:%d" % gw.port  # the StatusCallback Twilio is given
        with gw:
            h.subtest(test_validation, gw, mock)
            h.subtest(test_on_failure, gw, mock)
            h.subtest(test_on_undelivered_callback, gw, mock)
            h.subtest(test_not_delivered, gw, mock)
            h.subtest(test_delivered_in_time, gw, mock)
            h.subtest(test_late_delivery, gw, mock)
            h.subtest(test_chain, gw, mock)
            h.subtest(test_refused_channel_skipped, gw, mock)
        h.subtest(test_restarts, mock)


if __name__ == "__main__":
    h.main(test_file)
