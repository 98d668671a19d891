#!/usr/bin/env python3
"""tests/bench/bench_broadcast.py — broadcasts (issue 16, item 9) against a running gateway whose twilio_api_base is a
running mock provider; prints figures, asserts nothing.

    bench_broadcast.py GW_PORT ADMIN_TOKEN MOCK_PORT GW_PID MOCK_PID DB [RECIPIENTS [CHANNELS [TENANTS]]]

  1. Accept: one broadcast of RECIPIENTS (100,000) recipients, each with two variables, on a channel paced slowly
     (nothing of it is sent meanwhile): the time to its 202 (the target: <= 3 s), then the time until every recipient
     is an outbox row (status active) and the outbox rows/s that makes; CPU per recipient of the gateway and
     PostgreSQL over the whole of it; then the time its DELETE takes.
  2. End to end: RECIPIENTS recipients again, as one broadcast per channel over CHANNELS (1,000) channels of TENANTS
     (100) tenants (100/s each), from the first POST until the mock provider has them all: sends/s, and CPU per send
     of each part (gateway, PostgreSQL, Redis, mock provider).
CPU is read from /proc (utime + stime): the gateway's and the mock's processes (GW_PID, MOCK_PID), the PostgreSQL
backends connected to database DB, and every redis-server (which may serve others too: run it on a quiet machine).
"""
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
import uuid

TCK = os.sysconf("SC_CLK_TCK")
PARTS = [("switchboard", "gateway"), ("postgres", "PostgreSQL"), ("redis-server", "Redis"),
         ("mock-provider", "mock")]


def call(port, token, path, body=None, method=None, timeout=120):
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path), data=data,
                                 method=method or ("POST" if data is not None else "GET"),
                                 headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.status, json.load(r)


WHO = {}  # the bench's own processes: gateway and mock pids, the database's name
NUMBERS = [uuid.uuid4().int % 10 ** 4, 0]  # the run's series of channel numbers, the last one used


def ticks(pid):
    try:
        with open("/proc/%s/stat" % pid) as f:
            s = f.read()
    except OSError:
        return None, 0
    f = s[s.rindex(")") + 2:].split()
    return s[s.index("(") + 1:s.rindex(")")], int(f[11]) + int(f[12])


def cpu_snap():
    """CPU ticks so far of each part: the gateway and the mock by pid, the backends of the bench's database, Redis."""
    t = {}
    out = subprocess.run(["psql", "-X", "-At", "host=127.0.0.1 port=5440 user=switchboard dbname=postgres", "-c",
                          "SELECT pid FROM pg_stat_activity WHERE datname = '%s'" % WHO["db"]],
                         capture_output=True, text=True).stdout.split()
    pids = [(p, "postgres") for p in out] + [(WHO["gw"], "switchboard"), (WHO["mock"], "mock-provider")]
    pids += [(p, "redis-server") for p in os.listdir("/proc") if p.isdigit() and ticks(p)[0] == "redis-server"]
    for pid, part in pids:
        t[(part, pid)] = ticks(pid)[1]
    return t


def cpu_per(label, n, a, b):
    line, total = [], 0.0
    for name, part in PARTS:
        d = sum(v - a[k] for k, v in b.items() if k[0] == name and k in a)  # (a backend gone meanwhile: not counted)
        us = d * 1e6 / TCK / n
        total += us
        if us >= 0.5:
            line.append("%s %.0f" % (part, us))
    print("        CPU per %s, in us: %s; %.0f in all: %d cores allow at most %.0f/s" %
          (label, ", ".join(line), total, os.cpu_count(), os.cpu_count() * 1e6 / total if total else 0))


def mock_total(mock):
    with urllib.request.urlopen("http://127.0.0.1:%d/_mock/stats" % mock, timeout=10) as r:
        return json.load(r).get("total", 0)


