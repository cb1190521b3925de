"""docs/benchmarks.md and docs/benchmarks.png from the results dict
(``docs/benchmarks.json``). Everything written here is computed from the
results: the targets, the ratios and the notes on misses."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

from .scenarios import DRAINS

LABELS = {
    "stock": "stock, 1 process",
    "stock_procs": "stock, N processes",
    "prefork": "prefork",
    "celery": "Celery prefork",
}
COMMANDS = {
    "stock": "`procrastinate worker --concurrency N` (one process)",
    "stock_procs": (
        "N x `procrastinate worker --concurrency 1` (what a user can do by hand)"
    ),
    "prefork": "`procrastinate-prefork worker --concurrency N` (one child per N)",
    "celery": "`celery worker -P prefork -c N` (Redis broker, acks_late, prefetch 1)",
}
COLORS = {
    "stock": "#9e9e9e",
    "stock_procs": "#5c6bc0",
    "prefork": "#e65100",
    "celery": "#2e7d32",
}


@dataclasses.dataclass
class Target:
    number: str
    text: str
    measured: str
    met: bool | None  # None: not measured in this run
    note: str = ""
    #: prefork's slowest repetition against the other setup's median (ratios)
    clear: str = ""


class Results:
    def __init__(self, data: dict[str, Any]):
        self.data = data
        self.meta = data["meta"]
        self.drains = {
            (d["scenario"], d["kind"], d["n"]): d for d in data.get("drains", [])
        }
        self.life = {(d["kind"], d["n"]): d for d in data.get("lifecycle", [])}
        self.recovery = {r["n"]: r for r in data.get("recovery", [])}
        self.cores = self.meta["machine"].get("usable_cpus") or 2

    def drain(self, scenario: str, kind: str, n: int) -> dict[str, Any] | None:
        if kind == "stock_procs" and n == 1:
            kind = "stock"
        return self.drains.get((scenario, kind, n))

    def rate(self, scenario: str, kind: str, n: int) -> float | None:
        d = self.drain(scenario, kind, n)
        return d["rate"]["median"] if d else None

    def ratio(
        self, scenario: str, kind: str, n: int, base_kind: str, base_n: int
    ) -> float | None:
        a, b = self.rate(scenario, kind, n), self.rate(scenario, base_kind, base_n)
        return a / b if a and b else None

    def overlap(self, scenario: str, a: tuple[str, int], b: tuple[str, int]) -> bool:
        da, db = self.drain(scenario, *a), self.drain(scenario, *b)
        if not da or not db:
            return False
        return (
            da["rate"]["max"] >= db["rate"]["min"]
            and db["rate"]["max"] >= da["rate"]["min"]
        )


def fmt(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def rate_cell(d: dict[str, Any] | None) -> str:
    if not d:
        return "-"
    r = d["rate"]
    return f"{r['median']:.1f} ({r['min']:.1f}-{r['max']:.1f})"


# --------------------------------------------------------------------- targets


def _spread(res: Results, scenario: str, a: tuple[str, int], b: tuple[str, int]) -> str:
    da, db = res.drain(scenario, *a), res.drain(scenario, *b)
    assert da and db
    return (
        f"{LABELS[a[0]]} {da['rate']['min']:.1f}-{da['rate']['max']:.1f} jobs/s, "
        f"{LABELS[b[0]]} {db['rate']['min']:.1f}-{db['rate']['max']:.1f}"
    )


def _cpu_note(
    res: Results, scenario: str, a: tuple[str, int], b: tuple[str, int]
) -> str:
    da, db = res.drain(scenario, *a), res.drain(scenario, *b)
    assert da and db
    return (
        f"CPU per job: workers {da['workers_cpu_ms_per_job']:.2f} ms vs "
        f"{db['workers_cpu_ms_per_job']:.2f} ms, PostgreSQL "
        f"{da['server_cpu_ms_per_job']:.2f} ms vs {db['server_cpu_ms_per_job']:.2f} ms"
    )


def _clear(res: Results, scenario: str, a: tuple[str, int], b: tuple[str, int]) -> str:
    """Whether ``a``'s slowest repetition beat ``b``'s median: a ratio that
    holds even on ``a``'s worst repetition is clear of the run's noise."""
    da, db = res.drain(scenario, *a), res.drain(scenario, *b)
    assert da and db
    slowest, median = da["rate"]["min"], db["rate"]["median"]
    word = "yes" if slowest > median else "no"
    return f"{word} ({slowest:.1f} vs {median:.1f})"


def _ratio_target(
    res: Results,
    number: str,
    scenario: str,
    a: tuple[str, int],
    b: tuple[str, int],
    minimum: float,
    text: str,
) -> Target:
    ratio = res.ratio(scenario, *a, *b)
    if ratio is None:
        return Target(number, text, "not measured", None)
    met = ratio >= minimum
    target = Target(
        number, text, f"{ratio:.3f}x", met, clear=_clear(res, scenario, a, b)
    )
    if not met:
        noise = res.overlap(scenario, a, b)
        target.note = (
            (
                f"The ranges overlap ({_spread(res, scenario, a, b)}): the shortfall "
                "is within this run's spread between repetitions. "
                if noise
                else f"The ranges do not overlap ({_spread(res, scenario, a, b)}). "
            )
            + _cpu_note(res, scenario, a, b)
            + "."
        )
    return target


def targets(res: Results) -> list[Target]:
    out: list[Target] = []
    for scenario in ("cpu50", "cpu20"):
        ms = DRAINS[scenario]["ms"]
        out.append(
            _ratio_target(
                res,
                "1",
                scenario,
                ("prefork", 2),
                ("stock", 2),
                1.75,
                f"{ms} ms CPU jobs: prefork N=2 >= 1.75x stock `--concurrency 2`",
            )
        )
        if not out[-1].met and out[-1].met is not None:
            out[-1].note += " " + _ceiling_note(res, scenario, 2)
        for n in (2, 4):
            for other, label in (
                ("stock_procs", f"{n} stock processes"),
                ("celery", f"Celery prefork -c {n}"),
            ):
                out.append(
                    _ratio_target(
                        res,
                        "2",
                        scenario,
                        ("prefork", n),
                        (other, n),
                        1.0,
                        f"{ms} ms CPU jobs: prefork N={n} >= 1.0x {label}",
                    )
                )
    for scenario, kind in (("noop_sync", "sync"), ("noop_async", "async")):
        if kind == "sync":
            out.append(
                _ratio_target(
                    res,
                    "2",
                    scenario,
                    ("prefork", 1),
                    ("stock", 1),
                    1.0,
                    f"no-op {kind}: prefork 1 child >= 1.0x stock `--concurrency 1`",
                )
            )
        out.append(
            _ratio_target(
                res,
                "2",
                scenario,
                ("prefork", 2),
                ("stock_procs", 2),
                1.0,
                f"no-op {kind}: prefork N=2 >= 1.0x 2 stock processes",
            )
        )
        out.append(_ceiling_target(res, scenario, kind, 2, 0.85))
    # issue 25 (the database's cost per job): what one round trip per job
    # and a child's own session should buy
    out.append(
        _ratio_target(
            res,
            "25",
            "noop_sync",
            ("prefork", 2),
            ("stock_procs", 2),
            1.3,
            "no-op sync: prefork N=2 >= 1.3x 2 stock processes",
        )
    )
    out.append(
        _ratio_target(
            res,
            "25",
            "cpu20",
            ("prefork", 4),
            ("celery", 4),
            0.97,
            "20 ms CPU jobs: prefork N=4 >= 0.97x Celery prefork -c 4",
        )
    )
    rec = res.recovery.get(2) or (
        res.recovery[max(res.recovery)] if res.recovery else None
    )
    if rec:
        met = rec["p95_s"] < 1.0
        out.append(
            Target(
                "4",
                f"recovery (prefork N={rec['n']}): p95 kill-to-restart < 1 s",
                f"p50 {rec['p50_s'] * 1000:.0f} ms, p95 {rec['p95_s'] * 1000:.0f} ms "
                f"({rec['kills']} kills)",
                met,
                ""
                if met
                else "See the recovery table: the slowest kills and the share of "
                "the supervisor's retry in them.",
            )
        )
    else:
        out.append(Target("4", "recovery p95 < 1 s", "not measured", None))
    shut = sorted((n, d) for (kind, n), d in res.life.items() if kind == "prefork")
    if shut:
        worst = max(d["shutdown_s"]["max"] for _, d in shut)
        met = worst < 1.0
        out.append(
            Target(
                "5",
                "shutdown (SIGTERM to exit) of idle fleets < 1 s",
                ", ".join(f"N={n}: {d['shutdown_s']['median']:.2f} s" for n, d in shut)
                + f" (slowest run {worst:.2f} s)",
                met,
                "" if met else "The slowest repetition is over 1 s.",
            )
        )
        medians = [d["shutdown_s"]["median"] for _, d in shut]
        flat = max(medians) - min(medians) <= 0.25
        slowest = max(shut, key=lambda nd: nd[1]["shutdown_s"]["median"])
        out.append(
            Target(
                "5",
                "shutdown flat in N (medians within 0.25 s of each other)",
                f"spread {max(medians) - min(medians):.2f} s",
                flat,
                ""
                if flat
                else (
                    f"The slowest is N={slowest[0]} "
                    f"({slowest[1]['shutdown_s']['min']:.2f}"
                    f"-{slowest[1]['shutdown_s']['max']:.2f} s "
                    "over the repetitions)."
                ),
            )
        )
        sess = [(n, d) for n, d in shut if "sessions_after_jobs" in d]
        if sess:
            met = all(d["sessions_after_jobs"] <= n + 2 for n, d in sess)
            out.append(
                Target(
                    "7",
                    "PostgreSQL sessions <= N + 2",
                    ", ".join(f"N={n}: {d['sessions_after_jobs']}" for n, d in sess),
                    met,
                    "" if met else "More sessions than children + 2.",
                )
            )
    return out


def _ceiling_target(
    res: Results, scenario: str, kind: str, n: int, share: float
) -> Target:
    """Prefork's drain rate against the most the machine allows at the CPU one
    job costs (workers plus PostgreSQL, as measured in the same drains)."""
    text = f"no-op {kind}: prefork N={n} >= {share:.0%} of the CPU ceiling"
    d = res.drain(scenario, "prefork", n)
    if not d:
        return Target("2", text, "not measured", None)
    per_job = d["workers_cpu_ms_per_job"] + d["server_cpu_ms_per_job"]
    ceiling = res.cores * 1000 / per_job
    got = d["rate"]["median"] / ceiling
    met = got >= share
    return Target(
        "2",
        text,
        f"{got:.0%} of {ceiling:.0f} jobs/s ({per_job:.2f} ms CPU per job)",
        met,
        ""
        if met
        else (
            f"{res.cores} cores at {per_job:.2f} ms of CPU per job allow "
            f"{ceiling:.0f} jobs/s; prefork drained {d['rate']['median']:.0f}: the "
            "rest of the time the CPUs waited (round trips, the event loop, "
            "locks), or were used by something else."
        ),
    )


def _ceiling_note(res: Results, scenario: str, n: int) -> str:
    d = res.drain(scenario, "prefork", n)
    if not d:
        return ""
    per_job = d["workers_cpu_ms_per_job"] + d["server_cpu_ms_per_job"]
    ceiling = res.cores * 1000 / per_job
    return (
        f"On {res.cores} cores, {per_job:.1f} ms of CPU per job (workers + PostgreSQL) "
        f"caps any setup at {ceiling:.1f} jobs/s."
    )


# ---------------------------------------------------------------------- tables


def drain_table(res: Results, scenario: str) -> list[str]:
    spec = DRAINS[scenario]
    ns = sorted({n for (s, _, n) in res.drains if s == scenario})
    if not ns:
        return []
    jobs = next(d["jobs"] for (s, _, _), d in res.drains.items() if s == scenario)
    lines = [f"### {spec['title']} ({jobs} jobs)", ""]
    header = (
        "| setup | "
        + " | ".join(f"N={n}: jobs/s (min-max) | vs stock" for n in ns)
        + " |"
    )
    lines += [header, "|---|" + "---:|---:|" * len(ns)]
    for kind in spec["kinds"]:
        cells = []
        present = False
        for n in ns:
            d = (
                res.drain(scenario, kind, n)
                if not (kind == "stock_procs" and n == 1)
                else None
            )
            if d:
                present = True
            ratio = res.ratio(scenario, kind, n, "stock", n) if d else None
            cells.append(rate_cell(d) + " | " + (f"{ratio:.2f}x" if ratio else "-"))
        if present:
            lines.append(f"| {LABELS[kind]} | " + " | ".join(cells) + " |")
    lines.append("")
    return lines


def cpu_table(res: Results) -> list[str]:
    ipms = res.data.get("calibration", {}).get("iterations_per_ms")
    lines = [
        (
            "| jobs | setup | N | workers CPU ms/job | of which the task "
            "| overhead ms/job "
            f"| PostgreSQL CPU ms/job | CPU ceiling on {res.cores} cores (jobs/s) "
            "| measured jobs/s |"
        ),
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for scenario in ("cpu50", "cpu20", "noop_sync", "noop_async"):
        for kind in ("stock", "stock_procs", "prefork", "celery"):
            for n in (1, 2, 4):
                d = res.drains.get((scenario, kind, n))
                if not d:
                    continue
                task_ms = _task_ms(d)
                per_job = d["workers_cpu_ms_per_job"] + d["server_cpu_ms_per_job"]
                lines.append(
                    f"| {scenario} | {LABELS[kind]} | {n} | "
                    f"{d['workers_cpu_ms_per_job']:.2f} "
                    f"| {task_ms:.2f} | {d['workers_cpu_ms_per_job'] - task_ms:.2f} "
                    f"| {d['server_cpu_ms_per_job']:.2f} "
                    f"| {res.cores * 1000 / per_job:.0f} | {d['rate']['median']:.1f} |"
                )
    lines.append("")
    if ipms:
        lines.append(
            _para(f"""
            The CPU task runs {ipms:.0f} iterations per ms (calibrated, alone, at the
            start of the run); "of which the task" is the CPU time the task's own
            thread measured around its loop (more than the nominal 50 or 20 ms when
            both cores are busy: they share caches, and on a virtual machine they may
            be SMT siblings); "overhead" is the rest of the workers' CPU per job
            (fetching, finishing, logging, the event loop, the supervisor). The
            PostgreSQL column counts the backends of the setup's database and the
            server's background processes (WAL writer, autovacuum...); for Celery it
            is Redis.""")
        )
        lines.append("")
    return lines


def _task_ms(d: dict[str, Any]) -> float:
    """The task's own CPU per job: measured when the task recorded it, else
    the nominal figure (0 for no-op jobs)."""
    if "task_cpu_ms_per_job" in d:
        return float(d["task_cpu_ms_per_job"])
    return float(DRAINS[d["scenario"]].get("ms", 0.0))


def lifecycle_table(res: Results) -> list[str]:
    if not res.life:
        return []
    lines = [
        (
            "| setup | N | start-up s (min-max) | shutdown s (min-max) | USS/child MiB "
            "| PSS/child MiB | PSS total MiB | sessions idle | sessions after jobs "
            "| target N+2 |"
        ),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    order = list(LABELS)
    for (kind, n), d in sorted(
        res.life.items(), key=lambda kv: (kv[0][1], order.index(kv[0][0]))
    ):
        s, t = d["startup_s"], d["shutdown_s"]
        lines.append(
            f"| {LABELS[kind]} | {n} | {s['median']:.2f} "
            f"({s['min']:.2f}-{s['max']:.2f}) "
            f"| {t['median']:.2f} ({t['min']:.2f}-{t['max']:.2f}) "
            f"| {d['per_child_uss']:.1f} | {d['per_child_pss']:.1f} | "
            f"{d['total_pss']:.1f} "
            f"| {d.get('sessions_idle', '-')} | {d.get('sessions_after_jobs', '-')} "
            f"| {n + 2 if kind != 'celery' else '-'} |"
        )
    lines.append("")
    return lines


def recovery_table(res: Results) -> list[str]:
    if not res.recovery:
        return []
    lines = [
        (
            "| fleet | kills | kill to restart p50 | p95 | max "
            "| kill to retried (supervisor) p50 |"
        ),
        "|---|---:|---:|---:|---:|---:|",
    ]
    for n, r in sorted(res.recovery.items(), reverse=True):
        what = "a sibling is idle" if n > 1 else "the re-forked child takes it"
        lines.append(
            f"| prefork N={n} ({what}) | {r['kills']} | {r['p50_s'] * 1000:.0f} ms "
            f"| {r['p95_s'] * 1000:.0f} ms | {r['max_s'] * 1000:.0f} ms "
            f"| {r['retry_p50_s'] * 1000:.0f} ms |"
        )
    lines.append("")
    return lines


# -------------------------------------------------------------------- markdown


def _para(text: str) -> str:
    """A paragraph written over several source lines, as one markdown line."""
    return " ".join(text.split())


DRAIN_INTRO = _para("""
    Jobs per second from the first job start to the last job end (from
    `procrastinate_events`; for Celery, from timestamps the pool processes record),
    with jobs inserted in one statement once every worker was registered, idle and
    had settled for {settle} s. "vs stock" is the ratio of medians against stock
    `procrastinate worker --concurrency N` at the same N, in the same run.
