#!/usr/bin/env bash
# ops/redis_cluster.sh — a private three-master Redis Cluster for the tests of the Redis adapter's cluster mode
# (tests/unit/test_redis_cluster.c), beside the local stack's single Redis (ops/stack.sh), never instead of it.
#
#   ops/redis_cluster.sh up       start the three nodes (and on first use create the cluster); wait for cluster_state:ok
#   ops/redis_cluster.sh down     stop them (fine when already stopped)
#   ops/redis_cluster.sh status   say what runs; exit 0 only if all three answer and the cluster is ok
#
#   nodes   127.0.0.1:7101 7102 7103 (SB_RCLUSTER_PORTS="a b c" overrides), no replicas, no persistence
#   files   var/rcluster/<port>/{redis.conf,redis.pid,redis.log,nodes.conf}
#
# A node that is down is started again with its nodes.conf and rejoins: the tests kill a master and bring it back
# with `up`. The cluster is created (redis-cli --cluster create) only when no node knows any slot yet; if the nodes
# disagree with their files (a half-created cluster), `down` and `rm -rf var/rcluster` start over. A short
# cluster-node-timeout (2 s) lets a killed master be noticed, and forgiven, quickly.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
DIR=$ROOT/var/rcluster
read -r -a PORTS <<<"${SB_RCLUSTER_PORTS:-7101 7102 7103}"

say() { echo "redis_cluster.sh: $*"; }
die() { echo "redis_cluster.sh: $*" >&2; exit 1; }

[ ${#PORTS[@]} -eq 3 ] || die "SB_RCLUSTER_PORTS must name three ports (got '${SB_RCLUSTER_PORTS:-}')"
command -v redis-server >/dev/null || die "no redis-server (run ops/deps.sh)"
command -v redis-cli >/dev/null || die "no redis-cli (it comes with redis-server's package; run ops/deps.sh)"

cli() { local p=$1; shift; redis-cli -h 127.0.0.1 -p "$p" "$@" 2>/dev/null; }
ping() { cli "$1" ping | grep -qx PONG; }

node_pid() {
    local pid
    pid=$(cat "$DIR/$1/redis.pid" 2>/dev/null) || return 1
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

cluster_ok() { cli "$1" cluster info | tr -d '\r' | grep -qx 'cluster_state:ok'; }
# Slots this node knows to be assigned (0 before the cluster is created).
slots_assigned() { cli "$1" cluster info | tr -d '\r' | sed -n 's/^cluster_slots_assigned://p'; }

node_up() {
    local p=$1 d=$DIR/$1 _
    ping "$p" && return 0
    mkdir -p "$d"
    cat >"$d/redis.conf" <<EOF
# written by ops/redis_cluster.sh; rewritten on every start
bind 127.0.0.1
port $p
daemonize yes
pidfile "$d/redis.pid"
logfile "$d/redis.log"
dir "$d"
save ""
appendonly no
cluster-enabled yes
cluster-config-file "$d/nodes.conf"
cluster-node-timeout 2000
EOF
    redis-server "$d/redis.conf" || die "redis-server failed to start on $p; see $d/redis.log"
    for _ in $(seq 100); do
        ping "$p" && { say "node up on 127.0.0.1:$p"; return 0; }
        sleep 0.1
    done
    tail -n 20 "$d/redis.log" >&2 || true
    die "the node on $p did not answer PING within 10 s"
}

node_down() {
    local p=$1 pid _
    pid=$(node_pid "$p") || pid=
    if ! ping "$p" && [ -z "$pid" ]; then
        return 0
    fi
    cli "$p" shutdown nosave >/dev/null || true
    for _ in $(seq 100); do
        if ! ping "$p" && ! node_pid "$p" >/dev/null; then
            say "node $p stopped"
            return 0
        fi
        sleep 0.1
    done
    pid=$(node_pid "$p") || pid=
    [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null || true
    say "node $p killed"
}

up() {
    local p _ created=0
    for p in "${PORTS[@]}"; do node_up "$p"; done
    for p in "${PORTS[@]}"; do
        [ "$(slots_assigned "$p")" != 0 ] && created=1
    done
    if [ "$created" = 0 ]; then
        local addrs=()
        for p in "${PORTS[@]}"; do addrs+=("127.0.0.1:$p"); done
        redis-cli --cluster create "${addrs[@]}" --cluster-replicas 0 --cluster-yes >"$DIR/create.log" 2>&1 ||
            { cat "$DIR/create.log" >&2; die "redis-cli --cluster create failed"; }
        say "cluster created: ${addrs[*]}"
    fi
    for _ in $(seq 300); do
        local all=1
        for p in "${PORTS[@]}"; do cluster_ok "$p" || all=0; done
        [ "$all" = 1 ] && { say "cluster_state:ok on ${PORTS[*]}"; return 0; }
        sleep 0.1
    done
    for p in "${PORTS[@]}"; do echo "$p: $(cli "$p" cluster info | tr -d '\r' | grep cluster_state)" >&2; done
    die "the cluster did not reach cluster_state:ok within 30 s"
}

down() {
    local p
    for p in "${PORTS[@]}"; do node_down "$p"; done
}

status() {
    local p rc=0 pid
    for p in "${PORTS[@]}"; do
        if ping "$p"; then
            pid=$(node_pid "$p") || pid="?"
            echo "node $p: up   pid $pid $(cli "$p" cluster info | tr -d '\r' | grep cluster_state)"
            cluster_ok "$p" || rc=1
        else
            echo "node $p: down"
            rc=1
        fi
    done
    return $rc
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    status) status ;;
    *) die "usage: ops/redis_cluster.sh up|down|status" ;;
esac
