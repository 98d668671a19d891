"""tests/integration/test_inbound.py — the inbound path end to end on the real stack: signed webhooks become
receipts, receipts reach the tenant's session actor, which assigns the conversation, its order and the tenant's
inbox cursor; GET /v1/events reads the log in order, each event once; status callbacks become message.status;
a receipt left unprocessed (a crash between COMMIT and routing) is found by the sweeper; receipts that reach their
actor together are applied as one batch with the result one-by-one applying would give (seq order inside a
conversation, statuses that only move forward); and a tenant's key sees only its tenant.
Run: SB_BIN=build/release/switchboard python3 tests/integration/test_inbound.py"""

import base64
import json
import time
import uuid

import harness as h
from test_webhooks import AUTH_TOKEN, MASTER_KEY, admin, post, sms_params


def events(gw, key, after=0, limit=None):
    q = "?after=%d" % after + ("&limit=%d" % limit if limit else "")
    r = h.request(gw.port, "GET", "/v1/events" + q, {"Authorization": "Bearer " + key})
    return r


def wait_events(gw, key, n, after=0, timeout=10):
    deadline = time.monotonic() + timeout
    got = []
    while time.monotonic() < deadline:
        r = events(gw, key, after)
        got = r.json().get("events", []) if r.status == 200 else []
        if len(got) >= n:
            break
        time.sleep(0.1)
    return got


def setup(gw):
    t = admin(gw, "/v1/admin/tenants", {"name": "inbound " + uuid.uuid4().hex[:6]})
    key = admin(gw, "/v1/admin/tenants/%s/keys" % t["id"], {})["key"]
    number = "+1777%07d" % (uuid.uuid4().int % 10 ** 7)
    ch = admin(gw, "/v1/admin/tenants/%s/channels" % t["id"],
               {"type": "twilio_sms", "address": number,
                "credentials": {"account_sid": "AC" + "2" * 32, "auth_token": AUTH_TOKEN}})
    return t["id"], key, ch["id"], number