""")
CPU_INTRO = _para("""
    CPU seconds used during each drain by the worker processes (supervisor and
    children included) and by the PostgreSQL backends serving them, per job (median
    of the repetitions). No setup can drain faster than the machine's cores divided
    by the CPU one job costs: that is the ceiling column.
""")
RECOVERY_INTRO = _para("""
    A child is SIGKILLed 50-300 ms into a job (a sleeping job: the kill is what is
    measured, not the work); the latency runs from the kill to the job's next
    `started` event. "Kill to retried" is when the supervisor had put the job back
    to `todo`. Stock procrastinate never restarts such a job by itself: it stays
    `doing` until a periodic task of the user's retries stalled jobs
    (`stalled_worker_timeout`, 30 s by default, after the worker's last heartbeat).
""")
LIFECYCLE_INTRO = _para("""
    Start-up: from spawning the command to the moment the last worker registered
    (prefork: the supervisor's "All N children ready"; stock: the last
    `procrastinate_workers` row; Celery: its "ready" line). Memory: USS and PSS
    (`psutil.memory_full_info`) per job-running process, and PSS summed over every
    process of the setup, while idle after start-up. Sessions: `pg_stat_activity`
    rows of the setup's database by application name, while idle and after a burst
    of 4N no-op jobs. Shutdown: SIGTERM to exit, idle.
""")
METHOD = [
    _para(item)
    for item in (
        """- Each repetition of each setup gets a fresh database (a clone of a template
    holding procrastinate's schema and ours) and fresh worker processes.""",
        """- The harness inserts all jobs in one statement (procrastinate's
    `procrastinate_defer_jobs_v1`), then sleeps, asking the database how many jobs
    are left every {poll} s; it never starts a process during a drain. CPU counters
    (`/proc/stat`, psutil) are read once before and once after.""",
        """- The CPU task is a pure-Python loop sized by an iteration count calibrated
    once at the start, so that it costs the same CPU whatever the load (a deadline
    loop would stretch with it).""",
        """- Repetitions are interleaved: every setup runs once, then every setup again,
    so that a burst of outside load does not land on one setup only. Before each
    measurement the harness waits (up to {quiet_timeout} s) until the rest of the
    machine uses less than {quiet_below} of its CPU.""",
        """- Every worker runs with its defaults (log level INFO, LISTEN/NOTIFY on, a
    5 s polling fallback); prefork children each run one job at a time.""",
        "- Raw numbers of every repetition: `docs/benchmarks.json`.",
    )
]


