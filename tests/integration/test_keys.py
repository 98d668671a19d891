"""tests/integration/test_keys.py — scoped API keys on the real stack: what each role (owner, agent, readonly) may do
on every route family (messages, conversations, events, calls, keys, tokens); key listings that never show a
secret; revocation taking effect at the next request and closing the live inbox clients of the key (opened with the
key itself, and with a token minted from it) with 4401; rotation whose old key works for the overlap and then stops
(its live clients closed too); tokens that can only narrow their key's role; last_used_at written at most about once
a minute per key.
Run: SB_BIN=build/release/switchboard python3 tests/integration/test_keys.py"""

import json
import time
import uuid

import harness as h
from test_webhooks import AUTH_TOKEN, MASTER_KEY
from wsclient import Closed, WebSocket


def call(gw, method, path, token, body=None):
    headers = {"Host": "127.0.0.1:%d" % gw.port}
    if token is not None:
        headers["Authorization"] = "Bearer " + token
    data = b""
    if body is not None:
        headers["Content-Type"] = "application/json"
        data = json.dumps(body).encode()
    return h.request(gw.port, method, path, headers, data)


def admin(gw, method, path, body=None):
    return call(gw, method, path, h.ADMIN_TOKEN, body)


def j(r):
    try:
        return r.json()
    except Exception:  # noqa: BLE001
        return None


def setup(gw):
    t = admin(gw, "POST", "/v1/admin/tenants", {"name": "keys " + uuid.uuid4().hex[:6]}).json()["id"]
    keys = {}
    for role in ("owner", "agent", "readonly"):
        r = admin(gw, "POST", "/v1/admin/tenants/%s/keys" % t, {"role": role})
        keys[role] = j(r) or {}
    number = "+1777%07d" % (uuid.uuid4().int % 10 ** 7)
    ch = admin(gw, "POST", "/v1/admin/tenants/%s/channels" % t,
               {"type": "twilio_sms", "address": number,
                "credentials": {"account_sid": "AC" + "3" * 32, "auth_token": AUTH_TOKEN}}).json()
    return {"tenant": t, "keys": keys, "channel": ch["id"]}


def hello(gw, cred):
    ws = WebSocket.connect(gw.port, protocols=["switchboard.v1.json"])
    ws.send_op({"op": "hello", "token": cred})
    m = ws.recv_op()
    return ws, m


def closed_with(ws, timeout=5):
    """The error frame's code and the close code the server ends ws with."""
    code = None
    try:
        while True:
            m = ws.recv_op(timeout=timeout)
            if m.get("op") == "error":
                code = m.get("code")
    except Closed as e:
        return code, e.code
    except Exception as e:  # noqa: BLE001
        return code, repr(e)


def test_issue(gw, t):
    for role in ("owner", "agent", "readonly"):
        k = t["keys"][role]
        h.ok(isinstance(k.get("id"), str) and k.get("key", "").startswith("sb_live_") and k.get("role") == role,
             "admin issues a%s %s key: 201 {id, key, role}" % ("n" if role[0] in "ao" else "", role), k)
    r = admin(gw, "POST", "/v1/admin/tenants/%s/keys" % t["tenant"])
    h.ok(r.status == 201 and j(r).get("role") == "owner", "no body: an owner key (the default)", r)
    r = admin(gw, "POST", "/v1/admin/tenants/%s/keys" % t["tenant"], {"role": "god"})
    h.ok(r.status == 400, "an unknown role: 400", r)
    r = admin(gw, "POST", "/v1/admin/tenants/%s/keys" % t["tenant"], {"role": "agent", "x": 1})
    h.ok(r.status == 400, "an unknown member: 400", r)
    r = admin(gw, "POST", "/v1/admin/tenants/999999999/keys", {"role": "agent"})
    h.ok(r.status == 404, "a key for a missing tenant: 404", r)


