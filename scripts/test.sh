#!/usr/bin/env bash
# Run the test suite: scripts/test.sh [--newest] [pytest args...]
#
# Bootstraps .venv, then runs pytest from the repo root against $DATABASE_URL,
# or, when it is unset, against a throwaway PostgreSQL (scripts/pg.sh) started
# for the run and deleted afterwards. Without arguments pytest gets `-ra`
# (one line of dots per test file: the progress); with arguments it gets `-ra`
# followed by them. Exits with pytest's exit code.
#
# The whole suite takes about 25 minutes on a 2-core machine; some tests run
# for 20 s or more without printing anything (they kill, stop and restart
# real processes and PostgreSQL).
#
# Without arguments (the README's test command, run by .ci/run) it first runs
# scripts/lint.sh (ruff check, ruff format --check, mypy) and stops with its
# exit code if that fails. With pytest arguments, or with --newest, lint is
# skipped: a focused run should not fail on style, and lint does not depend on
# the Python version (the default run already covered it).
#
# --newest: the same suite on Python 3.13 with the newest Django that pip
# resolves for it, in a second virtualenv, .venv-py313. Python 3.13 is
# $PREFORK_NEWEST_PYTHON if set, else pyenv's newest 3.13 (`pyenv root`, or
# ~/.pyenv), else python3.13 on PATH.
#
# As root, scripts/pg.sh runs PostgreSQL as the system user "pgthrow" (created
# on first use) and keeps the cluster, its log and a lock file in /tmp (see
# scripts/pg.sh).
set -euo pipefail

REPO="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)"
VENV="$REPO/.venv"

find_python313() {
    if [[ -n "${PREFORK_NEWEST_PYTHON:-}" ]]; then
        printf '%s\n' "$PREFORK_NEWEST_PYTHON"
        return 0
    fi
    local root candidate
    root="$(pyenv root 2>/dev/null || printf '%s' "$HOME/.pyenv")"
    candidate="$(printf '%s\n' "$root"/versions/3.13*/bin/python3.13 | sort -V | tail -n 1)"
    if [[ -x "$candidate" ]]; then
        printf '%s\n' "$candidate"
        return 0
    fi
    # pyenv's shim answers only when 3.13 is enabled: check that it runs
    if python3.13 -c '' >/dev/null 2>&1; then
        command -v python3.13
        return 0
    fi
    return 1
}

newest=""
if [[ "${1:-}" == "--newest" ]]; then
    shift
    newest=1
    PYTHON="$(find_python313)" || {
        printf 'test.sh: --newest needs Python 3.13: none found (set PREFORK_NEWEST_PYTHON)\n' >&2
        exit 1
    }
    VENV="$REPO/.venv-py313"
    export PYTHON PREFORK_VENV="$VENV"
fi

"$REPO/scripts/bootstrap.sh"
if [[ -z "$newest" && $# -eq 0 ]]; then
    "$REPO/scripts/lint.sh" || exit
fi
# shellcheck source=scripts/lib.sh
source "$REPO/scripts/lib.sh"
ensure_database_url

set -- -ra "$@"

cd "$REPO"
printf 'test.sh: %s, Django %s; the whole suite takes about 25 minutes\n' \
    "$("$VENV/bin/python" --version)" \
    "$("$VENV/bin/python" -c 'import django; print(django.__version__)' 2>/dev/null \
        || echo 'not installed')" >&2
start=$SECONDS
rc=0
"$VENV/bin/python" -m pytest "$@" || rc=$?
printf 'test.sh: pytest exited with %s after %s s\n' "$rc" "$((SECONDS - start))" >&2
exit "$rc"
