"""tests/integration/test_cluster.py — several nodes (cluster = on) on one PostgreSQL and one Redis: the fence itself
in SQL; three nodes: membership and the slots balanced among them, a webhook that lands on a node that does not own
its tenant handed to the owner, a live client on any node seeing every event in cursor order, a key revoked on one
node closing its clients on all, drain; a killed owner's slots taken over within 3 s while webhooks stream, with
nothing acknowledged lost and nothing twice. The other test_cluster_*.py files run the rest of this file's tests
(moves, routing of sends and calls, a Redis Cluster): each stays within the suite's time per file.
Run: SB_BIN=build/release/switchboard python3 tests/integration/test_cluster.py [test names]"""

import json
import re
import signal
import subprocess
import threading
import time
import uuid

import harness as h
from test_crash import Reader, Sender
from test_live import JSON, MSGPACK, connect, events, setup, sms
from test_webhooks import MASTER_KEY

REDIS_DB = h.REDIS_URL.rsplit("/", 1)[1]


RCLUSTER_PORT = 7101  # ops/redis_cluster.sh: three masters on 7101-7103
RCLUSTER_URL = "redis://127.0.0.1:%d/0" % RCLUSTER_PORT
REDIS = {"url": h.REDIS_URL}  # what the nodes of the test under way use


def redis(*args):
    if REDIS["url"] == RCLUSTER_URL:
        cmd = ["redis-cli", "-c", "-p", str(RCLUSTER_PORT)]
    else:
        cmd = ["redis-cli", "-p", "6390", "-n", REDIS_DB]
    return subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=10).stdout


def fresh_cluster():
    """No lease or member left from an earlier run in the tests' Redis database."""
    redis("DEL", "sb:{cluster}:slots", "sb:{cluster}:nodes", "sb:{cluster}:drain")


def node(name, **kw):
    kw.setdefault("redis_url", REDIS["url"])
    gw = h.Gateway(master_key=MASTER_KEY, cluster="on", node_id=name, **kw)
    gw.name = name
    gw.start()
    return gw


def start_three(nodes, **kw):
    """node-a, node-b and node-c (options kw) appended to nodes as they start, then balanced among themselves."""
    for n in ("node-a", "node-b", "node-c"):
        nodes.append(node(n, **kw))
    h.ok(h.wait_for(lambda: balanced(nodes, ["node-a", "node-b", "node-c"]), 40), "three nodes balanced")


def console(gw, line):
    with h.Console(gw.admin_port) as c:
        c.cmd("auth " + h.ADMIN_TOKEN)
        r = c.cmd(line)
    return r


def cj(gw, line):
    r = console(gw, line + " -j")
    try:
        return json.loads(r[0])
    except (ValueError, IndexError):
        return {"error": r}


def members(gw):
    return cj(gw, "nodes").get("nodes", [])


def owner(gw, tenant):
    return cj(gw, "slots %s" % tenant)


def settled_owner(nodes, tenant, timeout=5):
    """The tenant's owner once every node names the same one with the same epoch (a move just made may take a
    round to reach every node's map): {"node", "epoch", ...}, or {} if they never agree."""
    def agreed():
        views = [owner(gw, tenant) for gw in nodes]
        return views[0] if views[0].get("node") and all(v == views[0] for v in views) else None
    return h.wait_for(agreed, timeout) or {}


def balanced(nodes, names):
    """Every node sees exactly the live members `names`, and the slots are spread within one of each other."""
    for gw in nodes:
        m = members(gw)
        if sorted(x["node"] for x in m) != sorted(names):
            return False
        counts = [x["slots"] for x in m]
        if sum(counts) != 1024 or max(counts) - min(counts) > 1:
            return False
    return True


def by_name(nodes, name):
    return [gw for gw in nodes if gw.name == name][0]


def stop_all(nodes):
    if h.failures():
        for gw in nodes:
            lines = [l for l in gw.log().splitlines() if "cluster:" in l or "sweep" in l or "refused" in l]
            h.diag("%s:\n%s" % (gw.name, "\n".join(lines[-40:])))
    for gw in nodes:
        if gw.proc is not None and gw.returncode is None:
            gw.kill()
        gw.finish()


def check_readers(readers, acked, unacked, what):
    for r in readers:
        cursors = [e["cursor"] for e in r.events]
        created = [e["data"]["provider_id"] for e in r.events if e["type"] == "message.created"]
        h.ok(cursors == list(range(1, len(cursors) + 1)),
             "%s: %s reader: cursors 1..%d, each once, in order" % (what, r.protocol, len(cursors)),
             [c for i, c in enumerate(cursors) if c != i + 1][:10])
        missing = set(acked) - set(created)
        h.ok(not missing, "%s: %s reader: every acknowledged message arrived (%d)" % (what, r.protocol, len(acked)),
             sorted(missing)[:5])
        h.ok(len(created) == len(set(created)), "%s: %s reader: no message twice" % (what, r.protocol))
        h.ok(set(created) <= set(acked) | unacked, "%s: %s reader: nothing that was never sent" % (what, r.protocol))


