"""tests/integration/test_outbound.py — sending on the real stack against the mock provider (ops/mock_provider.c):
an accepted message goes out to Twilio's Messages API or Meta's Graph API as the real APIs expect it, its status
goes queued -> sent (with the provider's id) -> delivered (the provider's signed status callback), each change live
in the inbox and in GET /v1/messages/{id}, also when the callback overtakes the provider's answer; a provider answering 500 is retried with backoff until it takes the
message; a permanent 400 fails at once with the provider's code and is not retried; an idempotent repeat is sent
once; a burst on many channels, claimed together, sends each message once and stores each provider id on its
own message.
Run: SB_BIN=build/release/switchboard python3 tests/integration/test_outbound.py"""

import json
import signal
import time
import uuid

import harness as h
import test_channels_out as channels_out
from test_live import connect, events
from test_sends import burst
from test_mock_provider import Mock
from test_webhooks import MASTER_KEY, admin

ACCOUNT = "AC" + "5" * 32
TOKEN = "f" * 32


def setup_channel(gw, tenant, kind="twilio_sms", address=None, settings=None, meta_app_id=None):
    address = address or "+1555%07d" % (uuid.uuid4().int % 10 ** 7)
    creds = {"account_sid": ACCOUNT, "auth_token": TOKEN} if kind.startswith("twilio") else \
        {"access_token": "EAAB" + uuid.uuid4().hex}
    body = {"type": kind, "address": address, "credentials": creds, "settings": settings or {}}
    if meta_app_id:
        body["meta_app_id"] = meta_app_id
    ch = admin(gw, "/v1/admin/tenants/%s/channels" % tenant, body)
    return {"channel": ch["id"], "address": address}


def setup(gw, kind="twilio_sms", address=None, settings=None, meta_app_id=None):
    t = admin(gw, "/v1/admin/tenants", {"name": "outbound " + uuid.uuid4().hex[:6]})
    key = admin(gw, "/v1/admin/tenants/%s/keys" % t["id"], {})["key"]
    return dict({"tenant": t["id"], "key": key}, **setup_channel(gw, t["id"], kind, address, settings, meta_app_id))


def send(gw, t, body, to="+14155550123", key=None):
    payload = {"channel_id": t["channel"], "to": to, "body": body}
    if key:
        payload["idempotency_key"] = key
    r = h.request(gw.port, "POST", "/v1/messages", {"Authorization": "Bearer " + t["key"],
                                                    "Content-Type": "application/json"},
                  json.dumps(payload).encode())
    return r.json().get("id") if r.status in (200, 202) else None


def statuses(ws, mid, until, timeout=15):
    """The message.status values of message mid, in order, until one in `until` arrives."""
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            ev = events(ws, 1, timeout=max(0.1, deadline - time.monotonic()))
        except TimeoutError:
            break
        for e in ev:
            if e["type"] == "message.status" and e["data"]["id"] == mid:
                seen.append(e["data"])
                if e["data"]["status"] in until:
                    return seen
    return seen


def message(gw, t, mid):
    return h.request(gw.port, "GET", "/v1/messages/%s" % mid, {"Authorization": "Bearer " + t["key"]}).json()


def test_twilio(gw, mock):
    t = setup(gw)
    mock.behaviour(sender=t["address"], callbacks=["delivered"], callback_delay_ms=50)
    ws = connect(gw, t["key"])
    ws.recv_op()
    mid = send(gw, t, "Hello from Switchboard ✓")
    h.ok(mid is not None, "accepted")
    seen = statuses(ws, mid, ("delivered", "failed", "dead", "unknown"))
    h.ok([s["status"] for s in seen] == ["sent", "delivered"], "live: sent, then delivered (the signed callback)",
         seen)
    got = mock.received(sender=t["address"])
    reqs = got.get("requests", [])
    h.ok(got.get("count") == 1 and reqs and reqs[0]["to"] == "+14155550123" and
         reqs[0]["body"] == "Hello from Switchboard ✓", "the mock got one request with To and Body", got)
    m = message(gw, t, mid)
    h.ok(m.get("status") == "delivered" and m.get("provider_id") == (reqs[0]["id"] if reqs else None),
         "GET /v1/messages/{id}: delivered, with the provider's sid", m)
    h.ok([x["status"] for x in m.get("history", [])] == ["queued", "sent", "delivered"], "and its whole history", m)

    k = "dup-" + uuid.uuid4().hex
    a, b = send(gw, t, "once", key=k), send(gw, t, "once", key=k)
    h.ok(a == b, "the same idempotency key twice: one message")
    h.wait_for(lambda: message(gw, t, a).get("status") in ("sent", "delivered"), 10)
    time.sleep(0.3)
    bodies = [r["body"] for r in mock.received(sender=t["address"]).get("requests", [])]
    h.ok(bodies.count("once") == 1, "and one provider request", bodies)
    ws.shutdown()


