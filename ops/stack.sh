#!/usr/bin/env bash
# ops/stack.sh — the private local stack for development, tests and benchmarks: one Redis and one
# PostgreSQL that live under ./var of this checkout, on non-default ports so they never clash
# with a system-wide instance.
#
#   ops/stack.sh up     [redis|pg]   start (and on first use create) them; wait until they answer
#   ops/stack.sh down   [redis|pg]   stop them (fine when already stopped)
#   ops/stack.sh status [redis|pg]   say what runs; exit 0 only if all asked for are up
#
#   Redis       127.0.0.1:6390   var/redis/{redis.conf,redis.pid,redis.log}, no persistence
#   PostgreSQL  127.0.0.1:5440   var/pg/data, socket in var/pg/run, log in var/pg/log
#               trust auth on the socket and 127.0.0.1; role `switchboard` (LOGIN SUPERUSER)
#               owns the databases `switchboard` and `switchboard_test`
#
# As root, PostgreSQL runs as the `postgres` user (it refuses to run as root): var/pg is chowned
# to it, and any directory above it that postgres cannot traverse gets o+x (said on stderr).
# The optional second argument acts on one service only; the integration tests use it to take
# Redis or PostgreSQL away from a running gateway and bring it back.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
VAR=$ROOT/var
REDIS_PORT=6390
PG_PORT=5440
REDIS_DIR=$VAR/redis
PG_DIR=$VAR/pg
PG_DATA=$PG_DIR/data
PG_RUN=$PG_DIR/run
PG_LOG=$PG_DIR/log/postgresql.log
PG_BOOTSTRAPPED=$PG_DIR/bootstrapped

say() { echo "stack.sh: $*"; }
die() { echo "stack.sh: $*" >&2; exit 1; }

# --- Redis ------------------------------------------------------------------------------------

redis_ping() { redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null | grep -qx PONG; }

