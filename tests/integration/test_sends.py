"""tests/integration/test_sends.py — accepting outbound sends on the real stack: POST /v1/messages and the inbox
send op commit a queued outbound message (with its status history and message.created / conversation.updated
events, live), the same idempotency key gives the same id once, and every bad request is refused with nothing
stored: bad recipient, body, media URL, JSON, content type, unknown or foreign or non-sending channel.
Run: SB_BIN=build/release/switchboard python3 tests/integration/test_sends.py"""

import json
import time
import uuid

import harness as h
from test_live import JSON, MSGPACK, connect, events, setup
from test_webhooks import MASTER_KEY, admin


def send(gw, key, body, content_type="application/json", headers=None):
    hd = {"Authorization": "Bearer " + key}
    if content_type:
        hd["Content-Type"] = content_type
    hd.update(headers or {})
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return h.request(gw.port, "POST", "/v1/messages", hd, data)


def count_out(tenant):
    return h.sql("SELECT count(*) FROM messages WHERE tenant_id = %s AND direction = 'out'" % tenant)


def test_accept(gw, t):
    ws = connect(gw, t["key"], MSGPACK)
    ws.recv_op()
    key = "order-" + uuid.uuid4().hex
    r = send(gw, t["key"], {"channel_id": t["channel"], "to": "+14155550199", "body": "Hi 👋 from the API",
                            "idempotency_key": key})
    h.ok(r.status == 202 and r.json().get("status") == "queued" and r.json().get("id", "").isdigit(),
         "POST /v1/messages: 202 with the id and status queued", r)
    mid = r.json().get("id")
    ev = events(ws, 2)
    h.ok(len(ev) == 2 and ev[0]["type"] == "message.created" and ev[0]["data"]["id"] == mid and
         ev[0]["data"]["direction"] == "out" and ev[0]["data"]["status"] == "queued" and
         ev[0]["data"]["to"] == "+14155550199" and ev[0]["data"]["from"] == t["number"] and
         ev[0]["data"]["body"] == "Hi 👋 from the API", "message.created (out, queued) reaches the live inbox", ev)
    h.ok(len(ev) == 2 and ev[1]["type"] == "conversation.updated" and
         ev[1]["data"]["contact"]["address"] == "+14155550199", "then conversation.updated", ev)
    r2 = send(gw, t["key"], {"channel_id": t["channel"], "to": "+14155550199", "body": "Hi 👋 from the API",
                             "idempotency_key": key})
    h.ok(r2.status == 200 and r2.json().get("id") == mid, "the same idempotency_key again: the same id", r2)
    h.ok(count_out(t["tenant"]) == "1", "and one message stored")
    r3 = send(gw, t["key"], {"channel_id": int(t["channel"]), "to": "+14155550199", "body": "again"},
              headers={"Idempotency-Key": key})
    h.ok(r3.status == 200 and r3.json().get("id") == mid, "an Idempotency-Key header works the same", r3)
    m = h.request(gw.port, "GET", "/v1/messages/%s" % mid, {"Authorization": "Bearer " + t["key"]}).json()
    h.ok(m.get("direction") == "out" and [x["status"] for x in m.get("history", [])][:1] == ["queued"],
         "GET /v1/messages/{id}: out, queued first in its history", m)
    r = send(gw, t["key"], {"channel_id": t["channel"], "to": "+14155550199",
                            "media_url": "https://example.com/cat.jpg"})
    h.ok(r.status == 202 and r.json()["id"] != mid, "a media-only message without a key: a new id", r)
    media = h.sql("SELECT media::text FROM messages WHERE tenant_id = %s AND id = %s" % (t["tenant"], r.json()["id"]))
    h.ok(json.loads(media or "[]") == [{"url": "https://example.com/cat.jpg"}], "its media stored", media)
    seqs = h.sql("SELECT string_agg(seq::text, ',' ORDER BY seq) FROM messages WHERE tenant_id = %s" % t["tenant"])
    h.ok(seqs == "1,2", "both in one conversation, seq 1 and 2 (no hole for the repeated key)", seqs)
    ws.shutdown()


