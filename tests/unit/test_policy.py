from __future__ import annotations

import itertools
import os
import signal

import pytest

from procrastinate_prefork.supervisor import policy
from procrastinate_prefork.supervisor.policy import SlotHistory


def test_child_that_lived_is_restarted_at_once():
    history = policy.record_death(SlotHistory(), uptime=3600, clean_exit=False)
    assert history == SlotHistory(early_deaths=0, restarts=1)
    assert policy.restart_delay(history) == 0


def test_early_deaths_back_off_exponentially_with_a_cap():
    history = SlotHistory()
    delays = []
    for _ in range(8):
        history = policy.record_death(history, uptime=0.5, clean_exit=False)
        delays.append(policy.restart_delay(history, base=1.0, cap=30.0))
    assert delays == [1, 2, 4, 8, 16, 30, 30, 30]


def test_a_long_life_resets_the_backoff():
    history = SlotHistory(early_deaths=5, restarts=5)
    history = policy.record_death(
        history, uptime=policy.MIN_UPTIME + 1, clean_exit=False
    )
    assert history.early_deaths == 0 and history.restarts == 6


def test_clean_exit_is_never_an_early_death():
    history = policy.record_death(
        SlotHistory(early_deaths=2), uptime=0.1, clean_exit=True
    )
    assert history.early_deaths == 0


def test_death_under_a_job_is_not_a_crash_loop():
    history = SlotHistory()
    for _ in range(10):
        history = policy.record_death(
            history, uptime=0.2, clean_exit=False, had_job=True
        )
    assert history.early_deaths == 0
    assert policy.restart_delay(history) == 0
    assert not policy.is_crash_looping(history)


def test_crash_loop_after_threshold_early_deaths():
    history = SlotHistory()
    states = []
    for _ in range(policy.CRASH_LOOP_THRESHOLD):
        states.append(policy.is_crash_looping(history))
        history = policy.record_death(history, uptime=1, clean_exit=False)
    states.append(policy.is_crash_looping(history))
    assert states == [False] * policy.CRASH_LOOP_THRESHOLD + [True]


def test_wedged_and_time_limit_rules():
    assert policy.is_wedged(heartbeat_age=61, child_timeout=60)
    assert not policy.is_wedged(heartbeat_age=59, child_timeout=60)
    assert policy.is_over_time_limit(job_age=11, limit=10)
    assert not policy.is_over_time_limit(job_age=9, limit=10)
    assert not policy.is_over_time_limit(job_age=None, limit=10)
    assert not policy.is_over_time_limit(job_age=1000, limit=None)


@pytest.mark.parametrize(
    ("exit_code", "wait", "stopping", "expected"),
    [
        (0, True, False, True),  # a worker should not exit by itself: replace
        (1, True, False, True),
        (None, True, False, True),  # killed by a signal
        (policy.EXIT_QUEUES_EMPTY, False, False, False),  # one-shot: done
        # one-shot, stopped by a SIGTERM (time limit, by hand) or os._exit(0)
        # in a task: the queues may hold jobs, the slot needs a worker
        (0, False, False, True),
        (policy.EXIT_QUEUES_EMPTY, False, True, False),
        (1, False, False, True),  # one-shot crash: its jobs need a worker
        (1, True, True, False),  # never while stopping
        (policy.EXIT_RECYCLE, False, False, True),  # recycled, even one-shot
        (policy.EXIT_RECYCLE, True, True, False),
    ],
)
def test_should_replace(exit_code, wait, stopping, expected):
    assert policy.should_replace(exit_code, wait, stopping) is expected