def test_status_order(gw, mock):
    """Callbacks come in any order: a late "sent" after "delivered" must not undo it."""
    t = setup(gw)
    mock.behaviour(sender=t["address"], callbacks=["delivered", "sent"], callback_delay_ms=50)
    mid = send(gw, t, "order")
    h.wait_for(lambda: mock.request("GET", "/_mock/stats").json().get("callbacks", {}).get("pending", 1) == 0 and
               message(gw, t, mid).get("status") == "delivered", 10)
    time.sleep(0.5)
    m = message(gw, t, mid)
    h.ok(m.get("status") == "delivered" and [x["status"] for x in m.get("history", [])] == ["queued", "sent",
                                                                                          "delivered"],
         "a late sent after delivered changes nothing", m)


def test_status_before_answer(gw, mock):
    """A provider may call back before it answered the send (or before we stored the answer): the status must wait
    for the message's provider id, not be lost."""
    t = setup(gw)
    mock.behaviour(sender=t["address"], callbacks=["delivered"], callback_delay_ms=0, delay_ms=1500)
    ws = connect(gw, t["key"])
    ws.recv_op()
    mid = send(gw, t, "overtaken")
    seen = statuses(ws, mid, ("delivered", "failed", "dead", "unknown"), timeout=25)
    h.ok([x["status"] for x in seen] == ["sent", "delivered"],
         "live: sent (the answer, 1.5 s late), then the delivered that had arrived before it", seen)
    m = message(gw, t, mid)
    h.ok(m.get("status") == "delivered" and [x["status"] for x in m.get("history", [])] == ["queued", "sent",
                                                                                          "delivered"],
         "stored: delivered, with the whole history", m)
    ws.shutdown()


def test_stuck_becomes_unknown(mock):
    """A message left sending for minutes (its gateway died while asking the provider) becomes unknown, live too,
    and the answer that comes after that changes nothing: never a blind resend, never a silent change.

    Changed with the actors owning their outboxes: a live gateway's session knows its sends in flight, so what makes
    a message "left sending" is a gateway that died, and what finds it is its channel's session, activated again at
    the next start (it loads the outbox). The test used to fake the death by backdating a row under a live gateway,
    which a periodic sweep of the table then found; now the gateway is killed for real (SIGKILL while the provider
    holds the request), the row backdated, and a new gateway started on the same database."""
    opts = dict(master_key=MASTER_KEY, twilio_api_base="http://127.0.0.1:%d" % mock.port)
    gw = h.Gateway(**opts)
    gw.start()
    try:
        t = setup(gw)
        mock.behaviour(sender=t["address"], delay_ms=9000)
        mid = send(gw, t, "stuck")
        h.ok(h.wait_for(lambda: message(gw, t, mid).get("status") == "sending", 5), "claimed: sending")
        # the claim commits before the request leaves: kill only once the provider holds it (a slower build can
        # otherwise die in between, and then nothing was asked, which the end of this test would call a miss)
        h.ok(h.wait_for(lambda: mock.received(sender=t["address"]).get("count") == 1, 5),
             "the provider holds the request")
    finally:
        gw.kill()
        gw.finish()
    h.sql("UPDATE messages SET updated_at = now() - interval '3 minutes' WHERE id = %s" % mid)
    gw = h.Gateway(**opts)
    gw.start()
    try:
        ws = connect(gw, t["key"], resume_after=0)
        ws.recv_op()
        seen = statuses(ws, mid, ("unknown", "sent"), timeout=12)
        h.ok([(x["status"], x.get("error", {}).get("code")) for x in seen] == [("unknown", "interrupted")],
             "after the restart its session calls it unknown, live, with its reason", seen)
        time.sleep(9)
        m = message(gw, t, mid)
        h.ok(m.get("status") == "unknown" and [x["status"] for x in m.get("history", [])] == ["queued", "unknown"],
             "the provider's late answer does not undo it", m)
        h.ok(mock.received(sender=t["address"]).get("count") == 1, "and it was asked once")
        ws.shutdown()
    finally:
        gw.stop()
        gw.finish()


