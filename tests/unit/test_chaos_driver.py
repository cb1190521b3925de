"""The chaos driver's books catch what they are meant to catch (synthetic
marker files, no database)."""

from __future__ import annotations

import random

import pytest

from ..chaos_driver import (
    ATTACKS,
    ChaosConfig,
    ChaosRun,
    Steady,
    last_error_line,
    overrun_seconds,
    time_limit_blames,
    wrongly_blamed,
)


def _run(tmp_path, lines: list[str]) -> ChaosRun:
    run = ChaosRun("postgresql:///unused", tmp_path, ChaosConfig(seed=1))
    (run.results / "chaos-1.log").write_text("".join(f"{line}\n" for line in lines))
    run.markers.read()
    return run


def _check(run: ChaosRun) -> list[str]:
    for job_id, runs in run.markers.by_job().items():
        run._check_reruns(job_id, runs)
    run._check_locks(run.markers.by_job())
    return run.report.problems


def test_rerun_after_the_death_of_the_earlier_process_is_allowed(tmp_path):
    run = _run(
        tmp_path,
        [
            "start 1 0 100 10.0 -",  # interrupted: pid 100 killed
            "start 1 1 200 11.0 -",
            "end 1 1 200 11.5 -",
            "start 2 0 100 9.0 -",
            "end 2 0 100 9.5 -",  # completed, not recorded
            "start 2 1 200 12.0 -",
            "end 2 1 200 12.5 -",
            "start 3 0 200 13.0 -",
            "raise 3 0 200 13.1 -",  # the retry strategy
            "start 3 1 200 13.2 -",
            "end 3 1 200 13.3 -",
        ],
    )
    run.watch.last_seen.update({100: 10.5, 200: 20.0})
    run._final_live = frozenset({200})
    assert _check(run) == []
    assert (run.report.interrupted_reruns, run.report.duplicates) == (1, 1)


def test_rerun_while_the_earlier_process_lived_is_caught(tmp_path):
    run = _run(
        tmp_path,
        [
            "start 1 0 100 10.0 -",
            "start 1 1 200 11.0 -",
            "end 1 1 200 11.5 -",
            "start 2 0 200 10.0 -",
            "end 2 0 200 10.2 -",
            "start 2 1 100 10.3 -",
        ],
    )
    run.watch.last_seen.update({100: 12.0, 200: 20.0})
    run._final_live = frozenset({200})
    problems = _check(run)
    assert len(problems) == 2
    assert (
        "while pid 100 of its earlier run (interrupted) was still alive" in problems[0]
    )
    assert "pid 200, which was still alive at the end" in problems[1]


def test_two_runs_holding_one_lock_at_once_are_caught(tmp_path):
    run = _run(
        tmp_path,
        [
            "start 1 0 100 10.0 L",
            "end 1 0 100 11.0 L",
            "start 2 0 200 10.5 L",
            "end 2 0 200 10.8 L",
            "start 3 0 200 12.0 M",
            "end 3 0 200 12.2 M",
            "start 4 0 100 12.1 N",
            "end 4 0 100 12.3 N",
        ],
    )
    problems = _check(run)
    assert len(problems) == 1 and problems[0].startswith("lock L: job 2 started")


def test_marker_reader_is_incremental_and_ignores_a_partial_line(tmp_path):
    run = _run(tmp_path, ["start 1 0 100 10.0 -"])
    path = run.results / "chaos-1.log"
    with open(path, "a") as f:
        f.write("end 1 0 100 10")  # still being written
    run.markers.read()
    assert run.markers.runs[(1, 0, 100)].outcome is None
    with open(path, "a") as f:
        f.write(".5 -\n")
    run.markers.read()
    assert run.markers.runs[(1, 0, 100)].outcome == "end"
    assert run.markers.anomalies == []


def _all_off(**overrides) -> ChaosConfig:
    off = {name: 0 if name == "sighup_burst" else False for name in ATTACKS}
    return ChaosConfig(**{**off, **overrides})


