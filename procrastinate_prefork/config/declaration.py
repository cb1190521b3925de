"""What one option declares: its flags, environment variables, Django setting
key, parser, default and help (the table of every option is in ``options``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

ENV_PREFIX = "PROCRASTINATE_PREFORK_"


@dataclasses.dataclass(frozen=True)
class Option:
    name: str
    flags: tuple[str, ...]
    parse: Callable[[Any], Any]
    default: Any
    help: str
    group: str = "prefork"  # "worker": passed through to procrastinate's Worker
    env: tuple[str, ...] = ()
    metavar: str | None = None
    negative_flag: str | None = None  # for booleans: the flag that sets False
    repeatable: bool = False
    default_doc: str | None = None  # how the default reads in the docs
    count: bool = False  # a flag counted on the command line (-v -v)

    @property
    def env_vars(self) -> tuple[str, ...]:
        return (ENV_PREFIX + self.name.upper(), *self.env)

    def default_value(self) -> Any:
        return self.default() if callable(self.default) else self.default
