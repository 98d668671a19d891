"""tests/integration/test_webhooks.py — Twilio webhooks on the real stack, signed by an independent implementation
(Python's hmac, following Twilio's published algorithm): a 200 means the receipt is committed, duplicates are
stored once, status callbacks are receipts of their own, and every bad request is refused with nothing stored;
receipts arriving together share one INSERT, and one the database refuses does not take the others down with it.
Run: SB_BIN=build/release/switchboard python3 tests/integration/test_webhooks.py"""

import base64
import hashlib
import hmac
import json
import urllib.parse
import uuid

import harness as h

MASTER_KEY = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
AUTH_TOKEN = "0123456789abcdef0123456789abcdef"


def admin(gw, path, body):
    headers = {"Authorization": "Bearer " + h.ADMIN_TOKEN, "Content-Type": "application/json"}
    return h.request(gw.port, "POST", path, headers, json.dumps(body).encode()).json()


def sign(url, params):
    """X-Twilio-Signature as Twilio computes it: URL + every param sorted by name, name+value, HMAC-SHA1."""
    data = url + "".join(k + v for k, v in sorted(params))
    return base64.b64encode(hmac.new(AUTH_TOKEN.encode(), data.encode(), hashlib.sha1).digest()).decode()


def post(gw, path, params, signature=None, content_type="application/x-www-form-urlencoded", body=None):
    host = "127.0.0.1:%d" % gw.port
    headers = {"Host": host}
    if content_type:
        headers["Content-Type"] = content_type
    if signature is None:
        signature = sign("http://" + host + path, params)
    if signature is not False:
        headers["X-Twilio-Signature"] = signature
    data = body if body is not None else urllib.parse.urlencode(params).encode()
    return h.request(gw.port, "POST", path, headers, data)


def receipts(cid, key=None):
    where = "channel_id = %s" % cid + (" AND dedup_key = '%s'" % key if key else "")
    return h.sql("SELECT count(*) FROM webhook_receipts WHERE " + where)


def setup(gw):
    t = admin(gw, "/v1/admin/tenants", {"name": "webhooks " + uuid.uuid4().hex[:6]})
    number = "+1555%07d" % (uuid.uuid4().int % 10 ** 7)
    sms = admin(gw, "/v1/admin/tenants/%s/channels" % t["id"],
                {"type": "twilio_sms", "address": number,
                 "credentials": {"account_sid": "AC" + "1" * 32, "auth_token": AUTH_TOKEN}})
    wa = admin(gw, "/v1/admin/tenants/%s/channels" % t["id"],
               {"type": "twilio_whatsapp", "address": "+1666%07d" % (uuid.uuid4().int % 10 ** 7),
                "credentials": {"account_sid": "AC" + "1" * 32, "auth_token": AUTH_TOKEN}})
    return t["id"], sms["id"], number, wa["id"], wa["address"]


def sms_params(sid, number, body):
    return [("ToCountry", "US"), ("SmsMessageSid", sid), ("NumMedia", "0"), ("SmsSid", sid),
            ("SmsStatus", "received"), ("Body", body), ("To", number), ("NumSegments", "1"),
            ("MessageSid", sid), ("AccountSid", "AC" + "1" * 32), ("From", "+14155550123"), ("ApiVersion", "2010-04-01")]


def test_sms(gw, ctx):
    tid, cid, number, _, _ = ctx
    sid = "SM" + uuid.uuid4().hex
    body = "Héllo wörld 👋 — ça va?"
    path = "/webhooks/twilio/%s" % cid
    r = post(gw, path, sms_params(sid, number, body))
    h.ok(r.status == 200 and r.header("content-type") == "text/xml" and b"<Response/>" in r.body,
         "signed SMS webhook: 200 text/xml <Response/>", r)
    h.ok(receipts(cid, "msg:" + sid) == "1", "the receipt was committed before the answer")
    stored = h.sql("SELECT event->>'body' || '|' || (event->>'from') || '|' || (event->>'to') || '|' || tenant_id "
                 "FROM webhook_receipts WHERE dedup_key = 'msg:%s'" % sid)
    h.ok(stored == "%s|+14155550123|%s|%s" % (body, number, tid), "normalized event stored, Unicode intact", stored)
    h.ok(h.wait_for(lambda: h.sql("SELECT processed_at IS NOT NULL FROM webhook_receipts WHERE dedup_key = 'msg:%s'"
                                % sid) == "t", 5),
         "then routed to the tenant's session actor, which marks it processed")

    r = post(gw, path, sms_params(sid, number, body))
    h.ok(r.status == 200, "the same MessageSid again: 200", r)
    h.ok(receipts(cid, "msg:" + sid) == "1", "and stored once")


