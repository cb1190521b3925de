"""Issue 25 item 3: one poller per host. The supervisor polls for runnable
jobs once per ``--fetch-job-polling-interval`` (per pool) and wakes idle
children through their pipes; the children's own timers fetch only when
those polls are late.

The children's fetches are counted by PostgreSQL itself: with
``track_functions`` on for the test's database, ``pg_stat_user_functions``
counts the calls of procrastinate's fetch function (a child's fetch, alone
or with the end of its last job). A busy backend sends its counts to the
view up to ten seconds late, an ending one at once: they are read once the
fleet has stopped, and compared with what the children's own polls would
add (two or four an interval over many intervals)."""

from __future__ import annotations

import json
import os
import signal
import sys
import time

import psycopg

from tests.apps.plain_app import SLOW_FETCH
from tests.fleet_helper import APP, defer, jobs, wait_for

INTERVAL = 1.0


def _track_functions(db_url: str) -> None:
    """Count function calls in the sessions opened from now on."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        name = conn.info.dbname
        conn.execute(
            psycopg.sql.SQL("ALTER DATABASE {} SET track_functions = 'pl'").format(
                psycopg.sql.Identifier(name)
            )
        )


def _fetch_calls(db_url: str) -> int:
    """Calls of procrastinate's fetch function by the sessions ended so far."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT coalesce(sum(calls), 0)::int FROM pg_stat_user_functions "
            "WHERE funcname LIKE 'procrastinate_fetch_job%'"
        ).fetchone()
    assert row is not None
    return int(row[0])


def _defer_scheduled(db_url: str, task: str, in_seconds: float, **kwargs) -> tuple:
    """One job scheduled ``in_seconds`` from now: its id and its time (epoch)."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        [job_id] = conn.execute(
            "SELECT procrastinate_defer_jobs_v1(ARRAY[ROW("
            "  'default', %s, 0, NULL, NULL, %s::jsonb,"
            "  now() + make_interval(secs => %s)"
            ")::procrastinate_job_to_defer_v1])",
            [task, json.dumps(kwargs), in_seconds],
        ).fetchone()
        row = conn.execute(
            "SELECT id, EXTRACT(EPOCH FROM scheduled_at)::float8 "
            "FROM procrastinate_jobs WHERE id = %s",
            [job_id[0]],
        ).fetchone()
    assert row is not None
    return int(row[0]), float(row[1])


def _woken_pids(fleet) -> set[int]:
    return {pid for e in fleet.events("poll_woke") for pid in e["pids"]}


def _start(fleet, db_url: str, *args: str) -> list[int]:
    _track_functions(db_url)
    fleet.start(
        *args,
        "--fetch-job-polling-interval",
        str(INTERVAL),
        "--log-level",
        "debug",  # poll_woke
    )
    return fleet.wait_children(int(args[args.index("--concurrency") + 1]))


def test_a_scheduled_job_is_found_by_the_supervisors_poll(fleet, db_url):
    """No NOTIFY says a scheduled job's time has come: the supervisor's poll
    finds it and wakes one idle child, within one interval of its time,
    while the children themselves do not poll (their timers' fetches are
    skipped while the supervisor's polls are on time)."""
    _start(fleet, db_url, "--concurrency", "2")
    job_id, scheduled_at = _defer_scheduled(db_url, "cpu", 3, ms=1)
    wait_for(lambda: fleet.marks("end"), timeout=20, message="the scheduled job")
    [(_, _, runner)] = fleet.marks("end")
    started = fleet.mark_times("start")[(job_id, 0)]
    # one interval, and the loop's turn around it
    assert scheduled_at <= started < scheduled_at + INTERVAL + 1.5
    assert runner in _woken_pids(fleet)
    time.sleep(4 * INTERVAL)
    assert fleet.stop() == 0
    # each child: its first fetch, a wake when the supervisor's session
    # opened after the forks, one at the insert's NOTIFY (too early); the
    # poll's wake of one child, its fetch with the job's end. Children
    # polling on their own: two more an interval, over 8 intervals.
    assert _fetch_calls(db_url) <= 3 * 2 + 2 + 2


def test_without_listen_the_supervisors_poll_keeps_jobs_flowing(fleet, db_url):
    """--no-listen-notify: no LISTEN, no notification; the supervisor's poll
    wakes the children, within about an interval, and they do not poll on
    their own."""
    _start(fleet, db_url, "--concurrency", "2", "--no-listen-notify")
    deferred = time.time()
    ids = defer(db_url, "cpu", count=3, ms=1)
    wait_for(
        lambda: {j["status"] for j in jobs(db_url, ids)} == {"succeeded"},
        timeout=20,
        message="the jobs deferred without LISTEN",
    )
    first = min(fleet.mark_times("start").values())
    assert first < deferred + INTERVAL + 1.5
    runners = {pid for _, _, pid in fleet.marks("end")}
    assert runners <= _woken_pids(fleet)
    time.sleep(6 * INTERVAL)
    assert fleet.stop() == 0
    # each child: its first fetch and a wake when the supervisor's session
    # opened; the polls' wakes (one a child, two at most), a fetch with each
    # job's end. Children polling on their own: two more an interval (over
    # 14 in all).
    assert _fetch_calls(db_url) <= 2 * 2 + 2 * 2 + 3


def test_an_idle_fleet_does_not_poll_from_its_children(fleet, db_url):
    """An idle fleet of 4 children: no child fetches, interval after
    interval (the supervisor's one query an interval per pool, not one per
    child, is counted in tests/unit/test_poller.py)."""
    _start(fleet, db_url, "--concurrency", "4")
    time.sleep(8 * INTERVAL)
    assert fleet.stop() == 0
    # each child's first fetch, and a wake when the supervisor's session
    # opened after the forks; children polling on their own: 4 more an
    # interval (32)
    assert _fetch_calls(db_url) <= 2 * 4


def test_with_the_supervisor_stopped_children_still_poll_on_their_own(fleet, db_url):
    """The supervisor cannot poll nor forward notifications (SIGSTOPped, as
    a supervisor whose session is down cannot): its last polls grow late,
    and after two intervals a child's own timer fetches again and finds the
    job (the test's interval is 1 s)."""
    _start(fleet, db_url, "--concurrency", "1")
    os.kill(fleet.pid, signal.SIGSTOP)
    try:
        [job_id] = defer(db_url, "cpu", ms=1)
        wait_for(
            lambda: fleet.marks("end"),
            timeout=20,
            message="the job, found by the child's own poll",
        )
        assert fleet.marks("end")[0][0] == job_id
    finally:
        os.kill(fleet.pid, signal.SIGCONT)
    assert fleet.stop() == 0


def test_each_pool_is_polled_for_its_own_queues(fleet, db_url):
    """Two pools, neither listening: a job of queue ``io`` wakes the io
    pool's child, never the cpu pool's (whose poll, of queue ``cpu``, finds
    nothing), each at its own pool's interval."""
    pools = {
        "cpu": {"queues": ["cpu"], "concurrency": 2, "listen_notify": False},
        "io": {"queues": ["io"], "concurrency": 1, "listen_notify": False},
    }
    polling = {"fetch_job_polling_interval": INTERVAL}
    env = {
        "PREFORK_TEST_POOLS": json.dumps(
            {name: {**options, **polling} for name, options in pools.items()}
        )
    }
    command = [sys.executable, "-m", "tests.pools_main", "--app", APP, "worker"]
    fleet.start(command=[*command, "--log-level", "debug"], env=env)
    fleet.wait_children(3)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "SELECT procrastinate_defer_jobs_v1(ARRAY[ROW("
            "  'io', 'cpu', 0, NULL, NULL, '{\"ms\": 1}'::jsonb, NULL"
            ")::procrastinate_job_to_defer_v1])"
        )
    wait_for(lambda: fleet.marks("end"), timeout=20, message="the io job")
    [(_, _, runner)] = fleet.marks("end")
    woke = fleet.events("poll_woke")
    assert {e["pool"] for e in woke} == {"io"}
    assert runner in _woken_pids(fleet)
    assert fleet.stop() == 0


