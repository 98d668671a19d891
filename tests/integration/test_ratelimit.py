"""tests/integration/test_ratelimit.py — rate limits on the real stack: per API key and per client address (taken
from X-Forwarded-For behind a trusted proxy), for REST calls, the live inbox's send op and token minting; 429
rate_limited with Retry-After and the JSON error; a tenant's overrides (PATCH /v1/admin/tenants/{id}
{"rate_limits"}) taking effect at the next request and put back by null; the failed-authentication budget of an
address; and a flood of webhooks to a channel that does not exist costing next to no database lookups.
Run: SB_BIN=build/release/switchboard python3 tests/integration/test_ratelimit.py"""

import json
import re
import time
import uuid

import harness as h
from test_keys import admin, call, hello, j, setup
from test_webhooks import MASTER_KEY, post, sms_params


def from_addr(gw, method, path, token, addr, body=None):
    headers = {"Host": "127.0.0.1:%d" % gw.port, "Authorization": "Bearer " + token, "X-Forwarded-For": addr}
    data = b""
    if body is not None:
        headers["Content-Type"] = "application/json"
        data = json.dumps(body).encode()
    return h.request(gw.port, method, path, headers, data)


def new_key(gw, t, role):
    return j(admin(gw, "POST", "/v1/admin/tenants/%s/keys" % t["tenant"], {"role": role}))["key"]


def limits(gw, t, rl):
    return admin(gw, "PATCH", "/v1/admin/tenants/%s" % t["tenant"], {"rate_limits": rl})


def burst(fn, n):
    return [fn() for _ in range(n)]


def test_patch(gw, t):
    r = admin(gw, "PATCH", "/v1/admin/tenants/%s" % t["tenant"], {"max_concurrent_calls": 5})
    body = j(r) or {}
    h.ok(r.status == 200 and body.get("ok") is True and
         body.get("rate_limits", {}).get("rest_per_key") == {"rate": 50.0, "burst": 100},
         "PATCH max_concurrent_calls alone still works, and answers the limits in force (defaults)", r)
    h.ok(h.sql("SELECT max_concurrent_calls FROM tenants WHERE id = %s" % t["tenant"]) == "5", "the cap is stored")
    r = limits(gw, t, {"send_per_key": {"rate": 2, "burst": 3}})
    h.ok(r.status == 200 and j(r)["rate_limits"]["send_per_key"] == {"rate": 2.0, "burst": 3} and
         j(r)["rate_limits"]["rest_per_key"] == {"rate": 50.0, "burst": 100}, "an override of one limit", r)
    r = admin(gw, "PATCH", "/v1/admin/tenants/%s" % t["tenant"],
              {"max_concurrent_calls": None, "rate_limits": {"tokens_per_key": {"burst": 4}}})
    rl = (j(r) or {}).get("rate_limits", {})
    h.ok(r.status == 200 and rl.get("tokens_per_key") == {"rate": 1.0, "burst": 4} and
         rl.get("send_per_key") == {"rate": 2.0, "burst": 3},
         "both at once; a member left out takes its default; other overrides stay", r)
    h.ok(h.sql("SELECT max_concurrent_calls IS NULL FROM tenants WHERE id = %s" % t["tenant"]) == "t",
         "the cap cleared by null")
    for bad in ({"rate_limits": {"rest_per_hour": {"rate": 1}}}, {"rate_limits": {"rest_per_key": {"rate": 0}}},
                {"rate_limits": {"rest_per_key": {"rate": 1, "burst": 0}}},
                {"rate_limits": {"rest_per_key": {"rate": 1, "burst": 1.5}}},
                {"rate_limits": {"rest_per_key": {"rate": 1, "extra": 1}}}, {"rate_limits": 5},
                {"rate_limits": {}, "other": 1}, {}):
        r = admin(gw, "PATCH", "/v1/admin/tenants/%s" % t["tenant"], bad)
        h.ok(r.status == 400, "PATCH %s: 400" % json.dumps(bad), r)
    r = admin(gw, "PATCH", "/v1/admin/tenants/999999999", {"rate_limits": None})
    h.ok(r.status == 404, "PATCH of a missing tenant: 404", r)
    r = limits(gw, t, None)
    h.ok(r.status == 200 and j(r)["rate_limits"]["send_per_key"] == {"rate": 20.0, "burst": 100},
         "rate_limits null: every limit back to its default", r)


def test_per_key(gw, t):
    limits(gw, t, {"rest_per_key": {"rate": 1, "burst": 3}})
    a, b = new_key(gw, t, "agent"), new_key(gw, t, "readonly")
    got = burst(lambda: call(gw, "GET", "/v1/events", a), 4)
    h.ok([r.status for r in got] == [200, 200, 200, 429], "rest_per_key 1/s burst 3: the 4th at once is 429",
         [r.status for r in got])
    r = got[-1]
    h.ok(h.error_code(r) == "rate_limited" and b"rest_per_key" in r.body, "rate_limited, naming the limit", r)
    ra = r.header("retry-after")
    h.ok(ra is not None and ra.isdigit() and 1 <= int(ra) <= 2, "with Retry-After in whole seconds", ra)
    h.ok(call(gw, "GET", "/v1/events", b).status == 200, "another key of the tenant has its own bucket")
    time.sleep(1.05)
    h.ok(call(gw, "GET", "/v1/events", a).status == 200, "a second later one more goes through")
    h.ok(call(gw, "GET", "/v1/events", a).status == 429, "and the next is refused again")
    limits(gw, t, {"rest_per_key": None})
    time.sleep(0.05)
    r = call(gw, "GET", "/v1/events", a)
    h.ok(r.status == 200, "the override removed: the key is served again within 50 ms (the default's 50/s; its "
         "bucket as full as it was)", r)
    c = new_key(gw, t, "agent")
    got = burst(lambda: call(gw, "GET", "/v1/events", c), 30)
    h.ok(all(r.status == 200 for r in got), "and a fresh key gets the default burst", [r.status for r in got])


