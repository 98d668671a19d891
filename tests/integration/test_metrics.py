"""tests/integration/test_metrics.py — what /metrics says after traffic, for the alerts of ops/prometheus/alerts.yml:
sends by channel type and result, provider errors by code (401 for a revoked credential, 5xx), the circuit breaker
opening and closing, webhooks by provider and status class and their new events by channel type and kind, the
shards' Redis and PostgreSQL connections and their round-trip histograms, the outbox waiting (and its oldest
message) and the outgoing-webhook dead letters as shard 0 counts them, the process's memory and descriptor limit. Every label value is a bounded
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


def histogram(page, name):
    """[(le, cumulative count)] in bucket order, _sum and _count of histogram name."""
    buckets = sorted(((float(dict(ls)["le"]), v) for (n, ls), v in page.items() if n == name + "_bucket"),
                     key=lambda b: b[0])
    return buckets, value(page, name + "_sum"), value(page, name + "_count")


def test_latency(gw, t):
    """Traffic went through both: sends take the counters' leases in Redis, and everything commits in PostgreSQL."""
    before = scrape(gw)
    h.ok(send(gw, t, "metrics latency") == 202, "a send accepted")
    h.ok(grows(gw, "sb_sends_total", before, channel_type="twilio_sms", result="sent"), "and sent")
    page = scrape(gw)
    for name in ("sb_redis_seconds", "sb_postgres_seconds"):
        buckets, total, count = histogram(page, name)
        les = [le for le, _ in buckets]
        h.ok(les == [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5,
                     float("inf")], "%s: the fixed buckets, +Inf last" % name, les)
        counts = [v for _, v in buckets]
        h.ok(all(a <= b for a, b in zip(counts, counts[1:])), "%s: cumulative" % name, counts)
        h.ok(count > value(before, name + "_count") and counts[-1] == count,
             "%s: the send's round trips observed; _count is the +Inf bucket" % name, (count, counts[-1]))
        h.ok(0 < total < count, "%s: _sum in seconds, under a second each on average (%.4f s over %d)" %
             (name, total, count))
    rows = [ls for (n, ls), _ in page.items() if n == "sb_postgres_seconds_bucket"]
    h.ok(all(k == "le" for ls in rows for k, _ in ls), "the histograms are per node: the shards' rows are summed")


def test_queues(gw, mock, t):
    """A send the provider answers 503 with Retry-After: 8 waits in the outbox; shard 0 counts it within 5 s. A dead
    letter written to the table shows in sb_webhook_dead_letters the same way. (A channel of its own, with its own
    behaviour at the mock: retries left over from the breaker test must not take its failure.)"""
    c = setup_channel(gw, t["tenant"])
    mock.behaviour(sender=c["address"], fail_next=1, fail_status=503, retry_after=8)
    try:
        r = h.request(gw.port, "POST", "/v1/messages", {"Authorization": "Bearer " + t["key"],
                                                        "Content-Type": "application/json"},
                      json.dumps({"channel_id": c["channel"], "to": "+14155550123",
                                  "body": "metrics outbox"}).encode())
        h.ok(r.status == 202, "a send accepted", r)
        mid = int(r.json()["id"])
        waiting = h.wait_for(lambda: h.sql("SELECT count(*) FROM outbox WHERE message_id = %d" % mid) == "1" and
                             value(scrape(gw), "sb_outbox_waiting") >= 1 and
                             value(scrape(gw), "sb_outbox_oldest_seconds") >= 1, 8)
        page = scrape(gw)
        h.ok(waiting, "the message waits for its retry: sb_outbox_waiting %d, oldest %.1f s" %
             (value(page, "sb_outbox_waiting"), value(page, "sb_outbox_oldest_seconds")))
        h.ok(h.wait_for(lambda: h.sql("SELECT count(*) FROM outbox WHERE message_id = %d" % mid) == "0", 20),
             "sent on its retry: out of the outbox")
    finally:
        mock.behaviour(sender=c["address"], clear=True)

    h.sql("INSERT INTO webhook_dead_letters (tenant_id, cursor, type, data, error)"
          " VALUES (%d, 1, 'message.received', '{}', 'test_metrics') ON CONFLICT DO NOTHING" % int(t["tenant"]))
    n = int(h.sql("SELECT count(*) FROM webhook_dead_letters"))
    h.ok(h.wait_for(lambda: value(scrape(gw), "sb_webhook_dead_letters") >= min(n, 10000), 8),
         "a dead letter written: sb_webhook_dead_letters counts it (%d rows)" % n,
         value(scrape(gw), "sb_webhook_dead_letters"))


def test_process(gw):
    page = scrape(gw)
    h.ok(h.wait_for(lambda: value(scrape(gw), "sb_redis_up") == 2 and value(scrape(gw), "sb_postgres_up") == 2, 3),
         "sb_redis_up and sb_postgres_up: 1 on each of the 2 shards")
    h.ok(value(page, "process_resident_memory_bytes") > 1 << 20, "process_resident_memory_bytes",
         value(page, "process_resident_memory_bytes"))
    h.ok(value(page, "process_max_fds") >= 256, "process_max_fds", value(page, "process_max_fds"))
    bounds = {"0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25",
              "0.5", "1", "2.5", "+Inf"}
    bad = sorted({v for (n, ls), _ in page.items() if n.startswith("sb_") for k, v in ls
                  if k not in ("version", "le") and not re.match(r"^[a-z0-9_]+$", v)
                  or k == "le" and v not in bounds})
    h.ok(not bad, "every label value is a bounded name (no numbers, tenants or channels) or a fixed bucket bound",
         bad)
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
            h.subtest(test_latency, gw, t)
            h.subtest(test_queues, gw, mock, t)
            h.subtest(test_process, gw)


if __name__ == "__main__":
    h.main(test_file)
