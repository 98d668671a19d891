"""tests/integration/test_shutdown.py — graceful shutdown: a request in flight when SIGTERM arrives
still gets its answer, new connections are no longer served, and the process exits 0 (SIGTERM
and SIGINT). Run: SB_BIN=build/release/switchboard python3 tests/integration/test_shutdown.py"""

import signal
import socket
import time

import harness as h


def new_connection_refused(port):
    """True if a new connection is refused, reset, or closed without any response."""
    try:
        with h.HttpConn(port, timeout=2) as c:
            c.send(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            try:
                return c.read_response() is None
            except socket.timeout:
                return False
            except ConnectionError:
                return True
    except (ConnectionRefusedError, ConnectionResetError):
        return True


def test_sigterm_drains():
    with h.Gateway() as gw:
        c = h.HttpConn(gw.port, timeout=5)
        try:
            c.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            time.sleep(0.2)  # let the gateway read the partial head
            gw.send_signal(signal.SIGTERM)
            time.sleep(0.3)
            c.send(b"\r\n")
            try:
                r = c.read_response()
            except (OSError, ValueError) as e:
                r = e
            h.ok(isinstance(r, h.Response) and r.status == 200,
                 "a request whose head completes after SIGTERM still gets its 200", r)
        finally:
            c.close()
        refused = h.wait_for(lambda: gw.proc.poll() is not None or new_connection_refused(gw.port), 5)
        h.ok(refused, "after SIGTERM a new connection is refused or closed without a response")
        rc = gw.wait(10)
        h.ok(rc is not None, "gateway exits within 10 s of SIGTERM")
        if rc is None:
            gw.kill()
        else:
            h.ok(rc == 0, "gateway exits 0 after SIGTERM", "exit code %d" % rc)


def test_sigint():
    with h.Gateway() as gw:
        gw.stop(signal.SIGINT, "SIGINT")


h.main(test_sigterm_drains, test_sigint)
