"""Fleet table, probe port, status command, Django health view and admin,
against a real PostgreSQL with real processes."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import psycopg
import pytest
from psycopg.rows import dict_row

from ..fleet_helper import REPO, defer, free_port, wait_for

HEALTH_APP = "tests.apps.health_app.app"
FAST = ("--heartbeat-interval", "0.5", "--stalled-timeout", "2")
MANAGE = REPO / "demo_project" / "manage.py"
DJANGO_SETTINGS = "tests.django_project.settings"
SECRET_PASSWORD = "pw-SECRET-7781"
SECRET_ARG = "arg-SECRET-4402"
#: the health view's token in these tests (PROCRASTINATE_PREFORK_HEALTH_TOKEN)
VIEW_TOKEN = "view-token-5531-c0ffee"


# ------------------------------------------------------------------ helpers


def probe(port: int, path: str, method: str = "GET") -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request(method, path)
        response = conn.getresponse()
        body = response.read()
        return response.status, (json.loads(body) if body else None)
    finally:
        conn.close()


def try_probe(port: int, path: str) -> tuple[int, Any] | None:
    try:
        return probe(port, path)
    except OSError:
        return None


def fleet_rows(db_url: str) -> list[dict[str, Any]]:
    with (
        psycopg.connect(db_url, autocommit=True) as conn,
        conn.cursor(row_factory=dict_row) as cur,
    ):
        return cur.execute(
            "SELECT *, EXTRACT(EPOCH FROM now() - last_heartbeat)::float8 AS age "
            "FROM procrastinate_prefork_processes ORDER BY id"
        ).fetchall()


def children_rows(db_url: str, supervisor_pid: int) -> list[dict[str, Any]]:
    rows = fleet_rows(db_url)
    sup_ids = {
        r["id"]
        for r in rows
        if r["kind"] == "supervisor" and r["pid"] == supervisor_pid
    }
    return sorted(
        (r for r in rows if r["supervisor_id"] in sup_ids and r["state"] != "stopped"),
        key=lambda r: r["slot"],
    )


def with_password(url: str, password: str) -> str:
    parts = urlsplit(url)
    user, _, host = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"{user or 'postgres'}:{password}@{host}"))


def status_cli(db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "procrastinate_prefork.cli",
            "--app",
            HEALTH_APP,
            "status",
            *args,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "DATABASE_URL": db_url, "PYTHONPATH": str(REPO)},
    )


def django_env(db_url: str) -> dict[str, str]:
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": DJANGO_SETTINGS,
        "DATABASE_URL": db_url,
        "PYTHONPATH": str(REPO),
    }


class DjangoView:
    """pytest-django's ``client`` and the health check, in this process, on
    the database of a test (the fleet's, not pytest-django's own test
    database: the fleet under test writes there). The client presents the
    view's token unless told otherwise: no user of that database can log in."""

    BEARER = f"Bearer {VIEW_TOKEN}"

    def __init__(self, blocker: Any, client: Any):
        self.blocker = blocker
        self.client = client

    @contextlib.contextmanager
    def on(self, db_url: str) -> Iterator[None]:
        from django.db import connections

        connection = connections["default"]
        saved = dict(connection.settings_dict)
        parts = urlsplit(db_url)
        with self.blocker.unblock():
            connection.close()
            connection.settings_dict.update(
                NAME=parts.path.lstrip("/"),
                USER=unquote(parts.username or ""),
                PASSWORD=unquote(parts.password or ""),
                HOST=parts.hostname or "",
                PORT=str(parts.port or ""),
            )
            try:
                yield
            finally:
                connection.close()
                connection.settings_dict.clear()
                connection.settings_dict.update(saved)

    def get(
        self,
        db_url: str,
        *paths: str,
        method: str = "GET",
        authorization: str | None = BEARER,
    ) -> list[tuple[int, Any]]:
        """Status and JSON body of each path; ``authorization``: the header
        sent (None: none, an anonymous caller)."""
        headers = {"Authorization": authorization} if authorization else {}
        out = []
        with self.on(db_url):
            for path in paths:
                response = getattr(self.client, method.lower())(path, headers=headers)
                body = json.loads(response.content) if response.content else None
                out.append((response.status_code, body))
        return out

    def responses(self, db_url: str, path: str, methods: list[str]) -> list[Any]:
        headers = {"Authorization": self.BEARER}
        with self.on(db_url):
            return [
                getattr(self.client, method.lower())(path, headers=headers)
                for method in methods
            ]

    def health_check(self, db_url: str, **kwargs: Any) -> str | None:
        """The django-health-check check's error, or None."""
        from procrastinate_prefork.contrib.django.health_check import (
            PreforkFleetHealthCheck,
        )

        with self.on(db_url):
            if hasattr(PreforkFleetHealthCheck, "get_result"):  # 4.x
                result = asyncio.run(PreforkFleetHealthCheck(**kwargs).get_result())
                return str(result.error) if result.error else None
            check = PreforkFleetHealthCheck()  # 3.x: settings as attributes
            for name, value in kwargs.items():
                setattr(check, name, value)
            check.run_check()
            return "; ".join(str(error) for error in check.errors) or None