redis_pid() {
    local pid
    pid=$(cat "$REDIS_DIR/redis.pid" 2>/dev/null) || return 1
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

redis_up() {
    redis_ping && return 0
    mkdir -p "$REDIS_DIR"
    cat >"$REDIS_DIR/redis.conf" <<EOF
# written by ops/stack.sh; rewritten on every start
bind 127.0.0.1
port $REDIS_PORT
daemonize yes
pidfile "$REDIS_DIR/redis.pid"
logfile "$REDIS_DIR/redis.log"
dir "$REDIS_DIR"
save ""
appendonly no
EOF
    redis-server "$REDIS_DIR/redis.conf" || die "redis-server failed to start; see $REDIS_DIR/redis.log"
    local _
    for _ in $(seq 100); do
        redis_ping && { say "redis up on 127.0.0.1:$REDIS_PORT"; return 0; }
        sleep 0.1
    done
    tail -n 20 "$REDIS_DIR/redis.log" >&2 || true
    die "redis did not answer PING within 10 s"
}

redis_down() {
    local pid _
    pid=$(redis_pid) || pid=
    if ! redis_ping && [ -z "$pid" ]; then
        return 0
    fi
    redis-cli -h 127.0.0.1 -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
    for _ in $(seq 100); do
        if ! redis_ping && ! redis_pid >/dev/null; then
            say "redis stopped"
            return 0
        fi
        sleep 0.1
    done
    pid=$(redis_pid) || pid=
    [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null || true
    say "redis killed"
}

redis_status() {
    if redis_ping; then
        local pid
        pid=$(redis_pid) || pid="?"
        echo "redis:    up   127.0.0.1:$REDIS_PORT pid $pid ($REDIS_DIR)"
        return 0
    fi
    echo "redis:    down"
    return 1
}

# --- PostgreSQL -------------------------------------------------------------------------------

pg_bin() {
    local d
    d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    [ -n "$d" ] && [ -x "$d/postgres" ] || die "no PostgreSQL server under /usr/lib/postgresql/*/bin (run ops/deps.sh)"
    echo "$d"
}

# Run a PostgreSQL server program as the user that owns the cluster, from a directory it can read.
as_pg() {
    if [ "$(id -u)" -eq 0 ]; then
        (cd "$PG_DIR" && runuser -u postgres -- "$@")
    else
        (cd "$PG_DIR" && "$@")
    fi
}

pg_ready() { pg_isready -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres >/dev/null 2>&1; }

pg_pid() {
    local pid
    pid=$(head -n 1 "$PG_DATA/postmaster.pid" 2>/dev/null) || return 1
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

# As root, make sure `postgres` can reach var/pg: give o+x to each directory above it that it
# cannot traverse (only the traverse bit, nothing becomes readable).
pg_fix_traversal() {
    runuser -u postgres -- test -x "$PG_DIR" 2>/dev/null && return 0
    local d=$PG_DIR
    local dirs=()
    while [ "$d" != "/" ]; do
        d=$(dirname "$d")
        dirs=("$d" "${dirs[@]}")
    done
    for d in "${dirs[@]}"; do
        if ! runuser -u postgres -- test -x "$d" 2>/dev/null; then
            echo "stack.sh: chmod o+x $d (so the postgres user can reach var/pg)" >&2
            chmod o+x "$d"
        fi
    done
    runuser -u postgres -- test -x "$PG_DIR" || die "the postgres user cannot reach $PG_DIR"
}

pg_bootstrap() {
    psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres >/dev/null <<'SQL'
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'switchboard') THEN
        CREATE ROLE switchboard LOGIN SUPERUSER;
    END IF;
END
$$;
SELECT format('CREATE DATABASE %I OWNER switchboard', d)
  FROM unnest(ARRAY['switchboard', 'switchboard_test']) AS d
 WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = d)
\gexec
SQL
    mkdir -p "$PG_DIR"
    : >"$PG_BOOTSTRAPPED"
    say "postgres: role switchboard, databases switchboard and switchboard_test ready"
}

pg_up() {
    if pg_ready; then
        [ -e "$PG_BOOTSTRAPPED" ] || pg_bootstrap
        return 0
    fi
    local bin
    bin=$(pg_bin)
    mkdir -p "$PG_DATA" "$PG_RUN" "$(dirname "$PG_LOG")"
    if [ "$(id -u)" -eq 0 ]; then
        chown -R postgres:postgres "$PG_DIR"
        pg_fix_traversal
    fi
    chmod 700 "$PG_DATA"
    if [ ! -s "$PG_DATA/PG_VERSION" ]; then
        say "postgres: initdb $PG_DATA"
        rm -f "$PG_BOOTSTRAPPED"
        as_pg "$bin/initdb" -D "$PG_DATA" -U postgres -E UTF8 --no-locale \
            --auth-local=trust --auth-host=trust >"$PG_DIR/log/initdb.log" 2>&1 ||
            { cat "$PG_DIR/log/initdb.log" >&2; die "initdb failed"; }
        echo "include_if_exists = 'switchboard.conf'" >>"$PG_DATA/postgresql.conf"
    fi
    # Our settings, rewritten on every start so edits here take effect. fsync stays on.
    cat >"$PG_DATA/switchboard.conf" <<EOF
# written by ops/stack.sh; rewritten on every start
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$PG_RUN'
fsync = on
# per-statement execution figures (SELECT * FROM pg_stat_statements, after CREATE EXTENSION pg_stat_statements):
# how the hot statements were measured and are tuned
shared_preload_libraries = 'pg_stat_statements'
# the default 128MB is smaller than the test database grows to after a few benchmark runs
shared_buffers = 512MB
EOF
    [ "$(id -u)" -eq 0 ] && chown postgres:postgres "$PG_DATA/switchboard.conf"
    if ! as_pg "$bin/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -w -t 60 start >/dev/null; then
        tail -n 20 "$PG_LOG" >&2 || true
        die "postgres failed to start; see $PG_LOG"
    fi
    local _
    for _ in $(seq 100); do
        pg_ready && break
        sleep 0.1
    done
    pg_ready || die "postgres did not become ready within 10 s; see $PG_LOG"
    say "postgres up on 127.0.0.1:$PG_PORT"
    [ -e "$PG_BOOTSTRAPPED" ] || pg_bootstrap
}

# Stop whatever PostgreSQL serves our port: normally var/pg/data, but if another checkout's stack
# holds the port, that one (asked for its data directory), so that the port is free afterwards.
pg_down() {
    local data=$PG_DATA
    if ! pg_pid >/dev/null; then
        pg_ready || return 0
        data=$(psql -X -At -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -c 'SHOW data_directory') ||
            die "cannot ask the PostgreSQL on port $PG_PORT for its data directory"
    fi
    if [ "$(id -u)" -eq 0 ]; then
        (cd / && runuser -u postgres -- "$(pg_bin)/pg_ctl" -D "$data" -m fast -w -t 60 stop >/dev/null)
    else
        "$(pg_bin)/pg_ctl" -D "$data" -m fast -w -t 60 stop >/dev/null
    fi || die "pg_ctl stop -D $data failed"
    say "postgres stopped"
}

pg_status() {
    if pg_ready; then
        local pid
        pid=$(pg_pid) || pid="?"
        echo "postgres: up   127.0.0.1:$PG_PORT pid $pid ($PG_DATA)"
        return 0
    fi
    echo "postgres: down"
    return 1
}

# --- main -------------------------------------------------------------------------------------

usage() { die "usage: ops/stack.sh up|down|status [redis|pg]"; }

[ $# -ge 1 ] && [ $# -le 2 ] || usage
action=$1
case "${2:-all}" in
    all) services=(redis pg) ;;
    redis) services=(redis) ;;
    pg | postgres | postgresql) services=(pg) ;;
    *) usage ;;
esac

case "$action" in
    up) for s in "${services[@]}"; do "${s}_up"; done ;;
    down) for s in "${services[@]}"; do "${s}_down"; done ;;
    status)
        rc=0
        for s in "${services[@]}"; do "${s}_status" || rc=1; done
        exit $rc
        ;;
    *) usage ;;
esac