def test_whatsapp_mms(gw, ctx):
    _, _, _, wid, waddr = ctx
    sid = "MM" + uuid.uuid4().hex
    params = [("MessageSid", sid), ("AccountSid", "AC" + "1" * 32), ("From", "whatsapp:+447700900123"),
              ("To", "whatsapp:" + waddr), ("Body", "photo 📷"), ("NumMedia", "2"), ("ProfileName", "Zoë"),
              ("WaId", "447700900123"),
              ("MediaUrl0", "https://api.twilio.com/2010-04-01/Accounts/AC1/Messages/%s/Media/ME1" % sid),
              ("MediaContentType0", "image/jpeg"),
              ("MediaUrl1", "https://api.twilio.com/2010-04-01/Accounts/AC1/Messages/%s/Media/ME2" % sid),
              ("MediaContentType1", "image/png")]
    r = post(gw, "/webhooks/twilio/%s" % wid, params)
    h.ok(r.status == 200, "signed WhatsApp MMS: 200", r)
    ev = h.sql("SELECT event::text FROM webhook_receipts WHERE dedup_key = 'msg:%s'" % sid)
    e = json.loads(ev) if ev else {}
    h.ok(e.get("channel") == "twilio_whatsapp" and e.get("from") == "+447700900123" and
         e.get("profile_name") == "Zoë" and len(e.get("media", [])) == 2 and
         e["media"][1].get("content_type") == "image/png",
         "WhatsApp prefix stripped, profile name and both media kept", ev)


def test_status(gw, ctx):
    _, cid, number, _, _ = ctx
    sid = "SM" + uuid.uuid4().hex
    path = "/webhooks/twilio/%s/status" % cid
    for st in ("sent", "delivered", "delivered"):
        params = [("MessageSid", sid), ("MessageStatus", st), ("AccountSid", "AC" + "1" * 32),
                  ("From", number), ("To", "+14155550123"), ("ApiVersion", "2010-04-01")]
        r = post(gw, path, params)
        h.ok(r.status == 200, "status callback %s: 200" % st, r)
    h.ok(receipts(cid, "status:%s:sent" % sid) == "1" and receipts(cid, "status:%s:delivered" % sid) == "1",
         "one receipt per (message, status): the repeated 'delivered' stored once")
    params = [("MessageSid", sid), ("MessageStatus", "failed"), ("ErrorCode", "30008"), ("From", number),
              ("To", "+14155550123"), ("AccountSid", "AC" + "1" * 32)]
    r = post(gw, path, params)
    err = h.sql("SELECT event->>'error_code' FROM webhook_receipts WHERE dedup_key = 'status:%s:failed'" % sid)
    h.ok(r.status == 200 and err == "30008", "a failed status keeps Twilio's error code", err)


def test_refusals(gw, ctx):
    _, cid, number, _, _ = ctx
    path = "/webhooks/twilio/%s" % cid
    before = receipts(cid)
    sid = "SM" + uuid.uuid4().hex
    p = sms_params(sid, number, "hi")
    r = post(gw, path, p, signature=False)
    h.ok(r.status == 403 and h.error_code(r) == "forbidden", "no signature: 403", r)
    r = post(gw, path, p, signature=sign("http://127.0.0.1:%d%s" % (gw.port, path), p)[:-4] + "AAA=")
    h.ok(r.status == 403, "wrong signature: 403", r)
    tampered = [(k, "hacked" if k == "Body" else v) for k, v in p]
    r = post(gw, path, tampered, signature=sign("http://127.0.0.1:%d%s" % (gw.port, path), p))
    h.ok(r.status == 403, "a body altered after signing: 403", r)
    r = post(gw, path, p, signature=sign("http://127.0.0.1:%d/webhooks/twilio/0" % gw.port, p))
    h.ok(r.status == 403, "signed for another URL: 403", r)
    h.ok(receipts(cid) == before, "nothing stored for any of them")

    r = post(gw, "/webhooks/twilio/999999999", p)
    h.ok(r.status == 404 and h.error_code(r) == "not_found", "unknown channel: 404", r)
    r = post(gw, path, p, content_type="application/json", body=b"{}")
    h.ok(r.status == 415, "JSON instead of a form: 415", r)
    r = post(gw, path, [("Body", "x")], body=b"Body=%zz", signature="x")
    h.ok(r.status == 400, "a malformed form: 400", r)
    bad = [(k, v) for k, v in p if k != "From"]
    r = post(gw, path, bad)
    h.ok(r.status == 400 and b"From" in r.body, "a signed payload missing From: 400 naming it", r)
    r = h.request(gw.port, "GET", path)
    h.ok(r.status == 405, "GET on a webhook: 405", r)
    h.ok(receipts(cid) == before, "still nothing stored")