def test_schedule_once_or_per_cycle(tmp_path):
    once = ChaosRun("", tmp_path, ChaosConfig(seconds=100)).schedule()
    assert [a for _, a in once] == [
        "sighup_burst",
        "stock_term",
        "black_hole",
        "kill_supervisor",
        "stop_long",
        "fleet_lock",
        "log_pipe",
        "stop_short",
        "restart_db",
        "db_outage",
    ]
    assert once[3] == (20.0, "kill_supervisor")
    cycles = ChaosRun(
        "", tmp_path, ChaosConfig(seconds=100, repeat_every=40)
    ).schedule()
    assert len(cycles) == 20 and cycles[13] == (48.0, "kill_supervisor")


def test_each_attack_can_be_left_out(tmp_path, monkeypatch):
    none = ChaosRun("", tmp_path, _all_off(seconds=100)).schedule()
    assert none == []
    monkeypatch.setenv("CHAOS_OFF", "fleet_lock,sighup_burst")
    config = ChaosConfig.from_env()
    assert (config.fleet_lock, config.sighup_burst) == (False, 0)
    assert config.db_outage
    actions = [a for _, a in ChaosRun("", tmp_path, config).schedule()]
    assert "fleet_lock" not in actions and "sighup_burst" not in actions
    monkeypatch.setenv("CHAOS_OFF", "nosuch")
    with pytest.raises(ValueError, match="nosuch"):
        ChaosConfig.from_env()