def test_roles(gw, t):
    """Each role on each route family: allowed (any answer but 401/403) or refused 403 forbidden."""
    send = {"channel_id": t["channel"], "to": "+14155550100", "body": "role check"}
    routes = [  # (what, method, path, body, roles allowed)
        ("GET /v1/events", "GET", "/v1/events", None, {"owner", "agent", "readonly"}),
        ("GET /v1/conversations", "GET", "/v1/conversations", None, {"owner", "agent", "readonly"}),
        ("GET /v1/conversations/{id}/messages", "GET", "/v1/conversations/999999999/messages", None,
         {"owner", "agent", "readonly"}),
        ("GET /v1/messages/{id}", "GET", "/v1/messages/999999999", None, {"owner", "agent", "readonly"}),
        ("POST /v1/messages", "POST", "/v1/messages", send, {"owner", "agent"}),
        ("GET /v1/calls", "GET", "/v1/calls", None, {"owner", "agent", "readonly"}),
        ("GET /v1/calls/{id}", "GET", "/v1/calls/999999999", None, {"owner", "agent", "readonly"}),
        ("POST /v1/calls", "POST", "/v1/calls", {"channel_id": t["channel"], "to": "+14155550100"},
         {"owner", "agent"}),
        ("GET /v1/keys", "GET", "/v1/keys", None, {"owner"}),
        ("POST /v1/keys", "POST", "/v1/keys", {"role": "readonly"}, {"owner"}),
        ("POST /v1/tokens", "POST", "/v1/tokens", {"ttl_s": 60}, {"owner", "agent", "readonly"}),
    ]
    for what, method, path, body, allowed in routes:
        for role in ("owner", "agent", "readonly"):
            r = call(gw, method, path, t["keys"][role]["key"], body)
            if role in allowed:
                h.ok(r.status not in (401, 403), "%s with a%s %s key: allowed (%d)" %
                     (what, "n" if role[0] in "ao" else "", role, r.status), r)
            else:
                h.ok(r.status == 403 and h.error_code(r) == "forbidden",
                     "%s with a%s %s key: 403 forbidden" % (what, "n" if role[0] in "ao" else "", role), r)


def test_tokens(gw, t):
    agent = t["keys"]["agent"]["key"]
    r = call(gw, "POST", "/v1/tokens", agent, {"ttl_s": 60})
    h.ok(r.status == 201 and j(r).get("role") == "agent", "an agent key's token is an agent token by default", r)
    r = call(gw, "POST", "/v1/tokens", agent, {"ttl_s": 60, "role": "owner"})
    h.ok(r.status == 403 and h.error_code(r) == "forbidden", "an agent key asking for an owner token: 403", r)
    r = call(gw, "POST", "/v1/tokens", agent, {"ttl_s": 60, "role": "root"})
    h.ok(r.status == 400, "an unknown role: 400", r)
    r = call(gw, "POST", "/v1/tokens", agent, {"ttl_s": 60, "role": "readonly"})
    tok = (j(r) or {}).get("token", "")
    h.ok(r.status == 201 and j(r).get("role") == "readonly", "an agent key may mint a readonly token", r)
    send = {"channel_id": t["channel"], "to": "+14155550100", "body": "narrowed"}
    r = call(gw, "POST", "/v1/messages", tok, send)
    h.ok(r.status == 403 and h.error_code(r) == "forbidden", "the readonly token may not send: 403", r)
    r = call(gw, "GET", "/v1/events", tok)
    h.ok(r.status == 200, "but reads the events", r)
    ws, m = hello(gw, tok)
    h.ok(m.get("op") == "welcome", "a readonly token opens the live inbox", m)
    ws.send_op({"op": "send", "channel_id": t["channel"], "to": "+14155550100", "body": "x", "idempotency_key": "k1"})
    m = ws.recv_op()
    h.ok(m.get("op") == "error" and m.get("code") == "forbidden", "its send op is refused: error forbidden", m)
    ws.send_op({"op": "ping"})
    h.ok(ws.recv_op().get("op") == "pong", "and the connection stays")
    ws.shutdown()
    owner_tok = j(call(gw, "POST", "/v1/tokens", t["keys"]["owner"]["key"], {"ttl_s": 60}))["token"]
    r = call(gw, "GET", "/v1/keys", owner_tok)
    h.ok(r.status == 401, "/v1/keys takes an API key, not a token (even an owner's): 401", r)
    r = call(gw, "POST", "/v1/tokens", owner_tok, {"ttl_s": 60})
    h.ok(r.status == 401, "a token cannot mint tokens: 401", r)


