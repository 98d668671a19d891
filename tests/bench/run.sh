#!/usr/bin/env bash
# tests/bench/run.sh — the benchmarks, as `make bench` runs them after building. They print
# figures and assert nothing (the exit code only says whether they could run at all).
#
#   1. build/release/bench/bench_actors, if built (prints its own figures); likewise bench_counters and
#      bench_mstream (ns per Media Streams frame parsed and written)
#   2. HTTP: GET /healthz on the gateway (shards = 1) against nginx's `return 200` on the same
#      machine — 3 rounds of `wrk -t1 -c50 -d5s` on each, interleaved and never at the same time;
#      prints the median requests/s of each and the ratio gateway/nginx.
#   3. Durable webhooks: pre-signed Twilio inbound SMS (gen_webhooks.py; every request a new
#      message, so each is verified, committed, routed and applied) driven by wrk at 1, 50 and 200
#      connections against the same gateway, beside nginx answering the same POST and pgbench's
#      single-row INSERT transactions (one client); then a paced run at half the 50-connection
#      peak for its p99. Requests/s and p50/p99 of each.
#   3b. Side by side: ../shared/peers/express-ingest.mjs (Express + node-postgres + Twilio's validator, one INSERT
#      per webhook) and the gateway on the same ~500-byte request at c=50 on the same PostgreSQL: req/s, CPU per
#      webhook of each and their ratios.
#   4. Webhook-to-inbox latency: bench_live with 1,000 live inbox clients (100 tenants x 10)
#      while webhooks arrive at LIVE_RATE/s (5000) for LIVE_SECONDS (10), on a gateway with
#      the default number of shards.
#   4b. Idle connections: bench_idle opens IDLE_CLIENTS (15,000) inbox clients of one tenant on a fresh gateway
#      (over several processes: each may hold only so many descriptors), prints the gateway's RSS per idle
#      connection, the time one event takes to reach all of them, and the RSS once they are idle again.
#   5. Sends end to end: POST /v1/messages over 1,000 channels to the mock provider. SEND_CLUSTER=on runs the
#      gateway as a node of a cluster (of one), where every send is committed as a receipt where it is taken and
#      numbered by its session through the node's stream (gateway/sends).
#   5b. Broadcasts (tests/bench/bench_broadcast.py): a 100,000-recipient POST /v1/broadcasts (accept time, outbox rows/s,
#      DELETE), then 100,000 recipients as broadcasts over 1,000 channels end to end to the mock (sends/s, CPU per send
#      by part). BROADCAST_RECIPIENTS, BROADCAST_CHANNELS, BROADCAST_TENANTS scale it.
#   6. Voice: VOICE_CALLS (1,000) concurrent calls of VOICE_SECONDS (20 s) placed by the mock provider over
#      VOICE_SPREAD_MS (4000), admitted through the signed voice webhook and relayed both ways (50 frames/s each way)
#      by a gateway with default shards between the mock and its echo app; each round beside a reference of the same
#      calls streaming straight to the echo app (no gateway). CPU per relayed frame of the gateway, the mock,
#      PostgreSQL and Redis, the echo delay added, lost and out-of-order frames, RSS per call, Redis round trips per
#      admission and renewals per call-minute; VOICE_ROUNDS (ROUNDS) rounds, medians; Redis db VOICE_REDIS_DB (3), not
#      the tests' db 1. A count that does not hold
#      (a frame lost, late or out of order) is reported, and the largest that does is searched for. Then
#      VOICE_LIGHT_CALLS (100; 0: none) calls, for the relay's delay with CPU to spare. VOICE_PERF_OUT=FILE records the
#      gateway with perf over the steady window of one more round.
#   7. Several nodes (tests/bench/bench_cluster.py): 1, 2 and 3 gateway processes with cluster = on (shards = 1 each)
#      on this machine's one PostgreSQL and Redis (db 4), the same webhook load over 100 tenants spread over the nodes
#      (and one node with cluster = off for reference): webhooks/s, p50/p99 and CPU per webhook of the gateways,
#      PostgreSQL and Redis; then two nodes A and B, a paced load for tenants B owns posted to B (local) and to A
#      (routed through B's stream): CPU per webhook of each and the ratio routed/local, every webhook counted in the
#      database. CLUSTER_SECONDS (5), CLUSTER_ROUNDS (ROUNDS), CLUSTER_TENANTS (100), CLUSTER_CONNS (48),
#      CLUSTER_RATE ("2000 4000"), CLUSTER_NODES ("off 1 2 3"), CLUSTER_PERF_OUT.
#
# Needs the local stack (ops/stack.sh up); the gateway runs on a fresh database, switchboard_bench,
# made anew by every run. Starts and stops its own nginx and gateway, with temp configs and dirs,
# and leaves nothing running. WRK_DURATION=5s, ROUNDS=3 and WRK_CONNECTIONS=50 can be overridden;
# PERF_OUT=FILE records the gateway with perf during the last c=200 webhook round, PERF_SENDS_OUT=FILE while it sends;
# BENCH="webhooks sends" (any of actors, counters, mstream, healthz, webhooks, peer, live, idle, sends, broadcast, voice,
# cluster) runs only
# those sections; IDLE_CLIENTS (15000) sets the idle section's clients.
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
MOCK_PID=
PEER_PID=
VGW_PID=
VMOCK_PID=

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
    [ -n "$MOCK_PID" ] && kill -TERM "$MOCK_PID" 2>/dev/null || true
    [ -n "$VGW_PID" ] && kill -TERM "$VGW_PID" 2>/dev/null || true
    [ -n "$VMOCK_PID" ] && kill -TERM "$VMOCK_PID" 2>/dev/null || true
    [ -n "$PEER_PID" ] && kill -TERM "$PEER_PID" 2>/dev/null || true
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

want() { [ -z "${BENCH:-}" ] || [[ " $BENCH " == *" $1 "* ]]; }

# receipts_pending — webhook receipts the gateway committed and has not applied yet (its /metrics figures). A build
# from before those figures (the script is also run on one, for before-and-after tables) is asked through its
# partial index of unprocessed receipts instead.
receipts_pending() {
    local m
    m=$(curl -sf "http://127.0.0.1:$GW_PORT/metrics")
    if grep -q '^sb_receipts_stored_total' <<<"$m"; then
        awk '/^sb_receipts_stored_total/ { s += $2 } /^sb_receipts_applied_total/ { a += $2 } END { print s - a }' <<<"$m"
    else
        psql -X "$DB" -Atc "SELECT count(*) FROM (SELECT 1 FROM webhook_receipts WHERE processed_at IS NULL LIMIT 1) x"
    fi
}

median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

# cpu_snap FILE — the CPU time (user + system, clock ticks) every process has used so far, summed by process name;
# for postgres also what its exited children used (a backend ends with its connection, and the postmaster reaps it).
# Two snapshots around a measured round give what each side of the run spent on it: the gateway, PostgreSQL (all
# its processes: backends, WAL writer, autovacuum), the load generator. The machine has few cores and the parts
# share them, so a rate alone does not say who its limit is.
cpu_snap() {
    { cat /proc/[0-9]*/stat 2>/dev/null || true; } | awk '{
        name = $0; sub(/^[0-9]+ \(/, "", name); sub(/\) .*$/, "", name)
        rest = $0; sub(/^.*\) /, "", rest); split(rest, f, " ")
        t[name] += f[12] + f[13]
        if (name == "postgres") t[name] += f[14] + f[15] }
        END { for (k in t) print k, t[k] }' >"$1"
}

# child_ticks PID — the CPU time (clock ticks) of the children that shell PID has waited for (the caller's
# $BASHPID, read before the $(...) around this call: in there it names the subshell). A load generator that has
# exited is no longer in /proc, so its share is read here, around the command substitution that ran it.
child_ticks() { awk '{ sub(/^.*\) /, ""); print $14 + $15 }' "/proc/$1/stat"; }

# cpu_per LABEL N BEFORE AFTER [NAME TICKS] — prints the CPU time per request (microseconds) that each part used
# between two cpu_snap files over N requests (NAME TICKS: a part that has exited, see child_ticks), their sum, and
# the rate that sum allows on this machine's cores: a ceiling set by CPU alone, whatever the batching.
cpu_per() {
    awk -v label="$1" -v n="$2" -v cores="$(nproc)" -v tck="$(getconf CLK_TCK)" -v xn="${5:-}" -v xt="${6:-0}" '
        FNR == NR { a[$1] = $2; next }
        { d[$1] = $2 - a[$1] }
        END {
            if (xn != "") d[xn] += xt
            if (n <= 0) exit
            k = split("switchboard gateway node peer postgres PostgreSQL redis-server Redis nginx nginx wrk wrk pgbench pgbench bench_live bench_live mock-provider mock", m, " ")
            line = ""; sum = 0
            for (i = 1; i < k; i += 2) {
                us = d[m[i]] * 1e6 / tck / n; sum += us
                if (us < 0.5) continue
                line = line sprintf("%s%s %.0f", (line == "" ? "" : ", "), m[i + 1], us)
            }
            printf "        CPU per %s, in us: %s; %.0f in all: %d cores allow at most %.0f/s\n", label, line, sum, cores, (sum > 0 ? cores * 1e6 / sum : 0)
        }' "$3" "$4"
}

