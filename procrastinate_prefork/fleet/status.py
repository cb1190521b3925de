"""The fleet status, for people (a table) and machines (JSON, an exit code).

Shared by ``procrastinate-prefork --app X status`` and ``manage.py
prefork_status`` (and the Django views, through ``judge``). The verdict is
about every supervisor selected (by host and queue), counted in the database
(``fleet_summary``, one row however big the fleet table); the listing holds
up to ``--limit`` of them (those with a problem first), read with their
children only (``fleet_rows_selected``, through psycopg or Django's
connection) into snapshots (``snapshot.from_rows``). What lists no process
(``--check``, an anonymous health view, django-health-check) reads the
verdict's facts only.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Mapping
from typing import Any, TextIO

from .. import errors
from . import health, queries, snapshot
from . import table as fleet

EXIT_HEALTHY = 0
EXIT_UNHEALTHY = 1

#: One meaning per column, for supervisors and children alike (and as the
#: JSON document and the live page name them): UPTIME since the process
#: started, HEARTBEAT since it was last heard from, AS OF since its row was
#: last written (the age of what the row shows), JOBS DONE by the process
#: itself (a supervisor runs none: "-"). A child's QUEUES are its
#: supervisor's (left blank, like its HOST), or, of a supervisor with several
#: pools, its pool's name and queues ("io: mail,hooks").
COLUMNS = (
    "HOST",
    "PID",
    "SLOT",
    "STATE",
    "QUEUES",
    "JOB",
    "UPTIME",
    "HEARTBEAT",
    "AS OF",
    "JOBS DONE",
    "MEMORY",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json",
        action="store_true",
        dest="as_json",
        help="Print JSON (the Django health view's document).",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="Print one line instead of the table (an exec "
        "probe). The exit code is 0 when the fleet is "
        "healthy and 1 when not, with or without --check.",
    )
    parser.add_argument(
        "--host", default=None, help="Only the supervisors of this host."
    )
    parser.add_argument(
        "--queue", default=None, help="Only the supervisors that work on this queue."
    )
    parser.add_argument(
        "--min-children",
        default=None,
        metavar="N",
        help="Fresh children needed to be healthy (default 1).",
    )
    parser.add_argument(
        "--limit",
        default=None,
        metavar="N",
        help=f"Supervisors listed, those with a problem first (default "
        f"{health.DEFAULT_LIMIT}; 0: all). The verdict is about all of them.",
    )


def query_from_args(args: argparse.Namespace | Mapping[str, Any]) -> health.FleetQuery:
    """Raises health.QueryError."""
    data = vars(args) if isinstance(args, argparse.Namespace) else args
    return health.FleetQuery.build(
        host=data.get("host"),
        queue=data.get("queue"),
        min_children=data.get("min_children"),
        limit=data.get("limit"),
    )


#: runs a statement (a named query) with its parameters; its rows, as dicts
Reader = Callable[[str, Mapping[str, Any]], list[dict[str, Any]]]


def fetch_rows_psycopg(conn: Any) -> list[dict[str, Any]]:
    return fleet.fetch_fleet(conn, live_only=True)


def psycopg_reader(conn: Any) -> Reader:
    from psycopg.rows import dict_row

    def read(statement: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        with conn.cursor(row_factory=dict_row) as cur:
            return list(cur.execute(statement, params).fetchall())

    return read


def judge(
    read: Reader, query: health.FleetQuery, *, listing: bool
) -> health.FleetHealth:
    """The fleet's health: the verdict about every supervisor the query
    selects, from one row however big the fleet table is; with ``listing``,
    up to ``query.limit`` of them listed (``health.pick_listed``'s rule, applied in
    the database). Give it a reader whose reads share one transaction (one
    ``now()``), so that the listing's ages agree with the verdict."""
    selected = {"host": query.host, "queue": query.queue}
    [row] = read(
        queries.get("fleet_summary"),
        {
            **selected,
            "default_stale_after": health.DEFAULT_STALE_AFTER,
            "working_states": sorted(health.WORKING_STATES),
        },
    )
    supervisors: list[snapshot.FleetSnapshot] = []
    if listing:
        rows = read(
            queries.get("fleet_rows_selected"),
            {
                **selected,
                "default_stale_after": health.DEFAULT_STALE_AFTER,
                "limit": query.limit or None,  # LIMIT NULL: all
            },
        )
        supervisors = snapshot.from_rows(rows)
    return health.verdict(
        query,
        int(row["fresh_supervisors"]),
        int(row["fresh_children"]),
        [(int(pid), host) for pid, host in _decoded(row["crash_loops"])],
        [(int(pid), host, float(age)) for pid, host, age in _decoded(row["stale"])],
        supervisors,
        total=int(row["supervisors"]),
    )


