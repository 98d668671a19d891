"""tests/integration/test_channels_out.py — every channel two-way, and the providers' rules kept (issue 16, item 5),
on the real stack against the mock provider (ops/mock_provider.c):

- Messenger and Instagram sends reach the Graph API's /{page or IG account id}/messages with the Send API's shape
  (recipient.id = the PSID/IGSID, messaging_type, message.text or message.attachment), text and media;
- Meta's 24-hour customer-service window, from the conversation's last inbound message: inside it (after a signed
  inbound webhook from that customer) free-form goes; outside it (no inbound message yet, or the last one 25 hours
  old, loaded from the store by a gateway started after it) free-form is refused with 422 outside_window and
  nothing is stored, neither in our outbox nor at the provider; a WhatsApp template, a Messenger tag, Instagram's
  HUMAN_AGENT (within 7 days) and a Twilio Content API template go; a Twilio WhatsApp customer's signed webhook opens
  the window there too;
- Twilio Content API templates reach the Messages API as ContentSid and ContentVariables;
- the shapes are checked with 400s;
- the mock itself keeps the window when told to (window: true), answering Meta's and Twilio's real errors.
Run: SB_BIN=build/release/switchboard python3 tests/integration/test_channels_out.py"""

import hashlib
import hmac
import json
import time
import uuid

import harness as h
from test_live import connect
from test_mock_provider import Mock
from test_webhooks import AUTH_TOKEN, MASTER_KEY, admin, post

APP_SECRET = "channels-out-secret-" + uuid.uuid4().hex
CONTENT_SID = "HX" + "b5b62575e6e4ff6129ad7c8efe1f983e"
H = 3600


def numeric_id():
    return str(10 ** 14 + uuid.uuid4().int % 10 ** 14)


def setup(gw):
    """A tenant with one channel of every sending type, on one Meta app."""
    t = admin(gw, "/v1/admin/tenants", {"name": "channels out " + uuid.uuid4().hex[:6]})
    key = admin(gw, "/v1/admin/tenants/%s/keys" % t["id"], {})["key"]
    app = numeric_id()
    admin(gw, "/v1/admin/meta-apps", {"app_id": app, "app_secret": APP_SECRET, "verify_token": "verify-me"})
    ctx = {"tenant": t["id"], "key": key, "app": app, "ch": {}}
    for kind in ("meta_messenger", "meta_instagram", "meta_whatsapp", "twilio_whatsapp", "twilio_sms"):
        address = numeric_id() if kind.startswith("meta") else "+1556%07d" % (uuid.uuid4().int % 10 ** 7)
        body = {"type": kind, "address": address, "settings": {"rate_per_second": 50}}
        if kind.startswith("meta"):
            body["credentials"] = {"access_token": "EAAB" + uuid.uuid4().hex}
            body["meta_app_id"] = app
        else:
            body["credentials"] = {"account_sid": "AC" + "6" * 32, "auth_token": AUTH_TOKEN}
        ch = admin(gw, "/v1/admin/tenants/%s/channels" % t["id"], body)
        ctx["ch"][kind] = {"id": ch["id"], "address": address}
    return ctx


def send(gw, ctx, kind, **fields):
    payload = dict({"channel_id": ctx["ch"][kind]["id"]}, **fields)
    return h.request(gw.port, "POST", "/v1/messages", {"Authorization": "Bearer " + ctx["key"],
                                                       "Content-Type": "application/json"},
                     json.dumps(payload).encode())


def message(gw, ctx, mid):
    return h.request(gw.port, "GET", "/v1/messages/%s" % mid, {"Authorization": "Bearer " + ctx["key"]}).json()


def outbound_count(ctx):
    return int(h.sql("SELECT count(*) FROM messages WHERE tenant_id = %s AND direction = 'out'" % ctx["tenant"]))


def meta_post(gw, app, payload, secret=APP_SECRET):
    body = json.dumps(payload).encode()
    sig = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return h.request(gw.port, "POST", "/webhooks/meta/" + app,
                     {"Content-Type": "application/json", "X-Hub-Signature-256": sig}, body)


