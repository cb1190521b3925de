#!/usr/bin/env bash
# Soak the fleet under chaos: scripts/soak.sh [arguments of benchmarks/soak.py...]
#
#   scripts/soak.sh --minutes 60 --rate 20      # an hour, 20 jobs/s
#   scripts/soak.sh --help                      # every knob
#
# The chaos test (tests/acceptance/test_chaos.py) for as long as you like:
# supervisors x children on one database, a steady stream of mixed jobs,
# random child SIGKILLs, and per cycle a supervisor SIGKILLed and restarted,
# SIGSTOPped children and a PostgreSQL restart. Prints throughput,
# recoveries, duplicates and memory per child every --report-every seconds,
# then the full books; exits 1 if a job was lost or ran twice while its
# earlier run's process lived. Not part of CI.
#
# Runs against $DATABASE_URL (in a database of its own, dropped at the end;
# no PostgreSQL restarts there), or, when it is unset, against a throwaway
# PostgreSQL (scripts/pg.sh) on port $PGPORT_THROWAWAY -- 54333 by default
# here, away from the tests' and the benchmarks' -- started for the run,
# restarted by the chaos and deleted afterwards.
set -euo pipefail

REPO="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)"
"$REPO/scripts/bootstrap.sh"
# shellcheck source=scripts/lib.sh
source "$REPO/scripts/lib.sh"
export PGPORT_THROWAWAY="${PGPORT_THROWAWAY:-54333}"
ensure_database_url

cd "$REPO"
rc=0
"$REPO/.venv/bin/python" benchmarks/soak.py --database-url "$DATABASE_URL" "$@" || rc=$?
exit "$rc"
