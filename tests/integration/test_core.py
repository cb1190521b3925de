"""The prefork core against a real PostgreSQL with real processes."""

from __future__ import annotations

import os
import signal
import time

import psutil
import psycopg
import pytest

from ..fleet_helper import defer, error_line, jobs, status_counts, wait_for


def test_cpu_jobs_run_in_every_child(fleet, db_url):
    ids = defer(db_url, "cpu", count=200, ms=20)
    code = fleet.run_to_exit("--concurrency", "4", "--one-shot", timeout=120)
    assert code == 0, fleet.log()
    rows = jobs(db_url, ids)
    assert {row["status"] for row in rows} == {"succeeded"}
    marks = fleet.marks("end")
    assert len(marks) == 200
    pids = {pid for _, _, pid in marks}
    assert len(pids) == 4, pids
    assert fleet.pid not in pids


def test_each_child_has_its_own_sessions(fleet, db_url):
    fleet.start("--concurrency", "3")
    children = fleet.wait_children(3)
    with psycopg.connect(db_url, autocommit=True) as conn:
        rows = wait_for(
            lambda: (
                (
                    r := conn.execute(
                        "SELECT application_name, pid FROM pg_stat_activity "
                        "WHERE application_name LIKE 'prefork:%%' "
                        "AND datname = current_database()"
                    ).fetchall()
                )
                and len({a.rsplit(":", 1)[1] for a, _ in r}) == 4
                and r
            ),
            message="sessions of the supervisor and 3 children",
        )
    by_process: dict[int, set[int]] = {}
    for app_name, backend_pid in rows:
        process_pid = int(app_name.rsplit(":", 1)[1])
        by_process.setdefault(process_pid, set()).add(backend_pid)
    assert set(by_process) == {fleet.pid, *children}
    # no backend is shared between two processes of the fleet
    all_backends = [b for backends in by_process.values() for b in backends]
    assert len(all_backends) == len(set(all_backends))
    # about N + 2 sessions for the host: one per child, one for the supervisor
    assert len(all_backends) <= 3 + 2, rows
    assert fleet.stop() == 0


def test_killed_idle_child_is_replaced(fleet):
    fleet.start("--concurrency", "2")
    before = fleet.wait_children(2)
    victim = before[0]
    os.kill(victim, signal.SIGKILL)
    killed_at = time.monotonic()
    after = fleet.wait_children(2, timeout=5, exclude=[victim])
    replaced_in = time.monotonic() - killed_at
    assert victim not in after and before[1] in after
    assert replaced_in < 2.0, replaced_in
    [exited] = [e for e in fleet.events("child_exited") if e["pid"] == victim]
    assert exited["signal"] == signal.SIGKILL
    assert fleet.stop() == 0


def test_sigterm_drains_running_jobs(fleet, db_url):
    fleet.start("--concurrency", "2")
    ids = defer(db_url, "sleep", count=2, seconds=2)
    wait_for(lambda: len(fleet.marks("start")) == 2, message="both jobs started")
    fleet.signal(signal.SIGTERM)
    assert fleet.wait(timeout=20) == 0, fleet.log()
    rows = jobs(db_url, ids)
    assert [row["status"] for row in rows] == ["succeeded", "succeeded"]
    assert status_counts(db_url).get("doing", 0) == 0


def test_drain_past_deadline_kills_and_requeues(fleet, db_url):
    fleet.start("--concurrency", "1", "--shutdown-graceful-timeout", "1")
    [job_id] = defer(db_url, "sleep", seconds=30)
    wait_for(lambda: fleet.marks("start"), message="the job to start")
    started = time.monotonic()
    fleet.signal(signal.SIGTERM)
    assert fleet.wait(timeout=15) == 0, fleet.log()
    assert time.monotonic() - started < 6
    [row] = jobs(db_url, [job_id])
    # not lost, not stuck: back to todo for the next worker
    assert row["status"] == "todo"
    assert row["attempts"] == 1


def test_supervisor_sigkill_leaves_no_child(fleet):
    fleet.start("--concurrency", "3")
    children = fleet.wait_children(3)
    os.kill(fleet.pid, signal.SIGKILL)
    fleet.wait(timeout=5)
    killed_at = time.monotonic()

    def all_gone() -> bool:
        return not any(
            psutil.pid_exists(pid)
            and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
            for pid in children
        )

    wait_for(all_gone, timeout=5, message="orphaned children to exit")
    assert time.monotonic() - killed_at < 2.0


def test_ctrl_c_to_process_group_drains_once(fleet, db_url):
    # the fleet in its own process group, as in a terminal: SIGINT reaches all
    fleet.start("--concurrency", "2")
    children = fleet.wait_children(2)
    ids = defer(db_url, "sleep", count=2, seconds=1.5)
    wait_for(lambda: len(fleet.marks("start")) == 2, message="jobs started")
    pgid = os.getpgid(fleet.pid)
    assert all(os.getpgid(c) == pgid for c in children)
    # send SIGINT to supervisor and children, as the terminal does
    for pid in [fleet.pid, *children]:
        os.kill(pid, signal.SIGINT)
    assert fleet.wait(timeout=20) == 0, fleet.log()
    assert [r["status"] for r in jobs(db_url, ids)] == ["succeeded", "succeeded"]
    assert fleet.events("drain")
    assert fleet.events("stop_now") == []


