#!/usr/bin/env python3
"""tests/bench/bench_cluster.py — several gateway nodes (issue 15, item 10): what `cluster = on` costs and carries on
one machine; prints figures, asserts nothing.

    bench_cluster.py GATEWAY DB_NAME

Every node is a gateway process with `cluster = on`, `shards = 1`, its own listen and admin ports, on the one
PostgreSQL (database DB_NAME, already migrated) and the one Redis (127.0.0.1:6390, db CLUSTER_REDIS_DB = 4, whose
keys sb:{cluster}:slots, :nodes and :drain are deleted before each configuration; no FLUSH). The webhooks are
pre-signed Twilio inbound SMS as gen_webhooks.py makes them, each a new message, spread round-robin over
CLUSTER_TENANTS (100) tenants of one channel each so that the tenants' slots spread over the nodes; the nodes share
public_url, so a webhook signed once is valid on any of them. wrk (tests/bench/webhook.lua) drives them.

  1. Scale: 1, 2 and 3 nodes (CLUSTER_NODES, "off 1 2 3"; "off" first: one node with cluster = off, the
     reference). Once `nodes -j` shows every node with 1024/N +-1 slots, a warm-up, then CLUSTER_ROUNDS (ROUNDS, 3)
     rounds of CLUSTER_SECONDS (5) of closed-loop load: CLUSTER_CONNS (48) connections in all, one wrk per node with
     its share of them (a load balancer's even spread: of the webhooks a node takes, (N-1)/N belong to another
     node's tenants and are routed through that node's Redis Stream).
     Webhooks/s (the sum of the wrk instances), p50/p99 (of the slowest instance), the rate until the last webhook
     was applied, and CPU per webhook by process from the first request until every receipt is applied: the gateways
     (sum), PostgreSQL (all its processes, and the backends it reaped), Redis, wrk. Medians of the rounds.
  2. Routed vs local: nodes A and B; CLUSTER_ROUTED_TENANTS (20) tenants whose slots B owns (`slots <tenant> -j`,
     tenants made until there are enough). First what the two cost idle (leases, heartbeats, blocking stream reads).
     Then, at each rate of CLUSTER_RATE ("2000 4000" webhooks/s offered: 40 connections of wrk, each pausing so long
     between requests; the answers' time makes the rate a little lower), the same paced load for CLUSTER_SECONDS posted
     (a) to B, the owner: local, and (b) to A: A verifies and commits the receipt, XADDs it to B's stream, B applies
     it. The variants alternate over CLUSTER_ROUNDS rounds (each round in the other order) after a warm-up of both;
     medians of CPU per webhook of each gateway, their sum, PostgreSQL and Redis, the gateways' read/write system
     calls and Redis commands (server-wide) per webhook, and the ratio routed/local (the issue's target: routed costs
     at most 20% more gateway CPU). Afterwards every webhook committed for those tenants is counted in `messages`.
     CLUSTER_PERF_OUT=PREFIX: one more round of each variant, not counted, with both gateways under perf
     (PREFIX-<rate>-<local|routed>-<A|B>.data, DWARF call graphs).

CPU is utime + stime from /proc: the gateways by pid, Redis the redis-server on port 6390, PostgreSQL every process
named postgres (with whatever else uses that server meanwhile: the machine is shared, hence the medians). A node is
stopped with SIGTERM between configurations (it drains its slots to the others first; the last one just stops).
"""
import base64
import hashlib
import hmac
import json
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
import uuid

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
TCK = os.sysconf("SC_CLK_TCK")
ADMIN_TOKEN = "bench-token"
PUBLIC_URL = "http://cluster.bench"  # every node's public_url: the signatures hold on any of them
REDIS_DB = os.environ.get("CLUSTER_REDIS_DB", "4")
SECONDS = int(os.environ.get("CLUSTER_SECONDS", "5"))
ROUNDS = int(os.environ.get("CLUSTER_ROUNDS", os.environ.get("ROUNDS", "3")))
TENANTS = int(os.environ.get("CLUSTER_TENANTS", "100"))
CONNS = int(os.environ.get("CLUSTER_CONNS", "48"))
# "off": the reference, one node with cluster = off (no leases, no fence, no publishing to other nodes)
NODE_COUNTS = os.environ.get("CLUSTER_NODES", "off 1 2 3").split()
ROUTED_TENANTS = int(os.environ.get("CLUSTER_ROUTED_TENANTS", "20"))
PACED_CONNS = 40
CAP = int(os.environ.get("CLUSTER_CAP", "15000"))  # webhooks/s a slice is made for (beyond, wrk repeats: duplicates)
PERF_OUT = os.environ.get("CLUSTER_PERF_OUT", "")  # PREFIX: perf records PREFIX-{local,routed}-{A,B}.data
PG = "host=127.0.0.1 port=5440 user=switchboard dbname=%s"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def redis(*args):
    return subprocess.run(["redis-cli", "-p", "6390", "-n", REDIS_DB] + list(args), capture_output=True, text=True,
                          timeout=10).stdout


