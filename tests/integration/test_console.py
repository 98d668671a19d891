"""tests/integration/test_console.py — the admin console line protocol: banner, auth, tables and
their ` -j` JSON forms, the prompt, bad lines (empty, 10 KiB, binary, unknown), 50 consoles at
once, quit, and a gateway without admin_token refusing everything; nodes, slots (checked against placement written
again here), conns, and trace streaming a tenant's committed events until an empty line.
Run: SB_BIN=build/release/switchboard python3 tests/integration/test_console.py"""

import json
import uuid

import harness as h

SHARDS = 2
TABLES = ["help", "info", "shards", "actors", "stats"]


def is_err(lines, prefix="ERR"):
    return bool(lines) and lines[0].startswith(prefix)


def test_banner_and_auth(gw):
    with h.Console(gw.admin_port) as c:
        h.ok(c.banner.startswith("switchboard"), "banner line starts with 'switchboard'", c.banner)
        r = c.cmd("info")
        h.ok(r[:1] == ["ERR auth required"], "info before auth: ERR auth required", r)
        r = c.cmd("help")
        h.ok(r and not is_err(r), "help works before auth", r)
        r = c.cmd("auth wrong")
        h.ok(is_err(r), "auth with a wrong token: ERR", r)
        r = c.cmd("shards")
        h.ok(is_err(r, "ERR auth required"), "still refused after a wrong token", r)
        r = c.cmd("auth " + h.ADMIN_TOKEN)
        h.ok(r[:1] == ["OK"], "auth with the right token: OK", r)
        r = c.cmd("info")
        h.ok(r and not is_err(r), "info works after auth", r)


def authed(gw):
    c = h.Console(gw.admin_port)
    r = c.cmd("auth " + h.ADMIN_TOKEN)
    if r[:1] != ["OK"]:
        c.close()
        raise AssertionError("auth failed: %r" % r)
    return c


def test_tables(gw):
    with authed(gw) as c:
        for cmd in TABLES:
            r = c.cmd(cmd)
            h.ok(r and not is_err(r), "%s answers a table" % cmd, r)


def json_of(c, cmd):
    r = c.cmd(cmd)
    if len(r) != 1:
        h.ok(False, "%s answers exactly one line" % cmd, r)
        return None
    try:
        v = json.loads(r[0])
    except ValueError:
        h.ok(False, "%s answers one line of JSON" % cmd, r[0])
        return None
    h.ok(True, "%s answers one line of JSON" % cmd)
    return v


def test_json(gw):
    with authed(gw) as c:
        v = json_of(c, "help -j")
        v = json_of(c, "info -j")
        if v is not None:
            keys = ["version", "node", "uptime_s", "shards", "connections"]
            h.ok(isinstance(v, dict) and all(k in v for k in keys), "info -j has keys %s" % keys, v)
            h.ok(isinstance(v, dict) and v.get("shards") == SHARDS, "info -j says shards=%d" % SHARDS, v)
        v = json_of(c, "shards -j")
        if v is not None:
            keys = ["shard", "actors", "mailbox_depth", "loop_lag_ms", "connections"]
            h.ok(isinstance(v, list) and len(v) == SHARDS
                 and all(isinstance(s, dict) and all(k in s for k in keys) for s in v),
                 "shards -j is a list of %d objects with keys %s" % (SHARDS, keys), v)
        v = json_of(c, "stats -j")
        if v is not None:
            h.ok(isinstance(v, dict), "stats -j is an object", v)
        v = json_of(c, "actors -j")
        if v is not None:
            h.ok(isinstance(v, dict) and isinstance(v.get("actors"), list),
                 "actors -j is an object with a list 'actors'", v)


def test_prompt(gw):
    with authed(gw) as c:
        r = c.cmd("prompt")
        h.ok(not is_err(r), "prompt answers without ERR", r)
        # The prompt may or may not follow the answer to `prompt` itself; both are fine.
        extra = c.pending(0.3)
        h.ok(extra in (b"", h.Console.PROMPT), "nothing but a prompt follows the prompt command", extra)
        c.prompt = True
        try:
            r = c.cmd("info")
            h.ok(r and not is_err(r), "with the prompt on, info answers, followed by 'sb> '", r)
        except (ValueError, ConnectionError) as e:
            h.ok(False, "with the prompt on, info answers, followed by 'sb> '", e)
            return
        c.prompt = False
        r = c.cmd("prompt")
        h.ok(not is_err(r), "prompt again (off) answers without ERR", r)
        c.pending(0.3)  # a prompt may follow the answer that turned it off
        r = c.cmd("info")
        h.ok(r and not is_err(r), "prompt off: info answers", r)
        extra = c.pending(0.3)
        h.ok(extra == b"", "prompt off: no 'sb> ' after the answer", extra)


