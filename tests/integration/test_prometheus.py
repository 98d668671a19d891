"""tests/integration/test_prometheus.py — the operations kit: ops/prometheus/alerts.yml passes `promtool check rules`
and its unit tests (`promtool test rules ops/prometheus/alerts_test.yml`: credential health, silent channel, the
outbox backlog, calls refused at capacity and others fire when they should and not before); every alert has its runbook ops/runbooks/<alert>.md (meaning, first
checks, fixes) and its runbook_url points to it; ops/grafana/switchboard.json is valid JSON with panels and
queries; and every metric the alerts and the dashboard name is one a running gateway exports on /metrics.
Run: SB_BIN=build/release/switchboard python3 tests/integration/test_prometheus.py"""

import json
import os
import re
import shutil
import subprocess

import harness as h

OPS = os.path.join(h.ROOT, "ops")
ALERTS = os.path.join(OPS, "prometheus", "alerts.yml")
ALERTS_TEST = os.path.join(OPS, "prometheus", "alerts_test.yml")
DASHBOARD = os.path.join(OPS, "grafana", "switchboard.json")
RUNBOOKS = os.path.join(OPS, "runbooks")
METRIC = re.compile(r"\b((?:sb|process)_[a-z0-9_]+)\b")


def alerts():
    """[(name, runbook_url)] of alerts.yml, read without a YAML library: each rule's `- alert:` line and the
    runbook_url of its annotations."""
    with open(ALERTS) as f:
        text = f.read()
    out = []
    for block in re.split(r"\n\s*- alert: ", text)[1:]:
        name = block.split("\n", 1)[0].strip()
        m = re.search(r'runbook_url:\s*"?([^"\n]+)"?', block)
        out.append((name, m.group(1).strip() if m else None))
    return out


def test_promtool():
    tool = shutil.which("promtool")
    if not tool:
        h.ok(True, "promtool check rules # SKIP promtool is not installed (package prometheus)")
        return
    p = subprocess.run([tool, "check", "rules", ALERTS], capture_output=True, text=True, timeout=60)
    h.ok(p.returncode == 0 and "SUCCESS" in p.stdout, "promtool check rules ops/prometheus/alerts.yml",
         p.stdout + p.stderr)
    p = subprocess.run([tool, "test", "rules", ALERTS_TEST], capture_output=True, text=True, timeout=60)
    h.ok(p.returncode == 0 and "SUCCESS" in p.stdout,
         "promtool test rules ops/prometheus/alerts_test.yml (credential health, silent channel, ...)",
         p.stdout + p.stderr)
    with open(ALERTS_TEST) as f:
        tested = set(re.findall(r"alertname:\s*(\w+)", f.read()))
    h.ok({"SwitchboardCredentialRejected", "SwitchboardSilentChannel", "SwitchboardOutboxBacklog",
          "SwitchboardCallsRejected"} <= tested,
         "the unit tests exercise credential health, silent channel, the outbox backlog and calls rejected",
         sorted(tested))


def test_runbooks():
    rules = alerts()
    names = [n for n, _ in rules]
    h.ok(len(rules) >= 10 and len(set(names)) == len(names), "alerts.yml: %d alerts, each named once" % len(rules),
         names)
    for want in ("SwitchboardDown", "SwitchboardNotReady", "SwitchboardLoopLag", "SwitchboardConnectionsRefused",
                 "SwitchboardWebhook5xx", "SwitchboardSendFailures", "SwitchboardBreakerOpen",
                 "SwitchboardReceiptBacklog", "SwitchboardCredentialRejected", "SwitchboardSilentChannel",
                 "SwitchboardOutboxBacklog", "SwitchboardWebhookDeadLetters", "SwitchboardRedisSlow",
                 "SwitchboardPostgresSlow", "SwitchboardCallsRejected", "SwitchboardMediaDropped"):
        h.ok(want in names, "alert %s is defined" % want)
    for name, url in rules:
        path = os.path.join(RUNBOOKS, name + ".md")
        h.ok(url == "ops/runbooks/%s.md" % name, "%s: runbook_url points to ops/runbooks/%s.md" % (name, name), url)
        ok = os.path.exists(path)
        if ok:
            with open(path) as f:
                text = f.read()
            ok = text.startswith("# " + name + "\n") and all(s in text for s in ("**Meaning.**", "**First checks.**",
                                                                                  "**Fixes.**"))
        h.ok(ok, "%s: its runbook exists, with meaning, first checks and fixes" % name)
    extra = sorted(f[:-3] for f in os.listdir(RUNBOOKS) if f.endswith(".md") and f != "README.md"
                   and f[:-3] not in names)
    h.ok(not extra, "no runbook for an alert that does not exist", extra)


def test_dashboard():
    with open(DASHBOARD) as f:
        try:
            d = json.load(f)
        except ValueError as e:
            h.ok(False, "ops/grafana/switchboard.json parses as JSON", e)
            return
    panels = d.get("panels", [])
    exprs = [t["expr"] for p in panels for t in p.get("targets", [])]
    h.ok(d.get("title") and len(panels) >= 10 and all(exprs), "the dashboard has %d panels, each with queries" %
         len(panels))
    titles = " ".join(p["title"].lower() for p in panels)
    for what in ("requests", "sends", "webhooks", "connections", "loop lag", "memory", "redis round trip",
                 "postgresql transaction", "outbox", "dead letters", "calls", "media"):
        h.ok(what in titles, "the dashboard shows %s" % what)


def test_metric_names():
    with open(ALERTS) as f:
        used = set(METRIC.findall(f.read()))
    with open(DASHBOARD) as f:
        used |= set(METRIC.findall(f.read()))
    with h.Gateway() as gw:
        page = h.get(gw.port, "/metrics").body.decode()
        exported = set(re.findall(r"^# TYPE (\S+) ", page, re.M))
        exported |= {n + suffix for n in re.findall(r"^# TYPE (\S+) histogram$", page, re.M)
                     for suffix in ("_bucket", "_sum", "_count")}  # a histogram's series
        missing = sorted(used - exported)
        h.ok(not missing and len(used) > 10,
             "every metric the alerts and the dashboard name (%d) is exported by the gateway" % len(used), missing)


def test_file():
    h.subtest(test_promtool)
    h.subtest(test_runbooks)
    h.subtest(test_dashboard)
    test_metric_names()


if __name__ == "__main__":
    h.main(test_file)