# rows_snap FILE — the row versions PostgreSQL has written so far, per table of the bench database (inserted,
# updated, of those HOT, deleted). rows_per LABEL N BEFORE AFTER prints them per request: what each request costs the
# database in rows, the figure that decides how much write work one deployment can carry. (An idle backend reports
# its statistics within 10 s (PGSTAT_IDLE_INTERVAL): the caller waits that long before each snapshot.)
rows_snap() {
    psql -X "$DB" -AtF' ' -c "SELECT relname, n_tup_ins, n_tup_upd, n_tup_hot_upd, n_tup_del FROM pg_stat_user_tables" >"$1"
}
rows_per() {
    awk -v label="$1" -v n="$2" '
        FNR == NR { i[$1] = $2; u[$1] = $3; h[$1] = $4; d[$1] = $5; next }
        { di = $2 - i[$1]; du = $3 - u[$1]; dh = $4 - h[$1]; dd = $5 - d[$1]
          if (di + du + dd == 0) next
          line = line sprintf("%s%s +%.2f", (line == "" ? "" : ", "), $1, di / n)
          if (du) line = line sprintf(" ~%.2f%s", du / n, (dh ? sprintf(" (HOT %.2f)", dh / n) : ""))
          if (dd) line = line sprintf(" -%.2f", dd / n)
          ti += di; tu += du; td += dd }
        END { if (n > 0) printf "        rows per %s (+ inserted, ~ updated, - deleted): %s; %.2f in all\n", label, line, (ti + tu + td) / n }' "$3" "$4"
}

# cpu_us BEFORE AFTER N NAME... — microseconds of CPU per request the named processes used between two snapshots.
cpu_us() {
    local a=$1 b=$2 n=$3
    shift 3
    awk -v n="$n" -v tck="$(getconf CLK_TCK)" -v names=" $* " '
        FNR == NR { a[$1] = $2; next }
        index(names, " " $1 " ") { t += $2 - a[$1] }
        END { printf "%.1f\n", (n > 0 ? t * 1e6 / tck / n : 0) }' "$a" "$b"
}

# --- 1. the actor runtime ---------------------------------------------------------------------

if ! want actors; then
    :
elif [ -x build/release/bench/bench_actors ]; then
    echo "== bench_actors"
    build/release/bench/bench_actors
else
    echo "== bench_actors: not built (build/release/bench/bench_actors), skipped"
fi

# --- 1b. the Redis send counters (acquire + release per send, pipelined over one connection) ------------------

if want counters && [ -x build/release/bench/bench_counters ]; then
    echo "== bench_counters"
    build/release/bench/bench_counters
fi

# --- 1c. Media Streams frames (pure: ns per frame parsed and written) ----------------------------------------

if want mstream && [ -x build/release/bench/bench_mstream ]; then
    echo "== bench_mstream"
    build/release/bench/bench_mstream
fi

# --- 2. HTTP: gateway vs nginx ------------------------------------------------------------------

want healthz && echo "== HTTP GET /healthz: gateway (shards = 1) vs nginx (worker_processes 1), wrk -t1 -c$CONNS -d$DURATION, $ROUNDS rounds each"
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

# A fresh database for every run: figures must not depend on what earlier runs left behind (a database that
# outgrows shared_buffers is slower, and an earlier run's backlog would be applied during this one).
psql -X -q -d "host=127.0.0.1 port=5440 dbname=postgres user=switchboard" -c "DROP DATABASE IF EXISTS switchboard_bench"
ops/migrate.sh switchboard_bench >/dev/null

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
database_url = host=127.0.0.1 port=5440 dbname=switchboard_bench user=switchboard
log_level = warn
master_key = 00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff
EOF
# SB_<KEY> variables would override the config file: keep the caller's out.
unset_sb=()
for v in $(compgen -e | grep '^SB_' || true); do unset_sb+=(-u "$v"); done
env "${unset_sb[@]}" "$GATEWAY" -c "$TMP/switchboard.conf" \
    >"$TMP/gateway.log" 2>&1 &
GW_PID=$!
wait_http "http://127.0.0.1:$GW_PORT/healthz" gateway "$TMP/gateway.log"

if want healthz; then
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
fi

# --- 3. durable webhooks ------------------------------------------------------------------------

DB="host=127.0.0.1 port=5440 dbname=switchboard_bench user=switchboard"
if want webhooks || want peer; then
    # Requests per run: each run uses fresh ones (a repeat is a cheap duplicate), enough for 25,000/s (WRK_DURATION in
    # seconds, "10s").
    SLICE=${WEBHOOK_SLICE:-$((${DURATION%s} * 25000))}
    echo "== Durable webhooks: pre-signed Twilio SMS (each a new message), gateway (shards = 1) vs nginx return 200"
    echo "   on the same POST vs pgbench single-row INSERT (1 client); wrk -t1 -d$DURATION --latency, $ROUNDS rounds each"
    command -v pgbench >/dev/null || { echo "bench: needs pgbench (postgresql-client)" >&2; exit 1; }
    ADMIN=(-sf -H "Authorization: Bearer bench-token" -H "Content-Type: application/json")
    jget() { python3 -c "import json,sys; print(json.load(sys.stdin)[\"$1\"])"; }
    TOKEN=$(python3 -c 'import uuid; print(uuid.uuid4().hex)')
    NUMBER="+1998$(python3 -c 'import random; print("%07d" % random.randrange(10**7))')"
    TID=$(curl "${ADMIN[@]}" -d '{"name":"bench webhooks"}' "http://127.0.0.1:$GW_PORT/v1/admin/tenants" | jget id)
    CID=$(curl "${ADMIN[@]}" -d "{\"type\":\"twilio_sms\",\"address\":\"$NUMBER\",\"credentials\":{\"account_sid\":\"AC$(printf '0%.0s' $(seq 32))\",\"auth_token\":\"$TOKEN\"}}" \
        "http://127.0.0.1:$GW_PORT/v1/admin/tenants/$TID/channels" | jget id)
    NSLICES=$((3 * ROUNDS + 2)) # the rounds, the paced run and the warm-up
    python3 tests/bench/gen_webhooks.py "http://127.0.0.1:$GW_PORT/webhooks/twilio/$CID" "$TOKEN" "$NUMBER" \
        $((NSLICES * SLICE)) >"$TMP/webhooks.tsv"
    NEXT_SLICE=0

    # post_round URL CONNS SLICE_NO [DELAY_MS] — one wrk round of the webhook script on slice SLICE_NO;
    # prints "req/s p50 p99 requests wrk-cpu-ticks" (latencies in ms); notes non-2xx answers and, for the gateway, a
    # slice that ran out on stderr. (Called in a subshell: the caller counts the slices.)
    post_round() {
        local first=$(($3 * SLICE + 1)) out t0 me=$BASHPID
        t0=$(child_ticks "$me")
        out=$(SB_BENCH_REQS="${REQS:-$TMP/webhooks.tsv}" SB_BENCH_FIRST=$first SB_BENCH_LAST=$((first + SLICE - 1)) \
            SB_BENCH_PATH="/webhooks/twilio/$CID" SB_BENCH_HOST="127.0.0.1:$GW_PORT" SB_BENCH_DELAY_MS="${4:-}" \
            wrk -t1 -c"$2" -d"$DURATION" --latency -s tests/bench/webhook.lua "$1")
        local ticks=$(($(child_ticks "$me") - t0))
        grep -E 'Non-2xx|Socket errors' <<<"$out" | sed "s|^ *|  note: $1 c=$2: |" >&2 || true
        local check=$SLICE
        [ "$1" = "http://127.0.0.1:$GW_PORT" ] || check=999999999 # nginx stores nothing: repeats do not matter
        awk -v slice="$check" -v ticks="$ticks" '
            function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
            / 50%/ { p50 = ms($2) } / 99%/ { p99 = ms($2) }
            /requests in/ { n = $1; if ($1 > slice) print "  note: the slice ran out: repeats were duplicates" > "/dev/stderr" }
            /^Requests\/sec:/ { rps = $2 }
            END { printf "%s %.2f %.2f %d %d\n", rps, p50, p99, n, ticks }' <<<"$out"
    }

    # until every receipt is applied (so one run's work does not spill into the next); from the gateway's own
    # figures (a query for the unprocessed receipts would cost PostgreSQL the CPU the rounds are measured by)
    wait_drained() {
        local _
        for _ in $(seq 300); do
            [ "$(receipts_pending)" = 0 ] && return 0
            sleep 0.1
        done
        echo "  note: receipts still unapplied after 30 s" >&2
    }

    # Warm-up, then ANALYZE: the database is new, and a prepared statement's generic plan, made in its first
    # seconds on tables that are nearly empty, stays until statistics exist (autovacuum's ANALYZE, a minute or more
    # later). What is measured is a gateway past its first minute.
    ( DURATION=3s; post_round "http://127.0.0.1:$GW_PORT" 50 "$NEXT_SLICE" >/dev/null )
    NEXT_SLICE=$((NEXT_SLICE + 1))
    wait_drained
    psql -X -q "$DB" -c ANALYZE
