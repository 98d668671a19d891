#!/usr/bin/env bash
# ops/migrate.sh — apply the schema migrations in sql/ to the local-stack databases.
#
#   ops/migrate.sh [db ...]        default: switchboard switchboard_test
#
# Each database records what it has in schema_migrations(version, applied_at); version is the
# NNNN number of the file sql/NNNN_name.sql. Every file not yet recorded is applied in order, in
# ONE transaction together with its schema_migrations row, so a failing migration leaves nothing
# behind. Re-running is a no-op. A database that does not exist yet is created (owner switchboard).
# Connects to the local stack (ops/stack.sh): host=127.0.0.1 port=5440 user=switchboard, or to the server that
# MIGRATE_CONN names in libpq terms without dbname (an installed gateway: share/switchboard/ops/migrate.sh).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
CONN=${MIGRATE_CONN:-"host=127.0.0.1 port=5440 user=switchboard"}
PSQL=(psql -X -q -v ON_ERROR_STOP=1)
export PGOPTIONS="-c client_min_messages=warning"   # no "already exists, skipping" notices

[ $# -gt 0 ] || set -- switchboard switchboard_test

shopt -s nullglob
files=("$ROOT"/sql/[0-9][0-9][0-9][0-9]_*.sql)
# Two files with the same number would be applied as one version: refuse.
dups=$(for f in "${files[@]}"; do basename "$f" | cut -c1-4; done | sort | uniq -d)
[ -z "$dups" ] || { echo "migrate.sh: duplicate migration number(s): $dups" >&2; exit 1; }

for db in "$@"; do
    case "$db" in *[!a-zA-Z0-9_]* | "") echo "migrate.sh: bad database name '$db'" >&2; exit 1 ;; esac
    exists=$("${PSQL[@]}" -At -d "$CONN dbname=postgres" \
        -c "SELECT 1 FROM pg_database WHERE datname = '$db'")
    if [ "$exists" != 1 ]; then
        "${PSQL[@]}" -d "$CONN dbname=postgres" -c "CREATE DATABASE \"$db\" OWNER switchboard"
        echo "migrate.sh: $db: created database"
    fi
    "${PSQL[@]}" -d "$CONN dbname=$db" -c "
        CREATE TABLE IF NOT EXISTS schema_migrations (
            version    text PRIMARY KEY,
            applied_at timestamptz NOT NULL DEFAULT now()
        )"
    applied=$("${PSQL[@]}" -At -d "$CONN dbname=$db" -c "SELECT version FROM schema_migrations")
    for f in "${files[@]}"; do
        name=$(basename "$f")
        version=${name:0:4}
        grep -qx "$version" <<<"$applied" && continue
        # -1 wraps every -f/-c below in one BEGIN ... COMMIT (ROLLBACK on the first error).
        "${PSQL[@]}" -1 -d "$CONN dbname=$db" -f "$f" \
            -c "INSERT INTO schema_migrations (version) VALUES ('$version')" ||
            { echo "migrate.sh: $db: $name FAILED (rolled back)" >&2; exit 1; }
        echo "migrate.sh: $db: applied $name"
    done
done
