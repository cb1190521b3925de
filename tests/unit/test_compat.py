"""The private corners of procrastinate we rely on (the compat package), checked
against the installed version. If procrastinate changes one, this fails."""

from __future__ import annotations

import procrastinate
import pytest
from procrastinate import testing

from procrastinate_prefork import compat


def _app(**kwargs):
    return procrastinate.App(
        connector=procrastinate.PsycopgConnector(
            conninfo="dbname=x", min_size=2, kwargs={"application_name": "a"}
        ),
        **kwargs,
    )


def test_pool_args_of_a_psycopg_connector():
    args = compat.psycopg_pool_args(_app().connector)
    assert args["conninfo"] == "dbname=x"
    assert args["min_size"] == 2
    assert args["kwargs"] == {"application_name": "a"}


def test_pool_args_refuse_other_connectors():
    app = procrastinate.App(connector=testing.InMemoryConnector())
    with pytest.raises(TypeError, match="needs a PsycopgConnector"):
        compat.psycopg_pool_args(app.connector)


def test_make_worker_merges_worker_defaults():
    async def middleware(call_next, context, worker):
        return await call_next()

    app = _app(
        worker_defaults={"delete_jobs": "always", "worker_middleware": [middleware]}
    )
    worker = compat.make_worker(app, concurrency=3, queues=["q"])
    assert worker.concurrency == 3
    assert worker.queues == ["q"]
    assert worker.delete_jobs.value == "always"
    assert worker.worker_middleware == [middleware]


# compat.on_worker_registered is exercised against PostgreSQL by every
# recovery test: a dead child's jobs are found by the worker id it reports.


def test_prompt_reconnect_pool_caps_psycopg_pools_backoff():
    """The real pool, against a port that refuses connections: psycopg_pool's
    own retry chain is followed (each failed attempt schedules the next; the
    test runs it at once instead of waiting), and every delay it asks for is
    capped, where psycopg_pool alone doubles it to 64 s by the seventh."""
    import asyncio
    import socket

    from psycopg_pool.pool_async import AddConnection

    async def retry_delays(port: int) -> list[float]:
        pool = compat.PromptReconnectPool(
            f"host=127.0.0.1 port={port} connect_timeout=5",
            min_size=1,
            open=False,
            reconnect_timeout=300,
        )
        scheduled: list = []

        async def schedule_task(task, delay):
            if isinstance(task, AddConnection):  # not the periodic shrink
                scheduled.append((task, delay))

        pool.schedule_task = schedule_task  # type: ignore[method-assign]
        delays = []
        await pool.open(wait=False)
        try:
            for _ in range(7):
                while not scheduled:  # the pool's first attempt, in its worker
                    await asyncio.sleep(0.01)
                task, delay = scheduled.pop()
                delays.append(delay)
                await task.tick()
        finally:
            await pool.close(timeout=1)
        return delays

    with socket.socket() as refusing:  # bound, never listening
        refusing.bind(("127.0.0.1", 0))
        delays = asyncio.run(
            asyncio.wait_for(retry_delays(refusing.getsockname()[1]), 60)
        )
    assert len(delays) == 7
    assert max(delays) <= compat.POOL_RECONNECT_MAX_DELAY, delays
    assert min(delays) > 0, delays  # it still waits between attempts


def _connector_error(cause):
    from procrastinate import exceptions

    try:
        raise exceptions.ConnectorException() from cause
    except exceptions.ConnectorException as exc:
        return exc


def _lost_connection():
    import psycopg

    return _connector_error(psycopg.OperationalError("server closed the connection"))


class _Job:
    def __init__(self, job_id):
        self.id, self.worker_id, self.attempts = job_id, 3, 0


def _survive(monkeypatch, still_ours, keep_fetching, **methods):
    """An app whose job manager calls are ``methods``, wrapped by
    survive_database_outages; the ownership check answers ``still_ours``."""
    app = _app()

    async def execute_query_one_async(query, **arguments):
        assert arguments["worker_id"] == 3
        return {"n": int(still_ours)}

    for name, method in methods.items():
        monkeypatch.setattr(app.job_manager, name, method)
    monkeypatch.setattr(
        app.connector, "execute_query_one_async", execute_query_one_async
    )
    monkeypatch.setattr(compat.outages, "PERSIST_RETRY_DELAY", 0.0)
    compat.survive_database_outages(app, keep_fetching=keep_fetching)
    return app.job_manager


