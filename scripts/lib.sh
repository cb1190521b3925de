# shellcheck shell=bash
# Helpers sourced by scripts/test.sh and scripts/demo.sh (not run directly).
# Expects REPO to be set to the repository root.

# If DATABASE_URL is unset, point it at the throwaway PostgreSQL of
# scripts/pg.sh: start one (and stop it, deleting its data, when this shell
# exits), or reuse one that is already running (and leave it running: it
# belongs to whoever started it, e.g. a `scripts/pg.sh start` or a demo).
#
# Exports, when the throwaway server is used: DATABASE_URL, PGPORT_THROWAWAY
# (so `scripts/pg.sh ctl ...` from a child process targets the same server) and
# PROCRASTINATE_PREFORK_THROWAWAY_PG=1 (this server may be restarted at will).
ensure_database_url() {
    [[ -n "${DATABASE_URL:-}" ]] && return 0
    export PGPORT_THROWAWAY="${PGPORT_THROWAWAY:-54329}"
    if "$REPO/scripts/pg.sh" status >/dev/null 2>&1; then
        printf '%s: reusing the running throwaway PostgreSQL on port %s (left running)\n' \
            "$(basename -- "$0")" "$PGPORT_THROWAWAY" >&2
    else
        trap 'rc=$?; "$REPO/scripts/pg.sh" stop || true; exit "$rc"' EXIT
        # Make an interrupted run still go through the EXIT trap.
        trap 'exit 130' INT
        trap 'exit 143' TERM
    fi
    DATABASE_URL="$("$REPO/scripts/pg.sh" start)"
    export DATABASE_URL
    export PROCRASTINATE_PREFORK_THROWAWAY_PG=1
}