def test_second_sigterm_stops_at_once(fleet, db_url):
    fleet.start("--concurrency", "1")
    [job_id] = defer(db_url, "sleep", seconds=30)
    wait_for(lambda: fleet.marks("start"), message="the job to start")
    fleet.signal(signal.SIGTERM)
    wait_for(lambda: fleet.events("drain"), message="the drain")
    fleet.signal(signal.SIGTERM)
    assert fleet.wait(timeout=5) == 0
    assert fleet.events("stop_now")
    [row] = jobs(db_url, [job_id])
    assert row["status"] == "todo"  # recovered before the supervisor exited


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5", "100000"])
def test_bad_concurrency_exits_2(fleet, value):
    code = fleet.run_to_exit("--concurrency", value, timeout=30)
    assert code == 2
    assert "--concurrency" in error_line(fleet)
    assert fleet.events("child_started") == []  # nothing forked


def test_unknown_option_exits_2(fleet):
    assert fleet.run_to_exit("--no-such-option", timeout=30) == 2
    # one line, naming the option (not argparse's usage first)
    assert "--no-such-option" in error_line(fleet)


def test_app_that_does_not_import_exits_2(fleet):
    assert fleet.run_to_exit(app="no_such_module.app", timeout=30) == 2
    assert "no_such_module" in error_line(fleet)


def test_database_unreachable_at_start(fleet):
    code = fleet.run_to_exit(
        env={"DATABASE_URL": "postgresql://nobody@127.0.0.1:1/x"}, timeout=30
    )
    assert code == 1
    # after the banner, which is printed before the database is reached
    assert "Traceback" not in fleet.log()
    assert fleet.events("child_started") == []


def test_schema_missing_at_start(fleet, empty_db_url):
    code = fleet.run_to_exit(env={"DATABASE_URL": empty_db_url}, timeout=30)
    assert code == 1
    # after the banner, which is printed before the database is reached
    assert "Traceback" not in fleet.log()
    assert fleet.events("child_started") == []


def test_async_jobs_with_child_concurrency(fleet, db_url):
    ids = defer(db_url, "async_sleep", count=20, seconds=0.3)
    started = time.monotonic()
    code = fleet.run_to_exit(
        "--concurrency", "1", "--child-concurrency", "10", "--one-shot", timeout=60
    )
    assert code == 0, fleet.log()
    assert {r["status"] for r in jobs(db_url, ids)} == {"succeeded"}
    # 20 jobs of 0.3 s on 10 slots of one child: concurrent, not serial (6 s)
    assert time.monotonic() - started < 5.5


def test_retry_strategy_still_applies(fleet, db_url):
    ids = defer(db_url, "flaky", count=3, fail_times=1)
    assert fleet.run_to_exit("--concurrency", "2", "--one-shot", timeout=60) == 0
    rows = jobs(db_url, ids)
    assert {r["status"] for r in rows} == {"succeeded"}
    # each job failed once (attempt 0) and succeeded on its retry (attempt 1)
    assert sorted((j, a) for j, a, _ in fleet.marks("start")) == sorted(
        (job_id, attempt) for job_id in ids for attempt in (0, 1)
    )
    assert sorted(j for j, a, _ in fleet.marks("end")) == sorted(ids)


def test_new_jobs_wake_idle_children_without_polling(fleet, db_url):
    # polling every 30 s (fleet_helper default): only the supervisor's LISTEN
    # and the wake pipe can make the job start quickly
    fleet.start("--concurrency", "2")
    fleet.wait_children(2)
    # lets time pass on purpose: past the children's first fetch, so that
    # only a wake-up (not that fetch) can start the job quickly
    time.sleep(0.5)
    deferred_at = time.time()
    defer(db_url, "cpu", ms=1)
    wait_for(lambda: fleet.marks("end"), timeout=5, message="the job to run")
    start_time = next(iter(fleet.mark_times("start").values()))
    assert start_time - deferred_at < 2.0
    assert fleet.stop() == 0


def test_environment_variables_configure_the_fleet(fleet):
    fleet.start(env={"PROCRASTINATE_PREFORK_CONCURRENCY": "3"})
    assert len(fleet.wait_children(3)) == 3
    assert sorted(e["slot"] for e in fleet.events("child_started")) == [0, 1, 2]
    assert fleet.stop() == 0


def test_bad_environment_value_exits_2(fleet):
    code = fleet.run_to_exit(env={"PROCRASTINATE_WORKER_WAIT": "maybe"}, timeout=30)
    assert code == 2
    assert "PROCRASTINATE_WORKER_WAIT" in error_line(fleet)


def test_task_modules_that_do_not_import(fleet):
    code = fleet.run_to_exit(app="tests.apps.bad_import_paths_app.app", timeout=30)
    assert code == 1
    # one line after the banner, naming the module; this app logs no events
    assert "no_such_tasks_module" in fleet.log().splitlines()[-1]
    assert "Traceback" not in fleet.log()
