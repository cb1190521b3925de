"""The Django integration against a real PostgreSQL with real processes.

``manage.py`` of the demo project runs with the test settings of
``tests/django_project`` (the demo's settings plus test tasks, a worker
middleware recording which process ran each job, and switches for the
variants under test). Each test gets a fresh database cloned from a template
that ``manage.py migrate`` built once: the schema comes from the Django
migrations, as in a real project.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from ..conftest import fresh_database
from ..fleet_helper import (
    REPO,
    Fleet,
    FleetFactory,
    defer,
    jobs,
    status_counts,
    wait_for,
)

django = pytest.importorskip("django")  # the tox env without Django skips this module

MANAGE = REPO / "demo_project" / "manage.py"
SETTINGS = "tests.django_project.settings"


def manage(*args: str) -> list[str]:
    return [sys.executable, str(MANAGE), *args]


def django_env(db_url: str, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": SETTINGS,
        "DATABASE_URL": db_url,
        "PYTHONPATH": str(REPO),
        **extra,
    }


@pytest.fixture(scope="session")
def django_template_url(pg_url: str) -> Iterator[str]:
    """A database migrated by ``manage.py migrate``, cloned by each test."""
    with fresh_database(pg_url, "prefork_django_template") as url:
        result = subprocess.run(
            manage("migrate", "-v0"),
            env=django_env(url),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        yield url


@pytest.fixture
def django_db_url(pg_url: str, django_template_url: str) -> Iterator[str]:
    with fresh_database(pg_url, "prefork_django", django_template_url) as url:
        yield url


@pytest.fixture
def dj_fleet(django_db_url: str, tmp_path) -> Iterator[Fleet]:
    """A fleet handle for ``manage.py prefork_worker`` (not started)."""
    factory = FleetFactory(django_db_url, tmp_path)
    yield factory.new()
    factory.cleanup()


def start_worker(
    fleet: Fleet, *args: str, wait_ready: bool = True, **env: str
) -> Fleet:
    return fleet.start(
        command=manage("prefork_worker", *args),
        env={"DJANGO_SETTINGS_MODULE": SETTINGS, **env},
        wait_ready=wait_ready,
    )


def run_worker(fleet: Fleet, *args: str, timeout: float = 90, **env: str) -> int:
    start_worker(fleet, *args, wait_ready=False, **env)
    return fleet.wait(timeout=timeout)


def middleware_names(fleet: Fleet) -> set[str]:
    """The task middleware of the workers, as the recording middleware saw it."""
    names: set[str] = set()
    for path in fleet.results.glob("*.start"):
        names.update(path.read_text().split()[2].split(","))
    return names


def other_sessions(db_url: str) -> list[tuple[Any, ...]]:
    """Client sessions on the database that are neither the fleet's own
    (procrastinate connectors, named ``prefork:...``) nor this one: Django's."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        return conn.execute(
            "SELECT pid, application_name, state, query FROM pg_stat_activity "
            "WHERE datname = current_database() AND backend_type = 'client backend' "
            "AND pid <> pg_backend_pid() AND application_name NOT LIKE 'prefork:%%'"
        ).fetchall()


DEMO_MIX = [
    ("demo_app.tasks.cpu_bound", 20, {"ms": 20}),
    ("demo_app.tasks.sleeping", 8, {"ms": 50}),
    ("demo_app.tasks.flaky", 4, {"fail_times": 1}),
    ("demo_app.tasks.async_sleep", 8, {"ms": 50}),
    ("tests.orm_sync", 4, {}),
    ("tests.orm_async", 4, {}),
]


