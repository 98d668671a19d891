"""tests/integration/test_metrics.py — what /metrics says after traffic, for the alerts of ops/prometheus/alerts.yml:
sends by channel type and result, provider errors by code (401 for a revoked credential, 5xx), the circuit breaker
opening and closing, webhooks by provider and status class and their new events by channel type and kind, the
shards' Redis and PostgreSQL connections, the process's memory and descriptor limit. Every label value is a bounded
name (channel type, result, code, class): never a phone number, a tenant or a channel.
Run: SB_BIN=build/release/switchboard python3 tests/integration/test_metrics.py"""

import base64
import hashlib
import hmac
import json
import re
import time
import urllib.parse
import uuid

import harness as h
from test_mock_provider import Mock
from test_outbound import TOKEN, setup, setup_channel
from test_webhooks import MASTER_KEY, sms_params

LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')


def scrape(gw):
    """{(name, ((label, value), ...)): float} of one /metrics page."""
    r = h.get(gw.port, "/metrics")
    out = {}
    for line in r.body.decode().splitlines():
        if not line or line.startswith("#"):
            continue
        m = LINE.match(line)
        if not m:
            raise AssertionError("not an exposition line: %r" % line)
        labels = tuple(sorted(re.findall(r'(\w+)="([^"]*)"', m.group(2) or "")))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def value(page, name, **labels):
    """The sum of name's samples whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, ls), v in page.items() if n == name and want <= set(ls))


def send(gw, t, body, channel=None):
    r = h.request(gw.port, "POST", "/v1/messages", {"Authorization": "Bearer " + t["key"],
                                                    "Content-Type": "application/json"},
                  json.dumps({"channel_id": channel or t["channel"], "to": "+14155550123", "body": body}).encode())
    return r.status


def grows(gw, name, before, by=1, timeout=10, **labels):
    return h.wait_for(lambda: value(scrape(gw), name, **labels) >= value(before, name, **labels) + by, timeout)


def test_sends(gw, mock, t):
    before = scrape(gw)
    h.ok(send(gw, t, "metrics ok") == 202, "a send accepted")
    h.ok(grows(gw, "sb_sends_total", before, channel_type="twilio_sms", result="sent"),
         "sb_sends_total{channel_type=twilio_sms,result=sent} counts it")

    mock.behaviour(permanent={"status": 401, "code": 20003})  # the account's token was revoked
    try:
        before = scrape(gw)
        send(gw, t, "metrics revoked")
        h.ok(grows(gw, "sb_provider_errors_total", before, channel_type="twilio_sms", code="401"),
             "a 401 from the provider: sb_provider_errors_total{code=401} (credential health)")
        h.ok(value(scrape(gw), "sb_sends_total", channel_type="twilio_sms", result="failed") >=
             value(before, "sb_sends_total", channel_type="twilio_sms", result="failed") + 1,
             "and sb_sends_total{result=failed}")
    finally:
        mock.behaviour(permanent=None)


def test_breaker(gw, mock, t):
    before = scrape(gw)
    # Six channels of the tenant (one shard): each sends at once, none waits for another's pace.
    channels = [setup_channel(gw, t["tenant"])["channel"] for _ in range(6)]
    mock.behaviour(fail_next=1000, fail_status=503)
    try:
        for i, ch in enumerate(channels):
            send(gw, t, "metrics breaker %d" % i, ch)
        opened = h.wait_for(lambda: value(scrape(gw), "sb_provider_breaker_open", provider="twilio") >= 1, 10)
        h.ok(opened, "five 503s in a row: sb_provider_breaker_open{provider=twilio} is 1")
        page = scrape(gw)
        h.ok(value(page, "sb_provider_errors_total", channel_type="twilio_sms", code="5xx") >=
             value(before, "sb_provider_errors_total", channel_type="twilio_sms", code="5xx") + 5,
             "sb_provider_errors_total{code=5xx} counts the faults")
        h.ok(value(page, "sb_sends_total", channel_type="twilio_sms", result="retry") >=
             value(before, "sb_sends_total", channel_type="twilio_sms", result="retry") + 5,
             "sb_sends_total{result=retry} too")
    finally:
        mock.behaviour(clear=True, fail_next=0)
    closed = h.wait_for(lambda: value(scrape(gw), "sb_provider_breaker_open", provider="twilio") == 0, 20)
    h.ok(closed, "the provider answers again: the breaker gauge is back to 0")


def test_webhooks(gw, t):
    before = scrape(gw)
    path = "/webhooks/twilio/%s" % t["channel"]
    host = "127.0.0.1:%d" % gw.port
    params = sms_params("SM" + uuid.uuid4().hex, t["address"], "metrics inbound")
    data = "http://" + host + path + "".join(k + v for k, v in sorted(params))
    sig = base64.b64encode(hmac.new(TOKEN.encode(), data.encode(), hashlib.sha1).digest()).decode()
    body = urllib.parse.urlencode(params).encode()
    r = h.request(gw.port, "POST", path, {"Host": host, "Content-Type": "application/x-www-form-urlencoded",
                                         "X-Twilio-Signature": sig}, body)
    h.ok(r.status == 200, "a signed inbound SMS: 200", r)
    r = h.request(gw.port, "POST", path, {"Host": host, "Content-Type": "application/x-www-form-urlencoded"}, body)
    h.ok(r.status == 403, "an unsigned one: 403", r)
    page = scrape(gw)
    h.ok(value(page, "sb_webhooks_total", provider="twilio", **{"class": "2xx"}) ==
         value(before, "sb_webhooks_total", provider="twilio", **{"class": "2xx"}) + 1,
         "sb_webhooks_total{provider=twilio,class=2xx} counts the 200")
    h.ok(value(page, "sb_webhooks_total", provider="twilio", **{"class": "4xx"}) ==
         value(before, "sb_webhooks_total", provider="twilio", **{"class": "4xx"}) + 1,
         "and {class=4xx} the 403")
    h.ok(grows(gw, "sb_webhook_events_total", before, channel_type="twilio_sms", kind="message"),
         "sb_webhook_events_total{channel_type=twilio_sms,kind=message} counts the new message (silent channel)")


def test_process(gw):
    page = scrape(gw)
    h.ok(h.wait_for(lambda: value(scrape(gw), "sb_redis_up") == 2 and value(scrape(gw), "sb_postgres_up") == 2, 3),
         "sb_redis_up and sb_postgres_up: 1 on each of the 2 shards")
    h.ok(value(page, "process_resident_memory_bytes") > 1 << 20, "process_resident_memory_bytes",
         value(page, "process_resident_memory_bytes"))
    h.ok(value(page, "process_max_fds") >= 256, "process_max_fds", value(page, "process_max_fds"))
    bad = sorted({v for (n, ls), _ in page.items() if n.startswith("sb_") for k, v in ls
                  if k != "version" and not re.match(r"^[a-z0-9_]+$", v)})
    h.ok(not bad, "every label value is a bounded name (no numbers, tenants or channels)", bad)
    series = sum(1 for (n, _) in page if n.startswith("sb_"))
    h.ok(series < 600, "the page stays small with 2 shards (%d series)" % series)


def test_file():
    with Mock() as mock:
        gw = h.Gateway(master_key=MASTER_KEY, twilio_api_base="http://127.0.0.1:%d" % mock.port,
                       meta_graph_base="http://127.0.0.1:%d/v21.0" % mock.port)
        with gw:
            t = setup(gw)
            h.subtest(test_sends, gw, mock, t)
            h.subtest(test_breaker, gw, mock, t)
            h.subtest(test_webhooks, gw, t)
            h.subtest(test_process, gw)


if __name__ == "__main__":
    h.main(test_file)
