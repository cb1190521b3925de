#!/usr/bin/env bash
# Run the demo: scripts/demo.sh [arguments of `manage.py demo`...]
#
# Bootstraps .venv, then migrates the Django demo project (demo_project/) and
# runs its `demo` management command against $DATABASE_URL, or, when it is
# unset, against a throwaway PostgreSQL (scripts/pg.sh) started for the run and
# deleted afterwards.
set -euo pipefail

REPO="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)"
"$REPO/scripts/bootstrap.sh"
# shellcheck source=scripts/lib.sh
source "$REPO/scripts/lib.sh"
ensure_database_url

cd "$REPO/demo_project"
../.venv/bin/python manage.py migrate -v0
../.venv/bin/python manage.py demo "$@"