def test_survive_database_outages_retries_a_lost_outcome(monkeypatch):
    import asyncio

    import psycopg
    from procrastinate import exceptions

    calls = []

    async def finish_job(job, status, delete_job):
        calls.append(job.id)
        if len(calls) == 1:
            raise _lost_connection()

    async def fetch_job(queues, worker_id):
        raise _lost_connection()

    async def update_heartbeat(worker_id):
        raise _connector_error(psycopg.errors.UndefinedTable("no table"))

    manager = _survive(
        monkeypatch,
        True,
        True,
        finish_job=finish_job,
        fetch_job=fetch_job,
        update_heartbeat=update_heartbeat,
    )
    asyncio.run(manager.finish_job(_Job(7), "succeeded", False))
    assert calls == [7, 7]  # repeated once the database answered
    assert asyncio.run(manager.fetch_job(None, 3)) is None  # "no job": poll again
    with pytest.raises(exceptions.ConnectorException):  # not a lost connection
        asyncio.run(manager.update_heartbeat(3))


def test_survive_database_outages_does_not_record_twice(monkeypatch):
    import asyncio

    calls = []

    async def retry_job(job, retry_at=None):
        calls.append(job.id)
        raise _lost_connection()

    # committed before the connection broke, or recovered by a sweeper
    manager = _survive(monkeypatch, False, False, retry_job=retry_job)
    asyncio.run(manager.retry_job(_Job(8)))
    assert calls == [8]


def test_job_manager_methods_we_replace_keep_their_signatures():
    """compat.finish_only_owned_jobs and compat.restore_deleted_worker_row
    replace these; the worker calls them with these argument names."""
    import inspect

    from procrastinate import manager

    def params(name):
        return list(inspect.signature(getattr(manager.JobManager, name)).parameters)

    assert params("finish_job") == ["self", "job", "status", "delete_job"]
    assert params("retry_job") == [
        "self",
        "job",
        "retry_at",
        "priority",
        "queue",
        "lock",
    ]
    assert params("fetch_job") == ["self", "queues", "worker_id"]
    source = inspect.getsource(procrastinate.worker.Worker)
    assert "job_manager.finish_job(" in source and "job_manager.retry_job(" in source


def test_the_periodic_deferrer_runs_only_while_designated():
    """compat.periodic.gate_periodic_deferrer wraps the worker's own deferrer
    (started by procrastinate as a side task): it defers jobs only while
    the child is the designated one, and stops when it no longer is."""
    import asyncio
    import inspect

    from procrastinate import worker as worker_module

    from procrastinate_prefork.compat import periodic as compat_worker

    source = inspect.getsource(worker_module.Worker._start_side_tasks)
    assert "self._periodic_deferrer()" in source

    app = procrastinate.App(connector=testing.InMemoryConnector())

    @app.periodic(cron="* * * * * *", periodic_id="every_second")
    @app.task(name="tick")
    def tick(timestamp: int) -> None:
        pass

    worker = compat.make_worker(app)
    designated = [False]
    changes: list[bool] = []
    compat_worker.gate_periodic_deferrer(
        worker, lambda: designated[0], changes.append, poll=0.01
    )

    def deferred() -> int:
        return len(app.connector.jobs)  # type: ignore[attr-defined]

    async def scenario() -> None:
        async with app.open_async():
            side = asyncio.ensure_future(worker._periodic_deferrer())
            await asyncio.sleep(0.1)
            assert deferred() == 0 and changes == []
            designated[0] = True
            await asyncio.sleep(0.1)
            assert deferred() == 1 and changes == [True]  # this second's tick
            designated[0] = False
            await asyncio.sleep(0.1)
            assert changes == [True, False] and not side.done()
            app.connector.jobs.clear()  # type: ignore[attr-defined]
            await asyncio.sleep(1.1)  # a tick passes: nobody defers it here
            assert deferred() == 0
            side.cancel()

    asyncio.run(scenario())
