"""tests/integration/test_restarts.py — Redis and PostgreSQL restarted under load: webhooks and sends stream in
(build/$V/bench/loadgen, with live inbox clients coming and going) at a quarter each of what this gateway build was
just measured to sustain, so together about half the machine; meanwhile ops/stack.sh takes Redis away and brings it
back, then PostgreSQL. What must hold:
  - no request hangs: while PostgreSQL is away the gateway answers 503 (the provider retries), never nothing;
  - /readyz goes red (503) within seconds of each outage and green again after it;
  - after recovery every acknowledged webhook (200) is applied (its message exists, once), and every accepted send
    (202) reaches the provider exactly once (the mock's records), none of them twice.
The stack is always restored, whatever happens.
Run: SB_BIN=build/release/switchboard python3 tests/integration/test_restarts.py"""

import json
import os
import subprocess
import tempfile
import threading
import time
import uuid

import harness as h
from test_mock_provider import Mock
from test_webhooks import MASTER_KEY, admin

AUTH_TOKEN = "0123456789abcdef0123456789abcdef"
LOADGEN = os.path.join(h.ROOT, "build", "release", "bench", "loadgen")  # the client: never the sanitizer build
TENANTS, CHANNELS = 4, 8
RUN_S = 36
# this test measures restarts, not the API's rate limits: with the defaults, calibration would measure the limiter
UNLIMITED = {name: {"rate": 100000, "burst": 100000} for name in
             ("rest_per_key", "rest_per_address", "send_per_key", "send_per_address")}


def setup(gw, path):
    """TENANTS tenants (rate limits out of the way) of CHANNELS Twilio SMS channels each, fast enough (rate_per_second) that pacing is not the
    limit; the loadgen setup file: one line per channel."""
    lines = []
    for _ in range(TENANTS):
        t = admin(gw, "/v1/admin/tenants", {"name": "restarts " + uuid.uuid4().hex[:6]})
        h.request(gw.port, "PATCH", "/v1/admin/tenants/%s" % t["id"],
                  {"Authorization": "Bearer " + h.ADMIN_TOKEN, "Content-Type": "application/json"},
                  json.dumps({"rate_limits": UNLIMITED}).encode())
        key = admin(gw, "/v1/admin/tenants/%s/keys" % t["id"], {})["key"]
        for _ in range(CHANNELS):
            number = "+1777%07d" % (uuid.uuid4().int % 10 ** 7)
            ch = admin(gw, "/v1/admin/tenants/%s/channels" % t["id"],
                       {"type": "twilio_sms", "address": number, "settings": {"rate_per_second": 500},
                        "credentials": {"account_sid": "AC" + "7" * 32, "auth_token": AUTH_TOKEN}})
            lines.append("%s %s %s %s" % (key, ch["id"], number, AUTH_TOKEN))
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def loadgen(gw, setup_path, webhooks, sends, seconds, clients=0):
    """Runs loadgen to its end; (records {kind: {id: status}}, its summary line)."""
    out = tempfile.NamedTemporaryFile(prefix="sb-load-", delete=False).name
    try:
        p = subprocess.run([LOADGEN, str(gw.port), setup_path, str(webhooks), str(sends), str(seconds), out,
                            str(clients), "5"], capture_output=True, text=True, timeout=seconds + 60)
        h.diag(p.stderr.strip()[-3000:])
        recs = {"w": {}, "s": {}}
        with open(out) as f:
            for line in f:
                kind, ident, status = line.split()
                recs[kind][ident] = int(status)
        return recs, p.stdout.strip()
    finally:
        os.unlink(out)


def unprocessed():
    return int(h.sql("SELECT count(*) FROM webhook_receipts WHERE processed_at IS NULL") or 0)


def mock_total(mock):
    return mock.get("/_mock/stats").json().get("total", 0)


def settle(mock, accepted_before):
    """Waits until the receipts are applied and the mock has what was accepted (calibration leaves a backlog)."""
    h.wait_for(lambda: unprocessed() == 0, 60, 0.5)
    h.wait_for(lambda: mock_total(mock) >= accepted_before, 120, 0.5)


def rate(recs, kind, seconds):
    return sum(1 for s in recs[kind].values() if 200 <= s < 300) / seconds


def readyz_status(gw):
    r = h.get(gw.port, "/readyz", timeout=3)
    return r.status if r is not None else None


def outages(gw, t_start, log):
    """The script of the run: Redis away at 6 s for 5 s, PostgreSQL away at 18 s for 6 s. Notes what /readyz said."""
    def at(t):
        time.sleep(max(0.0, t_start + t - time.monotonic()))
    for service, down_at, up_at in (("redis", 6, 11), ("pg", 18, 24)):
        at(down_at)
        rc, out = h.stack("down", service)
        log.append(("down", service, rc, out))
        red = h.wait_for(lambda: readyz_status(gw) == 503, 5, 0.1)
        log.append(("red", service, bool(red), time.monotonic() - t_start))
        at(up_at)
        rc, out = h.stack("up", service)
        log.append(("up", service, rc, out))
        green = h.wait_for(lambda: readyz_status(gw) == 200, 15, 0.1)
        log.append(("green", service, bool(green), time.monotonic() - t_start))


