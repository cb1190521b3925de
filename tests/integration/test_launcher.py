"""The launcher: what each entry point does to the process's logging."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_API_SCRIPT = textwrap.dedent("""
    import json, logging, sys
    from tests.apps.plain_app import app
    import procrastinate_prefork

    root = logging.getLogger()
    before = ([id(h) for h in root.handlers], root.level)
    code = procrastinate_prefork.run_worker(
        app, concurrency=1, wait=False, log_level="debug",
    )
    after = ([id(h) for h in root.handlers], root.level)
    print(json.dumps({
        "code": code, "before": before, "after": after,
        "package_level": logging.getLogger("procrastinate_prefork").level,
    }))
""")


def test_the_python_api_leaves_the_root_logger_to_the_caller(db_url):
    env = {**os.environ, "DATABASE_URL": db_url, "PYTHONPATH": ROOT}
    env.pop("PREFORK_TEST_RESULTS", None)
    proc = subprocess.run(
        [sys.executable, "-c", _API_SCRIPT],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["code"] == 0
    assert result["after"] == result["before"]
    # an explicit level still reaches the package's own logger
    assert result["package_level"] == 10
