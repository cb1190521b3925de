"""Who a process is, and which supervisors of our host name are dead.

A supervisor that starts recovers the jobs of its dead predecessors on the
same host name at once, without waiting for the sweep's stalled timeout. It
declares one dead only on evidence a live process elsewhere cannot produce:
the same boot and PID namespace and no process with that pid and start time,
or a heartbeat older than the predecessor's own stalled timeout.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import psycopg
from psycopg.rows import dict_row

from . import queries


@dataclasses.dataclass(frozen=True)
class ProcessIdentity:
    """Who a process is, in the kernel's terms (no clock): unique across
    reboots (``boot_id``), PID namespaces (``pid_namespace``, the inode of
    ``/proc/<pid>/ns/pid``) and pid reuse (``process_start``, clock ticks
    since boot)."""

    boot_id: str
    pid_namespace: int
    process_start: int


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def parse_start_ticks(stat: str) -> tuple[str, int]:
    """(state, start time in clock ticks since boot) from ``/proc/<pid>/stat``.
    The command name, in parentheses, may hold spaces and parentheses."""
    fields = stat.rsplit(")", 1)[1].split()
    return fields[0], int(fields[19])  # fields 3 and 22 of proc(5)


def process_identity(pid: int | str = "self") -> ProcessIdentity | None:
    """The identity of a process as seen in our ``/proc``; None where there is
    no ``/proc`` (not Linux) or it cannot be read."""
    try:
        _, start = parse_start_ticks(_read(f"/proc/{pid}/stat"))
        return ProcessIdentity(
            boot_id=_read("/proc/sys/kernel/random/boot_id").strip(),
            pid_namespace=os.stat(f"/proc/{pid}/ns/pid").st_ino,
            process_start=start,
        )
    except (OSError, ValueError, IndexError):
        return None


def predecessor_is_dead(
    *,
    silent: bool,
    recorded: ProcessIdentity | None,
    own: ProcessIdentity | None,
    current_start: int | None,
) -> bool:
    """Whether a supervisor row of our host name is a dead predecessor.

    ``silent``: its heartbeat is older than its own stalled timeout by the
    database's clock. ``current_start``: the start time (clock ticks since
    boot) of the process that has the row's pid in our PID namespace, None if
    there is none or it is a zombie. Only a row of our boot and our PID
    namespace can be judged by its pid: anywhere else the same pid (say 1) is
    another process, alive or not."""
    if silent:
        return True
    if recorded is None or own is None:
        return False
    if (recorded.boot_id, recorded.pid_namespace) != (own.boot_id, own.pid_namespace):
        return False
    return current_start != recorded.process_start


def _current_start(pid: int) -> int | None:
    """Start time of the live process with this pid, None if it is gone.
    A zombie is gone: it runs nothing, and its children died with it."""
    try:
        state, start = parse_start_ticks(_read(f"/proc/{pid}/stat"))
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None if state in ("Z", "X") else start


def dead_predecessors(
    conn: psycopg.Connection,
    *,
    host: str,
    own_id: int,
    stalled_timeout: float,
    identity: ProcessIdentity | None,
) -> list[dict[str, Any]]:
    """Supervisors recorded on this host, not stopped, that are dead for sure
    (see ``predecessor_is_dead``), with the worker ids of their children. A
    row with no stalled timeout of its own is judged by ``stalled_timeout``."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            queries.get("host_supervisors"),
            {"stalled_timeout": stalled_timeout, "host": host, "own_id": own_id},
        ).fetchall()
    dead = []
    for row in rows:
        recorded = None
        if None not in (row["boot_id"], row["pid_namespace"], row["process_start"]):
            recorded = ProcessIdentity(
                row["boot_id"], row["pid_namespace"], row["process_start"]
            )
        same_place = (
            recorded is not None
            and identity is not None
            and (
                (recorded.boot_id, recorded.pid_namespace)
                == (identity.boot_id, identity.pid_namespace)
            )
        )
        try:
            current = _current_start(row["pid"]) if same_place else None
        except OSError:  # e.g. /proc mounted with hidepid: we cannot tell
            continue
        if predecessor_is_dead(
            silent=row["silent"],
            recorded=recorded,
            own=identity,
            current_start=current,
        ):
            dead.append(row)
    return dead
