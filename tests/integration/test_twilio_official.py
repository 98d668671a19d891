"""tests/integration/test_twilio_official.py — Twilio's official Node.js helper library (npm "twilio", pinned in
tests/clients/package.json) against the gateway and the mock provider: starts the mock and a gateway pointed at it,
creates a tenant with a Twilio SMS and a Twilio WhatsApp channel, then runs tests/clients/twilio.mjs, which signs
webhooks with the library's signer, sends through the mock with the library's REST client and checks the mock's
callbacks with the library's validator, reporting each check as a JSON line, turned into TAP here. Our own signer
(test_webhooks) could share a misreading of Twilio's rules with the gateway; the library cannot. Needs `npm ci` in
tests/clients (make's set-up runs it).
Run: SB_BIN=build/release/switchboard python3 tests/integration/test_twilio_official.py"""

import json
import os
import subprocess
import uuid

import harness as h
from test_mock_provider import Mock
from test_webhooks import MASTER_KEY, admin

TOKEN = "4" * 32


def test_official_library():
    with Mock() as mock:
        gw = h.Gateway(master_key=MASTER_KEY, twilio_api_base="http://127.0.0.1:%d" % mock.port)
        gw.config["public_url"] = "http://127.0.0.1:%d" % gw.port
        with gw:
            t = admin(gw, "/v1/admin/tenants", {"name": "twilio-node " + uuid.uuid4().hex[:6]})
            key = admin(gw, "/v1/admin/tenants/%s/keys" % t["id"], {})["key"]
            channels = {}
            for kind in ("twilio_sms", "twilio_whatsapp"):
                number = "+1558%07d" % (uuid.uuid4().int % 10 ** 7)
                ch = admin(gw, "/v1/admin/tenants/%s/channels" % t["id"],
                           {"type": kind, "address": number,
                            "credentials": {"account_sid": "AC" + "3" * 32, "auth_token": TOKEN}})
                channels[kind] = (ch["id"], number)
            env = dict(os.environ, SB_URL="http://127.0.0.1:%d" % gw.port, SB_KEY=key, SB_TOKEN=TOKEN,
                       SB_SMS=channels["twilio_sms"][0], SB_SMS_NUMBER=channels["twilio_sms"][1],
                       SB_WA=channels["twilio_whatsapp"][0], SB_WA_NUMBER=channels["twilio_whatsapp"][1],
                       SB_MOCK="http://127.0.0.1:%d" % mock.port)
            cwd = os.path.join(h.ROOT, "tests", "clients")
            try:
                r = subprocess.run(["node", "twilio.mjs"], env=env, capture_output=True, text=True, timeout=120,
                                   cwd=cwd)
            except (OSError, subprocess.TimeoutExpired) as e:
                h.ok(False, "the helper-library test ran", repr(e))
                return
            checks = []
            for line in r.stdout.splitlines():
                try:
                    checks.append(json.loads(line))
                except ValueError:
                    pass
            ended = any(c.get("end") for c in checks)
            h.ok(r.returncode == 0 and ended, "the helper-library test ran to its end (node exit %d)" % r.returncode,
                 (r.stderr or "")[-2000:])
            for c in checks:
                if "what" in c:
                    h.ok(c["ok"], "twilio-node: " + c["what"], c.get("detail"))


if __name__ == "__main__":
    h.main(test_official_library)
