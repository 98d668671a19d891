#!/usr/bin/env python3
"""ops/voice_echo.py — the smallest voice app: it plays the caller's audio back to them.

Set a channel's settings.media_url to ws://HOST:PORT/ and call its number: Switchboard relays Twilio's Media
Streams frames here (connected, start, media, dtmf, mark, stop) and relays what this sends back (media, mark, clear).

    python3 ops/voice_echo.py [--host 127.0.0.1] [--port 8765]

Needs the `websockets` package (Debian: python3-websockets; ops/deps.sh installs it). A real app would also check
the upgrade's X-Switchboard-Signature."""

import argparse
import asyncio
import json

import websockets


async def echo(ws, path=None):
    stream_sid = None
    async for text in ws:
        frame = json.loads(text)
        event = frame.get("event")
        if event == "start":
            stream_sid = frame["start"]["streamSid"]
            print("call %s started, parameters %s" % (frame["start"]["callSid"],
                                                       frame["start"].get("customParameters", {})))
        elif event == "media":
            await ws.send(json.dumps({"event": "media", "streamSid": stream_sid,
                                      "media": {"payload": frame["media"]["payload"]}}))
        elif event == "mark":
            await ws.send(json.dumps({"event": "mark", "streamSid": stream_sid, "mark": frame["mark"]}))
        elif event == "stop":
            print("call ended")


async def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765)
    a = p.parse_args()
    async with websockets.serve(echo, a.host, a.port):
        print("echoing on ws://%s:%d/" % (a.host, a.port))
        await asyncio.Future()


if __name__ == "__main__":
    asyncio.run(main())