def test_prefork_worker_drains_the_demo_tasks(dj_fleet, django_db_url):
    ids = {
        task: defer(django_db_url, task, count, **kwargs)
        for task, count, kwargs in DEMO_MIX
    }
    all_ids = [i for task_ids in ids.values() for i in task_ids]
    code = run_worker(dj_fleet, "--concurrency", "2", "--one-shot")
    assert code == 0, dj_fleet.log()

    rows = jobs(django_db_url, all_ids)
    assert {row["status"] for row in rows} == {"succeeded"}, rows
    ends = dj_fleet.marks("end")
    # the flaky ones failed on attempt 0, then their retry succeeded
    flaky = set(ids["demo_app.tasks.flaky"])
    assert sorted(
        (j, a) for j, a, _ in dj_fleet.marks("start") if j in flaky
    ) == sorted((j, a) for j in flaky for a in (0, 1))
    assert {a for j, a, _ in ends if j in flaky} == {1}
    assert sorted(job_id for job_id, _, _ in ends) == sorted(all_ids)
    pids = {pid for _, _, pid in ends}
    assert len(pids) == 2, pids
    assert dj_fleet.pid not in pids
    # procrastinate's Django DB-cleanup middleware survived into the children,
    # next to the user's own worker defaults (the recording middleware)
    assert {"close_db_connections", "close_db_connections_async"} <= middleware_names(
        dj_fleet
    )
    # the only tracebacks are those procrastinate logs for the flaky failures
    log = dj_fleet.log()
    assert (
        log.count("Traceback")
        == log.count("RuntimeError: flaky: failing")
        == len(flaky)
    )


def test_async_orm_in_the_parent_before_fork(dj_fleet, django_db_url):
    """The supervisor process used Django's async ORM (asgiref's thread-sensitive
    thread, which holds a connection of its own) before forking: the children's
    thread-sensitive calls still complete, and no connection leaks."""
    start_worker(
        dj_fleet,
        "--concurrency",
        "2",
        PREFORK_TEST_PARENT_ASYNC_ORM="1",
        PREFORK_TEST_CONN_MAX_AGE="0",
    )
    # the scenario did happen: the hook ran in the supervisor with a live thread
    [parent_marker] = dj_fleet.results.glob("parent-*.threads")
    assert parent_marker.name == f"parent-{dj_fleet.pid}.threads"
    assert "ThreadPoolExecutor" in parent_marker.read_text()

    ids = defer(django_db_url, "tests.orm_async", 6) + defer(
        django_db_url, "tests.orm_sync", 6
    )
    # a child whose thread-sensitive executor was inherited from the parent
    # would hang on its first async ORM call (or on the DB-cleanup middleware)
    wait_for(
        lambda: all(r["status"] == "succeeded" for r in jobs(django_db_url, ids)),
        timeout=20,
        message="the ORM jobs to succeed",
    )
    assert len({pid for _, _, pid in dj_fleet.marks("end")} - {dj_fleet.pid}) >= 1
    assert dj_fleet.pid not in {pid for _, _, pid in dj_fleet.marks("end")}

    # CONN_MAX_AGE = 0: the DB-cleanup middleware closes the connection each job
    # opened (in a pool thread or the thread-sensitive thread), and the parent's
    # thread-sensitive connection was closed before the fork
    wait_for(
        lambda: not other_sessions(django_db_url),
        timeout=5,
        message=f"Django's connections to be closed: {other_sessions(django_db_url)}",
    )
    assert dj_fleet.stop() == 0, dj_fleet.log()


@pytest.mark.skipif(django.VERSION < (5, 1), reason="connection pools need Django 5.1+")
@pytest.mark.parametrize(
    "parent_used_it", [False, True], ids=["fresh", "opened-in-parent"]
)
def test_django_connection_pool(dj_fleet, django_db_url, parent_used_it):
    """``OPTIONS["pool"]``: when the parent opened the pool (async ORM in an
    ON_APP_READY hook), it is closed before the fork and each child opens its own."""
    env = {"PREFORK_TEST_DJANGO_POOL": "1"}
    if parent_used_it:
        env["PREFORK_TEST_PARENT_ASYNC_ORM"] = "1"
    ids = defer(django_db_url, "tests.orm_sync", 10) + defer(
        django_db_url, "tests.orm_async", 10
    )
    code = run_worker(dj_fleet, "--concurrency", "2", "--one-shot", **env)
    assert code == 0, dj_fleet.log()
    assert {r["status"] for r in jobs(django_db_url, ids)} == {"succeeded"}
    assert len({pid for _, _, pid in dj_fleet.marks("end")}) == 2
    assert "Traceback" not in dj_fleet.log()