fi

if want webhooks; then
    psql "$DB" -qc "DROP TABLE IF EXISTS bench_insert; CREATE TABLE bench_insert (id bigserial PRIMARY KEY, payload text NOT NULL)"
    echo "INSERT INTO bench_insert (payload) VALUES ('a webhook body of about this size, give or take a few bytes');" >"$TMP/insert.sql"
    pgb=()
    for round in $(seq "$ROUNDS"); do
        t=$(pgbench -n -c1 -j1 -T"${DURATION%s}" -f "$TMP/insert.sql" "$DB" 2>/dev/null | awk '/^tps/ { print $3 }')
        pgb+=("${t:-0}")
    done
    pm=$(median "${pgb[@]}")
    printf '  pgbench single-row INSERT, 1 client: %s tps (median of %d)\n' "$pm" "$ROUNDS"


    # PostgreSQL's own ceiling for the write a 200 waits for, with nothing else on the machine: rows shaped like a
    # receipt of this run (same columns, indexes and sizes), 64 to a transaction from 2 clients, as group commit at
    # its best would send them. No gateway, no HTTP, no applying: what the durable half alone can reach here.
    psql "$DB" -qc "DROP TABLE IF EXISTS bench_receipts;
        CREATE TABLE bench_receipts (LIKE webhook_receipts INCLUDING DEFAULTS INCLUDING IDENTITY INCLUDING INDEXES)"
    psql "$DB" -Atc "SELECT 'INSERT INTO bench_receipts (tenant_id, channel_id, dedup_key, event, raw)'
        || ' SELECT 1, 1, :key || ''-'' || g, ' || quote_literal(event::text) || ', ' || quote_literal(raw)
        || ' FROM generate_series(1, 64) g;' FROM webhook_receipts LIMIT 1" >"$TMP/receipts.sql.tail" 2>/dev/null || true
    if [ -s "$TMP/receipts.sql.tail" ]; then
        { echo '\set key random(1, 1000000000000)'; cat "$TMP/receipts.sql.tail"; } >"$TMP/receipts.sql"
        cpu_snap "$TMP/cpu0"; t0=$(child_ticks $$)
        out=$(pgbench -n -c2 -j2 -T"${DURATION%s}" -f "$TMP/receipts.sql" "$DB" 2>/dev/null)
        cpu_snap "$TMP/cpu1"; t1=$(child_ticks $$)
        t=$(awk '/^tps/ { print $3 }' <<<"$out"); x=$(awk '/number of transactions actually processed/ { print $NF }' <<<"$out")
        awk -v t="${t:-0}" 'BEGIN { printf "  PostgreSQL alone, receipt-shaped INSERT of 64 rows a transaction, 2 clients: %.0f rows/s\n", t * 64 }'
        cpu_per "receipt row" $(( ${x:-0} * 64 )) "$TMP/cpu0" "$TMP/cpu1" pgbench $((t1 - t0))
    fi
    psql "$DB" -qc "DROP TABLE IF EXISTS bench_receipts"

    for conns in 1 50 200; do
        gr=(); g50=(); g99=(); nr=(); n50=(); n99=(); ga=()
        for round in $(seq "$ROUNDS"); do
            # CPU from the first request until every receipt of the round is applied: all the work a webhook causes
            if [ "$conns" = 200 ] && [ "$round" = "$ROUNDS" ]; then
                sleep 11
                rows_snap "$TMP/rows0"
            fi
            cpu_snap "$TMP/cpu0"
            PERF_PID=
            if [ -n "${PERF_OUT:-}" ] && [ "$conns" = 200 ] && [ "$round" = "$ROUNDS" ]; then
                # where the gateway's CPU goes at c=200: perf report -i $PERF_OUT (the last round, until it ends)
                perf record -q -F 999 -g -p "$GW_PID" -o "$PERF_OUT" -- sleep "${DURATION%s}" >/dev/null 2>&1 &
                PERF_PID=$!
            fi
            ts=$(date +%s.%N)
            read -r r a b gn gticks < <(post_round "http://127.0.0.1:$GW_PORT" "$conns" "$NEXT_SLICE")
            [ -n "$PERF_PID" ] && wait "$PERF_PID" 2>/dev/null
            gr+=("$r"); g50+=("$a"); g99+=("$b")
            wait_drained
            # acknowledged and applied: the round's requests over the time until the last of them was applied
            ga+=("$(awk -v n="$gn" -v a="$ts" -v b="$(date +%s.%N)" 'BEGIN { printf "%.0f", (b > a ? n / (b - a) : 0) }')")
            cpu_snap "$TMP/cpu1"
            read -r r a b nn nticks < <(post_round "http://127.0.0.1:$NGINX_PORT" "$conns" "$NEXT_SLICE")
            cpu_snap "$TMP/cpu2"
            NEXT_SLICE=$((NEXT_SLICE + 1))
            nr+=("$r"); n50+=("$a"); n99+=("$b")
        done
        gm=$(median "${gr[@]}"); nm=$(median "${nr[@]}")
        printf '  c=%-3d gateway %9s req/s  p50 %6s ms  p99 %7s ms | nginx %9s req/s  p50 %6s ms  p99 %6s ms\n' \
            "$conns" "$gm" "$(median "${g50[@]}")" "$(median "${g99[@]}")" "$nm" "$(median "${n50[@]}")" "$(median "${n99[@]}")"
        printf '        gateway acknowledged and applied (until the last of a round was applied): %s/s\n' "$(median "${ga[@]}")"
        awk -v g="$gm" -v n="$nm" -v p="$pm" -v c="$conns" 'BEGIN {
            printf "        ratios: gateway/nginx %.2f, gateway/pgbench %.1fx\n", (n > 0 ? g / n : 0), (p > 0 ? g / p : 0) }'
        if [ "$conns" = 200 ]; then
            sleep 11
            rows_snap "$TMP/rows1"
            rows_per "webhook (last round)" "$gn" "$TMP/rows0" "$TMP/rows1"
        fi
        if [ "$conns" -gt 1 ]; then # (at c=1 the idle machine's background work would dominate)
            cpu_per "webhook (gateway, last round, until applied)" "$gn" "$TMP/cpu0" "$TMP/cpu1" wrk "$gticks"
            cpu_per "request (nginx, last round)" "$nn" "$TMP/cpu1" "$TMP/cpu2" wrk "$nticks"
        fi
        [ "$conns" = 50 ] && PEAK50=$gm
    done
    # Half the 50-connection peak: each connection pauses so that 50 of them make about that rate.
    HALF=$(awk -v p="$PEAK50" 'BEGIN { printf "%d", p / 2 }')
    if [ "$HALF" -gt 0 ]; then
        DELAY=$(awk -v h="$HALF" 'BEGIN { d = 50 * 1000 / h; printf "%d", (d < 1 ? 1 : d) }')
        read -r r a b _ < <(post_round "http://127.0.0.1:$GW_PORT" 50 "$NEXT_SLICE" "$DELAY")
        wait_drained
        printf '  paced at about half the c=50 peak (target %d/s; 50 connections, %d ms between requests): %s req/s, p50 %s ms, p99 %s ms\n' \
            "$HALF" "$DELAY" "$r" "$a" "$b"
    fi
    psql "$DB" -qc "DROP TABLE IF EXISTS bench_insert"
fi

# --- 3b. side by side: the reference peer ---------------------------------------------------------------------
# ../shared/peers/express-ingest.mjs: Express + node-postgres + Twilio's official validator, one durable INSERT per
# webhook, 200 after COMMIT; the stack the platforms we serve are typically built on, doing the same request on the
# same PostgreSQL. The gateway gets correctly signed requests of the peer's shape (gen_webhooks.py ... peer) and is
# measured until every one is applied (receipt, message, events: the whole durable path, more than one INSERT).

