"""The command line with pools given by the tests, until the configuration
layer reads them (issue 24): ``python -m tests.pools_main <cli arguments>``
runs ``procrastinate-prefork`` with the pools of ``$PREFORK_TEST_POOLS``, a
JSON object ``{name: {option: value}}`` whose options replace the
command line's for that pool (lists become tuples)."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from typing import Any

from procrastinate_prefork import cli
from procrastinate_prefork.config import PreforkConfig
from procrastinate_prefork.config.pools import PoolSpec


def with_pools(
    config: PreforkConfig, pools: dict[str, dict[str, Any]]
) -> PreforkConfig:
    specs = []
    for name, options in pools.items():
        values = {
            key: tuple(value) if isinstance(value, list) else value
            for key, value in options.items()
        }
        specs.append(PoolSpec(name, dataclasses.replace(config, **values)))
    return dataclasses.replace(config, pools=tuple(specs))


def main() -> int:
    pools = json.loads(os.environ["PREFORK_TEST_POOLS"])
    run_fleet = cli.run_fleet

    def run_with_pools(config: PreforkConfig, *args: Any, **kwargs: Any) -> int:
        return run_fleet(with_pools(config, pools), *args, **kwargs)

    cli.run_fleet = run_with_pools  # type: ignore[assignment]
    return cli.main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
