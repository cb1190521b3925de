#!/usr/bin/env python3
"""Write docs/reference/configuration.md from the option table
(``procrastinate_prefork.config.table.OPTIONS``).

    .venv/bin/python scripts/gen_config_docs.py           # (re)write the page
    .venv/bin/python scripts/gen_config_docs.py --check   # exit 1 if it is stale

The option table is the only source: flags, environment variables, Django
setting key, default and meaning all come from it, and the kind of value each
option takes is read from its parser (the closures built by ``parsing``), so
that the page cannot drift from the code. ``tests/unit/test_docs.py`` fails
when the committed page differs from what this script writes.
"""

from __future__ import annotations

import argparse
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
OUTPUT = REPO / "docs" / "reference" / "configuration.md"

if str(REPO) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(REPO))

from procrastinate_prefork.config import declaration as option_module
from procrastinate_prefork.config import pools as pools_module
from procrastinate_prefork.config import table as option_table


class Kind:
    """How one option's values are written, in each place they can be set."""

    def __init__(self, text: str, python: str, placeholder: str, unit: str = ""):
        self.text = text  # command line and environment
        self.python = python  # Django setting and Python API
        self.placeholder = placeholder  # metavar when the option has none
        self.unit = unit  # appended to plain numeric defaults


def _nonlocals(parse: Callable[..., Any]) -> dict[str, Any]:
    try:
        return dict(inspect.getclosurevars(parse).nonlocals)
    except TypeError:
        return {}


def kind_of(parse: Callable[..., Any]) -> Kind:
    """Describe the values ``parse`` accepts, from the parser ``parsing`` built."""
    name = parse.__qualname__.split(".<locals>")[0]
    free = _nonlocals(parse)
    if name == "optional":
        inner = kind_of(free["parse"])
        return Kind(
            f"{inner.text}; `none` leaves it unset",
            f"{inner.python} or `None`",
            inner.placeholder,
            inner.unit,
        )
    if name == "int_between":
        return Kind(f"an integer from {free['low']} to {free['high']}", "`int`", "N")
    if name == "_positive_float":
        bound = "0 or more" if free.get("allow_zero") else "more than 0"
        return Kind(
            f"seconds, {bound} (decimals allowed)", "`float` or `int`", "SECONDS", " s"
        )
    if name == "boolean":
        return Kind(
            "a boolean: `1`/`0`, `yes`/`no`, `true`/`false`, `on`/`off` "
            "(the flags themselves take no value)",
            "`bool`",
            "",
        )
    if name == "choice":
        choices = ", ".join(f"`{c}`" for c in free["choices"])
        return Kind(f"one of {choices}", "`str`", "CHOICE")
    if name == "queues":
        return Kind(
            "comma-separated names, e.g. `emails,reports`",
            "`list[str]` (or a comma-separated `str`)",
            "QUEUES",
        )
    if name == "non_empty_str":
        return Kind("text, 1 to 200 characters", "`str`", "TEXT")
    if name in ("task_timeouts", "task_soft_timeouts"):
        return Kind(
            "`NAME=SECONDS`; repeat the flag for several tasks; in the "
            "environment, comma-separated: `app.tasks.a=10,app.tasks.b=2.5`",
            '`dict[str, float]`, e.g. `{"app.tasks.a": 10}`',
            "NAME=SECONDS",
            " s",
        )
    if name == "autoscale":
        return Kind(
            "`MIN,MAX`, two integers with MIN not above MAX",
            '`(MIN, MAX)` (a tuple or list of two `int`) or `"MIN,MAX"`',
            "MIN,MAX",
        )
    if name == "dotted_path":
        return Kind(
            "a dotted path to a callable: `pkg.module.func` or `pkg.module:func`",
            "a dotted path `str`, or the callable itself",
            "PATH",
        )
    if name == "declarations":
        return Kind(
            "`NAME=QUEUES:CONCURRENCY[:CHILD_CONCURRENCY]`, e.g. "
            "`cpu=reports:4` or `io=emails,webhooks:1:50` (`*` for every "
            "queue); repeat the flag for several pools; in the environment, "
            "separated by `;` or spaces: `cpu=reports:4;io=emails:1:50`",
            "`dict[str, dict]`: each pool's name and its options, e.g. "
            '`{"cpu": {"queues": ["reports"], "concurrency": 4}}`',
            "NAME=QUEUES:CONCURRENCY[:CHILD_CONCURRENCY]",
        )
    if name == "listen_dsn":
        return Kind(
            "a libpq connection string: `postgresql://user@host:5432/db` or "
            "`host=... dbname=...` (passwords: better in a `.pgpass` file)",
            "`str`",
            "DSN",
        )
    raise SystemExit(
        f"gen_config_docs: no description for the parser {parse.__qualname__!r}; "
        "teach kind_of() about it"
    )