def _run_section(res: Results) -> list[str]:
    meta, m, v = res.meta, res.meta["machine"], res.meta["versions"]
    scaled = (
        f"; job counts scaled by {meta['scale']:g}" if meta.get("scale", 1) != 1 else ""
    )
    celery = (
        (
            f", Celery {v['celery']}, kombu {v.get('kombu', '?')}, "
            f"redis-server {v.get('redis-server', '?')}"
        )
        if "celery" in v
        else ""
    )
    return [
        "## The run",
        "",
        f"- Command: `{meta['command']}`",
        (
            f"- When: {meta.get('started_at', '?')} to {meta.get('finished_at', '?')} "
            f"({meta.get('duration_s', '?')} s); {meta['reps']} repetitions "
            "of every drain "
            f"and lifecycle measurement, interleaved; figures are medians with "
            f"min-max{scaled}."
        ),
        (
            f"- Machine (`/proc/cpuinfo`): {m['cpu_model']}, {m['logical_cpus']} "
            "logical "
            f"CPUs ({m['usable_cpus']} usable)"
            + (f" at {float(m['cpu_mhz']):.0f} MHz" if m.get("cpu_mhz") else "")
            + (f", {m['cache']} cache" if m.get("cache") else "")
            + (
                ", a virtual machine (hypervisor flag)"
                if m.get("virtual_machine")
                else ""
            )
            + f"; kernel {m['kernel']}, Python {m['python']}. PostgreSQL, the workers, "
            "Redis and the harness all share these CPUs."
        ),
        (
            f"- Versions: PostgreSQL {v.get('postgresql', '?')}, procrastinate "
            f"{v.get('procrastinate', '?')}, procrastinate-prefork "
            f"{v.get('procrastinate-prefork', '?')}, psycopg {v.get('psycopg', '?')}, "
            f"psycopg-pool {v.get('psycopg-pool', '?')}{celery}."
        ),
        f"- Celery: {meta.get('celery', '?')}.",
        *_code_line(meta),
        "",
        "```",
        "$ free -m",
        m["free_m"],
        "```",
        "",
    ]


