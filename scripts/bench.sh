#!/usr/bin/env bash
# Run the benchmarks: scripts/bench.sh [arguments of benchmarks/run.py...]
#
# Bootstraps .venv plus the `bench` extra (matplotlib, celery[redis]), then
# runs benchmarks/run.py against $DATABASE_URL, or, when it is unset, against
# a throwaway PostgreSQL (scripts/pg.sh) on port $PGPORT_THROWAWAY -- 54331
# by default here, away from the tests' 54329 -- started for the run and
# deleted afterwards. The Celery comparison runs when redis-server is
# installed (apt-get install redis-server); the harness starts its own on
# 127.0.0.1:56390 (--redis-port) and stops it at the end.
#
# Writes docs/benchmarks.json, docs/benchmarks.md and docs/benchmarks.png
# (--out-dir DIR to write elsewhere). The full run takes about 40 minutes on a
# 2-core machine; --quick scales the job counts down (not for the docs).
#
# Run only when named: --only bigtables (the fleet's queries on 1M finished
# jobs, about 6 minutes), --only pgbouncer (needs pgbouncer installed, about 2
# minutes), --only profile (py-spy; root or ptrace allowed, 1 minute),
# --only fleetwrites (the fleet table's writes per second, busy and idle, about
# 5 minutes; run benchmarks/fleetwrites.py --before DIR to compare with another
# checkout); --only fleetstatus (status and the health view on a fleet table
# of 17,000 rows, about 2 minutes; benchmarks/fleetstatus.py --before DIR
# compares with another checkout); --only dbcost (transactions and statements
# per job; starts its own throwaway server with log_statement = 'all' on port
# 54393, under a minute); --only mixed (CPU and I/O queues: one fleet of two
# pools against two fleets and stock procrastinate, about 3 minutes).
# Each writes docs/benchmarks-<name>.json; its section in docs/benchmarks.md
# comes with the next rendering (--render-only, or a full run).
set -euo pipefail

REPO="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)"
"$REPO/scripts/bootstrap.sh"
if ! "$REPO/.venv/bin/python" -c 'import matplotlib, celery, redis' 2>/dev/null; then
    printf 'bench.sh: installing the bench extra (matplotlib, celery[redis])\n' >&2
    (cd "$REPO" && "$REPO/.venv/bin/python" -m pip install -q --disable-pip-version-check -e '.[bench]')
fi
# shellcheck source=scripts/lib.sh
source "$REPO/scripts/lib.sh"
export PGPORT_THROWAWAY="${PGPORT_THROWAWAY:-54331}"
ensure_database_url

BENCH_COMMAND="scripts/bench.sh"
for arg in "$@"; do
    BENCH_COMMAND+=" $(printf '%q' "$arg")"
done
export BENCH_COMMAND

cd "$REPO"
rc=0
"$REPO/.venv/bin/python" benchmarks/run.py "$@" || rc=$?
exit "$rc"