def psql(db, query):
    return subprocess.run(["psql", "-X", "-At", PG % db, "-c", query], capture_output=True, text=True,
                          timeout=60).stdout.strip()


def http(port, path, body=None, method=None, token=ADMIN_TOKEN):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path), data=data,
                                 method=method or ("POST" if data is not None else "GET"),
                                 headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        raw = r.read()
        return json.loads(raw) if raw[:1] in (b"{", b"[") else raw.decode()


class Node:
    def __init__(self, name, tmp, gateway, db, cluster="on"):
        self.name, self.gateway = name, gateway
        self.port, self.admin = free_port(), free_port()
        self.conf = os.path.join(tmp, "%s.conf" % name)
        self.log = os.path.join(tmp, "%s.log" % name)
        with open(self.conf, "w") as f:
            f.write("# written by tests/bench/bench_cluster.py\n"
                    "mode = dev\nlisten = 127.0.0.1:%d\nadmin_listen = 127.0.0.1:%d\nadmin_token = %s\nshards = 1\n"
                    "cluster = %s\nnode_id = %s\npublic_url = %s\nredis_url = redis://127.0.0.1:6390/%s\n"
                    "database_url = host=127.0.0.1 port=5440 dbname=%s user=switchboard\nlog_level = warn\n"
                    "master_key = 00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n"
                    % (self.port, self.admin, ADMIN_TOKEN, cluster, name, PUBLIC_URL, REDIS_DB, db))
        self.proc = None

    def start(self):
        env = {k: v for k, v in os.environ.items() if not k.startswith("SB_")}  # SB_<KEY> would override the file
        self.proc = subprocess.Popen([self.gateway, "-c", self.conf], cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                                     stdout=open(self.log, "wb"), stderr=subprocess.STDOUT)

    def wait_up(self):
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                with urllib.request.urlopen("http://127.0.0.1:%d/healthz" % self.port, timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        sys.stderr.write("bench_cluster: %s did not come up; its log:\n%s\n"
                         % (self.name, open(self.log).read()[-4000:]))
        raise SystemExit(1)

    def console(self, line):
        """One console command with -j; its JSON answer (None if it had none)."""
        with socket.create_connection(("127.0.0.1", self.admin), timeout=5) as s:
            f = s.makefile("rwb")
            f.readline()  # the banner

            def cmd(c):
                f.write(c.encode() + b"\n")
                f.flush()
                lines = []
                while True:
                    ln = f.readline()
                    if not ln or ln.strip() == b"":
                        return lines
                    lines.append(ln.decode())
            cmd("auth " + ADMIN_TOKEN)
            out = cmd(line + " -j")
        try:
            return json.loads(out[0])
        except (ValueError, IndexError):
            return None

    def receipts(self):
        """(receipts this node committed, receipts it applied) so far: its /metrics."""
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % self.port, timeout=5) as r:
            stored = applied = 0.0
            for ln in r.read().decode().splitlines():
                if ln.startswith("sb_receipts_stored_total"):
                    stored += float(ln.split()[-1])
                elif ln.startswith("sb_receipts_applied_total"):
                    applied += float(ln.split()[-1])
        return stored, applied

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)