def _code_line(meta: dict[str, Any]) -> list[str]:
    code = meta.get("code")
    if not code:
        return []
    dirty = (
        " plus uncommitted changes to `procrastinate_prefork/`"
        if code["package_uncommitted_changes"]
        else ""
    )
    line = (
        f"- Code measured: commit {code['commit']}{dirty} (copied when the run "
        f"started; sources sha256 {code['sources_sha256']})."
    )
    return [line]


def _median_of(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def _noise_section(res: Results) -> list[str]:
    meta, noise = res.meta, res.meta.get("noise", {})
    between = noise.get("background_busy_between_blocks") or []
    foreign = [d["foreign_cpu_frac_max"] for d in res.data.get("drains", [])]
    before = [
        r["background_before"]
        for r in res.data.get("drain_runs", [])
        if "background_before" in r
    ]
    lines = ["### How noisy it was", ""]
    idle = (
        f"- Background CPU use of the machine with the harness idle: "
        f"{_pct(noise.get('background_busy_at_start'))} before the run, "
        f"{_pct(noise.get('background_busy_at_end'))} after it"
    )
    if between:
        idle += (
            f", {_pct(min(between))}-{_pct(max(between))} "
            "between blocks of measurements"
        )
    lines.append(idle + ".")
    if before:
        lines.append(
            f"- In the second before each drain (after waiting up to "
            f"{meta.get('quiet_timeout_s', '?')} s for less than "
            f"{_pct(meta.get('quiet_below'))}): median {_pct(_median_of(before))}, "
            f"max {_pct(max(before))}."
        )
    if foreign:
        lines.append(
            "- During the drains, CPU used by anything but the measured setup, its "
            "database sessions and the harness (share of the whole machine): at most "
            f"{_pct(max(foreign))} in one repetition; the median setup's worst "
            f"repetition {_pct(_median_of(foreign))}."
        )
    start = _load(res.meta["machine"].get("loadavg_at_start"))
    end = _load(meta.get("loadavg_at_end"))
    lines += [f"- Load average: {start} at the start, {end} at the end.", ""]
    return lines


NOTES = Path(__file__).resolve().parent / "notes.md"


def _analysis_section(res: Results) -> list[str]:
    """``benchmarks/notes.md``: analysis written by hand after reading one
    run's numbers. Its first line, ``<!-- run: <started_at> -->``, names that
    run; for any other run the notes are left out rather than shown against
    numbers they were not written for."""
    if not NOTES.exists():
        return []
    text = NOTES.read_text()
    first, _, body = text.partition("\n")
    run = first.removeprefix("<!-- run:").removesuffix("-->").strip()
    if run != res.meta.get("started_at"):
        why = (
            f"(`benchmarks/notes.md` was written for the run of {run or '?'}, "
            "not this one, so it is left out.)"
        )
        return ["## Analysis", "", why, ""]
    return [
        "## Analysis",
        "",
        "Written after reading this run's numbers.",
        "",
        body.strip(),
        "",
    ]


def _targets_section(res: Results) -> list[str]:
    lines = [
        "## Targets",
        "",
        "Ratios are of medians. The fourth column says whether prefork's "
        "slowest repetition beat the other setup's median (jobs/s): a ratio "
        "that holds even then is clear of this run's noise.",
        "",
        "| # | target | measured | slowest vs median | |",
        "|---|---|---|---|---|",
    ]
    tgs = targets(res)
    for t in tgs:
        mark = {True: "met", False: "**missed**", None: "not measured"}[t.met]
        lines.append(f"| {t.number} | {t.text} | {t.measured} | {t.clear} | {mark} |")
    lines.append("")
    misses = [t for t in tgs if t.met is False]
    if misses:
        lines += ["Notes on the missed targets:", ""]
        lines += [f"- **{t.text}** ({t.measured}): {t.note}" for t in misses]
        lines.append("")
    else:
        lines += ["Every measured target was met in this run.", ""]
    return lines + _two_x_note(res)


def markdown(data: dict[str, Any], side: list[str] | None = None) -> str:
    res = Results(data)
    meta = res.meta
    lines = [
        "# Benchmarks",
        "",
        _para("""procrastinate-prefork against stock procrastinate (and Celery's prefork
              pool), measured in one run on one PostgreSQL. Generated by
              `benchmarks/run.py` from `docs/benchmarks.json`; do not edit by hand
              (re-render with `benchmarks/run.py --render-only`)."""),
        "",
        *_run_section(res),
        *_noise_section(res),
        "![benchmarks chart](benchmarks.png)",
        "",
        *_targets_section(res),
        *_analysis_section(res),
        "## Drain rates",
        "",
        DRAIN_INTRO.format(settle=meta.get("settle_s", 2)),
        "",
        *[f"- {label}: {COMMANDS[kind]}" for kind, label in LABELS.items()],
        "",
    ]
    for scenario in DRAINS:
        lines += drain_table(res, scenario)
    if res.drains:
        lines += ["## Where the CPU goes", "", CPU_INTRO, "", *cpu_table(res)]
    if res.recovery:
        lines += ["## Recovery latency", "", RECOVERY_INTRO, "", *recovery_table(res)]
    if res.life:
        lines += [
            "## Start-up, memory, shutdown, sessions",
            "",
            LIFECYCLE_INTRO,
            "",
            *lifecycle_table(res),
        ]
    lines += side or []
    lines += ["## Method", ""]
    lines.append(_sessions_item(meta))
    lines += [
        item.format(
            poll=meta.get("poll_s", 1),
            quiet_timeout=meta.get("quiet_timeout_s", "?"),
            quiet_below=_pct(meta.get("quiet_below")),
        )
        for item in METHOD
    ]
    return "\n".join(lines) + "\n"


def _two_x_note(res: Results) -> list[str]:
    """Where the rest of the way from the measured speed-up to 2.0x goes."""
    lines = []
    for scenario in ("cpu50", "cpu20"):
        d1, d2 = res.drain(scenario, "prefork", 1), res.drain(scenario, "prefork", 2)
        if not (d1 and d2):
            continue
        ms = DRAINS[scenario]["ms"]
        rate1, rate2 = d1["rate"]["median"], d2["rate"]["median"]
        task1, task2 = _task_ms(d1), _task_ms(d2)
        overhead2 = d2["workers_cpu_ms_per_job"] - task2
        db2 = d2["server_cpu_ms_per_job"]
        cpu2 = d2["workers_cpu_ms_per_job"] + db2
        ceiling = res.cores * 1000 / cpu2
        stock = res.ratio(scenario, "prefork", 2, "stock", 2)
        slower = (
            f"instead of {task1:.1f} ms with one (the two busy cores slow each "
            "other down)"
            if task2 > task1 * 1.02
            else f"(with one: {task1:.1f} ms)"
        )
        lines.append(
            _para(f"""
            - {ms} ms jobs: prefork N=2 drains {rate2 / rate1:.2f}x as fast as one
            child ({f"{stock:.2f}x" if stock else "n/a"} stock `--concurrency 2`). One
            child takes {1000 / rate1:.1f} ms of wall time per job. With two children
            busy, the task's own loop costs {task2:.1f} ms of CPU {slower}; the workers
            add {overhead2:.1f} ms of CPU per job around it (fetching, finishing,
            logging, the event loop, the supervisor) and PostgreSQL {db2:.1f} ms,
            all on the same {res.cores} cores: {cpu2:.1f} ms of CPU per job caps
            any setup at {ceiling:.1f} jobs/s, {ceiling / rate1:.2f}x one child's
            rate; prefork reached {rate2 / ceiling:.0%} of that ceiling.""")
        )
    if lines:
        return ["Why N=2 is not 2.0x one process:", "", *lines, ""]
    return []


def _sessions_item(meta: dict[str, Any]) -> str:
    enabled = meta["machine"].get("sched_autogroup")
    state = {True: "enabled on this machine", False: "disabled on this machine"}.get(
        enabled, "not recorded for this run"
    )
    if meta.get("worker_sessions") == "harness":
        return _para(f"""
            - Every setup's processes run in the harness's session, as if started
            from one shell: with Linux's scheduler autogroups ({state}), N stock
            processes in N sessions would each get a CPU share as large as
            PostgreSQL's, a prefork fleet only one. PostgreSQL and Redis run in
            sessions of their own.""")
    return _para(f"""
        - Each worker command ran in a session of its own (scheduler autogroups:
        {state}): N stock processes got N CPU shares against PostgreSQL's one, a
        prefork fleet or Celery one share.""")


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.0f}%"


