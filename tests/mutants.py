"""The curated mutants: one per promise of
docs/discussions/delivery-guarantees.md, each the smallest change that puts
its defect back, with the tests that claim to guard against it (every one of
them must fail). Run with ``scripts/mutants.sh``; see ``tests/mutation.py``.

Written against today's code: when a refactoring moves or rewrites the text
a mutant replaces, the check fails naming it as stale; update its ``old`` and
``new`` with the code (the defect stays the same).
"""

from __future__ import annotations

from .mutation import Mutant

JUDGEMENT = "tests/integration/test_sweep_judgement.py"
LOOP = "tests/integration/test_loop.py"
RECOVERY = "tests/integration/test_recovery.py"
ISOLATION = "tests/integration/test_recovery_isolation.py"
# the end of compat.ends.finish_only_owned_jobs (other wrappers of finish_job and
# retry_job end with the same two lines)
OWNED_TAIL = (
    "        await unregister(worker_id)\n\n"
    "    # ignore: we replace methods of this app's JobManager on purpose\n"
)
OWNED_FINISH = "    manager.finish_job = finish_job  # type: ignore[method-assign]\n"
OWNED_RETRY = "    manager.retry_job = retry_job  # type: ignore[method-assign]\n"

# the owned-job rule where end_owned_job_and_fetch writes it
END_AND_FETCH = "-- caller then records the end alone).\nWITH owned AS MATERIALIZED (\n"
OWNED_ROW = (
    "    SELECT id FROM procrastinate_jobs\n"
    "    WHERE id = %(job_id)s AND status = 'doing' AND attempts = %(attempts)s\n"
)
OWNED_RULE = " AND status = 'doing' AND attempts = %(attempts)s"

