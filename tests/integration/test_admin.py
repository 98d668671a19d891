"""tests/integration/test_admin.py — the admin REST API on the real stack: authentication, JSON validation,
tenants, API keys (shown once, stored only as SHA-256), channels (credentials stored sealed, webhook URLs, one
channel per provider address), Meta apps, and the errors each bad request deserves.
Run: SB_BIN=build/release/switchboard python3 tests/integration/test_admin.py"""

import hashlib
import json
import uuid

import harness as h

MASTER_KEY = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"


def api(gw, method, path, body=None, token=h.ADMIN_TOKEN, content_type="application/json", raw=None):
    headers = {"Host": "127.0.0.1:%d" % gw.port}
    if token is not None:
        headers["Authorization"] = "Bearer " + token
    if content_type:
        headers["Content-Type"] = content_type
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else b"")
    return h.request(gw.port, method, path, headers, data)


def j(r):
    try:
        return r.json()
    except Exception:
        return None


def test_auth(gw):
    r = api(gw, "POST", "/v1/admin/tenants", {"name": "x"}, token=None)
    h.ok(r.status == 401 and h.error_code(r) == "unauthorized", "no token: 401 unauthorized", r)
    r = api(gw, "POST", "/v1/admin/tenants", {"name": "x"}, token="wrong")
    h.ok(r.status == 401 and h.error_code(r) == "unauthorized", "wrong token: 401", r)


def test_validation(gw):
    r = api(gw, "POST", "/v1/admin/tenants", {"name": "x"}, content_type="text/plain")
    h.ok(r.status == 415 and h.error_code(r) == "unsupported_media_type", "wrong content type: 415", r)
    r = api(gw, "POST", "/v1/admin/tenants", raw=b"{not json")
    h.ok(r.status == 400 and h.error_code(r) == "bad_request", "malformed JSON: 400", r)
    r = api(gw, "POST", "/v1/admin/tenants", raw=b'{"name":"a","name":"b"}')
    h.ok(r.status == 400, "duplicate JSON keys: 400", r)
    r = api(gw, "POST", "/v1/admin/tenants", raw=b'["name"]')
    h.ok(r.status == 400, "a JSON array instead of an object: 400", r)
    r = api(gw, "POST", "/v1/admin/tenants", {"name": ""})
    h.ok(r.status == 400 and b"'name'" in r.body, "empty name: 400 naming the field", r)
    r = api(gw, "POST", "/v1/admin/tenants", raw=b'{"name":"\xff\xfe"}')
    h.ok(r.status == 400, "invalid UTF-8: 400", r)
    r = api(gw, "DELETE", "/v1/admin/tenants")
    h.ok(r.status == 405 and h.error_code(r) == "method_not_allowed", "DELETE on tenants: 405", r)
    r = api(gw, "GET", "/v1/admin/nothing")
    h.ok(r.status == 404 and h.error_code(r) == "not_found", "unknown admin route: 404", r)