def streams(nodes):
    """The nodes' own streams: acknowledged entries stay in them (trimmed only at about a million), a few hundred
    bytes each; a run leaves nothing of them in Redis."""
    redis("DEL", *["sb:{n:%s}:in" % n.name for n in nodes])


def stop_all(nodes):
    for n in nodes:
        n.stop()
    deadline = time.monotonic() + 30
    for n in nodes:
        if n.proc:
            try:
                n.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                sys.stderr.write("  note: %s did not stop within 30 s of SIGTERM: killed\n" % n.name)
                n.proc.kill()
                n.proc.wait()
    streams(nodes)


def start_cluster(count, tmp, gateway, db, tag, cluster="on"):
    """count nodes started together on fresh cluster keys; returns them once the slots are balanced."""
    redis("DEL", "sb:{cluster}:slots", "sb:{cluster}:nodes", "sb:{cluster}:drain")
    nodes = [Node("%s-%d" % (tag, i + 1), tmp, gateway, db, cluster) for i in range(count)]
    streams(nodes)
    for n in nodes:
        n.start()
    for n in nodes:
        n.wait_up()
    t0 = time.monotonic()
    if cluster == "off":
        return nodes, 0.0
    names = sorted(n.name for n in nodes)
    while True:
        views = [(n.console("nodes") or {}).get("nodes", []) for n in nodes]
        if all(sorted(x["node"] for x in v) == names and sum(int(x["slots"]) for x in v) == 1024
               and all(abs(int(x["slots"]) - 1024 / count) <= 1 for x in v) for v in views):
            return nodes, time.monotonic() - t0
        if time.monotonic() - t0 > 60:
            stop_all(nodes)
            sys.stderr.write("bench_cluster: %d nodes not balanced after 60 s: %s\n" % (count, views[0]))
            raise SystemExit(1)
        time.sleep(0.25)


def make_tenants(node, n):
    """n tenants with one Twilio SMS channel each: [(tenant id, channel id, number, auth token)]."""
    out = []
    for _ in range(n):
        t = http(node.port, "/v1/admin/tenants", {"name": "bench cluster %s" % uuid.uuid4().hex[:6]})
        token = uuid.uuid4().hex
        number = "+1997%07d" % (uuid.uuid4().int % 10 ** 7)
        ch = http(node.port, "/v1/admin/tenants/%s/channels" % t["id"],
                  {"type": "twilio_sms", "address": number,
                   "credentials": {"account_sid": "AC" + "0" * 32, "auth_token": token}})
        out.append((t["id"], ch["id"], number, token))
    return out


SIDS = [uuid.uuid4().hex[:16], 0]  # the run's MessageSid prefix, and the count so far


def write_webhooks(path, tenants, count):
    """count pre-signed inbound SMS webhooks (gen_webhooks.py's form), round-robin over tenants, each a new message;
    lines "path<TAB>signature<TAB>body" for webhook.lua."""
    with open(path, "w") as f:
        for i in range(count):
            _, ch, number, token = tenants[i % len(tenants)]
            SIDS[1] += 1
            sid = "SM%s%016x" % (SIDS[0], SIDS[1])
            params = [("MessageSid", sid), ("SmsSid", sid), ("AccountSid", "AC" + "b" * 32),
                      ("From", "+1415%07d" % (i % 5000)), ("To", number), ("Body", "bench message %d" % i),
                      ("NumMedia", "0"), ("NumSegments", "1"), ("ApiVersion", "2010-04-01")]
            target = "/webhooks/twilio/%s" % ch
            data = PUBLIC_URL + target + "".join(k + v for k, v in sorted(params))
            sig = base64.b64encode(hmac.new(token.encode(), data.encode(), hashlib.sha1).digest()).decode()
            f.write("%s\t%s\t%s\n" % (target, sig, urllib.parse.urlencode(params)))