def test_refusals(gw, t):
    before = count_out(t["tenant"])
    ch = t["channel"]
    cases = [
        ({"channel_id": ch, "to": "4155550199", "body": "x"}, 400, "invalid_recipient", "a number without +"),
        ({"channel_id": ch, "to": "+0155550199", "body": "x"}, 400, "invalid_recipient", "a number starting +0"),
        ({"channel_id": ch, "to": "+1415555019912345", "body": "x"}, 400, "invalid_recipient", "16 digits"),
        ({"channel_id": ch, "to": "+14155550199"}, 400, "invalid_request", "no body, media or template"),
        ({"channel_id": ch, "to": "+14155550199", "body": "é" * 4097}, 400, "body_too_long", "4097 characters"),
        ({"channel_id": ch, "to": "+14155550199", "media_url": "ftp://x/y"}, 400, "invalid_media_url",
         "an ftp media URL"),
        ({"channel_id": ch, "to": "+14155550199", "media_url": "https://x/a b"}, 400, "invalid_media_url",
         "a media URL with a space"),
        ({"channel_id": ch, "to": "+14155550199", "body": "x", "idempotency_key": "k" * 256}, 400,
         "invalid_request", "a 256-byte idempotency key"),
        ({"channel_id": "abc", "to": "+14155550199", "body": "x"}, 400, "invalid_request", "a channel_id of letters"),
        ({"channel_id": ch, "to": 14155550199, "body": "x"}, 400, "invalid_request", "a number for 'to'"),
        ({"channel_id": "999999999", "to": "+14155550199", "body": "x"}, 404, "not_found", "an unknown channel"),
    ]
    for body, status, code, what in cases:
        r = send(gw, t["key"], body)
        h.ok(r.status == status and h.error_code(r) == code, "%s: %d %s" % (what, status, code), r)
    r = send(gw, t["key"], {"channel_id": ch, "to": "+14155550199", "body": "x" * 1601})
    h.ok(r.status == 400 and h.error_code(r) == "body_too_long", "1,601 characters on a Twilio SMS channel: 400", r)
    r = send(gw, t["key"], {"channel_id": ch, "to": "+14155550199", "body": "x",
                            "template": {"name": "order_update", "language": "en_US"}})
    h.ok(r.status == 400 and h.error_code(r) == "invalid_template", "a template on a Twilio channel: 400", r)
    r = send(gw, t["key"], b'{"channel_id": 1, "to": ')
    h.ok(r.status == 400, "broken JSON: 400", r)
    r = send(gw, t["key"], b'[1,2]')
    h.ok(r.status == 400, "a JSON array: 400", r)
    r = send(gw, t["key"], {"channel_id": ch, "to": "+14155550199", "body": "x"}, content_type="text/plain")
    h.ok(r.status == 415, "text/plain: 415", r)
    r = h.request(gw.port, "GET", "/v1/messages", {"Authorization": "Bearer " + t["key"]})
    h.ok(r.status == 405, "GET /v1/messages: 405", r)
    r = send(gw, "sb_live_" + "B" * 43, {"channel_id": ch, "to": "+14155550199", "body": "x"})
    h.ok(r.status == 401, "an unknown key: 401", r)
    other = setup(gw)
    r = send(gw, other["key"], {"channel_id": ch, "to": "+14155550199", "body": "x"})
    h.ok(r.status == 404, "another tenant's channel: 404", r)
    app = admin(gw, "/v1/admin/tenants/%s/channels" % t["tenant"],
                {"type": "meta_messenger", "address": str(uuid.uuid4().int % 10 ** 15),
                 "credentials": {"access_token": "EAAB" + uuid.uuid4().hex}})
    r = send(gw, t["key"], {"channel_id": app.get("id", "0"), "to": "+14155550199", "body": "x"})
    h.ok(r.status == 400 and h.error_code(r) == "invalid_recipient",
         "a Messenger channel sends to a PSID, not a phone number: 400 invalid_recipient", r)
    h.ok(count_out(t["tenant"]) == before, "nothing was stored by any of them")


def test_whatsapp_form(gw):
    t = setup(gw, "twilio_whatsapp")
    # (a Content API template: free-form WhatsApp needs the customer's message of the last 24 hours, issue 16)
    r = send(gw, t["key"], {"channel_id": t["channel"], "to": "whatsapp:+14155550177",
                            "template": {"content_sid": "HX" + "0" * 32}})
    mid = r.json().get("id") if r.status == 202 else None
    stored = h.sql("SELECT recipient FROM messages WHERE tenant_id = %s AND id = %s" % (t["tenant"], mid)) if mid else ""
    h.ok(stored == "+14155550177", "whatsapp:+E164 is stored as the bare number, like inbound WhatsApp", stored)


