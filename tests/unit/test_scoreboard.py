"""The shared-memory scoreboard keeps every running job of a child."""

from __future__ import annotations

from procrastinate_prefork.child.scoreboard import Scoreboard, SlotWriter, State


def test_every_running_job_is_kept_and_a_finished_one_cleared():
    board = Scoreboard(4, jobs_per_slot=3)
    board.reset(2, pid=99)
    writer = SlotWriter(board, 2)
    assert writer.job_started(10, "long", running=1)
    assert writer.job_started(11, "short", running=2)
    view = board.read(2)
    assert [j.job_id for j in view.jobs] == [10, 11]  # oldest first
    assert (view.job_id, view.task_name, view.state) == (10, "long", State.BUSY)

    writer.job_finished(10, running=1, jobs_done=1, draining=False)
    assert writer.job_started(12, "third", running=2)  # reuses the freed entry
    view = board.read(2)
    assert [(j.job_id, j.task_name) for j in view.jobs] == [
        (11, "short"),
        (12, "third"),
    ]
    assert view.job_id == 11

    writer.job_finished(11, running=1, jobs_done=2, draining=False)
    writer.job_finished(12, running=0, jobs_done=3, draining=False)
    view = board.read(2)
    assert (view.jobs, view.job_id, view.job_age(0.0)) == ((), None, None)
    assert (view.state, view.jobs_done, view.pid) == (State.IDLE, 3, 99)
    assert board.read(1).jobs == ()  # slots do not overlap


def test_a_full_slot_says_so():
    board = Scoreboard(1, jobs_per_slot=1)
    board.reset(0)
    writer = SlotWriter(board, 0)
    assert writer.job_started(1, "a", running=1)
    assert not writer.job_started(2, "b", running=2)
    assert [j.job_id for j in board.read(0).jobs] == [1]
    board.clear(0)
    assert board.read(0).jobs == ()
