"""tests/integration/test_inbox_page.py — the inbox page in a real browser: starts the mock provider and a gateway
pointed at it, creates a tenant with a Twilio SMS channel, then runs tests/browser/inbox.mjs, which drives Debian's
headless Chromium with playwright-core (sign in, a live inbound message, reply, status to delivered) and reports
each check as a JSON line, turned into TAP here (h.node_checks). Needs `chromium` and `npm ci` in tests/browser (ops/deps.sh and
make's set-up provide both).
Run: SB_BIN=build/release/switchboard python3 tests/integration/test_inbox_page.py"""

import os
import uuid

import harness as h
from test_mock_provider import Mock
from test_webhooks import MASTER_KEY, admin

TOKEN = "9" * 32


def test_page():
    with Mock() as mock:
        gw = h.Gateway(master_key=MASTER_KEY, twilio_api_base="http://127.0.0.1:%d" % mock.port)
        gw.config["public_url"] = "http://127.0.0.1:%d" % gw.port
        with gw:
            mock.behaviour(callbacks=["delivered"], callback_delay_ms=200)
            t = admin(gw, "/v1/admin/tenants", {"name": "browser " + uuid.uuid4().hex[:6]})
            key = admin(gw, "/v1/admin/tenants/%s/keys" % t["id"], {})["key"]
            number = "+1559%07d" % (uuid.uuid4().int % 10 ** 7)
            ch = admin(gw, "/v1/admin/tenants/%s/channels" % t["id"],
                       {"type": "twilio_sms", "address": number,
                        "credentials": {"account_sid": "AC" + "7" * 32, "auth_token": TOKEN}})
            env = dict(os.environ, SB_URL="http://127.0.0.1:%d" % gw.port, SB_KEY=key, SB_CHANNEL=ch["id"],
                       SB_NUMBER=number, SB_TOKEN=TOKEN)
            h.node_checks("browser", "inbox.mjs", env, "browser")

if __name__ == "__main__":
    h.main(test_page)