@pytest.fixture
def django_view(request: pytest.FixtureRequest) -> DjangoView:
    pytest.importorskip("django")
    settings = request.getfixturevalue("settings")
    settings.PROCRASTINATE_PREFORK_HEALTH_TOKEN = VIEW_TOKEN
    return DjangoView(
        request.getfixturevalue("django_db_blocker"), request.getfixturevalue("client")
    )


def insert_supervisor(
    db: str | Any,
    *,
    host: str = "h1",
    pid: int = 4242,
    age: float = 0.5,
    crash_loop: bool = False,
    queues: list[str] | None = None,
    children: int = 2,
    child_state: str = "idle",
) -> int:
    """Rows of a supervisor and its children, through a psycopg connection to
    the database at ``db`` or through ``db``, a cursor (Django's)."""
    with contextlib.ExitStack() as stack:
        conn = (
            db
            if not isinstance(db, str)
            else stack.enter_context(psycopg.connect(db, autocommit=True))
        )
        row = conn.execute(
            "INSERT INTO procrastinate_prefork_processes (kind, host, pid, state, "
            "crash_loop, concurrency, queues, heartbeat_interval, stalled_timeout, "
            "last_heartbeat) VALUES ('supervisor', %s, %s, 'running', %s, %s, %s, "
            "5, 30, "
            "now() - make_interval(secs => %s)) RETURNING id",
            [host, pid, crash_loop, children, queues, age],
        ).fetchone()
        assert row is not None
        for slot in range(children):
            conn.execute(
                "INSERT INTO procrastinate_prefork_processes (kind, host, pid, "
                "supervisor_id, slot, worker_id, state, jobs_done, rss_bytes, "
                "last_heartbeat) VALUES ('child', %s, %s, %s, %s, %s, %s, 7, 1048576, "
                "now() - make_interval(secs => %s))",
                [host, pid + 1 + slot, row[0], slot, 100 + slot, child_state, age],
            )
    return int(row[0])


# ------------------------------------------------------------- fleet table


def test_rows_appear_and_follow_the_children(fleet, db_url):
    fleet.start(
        "--concurrency",
        "2",
        "--queues",
        "default,other",
        *FAST,
        "--shutdown-graceful-timeout",
        "1",
        app=HEALTH_APP,
    )
    pids = fleet.wait_children(2)
    started = time.monotonic()
    rows = wait_for(
        lambda: (
            (r := children_rows(db_url, fleet.pid))
            and len(r) == 2
            and all(c["worker_id"] for c in r)
            and r
        ),
        timeout=5,
        message="two child rows with worker ids",
    )
    assert time.monotonic() - started < 1.5  # within about one heartbeat interval
    [sup] = [r for r in fleet_rows(db_url) if r["kind"] == "supervisor"]
    assert (sup["pid"], sup["state"], sup["concurrency"]) == (fleet.pid, "running", 2)
    assert sup["queues"] == ["default", "other"]
    assert (sup["heartbeat_interval"], sup["stalled_timeout"]) == (0.5, 2.0)
    assert sup["rss_bytes"] > 0 and sup["crash_loop"] is False and sup["age"] < 1.5
    assert sorted(r["pid"] for r in rows) == pids
    for row in rows:
        assert row["state"] == "idle" and row["host"] == sup["host"]
        assert row["jobs_done"] == 0 and row["restarts"] == 0 and row["job_id"] is None
        assert row["rss_bytes"] > 0 and row["age"] < 1.5 and row["started_at"]

    [job_id] = defer(db_url, "sleep", seconds=30)
    busy = wait_for(
        lambda: [r for r in children_rows(db_url, fleet.pid) if r["job_id"]],
        timeout=5,
        message="a busy child row",
    )
    assert (busy[0]["state"], busy[0]["job_id"], busy[0]["task_name"]) == (
        "busy",
        job_id,
        "sleep",
    )
    assert busy[0]["job_started_at"] is not None

    victim = busy[0]["pid"]
    os.kill(victim, signal.SIGKILL)
    replaced = wait_for(
        lambda: (
            [
                r
                for r in children_rows(db_url, fleet.pid)
                if r["slot"] == busy[0]["slot"] and r["pid"] != victim
            ]
            or None
        ),
        timeout=10,
        message="the killed child's slot row to show its successor",
    )
    assert replaced[0]["restarts"] == 1
    assert replaced[0]["worker_id"] != busy[0]["worker_id"]
    assert fleet.stop() == 0  # the retried job is cut at the 1 s deadline
    assert {r["state"] for r in fleet_rows(db_url)} == {"stopped"}


