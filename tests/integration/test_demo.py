"""tests/integration/test_demo.py — the offline demo `make run` starts (ops/run.sh): the mock provider and the
gateway come up, the demo tenant is seeded with its three channels and a voice number, ops/demo.py posts correctly
signed inbound webhooks (Twilio SMS, Twilio WhatsApp, Meta) that become events, a reply goes out to the mock and
comes back delivered through its signed status callback, and a call placed by the mock is streamed to the sample
voice app and back. Run on private ports and the test database, with its own state file.
Run: SB_BIN=build/release/switchboard python3 tests/integration/test_demo.py"""

import json
import os
import signal
import subprocess
import tempfile
import time

import harness as h


def test_demo():
    tmp = tempfile.mkdtemp(prefix="sb-demo-")
    state = os.path.join(tmp, "demo.json")
    gw_port, mock_port, admin_port = h.free_port(), h.free_port(), h.free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SB_")}
    env.update(BUILD=os.path.dirname(h.SB_BIN), GW_PORT=str(gw_port), MOCK_PORT=str(mock_port), DEMO_STATE=state,
               SB_DATABASE_URL=h.DATABASE_URL, SB_REDIS_URL=h.REDIS_URL, SB_ADMIN_LISTEN="127.0.0.1:%d" % admin_port,
               SB_ADMIN_TOKEN=h.ADMIN_TOKEN)
    log = open(os.path.join(tmp, "run.log"), "wb")
    proc = subprocess.Popen(["ops/run.sh"], cwd=h.ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        ok = h.wait_for(lambda: os.path.exists(state), 20)
        h.ok(ok, "ops/run.sh started the mock and the gateway and seeded the demo tenant")
        if not ok:
            return
        s = json.load(open(state))
        h.ok(set(s["channels"]) == {"sms", "whatsapp", "meta", "voice"} and s["key"].startswith("sb_live_"),
             "the demo has an API key, three messaging channels and a voice number", s["channels"])
        demo_env = dict(env, DEMO_STATE=state)
        for which in ("sms", "whatsapp", "meta"):
            r = subprocess.run(["python3", "ops/demo.py", "inbound", which, "hello via " + which], cwd=h.ROOT,
                               env=demo_env, capture_output=True, text=True, timeout=20)
            h.ok(r.returncode == 0 and "answered 200" in r.stdout, "ops/demo.py inbound %s: 200" % which, r.stdout)
        auth = {"Authorization": "Bearer " + s["key"], "Content-Type": "application/json"}
        r = h.request(gw_port, "POST", "/v1/messages", auth,
                      json.dumps({"channel_id": s["channels"]["sms"]["id"], "to": "+14155550123",
                                  "body": "a reply"}).encode())
        mid = r.json().get("id") if r.status == 202 else None
        h.ok(mid, "a reply is accepted", r)

        def events():
            r = h.request(gw_port, "GET", "/v1/events?limit=100", auth)
            return r.json().get("events", []) if r.status == 200 else []
        h.wait_for(lambda: any(e["type"] == "message.status" and e["data"].get("status") == "delivered"
                               for e in events()), 15)
        evs = events()
        bodies = [e["data"]["body"] for e in evs if e["type"] == "message.created" and e["data"]["direction"] == "in"]
        h.ok(sorted(bodies) == sorted("hello via " + w for w in ("sms", "whatsapp", "meta")),
             "the three inbound messages are in the tenant's events", bodies)
        st = [e["data"]["status"] for e in evs if e["type"] == "message.status" and e["data"]["id"] == mid]
        h.ok(st == ["sent", "delivered"], "the reply went to the mock (sent) and came back delivered", st)
        r = subprocess.run(["python3", "ops/demo.py", "call", "2"], cwd=h.ROOT, env=demo_env, capture_output=True,
                           text=True, timeout=30)
        h.ok(r.returncode == 0 and "in order: True" in r.stdout and "call.ended" in r.stdout,
             "ops/demo.py call: a call streamed to the voice app and back, in order, then ended", r.stdout + r.stderr)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            rc = proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            rc = proc.wait()
        h.ok(rc in (0, 130, 143), "ops/run.sh stops on SIGTERM (%s)" % rc)
        log.close()
        if h.failures():
            h.diag(open(os.path.join(tmp, "run.log"), errors="replace").read()[-3000:])


if __name__ == "__main__":
    h.main(test_demo)