def test_tenants_keys_channels(gw):
    name = "Café Ünïcode %s" % uuid.uuid4().hex[:8]
    r = api(gw, "POST", "/v1/admin/tenants", {"name": name})
    t = j(r) or {}
    h.ok(r.status == 201 and isinstance(t.get("id"), str) and t.get("name") == name,
         "tenant created: 201 with a string id and the name intact", r)
    tid = t.get("id", "0")

    r = api(gw, "GET", "/v1/admin/tenants")
    names = [x.get("name") for x in (j(r) or {}).get("tenants", [])]
    h.ok(r.status == 200 and name in names, "the tenant is listed", r)

    r = api(gw, "POST", "/v1/admin/tenants/%s/keys" % tid)
    k = j(r) or {}
    key = k.get("key", "")
    h.ok(r.status == 201 and key.startswith("sb_live_") and len(key) == 51 and key.startswith(k.get("prefix", "?")),
         "API key issued: sb_live_ + 43 characters, with its public prefix", r)
    digest = hashlib.sha256(key.encode()).hexdigest()
    h.ok(h.sql("SELECT count(*) FROM api_keys WHERE tenant_id = %s AND key_hash = '%s'" % (tid, digest)) == "1",
         "the database holds the key's SHA-256")
    h.ok(h.sql("SELECT count(*) FROM api_keys a JOIN api_key_routes r USING (key_hash) WHERE a.key_hash LIKE '%%%s%%'"
             % key[8:20]) == "0", "and never the key itself")
    r = api(gw, "POST", "/v1/admin/tenants/999999999/keys")
    h.ok(r.status == 404 and h.error_code(r) == "not_found", "key for a missing tenant: 404", r)

    number = "+1555%07d" % (uuid.uuid4().int % 10000000)
    token = "tok" + uuid.uuid4().hex
    body = {"type": "twilio_sms", "address": number,
            "credentials": {"account_sid": "AC" + "0" * 32, "auth_token": token},
            "settings": {"rate_per_s": 1}}
    r = api(gw, "POST", "/v1/admin/tenants/%s/channels" % tid, body)
    c = j(r) or {}
    cid = c.get("id", "0")
    h.ok(r.status == 201 and c.get("type") == "twilio_sms" and c.get("address") == number and
         c.get("webhook_url", "").endswith("/webhooks/twilio/%s" % cid) and
         c.get("status_callback_url", "").endswith("/webhooks/twilio/%s/status" % cid),
         "Twilio channel created with its webhook and status callback URLs", r)
    h.ok(c.get("webhook_url", "").startswith("http://127.0.0.1:%d/" % gw.port),
         "without public_url the URLs use the Host the request came to", c.get("webhook_url"))
    sealed = h.sql("SELECT credentials_sealed FROM channels WHERE id = %s" % cid)
    h.ok(sealed != "" and token not in sealed and "auth_token" not in sealed,
         "credentials are stored sealed: neither the token nor the field name is readable")
    h.ok(h.sql("SELECT tenant_id FROM channel_routes WHERE channel_id = %s" % cid) == tid,
         "the channel is routable by its id")

    r = api(gw, "POST", "/v1/admin/tenants/%s/channels" % tid, body)
    h.ok(r.status == 409 and h.error_code(r) == "conflict", "the same provider address again: 409", r)
    bad = dict(body, address="5551234")
    r = api(gw, "POST", "/v1/admin/tenants/%s/channels" % tid, bad)
    h.ok(r.status == 400 and b"E.164" in r.body, "a Twilio address that is not E.164: 400 saying so", r)
    r = api(gw, "POST", "/v1/admin/tenants/%s/channels" % tid, dict(body, type="pigeon"))
    h.ok(r.status == 400 and b"'type'" in r.body, "unknown channel type: 400", r)
    r = api(gw, "POST", "/v1/admin/tenants/%s/channels" % tid, dict(body, credentials={"account_sid": "AC1"}))
    h.ok(r.status == 400 and b"auth_token" in r.body, "missing credential: 400 naming it", r)
    r = api(gw, "POST", "/v1/admin/tenants/999999999/channels", dict(body, address="+15550000001"))
    h.ok(r.status == 404, "channel for a missing tenant: 404", r)

    with h.Console(gw.admin_port) as con:
        con.cmd("auth " + h.ADMIN_TOKEN)
        lines = con.cmd("tenants -j")
        rows = (json.loads(lines[0]) if lines else {}).get("tenants", [])
        mine = [x for x in rows if str(x.get("id")) == tid]
        h.ok(len(mine) == 1 and mine[0].get("name") == name and mine[0].get("channels") == 1,
             "console tenants -j: the tenant, its name and one channel", lines)
        lines = con.cmd("channels %s" % tid)
        h.ok(len(lines) >= 2 and lines[0].split()[:3] == ["id", "type", "address"] and number in "\n".join(lines)
             and token not in "\n".join(lines), "console channels: a table with the address, no credentials", lines)
        lines = con.cmd("channels abc")
        h.ok(lines and lines[0].startswith("ERR usage"), "console channels with a bad id: ERR usage", lines)

    r = api(gw, "GET", "/v1/admin/tenants/%s/channels" % tid)
    chans = (j(r) or {}).get("channels", [])
    h.ok(r.status == 200 and len(chans) == 1 and chans[0].get("address") == number and "credentials" not in
         json.dumps(chans), "channels listed, without credentials", r)


def test_meta_apps(gw):
    app = str(10 ** 14 + uuid.uuid4().int % 10 ** 14)
    secret = "s" + uuid.uuid4().hex
    r = api(gw, "POST", "/v1/admin/meta-apps", {"app_id": app, "app_secret": secret, "verify_token": "vt-1"})
    a = j(r) or {}
    h.ok(r.status == 201 and a.get("webhook_url", "").endswith("/webhooks/meta/" + app), "Meta app registered", r)
    row = h.sql("SELECT app_secret_sealed || verify_token_hash FROM meta_apps WHERE app_id = '%s'" % app)
    h.ok(row != "" and secret not in row and "vt-1" not in row, "its secret and verify token are not stored in clear")
    r = api(gw, "POST", "/v1/admin/meta-apps", {"app_id": app, "app_secret": secret, "verify_token": "vt-1"})
    h.ok(r.status == 409, "registering it twice: 409", r)
    r = api(gw, "POST", "/v1/admin/meta-apps", {"app_id": "abc", "app_secret": "x", "verify_token": "y"})
    h.ok(r.status == 400, "non-numeric app id: 400", r)


def test_no_master_key():
    with h.Gateway(master_key=None) as gw:
        r = api(gw, "POST", "/v1/admin/tenants", {"name": "nomk"})
        tid = (j(r) or {}).get("id", "0")
        r = api(gw, "POST", "/v1/admin/tenants/%s/channels" % tid,
                {"type": "meta_whatsapp", "address": "1234567", "credentials": {"access_token": "x"}})
        h.ok(r.status == 503 and b"master_key" in r.body, "without master_key, credentials are refused: 503", r)


def test_no_admin_token():
    with h.Gateway(admin_token=None) as gw:
        r = api(gw, "POST", "/v1/admin/tenants", {"name": "x"})
        h.ok(r.status == 401, "without admin_token the admin API refuses all", r)


def test_file():
    with h.Gateway(master_key=MASTER_KEY) as gw:
        for t in (test_auth, test_validation, test_tenants_keys_channels, test_meta_apps):
            h.subtest(t, gw)
    h.subtest(test_no_master_key)
    h.subtest(test_no_admin_token)


h.main(test_file)
