#!/usr/bin/env bash
# tests/bench/run.sh — the benchmarks, as `make bench` runs them after building. They print
# figures and assert nothing (the exit code only says whether they could run at all).
#
#   1. build/release/bench/bench_actors, if built (prints its own figures)
#   2. HTTP: GET /healthz on the gateway (shards = 1) against nginx's `return 200` on the same
#      machine — 3 rounds of `wrk -t1 -c50 -d5s` on each, interleaved and never at the same time;
#      prints the median requests/s of each and the ratio gateway/nginx.
#
# Needs the local stack (ops/stack.sh up) for the gateway; starts and stops its own nginx and
# gateway, with temp configs and dirs, and leaves nothing running. WRK_DURATION=5s, ROUNDS=3 and
# WRK_CONNECTIONS=50 can be overridden.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."

GATEWAY=${SB_BIN:-build/release/switchboard}
DURATION=${WRK_DURATION:-5s}
ROUNDS=${ROUNDS:-3}
CONNS=${WRK_CONNECTIONS:-50}

TMP=$(mktemp -d /tmp/sb-bench.XXXXXX)
chmod 755 "$TMP" # nginx workers may run as another user
NGINX_PID=
GW_PID=

cleanup() {
    if [ -n "$GW_PID" ] && kill -0 "$GW_PID" 2>/dev/null; then
        kill -TERM "$GW_PID" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "$GW_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$GW_PID" 2>/dev/null || true
    fi
    if [ -n "$NGINX_PID" ] && kill -0 "$NGINX_PID" 2>/dev/null; then
        kill -QUIT "$NGINX_PID" 2>/dev/null || true # graceful: master and workers
        for _ in $(seq 100); do kill -0 "$NGINX_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$NGINX_PID" 2>/dev/null || true
    fi
    wait 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_http URL NAME LOG — until URL answers 200 (10 s), else show LOG and fail.
wait_http() {
    local _
    for _ in $(seq 100); do
        curl -sf -o /dev/null "$1" && return 0
        sleep 0.1
    done
    echo "bench: $2 did not answer $1 within 10 s; its log:" >&2
    tail -n 50 "$3" >&2 || true
    exit 1
}

# rps URL — one wrk round; prints the requests/s figure (errors wrk saw go to stderr: a server
# that answers errors or drops connections fast must not pass for a fast one).
rps() {
    local out
    out=$(wrk -t1 -c"$CONNS" -d"$DURATION" "$1")
    grep -E 'Non-2xx|Socket errors' <<<"$out" | sed "s|^ *|  note: $1: |" >&2 || true
    awk '/^Requests\/sec:/ { print $2 }' <<<"$out"
}

median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

# --- 1. the actor runtime ---------------------------------------------------------------------

if [ -x build/release/bench/bench_actors ]; then
    echo "== bench_actors"
    build/release/bench/bench_actors
else
    echo "== bench_actors: not built (build/release/bench/bench_actors), skipped"
fi

# --- 2. HTTP: gateway vs nginx ------------------------------------------------------------------

echo "== HTTP GET /healthz: gateway (shards = 1) vs nginx (worker_processes 1), wrk -t1 -c$CONNS -d$DURATION, $ROUNDS rounds each"
[ -x "$GATEWAY" ] || { echo "bench: $GATEWAY is not built" >&2; exit 1; }
command -v wrk >/dev/null && command -v nginx >/dev/null || { echo "bench: needs wrk and nginx (ops/deps.sh)" >&2; exit 1; }

NGINX_PORT=$(free_port)
mkdir -p "$TMP/nginx/logs"
cat >"$TMP/nginx/nginx.conf" <<EOF
# written by tests/bench/run.sh: the reference HTTP server for the benchmark
worker_processes 1;
daemon off;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/logs/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $TMP/nginx/body;
    proxy_temp_path $TMP/nginx/proxy;
    fastcgi_temp_path $TMP/nginx/fastcgi;
    uwsgi_temp_path $TMP/nginx/uwsgi;
    scgi_temp_path $TMP/nginx/scgi;
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location / { return 200 "ok\n"; }
    }
}
EOF
nginx -p "$TMP/nginx" -e "$TMP/nginx/logs/error.log" -c "$TMP/nginx/nginx.conf" \
    >"$TMP/nginx/logs/stdout.log" 2>&1 &
NGINX_PID=$!
wait_http "http://127.0.0.1:$NGINX_PORT/healthz" nginx "$TMP/nginx/logs/error.log"

GW_PORT=$(free_port)
ADMIN_PORT=$(free_port)
cat >"$TMP/switchboard.conf" <<EOF
# written by tests/bench/run.sh
mode = dev
listen = 127.0.0.1:$GW_PORT
admin_listen = 127.0.0.1:$ADMIN_PORT
admin_token = bench-token
shards = 1
redis_url = redis://127.0.0.1:6390/1
database_url = host=127.0.0.1 port=5440 dbname=switchboard_test user=switchboard
log_level = warn
EOF
# SB_<KEY> variables would override the config file: keep the caller's out.
unset_sb=()
for v in $(compgen -e | grep '^SB_' || true); do unset_sb+=(-u "$v"); done
env "${unset_sb[@]}" "$GATEWAY" -c "$TMP/switchboard.conf" \
    >"$TMP/gateway.log" 2>&1 &
GW_PID=$!
wait_http "http://127.0.0.1:$GW_PORT/healthz" gateway "$TMP/gateway.log"

gw=()
ng=()
for round in $(seq "$ROUNDS"); do
    g=$(rps "http://127.0.0.1:$GW_PORT/healthz")
    n=$(rps "http://127.0.0.1:$NGINX_PORT/healthz")
    printf '  round %d: gateway %10s req/s   nginx %10s req/s\n' "$round" "$g" "$n"
    gw+=("${g:-0}")
    ng+=("${n:-0}")
done

gm=$(median "${gw[@]}")
nm=$(median "${ng[@]}")
printf '  median : gateway %10s req/s   nginx %10s req/s\n' "$gm" "$nm"
awk -v g="$gm" -v n="$nm" 'BEGIN { if (n > 0) printf "  ratio gateway/nginx: %.2f\n", g / n; else print "  ratio gateway/nginx: n/a" }'
