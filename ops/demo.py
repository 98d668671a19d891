#!/usr/bin/env python3
"""ops/demo.py — the offline demo around `make run`.

    ops/demo.py seed URL ADMIN_TOKEN MOCK_URL   create (once) the demo tenant: an API key, a Twilio SMS, a Twilio
                                                WhatsApp and a Meta WhatsApp channel, and the Meta app; writes
                                                var/demo.json (the key and the channels' credentials) and prints
                                                how to use them
    ops/demo.py inbound [sms|whatsapp|meta] [TEXT]
                                                posts a correctly signed inbound webhook to the running gateway,
                                                as Twilio or Meta would, for the demo channels
    ops/demo.py call [SECONDS]                  a call to the demo's voice number, placed by the mock provider as
                                                Twilio would: the signed voice webhook, the Media Stream the TwiML
                                                asks for (relayed to the voice app, VOICE_APP or ops/voice_echo.py,
                                                and back), status callbacks; prints what came back

Standard library only. The signatures are computed here, independently of the gateway: Twilio's X-Twilio-Signature
(HMAC-SHA1 of the URL and the sorted parameters, with the channel's auth token) and Meta's X-Hub-Signature-256
(HMAC-SHA256 of the raw body, with the app secret).
"""
import base64
import hashlib
import hmac
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STATE = os.environ.get("DEMO_STATE") or os.path.join(ROOT, "var", "demo.json")
CUSTOMER = "+14155550123"


def call(url, body=None, headers=None, method=None):
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    req = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            text = r.read().decode()
            return r.status, (json.loads(text) if text.startswith(("{", "[")) else text)
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def voice_channel(base, admin, tid, account, token, run, mock_url):
    """The demo's twilio_voice channel: calls are streamed to the voice app (VOICE_APP, default the mock's echo)."""
    app = os.environ.get("VOICE_APP") or mock_url.replace("http", "ws", 1) + "/_mock/voice-app"
    body = {"type": "twilio_voice", "address": "+1557%07d" % (run % 10 ** 7),
            "credentials": {"account_sid": account, "auth_token": token},
            "settings": {"voice_mode": "stream", "media_url": app, "max_concurrent_calls": 10}}
    st, ch = call(base + "/v1/admin/tenants/%s/channels" % tid, body, admin)
    if st != 201:
        sys.exit("demo: cannot create the voice channel: %s %s" % (st, ch))
    return {"id": ch["id"], "address": body["address"], "media_url": app}


def save(state):
    os.makedirs(os.path.dirname(STATE), exist_ok=True)
    with open(STATE, "w") as f:
        json.dump(state, f, indent=2)
    os.chmod(STATE, 0o600)