def test_listing(gw, t):
    r = admin(gw, "GET", "/v1/admin/tenants/%s/keys" % t["tenant"])
    keys = (j(r) or {}).get("keys", [])
    ids = {k["id"] for k in keys}
    h.ok(r.status == 200 and {t["keys"][x]["id"] for x in t["keys"]} <= ids, "the admin listing shows the keys", r)
    fields = {"id", "prefix", "role", "created_at", "last_used_at", "expires_at", "replaced_by"}
    h.ok(all(set(k) == fields for k in keys), "each with id, prefix, role, created_at, last_used_at (and expiry)",
         keys[:1])
    secrets = [t["keys"][x]["key"] for x in t["keys"]]
    body = r.body.decode()
    h.ok(not any(s in body or s[12:] in body for s in secrets) and "hash" not in body,
         "never a secret, nor its hash", body[:300])
    byid = {k["id"]: k for k in keys}
    h.ok(all(byid[t["keys"][x]["id"]]["role"] == x and
             t["keys"][x]["key"].startswith(byid[t["keys"][x]["id"]]["prefix"]) for x in t["keys"]),
         "with each key's role and public prefix")
    r = call(gw, "GET", "/v1/keys", t["keys"]["owner"]["key"])
    h.ok(r.status == 200 and {k["id"] for k in j(r)["keys"]} == ids and
         not any(s in r.body.decode() for s in secrets), "an owner key lists its tenant's keys, no secret either", r)
    other = setup(gw)
    r = call(gw, "GET", "/v1/keys", other["keys"]["owner"]["key"])
    h.ok(not ({k["id"] for k in j(r)["keys"]} & ids), "another tenant's owner sees none of them", r)
    r = call(gw, "DELETE", "/v1/keys/%s" % t["keys"]["agent"]["id"], other["keys"]["owner"]["key"])
    h.ok(r.status == 404, "and cannot revoke them: 404", r)
    r = call(gw, "POST", "/v1/keys/%s/rotate" % t["keys"]["agent"]["id"], other["keys"]["owner"]["key"])
    h.ok(r.status == 404, "nor rotate them: 404", r)


def test_revoke(gw, t):
    k = j(admin(gw, "POST", "/v1/admin/tenants/%s/keys" % t["tenant"], {"role": "agent"}))
    h.ok(call(gw, "GET", "/v1/events", k["key"]).status == 200, "a new agent key works")
    tok = j(call(gw, "POST", "/v1/tokens", k["key"], {"ttl_s": 600}))["token"]
    ws_key, m1 = hello(gw, k["key"])
    ws_tok, m2 = hello(gw, tok)
    h.ok(m1.get("op") == "welcome" and m2.get("op") == "welcome", "live inbox clients with the key and its token")
    ws_other, m3 = hello(gw, t["keys"]["agent"]["key"])
    r = admin(gw, "DELETE", "/v1/admin/tenants/%s/keys/%s" % (t["tenant"], k["id"]))
    h.ok(r.status == 200 and j(r) == {"id": k["id"], "revoked": True}, "admin revokes it: 200", r)
    r = call(gw, "GET", "/v1/events", k["key"])
    h.ok(r.status == 401, "the next request with the key: 401", r)
    r = call(gw, "GET", "/v1/events", tok)
    h.ok(r.status == 401 and h.error_code(r) == "token_revoked", "and with a token minted from it: 401 token_revoked",
         r)
    t0 = time.monotonic()
    got = closed_with(ws_key)
    h.ok(got == ("key_revoked", 4401), "the live client opened with the key: error frame, then close 4401", got)
    got = closed_with(ws_tok)
    h.ok(got == ("key_revoked", 4401), "the one opened with a token from it: the same", got)
    h.ok(time.monotonic() - t0 < 2, "at once (%.2f s)" % (time.monotonic() - t0))
    ws_other.send_op({"op": "ping"})
    h.ok(ws_other.recv_op().get("op") == "pong", "a client of another key of the tenant stays")
    ws_other.shutdown()
    _, m = hello(gw, k["key"])
    h.ok(m.get("op") == "error", "a new hello with the revoked key is refused", m)
    _, m = hello(gw, tok)
    h.ok(m.get("op") == "error" and m.get("code") == "token_revoked", "and with its token", m)
    r = admin(gw, "DELETE", "/v1/admin/tenants/%s/keys/%s" % (t["tenant"], k["id"]))
    h.ok(r.status == 404, "revoking it again: 404", r)
    listed = {x["id"] for x in j(admin(gw, "GET", "/v1/admin/tenants/%s/keys" % t["tenant"]))["keys"]}
    h.ok(k["id"] not in listed, "and it is no longer listed")
    # an owner revokes one of its tenant's keys itself
    k2 = j(call(gw, "POST", "/v1/keys", t["keys"]["owner"]["key"], {"role": "readonly"}))
    h.ok(k2.get("role") == "readonly" and call(gw, "GET", "/v1/events", k2["key"]).status == 200,
         "an owner key issues a readonly key at /v1/keys", k2)
    r = call(gw, "DELETE", "/v1/keys/%s" % k2["id"], t["keys"]["owner"]["key"])
    h.ok(r.status == 200 and call(gw, "GET", "/v1/events", k2["key"]).status == 401,
         "and revokes it at /v1/keys/{id}: the next request is refused", r)