def test_retry_then_success(gw, mock):
    t = setup(gw)
    mock.behaviour(sender=t["address"], fail_next=2, fail_status=500)
    ws = connect(gw, t["key"])
    ws.recv_op()
    mid = send(gw, t, "persist")
    seen = statuses(ws, mid, ("sent", "failed", "dead", "unknown"), timeout=20)
    h.ok([s["status"] for s in seen] == ["retrying", "retrying", "sent"],
         "500, 500, then 201: retrying twice (with the provider's error), then sent", seen)
    h.ok(seen and seen[0].get("error", {}).get("code") == "20500", "the retry carries the provider's code", seen)
    h.ok(mock.received(sender=t["address"]).get("count") == 3, "three requests in all")
    ws.shutdown()


def test_permanent_failure(gw, mock):
    t = setup(gw)
    mock.behaviour(sender=t["address"], permanent={"status": 400, "code": 21211})
    ws = connect(gw, t["key"])
    ws.recv_op()
    mid = send(gw, t, "to nowhere")
    seen = statuses(ws, mid, ("sent", "failed", "dead", "unknown"))
    h.ok([s["status"] for s in seen] == ["failed"] and seen[0].get("error", {}).get("code") == "21211",
         "a permanent 400: failed at once with Twilio's code 21211", seen)
    time.sleep(1.5)
    h.ok(mock.received(sender=t["address"]).get("count") == 1, "and not retried")

    # The operator fixes the cause and replays it from the console; a dead one is listed by `dead`.
    mock.behaviour(sender=t["address"], clear=True)
    with h.Console(gw.admin_port) as con:
        con.cmd("auth " + h.ADMIN_TOKEN)
        out = "\n".join(con.cmd("replay %s" % mid))
        h.ok("queued" in out, "console replay: the failed message is queued again", out)
        seen = statuses(ws, mid, ("sent", "failed", "dead", "unknown"))
        h.ok([s["status"] for s in seen] == ["sent"], "and sent this time", seen)
        out = "\n".join(con.cmd("replay %s" % mid))
        h.ok("0 row(s)" in out, "a sent message cannot be replayed", out)
        other = send(gw, t, "will be dead")
        h.wait_for(lambda: message(gw, t, other).get("status") == "sent", 10)
        h.sql("UPDATE messages SET status = 'dead', error_code = '20500' WHERE id = %s" % other)
        out = "\n".join(con.cmd("dead %s -j" % t["tenant"]))
        rows = json.loads(out).get("messages", []) if out.startswith("{") else []
        h.ok([str(r["id"]) for r in rows] == [other] and rows[0]["error"] == "20500",
             "console dead lists the tenant's dead messages", out)
        out = "\n".join(con.cmd("counters %s %s -j" % (t["tenant"], t["channel"])))
        c = json.loads(out) if out.startswith("{") else {}
        h.ok(abs(c.get("rate_per_second", 0) - 1 / 1.05) < 0.005 and c.get("tenant_inflight") == 0,
             "console counters: the channel's pace (1/s, kept 5% under) and nothing in flight", out)
    ws.shutdown()


