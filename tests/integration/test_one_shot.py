"""``--one-shot`` ends only once the children found nothing to run: a child
stopped for any other reason (a time limit's SIGTERM whose job finished in
the grace, a SIGTERM sent by hand) exits 0 and is replaced, and the jobs
behind it still run."""

from __future__ import annotations

import os
import signal

from procrastinate_prefork.supervisor import policy

from ..fleet_helper import defer, status_counts


def _exit_codes(fleet) -> list[int | None]:
    return [e["exit_code"] for e in fleet.events("child_exited")]


def test_one_shot_goes_on_after_a_time_limit_stop(fleet, db_url):
    """A 1.5 s job under a 1 s limit: the child is asked to stop, its job ends
    within the grace, it exits 0; five short jobs still wait behind it."""
    defer(db_url, "sleep", seconds=1.5)
    shorts = defer(db_url, "cpu", count=5, ms=5)
    code = fleet.run_to_exit(
        "--concurrency", "1", "--job-timeout", "1", "--one-shot", timeout=90
    )
    assert code == 0, fleet.log()
    assert fleet.events("time_limit")  # the scenario: the limit was enforced
    counts = status_counts(db_url)
    assert not counts.get("todo") and not counts.get("doing"), counts
    done = {j for j, _, _ in fleet.marks("end")}
    assert set(shorts) <= done
    assert _exit_codes(fleet)[-1] == policy.EXIT_QUEUES_EMPTY
    assert 0 in _exit_codes(fleet)  # the child the limit stopped


def test_one_shot_goes_on_after_a_child_is_sigtermed_by_hand(fleet, db_url):
    [first] = defer(db_url, "sleep", seconds=2)
    shorts = defer(db_url, "cpu", count=5, ms=5)
    fleet.start("--concurrency", "1", "--one-shot", wait_ready=False)
    victim = fleet.running_child(first)
    os.kill(victim, signal.SIGTERM)  # it finishes its job, then stops
    assert fleet.wait(timeout=90) == 0, fleet.log()
    exits = {e["pid"]: e["exit_code"] for e in fleet.events("child_exited")}
    assert exits[victim] == 0
    counts = status_counts(db_url)
    assert not counts.get("todo") and not counts.get("doing"), counts
    done = {j for j, _, _ in fleet.marks("end")}
    assert {first, *shorts} <= done
    assert _exit_codes(fleet)[-1] == policy.EXIT_QUEUES_EMPTY
