"""tests/integration/test_console.py — the admin console line protocol: banner, auth, tables and
their ` -j` JSON forms, the prompt, bad lines (empty, 10 KiB, binary, unknown), 50 consoles at
once, quit, and a gateway without admin_token refusing everything; nodes, slots (checked against placement written
again here), conns, and trace streaming a tenant's committed events until an empty line. For scripts: pipelined
commands of both kinds (answered at once, or after the database or other shards) come back in the order sent, also
when the script shuts its side after the last one (`nc -N`) or quits right after a database command, and a script
that pipelines thousands of commands and reads late is held back, not cut off.
Run: SB_BIN=build/release/switchboard python3 tests/integration/test_console.py"""

import json
import shutil
import socket
import subprocess
import threading
import time
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
             and nodes[0]["slots"] == 1024 and nodes[0]["address"] == "127.0.0.1:%d" % gw.port
             and nodes[0]["heartbeat_age_ms"] == 0,
             "nodes -j: this node alone, with its address, its shards and every slot", r)
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
        h.ok(r[:1] and r[0].startswith("ERR usage: drain node <node_id> | drain shard <n>"), "drain 0: ERR usage", r)
        r = c.cmd("drain shard 1")
        h.ok(r[:1] and r[0].startswith("ERR drain needs cluster = on"), "drain on a node alone: ERR, says why", r)
        r = c.cmd("slots 42 -j")
        v = json.loads(r[0]) if len(r) == 1 else {}
        h.ok(v.get("node") == gw.config.get("node_id", v.get("node")) and v.get("epoch") == 0 and v.get("node"),
             "slots <tenant> -j: this node, epoch 0 (alone, writes carry no fence)", r)


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


# Pipelined commands, each with an answer recognizable from its JSON: some answered at once (info, shards, stats,
# help, nodes, conns, slots), some after a database query (tenants, dead) or a round trip to every shard (actors).
MIXED = [
    ("tenants -j", lambda v: isinstance(v, dict) and "tenants" in v),
    ("shards -j", lambda v: isinstance(v, list) and len(v) == SHARDS),
    ("info -j", lambda v: isinstance(v, dict) and "version" in v),
    ("dead -j", lambda v: isinstance(v, dict) and "messages" in v),
    ("stats -j", lambda v: isinstance(v, dict) and "http_requests" in v),
    ("actors -j", lambda v: isinstance(v, dict) and "actors" in v),
    ("nodes -j", lambda v: isinstance(v, dict) and "nodes" in v),
    ("channels 1 -j", lambda v: isinstance(v, dict) and "channels" in v),
    ("conns -j", lambda v: isinstance(v, dict) and "conns" in v),
    ("help -j", lambda v: isinstance(v, dict) and "commands" in v),
]


def read_all(sock, timeout):
    """Everything the console writes until it closes the connection (or timeout seconds pass)."""
    data = b""
    sock.settimeout(timeout)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            chunk = sock.recv(1 << 20)
            if not chunk:
                return data, True
            data += chunk
    except (socket.timeout, ConnectionResetError):
        pass
    return data, False


def answers(data):
    """The answers after the banner: each the lines up to its empty line."""
    text = data.decode(errors="replace")
    lines = text.split("\n")[1:-1]  # after the banner, up to the last newline
    out, cur = [], []
    for line in lines:
        if line == "":
            out.append(cur)
            cur = []
        else:
            cur.append(line)
    return out  # (what follows the last empty line, if anything, is not an answer)


def check_in_order(got, expected, what):
    """got: answers after `auth`'s OK; expected: the MIXED entries sent, in order."""
    bad = None
    for i, (cmd, is_it) in enumerate(expected):
        try:
            v = json.loads(got[i][0]) if i < len(got) and len(got[i]) == 1 else None
        except ValueError:
            v = None
        if v is None or not is_it(v):
            bad = (i, cmd, got[i][:1] if i < len(got) else "nothing")
            break
    h.ok(bad is None and len(got) >= len(expected),
         "%s: %d answers, in the order sent" % (what, len(expected)), bad or len(got))