def test_bad_lines(gw):
    with authed(gw) as c:
        cases = [
            (b"", "an empty line", "ERR"),
            (b"x" * 10240, "a 10 KiB line", "ERR"),
            (b"\x00\xff\x01", "binary bytes", "ERR"),
            (b"frobnicate", "an unknown command", "ERR unknown command"),
        ]
        for line, what, prefix in cases:
            r = c.cmd(line)
            h.ok(is_err(r, prefix), "%s: answers '%s ...'" % (what, prefix), r)
            r = c.cmd("info")
            h.ok(r and not is_err(r), "%s: the session continues (info answers)" % what, r)


def test_many(gw):
    n = 50
    consoles = []
    try:
        for _ in range(n):
            consoles.append(h.Console(gw.admin_port))
        banners = sum(1 for c in consoles if c.banner.startswith("switchboard"))
        h.ok(banners == n, "%d consoles at once: each got a banner (%d did)" % (n, banners))
        for c in consoles:
            c.send("auth %s\n" % h.ADMIN_TOKEN)
        authed_ok = sum(1 for c in consoles if c.response()[:1] == ["OK"])
        for c in consoles:
            c.send("info\n")
        answered = 0
        for c in consoles:
            r = c.response()
            answered += 1 if r and not is_err(r) else 0
        h.ok(authed_ok == n and answered == n,
             "%d consoles at once: each authenticates and answers info (%d, %d)" % (n, authed_ok, answered))
    finally:
        for c in consoles:
            c.close()


def test_quit(gw):
    with h.Console(gw.admin_port) as c:
        c.send("quit\n")
        h.ok(c.closed_within(3), "quit closes the connection (before auth)")
    with authed(gw) as c:
        c.send("quit\n")
        h.ok(c.closed_within(3), "quit closes the connection (after auth)")


def test_no_token(gw):
    with h.Console(gw.admin_port) as c:
        h.ok(c.banner.startswith("switchboard"), "no admin_token: banner", c.banner)
        for line in ("auth x", "auth ", "auth"):
            r = c.cmd(line)
            h.ok(is_err(r), "no admin_token: '%s' answers ERR" % line, r)
        r = c.cmd("info")
        h.ok(is_err(r, "ERR auth required"), "no admin_token: info stays refused", r)
        r = c.cmd("shards -j")
        h.ok(is_err(r, "ERR auth required"), "no admin_token: shards -j stays refused", r)