def seed(base, admin_token, mock_url):
    admin = {"Authorization": "Bearer " + admin_token, "Content-Type": "application/json"}
    if os.path.exists(STATE):
        with open(STATE) as f:
            state = json.load(f)
        status, _ = call(base + "/v1/events?limit=1", headers={"Authorization": "Bearer " + state["key"]})
        if status == 200:
            if "voice" not in state["channels"]:  # a demo seeded before voice: give it its voice number
                state["channels"]["voice"] = voice_channel(base, admin, state["tenant"], state["account_sid"],
                                                           state["auth_token"], uuid.uuid4().int, mock_url)
                save(state)
            show(state)
            return
    st, tenant = call(base + "/v1/admin/tenants", {"name": "Demo"}, admin)
    if st != 201:
        sys.exit("demo: cannot create the tenant: %s %s" % (st, tenant))
    tid = tenant["id"]
    _, key = call(base + "/v1/admin/tenants/%s/keys" % tid, {}, admin)
    run = uuid.uuid4().int
    app = {"app_id": os.environ.get("DEMO_META_APP_ID") or str(900000000000000 + run % 10 ** 14),
           "app_secret": os.environ.get("DEMO_META_APP_SECRET") or uuid.uuid4().hex,
           "verify_token": uuid.uuid4().hex}
    call(base + "/v1/admin/meta-apps", app, admin)
    token = uuid.uuid4().hex
    account = "AC" + uuid.uuid4().hex
    channels = {}
    for name, body in [
        ("sms", {"type": "twilio_sms", "address": "+1555%07d" % (run % 10 ** 7),
                 "credentials": {"account_sid": account, "auth_token": token}}),
        ("whatsapp", {"type": "twilio_whatsapp", "address": "+1556%07d" % (run % 10 ** 7),
                      "credentials": {"account_sid": account, "auth_token": token}}),
        ("meta", {"type": "meta_whatsapp", "address": str(100000000000000 + run % 10 ** 14),
                  "meta_app_id": app["app_id"], "credentials": {"access_token": "EAAD" + uuid.uuid4().hex}}),
    ]:
        st, ch = call(base + "/v1/admin/tenants/%s/channels" % tid, body, admin)
        if st != 201:
            sys.exit("demo: cannot create the %s channel: %s %s" % (name, st, ch))
        channels[name] = {"id": ch["id"], "address": body["address"]}
    channels["voice"] = voice_channel(base, admin, tid, account, token, run, mock_url)
    state = {"base": base, "tenant": tid, "key": key["key"], "auth_token": token, "account_sid": account,
             "meta_app": app, "channels": channels, "mock": mock_url}
    save(state)
    show(state)


def show(s):
    k, b = s["key"], s["base"]
    print("""
demo: tenant %(tenant)s is ready (credentials in var/demo.json)
  API key:        %(key)s
  channels:       sms %(sms)s, whatsapp %(wa)s, meta %(meta)s
  watch live:     the inbox WebSocket at %(ws)s/v1/inbox (hello with the key above)
  an inbound SMS: ops/demo.py inbound sms "Hello!"      (also: whatsapp, meta)
  reply:          curl -s -H 'Authorization: Bearer %(key)s' -H 'Content-Type: application/json' \\
                    -d '{"channel_id":"%(sms)s","to":"%(customer)s","body":"Hi there"}' %(base)s/v1/messages
  what the provider got: curl -s '%(mock)s/_mock/received'
  a phone call:   ops/demo.py call        (voice number %(voice)s, streamed to %(app)s and back)
""" % {"voice": s["channels"]["voice"]["address"], "app": s["channels"]["voice"]["media_url"],"tenant": s["tenant"], "key": k, "sms": s["channels"]["sms"]["id"], "wa": s["channels"]["whatsapp"]["id"],
       "meta": s["channels"]["meta"]["id"], "ws": b.replace("http", "ws", 1), "base": b, "customer": CUSTOMER,
       "mock": s["mock"]})


def twilio(s, which, text):
    ch = s["channels"][which]
    path = "/webhooks/twilio/%s" % ch["id"]
    sid = "SM" + uuid.uuid4().hex
    wa = which == "whatsapp"
    params = [("MessageSid", sid), ("SmsSid", sid), ("AccountSid", s["account_sid"]),
              ("From", ("whatsapp:" if wa else "") + CUSTOMER), ("To", ("whatsapp:" if wa else "") + ch["address"]),
              ("Body", text), ("NumMedia", "0"), ("ApiVersion", "2010-04-01")]
    if wa:
        params += [("ProfileName", "Demo Customer"), ("WaId", CUSTOMER[1:])]
    url = s["base"] + path
    data = url + "".join(k + v for k, v in sorted(params))
    sig = base64.b64encode(hmac.new(s["auth_token"].encode(), data.encode(), hashlib.sha1).digest()).decode()
    return call(url, urllib.parse.urlencode(params).encode(),
                {"Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": sig})