def pipelined(gw, cmds, tail=b"", half_close=False, timeout=10):
    """Writes auth and cmds in one send (then tail; then shuts the write side if half_close) and reads until the
    console closes. Returns (answers after auth's, closed)."""
    s = socket.create_connection(("127.0.0.1", gw.admin_port), timeout=5)
    try:
        s.sendall(("auth %s\n" % h.ADMIN_TOKEN).encode() + "".join(c + "\n" for c in cmds).encode() + tail)
        if half_close:
            s.shutdown(socket.SHUT_WR)
        data, closed = read_all(s, timeout)
    finally:
        s.close()
    got = answers(data)
    h.ok(got[:1] == [["OK"]], "pipelined: auth answers OK first", got[:1])
    return got[1:], closed


def test_pipelined_order(gw):
    got, _ = pipelined(gw, [c for c, _ in MIXED], b"quit\n")
    check_in_order(got, MIXED, "pipelined mixed commands in one write")
    h.ok(got[len(MIXED):len(MIXED) + 1] == [["bye"]], "then quit's bye", got[len(MIXED):])
    many = [MIXED[(i * 7) % len(MIXED)] for i in range(300)]
    got, closed = pipelined(gw, [c for c, _ in many], b"quit\n")
    check_in_order(got, many, "300 pipelined mixed commands")
    h.ok(closed, "quit after them closes the session")


def test_quit_after_db(gw):
    for cmd in ("tenants -j", "dead -j", "actors -j"):
        expected = [e for e in MIXED if e[0] == cmd]
        got, closed = pipelined(gw, [cmd], b"quit\n")
        check_in_order(got, expected, "'%s' then quit in one write" % cmd)
        h.ok(got[1:2] == [["bye"]] and closed, "'%s' then quit: bye, then closed" % cmd, got)


def test_half_close(gw):
    """The script shuts its side after the last command (nc -N, shutdown(SHUT_WR)): every command still runs and is
    answered in order, then the session ends. The old console closed on EOF and dropped what was still waiting."""
    got, closed = pipelined(gw, [c for c, _ in MIXED], half_close=True)
    check_in_order(got, MIXED, "pipelined then EOF")
    h.ok(closed and len(got) == len(MIXED), "EOF: the session ends after the last answer", len(got))
    got, closed = pipelined(gw, ["info -j"], b"tenants -j", half_close=True)
    check_in_order(got, [MIXED[2], MIXED[0]], "EOF: a last line without a newline still runs")
    nc = shutil.which("nc")
    if not nc:
        h.ok(True, "# SKIP nc is not installed")
        return
    script = "auth %s\ntenants -j\nshards -j\ninfo -j\n" % h.ADMIN_TOKEN
    p = subprocess.run([nc, "-N", "127.0.0.1", str(gw.admin_port)], input=script.encode(), capture_output=True,
                       timeout=10)
    got = answers(p.stdout)
    check_in_order(got[1:], [MIXED[0], MIXED[1], MIXED[2]], "printf '...tenants -j\\nshards -j\\ninfo -j\\n' | nc -N")


def test_slow_reader(gw):
    """12,000 pipelined `help -j` (about 21 MB of answers) from a script that reads only after a second: the console
    stops running commands while 256 KiB of answers are unread (and stops reading once 64 KiB of commands wait), and
    goes on as they are read. The old console ran them all and closed the session past 1 MiB unread."""
    n = 12000
    s = socket.create_connection(("127.0.0.1", gw.admin_port), timeout=10)
    try:
        payload = ("auth %s\n" % h.ADMIN_TOKEN).encode() + b"help -j\n" * n + b"quit\n"
        sender = threading.Thread(target=s.sendall, args=(payload,), daemon=True)
        sender.start()
        time.sleep(1.0)
        data, closed = read_all(s, 30)
        sender.join(5)
    finally:
        s.close()
    got = answers(data)
    helps = sum(1 for a in got[1:] if len(a) == 1 and a[0].startswith('{"commands":'))
    h.ok(helps == n and got[-1:] == [["bye"]] and closed,
         "a slow reader of %d pipelined answers gets them all, then bye (%d)" % (n, helps))


def with_token():
    with h.Gateway() as gw:
        for t in (test_banner_and_auth, test_tables, test_json, test_prompt, test_bad_lines,
                  test_many, test_quit, test_cluster_views, test_pipelined_order, test_quit_after_db,
                  test_half_close, test_slow_reader):
            h.subtest(t, gw)


def with_channels():
    from test_webhooks import MASTER_KEY
    with h.Gateway(master_key=MASTER_KEY) as gw:
        h.subtest(test_trace, gw)


def without_token():
    with h.Gateway(admin_token=None) as gw:
        h.subtest(test_no_token, gw)


h.main(with_token, with_channels, without_token)