def test_db_down(gw, ctx):
    _, cid, number, _, _ = ctx
    sid = "SM" + uuid.uuid4().hex
    try:
        h.stack("down", "pg")
        r = post(gw, "/webhooks/twilio/%s" % cid, sms_params(sid, number, "while down"))
        h.ok(r is not None and r.status == 503, "PostgreSQL down: 503, so Twilio retries", r)
    finally:
        h.stack("up", "pg")
    h.ok(h.wait_for(lambda: h.get(gw.port, "/readyz").status == 200, 15), "PostgreSQL back")
    r = post(gw, "/webhooks/twilio/%s" % cid, sms_params(sid, number, "while down"))
    h.ok(r.status == 200 and receipts(cid, "msg:" + sid) == "1", "the provider's retry is stored", r)


APP_SECRET = "meta-app-secret-" + uuid.uuid4().hex


def meta_setup(gw, tid):
    app = str(10 ** 14 + uuid.uuid4().int % 10 ** 14)
    admin(gw, "/v1/admin/meta-apps", {"app_id": app, "app_secret": APP_SECRET, "verify_token": "verify-me"})
    pnid = str(10 ** 14 + uuid.uuid4().int % 10 ** 14)
    page = str(10 ** 14 + uuid.uuid4().int % 10 ** 14)
    for typ, addr in (("meta_whatsapp", pnid), ("meta_messenger", page)):
        admin(gw, "/v1/admin/tenants/%s/channels" % tid,
              {"type": typ, "address": addr, "credentials": {"access_token": "EAAB" + uuid.uuid4().hex},
               "meta_app_id": app})
    return app, pnid, page


def meta_post(gw, app, payload, secret=APP_SECRET, signature=None):
    body = json.dumps(payload).encode()
    sig = signature or "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    headers = {"Content-Type": "application/json", "X-Hub-Signature-256": sig}
    return h.request(gw.port, "POST", "/webhooks/meta/" + app, headers, body)


def wa_payload(pnid, wamid, text):
    # Shape from Meta's WhatsApp Cloud API webhook documentation (messages notification).
    return {"object": "whatsapp_business_account", "entry": [{"id": "102290129340398", "changes": [{
        "field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550783881", "phone_number_id": pnid},
            "contacts": [{"profile": {"name": "Zoë"}, "wa_id": "447700900123"}],
            "messages": [{"from": "447700900123", "id": wamid, "timestamp": "1700000000",
                          "type": "text", "text": {"body": text}}]}}]}]}


def count_key(key):
    return h.sql("SELECT count(*) FROM webhook_receipts WHERE dedup_key = '%s'" % key)


