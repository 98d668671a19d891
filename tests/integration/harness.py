"""tests/integration/harness.py — shared pieces of the integration tests (standard library only).

The integration tests start the real gateway binary ($SB_BIN, default build/release/switchboard)
against the running local stack (ops/stack.sh: Redis 127.0.0.1:6390, PostgreSQL 127.0.0.1:5440,
database switchboard_test) and talk to it with hand-built bytes, so malformed input is easy to
send. Output is TAP, which tests/run.sh counts.

    import harness as h
    def test_x(gw): h.ok(h.get(gw.port, "/healthz").status == 200, "healthz answers 200")
    def test_file():
        with h.Gateway() as gw:      # free ports, temp config, waits for /healthz
            h.subtest(test_x, gw)    # an exception is one failure, the file goes on
    h.main(test_file)                # runs it, prints the plan; exit 1 if anything failed

Gateway.__exit__ stops the process with SIGTERM and asserts it exits 0 within 10 s (an ASan or
UBSan report makes the exit code non-zero, which is how those are caught); its log (stdout and
stderr) is printed as TAP comments whenever something failed while it ran.

The log audit (tests/run.sh sets SB_LOG_AUDIT_DIR): gateways log at debug, every gateway's log is
copied into that directory when it finishes, and the personal data and secrets the tests used are
written beside them (personal-<pid>.txt, one JSON string a line): what the tests declare with
h.personal(value), and what the harness sees go by on its own, in the requests it sends (JSON and
form fields such as body, to, from, address, tokens, secrets; Authorization headers; signatures),
the answers it reads (keys, tokens, secrets) and the inbox frames wsclient sends. Afterwards
test_zz_log_audit.py searches every kept log for all of it.
"""

import json
import os
import resource
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SB_BIN = os.environ.get("SB_BIN", "build/release/switchboard")
if not os.path.isabs(SB_BIN):
    SB_BIN = os.path.join(ROOT, SB_BIN)

REDIS_URL = "redis://127.0.0.1:6390/1"  # db 1: tests never touch the dev data in db 0
DATABASE_URL = "host=127.0.0.1 port=5440 dbname=switchboard_test user=switchboard"
ADMIN_TOKEN = "test-token"

# --- the log audit (see the top of the file) ------------------------------------------------------

AUDIT_DIR = os.environ.get("SB_LOG_AUDIT_DIR") or None
# Field names whose values are personal data or secrets, in JSON bodies (any depth), forms and answers.
PERSONAL_FIELDS = {
    "body", "to", "from", "address", "wa_id", "display_phone_number", "profile_name", "name_of_contact",
    "forward_to", "auth_token", "access_token", "app_secret", "verify_token", "token", "key", "secret", "password",
    "Body", "From", "To", "Caller", "Called", "ProfileName", "WaId", "Digits", "SpeechResult",
    "hub.verify_token", "text", "caption",
}
MIN_PERSONAL = 8  # shorter strings ("hi", "poison") would match innocent log text (a constraint's name)
_personal = set()
_personal_written = set()


def personal(*values):
    """Declares strings this test used that no log may contain (bodies, numbers, keys, tokens, secrets); a no-op
    unless the log audit is on. Returns the first value, so that it can wrap an expression."""
    if AUDIT_DIR:
        for v in values:
            if isinstance(v, bytes):
                v = v.decode("utf-8", "replace")
            if isinstance(v, str) and len(v.strip()) >= MIN_PERSONAL:
                _personal.add(v)
    return values[0] if values else None


def observe(obj, name=None):
    """Records, from a decoded JSON value or form (dict, list, str), the values of PERSONAL_FIELDS."""
    if not AUDIT_DIR:
        return
    if isinstance(obj, dict):
        for k, v in obj.items():
            observe(v, k)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            observe(v, name)
    elif name in PERSONAL_FIELDS and isinstance(obj, (str, bytes)):
        personal(obj)
        if isinstance(obj, str) and obj.startswith("whatsapp:"):
            personal(obj[len("whatsapp:"):])