def _load(x: Any) -> str:
    return "n/a" if not x else " / ".join(f"{v:.2f}" for v in x)


# ----------------------------------------------------------------------- chart


def chart(data: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    res = Results(data)
    fig, axes = plt.subplots(2, 4, figsize=(22, 10))
    fig.suptitle(
        f"procrastinate-prefork vs stock procrastinate and Celery -- "
        f"{res.meta['machine']['cpu_model']}, {res.cores} CPUs, "
        f"{res.meta.get('started_at', '')[:10]} (median, bars: min-max)",
        fontsize=13,
    )
    _bars(axes[0][0], res, "cpu50")
    _bars(axes[0][1], res, "cpu20")
    _bars(axes[0][2], res, "noop_sync")
    _bars(axes[0][3], res, "noop_async")
    _bars(axes[1][0], res, "sleep50")
    _recovery(axes[1][1], res)
    _startup_shutdown(axes[1][2], res)
    _memory_sessions(axes[1][3], res)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _begin(ax: Any, title: str, has_data: bool) -> bool:
    """Title the panel; False (and say so on it) when there is nothing to draw."""
    ax.set_title(title)
    if not has_data:
        ax.text(0.5, 0.5, "not measured", ha="center", transform=ax.transAxes)
    return has_data


def _grouped_bars(
    ax: Any, groups: list[Any], kinds: list[str], value: Any, label: str
) -> list[tuple[float, dict[str, Any]]]:
    """One bar per (group, kind); ``value(group, kind)`` returns the entry or
    None. Returns (x, entry) of every bar drawn."""
    width = 0.8 / max(1, len(kinds))
    drawn = []
    for i, kind in enumerate(kinds):
        bars = [
            (j + (i - (len(kinds) - 1) / 2) * width, value(g, kind))
            for j, g in enumerate(groups)
        ]
        bars = [(x, d) for x, d in bars if d]
        if not bars:
            continue
        ys = [_bar_height(d) for _, d in bars]
        err = None
        if "rate" in bars[0][1]:
            err = [
                [d["rate"]["median"] - d["rate"]["min"] for _, d in bars],
                [d["rate"]["max"] - d["rate"]["median"] for _, d in bars],
            ]
        ax.bar(
            [x for x, _ in bars],
            ys,
            width,
            yerr=err,
            capsize=3,
            label=LABELS[kind],
            color=COLORS[kind],
        )
        drawn.extend(bars)
    ax.set_xticks(range(len(groups)), [f"N={g}" for g in groups])
    ax.set_ylabel(label)
    top = max((_bar_height(d) for _, d in drawn), default=1.0)
    ax.set_ylim(0, top * 1.3)  # room for the legend and the labels
    ax.legend(fontsize=8, loc="upper left")
    return drawn


def _bar_height(d: dict[str, Any]) -> float:
    return d["rate"]["median"] if "rate" in d else d["total_pss"]


def _bars(ax: Any, res: Results, scenario: str) -> None:
    ns = sorted({n for (s, _, n) in res.drains if s == scenario})
    if not _begin(ax, DRAINS[scenario]["title"], bool(ns)):
        return
    drawn = _grouped_bars(
        ax,
        ns,
        list(DRAINS[scenario]["kinds"]),
        lambda n, kind: res.drains.get((scenario, kind, n)),
        "jobs/s",
    )
    for x, d in drawn:  # the ratio against stock at the same N
        ratio = res.ratio(scenario, d["kind"], d["n"], "stock", d["n"])
        if ratio and d["kind"] != "stock":
            ax.text(
                x,
                d["rate"]["max"],
                f"{ratio:.2f}x",
                ha="center",
                va="bottom",
                fontsize=7,
            )


def _recovery(ax: Any, res: Results) -> None:
    if not _begin(ax, "Recovery: SIGKILL mid-job to restart (ms)", bool(res.recovery)):
        return
    for n, r in sorted(res.recovery.items(), reverse=True):
        values = sorted(1000 * s["kill_to_start_s"] for s in r["samples"])
        ax.plot(
            [100 * (i + 1) / len(values) for i in range(len(values))],
            values,
            marker="o",
            label=f"prefork N={n}",
        )
    ax.axhline(1000, color="red", linestyle="--", label="target p95 < 1 s")
    ax.set_yscale("log")
    ax.set_xlabel("percentile of kills")
    ax.set_ylabel("ms")
    ax.legend(fontsize=8)


def _startup_shutdown(ax: Any, res: Results) -> None:
    if not _begin(ax, "Start-up (dotted) and shutdown (solid), s", bool(res.life)):
        return
    for kind, label in LABELS.items():
        pts = sorted((n, d) for (k, n), d in res.life.items() if k == kind)
        if not pts:
            continue
        ns = [n for n, _ in pts]
        ax.plot(
            ns,
            [d["shutdown_s"]["median"] for _, d in pts],
            marker="o",
            color=COLORS[kind],
            label=f"{label}: shutdown",
        )
        ax.plot(
            ns,
            [d["startup_s"]["median"] for _, d in pts],
            marker="s",
            linestyle=":",
            color=COLORS[kind],
            label=f"{label}: start-up",
        )
    ax.set_xlabel("N")
    ax.set_ylabel("s")
    ax.legend(fontsize=7)


def _memory_sessions(ax: Any, res: Results) -> None:
    if not _begin(
        ax, "Total PSS (MiB, bars) and PostgreSQL sessions (labels)", bool(res.life)
    ):
        return
    ns = sorted({n for (_, n) in res.life})
    drawn = _grouped_bars(
        ax, ns, list(LABELS), lambda n, kind: res.life.get((kind, n)), "MiB"
    )
    for x, d in drawn:
        if "sessions_after_jobs" in d:
            ax.text(
                x,
                d["total_pss"],
                str(d["sessions_after_jobs"]),
                ha="center",
                va="bottom",
                fontsize=8,
            )


def render(data: dict[str, Any], out_dir: Path) -> list[Path]:
    """Write benchmarks.md and, when matplotlib is installed, benchmarks.png."""
    written = [out_dir / "benchmarks.md"]
    written[0].write_text(markdown(data, side_sections(out_dir)))
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print(
            "report: matplotlib is not installed (pip install -e '.[bench]'): no chart",
            file=sys.stderr,
        )
        return written
    chart(data, out_dir / "benchmarks.png")
    written.append(out_dir / "benchmarks.png")
    return written


# ------------------------------------------- side files of the standalone runs
# benchmarks/bigtables.py, pgbouncer.py, profile.py and dbcost.py write one JSON
# file each next to benchmarks.json; their sections come from there.


def _ms(x: float) -> str:
    return f"{x:.2f}" if x < 100 else f"{x:.0f}"


def bigtables_section(d: dict[str, Any]) -> list[str]:
    sizes = d["sizes"]
    lines = [
        "## Big tables",
        "",
        _para(f"""The fleet's own queries on an empty database and on one holding
              {sizes["finished"]:,} finished jobs (3 events each), {sizes["todo"]:,}
              `todo` jobs in a queue the fleet does not serve,
              {sizes.get("scheduled", 0):,} of its own queue scheduled an hour ahead,
              and {sizes["supervisors"]:,} other supervisors x {sizes["children"]}
              children (alive, each child with a worker row, half of them running a
              job); the idle fleet also on "bigjobs", the same jobs without the
              other supervisors.
              Command: `{d["command"]}`; {d["started_at"]} to {d["finished_at"]};
              PostgreSQL {d["postgresql"]}; load average at the start
              {_load(d.get("loadavg_at_start"))} (a shared machine: the figures
              are ratios within one run). Per call: median (max) of
              {next(iter(d["queries"]["big"].values()))["calls"]} calls, client
              side, after one call that warmed up and captured the plans
              (`auto_explain`, EXPLAIN ANALYZE of every statement, nested ones too).
              "Full scans" lists the tables of a plan read by a sequential scan."""),
        "",
        "| query | empty ms/call | big ms/call | big / empty | full scans on big |",
        "|---|---:|---:|---:|---|",
    ]
    for name, big in d["queries"]["big"].items():
        empty = d["queries"]["empty"][name]
        ratio = big["median_ms"] / empty["median_ms"] if empty["median_ms"] else 0
        scans = ", ".join(f"`{t}`" for t in big["seq_scans"]) or "none"
        lines.append(
            f"| {name} | {_ms(empty['median_ms'])} ({_ms(empty['max_ms'])}) | "
            f"{_ms(big['median_ms'])} ({_ms(big['max_ms'])}) | {ratio:.1f}x | "
            f"{scans} |"
        )
    lines += [
        "",
        _para("""Idle 4-child fleet (`--queues default`, every other option
              at its default): CPU of the PostgreSQL sessions serving it, from
              /proc, per second of wall time, each repetition
              (interleaved)."""),
        "",
        "| database | server CPU ms/s | fleet processes CPU ms/s | sessions |",
        "|---|---|---|---:|",
    ]
    medians = {}
    for name in [n for n in ("empty", "bigjobs", "big") if n in d["idle"]]:
        runs = d["idle"][name]
        medians[name] = statistics_median([r["server_cpu_ms_per_s"] for r in runs])
        lines.append(
            f"| {name} | {', '.join(_ms(r['server_cpu_ms_per_s']) for r in runs)} | "
            f"{', '.join(_ms(r['fleet_cpu_ms_per_s']) for r in runs)} | "
            f"{runs[0]['sessions']} |"
        )
    if medians["empty"]:
        target = "bigjobs" if "bigjobs" in medians else "big"
        ratio = medians[target] / medians["empty"]
        verdict = "met" if ratio <= 1.5 else "**missed**"
        lines += [
            "",
            (
                f"Target: idle fleet database CPU on big job tables within 1.5x "
                f"of empty: {ratio:.2f}x (medians, {target} / empty), {verdict}."
            ),
        ]
        if target == "bigjobs":
            lines.append(
                f"With the big fleet table too (big / empty): "
                f"{medians['big'] / medians['empty']:.2f}x."
            )
    return [*lines, ""]


def statistics_median(values: list[float]) -> float:
    import statistics

    return statistics.median(values) if values else 0.0


def pgbouncer_section(d: dict[str, Any]) -> list[str]:
    s = d["summary"]
    first = d["runs"][0]
    lines = [
        "## Through PgBouncer",
        "",
        _para(f"""prefork with {d["children"]} children, its connections through
              {(d.get("pgbouncer") or ["PgBouncer"])[0]} in transaction pooling mode
              with a pool of {d["pool_size"]} server sessions (the supervisor's
              LISTEN session direct, `--listen-dsn`), against the same fleet on
              direct connections. Command: `{d["command"]}`; {d["started_at"]} to
              {d["finished_at"]}; {len(d["runs"]) // 2} repetitions, interleaved;
              load average at the start {_load(d.get("loadavg_at_start"))}.
              Sessions: client backends of the database in `pg_stat_activity`
              (the harness's excluded), idle and the most seen by a 1 s poll
              during the drains."""),
        "",
        (
            f"| setup | sessions idle | sessions in drain (max) | no-op sync jobs/s "
            f"({first['noop_sync']['jobs']} jobs) | 20 ms CPU jobs/s "
            f"({first['cpu']['jobs']} jobs) |"
        ),
        "|---|---:|---:|---:|---:|",
    ]
    for setup in ("direct", "pgbouncer"):
        e = s[setup]
        most = max(e["noop_sync"]["sessions_max"], e["cpu"]["sessions_max"])
        cells = [
            f"{e[t]['rate_median']:.1f} ({e[t]['rate_min']:.1f}-{e[t]['rate_max']:.1f})"
            for t in ("noop_sync", "cpu")
        ]
        lines.append(
            f"| {setup} | {e['sessions_idle']} | {most} | {cells[0]} | {cells[1]} |"
        )
    for t, label in (("noop_sync", "no-op"), ("cpu", "20 ms CPU")):
        ratio = s["pgbouncer"][t]["rate_median"] / s["direct"][t]["rate_median"]
        lines.append(
            f"\nThrough PgBouncer, {label} jobs drain at {ratio:.2f}x the direct rate."
        )
    return [*lines, ""]


def profile_section(d: dict[str, Any]) -> list[str]:
    lines = [
        "## Where a fleet's CPU goes, item by item",
        "",
        _para(f"""Every process of a prefork fleet sampled by `py-spy record
              --nonblocking` during a drain; each process's CPU time (from /proc)
              divided among the items in proportion to its on-CPU samples, per job.
              Command: `{d["command"]}`; {d["started_at"]}; load average at the
              start {_load(d.get("loadavg_at_start"))}. Sampling slows the
              processes down a little: the rates are not comparable with the
              drains above."""),
        "",
    ]
    for run in d["runs"]:
        lines += [
            (
                f"### {run['drain']}, N={run['n']}: {run['jobs']} jobs, "
                f"{run['rate']} jobs/s while sampled"
            ),
            "",
            "| process | item | CPU ms/job |",
            "|---|---|---:|",
        ]
        for role, items in run["cpu_ms_per_job"].items():
            for item, ms in items.items():
                lines.append(f"| {role} | {item} | {ms:.3f} |")
        lines.append("")
    return lines


def fleetwrites_section(d: dict[str, Any]) -> list[str]:
    codes = ", ".join(
        f"{name} = {c['commit'] or c['path']}" for name, c in d["codes"].items()
    )
    lines = [
        "## What the fleet table costs the database",
        "",
        _para(f"""A fleet of {d["children"]} children (default heartbeat interval)
              draining {d["jobs"]} sleep jobs of {d["ms"]:g} ms ("busy"), and the
              same fleet idle for {d["idle_s"]:g} s; each run in a database of its
              own, its counters read after every process of the run exited,
              divided by the fleet's lifetime (medians of the runs). Rows written
              to the fleet table, and every transaction of the database (the jobs'
              own included). Command: `{d["command"]}`; {d["started_at"]};
              {codes}."""),
        "",
        "| code | phase | fleet rows updated/s | fleet rows inserted/s |"
        " commits/s (all) | fleet rows updated | commits (all) | lifetime s |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, phases in d["summary"].items():
        for phase, v in phases.items():
            lines.append(
                f"| {name} | {phase} | {v['fleet_updates_per_s']:.2f} |"
                f" {v['fleet_inserts_per_s']:.2f} | {v['commits_per_s']:.1f} |"
                f" {v['fleet_updates']:g} | {v['commits']:g} |"
                f" {v['lifetime_s']:.1f} |"
            )
    lines.append("")
    return lines


def fleetstatus_section(d: dict[str, Any]) -> list[str]:
    codes = ", ".join(
        f"{name} = {c['commit'] if c['commit'] != '?' else c['path']}"
        for name, c in d["codes"].items()
    )
    load = " / ".join(f"{x:.2f}" for x in d["load_average"])
    names = list(d["codes"])
    lines = [
        "## Status and the health view",
        "",
        _para(f"""`status` and the Django health view on a fleet table of
              17,000 rows: "live", 1,000 supervisors x 16 children all alive;
              "stopped", 50 live supervisors x 16 children among 950 stopped
              ones and their children (old rows before a prune). Per call,
              client side, through the functions the commands and the views
              call: median of {d["calls"]} calls after one warm-up, median of
              {d["reps"]} repetitions, the codes interleaved, each in a process
              of its own. Command: `{d["command"]}`; {d["started_at"]};
              PostgreSQL {d["server"]}; {codes}; load average at the start
              {load} (a shared machine: compare within the run)."""),
        "",
        "| fleet table: case | " + " | ".join(f"{n} ms/call" for n in names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    for case, figures in d["median_ms"].items():
        # a case one code does not have (an option it lacks): "-"
        cells = " | ".join(f"{figures[n]:.2f}" if n in figures else "-" for n in names)
        lines.append(f"| {case} | {cells} |")
    lines.append("")
    return lines


def dbcost_section(d: dict[str, Any]) -> list[str]:
    s = d["summary"]
    lines = [
        "## What a job costs the database",
        "",
        _para(f"""{d["jobs"]} jobs of a task that makes one insert on its own
              session, drained by prefork with {d["n"]} children and by
              {d["n"]} stock `procrastinate worker --concurrency 1` processes,
              on a throwaway PostgreSQL {d["postgresql"]} with `log_statement =
              'all'`. Command: `{d["command"]}`; {d["started_at"]};
              {len(d["runs"]) // 2} repetitions, interleaved; medians.
              Transactions: `xact_commit + xact_rollback` of the database in
              `pg_stat_database`, read once every session of the run has ended
              (so its counters are flushed), less the harness's own statements.
              Statements: the server's log lines, by `application_name`: the
              workers' (prefork's supervisor included) and the task's. Both
              include starting and stopping the workers."""),
        "",
        (
            "| setup | transactions/job | workers' statements/job | "
            'of which BEGIN/COMMIT | of which pool checks `""` | '
            "task's own statements/job |"
        ),
        "|---|---:|---:|---:|---:|---:|",
    ]
    names = {"stock_procs": f"{d['n']} stock processes", "prefork": "prefork"}
    for setup, name in names.items():
        e = s[setup]
        lines.append(
            f"| {name} | {e['transactions_per_job']:.2f} | {e['workers_per_job']:.2f} "
            f"| {e['workers_begin_commit_per_job']:.2f} "
            f"| {e['workers_checks_per_job']:.2f} | {e['task_per_job']:.2f} |"
        )
    prefork, stock = s["prefork"], s["stock_procs"]
    ratio = prefork["transactions_per_job"] / stock["transactions_per_job"]
    lines.append(
        f"\nprefork spends {ratio:.2f}x the transactions per job of stock "
        "procrastinate, in the same run."
    )
    return [*lines, ""]


def mixed_section(d: dict[str, Any]) -> list[str]:
    s, w = d["summary"], d["workload"]
    io = w["io_concurrency"]
    lines = [
        "## A mixed workload: one fleet of two pools",
        "",
        _para(f"""{w["cpu_jobs"]} CPU jobs of {w["cpu_ms"]:g} ms on queue `cpu`
              and {w["io_jobs"]} I/O jobs (an `asyncio.sleep` of {w["io_ms"]:g}
              ms) on queue `io`, inserted before the workers start. *pools*:
              one prefork fleet, `--pool cpu=cpu:2 --pool io=io:1:{io}`;
              *two fleets*: `--queues cpu --concurrency 2` beside `--queues io
              --concurrency 1 --child-concurrency {io}`; *stock*: two `procrastinate
              worker --queues cpu --concurrency 1` and one `procrastinate worker
              --queues io --concurrency {io}`. PostgreSQL {d["postgresql"]}.
              Command: `{d["command"]}`; {d["started_at"]}; {len(d["runs"]) // 3}
              repetitions, interleaved; medians. Drain: first start to last end
              (`procrastinate_events`); sessions: the peak of the workers'
              sessions in `pg_stat_activity`, sampled every 0.2 s; memory: the
              PSS of every process of the setup, summed, half-way through."""),
        "",
        "| setup | drain (s) | start to last end (s) | peak sessions "
        "| memory, PSS (MiB) | drain speed vs stock |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    names = {
        "pools": "one fleet, two pools",
        "two_fleets": "two fleets",
        "stock": "stock",
    }
    for setup, name in names.items():
        e = s.get(setup)
        if not e:
            continue
        ratio = e.get("drain_speed_vs_stock")
        lines.append(
            f"| {name} | {e['drain_seconds']:.2f} | {e['start_to_end_seconds']:.2f} "
            f"| {e['peak_sessions']:g} | {e['total_pss_mib']:.0f} "
            f"| {f'{ratio:.2f}x' if ratio else '1'} |"
        )
    return [*lines, ""]


SIDE_FILES = (
    ("benchmarks-bigtables.json", bigtables_section),
    ("benchmarks-pgbouncer.json", pgbouncer_section),
    ("benchmarks-profile.json", profile_section),
    ("benchmarks-fleetwrites.json", fleetwrites_section),
    ("benchmarks-fleetstatus.json", fleetstatus_section),
    ("benchmarks-dbcost.json", dbcost_section),
    ("benchmarks-mixed.json", mixed_section),
)


def side_sections(out_dir: Path) -> list[str]:
    """The sections of the side files found in ``out_dir``, each followed by
    ``benchmarks/notes-<name>.md`` when that was written for the same run
    (first line ``<!-- run: <started_at> -->``, as for benchmarks/notes.md)."""
    import json

    lines: list[str] = []
    for name, section in SIDE_FILES:
        path = out_dir / name
        if not path.exists():
            continue
        data = json.loads(path.read_text())
        lines += section(data)
        notes = NOTES.with_name(
            "notes-" + name.removeprefix("benchmarks-").replace(".json", ".md")
        )
        if notes.exists():
            first, _, body = notes.read_text().partition("\n")
            run = first.removeprefix("<!-- run:").removesuffix("-->").strip()
            if run == data.get("started_at"):
                lines += [body.strip(), ""]
    return lines
