#!/usr/bin/env bash
# tests/bench/soak.sh — what `make soak` runs (not part of `make test`): the gateway under steady mixed traffic for
# SOAK_SECONDS (3600), to show that what it holds stays flat once warmed up.
#
#   1. a fresh database (switchboard_soak), the mock provider, and the gateway (release build, default shards)
#      sending to it; 10 tenants x 10 Twilio SMS channels (rate_per_second 500);
#   2. what this machine sustains, measured first: build/release/bench/loadgen in a closed loop (64 requests in
#      flight) for 5 s, webhooks alone, then sends alone;
#   3. then loadgen for SOAK_SECONDS at a quarter of each (about half the machine together; SOAK_WEBHOOKS and
#      SOAK_SENDS override), with SOAK_CLIENTS (200) live inbox clients connecting, reading for 1 to 5 s, and
#      leaving;
#   4. every minute one line: the gateway's RSS, open fds, threads, the worst shard's loop lag (/metrics), the
#      receipts not yet applied and the outbound messages not yet sent, with loadgen's own minute of answers;
#   5. at the end the warm-up (the first SOAK_WARMUP_MIN = 5 minutes) is set aside and the rest of the minutes under
#      load judged: RSS and fds at the first minute after it, at the last, their highest, and the change. "flat"
#      means RSS grew by less than 16 MiB and 10 %, and fds by less than 16, from the end of the warm-up to the end.
#      The line after the load (minute "end") shows what the gateway holds once its clients are gone, beside the
#      line before it (minute 0): fds back where they started means no descriptor leaked.
#
# Prints figures and a verdict; the exit code says only whether it could run. Leaves nothing running.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."

SECONDS_TOTAL=${SOAK_SECONDS:-3600}
CLIENTS=${SOAK_CLIENTS:-200}
WARMUP_MIN=${SOAK_WARMUP_MIN:-5}
EVERY=${SOAK_EVERY:-60}
GATEWAY=build/release/switchboard
LOADGEN=build/release/bench/loadgen
DB="host=127.0.0.1 port=5440 dbname=switchboard_soak user=switchboard"

TMP=$(mktemp -d /tmp/sb-soak.XXXXXX)
GW_PID=
MOCK_PID=
LOAD_PID=

