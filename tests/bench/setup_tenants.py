#!/usr/bin/env python3
"""tests/bench/setup_tenants.py — creates N tenants, each with an API key and C Twilio SMS channels (1 by default;
settings.rate_per_second RATE when given; their rate limits lifted), through the admin API of a running gateway, and prints one line per
channel for bench_live: "<key> <channel id> <number> <token>".

    setup_tenants.py PORT ADMIN_TOKEN N [C [RATE]] > channels.txt
"""
import json
import sys
import urllib.request
import uuid


def post(port, admin, path, body, method="POST"):
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path), data=json.dumps(body).encode(),
                                 method=method,
                                 headers={"Authorization": "Bearer " + admin, "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.load(r)


def main():
    port, admin, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    per = int(sys.argv[4]) if len(sys.argv) > 4 else 1
    settings = {"rate_per_second": float(sys.argv[5])} if len(sys.argv) > 5 else {}
    run = uuid.uuid4().int % 10 ** 4
    for i in range(n):
        t = post(port, admin, "/v1/admin/tenants", {"name": "bench %d" % i})
        key = post(port, admin, "/v1/admin/tenants/%s/keys" % t["id"], {})["key"]
        # the benchmarks measure the gateway, not its rate limits: lift them for these tenants
        unlimited = {"rate": 100000, "burst": 100000}
        post(port, admin, "/v1/admin/tenants/%s" % t["id"],
             {"rate_limits": {name: unlimited for name in ("rest_per_key", "rest_per_address", "send_per_key",
                                                           "send_per_address", "tokens_per_key",
                                                           "tokens_per_address")}}, method="PATCH")
        token = uuid.uuid4().hex
        for k in range(per):
            number = "+1%04d%06d" % (run, i * per + k)
            ch = post(port, admin, "/v1/admin/tenants/%s/channels" % t["id"],
                      {"type": "twilio_sms", "address": number, "settings": settings,
                       "credentials": {"account_sid": "AC" + "0" * 32, "auth_token": token}})
            print(key, ch["id"], number, token)


if __name__ == "__main__":
    main()