def _observe_body(body, content_type=""):
    if not body:
        return
    try:
        text = body.decode("utf-8")
    except (UnicodeDecodeError, AttributeError):
        return
    if text[:1] in "{[":
        try:
            observe(json.loads(text))
        except ValueError:
            pass
    elif "urlencoded" in content_type.lower() or ("=" in text and " " not in text[:200]):
        try:
            import urllib.parse
            observe(dict(urllib.parse.parse_qsl(text, keep_blank_values=True)))
        except ValueError:
            pass


def _observe_request(data):
    """The personal data in one HTTP request's bytes (as a test sends them; malformed ones give what they give)."""
    if not AUDIT_DIR or not data.startswith((b"GET ", b"POST ", b"PUT ", b"PATCH ", b"DELETE ", b"HEAD ")):
        return
    head, _, body = data.partition(b"\r\n\r\n")
    ctype = ""
    for line in head.decode("latin-1").split("\r\n")[1:]:
        name, _, value = line.partition(":")
        name, value = name.strip().lower(), value.strip()
        if name == "authorization":
            personal(value.split(" ", 1)[-1])
        elif name in ("x-twilio-signature", "x-hub-signature-256", "x-switchboard-signature"):
            personal(value.split("=", 1)[-1] if name == "x-hub-signature-256" else value)
        elif name == "content-type":
            ctype = value
    _observe_body(body, ctype)


def _flush_personal():
    """Appends what was declared since the last flush to this process's file in the audit directory."""
    if not AUDIT_DIR:
        return
    new = _personal - _personal_written
    if not new:
        return
    os.makedirs(AUDIT_DIR, exist_ok=True)
    with open(os.path.join(AUDIT_DIR, "personal-%d.txt" % os.getpid()), "a", encoding="utf-8") as f:
        for v in sorted(new):
            f.write(json.dumps(v) + "\n")
    _personal_written.update(new)


_kept_logs = 0


def keep_log(path, what="gateway"):
    """Copies a gateway's log into the audit directory (when the audit is on), named after the test file."""
    global _kept_logs
    if not AUDIT_DIR or not os.path.exists(path):
        return
    os.makedirs(AUDIT_DIR, exist_ok=True)
    _kept_logs += 1
    name = "%s-%s-%d-%d.log" % (os.path.splitext(os.path.basename(sys.argv[0]))[0], what, os.getpid(), _kept_logs)
    shutil.copyfile(path, os.path.join(AUDIT_DIR, name))
    _flush_personal()


def sql(query, database_url=DATABASE_URL):
    """What psql prints for query (unaligned, tuples only, stripped); by default on the test database."""
    out = subprocess.run(["psql", database_url, "-At", "-c", query], capture_output=True, text=True, timeout=10)
    return out.stdout.strip()

# --- TAP -----------------------------------------------------------------------------------------

_n = 0
_failed = 0


def diag(text):
    """Print text as TAP comment lines."""
    for line in str(text).splitlines() or [""]:
        print("# " + line)
    sys.stdout.flush()


def ok(cond, msg, detail=None):
    """One TAP result. detail (anything printable) is shown as a comment when cond is false."""
    global _n, _failed
    _n += 1
    cond = bool(cond)
    print("%s %d - %s" % ("ok" if cond else "not ok", _n, msg))
    if not cond:
        _failed += 1
        caller = traceback.extract_stack(limit=2)[0]
        diag("  at %s:%d" % (os.path.basename(caller.filename), caller.lineno))
        if detail is not None:
            diag("  " + str(detail).replace("\n", "\n  "))
    sys.stdout.flush()
    return cond


def failures():
    return _failed


def subtest(fn, *args):
    """Run fn(*args); an exception counts as one failure and the file goes on."""
    diag(fn.__name__)
    try:
        fn(*args)
    except Exception:  # noqa: BLE001 — report anything, keep going
        ok(False, "%s raised" % fn.__name__, traceback.format_exc())