def test_inbox_send(gw, t):
    for proto in (JSON, MSGPACK):
        ws = connect(gw, t["key"], proto)
        ws.recv_op()
        key = "inbox-" + uuid.uuid4().hex
        ws.send_op({"op": "send", "channel_id": t["channel"], "to": "+14155550142", "body": "from the inbox",
                    "idempotency_key": key})
        got = []
        while len(got) < 10 and not ({"accepted", "message.created"} <=
                                     {m.get("type", m.get("op")) for m in got}):
            got.append(ws.recv_op())
        acc = [m for m in got if m.get("op") == "accepted"]
        created = [m for m in got if m.get("op") == "event" and m["type"] == "message.created"]
        h.ok(len(acc) == 1 and acc[0]["idempotency_key"] == key and acc[0]["id"].isdigit(),
             "%s: send is answered with accepted {idempotency_key, id}" % proto, got)
        h.ok(len(created) == 1 and acc and created[0]["data"]["id"] == acc[0]["id"],
             "%s: and its message.created arrives live" % proto, got)
        ws.send_op({"op": "send", "channel_id": t["channel"], "to": "nope", "body": "x"})
        m = ws.recv_op()
        while m.get("op") == "event":  # the first message's later events (its sending) may come first
            m = ws.recv_op()
        h.ok(m.get("op") == "error" and m.get("code") == "invalid_recipient",
             "%s: a bad send gets an error frame, the connection stays" % proto, m)
        ws.send_op({"op": "ping"})
        m = ws.recv_op()
        while m.get("op") == "event":
            m = ws.recv_op()
        h.ok(m == {"op": "pong"}, "%s: still answering" % proto)
        ws.shutdown()


def burst(gw, plan):
    """POSTs each (tenant, send) of plan on a connection of its own, all written before any answer is read, so
    that they reach the gateway together; returns the answers in plan order."""
    conns = [h.HttpConn(gw.port) for _ in plan]
    for c, (t, msg) in zip(conns, plan):
        c.send(h.build_request("POST", "/v1/messages", {"Authorization": "Bearer " + t["key"],
                                                         "Content-Type": "application/json"},
                               json.dumps(msg), keep_alive=True))
    answers = [c.read_response("POST") for c in conns]
    for c in conns:
        c.close()
    return answers


def test_burst(gw, t1, t2):
    """Sends that arrive together are stored together (one statement per loop turn on the tenant's shard): a burst
    over many connections, two tenants, four recipients each, some sharing one idempotency key, must come out as if
    stored one by one. The key: one message, every answer its id, one 202 and the rest 200. Every conversation's
    seqs run 1..n, every tenant's cursors 1..2m with one message.created and one conversation.updated per message
    (carrying that message's seq), and a live client sees them all in cursor order."""
    wss = {t["tenant"]: connect(gw, t["key"]) for t in (t1, t2)}
    for ws in wss.values():
        ws.recv_op()
    shared = "burst-" + uuid.uuid4().hex
    plan = []  # (tenant, body)
    for t in (t1, t2):
        for i in range(24):
            msg = {"channel_id": t["channel"], "to": "+1415555%04d" % (100 + i % 4), "body": "burst %d" % i}
            if i % 3 == 0:
                msg["idempotency_key"] = shared  # the same key for both tenants: each has its own
            elif i % 3 == 1:
                msg["idempotency_key"] = "own-%d-%s" % (i, uuid.uuid4().hex)
            plan.append((t, msg))
    answers = burst(gw, plan)
    h.ok(all(a is not None and a.status in (200, 202) for a in answers), "every send answered 200 or 202",
         [a.status if a else None for a in answers])
    for t in (t1, t2):
        mine = [(msg, a) for (tt, msg), a in zip(plan, answers) if tt is t and a is not None]
        keyed = [a for msg, a in mine if msg.get("idempotency_key") == shared]
        ids = {a.json().get("id") for a in keyed}
        h.ok(len(ids) == 1 and sorted(a.status for a in keyed) == [200] * (len(keyed) - 1) + [202],
             "tenant %s: the shared key gives one id, one 202 and the rest 200" % t["tenant"],
             [(a.status, a.json().get("id")) for a in keyed])
        others = [a.json().get("id") for msg, a in mine if msg.get("idempotency_key") != shared]
        h.ok(len(set(others)) == len(others) and not ids & set(others) and
             all(a.status == 202 for msg, a in mine if msg.get("idempotency_key") != shared),
             "tenant %s: every other send its own new message" % t["tenant"])
        created = len(others) + 1
        h.ok(h.sql("SELECT count(*) FROM messages WHERE tenant_id = %s AND direction = 'out'" % t["tenant"]) ==
             str(created), "tenant %s: %d messages stored" % (t["tenant"], created))
        gaps = h.sql("SELECT count(*) FROM (SELECT seq, row_number() OVER (PARTITION BY conversation_id ORDER BY seq) AS"
                   " n FROM messages WHERE tenant_id = %s) x WHERE seq <> n" % t["tenant"])
        h.ok(gaps == "0", "tenant %s: each conversation's seqs run 1..n" % t["tenant"], gaps)
        ev, deadline = [], time.monotonic() + 10  # the sender's status events (retrying: nobody listens) interleave
        while time.monotonic() < deadline and sum(e["type"] != "message.status" for e in ev) < 2 * created:
            ev += events(wss[t["tenant"]], 1, timeout=max(0.01, deadline - time.monotonic()))
        h.ok([e["cursor"] for e in ev] == list(range(1, len(ev) + 1)),
             "tenant %s: live events with cursors 1, 2, ... in order" % t["tenant"], [e["cursor"] for e in ev])
        made = [e for e in ev if e["type"] == "message.created"]
        upd = {e["cursor"]: e for e in ev if e["type"] == "conversation.updated"}
        h.ok(len(made) == created and len(upd) == created and
             {e["data"]["id"] for e in made} == ids | set(others),
             "tenant %s: one message.created and one conversation.updated per message" % t["tenant"])
        seq_of = dict((mid, int(seq)) for mid, seq in (
            r.split("|") for r in h.sql("SELECT string_agg(id || '|' || seq, ',') FROM messages WHERE tenant_id = %s"
                                      % t["tenant"]).split(",")))
        h.ok(all(upd.get(e["cursor"] + 1, {}).get("data", {}).get("last_seq") == seq_of.get(e["data"]["id"])
                 for e in made),
             "tenant %s: each message.created is followed by its conversation.updated, with its seq" % t["tenant"])
    for ws in wss.values():
        ws.shutdown()