def test_burst(gw, mock):
    """Thirty messages on thirty channels of one tenant at once (a channel's actor sends one at a time; thirty send
    side by side): their claims (queued -> sending) meet in one statement. Each goes out once, from its own channel
    with its own recipient and body, and each message stores the provider id of its own request."""
    t = setup(gw)
    chans = [t] + [dict(t, **setup_channel(gw, t["tenant"])) for _ in range(29)]
    plan = [(c, {"channel_id": c["channel"], "to": "+1415555%04d" % (200 + i), "body": "burst %d" % i})
            for i, c in enumerate(chans)]
    answers = burst(gw, plan)
    ids = [a.json().get("id") if a is not None and a.status == 202 else None for a in answers]
    h.ok(all(ids), "thirty accepted", [a and a.status for a in answers])
    done = h.wait_for(lambda: all(message(gw, t, m).get("status") == "sent" for m in ids if m), 20)
    h.ok(done, "all thirty sent")
    sid, count = {}, 0
    for c in chans:
        for r in mock.received(sender=c["address"]).get("requests", []):
            sid[(c["address"], r["to"], r["body"])] = r["id"]
            count += 1
    h.ok(count == 30 and len(sid) == 30, "thirty provider requests, each message once", sid)
    wrong = [(i, m) for i, m in enumerate(ids) if m and message(gw, t, m).get("provider_id") !=
             sid.get((chans[i]["address"], plan[i][1]["to"], plan[i][1]["body"]))]
    h.ok(not wrong, "each message holds the provider id of the request made from its channel, to its recipient, "
                    "with its body", wrong)


def test_meta(gw, mock):
    """Free-form WhatsApp goes within 24 hours of the customer's message (Meta's window, issue 16): the customer
    writes first, through a signed webhook of the channel's Meta app."""
    app = str(100000000000000 + uuid.uuid4().int % 10 ** 14)
    admin(gw, "/v1/admin/meta-apps", {"app_id": app, "app_secret": channels_out.APP_SECRET, "verify_token": "v"})
    t = setup(gw, "meta_whatsapp", address=str(100000000000000 + uuid.uuid4().int % 10 ** 14), meta_app_id=app)
    channels_out.customer_writes(gw, app, "meta_whatsapp", t["address"], t["channel"], t["tenant"], "14155550123")
    ws = connect(gw, t["key"])
    ws.recv_op()
    mid = send(gw, t, "hola 🌍")
    seen = statuses(ws, mid, ("sent", "failed", "dead", "unknown"))
    got = mock.received(sender=t["address"])
    reqs = got.get("requests", [])
    h.ok([s["status"] for s in seen] == ["sent"] and reqs and reqs[0]["body"] == "hola 🌍",
         "Meta WhatsApp: sent through /{phone_number_id}/messages", (seen, got))
    m = message(gw, t, mid)
    h.ok(str(m.get("provider_id", "")).startswith("wamid."), "with the wamid as provider id", m)
    ws.shutdown()


def test_pacing(gw, mock):
    """One channel limited to 5 messages/s sends 24 messages to three recipients: the three conversations send
    concurrently, and the mock's clock must still never see more than 5 in any one-second window (the pace is the
    channel's, kept in Redis, whatever sends for it).

    Changed with the actors owning the domain: this test used to start three gateways on one database, all sending
    for the channel. A tenant's cursor and a conversation's seq now live in its actors' memory, on the node that owns
    the tenant's slot, so several nodes may serve one tenant only once slots are leased (the several-nodes issue,
    which brings the three-node version of this test back); until then one gateway, whose conversations now send
    side by side, is what exercises the shared pace."""
    t = setup(gw, settings={"rate_per_second": 5})
    ids = [send(gw, t, "paced %d" % i, to="+1415555012%d" % (i % 3)) for i in range(24)]
    h.ok(all(ids), "24 messages accepted for three conversations")
    done = h.wait_for(lambda: mock.received(sender=t["address"]).get("count", 0) >= 24, 20)
    time.sleep(0.5)
    stats = mock.request("GET", "/_mock/stats").json().get("senders", {}).get(t["address"], {})
    got = mock.received(sender=t["address"])
    h.ok(done and got.get("count") == 24, "all 24 reached the provider, each once", got.get("count"))
    most = mock.most_per_second(t["address"])
    h.ok(0 < most <= 5, "never more than 5 in any one-second window, give or take 50 ms of delivery (max %d; "
         "exact windows: %s)" % (most, stats.get("max_per_second")), stats)
    bodies = sorted(r["body"] for r in got.get("requests", []))
    h.ok(bodies == sorted("paced %d" % i for i in range(24)), "no message twice, none missing")
    order = [int(r["body"].split()[1]) for r in got.get("requests", [])]
    h.ok(all([i for i in order if i % 3 == k] == sorted(i for i in order if i % 3 == k) for k in range(3)),
         "each conversation's messages went in the order they were accepted", order)


