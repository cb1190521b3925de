#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the tests and the demo.
#
#   scripts/pg.sh start     init + start (or reuse a running one); prints the URL
#   scripts/pg.sh stop      stop immediately and delete all its data
#   scripts/pg.sh restart   pg_ctl restart -m fast (data kept); prints the URL
#   scripts/pg.sh url       prints the URL
#   scripts/pg.sh status    exit 0 if running, 1 if not
#   scripts/pg.sh psql ...  psql connected to it (database postgres unless the
#                           arguments name one: -d shop, or shop; -c, -f... as psql)
#   scripts/pg.sh ctl ...   pg_ctl -D <datadir> ... as the right user,
#                           e.g. scripts/pg.sh ctl restart -m fast -w
#   scripts/pg.sh bindir    prints the server binaries' directory (exit 1: none)
#
# Port: $PGPORT_THROWAWAY (default 54329), listening on 127.0.0.1 only, trust auth,
# superuser "postgres", durability off (fsync, synchronous_commit,
# full_page_writes): never put anything you want to keep in it.
#
# PostgreSQL refuses to run as root. As root the server runs as the system user
# "pgthrow" (created on first use with useradd --system, and kept: say so on
# stderr) and its files live in /tmp/procrastinate-prefork-pg-<port> (the repo
# may not be traversable by that user), with a symlink at .pgdata/<port>; a
# lock file /tmp/procrastinate-prefork-pg-<port>.lock stays after `stop`.
# Otherwise they live in .pgdata/<port>.
#
# stdout carries nothing but the URL (start, restart, url) or pg_ctl's own
# output (ctl); messages and errors go to stderr.
set -euo pipefail

REPO="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)"
PORT="${PGPORT_THROWAWAY:-54329}"
PGUSER_OS=pgthrow

die() { printf 'pg.sh: %s\n' "$*" >&2; exit 1; }

[[ "$PORT" =~ ^[0-9]+$ ]] && ((PORT > 0 && PORT < 65536)) \
    || die "PGPORT_THROWAWAY must be a TCP port number, got '$PORT'"

URL="postgresql://postgres@127.0.0.1:$PORT/postgres"
POINTER="$REPO/.pgdata/$PORT"
if ((EUID == 0)); then
    RUN_AS="$PGUSER_OS"
    BASE="/tmp/procrastinate-prefork-pg-$PORT"
else
    RUN_AS=""
    BASE="$POINTER"
fi
DATA="$BASE/data"
LOG="$BASE/postgres.log"
LOCKFILE="$BASE.lock"

# Directory holding initdb/pg_ctl/postgres: pg_config --bindir, else the highest
# /usr/lib/postgresql/<version>/bin, else wherever initdb is on PATH.
find_bindir() {
    local d candidates=()
    if command -v pg_config >/dev/null 2>&1; then
        candidates+=("$(pg_config --bindir 2>/dev/null || true)")
    fi
    while IFS= read -r d; do
        candidates+=("$d")
    done < <(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V -r)
    if command -v initdb >/dev/null 2>&1; then
        candidates+=("$(dirname -- "$(readlink -f -- "$(command -v initdb)")")")
    fi
    for d in "${candidates[@]}"; do
        if [[ -n "$d" && -x "$d/initdb" && -x "$d/pg_ctl" && -x "$d/postgres" ]]; then
            printf '%s\n' "$d"
            return 0
        fi
    done
    return 1
}

bindir() {
    BIN="$(find_bindir)" || die "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found; on Debian: apt-get install postgresql"
}

# Run a PostgreSQL binary as the user owning the cluster. The lock fd is closed
# so that a postmaster started by pg_ctl does not inherit (and hold) the lock.
as_pg() {
    if [[ -n "$RUN_AS" ]]; then
        (cd / && runuser -u "$RUN_AS" -- "$@") 8>&-
    else
        "$@" 8>&-
    fi
}

lock() {
    mkdir -p -- "$(dirname -- "$LOCKFILE")"
    exec 8>"$LOCKFILE"
    if command -v flock >/dev/null 2>&1; then
        flock -w 120 8 || die "timed out waiting for $LOCKFILE"
    fi
}

is_running() {
    [[ -f "$DATA/PG_VERSION" ]] || return 1
    as_pg "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1 || return 1
    # pg_ctl status only checks that the postmaster's PID exists: a killed
    # postmaster not yet reaped by init is a zombie, and counts as dead here.
    local pid state
    pid="$(head -n 1 -- "$DATA/postmaster.pid" 2>/dev/null)" || return 1
    state="$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" || return 0
    [[ "$state" != Z ]]
}

wait_ready() {
    local deadline=$((SECONDS + 30))
    until "$BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT" -U postgres -d postgres; do
        if ((SECONDS >= deadline)); then
            [[ -r "$LOG" ]] && tail -n 30 -- "$LOG" >&2
            die "PostgreSQL on 127.0.0.1:$PORT not ready after 30 s (log: $LOG)"
        fi
        sleep 0.2
    done
}

# pg_ctl start|restart ..., quietly; then wait until ready and print the URL.
bring_up() {
    local out
    if ! out="$(as_pg "$BIN/pg_ctl" -D "$DATA" -l "$LOG" -w -t 30 "$@" 2>&1)"; then
        printf '%s\n' "$out" >&2
        [[ -r "$LOG" ]] && tail -n 30 -- "$LOG" >&2
        die "pg_ctl $1 failed (log: $LOG)"
    fi
    wait_ready
    printf '%s\n' "$URL"
}