def _opt(args: list[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args else None


def test_hosts_get_their_roles():
    config = ChaosConfig(pools=False)  # the pools: tests/unit/test_chaos_pools.py
    args = [config.fleet_args(f"h{i}", i) for i in range(3)]
    # host 0: the short stalled timeout; the others heartbeat every half of
    # theirs, so that host 0 judging them by its own timeout would show
    assert [
        (_opt(a, "--stalled-timeout"), _opt(a, "--heartbeat-interval")) for a in args
    ] == [("2.0", "1.0"), ("6.0", "3.0"), ("20.0", "1.0")]
    # host 2: two jobs per child under a time limit, alone on the timed queue;
    # nobody but the stock worker serves the stock queue
    assert _opt(args[2], "--child-concurrency") == "2"
    assert _opt(args[2], "--task-timeout") == "chaos_overrun=2"
    queues = [_opt(a, "--queues") for a in args]
    assert queues == ["default", "default", "default,timed"]
    assert config.roles() == {
        "short-timeout": 0,
        "sighup": 1,
        "timed": 2,
        "log-pipe": 1,
        "black-hole": 2,
    }
    # host 2 is also black-holed: a timeout no host reaches during the hole,
    # which the fleet-table lock is not made to outlast
    assert config.longest_stalled_timeout() == 6.0
    # all off: every host alike, as before these attacks
    plain = _all_off()
    assert all(plain.fleet_args("h", i) == plain.fleet_args("h", 0) for i in range(3))
    assert "--queues" not in plain.fleet_args("h", 0)


def test_overrun_jobs_are_well_past_or_well_within_their_limit():
    rng = random.Random(1)
    assert overrun_seconds(True, 2.0, rng) == 6.0
    assert all(0.1 <= overrun_seconds(False, 2.0, rng) <= 0.5 for _ in range(100))


def test_a_job_blamed_for_a_time_limit_it_was_not_deferred_to_exceed_is_caught():
    events = [
        {"action": "time_limit", "job_id": 18, "pid": 9},
        {"action": "child_killed", "pid": 9},
        {"action": "job_recovered", "job_id": 20, "cause": "job 19 exceeded"},
        {"action": "time_limit", "job_id": 19, "pid": 8},
    ]
    blamed = time_limit_blames(events)
    assert blamed == [18, 19]
    assert wrongly_blamed(blamed, long={18}) == [19]
    assert wrongly_blamed([18, 18], long={18, 22}) == []


def _job(job_id: int, task: str, status: str) -> dict:
    return {"id": job_id, "task_name": task, "status": status}


def test_books_of_queueing_lock_and_time_limited_jobs(tmp_path):
    run = _run(
        tmp_path,
        [
            "start 1 0 100 10.0 Q",
            "end 1 0 100 10.5 Q",
            "start 2 0 100 11.0 Q",  # interrupted; could not go back to todo
            "start 3 0 100 12.0 Q",
            "end 3 0 100 12.5 Q",
            "start 4 0 200 10.0 -",  # long overrun, stopped by its limit
            "start 5 0 200 10.0 -",
            "end 5 0 200 16.0 -",  # long, never stopped
            "start 6 0 200 10.0 -",
            "end 6 0 200 10.3 -",  # short overrun
            "start 7 0 300 10.0 -",
            "end 7 0 300 10.3 -",  # short, failed: blamed
        ],
    )
    run.watch.last_seen.update({100: 11.2, 200: 20.0, 300: 10.4})
    run._final_live = frozenset({200})
    for job_id in (1, 2, 3, 9):
        run.queueing_jobs.add(job_id)
        run.expected[job_id] = frozenset({"succeeded", "failed"})
    run.overrun_long.update({4, 5})
    run.overrun_short.update({6, 7})
    run.expected.update(
        {
            4: frozenset({"failed"}),
            5: frozenset({"failed"}),
            6: frozenset({"succeeded"}),
            7: frozenset({"succeeded"}),
        }
    )
    by_job = run.markers.by_job()
    for row in [
        _job(1, "chaos_queued", "succeeded"),
        _job(2, "chaos_queued", "failed"),
        _job(3, "chaos_queued", "doing"),
        _job(9, "chaos_queued", "todo"),
        _job(4, "chaos_overrun", "failed"),
        _job(5, "chaos_overrun", "failed"),
        _job(6, "chaos_overrun", "succeeded"),
        _job(7, "chaos_overrun", "failed"),
    ]:
        run.check_job(row, by_job.get(row["id"], []))
    problems = run.report.problems
    assert problems[0] == "job 3 (chaos_queued) left doing"
    assert problems[1] == "job 9 (chaos_queued) left todo"
    assert problems[2] == "job 9 (chaos_queued) never ran"
    assert problems[3].startswith("job 5 (chaos_overrun, 6 s, limit 2 s): its last run")
    assert problems[4] == "job 7 (chaos_overrun) ended failed, expected succeeded"
    assert len(problems) == 5
    assert (run.report.lost, run.report.wrong_status) == (3, 1)


def test_a_count_converges_only_once_it_holds():
    steady = Steady(4, 3.0)
    # a stacked rolling restart passes through the target on its way up
    assert [
        steady.update(n, t) for n, t in [(4, 0.0), (8, 0.5), (4, 1.0), (3, 2.0)]
    ] == [False] * 4
    assert not steady.update(4, 2.5)
    assert not steady.update(4, 5.4)
    assert steady.update(4, 5.5)


def test_a_stock_worker_death_is_told_in_one_line():
    error = "psycopg.errors.ForeignKeyViolation: insert or update on table"
    log = (
        "INFO:procrastinate.worker:Starting job\n"
        f"Traceback (most recent call last):\n{error}\n"
        "DETAIL:  Key (worker_id)=(5) is not present\nDatabase error.\n"
    )
    assert last_error_line(log) == error
    assert last_error_line("just\nthis\n") == "this"
    assert last_error_line("") == ""


def test_supervisor_kills_spare_the_hosts_under_watch(tmp_path):
    run = ChaosRun("", tmp_path, ChaosConfig(seed=3))
    hosts = run.hostnames()
    assert run.host_with("sighup") == hosts[1]
    assert run.killable_hosts() == [hosts[0], hosts[2]]
    run._outage_hosts.add(hosts[2])
    assert run.killable_hosts() == [hosts[0]]


def test_records_only_a_supervisor_logs_are_caught_from_other_processes():
    from ..chaos_log_pipe import stray_supervisor_records

    events = [
        {"action": "child_exited", "process": 10, "pid": 11},  # the supervisor
        {"action": "child_ready", "process": 11, "pid": 11},  # a child's own
        {"action": "fork_failed", "process": 12, "slot": 0},  # a child as one
        {"action": "supervisor_crashed", "process": 12},
    ]
    problems = stray_supervisor_records(events, {10})
    assert len(problems) == 2 and all("process 12" in p for p in problems)


def _events(run: ChaosRun, events: list[dict]) -> None:
    import json

    with open(run.results / "events.jsonl", "a") as f:
        f.writelines(json.dumps(e) + "\n" for e in events)


class _StockWorker:
    def __init__(self, pid: int):
        self.pid = pid


def _row(job_id, status, worker_id=None, lock=None, task="chaos_sleep") -> dict:
    return {
        "id": job_id,
        "task_name": task,
        "status": status,
        "worker_id": worker_id,
        "lock": lock,
    }


def test_jobs_a_stock_worker_left_doing_are_told_apart_from_ours(tmp_path):
    run = _run(
        tmp_path,
        [
            "start 1 0 900 10.0 L",  # on the stock worker, its write lost
            "end 1 0 900 10.5 L",
            "start 3 0 900 10.0 -",  # on the stock worker, but held by a child
            "end 3 0 900 10.5 -",
            "start 4 0 100 10.0 -",  # ours, left doing
            "end 4 0 100 10.5 -",
        ],
    )
    run.stock.append(_StockWorker(900))  # type: ignore[arg-type]
    _events(run, [{"action": "child_ready", "worker_id": 7, "process": 100}])
    rows = [
        _row(1, "doing", worker_id=5, lock="L"),
        _row(2, "todo", lock="L", task="chaos_locked"),  # blocked by job 1
        _row(3, "doing", worker_id=7),  # a lost fetch of our child 100
        _row(4, "doing", worker_id=7),
        _row(5, "todo"),
    ]
    by_job = run.markers.by_job()
    run._stock_held = run.stock_held(rows, by_job)
    assert run._stock_held == {1, 2}
    for row in rows:
        run.check_job(row, by_job.get(row["id"], []))
    assert run.report.problems == [
        "job 3 (chaos_sleep) left doing",
        "job 4 (chaos_sleep) left doing",
        "job 5 (chaos_sleep) left todo",
        "job 5 (chaos_sleep) never ran",
    ]
    assert (run.report.stock_left_doing, run.report.stock_blocked) == (1, 1)


def test_a_queueing_lock_job_failed_by_a_recovery_before_any_run(tmp_path):
    run = _run(tmp_path, [])
    run.queueing_jobs.update({1, 2, 3})
    for job_id in (1, 2, 3):
        run.expected[job_id] = frozenset({"succeeded", "failed"})
    _events(
        run,
        [
            {"action": "job_recovery_conflict", "job_id": 1, "process": 10},
            {"action": "lost_fetch_conflict", "job_id": 2, "process": 11},
        ],
    )
    for job_id in (1, 2, 3):
        run.check_job(_row(job_id, "failed", task="chaos_queued"), [])
    # job 3 failed without a conflict on record: lost
    assert run.report.problems == ["job 3 (chaos_queued) never ran"]
    assert run.report.queueing_lock_failed_unrun == 2


def test_the_children_gone_while_the_log_pipe_had_no_reader(tmp_path):
    run = _run(tmp_path, [])
    run.watch.killed[13] = "SIGKILL"

    def exited(pid: int, sig: int | None) -> dict:
        return {"action": "child_exited", "pid": pid, "signal": sig, "process": 50}

    _events(run, [exited(11, None), exited(12, 9), exited(13, 9), exited(15, None)])
    run._count_log_pipe_exits(50, {11, 12, 13, 14})
    report = run.report
    assert (report.log_pipe_gone, report.log_pipe_retired) == (4, 1)
    assert report.log_pipe_killed == 1  # by its supervisor
    driver_kill, unlogged = report.problems
    assert "child 13 was SIGKILLed by the driver" in driver_kill
    assert "child 14 of supervisor 50 gone, its exit never logged" in unlogged
