#!/usr/bin/env python
"""Where a prefork fleet's CPU goes during a drain, item by item.

    scripts/pg.sh start   # or any local PostgreSQL you may create databases in
    DATABASE_URL=... .venv/bin/python benchmarks/profile.py [--n 2] [--only cpu50]

Needs py-spy (``pip install py-spy``) and the right to read other processes'
memory (root, or ptrace_scope 0). For each drain (cpu50: 200 jobs of 50 ms,
noop_sync: 3000 no-op jobs) a fleet of ``--n`` children is started, every
process of it is sampled by ``py-spy record --nonblocking`` while the jobs
drain, and each process's CPU time (from /proc) is divided among the items
below in proportion to its on-CPU samples. Writes
docs/benchmarks-profile.json (``--out``) and the raw collapsed stacks next to
it when ``--keep-stacks DIR`` is given.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks import harness
from benchmarks.bigtables import harness_log
from benchmarks.work import calibrate

DRAINS = {"cpu50": ("cpu", 50, 200), "noop_sync": ("noop_sync", 0, 3000)}

#: (item, how a frame's file name starts, as py-spy prints it); the innermost
#: frame that matches names the sample's item, except that logging and the task
#: win from anywhere in the stack (a log call is logging whatever it calls).
ANYWHERE: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("the task itself", ("benchmarks/work.py",)),
    ("logging", ("logging/",)),
)
INNERMOST: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("psycopg (queries, client side)", ("psycopg/", "psycopg_pool/")),
    (
        "prefork child (scoreboard, middleware, compat wrappers)",
        (
            "procrastinate_prefork/child/runner.py",
            "procrastinate_prefork/compat.py",
            "procrastinate_prefork/child/scoreboard.py",
            "procrastinate_prefork/supervisor/db.py",
        ),
    ),
    ("prefork supervisor", ("procrastinate_prefork/",)),
    ("procrastinate worker and job manager", ("procrastinate/",)),
    (
        "thread hand-off (asgiref, executor, threading)",
        ("asgiref/", "concurrent/", "threading.py", "queue.py"),
    ),
    ("asyncio event loop", ("asyncio/", "selectors.py")),
    (
        "json, datetime, contextlib, other stdlib",
        ("json/", "datetime.py", "contextlib.py", "<frozen", "enum.py", "uuid.py"),
    ),
)


def _file(frame: str) -> str:
    """``function (file:line)`` -> ``file``."""
    return frame.rpartition(" (")[2].rpartition(":")[0]


#: py-spy --nonblocking also samples a thread asleep in epoll: not CPU time
WAITING = "(asleep in epoll: left out)"


def item_of(stack: str) -> str:
    frames = stack.split(";")
    if frames[-1].startswith("EpollSelector.select ("):
        return WAITING
    files = [_file(frame) for frame in frames]
    for item, starts in ANYWHERE:
        if any(f.startswith(starts) for f in files):
            return item
    for name in reversed(files):
        for item, starts in INNERMOST:
            if name.startswith(starts):
                return item
    return "other"


def parse_collapsed(path: Path) -> collections.Counter[str]:
    counts: collections.Counter[str] = collections.Counter()
    if not path.exists():
        return counts
    for line in path.read_text(errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        if stack and n.isdigit():
            counts[item_of(stack)] += int(n)
    return counts


def profile_drain(
    name: str,
    n: int,
    url: str,
    workdir: Path,
    iters_per_ms: float,
    rate: int,
    keep: Path | None,
) -> dict[str, Any]:
    task, ms, count = DRAINS[name]
    args = {"iterations": round(ms * iters_per_ms)} if task == "cpu" else {}
    workers = harness.Workers("prefork", n, url, workdir).start()
    spies: list[tuple[str, int, Path, subprocess.Popen[bytes]]] = []
    try:
        with harness.connect(url) as conn:
            workers.wait_ready(conn)
            time.sleep(2.0)
            roles = [("supervisor", pid) for pid in workers.main_pids()]
            roles += [("child", pid) for pid in workers.child_pids()]
            for role, pid in roles:
                out = workdir / f"{name}-{role}-{pid}.txt"
                spies.append(
                    (
                        role,
                        pid,
                        out,
                        subprocess.Popen(
                            [
                                _py_spy(),
                                "record",
                                "--nonblocking",
                                "--rate",
                                str(rate),
                                "--format",
                                "raw",
                                "--pid",
                                str(pid),
                                "--output",
                                str(out),
                            ],
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL,
                        ),
                    )
                )
            time.sleep(1.0)  # py-spy attached
            before = harness.cpu_by_pid([pid for _, pid in roles])
            harness.defer(conn, task, count, args)
            while harness.unfinished(conn):
                workers.check_alive()
                time.sleep(1.0)
            after = harness.cpu_by_pid([pid for _, pid in roles])
            _, _, seconds = harness.drain_window(conn)
    finally:
        for *_, spy in spies:
            spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        for *_, spy in spies:
            try:
                spy.wait(timeout=30)
            except subprocess.TimeoutExpired:
                spy.kill()
        workers.stop()
    items: dict[str, dict[str, float]] = {}
    for role, pid, out, _ in spies:
        samples = parse_collapsed(out)
        cpu = after.get(pid, 0.0) - before.get(pid, 0.0)
        samples.pop(WAITING, None)
        total = sum(samples.values()) or 1
        mine = items.setdefault(role, collections.defaultdict(float))
        for item, k in samples.items():
            mine[item] += 1000 * cpu * k / total / count
        mine["(all)"] += 1000 * cpu / count
        if keep is not None:
            keep.mkdir(parents=True, exist_ok=True)
            shutil.copy(out, keep / out.name)
    return {
        "drain": name,
        "n": n,
        "jobs": count,
        "seconds": round(seconds, 3),
        "rate": round(count / seconds, 2) if seconds else None,
        "cpu_ms_per_job": {
            role: {k: round(v, 3) for k, v in sorted(d.items(), key=lambda kv: -kv[1])}
            for role, d in items.items()
        },
    }


def _py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(found).exists():
        raise harness.BenchError("py-spy is not installed (pip install py-spy)")
    return found


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=2)
    p.add_argument("--only", default="cpu50,noop_sync")
    p.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    p.add_argument("--keep-stacks", type=Path, default=None)
    p.add_argument(
        "--out", type=Path, default=REPO / "docs" / "benchmarks-profile.json"
    )
    args = p.parse_args(argv)
    db_url = os.environ.get("DATABASE_URL")
    if not db_url:
        print("profile.py: set DATABASE_URL", file=sys.stderr)
        return 2
    try:
        _py_spy()
    except harness.BenchError as exc:
        print(f"profile.py: {exc}", file=sys.stderr)
        return 2
    log = harness_log()
    workdir = harness.workdir()
    dbs = harness.Databases(db_url)
    out: dict[str, Any] = {
        "command": "benchmarks/profile.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "started_at": datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"
        ),
        "machine_busy_at_start": round(harness.background_busy(3.0), 3),
        "loadavg_at_start": os.getloadavg(),
        "runs": [],
    }
    iters = calibrate()
    dbs.create_template()
    try:
        for name in args.only.split(","):
            with dbs.fresh() as url:
                log(f"profiling {name}, prefork N={args.n}")
                run = profile_drain(
                    name, args.n, url, workdir, iters, args.rate, args.keep_stacks
                )
                out["runs"].append(run)
                log(json.dumps(run, indent=1))
    finally:
        dbs.drop_template()
        shutil.rmtree(workdir, ignore_errors=True)
    out["loadavg_at_end"] = os.getloadavg()
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