def place_slot(tenant, slots):
    """shards/placement.c, written again: FNV-1a 64 of the tenant id's decimal text, murmur3's finalizer, mod slots."""
    x = 0xcbf29ce484222325
    for byte in str(tenant).encode():
        x = ((x ^ byte) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    x ^= x >> 33
    x = (x * 0xff51afd7ed558ccd) & 0xFFFFFFFFFFFFFFFF
    x ^= x >> 33
    x = (x * 0xc4ceb9fe1a85ec53) & 0xFFFFFFFFFFFFFFFF
    x ^= x >> 33
    return x % slots


def test_cluster_views(gw):
    with authed(gw) as c:
        r = c.cmd("nodes -j")
        nodes = json.loads(r[0])["nodes"] if len(r) == 1 else []
        h.ok(len(nodes) == 1 and nodes[0]["self"] == "yes" and nodes[0]["shards"] == SHARDS
             and nodes[0]["slots"] == 1024, "nodes -j: this node alone, with its shards and every slot", r)
        r = c.cmd("slots -j")
        rows = json.loads(r[0])["slots"] if len(r) == 1 else []
        h.ok([x["slots"] for x in rows] == [512, 512] and rows[0]["first"].startswith("0 2 4 6")
             and rows[1]["first"].startswith("1 3 5 7"), "slots -j: 1024 slots, slot mod 2 on each shard", r)
        ok = True
        for tenant in (1, 42, 7777, 123456789):
            r = c.cmd("slots %d -j" % tenant)
            v = json.loads(r[0]) if len(r) == 1 else {}
            slot = place_slot(tenant, 1024)
            ok = ok and v.get("tenant") == tenant and v.get("slot") == slot and v.get("shard") == slot % SHARDS
        h.ok(ok, "slots <tenant> -j: the slot and shard an independent placement computes", r)
        r = c.cmd("slots x")
        h.ok(is_err(r), "slots x: ERR usage", r)
        r = c.cmd("slots")
        h.ok(len(r) == 3 and r[0].split()[:4] == ["shard", "node", "slots", "first"], "slots: a table", r)

        held = [h.HttpConn(gw.port) for _ in range(3)]  # idle keep-alive HTTP connections, held open
        try:
            for k in held:
                k.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                k.read_response()

            def counted():
                rr = c.cmd("conns -j")
                return json.loads(rr[0])["conns"] if len(rr) == 1 else []
            rows = counted()
            h.ok(len(rows) == SHARDS and sum(x["http"] for x in rows) >= 3 and sum(x["console"] for x in rows) >= 1,
                 "conns -j: per shard, the held HTTP connections and this console counted", rows)
        finally:
            for k in held:
                k.close()
        gone = h.wait_for(lambda: sum(x["http"] for x in counted()) == 0, 5, 0.1)
        h.ok(gone, "conns: closed connections leave the count", counted())
        r = c.cmd("drain 0")
        h.ok(r[:1] == ["ERR drain is not available in this version"], "drain: not in this version", r)


def test_trace(gw):
    from test_webhooks import admin, post, sms_params, setup
    tid, cid, number, _, _ = setup(gw)
    with authed(gw) as c:
        r = c.cmd("trace")
        h.ok(is_err(r, "ERR usage"), "trace without a tenant: ERR usage", r)
        r = c.cmd("trace 999999999999")
        h.ok(r[:1] == ["ERR no such tenant"], "trace of an unknown tenant: ERR no such tenant", r)

        c.send("trace %s\n" % tid)
        head = c.readline()
        h.ok(head.startswith("tracing tenant %s after cursor " % tid), "trace: a head line with the cursor", head)
        c.send("info\n")  # waits: a running trace takes no other command
        sid = "SM" + uuid.uuid4().hex
        r = post(gw, "/webhooks/twilio/%s" % cid, sms_params(sid, number, "traced ✓"))
        lines = [c.readline(), c.readline()]
        h.ok(r.status == 200 and lines[0].split("  ")[1:2] == ["message.created"] and sid in lines[0]
             and "traced ✓" in lines[0] and lines[1].split("  ")[1:2] == ["conversation.updated"],
             "trace: the inbound message's events arrive as they are committed", lines)
        cursors = [int(x.split("  ")[0]) for x in lines]
        h.ok(cursors[1] == cursors[0] + 1, "trace: with consecutive cursors", cursors)
        c.send("\n")
        h.ok(c.readline() == "", "an empty line ends the trace with the empty line", c.buf[:200])
        r = c.cmd("info")
        h.ok(r and r[0].startswith("version"), "the console takes commands again (the line sent while tracing "
             "was not run)", r)

        c.send("trace %s -j\n" % tid)
        head = json.loads(c.readline())
        h.ok(head == {"trace": int(tid), "cursor": cursors[1]}, "trace -j: the head as JSON", head)
        sid = "SM" + uuid.uuid4().hex
        post(gw, "/webhooks/twilio/%s" % cid, sms_params(sid, number, "json"))
        ev = json.loads(c.readline())
        h.ok(ev["cursor"] == cursors[1] + 1 and ev["type"] == "message.created" and ev["data"]["provider_id"] == sid,
             "trace -j: each event one JSON line", ev)
        c.readline()
        c.send("quit\n")
        h.ok(c.closed_within(3), "quit still quits while tracing")


def with_token():
    with h.Gateway() as gw:
        for t in (test_banner_and_auth, test_tables, test_json, test_prompt, test_bad_lines,
                  test_many, test_quit, test_cluster_views):
            h.subtest(t, gw)


def with_channels():
    from test_webhooks import MASTER_KEY
    with h.Gateway(master_key=MASTER_KEY) as gw:
        h.subtest(test_trace, gw)


def without_token():
    with h.Gateway(admin_token=None) as gw:
        h.subtest(test_no_token, gw)


h.main(with_token, with_channels, without_token)
