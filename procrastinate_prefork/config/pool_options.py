"""The ``pools`` option: several pools from the Django setting or
``run_worker(pools=...)`` (a dict of pools), ``--pool`` (repeatable) and the
environment (``NAME=QUEUES:CONCURRENCY[:CHILD_CONCURRENCY]``), parsed with
the option table and resolved against the top-level options into
``pools.PoolSpec``.

The rules, documented in docs/reference/configuration.md#pools:

- every pool names its queues, ``*`` for every queue; ``*`` only in a pool
  alone, and a queue in one pool only: a queue's jobs then run under one
  pool's limits, never under whichever pool's child fetched them first;
- a per-child option a pool does not give is the top-level one (its size is
  taken as a whole: a pool giving ``concurrency`` does not inherit
  ``autoscale``);
- a per-child option on the command line and pools do not mix, and a
  top-level ``queues`` is an error beside pools of the same or a lower
  source (a higher source wins, as for every option).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .parsing import MAX_CHILDREN, ConfigError, parse_setting, queues
from .pools import POOL_OPTIONS, PoolSpec

if TYPE_CHECKING:
    from . import PreforkConfig

#: names become metric labels and process titles: short, plain
POOL_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
ALL_QUEUES = "*"
TEXT_FORM = "NAME=QUEUES:CONCURRENCY[:CHILD_CONCURRENCY]"
TEXT_FIELDS = ("queues", "concurrency", "child_concurrency")


class PoolError(ConfigError):
    """A pool wrong on its own: its name, a key, a value."""

    kind = "pool_invalid"


class PoolConflict(ConfigError):
    """Pools that do not go together, or with the top-level options."""

    kind = "pools_conflict"


@dataclasses.dataclass(frozen=True)
class PoolDeclaration:
    """A pool as configured: its name and the per-child options it gives
    itself, parsed; it takes the others from the top level."""

    name: str
    options: Mapping[str, Any]


def declarations(value: Any) -> tuple[PoolDeclaration, ...]:
    """The ``pools`` option's parser: a dict of pools (settings, Python API),
    a list of ``--pool`` values, or one string of them separated by ``;`` or
    spaces (environment)."""
    if value is None:
        return ()
    if isinstance(value, Mapping):
        pools = [_from_mapping(name, options) for name, options in value.items()]
    elif isinstance(value, str):
        pools = [_from_text(item) for item in re.split(r"[;\s]+", value) if item]
    elif isinstance(value, (list, tuple)):
        pools = [_from_text(str(item).strip()) for item in value]
    else:
        raise PoolError(
            f"expected a dict of pools ({{name: {{option: value}}}}) or "
            f"{TEXT_FORM} values, got {type(value).__name__}"
        )
    seen: set[str] = set()
    for pool in pools:
        if pool.name in seen:
            raise PoolError(f"pool {pool.name!r} is given twice")
        seen.add(pool.name)
    return tuple(pools)


def _from_text(item: str) -> PoolDeclaration:
    name, sep, rest = item.partition("=")
    fields = rest.split(":")
    if not sep or len(fields) not in (2, 3):
        raise PoolError(f"expected {TEXT_FORM}, got {item!r}")
    name = _checked_name(name.strip())
    raw = dict(zip(TEXT_FIELDS[: len(fields)], map(str.strip, fields), strict=True))
    return PoolDeclaration(name, _parsed_options(name, raw, strict=False))


def _from_mapping(name: Any, options: Any) -> PoolDeclaration:
    if not isinstance(name, str):
        raise PoolError(f"a pool's name must be a string, got {name!r}")
    name = _checked_name(name)
    if not isinstance(options, Mapping):
        raise PoolError(
            f"pool {name!r}: expected a dict of its options, got "
            f"{type(options).__name__}"
        )
    return PoolDeclaration(name, _parsed_options(name, options, strict=True))


def _checked_name(name: str) -> str:
    if not POOL_NAME.fullmatch(name):
        raise PoolError(
            f"bad pool name {name!r}: 1 to 32 of a-z, 0-9, _ and -, not starting "
            "with _ or - (it becomes a metric label and a process title)"
        )
    return name


def _parsed_options(
    name: str, raw: Mapping[str, Any], *, strict: bool
) -> dict[str, Any]:
    """Each value parsed by its option's parser; ``strict``: as the
    top-level settings are (Python numbers and booleans, not strings)."""
    from .table import OPTIONS_BY_NAME  # the table declares this module's parser

    for key in raw:
        if key not in POOL_OPTIONS:
            raise PoolError(f"pool {name!r}: {_not_per_pool(key, OPTIONS_BY_NAME)}")
    if "queues" not in raw:
        raise PoolError(
            f"pool {name!r} has no queues: name them, or {ALL_QUEUES!r} for every queue"
        )
    parsed: dict[str, Any] = {}
    for key, value in raw.items():
        try:
            if key == "queues":
                parsed[key] = _queues(name, value, strict=strict)
            elif strict:
                parsed[key] = parse_setting(OPTIONS_BY_NAME[key], value)
            else:
                parsed[key] = OPTIONS_BY_NAME[key].parse(value)
        except ConfigError as exc:
            raise PoolError(f"pool {name!r}: {key}: {exc}") from None
    return parsed


def _not_per_pool(key: Any, table: Mapping[str, Any]) -> str:
    if key in table:
        return (
            f"{key!r} is host-wide, not per pool: give it at the top level, "
            "outside the pools"
        )
    import difflib

    close = difflib.get_close_matches(str(key), sorted(POOL_OPTIONS), n=1)
    hint = f"did you mean {close[0]!r}?" if close else "see the configuration reference"
    return f"unknown key {key!r} ({hint})"


def _queues(name: str, value: Any, *, strict: bool) -> tuple[str, ...] | None:
    if value == ALL_QUEUES or (
        isinstance(value, (list, tuple)) and list(value) == [ALL_QUEUES]
    ):
        return None
    if strict and not isinstance(value, (str, list, tuple)):
        raise ConfigError(f"expected a list of queues, got {value!r}")
    names = queues(value)
    if names is None:
        raise ConfigError(f"no queues: name them, or {ALL_QUEUES!r} for every queue")
    if ALL_QUEUES in names:
        raise ConfigError(f"{ALL_QUEUES!r} (every queue) stands alone")
    return names


def resolve(
    config: PreforkConfig,
    declared: tuple[PoolDeclaration, ...],
    sources: Mapping[str, str],
    ranks: Mapping[str, int],
) -> PreforkConfig:
    """``config`` with its pools: each the top-level configuration with the
    pool's per-child options. ``sources`` names where each given option came
    from and ``ranks`` its precedence (0: the command line, which wins)."""
    if not declared:
        return config
    source = sources["pools"]
    _check_top_level(sources, ranks)
    specs = tuple(_spec(config, pool, source) for pool in declared)
    _check_together(specs, source)
    return dataclasses.replace(config, pools=specs)


def _check_top_level(sources: Mapping[str, str], ranks: Mapping[str, int]) -> None:
    from .table import OPTIONS  # the table declares this module's parser

    pools_rank = ranks["pools"]
    on_command_line = [
        option
        for option in OPTIONS
        if option.name in POOL_OPTIONS and ranks.get(option.name) == 0
    ]
    if on_command_line:
        flag = on_command_line[0].flags[-1]
        if pools_rank == 0:
            raise PoolConflict(
                f"{flag} cannot be given with --pool: a pool's options are its "
                f"own ({TEXT_FORM}; the others per pool in the pools setting or "
                "run_worker(pools=...))"
            )
        raise PoolConflict(
            f"{flag}: {sources['pools']} configures pools: give it per pool, "
            "or replace the pools with --pool"
        )
    if "queues" in ranks and ranks["queues"] <= pools_rank:
        raise PoolConflict(
            f"{sources['queues']}: with pools ({sources['pools']}) each pool "
            "names its own queues"
        )


def _spec(config: PreforkConfig, pool: PoolDeclaration, source: str) -> PoolSpec:
    options = dict(pool.options)
    if "concurrency" in options and "autoscale" not in options:
        options["autoscale"] = None  # its size is the pool's, not half inherited
    pool_config = dataclasses.replace(
        config, **options, pools=(), given=config.given | set(pool.options)
    )
    problem = pool_config.soft_limit_problem()
    if problem:
        raise PoolError(f"{source}: pool {pool.name!r}: {problem}")
    return PoolSpec(pool.name, pool_config)


def _check_together(specs: tuple[PoolSpec, ...], source: str) -> None:
    if len(specs) > 1:
        for spec in specs:
            if spec.config.queues is None:
                raise PoolConflict(
                    f"{source}: pool {spec.name!r} serves every queue "
                    f"({ALL_QUEUES!r}), the other pools' too: name its queues "
                    f"({ALL_QUEUES!r} is for a pool alone)"
                )
    owners: dict[str, str] = {}
    for spec in specs:
        for queue in spec.config.queues or ():
            if owners.setdefault(queue, spec.name) != spec.name:
                raise PoolConflict(
                    f"{source}: queue {queue!r} is in pools {owners[queue]!r} and "
                    f"{spec.name!r}: a queue belongs to one pool (its jobs run "
                    "under that pool's limits)"
                )
    children = sum(
        spec.config.autoscale[1] if spec.config.autoscale else spec.config.concurrency
        for spec in specs
    )
    if children > MAX_CHILDREN:
        raise PoolConflict(
            f"{source}: the pools have up to {children} children in all, more "
            f"than {MAX_CHILDREN}"
        )