def psql(query):
    p = subprocess.run(["psql", "-X", "-At", "-v", "VERBOSITY=verbose", h.DATABASE_URL, "-c", query],
                       capture_output=True, text=True, timeout=10)
    return p.returncode, p.stdout.strip(), p.stderr


def test_fence_sql():
    """sb_fence refuses an older epoch with SQLSTATE SBF01, and sb_fence_bump never lowers one."""
    slot = 60000 + uuid.uuid4().int % 5000  # beyond any real slot: this test's alone
    h.ok(h.sql("SELECT sb_fence_bump(ARRAY[%d], ARRAY[5::bigint])" % slot) == "{}", "a bump to epoch 5")
    rc, out, err = psql("SELECT sb_fence(ARRAY[%d], ARRAY[5::bigint])" % slot)
    h.ok(rc == 0 and out == "1", "a writer at epoch 5 passes the fence", (out, err))
    rc, out, err = psql("SELECT sb_fence(ARRAY[%d], ARRAY[4::bigint])" % slot)
    h.ok(rc != 0 and "taken over" in err and "SBF01" in err, "a writer at epoch 4 is refused, SQLSTATE SBF01", err)
    rc, out, err = psql("SELECT sb_fence(ARRAY[%d, %d], ARRAY[5::bigint, 4])" % (slot, slot + 1))
    h.ok(rc == 0, "a slot never raised passes at any epoch", err)
    h.ok(h.sql("SELECT sb_fence_bump(ARRAY[%d], ARRAY[3::bigint])" % slot) == "{%d}" % slot,
         "a bump below the slot's epoch answers the slot as stale")
    h.ok(h.sql("SELECT epoch FROM slot_epochs WHERE slot = %d" % slot) == "5", "and lowers nothing")
    h.sql("DELETE FROM slot_epochs WHERE slot IN (%d, %d)" % (slot, slot + 1))