def done():
    """Print the plan and exit: 0 if every result passed, 1 otherwise."""
    _reap_all()
    _flush_personal()
    print("1..%d" % _n)
    sys.stdout.flush()
    sys.exit(1 if _failed or _n == 0 else 0)


def at_once(n, fn):
    """fn(i) for i in range(n), each on a thread of its own, all started together; their results in order."""
    results = [None] * n

    def run(i):
        results[i] = fn(i)
    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def poisoned_bursts(gw, table, check, needle, burst):
    """For the batch-refusal tests: a constraint planted for the test (CHECK (check) on table, NOT VALID) refuses
    what a burst poisons, so the batch it shares is refused and sent again one by one. Whether the poisoned request
    meets others in a statement is up to the scheduler: burst(attempt), which makes the requests and checks its own
    results, runs with the constraint in place at most five times, until the gateway's log shows needle once more
    than before. Returns how many more times it shows it."""
    with open(gw.log_path, "rb") as f:
        before = f.read().count(needle)
    refused = 0
    for attempt in range(5):
        sql("ALTER TABLE %s ADD CONSTRAINT test_poison CHECK (%s) NOT VALID" % (table, check))
        try:
            burst(attempt)
        finally:
            sql("ALTER TABLE %s DROP CONSTRAINT test_poison" % table)
        with open(gw.log_path, "rb") as f:
            refused = f.read().count(needle) - before
        if refused:
            break
    return refused


def node_checks(directory, script, env, label, timeout=120):
    """Runs `node script` in tests/<directory> with env. The script prints one JSON line per check
    ({"ok","what","detail"}) and {"end":true} last: each check becomes a TAP line prefixed with label, after one
    saying that the script ran to its end."""
    try:
        r = subprocess.run(["node", script], env=env, capture_output=True, text=True, timeout=timeout,
                           cwd=os.path.join(ROOT, "tests", directory))
    except (OSError, subprocess.TimeoutExpired) as e:
        ok(False, "%s/%s ran" % (directory, script), repr(e))
        return
    checks = []
    for line in r.stdout.splitlines():
        try:
            checks.append(json.loads(line))
        except ValueError:
            pass
    ended = any(c.get("end") for c in checks)
    ok(r.returncode == 0 and ended, "%s/%s ran to its end (node exit %d)" % (directory, script, r.returncode),
       (r.stderr or "")[-2000:])
    for c in checks:
        if "what" in c:
            ok(c["ok"], label + ": " + c["what"], c.get("detail"))