def mock_counts(mock):
    """How many times the mock received each load send, by idempotency key (the body is "load <key>")."""
    recs = mock.get("/_mock/received?limit=1000000", timeout=30).json().get("requests", [])
    counts = {}
    for r in recs:
        body = r.get("body") or ""
        if body.startswith("load L"):
            key = body[5:]
            counts[key] = counts.get(key, 0) + 1
    return counts


def test_restarts(gw, mock, setup_path):
    # what this build sustains: each kind alone, 64 requests in flight, for 3 s
    cal_w, _ = loadgen(gw, setup_path, -64, 0, 3)
    cal_s, _ = loadgen(gw, setup_path, 0, -64, 3)
    w_rate, s_rate = rate(cal_w, "w", 3), rate(cal_s, "s", 3)
    h.ok(w_rate > 0 and s_rate > 0, "calibration: %.0f webhooks/s and %.0f sends/s sustained" % (w_rate, s_rate))
    settle(mock, sum(1 for s in cal_s["s"].values() if s == 202))
    w_run, s_run = max(1, int(w_rate / 4)), max(1, int(s_rate / 4))
    h.diag("run: %d webhooks/s and %d sends/s for %d s, 20 inbox clients coming and going" % (w_run, s_run, RUN_S))

    log = []
    t_start = time.monotonic()
    script = threading.Thread(target=outages, args=(gw, t_start, log), daemon=True)
    script.start()
    recs, summary = loadgen(gw, setup_path, w_run, s_run, RUN_S, clients=20)
    script.join(60)
    h.diag(summary)
    h.diag("outages: %r" % [x if x[0] in ("red", "green") else x[:3] for x in log])

    for service in ("redis", "pg"):
        red = [x for x in log if x[0] == "red" and x[1] == service]
        green = [x for x in log if x[0] == "green" and x[1] == service]
        h.ok(red and red[0][2], "%s down: /readyz answers 503 within 5 s" % service, log)
        h.ok(green and green[0][2], "%s back: /readyz answers 200 again within 15 s" % service, log)

    for kind, what in (("w", "webhooks"), ("s", "sends")):
        statuses = list(recs[kind].values())
        hung = statuses.count(-1)
        lost = statuses.count(0)
        odd = sorted({s for s in statuses if s not in (0, -1, 503) and not 200 <= s < 300})
        h.ok(hung == 0, "%s: no request hung (%d of %d)" % (what, hung, len(statuses)))
        h.ok(lost == 0, "%s: no connection lost (%d)" % (what, lost))
        h.ok(not odd, "%s: every answer is 2xx or 503" % what, odd)
    w503 = sum(1 for s in recs["w"].values() if s == 503)
    h.ok(w503 > 0, "webhooks: answered 503 while PostgreSQL was away (%d)" % w503)

    acked = [sid for sid, s in recs["w"].items() if s == 200]
    prefix = acked[0][:10] if acked else "SMnone"

    def applied():
        rows = h.sql("SELECT provider_id, count(*) FROM messages WHERE direction = 'in' AND provider_id LIKE '%s%%'"
                     " GROUP BY provider_id" % prefix).split("\n")
        return {r.split("|")[0]: int(r.split("|")[1]) for r in rows if "|" in r}
    def all_applied():
        got = applied()
        return all(sid in got for sid in acked)
    done = h.wait_for(all_applied, 60, 1.0)
    got = applied()
    missing = [sid for sid in acked if sid not in got]
    twice = [sid for sid, n in got.items() if n > 1]
    h.ok(done and not missing, "every acknowledged webhook is applied (%d acknowledged, %d missing)"
         % (len(acked), len(missing)), missing[:5])
    h.ok(not twice, "and none twice", twice[:5])

    accepted = [k for k, s in recs["s"].items() if s == 202]
    def all_sent():
        counts = mock_counts(mock)
        return all(k in counts for k in accepted)
    h.wait_for(all_sent, 120, 2.0)
    counts = mock_counts(mock)
    unsent = [k for k in accepted if k not in counts]
    twice = [k for k, n in counts.items() if n > 1]
    h.ok(accepted and not unsent, "every accepted send reached the provider (%d accepted, %d not)"
         % (len(accepted), len(unsent)), unsent[:5])
    h.ok(not twice, "and none twice (%d sends seen)" % len(counts), twice[:5])
    run_prefix = accepted[0][:9] if accepted else "Lnone"

    def not_sent():
        return h.sql("SELECT status || ' ' || count(*) FROM messages WHERE direction = 'out' AND body LIKE 'load %s%%'"
                     " AND status NOT IN ('sent', 'delivered') GROUP BY status" % run_prefix)
    h.wait_for(lambda: not not_sent(), 30, 1.0)
    left = not_sent()
    h.ok(not left, "every accepted send ends sent, its outcome stored also when PostgreSQL was away when the "
         "provider answered", left.replace("\n", ", "))


def test_file():
    setup_path = tempfile.NamedTemporaryFile(prefix="sb-restarts-", delete=False).name
    try:
        with Mock("--max-records", "1000000") as mock, \
                h.Gateway(master_key=MASTER_KEY, twilio_api_base="http://127.0.0.1:%d" % mock.port) as gw:
            setup(gw, setup_path)
            h.subtest(test_restarts, gw, mock, setup_path)
    finally:
        os.unlink(setup_path)
        rc, out = h.stack("up")
        if rc != 0:
            h.ok(False, "ops/stack.sh up (restoring the stack)", out)


if __name__ == "__main__":
    h.main(test_file)
