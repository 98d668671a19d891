"""tests/integration/test_install.py — running it as a service: `make install DESTDIR=... PREFIX=/usr` lays out
exactly the files ops/systemd/switchboard.service expects, the installed unit names the installed paths and passes
`systemd-analyze verify` (on a copy whose paths point into DESTDIR, since nothing is installed under /usr), the
unit's ExecStartPre (`switchboard -t`) accepts a good configuration and refuses a bad one with a message naming the
key, and a gateway started with the installed inbox page (www_dir) serves it.
Run: python3 tests/integration/test_install.py"""

import os
import re
import shutil
import subprocess
import tempfile

import harness as h

EXPECTED = [
    "usr/bin/switchboard",
    "usr/lib/systemd/system/switchboard.service",
    "usr/share/switchboard/README.md",
    "usr/share/switchboard/nginx/switchboard.conf",
    "usr/share/switchboard/ops/migrate.sh",
    "usr/share/switchboard/switchboard.conf.example",
    "usr/share/switchboard/www/inbox.css",
    "usr/share/switchboard/www/inbox.html",
    "usr/share/switchboard/www/inbox.js",
]


def installed_files(root):
    out = []
    for d, _, files in os.walk(root):
        for f in files:
            out.append(os.path.relpath(os.path.join(d, f), root))
    return sorted(out)


def test_install(dest):
    p = subprocess.run(["make", "--no-print-directory", "install", "DESTDIR=" + dest, "PREFIX=/usr"], cwd=h.ROOT,
                       capture_output=True, text=True, timeout=300)
    h.ok(p.returncode == 0, "make install DESTDIR=... PREFIX=/usr succeeds", p.stdout[-2000:] + p.stderr[-2000:])
    files = installed_files(dest)
    sql = sorted("usr/share/switchboard/sql/" + f for f in os.listdir(os.path.join(h.ROOT, "sql"))
                 if re.match(r"^\d{4}_.*\.sql$", f))
    h.ok(files == sorted(EXPECTED + sql), "the installed files are exactly the expected ones",
         "\n".join(sorted(set(files) ^ set(EXPECTED + sql))))
    h.ok(os.access(os.path.join(dest, "usr/bin/switchboard"), os.X_OK), "the binary is executable")
    with open(os.path.join(dest, "usr/lib/systemd/system/switchboard.service")) as f:
        unit = f.read()
    h.ok("ExecStartPre=/usr/bin/switchboard -t -c /etc/switchboard/switchboard.conf" in unit
         and "ExecStart=/usr/bin/switchboard -c /etc/switchboard/switchboard.conf" in unit
         and "WorkingDirectory=/usr/share/switchboard" in unit and "/usr/local/" not in unit,
         "the installed unit names the installed paths (PREFIX=/usr)")
    for key in ("DynamicUser=yes", "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes", "NoNewPrivileges=yes",
                "CapabilityBoundingSet=\n", "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
                "SystemCallFilter=@system-service", "LimitNOFILE=1048576", "StateDirectory=switchboard",
                "ConfigurationDirectory=switchboard"):
        h.ok(key in unit, "the unit sets %s" % key.strip())
    h.ok("ExecReload" not in unit, "no ExecReload: the gateway does not reload its configuration")
    return unit