def ms(v):
    for suffix, k in (("us", 0.001), ("ms", 1.0), ("s", 1000.0)):
        if v.endswith(suffix):
            return float(v[:-len(suffix)]) * k
    return float(v)


def wrk_all(targets, seconds, delay_ms=None):
    """One wrk per (node, connections, requests file), all at once; returns per instance
    {rps, n, p50, p99, errors}, and wrk's CPU ticks."""
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    procs = []
    for node, conns, reqs, count in targets:
        env = dict(os.environ, SB_BENCH_REQS=reqs, SB_BENCH_FIRST="1", SB_BENCH_LAST=str(count),
                   SB_BENCH_PATH="/", SB_BENCH_HOST="127.0.0.1:%d" % node.port)
        if delay_ms:
            env["SB_BENCH_DELAY_MS"] = str(delay_ms)
        procs.append((subprocess.Popen(["wrk", "-t1", "-c%d" % conns, "-d%ds" % seconds, "--latency", "-s",
                                        os.path.join(ROOT, "tests/bench/webhook.lua"),
                                        "http://127.0.0.1:%d" % node.port],
                                       env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True), count))
    res = []
    for p, count in procs:
        out = p.communicate()[0]
        r = {"rps": 0.0, "n": 0, "p50": 0.0, "p99": 0.0, "errors": []}
        for ln in out.splitlines():
            w = ln.split()
            if ln.startswith("Requests/sec:"):
                r["rps"] = float(w[1])
            elif "requests in" in ln:
                r["n"] = int(w[0])
            elif w[:1] == ["50.000%"] or w[:1] == ["50%"]:
                r["p50"] = ms(w[1])
            elif w[:1] == ["99.000%"] or w[:1] == ["99%"]:
                r["p99"] = ms(w[1])
            elif "Non-2xx" in ln or "Socket errors" in ln:
                r["errors"].append(ln.strip())
        if r["n"] > count:
            r["errors"].append("the slice ran out (%d requests of %d): repeats were duplicates" % (r["n"], count))
        res.append(r)
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    wrk_s = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
    return res, wrk_s * TCK


def ticks(pid):
    """(name, own ticks, reaped children's ticks) of a process; (None, 0, 0) when gone."""
    try:
        with open("/proc/%s/stat" % pid) as f:
            s = f.read()
    except OSError:
        return None, 0, 0
    f = s[s.rindex(")") + 2:].split()
    return s[s.index("(") + 1:s.rindex(")")], int(f[11]) + int(f[12]), int(f[13]) + int(f[14])


def redis_pids():
    out = []
    for p in os.listdir("/proc"):
        if p.isdigit() and ticks(p)[0] == "redis-server":
            try:
                cmd = open("/proc/%s/cmdline" % p, "rb").read().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if ":6390" in cmd or " 6390" in cmd:
                out.append(p)
    return out


REDIS_PIDS = []


def cpu_snap(nodes):
    """CPU ticks so far: each gateway (by name), PostgreSQL (all postgres processes and what they reaped), Redis."""
    t = {n.name: ticks(n.proc.pid)[1] for n in nodes}
    for n in nodes:  # and its read and write system calls (all its threads): what a wake-up per webhook costs
        io = dict(ln.split(": ") for ln in open("/proc/%d/io" % n.proc.pid).read().splitlines())
        t[n.name + ":sys"] = int(io["syscr"]) + int(io["syscw"])
    pg = 0
    for p in os.listdir("/proc"):
        if p.isdigit():
            name, own, kids = ticks(p)
            if name == "postgres":
                pg += own + kids
    t["postgres"] = pg
    t["redis"] = sum(ticks(p)[1] for p in REDIS_PIDS)
    return t