def wait_for(fn, timeout, interval=0.1):
    """Call fn() until it returns something truthy or timeout seconds pass; return that value,
    or the last falsy one (an exception counts as None)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            v = fn()
        except Exception:  # noqa: BLE001
            v = None
        if v or time.monotonic() >= deadline:
            return v
        time.sleep(interval)


def main(*fns):
    """Run each fn() (each usually starts its own Gateway), then done(). A gateway that failed
    to start was already reported; any other exception is one failure."""
    for fn in fns:
        diag(fn.__name__)
        try:
            fn()
        except GatewayFailed:
            pass
        except Exception:  # noqa: BLE001
            ok(False, "%s raised" % fn.__name__, traceback.format_exc())
    done()


# --- ports and the gateway process ----------------------------------------------------------------


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stack(action, service=None):
    """Run ops/stack.sh ACTION [SERVICE]; return (exit code, output)."""
    cmd = [os.path.join(ROOT, "ops", "stack.sh"), action] + ([service] if service else [])
    p = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
    return p.returncode, p.stdout.decode(errors="replace")


_live = []  # gateways still running, killed at exit whatever happened


def _reap_all():
    for gw in list(_live):
        gw.kill()


class GatewayFailed(Exception):
    pass


class Gateway:
    """One gateway process with its own temp config. Options override or add config keys; a
    value of None removes the key (e.g. admin_token=None starts it without a token)."""

    def __init__(self, nofile=None, **options):
        self.nofile = nofile  # RLIMIT_NOFILE (soft and hard) for the process, when given
        self.port = free_port()
        self.admin_port = free_port()
        while self.admin_port == self.port:
            self.admin_port = free_port()
        self.config = {
            "mode": "dev",
            "listen": "127.0.0.1:%d" % self.port,
            "admin_listen": "127.0.0.1:%d" % self.admin_port,
            "admin_token": ADMIN_TOKEN,
            "shards": "2",
            "redis_url": REDIS_URL,
            "database_url": DATABASE_URL,
            "log_level": "debug" if AUDIT_DIR else "info",
        }
        for k, v in options.items():
            if v is None:
                self.config.pop(k, None)
            else:
                self.config[k] = str(v)
        self.proc = None
        self.returncode = None
        self.dir = tempfile.mkdtemp(prefix="sb-it-")
        self.conf_path = os.path.join(self.dir, "switchboard.conf")
        self.log_path = os.path.join(self.dir, "gateway.log")
        self._failed_at_start = failures()

    # context manager: start, and on the way out stop (asserting exit 0) and clean up
    def __enter__(self):
        self.start()
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None and not issubclass(exc_type, GatewayFailed):
            ok(False, "test code raised", "".join(traceback.format_exception(exc_type, exc, tb)))
        if self.proc is not None and self.returncode is None:
            self.stop()
        self.finish()
        return exc_type is not None and issubclass(exc_type, GatewayFailed)

    def start(self):
        personal(self.config.get("admin_token"), self.config.get("master_key"))
        with open(self.conf_path, "w") as f:
            f.write("# written by tests/integration/harness.py\n")
            for k, v in self.config.items():
                f.write("%s = %s\n" % (k, v))
        if not os.access(SB_BIN, os.X_OK):
            ok(False, "gateway binary %s exists" % os.path.relpath(SB_BIN, ROOT))
            self.finish()
            raise GatewayFailed()
        # SB_<KEY> variables override the config file: never let the caller's leak in (SB_BIN!).
        env = {k: v for k, v in os.environ.items() if not k.startswith("SB_")}
        env.setdefault("LSAN_OPTIONS", "suppressions=%s:print_suppressions=0" % os.path.join(ROOT, "tests", "lsan.supp"))
        log = open(self.log_path, "wb")
        limit = None
        if self.nofile:
            def limit():
                resource.setrlimit(resource.RLIMIT_NOFILE, (self.nofile, self.nofile))
        self.proc = subprocess.Popen([SB_BIN, "-c", self.conf_path], cwd=ROOT, env=env, preexec_fn=limit,
                                     stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        _live.append(self)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.returncode = self.proc.returncode
                _live.remove(self)
                ok(False, "gateway started (it exited with %d)" % self.returncode)
                self.finish()
                raise GatewayFailed()
            try:
                r = request(self.port, "GET", "/healthz", timeout=1)
                if r is not None and r.status == 200:
                    ok(True, "gateway started, /healthz answers")
                    self._wait_connected(deadline)
                    return
            except OSError:
                pass
            time.sleep(0.05)
        ok(False, "gateway answered /healthz within 10 s")
        self.kill()
        self.finish()
        raise GatewayFailed()

    def _wait_connected(self, deadline):
        """Until /readyz answers 200 (or the deadline): /healthz answers before the shards' connections are made,
        and a test's first query must not race them (a sanitizer build connects a few ms later). /readyz pings every
        shard's Redis and both its PostgreSQL connections; counting "connected" lines in the log could not tell
        shard 1's main connection from shard 0's sweeper, and let a first query reach a shard still connecting."""
        while time.monotonic() < deadline:
            try:
                r = request(self.port, "GET", "/readyz", timeout=1)
                if r is not None and r.status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.02)

    def send_signal(self, sig):
        self.proc.send_signal(sig)

    def wait(self, timeout):
        """Wait for the process to exit; its exit code (negative: killed by that signal), or
        None if it is still running after timeout seconds."""
        try:
            self.returncode = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        if self in _live:
            _live.remove(self)
        return self.returncode

    def stop(self, sig=signal.SIGTERM, what="SIGTERM"):
        """Send sig and assert a clean exit (code 0) within 10 s."""
        self.send_signal(sig)
        rc = self.wait(10)
        if rc is None:
            ok(False, "gateway exits within 10 s of %s" % what)
            self.kill()
            return None
        ok(rc == 0, "gateway exits 0 after %s" % what, "exit code %d" % rc)
        return rc

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc is not None:
            self.returncode = self.proc.returncode
        if self in _live:
            _live.remove(self)

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def finish(self):
        """Print the log if anything failed during this gateway's life; remove the temp dir."""
        if failures() > self._failed_at_start and os.path.exists(self.log_path):
            diag("---- gateway log (%s) ----" % os.path.relpath(SB_BIN, ROOT))
            text = self.log()
            lines = text.splitlines()
            if len(lines) > 400:
                diag("... %d lines omitted ..." % (len(lines) - 400))
                lines = lines[-400:]
            diag("\n".join(lines))
            diag("---- end of gateway log ----")
        keep_log(self.log_path)
        shutil.rmtree(self.dir, ignore_errors=True)