def test_three_nodes():
    fresh_cluster()
    nodes = []
    try:
        nodes.append(node("node-a"))
        h.ok(h.wait_for(lambda: balanced(nodes, ["node-a"]), 10), "node-a alone owns all 1024 slots",
             members(nodes[0]))
        nodes.append(node("node-b"))
        nodes.append(node("node-c"))
        t0 = time.monotonic()
        h.ok(h.wait_for(lambda: balanced(nodes, ["node-a", "node-b", "node-c"]), 40),
             "three nodes: each sees the three, 341-342 slots each (%.1f s)" % (time.monotonic() - t0),
             [members(gw) for gw in nodes])
        m = members(nodes[0])
        h.ok(all(set(x) >= {"node", "self", "address", "shards", "slots", "heartbeat_age_ms"} for x in m)
             and [x["self"] for x in m].count("yes") == 1
             and all(x["heartbeat_age_ms"] < 5000 for x in m)
             and {x["address"] for x in m} == {"127.0.0.1:%d" % gw.port for gw in nodes},
             "nodes -j: address, shards, slots, heartbeat age; self once", m)

        # A tenant, its owner, and two others: webhooks land on one non-owner, the client reads on the other.
        t = setup(nodes[0])

        o = settled_owner(nodes, t["tenant"])
        h.ok(o.get("node") in ("node-a", "node-b", "node-c") and o.get("epoch", 0) > 0,
             "slots <tenant> -j: the same owner and epoch on every node", [owner(gw, t["tenant"]) for gw in nodes])
        own = by_name(nodes, o["node"])
        others = [gw for gw in nodes if gw is not own]
        ws = connect(others[1], t["key"], JSON)
        h.ok(ws.recv_op().get("op") == "welcome", "a live client on a node that does not own the tenant")
        sids, statuses = [], []
        for i in range(20):
            sid, r = sms(others[0], t, "routed %d" % i)
            statuses.append(r.status)
            sids.append(sid)
        h.ok(statuses == [200] * 20, "20 webhooks acknowledged by a node that does not own the tenant", statuses)
        got = []
        deadline = time.monotonic() + 10
        while sum(e["type"] == "message.created" for e in got) < 20 and time.monotonic() < deadline:
            got += events(ws, 1, timeout=max(0.01, deadline - time.monotonic()))
        created = [e["data"]["provider_id"] for e in got if e["type"] == "message.created"]
        h.ok(created == sids, "the client sees the 20 messages, in order, though neither its node nor the one that "
             "took them owns the tenant", (len(created), [sids.index(x) if x in sids else x for x in created]))
        h.ok([e["cursor"] for e in got] == list(range(got[0]["cursor"], got[0]["cursor"] + len(got))) if got else False,
             "with consecutive cursors")
        rows = h.sql("SELECT count(*) FROM messages WHERE tenant_id = %s" % t["tenant"])
        h.ok(rows == "20", "20 messages stored, none twice", rows)
        ws.shutdown()

        # Acknowledged once applied: while the owner's write waits behind a lock on messages, the entries its reader
        # handed to the session stay pending in its stream; applied, they are acknowledged.
        h.ok(h.wait_for(lambda: stream_pending(o["node"]) == 0, 5),
             "every entry of the owner's stream acknowledged once applied", stream_pending(o["node"]))
        locker = lock_messages(3)
        statuses = [sms(others[0], t, "locked %d" % i)[1].status for i in range(5)]
        held = h.wait_for(lambda: stream_pending(o["node"]) == 5, 2)
        h.ok(statuses == [200] * 5 and held, "5 more through the non-owner while the owner's writes wait on a lock: "
             "handed over, not applied, still pending in the owner's stream (%d)" % stream_pending(o["node"]),
             statuses)
        locker.wait(15)
        h.ok(h.wait_for(lambda: stream_pending(o["node"]) == 0, 5), "applied once the lock is gone, and acknowledged",
             stream_pending(o["node"]))
        rows = h.sql("SELECT count(*) FROM messages WHERE tenant_id = %s" % t["tenant"])
        h.ok(rows == "25", "25 messages stored, none twice", rows)

        # a key revoked through one node closes its live clients on the others
        from test_keys import admin as admin_call, closed_with, j
        k = j(admin_call(nodes[0], "POST", "/v1/admin/tenants/%s/keys" % t["tenant"], {"role": "agent"}))
        clients = [connect(gw, k["key"], JSON) for gw in nodes]
        h.ok(all(c.recv_op().get("op") == "welcome" for c in clients), "a live client of the new key on each node")
        r = admin_call(nodes[1], "DELETE", "/v1/admin/tenants/%s/keys/%s" % (t["tenant"], k["id"]))
        h.ok(r.status == 200, "the key revoked through node-b", r)
        got = [closed_with(c) for c in clients]
        h.ok(got == [("key_revoked", 4401)] * 3, "its clients on all three nodes: key_revoked, close 4401", got)

        # drain: a node gives its slots to the others
        victim = others[1]
        r = console(nodes[0], "drain node %s" % victim.name)
        h.ok(r and "started" in " ".join(r), "drain node <id> from another node's console", r)
        t0 = time.monotonic()

        def drained():
            m = {x["node"]: x for x in members(nodes[0])}
            return victim.name in m and m[victim.name]["slots"] == 0 and sum(x["slots"] for x in m.values()) == 1024
        h.ok(h.wait_for(drained, 20), "the drained node ends with no slot, the others with all of them (%.1f s)"
             % (time.monotonic() - t0), members(nodes[0]))
        m = {x["node"]: x for x in members(nodes[0])}
        h.ok(m.get(victim.name, {}).get("draining") == "yes", "nodes shows it draining", m)
        r = console(nodes[0], "drain node nobody")
        h.ok(r and r[0].startswith("ERR no such live node"), "drain of an unknown node: ERR", r)
        r = console(nodes[0], "drain sideways 1")
        h.ok(r and r[0].startswith("ERR usage"), "drain with a bad form: ERR usage", r)
    finally:
        for gw in nodes:  # SIGTERM drains each: its slots handed over, exit 0 within drain_timeout
            if gw.proc is not None and gw.returncode is None:
                gw.stop()
        stop_all(nodes)