def test_flow(gw, out):
    tid, key, cid, number = setup(gw)
    out['key'] = key
    path = "/webhooks/twilio/%s" % cid
    sids = ["SM" + uuid.uuid4().hex for _ in range(3)]
    bodies = ["first", "second — ünïcödé 🚀", "third"]
    for sid, body in zip(sids, bodies):
        r = post(gw, path, sms_params(sid, number, body))
        h.ok(r.status == 200, "webhook %s accepted" % sid[:8], r)
    all_evs = wait_events(gw, key, 6)
    h.ok(len(all_evs) == 6, "three messages make six events in the tenant's log", all_evs)
    if len(all_evs) < 6:
        return
    h.ok([e["cursor"] for e in all_evs] == [1, 2, 3, 4, 5, 6],
         "cursors 1..6: dense and strictly increasing from the tenant's first", [e["cursor"] for e in all_evs])
    h.ok([e["type"] for e in all_evs] == ["message.created", "conversation.updated"] * 3,
         "each message.created is followed by conversation.updated", [e["type"] for e in all_evs])
    evs = [e for e in all_evs if e["type"] == "message.created"]
    cv = [e["data"] for e in all_evs if e["type"] == "conversation.updated"]
    h.ok([c["last_seq"] for c in cv] == [1, 2, 3] and all(c["contact"]["address"] == "+14155550123" and
                                                          c["channel_id"] == cid for c in cv),
         "conversation.updated carries the conversation's last_seq and contact", cv)
    d = [e["data"] for e in evs]
    h.ok([x["body"] for x in d] == bodies and [x["provider_id"] for x in d] == sids,
         "bodies (Unicode intact) and provider ids, in the order sent", d)
    h.ok(all(x["direction"] == "in" and x["from"] == "+14155550123" and x["to"] == number and
             x["channel_id"] == cid for x in d), "direction, from, to, channel")
    h.ok(len({x["conversation_id"] for x in d}) == 1, "one conversation for one customer")
    seqs = h.sql("SELECT string_agg(seq::text, ',' ORDER BY seq) FROM messages WHERE tenant_id = %s" % tid)
    h.ok(seqs == "1,2,3", "messages take seq 1, 2, 3 in their conversation", seqs)
    h.ok(h.sql("SELECT count(*) FROM webhook_receipts WHERE tenant_id = %s AND processed_at IS NULL" % tid) == "0",
         "every receipt marked processed")

    r = post(gw, path, sms_params(sids[0], number, bodies[0]))
    time.sleep(0.5)
    h.ok(r.status == 200 and len(wait_events(gw, key, 7, timeout=1)) == 6, "a duplicate webhook adds no event")

    r = events(gw, key, after=1, limit=1)
    page = r.json()
    h.ok(r.status == 200 and [e["cursor"] for e in page["events"]] == [2] and page["cursor"] == 2,
         "after=1&limit=1: just cursor 2, and cursor 2 to continue from", page)
    r = events(gw, key, after=6)
    h.ok(r.json() == {"events": [], "cursor": 6}, "nothing new: an empty page keeps the cursor", r)

    st = [("MessageSid", sids[1]), ("MessageStatus", "read"), ("AccountSid", "AC" + "2" * 32),
          ("From", number), ("To", "+14155550123")]
    r = post(gw, path + "/status", st)
    evs = wait_events(gw, key, 1, after=6)
    h.ok(r.status == 200 and len(evs) == 1 and evs[0]["type"] == "message.status" and
         evs[0]["data"]["status"] == "read" and evs[0]["data"]["id"] == d[1]["id"],
         "a status callback becomes message.status for that message", evs)
    hist = h.sql("SELECT count(*) FROM message_status_history WHERE tenant_id = %s" % tid)
    h.ok(hist == "1", "and is kept in the status history", hist)
    out.update(conv=d[0]["conversation_id"], msg=d[1]["id"])

    auth = {"Authorization": "Bearer " + key}
    r = h.request(gw.port, "GET", "/v1/conversations", auth)
    convs = r.json().get("conversations", []) if r.status == 200 else []
    h.ok(len(convs) == 1 and convs[0]["id"] == d[0]["conversation_id"] and convs[0]["last_seq"] == 3 and
         convs[0]["contact"]["address"] == "+14155550123", "GET /v1/conversations: the conversation and its contact",
         r)
    r = h.request(gw.port, "GET", "/v1/conversations/%s/messages" % d[0]["conversation_id"], auth)
    ms = r.json().get("messages", []) if r.status == 200 else []
    h.ok([m["seq"] for m in ms] == [3, 2, 1] and ms[2]["body"] == bodies[0], "its messages, newest first", r)
    r = h.request(gw.port, "GET", "/v1/conversations/%s/messages?before=3&limit=1" % d[0]["conversation_id"], auth)
    h.ok(r.status == 200 and [m["seq"] for m in r.json()["messages"]] == [2], "before=3&limit=1: seq 2", r)
    r = h.request(gw.port, "GET", "/v1/messages/%s" % d[1]["id"], auth)
    m = r.json() if r.status == 200 else {}
    h.ok(m.get("status") == "read" and [x["status"] for x in m.get("history", [])] == ["read"] and
         m.get("body") == bodies[1], "GET /v1/messages/{id}: the message, its status and history", r)
    r = h.request(gw.port, "GET", "/v1/messages/999999999", auth)
    h.ok(r.status == 404 and h.error_code(r) == "not_found", "a missing message: 404", r)