# --- HTTP over a raw socket ---------------------------------------------------------------------


class Response:
    def __init__(self, status, reason, headers, body):
        self.status = status
        self.reason = reason
        self.headers = headers  # lower-case name -> value (the last one if repeated)
        self.body = body

    def header(self, name, default=None):
        return self.headers.get(name.lower(), default)

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    def __repr__(self):
        return "<%d %s %r %r>" % (self.status, self.reason, self.headers, self.body[:300])


class HttpConn:
    """One client connection: send exact bytes, read responses one at a time (keep-alive)."""

    def __init__(self, port, timeout=5.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""
        self.eof = False

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, data):
        """Send all bytes; False if the peer had closed or reset the connection."""
        _observe_request(data)
        try:
            self.sock.sendall(data)
            return True
        except (BrokenPipeError, ConnectionResetError):
            return False

    def _fill(self):
        if self.eof:
            return False
        try:
            chunk = self.sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            self.eof = True
            return False
        self.buf += chunk
        return True

    def _take(self, n):
        while len(self.buf) < n:
            if not self._fill():
                raise ConnectionError("connection closed inside a response body")
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def _line(self):
        while b"\r\n" not in self.buf:
            if not self._fill():
                raise ConnectionError("connection closed inside a response")
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def read_response(self, method="GET"):
        """The next response, or None if the connection closed (or was reset) before any byte of
        one arrived. Raises socket.timeout if the server says nothing within the timeout."""
        while not self.buf:
            if not self._fill():
                return None
        while b"\r\n\r\n" not in self.buf:
            if not self._fill():
                raise ConnectionError("connection closed inside response headers: %r" % self.buf[:200])
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
            raise ValueError("bad status line %r" % lines[0])
        status = int(parts[1])
        reason = parts[2] if len(parts) > 2 else ""
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            body = b""
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            body = b""
            while True:
                size = int(self._line().split(b";")[0].strip(), 16)
                if size == 0:
                    while self._line() != b"":  # trailers
                        pass
                    break
                body += self._take(size)
                self._take(2)
        elif "content-length" in headers:
            body = self._take(int(headers["content-length"]))
        else:
            while self._fill():
                pass
            body, self.buf = self.buf, b""
        if AUDIT_DIR and "json" in headers.get("content-type", ""):
            _observe_body(body)
        return Response(status, reason, headers, body)

    def closed_within(self, timeout):
        """True if the peer closes the connection within timeout seconds (data it sends first,
        e.g. a 408, is read and dropped)."""
        deadline = time.monotonic() + timeout
        while not self.eof:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            r, _, _ = select.select([self.sock], [], [], left)
            if r:
                self._fill()
        return True


