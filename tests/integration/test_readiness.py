"""tests/integration/test_readiness.py — /readyz follows Redis and PostgreSQL: take each away with
ops/stack.sh while the gateway runs, see /readyz go 503 naming it (and /healthz stay 200), bring
it back and see the gateway reconnect; take PostgreSQL from one shard only and see every answer
name that shard. The stack is always restored, whatever happens.
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
    """/readyz speaks for the whole node: every shard pings its own connections, whichever shard takes the request.
    So the first 200 means every shard is back, and the next twenty requests (each on a connection of its own,
    spread by the kernel over the shards) all answer 200 too."""
    (r, body), matched = wait_status(gw, 200, 10)
    h.ok(matched, "%s: /readyz answers 200 within 10 s" % when, r)
    h.ok(isinstance(body, dict) and body.get("redis") == "ok" and body.get("postgres") == "ok",
         '%s: /readyz body is {"redis":"ok","postgres":"ok"}' % when, r and r.body)
    if not matched:
        return
    after = [readyz(gw)[0] for _ in range(20)]
    bad = [x.status if x is not None else None for x in after if x is None or x.status != 200]
    h.ok(not bad, "%s: the twenty requests after the first 200 all answer 200" % when, bad)


def outage(gw, service, key, other):
    rc, out = h.stack("down", service)
    h.ok(rc == 0, "ops/stack.sh down %s" % service, out)
    (r, body), matched = wait_status(gw, 503, 5)
    h.ok(matched, "%s down: /readyz answers 503 within 5 s" % service, r)
    h.ok(isinstance(body, dict) and isinstance(body.get(key), str) and body.get(key).startswith("shard ")
         and body.get(other) == "ok",
         '%s down: /readyz body says %s "shard N: <error text>", %s "ok"' % (service, key, other), r and r.body)
    hz = h.get(gw.port, "/healthz", timeout=3)
    h.ok(hz is not None and hz.status == 200, "%s down: /healthz still answers 200" % service, hz)
    rc, out = h.stack("up", service)
    h.ok(rc == 0, "ops/stack.sh up %s" % service, out)
    green(gw, "%s back" % service)


ADMIN_DB = h.DATABASE_URL.replace("dbname=switchboard_test", "dbname=postgres")


def one_shard_down(gw):
    """Only shard 1 loses PostgreSQL (its connection is ended, and the database takes no new ones while shard 0's
    stay up): whichever shard answers, /readyz is 503 naming shard 1, because it speaks for the node."""
    h.sql("ALTER DATABASE switchboard_test ALLOW_CONNECTIONS false", ADMIN_DB)
    try:
        ended = h.sql("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                      "WHERE datname = 'switchboard_test' AND application_name = 'switchboard shard 1'", ADMIN_DB)
        h.ok(ended == "1", "shard 1's PostgreSQL connection is found by its application_name and ended", ended)
        (r, body), matched = wait_status(gw, 503, 5)
        h.ok(matched, "shard 1 without PostgreSQL: /readyz answers 503 within 5 s", r)
        answers = [readyz(gw) for _ in range(20)]
        bad = [(x.status if x is not None else None, b) for x, b in answers
               if x is None or x.status != 503 or not isinstance(b, dict)
               or not str(b.get("postgres")).startswith("shard 1: ") or b.get("redis") != "ok"]
        h.ok(not bad, 'the next twenty requests, on either shard, all answer 503 with postgres "shard 1: ..."', bad)
    finally:
        h.sql("ALTER DATABASE switchboard_test ALLOW_CONNECTIONS true", ADMIN_DB)
    green(gw, "shard 1 back")


def test_file():
    try:
        with h.Gateway() as gw:
            h.subtest(green, gw, "start")
            h.subtest(one_shard_down, gw)
            h.subtest(outage, gw, "redis", "redis", "postgres")
            h.subtest(outage, gw, "pg", "postgres", "redis")
    finally:
        rc, out = h.stack("up")
        if rc != 0:
            h.ok(False, "ops/stack.sh up (restoring the stack)", out)


h.main(test_file)