def redis_stats():
    """INFO commandstats: {command: calls} (server-wide: whatever else uses this Redis counts too)."""
    out = {}
    for ln in redis("INFO", "commandstats").splitlines():
        if ln.startswith("cmdstat_"):
            name, rest = ln[8:].split(":", 1)
            f = dict(kv.split("=") for kv in rest.split(","))
            out[name] = int(f["calls"])
            out[name + ":usec"] = int(f["usec"])
    return out


def per(a, b, key, n):
    return (b[key] - a[key]) * 1e6 / TCK / n if n else 0.0


def calls(a, b, nodes, n):
    return sum(b[x.name + ":sys"] - a[x.name + ":sys"] for x in nodes) / n if n else 0.0


def wait_drained(nodes, timeout=60):
    """Until every receipt committed on any node is applied (summed over the nodes: a routed one is committed on one
    node and applied on another)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sum(s - a for s, a in (n.receipts() for n in nodes)) <= 0:
            return True
        time.sleep(0.05)
    sys.stderr.write("  note: receipts still unapplied after %d s\n" % timeout)
    return False


def committed(nodes):
    """Receipts committed so far, all nodes: the webhooks taken (wrk counts the answers it read; the requests still in
    flight when it stops are committed too, and uncounted)."""
    return int(sum(n.receipts()[0] for n in nodes))


def messages(db, tenant_ids):
    return int(psql(db, "SELECT count(*) FROM messages WHERE tenant_id IN (%s)" % ",".join(map(str, tenant_ids))) or 0)


def load():
    """The machine's load average over the last minute: the other work the figures shared the cores with."""
    return float(open("/proc/loadavg").read().split()[0])


def med(xs):
    return statistics.median(xs) if xs else 0.0