# -------------------------------------------------------------- probe port


def test_probe_endpoints_before_and_after_ready(fleet):
    port = free_port()
    fleet.start(
        "--concurrency",
        "2",
        "--health-port",
        str(port),
        "--on-child-start",
        "tests.apps.health_app.slow_start",
        app=HEALTH_APP,
        wait_ready=False,
        env={"PREFORK_TEST_SLOW_START": "3"},
    )
    status, body = wait_for(
        lambda: try_probe(port, "/ready"),
        timeout=15,
        interval=0.02,
        message="the probe port",
    )
    assert status == 503, body
    assert body["status"] == "fail" and "0 of 2 child(ren) ready" in body["reasons"]
    assert probe(port, "/live") == (200, {"status": "ok", "reasons": []})
    _, early = probe(port, "/status")
    assert early["ready"] is False and {c["state"] for c in early["children"]} == {
        "starting"
    }

    fleet.wait_ready()
    assert probe(port, "/ready") == (200, {"status": "ok", "reasons": []})
    status, report = probe(port, "/status")
    assert status == 200
    assert report["pid"] == fleet.pid and report["live"] and report["ready"]
    assert report["database"] == "up" and report["concurrency"] == 2
    assert sorted(c["pid"] for c in report["children"]) == fleet.child_pids()
    assert {c["state"] for c in report["children"]} == {"idle"}
    assert all(c["heartbeat_age"] < 2 and c["rss_bytes"] for c in report["children"])

    assert probe(port, "/nope")[0] == 404
    assert probe(port, "/live", method="POST")[0] == 405
    assert probe(port, "/live", method="HEAD") == (200, None)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"garbage\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.0 400 ")

    # A client that connects and sends nothing does not hold the loop up.
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        started = time.monotonic()
        assert probe(port, "/live")[0] == 200
        assert time.monotonic() - started < 0.5
    assert fleet.stop() == 0
    assert try_probe(port, "/live") is None  # closed at exit


def test_ready_fails_while_the_database_is_unreachable(fleet, db_url, pg_url):
    port = free_port()
    fleet.start("--concurrency", "1", "--health-port", str(port), *FAST, app=HEALTH_APP)
    assert probe(port, "/ready")[0] == 200
    dbname = urlsplit(db_url).path.lstrip("/")
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute(f"ALTER DATABASE {dbname} ALLOW_CONNECTIONS false")
        try:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND application_name LIKE %s",
                [dbname, f"prefork:%:sup:{fleet.pid}"],
            )
            _, body = wait_for(
                lambda: (r := probe(port, "/ready"))[0] == 503 and r,
                timeout=10,
                message="/ready to fail",
            )
            assert "database unreachable" in body["reasons"]
            assert probe(port, "/live")[0] == 200  # a restart would not help
        finally:
            admin.execute(f"ALTER DATABASE {dbname} ALLOW_CONNECTIONS true")
    wait_for(
        lambda: probe(port, "/ready")[0] == 200, timeout=20, message="/ready to recover"
    )
    assert fleet.stop() == 0