ensure_os_user() {
    id -u "$PGUSER_OS" >/dev/null 2>&1 && return 0
    printf 'pg.sh: creating the system user %s (PostgreSQL refuses to run as root); it stays\n' \
        "$PGUSER_OS" >&2
    useradd --system --no-create-home --shell /usr/sbin/nologin "$PGUSER_OS" \
        || id -u "$PGUSER_OS" >/dev/null 2>&1 \
        || die "could not create system user $PGUSER_OS"
}

cmd_start() {
    bindir
    lock
    if is_running; then
        wait_ready
        printf '%s\n' "$URL"
        return 0
    fi
    local rc=0
    "$BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT" || rc=$?
    if ((rc != 2)); then
        die "another server already answers on 127.0.0.1:$PORT; stop it or set PGPORT_THROWAWAY"
    fi

    # Anything left over is from a crashed or killed run: start afresh.
    rm -rf -- "$BASE" "$POINTER"
    if [[ -n "$RUN_AS" ]]; then
        ensure_os_user
        printf 'pg.sh: as root: the cluster and its log in %s (deleted by stop), lock file %s (left)\n' \
            "$BASE" "$LOCKFILE" >&2
        mkdir -m 700 -- "$BASE"  # fails if it reappeared: never reuse a foreign /tmp dir
        chown "$RUN_AS:" -- "$BASE"
        mkdir -p -- "$REPO/.pgdata"
        ln -s -- "$BASE" "$POINTER"
    else
        mkdir -p -m 700 -- "$BASE"
    fi

    local out
    if ! out="$(as_pg "$BIN/initdb" -D "$DATA" -U postgres -A trust -E UTF8 --locale=C -N 2>&1)"; then
        printf '%s\n' "$out" >&2
        die "initdb failed"
    fi

    # The socket path must fit in sun_path (~107 bytes); if the data dir path is
    # too long, listen on TCP only (everything here connects over TCP anyway).
    local socket_dir="$DATA"
    ((${#DATA} + 20 > 100)) && socket_dir=""
    cat >>"$DATA/postgresql.conf" <<CONF

# --- throwaway cluster settings (scripts/pg.sh) ---
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$socket_dir'
max_connections = 400
fsync = off
synchronous_commit = off
full_page_writes = off
CONF
    cat >"$DATA/pg_hba.conf" <<'HBA'
# throwaway cluster (scripts/pg.sh): trust, local socket and 127.0.0.1 only
local   all             all                     trust
host    all             all     127.0.0.1/32    trust
local   replication     all                     trust
host    replication     all     127.0.0.1/32    trust
HBA
    [[ -n "$RUN_AS" ]] && chown -R "$RUN_AS:" -- "$BASE"

    bring_up start
}

cmd_stop() {
    lock
    if [[ -f "$DATA/PG_VERSION" ]]; then
        bindir
        as_pg "$BIN/pg_ctl" -D "$DATA" -w -t 30 stop -m immediate >/dev/null 2>&1 || true
        is_running && die "PostgreSQL in $DATA is still running; not deleting it"
    fi
    rm -rf -- "$BASE" "$POINTER"
}

cmd_restart() {
    bindir
    lock
    is_running || die "no throwaway PostgreSQL running on port $PORT (use: $0 start)"
    bring_up restart -m fast
}

cmd_status() {
    bindir
    if is_running; then
        printf 'running: %s (data: %s, log: %s)\n' "$URL" "$DATA" "$LOG"
    else
        printf 'not running (port %s)\n' "$PORT"
        return 1
    fi
}

cmd_ctl() {
    bindir
    [[ -f "$DATA/PG_VERSION" ]] || die "no throwaway cluster in $DATA (use: $0 start)"
    # pg_ctl start/restart without -l would leave the server writing to *our*
    # stdout/stderr forever, so a caller capturing them (subprocess.run(...,
    # capture_output=True)) would never see EOF. Default the log to the file.
    local arg has_log="" starts=""
    for arg in "$@"; do
        case "$arg" in
            -l | -l* | --log | --log=*) has_log=1 ;;
            start | restart) starts=1 ;;
        esac
    done
    local extra=()
    [[ -n "$starts" && -z "$has_log" ]] && extra=(-l "$LOG")
    as_pg "$BIN/pg_ctl" -D "$DATA" "${extra[@]}" "$@"
}

cmd_psql() {
    bindir
    local psql="$BIN/psql"
    [[ -x "$psql" ]] || psql="psql"
    # The server through libpq's variables, not a URL argument: psql would
    # take a URL before -d as the user name, and its arguments stay the
    # caller's (-d, -U, -c... override these). Variables of the caller's that
    # would point elsewhere go.
    exec env -u PGHOSTADDR -u PGSERVICE -u PGSERVICEFILE \
        PGHOST=127.0.0.1 PGPORT="$PORT" PGUSER=postgres PGDATABASE=postgres \
        "$psql" "$@"
}

usage() {
    sed -n '2,13s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
    exit 2
}

(($# >= 1)) || usage
cmd="$1"
shift
case "$cmd" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    restart) cmd_restart ;;
    url) printf '%s\n' "$URL" ;;
    status) cmd_status ;;
    ctl) cmd_ctl "$@" ;;
    psql) cmd_psql "$@" ;;
    bindir) bindir && printf '%s\n' "$BIN" ;;
    -h | --help | help) usage ;;
    *) printf 'pg.sh: unknown command %q\n' "$cmd" >&2; usage ;;
esac
