"""A fleet whose connections go through a real PgBouncer in transaction
pooling mode, with a pool of 2 server sessions per database.

PgBouncer runs for the whole session in front of the throwaway server; every
test's database gets its own pool. Jobs are deferred and read directly (the
helpers use ``db_url``); only the fleet goes through the pooler.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from procrastinate_prefork.supervisor import db as prefork_db

from ..apps.logged_app import events
from ..fleet_helper import FleetFactory, defer, jobs, wait_for
from .test_health import free_port, probe

try:  # the tox environment without Django skips the Django test only
    from .test_django import (  # noqa: F401 - fixtures
        SETTINGS,
        django_db_url,
        django_template_url,
        manage,
    )
except pytest.skip.Exception:
    SETTINGS = None

APP = "tests.apps.logged_app.app"
POOL_SIZE = 2
FAST = (
    "--fetch-job-polling-interval",
    "0.5",
    "--abort-job-polling-interval",
    "0.5",
    "--stalled-timeout",
    "3",
    "--heartbeat-interval",
    "0.5",
    "--stock-worker-timeout",
    "3",
)  # the stray job below has no worker


def _with_port(url: str, port: int) -> str:
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@127.0.0.1:{port}" if userinfo else f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=netloc))


def _run_as() -> list[str]:
    """PgBouncer refuses to run as root: run it as the server's user."""
    if os.geteuid() != 0:
        return []
    for user in ("pgthrow", "postgres"):  # scripts/pg.sh's, then Debian's
        try:
            pwd.getpwnam(user)
        except KeyError:
            continue
        return ["-u", user]
    pytest.skip("running as root and no 'pgthrow' or 'postgres' user for pgbouncer")