def test_meta(gw, ctx):
    tid = ctx[0]
    app, pnid, page = meta_setup(gw, tid)

    r = h.get(gw.port, "/webhooks/meta/%s?hub.mode=subscribe&hub.verify_token=verify-me&hub.challenge=1158201444"
              % app)
    h.ok(r.status == 200 and r.body == b"1158201444", "verification GET with the right token echoes the challenge", r)
    r = h.get(gw.port, "/webhooks/meta/%s?hub.mode=subscribe&hub.verify_token=nope&hub.challenge=1" % app)
    h.ok(r.status == 403, "wrong verify token: 403", r)
    r = h.get(gw.port, "/webhooks/meta/99999?hub.mode=subscribe&hub.verify_token=verify-me&hub.challenge=1")
    h.ok(r.status == 404, "unknown app: 404", r)

    wamid = "wamid.HBgL" + uuid.uuid4().hex
    text = "héllo from WhatsApp 🌍"
    r = meta_post(gw, app, wa_payload(pnid, wamid, text))
    h.ok(r.status == 200, "signed WhatsApp Cloud message: 200", r)
    stored = h.sql("SELECT event->>'body' || '|' || (event->>'profile_name') || '|' || tenant_id FROM webhook_receipts "
                 "WHERE dedup_key = 'msg:%s'" % wamid)
    h.ok(stored == "%s|Zoë|%s" % (text, tid), "receipt stored on the channel of its phone_number_id", stored)
    r = meta_post(gw, app, wa_payload(pnid, wamid, text))
    h.ok(r.status == 200 and count_key("msg:" + wamid) == "1", "the same wamid again: 200, stored once", r)

    other = "wamid.HBgL" + uuid.uuid4().hex
    r = meta_post(gw, app, wa_payload(pnid, other, "x"), secret="wrong-secret")
    h.ok(r.status == 403 and count_key("msg:" + other) == "0", "wrong X-Hub-Signature-256: 403, nothing stored", r)
    r = meta_post(gw, app, wa_payload(pnid, other, "x"), signature="sha1=abc")
    h.ok(r.status == 403, "malformed signature header: 403", r)
    r = meta_post(gw, app, wa_payload("999000999", other, "x"))
    h.ok(r.status == 200 and count_key("msg:" + other) == "0",
         "an account no channel claims: 200 (so Meta stops retrying), nothing stored", r)
    r = meta_post(gw, app, {"entry": []})
    h.ok(r.status == 400, "not a Meta webhook body: 400", r)

    status = {"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"field": "messages", "value": {
        "messaging_product": "whatsapp", "metadata": {"display_phone_number": "15550783881", "phone_number_id": pnid},
        "statuses": [{"id": wamid, "status": "delivered", "timestamp": "1700000100",
                      "recipient_id": "447700900123"}]}}]}]}
    r = meta_post(gw, app, status)
    h.ok(r.status == 200 and count_key("status:%s:delivered" % wamid) == "1", "WhatsApp status stored", r)

    mid = "m_" + uuid.uuid4().hex
    # Shape from Meta's Messenger Platform webhook documentation (messages event).
    messenger = {"object": "page", "entry": [{"id": page, "time": 1700000000000, "messaging": [{
        "sender": {"id": "6000000000000001"}, "recipient": {"id": page}, "timestamp": 1700000000123,
        "message": {"mid": mid, "text": "hi from Messenger"}}]}]}
    r = meta_post(gw, app, messenger)
    ch = h.sql("SELECT event->>'channel' FROM webhook_receipts WHERE dedup_key = 'msg:%s'" % mid)
    h.ok(r.status == 200 and ch == "meta_messenger", "Messenger message stored on the page's channel", ch)


def wa_messages(pnid, wamids, text):
    """One WhatsApp Cloud notification carrying a message for each wamid."""
    p = wa_payload(pnid, wamids[0], text)
    p["entry"][0]["changes"][0]["value"]["messages"] = [
        {"from": "447700900123", "id": w, "timestamp": "1700000000", "type": "text", "text": {"body": text}}
        for w in wamids]
    return p