def test_rotation(gw, t):
    owner = t["keys"]["owner"]["key"]
    k = j(call(gw, "POST", "/v1/keys", owner, {"role": "agent"}))
    ws, m = hello(gw, k["key"])
    h.ok(m.get("op") == "welcome", "a live client with the key to rotate")
    for bad in ({"overlap_s": -1}, {"overlap_s": 604801}, {"overlap_s": "1"}, {"overlap": 5}):
        r = call(gw, "POST", "/v1/keys/%s/rotate" % k["id"], owner, bad)
        h.ok(r.status == 400, "rotate with %s: 400" % json.dumps(bad), r)
    r = call(gw, "POST", "/v1/keys/%s/rotate" % k["id"], owner, {"overlap_s": 2})
    n = j(r) or {}
    h.ok(r.status == 201 and n.get("role") == "agent" and n.get("replaces") == k["id"] and
         n.get("key", "").startswith("sb_live_") and n.get("key") != k["key"],
         "rotate: 201, a new key of the same role, naming the one it replaces", r)
    h.ok(call(gw, "GET", "/v1/events", n.get("key", "")).status == 200, "the new key works")
    h.ok(call(gw, "GET", "/v1/events", k["key"]).status == 200, "and the old one too, during the overlap")
    listed = {x["id"]: x for x in j(call(gw, "GET", "/v1/keys", owner))["keys"]}
    h.ok(listed.get(k["id"], {}).get("expires_at") and listed.get(k["id"], {}).get("replaced_by") == n.get("id"),
         "the listing shows the old key's end and its successor", listed.get(k["id"]))
    time.sleep(2.5)
    r = call(gw, "GET", "/v1/events", k["key"])
    h.ok(r.status == 401, "after the overlap the old key is refused: 401", r)
    got = closed_with(ws, timeout=3)
    h.ok(got == ("key_revoked", 4401), "and its live client was closed with 4401", got)
    h.ok(call(gw, "GET", "/v1/events", n["key"]).status == 200, "the new key still works")
    r = admin(gw, "POST", "/v1/admin/tenants/%s/keys/%s/rotate" % (t["tenant"], n["id"]), {"overlap_s": 0})
    n2 = j(r) or {}
    h.ok(r.status == 201 and n2.get("role") == "agent", "the admin rotates too (overlap 0)", r)
    h.ok(call(gw, "GET", "/v1/events", n["key"]).status == 401, "overlap 0: the old key stops at once")
    h.ok(call(gw, "GET", "/v1/events", n2["key"]).status == 200, "and its successor works")
    r = admin(gw, "POST", "/v1/admin/tenants/%s/keys/%s/rotate" % (t["tenant"], n["id"]))
    h.ok(r.status == 404, "an ended key cannot be rotated: 404", r)


def test_last_used(gw, t):
    k = j(admin(gw, "POST", "/v1/admin/tenants/%s/keys" % t["tenant"], {"role": "readonly"}))

    def used():
        rows = j(admin(gw, "GET", "/v1/admin/tenants/%s/keys" % t["tenant"]))["keys"]
        return next((x["last_used_at"] for x in rows if x["id"] == k["id"]), "missing")
    h.ok(used() is None, "a key never used: last_used_at null")
    for _ in range(5):
        call(gw, "GET", "/v1/events", k["key"])
    first = h.wait_for(used, 4)
    h.ok(first, "after use, last_used_at is set within seconds", first)
    # at most once a minute per key per shard: each shard may write its own first use, then nothing more
    shards = int(gw.config.get("shards", "1"))
    seen = {first}
    for _ in range(shards + 1):
        time.sleep(1.1)
        for _ in range(20):
            call(gw, "GET", "/v1/events", k["key"])
        time.sleep(2.5)
        seen.add(used())
    h.ok(len(seen) <= shards, "more uses within the minute write at most once more per shard (%d values over %d "
         "shards)" % (len(seen), shards), sorted(seen))
    h.ok(h.sql("SELECT count(*) FROM api_keys WHERE id = %s AND last_used_at IS NOT NULL" % k["id"]) == "1",
         "as the table says")


def test_file():
    with h.Gateway(master_key=MASTER_KEY) as gw:
        t = setup(gw)
        h.subtest(test_issue, gw, t)
        h.subtest(test_roles, gw, t)
        h.subtest(test_tokens, gw, t)
        h.subtest(test_listing, gw, t)
        h.subtest(test_revoke, gw, t)
        h.subtest(test_rotation, gw, t)
        h.subtest(test_last_used, gw, t)


if __name__ == "__main__":
    h.main(test_file)