def test_verify(dest, unit):
    tool = shutil.which("systemd-analyze")
    if not tool:
        h.ok(True, "systemd-analyze verify # SKIP systemd-analyze is not installed (package systemd)")
        return
    # A copy whose executables and directories are the DESTDIR ones: verify checks that they exist.
    d = tempfile.mkdtemp(prefix="sb-unit-")
    try:
        copy = unit.replace("/usr/bin/switchboard", os.path.join(dest, "usr/bin/switchboard")) \
                   .replace("WorkingDirectory=/usr/share/switchboard",
                            "WorkingDirectory=" + os.path.join(dest, "usr/share/switchboard"))
        path = os.path.join(d, "switchboard.service")
        with open(path, "w") as f:
            f.write(copy)
        p = subprocess.run([tool, "verify", "--man=no", path], capture_output=True, text=True, timeout=60)
        mine = [line for line in (p.stdout + p.stderr).splitlines() if "switchboard" in line]
        h.ok(p.returncode == 0 and not mine, "systemd-analyze verify passes on the unit", p.stdout + p.stderr)
        p = subprocess.run([tool, "verify", "--man=no", os.path.join(dest, "usr/lib/systemd/system/switchboard.service")],
                           capture_output=True, text=True, timeout=60)
        h.ok(p.returncode != 0 and "/usr/bin/switchboard" in p.stdout + p.stderr,
             "(and verify does look: the uncopied unit fails on the binary missing from /usr/bin)",
             p.stdout + p.stderr)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_check_flag(dest):
    binary = os.path.join(dest, "usr/bin/switchboard")
    d = tempfile.mkdtemp(prefix="sb-conf-")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SB_")}
    try:
        good = os.path.join(d, "good.conf")
        with open(good, "w") as f:
            f.write("master_key = %s\nadmin_token = secret-token\ntrusted_proxies = 127.0.0.1, 10.0.0.0/8\n"
                    "public_url = https://sb.example.com\n" % ("ab" * 32))
        p = subprocess.run([binary, "-t", "-c", good], capture_output=True, text=True, timeout=10, env=env)
        h.ok(p.returncode == 0 and "trusted_proxies = 127.0.0.1/32, 10.0.0.0/8" in p.stdout
             and "secret-token" not in p.stdout and "ab" * 32 not in p.stdout,
             "switchboard -t: a good configuration exits 0 and prints it, secrets hidden", p.stdout + p.stderr)
        bad = os.path.join(d, "bad.conf")
        with open(bad, "w") as f:
            f.write("trusted_proxies = nginx.internal\n")
        p = subprocess.run([binary, "-t", "-c", bad], capture_output=True, text=True, timeout=10, env=env)
        h.ok(p.returncode != 0 and "trusted_proxies" in p.stderr, "a bad value: non-zero, the key named", p.stderr)
        p = subprocess.run([binary, "-t", "-c", os.path.join(d, "missing.conf")], capture_output=True, text=True,
                           timeout=10, env=env)
        h.ok(p.returncode != 0 and "missing.conf" in p.stderr, "a missing file: non-zero, the file named", p.stderr)
        nokey = os.path.join(d, "nokey.conf")
        with open(nokey, "w") as f:
            f.write("admin_token = t\n")
        p = subprocess.run([binary, "-t", "-c", nokey], capture_output=True, text=True, timeout=10, env=env)
        h.ok(p.returncode != 0 and "master_key" in p.stderr, "production without master_key: refused", p.stderr)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_www(dest):
    with h.Gateway(www_dir=os.path.join(dest, "usr/share/switchboard/www")) as gw:
        r = h.get(gw.port, "/inbox")
        h.ok(r.status == 200 and b"<html" in r.body.lower(), "www_dir: the installed inbox page is served", r)
    with h.Gateway(www_dir="/nonexistent") as gw:
        r = h.get(gw.port, "/inbox")
        h.ok(r.status == 404, "a www_dir without the files: /inbox answers 404", r)
        h.ok("/nonexistent/inbox.html not found" in gw.log(), "and the log says where it looked")


def test_file():
    dest = tempfile.mkdtemp(prefix="sb-install-")
    try:
        h.subtest(test_install, dest)
        with open(os.path.join(dest, "usr/lib/systemd/system/switchboard.service")) as f:
            unit = f.read()
        h.subtest(test_verify, dest, unit)
        h.subtest(test_check_flag, dest)
        test_www(dest)
    finally:
        shutil.rmtree(dest, ignore_errors=True)


if __name__ == "__main__":
    h.main(test_file)