def _decoded(value: Any) -> list[Any]:
    """A jsonb array: decoded by psycopg, a string through Django's cursor."""
    return list(json.loads(value) if isinstance(value, str) else value)


def report(
    read: Reader,
    query: health.FleetQuery,
    *,
    as_json: bool,
    check: bool,
    out: TextIO,
    err: TextIO,
    schema_hint: str | None = None,
) -> int:
    """Print the fleet; return the exit code: 0 healthy, 1 not. A database
    error is one line on ``err`` (with ``schema_hint`` when the table does not
    exist) and counts as unhealthy."""
    try:
        result = judge(read, query, listing=not check)
    except Exception as exc:  # psycopg or Django database errors
        first = errors.one_line(exc)
        if schema_hint and _undefined_table(exc):
            first += f" ({schema_hint})"
        err.write(f"error: cannot read the fleet table: {first}\n")
        return EXIT_UNHEALTHY
    if as_json:
        out.write(json.dumps(result.as_dict(), indent=2) + "\n")
    elif check:
        out.write(one_line(result) + "\n")
    else:
        out.write(render_table(result))
    return EXIT_HEALTHY if result.healthy else EXIT_UNHEALTHY


def _undefined_table(exc: BaseException) -> bool:
    """psycopg's UndefinedTable, or Django's error wrapping it."""
    import psycopg.errors

    return any(
        isinstance(e, psycopg.errors.UndefinedTable)
        for e in (exc, exc.__cause__)
        if e is not None
    )


def render_table(result: health.FleetHealth) -> str:
    lines: list[tuple[str, ...]] = [COLUMNS]
    for sup in result.supervisors:
        pools = {pool.name: pool for pool in sup.pool_list()}
        state = sup.phase + (" crash-loop" if sup.crash_looping else "")
        if not health.is_fresh(sup):
            state += " STALE"
        lines.append(
            (
                sup.host,
                str(sup.pid),
                "-",
                state,
                ",".join(sup.queues or []) or "(all)",
                "-",
                _age(sup.uptime),
                _age(sup.heartbeat_age),
                _age(sup.as_of_age),
                "-",
                _memory(sup.rss_bytes),
            )
        )
        for child in sup.children:
            job = "-"
            if child.job_id is not None:
                job = f"{child.job_id} {child.task_name or '?'}"
                if child.job_age is not None:
                    job += f" ({_age(child.job_age)})"
            fresh = health.counts(sup, child)
            lines.append(
                (
                    "",
                    str(child.pid),
                    str(child.slot),
                    child.state + ("" if fresh else " STALE"),
                    _pool_cell(pools, child.pool),
                    job,
                    _age(child.uptime),
                    _age(child.heartbeat_age),
                    _age(child.as_of_age),
                    str(child.jobs_done),
                    _memory(child.rss_bytes),
                )
            )
    widths = [max(len(line[i]) for line in lines) for i in range(len(COLUMNS))]
    text = "\n".join(
        "  ".join(
            cell.ljust(width) for cell, width in zip(line, widths, strict=True)
        ).rstrip()
        for line in lines
    )
    summary = (
        f"{result.status.upper()}: {result.fresh_supervisors} fresh supervisor(s), "
        f"{result.fresh_children} fresh child(ren) (min_children="
        f"{result.query.min_children})"
    )
    notes = [f"  - {p}" for p in (*result.problems, *result.warnings)]
    if not result.supervisors:
        text += "\n(no supervisor in the fleet table)"
    unlisted = result.total_supervisors - len(result.supervisors)
    if unlisted > 0:
        text += (
            f"\n({unlisted} of {result.total_supervisors} supervisor(s) not "
            f"listed: --limit {result.query.limit} lists those with a problem "
            "first; --limit 0 lists all, --host H or --queue Q selects)"
        )
    return "\n".join([text, "", summary, *notes]) + "\n"


def _pool_cell(pools: Mapping[str, snapshot.PoolSnapshot], name: str) -> str:
    if len(pools) < 2:
        return ""
    pool = pools.get(name)
    queues = pool.queues if pool is not None else None
    return f"{name}: {','.join(queues or []) or '(all)'}"


def one_line(result: health.FleetHealth) -> str:
    if result.healthy:
        return (
            f"healthy: {result.fresh_supervisors} supervisor(s), "
            f"{result.fresh_children} child(ren)"
        )
    return "unhealthy: " + "; ".join(result.problems)


def _age(seconds: float) -> str:
    # rounded as in the JSON document, so that both show the same age
    seconds = health.shown_age(seconds)
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.1f}h"


def _memory(size: int | None) -> str:
    if not size:
        return "-"
    return f"{size / (1 << 20):.1f}MiB"