cleanup() {
    for pid in $LOAD_PID $GW_PID $MOCK_PID; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_http() {
    for _ in $(seq 100); do
        curl -sf -o /dev/null "$1" && return 0
        sleep 0.1
    done
    echo "soak: $1 did not answer within 10 s" >&2
    exit 1
}

[ -x "$LOADGEN" ] || { echo "soak: $LOADGEN is not built (make benches)" >&2; exit 1; }

psql -X -q -d "host=127.0.0.1 port=5440 dbname=postgres user=switchboard" -c "DROP DATABASE IF EXISTS switchboard_soak"
ops/migrate.sh switchboard_soak >/dev/null

MOCK_PORT=$(free_port)
build/release/mock-provider --listen "127.0.0.1:$MOCK_PORT" --max-records 100000 >"$TMP/mock.log" 2>&1 &
MOCK_PID=$!
wait_http "http://127.0.0.1:$MOCK_PORT/_mock/stats"

GW_PORT=$(free_port)
cat >"$TMP/switchboard.conf" <<EOF
# written by tests/bench/soak.sh
mode = dev
listen = 127.0.0.1:$GW_PORT
admin_listen = 127.0.0.1:$(free_port)
admin_token = soak-token
redis_url = redis://127.0.0.1:6390/2
database_url = $DB
log_level = warn
master_key = 00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff
twilio_api_base = http://127.0.0.1:$MOCK_PORT
EOF
unset_sb=()
for v in $(compgen -e | grep '^SB_' || true); do unset_sb+=(-u "$v"); done
env "${unset_sb[@]}" "$GATEWAY" -c "$TMP/switchboard.conf" >"$TMP/gateway.log" 2>&1 &
GW_PID=$!
wait_http "http://127.0.0.1:$GW_PORT/healthz"
python3 tests/bench/setup_tenants.py "$GW_PORT" soak-token 10 10 500 >"$TMP/channels.txt"

# sustained: the 2xx of a 5 s closed loop, per second
sustained() {
    "$LOADGEN" "$GW_PORT" "$TMP/channels.txt" "$1" "$2" 5 "$TMP/calibrate.txt" 0 5 2>/dev/null >/dev/null
    awk -v k="$3" '$1 == k && $3 >= 200 && $3 < 300 { n++ } END { printf "%d\n", n / 5 }' "$TMP/calibrate.txt"
}
( sleep 2; psql -X -q "$DB" -c ANALYZE ) & # statistics for the plans, as a gateway that has run for a while has them
ANALYZE_PID=$!
W_MAX=$(sustained -64 0 w)
S_MAX=$(sustained 0 -64 s)
W_RATE=${SOAK_WEBHOOKS:-$((W_MAX / 4))}
S_RATE=${SOAK_SENDS:-$((S_MAX / 4))}
wait "$ANALYZE_PID"
# Receipts committed and not applied yet, from the gateway's own figures: a scan of the receipts table for the
# unprocessed ones would grow with the table, on the CPU being watched.
receipts_pending() {
    curl -sf "http://127.0.0.1:$GW_PORT/metrics" |
        awk '/^sb_receipts_stored_total/ { s += $2 } /^sb_receipts_applied_total/ { a += $2 } END { print s - a }'
}

# let the calibration's backlog drain before the clock starts
for _ in $(seq 600); do
    [ "$(psql -X "$DB" -Atc "SELECT count(*) FROM outbox")" = 0 ] && [ "$(receipts_pending)" = 0 ] && break
    sleep 0.5
done

echo "== Soak: $W_RATE webhooks/s and $S_RATE sends/s (a quarter each of the $W_MAX and $S_MAX/s sustained just now),"
echo "   $CLIENTS live inbox clients coming and going, for $SECONDS_TOTAL s; gateway pid $GW_PID, $(nproc) cores"

lag_ms() {
    curl -sf "http://127.0.0.1:$GW_PORT/metrics" |
        awk '/^sb_loop_lag_seconds\{/ { if ($2 > m) m = $2 } END { printf "%.1f", m * 1000 }'
}

# sample MINUTE NOTE — one line of figures; under load (NOTE empty) it also goes to the series that is judged
sample() {
    kill -0 "$GW_PID" 2>/dev/null || { echo "soak: the gateway died" >&2; tail -n 50 "$TMP/gateway.log" >&2; exit 1; }
    local rss fds threads pending outbox
    rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$GW_PID/status")
    fds=$(ls "/proc/$GW_PID/fd" | wc -l)
    threads=$(awk '/^Threads:/ { print $2 }' "/proc/$GW_PID/status")
    pending=$(receipts_pending)
    outbox=$(psql -X "$DB" -Atc "SELECT count(*) FROM outbox")
    printf '%4s  %9d  %5d  %7d  %11s  %8d  %8d  %s\n' "$1" "$rss" "$fds" "$threads" "$(lag_ms)" "$pending" "$outbox" "$2"
    [ -n "$2" ] || [ "$1" = 0 ] || echo "$1 $rss $fds" >>"$TMP/series.txt"
}

printf '%4s  %9s  %5s  %7s  %11s  %8s  %8s  %s\n' min rss_kib fds threads loop_lag_ms receipts outbox "loadgen (last minute)"
: >"$TMP/series.txt"
sample 0 "(before the load)"
"$LOADGEN" "$GW_PORT" "$TMP/channels.txt" "$W_RATE" "$S_RATE" "$SECONDS_TOTAL" "$TMP/answers.txt" "$CLIENTS" "$EVERY" \
    >"$TMP/loadgen.out" 2>"$TMP/loadgen.err" &
LOAD_PID=$!
for minute in $(seq $((SECONDS_TOTAL / EVERY))); do
    sleep "$EVERY"
    kill -0 "$LOAD_PID" 2>/dev/null || break
    sample "$minute" ""
    tail -n 1 "$TMP/loadgen.err" | sed 's/^loadgen /      /'
done
wait "$LOAD_PID" || true
LOAD_PID=
sleep 2
sample end "(after the load)"
cat "$TMP/loadgen.out"

awk -v w="$WARMUP_MIN" '
    $1 > w { if (!n++) { r0 = $2; f0 = $3 } r1 = $2; f1 = $3; if ($2 > rmax) rmax = $2; if ($3 > fmax) fmax = $3 }
    END {
        if (!n) { print "soak: too short to judge (no minute after the warm-up)"; exit }
        dr = r1 - r0; df = f1 - f0
        printf "after the %d-minute warm-up: RSS %d -> %d KiB (highest %d, %+d KiB, %+.1f%%); fds %d -> %d (highest %d, %+d)\n",
               w, r0, r1, rmax, dr, 100.0 * dr / r0, f0, f1, fmax, df
        flat = dr < 16384 && dr < r0 / 10 && df < 16
        print flat ? "verdict: flat" : "verdict: NOT flat"
    }' "$TMP/series.txt"
