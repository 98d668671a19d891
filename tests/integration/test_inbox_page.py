"""tests/integration/test_inbox_page.py — the inbox page in a real browser, as an agent sees it: starts the mock
provider and a gateway pointed at it, creates a tenant with a Twilio SMS channel and a voice number, then runs
tests/browser/inbox.mjs, which drives Debian's headless Chromium with playwright-core (signed out, a wrong key,
signed in, messages and a call arriving live, a reply and its ticks, the view following a busy conversation, sign-out,
expired tokens) and reports each check as a JSON line, turned into TAP here (h.node_checks). It checks what is on
screen (visibility, order and position of elements) and saves two screenshots, which are compared here, pixel by
pixel with a tolerance, with the stored ones in tests/integration/screenshots/ (a pixel differs when a channel is off
by more than PIXEL_DELTA; at most MAX_DIFFERENT of them may). SB_UPDATE_SCREENSHOTS=1 stores new ones instead (look
at them before committing). Needs `chromium` and `npm ci` in tests/browser (ops/deps.sh and make's set-up provide
both).
Run: SB_BIN=build/release/switchboard python3 tests/integration/test_inbox_page.py"""

import json
import os
import shutil
import struct
import tempfile
import uuid
import zlib

import harness as h
from test_mock_provider import Mock
from test_webhooks import MASTER_KEY, admin

TOKEN = "9" * 32
SHOTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "screenshots")
PIXEL_DELTA = 48       # per channel, out of 255: anti-aliasing moves a little, a changed layout moves a lot
MAX_DIFFERENT = 0.01   # of the pixels
CUSTOMER = "+14155550123"
TEXTS = {
    "first": "Hi, my parcel 📦 has not arrived yet",
    "second": "Order 5521, sent last Monday",
    "reply": "Sorry about that! Let me check the tracking.",
    "more": ["It says delivered, but it is not here", "Could a neighbour have it?", "I asked next door: nothing",
             "Merci, très gentil — same address as before"],
}


