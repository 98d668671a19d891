#!/usr/bin/env bash
# tests/run.sh — the whole test suite, as `make test` runs it after building everything:
#
#   0. source shape    tests/layers.py: no include up the layers, no include cycle between modules
#   1. unit tests      build/release/tests/test_* and build/asan/tests/test_*   (TAP); test_redis_cluster needs the
#                      private three-master Redis Cluster: ops/redis_cluster.sh up before them, down when the run ends
#   2. fuzz corpora    build/fuzz/fuzz_X replays every file of tests/fuzz/corpus/fuzz_X/ once
#                      (one result per target; targets without a corpus dir are skipped)
#   3. integration     python3 tests/integration/test_*.py, once against build/release/switchboard
#                      and once against build/asan/switchboard (TAP; needs ops/stack.sh up)
#                      with the log audit on (SB_LOG_AUDIT_DIR, a fresh directory per variant): the
#                      gateways log at debug, the harness keeps every gateway's log and the strings the
#                      tests used there, and test_zz_log_audit.py, last of each pass, fails on any leak
#
# Counts the individual TAP results ("ok N" / "not ok N"). A program that exits non-zero without
# a "not ok", or whose output has no "1..N" plan (it died half-way), counts as one more failure.
# Output of failing programs is printed in full, of passing ones only a summary line (VERBOSE=1:
# everything). The last line is always "N passed, N failed"; the exit code is 1 if any failed.
#
#   tests/run.sh [FILTER]      only programs whose path contains FILTER
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1

FILTER=${1:-}
VERBOSE=${VERBOSE:-0}
PASSED=0
FAILED=0
OUT=$(mktemp)
AUDIT=$(mktemp -d)
trap 'rm -rf "$OUT" "$AUDIT"' EXIT

# Sanitizer settings for everything built with ASan/UBSan. Leak detection stays ON: libpq, hiredis
# and libcurl were checked to free everything on a clean shutdown.
# abort_on_error makes a report end in SIGABRT, i.e. a non-zero exit.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:strict_string_checks=1:detect_stack_use_after_return=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
# One known third-party leak at exit is suppressed; tests/lsan.supp says which and why.
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$PWD/tests/lsan.supp:print_suppressions=0}

# run NAME TIMEOUT COMMAND... — run one TAP-speaking program and count its results.
run() {
    local name=$1 limit=$2
    shift 2
    [ -n "$FILTER" ] && [[ "$name" != *"$FILTER"* ]] && return 0
    local t0 rc pass fail plan extra=0 secs
    t0=$(date +%s.%N)
    # (in a subshell, so that bash's "Aborted" note for a crashed program lands in $OUT too)
    (timeout -k 5 "$limit" "$@"; exit $?) >"$OUT" 2>&1 </dev/null
    rc=$?
    secs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
    pass=$(grep -cE '^ok [0-9]+' "$OUT")
    fail=$(grep -cE '^not ok [0-9]+' "$OUT")
    plan=$(grep -cE '^1\.\.[0-9]+' "$OUT")
    local why=""
    if [ "$rc" -ne 0 ] && [ "$fail" -eq 0 ]; then
        extra=1
        why=" (exit code $rc$([ "$rc" -eq 124 ] && echo ": timed out after ${limit}s"))"
    elif [ "$plan" -eq 0 ]; then
        extra=1
        why=" (no TAP plan line: died half-way?)"
    fi
    PASSED=$((PASSED + pass))
    FAILED=$((FAILED + fail + extra))
    if [ $((fail + extra)) -gt 0 ]; then
        echo "FAIL $name: $pass passed, $((fail + extra)) failed$why, ${secs}s"
        sed 's/^/    /' "$OUT"
    else
        echo "pass $name: $pass passed, ${secs}s"
        [ "$VERBOSE" = 1 ] && sed 's/^/    /' "$OUT"
    fi
    return 0
}

# run_fuzz NAME TIMEOUT COMMAND... — a libFuzzer corpus replay: one result, exit 0 = pass.
run_fuzz() {
    local name=$1 limit=$2
    shift 2
    [ -n "$FILTER" ] && [[ "$name" != *"$FILTER"* ]] && return 0
    (timeout -k 5 "$limit" "$@"; exit $?) >"$OUT" 2>&1 </dev/null
    local rc=$?
    if [ "$rc" -eq 0 ]; then
        PASSED=$((PASSED + 1))
        echo "pass $name"
        [ "$VERBOSE" = 1 ] && sed 's/^/    /' "$OUT"
    else
        FAILED=$((FAILED + 1))
        echo "FAIL $name (exit code $rc)"
        tail -n 200 "$OUT" | sed 's/^/    /'
    fi
    return 0
}

shopt -s nullglob

echo "== source shape"
run "tests/layers.py" 60 python3 tests/layers.py

echo "== unit tests"
# The Redis Cluster of the adapter's cluster-mode test (ports 7101-7103): brought up here, taken down on exit.
if [[ "build/release/tests/test_redis_cluster" == *"$FILTER"* || "build/asan/tests/test_redis_cluster" == *"$FILTER"* ]]
then
    trap 'ops/redis_cluster.sh down >/dev/null 2>&1; rm -rf "$OUT" "$AUDIT"' EXIT
    ops/redis_cluster.sh up >"$OUT" 2>&1 ||
        { echo "note: ops/redis_cluster.sh up failed; test_redis_cluster will fail:"; sed 's/^/    /' "$OUT"; }
fi
for t in build/release/tests/test_* build/asan/tests/test_*; do
    [ -x "$t" ] && [ -f "$t" ] || continue
    run "$t" 300 "$t"
done

echo "== fuzz corpora"
for f in build/fuzz/fuzz_*; do
    [ -x "$f" ] && [ -f "$f" ] || continue
    n=$(basename "$f")
    [ -n "$FILTER" ] && [[ "$f" != *"$FILTER"* ]] && continue
    files=(tests/fuzz/corpus/"$n"/*)
    if [ ${#files[@]} -eq 0 ]; then
        echo "skip $f: no tests/fuzz/corpus/$n/"
        continue
    fi
    run_fuzz "$f (${#files[@]} inputs)" 300 "$f" "${files[@]}"
done

# Integration tests share the local stack (test_readiness stops Redis and PostgreSQL): strictly
# one after the other.
echo "== integration tests"
if ! ops/stack.sh status >/dev/null; then
    echo "note: the local stack is not up; integration tests need: ops/stack.sh up && ops/migrate.sh"
fi
for variant in release asan; do
    mkdir -p "$AUDIT/$variant"
    for t in tests/integration/test_*.py; do   # sorted: test_zz_log_audit.py comes last
        run "$t [$variant]" 300 \
            env SB_BIN="build/$variant/switchboard" SB_LOG_AUDIT_DIR="$AUDIT/$variant" PYTHONDONTWRITEBYTECODE=1 \
            python3 "$t"
    done
done

echo "$PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