def test_failover_kill9():
    """kill -9 of the tenant's owner while webhooks stream into another node and clients read on two nodes."""
    fresh_cluster()
    nodes = []
    try:
        start_three(nodes)
        t = setup(nodes[0])
        own = by_name(nodes, settled_owner(nodes, t["tenant"])["node"])
        others = [gw for gw in nodes if gw is not own]
        readers = [Reader(others[0], t["key"], JSON), Reader(others[1], t["key"], MSGPACK)]
        senders = [Sender(others[0], t, "f%d" % k) for k in range(2)] + [Sender(others[1], t, "g0")]
        for x in readers + senders:
            x.start()
        time.sleep(2.0)
        epoch = owner(others[0], t["tenant"])["epoch"]
        before = sum(len(s.acked) for s in senders)
        own.kill()  # SIGKILL: no drain, no release
        t0 = time.monotonic()
        took = [None]

        def reowned():
            o = owner(others[0], t["tenant"])
            if o.get("node") in (others[0].name, others[1].name) and o.get("epoch", 0) > epoch:
                took[0] = time.monotonic() - t0
                return True
            return False
        h.ok(h.wait_for(reowned, 10, interval=0.05), "the killed owner's slot is owned elsewhere, with a newer epoch")
        h.diag("FAILOVER_REOWNED_S %.2f" % (took[0] or -1))
        h.ok(took[0] is not None and took[0] <= 3.0, "re-owned within 3 s of kill -9 (%.2f s)" % (took[0] or -1))
        # traffic flows again: a fresh webhook reaches the readers soon after
        sid, r = sms(others[0], t, "after the kill")
        flowed = h.wait_for(lambda: all(any(e["data"].get("provider_id") == sid for e in rd.events
                                            if e["type"] == "message.created") for rd in readers), 10)
        h.ok(r.status == 200 and flowed, "a webhook after the takeover reaches both readers")
        h.diag("FAILOVER_FLOWING_S %.2f" % (time.monotonic() - t0))
        time.sleep(1.0)
        for s in senders:
            s.stopping = True
        for s in senders:
            s.join()
        acked = [x for s in senders for x in s.acked] + [sid]
        unacked = {x for s in senders for x in s.unacked}
        h.ok(before > 20 and len(acked) > before, "webhooks acknowledged before (%d) and after (%d) the kill"
             % (before, len(acked) - before))

        def complete():
            return all({e["data"]["provider_id"] for e in r.events if e["type"] == "message.created"} >= set(acked)
                       for r in readers)
        h.wait_for(complete, 20)
        time.sleep(0.5)
        for rd in readers:
            rd.stopping = True
        for rd in readers:
            rd.join()
        check_readers(readers, acked, unacked, "kill -9 of the owner")
        rows = h.sql("SELECT count(*), count(DISTINCT provider_id) FROM messages WHERE tenant_id = %s" % t["tenant"])
        a, b = rows.split("|")
        h.ok(a == b, "no message stored twice (%s)" % a, rows)
    finally:
        stop_all(nodes)


def test_sigstop_fenced():
    """An owner paused past its lease is fenced: what it does on waking is refused; nothing is lost or doubled."""
    fresh_cluster()
    nodes = []
    try:
        for n in ("node-a", "node-b"):
            nodes.append(node(n))
        h.ok(h.wait_for(lambda: balanced(nodes, ["node-a", "node-b"]), 40), "two nodes balanced")
        t = setup(nodes[0])
        own = by_name(nodes, settled_owner(nodes, t["tenant"])["node"])
        other = [gw for gw in nodes if gw is not own][0]
        reader = Reader(other, t["key"], JSON)
        reader.start()
        acked = []
        for i in range(5):
            sid, r = sms(own, t, "before %d" % i)
            if r.status == 200:
                acked.append(sid)
        h.wait_for(lambda: len(reader.events) >= 5, 10)
        epoch = owner(other, t["tenant"])["epoch"]
        own.send_signal(signal.SIGSTOP)
        # webhooks sent to the paused owner wait in its sockets; it will handle them when it wakes, late
        late = []

        def post_late(i):
            sid = "SM" + uuid.uuid4().hex
            try:
                _, r = sms(own, t, "late %d" % i, sid)
                if r is not None and r.status == 200:
                    late.append(sid)
            except OSError:
                pass
        threads = [threading.Thread(target=post_late, args=(i,), daemon=True) for i in range(5)]
        for th in threads:
            th.start()
        t0 = time.monotonic()
        h.ok(h.wait_for(lambda: owner(other, t["tenant"]).get("node") == other.name
                        and owner(other, t["tenant"]).get("epoch", 0) > epoch, 10, interval=0.05),
             "the paused owner's slot is taken by the other node (%.2f s)" % (time.monotonic() - t0))
        during = []
        for i in range(5):
            sid, r = sms(other, t, "during %d" % i)
            if r.status == 200:
                during.append(sid)
        time.sleep(0.5)
        own.send_signal(signal.SIGCONT)
        for th in threads:
            th.join(10)
        acked += during + late
        h.ok(len(late) == 5, "the woken node still acknowledges what it had received (receipts are durable: %d)"
             % len(late))

        def complete():
            return {e["data"]["provider_id"] for e in reader.events if e["type"] == "message.created"} >= set(acked)
        h.ok(h.wait_for(complete, 20), "every acknowledged message reaches the reader (the new owner applies the "
             "woken node's receipts)")
        time.sleep(0.5)
        reader.stopping = True
        reader.join()
        check_readers([reader], acked, set(), "SIGSTOP")
        rows = h.sql("SELECT count(*), count(DISTINCT provider_id) FROM messages WHERE tenant_id = %s"
                     % t["tenant"])
        h.ok(rows == "%d|%d" % (len(acked), len(acked)), "%d messages stored, none twice" % len(acked), rows)
        ev = h.sql("SELECT sum(last_cursor - first_cursor + 1), max(last_cursor) FROM event_pages"
                   " WHERE tenant_id = %s" % t["tenant"])
        a, b = ev.split("|")
        h.ok(a == b, "the event log has no hole and no cursor twice (%s)" % b, ev)
        time.sleep(1.0)
        log = own.log()
        h.ok("dropped (lease not renewed in time)" in log or "taken over by another node" in log,
             "the woken node dropped the slots it lost")
        h.diag("FENCED_REFUSALS %d" % log.count("SBF01"))
    finally:
        stop_all(nodes)