def test_per_address(gw, t):
    limits(gw, t, {"rest_per_address": {"rate": 1, "burst": 3}})
    keys = [new_key(gw, t, x) for x in ("owner", "agent", "readonly")]
    got = [from_addr(gw, "GET", "/v1/events", keys[i % 3], "198.51.100.7") for i in range(4)]
    h.ok([r.status for r in got] == [200, 200, 200, 429],
         "rest_per_address burst 3: three keys from one address share it, the 4th is 429", [r.status for r in got])
    h.ok(b"rest_per_address" in got[-1].body and got[-1].header("retry-after"), "naming the limit, with Retry-After",
         got[-1])
    r = from_addr(gw, "GET", "/v1/events", keys[0], "198.51.100.8")
    h.ok(r.status == 200, "another client address (X-Forwarded-For from a trusted proxy) has its own bucket", r)
    limits(gw, t, None)
    time.sleep(0.05)
    r = from_addr(gw, "GET", "/v1/events", keys[0], "198.51.100.7")
    h.ok(r.status == 200, "the override removed: the address is served again", r)


def test_sends(gw, t):
    limits(gw, t, {"send_per_key": {"rate": 1, "burst": 2}})
    key = new_key(gw, t, "agent")
    sends = [call(gw, "POST", "/v1/messages", key,
                  {"channel_id": t["channel"], "to": "+14155550100", "body": "limited %d" % i}) for i in range(3)]
    h.ok([r.status for r in sends] == [202, 202, 429], "POST /v1/messages draws from send_per_key: the 3rd is 429",
         [r.status for r in sends])
    h.ok(b"send_per_key" in sends[-1].body, "naming send_per_key", sends[-1])
    ws, m = hello(gw, new_key(gw, t, "owner"))
    out = []
    for i in range(3):
        ws.send_op({"op": "send", "channel_id": t["channel"], "to": "+14155550100", "body": "ws %d" % i,
                    "idempotency_key": "rl-%s-%d" % (uuid.uuid4().hex[:6], i)})
        while True:
            m = ws.recv_op()
            if m.get("op") in ("accepted", "error"):
                out.append(m)
                break
    h.ok([m["op"] for m in out] == ["accepted", "accepted", "error"] and out[2].get("code") == "rate_limited" and
         "send_per_key" in out[2].get("message", ""), "the inbox send op too: the 3rd gets an error frame rate_limited",
         out)
    ws.send_op({"op": "ping"})
    while True:
        m = ws.recv_op()
        if m.get("op") == "pong":
            break
    h.ok(True, "and the connection stays")
    ws.shutdown()
    limits(gw, t, None)


def test_tokens(gw, t):
    key = new_key(gw, t, "readonly")
    got = burst(lambda: call(gw, "POST", "/v1/tokens", key, {"ttl_s": 60}), 11)
    h.ok([r.status for r in got[:10]] == [201] * 10 and got[10].status == 429 and b"tokens_per_key" in got[10].body,
         "token minting: 10 at once (the default burst), the 11th is 429 tokens_per_key",
         [r.status for r in got])
    h.ok(call(gw, "GET", "/v1/events", key).status == 200, "the key's other calls are not held back")


def test_auth_failures(gw):
    """Well-formed keys that do not exist cost a lookup each: an address that keeps failing is refused before the
    lookup. Counted per shard, so over one kept-alive connection."""
    bogus = "sb_live_" + "A" * 43
    statuses = []
    with h.HttpConn(gw.port) as c:
        for _ in range(70):
            c.send(h.build_request("GET", "/v1/events", {"Host": "x", "Authorization": "Bearer " + bogus,
                                                        "X-Forwarded-For": "203.0.113.99"}, keep_alive=True))
            statuses.append(c.read_response().status)
    h.ok(statuses[:50] == [401] * 50 and statuses[-1] == 429,
         "unknown keys: 401 for the first 50, then 429 without a lookup", statuses)
    r = from_addr(gw, "GET", "/v1/events", bogus, "203.0.113.100")
    h.ok(r.status == 401, "another address is not held back", r)


def lookups(gw):
    page = h.get(gw.port, "/metrics").body.decode()
    return sum(float(v) for v in re.findall(r"^sb_channel_lookups_total\{[^}]*\} (\S+)$", page, re.M))


def test_unknown_channel_flood(gw):
    before = lookups(gw)
    path = "/webhooks/twilio/%d" % (900000000 + uuid.uuid4().int % 10 ** 8)
    statuses = set()
    for _ in range(200):
        statuses.add(post(gw, path, sms_params("SM" + uuid.uuid4().hex, "+15550000000", "flood")).status)
    after = lookups(gw)
    h.ok(statuses == {404}, "200 webhooks to a channel that does not exist: all 404", statuses)
    h.ok(after - before <= 2, "and at most one channel lookup per shard (%d)" % (after - before))


def test_file():
    with h.Gateway(master_key=MASTER_KEY, trusted_proxies="127.0.0.1") as gw:
        t = setup(gw)
        h.subtest(test_patch, gw, t)
        h.subtest(test_per_key, gw, t)
        h.subtest(test_per_address, gw, t)
        h.subtest(test_sends, gw, t)
        h.subtest(test_tokens, gw, t)
        h.subtest(test_auth_failures, gw)
        h.subtest(test_unknown_channel_flood, gw)


if __name__ == "__main__":
    h.main(test_file)
