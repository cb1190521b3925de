"""The chaos driver's books catch what they are meant to catch (synthetic
marker files, no database)."""

from __future__ import annotations

from ..chaos_driver import ChaosConfig, ChaosRun


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
    run = _run(tmp_path, [
        "start 1 0 100 10.0 -",  # interrupted: pid 100 killed
        "start 1 1 200 11.0 -", "end 1 1 200 11.5 -",
        "start 2 0 100 9.0 -", "end 2 0 100 9.5 -",  # completed, not recorded
        "start 2 1 200 12.0 -", "end 2 1 200 12.5 -",
        "start 3 0 200 13.0 -", "raise 3 0 200 13.1 -",  # the retry strategy
        "start 3 1 200 13.2 -", "end 3 1 200 13.3 -",
    ])
    run.watch.last_seen.update({100: 10.5, 200: 20.0})
    run._final_live = frozenset({200})
    assert _check(run) == []
    assert (run.report.interrupted_reruns, run.report.duplicates) == (1, 1)


def test_rerun_while_the_earlier_process_lived_is_caught(tmp_path):
    run = _run(tmp_path, [
        "start 1 0 100 10.0 -", "start 1 1 200 11.0 -", "end 1 1 200 11.5 -",
        "start 2 0 200 10.0 -", "end 2 0 200 10.2 -", "start 2 1 100 10.3 -",
    ])
    run.watch.last_seen.update({100: 12.0, 200: 20.0})
    run._final_live = frozenset({200})
    problems = _check(run)
    assert len(problems) == 2
    assert "while pid 100 of its earlier run (interrupted) was still alive" in problems[0]
    assert "pid 200, which was still alive at the end" in problems[1]


def test_two_runs_holding_one_lock_at_once_are_caught(tmp_path):
    run = _run(tmp_path, [
        "start 1 0 100 10.0 L", "end 1 0 100 11.0 L",
        "start 2 0 200 10.5 L", "end 2 0 200 10.8 L",
        "start 3 0 200 12.0 M", "end 3 0 200 12.2 M",
        "start 4 0 100 12.1 N", "end 4 0 100 12.3 N",
    ])
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


def test_schedule_once_or_per_cycle(tmp_path):
    once = ChaosRun("", tmp_path, ChaosConfig(seconds=100)).schedule()
    assert [a for _, a in once] == ["kill_supervisor", "stop_long", "stop_short", "restart_db"]
    assert once[0][0] == 25.0
    cycles = ChaosRun("", tmp_path, ChaosConfig(seconds=100, repeat_every=40)).schedule()
    assert len(cycles) == 8 and cycles[4] == (50.0, "kill_supervisor")