PEERS=${SB_PEERS:-../shared/peers}
if want peer; then
    echo "== Side by side with the reference peer (Express + node-postgres + Twilio's validator, one INSERT a webhook):"
    echo "   the same ~500-byte Twilio form at c=50 (wrk -t1 -d$DURATION), $ROUNDS rounds each; gateway shards = 1"
    if [ ! -f "$PEERS/express-ingest.mjs" ] || ! command -v node >/dev/null || ! command -v npm >/dev/null; then
        echo "  skipped: needs $PEERS (the shared reference peers), node and npm"
    else
        rm -rf "$TMP/peer"
        cp -r "$PEERS" "$TMP/peer"
        chmod -R u+w "$TMP/peer"
        (cd "$TMP/peer" && npm ci --no-audit --no-fund >"$TMP/peer-npm.log" 2>&1) ||
            { echo "  note: npm ci failed in the peer's copy; its log:" >&2; tail -n 20 "$TMP/peer-npm.log" >&2; }
        PEER_PORT=$(free_port)
        PGHOST=127.0.0.1 PGUSER=switchboard PGDATABASE=switchboard_bench node "$TMP/peer/express-ingest.mjs" \
            "$PEER_PORT" 5440 >"$TMP/peer.log" 2>&1 &
        PEER_PID=$!
        for _ in $(seq 100); do grep -q listening "$TMP/peer.log" && break; sleep 0.1; done
        PEER_SLICE=$((${DURATION%s} * 20000))
        python3 tests/bench/gen_webhooks.py "http://127.0.0.1:$GW_PORT/webhooks/twilio/$CID" "$TOKEN" "$NUMBER" \
            $(((ROUNDS + 1) * PEER_SLICE)) peer >"$TMP/peer-webhooks.tsv"
        # peer_round — one wrk round against the peer; prints "req/s requests wrk-cpu-ticks"
        peer_round() {
            local out t0 me=$BASHPID
            t0=$(child_ticks "$me")
            out=$(wrk -t1 -c50 -d"$DURATION" -s "$TMP/peer/twilio-post.lua" "http://127.0.0.1:$PEER_PORT")
            local ticks=$(($(child_ticks "$me") - t0))
            grep -E 'Non-2xx|Socket errors' <<<"$out" | sed "s|^ *|  note: peer: |" >&2 || true
            awk -v ticks="$ticks" '/requests in/ { n = $1 } /^Requests\/sec:/ { rps = $2 } END { printf "%s %d %d\n", rps, n, ticks }' <<<"$out"
        }
        peer_round >/dev/null # warm-up (the JIT, the pool's connections)
        gr=(); pr=(); gcpu=(); gapp=(); pcpu=(); papp=()
        for round in $(seq "$ROUNDS"); do
            cpu_snap "$TMP/cpu0"
            ts=$(date +%s.%N)
            read -r r _ _ gn gticks < <(SLICE=$PEER_SLICE REQS="$TMP/peer-webhooks.tsv" post_round \
                "http://127.0.0.1:$GW_PORT" 50 "$round")
            wait_drained
            r=$(awk -v n="$gn" -v a="$ts" -v b="$(date +%s.%N)" 'BEGIN { printf "%.0f", (b > a ? n / (b - a) : 0) }')
            cpu_snap "$TMP/cpu1"
            read -r p pn pticks < <(peer_round)
            cpu_snap "$TMP/cpu2"
            gr+=("$r"); pr+=("$p")
            gapp+=("$(cpu_us "$TMP/cpu0" "$TMP/cpu1" "$gn" switchboard)")
            gcpu+=("$(cpu_us "$TMP/cpu0" "$TMP/cpu1" "$gn" switchboard postgres)")
            papp+=("$(cpu_us "$TMP/cpu1" "$TMP/cpu2" "$pn" node)")
            pcpu+=("$(cpu_us "$TMP/cpu1" "$TMP/cpu2" "$pn" node postgres)")
        done
        gm=$(median "${gr[@]}"); pm=$(median "${pr[@]}")
        printf '  gateway %9s req/s (acknowledged and applied) | peer %9s req/s\n' "$gm" "$pm"
        cpu_per "webhook (gateway, last round, until applied)" "$gn" "$TMP/cpu0" "$TMP/cpu1" wrk "$gticks"
        cpu_per "webhook (peer, last round)" "$pn" "$TMP/cpu1" "$TMP/cpu2" wrk "$pticks"
        awk -v g="$gm" -v p="$pm" -v ga="$(median "${gapp[@]}")" -v gc="$(median "${gcpu[@]}")" \
            -v pa="$(median "${papp[@]}")" -v pc="$(median "${pcpu[@]}")" 'BEGIN {
            printf "  medians, CPU per webhook in us: gateway %.0f + PostgreSQL %.0f = %.0f | peer %.0f + PostgreSQL %.0f = %.0f\n", ga, gc - ga, gc, pa, pc - pa, pc
            printf "  ratios: webhooks/s gateway/peer %.1fx; CPU per webhook, server and database, gateway/peer %.2f (1/%.1f);", (p > 0 ? g / p : 0), (pc > 0 ? gc / pc : 0), (gc > 0 ? pc / gc : 0)
            printf " the server process alone %.2f (1/%.1f)\n", (pa > 0 ? ga / pa : 0), (ga > 0 ? pa / ga : 0) }'
        kill -TERM "$PEER_PID" 2>/dev/null || true
        wait "$PEER_PID" 2>/dev/null || true
        PEER_PID=
    fi
fi

# --- 4. webhook-to-inbox latency ------------------------------------------------------------------

LIVE_RATE=${LIVE_RATE:-5000}
LIVE_SECONDS=${LIVE_SECONDS:-10}
want live && echo "== Webhook-to-inbox latency: 1000 live inbox clients (100 tenants x 10), $LIVE_RATE webhooks/s for ${LIVE_SECONDS}s, gateway with default shards"
[ -x build/release/bench/bench_live ] || { echo "bench: build/release/bench/bench_live is not built" >&2; exit 1; }
kill -TERM "$GW_PID" 2>/dev/null || true
wait "$GW_PID" 2>/dev/null || true
sed -i '/^shards = /d' "$TMP/switchboard.conf"
env "${unset_sb[@]}" "$GATEWAY" -c "$TMP/switchboard.conf" >"$TMP/gateway-live.log" 2>&1 &
GW_PID=$!
wait_http "http://127.0.0.1:$GW_PORT/healthz" gateway "$TMP/gateway-live.log"
if want live; then
    python3 tests/bench/setup_tenants.py "$GW_PORT" bench-token 100 >"$TMP/tenants.txt"
    ( sleep 0.7; psql -X -q "$DB" -c ANALYZE ) & # during the warm-up, as in the sends section below
    ANALYZE_PID=$!
    cpu_snap "$TMP/cpu0"; t0=$(child_ticks $$)
    build/release/bench/bench_live "$GW_PORT" "$TMP/tenants.txt" 10 "$LIVE_RATE" "$LIVE_SECONDS"
    cpu_snap "$TMP/cpu1"; t1=$(child_ticks $$)
    wait "$ANALYZE_PID"
    # (bench_live's second of warm-up is in these figures too: about one webhook in eleven more than counted)
    cpu_per "webhook (all its inbox deliveries included)" $((LIVE_RATE * LIVE_SECONDS)) "$TMP/cpu0" "$TMP/cpu1" \
        bench_live $((t1 - t0))
fi

# --- 4b. idle inbox connections: what each costs the gateway, and one event to all of them --------------------------

if want idle; then
    IDLE_CLIENTS=${IDLE_CLIENTS:-15000}
    echo "== Idle inbox connections: $IDLE_CLIENTS clients of one tenant on a fresh gateway (default shards), then one event to all"
    kill -TERM "$GW_PID" 2>/dev/null || true
    wait "$GW_PID" 2>/dev/null || true
    env "${unset_sb[@]}" "$GATEWAY" -c "$TMP/switchboard.conf" >"$TMP/gateway-idle.log" 2>&1 &
    GW_PID=$!
    wait_http "http://127.0.0.1:$GW_PORT/healthz" gateway "$TMP/gateway-idle.log"
    python3 tests/bench/setup_tenants.py "$GW_PORT" bench-token 1 >"$TMP/idle-tenant.txt"
    build/release/bench/bench_idle "$GW_PORT" "$TMP/idle-tenant.txt" "$GW_PID" "$IDLE_CLIENTS"
    grep -E 'open files|descriptors' "$TMP/gateway-idle.log" | sed 's/^/  gateway: /' || true
