"""A small, independent WebSocket client (RFC 6455) and MessagePack codec for the integration tests.

Written from the RFCs with the standard library only (this machine has no PyPI), so the gateway's own framing
code is checked against a second implementation: the handshake's accept key is recomputed here, client frames
are masked with a fresh random key, and server frames are checked to be unmasked and well formed.

    ws = WebSocket.connect(port, protocols=["switchboard.v1.json"])
    ws.send_op({"op": "hello", "token": key})
    ws.recv_op()          # -> {"op": "welcome", ...}
    ws.close_code()       # waits for the server's close frame, returns its code
"""

import base64
import hashlib
import json
import os
import select
import socket
import struct
import time

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
TEXT, BINARY, CLOSE, PING, PONG = 1, 2, 8, 9, 10


class Closed(Exception):
    """The server closed the connection (code, reason) or the socket ended."""

    def __init__(self, code, reason=""):
        super().__init__(f"closed {code} {reason}")
        self.code = code
        self.reason = reason


class WebSocket:
    def __init__(self, sock, protocol, rest=b""):
        self.sock = sock
        self.protocol = protocol
        self.buf = bytearray(rest)
        self.closed = None

    @classmethod
    def connect(cls, port, path="/v1/inbox", protocols=None, origin=None, headers=None, host="127.0.0.1",
                timeout=10, key=None):
        """Opens a WebSocket; returns it, or raises HandshakeRefused with the HTTP status and body."""
        sock = socket.create_connection((host, port), timeout=timeout)
        key = key or base64.b64encode(os.urandom(16)).decode()
        lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", "Upgrade: websocket", "Connection: Upgrade",
                 f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"]
        if protocols:
            lines.append("Sec-WebSocket-Protocol: " + ", ".join(protocols))
        if origin:
            lines.append(f"Origin: {origin}")
        for k, v in (headers or {}).items():
            lines.append(f"{k}: {v}")
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                raise HandshakeRefused(0, {}, data)
            data += chunk
        head, rest = data.split(b"\r\n\r\n", 1)
        status_line, *hlines = head.decode("latin-1").split("\r\n")
        status = int(status_line.split()[1])
        hdrs = {}
        for h in hlines:
            k, v = h.split(":", 1)
            hdrs[k.strip().lower()] = v.strip()
        if status != 101:
            n = int(hdrs.get("content-length", "0"))
            while len(rest) < n:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                rest += chunk
            sock.close()
            raise HandshakeRefused(status, hdrs, rest)
        want = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
        if hdrs.get("sec-websocket-accept") != want:
            raise AssertionError(f"bad Sec-WebSocket-Accept {hdrs.get('sec-websocket-accept')!r}, want {want!r}")
        if hdrs.get("upgrade", "").lower() != "websocket" or "upgrade" not in hdrs.get("connection", "").lower():
            raise AssertionError(f"bad upgrade headers {hdrs}")
        proto = hdrs.get("sec-websocket-protocol")
        if proto is not None and proto not in (protocols or []):
            raise AssertionError(f"server chose {proto!r}, which was not offered")
        ws = cls(sock, proto or "switchboard.v1.json", rest)
        ws.headers = hdrs
        return ws

    # ---- sending ------------------------------------------------------------------------------------------------

    @staticmethod
    def frame(opcode, payload, fin=True, mask=True, rsv=0):
        """Builds one client frame (masked unless told otherwise)."""
        b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
        n = len(payload)
        m = 0x80 if mask else 0
        if n < 126:
            head = struct.pack("!BB", b0, m | n)
        elif n < 65536:
            head = struct.pack("!BBH", b0, m | 126, n)
        else:
            head = struct.pack("!BBQ", b0, m | 127, n)
        if not mask:
            return head + payload
        key = os.urandom(4)
        return head + key + bytes(b ^ key[i & 3] for i, b in enumerate(payload))

    def send_raw(self, data):
        self.sock.sendall(data)

    def send(self, opcode, payload, fin=True):
        self.sock.sendall(self.frame(opcode, payload, fin))

    def send_op(self, obj):
        """Sends a map in this connection's subprotocol."""
        import harness  # the log audit records the tokens and bodies sent (a no-op without it)
        harness.observe(obj)
        if self.protocol == "switchboard.v1.msgpack":
            self.send(BINARY, mp_pack(obj))
        else:
            self.send(TEXT, json.dumps(obj).encode())

    def close(self, code=1000, reason=b""):
        try:
            self.send(CLOSE, struct.pack("!H", code) + reason)
        except OSError:
            pass

    # ---- receiving ----------------------------------------------------------------------------------------------

    def _fill(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no frame in time")
        r, _, _ = select.select([self.sock], [], [], left)
        if not r:
            raise TimeoutError("no frame in time")
        chunk = self.sock.recv(65536)
        if not chunk:
            raise Closed(1006, "socket ended")
        self.buf += chunk

    def recv_frame(self, timeout=10):
        """Returns (opcode, payload) of the next server frame; control frames included, fragments not joined."""
        deadline = time.monotonic() + timeout
        while True:
            if len(self.buf) >= 2:
                b0, b1 = self.buf[0], self.buf[1]
                if b1 & 0x80:
                    raise AssertionError("server frame is masked")
                if b0 & 0x70:
                    raise AssertionError("server frame has RSV bits")
                n, off = b1 & 0x7F, 2
                if n == 126 and len(self.buf) >= 4:
                    n, off = struct.unpack("!H", self.buf[2:4])[0], 4
                elif n == 127 and len(self.buf) >= 10:
                    n, off = struct.unpack("!Q", self.buf[2:10])[0], 10
                elif n >= 126:
                    n = None
                if n is not None and len(self.buf) >= off + n:
                    payload = bytes(self.buf[off:off + n])
                    del self.buf[:off + n]
                    if not b0 & 0x80:
                        raise AssertionError("the gateway does not fragment its frames")
                    return b0 & 0x0F, payload
            self._fill(deadline)

    def recv_op(self, timeout=10):
        """Returns the next data message decoded as a map; answers nothing itself; raises Closed on a close frame."""
        while True:
            op, payload = self.recv_frame(timeout)
            if op == CLOSE:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                self.closed = code
                raise Closed(code, payload[2:].decode("utf-8"))
            if op in (PING, PONG):
                continue
            if op == TEXT:
                if self.protocol != "switchboard.v1.json":
                    raise AssertionError("text frame on the msgpack subprotocol")
                return json.loads(payload.decode("utf-8"))
            if op == BINARY:
                if self.protocol != "switchboard.v1.msgpack":
                    raise AssertionError("binary frame on the json subprotocol")
                return mp_unpack(payload)
            raise AssertionError(f"unexpected opcode {op}")

    def close_code(self, timeout=10):
        """Reads until the server's close frame (skipping data) and returns its code; 1006 if the socket ended."""
        try:
            while True:
                self.recv_op(timeout)
        except Closed as e:
            return e.code

    def shutdown(self):
        try:
            self.sock.close()
        except OSError:
            pass


class HandshakeRefused(Exception):
    def __init__(self, status, headers, body):
        super().__init__(f"handshake refused: {status} {body[:200]!r}")
        self.status = status
        self.headers = headers
        self.body = body

    def json(self):
        return json.loads(self.body.decode())


# ---- MessagePack (the subset the inbox uses: nil, bool, int, float, str, bin, array, map) --------------------------


def mp_pack(o):
    if o is None:
        return b"\xc0"
    if o is True:
        return b"\xc3"
    if o is False:
        return b"\xc2"
    if isinstance(o, int):
        if 0 <= o < 128:
            return bytes([o])
        if -32 <= o < 0:
            return struct.pack("!b", o)
        if 0 <= o < 2**8:
            return b"\xcc" + struct.pack("!B", o)
        if 0 <= o < 2**16:
            return b"\xcd" + struct.pack("!H", o)
        if 0 <= o < 2**32:
            return b"\xce" + struct.pack("!I", o)
        if 0 <= o < 2**64:
            return b"\xcf" + struct.pack("!Q", o)
        if -2**7 <= o:
            return b"\xd0" + struct.pack("!b", o)
        if -2**15 <= o:
            return b"\xd1" + struct.pack("!h", o)
        if -2**31 <= o:
            return b"\xd2" + struct.pack("!i", o)
        return b"\xd3" + struct.pack("!q", o)
    if isinstance(o, float):
        return b"\xcb" + struct.pack("!d", o)
    if isinstance(o, str):
        b = o.encode("utf-8")
        n = len(b)
        if n < 32:
            return bytes([0xA0 | n]) + b
        if n < 2**8:
            return b"\xd9" + struct.pack("!B", n) + b
        if n < 2**16:
            return b"\xda" + struct.pack("!H", n) + b
        return b"\xdb" + struct.pack("!I", n) + b
    if isinstance(o, (bytes, bytearray)):
        n = len(o)
        if n < 2**8:
            return b"\xc4" + struct.pack("!B", n) + bytes(o)
        return b"\xc6" + struct.pack("!I", n) + bytes(o)
    if isinstance(o, (list, tuple)):
        n = len(o)
        head = bytes([0x90 | n]) if n < 16 else b"\xdc" + struct.pack("!H", n)
        return head + b"".join(mp_pack(x) for x in o)
    if isinstance(o, dict):
        n = len(o)
        head = bytes([0x80 | n]) if n < 16 else b"\xde" + struct.pack("!H", n)
        return head + b"".join(mp_pack(k) + mp_pack(v) for k, v in o.items())
    raise TypeError(type(o))


def mp_unpack(data):
    """Decodes exactly one object; trailing bytes are an error."""
    obj, off = _mp_read(memoryview(data), 0)
    if off != len(data):
        raise ValueError("trailing bytes after the msgpack object")
    return obj


def _mp_read(b, i):
    t = b[i]
    i += 1
    if t < 0x80:
        return t, i
    if t >= 0xE0:
        return t - 256, i
    if 0x80 <= t <= 0x8F:
        return _mp_map(b, i, t & 0x0F)
    if 0x90 <= t <= 0x9F:
        return _mp_array(b, i, t & 0x0F)
    if 0xA0 <= t <= 0xBF:
        n = t & 0x1F
        return bytes(b[i:i + n]).decode("utf-8"), i + n
    fixed = {0xC0: None, 0xC2: False, 0xC3: True}
    if t in fixed:
        return fixed[t], i
    ints = {0xCC: "!B", 0xCD: "!H", 0xCE: "!I", 0xCF: "!Q", 0xD0: "!b", 0xD1: "!h", 0xD2: "!i", 0xD3: "!q",
            0xCA: "!f", 0xCB: "!d"}
    if t in ints:
        fmt = ints[t]
        n = struct.calcsize(fmt)
        return struct.unpack(fmt, b[i:i + n])[0], i + n
    lens = {0xD9: "!B", 0xDA: "!H", 0xDB: "!I", 0xC4: "!B", 0xC5: "!H", 0xC6: "!I"}
    if t in lens:
        fmt = lens[t]
        k = struct.calcsize(fmt)
        n = struct.unpack(fmt, b[i:i + k])[0]
        raw = bytes(b[i + k:i + k + n])
        return (raw.decode("utf-8") if t >= 0xD9 else raw), i + k + n
    if t in (0xDC, 0xDD):
        k = 2 if t == 0xDC else 4
        return _mp_array(b, i + k, int.from_bytes(b[i:i + k], "big"))
    if t in (0xDE, 0xDF):
        k = 2 if t == 0xDE else 4
        return _mp_map(b, i + k, int.from_bytes(b[i:i + k], "big"))
    raise ValueError(f"unsupported msgpack type 0x{t:02x}")


def _mp_array(b, i, n):
    out = []
    for _ in range(n):
        v, i = _mp_read(b, i)
        out.append(v)
    return out, i


def _mp_map(b, i, n):
    out = {}
    for _ in range(n):
        k, i = _mp_read(b, i)
        v, i = _mp_read(b, i)
        out[k] = v
    return out, i