def test_join_while_streaming():
    """A node joins while webhooks stream: slots move to it without losing or reordering anything."""
    fresh_cluster()
    nodes = []
    try:
        nodes.append(node("node-a"))
        h.ok(h.wait_for(lambda: balanced(nodes, ["node-a"]), 10), "one node")
        t = setup(nodes[0])
        readers = [Reader(nodes[0], t["key"], JSON)]
        senders = [Sender(nodes[0], t, "j%d" % k) for k in range(2)]
        for x in readers + senders:
            x.start()
        time.sleep(1.0)
        nodes.append(node("node-b"))
        h.ok(h.wait_for(lambda: balanced(nodes, ["node-a", "node-b"]), 40), "node-b joined: 512 slots each")
        time.sleep(1.0)
        for s in senders:
            s.stopping = True
        for s in senders:
            s.join()
        acked = [x for s in senders for x in s.acked]
        unacked = {x for s in senders for x in s.unacked}

        def complete():
            return {e["data"]["provider_id"] for e in readers[0].events
                    if e["type"] == "message.created"} >= set(acked)
        h.ok(h.wait_for(complete, 20), "every acknowledged message arrived (%d)" % len(acked))
        time.sleep(0.5)
        for r in readers:
            r.stopping = True
            r.join()
        check_readers(readers, acked, unacked, "join")
        # Per-sender order: each sender posts its next webhook only once the last was answered, and a receipt is
        # handed on before its webhook is answered, so the sender's messages must be applied in the order it sent
        # them, through the move as well.
        bodies = [e["data"].get("body", "") for e in readers[0].events if e["type"] == "message.created"]
        swaps = []
        for tag in ("j0", "j1"):
            nums = [int(b.split()[1]) for b in bodies if b.startswith(tag + " ")]
            swaps += [(a, b) for a, b in zip(nums, nums[1:]) if b < a]
        h.ok(not swaps, "each sender's messages applied in the order it sent them (%d messages)" % len(bodies),
             swaps[:10])
    finally:
        stop_all(nodes)


def stream_pending(name):
    """How many entries of node name's stream were delivered to it and not yet acknowledged (-1: no such group)."""
    try:
        return int(redis("XPENDING", "sb:{n:%s}:in" % name, "sb").split("\n")[0])
    except ValueError:
        return -1