def test_isolation_and_auth(gw, first):
    key = first.get('key', 'x')
    tid2, key2, _, _ = setup(gw)
    r = events(gw, key2)
    h.ok(r.status == 200 and r.json() == {"events": [], "cursor": 0}, "another tenant's key sees none of it", r)
    r = h.request(gw.port, "GET", "/v1/events", {"Authorization": "Bearer sb_live_" + "A" * 43})
    h.ok(r.status == 401 and h.error_code(r) == "unauthorized", "an unknown key: 401", r)
    r = h.request(gw.port, "GET", "/v1/events")
    h.ok(r.status == 401, "no key: 401", r)
    other = {"Authorization": "Bearer " + key2}
    r = h.request(gw.port, "GET", "/v1/conversations/%s/messages" % first.get("conv", "0"), other)
    h.ok(r.status == 404, "another tenant's conversation id: 404", r)
    r = h.request(gw.port, "GET", "/v1/messages/%s" % first.get("msg", "0"), other)
    h.ok(r.status == 404, "another tenant's message id: 404", r)
    r = h.request(gw.port, "GET", "/v1/conversations", other)
    h.ok(r.status == 200 and r.json() == {"conversations": []}, "and no conversations of the first tenant", r)
    r = h.request(gw.port, "GET", "/v1/events?after=abc", {"Authorization": "Bearer " + key})
    h.ok(r.status == 400 and b"'after'" in r.body, "after=abc: 400 naming it", r)
    r = h.request(gw.port, "GET", "/v1/events?limit=5000", {"Authorization": "Bearer " + key})
    h.ok(r.status == 400, "limit over 1000: 400", r)


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def test_tokens(gw, first):
    key = first.get("key", "x")
    tok = lambda body: h.request(gw.port, "POST", "/v1/tokens",
                                 {"Authorization": "Bearer " + key, "Content-Type": "application/json"},
                                 json.dumps(body).encode())
    r = tok({"ttl_s": 600})
    t = r.json().get("token", "") if r.status == 201 else ""
    h.ok(r.status == 201 and t.count(".") == 2 and r.json()["expires_at"] > time.time() + 500,
         "POST /v1/tokens: a JWT and its expiry", r)
    head = json.loads(base64.urlsafe_b64decode(t.split(".")[0] + "=="))
    h.ok(head.get("alg") == "HS256", "signed HS256", head)
    r = events(gw, t)
    h.ok(r.status == 200 and len(r.json()["events"]) >= 4, "the token reads the tenant's events", r)
    r = h.request(gw.port, "POST", "/v1/tokens", {"Authorization": "Bearer " + t})
    h.ok(r.status == 401, "a token cannot mint tokens", r)
    parts = t.split(".")
    tampered = parts[0] + "." + b64url(json.dumps({"tenant": "1", "exp": 9999999999}).encode()) + "." + parts[2]
    r = events(gw, tampered)
    h.ok(r.status == 401 and h.error_code(r) == "token_bad_signature", "a changed payload: token_bad_signature", r)
    none = b64url(b'{"alg":"none","typ":"JWT"}') + "." + parts[1] + "."
    r = events(gw, none)
    h.ok(r.status == 401 and h.error_code(r) == "token_alg_not_allowed", "alg none: token_alg_not_allowed", r)
    r = tok({"ttl_s": 0})
    h.ok(r.status == 400, "ttl_s 0: 400", r)
    r = tok({"ttl_s": 1})
    short = r.json().get("token", "")
    time.sleep(2.1)
    r = events(gw, short)
    h.ok(r.status == 401 and h.error_code(r) == "token_expired", "an expired token: token_expired", r)


def test_sweeper(gw):
    tid, key, cid, number = setup(gw)
    sid = "SM" + uuid.uuid4().hex
    event = json.dumps({"kind": "message", "channel": "twilio_sms", "account": number, "provider_id": sid,
                        "from": "+14155550999", "to": number, "body": "left behind", "media": []})
    # A receipt committed but never routed, as a crash between the 200 and the session actor would leave it.
    h.sql("INSERT INTO webhook_receipts (tenant_id, channel_id, dedup_key, event, raw, received_at) "
        "VALUES (%s, %s, 'msg:%s', '%s', '', now() - interval '1 minute')" % (tid, cid, sid, event))
    evs = wait_events(gw, key, 2, timeout=12)
    h.ok(len(evs) == 2 and evs[0]["data"]["body"] == "left behind",
         "the sweeper finds the unprocessed receipt and it reaches the log", evs)


