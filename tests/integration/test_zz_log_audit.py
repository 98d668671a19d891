"""tests/integration/test_zz_log_audit.py — logs without personal data: no phone number unmasked, no message body, no
token, API key, webhook or app secret, auth token, signature or master key in any gateway log, at any level.

Its own part (always): a gateway at log_level = debug with log_format = json takes traffic meant to tempt its logs
(signed and badly signed webhooks with a number and a body, a refused database write whose row holds them, a bad API
key, tokens minted, an inbox hello), then every line of its log must be one JSON object with ts, level, shard and msg,
and none may hold what that traffic carried.

The audit of the whole suite (when SB_LOG_AUDIT_DIR is set, as tests/run.sh does; the file's name sorts it after
every other integration test): the harness kept every gateway's log of the run in that directory, and the strings
the tests declared or sent (personal-*.txt, see harness.py); every log line is searched for each of them, and for
what looks like personal data or a secret whoever wrote it: an E.164 number not masked, an API key (sb_live_), a
webhook secret (whsec_), a JWT, 64 hex digits (a master key or a key's hash). Any hit fails, naming the file, the
line and what matched.
Run: SB_BIN=build/release/switchboard python3 tests/integration/test_zz_log_audit.py"""

import glob
import json
import os
import re
import urllib.parse
import uuid

import harness as h
from test_webhooks import AUTH_TOKEN, MASTER_KEY, admin, sign

PATTERNS = [
    ("an unmasked phone number", re.compile(r"(?<![0-9A-Za-z])\+[0-9]{7,15}(?![0-9])")),
    ("an API key", re.compile(r"sb_live_[A-Za-z0-9_-]{3,}")),
    ("a webhook secret", re.compile(r"whsec_[A-Za-z0-9_-]{3,}")),
    ("a JWT", re.compile(r"eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]")),
    ("64 hex digits (a key or a key's hash)", re.compile(r"(?<![0-9a-fA-F])[0-9a-fA-F]{64}(?![0-9a-fA-F])")),
]


def leaks(lines, secrets):
    """(line number, what, the line) for every line holding one of secrets or matching a pattern.

    The suite declares some 150,000 strings and its gateways write a few hundred thousand lines, so trying each
    string on each line is out of reach (an ASan run timed out at 300 s). The strings are indexed by their first k
    characters instead, k the shortest string's length but at most 8: each line is read once, every k characters of
    it looked up, and a string is tried only where its first k characters stand."""
    found = []
    secrets = [s for s in secrets if s]
    k = min([8] + [len(s) for s in secrets])
    index = {}
    for s in secrets:
        index.setdefault(s[:k], []).append(s)
    for i, line in enumerate(lines, 1):
        hits = set()
        for j in range(len(line) - k + 1):
            for s in index.get(line[j:j + k], ()):
                if line.startswith(s, j):
                    hits.add(s)
        for s in sorted(hits, key=len, reverse=True):
            found.append((i, "the test string %r" % s, line))
        for what, rx in PATTERNS:
            if rx.search(line):
                found.append((i, what, line))
    return found


