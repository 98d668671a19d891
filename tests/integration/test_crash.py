"""tests/integration/test_crash.py — nothing acknowledged is lost, nothing is seen twice: webhooks stream in from
several senders while a live inbox client reads; the gateway is killed with SIGKILL mid-stream and restarted; the
client reconnects with resume_after = the last cursor it saw. At the end the client must have received every
acknowledged message exactly once, with cursors that go up by one with no gap and no repeat, across the crash.
Receipts committed but not yet applied when the process died are found by the sweeper after the restart.
Run: SB_BIN=build/release/switchboard python3 tests/integration/test_crash.py"""

import threading
import time
import uuid

import harness as h
from test_live import JSON, MSGPACK, connect, setup, sms
from test_webhooks import MASTER_KEY
from wsclient import Closed


class Reader(threading.Thread):
    """A live inbox client that reconnects and resumes from its last cursor until stopped."""

    def __init__(self, gw, key, protocol):
        super().__init__(daemon=True)
        self.gw, self.key, self.protocol = gw, key, protocol
        self.events = []
        self.reconnects = 0
        self.unavailable = 0
        self.stopping = False
        self.errors = []

    def run(self):
        last = None
        while not self.stopping:
            try:
                ws = connect(self.gw, self.key, self.protocol, resume_after=last if last is not None else 0)
            except OSError:
                time.sleep(0.05)
                continue
            try:
                m = ws.recv_op(timeout=5)
                if m.get("op") != "welcome":
                    # A gateway that is back but not yet connected to PostgreSQL says so ("reconnect and
                    # resume"); anything else is wrong.
                    if m.get("op") == "error" and m.get("code") == "unavailable":
                        self.unavailable += 1
                    else:
                        self.errors.append(m)
                    ws.shutdown()
                    time.sleep(0.1)
                    continue
                while not self.stopping:
                    try:
                        m = ws.recv_op(timeout=0.2)
                    except TimeoutError:
                        continue
                    if m.get("op") == "event":
                        self.events.append(m)
                        last = m["cursor"]
            except (Closed, OSError, TimeoutError):
                pass
            finally:
                ws.shutdown()
            self.reconnects += 1


class Sender(threading.Thread):
    def __init__(self, gw, t, tag):
        super().__init__(daemon=True)
        self.gw, self.t, self.tag = gw, t, tag
        self.acked, self.unacked = [], []
        self.stopping = False

    def run(self):
        i = 0
        while not self.stopping:
            sid = "SM" + uuid.uuid4().hex
            try:
                _, r = sms(self.gw, self.t, "%s %d" % (self.tag, i), sid)
                (self.acked if r is not None and r.status == 200 else self.unacked).append(sid)
            except OSError:
                self.unacked.append(sid)
                time.sleep(0.05)
            i += 1


def test_kill9():
    gw = h.Gateway(master_key=MASTER_KEY)
    gw.start()
    try:
        t = setup(gw)
        readers = [Reader(gw, t["key"], JSON), Reader(gw, t["key"], MSGPACK)]
        senders = [Sender(gw, t, "s%d" % k) for k in range(3)]
        for x in readers + senders:
            x.start()
        time.sleep(2.0)
        gw.kill()  # SIGKILL: no drain, no goodbye
        before = sum(len(s.acked) for s in senders)
        time.sleep(0.3)
        gw.start()
        time.sleep(2.0)
        for s in senders:
            s.stopping = True
        for s in senders:
            s.join()
        acked = [sid for s in senders for sid in s.acked]
        unacked = {sid for s in senders for sid in s.unacked}
        h.ok(before > 20 and len(acked) > before, "webhooks acknowledged before (%d) and after (%d) the kill" %
             (before, len(acked) - before))

        def complete():
            return all({e["data"]["provider_id"] for e in r.events if e["type"] == "message.created"} >= set(acked)
                       for r in readers)
        h.wait_for(complete, 20)  # the sweeper re-routes what the kill left unapplied (3 s + its 5 s period)
        time.sleep(0.5)
        for r in readers:
            r.stopping = True
        for r in readers:
            r.join()
        for r in readers:
            cursors = [e["cursor"] for e in r.events]
            created = [e["data"]["provider_id"] for e in r.events if e["type"] == "message.created"]
            h.ok(r.reconnects >= 1, "%s reader reconnected after the kill (%d times)" % (r.protocol, r.reconnects))
            h.ok(cursors == list(range(1, len(cursors) + 1)),
                 "%s reader: cursors 1..%d, each once, in order, across the crash" % (r.protocol, len(cursors)),
                 [c for i, c in enumerate(cursors) if c != i + 1][:10])
            missing = set(acked) - set(created)
            h.ok(not missing, "%s reader: every acknowledged message arrived (%d)" % (r.protocol, len(acked)),
                 sorted(missing)[:5])
            h.ok(len(created) == len(set(created)), "%s reader: no message twice" % r.protocol)
            h.ok(set(created) <= set(acked) | unacked, "%s reader: nothing that was never sent" % r.protocol)
            h.ok(not r.errors, "%s reader: every resume was welcomed (or told to come back: %d)"
                 % (r.protocol, r.unavailable), r.errors[:3])
    finally:
        gw.stop()
        gw.finish()


if __name__ == "__main__":
    h.main(test_kill9)