def test_burst_refusal(gw, t):
    """A constraint planted for the test refuses one send of a burst: its batch is stored again one by one, so
    that one is refused and the others are accepted, each stored once, their bodies intact. The burst is made
    again until the poisoned one shared a batch (h.poisoned_bursts), and every burst must come out right. (The
    batch is now the tenant actor's write, whose split the log names "each is written alone".)"""
    def one_burst(attempt):
        bodies = ['together "%d" \\ {a,b} NULL %d' % (i, attempt) for i in range(20)]  # array-literal specials
        bodies[7] = "poison"
        answers = burst(gw, [(t, {"channel_id": t["channel"], "to": "+14155550142", "body": b}) for b in bodies])
        statuses = [a.status if a else None for a in answers]
        h.ok(statuses[7] == 503 and all(x == 202 for i, x in enumerate(statuses) if i != 7),
             "burst %d: the refused one: 503; the other nineteen: 202" % attempt, statuses)
        got = h.sql("SELECT string_agg(body, '|' ORDER BY id) FROM messages WHERE tenant_id = %s AND body LIKE '%% %d'"
                    % (t["tenant"], attempt))
        h.ok(sorted((got or "").split("|")) == sorted(b for i, b in enumerate(bodies) if i != 7),
             "burst %d: each of the nineteen stored once, quotes, backslash and braces intact" % attempt, got)
    refused = h.poisoned_bursts(gw, "messages", "body NOT LIKE '%poison%'", b"each is written alone", one_burst)
    h.ok(refused == 1, "one batch was refused and stored again one by one (%d)" % refused)


def test_file():
    # Sends go to a port nobody listens on: they stay queued or retrying, which is all this file looks at.
    with h.Gateway(master_key=MASTER_KEY, twilio_api_base="http://127.0.0.1:%d" % h.free_port()) as gw:
        t = setup(gw)
        h.subtest(test_accept, gw, t)
        h.subtest(test_refusals, gw, t)
        h.subtest(test_inbox_send, gw, setup(gw))
        h.subtest(test_whatsapp_form, gw)
        h.subtest(test_burst, gw, setup(gw), setup(gw))
    with h.Gateway(master_key=MASTER_KEY, shards="1",
                   twilio_api_base="http://127.0.0.1:%d" % h.free_port()) as gw:  # one shard: the burst meets there
        h.subtest(test_burst_refusal, gw, setup(gw))


if __name__ == "__main__":
    h.main(test_file)
