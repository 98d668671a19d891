#!/usr/bin/env bash
# ops/run.sh — what `make run` does once the stack is up and the build is done: starts the mock provider
# (ops/mock_provider.c) on 127.0.0.1:8090, the gateway with ops/dev.conf (which points its provider adapters at
# the mock), seeds the demo tenant once (ops/demo.py: an API key, Twilio SMS, Twilio WhatsApp and Meta WhatsApp
# channels, a Meta app, a Twilio voice number streamed to the sample voice app ops/voice_echo.py), prints how to try
# it, and waits. Ctrl-C stops them all (the gateway drains first).
#
#   BUILD=build/release GW_PORT=8080 MOCK_PORT=8090 ops/run.sh
# (Other ports, e.g. for the test of this script, go through the gateway's SB_<KEY> overrides; DEMO_STATE names the
# demo's state file, var/demo.json by default.)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

BUILD=${BUILD:-build/release}
MOCK_PORT=${MOCK_PORT:-8090}
GW_PORT=${GW_PORT:-8080}
GW_URL=http://127.0.0.1:$GW_PORT
if [ "$GW_PORT" != 8080 ] || [ "$MOCK_PORT" != 8090 ]; then
    export SB_LISTEN=127.0.0.1:$GW_PORT SB_PUBLIC_URL=$GW_URL SB_TWILIO_API_BASE=http://127.0.0.1:$MOCK_PORT \
        SB_META_GRAPH_BASE=http://127.0.0.1:$MOCK_PORT/v21.0
fi
mkdir -p var

# The Meta app's id and secret: the mock signs the status webhooks it posts with the secret, so both must know it
# before either starts. Made once, kept in var/.
APP_FILE=${DEMO_STATE:-var/demo.json}.meta-app
if [ ! -s "$APP_FILE" ]; then
    python3 -c 'import uuid; print(900000000000000 + uuid.uuid4().int % 10**14, uuid.uuid4().hex)' >"$APP_FILE"
    chmod 600 "$APP_FILE"
fi
read -r META_APP META_SECRET <"$APP_FILE"

MOCK_PID=
GW_PID=
stop() {
    [ -n "$GW_PID" ] && kill -TERM "$GW_PID" 2>/dev/null && wait "$GW_PID" 2>/dev/null
    [ -n "$MOCK_PID" ] && kill -TERM "$MOCK_PID" 2>/dev/null && wait "$MOCK_PID" 2>/dev/null
    [ -n "$VOICE_PID" ] && kill -TERM "$VOICE_PID" 2>/dev/null && wait "$VOICE_PID" 2>/dev/null
    return 0
}
trap stop EXIT
trap 'exit 130' INT TERM

"$BUILD/mock-provider" --listen "127.0.0.1:$MOCK_PORT" --meta-webhook "$GW_URL/webhooks/meta/$META_APP" \
    --meta-app-secret "$META_SECRET" >"${DEMO_STATE:-var/demo.json}.mock.log" 2>&1 &
MOCK_PID=$!
"$BUILD/switchboard" -c ops/dev.conf &
GW_PID=$!
# The sample voice app (ops/voice_echo.py) answers the demo's calls when Debian's python3-websockets is there; else
# the mock's own echo app does.
VOICE_PID=
if [ -z "${VOICE_APP:-}" ] && /usr/bin/python3 -c 'import websockets' 2>/dev/null; then
    /usr/bin/python3 ops/voice_echo.py --port "${VOICE_PORT:-8765}" >"${DEMO_STATE:-var/demo.json}.voice.log" 2>&1 &
    VOICE_PID=$!
    export VOICE_APP=ws://127.0.0.1:${VOICE_PORT:-8765}/
fi

for _ in $(seq 100); do
    curl -sf -o /dev/null "$GW_URL/healthz" && break
    kill -0 "$GW_PID" 2>/dev/null || exit 1
    sleep 0.1
done
# Like the real providers, the mock reports delivery a moment later, signed, to the gateway's status webhooks.
curl -sf -o /dev/null -H 'Content-Type: application/json' -d '{"callbacks":["delivered"],"callback_delay_ms":500}' \
    "http://127.0.0.1:$MOCK_PORT/_mock/behaviour" || echo "run: the mock provider did not take its behaviour" >&2
DEMO_META_APP_ID=$META_APP DEMO_META_APP_SECRET=$META_SECRET \
    python3 ops/demo.py seed "$GW_URL" "${SB_ADMIN_TOKEN:-dev-admin-token}" "http://127.0.0.1:$MOCK_PORT" || true
wait "$GW_PID"
