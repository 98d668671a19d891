"""tests/integration/test_client_libraries.py — the gateway and the mock provider through widely used client
libraries instead of our own code (tests/clients/, pinned in its package.json; make's set-up runs `npm ci` there):
- twilio.mjs: Twilio's official Node.js helper library signs webhooks with its signer, sends through the mock with
  its REST client and checks the mock's status callbacks with its validator. Our own signer (test_webhooks) could
  share a misreading of Twilio's rules with the gateway; the library cannot.
- inbox.mjs: the live inbox through the npm "ws" WebSocket client, with "@msgpack/msgpack" for the binary
  subprotocol: the same event on a JSON and a msgpack client, ping, send, resume, a bad token.
Both scripts print one JSON line per check, turned into TAP here, after this file has started the mock and a gateway
pointed at it and created a tenant with a Twilio SMS and a Twilio WhatsApp channel.
Run: SB_BIN=build/release/switchboard python3 tests/integration/test_client_libraries.py"""

import os
import uuid

import harness as h
from test_mock_provider import Mock
from test_webhooks import MASTER_KEY, admin

TOKEN = "4" * 32


def test_libraries():
    with Mock() as mock:
        gw = h.Gateway(master_key=MASTER_KEY, twilio_api_base="http://127.0.0.1:%d" % mock.port)
        gw.config["public_url"] = "http://127.0.0.1:%d" % gw.port
        with gw:
            t = admin(gw, "/v1/admin/tenants", {"name": "client libraries " + uuid.uuid4().hex[:6]})
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
            h.node_checks("clients", "twilio.mjs", env, "twilio-node")
            h.node_checks("clients", "inbox.mjs", env, "ws + @msgpack/msgpack")


if __name__ == "__main__":
    h.main(test_libraries)
