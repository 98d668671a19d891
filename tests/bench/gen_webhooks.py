#!/usr/bin/env python3
"""tests/bench/gen_webhooks.py — writes pre-signed Twilio inbound-SMS webhooks for wrk (tests/bench/webhook.lua).

Each output line is "X-Twilio-Signature<TAB>form body" for one message with its own MessageSid, signed as Twilio
signs (HMAC-SHA1 of the URL followed by the sorted parameters, with the channel's auth token), so the gateway does
the whole durable path for every request: verify, parse, commit a new receipt, route, apply.

    gen_webhooks.py URL AUTH_TOKEN TO_NUMBER COUNT [peer] > requests.tsv

With "peer", the body has the shape of the reference peer's request (../shared/peers/twilio-post.lua): the twenty
fields of a real Twilio inbound SMS, about 500 bytes, one sender; so the gateway and the peer do the same work.
"""
import base64
import hashlib
import hmac
import sys
import urllib.parse
import uuid


def peer_params(sid, number):
    return [("ToCountry", "US"), ("ToState", "CA"), ("SmsMessageSid", sid), ("NumMedia", "0"),
            ("ToCity", "SAN FRANCISCO"), ("FromZip", "94105"), ("SmsSid", sid), ("FromState", "CA"),
            ("SmsStatus", "received"), ("FromCity", "SAN FRANCISCO"),
            ("Body", "Hello there, this is a test message from a customer"), ("FromCountry", "US"), ("To", number),
            ("MessagingServiceSid", "MG" + "0" * 32), ("ToZip", "94105"), ("NumSegments", "1"), ("MessageSid", sid),
            ("AccountSid", "AC" + "0" * 32), ("From", "+14155550199"), ("ApiVersion", "2010-04-01")]


def main():
    url, token, number, count = sys.argv[1], sys.argv[2].encode(), sys.argv[3], int(sys.argv[4])
    peer = len(sys.argv) > 5 and sys.argv[5] == "peer"
    out = sys.stdout
    run = uuid.uuid4().hex[:16]
    for i in range(count):
        sid = "SM%s%016x" % (run, i)
        params = peer_params(sid, number) if peer else [
            ("MessageSid", sid), ("SmsSid", sid), ("AccountSid", "AC" + "b" * 32), ("From", "+1415%07d" % (i % 5000)),
            ("To", number), ("Body", "bench message %d" % i), ("NumMedia", "0"), ("NumSegments", "1"),
            ("ApiVersion", "2010-04-01")]
        data = url + "".join(k + v for k, v in sorted(params))
        sig = base64.b64encode(hmac.new(token, data.encode(), hashlib.sha1).digest()).decode()
        out.write(sig + "\t" + urllib.parse.urlencode(params) + "\n")


if __name__ == "__main__":
    main()