def one_error_line(fleet) -> str:
    """The one error line (Django may print its usage first), for the test
    to check the option or setting it names."""
    log = fleet.log()
    lines = [line for line in log.splitlines() if "error:" in line.lower()]
    assert len(lines) == 1, log
    assert "Traceback" not in log
    assert fleet.events("child_started") == []  # nothing forked
    return lines[0]


@pytest.mark.parametrize("value", ["0", "-3", "many"])
def test_bad_concurrency_exits_2(dj_fleet, value):
    assert run_worker(dj_fleet, "--concurrency", value, timeout=30) == 2
    assert "--concurrency" in one_error_line(dj_fleet)


def test_unknown_option_exits_2(dj_fleet):
    assert run_worker(dj_fleet, "--no-such-option", timeout=30) == 2
    line = one_error_line(dj_fleet)
    assert "--no-such-option" in line


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ('{"concurency": 2}', "concurency"),
        ('{"concurrency": 0}', "PROCRASTINATE_PREFORK['concurrency']"),
        ('{"concurrency": "4"}', "PROCRASTINATE_PREFORK['concurrency']"),
        ('["concurrency"]', "PROCRASTINATE_PREFORK"),
    ],
)
def test_bad_prefork_setting_exits_2(dj_fleet, setting, expected):
    code = run_worker(dj_fleet, timeout=30, PREFORK_TEST_PREFORK_SETTINGS=setting)
    assert code == 2
    assert expected in one_error_line(dj_fleet)


def test_prefork_setting_configures_the_fleet(dj_fleet):
    start_worker(dj_fleet, PREFORK_TEST_PREFORK_SETTINGS='{"concurrency": 3}')
    assert len(dj_fleet.wait_children(3)) == 3
    assert dj_fleet.stop() == 0


def test_sigterm_drains_and_exits_0(dj_fleet, django_db_url):
    start_worker(dj_fleet, "--concurrency", "2")
    ids = defer(django_db_url, "demo_app.tasks.sleeping", 2, ms=1500)
    wait_for(lambda: len(dj_fleet.marks("start")) == 2, message="both jobs started")
    dj_fleet.signal(signal.SIGTERM)
    assert dj_fleet.wait(timeout=20) == 0, dj_fleet.log()
    assert [r["status"] for r in jobs(django_db_url, ids)] == ["succeeded", "succeeded"]
    assert status_counts(django_db_url).get("doing", 0) == 0
    assert len(dj_fleet.marks("end")) == 2


