#!/usr/bin/env bash
# Lint and type-check: scripts/lint.sh
#
# Runs, from the repo root and with the tools of .venv (the `test` extra, see
# scripts/bootstrap.sh): `ruff check`, `ruff format --check` over the whole
# repo and `mypy` over the package (configuration in pyproject.toml). Every
# step runs even when an earlier one fails, printing its findings; then one
# line per failing step goes to stderr and the exit code is 1. Exits 0 when
# all three are clean.
#
# scripts/test.sh runs this first when it is called without pytest arguments
# (the README's test command, and so CI); `scripts/test.sh <pytest args>` and
# `scripts/test.sh --newest` skip it: a focused run should not fail on style,
# and the lint result does not depend on the Python running the tests.
# PREFORK_VENV (default $REPO/.venv) names the virtualenv holding the tools.
set -uo pipefail

REPO="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)"
VENV="${PREFORK_VENV:-$REPO/.venv}"
cd "$REPO" || exit 1

failed=()
step() {
    local name="$1"
    shift
    "$@" || failed+=("$name")
}

step "ruff check" "$VENV/bin/ruff" check --quiet .
step "ruff format --check" "$VENV/bin/ruff" format --check --quiet .
step "mypy procrastinate_prefork" "$VENV/bin/mypy" procrastinate_prefork

if ((${#failed[@]})); then
    for name in "${failed[@]}"; do
        printf 'lint.sh: %s failed (see above)\n' "$name" >&2
    done
    exit 1
fi
printf 'lint.sh: ruff check, ruff format --check and mypy are clean\n' >&2
