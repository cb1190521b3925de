"""The fleet listing of ``status`` (both front ends) and of the health view
holds up to a limit of supervisors, those with a problem first, while the
verdict and its counts are about every supervisor; bad limits are refused
(exit 2, 400)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ..fleet_helper import REPO
from .test_health import (  # noqa: F401 - django_view is a fixture
    MANAGE,
    django_env,
    django_view,
    insert_supervisor,
    status_cli,
)

#: (host, pid, heartbeat age s, crash loop): hosts in the listing's order;
#: the problems (a crash loop, a stale heartbeat: 30 s is their timeout) last
FLEET = [
    ("a", 110, 0.5, False),
    ("b", 120, 0.5, False),
    ("c", 130, 0.5, False),
    ("d", 140, 0.5, False),
    ("y", 150, 0.5, True),
    ("z", 160, 600.0, False),
]
PROBLEMS = ["y", "z"]


@pytest.fixture
def fleet_of_six(db_url: str) -> str:
    for host, pid, age, crash in FLEET:
        insert_supervisor(
            db_url, host=host, pid=pid, age=age, crash_loop=crash, children=2
        )
    return db_url


def _hosts(table: str) -> list[str]:
    """The hosts of the supervisor lines of a status table."""
    lines = table.split("\n\n")[0].splitlines()[1:]
    return [line.split()[0] for line in lines if line[:1] not in ("", " ", "(")]


def test_status_lists_the_limit_problems_first_and_judges_all(fleet_of_six):
    cli = status_cli(fleet_of_six, "--json", "--limit", "3")
    assert cli.returncode == 1, cli.stderr  # y's crash loop
    document = json.loads(cli.stdout)
    listed = [s["host"] for s in document["supervisors"]]
    assert listed == ["a", *PROBLEMS]
    assert all(len(s["children"]) == 2 for s in document["supervisors"])
    assert (document["supervisors_total"], document["supervisors_listed"]) == (6, 3)
    assert document["limit"] == 3
    # the verdict counts the supervisors not listed too
    assert (document["fresh_supervisors"], document["fresh_children"]) == (5, 10)
    everyone = json.loads(status_cli(fleet_of_six, "--json", "--limit", "0").stdout)
    assert [s["host"] for s in everyone["supervisors"]] == [h for h, *_ in FLEET]
    assert everyone["supervisors_listed"] == everyone["supervisors_total"] == 6
    for name in ("status", "problems", "fresh_supervisors", "fresh_children"):
        assert document[name] == everyone[name], name
    assert len(document["warnings"]) == len(everyone["warnings"]) == 1  # z

    table = status_cli(fleet_of_six, "--limit", "2")
    assert table.returncode == 1, table.stderr
    assert _hosts(table.stdout) == PROBLEMS
    [note] = [line for line in table.stdout.splitlines() if line.startswith("(")]
    assert "4" in note and "--limit 0" in note  # how many, how to see them
    whole = status_cli(fleet_of_six)  # the default limit is above 6
    assert _hosts(whole.stdout) == [h for h, *_ in FLEET]
    assert not [line for line in whole.stdout.splitlines() if line.startswith("(")]


def manage_status(db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    pytest.importorskip("django")
    return subprocess.run(
        [sys.executable, str(MANAGE), "prefork_status", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env=django_env(db_url),
    )


def test_manage_status_takes_the_limit(fleet_of_six):
    result = manage_status(fleet_of_six, "--json", "--limit", "1")
    assert result.returncode == 1, result.stderr
    document = json.loads(result.stdout)
    assert [s["host"] for s in document["supervisors"]] == ["y"]
    assert document["supervisors_total"] == 6


@pytest.mark.parametrize("value", ["-1", "many", "1.5", "10001", ""])
def test_bad_limits_are_one_line_exit_2(db_url, value):
    plain = status_cli(db_url, "--limit", value)
    assert plain.returncode == 2, plain.stdout
    [line] = plain.stderr.splitlines()
    assert "limit" in line
    django = manage_status(db_url, "--limit", value)
    assert django.returncode == 2, django.stdout
    assert "Traceback" not in django.stderr
    [line] = [line for line in django.stderr.splitlines() if "rror" in line]
    assert line.startswith("CommandError: ") and "limit" in line


def test_health_view_takes_the_limit(fleet_of_six, django_view):  # noqa: F811
    (
        (code, limited),
        (_, default),
        (_, everyone),
        (_, public),
        *bad,
    ) = django_view.get(
        fleet_of_six,
        "/prefork/?limit=2",
        "/prefork/",
        "/prefork/?limit=0",
        "/prefork/?limit=1",
        "/prefork/?limit=-1",
        "/prefork/?limit=two",
        "/prefork/?limit=100000",
        "/prefork/?limit=1&limit=2",
    )
    assert code == 503  # y's crash loop
    assert [s["host"] for s in limited["supervisors"]] == PROBLEMS
    assert (limited["supervisors_total"], limited["supervisors_listed"]) == (6, 2)
    assert limited["fresh_supervisors"] == everyone["fresh_supervisors"] == 5
    assert limited["problems"] == everyone["problems"]
    assert [s["host"] for s in default["supervisors"]] == [h for h, *_ in FLEET]
    assert everyone["supervisors_listed"] == 6
    assert [code for code, _ in bad] == [400, 400, 400, 400]
    assert all(
        body["status"] == "error" and "limit" in body["error"] for _, body in bad
    )
    [(code, stranger)] = django_view.get(
        fleet_of_six, "/prefork/?limit=1", authorization=None
    )
    assert code == 503 and "supervisors" not in stranger
    assert public["supervisors_listed"] == 1
