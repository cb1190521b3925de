"""Prepared statements behind a transaction pooler (Bootstrap.pooler_safe)."""

from __future__ import annotations

import procrastinate

from procrastinate_prefork.child.bootstrap import AppBootstrap


def bootstrap(**kwargs):
    connector = procrastinate.PsycopgConnector(conninfo="dbname=app", kwargs=kwargs)
    return AppBootstrap(procrastinate.App(connector=connector))


def test_direct_connections_keep_psycopg_defaults():
    args = bootstrap().connection_args()
    assert "prepare_threshold" not in (args.get("kwargs") or {})


def test_pooled_connections_prepare_nothing():
    boot = bootstrap(application_name="x")
    boot.transaction_pooled = True
    args = boot.connection_args()
    assert args["kwargs"] == {"application_name": "x", "prepare_threshold": None}
    assert args["conninfo"] == "dbname=app"


def test_an_explicit_threshold_is_kept():
    # e.g. PgBouncer 1.21+ with max_prepared_statements, which supports them
    boot = bootstrap(prepare_threshold=5)
    boot.transaction_pooled = True
    assert boot.connection_args()["kwargs"]["prepare_threshold"] == 5