def test_own_traffic():
    """A gateway with JSON lines at debug, tempted: its lines parse, and hold nothing personal."""
    number = "+1415%07d" % (uuid.uuid4().int % 10 ** 7)
    customer = "+1650%07d" % (uuid.uuid4().int % 10 ** 7)
    body = "audit body %s, call me on %s" % (uuid.uuid4().hex[:8], customer)
    poison = "poisoned audit body " + uuid.uuid4().hex[:8]
    h.personal(number, customer, body, poison, AUTH_TOKEN, MASTER_KEY, number[1:], customer[1:])
    with h.Gateway(master_key=MASTER_KEY, log_level="debug", log_format="json") as gw:
        t = admin(gw, "/v1/admin/tenants", {"name": "audit " + uuid.uuid4().hex[:6]})
        key = admin(gw, "/v1/admin/tenants/%s/keys" % t["id"], {})["key"]
        ch = admin(gw, "/v1/admin/tenants/%s/channels" % t["id"],
                   {"type": "twilio_sms", "address": number,
                    "credentials": {"account_sid": "AC" + "5" * 32, "auth_token": AUTH_TOKEN}})
        hook = admin(gw, "/v1/admin/tenants/%s/webhook" % t["id"], {"url": "http://127.0.0.1:9/hooks"})
        h.personal(key, hook.get("secret", ""))
        path = "/webhooks/twilio/%s" % ch["id"]
        host = "127.0.0.1:%d" % gw.port

        def inbound(text, signature=None):
            sid = "SM" + uuid.uuid4().hex
            params = [("MessageSid", sid), ("AccountSid", "AC" + "5" * 32), ("From", customer), ("To", number),
                      ("Body", text), ("NumMedia", "0")]
            sig = signature or sign("http://" + host + path, params)
            h.personal(sig)
            return h.request(gw.port, "POST", path, {"Host": host, "X-Twilio-Signature": sig,
                                                     "Content-Type": "application/x-www-form-urlencoded"},
                             urllib.parse.urlencode(params).encode())

        r = inbound(body)
        h.ok(r.status == 200, "a signed inbound SMS is accepted", r)
        r = inbound(body, signature="b" * 27 + "=")
        h.ok(r.status == 403, "a badly signed one is refused (and logged)", r)
        # a refused write: the database's message quotes the row (the body, the number) unless the gateway drops it
        h.sql("ALTER TABLE messages ADD CONSTRAINT test_audit_poison CHECK (body NOT LIKE 'poisoned audit%') "
              "NOT VALID")
        try:
            r = inbound(poison)
            h.ok(r.status == 200, "an inbound SMS whose message the database refuses is acknowledged", r)
            h.ok(h.wait_for(lambda: "refused" in gw.log(), 10), "and the refusal is logged")
        finally:
            h.sql("ALTER TABLE messages DROP CONSTRAINT test_audit_poison")
        auth = {"Authorization": "Bearer " + key, "Content-Type": "application/json"}
        r = h.request(gw.port, "POST", "/v1/tokens", auth, b'{"ttl_s":60}')
        token = r.json().get("token", "") if r.status in (200, 201) else ""
        h.ok(token, "a token is minted", r)
        h.personal(token)
        r = h.request(gw.port, "GET", "/v1/events", {"Authorization": "Bearer sb_live_" + "Z" * 43})
        h.ok(r.status == 401, "a wrong API key: 401", r)
        r = h.request(gw.port, "POST", "/v1/messages", auth,
                      json.dumps({"channel_id": ch["id"], "to": customer, "body": body}).encode())
        h.ok(r.status == 202, "a send is accepted (its provider cannot be reached)", r)
        r = h.request(gw.port, "GET", "/v1/admin/tenants", {"Authorization": "Bearer wrong-admin-" + "x" * 20})
        h.ok(r.status == 401, "a wrong admin token: 401", r)
        h.wait_for(lambda: False, 1.0)  # the send's attempt and the webhook's first try get their time to log
        log = gw.log()
    lines = [l for l in log.splitlines() if l.strip()]
    parsed, bad = [], []
    for l in lines:
        try:
            parsed.append(json.loads(l))
        except ValueError:
            bad.append(l)
    h.ok(lines and not bad, "every log line is one JSON object (%d lines)" % len(lines), bad[:5])
    h.ok(all(set(o) >= {"ts", "level", "shard", "msg"} and o["level"] in ("error", "warn", "info", "debug")
             for o in parsed), "each with ts, level, shard and msg", parsed[:3])
    h.ok(any(isinstance(o["shard"], int) for o in parsed) and any(o["shard"] is None for o in parsed),
         "shard is the shard's number on shard threads, null on the main thread")
    h.ok(any("SQLSTATE 23514" in o["msg"] for o in parsed), "a refused statement is logged by its SQLSTATE",
         [o["msg"] for o in parsed if "refused" in o["msg"]])
    secrets = [s for s in [number, customer, number[1:], customer[1:], body, poison, AUTH_TOKEN, MASTER_KEY, key, token,
               hook.get("secret") or "whsec_", "b" * 27, "wrong-admin-"] if s]
    found = leaks([o["msg"] for o in parsed], secrets)
    h.ok(not found, "the log holds no number, body, key, token, secret or signature",
         "\n".join("line %d: %s: %s" % f for f in found[:20]))


def test_suite_logs():
    """Every gateway log the suite's run kept, against everything the suite's tests used."""
    d = h.AUDIT_DIR
    if not d:
        h.diag("SB_LOG_AUDIT_DIR is not set: only this file's own gateway was audited (tests/run.sh sets it)")
        return
    h._flush_personal()
    secrets = set()
    for p in glob.glob(os.path.join(d, "personal-*.txt")):
        with open(p, encoding="utf-8") as f:
            for line in f:
                try:
                    s = json.loads(line)
                except ValueError:
                    continue
                if isinstance(s, str) and len(s.strip()) >= h.MIN_PERSONAL:
                    secrets.add(s)
    logs = sorted(glob.glob(os.path.join(d, "*.log")))
    files = {os.path.basename(p).split("-gateway-")[0] for p in logs}
    h.ok(len(logs) >= 1, "the run kept %d gateway log(s) of %d test file(s), and %d strings to look for" %
         (len(logs), len(files), len(secrets)))
    ordered = sorted(secrets, key=len, reverse=True)
    total, found = 0, []
    for p in logs:
        with open(p, "rb") as f:
            lines = f.read().decode("utf-8", "replace").splitlines()
        total += len(lines)
        found += [(os.path.basename(p),) + x for x in leaks(lines, ordered)]
    h.ok(not found, "%d lines of every gateway log hold no number, body, key, token, secret or signature" % total,
         "\n".join("%s:%d: %s: %s" % f for f in found[:30]) + ("\n... %d in all" % len(found) if found else ""))


if __name__ == "__main__":
    h.main(test_own_traffic, test_suite_logs)