def _empty_fetches_after(fleet, since: float) -> list[float]:
    """When the child's slowed fetches that found nothing were answered."""
    times = (float(p.name.rsplit("-", 1)[1]) for p in fleet.results.glob("empty-*"))
    return sorted(t for t in times if t > since)


def test_a_job_deferred_while_a_fetch_finds_nothing_starts_at_once(fleet, db_url):
    """procrastinate's worker clears its wake-up after each fetch: the
    notification of a job committed while a fetch runs (too late for it to
    see) would be forgotten, and with the supervisor polling only every
    60 s the job would wait that long. The child's fetches that find nothing
    are slowed (tests.apps.plain_app.slow_empty_fetches), and the job is
    deferred in that window, beside a running job: it starts while that job
    still runs, because the child fetches again after a wake-up that came
    during a fetch."""
    fleet.start(
        "--concurrency", "1",
        "--child-concurrency", "2",
        "--fetch-job-polling-interval", "60",
        "--on-child-start", "tests.apps.plain_app.slow_empty_fetches",
    )  # fmt: skip
    [child] = fleet.wait_children(1)
    # the child's first fetch finds nothing: let its held answer pass
    wait_for(lambda: _empty_fetches_after(fleet, 0), message="the first fetch")
    time.sleep(SLOW_FETCH + 0.5)
    since = time.time()
    [first] = defer(db_url, "sleep", seconds=10)
    assert fleet.running_child(first) == child
    # the fetch after the first job's finds nothing; its answer is held
    wait_for(lambda: _empty_fetches_after(fleet, since), message="an empty fetch")
    [second] = defer(db_url, "cpu", ms=1)
    wait_for(
        lambda: (second, 0) in fleet.mark_times("end"),
        timeout=12,
        message="the job deferred during the empty fetch to run",
    )
    assert (first, 0) not in fleet.mark_times("end")  # beside the first job
    assert fleet.stop(timeout=60) == 0
