"""Chaos: 3 supervisors (distinct host names) x 4 children on one database,
mixed jobs, while a driver SIGKILLs a random child about every half second,
SIGKILLs a supervisor and starts it again under the same host name, SIGSTOPs
children (one past --child-timeout, one not) and restarts PostgreSQL.

The short CI version: CHAOS_JOBS (600) jobs over CHAOS_SECONDS (30) seconds.
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
    assert report.jobs == config.jobs
    # the chaos really happened
    assert report.child_kills >= config.seconds / config.kill_interval / 3
    assert report.supervisor_kills == 1 and report.db_restarts == 1
    assert report.sigstops == 2 and report.wedged_kills >= 1
    assert report.recoveries >= 1