@pytest.fixture(scope="session")
def pgbouncer_port(pg_url: str) -> Iterator[int]:
    binary = shutil.which("pgbouncer") or (
        "/usr/sbin/pgbouncer" if os.access("/usr/sbin/pgbouncer", os.X_OK) else None
    )
    if binary is None:
        pytest.skip("pgbouncer is not installed (Debian: apt-get install pgbouncer)")
    port = int(os.environ.get("PGBOUNCER_PORT_THROWAWAY") or free_port())
    server = urlsplit(pg_url)
    workdir = Path(tempfile.mkdtemp(prefix="prefork-pgbouncer-"))
    workdir.chmod(0o777)  # its user writes the log and pid files here
    (workdir / "users.txt").write_text(f'"{server.username or "postgres"}" ""\n')
    (workdir / "pgbouncer.ini").write_text(f"""\
[databases]
* = host={server.hostname} port={server.port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {workdir}/users.txt
pool_mode = transaction
default_pool_size = {POOL_SIZE}
max_client_conn = 500
logfile = {workdir}/pgbouncer.log
pidfile = {workdir}/pgbouncer.pid
""")
    for path in workdir.iterdir():
        path.chmod(0o644)
    proc = subprocess.Popen(
        [binary, *_run_as(), str(workdir / "pgbouncer.ini")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    url = _with_port(pg_url, port)

    def up() -> bool:
        if proc.poll() is not None:
            log = workdir / "pgbouncer.log"
            raise AssertionError(
                "pgbouncer exited: " + (log.read_text() if log.exists() else "")
            )
        try:
            psycopg.connect(url, connect_timeout=2).close()
            return True
        except psycopg.OperationalError:
            return False

    try:
        wait_for(
            up, timeout=20, interval=0.2, message="pgbouncer to accept connections"
        )
        yield port
    finally:
        proc.send_signal(signal.SIGINT)  # shut down at once, closing its sessions
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def bouncer_url(db_url: str, pgbouncer_port: int) -> str:
    """The test's database, through PgBouncer."""
    return _with_port(db_url, pgbouncer_port)


def server_sessions(db_url: str) -> int:
    """PostgreSQL sessions on the test's database, other than this one."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
        ).fetchone()
    assert row is not None
    return int(row[0])


def actions(fleet: Any) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for event in events(fleet.log()):
        if "action" in event:
            found.setdefault(event["action"], []).append(event)
    return found


def defer_locked(
    db_url: str, task: str, lock: str, count: int, **kwargs: Any
) -> list[int]:
    with psycopg.connect(db_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT procrastinate_defer_jobs_v1(array_agg(ROW("
            "  'default', %s, 0, %s, NULL, %s::jsonb, NULL"
            ")::procrastinate_job_to_defer_v1)) FROM generate_series(1, %s)",
            [task, lock, json.dumps(kwargs), count],
        ).fetchone()
    assert row is not None
    return list(row[0])


def succeeded(db_url: str, ids: list[int]) -> bool:
    return {row["status"] for row in jobs(db_url, ids)} == {"succeeded"}


# ---------------------------------------------------------------------- tests


def test_listen_check_tells_a_pooled_connection_from_a_direct_one(db_url, bouncer_url):
    assert prefork_db.listen_works({"conninfo": db_url}, "prefork:test:check:1")
    assert not prefork_db.listen_works(
        {"conninfo": bouncer_url}, "prefork:test:check:1"
    )


def test_fleet_works_through_pgbouncer_by_polling(fleet, db_url, bouncer_url):
    """Eight children, two server sessions: jobs, a retry, a lock, an abort, a
    killed child's job, the sweep and the heartbeats all go through the pool."""
    health_port = free_port()
    fleet.start(
        "--concurrency",
        "8",
        "--health-port",
        str(health_port),
        *FAST,
        app=APP,
        env={"DATABASE_URL": bouncer_url},
    )
    started = actions(fleet)
    [pooling] = started["transaction_pooling"]
    assert pooling["listen_dsn"] is False
    [fallback] = started["listen_unavailable"]
    assert (fallback["fallback"], fallback["polling_interval"]) == ("polling", 0.5)
    assert probe(health_port, "/ready")[0] == 200

    sessions = [server_sessions(db_url)]
    # more than psycopg's prepare_threshold (5) runs of every query per child
    cpu_ids = defer(db_url, "cpu", 120, ms=5)
    flaky_ids = defer(db_url, "flaky", 3, fail_times=1)
    locked_ids = defer_locked(db_url, "sleep", "one-at-a-time", 2, seconds=0.5)
    [abort_id] = defer(db_url, "async_sleep", seconds=120)
    fleet.running_child(abort_id)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("SELECT procrastinate_cancel_job_v1(%s, true, false)", [abort_id])
    [victim_job] = defer(db_url, "sleep", seconds=2)
    victim = fleet.running_child(victim_job)
    os.kill(victim, signal.SIGKILL)

    everything = [*cpu_ids, *flaky_ids, *locked_ids, victim_job]

    def drained() -> bool:
        sessions.append(server_sessions(db_url))
        return succeeded(db_url, everything)

    wait_for(drained, timeout=120, interval=0.5, message="every job to succeed")
    wait_for(
        lambda: jobs(db_url, [abort_id])[0]["status"] == "aborted",
        timeout=30,
        message="the abort",
    )
    # the supervisor's session goes through the pool too
    assert max(sessions) <= POOL_SIZE, sessions
    # the retry ran a second attempt; the killed child's job ran again elsewhere
    assert {(j, a) for j, a, _ in fleet.marks("end") if j in flaky_ids} == {
        (j, 1) for j in flaky_ids
    }
    assert any(
        a == 1 and pid != victim
        for j, a, pid in fleet.marks("start")
        if j == victim_job
    )
    # the lock: the second job started after the first had ended
    first, second = sorted(locked_ids)
    assert fleet.mark_times("start")[(second, 0)] >= fleet.mark_times("end")[(first, 0)]

    # the sweep: a job left 'doing' by a worker gone from another host
    with psycopg.connect(db_url, autocommit=True) as conn:
        [stray] = conn.execute(
            "INSERT INTO procrastinate_jobs (queue_name, task_name, args, status) "
            "VALUES ('default', 'cpu', '{\"ms\": 1}', 'doing') RETURNING id"
        ).fetchone()
        beat = conn.execute(
            "SELECT max(last_heartbeat) FROM procrastinate_workers"
        ).fetchone()
    wait_for(
        lambda: succeeded(db_url, [stray]),
        timeout=30,
        message="the sweep to retry the stray job",
    )
    # heartbeats keep the children's worker rows and the fleet table fresh
    with psycopg.connect(db_url, autocommit=True) as conn:
        wait_for(
            lambda: conn.execute(
                "SELECT min(last_heartbeat) > %s FROM procrastinate_workers", beat
            ).fetchone()[0],
            timeout=15,
            message="fresh worker heartbeats",
        )
        assert (
            conn.execute(
                "SELECT count(*) FROM procrastinate_prefork_processes "
                "WHERE kind = 'child' AND state IN ('idle', 'busy') "
                "AND last_heartbeat > now() - interval '10 s'"
            ).fetchone()[0]
            == 8
        )
    assert probe(health_port, "/ready")[0] == 200
    assert "db_error" not in actions(fleet), fleet.log()
    assert fleet.stop() == 0


def test_listen_dsn_wakes_an_idle_fleet_by_notification(fleet, db_url, bouncer_url):
    # Polling only every 60 s: a job starting within 20 s was woken by NOTIFY.
    fleet.start(
        "--concurrency",
        "4",
        "--fetch-job-polling-interval",
        "60",
        "--listen-dsn",
        db_url,
        app=APP,
        env={"DATABASE_URL": bouncer_url},
    )
    started = actions(fleet)
    [pooling] = started["transaction_pooling"]
    assert pooling["listen_dsn"] is True
    assert "listen_unavailable" not in started
    assert db_url not in fleet.log()  # never shown: it may hold a password
    wait_for(
        lambda: list(fleet.child_states().values()) == ["idle"] * 4,
        message="every child idle",
    )
    time.sleep(1.0)  # and past its first fetch, waiting for a wake-up or a poll
    for _ in range(2):  # twice: more than one notification gets through
        deferred_at = time.time()
        [job_id] = defer(db_url, "cpu", ms=1)
        wait_for(
            lambda job_id=job_id: succeeded(db_url, [job_id]),
            timeout=20,
            message="the job to run without a poll",
        )
        assert fleet.mark_times("start")[(job_id, 0)] - deferred_at < 20
    # the supervisor's session is the only direct one besides the pool's two
    assert server_sessions(db_url) <= POOL_SIZE + 1
    assert fleet.stop() == 0


def test_listen_dsn_through_the_pooler_falls_back_to_polling(fleet, bouncer_url):
    fleet.start(
        "--concurrency",
        "1",
        "--listen-dsn",
        bouncer_url,
        app=APP,
        env={"DATABASE_URL": bouncer_url},
    )
    [fallback] = actions(fleet)["listen_unavailable"]
    assert fallback["fallback"] == "polling"
    assert fleet.stop() == 0


def test_django_orm_tasks_through_pgbouncer(request, tmp_path, pgbouncer_port):
    if SETTINGS is None:
        pytest.skip("Django is not installed")
    django_db_url = request.getfixturevalue("django_db_url")
    fleet = FleetFactory(django_db_url, tmp_path).new()
    ids = defer(django_db_url, "tests.orm_iterate", 16, times=5) + defer(
        django_db_url, "tests.orm_async", 16
    )
    try:
        code = fleet.run_to_exit(
            command=manage("prefork_worker", "--concurrency", "4", "--one-shot"),
            env={
                "DJANGO_SETTINGS_MODULE": SETTINGS,
                "DATABASE_URL": _with_port(django_db_url, pgbouncer_port),
                "PREFORK_TEST_CONN_MAX_AGE": "60",
            },
            timeout=120,
        )
    finally:
        if fleet.proc is not None and fleet.proc.poll() is None:
            fleet.kill_all()
    assert code == 0, fleet.log()
    assert succeeded(django_db_url, ids), fleet.log()


def test_unreachable_listen_dsn_stops_the_start_and_says_which(fleet, db_url):
    code = fleet.run_to_exit(
        "--listen-dsn", "postgresql://nobody:SECRET-77@127.0.0.1:1/x", timeout=30
    )
    assert code == 1
    assert "--listen-dsn" in fleet.log().splitlines()[-1]  # the line after the banner
    assert "SECRET-77" not in fleet.log()
    assert fleet.events("child_started") == []
    assert "Traceback" not in fleet.log()