def lock_messages(seconds):
    """A transaction holding messages in SHARE mode for seconds: every actor write waits; returns once it holds."""
    p = subprocess.Popen(["psql", h.DATABASE_URL, "-c", "BEGIN; LOCK TABLE messages IN SHARE MODE; SELECT "
                          "pg_sleep(%s); COMMIT;" % seconds], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    h.wait_for(lambda: h.sql("SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation WHERE "
                             "c.relname = 'messages' AND l.mode = 'ShareLock' AND l.granted") == "1", 2)
    return p


def test_redelivered_after_restart():
    """Entries an owner was handed and had not applied when it was killed stay unacknowledged in its stream; the
    node started again with the same id reads them again (the pending ones first, in pages), and each receipt is
    applied once, whether by it or by the sweep of the node that took the slot meanwhile."""
    fresh_cluster()
    nodes = []
    try:
        nodes.append(node("node-a"))
        nodes.append(node("node-b"))
        h.ok(h.wait_for(lambda: balanced(nodes, ["node-a", "node-b"]), 40), "two nodes balanced")
        t = setup(nodes[0])
        o = settled_owner(nodes, t["tenant"])
        own = by_name(nodes, o["node"])
        front = [gw for gw in nodes if gw is not own][0]
        h.wait_for(lambda: stream_pending(own.name) <= 0, 5)
        locker = lock_messages(4)
        sids = []
        for i in range(5):
            sid, r = sms(front, t, "redelivered %d" % i)
            h.ok(r.status == 200, "webhook %d acknowledged by the node that does not own the tenant" % i, r)
            sids.append(sid)
        h.ok(h.wait_for(lambda: stream_pending(own.name) == 5, 2), "the owner holds the 5, unapplied: pending",
             stream_pending(own.name))
        own.kill()
        own.start()  # (the same node id: its stream and its pending entries are its own again)
        locker.wait(15)

        def applied():
            return h.sql("SELECT count(*), count(DISTINCT provider_id) FROM messages WHERE tenant_id = %s"
                         % t["tenant"]) == "5|5"
        h.ok(h.wait_for(applied, 15), "the 5 applied, each once",
             h.sql("SELECT count(*), count(DISTINCT provider_id) FROM messages WHERE tenant_id = %s" % t["tenant"]))
        h.ok(h.wait_for(lambda: stream_pending(own.name) == 0, 10), "and its stream has nothing left unacknowledged",
             stream_pending(own.name))
        stored = h.sql("SELECT provider_id FROM messages WHERE tenant_id = %s ORDER BY id" % t["tenant"]).split("\n")
        h.ok(stored == sids, "in the order they were sent", stored)
    finally:
        stop_all(nodes)


def test_sends_across_nodes():
    """Sends posted to every node reach the owner's session: one conversation's messages reach the provider in the
    order accepted, the channel's pace holds, an idempotency key answers the first id from any node."""
    from test_lanes import admin_req, post
    from test_mock_provider import Mock
    from test_outbound import setup as setup_out
    fresh_cluster()
    nodes = []
    with Mock() as mock:
        try:
            start_three(nodes, twilio_api_base="http://127.0.0.1:%d" % mock.port)
            t = setup_out(nodes[0], settings={"rate_per_second": 5})
            unlimited = {name: {"rate": 100000, "burst": 100000} for name in
                         ("rest_per_key", "rest_per_address", "send_per_key", "send_per_address")}
            admin_req(nodes[0], "PATCH", "/v1/admin/tenants/%s" % t["tenant"], {"rate_limits": unlimited})
            own = settled_owner(nodes, t["tenant"])["node"]
            ids, statuses = [], []
            for i in range(30):
                gw = nodes[i % 3]
                r = post(gw, t, {"channel_id": t["channel"], "to": "+14155550123", "body": "x%d" % i,
                                 "idempotency_key": "k%d" % i})
                statuses.append(r.status)
                ids.append(r.json().get("id") if r.status == 202 else None)
            h.ok(statuses == [202] * 30, "30 sends accepted, two thirds of them by nodes that do not own the "
                 "tenant (%s does)" % own, statuses)
            r = post(nodes[1], t, {"channel_id": t["channel"], "to": "+14155550123", "body": "x0",
                                   "idempotency_key": "k0"})
            h.ok(r.status == 200 and r.json().get("id") == ids[0], "the same key from another node: 200, the first id",
                 r)

            def arrived():
                got = mock.received(sender=t["address"]).get("requests", [])
                return got if len(got) >= 30 else None
            got = h.wait_for(arrived, 20) or []
            bodies = [x["body"] for x in got]
            h.ok(bodies == ["x%d" % i for i in range(30)], "the provider got the 30, once each, in the order accepted",
                 bodies[:12])
            stats = mock.stats().get("senders", {}).get(t["address"], {})
            most = mock.most_per_second(t["address"])
            h.ok(0 < most <= 5, "the pace held across nodes: never more than 5 in any second, give or take 50 ms "
                 "of delivery (max %d)" % most, stats)

            # a cancel posted to a node that does not own the tenant reaches the owner's session
            others = [gw for gw in nodes if gw.name != own]
            later = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 120))
            r = post(others[0], t, {"channel_id": t["channel"], "to": "+14155550123", "body": "later",
                                    "send_at": later})
            mid = r.json().get("id") if r.status == 202 else None
            h.ok(mid and r.json().get("status") == "scheduled", "a scheduled send through a non-owner", r)
            r = h.request(others[1].port, "DELETE", "/v1/messages/%s" % mid, {"Authorization": "Bearer " + t["key"]})
            h.ok(r.status == 200 and r.json().get("status") == "canceled",
                 "DELETE through the other non-owner: 200 canceled by the owner's session", r)
            r = h.request(others[0].port, "DELETE", "/v1/messages/%s" % mid, {"Authorization": "Bearer " + t["key"]})
            h.ok(r.status == 200 and r.json().get("status") == "canceled", "a second DELETE: canceled still", r)
            h.ok(not [x for x in mock.received(sender=t["address"]).get("requests", []) if x["body"] == "later"],
                 "the canceled message never reached the provider")

            # a pace changed on a non-owner reaches the owner's session at once
            r = admin_req(others[0], "PATCH", "/v1/admin/tenants/%s/channels/%s" % (t["tenant"], t["channel"]),
                          {"settings": {"rate_per_second": 7}})
            h.ok(r.status == 200, "the pace patched to 7/s through a non-owner", r)
            owner_gw = by_name(nodes, own)

            def paced():
                rr = console(owner_gw, "counters %s %s -j" % (t["tenant"], t["channel"]))
                return '"pace_per_second":7.0' in "".join(rr) and rr
            got = h.wait_for(paced, 5)
            h.ok(got, "the owner's session paces at 7/s now (console counters on the owner)",
                 console(owner_gw, "counters %s %s -j" % (t["tenant"], t["channel"])))

            # a broadcast posted to a non-owner is forwarded whole to the owner; read and canceled from the other
            auth = {"Authorization": "Bearer " + t["key"]}

            def bpost(gw, t, body):
                return h.request(gw.port, "POST", "/v1/broadcasts", dict(auth, **{"Content-Type": "application/json"}),
                                 json.dumps(body).encode(), timeout=60)

            def bget(gw, t, bid):
                return h.request(gw.port, "GET", "/v1/broadcasts/%s" % bid, auth)

            def bdelete(gw, t, bid):
                return h.request(gw.port, "DELETE", "/v1/broadcasts/%s" % bid, auth, timeout=30)

            def recipients(n):
                return [{"to": "+1415%07d" % i, "vars": {"name": "C%d" % i}} for i in range(n)]
            r = bpost(others[0], t, {"channel_id": t["channel"], "body": "Hi {{name}}", "recipients": recipients(50),
                                     "send_at": later})
            bid = r.json().get("id") if r.status == 202 else None
            h.ok(bid and r.json().get("recipients") == 50, "POST /v1/broadcasts through a non-owner: 202 from the "
                 "owner", r)
            r = bget(others[1], t, bid)
            h.ok(r.status == 200 and r.json().get("recipients") == 50, "GET from the other non-owner", r)
            r = bdelete(others[1], t, bid)
            h.ok(r.status == 200, "DELETE through the other non-owner: 200 from the owner's session", r)
            counts = h.wait_for(lambda: bget(nodes[0], t, bid).json().get("counts", {}).get("canceled") == 50 and
                                bget(nodes[0], t, bid).json(), 10)
            h.ok(counts, "its 50 messages canceled", bget(nodes[0], t, bid).json())
        finally:
            stop_all(nodes)