def test_demo_command(django_db_url, tmp_path):
    """``manage.py demo`` (what scripts/demo.sh runs after migrate), scaled down."""
    result = subprocess.run(
        manage("demo", "--jobs-scale", "0.05", "--concurrency", "2"),
        # TMPDIR: where the demo writes the fleet's log
        env=django_env(django_db_url, TMPDIR=str(tmp_path)),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    # 200, 100, 20 and 50 jobs at scale 1
    assert re.search(
        r"^All 19 jobs succeeded in [\d.]+ s \([\d.]+ jobs/s\) on 2 children\.$",
        result.stdout,
        re.MULTILINE,
    ), output
    assert status_counts(django_db_url) == {"succeeded": 19}
    children = re.findall(
        r"^ +child (\d) \(pid \d+, worker \d+\) +(\d+)", result.stdout, re.MULTILINE
    )
    assert sorted(slot for slot, _ in children) == ["0", "1"], output
    assert sum(int(count) for _, count in children) == 19
    assert "exit code 0" in result.stdout
    assert list(tmp_path.glob("prefork-demo-*.log"))


NEW_COLUMNS = {"job_ids", "boot_id", "pid_namespace", "process_start"}


def _fleet_columns(db_url: str) -> set[str]:
    with psycopg.connect(db_url, autocommit=True) as conn:
        return {
            name
            for (name,) in conn.execute(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_name = 'procrastinate_prefork_processes'"
            ).fetchall()
        }


def test_migration_0003_adds_and_drops_the_new_columns(django_db_url):
    assert NEW_COLUMNS <= _fleet_columns(django_db_url)
    for target, present in ((["procrastinate_prefork", "0001"], False), ([], True)):
        result = subprocess.run(
            manage("migrate", *target, "-v0"),
            env=django_env(django_db_url),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert (NEW_COLUMNS <= _fleet_columns(django_db_url)) is present
        assert not (NEW_COLUMNS & _fleet_columns(django_db_url)) or present


def _migrating_back_and_forth(django_db_url, before, check, expected):
    """Migrate our app back to ``before`` (``check`` then finds nothing) and
    forward again (it finds ``expected``)."""
    assert check() == expected
    for target, found in ((["procrastinate_prefork", before], set()), ([], expected)):
        result = subprocess.run(
            manage("migrate", *target, "-v0"),
            env=django_env(django_db_url),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert check() == found


def test_migration_0004_adds_and_drops_the_job_indexes(django_db_url):
    from .test_schema_upgrade import JOB_INDEXES, _job_indexes

    def indexes() -> set[str]:
        with psycopg.connect(django_db_url, autocommit=True) as conn:
            return _job_indexes(conn)

    _migrating_back_and_forth(django_db_url, "0003", indexes, JOB_INDEXES)


def test_migration_0005_adds_and_drops_the_sweep_table_and_queue_counts(
    django_db_url,
):
    from .test_schema_upgrade import SWEEP_AND_COUNTS, _sweep_and_counts

    def present() -> set[str]:
        with psycopg.connect(django_db_url, autocommit=True) as conn:
            return _sweep_and_counts(conn)

    _migrating_back_and_forth(django_db_url, "0004", present, SWEEP_AND_COUNTS)


def test_migration_0006_adds_and_drops_the_live_page_tables(django_db_url):
    from .test_schema_upgrade import LIVE_PAGE, _live_page

    def present() -> set[str]:
        with psycopg.connect(django_db_url, autocommit=True) as conn:
            return _live_page(conn)

    _migrating_back_and_forth(django_db_url, "0005", present, LIVE_PAGE)


@pytest.mark.skipif(
    sys.version_info < (3, 12),
    reason="Python warns about fork() with threads from 3.12",
)
def test_forks_without_threads(dj_fleet, django_db_url):
    """Django's async ORM used in the supervisor before the first fork, a
    Django 5.1+ psycopg pool (threads of its own), the probe port, a re-fork:
    no thread at any fork (tests/integration/test_fork_hygiene.py)."""
    from .test_fork_hygiene import WARNINGS_ON, exercise_forks
    from .test_health import free_port

    env = {**WARNINGS_ON, "PREFORK_TEST_PARENT_ASYNC_ORM": "1"}
    if django.VERSION >= (5, 1):
        env["PREFORK_TEST_DJANGO_POOL"] = "1"
    start_worker(
        dj_fleet, "--concurrency", "2", "--health-port", str(free_port()), **env
    )
    exercise_forks(dj_fleet, django_db_url, "tests.orm_sync")


# ------------------------------------------------------- system checks


def check_ids() -> list[str]:
    from django.core import checks

    return sorted(
        m.id for m in checks.run_checks() if m.id.startswith("procrastinate_prefork")
    )


@pytest.mark.parametrize(
    ("setting", "ids"),
    [
        ({"concurency": 2}, ["procrastinate_prefork.E002"]),
        ({"concurrency": "4"}, ["procrastinate_prefork.E003"]),
        ({"concurrency": 0, "health_port": 70000}, ["procrastinate_prefork.E003"] * 2),
        ({"wait": "no"}, ["procrastinate_prefork.E003"]),
        ({"heartbeat_interval": 20}, ["procrastinate_prefork.E004"]),
        (["concurrency"], ["procrastinate_prefork.E001"]),
        (
            {"pools": {"io": {"queues": ["emails"], "health_port": 8001}}},
            ["procrastinate_prefork.E007"],
        ),
        ({"pools": {"IO": {"queues": ["emails"]}}}, ["procrastinate_prefork.E007"]),
        (
            {"pools": {"a": {"queues": ["x"]}, "b": {"queues": ["x", "y"]}}},
            ["procrastinate_prefork.E008"],
        ),
        (
            {"queues": ["x"], "pools": {"a": {"queues": ["x"]}}},
            ["procrastinate_prefork.E008"],
        ),
        (
            {
                "job_timeout": 600,
                "pools": {
                    "cpu": {"queues": ["reports"], "concurrency": 4},
                    "io": {"queues": ["emails"], "child_concurrency": 50},
                },
            },
            [],
        ),
        (
            {
                "concurrency": 4,
                "queues": ["a", "b"],
                "wait": False,
                "health_port": 8001,
            },
            [],
        ),
    ],
)
def test_system_checks_report_bad_settings(settings, setting, ids):
    settings.PROCRASTINATE_PREFORK = setting
    assert check_ids() == ids


def test_system_check_unknown_key_suggests(settings):
    from django.core import checks

    settings.PROCRASTINATE_PREFORK = {"concurency": 2}
    [message] = [m for m in checks.run_checks() if m.id == "procrastinate_prefork.E002"]
    assert "'concurrency'" in message.msg


@pytest.mark.parametrize(
    ("token", "ids"),
    [
        (b"bytes-SECRET-1", ["procrastinate_prefork.E006"]),
        (["list-SECRET-2"], ["procrastinate_prefork.E006"]),
        ("", []),
        ("str-token", []),
    ],
)
def test_system_check_health_token(settings, token, ids):
    from django.core import checks

    settings.PROCRASTINATE_PREFORK_HEALTH_TOKEN = token
    assert check_ids() == ids
    assert not any("SECRET" in str(m) for m in checks.run_checks())


@pytest.mark.parametrize(
    ("env", "check_id"),
    [
        ({"PREFORK_TEST_PREFORK_SETTINGS": '{"concurrency": "4"}'}, "E003"),
        ({"PREFORK_TEST_PREFORK_FIRST": "1"}, "E005"),
    ],
)
def test_manage_py_check_exits_1_with_the_ids(django_db_url, env, check_id):
    result = subprocess.run(
        manage("check"),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env=django_env(django_db_url, **env),
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"(procrastinate_prefork.{check_id})" in result.stderr


# the demo's LOGGING format: "<asctime> <levelname> <name> <message>"
LOGGING_LINE = re.compile(
    r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (?P<level>[A-Z]+) (?P<logger>\S+) "
)


def test_without_logging_options_logging_keeps_its_format(dj_fleet, django_db_url):
    ids = defer(django_db_url, "demo_app.tasks.sleeping", 2, ms=10)
    code = run_worker(dj_fleet, "--concurrency", "1", "--one-shot")
    assert code == 0, dj_fleet.log()
    assert {r["status"] for r in jobs(django_db_url, ids)} == {"succeeded"}
    lines = [LOGGING_LINE.match(line) for line in dj_fleet.log().splitlines()]
    loggers = {(m["level"], m["logger"]) for m in lines if m}
    assert ("INFO", "procrastinate_prefork.supervisor") in loggers, dj_fleet.log()
    assert any(name.startswith("procrastinate.worker") for _, name in loggers)


def _records(fleet: Fleet) -> list[dict[str, Any]]:
    """Every line of the output, as JSON: fails on a line that is not."""
    return [json.loads(line) for line in fleet.log().splitlines() if line.strip()]


@pytest.mark.parametrize("source", ["command line", "setting"])
def test_log_format_json_applies_under_logging(dj_fleet, django_db_url, source):
    """--log-format json (or the setting) under the demo's LOGGING: every line
    of the supervisor's and the children's output is one JSON object."""
    ids = defer(django_db_url, "demo_app.tasks.sleeping", 2, ms=10)
    args, env = ["--concurrency", "1", "--one-shot"], {}
    if source == "command line":
        args += ["--log-format", "json"]
    else:
        env["PREFORK_TEST_PREFORK_SETTINGS"] = '{"log_format": "json"}'
    assert run_worker(dj_fleet, *args, **env) == 0, dj_fleet.log()
    assert {r["status"] for r in jobs(django_db_url, ids)} == {"succeeded"}
    records = _records(dj_fleet)
    roles = {(r["role"], r["logger"].split(".")[0]) for r in records}
    assert {("supervisor", "procrastinate_prefork"), ("child", "procrastinate")} <= (
        roles
    ), records
    assert [r for r in records if r.get("action") == "banner"]


@pytest.mark.parametrize(
    ("level", "seen", "unseen"),
    [("warning", set(), {"DEBUG", "INFO"}), ("debug", {"DEBUG", "INFO"}, set())],
)
def test_log_level_applies_under_logging(dj_fleet, django_db_url, level, seen, unseen):
    """--log-level sets the level of the fleet's loggers, procrastinate's
    included, over LOGGING's root level (INFO); LOGGING's format stays."""
    ids = defer(django_db_url, "demo_app.tasks.sleeping", 2, ms=10)
    code = run_worker(
        dj_fleet, "--concurrency", "1", "--one-shot", "--log-level", level
    )
    assert code == 0, dj_fleet.log()
    assert {r["status"] for r in jobs(django_db_url, ids)} == {"succeeded"}
    lines = [LOGGING_LINE.match(line) for line in dj_fleet.log().splitlines()]
    levels = {
        line["level"]
        for line in lines
        if line and line["logger"].startswith("procrastinate.")
    }
    assert seen <= levels and not unseen & levels, levels


def test_pools_of_the_setting_route_their_queues(dj_fleet, django_db_url):
    """Issue 24, under Django: the setting's cpu pool (2 children) runs the
    queue ``cpu``, its io pool (1 child, 10 jobs at once) the queue ``io``,
    at least 5 at once; ``prefork_status --json`` names both pools."""
    from .test_pools import POOLS, assert_routed, pools_of_children
    from .test_pools import defer as defer_to

    settings = json.dumps({"pools": POOLS})
    start_worker(dj_fleet, PREFORK_TEST_PREFORK_SETTINGS=settings)
    dj_fleet.wait_children(3)
    by_pool = pools_of_children(dj_fleet)
    assert len(by_pool["cpu"]) == 2 and len(by_pool["io"]) == 1, by_pool
    cpu_ids = defer_to(django_db_url, "cpu", "demo_app.tasks.cpu_bound", 10, ms=20)
    io_ids = defer_to(django_db_url, "io", "demo_app.tasks.async_sleep", 10, ms=1500)
    wait_for(
        lambda: (
            {r["status"] for r in jobs(django_db_url, cpu_ids + io_ids)}
            == {"succeeded"}
        ),
        timeout=60,
        message="every job to succeed",
    )
    assert_routed(dj_fleet, by_pool, cpu_ids, io_ids)
    out = subprocess.run(
        manage("prefork_status", "--json"),
        env=django_env(django_db_url, PREFORK_TEST_PREFORK_SETTINGS=settings),
        capture_output=True,
        text=True,
        timeout=60,
    )
    [supervisor] = json.loads(out.stdout)["supervisors"]
    assert [p["name"] for p in supervisor["pools"]] == ["cpu", "io"]
    assert sorted(c["pool"] for c in supervisor["children"]) == ["cpu", "cpu", "io"]
    assert dj_fleet.stop() == 0