def meta(s, text):
    ch = s["channels"]["meta"]
    body = json.dumps({"object": "whatsapp_business_account", "entry": [{"id": "0", "changes": [{
        "field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550001111", "phone_number_id": ch["address"]},
            "contacts": [{"profile": {"name": "Demo Customer"}, "wa_id": CUSTOMER[1:]}],
            "messages": [{"from": CUSTOMER[1:], "id": "wamid." + uuid.uuid4().hex, "timestamp": str(int(time.time())),
                          "type": "text", "text": {"body": text}}]}}]}]}).encode()
    sig = "sha256=" + hmac.new(s["meta_app"]["app_secret"].encode(), body, hashlib.sha256).hexdigest()
    return call(s["base"] + "/webhooks/meta/" + s["meta_app"]["app_id"], body,
                {"Content-Type": "application/json", "X-Hub-Signature-256": sig})


def inbound(which, text):
    if not os.path.exists(STATE):
        sys.exit("demo: no var/demo.json: start the gateway with `make run` first")
    with open(STATE) as f:
        s = json.load(f)
    status, answer = meta(s, text) if which == "meta" else twilio(s, which, text)
    print("demo: %s webhook answered %s %s" % (which, status, answer if status != 200 else "(committed)"))
    return status == 200


def place_call(seconds):
    """Asks the mock to call the demo's voice number as Twilio would, and reports the call from both sides."""
    if not os.path.exists(STATE):
        sys.exit("demo: no var/demo.json: start the gateway with `make run` first")
    with open(STATE) as f:
        s = json.load(f)
    ch = s["channels"]["voice"]
    st, placed = call(s["mock"] + "/_mock/calls", {
        "webhook": "%s/webhooks/twilio/%s/voice" % (s["base"], ch["id"]), "auth_token": s["auth_token"],
        "account_sid": s["account_sid"], "from": CUSTOMER, "to": ch["address"], "frames": int(seconds * 50),
        "mark": True}, {"Content-Type": "application/json"})
    if st != 202:
        sys.exit("demo: the mock did not place the call: %s %s" % (st, placed))
    sid = placed["calls"][0]
    print("demo: calling %s (CallSid %s) for %.0f s ..." % (ch["address"], sid, seconds))
    d = {}
    for _ in range(int(seconds * 10) + 100):
        _, d = call(s["mock"] + "/_mock/calls/" + sid)
        if d.get("status") in ("completed", "busy", "no-answer", "failed", "canceled"):
            break
        time.sleep(0.1)
    m = d.get("stream", {})
    print("demo: the call %s; TwiML: %s; the voice app echoed %s of %s audio frames back, in order: %s, "
          "round trip p50 %s µs" % (d.get("status"), d.get("twiml", {}).get("kind"), m.get("frames_received"),
                                    m.get("frames_sent"), m.get("in_order"), m.get("delay_us", {}).get("p50")))
    _, ev = call(s["base"] + "/v1/events?limit=1000", headers={"Authorization": "Bearer " + s["key"]})
    kinds = [e["type"] for e in ev.get("events", []) if e["type"].startswith("call.")][-3:]
    print("demo: the tenant's last call events: %s" % ", ".join(kinds))
    return d.get("status") == "completed" and m.get("in_order")


def main():
    if len(sys.argv) >= 5 and sys.argv[1] == "seed":
        seed(sys.argv[2].rstrip("/"), sys.argv[3], sys.argv[4].rstrip("/"))
    elif len(sys.argv) >= 2 and sys.argv[1] == "inbound":
        which = sys.argv[2] if len(sys.argv) > 2 else "sms"
        if which not in ("sms", "whatsapp", "meta"):
            sys.exit("usage: ops/demo.py inbound [sms|whatsapp|meta] [TEXT]")
        sys.exit(0 if inbound(which, sys.argv[3] if len(sys.argv) > 3 else "Hello from the demo 👋") else 1)
    elif len(sys.argv) >= 2 and sys.argv[1] == "call":
        sys.exit(0 if place_call(float(sys.argv[2]) if len(sys.argv) > 2 else 3) else 1)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