fi

# --- 5. end-to-end sends: REST -> outbox -> session actors -> Redis counters -> curl -> the mock provider ---------

if want sends; then
    SEND_RATE=${SEND_RATE:-5000}
    echo "== Sends end to end: POST /v1/messages over 1000 channels (10 tenants x 100) to the mock provider, $SEND_RATE/s for ${LIVE_SECONDS}s"
    MOCK_PORT=$(free_port)
    build/release/mock-provider --listen "127.0.0.1:$MOCK_PORT" --max-records 1000000 >"$TMP/mock.log" 2>&1 &
    MOCK_PID=$!
    for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$MOCK_PORT/_mock/stats" && break; sleep 0.1; done
    kill -TERM "$GW_PID" 2>/dev/null || true
    wait "$GW_PID" 2>/dev/null || true
    echo "twilio_api_base = http://127.0.0.1:$MOCK_PORT" >>"$TMP/switchboard.conf"
    cp "$TMP/switchboard.conf" "$TMP/switchboard-sends.conf"
    if [ "${SEND_CLUSTER:-off}" = on ]; then # a node of a cluster (of one): each send committed as a send's receipt
        redis-cli -p 6390 -n 1 DEL "sb:{cluster}:slots" "sb:{cluster}:nodes" "sb:{cluster}:drain" >/dev/null
        printf 'cluster = on\nnode_id = bench-sends\n' >>"$TMP/switchboard-sends.conf"
        echo "   (cluster = on: each send committed where it is taken, then numbered through the node's stream)"
    fi
    env "${unset_sb[@]}" "$GATEWAY" -c "$TMP/switchboard-sends.conf" >"$TMP/gateway-sends.log" 2>&1 &
    GW_PID=$!
    wait_http "http://127.0.0.1:$GW_PORT/healthz" gateway "$TMP/gateway-sends.log"
    python3 tests/bench/setup_tenants.py "$GW_PORT" bench-token 10 100 1000 >"$TMP/channels.txt"
    evalsha() { redis-cli -p 6390 INFO commandstats | awk -F'[=,:]' '/^cmdstat_(evalsha|eval):/ { n += $3 } END { print n + 0 }'; }
    sleep 11
    rows_snap "$TMP/rows0"
    R0=$(evalsha)
    # ANALYZE during bench_live's second of warm-up: the database is new, and the prepared statements' generic plans,
    # made on empty tables, are only remade once statistics exist (autovacuum's ANALYZE comes after a minute or
    # more). Planned on tables believed empty, the claim probed messages through the idempotency index by tenant
    # alone, filtering thousands of rows a message (auto_explain), and some runs collapsed to a third. A gateway
    # that has run for minutes has its statistics: this measures that one.
    ( sleep 0.7; psql -X -q "$DB" -c ANALYZE ) &
    ANALYZE_PID=$!
    cpu_snap "$TMP/cpu0"; t0=$(child_ticks $$)
    PERF_PID=
    if [ -n "${PERF_SENDS_OUT:-}" ]; then # where the gateway's CPU goes while it sends: perf report -i FILE
        perf record -q -F 999 -g -p "$GW_PID" -o "$PERF_SENDS_OUT" -- sleep "$LIVE_SECONDS" >/dev/null 2>&1 &
        PERF_PID=$!
    fi
    build/release/bench/bench_live "$GW_PORT" "$TMP/channels.txt" 0 "$SEND_RATE" "$LIVE_SECONDS" "$MOCK_PORT"
    cpu_snap "$TMP/cpu1"; t1=$(child_ticks $$)
    [ -n "$PERF_PID" ] && wait "$PERF_PID" 2>/dev/null
    wait "$ANALYZE_PID"
    R1=$(evalsha)
    SENT=$(curl -sf "http://127.0.0.1:$MOCK_PORT/_mock/stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["total"])')
    cpu_per "send that reached the provider (warm-up included)" "$SENT" "$TMP/cpu0" "$TMP/cpu1" bench_live $((t1 - t0))
    sleep 11
    rows_snap "$TMP/rows1"
    rows_per "send (accepted, claimed, its outcome stored; warm-up and the receipts of no webhook included)" "$SENT" \
        "$TMP/rows0" "$TMP/rows1"
    awk -v r=$((R1 - R0)) -v s="$SENT" 'BEGIN { if (s > 0) printf "  Redis round trips per send (EVALSHA acquire + release, all shards): %.2f\n", r / s }'
    kill -TERM "$MOCK_PID" 2>/dev/null || true
fi

# --- 5b. broadcasts: one request of 100,000 recipients, then 100,000 sends over 1,000 channels ----------------------
#
# tests/bench/bench_broadcast.py on a fresh gateway (default shards) pointed at its own mock provider: the accept time
# of a BROADCAST_RECIPIENTS (100,000) recipient POST /v1/broadcasts (the target: <= 3 s), the outbox rows/s of its
# expansion, the time its DELETE takes; then as many recipients as one broadcast per channel over
# BROADCAST_CHANNELS (1,000) channels of BROADCAST_TENANTS (100) tenants, end to end to the mock: sends/s and CPU per
# send of the gateway, PostgreSQL (the bench database's backends), Redis and the mock.

if want broadcast; then
    BMOCK_PORT=$(free_port)
    build/release/mock-provider --listen "127.0.0.1:$BMOCK_PORT" --max-records 1000000 >"$TMP/bmock.log" 2>&1 &
    MOCK_PID=$!
    wait_http "http://127.0.0.1:$BMOCK_PORT/_mock/stats" mock-provider "$TMP/bmock.log"
    kill -TERM "$GW_PID" 2>/dev/null || true
    wait "$GW_PID" 2>/dev/null || true
    sed -i '/^twilio_api_base = /d; /^shards = /d' "$TMP/switchboard.conf"
    echo "twilio_api_base = http://127.0.0.1:$BMOCK_PORT" >>"$TMP/switchboard.conf"
    env "${unset_sb[@]}" "$GATEWAY" -c "$TMP/switchboard.conf" >"$TMP/gateway-broadcast.log" 2>&1 &
    GW_PID=$!
    wait_http "http://127.0.0.1:$GW_PORT/healthz" gateway "$TMP/gateway-broadcast.log"
    python3 tests/bench/bench_broadcast.py "$GW_PORT" bench-token "$BMOCK_PORT" "$GW_PID" "$MOCK_PID" switchboard_bench \
        "${BROADCAST_RECIPIENTS:-100000}" "${BROADCAST_CHANNELS:-1000}" "${BROADCAST_TENANTS:-100}"
    grep -E 'broadcast [0-9]+: ' "$TMP/gateway-broadcast.log" | head -n 2 | sed 's/^/  gateway: /' || true
    kill -TERM "$MOCK_PID" 2>/dev/null || true
    wait "$MOCK_PID" 2>/dev/null || true
    MOCK_PID=
fi

# --- 6. voice: Media Streams relayed between Twilio (the mock's simulated calls) and a voice app (its echo app) ---------
# The reference, in the same round: the same calls streaming straight to the echo app (the mock's direct_stream_url),
# no gateway in between: the mock's own delay and CPU. Then the same calls through the gateway: admitted by the voice
# webhook (call actor, one Redis script), answered <Connect><Stream>, relayed both ways. Every round starts a fresh
# gateway (RSS per call from a clean start). Figures over a steady window, once every call streams and before the first
# ends. The gateway and the mock are measured by PID; PostgreSQL and Redis by process name, and they are shared with
# whatever else runs on the machine: what they spent over the reference's window of the same length, when the gateway
# was idle, is that background, subtracted. Redis round trips are EVALSHA and EVAL calls in INFO commandstats (also
# server-wide; the same background subtracted).

if want voice; then
    VOICE_CALLS=${VOICE_CALLS:-1000}
    VOICE_SECONDS=${VOICE_SECONDS:-20}
    VOICE_SPREAD_MS=${VOICE_SPREAD_MS:-4000}
    VOICE_ROUNDS=${VOICE_ROUNDS:-$ROUNDS}
    # Not db 1, the one integration tests use: 1,000 live leases in its fleet set would refuse the calls of a test
    # running meanwhile (a gateway's default max_concurrent_calls is 1000). Nothing is flushed: leases are released
    # as calls end, and expire anyway.
    VOICE_REDIS_DB=${VOICE_REDIS_DB:-3}
    VFRAMES=$((VOICE_SECONDS * 50))
    # the steady window: from 1.5 s after the last call was placed, 10 s or until 2.5 s before the first ends
    VWIN_AT=$(awk -v s="$VOICE_SPREAD_MS" 'BEGIN { printf "%.1f", s / 1000 + 1.5 }')
    VWIN=$(awk -v a="$VWIN_AT" -v d="$VOICE_SECONDS" 'BEGIN { w = d - 2.5 - a; if (w > 10) w = 10; printf "%.1f", w }')
    echo "== Voice: $VOICE_CALLS concurrent calls of ${VOICE_SECONDS}s (50 frames/s each way), placed over ${VOICE_SPREAD_MS} ms, relayed"
    echo "   by a gateway (default shards) between the mock's calls and its echo app; reference: the same calls straight to"
    echo "   the echo app. Steady window ${VWIN}s from ${VWIN_AT}s; $VOICE_ROUNDS rounds, medians"
    if awk -v w="$VWIN" 'BEGIN { exit !(w < 2) }'; then
        echo "  skipped: VOICE_SECONDS=$VOICE_SECONDS leaves no steady window after a spread of $VOICE_SPREAD_MS ms"
    else
        VMOCK_PORT=$(free_port)
        build/release/mock-provider --listen "127.0.0.1:$VMOCK_PORT" >"$TMP/voice-mock.log" 2>&1 &
        VMOCK_PID=$!
        wait_http "http://127.0.0.1:$VMOCK_PORT/_mock/stats" mock-provider "$TMP/voice-mock.log"
        VGW_PORT=$(free_port)
        VADMIN_PORT=$(free_port)
        cat >"$TMP/voice.conf" <<EOF
# written by tests/bench/run.sh: the voice section's gateway
mode = dev
listen = 127.0.0.1:$VGW_PORT
admin_listen = 127.0.0.1:$VADMIN_PORT
admin_token = bench-token
redis_url = redis://127.0.0.1:6390/$VOICE_REDIS_DB
database_url = $DB
log_level = warn
master_key = 00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff
public_url = http://127.0.0.1:$VGW_PORT
twilio_api_base = http://127.0.0.1:$VMOCK_PORT
max_concurrent_calls = 10000000
EOF
        voice_gw_start() {
            env "${unset_sb[@]}" "$GATEWAY" -c "$TMP/voice.conf" >>"$TMP/voice-gateway.log" 2>&1 &
            VGW_PID=$!
            wait_http "http://127.0.0.1:$VGW_PORT/healthz" gateway "$TMP/voice-gateway.log"
        }
        voice_gw_stop() {
            kill -TERM "$VGW_PID" 2>/dev/null || true
            wait "$VGW_PID" 2>/dev/null || true
            VGW_PID=
        }
        voice_gw_start
        VACCOUNT="AC$(printf '7%.0s' $(seq 32))"
        VTOKEN=$(python3 -c 'import uuid; print(uuid.uuid4().hex)')
        VNUMBER="+1888$(python3 -c 'import random; print("%07d" % random.randrange(10**7))')"
        ADMIN=(-sf -H "Authorization: Bearer bench-token" -H "Content-Type: application/json")
        VAPP="ws://127.0.0.1:$VMOCK_PORT/_mock/voice-app"
        VTID=$(curl "${ADMIN[@]}" -d '{"name":"bench voice"}' "http://127.0.0.1:$VGW_PORT/v1/admin/tenants" |
            python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
        VCID=$(curl "${ADMIN[@]}" -d "{\"type\":\"twilio_voice\",\"address\":\"$VNUMBER\",\"credentials\":{\"account_sid\":\"$VACCOUNT\",\"auth_token\":\"$VTOKEN\"},\"settings\":{\"voice_mode\":\"stream\",\"media_url\":\"$VAPP\"}}" \
            "http://127.0.0.1:$VGW_PORT/v1/admin/tenants/$VTID/channels" |
            python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
        VHOOK="http://127.0.0.1:$VGW_PORT/webhooks/twilio/$VCID/voice"

        now_s() { date +%s.%N; }
        sleep_until() { # sleep_until T0 SECONDS — until SECONDS after T0
            local d
            d=$(awk -v t0="$1" -v x="$2" -v n="$(now_s)" 'BEGIN { d = t0 + x - n; printf "%.3f", (d > 0 ? d : 0) }')
            sleep "$d"
        }
        pid_ticks() { awk '{ sub(/^.*\) /, ""); split($0, f, " "); print f[12] + f[13] }' "/proc/$1/stat"; }
        pid_rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
        name_ticks() { # name_ticks NAME — CPU of every process so named (for postgres also its reaped children)
            { cat /proc/[0-9]*/stat 2>/dev/null || true; } | awk -v want="$1" '{
                name = $0; sub(/^[0-9]+ \(/, "", name); sub(/\) .*$/, "", name)
                if (name != want) next
                rest = $0; sub(/^.*\) /, "", rest); split(rest, f, " ")
                t += f[12] + f[13]; if (name == "postgres") t += f[14] + f[15] }
                END { print t + 0 }'
        }
        evals() { redis-cli -p 6390 INFO commandstats | awk -F'[=,:]' '/^cmdstat_(evalsha|eval):/ { n += $3 } END { print n + 0 }'; }
        gw_metric() { curl -sf "http://127.0.0.1:$VGW_PORT/metrics" | awk -v m="$1" '$1 == m || index($1, m "{") == 1 { n += $2 } END { print n + 0 }'; }
        # snap FILE — one line: time, gateway ticks, mock ticks, postgres ticks, redis ticks, evals, relayed frames,
        # gateway RSS kB, calls admitted
        snap() {
            local g=0 f=0 r=0 a=0
            if [ -n "$VGW_PID" ]; then
                g=$(pid_ticks "$VGW_PID"); f=$(gw_metric sb_media_frames_total); r=$(pid_rss_kb "$VGW_PID")
                a=$(gw_metric sb_calls_admitted_total)
            fi
            echo "$(now_s) $g $(pid_ticks "$VMOCK_PID") $(name_ticks postgres) $(name_ticks redis-server) $(evals) $f $r $a" >"$1"
        }
        # voice_round MODE (direct | relay) N OUT — one run of N calls; writes OUT: "key value" lines
        voice_round() {
            local mode=$1 n=$2 out=$3 body t0 t1 admitted=0 _
            curl -sf -X POST "http://127.0.0.1:$VMOCK_PORT/_mock/reset" >/dev/null
            if [ "$mode" = direct ]; then
                body="{\"direct_stream_url\":\"$VAPP\",\"auth_token\":\"$VTOKEN\""
            else
                body="{\"webhook\":\"$VHOOK\",\"auth_token\":\"$VTOKEN\",\"account_sid\":\"$VACCOUNT\",\"to\":\"$VNUMBER\""
            fi
            body="$body,\"count\":$n,\"frames\":$VFRAMES,\"spread_ms\":$VOICE_SPREAD_MS}"
            snap "$TMP/v0"
            local a0=0
            [ "$mode" = relay ] && a0=$(gw_metric sb_calls_admitted_total)
            t0=$(awk '{ print $1 }' "$TMP/v0")
            curl -sf -X POST -H "Content-Type: application/json" -d "$body" "http://127.0.0.1:$VMOCK_PORT/_mock/calls" >/dev/null ||
                { echo "  note: the mock refused the calls" >&2; return 1; }
            # Admissions alone: until every call is admitted, or 4.5 s after the first was (its lease is renewed
            # every call_lease_ttl / 3 = 5 s: the renewals must not be counted as admissions), or the window starts.
            local tfirst=
            if [ "$mode" = relay ]; then
                while awk -v t0="$t0" -v w="$VWIN_AT" -v n="$(now_s)" 'BEGIN { exit !(n < t0 + w) }'; do
                    admitted=$(($(gw_metric sb_calls_admitted_total) - a0))
                    [ "$admitted" -ge "$n" ] && break
                    [ "$admitted" -gt 0 ] && [ -z "$tfirst" ] && tfirst=$(now_s)
                    [ -n "$tfirst" ] && awk -v t="$tfirst" -v n="$(now_s)" 'BEGIN { exit !(n > t + 4.5) }' && break
                    sleep 0.1
                done
            fi
            snap "$TMP/v1"
            [ "$mode" = relay ] && admitted=$(($(gw_metric sb_calls_admitted_total) - a0))
            sleep_until "$t0" "$VWIN_AT"
            local streams_a=0 streams_b=0
            [ "$mode" = relay ] && streams_a=$(gw_metric sb_media_streams)
            snap "$TMP/v2"
            PERF_PID=
            if [ "$mode" = relay ] && [ -n "${VOICE_PERF:-}" ]; then
                perf record -q -F 999 -g -p "$VGW_PID" -o "$VOICE_PERF" -- sleep "$VWIN" >/dev/null 2>&1 &
                PERF_PID=$!
            fi
            sleep "$VWIN"
            snap "$TMP/v3"
            [ "$mode" = relay ] && streams_b=$(gw_metric sb_media_streams)
            [ -n "$PERF_PID" ] && wait "$PERF_PID" 2>/dev/null
            # until every call has ended, then the gateway's last releases
            local live=1
            for _ in $(seq $((VOICE_SECONDS + VOICE_SPREAD_MS / 1000 + 30))); do
                sleep 1
                live=$(curl -sf "http://127.0.0.1:$VMOCK_PORT/_mock/calls?summary=1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["live"])')
                [ "$live" = 0 ] && break
            done
            [ "$live" = 0 ] || echo "  note: $live calls still live $((VOICE_SECONDS + VOICE_SPREAD_MS / 1000 + 30)) s after the last was placed" >&2
            if [ "$mode" = relay ]; then
                for _ in $(seq 50); do [ "$(gw_metric sb_media_streams)" = 0 ] && break; sleep 0.1; done
                sleep 1
            fi
            snap "$TMP/v4"
            curl -sf "http://127.0.0.1:$VMOCK_PORT/_mock/calls?summary=1" >"$TMP/vsum.json"
            python3 - "$TMP/vsum.json" "$n" "$streams_a" "$streams_b" "$admitted" "$TMP/v0" "$TMP/v1" "$TMP/v2" "$TMP/v3" "$TMP/v4" >"$out" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
n, sa, sb, adm = (int(x) for x in sys.argv[2:6])
v = [[float(x) for x in open(f).read().split()] for f in sys.argv[6:11]]
print("calls", n)
print("completed", s["status"]["completed"])
print("not_completed", ",".join("%s:%d" % (k, v) for k, v in sorted(s["status"].items()) if k != "completed" and v) or "-")
print("streams", s["streams"])
print("in_order_streams", s["in_order_streams"])
for k in ("frames_sent", "frames_received", "lost", "late", "out_of_order", "duplicates", "foreign", "dropped", "parse_errors"):
    print(k, s[k])
print("p50", s["delay_us"]["p50"] or 0)
print("p99", s["delay_us"]["p99"] or 0)
print("max", s["delay_us"]["max"] or 0)
print("streams_at_window", min(sa, sb))
print("admitted", adm)
for i, name in enumerate(("t", "gw", "mock", "pg", "redis", "evals", "frames", "rss", "adm")):
    for j, f in enumerate(v):
        print("%s%d" % (name, j), f[i])
PY
        }

        # voice_figures DIRECT RELAY — per-round figures (one line of "key=value"), the reference from the same round
        voice_figures() {
            awk -v tck="$(getconf CLK_TCK)" -v hz=50 '
                FNR == 1 { f++ }
                { x[f, $1] = $2 }
                END {
                    W = x[2, "t3"] - x[2, "t2"]; Wd = x[1, "t3"] - x[1, "t2"]
                    fr = x[2, "frames3"] - x[2, "frames2"]                     # relayed frames in the window
                    frd = 2 * x[1, "calls"] * hz * Wd                          # the reference: every call streaming
                    us = 1e6 / tck
                    if (fr <= 0) fr = 1
                    gw = (x[2, "gw3"] - x[2, "gw2"]) * us / fr
                    mk = (x[2, "mock3"] - x[2, "mock2"]) * us / fr
                    mkd = (x[1, "mock3"] - x[1, "mock2"]) * us / frd
                    bpg = (x[1, "pg3"] - x[1, "pg2"]) / Wd; bre = (x[1, "redis3"] - x[1, "redis2"]) / Wd   # background /s
                    pg = ((x[2, "pg3"] - x[2, "pg2"]) - bpg * W) * us / fr
                    re = ((x[2, "redis3"] - x[2, "redis2"]) - bre * W) * us / fr
                    bev = (x[1, "evals4"] - x[1, "evals0"]) / (x[1, "t4"] - x[1, "t0"])   # background EVALs/s
                    n = x[2, "admitted"]
                    # (not minus that background: others use Redis in bursts, and a rate from another window would
                    # add its noise both ways; theirs only adds, so the smallest of the rounds is the tightest figure)
                    adm = n > 0 ? (x[2, "evals1"] - x[2, "evals0"]) / n : -1
                    live = x[2, "adm2"] - x[2, "adm0"]                         # leases held through the window
                    ren = live > 0 ? (x[2, "evals3"] - x[2, "evals2"]) / (live * W / 60) : -1
                    life = (x[2, "evals4"] - x[2, "evals0"]) / x[2, "calls"]
                    rss = (x[2, "rss2"] - x[2, "rss0"]) / x[2, "calls"]
                    printf "fps=%.0f gw=%.2f mock=%.2f mockref=%.2f pg=%.2f redis=%.2f gwcores=%.2f mockcores=%.2f", fr / W, gw, mk, mkd, pg, re, (x[2, "gw3"] - x[2, "gw2"]) / tck / W, (x[2, "mock3"] - x[2, "mock2"]) / tck / W
                    printf " p50=%d p99=%d refp50=%d refp99=%d", x[2, "p50"], x[2, "p99"], x[1, "p50"], x[1, "p99"]
                    printf " lost=%d late=%d ooo=%d dup=%d dropped=%d reflost=%d completed=%d streams=%d atwin=%d", x[2, "lost"], x[2, "late"], x[2, "out_of_order"], x[2, "duplicates"], x[2, "dropped"], x[1, "lost"] + x[1, "late"] + x[1, "out_of_order"], x[2, "completed"], x[2, "streams"], x[2, "streams_at_window"]
                    printf " rss0=%d rss=%.1f adm=%.2f nadm=%d ren=%.2f life=%.2f bev=%.1f admit_s=%.1f", x[2, "rss0"], rss, adm, n, ren, life, bev, x[2, "t1"] - x[2, "t0"]
                    printf " notdone=%s refnotdone=%s refcompleted=%d", x[2, "not_completed"], x[1, "not_completed"], x[1, "completed"]
                    printf " pgc=%.3f bpgc=%.3f rec=%.3f brec=%.3f\n", (x[2, "pg3"] - x[2, "pg2"]) / tck / W, bpg / tck, (x[2, "redis3"] - x[2, "redis2"]) / tck / W, bre / tck
                }' "$1" "$2"
        }
        kv() { tr ' ' '\n' <<<"$1" | awk -F= -v k="$2" '$1 == k { print $2 }'; }

        # voice_try N ROUNDS — ROUNDS rounds of N calls (each: fresh gateway, reference, relay); prints each round's
        # line and leaves their figures in VLINES
        voice_try() {
            local n=$1 rounds=$2 round line
            VLINES=()
            for round in $(seq "$rounds"); do
                voice_gw_stop
                voice_gw_start
                sleep 1
                voice_round direct "$n" "$TMP/vdirect" || return 1
                voice_round relay "$n" "$TMP/vrelay" || return 1
                line=$(voice_figures "$TMP/vdirect" "$TMP/vrelay")
                VLINES+=("$line")
                awk -v n="$n" -v r="$round" -v l="$line" 'BEGIN {
                    split(l, kv, " "); for (i in kv) { split(kv[i], p, "="); x[p[1]] = p[2] }
                    printf "  %d calls, round %d: %s frames/s relayed; CPU per relayed frame, in us: gateway %.2f, mock %.2f (reference %.2f); echo p50/p99 %.2f/%.2f ms (reference %.2f/%.2f); lost %d, out of order %d, dropped %d\n",
                        n, r, x["fps"], x["gw"], x["mock"], x["mockref"], x["p50"] / 1000, x["p99"] / 1000, x["refp50"] / 1000, x["refp99"] / 1000, x["lost"] + x["late"], x["ooo"] + x["dup"], x["dropped"]
                    if (x["atwin"] < n || x["completed"] < n || x["streams"] < n || x["refcompleted"] < n)
                        printf "    of %d calls: %d streaming through the window, %d streamed, %d completed (others: %s); reference: %d completed (others: %s)\n",
                            n, x["atwin"], x["streams"], x["completed"], x["notdone"], x["refcompleted"], x["refnotdone"] }'
            done
        }
        voice_held() { # every round of VLINES: every call admitted, streamed and completed, nothing lost, late or out of order
            local l
            for l in "${VLINES[@]}"; do
                [ "$(kv "$l" lost)$(kv "$l" late)$(kv "$l" ooo)$(kv "$l" dup)$(kv "$l" dropped)" = 00000 ] || return 1
                [ "$(kv "$l" completed)" = "$1" ] && [ "$(kv "$l" streams)" = "$1" ] || return 1
            done
        }
        vmed() { local k=$1 l v=(); for l in "${VLINES[@]}"; do v+=("$(kv "$l" "$k")"); done; median "${v[@]}"; }
        voice_report() { # voice_report N
            local n=$1
            local gw mk mkd pg re p50 p99 r50 r99 fps
            gw=$(vmed gw); mk=$(vmed mock); mkd=$(vmed mockref); pg=$(vmed pg); re=$(vmed redis); fps=$(vmed fps)
            p50=$(vmed p50); p99=$(vmed p99); r50=$(vmed refp50); r99=$(vmed refp99)
            printf '  medians of %d rounds, %d calls (%s frames/s relayed, both ways):\n' "${#VLINES[@]}" "$n" "$fps"
            awk -v gw="$gw" -v mk="$mk" -v mkd="$mkd" -v pg="$pg" -v re="$re" -v gc="$(vmed gwcores)" -v mc="$(vmed mockcores)" \
                -v pgc="$(vmed pgc)" -v bpgc="$(vmed bpgc)" -v rec="$(vmed rec)" -v brec="$(vmed brec)" 'BEGIN {
                printf "    CPU per relayed frame, in us: gateway %.2f (%.2f cores), mock %.2f (%.2f cores; the reference, no gateway: %.2f),\n", gw, gc, mk, mc, mkd
                printf "      PostgreSQL %.2f, Redis %.2f beyond their background (cores in the window: PostgreSQL %.3f, background %.3f;\n", pg, re, pgc, bpgc
                printf "      Redis %.3f, background %.3f); gateway + PostgreSQL + Redis %.2f\n", rec, brec, gw + pg + re }'
            awk -v a="$p50" -v b="$p99" -v c="$r50" -v d="$r99" 'BEGIN {
                printf "    echo delay p50/p99: %.2f/%.2f ms through the gateway, %.2f/%.2f ms reference: added %.2f/%.2f ms a round trip,\n", a / 1000, b / 1000, c / 1000, d / 1000, (a - c) / 1000, (b - d) / 1000
                printf "      %.2f/%.2f ms a hop (the relay is in the path twice a round trip; p99s subtracted, not a p99 of differences)\n", (a - c) / 2000, (b - d) / 2000 }'
            printf '    lost %s, late %s, out of order %s, duplicates %s, dropped %s (the worst round); reference lost/out of order %s\n' \
                "$(vmax lost)" "$(vmax late)" "$(vmax ooo)" "$(vmax dup)" "$(vmax dropped)" "$(vmax reflost)"
            awk -v r0="$(vmed rss0)" -v r="$(vmed rss)" 'BEGIN { printf "    gateway RSS: %.1f MB before the calls, +%.1f kB a call at steady state\n", r0 / 1024, r }'
            awk -v a="$(vmed adm)" -v r="$(vmed ren)" -v l="$(vmed life)" -v b="$(vmed bev)" -v s="$(vmed admit_s)" -v na="$(vmed nadm)" \
                -v am="$(vmin adm)" -v rm="$(vmin ren)" -v lm="$(vmin life)" 'BEGIN {
                printf "    Redis round trips (EVALSHA/EVAL; median, smallest round): %.2f, %.2f an admission (over the first %d admitted, %.1f s);\n", a, am, na, s
                printf "      %.1f, %.1f renewals a call-minute; %.2f, %.2f over a call'"'"'s life (admission, renewals, release). INFO commandstats\n", r, rm, l, lm
                printf "      is server-wide: others'"'"' EVALs add to these (%.1f/s over the reference rounds, the gateway idle)\n", b }'
        }
        vmin() { local k=$1 l v=(); for l in "${VLINES[@]}"; do v+=("$(kv "$l" "$k")"); done; printf '%s\n' "${v[@]}" | sort -g | head -1; }
        vmax() { local k=$1 l m=0 x; for l in "${VLINES[@]}"; do x=$(kv "$l" "$k"); [ "${x:-0}" -gt "$m" ] && m=$x; done; echo "$m"; }

        voice_summary() { # voice_summary TEXT — the closing note's line, from VLINES
            echo "  summary: $1; gateway $(vmed gw) us CPU a relayed frame ($(vmed fps) frames/s), $(awk -v a="$(vmed p50)" \
                -v c="$(vmed refp50)" -v b="$(vmed p99)" -v d="$(vmed refp99)" 'BEGIN { printf "+%.2f/+%.2f", (a - c) / 1000, (b - d) / 1000 }') ms" \
                "p50/p99 a round trip, $(awk -v r="$(vmed rss)" 'BEGIN { printf "%.0f", r }') kB RSS a call, $(vmed adm) Redis round trips an admission"
        }
        VHELD=0
        if voice_try "$VOICE_CALLS" "$VOICE_ROUNDS" && voice_held "$VOICE_CALLS"; then
            voice_report "$VOICE_CALLS"
            VSUMLINE=$(voice_summary "$VOICE_CALLS concurrent calls held (no loss)")
            VHELD=$VOICE_CALLS
        else
            [ "${#VLINES[@]}" -gt 0 ] && voice_report "$VOICE_CALLS"
            echo "  $VOICE_CALLS calls did NOT hold (lost, late, out of order, dropped or not completed: above); the largest count that does, one round each:"
            lo=0
            hi=$VOICE_CALLS
            step=$((VOICE_CALLS / 20 > 25 ? VOICE_CALLS / 20 : 25))
            while [ $((hi - lo)) -gt "$step" ]; do
                mid=$(((lo + hi) / 2 / 25 * 25))
                [ "$mid" -le "$lo" ] && break
                if voice_try "$mid" 1 && voice_held "$mid"; then lo=$mid; else hi=$mid; fi
            done
            VHELD=$lo
            if [ "$lo" -gt 0 ] && voice_try "$lo" "$VOICE_ROUNDS" && voice_held "$lo"; then
                voice_report "$lo"
                VSUMLINE=$(voice_summary "$VOICE_CALLS concurrent calls did not hold, $lo did")
            else
                VSUMLINE="  summary: $VOICE_CALLS concurrent calls did not hold, nor did any count tried below it"
            fi
        fi
        # At light load, with CPU to spare on both sides: the relay's own delay (at 1,000 calls the two cores are busy,
        # and the delays there are mostly the wait for one).
        VOICE_LIGHT_CALLS=${VOICE_LIGHT_CALLS:-100}
        if [ "$VOICE_LIGHT_CALLS" -gt 0 ] && [ "$VOICE_LIGHT_CALLS" -lt "$VHELD" ]; then
            echo "  at light load, $VOICE_LIGHT_CALLS calls:"
            if voice_try "$VOICE_LIGHT_CALLS" "$VOICE_ROUNDS"; then
                voice_report "$VOICE_LIGHT_CALLS"
                VSUMLINE="$VSUMLINE; at $VOICE_LIGHT_CALLS calls $(awk -v a="$(vmed p50)" -v c="$(vmed refp50)" -v b="$(vmed p99)" \
                    -v d="$(vmed refp99)" 'BEGIN { printf "+%.2f/+%.2f", (a - c) / 1000, (b - d) / 1000 }') ms"
            fi
        fi
        echo "$VSUMLINE"
        if [ -n "${VOICE_PERF_OUT:-}" ] && [ "$VHELD" -gt 0 ]; then # one more round under perf, its figures not counted
            VOICE_PERF=$VOICE_PERF_OUT voice_try "$VHELD" 1 >/dev/null
            echo "  perf of the gateway over one more round's steady window ($VHELD calls): perf report -i $VOICE_PERF_OUT --no-children"
        fi
        voice_gw_stop
        kill -TERM "$VMOCK_PID" 2>/dev/null || true
        wait "$VMOCK_PID" 2>/dev/null || true
        VMOCK_PID=
    fi
fi

# Let the gateway apply what it acknowledged before it stops, so it stops with no backlog (the next run starts on a fresh database anyway).
for _ in $(seq 600); do
    [ "$(receipts_pending)" = 0 ] && break
    sleep 0.1
done

# --- 7. several nodes: 1, 2, 3 gateways with cluster = on; a webhook routed to its tenant's node vs one taken there ---
# tests/bench/bench_cluster.py starts and stops its own nodes on switchboard_bench. This run's gateway stops first: a
# node with cluster = off owns every slot, and its sweeper would apply the nodes' receipts.

if want cluster; then
    kill -TERM "$GW_PID" 2>/dev/null || true
    wait "$GW_PID" 2>/dev/null || true
    GW_PID=
    python3 tests/bench/bench_cluster.py "$GATEWAY" switchboard_bench
fi
