"""Putting the jobs of dead processes back to work.

Three ways a ``doing`` job loses its process, one way back:

* a child dies under the supervisor: its worker's jobs are recovered at once
  (``recover_worker_jobs``), found by the worker id the child reported;
* a whole host dies: any supervisor's periodic sweep (``sweep_stalled``)
  recovers jobs whose worker has not sent a heartbeat for the stalled timeout;
* a supervisor restarts on the same host: it recovers its dead predecessor's
  children's jobs at start (``recover_worker_jobs`` on the fleet table's ids).

Each job is locked ``FOR UPDATE SKIP LOCKED`` in a short transaction, so two
supervisors never recover one job twice, and nothing outlives the transaction
(safe behind a transaction-pooling PgBouncer). A retried job is announced with
the same NOTIFY as a fresh insert: procrastinate's retry sends none.

Each job is recovered in its own savepoint: a job that cannot be recovered
stays as it is and the others of the batch are recovered all the same. A job
that cannot go back to ``todo`` because another job of its ``queueing_lock``
waits there already is failed, as procrastinate would refuse to defer it.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import json
import logging
from collections.abc import Callable, Collection, Iterable
from typing import Any

import psycopg
from psycopg.rows import dict_row

from .. import errors
from . import queries

logger = logging.getLogger("procrastinate_prefork.recovery")

#: advisory lock key (transaction-scoped) so that only one sweeper scans at once
SWEEP_LOCK_KEY = 0x7072_6566_6F72_6B  # "prefork"


class JobTimeLimitExceeded(Exception):
    """The job ran past its hard time limit and its process was stopped.

    List it in a task's ``RetryStrategy(retry_exceptions=...)`` to retry such
    jobs instead of failing them."""


class Action(str, enum.Enum):
    RETRIED = "retried"
    FAILED = "failed"
    ABORTED = "aborted"


@dataclasses.dataclass(frozen=True)
class Recovery:
    job_id: int
    task_name: str
    queue: str
    worker_id: int | None
    cause: str
    action: Action
    crashes: int
    reason: str
    #: its queueing lock stopped it from going back to ``todo``...
    conflict: bool = False
    #: ...held by this waiting job (None if that one left ``todo`` since)
    conflict_job_id: int | None = None


#: ``(job row) -> (retry?, retry_at)`` for jobs stopped by their time limit
TimeoutRetry = Callable[[dict[str, Any]], "tuple[bool, datetime.datetime | None]"]


def decide(
    *,
    abort_requested: bool,
    crashes: int,
    max_crash_retries: int,
    timed_out: bool = False,
    retry_after_timeout: bool = False,
) -> tuple[Action, str]:
    """What to do with a job whose process died; ``crashes`` counts this death."""
    if abort_requested:
        return Action.ABORTED, "abort was requested"
    if timed_out:
        if retry_after_timeout:
            return Action.RETRIED, "time limit exceeded, task retries"
        return Action.FAILED, "time limit exceeded"
    if crashes > max_crash_retries:
        return Action.FAILED, f"process died under it {crashes} times (poison pill)"
    return Action.RETRIED, "process died"


def recover_worker_jobs(
    conn: psycopg.Connection,
    worker_ids: Collection[int],
    *,
    cause: str,
    max_crash_retries: int,
    timed_out_job_ids: Collection[int] = (),
    timeout_retry: TimeoutRetry | None = None,
    child_pid: int | None = None,
    delete_workers: bool = True,
    count_crash: bool = True,
) -> list[Recovery]:
    """Recover the ``doing`` jobs of these procrastinate workers (known dead)
    and remove their worker rows."""
    if not worker_ids:
        return []
    with conn.transaction():
        with conn.cursor(row_factory=dict_row) as cur:
            rows = cur.execute(
                queries.get("worker_jobs"),
                {
                    "timed_out_job_ids": list(timed_out_job_ids),
                    "worker_ids": list(worker_ids),
                },
            ).fetchall()
        recoveries = _recover_each(
            conn,
            rows,
            cause=cause,
            max_crash_retries=max_crash_retries,
            timed_out_job_ids=timed_out_job_ids,
            timeout_retry=timeout_retry,
            count_crash=count_crash,
        )
        if delete_workers:
            conn.execute(queries.get("delete_workers"), [list(worker_ids)])
    for recovery in recoveries:
        log_recovery(recovery, child_pid)
    return recoveries


@dataclasses.dataclass(frozen=True)
class Judgement:
    """What a sweeper goes by when it judges other processes dead.

    A worker of a prefork child is judged by what its own supervisor declared
    in the fleet table (its stalled timeout, or its heartbeat interval plus
    ``slack`` if that is longer); a worker no fleet row claims (a stock
    ``procrastinate worker``) by ``stock_timeout``. And a timeout is only
    applied once the sweeper has seen its own heartbeats succeed, without a
    stall, for that long (``healthy_for``): heartbeats that could not be
    written (a database outage, a lock, the sweeper itself stalled or just
    started) prove nothing."""

    healthy_for: float
    slack: float
    own_timeout: float
    own_interval: float
    stock_timeout: float

    def params(self) -> dict[str, float]:
        return dataclasses.asdict(self)


def sweep_stalled(
    conn: psycopg.Connection,
    *,
    judgement: Judgement,
    max_crash_retries: int,
    limit: int = 500,
) -> list[Recovery] | None:
    """Recover ``doing`` jobs whose process is judged gone (see
    ``Judgement``), then prune the worker rows judged dead.

    Returns None when another supervisor is sweeping right now."""
    params: dict[str, Any] = {**judgement.params(), "limit": limit}
    with conn.transaction():
        locked = conn.execute(
            queries.get("try_xact_lock"), {"key": SWEEP_LOCK_KEY}
        ).fetchone()
        if not locked or not locked[0]:
            return None
        with conn.cursor(row_factory=dict_row) as cur:
            rows = cur.execute(queries.get("stalled_jobs"), params).fetchall()
        recoveries = _recover_each(
            conn,
            rows,
            cause="worker heartbeat lost",
            max_crash_retries=max_crash_retries,
        )
        conn.execute(queries.get("prune_dead_workers"), params)
    for recovery in recoveries:
        log_recovery(recovery, None)
    return recoveries


#: procrastinate's unique index on ``queueing_lock`` among ``todo`` jobs
#: (``procrastinate_jobs_queueing_lock_idx_v1`` in procrastinate 3.x)
_QUEUEING_LOCK_INDEX = "procrastinate_jobs_queueing_lock_idx"


def _recover_each(
    conn: psycopg.Connection,
    rows: Iterable[dict[str, Any]],
    *,
    cause: str,
    max_crash_retries: int,
    timed_out_job_ids: Collection[int] = (),
    timeout_retry: TimeoutRetry | None = None,
    count_crash: bool = True,
) -> list[Recovery]:
    """Recover each row in a savepoint of its own. A lost connection (or a
    cancelled statement) still ends the whole call: nothing can be done then."""
    recoveries = []
    for row in rows:
        try:
            with conn.transaction():
                recoveries.append(
                    _recover_row(
                        conn,
                        row,
                        cause=cause,
                        max_crash_retries=max_crash_retries,
                        timed_out=row["id"] in timed_out_job_ids,
                        timeout_retry=timeout_retry,
                        count_crash=count_crash,
                    )
                )
        except psycopg.errors.UniqueViolation as exc:
            constraint = exc.diag.constraint_name or ""
            if not constraint.startswith(_QUEUEING_LOCK_INDEX):
                _log_failed(row, exc)
                continue
            with conn.transaction():
                recoveries.append(_fail_queueing_lock_conflict(conn, row, cause))
        except psycopg.OperationalError:
            raise
        except psycopg.Error as exc:
            _log_failed(row, exc)
    return recoveries


def _fail_queueing_lock_conflict(
    conn: psycopg.Connection, row: dict[str, Any], cause: str
) -> Recovery:
    """Fail a job that cannot go back to ``todo``: a job of its queueing lock
    waits there already. procrastinate refuses to defer a job in that case,
    and the waiting job is the one that will do the work."""
    waiting = conn.execute(
        queries.get("waiting_lock_holder"),
        [row["queueing_lock"], row["id"]],
    ).fetchone()
    conflict_job_id = int(waiting[0]) if waiting else None
    conn.execute(
        queries.get("finish_job"),
        [row["id"], Action.FAILED.value],
    )
    return Recovery(
        job_id=row["id"],
        task_name=row["task_name"],
        queue=row["queue_name"],
        worker_id=row["worker_id"],
        cause=cause,
        action=Action.FAILED,
        crashes=0,
        reason=f"its queueing lock is held by waiting job {conflict_job_id}",
        conflict=True,
        conflict_job_id=conflict_job_id,
    )


def _log_failed(row: dict[str, Any], exc: psycopg.Error) -> None:
    logger.error(
        "Job %s (%s) could not be recovered, left as it is for a later attempt: %s",
        row["id"],
        row["task_name"],
        errors.one_line(exc),
        extra={
            "action": "job_recovery_failed",
            "job_id": row["id"],
            "task_name": row["task_name"],
            "sqlstate": exc.sqlstate,
        },
    )


def _recover_row(
    conn: psycopg.Connection,
    row: dict[str, Any],
    *,
    cause: str,
    max_crash_retries: int,
    timed_out: bool = False,
    timeout_retry: TimeoutRetry | None = None,
    count_crash: bool = True,
) -> Recovery:
    job_id = row["id"]
    counted = None
    if count_crash:
        counted = conn.execute(
            queries.get("count_crash"),
            [job_id, cause[:255]],
        ).fetchone()
    crashes = counted[0] if counted else 0
    retry_after_timeout, retry_at = False, None
    if timed_out and timeout_retry is not None and not row["abort_requested"]:
        retry_after_timeout, retry_at = timeout_retry(row)
    action, reason = decide(
        abort_requested=row["abort_requested"],
        crashes=crashes,
        max_crash_retries=max_crash_retries,
        timed_out=timed_out,
        retry_after_timeout=retry_after_timeout,
    )
    if action is Action.RETRIED:
        conn.execute(
            queries.get("retry_job"),
            [job_id, retry_at],
        )
        payload = json.dumps({"type": "job_inserted", "job_id": job_id})
        conn.execute(
            queries.get("notify_job_inserted"),
            [row["queue_name"], payload, payload],
        )
    else:
        conn.execute(
            queries.get("finish_job"),
            [job_id, action.value],
        )
    return Recovery(
        job_id=job_id,
        task_name=row["task_name"],
        queue=row["queue_name"],
        worker_id=row["worker_id"],
        cause=cause,
        action=action,
        crashes=crashes,
        reason=reason,
    )


def log_recovery(recovery: Recovery, child_pid: int | None) -> None:
    level = logging.ERROR if recovery.action is Action.FAILED else logging.WARNING
    conflict = recovery.conflict
    logger.log(
        level,
        "Recovered job %s (%s): %s, %s [cause: %s, child pid: %s, crashes: %s]",
        recovery.job_id,
        recovery.task_name,
        recovery.action.value,
        recovery.reason,
        recovery.cause,
        child_pid,
        recovery.crashes,
        extra={
            "action": "job_recovery_conflict" if conflict else "job_recovered",
            "conflict_job_id": recovery.conflict_job_id,
            "job_id": recovery.job_id,
            "task_name": recovery.task_name,
            "child_pid": child_pid,
            "cause": recovery.cause,
            "recovery_action": recovery.action.value,
            "crashes": recovery.crashes,
        },
    )