def scale(tmp, gateway, db):
    cores = os.cpu_count()
    print("== Cluster: 1, 2, 3 gateway nodes (cluster = on, shards = 1 each) on one PostgreSQL and one Redis (db %s), "
          "%d cores in all" % (REDIS_DB, cores))
    print("   (and first, for reference, 1 node with cluster = off);")
    print("   for every part: the nodes, PostgreSQL, Redis and wrk; %d tenants, pre-signed Twilio SMS (each a new "
          "message) round-robin over them;" % TENANTS)
    print("   %d connections in all, one wrk per node with its share; %d rounds of %ds once the slots are balanced, "
          "medians" % (CONNS, ROUNDS, SECONDS))
    tenants = None
    base = None
    for conf in NODE_COUNTS:
        off = conf == "off"
        count = 1 if off else int(conf)
        nodes, took = start_cluster(count, tmp, gateway, db, "n%s" % conf, "off" if off else "on")
        try:
            if tenants is None:
                tenants = make_tenants(nodes[0], TENANTS)
            ids = [t[0] for t in tenants]
            before, c0, answered = messages(db, ids), committed(nodes), 0
            conns = [CONNS // count + (1 if i < CONNS % count else 0) for i in range(count)]
            slice_n = [max(1000, CAP * SECONDS * c // CONNS) for c in conns]

            def files(tag):
                fs = []
                for i, n in enumerate(nodes):
                    path = os.path.join(tmp, "scale-%d-%s-%d.tsv" % (count, tag, i))
                    write_webhooks(path, tenants[i:] + tenants[:i], slice_n[i])
                    fs.append((n, conns[i], path, slice_n[i]))
                return fs
            # warm-up (each process's first seconds: connections, prepared statements, actors), then ANALYZE
            res, _ = wrk_all(files("w"), 2)
            answered += sum(r["n"] for r in res)
            wait_drained(nodes)
            psql(db, "ANALYZE")
            rows, load0 = [], load()
            for rnd in range(ROUNDS):
                fs = files("r%d" % rnd)
                k0 = committed(nodes)
                a = cpu_snap(nodes)
                t0 = time.monotonic()
                res, wrk_ticks = wrk_all(fs, SECONDS)
                wait_drained(nodes)
                t1 = time.monotonic()
                b = cpu_snap(nodes)
                n = committed(nodes) - k0  # the round's webhooks, those in flight when wrk stopped included
                answered += sum(r["n"] for r in res)
                for r in res:
                    for e in r["errors"]:
                        print("  note: %d nodes, round %d: %s" % (count, rnd + 1, e))
                gw = sum(per(a, b, x.name, n) for x in nodes)
                rows.append({"rps": sum(r["rps"] for r in res), "applied": n / (t1 - t0),
                             "p50": max(r["p50"] for r in res), "p99": max(r["p99"] for r in res), "gw": gw,
                             "pg": per(a, b, "postgres", n), "redis": per(a, b, "redis", n),
                             "wrk": wrk_ticks * 1e6 / TCK / n if n else 0, "sys": calls(a, b, nodes, n),
                             "each": [per(a, b, x.name, n) for x in nodes]})
            m = {k: med([r[k] for r in rows]) for k in ("rps", "applied", "p50", "p99", "gw", "pg", "redis", "wrk",
                                                        "sys")}
            each = [med([r["each"][i] for r in rows]) for i in range(count)]
            if base is None and not off:
                base = m
            wait_drained(nodes)
            got, taken = messages(db, ids) - before, committed(nodes) - c0
            total = m["gw"] + m["pg"] + m["redis"]
            if off:
                print("  1 node, cluster = off (the reference): %.0f webhooks/s, p50 %.2f ms, p99 %.2f ms; "
                      "applied %.0f/s"
                      % (m["rps"], m["p50"], m["p99"], m["applied"]))
            else:
                print("  %d node%s (balanced in %.1f s; %.0f%% of webhooks routed to another node): %.0f webhooks/s, "
                      "p50 %.2f ms, p99 %.2f ms (slowest wrk); applied %.0f/s"
                      % (count, "s" if count > 1 else " ", took, 100.0 * (count - 1) / count, m["rps"], m["p50"],
                         m["p99"], m["applied"]))
            print("        CPU per webhook, in us: gateways %.0f (%s), PostgreSQL %.0f, Redis %.1f; %.0f in all "
                  "(wrk %.0f); the gateways' read/write system calls per webhook %.1f%s"
                  % (m["gw"], " + ".join("%.0f" % e for e in each), m["pg"], m["redis"], total, m["wrk"], m["sys"],
                     "" if off or not base else "; vs 1 node: webhooks/s x%.2f, CPU x%.2f"
                     % (m["rps"] / base["rps"] if base["rps"] else 0,
                        total / (base["gw"] + base["pg"] + base["redis"]) if base["gw"] else 0)))
            print("        messages stored for the %d tenants: %d of %d webhooks committed (wrk read %d answers)%s; "
                  "load average %.1f before the rounds, %.1f after"
                  % (len(ids), got, taken, answered, "" if got == taken else "  <-- NOT ALL APPLIED", load0, load()))
        finally:
            stop_all(nodes)
    return tenants


def routed_rate(nodes, mine, rate, tmp):
    """The two variants at one paced rate, alternating over ROUNDS rounds; prints their medians. Returns (webhooks
    committed, answers wrk read)."""
    a_node, b_node = nodes
    delay = max(1, int(round(PACED_CONNS * 1000.0 / rate)))
    count = int(rate * SECONDS * 1.5)
    print("  about %d webhooks/s offered (%d connections, %d ms between a connection's requests; the answers' time "
          "adds to it); load average %.1f:" % (rate, PACED_CONNS, delay, load()))
    runs = {"local": [], "routed": []}
    k_all, answered = committed(nodes), 0
    # round 0: the warm-up of both, not counted; with CLUSTER_PERF_OUT one more under perf, not counted either
    for rnd in range(ROUNDS + (2 if PERF_OUT else 1)):
        for v in (["local", "routed"] if rnd % 2 == 0 else ["routed", "local"]):
            path = os.path.join(tmp, "routed-%d-%d-%s.tsv" % (rate, rnd, v))
            write_webhooks(path, mine, count)
            perf = []
            if rnd > ROUNDS:  # both gateways under perf
                for x in nodes:
                    perf.append(subprocess.Popen(
                        ["perf", "record", "-q", "-F", "999", "--call-graph", "dwarf,16384", "-p", str(x.proc.pid),
                         "-o", "%s-%d-%s-%s.data" % (PERF_OUT, rate, v, x.label), "--", "sleep", str(SECONDS)],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            k0, r0, s0, t0 = committed(nodes), redis_stats(), cpu_snap(nodes), time.monotonic()
            res, _ = wrk_all([(b_node if v == "local" else a_node, PACED_CONNS, path, count)],
                             2 if rnd == 0 else SECONDS, delay)
            for p in perf:
                p.wait()
            wait_drained(nodes)
            t1, s1, r1 = time.monotonic(), cpu_snap(nodes), redis_stats()
            n = committed(nodes) - k0
            answered += res[0]["n"]
            for e in res[0]["errors"]:
                print("  note: %s, round %d: %s" % (v, rnd, e))
            if rnd == 0 or rnd > ROUNDS or not n:
                continue
            runs[v].append({"rps": n / (t1 - t0), "p50": res[0]["p50"], "p99": res[0]["p99"],
                            "A": per(s0, s1, a_node.name, n), "B": per(s0, s1, b_node.name, n),
                            "pg": per(s0, s1, "postgres", n), "redis": per(s0, s1, "redis", n),
                            "sysA": calls(s0, s1, [a_node], n), "sysB": calls(s0, s1, [b_node], n),
                            "cmds": {k: (r1[k] - r0.get(k, 0)) / n for k in r1 if ":" not in k}})
    m = {}
    for v in ("local", "routed"):
        m[v] = x = {k: med([r[k] for r in runs[v]]) for k in ("rps", "p50", "p99", "A", "B", "pg", "redis", "sysA",
                                                                "sysB")}
        print("    %-6s (posted to %s): %.0f webhooks/s (to the last applied), p50 %.2f ms, p99 %.2f ms; CPU per "
              "webhook, in us:" % (v, "B" if v == "local" else "A", x["rps"], x["p50"], x["p99"]))
        cmds = {k: med([r["cmds"].get(k, 0) for r in runs[v]]) for k in runs[v][0]["cmds"]} if runs[v] else {}
        print("        gateways %.1f (A %.1f + B %.1f), PostgreSQL %.1f, Redis %.1f; read/write system calls per "
              "webhook: A %.1f, B %.1f" % (x["A"] + x["B"], x["A"], x["B"], x["pg"], x["redis"], x["sysA"], x["sysB"]))
        print("        Redis commands per webhook (INFO commandstats, server-wide): %s"
              % ", ".join("%s %.2f" % (k.upper(), cmds.get(k, 0)) for k in ("xadd", "xreadgroup", "xack", "publish")))
    lo, ro = m["local"], m["routed"]
    g_l, g_r = lo["A"] + lo["B"], ro["A"] + ro["B"]
    ratios = [(r["A"] + r["B"]) / (l["A"] + l["B"]) for l, r in zip(runs["local"], runs["routed"]) if l["A"] + l["B"]]
    if g_l:
        print("    routed/local, CPU per webhook (of the medians): gateways %.2f (round by round: %s), "
              "gateways + Redis %.2f, gateways + Redis + PostgreSQL %.2f; the target, gateways <= 1.20: %s"
              % (g_r / g_l, ", ".join("%.2f" % x for x in ratios), (g_r + ro["redis"]) / (g_l + lo["redis"]),
                 (g_r + ro["redis"] + ro["pg"]) / (g_l + lo["redis"] + lo["pg"]),
                 "met" if g_r / g_l <= 1.2 else "NOT met"))
    print("    load average after: %.1f" % load())
    return committed(nodes) - k_all, answered


def routed(tmp, gateway, db, tenants):
    rates = [int(x) for x in os.environ.get("CLUSTER_RATE", "2000 4000").split()]
    print("== Cluster, routed vs local: 2 nodes A and B (shards = 1 each), %d tenants whose slots B owns; the same "
          "paced load (wrk -t1, %ds a run)" % (ROUTED_TENANTS, SECONDS))
    print("   (a) posted to B, the owner (local), (b) posted to A, which commits each and hands it to B's stream "
          "(routed); %d rounds alternating, medians" % ROUNDS)
    nodes, _ = start_cluster(2, tmp, gateway, db, "ab")
    a_node, b_node = nodes
    a_node.label, b_node.label = "A", "B"
    try:
        pool, mine = list(tenants or []), []
        while len(mine) < ROUTED_TENANTS:
            if not pool:
                pool = make_tenants(a_node, max(10, 2 * (ROUTED_TENANTS - len(mine))))
            t = pool.pop(0)
            if (b_node.console("slots %s" % t[0]) or {}).get("node") == b_node.name:
                mine.append(t)
        ids = [t[0] for t in mine]
        # the cluster's own background, no webhooks: leases renewed, heartbeats, the stream readers' blocking reads
        s0, r0 = cpu_snap(nodes), redis_stats()
        time.sleep(3)
        s1, r1 = cpu_snap(nodes), redis_stats()
        idle = {k: (s1[k] - s0[k]) * 1e3 / TCK / 3 for k in (a_node.name, b_node.name, "redis")}
        ev = r1.get("evalsha", 0) - r0.get("evalsha", 0)
        print("  idle, the two nodes cost per second: CPU A %.1f ms, B %.1f ms, Redis %.1f ms (with whatever else uses "
              "it; EVALSHA, the leases' script, %.1f/s of %.2f ms each)"
              % (idle[a_node.name], idle[b_node.name], idle["redis"], ev / 3,
                 (r1.get("evalsha:usec", 0) - r0.get("evalsha:usec", 0)) / 1e3 / ev if ev else 0))
        before, taken, answered = messages(db, ids), 0, 0
        for rate in rates:
            k, a = routed_rate(nodes, mine, rate, tmp)
            taken += k
            answered += a
        wait_drained(nodes)
        got = messages(db, ids) - before
        print("  messages stored for the %d tenants: %d of %d webhooks committed, warm-ups included (wrk read %d "
              "answers)%s" % (len(ids), got, taken, answered, "" if got == taken else "  <-- NOT ALL APPLIED"))
    finally:
        stop_all(nodes)


def main():
    gateway, db = sys.argv[1], sys.argv[2]
    REDIS_PIDS.extend(redis_pids())
    if not REDIS_PIDS:
        sys.stderr.write("  note: no redis-server on port 6390 found: Redis CPU not counted\n")
    tmp = tempfile.mkdtemp(prefix="sb-bench-cluster.")
    try:
        parts = os.environ.get("CLUSTER_PARTS", "scale routed")
        t0 = time.monotonic()
        tenants = scale(tmp, gateway, db) if "scale" in parts else None
        t1 = time.monotonic()
        if "routed" in parts:
            routed(tmp, gateway, db, tenants)
        print("  (the cluster section took %.0f s: %.0f s the scale, %.0f s routed vs local)"
              % (time.monotonic() - t0, t1 - t0, time.monotonic() - t1))
    finally:
        subprocess.run(["rm", "-rf", tmp])
        redis("DEL", "sb:{cluster}:slots", "sb:{cluster}:nodes", "sb:{cluster}:drain")


if __name__ == "__main__":
    main()