def png_pixels(data):
    """(width, height, rows of RGBA bytes) of an 8-bit, non-interlaced RGB or RGBA PNG (what Chromium writes)."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    pos, idat, head = 8, [], None
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + n]
        pos += 12 + n
        if kind == b"IHDR":
            head = struct.unpack(">IIBBBBB", chunk)
        elif kind == b"IDAT":
            idat.append(chunk)
        elif kind == b"IEND":
            break
    w, ht, depth, color, _, _, interlace = head
    if depth != 8 or color not in (2, 6) or interlace:
        raise ValueError("unsupported PNG (depth %d, color type %d, interlace %d)" % (depth, color, interlace))
    bpp = 4 if color == 6 else 3
    raw = zlib.decompress(b"".join(idat))
    stride = w * bpp
    rows, prev, i = [], bytearray(stride), 0
    for _ in range(ht):
        f, line = raw[i], bytearray(raw[i + 1:i + 1 + stride])
        i += 1 + stride
        for x in range(stride):
            a = line[x - bpp] if x >= bpp else 0
            b = prev[x]
            c = prev[x - bpp] if x >= bpp else 0
            if f == 1:
                line[x] = (line[x] + a) & 255
            elif f == 2:
                line[x] = (line[x] + b) & 255
            elif f == 3:
                line[x] = (line[x] + ((a + b) >> 1)) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line) if bpp == 4 else
                    b"".join(bytes(line[x:x + 3]) + b"\xff" for x in range(0, stride, 3)))
        prev = line
    return w, ht, rows


def different_pixels(a, b):
    """How many pixels of two same-sized images differ by more than PIXEL_DELTA in a channel (None: other sizes)."""
    wa, ha, ra = a
    wb, hb, rb = b
    if (wa, ha) != (wb, hb):
        return None
    n = 0
    for la, lb in zip(ra, rb):
        if la == lb:
            continue
        for x in range(0, len(la), 4):
            if (abs(la[x] - lb[x]) > PIXEL_DELTA or abs(la[x + 1] - lb[x + 1]) > PIXEL_DELTA
                    or abs(la[x + 2] - lb[x + 2]) > PIXEL_DELTA):
                n += 1
    return n


def compare_shots(got_dir):
    update = os.environ.get("SB_UPDATE_SCREENSHOTS") == "1"
    for name in ("signin", "inbox"):
        got = os.path.join(got_dir, name + ".png")
        ref = os.path.join(SHOTS, name + ".png")
        if not os.path.exists(got):
            h.ok(False, "screenshot %s was taken" % name)
            continue
        if update:
            os.makedirs(SHOTS, exist_ok=True)
            shutil.copyfile(got, ref)
            h.ok(True, "screenshot %s stored as the new reference (SB_UPDATE_SCREENSHOTS=1)" % name)
            continue
        if not os.path.exists(ref):
            h.ok(False, "a stored screenshot %s exists (make one with SB_UPDATE_SCREENSHOTS=1)" % name)
            continue
        a, b = png_pixels(open(got, "rb").read()), png_pixels(open(ref, "rb").read())
        n = different_pixels(a, b)
        total = a[0] * a[1]
        keep = None
        if n is None or n > total * MAX_DIFFERENT:
            keep = os.path.join(tempfile.gettempdir(), "sb-inbox-%s-%d.png" % (name, os.getpid()))
            shutil.copyfile(got, keep)
        h.ok(n is not None and n <= total * MAX_DIFFERENT,
             "the %s screen looks as stored: %s of %d pixels differ (at most %.0f%%)" %
             (name, "all" if n is None else n, total, MAX_DIFFERENT * 100),
             "sizes %dx%d and %dx%d; this run's screenshot: %s" % (a[0], a[1], b[0], b[1], keep))


def test_page():
    with Mock() as mock:
        gw = h.Gateway(master_key=MASTER_KEY, twilio_api_base="http://127.0.0.1:%d" % mock.port)
        gw.config["public_url"] = "http://127.0.0.1:%d" % gw.port
        with gw:
            mock.behaviour(callbacks=["delivered"], callback_delay_ms=200)
            t = admin(gw, "/v1/admin/tenants", {"name": "browser " + uuid.uuid4().hex[:6]})
            key = admin(gw, "/v1/admin/tenants/%s/keys" % t["id"], {})["key"]
            number = "+1559%07d" % (uuid.uuid4().int % 10 ** 7)
            voice_number = "+1888%07d" % (uuid.uuid4().int % 10 ** 7)
            ch = admin(gw, "/v1/admin/tenants/%s/channels" % t["id"],
                       {"type": "twilio_sms", "address": number,
                        "credentials": {"account_sid": "AC" + "7" * 32, "auth_token": TOKEN}})
            vch = admin(gw, "/v1/admin/tenants/%s/channels" % t["id"],
                        {"type": "twilio_voice", "address": voice_number,
                         "credentials": {"account_sid": "AC" + "7" * 32, "auth_token": TOKEN},
                         "settings": {"voice_mode": "forward", "forward_to": "+14155550199"}})
            h.personal(key, TOKEN, number, voice_number, CUSTOMER, TEXTS["first"], TEXTS["second"], TEXTS["reply"],
                       *TEXTS["more"])
            shots = tempfile.mkdtemp(prefix="sb-shots-")
            try:
                env = dict(os.environ, SB_URL="http://127.0.0.1:%d" % gw.port, SB_KEY=key, SB_CHANNEL=ch["id"],
                           SB_VOICE_CHANNEL=vch["id"], SB_NUMBER=number, SB_VOICE_NUMBER=voice_number,
                           SB_CUSTOMER=CUSTOMER, SB_TOKEN=TOKEN, SB_SHOTS=shots, SB_TEXTS=json.dumps(TEXTS))
                h.node_checks("browser", "inbox.mjs", env, "browser")
                compare_shots(shots)
            finally:
                shutil.rmtree(shots, ignore_errors=True)


if __name__ == "__main__":
    h.main(test_page)