def test_meta_batch(gw, ctx):
    """A Meta body's events are receipts of the ingest batch, like Twilio's, and the request is answered when all of
    them are. One body with three WhatsApp messages and, in a second entry, one for a number no channel claims: 200,
    the three stored once each on the number's channel. Then twenty bodies of two messages each at once, one of
    them poisoned by a constraint planted for the test: its batch is sent again receipt by receipt, so that body
    alone gets 503 (both its events refused, Meta retries it) and the other nineteen 200, each event stored once. The
    burst is made again until the poisoned body shared a statement with others (h.poisoned_bursts)."""
    tid = ctx[0]
    app, pnid, _ = meta_setup(gw, tid)
    wamids = ["wamid.HBgL" + uuid.uuid4().hex for _ in range(3)]
    stray = "wamid.HBgL" + uuid.uuid4().hex
    body = wa_messages(pnid, wamids, "three at once")
    body["entry"].append(wa_payload("999000999", stray, "x")["entry"][0])
    r = meta_post(gw, app, body)
    h.ok(r.status == 200 and r.body == b"EVENT_RECEIVED", "a body of four events: 200", r)
    got = [h.sql("SELECT string_agg(channel_id::text, ',') FROM webhook_receipts WHERE dedup_key = 'msg:%s'" % k)
           for k in wamids + [stray]]
    cid = h.sql("SELECT id FROM channels WHERE type = 'meta_whatsapp' AND address = '%s'" % pnid)
    h.ok(cid and got == [cid] * 3 + [""], "each stored once on the number's channel, the unclaimed one not at all",
         (cid, got))

    def one_burst(attempt):
        ids = [["wamid.HBgL" + uuid.uuid4().hex for _ in range(2)] for _ in range(20)]
        answers = h.at_once(20, lambda i: meta_post(gw, app, wa_messages(pnid, ids[i], "poison" if i == 7
                                                                         else "burst %d" % i)).status)
        h.ok(answers[7] == 503 and all(a == 200 for i, a in enumerate(answers) if i != 7),
             "burst %d: the poisoned body: 503; the other nineteen: 200" % attempt, answers)
        stored = [[count_key("msg:" + w) for w in pair] for pair in ids]
        h.ok(stored == [["0", "0"] if i == 7 else ["1", "1"] for i in range(20)],
             "burst %d: every event of the nineteen stored once, the poisoned body's none" % attempt, stored)
    refused = h.poisoned_bursts(gw, "webhook_receipts", "raw NOT LIKE '%poison%'", b"Meta receipts was refused",
                                one_burst)
    h.ok(refused == 1, "one batch was refused and sent again receipt by receipt (%d)" % refused)


def test_batch_refusal(gw, ctx):
    """Twenty webhooks at once on one shard share INSERT statements. A constraint planted for the test refuses one
    of them: its batch is stored again one by one, so that one gets 503 (the provider retries) and the others 200,
    each stored once. The burst is made again until the poisoned one shared a batch (h.poisoned_bursts), and every
    burst must come out right."""
    _, cid, number, _, _ = ctx

    def one_burst(attempt):
        sids = ["SM" + uuid.uuid4().hex for _ in range(20)]
        bodies = ['together "%d" \\ {a,b}' % i for i in range(20)]  # array-literal and JSON specials
        bodies[7] = "poison"
        answers = h.at_once(20, lambda i: post(gw, "/webhooks/twilio/%s" % cid,
                                               sms_params(sids[i], number, bodies[i])).status)
        h.ok(answers[7] == 503 and all(a == 200 for i, a in enumerate(answers) if i != 7),
             "burst %d: the refused one: 503; the other nineteen: 200" % attempt, answers)
        stored = [receipts(cid, "msg:" + sid) for sid in sids]
        h.ok(stored == ["0" if i == 7 else "1" for i in range(20)],
             "burst %d: each of the nineteen stored once, the refused none" % attempt, stored)
        got = h.sql("SELECT string_agg(event->>'body', '|' ORDER BY id) FROM webhook_receipts WHERE channel_id = %s"
                    " AND dedup_key IN (%s)" % (cid, ",".join("'msg:%s'" % sid for sid in sids)))
        h.ok(sorted(got.split("|")) == sorted(b for i, b in enumerate(bodies) if i != 7),
             "burst %d: quotes, a backslash and braces arrive intact" % attempt, got)
    refused = h.poisoned_bursts(gw, "webhook_receipts", "raw NOT LIKE '%poison%'", b"Twilio receipts was refused",
                                one_burst)
    h.ok(refused == 1, "one batch was refused and stored again one by one, the poisoned one (%d)" % refused)


def test_file():
    with h.Gateway(master_key=MASTER_KEY) as gw:
        ctx = setup(gw)
        for t in (test_sms, test_whatsapp_mms, test_status, test_refusals, test_meta, test_db_down):
            h.subtest(t, gw, ctx)
    with h.Gateway(master_key=MASTER_KEY, shards="1") as gw:  # one shard: the twenty meet in its INSERTs
        ctx = setup(gw)
        h.subtest(test_batch_refusal, gw, ctx)
        h.subtest(test_meta_batch, gw, ctx)


if __name__ == "__main__":
    h.main(test_file)