def test_breaker(gw, mock):
    """Twilio's endpoint answers 503 to everything: after five faults in a row the tenant's shard stops asking it
    (the other messages wait, untried), and once it answers again everything goes out."""
    t = setup(gw)
    key = t["key"]
    channels = [t["channel"]] + [admin(gw, "/v1/admin/tenants/%s/channels" % t["tenant"],
                                       {"type": "twilio_sms", "address": "+1557%07d" % (uuid.uuid4().int % 10 ** 7),
                                        "credentials": {"account_sid": ACCOUNT, "auth_token": TOKEN}})["id"]
                                 for _ in range(11)]
    mock.behaviour(fail_next=1000, fail_status=503)
    ids = []
    for ch in channels:
        r = h.request(gw.port, "POST", "/v1/messages", {"Authorization": "Bearer " + key,
                                                        "Content-Type": "application/json"},
                      json.dumps({"channel_id": ch, "to": "+14155550123", "body": "breaker"}).encode())
        ids.append(r.json().get("id"))
    time.sleep(1.5)
    tried = sum(1 for r in mock.received().get("requests", []) if r["body"] == "breaker")
    h.ok(5 <= tried <= 6, "with the provider down, the circuit opened after 5 faults: %d of 12 tried" % tried)
    mock.behaviour(clear=True)
    done = h.wait_for(lambda: all(message(gw, t, i).get("status") == "sent" for i in ids), 20)
    h.ok(done, "the provider back: every message sent", [message(gw, t, i).get("status") for i in ids])
    untried = [i for i in ids if [x["status"] for x in message(gw, t, i).get("history", [])] == ["queued", "sent"]]
    h.ok(len(untried) >= 6, "those held by the open circuit went straight to sent, no attempt spent (%d)" %
         len(untried))


def test_stop_while_paced(mock):
    """A send waiting for its rate token when the gateway stops must not hold the shutdown: the drain waits for it
    up to drain_timeout, then the stop ends it. Since priority lanes a message is claimed only once its token is
    granted (the best head takes each token), so the waiting one is still queued and goes out after a restart; had it
    been claimed, its session would call it unknown when activated again. Never sent twice either way."""
    gw = h.Gateway(master_key=MASTER_KEY, twilio_api_base="http://127.0.0.1:%d" % mock.port, drain_timeout=1)
    gw.start()
    try:
        t = setup(gw, settings={"rate_per_second": 0.2})
        ids = [send(gw, t, "slow %d" % i) for i in range(3)]
        h.wait_for(lambda: message(gw, t, ids[0]).get("status") == "sent", 10)
        time.sleep(0.3)  # the second now waits about 5 s for its token
        t0 = time.monotonic()
        gw.send_signal(signal.SIGTERM)
        rc = gw.wait(15)
        h.ok(rc == 0 and time.monotonic() - t0 < 8, "SIGTERM with a send waiting for its token: exits 0 promptly (%s, "
             "%.1f s)" % (rc, time.monotonic() - t0))
        h.ok(h.sql("SELECT status FROM messages WHERE id = %s" % ids[1]) in ("queued", "sending", "sent"),
             "the waiting message was left queued (or claimed), never sent twice")
    finally:
        gw.kill()
        gw.finish()


def test_file():
    with Mock() as mock:
        gw = h.Gateway(master_key=MASTER_KEY, twilio_api_base="http://127.0.0.1:%d" % mock.port,
                       meta_graph_base="http://127.0.0.1:%d/v21.0" % mock.port)
        gw.config["public_url"] = "http://127.0.0.1:%d" % gw.port  # the StatusCallback Twilio is given
        with gw:
            h.subtest(test_twilio, gw, mock)
            h.subtest(test_status_order, gw, mock)
            h.subtest(test_status_before_answer, gw, mock)
            h.subtest(test_retry_then_success, gw, mock)
            h.subtest(test_pacing, gw, mock)
            h.subtest(test_permanent_failure, gw, mock)
            h.subtest(test_meta, gw, mock)
            h.subtest(test_burst, gw, mock)
            h.subtest(test_breaker, gw, mock)
        h.subtest(test_stuck_becomes_unknown, mock)
        h.subtest(test_stop_while_paced, mock)


if __name__ == "__main__":
    h.main(test_file)
