#!/usr/bin/env bash
# Create/refresh the project virtualenv at $REPO/.venv with the package installed
# in editable mode plus the django and test extras.
#
# PYTHON (default python3) is the interpreter; PREFORK_VENV (default
# $REPO/.venv) the virtualenv's directory: scripts/test.sh --newest uses
# both for a second virtualenv with the newest Python.
#
# Idempotent and fast: the pip install is skipped while a stamp file named after
# the sha256 of pyproject.toml exists (editing pyproject.toml re-runs it).
# Progress messages go to stderr; stdout stays empty.
set -euo pipefail

REPO="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)"
VENV="${PREFORK_VENV:-$REPO/.venv}"
PYTHON="${PYTHON:-python3}"

log() { printf 'bootstrap: %s\n' "$*" >&2; }

# A venv whose interpreter or pip is missing (e.g. python3 -m venv failed half
# way because python3-venv/ensurepip is absent) is rebuilt from scratch.
if [[ -d "$VENV" ]] && ! "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
    log "$VENV is broken (no working python/pip); recreating it"
    rm -rf -- "$VENV"
fi

if [[ ! -d "$VENV" ]]; then
    log "creating $VENV"
    if ! "$PYTHON" -m venv "$VENV"; then
        rm -rf -- "$VENV"
        log "'$PYTHON -m venv' failed (on Debian/Ubuntu: apt-get install python3-venv)"
        exit 1
    fi
fi

sha="$(sha256sum "$REPO/pyproject.toml" | cut -d' ' -f1)"
stamp="$VENV/.stamp-$sha"

install() {
    [[ -e "$stamp" ]] && return 0  # re-checked under the lock
    log "installing the project and its django/test extras into $VENV"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
    (cd "$REPO" && "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e '.[django,test]')
    rm -f -- "$VENV"/.stamp-*
    touch -- "$stamp"
}

if [[ ! -e "$stamp" ]]; then
    # Serialise concurrent bootstraps (e.g. test.sh and demo.sh started together).
    if command -v flock >/dev/null 2>&1; then
        exec 9>"$VENV/.bootstrap.lock"
        flock 9
    fi
    install
fi