def test_crash_loop_fails_live_and_the_fleet(fleet, db_url):
    port = free_port()
    fleet.start(
        "--concurrency",
        "1",
        "--health-port",
        str(port),
        *FAST,
        "--on-child-start",
        "tests.apps.health_app.crash_on_start",
        app=HEALTH_APP,
        wait_ready=False,
    )
    _, body = wait_for(
        lambda: (r := try_probe(port, "/live")) and r[0] == 503 and r,
        timeout=30,
        message="/live to report the crash loop",
    )
    assert "crash loop" in body["reasons"][0]
    assert probe(port, "/ready")[0] == 503
    result = wait_for(
        lambda: (
            (r := status_cli(db_url, "--check")).returncode == 1
            and "crash loop" in r.stdout
            and r
        ),
        timeout=10,
        message="the status command to see the crash loop",
    )
    assert "crash loop" in result.stdout
    fleet.stop()


def test_probe_port_in_use_exits_1_before_forking(fleet, db_url):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        code = fleet.run_to_exit(
            "--concurrency", "2", "--health-port", str(port), app=HEALTH_APP, timeout=30
        )
    assert code == 1
    last = fleet.log().strip().splitlines()[-1]
    assert f"127.0.0.1:{port}" in last  # the one line naming the busy address
    assert fleet.events("child_started") == []
    assert fleet_rows(db_url) == []  # not even registered


def test_table_reads_back_the_snapshot_the_probe_serves(fleet, db_url):
    """What the heartbeat writes and the status views read back is the
    snapshot the probe serves: one type, the same facts."""
    from procrastinate_prefork.fleet import snapshot, status

    port = free_port()
    fleet.start(
        "--concurrency",
        "2",
        "--queues",
        "default,other",
        "--health-port",
        str(port),
        *FAST,
        app=HEALTH_APP,
    )
    pids = fleet.wait_children(2)

    def both() -> tuple[Any, Any] | None:
        _, served = probe(port, "/status")
        with psycopg.connect(db_url, autocommit=True) as conn:
            [read] = snapshot.from_rows(status.fetch_rows_psycopg(conn))
        if sorted(c.pid for c in read.children) != pids or read.phase != "running":
            return None  # the table is one heartbeat behind the probe
        return served, read

    served, read = wait_for(both, timeout=10, message="the children in the table")
    assert (read.host, read.pid, read.phase) == (
        served["host"],
        served["pid"],
        served["phase"],
    )
    assert (read.concurrency, list(read.queues or ())) == (
        served["concurrency"],
        served["queues"],
    )
    assert read.crash_looping is served["crash_loop"] is False
    assert (read.heartbeat_interval, read.stalled_timeout) == (0.5, 2.0)
    assert [(c.slot, c.pid) for c in read.children] == [
        (c["slot"], c["pid"]) for c in served["children"]
    ]
    for child in read.children:
        assert child.worker_id and child.state == "idle" and child.rss_bytes
        assert 0 <= child.heartbeat_age < 2 and child.started_at is not None
    assert fleet.stop() == 0


# ---------------------------------------------------------- status command


def test_status_command(fleet, db_url):
    fleet.start("--concurrency", "2", *FAST, app=HEALTH_APP)
    pids = fleet.wait_children(2)
    wait_for(
        lambda: len(children_rows(db_url, fleet.pid)) == 2,
        timeout=5,
        message="child rows",
    )
    text = status_cli(db_url)
    assert text.returncode == 0, text.stderr
    header, *lines = text.stdout.splitlines()
    assert re.split(r"\s{2,}", header) == [
        "HOST",
        "PID",
        "SLOT",
        "STATE",
        "QUEUES",
        "JOB",
        "UPTIME",
        "HEARTBEAT",
        "AS OF",
        "JOBS DONE",
        "MEMORY",
    ]
    assert str(fleet.pid) in lines[0] and "running" in lines[0]
    for pid in pids:
        assert any(line.split()[0] == str(pid) and "idle" in line for line in lines)
    assert "HEALTHY: 1 fresh supervisor(s), 2 fresh child(ren)" in text.stdout

    document = json.loads(status_cli(db_url, "--json").stdout)
    assert document["status"] == "healthy"
    [sup] = document["supervisors"]
    assert sup["pid"] == fleet.pid
    assert sorted(c["pid"] for c in sup["children"]) == pids

    check = status_cli(db_url, "--check")
    assert (check.returncode, check.stdout.strip()) == (
        0,
        "healthy: 1 supervisor(s), 2 child(ren)",
    )
    check = status_cli(db_url, "--check", "--min-children", "3")
    assert check.returncode == 1 and "fewer than min_children=3" in check.stdout
    assert status_cli(db_url, "--check", "--host", "elsewhere").returncode == 1
    bad = status_cli(db_url, "--min-children", "many")
    assert bad.returncode == 2 and "min_children" in bad.stderr

    assert fleet.stop() == 0
    check = status_cli(db_url, "--check")
    assert check.returncode == 1 and "no fresh supervisor" in check.stdout