def inbound(gw, mock, ctx, kind, user, text="hello?"):
    """The customer `user` writes to the channel: a signed Meta webhook to the gateway (the shapes of Meta's
    Messenger, Instagram and WhatsApp Cloud documentation), and the same news to the mock provider (which keeps its
    own window). Waits until the gateway applied it."""
    customer_writes(gw, ctx["app"], kind, ctx["ch"][kind]["address"], ctx["ch"][kind]["id"], ctx["tenant"], user,
                    text)
    mock.control("/_mock/inbound", {"sender": ctx["ch"][kind]["address"], "user": user})


def customer_writes(gw, app, kind, account, channel, tenant, user, text="hello?", secret=APP_SECRET):
    """A signed Meta webhook from `user` to the channel (account: its page, IG account or phone_number_id), waited
    for until the channel's session applied it: Meta's 24-hour window is then open."""
    now_ms = int(time.time() * 1000)
    if kind == "meta_whatsapp":
        payload = {"object": "whatsapp_business_account", "entry": [{"id": "102290129340398", "changes": [{
            "field": "messages", "value": {
                "messaging_product": "whatsapp",
                "metadata": {"display_phone_number": "15550783881", "phone_number_id": account},
                "contacts": [{"profile": {"name": "Zoë"}, "wa_id": user}],
                "messages": [{"from": user, "id": "wamid.HBgL" + uuid.uuid4().hex, "timestamp": str(now_ms // 1000),
                              "type": "text", "text": {"body": text}}]}}]}]}
        sender = "+" + user
    else:
        payload = {"object": "page" if kind == "meta_messenger" else "instagram", "entry": [{
            "id": account, "time": now_ms, "messaging": [{
                "sender": {"id": user}, "recipient": {"id": account}, "timestamp": now_ms,
                "message": {"mid": "m_" + uuid.uuid4().hex, "text": text}}]}]}
        sender = user
    r = meta_post(gw, app, payload, secret)
    h.ok(r.status == 200, "%s: the customer's signed webhook is taken" % kind, r)
    q = ("SELECT count(*) FROM messages WHERE tenant_id = %s AND channel_id = %s AND direction = 'in' AND "
         "sender = '%s'" % (tenant, channel, sender))
    h.ok(h.wait_for(lambda: h.sql(q) != "0", 10), "%s: and applied by the channel's session" % kind)


def reqs(mock, ctx, kind):
    return mock.received(sender=ctx["ch"][kind]["address"]).get("requests", [])


def wait_reqs(mock, ctx, kind, n):
    h.wait_for(lambda: len(reqs(mock, ctx, kind)) >= n, 10)
    time.sleep(0.2)
    return reqs(mock, ctx, kind)


def refused_outside(gw, mock, ctx, kind, what, **fields):
    before, at_mock = outbound_count(ctx), len(reqs(mock, ctx, kind))
    r = send(gw, ctx, kind, **fields)
    h.ok(r.status == 422 and h.error_code(r) == "outside_window", "%s: %s: 422 outside_window" % (kind, what), r)
    time.sleep(0.3)
    h.ok(outbound_count(ctx) == before and len(reqs(mock, ctx, kind)) == at_mock,
         "%s: %s: nothing stored, nothing at the provider" % (kind, what))


def accepted(gw, ctx, kind, what, **fields):
    r = send(gw, ctx, kind, **fields)
    h.ok(r.status == 202, "%s: %s: 202" % (kind, what), r)
    return r.json().get("id") if r.status == 202 else None


def sent(gw, ctx, mid, what):
    h.wait_for(lambda: message(gw, ctx, mid).get("status") in ("sent", "failed", "dead", "unknown"), 10)
    m = message(gw, ctx, mid)
    h.ok(m.get("status") == "sent", "%s: sent" % what, m)
    return m


# ---- Messenger ---------------------------------------------------------------------------------------------------

def test_messenger(gw, mock):
    ctx = setup(gw)
    kind, page = "meta_messenger", ctx["ch"]["meta_messenger"]["address"]
    mock.behaviour(sender=page, window=True)
    psid, other = "6%015d" % (uuid.uuid4().int % 10 ** 15), "7%015d" % (uuid.uuid4().int % 10 ** 15)

    refused_outside(gw, mock, ctx, kind, "free-form to a customer who never wrote", to=psid, body="hi")
    r = send(gw, ctx, kind, to=psid, body="hi", tag="HUMAN_AGENT")
    h.ok(r.status == 422 and h.error_code(r) == "outside_window", "HUMAN_AGENT needs a customer message (7 days)", r)

    inbound(gw, mock, ctx, kind, psid)
    mid = accepted(gw, ctx, kind, "free-form within 24 hours", to=psid, body="Hello 👋 how can we help?")
    m = sent(gw, ctx, mid, "Messenger text") if mid else {}
    got = wait_reqs(mock, ctx, kind, 1)
    h.ok(len(got) == 1 and got[0]["to"] == psid and got[0]["body"] == "Hello 👋 how can we help?" and
         got[0]["type"] == "text" and got[0]["messaging_type"] == "RESPONSE" and got[0]["tag"] is None,
         "the mock got POST /{page id}/messages: recipient.id = the PSID, messaging_type RESPONSE, message.text", got)
    h.ok(got and m.get("provider_id") == got[0]["id"] and str(m.get("provider_id")).startswith("m_"),
         "the message holds the Send API's message_id", (m, got))
    conv = h.sql("SELECT count(DISTINCT conversation_id) FROM messages WHERE tenant_id = %s AND channel_id = %s"
                 % (ctx["tenant"], ctx["ch"][kind]["id"]))
    h.ok(conv == "1", "the reply is in the customer's conversation", conv)

    mid = accepted(gw, ctx, kind, "an image", to=psid, media_url="https://cdn.example.com/p/cat.png")
    if mid:
        sent(gw, ctx, mid, "Messenger image")
    got = wait_reqs(mock, ctx, kind, 2)
    h.ok(len(got) == 2 and got[1]["type"] == "image" and got[1]["media"] == ["https://cdn.example.com/p/cat.png"]
         and got[1]["body"] == "", "message.attachment {type image, payload.url}", got)
    mid = accepted(gw, ctx, kind, "a file", to=psid, media_url="https://cdn.example.com/terms.pdf")
    got = wait_reqs(mock, ctx, kind, 3)
    h.ok(len(got) == 3 and got[2]["type"] == "file", "a pdf goes as a file attachment", got)

    r = send(gw, ctx, kind, to=psid, body="caption", media_url="https://cdn.example.com/p/cat.png")
    h.ok(r.status == 400 and h.error_code(r) == "invalid_body", "text and an attachment together: 400", r)
    r = send(gw, ctx, kind, to="+14155550100", body="hi")
    h.ok(r.status == 400 and h.error_code(r) == "invalid_recipient", "a phone number on Messenger: 400", r)
    r = send(gw, ctx, kind, to=psid, body="hi", tag="PAIRING_UPDATE")
    h.ok(r.status == 400 and h.error_code(r) == "invalid_tag", "a retired tag: 400 invalid_tag", r)
    r = send(gw, ctx, kind, to=psid, template={"name": "order_update", "language": "en_US"})
    h.ok(r.status == 400 and h.error_code(r) == "invalid_template", "a template on Messenger: 400", r)

    # outside the window with a tag: goes (the mock, which keeps the window too, takes it)
    mid = accepted(gw, ctx, kind, "CONFIRMED_EVENT_UPDATE to someone who never wrote", to=other,
                   body="Your appointment is tomorrow at 10:00", tag="CONFIRMED_EVENT_UPDATE")
    if mid:
        sent(gw, ctx, mid, "tagged message")
    got = [x for x in wait_reqs(mock, ctx, kind, 4) if x["to"] == other]
    h.ok(len(got) == 1 and got[0]["messaging_type"] == "MESSAGE_TAG" and got[0]["tag"] == "CONFIRMED_EVENT_UPDATE"
         and got[0]["status"] == 200, "messaging_type MESSAGE_TAG with its tag", got)


def test_window_expired(mock):
    """The window is loaded with the conversation: a customer's message 25 hours old (the store's), read by a
    gateway started after it, closes it; HUMAN_AGENT (7 days) still goes."""
    first = gateway(mock)
    with first:
        ctx = setup(first)
        kind, page = "meta_messenger", ctx["ch"]["meta_messenger"]["address"]
        mock.behaviour(sender=page, window=True)
        psid = "5%015d" % (uuid.uuid4().int % 10 ** 15)
        inbound(first, mock, ctx, kind, psid)
    mock.control("/_mock/inbound", {"sender": page, "user": psid, "ago_s": 25 * H})
    h.sql("UPDATE messages SET created_at = created_at - interval '25 hours' WHERE tenant_id = %s AND channel_id = %s"
          % (ctx["tenant"], ctx["ch"][kind]["id"]))
    gw = gateway(mock)
    with gw:
        refused_outside(gw, mock, ctx, kind, "free-form 25 hours after the customer's message", to=psid,
                        body="still there?")
        mid = accepted(gw, ctx, kind, "HUMAN_AGENT within 7 days", to=psid, body="An agent here, sorry for the wait",
                       tag="HUMAN_AGENT")
        if mid:
            sent(gw, ctx, mid, "HUMAN_AGENT reply")
        # an agent in the live inbox: free-form refused (an error frame), HUMAN_AGENT accepted
        ws = connect(gw, ctx["key"])
        ws.recv_op()
        ws.send_op({"op": "send", "channel_id": ctx["ch"][kind]["id"], "to": psid, "body": "from the inbox"})
        frames = [ws.recv_op() for _ in range(1)]
        while frames[-1].get("op") == "event":
            frames.append(ws.recv_op())
        h.ok(frames[-1].get("op") == "error" and frames[-1].get("code") == "outside_window",
             "inbox send without a tag: an outside_window error frame", frames)
        ws.send_op({"op": "send", "channel_id": ctx["ch"][kind]["id"], "to": psid, "body": "an agent, from the inbox",
                    "tag": "HUMAN_AGENT", "idempotency_key": "inbox-" + uuid.uuid4().hex})
        frames = [ws.recv_op()]
        while frames[-1].get("op") == "event":
            frames.append(ws.recv_op())
        h.ok(frames[-1].get("op") == "accepted", "inbox send with tag HUMAN_AGENT: accepted", frames)
        ws.shutdown()
        got = wait_reqs(mock, ctx, kind, 2)
        h.ok(len(got) == 2 and all(x["tag"] == "HUMAN_AGENT" and x["status"] == 200 for x in got) and
             got[1]["body"] == "an agent, from the inbox",
             "both HUMAN_AGENT replies reached the mock (which also keeps the window)", got)


def gateway(mock, **kw):
    return h.Gateway(master_key=MASTER_KEY, twilio_api_base="http://127.0.0.1:%d" % mock.port,
                     meta_graph_base="http://127.0.0.1:%d/v21.0" % mock.port, **kw)


# ---- Instagram ---------------------------------------------------------------------------------------------------

def test_instagram(gw, mock):
    ctx = setup(gw)
    kind, ig = "meta_instagram", ctx["ch"]["meta_instagram"]["address"]
    mock.behaviour(sender=ig, window=True)
    igsid = "1%016d" % (uuid.uuid4().int % 10 ** 16)
    refused_outside(gw, mock, ctx, kind, "free-form before the customer wrote", to=igsid, body="hi")
    r = send(gw, ctx, kind, to=igsid, body="hi", tag="ACCOUNT_UPDATE")
    h.ok(r.status == 400 and h.error_code(r) == "invalid_tag", "Instagram takes HUMAN_AGENT only: 400", r)
    inbound(gw, mock, ctx, kind, igsid, "do you ship to Lisbon?")
    mid = accepted(gw, ctx, kind, "a reply within 24 hours", to=igsid, body="Sim! 🇵🇹")
    if mid:
        sent(gw, ctx, mid, "Instagram text")
    mid = accepted(gw, ctx, kind, "a voice note", to=igsid, media_url="https://cdn.example.com/a/reply.m4a")
    if mid:
        sent(gw, ctx, mid, "Instagram audio")
    got = wait_reqs(mock, ctx, kind, 2)
    h.ok(len(got) == 2 and got[0]["to"] == igsid and got[0]["body"] == "Sim! 🇵🇹" and got[0]["type"] == "text" and
         got[1]["type"] == "audio" and got[1]["media"] == ["https://cdn.example.com/a/reply.m4a"],
         "POST /{IG account id}/messages: the IGSID, a text, then an audio attachment", got)
    r = send(gw, ctx, kind, to=igsid, media_url="https://cdn.example.com/terms.pdf")
    h.ok(r.status == 400 and h.error_code(r) == "invalid_media_type", "no files on Instagram: 400", r)


# ---- WhatsApp (Meta and Twilio), Content API templates ------------------------------------------------------------

def test_whatsapp(gw, mock):
    ctx = setup(gw)
    kind, pnid = "meta_whatsapp", ctx["ch"]["meta_whatsapp"]["address"]
    mock.behaviour(sender=pnid, window=True)
    wa_id = "4477%08d" % (uuid.uuid4().int % 10 ** 8)
    refused_outside(gw, mock, ctx, kind, "free-form to a number that never wrote", to="+" + wa_id, body="hi")
    components = [{"type": "body", "parameters": [{"type": "text", "text": "Ann"}, {"type": "text", "text": "#42"}]}]
    mid = accepted(gw, ctx, kind, "a template outside the window", to="+" + wa_id,
                   template={"name": "order_update", "language": {"code": "pt_BR"}, "components": components})
    if mid:
        sent(gw, ctx, mid, "WhatsApp template")
    got = wait_reqs(mock, ctx, kind, 1)
    h.ok(len(got) == 1 and got[0]["type"] == "template" and got[0].get("template") ==
         {"name": "order_update", "language": {"code": "pt_BR"}, "components": components},
         "the template reached the Cloud API with its components as given", got)
    inbound(gw, mock, ctx, kind, wa_id, "obrigada!")
    mid = accepted(gw, ctx, kind, "free-form once the customer wrote", to="+" + wa_id, body="De nada 😊")
    if mid:
        sent(gw, ctx, mid, "WhatsApp text")
    got = wait_reqs(mock, ctx, kind, 2)
    h.ok(len(got) == 2 and got[1]["type"] == "text" and got[1]["body"] == "De nada 😊", "free-form went", got)
    conv = h.sql("SELECT count(DISTINCT conversation_id) FROM messages WHERE tenant_id = %s AND channel_id = %s"
                 % (ctx["tenant"], ctx["ch"][kind]["id"]))
    h.ok(conv == "1", "the customer's wa_id and the send's +E.164 are one conversation", conv)


def test_twilio_content(gw, mock):
    ctx = setup(gw)
    wa = ctx["ch"]["twilio_whatsapp"]["address"]
    mock.behaviour(sender="whatsapp:" + wa, window=True)
    refused_outside(gw, mock, ctx, "twilio_whatsapp", "free-form on Twilio WhatsApp", to="whatsapp:+14155550111",
                    body="hi")
    variables = {"1": "12/1", "2": "3pm — ok"}
    mid = accepted(gw, ctx, "twilio_whatsapp", "a Content API template",
                   to="whatsapp:+14155550111", template={"content_sid": CONTENT_SID, "variables": variables})
    if mid:
        sent(gw, ctx, mid, "Content API template")
    got = mock.received(sender="whatsapp:" + wa).get("requests", [])
    h.ok(len(got) == 1 and got[0]["content_sid"] == CONTENT_SID and
         json.loads(got[0]["content_variables"] or "null") == variables and got[0]["body"] == "" and
         got[0]["to"] == "whatsapp:+14155550111", "ContentSid and ContentVariables (JSON text), no Body", got)

    # the customer writes (a signed Twilio WhatsApp webhook): free-form goes within 24 hours
    sid = "SM" + uuid.uuid4().hex
    r = post(gw, "/webhooks/twilio/%s" % ctx["ch"]["twilio_whatsapp"]["id"],
             [("MessageSid", sid), ("AccountSid", "AC" + "6" * 32), ("From", "whatsapp:+14155550222"),
              ("To", "whatsapp:" + wa), ("Body", "can I change my booking?"), ("NumMedia", "0"),
              ("WaId", "14155550222")])
    h.ok(r.status == 200, "the customer's signed Twilio WhatsApp webhook is taken", r)
    mock.control("/_mock/inbound", {"sender": "whatsapp:" + wa, "user": "whatsapp:+14155550222"})
    q = ("SELECT count(*) FROM messages WHERE tenant_id = %s AND direction = 'in' AND sender = '+14155550222'"
         % ctx["tenant"])
    h.ok(h.wait_for(lambda: h.sql(q) != "0", 10), "and applied by the channel's session")
    mid = accepted(gw, ctx, "twilio_whatsapp", "free-form once the customer wrote", to="whatsapp:+14155550222",
                   body="Sure: which day suits you?")
    if mid:
        sent(gw, ctx, mid, "Twilio WhatsApp free-form")
    got = mock.received(sender="whatsapp:" + wa).get("requests", [])
    h.ok(len(got) == 2 and got[1]["body"] == "Sure: which day suits you?" and got[1]["status"] == 201,
         "it reached the Messages API (whose window, kept by the mock, is open too)", got)

    mid = accepted(gw, ctx, "twilio_sms", "a Content API template on SMS", to="+14155550112",
                   template={"content_sid": CONTENT_SID})
    if mid:
        sent(gw, ctx, mid, "SMS content template")
    mid = accepted(gw, ctx, "twilio_sms", "SMS free-form: no window", to="+14155550113", body="no window on SMS")
    if mid:
        sent(gw, ctx, mid, "SMS text")
    got = wait_reqs(mock, ctx, "twilio_sms", 2)
    h.ok(len(got) == 2 and got[0]["content_sid"] == CONTENT_SID and got[0]["content_variables"] is None and
         got[1]["body"] == "no window on SMS", "both reached the Messages API", got)


def test_validation(gw, mock):
    ctx = setup(gw)
    before = outbound_count(ctx)
    cases = [
        ("twilio_whatsapp", {"to": "+14155550100", "template": "order_update"}, "invalid_template",
         "a template that is not an object"),
        ("twilio_whatsapp", {"to": "+14155550100", "template": {"content_sid": CONTENT_SID, "name": "x"}},
         "invalid_template", "name and content_sid together"),
        ("twilio_whatsapp", {"to": "+14155550100", "template": {"content_sid": CONTENT_SID, "variables": {"1": 2}}},
         "invalid_template", "a variable that is not a string"),
        ("twilio_whatsapp", {"to": "+14155550100", "template": {"content_sid": CONTENT_SID, "variables": ["a"]}},
         "invalid_template", "variables an array"),
        ("twilio_whatsapp", {"to": "+14155550100", "template": {"content_sid": 7}}, "invalid_template",
         "a content_sid that is not a string"),
        ("twilio_whatsapp", {"to": "+14155550100", "template": {"content_sid": "HX12"}}, "invalid_template",
         "a short content_sid"),
        ("twilio_whatsapp", {"to": "+14155550100", "template": {"content_sid": CONTENT_SID, "extra": 1}},
         "invalid_template", "an unknown member"),
        ("twilio_whatsapp", {"to": "+14155550100", "template": {"name": "order_update", "language": "en_US"}},
         "invalid_template", "a Meta template on Twilio"),
        ("twilio_whatsapp", {"to": "+14155550100", "template": {"content_sid": CONTENT_SID}, "body": "hi"},
         "invalid_template", "a content template with a body"),
        ("meta_whatsapp", {"to": "+14155550100", "template": {"content_sid": CONTENT_SID}}, "invalid_template",
         "a Content API template on Meta"),
        ("meta_whatsapp", {"to": "+14155550100", "template": {"name": "order_update", "language": 5}},
         "invalid_template", "a language that is a number"),
        ("meta_whatsapp", {"to": "+14155550100", "template": {"name": "order_update", "components": {}}},
         "invalid_template", "components an object"),
        ("meta_whatsapp", {"to": "+14155550100", "template": {"name": "Order Update", "language": "en_US"}},
         "invalid_template", "a name with capitals and a space"),
        ("meta_messenger", {"to": "6000000000000001", "body": "hi", "tag": "human_agent"}, "invalid_tag",
         "a lower-case tag"),
        ("meta_messenger", {"to": "6000000000000001", "tag": "HUMAN_AGENT",
                            "template": {"name": "x", "language": "en"}}, "invalid_tag", "a tag and a template"),
        ("meta_messenger", {"to": "6000000000000001", "body": "hi", "tag": 1}, "invalid_request",
         "a tag that is not a string"),
        ("twilio_sms", {"to": "+14155550100", "body": "hi", "tag": "HUMAN_AGENT"}, "invalid_tag", "a tag on SMS"),
        ("twilio_sms", {"to": "6000000000000001", "body": "hi"}, "invalid_recipient", "a PSID on SMS"),
        ("meta_instagram", {"to": "not-an-id", "body": "hi"}, "invalid_recipient", "an IGSID that is not digits"),
    ]
    for kind, fields, code, what in cases:
        r = send(gw, ctx, kind, **fields)
        h.ok(r.status == 400 and h.error_code(r) == code, "%s: %s: 400 %s" % (kind, what, code), r)
    h.ok(outbound_count(ctx) == before, "none of them stored")


# ---- the mock provider's own window --------------------------------------------------------------------------------

def test_mock_window(mock):
    page, pnid, psid = numeric_id(), numeric_id(), "6000000000000099"
    token = {"Content-Type": "application/json", "Authorization": "Bearer EAAB-token"}

    def fb(payload, account=page):
        return mock.request("POST", "/v21.0/%s/messages" % account, token, json.dumps(payload).encode())

    text = {"recipient": {"id": psid}, "messaging_type": "RESPONSE", "message": {"text": "hi"}}
    r = fb(text)
    h.ok(r.status == 200 and r.json().get("recipient_id") == psid and r.json().get("message_id", "").startswith("m_"),
         "Send API without window: 200 {recipient_id, message_id}", r)
    h.ok(mock.behaviour(sender=page, window=True).get("window") is True, "window: true per sender")
    r = fb(text)
    err = r.json().get("error", {}) if r.status == 400 else {}
    h.ok(r.status == 400 and err.get("code") == 10 and err.get("error_subcode") == 2018278,
         "outside the window: 400 code 10, subcode 2018278", r)
    r = fb(dict(text, messaging_type="MESSAGE_TAG", tag="HUMAN_AGENT"))
    h.ok(r.status == 400, "HUMAN_AGENT to someone who never wrote: refused", r)
    r = fb(dict(text, messaging_type="MESSAGE_TAG", tag="ACCOUNT_UPDATE"))
    h.ok(r.status == 200, "ACCOUNT_UPDATE goes at any time", r)
    r = mock.control("/_mock/inbound", {"sender": page, "user": psid, "ago_s": 2 * 24 * H})
    h.ok(r.status == 200, "POST /_mock/inbound", r)
    h.ok(fb(text).status == 400 and fb(dict(text, messaging_type="MESSAGE_TAG", tag="HUMAN_AGENT")).status == 200,
         "2 days after the customer wrote: free-form refused, HUMAN_AGENT taken")
    mock.control("/_mock/inbound", {"sender": page, "user": psid})
    h.ok(fb(text).status == 200, "just after: free-form taken")
    r = fb({"recipient": {"id": psid}, "messaging_type": "MESSAGE_TAG", "message": {"text": "x"}})
    h.ok(r.status == 400 and r.json()["error"]["code"] == 100, "MESSAGE_TAG without a tag: 400 code 100", r)
    r = fb({"recipient": {"id": psid}, "messaging_type": "RESPONSE",
            "message": {"attachment": {"type": "image", "payload": {"url": "https://x.example/a.png"}}}})
    h.ok(r.status == 200, "an attachment", r)
    got = mock.received(sender=page).get("requests", [])
    h.ok([(x["type"], x["status"], x["tag"]) for x in got] ==
         [("text", 200, None), ("text", 400, None), ("text", 400, "HUMAN_AGENT"), ("text", 200, "ACCOUNT_UPDATE"),
          ("text", 400, None), ("text", 200, "HUMAN_AGENT"), ("text", 200, None), ("image", 200, None)],
         "every well-formed send recorded, refused ones with their 400", got)
    r = mock.control("/_mock/inbound", {"sender": page})
    h.ok(r.status == 400, "/_mock/inbound without a user: 400", r)

    mock.behaviour(sender=pnid, window=True)
    r = mock.meta({"messaging_product": "whatsapp", "to": "+447700900123", "type": "text", "text": {"body": "hi"}},
                  pnid=pnid)
    err = r.json().get("error", {}) if r.status == 400 else {}
    h.ok(r.status == 400 and err.get("code") == 131047, "WhatsApp outside the window: 131047 Re-engagement", r)
    r = mock.meta({"messaging_product": "whatsapp", "to": "+447700900123", "type": "template",
                   "template": {"name": "hello_world", "language": {"code": "en_US"}}}, pnid=pnid)
    h.ok(r.status == 200, "a template goes", r)
    mock.control("/_mock/inbound", {"sender": pnid, "user": "447700900123"})
    r = mock.meta({"messaging_product": "whatsapp", "to": "+447700900123", "type": "text", "text": {"body": "hi"}},
                  pnid=pnid)
    h.ok(r.status == 200, "free-form once the customer wrote (+ and whatsapp: prefixes ignored)", r)

    frm = "whatsapp:+15550009999"
    mock.behaviour(sender=frm, window=True)
    base = [("To", "whatsapp:+14155550100"), ("From", frm)]
    r = mock.twilio(base + [("Body", "hi")])
    h.ok(r.status == 400 and r.json().get("code") == 63016, "Twilio WhatsApp outside the window: 63016", r)
    r = mock.twilio(base + [("ContentSid", CONTENT_SID), ("ContentVariables", '{"1":"Ann"}')])
    h.ok(r.status == 201, "a ContentSid goes", r)
    r = mock.twilio(base + [("ContentSid", "HX1")])
    h.ok(r.status == 400 and r.json().get("code") == 21655, "a malformed ContentSid: 21655", r)
    r = mock.twilio(base + [("ContentSid", CONTENT_SID), ("ContentVariables", "[1]")])
    h.ok(r.status == 400 and r.json().get("code") == 21656, "ContentVariables not an object: 21656", r)
    got = mock.received(sender=frm).get("requests", [])
    h.ok(len(got) == 2 and got[1]["content_sid"] == CONTENT_SID and got[1]["content_variables"] == '{"1":"Ann"}',
         "the template recorded with its sid and variables", got)
    mock.control("/_mock/reset")
    h.ok(mock.get("/_mock/behaviour?sender=" + page).json().get("window") is False, "reset forgets the window")


def test_file():
    from test_cluster import fresh_cluster
    with Mock() as mock:
        h.subtest(test_mock_window, mock)
        with gateway(mock) as gw:
            h.subtest(test_messenger, gw, mock)
            h.subtest(test_instagram, gw, mock)
            h.subtest(test_whatsapp, gw, mock)
            h.subtest(test_twilio_content, gw, mock)
            h.subtest(test_validation, gw, mock)
        h.subtest(test_window_expired, mock)
        # The same on a node of a cluster (of one), where the node that takes a send checks it and commits it
        # itself, and the session numbers it later (gateway/sends): every check above must hold there too.
        fresh_cluster()
        with gateway(mock, cluster="on", node_id="channels-out-" + uuid.uuid4().hex[:6]) as gw:
            h.subtest(test_messenger, gw, mock)
            h.subtest(test_instagram, gw, mock)
            h.subtest(test_whatsapp, gw, mock)
            h.subtest(test_twilio_content, gw, mock)
            h.subtest(test_validation, gw, mock)


if __name__ == "__main__":
    h.main(test_file)
