#!/usr/bin/env bash
# Run the test suite: scripts/test.sh [pytest args...]
#
# Bootstraps .venv, then runs pytest from the repo root against $DATABASE_URL,
# or, when it is unset, against a throwaway PostgreSQL (scripts/pg.sh) started
# for the run and deleted afterwards. Without arguments pytest gets `-q -ra`;
# with arguments it gets `-ra` followed by them. Exits with pytest's exit code.
set -euo pipefail

REPO="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)"
"$REPO/scripts/bootstrap.sh"
# shellcheck source=scripts/lib.sh
source "$REPO/scripts/lib.sh"
ensure_database_url

if (($# == 0)); then
    set -- -q -ra
else
    set -- -ra "$@"
fi

cd "$REPO"
rc=0
"$REPO/.venv/bin/python" -m pytest "$@" || rc=$?
exit "$rc"