def test_sigstopped_supervisor_goes_stale(fleet, db_url, django_view):
    fleet.start("--concurrency", "1", *FAST, app=HEALTH_APP)
    wait_for(
        lambda: status_cli(db_url, "--check").returncode == 0,
        timeout=10,
        message="a healthy fleet",
    )
    assert django_view.get(db_url, "/prefork/")[0][0] == 200
    os.kill(fleet.pid, signal.SIGSTOP)
    stopped_at = time.monotonic()
    try:
        wait_for(
            lambda: status_cli(db_url, "--check").returncode == 1,
            timeout=10,
            interval=0.2,
            message="the fleet to turn unhealthy",
        )
        took = time.monotonic() - stopped_at
        # stalled timeout 2 s + one heartbeat interval + one status command run
        assert took < 2 + 0.5 + 2.0, took
        [(status, body)] = django_view.get(db_url, "/prefork/")
        assert status == 503 and body["problems"][0] == "no fresh supervisor"
        assert body["supervisors"][0]["fresh"] is False
    finally:
        os.kill(fleet.pid, signal.SIGCONT)
    wait_for(
        lambda: status_cli(db_url, "--check").returncode == 0,
        timeout=10,
        message="the fleet to be healthy again",
    )
    assert fleet.stop() == 0


# ------------------------------------------------------------------ secrets


def test_secrets_never_show(fleet, db_url, django_view):
    secret_url = with_password(db_url, SECRET_PASSWORD)
    port = free_port()
    fleet.db_url = secret_url  # the fleet's DATABASE_URL holds a password
    fleet.start("--concurrency", "2", "--health-port", str(port), *FAST, app=HEALTH_APP)
    defer(db_url, "secret_sleep", seconds=30, token=SECRET_ARG)
    fleet.busy_child()
    wait_for(
        lambda: any(r["job_id"] for r in children_rows(db_url, fleet.pid)),
        timeout=5,
        message="the job in the fleet table",
    )
    outputs = {
        path: json.dumps(probe(port, path)) for path in ("/live", "/ready", "/status")
    }
    assert "secret_sleep" in outputs["/status"]
    outputs["status"] = status_cli(secret_url).stdout
    outputs["status --json"] = status_cli(secret_url, "--json").stdout
    assert (
        "secret_sleep" in outputs["status"]
        and "secret_sleep" in outputs["status --json"]
    )
    [(code, body)] = django_view.get(secret_url, "/prefork/")
    assert code == 200
    outputs["view"] = json.dumps(body)
    assert "secret_sleep" in outputs["view"]
    assert fleet.stop(timeout=60) is not None
    outputs["log"] = fleet.log()
    assert "Starting job secret_sleep[" in outputs["log"]  # INFO is on
    for name, text in outputs.items():
        assert SECRET_ARG not in text, name
        assert SECRET_PASSWORD not in text, name


# ------------------------------------------------------------------ Django


