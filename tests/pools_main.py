"""``procrastinate-prefork`` with a ``PROCRASTINATE_PREFORK`` settings dict
whose ``pools`` are ``$PREFORK_TEST_POOLS`` (a JSON object ``{name: {option:
value}}``): ``python -m tests.pools_main <cli arguments>``. The pools go
through the configuration layer as the Django setting's do (``cli.main``'s
``settings``, what ``manage.py prefork_worker`` passes), with every option a
pool may set; the ``--pool`` flag covers only queues and sizes."""

from __future__ import annotations

import json
import os
import sys

from procrastinate_prefork import cli


def main() -> int:
    pools = json.loads(os.environ["PREFORK_TEST_POOLS"])
    return cli.main(sys.argv[1:], settings={"pools": pools})


if __name__ == "__main__":
    sys.exit(main())
