"""The private corners of procrastinate we rely on (compat.py), checked
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

    app = _app(worker_defaults={"delete_jobs": "always", "worker_middleware": [middleware]})
    worker = compat.make_worker(app, concurrency=3, queues=["q"])
    assert worker.concurrency == 3
    assert worker.queues == ["q"]
    assert worker.delete_jobs.value == "always"
    assert worker.worker_middleware == [middleware]


# compat.on_worker_registered is exercised against PostgreSQL by every
# recovery test: a dead child's jobs are found by the worker id it reports.