def test_django_view_with_a_real_fleet(fleet, db_url, django_view):
    fleet.start("--concurrency", "2", *FAST, app=HEALTH_APP)
    pids = fleet.wait_children(2)
    wait_for(
        lambda: len(children_rows(db_url, fleet.pid)) == 2,
        timeout=5,
        message="child rows",
    )
    results = django_view.get(
        db_url,
        "/prefork/",
        "/prefork/?min_children=3",
        "/prefork/?host=elsewhere",
        "/prefork/?queue=anything&min_children=2",
        "/prefork/?min_children=-1",
        "/prefork/?min_children=two",
        "/prefork/?verbose=1",
        "/prefork/?min_children=1&min_children=2",
    )
    (ok, body), (few, few_body), (host, _), (queue, _), *bad = results
    assert ok == 200 and body["status"] == "healthy"
    [sup] = body["supervisors"]
    assert sup["pid"] == fleet.pid and sup["fresh"] and sup["concurrency"] == 2
    assert sorted(c["pid"] for c in sup["children"]) == pids
    child = sup["children"][0]
    assert {
        "slot",
        "pid",
        "worker_id",
        "state",
        "job_id",
        "task_name",
        "job_age",
        "jobs_done",
        "restarts",
        "rss_bytes",
        "started_at",
        "last_heartbeat",
        "heartbeat_age",
        "uptime",
        "fresh",
    } <= set(child)
    assert 0 <= child["heartbeat_age"] < 2 and child["state"] == "idle"
    assert few == 503 and few_body["problems"] == [
        "2 fresh child(ren), fewer than min_children=3"
    ]
    assert host == 503
    assert queue == 200  # a fleet without --queues works on every queue
    assert [status for status, _ in bad] == [400, 400, 400, 400]
    assert all(body["status"] == "error" and body["error"] for _, body in bad)
    assert "unknown parameter 'verbose'" in bad[2][1]["error"]

    methods = django_view.responses(
        db_url, "/prefork/", ["POST", "PUT", "DELETE", "PATCH", "HEAD"]
    )
    assert [m.status_code for m in methods] == [405, 405, 405, 405, 200]
    assert methods[0]["Allow"] == "GET, HEAD"
    assert json.loads(methods[0].content)["error"] == "method POST not allowed"
    assert fleet.stop() == 0
    [(status, body)] = django_view.get(db_url, "/prefork/")
    assert status == 503 and body["supervisors"] == []