def build_request(method, path, headers=None, body=b"", keep_alive=False):
    """The bytes of a well-formed HTTP/1.1 request."""
    if isinstance(body, str):
        body = body.encode()
    h = {"Host": "127.0.0.1"}
    if not keep_alive:
        h["Connection"] = "close"
    if body or method in ("POST", "PUT", "PATCH"):
        h["Content-Length"] = str(len(body))
    h.update(headers or {})
    head = "%s %s HTTP/1.1\r\n" % (method, path) + "".join("%s: %s\r\n" % kv for kv in h.items())
    return head.encode("latin-1") + b"\r\n" + body


def raw(port, data, timeout=5.0, method="GET"):
    """Send exact bytes on a new connection and read one response (None: closed without one)."""
    with HttpConn(port, timeout) as c:
        c.send(data)
        return c.read_response(method)


def request(port, method, path, headers=None, body=b"", timeout=5.0):
    return raw(port, build_request(method, path, headers, body), timeout, method)


def get(port, path, timeout=5.0):
    return request(port, "GET", path, timeout=timeout)


def error_code(resp):
    """The code of a JSON error body {"error":{"code","message"}}, or None if it is not one."""
    try:
        e = resp.json()["error"]
        if isinstance(e.get("code"), str) and isinstance(e.get("message"), str):
            return e["code"]
    except Exception:  # noqa: BLE001
        pass
    return None


# --- the admin console --------------------------------------------------------------------------


class Console:
    """A client of the admin console line protocol: banner on connect, one command per line,
    each response ends with an empty line."""

    PROMPT = b"sb> "

    def __init__(self, port, timeout=5.0, connect_timeout=5.0):
        deadline = time.monotonic() + connect_timeout
        while True:
            try:
                self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
                break
            except ConnectionRefusedError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.05)
        self.buf = b""
        self.prompt = False  # set by the caller once it has toggled the prompt on
        self.banner = self.readline()

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _fill(self):
        try:
            chunk = self.sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            raise ConnectionError("console closed the connection; unread: %r" % self.buf[:200])
        self.buf += chunk

    def readline(self):
        while b"\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\n", 1)
        return line.rstrip(b"\r").decode("utf-8", errors="replace")

    def read_exact(self, n):
        while len(self.buf) < n:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def response(self):
        """Lines up to (not including) the terminating empty line; in prompt mode also reads
        the `sb> ` that follows and raises if it is not there."""
        lines = []
        while True:
            line = self.readline()
            if line == "":
                break
            lines.append(line)
        if self.prompt:
            p = self.read_exact(len(self.PROMPT))
            if p != self.PROMPT:
                raise ValueError("expected prompt %r, got %r" % (self.PROMPT, p))
        return lines

    def cmd(self, line):
        """Send one command line, return its response lines."""
        if isinstance(line, str):
            line = line.encode()
        self.send(line + b"\n")
        return self.response()

    def pending(self, wait=0.3):
        """Bytes that arrive within `wait` seconds without being asked for (b'' if none)."""
        end = time.monotonic() + wait
        while True:
            left = end - time.monotonic()
            if left <= 0:
                break
            r, _, _ = select.select([self.sock], [], [], left)
            if not r:
                break
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                break
            self.buf += chunk
        data, self.buf = self.buf, b""
        return data

    def closed_within(self, timeout):
        """True if the server closes the connection within timeout seconds (reading and
        dropping whatever it says first)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            r, _, _ = select.select([self.sock], [], [], left)
            if r:
                try:
                    chunk = self.sock.recv(65536)
                except ConnectionResetError:
                    return True
                if not chunk:
                    return True