MUTANTS: list[Mutant] = [
    Mutant(
        id="immediate-recovery",
        promise="a dead child's jobs are recovered at once, not by the sweep",
        path="procrastinate_prefork/supervisor/reaping.py",
        old="        if worker_id is not None:\n            timed_out =",
        new="        if False:\n            timed_out =",
        tests=(f"{RECOVERY}::test_sigkill_mid_job_runs_again_on_another_child",),
    ),
    Mutant(
        id="savepoints",
        promise="each job is recovered in a savepoint of its own",
        path="procrastinate_prefork/fleet/recovery.py",
        old="        try:\n            with conn.transaction():\n"
        "                recoveries.append(\n                    _recover_row(",
        new="        try:\n            if True:\n"
        "                recoveries.append(\n                    _recover_row(",
        tests=(
            f"{ISOLATION}::test_queueing_lock_conflict_after_child_death",
            f"{ISOLATION}::test_queueing_lock_conflict_in_a_sweep",
        ),
    ),
    Mutant(
        id="poison-cap",
        promise="a job is put back at most --max-crash-retries times",
        path="procrastinate_prefork/fleet/recovery.py",
        old="    if crashes > max_crash_retries:\n",
        new="    if False:\n",
        tests=(f"{RECOVERY}::test_poison_pill_fails_after_cap_while_others_flow",),
    ),
    Mutant(
        id="declared-timeout",
        promise="the sweep judges each host by its own declared timeout",
        path="procrastinate_prefork/sql/queries.sql",
        old="-- supervisor, or as stock workers by stock_timeout).\n"
        "WITH sup AS (\n"
        "    SELECT s.id, t.timeout,\n"
        "           s.state = 'stopped'\n"
        "           OR (s.last_heartbeat < now() - make_interval(secs => t.timeout)\n"
        "               AND t.timeout <= %(healthy_for)s) AS dead\n"
        "    FROM procrastinate_prefork_processes AS s,\n"
        "    LATERAL (SELECT GREATEST(COALESCE(s.stalled_timeout, %(own_timeout)s),\n"
        "             COALESCE(s.heartbeat_interval, %(own_interval)s) + %(slack)s)",
        new="-- supervisor, or as stock workers by stock_timeout).\n"
        "WITH sup AS (\n"
        "    SELECT s.id, t.timeout,\n"
        "           s.state = 'stopped'\n"
        "           OR (s.last_heartbeat < now() - make_interval(secs => t.timeout)\n"
        "               AND t.timeout <= %(healthy_for)s) AS dead\n"
        "    FROM procrastinate_prefork_processes AS s,\n"
        "    LATERAL (SELECT GREATEST(%(own_timeout)s,\n"
        "             %(own_interval)s + %(slack)s)",
        tests=(
            f"{JUDGEMENT}::test_short_timeout_host_does_not_take_a_long_timeout_hosts_job",
            "tests/integration/test_sweep_rules.py"
            "::test_each_host_is_judged_by_its_own_declared_timeout",
        ),
    ),
    Mutant(
        id="heartbeat-series",
        promise="the sweeper judges nobody before its own heartbeats ran for "
        "that one's timeout",
        path="procrastinate_prefork/supervisor/maintenance.py",
        old="            healthy_for=healthy_for,\n",
        new="            healthy_for=1e9,\n",
        tests=(
            f"{JUDGEMENT}"
            "::test_newcomer_does_not_judge_a_host_before_it_watched_for_its_timeout",
        ),
    ),
    Mutant(
        id="late-finish",
        promise="a late run's outcome (finish) does not overwrite a later run's",
        path="procrastinate_prefork/compat/ends.py",
        old=f"{OWNED_TAIL}{OWNED_FINISH}{OWNED_RETRY}",
        new=f"{OWNED_TAIL}{OWNED_RETRY}",
        tests=(f"{JUDGEMENT}::test_late_outcome_of_an_earlier_run_is_not_written",),
    ),
    Mutant(
        id="late-retry",
        promise="a late run's outcome (retry) does not overwrite a later run's",
        path="procrastinate_prefork/compat/ends.py",
        old=f"{OWNED_TAIL}{OWNED_FINISH}{OWNED_RETRY}",
        new=f"{OWNED_TAIL}{OWNED_FINISH}",
        tests=(f"{JUDGEMENT}::test_late_retry_of_an_earlier_run_is_not_written",),
    ),
    Mutant(
        id="predecessor-identity",
        promise="a predecessor is judged by its pid only in our boot and PID namespace",
        path="procrastinate_prefork/fleet/identity.py",
        old="    if (recorded.boot_id, recorded.pid_namespace) != "
        "(own.boot_id, own.pid_namespace):\n        return False\n",
        new="",
        tests=(
            "tests/integration/test_predecessor.py"
            "::test_other_identity_is_judged_by_its_heartbeat_only",
        ),
    ),
    Mutant(
        id="client-deadline",
        promise="every database call of the supervisor is bounded by its own deadline",
        path="procrastinate_prefork/supervisor/db.py",
        old="    signal.setitimer(signal.ITIMER_REAL, seconds, 0.5)\n",
        new="    signal.setitimer(signal.ITIMER_REAL, 0)\n",
        tests=(f"{LOOP}::test_stopped_backend_does_not_freeze_the_loop",),
    ),
    Mutant(
        id="server-timeouts",
        promise="every database call of the supervisor sets the server's "
        "statement and lock timeouts",
        path="procrastinate_prefork/supervisor/db.py",
        old='            queries.get("set_local_timeouts"),\n',
        new='            "SELECT %s::text, %s::text",\n',
        tests=(f"{LOOP}::test_locked_fleet_table_leaves_no_waiting_sessions",),
    ),
    Mutant(
        id="slot-convergence",
        promise="signals in any number and order converge to the fleet's size",
        path="procrastinate_prefork/supervisor/slots.py",
        old="    kept = {c.pid for c in keep[:serving]}\n",
        new="    kept = {c.pid for c in keep}\n",
        tests=(
            f"{LOOP}::test_sighup_burst_converges_to_the_target",
            f"{LOOP}::test_sighup_then_sigttou_converges_to_the_smaller_target",
        ),
    ),
    Mutant(
        id="per-job-time-limit",
        promise="with several jobs per child, the job over its limit is blamed",
        path="procrastinate_prefork/supervisor/deadlines.py",
        old="                        self._time_limit(child, job, now)\n",
        new="                        self._time_limit(\n"
        "                            child, "
        "min(view.jobs, key=lambda j: j.age(now)), now\n"
        "                        )\n",
        tests=(
            "tests/integration/test_time_limits_concurrency.py"
            "::test_the_job_over_its_limit_is_blamed_not_the_newest",
        ),
    ),
    Mutant(
        id="sweep-turn",
        promise="the fleet sweeps once per heartbeat interval, however many hosts",
        path="procrastinate_prefork/sql/queries.sql",
        old="ON CONFLICT (id) DO UPDATE SET swept_at = now()\n"
        "WHERE procrastinate_prefork_sweep.swept_at\n"
        "    < now() - make_interval(secs => %(interval)s)\n",
        new="ON CONFLICT (id) DO UPDATE SET swept_at = now()\n",
        tests=(
            "tests/integration/test_sweep_turn.py"
            "::test_three_supervisors_sweep_about_once_per_interval",
        ),
    ),
    Mutant(
        id="sweep-gate",
        promise="a supervisor claims no sweep turn before it could judge its own kind",
        path="procrastinate_prefork/supervisor/policy.py",
        old="    return healthy_for >= min(stalled_timeout, stock_timeout)\n",
        new="    return True\n",
        tests=(
            "tests/integration/test_sweep_turn.py"
            "::test_a_supervisor_takes_no_turn_before_it_could_judge",
        ),
    ),
    Mutant(
        id="soft-limit-thread",
        promise="the soft time limit is raised in the late job's own thread",
        path="procrastinate_prefork/child/softlimit.py",
        old="            ident = self._threads.get(job_id)\n",
        new="            ident = next(\n"
        "                (t for j, t in self._threads.items() if j != job_id),\n"
        "                self._threads.get(job_id),\n"
        "            )\n",
        tests=(
            "tests/integration/test_soft_time_limits.py"
            "::test_only_the_late_job_of_a_child_is_interrupted",
        ),
    ),
    Mutant(
        id="child-never-returns",
        promise="a forked child never returns into the supervisor's code",
        path="procrastinate_prefork/child/forked.py",
        # the defect as it was: a flush that raises climbs out of the child's
        # exit into fork_child, and the child runs the supervisor's loop
        old="            with contextlib.suppress(BaseException):\n"
        "                stream.flush()\n"
        "    finally:\n"
        "        os._exit(code)\n",
        new="            stream.flush()\n"
        "    except ZeroDivisionError:\n"
        "        pass\n"
        "    os._exit(code)\n",
        tests=(
            "tests/integration/test_child_exit.py::"
            "test_retired_child_with_a_broken_stdout_pipe_never_runs_the_supervisor",
            "tests/integration/test_child_exit.py::"
            "test_retired_child_with_stdout_on_a_full_disk_never_runs_the_supervisor",
            "tests/unit/test_child_exit.py::"
            "test_a_child_exits_with_its_code_when_its_output_is_on_a_full_disk",
        ),
    ),
    Mutant(
        id="late-end-and-fetch",
        promise="a late outcome of an earlier run is not written when a job's "
        "end and the next fetch are one statement (--child-concurrency 1)",
        path="procrastinate_prefork/sql/queries.sql",
        old=f"{END_AND_FETCH}{OWNED_ROW}",
        new=f"{END_AND_FETCH}{OWNED_ROW.replace(OWNED_RULE, '')}",
        tests=(
            "tests/integration/test_child_session.py::"
            "test_late_outcome_refused_and_the_next_job_fetched_in_one_statement",
        ),
    ),
    Mutant(
        id="one-shot-empty",
        promise="--one-shot stops only once the queues are empty: a child that "
        "stopped for another reason (a time limit, a SIGTERM) is replaced",
        path="procrastinate_prefork/supervisor/policy.py",
        old="    return wait or exit_code != EXIT_QUEUES_EMPTY\n",
        new="    return wait\n",
        tests=(
            "tests/integration/test_one_shot.py::"
            "test_one_shot_goes_on_after_a_time_limit_stop",
            "tests/integration/test_one_shot.py::"
            "test_one_shot_goes_on_after_a_child_is_sigtermed_by_hand",
        ),
    ),
    Mutant(
        id="metrics-label-limit",
        promise="the metrics' series stay within --metrics-label-limit whatever "
        "queue and task names the deferrers choose",
        path="procrastinate_prefork/observability/metrics.py",
        old="        if len(self.pairs) < self.label_limit"
        " and pair != (OTHER, OTHER):\n",
        new="        if pair != (OTHER, OTHER):\n",
        tests=(
            "tests/integration/test_metrics.py::"
            "test_series_stay_within_the_label_limit",
        ),
    ),
    Mutant(
        id="health-strangers",
        promise="the health URL tells a caller without staff or the token the "
        "status and the counts only",
        path="procrastinate_prefork/contrib/django/views.py",
        # a check that takes a guess's start for the token
        old="    return hmac.compare_digest("
        "given.strip().encode(), expected.encode())\n",
        new="    return expected.startswith(given.strip())\n",
        tests=(
            "tests/integration/test_health.py::"
            "test_django_view_tells_strangers_the_status_only",
        ),
    ),
    Mutant(
        id="child-records-its-worker",
        promise="a child's worker id is in the fleet table before its first "
        "fetch: a successor recovers its job though the supervisor died first",
        path="procrastinate_prefork/child/runner.py",
        old="        if spec.supervisor_row is not None:\n",
        new="        if False:\n",
        tests=(
            f"{RECOVERY}::"
            "test_job_of_a_child_never_recorded_by_its_supervisor_is_recovered",
        ),
    ),
    Mutant(
        id="wake-during-fetch",
        promise="a wake-up that comes while a fetch finds nothing is not lost "
        "(procrastinate's worker clears its event after each fetch)",
        path="procrastinate_prefork/compat/fetches.py",
        old="            if job is not None or wakes() == seen:\n",
        new="            if True:\n",
        tests=(
            "tests/integration/test_poller.py::"
            "test_a_job_deferred_while_a_fetch_finds_nothing_starts_at_once",
        ),
    ),
    Mutant(
        id="children-poll-anyway",
        promise="an idle fleet's children leave the polling to the supervisor "
        "(one query per pool an interval, not one per child)",
        path="procrastinate_prefork/compat/fetches.py",
        old="        if idle_since[0] == wakes() and supervisor_polls():\n",
        new="        if False:\n",
        tests=(
            "tests/integration/test_poller.py::"
            "test_an_idle_fleet_does_not_poll_from_its_children",
        ),
    ),
    Mutant(
        id="children-trust-a-stopped-supervisor",
        promise="children poll on their own when the supervisor's polls are late",
        path="procrastinate_prefork/child/runner.py",
        old=(
            "        return config.wait and "
            "time.monotonic() - scoreboard.polled() < late_after\n"
        ),
        new="        return config.wait\n",
        tests=(
            "tests/integration/test_poller.py::"
            "test_with_the_supervisor_stopped_children_still_poll_on_their_own",
        ),
    ),
    Mutant(
        id="lost-fetch",
        promise="a job fetched for a live child, the reply lost with the "
        "connection, goes back to todo instead of staying doing while it lives",
        path="procrastinate_prefork/compat/fetches.py",
        old="        if state.uncertain and await _release(",
        new="        if False and await _release(",
        tests=(
            "tests/integration/test_child_session.py::"
            "test_job_fetched_without_a_reply_is_given_back_and_runs",
        ),
    ),
]