def default_text(option: option_module.Option, kind: Kind) -> str:
    if option.default_doc is not None:
        return option.default_doc
    value = option.default
    if callable(value):
        raise SystemExit(
            f"gen_config_docs: option {option.name!r} has a computed default; give "
            "it default_doc so that the page does not depend on this machine"
        )
    if value is None:
        return "none"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, float):
        return f"`{value:g}`{kind.unit}"
    if isinstance(value, int):
        return f"`{value}`{kind.unit}"
    return f"`{value}`"


def flag_text(option: option_module.Option, kind: Kind) -> str:
    if option.negative_flag or option.count:
        return ", ".join(f"`{flag}`" for flag in option.flags)
    metavar = option.metavar or kind.placeholder
    return ", ".join(f"`{flag} {metavar}`" for flag in option.flags)


def anchor(option: option_module.Option) -> str:
    return option.name  # Python-Markdown's slug of a heading "name"


HEADER_COMMENT = (
    "<!-- Generated by scripts/gen_config_docs.py from "
    "procrastinate_prefork.config.OPTIONS. Do not edit by hand: change the "
    "option table, then run `.venv/bin/python scripts/gen_config_docs.py`. -->"
)

INTRO = """
Every option of the prefork worker ({count} of them), as defined in the code's
single option table. The same option can be given in four places; the first
one that sets it wins:

1. the **command line** of `manage.py prefork_worker` or
   `procrastinate-prefork --app ... worker` (or a keyword argument of
   `procrastinate_prefork.run_worker(app, ...)`, which counts as the command
   line);
2. an **environment variable**; when an option has several, the first one
   listed that is set and not empty is used;
3. the **Django setting** `PROCRASTINATE_PREFORK`, a dict whose keys are the
   option names below;
4. the **default**.

A bad value stops the worker before anything is forked, with a one-line
message naming the option and where it came from, and exit code 2.
"""

CONSTRAINTS = """
One constraint spans two options: `heartbeat_interval` must be at most half of
`stalled_timeout`.
"""

WORKER_GROUP_INTRO = (
    "procrastinate's own worker options, given to the worker that runs in every "
    "child. They also read the `PROCRASTINATE_WORKER_*` environment variables "
    "that `procrastinate worker` users may already set."
)

POOLS_INTRO = """
Several pools of children under one supervisor (one LISTEN session, one
recovery, one fleet table), each with its own queues and per-child options:
a few processes for CPU-heavy jobs beside one process that runs fifty
I/O-bound jobs at once, for example.

```python
# settings.py
PROCRASTINATE_PREFORK = {
    "job_timeout": 600,  # every pool's, unless a pool gives its own
    "pools": {
        "cpu": {"queues": ["reports"], "concurrency": 4},
        "io": {
            "queues": ["emails", "webhooks"],
            "concurrency": 1,
            "child_concurrency": 50,
        },
    },
}
```

The same two pools on the command line are
`--pool cpu=reports:4 --pool io=emails,webhooks:1:50`, and from Python
`run_worker(app, pools={...})` with the dict above. The command line covers
the common case (queues, children, jobs at once per child); the setting and
the Python API take every per-pool option.
"""

POOLS_RULES = """
- **Inherited.** A per-pool option a pool does not give is the top-level one,
  from wherever it came (environment, setting, default): a top-level
  `job_timeout` is every pool's default. A pool's size is taken whole: a pool
  that gives `concurrency` does not inherit a top-level `autoscale`.
- **Queues.** Every pool names its queues (`queues` is required in a pool's
  dict; `--pool` always has them). `*` means every queue and is for a pool
  alone: beside other pools it would run their queues' jobs too. A queue
  belongs to one pool: two pools serving the same queue is an error, since
  each of its jobs would run under the limits (time limits, memory, recycling)
  of whichever pool's child fetched it first.
- **Sources.** `pools` takes the precedence above as a whole: `--pool` (or
  `run_worker(pools=...)`) replaces the setting's `pools`. A per-pool option on
  the command line does not mix with pools: `--pool ... --concurrency 3` is an
  error, and so is `--concurrency 3` while the setting or the environment
  configures pools (replace them with `--pool`). A top-level `queues` beside
  pools is an error when it comes from the same source or a higher one (the
  environment's `PROCRASTINATE_WORKER_QUEUES` beside the setting's pools);
  from a lower one, the pools win over it.
- **Names.** 1 to 32 characters among `a-z`, `0-9`, `_` and `-`, starting with a
  letter or a digit (they become metric labels and process titles); each name
  once.
- **Checks.** A pool's values are checked as the top-level ones are (in a dict,
  numbers and booleans must be Python numbers and booleans); each pool's soft
  time limits must be below its hard ones; the pools' children (each pool's
  `concurrency`, or the MAX of its `autoscale`) add up to at most {max_children}.
  A key a pool may not set is an error naming the pool and the key (and saying
  when the option is host-wide). Django's system checks report a pool's
  problems as `procrastinate_prefork.E007` and pools that do not go together
  as `procrastinate_prefork.E008` ([Django checks](django-checks.md)).
- **None.** Without `pools` (or with an empty one) the worker runs one pool
  named `{default}` of the top-level options, as it always has.
"""