def setup(port, admin, channels, rate, tenants=1):
    if tenants > 1:  # channels over tenants, one key each: [(key, channel), ...]
        out = []
        for _ in range(tenants):
            key, ids = setup(port, admin, channels // tenants, rate)
            out += [(key, c) for c in ids]
        return out
    _, t = call(port, admin, "/v1/admin/tenants", {"name": "bench broadcast %s" % uuid.uuid4().hex[:6]})
    _, key = call(port, admin, "/v1/admin/tenants/%s/keys" % t["id"], {})
    unlimited = {"rate": 100000, "burst": 100000}
    call(port, admin, "/v1/admin/tenants/%s" % t["id"],
         {"rate_limits": {n: unlimited for n in ("rest_per_key", "rest_per_address", "send_per_key",
                                                 "send_per_address", "tokens_per_key", "tokens_per_address")}},
         method="PATCH")
    ids = []
    for _ in range(channels):
        NUMBERS[1] += 1  # (one series of numbers per run: channels' addresses are unique)
        _, ch = call(port, admin, "/v1/admin/tenants/%s/channels" % t["id"],
                     {"type": "twilio_sms", "address": "+1%04d%06d" % tuple(NUMBERS),
                      "settings": {"rate_per_second": rate},
                      "credentials": {"account_sid": "AC" + "0" * 32, "auth_token": uuid.uuid4().hex}})
        ids.append(ch["id"])
    return key["key"], ids


def recipients(n, base=0):
    return [{"to": "+1415%07d" % (base + i), "vars": {"name": "Customer %d" % (base + i), "code": base + i}}
            for i in range(n)]


def accept(port, admin, n):
    key, (channel,) = setup(port, admin, 1, 0.01)
    body = json.dumps({"channel_id": channel, "body": "Hi {{name}}, your code is {{code}}", "recipients":
                       recipients(n)}).encode()
    print("== Broadcast accept: %d recipients (%.1f MB) on one channel" % (n, len(body) / 1e6))
    a = cpu_snap()
    t0 = time.monotonic()
    status, r = call(port, key, "/v1/broadcasts", body)
    t_accept = time.monotonic() - t0
    while True:
        _, b = call(port, key, "/v1/broadcasts/%s" % r["id"])
        if b["status"] != "accepting":
            break
        time.sleep(0.02)
    t_whole = time.monotonic() - t0
    b_ = cpu_snap()
    print("  accepted (%d) in %.2f s; every recipient an outbox row after %.2f s: %.0f outbox rows/s "
          "(%.0f/s after the 202)" % (status, t_accept, t_whole, n / t_whole, n / max(t_whole - t_accept, 1e-9)))
    cpu_per("recipient accepted (render, stage, expand)", n, a, b_)
    t0 = time.monotonic()
    _, c = call(port, key, "/v1/broadcasts/%s" % r["id"], method="DELETE")
    print("  DELETE canceled %d in %.2f s" % (c.get("canceled", 0), time.monotonic() - t0))


def end_to_end(port, admin, mock, n, channels, tenants):
    per = n // channels
    chans = setup(port, admin, channels, 100, tenants)
    print("== Broadcasts end to end: %d recipients as %d broadcasts of %d over %d channels of %d tenants (100/s each) "
          "to the mock provider" % (per * channels, channels, per, channels, tenants))
    bodies = [(key, json.dumps({"channel_id": c, "body": "Sale {{name}}: code {{code}}",
                                "recipients": recipients(per, i * per)}).encode()) for i, (key, c) in enumerate(chans)]
    base = mock_total(mock)
    a = cpu_snap()
    t0 = time.monotonic()
    nxt = [0]
    lock = threading.Lock()

    def poster():
        while True:
            with lock:
                i = nxt[0]
                nxt[0] += 1
            if i >= len(bodies):
                return
            call(port, bodies[i][0], "/v1/broadcasts", bodies[i][1])
    threads = [threading.Thread(target=poster) for _ in range(16)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    t_posted = time.monotonic() - t0
    want = per * channels
    last, last_t = base, time.monotonic()
    while True:
        got = mock_total(mock) - base
        if got >= want:
            break
        if got != last:
            last, last_t = got, time.monotonic()
        elif time.monotonic() - last_t > 30:
            print("  stalled at %d of %d" % (got, want))
            break
        time.sleep(0.05)
    t_all = time.monotonic() - t0
    b_ = cpu_snap()
    print("  posted in %.2f s; the mock had %d after %.2f s: %.0f sends/s end to end" %
          (t_posted, got, t_all, got / t_all))
    cpu_per("send that reached the provider (its accept included)", max(got, 1), a, b_)


def main():
    port, admin, mock = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    WHO.update(gw=sys.argv[4], mock=sys.argv[5], db=sys.argv[6])
    n = int(sys.argv[7]) if len(sys.argv) > 7 else 100000
    channels = int(sys.argv[8]) if len(sys.argv) > 8 else 1000
    tenants = int(sys.argv[9]) if len(sys.argv) > 9 else 100
    if os.environ.get("BROADCAST_PARTS", "accept e2e").find("accept") >= 0:
        accept(port, admin, n)
    if os.environ.get("BROADCAST_PARTS", "accept e2e").find("e2e") >= 0:
        end_to_end(port, admin, mock, n, channels, tenants)


if __name__ == "__main__":
    main()