def test_sends_committed_where_taken():
    """A send that lands on a node that does not own its tenant is committed there and answered there, whatever the
    owner is doing (issue 15, item 4): a cancel through the owner itself right after the 202 waits for the send to
    arrive; while the owner is SIGSTOPped a send is answered 202 at once, reads back as queued and not numbered yet,
    and its idempotency key answers its id on the other node; after kill -9 of the owner a survivor takes the slot
    and sends it, numbered, once."""
    from test_lanes import post
    from test_mock_provider import Mock
    from test_outbound import setup as setup_out
    fresh_cluster()
    nodes = []
    with Mock() as mock:
        try:
            start_three(nodes, twilio_api_base="http://127.0.0.1:%d" % mock.port)
            t = setup_out(nodes[0])
            own = settled_owner(nodes, t["tenant"])["node"]
            owner_gw = by_name(nodes, own)
            others = [gw for gw in nodes if gw.name != own]
            auth = {"Authorization": "Bearer " + t["key"]}
            to = "+14155550177"

            later = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 120))
            r = post(others[0], t, {"channel_id": t["channel"], "to": to, "body": "later", "send_at": later})
            mid = r.json().get("id") if r.status == 202 else None
            r = h.request(owner_gw.port, "DELETE", "/v1/messages/%s" % mid, auth)
            h.ok(mid and r.status == 200 and r.json().get("status") == "canceled",
                 "a send taken by a non-owner, canceled at once through the owner: 200 canceled", r)

            owner_gw.send_signal(signal.SIGSTOP)
            t0 = time.monotonic()
            r = post(others[0], t, {"channel_id": t["channel"], "to": to, "body": "while the owner sleeps",
                                    "idempotency_key": "asleep-1"})
            took = time.monotonic() - t0
            mid = r.json().get("id") if r.status == 202 else None
            h.ok(mid and took < 2, "the owner SIGSTOPped: the non-owner answers 202 in %.2f s" % took, r)
            r = h.request(others[1].port, "GET", "/v1/messages/%s" % mid, auth)
            m = r.json() if r.status == 200 else {}
            h.ok(m.get("status") == "queued" and m.get("conversation_id") is None and m.get("to") == to and
                 m.get("body") == "while the owner sleeps" and len(m.get("history", [])) == 1,
                 "read back on the other node: queued, not numbered yet", r)
            r = post(others[1], t, {"channel_id": t["channel"], "to": to, "body": "while the owner sleeps",
                                    "idempotency_key": "asleep-1"})
            h.ok(r.status == 200 and r.json().get("id") == mid, "its key on the other node: 200, the same id", r)
            h.ok(h.sql("SELECT count(*) FROM webhook_receipts WHERE tenant_id = %s AND message_id = %s AND "
                       "processed_at IS NULL" % (t["tenant"], mid)) == "1", "committed once, as a send's receipt")

            owner_gw.kill()  # (SIGKILL reaches a stopped process)
            t0 = time.monotonic()

            def numbered():
                rr = h.request(others[0].port, "GET", "/v1/messages/%s" % mid, auth)
                got = rr.json() if rr.status == 200 else {}
                return got if got.get("status") == "sent" else None
            m = h.wait_for(numbered, 20) or {}
            h.ok(m.get("conversation_id") and m.get("seq") == 2 and m.get("from") == t["address"],
                 "after kill -9 of the owner a survivor numbered it (seq 2, after the canceled one) and sent it "
                 "(%.1f s)" % (time.monotonic() - t0), m)
            bodies = [x["body"] for x in mock.received(sender=t["address"]).get("requests", [])]
            h.ok(bodies == ["while the owner sleeps"], "the provider got it once, and never the canceled one", bodies)
            h.ok(h.sql("SELECT count(*) FROM messages WHERE tenant_id = %s" % t["tenant"]) == "2",
                 "two messages stored (the canceled one and this)")
        finally:
            stop_all(nodes)