def pools_section() -> list[str]:
    options = option_table.OPTIONS
    per_pool = [o.name for o in options if o.name in pools_module.POOL_OPTIONS]
    host_wide = [
        o.name
        for o in options
        if o.name not in pools_module.POOL_OPTIONS and o.name != "pools"
    ]

    def links(names: list[str]) -> str:
        return ", ".join(f"[`{name}`](#{name})" for name in names)

    return [
        "## Several pools",
        "",
        POOLS_INTRO.strip(),
        "",
        f"**Per pool** (the keys of a pool): {links(per_pool)}.",
        "",
        f"**Host-wide** (top level only): {links(host_wide)}.",
        "",
        POOLS_RULES.format(
            max_children=option_table.MAX_CHILDREN,
            default=pools_module.DEFAULT_POOL,
        ).strip(),
    ]


def per_pool_row(option: option_module.Option) -> list[str]:
    if option.name == "pools":
        return ["| Rules | [several pools](#several-pools) |"]
    if option.name in pools_module.POOL_OPTIONS:
        return ["| Per pool | yes: a pool may give its own ([pools](#several-pools)) |"]
    return ["| Per pool | no: host-wide |"]


GROUPS = (
    (
        "prefork",
        "Supervisor and children",
        "How the fleet is run: its size, recovery, time limits, recycling, health.",
    ),
    ("worker", "Passed to each child's procrastinate worker", WORKER_GROUP_INTRO),
)


def example_settings() -> list[str]:
    """A Django settings example, using only options that exist."""
    example = [
        ("concurrency", "4"),
        ("queues", '["default", "emails"]'),
        ("max_memory_per_child", "400"),
        ("task_timeouts", '{"shop.tasks.checksum": 120}'),
        ("health_port", "8001"),
        ("health_host", '"0.0.0.0"'),
    ]
    body = [
        f'    "{name}": {value},'
        for name, value in example
        if name in option_table.OPTIONS_BY_NAME
    ]
    return [
        "```python",
        "# settings.py",
        "PROCRASTINATE_PREFORK = {",
        *body,
        "}",
        "```",
    ]


def render() -> str:
    options = option_table.OPTIONS
    known_groups = {group for group, _, _ in GROUPS}
    stray = [o.name for o in options if o.group not in known_groups]
    if stray:
        raise SystemExit(f"gen_config_docs: options in an unknown group: {stray}")
    lines = [
        "# Configuration",
        "",
        HEADER_COMMENT,
        "",
        INTRO.format(count=len(options)).strip(),
        "",
        *example_settings(),
        "",
        CONSTRAINTS.strip(),
        "",
        "## Summary",
        "",
        "| Option | Command line | Environment | Default |",
        "| --- | --- | --- | --- |",
    ]
    for option in options:
        kind = kind_of(option.parse)
        flags = ", ".join(f"`{flag}`" for flag in option.flags)
        if option.negative_flag:
            flags += f" / `{option.negative_flag}`"
        env = "<br>".join(f"`{var}`" for var in option.env_vars)
        lines.append(
            f"| [`{option.name}`](#{anchor(option)}) | {flags} | {env} | "
            f"{default_text(option, kind)} |"
        )
    lines += ["", *pools_section()]
    for group, title, intro in GROUPS:
        members = [o for o in options if o.group == group]
        if not members:
            continue
        lines += ["", f"## {title}", "", intro]
        for option in members:
            kind = kind_of(option.parse)
            lines += [
                "",
                f"### {option.name}",
                "",
                option.help,
                "",
                "| | |",
                "| --- | --- |",
                f"| Command line | {flag_text(option, kind)} |",
            ]
            if option.negative_flag:
                lines.append(f"| Negative flag | `{option.negative_flag}` |")
            if option.repeatable:
                lines.append("| Repeatable | yes: give the flag once per value |")
            lines += [
                "| Environment | "
                + ", ".join(f"`{v}`" for v in option.env_vars)
                + " |",
                (
                    f'| Django setting | `PROCRASTINATE_PREFORK["{option.name}"]`: '
                    f"{kind.python} |"
                ),
                f"| Python API | `run_worker(app, {option.name}=...)` |",
                f"| Value | {kind.text} |",
                f"| Default | {default_text(option, kind)} |",
                *per_pool_row(option),
            ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check",
        action="store_true",
        help="exit 1 if the committed page is not what would be written",
    )
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = OUTPUT.read_text() if OUTPUT.exists() else ""
        if current != text:
            print(
                f"{OUTPUT.relative_to(REPO)} is stale: run "
                ".venv/bin/python scripts/gen_config_docs.py",
                file=sys.stderr,
            )
            return 1
        return 0
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(text)
    print(f"wrote {OUTPUT.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
