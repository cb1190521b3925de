"""Chaos: 3 supervisors (distinct host names) x 4 children on one database,
mixed jobs, while a driver SIGKILLs a random child about every half second,
SIGKILLs a supervisor and starts it again under the same host name, SIGSTOPs
children (one past --child-timeout, one not) and restarts PostgreSQL; and the
attacks of the delivery-guarantees issues: queueing-lock jobs, hosts with
different stalled timeouts, a database outage with a supervisor started in a
loop across it, a SIGHUP burst, time limits at --child-concurrency 2, a stock
procrastinate worker SIGTERMed mid-job, a lock on the fleet table, and a
supervisor whose stdout pipe loses its reader while its children retire,
and a host whose database connections are black-holed for 10 s (its /live
must answer every poll within a second). Two of the hosts (the SIGHUP and
log-pipe one, the timed and black-holed one) run two pools each
(tests/chaos_pools.py; CHAOS_POOLS=0 for one pool everywhere).

The short CI version: CHAOS_JOBS (1000) jobs over CHAOS_SECONDS (60) seconds.
CHAOS_OFF="fleet_lock,db_outage" leaves attacks out (names: ATTACKS in the
driver).
Run it alone with ``scripts/test.sh -m chaos -s``; ``scripts/soak.sh`` runs
the same driver for longer. The checks are in ``tests/chaos_driver.py``.
"""

from __future__ import annotations

import pytest

from ..chaos_driver import ChaosConfig, ChaosRun, throwaway_pg

pytestmark = [
    pytest.mark.chaos,
    pytest.mark.timeout(600),
    pytest.mark.skipif(
        not throwaway_pg(),
        reason="restarts PostgreSQL: needs the throwaway server of scripts/test.sh "
        "(PROCRASTINATE_PREFORK_THROWAWAY_PG=1)",
    ),
]


def test_nothing_lost_under_chaos(db_url, tmp_path, capsys):
    config = ChaosConfig.from_env()
    run = ChaosRun(db_url, tmp_path, config, say=lambda text: print(f"[chaos] {text}"))
    report = run.execute()
    summary = report.summary()
    with capsys.disabled():
        print(f"\n----- chaos report (seed {config.seed}) -----\n{summary}")
    assert not report.problems, summary
    assert report.lost == 0 and report.wrong_status == 0
    assert report.jobs >= config.jobs
    # the chaos really happened
    assert report.child_kills >= config.seconds / config.kill_interval / 3
    assert report.recoveries >= 1
    if config.kill_supervisor:
        assert report.supervisor_kills >= 1
    if config.restart_db:
        assert report.db_restarts == 1
    if config.stop_children:
        assert report.sigstops == 2 and report.wedged_kills >= 1
    if config.queueing_locks:
        assert report.queueing_lock_jobs >= 10 and report.queueing_lock_refused >= 1
    if config.mixed_timeouts:
        assert len(set(report.host_timeouts.values())) >= 2
    if config.db_outage:
        # SIGKILLed as it stopped, started while down and when back
        assert report.db_outages == 1 and report.outage_start_attempts >= 2
    if config.sighup_burst:
        assert report.sighups == config.sighup_burst
        assert report.sighup_converged == 1
    if config.time_limits:
        # their enforcement is judged by the books (each long one failed,
        # its last run stopped)
        assert report.overrun_jobs == config.overrun_jobs and report.overrun_long >= 1
    if config.stock_worker:
        assert report.stock_worker_terms == 1 and report.stock_worker_runs >= 1
    if config.black_hole:  # every /live poll answered: see the problems
        assert report.black_holes == 1 and report.hole_live_polls >= 5
        assert report.hole_loop_turns >= 5
    if config.fleet_lock:
        assert report.fleet_locks == 1
        assert report.fleet_lock_seconds > 2 * config.longest_stalled_timeout()
    if config.log_pipe:
        # one retired by SIGTTOU, the others rolled over by SIGHUP (the random
        # kills spare that host meanwhile); each child gone exited through the
        # broken pipe, or was killed by its supervisor past a deadline; the
        # stray records and the reruns are judged with the problems
        assert report.log_pipe_breaks == 1
        assert report.log_pipe_gone >= config.children - 1
        assert report.log_pipe_retired >= 1
    if config.pools:
        # the pools hosts really ran jobs in each of their pools (a job run by
        # a pool that does not serve its queue is one of the problems)
        assert report.pool_hosts
        for host, pools in report.pool_hosts.items():
            ran = report.pool_runs.get(host, {})
            assert all(ran.get(pool, 0) >= 1 for pool in pools), (host, ran)