def test_voice_across_nodes():
    """Twilio's voice webhooks for a tenant another node owns are forwarded to it whole (signature intact) and its
    call actor's TwiML comes back; the status callback through the third node ends the call there. A call's Media
    Stream opens on the node its TwiML names (the front node, whose Host the forwarded webhook kept): when the voice
    app there cannot be reached, the relay's news cross to the owner's call actor, which applies the fallback."""
    from test_mock_provider import Mock
    from test_voice import ACCOUNT, AUTH_TOKEN, Tenant, ended_row, new_sid, voice_app
    fresh_cluster()
    nodes = []
    with Mock() as mock:
        try:
            start_three(nodes, twilio_api_base="http://127.0.0.1:%d" % mock.port)
            t = Tenant(nodes[0], {"voice_mode": "forward", "forward_to": "+14155550199"})
            own = settled_owner(nodes, t.id)["node"]
            others = [gw for gw in nodes if gw.name != own]
            sid = new_sid()
            r = t.voice(others[0], sid)
            h.ok(r.status == 200 and b"<Dial>+14155550199</Dial>" in r.body,
                 "a voice webhook through a non-owner: the owner's call actor answers its TwiML", r)
            row = h.sql("SELECT status FROM calls WHERE call_sid = '%s'" % sid)
            h.ok(row in ("ringing", "in-progress", "live", "answered") or row, "the call is stored (%s)" % row)
            r = t.status(others[1], sid, "completed", 1, duration=7)
            h.ok(r.status == 200, "its status callback through the other non-owner: 200", r)
            evs = t.wait_events(nodes[0], lambda e: e["type"] == "call.ended")
            h.ok(len(evs) == 1 and evs[0]["data"].get("duration_s") == 7, "call.ended once, with its duration", evs)
            r = t.api(others[0], "GET", "/v1/calls")
            h.ok(r.status == 200 and sid in r.body.decode(), "GET /v1/calls from any node lists it", r)

            u = Tenant(nodes[0], {"voice_mode": "stream", "media_url": voice_app(mock, "?refuse=1")})
            own = settled_owner(nodes, u.id)["node"]
            front = [gw for gw in nodes if gw.name != own][0]
            url = "http://127.0.0.1:%d/webhooks/twilio/%s/voice" % (front.port, u.channel)
            sid = mock.control("/_mock/calls", {"webhook": url, "auth_token": AUTH_TOKEN, "account_sid": ACCOUNT,
                                                "to": u.number, "frames": 500}).json()["calls"][0]
            h.wait_for(lambda: mock.get("/_mock/calls/" + sid).json()["status"] == "completed", 10, 0.2)
            d = mock.get("/_mock/calls/" + sid).json()
            relayed = "channel %s: the voice app" % u.channel
            h.ok(relayed in front.log() and relayed not in by_name(nodes, own).log(),
                 "its Media Stream ran on the front node %s, not on the owner %s" % (front.name, own))
            h.ok(d["status"] == "completed" and d["stream"].get("frames_sent", 0) < 500,
                 "the app refused it there: the owner's call actor hung the call up early",
                 (d["status"], d["stream"].get("frames_sent")))
            row = h.wait_for(lambda: ended_row("call_sid = '%s'" % sid), 5)
            h.ok(row == "completed|switchboard|app_unavailable", "ended by the gateway: the app was unavailable", row)
        finally:
            stop_all(nodes)


def test_on_redis_cluster():
    """The same with a three-master Redis Cluster instead of one Redis: the leases' keys share the {cluster} hash
    tag, each node's stream lives on whichever master its tag hashes to, Pub/Sub crosses the masters."""
    p = subprocess.run([h.ROOT + "/ops/redis_cluster.sh", "up"], capture_output=True, text=True, timeout=120)
    h.ok(p.returncode == 0, "a three-master Redis Cluster is up (ops/redis_cluster.sh)", p.stdout + p.stderr)
    if p.returncode:
        return
    REDIS["url"] = RCLUSTER_URL
    try:
        slots = {redis("CLUSTER", "KEYSLOT", "sb:{n:node-%s}:in" % n).strip() for n in "abc"}
        h.diag("the nodes' streams hash to cluster slots %s" % sorted(slots))
        test_three_nodes()
        test_failover_kill9()
    finally:
        REDIS["url"] = h.REDIS_URL


if __name__ == "__main__":
    import sys
    only = [f for f in (test_fence_sql, test_three_nodes, test_failover_kill9) if len(sys.argv) < 2 or
            f.__name__ in sys.argv[1:]]
    h.main(*only)