def test_django_view_edge_cases(db_url, django_view):
    assert django_view.get(db_url, "/prefork/")[0][0] == 503  # empty table
    insert_supervisor(db_url, host="a", pid=100, queues=["mail"])
    insert_supervisor(db_url, host="b", pid=200, age=3600)  # stale
    insert_supervisor(db_url, host="c", pid=300, crash_loop=True)
    insert_supervisor(db_url, host="d", pid=400, child_state="starting")
    results = django_view.get(
        db_url,
        "/prefork/",
        "/prefork/?host=a",
        "/prefork/?host=b",
        "/prefork/?host=c",
        "/prefork/?host=d",
        "/prefork/?host=d&min_children=0",
        "/prefork/?queue=mail",
        "/prefork/?queue=reports&min_children=2",
    )
    (
        (all_status, everything),
        (a, _),
        (b, b_body),
        (c, c_body),
        (d, _),
        (d0, _),
        (mail, mail_body),
        (reports, reports_body),
    ) = results
    assert all_status == 503  # c is in a crash loop
    assert "supervisor pid 300 on c is in a crash loop" in everything["problems"]
    assert any("pid 200 on b" in w for w in everything["warnings"])
    assert everything["fresh_supervisors"] == 3 and everything["fresh_children"] == 4
    assert (a, b, c, d, d0) == (200, 503, 503, 503, 200)
    assert b_body["problems"][0] == "no fresh supervisor (host=b)"
    assert c_body["supervisors"][0]["crash_loop"] is True
    assert mail == 503  # c (all queues) crash-loops
    assert {s["host"] for s in mail_body["supervisors"]} == {"a", "b", "c", "d"}
    assert reports == 503 and {s["host"] for s in reports_body["supervisors"]} == {
        "b",
        "c",
        "d",
    }

    commands = subprocess.run(
        [sys.executable, str(MANAGE), "prefork_status", "--host", "a"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env=django_env(db_url),
    )
    assert commands.returncode == 0, commands.stderr
    assert "100" in commands.stdout and "HEALTHY" in commands.stdout
    check = subprocess.run(
        [sys.executable, str(MANAGE), "prefork_status", "--check", "--json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env=django_env(db_url),
    )
    assert check.returncode == 1
    assert json.loads(check.stdout)["status"] == "unhealthy"


def test_django_view_without_the_table(empty_db_url, django_view):
    [(status, body)] = django_view.get(empty_db_url, "/prefork/")
    assert status == 503
    assert body["problems"] == ["cannot read the fleet table: ProgrammingError"]
    [(status, body)] = django_view.get(empty_db_url, "/prefork/", authorization=None)
    assert (status, body) == (503, {"status": "unhealthy"})


def _keys(document: Any) -> set[str]:
    if isinstance(document, list):
        return set().union(*map(_keys, document)) if document else set()
    if isinstance(document, dict):
        return set(document).union(*map(_keys, document.values()))
    return set()


#: keys that tell a stranger about the fleet
FLEET_DETAILS = {
    "host",
    "pid",
    "rss_bytes",
    "task_name",
    "job_id",
    "supervisors",
    "children",
    "problems",
    "warnings",
}


def test_django_view_tells_strangers_the_status_only(db_url, django_view, settings):
    """Probes need no login: without staff or the token they get the code, the
    word and the counts; a wrong token is no token."""
    sup = insert_supervisor(db_url, host="host-HIDDEN-1", pid=100)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE procrastinate_prefork_processes SET state = 'busy', job_id = 9,"
            " task_name = 'task-HIDDEN' WHERE supervisor_id = %s AND slot = 1",
            [sup],
        )
    paths = ("/prefork/", "/prefork/?min_children=3")
    strangers = {
        "anonymous": None,
        "wrong token": "Bearer view-token-5531-c0ffeX",
        "token's prefix": DjangoView.BEARER[:-1],
        "token and more": DjangoView.BEARER + "0",
        "another scheme": f"Basic {VIEW_TOKEN}",
        "no scheme": VIEW_TOKEN,
    }
    for name, authorization in strangers.items():
        got = django_view.get(db_url, *paths, authorization=authorization)
        assert got == [
            (200, {"status": "healthy", "fresh_supervisors": 1, "fresh_children": 2}),
            (503, {"status": "unhealthy", "fresh_supervisors": 1, "fresh_children": 2}),
        ], name
        assert not _keys([body for _, body in got]) & FLEET_DETAILS, name
        assert "HIDDEN" not in json.dumps(got), name
    bad = django_view.get(
        db_url, "/prefork/?min_children=two", "/prefork/?verbose=1", authorization=None
    )
    assert [code for code, _ in bad] == [400, 400]
    assert all(body["status"] == "error" for _, body in bad)

    (ok, body), (few, few_body) = django_view.get(db_url, *paths)  # the token
    assert (ok, few) == (200, 503)
    assert body["supervisors"][0]["host"] == "host-HIDDEN-1"
    assert "task-HIDDEN" in json.dumps(body)
    assert few_body["problems"] == ["2 fresh child(ren), fewer than min_children=3"]

    # no token configured: no bearer gets the details, not even an empty one
    for token, authorization in [("", "Bearer "), ("", "Bearer"), (None, None)]:
        settings.PROCRASTINATE_PREFORK_HEALTH_TOKEN = token
        [(_, body)] = django_view.get(db_url, "/prefork/", authorization=authorization)
        assert not _keys(body) & FLEET_DETAILS, (token, authorization)
    del settings.PROCRASTINATE_PREFORK_HEALTH_TOKEN
    [(_, body)] = django_view.get(db_url, "/prefork/")
    assert not _keys(body) & FLEET_DETAILS


@pytest.mark.django_db
def test_django_view_details_are_for_staff(client, admin_client, django_user_model):
    from django.db import connection

    with connection.cursor() as cursor:
        insert_supervisor(cursor, host="staff-host", pid=4321)
    staff = admin_client.get("/prefork/")
    assert staff.status_code == 200
    [sup] = staff.json()["supervisors"]
    assert (sup["host"], sup["pid"]) == ("staff-host", 4321)
    client.force_login(django_user_model.objects.create_user("plain", password="pw"))
    plain = client.get("/prefork/")
    assert plain.status_code == 200
    assert plain.json() == {
        "status": "healthy",
        "fresh_supervisors": 1,
        "fresh_children": 2,
    }


def test_django_health_check_backend(db_url, django_view):
    pytest.importorskip("health_check")
    insert_supervisor(db_url, host="a", pid=100)
    assert django_view.health_check(db_url) is None
    assert django_view.health_check(db_url, min_children=5).endswith(
        "navailable: 2 fresh child(ren), fewer than min_children=5"
    )
    assert "no fresh supervisor (host=z)" in django_view.health_check(db_url, host="z")


@pytest.mark.django_db
def test_admin_is_read_only_and_migrations_are_complete(admin_client):
    from django.core.management import call_command
    from django.db import connection

    # pytest-django's test database was built by the migrations: no change left
    call_command(
        "makemigrations", "--check", "--dry-run", "procrastinate_prefork", verbosity=0
    )
    with connection.cursor() as cursor:
        sup_id = insert_supervisor(cursor, host="admin-host", pid=4321)
    base = "/admin/procrastinate_prefork/fleetprocess/"
    changelist = admin_client.get(base)
    view = admin_client.get(f"{base}{sup_id}/change/")
    add = admin_client.get(f"{base}add/")
    delete = admin_client.get(f"{base}{sup_id}/delete/")
    post = admin_client.post(f"{base}{sup_id}/change/")
    body = changelist.content.decode()
    assert changelist.status_code == 200 and "admin-host" in body
    assert "4321" in body and "4322" in body
    assert view.status_code == 200 and "admin-host" in view.content.decode()
    assert 'name="_save"' not in view.content.decode()
    assert (add.status_code, delete.status_code, post.status_code) == (403, 403, 403)
    from procrastinate_prefork.contrib.django.models import FleetProcess, ReadOnlyError

    assert FleetProcess.objects.count() == 3
    with pytest.raises(ReadOnlyError):
        FleetProcess.objects.filter(pk=sup_id).delete()


PINNED_DOCUMENT = REPO / "tests" / "integration" / "fleet_document.json"
#: Fields whose values follow the clock (or a sequence): checked for their type,
#: not pinned.
_CLOCK_FIELDS = {
    "id": int,
    "started_at": str,
    "last_heartbeat": str,
    "heartbeat_age": float,
    "uptime": float,
    "job_age": float,  # or None: no job
    "as_of_age": float,
}


def _unclocked(document: Any) -> Any:
    if isinstance(document, list):
        return [_unclocked(item) for item in document]
    if isinstance(document, str):  # an age in a warning's text
        return re.sub(r"for \d+ s\b", "for <clock> s", document)
    if not isinstance(document, dict):
        return document
    out = {}
    for name, value in document.items():
        if name in _CLOCK_FIELDS and value is not None:
            assert isinstance(value, _CLOCK_FIELDS[name]), (name, value)
            value = "<clock>"
        out[name] = _unclocked(value)
    return out


def test_status_json_and_view_are_pinned_on_real_rows(db_url, django_view):
    """The document from real table rows, every field and its place: ``status
    --json`` and the health view give the same one."""
    busy = insert_supervisor(db_url, host="a", pid=100, queues=["mail"])
    insert_supervisor(db_url, host="b", pid=200, age=3600, crash_loop=True)
    gone = insert_supervisor(db_url, host="c", pid=300)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE procrastinate_prefork_processes SET state = 'busy', job_id = 9,"
            " task_name = 'sleep', job_started_at = now() - interval '2 h',"
            " restarts = 1 WHERE supervisor_id = %s AND slot = 1",
            [busy],
        )
        conn.execute(
            "UPDATE procrastinate_prefork_processes SET state = 'stopped'"
            " WHERE id = %s OR supervisor_id = %s",
            [gone, gone],
        )
    cli = status_cli(db_url, "--json")
    assert cli.returncode == 0, cli.stderr
    [(code, view)] = django_view.get(db_url, "/prefork/")
    assert code == 200  # b's crash loop is stale: a warning
    raw = json.loads(cli.stdout)
    assert 7200 <= raw["supervisors"][0]["children"][1]["job_age"] < 7200 + 60
    [stale] = raw["warnings"]
    assert 3600 <= int(re.findall(r"for (\d+) s", stale)[0]) < 3600 + 60
    document = _unclocked(raw)
    assert json.dumps(_unclocked(view)) == json.dumps(document)
    assert json.dumps(document, indent=1) == PINNED_DOCUMENT.read_text().strip()
    from procrastinate_prefork.contrib.django.views import PUBLIC_KEYS

    [(code, public)] = django_view.get(db_url, "/prefork/", authorization=None)
    assert code == 200  # a stranger: the same verdict, none of the details
    assert public == {key: raw[key] for key in PUBLIC_KEYS}
