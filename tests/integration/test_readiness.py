"""tests/integration/test_readiness.py — /readyz follows Redis and PostgreSQL: take each away with
ops/stack.sh while the gateway runs, see /readyz go 503 naming it (and /healthz stay 200), bring
it back and see the gateway reconnect. The stack is always restored, whatever happens.
Run: SB_BIN=build/release/switchboard python3 tests/integration/test_readiness.py"""

import time

import harness as h


def readyz(gw):
    r = h.get(gw.port, "/readyz", timeout=3)
    try:
        body = r.json() if r is not None else None
    except ValueError:
        body = None
    return r, body


def wait_status(gw, status, timeout):
    """Poll /readyz until it answers `status`; return (response, body) of the last poll and
    whether it matched."""
    last = [None]

    def poll():
        last[0] = readyz(gw)
        r = last[0][0]
        return r is not None and r.status == status

    matched = h.wait_for(poll, timeout, interval=0.1)
    return last[0] or (None, None), bool(matched)


def green(gw, when):
    """Each shard answers /readyz for its own connections and reconnects on its own backoff, and a request lands on
    any shard: green means ten 200s in a row, so that every shard is back before the next outage begins."""
    deadline = time.monotonic() + 10
    streak, r, body = 0, None, None
    while time.monotonic() < deadline and streak < 10:
        r, body = readyz(gw)
        streak = streak + 1 if r is not None and r.status == 200 else 0
        time.sleep(0.05)
    matched = streak >= 10
    h.ok(matched, "%s: /readyz answers 200 ten times in a row within 10 s" % when, r)
    h.ok(isinstance(body, dict) and body.get("redis") == "ok" and body.get("postgres") == "ok",
         '%s: /readyz body is {"redis":"ok","postgres":"ok"}' % when, r and r.body)


def outage(gw, service, key, other):
    rc, out = h.stack("down", service)
    h.ok(rc == 0, "ops/stack.sh down %s" % service, out)
    (r, body), matched = wait_status(gw, 503, 5)
    h.ok(matched, "%s down: /readyz answers 503 within 5 s" % service, r)
    h.ok(isinstance(body, dict) and isinstance(body.get(key), str) and body.get(key) not in ("", "ok")
         and body.get(other) == "ok",
         '%s down: /readyz body says %s "<error text>", %s "ok"' % (service, key, other), r and r.body)
    hz = h.get(gw.port, "/healthz", timeout=3)
    h.ok(hz is not None and hz.status == 200, "%s down: /healthz still answers 200" % service, hz)
    rc, out = h.stack("up", service)
    h.ok(rc == 0, "ops/stack.sh up %s" % service, out)
    green(gw, "%s back" % service)


def test_file():
    try:
        with h.Gateway() as gw:
            h.subtest(green, gw, "start")
            h.subtest(outage, gw, "redis", "redis", "postgres")
            h.subtest(outage, gw, "pg", "postgres", "redis")
    finally:
        rc, out = h.stack("up")
        if rc != 0:
            h.ok(False, "ops/stack.sh up (restoring the stack)", out)


h.main(test_file)