def test_batch(gw):
    """The sweeper hands a page of planted receipts to the session actors in one go: what the actors hand over in
    one loop turn goes out as one statement (on one shard, two tenants' receipts share it), and what waits behind a
    full window as the next. Its result must be what applying them one by one gives, for each tenant."""
    tid, key, cid, number = setup(gw)
    tid_b, key_b, cid_b, number_b = setup(gw)
    sid0 = "SM" + uuid.uuid4().hex
    r = post(gw, "/webhooks/twilio/%s" % cid, sms_params(sid0, number, "before"))
    h.ok(r.status == 200, "a first message, the way Twilio sends it", r)
    first = wait_events(gw, key, 2)
    if len(first) < 2:
        h.ok(False, "the first message reached the log", first)
        return
    m0 = first[0]["data"]["id"]
    ann = "+14155550123"  # the sender of sms_params: the same conversation as the first message

    def message(sender, body, profile=None, to=(tid, cid, number)):
        ev = {"kind": "message", "channel": "twilio_sms", "account": to[2], "provider_id": "SM" + uuid.uuid4().hex,
              "from": sender, "to": to[2], "body": body, "media": []}
        if profile:
            ev["profile_name"] = profile
        return to[0], to[1], "msg:" + ev["provider_id"], ev

    def status(st):
        ev = {"kind": "status", "channel": "twilio_sms", "account": number, "provider_id": sid0, "status": st}
        return tid, cid, "status:%s:%s" % (sid0, st), ev

    b = (tid_b, cid_b, number_b)
    planted = [message("+14155550701", "filler 1"), message("+14155550702", "filler 2"),
               status("delivered"), message(ann, "B1", to=b), message(ann, "a", "Ann"), status("sent"),
               message(ann, "b"), message(ann, "B2", "Bea", to=b), status("read"), status("failed"),
               message("+14155550703", "c", "Cy")]
    values = ", ".join("(%s, %s, '%s', '%s', '', now() - interval '1 minute' + interval '%d ms')"
                       % (t, c, k, json.dumps(ev).replace("'", "''"), i) for i, (t, c, k, ev) in enumerate(planted))
    h.sql("INSERT INTO webhook_receipts (tenant_id, channel_id, dedup_key, event, raw, received_at) VALUES " + values)
    evs = wait_events(gw, key, 12, after=2, timeout=15)
    h.ok([e["cursor"] for e in evs] == list(range(3, 15)), "twelve events, cursors 3..14 dense",
         [e["cursor"] for e in evs])
    if len(evs) != 12:
        return
    kinds = [(e["type"], e["data"].get("body") or e["data"].get("status")) for e in evs]
    want = [("message.created", "filler 1"), ("conversation.updated", None), ("message.created", "filler 2"),
            ("conversation.updated", None), ("message.status", "delivered"), ("message.created", "a"),
            ("conversation.updated", None), ("message.created", "b"), ("conversation.updated", None),
            ("message.status", "read"), ("message.created", "c"), ("conversation.updated", None)]
    h.ok(kinds == want, "in receipt order; a late sent and a failed after read change nothing", kinds)
    conv = [e["data"] for e in evs if e["type"] == "conversation.updated"]
    h.ok([c["last_seq"] for c in conv] == [1, 1, 2, 3, 1],
         "each message takes the next seq of its conversation, two in one batch included",
         [c["last_seq"] for c in conv])
    h.ok(conv[2]["id"] == conv[3]["id"] == first[1]["data"]["id"], "a and b join the first message's conversation",
         conv)
    h.ok(conv[3]["contact"]["profile_name"] == "Ann" and conv[4]["contact"]["profile_name"] == "Cy",
         "profile names kept (b, without one, leaves Ann's)", conv)
    r = h.request(gw.port, "GET", "/v1/messages/%s" % m0, {"Authorization": "Bearer " + key})
    msg = r.json() if r.status == 200 else {}
    h.ok(msg.get("status") == "read", "the message stays read", msg)
    h.ok([x["status"] for x in msg.get("history", [])] == ["delivered", "read"],
         "its history holds the statuses that moved it forward, in order", msg.get("history"))
    r = h.request(gw.port, "GET", "/v1/conversations/%s/messages" % conv[2]["id"], {"Authorization": "Bearer " + key})
    seqs = sorted((m["seq"], m["body"]) for m in r.json().get("messages", [])) if r.status == 200 else []
    h.ok(seqs == [(1, "before"), (2, "a"), (3, "b")], "the conversation reads before, a, b", seqs)
    evs_b = wait_events(gw, key_b, 4)
    h.ok([(e["cursor"], e["type"], e["data"].get("body") or e["data"].get("last_seq")) for e in evs_b] ==
         [(1, "message.created", "B1"), (2, "conversation.updated", 1), (3, "message.created", "B2"),
          (4, "conversation.updated", 2)], "the other tenant: its own cursors from 1, its own conversation",
         [(e["cursor"], e["type"]) for e in evs_b])
    if len(evs_b) == 4:
        h.ok(evs_b[3]["data"]["contact"]["profile_name"] == "Bea", "and its own contact", evs_b[3]["data"])
    left = h.sql("SELECT count(*) FROM webhook_receipts WHERE tenant_id IN (%s, %s) AND processed_at IS NULL"
               % (tid, tid_b))
    h.ok(left == "0", "every receipt is marked processed", left)


def test_file():
    with h.Gateway(master_key=MASTER_KEY) as gw:
        first = {}
        h.subtest(test_flow, gw, first)
        h.subtest(test_isolation_and_auth, gw, first)
        h.subtest(test_tokens, gw, first)
        h.subtest(test_sweeper, gw)
    with h.Gateway(master_key=MASTER_KEY, shards="1") as gw:  # one shard: both tenants' receipts share statements
        h.subtest(test_batch, gw)


if __name__ == "__main__":
    h.main(test_file)