def test_describe_exit():
    # build real wait statuses
    pid = os.fork()
    if pid == 0:
        os._exit(7)
    _, status = os.waitpid(pid, 0)
    assert policy.describe_exit(status) == (7, None, "exited with code 7")
    pid = os.fork()
    if pid == 0:
        os.kill(os.getpid(), signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    assert policy.describe_exit(status) == (None, 9, "killed by SIGKILL")


def autoscale(**kwargs):
    base = dict(
        current=2, low=1, high=4, backlog=0, idle=0, quiet_for=0.0, cooldown=30.0
    )
    return policy.autoscale_delta(**{**base, **kwargs})


def test_autoscale_grows_with_backlog_up_to_max():
    assert autoscale(backlog=10, idle=0) == 2
    assert autoscale(backlog=1, idle=0) == 1
    assert autoscale(current=4, backlog=100) == 0
    assert autoscale(backlog=2, idle=2) == 0  # idle children will take them


def test_autoscale_shrinks_only_after_cooldown_and_only_idle():
    assert autoscale(idle=1, quiet_for=29) == 0
    assert autoscale(idle=1, quiet_for=31) == -1
    assert autoscale(idle=0, quiet_for=1000) == 0  # all busy: never kill busy
    assert autoscale(current=1, idle=1, quiet_for=1000) == 0  # at MIN


def test_autoscale_restores_bounds():
    assert autoscale(current=0) == 1
    assert autoscale(current=6) == -2


def test_recycle_limit_with_jitter():
    assert policy.recycle_limit(None, 5, 3) is None
    assert policy.recycle_limit(100, 0, 3) == 100
    assert policy.recycle_limit(100, 10, 3) == 103
    assert policy.recycle_limit(100, 10, 50) == 110


def test_memory_recycle_never_loops_on_a_fat_start():
    assert policy.should_recycle_for_memory(300, 200, baseline_mb=50)
    assert not policy.should_recycle_for_memory(150, 200, baseline_mb=50)
    assert not policy.should_recycle_for_memory(300, 200, baseline_mb=250)
    assert not policy.should_recycle_for_memory(300, None, baseline_mb=50)


def test_heartbeat_series_measures_how_long_others_could_write_theirs():
    series = policy.HeartbeatSeries()
    assert series.healthy_for(100.0) == 0.0  # never seen: judge nobody
    series = policy.record_heartbeat(series, True, 10.0, heartbeat_interval=5)
    for ended in (15.2, 20.1, 25.9):
        series = policy.record_heartbeat(series, True, ended, heartbeat_interval=5)
    assert series.healthy_for(26.0) == 16.0
    # a heartbeat that waited on a lock (or a supervisor that was stopped):
    # ends more than interval + margin after the previous one, a new series
    stalled = policy.record_heartbeat(series, True, 32.0, heartbeat_interval=5)
    assert stalled.healthy_for(32.0) == 0.0
    assert stalled.healthy_for(40.0) == 8.0
    # a failure (database down, an error) ends it; the next success restarts
    down = policy.record_heartbeat(series, False, 30.0, heartbeat_interval=5)
    assert down.healthy_for(1000.0) == 0.0
    back = policy.record_heartbeat(down, True, 31.0, heartbeat_interval=5)
    assert back.healthy_for(37.0) == 6.0


def test_judgement_slack_leaves_the_default_stalled_timeout_alone():
    # a host with the defaults (heartbeat 5 s, stalled 30 s) judged by another
    # with the defaults: its declared 30 s stand
    assert 5 + policy.judgement_slack(heartbeat_interval=5) <= 30
    # a 2 s timeout with 1 s heartbeats is too short to tell from a stall
    assert 1 + policy.judgement_slack(heartbeat_interval=1) > 2


def test_a_sweep_turn_waits_until_the_supervisor_could_judge_its_own_kind():
    assert not policy.may_take_sweep_turn(29.9, stalled_timeout=30, stock_timeout=3600)
    assert policy.may_take_sweep_turn(30.0, stalled_timeout=30, stock_timeout=3600)
    # stock workers judged sooner than our own children
    assert policy.may_take_sweep_turn(5.0, stalled_timeout=30, stock_timeout=5)


# ------------------------------------------- writes of the running jobs


def test_jobs_write_waits_for_a_change():
    written = policy.JobsWritten(jobs=((0, 1, "idle", (), 0),), at=0.0)
    assert not policy.jobs_write_due(written, ((0, 1, "idle", (), 0),), now=100.0)
    assert policy.jobs_write_due(written, ((0, 1, "busy", (7,), 0),), now=100.0)


def test_jobs_writes_are_at_least_a_gap_apart_while_jobs_change():
    """A busy fleet's jobs change at every turn of the loop: written once
    when the gap since the last write has passed, then not within the gap."""
    written = policy.JobsWritten()
    writes = []
    for tick in range(40):  # the loop's turns, 0.25 s apart: 10 s
        now = tick * 0.25
        jobs = ((0, 1, "busy", (tick,), tick),)
        if policy.jobs_write_due(written, jobs, now, gap=1.0):
            writes.append(now)
            written = policy.JobsWritten(jobs, now)
    assert writes[0] == 0.0  # the first change is written at once
    assert all(b - a >= 1.0 for a, b in itertools.pairwise(writes))
    assert len(writes) == 10


def test_a_change_within_the_gap_is_written_when_the_gap_ends():
    written = policy.JobsWritten(jobs="before", at=10.0)
    assert not policy.jobs_write_due(written, "after", now=10.5, gap=1.0)
    assert policy.jobs_write_due(written, "after", now=11.0, gap=1.0)


def test_the_deferrer_stays_with_its_child_while_it_is_able():
    able = [(2, 102), (0, 100), (1, 101)]
    assert policy.pick_deferrer(0, able) == 100  # none yet: the lowest slot
    assert policy.pick_deferrer(101, able) == 101  # not moved back to slot 0
    # gone (dead, draining, retiring): the lowest slot of the others
    assert policy.pick_deferrer(100, [(2, 102), (1, 101)]) == 101
    assert policy.pick_deferrer(100, []) == 0
