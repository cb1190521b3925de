import pathlib
import re

import pytest

import procrastinate_prefork
from procrastinate_prefork.fleet import queries

PACKAGE = pathlib.Path(procrastinate_prefork.__file__).parent


def _package_source() -> str:
    return "\n".join(
        path.read_text() for path in PACKAGE.rglob("*.py") if path.name != "queries.py"
    )


def test_every_named_query_is_used():
    source = _package_source()
    unused = [
        name for name in queries.QUERIES if f'queries.get("{name}")' not in source
    ]
    assert unused == []


def test_every_query_the_package_asks_for_exists():
    asked = set(re.findall(r'queries\.get\("([a-z_]+)"\)', _package_source()))
    assert asked
    assert asked <= set(queries.QUERIES)


def test_each_block_needs_its_comment_and_a_statement():
    with pytest.raises(ValueError, match="comment"):
        queries.parse("-- a --\nSELECT 1\n")
    with pytest.raises(ValueError, match="statement"):
        queries.parse("-- a --\n-- does nothing\n\n")
    with pytest.raises(ValueError, match="twice"):
        queries.parse("-- a --\n-- one\nSELECT 1\n-- a --\n-- two\nSELECT 2\n")


def test_a_block_runs_to_the_next_one():
    parsed = queries.parse(
        "-- file header\n\n-- a --\n-- first\nSELECT 1\nFROM x\n\n"
        "-- b --\n-- second\nSELECT 2\n"
    )
    assert parsed == {"a": "SELECT 1\nFROM x", "b": "SELECT 2"}


def _with_list(name: str, last_cte: str) -> str:
    """The text of a named query from ``WITH`` up to the end of ``last_cte``."""
    statement = queries.get(name)
    start = statement.index("WITH sup AS (")
    end = statement.index("\n)", statement.index(f"{last_cte} AS ("))
    return statement[start:end]


def test_blocks_that_judge_supervisors_share_one_text_of_the_rule():
    # the file writes the rule out in each block: they must not drift apart
    judged = _with_list("stalled_jobs", "dead_worker")
    assert _with_list("prune_dead_workers", "dead_worker") == judged
    assert _with_list("mark_gone_supervisors", "sup") == _with_list(
        "stalled_jobs", "sup"
    )
    assert "make_interval(secs => t.timeout)" in _with_list("stalled_jobs", "sup")


def test_no_percent_sign_in_the_comments_of_a_statement():
    # psycopg (and Django's cursor) read every % of a statement as a placeholder
    commented = [
        (name, line)
        for name, statement in queries.QUERIES.items()
        for line in statement.splitlines()
        if "--" in line and "%" in line.split("--", 1)[1]
    ]
    assert commented == []


def test_blocks_that_check_a_run_still_owns_its_job_share_one_text_of_it():
    rule = (
        "WHERE id = %(job_id)s AND status = 'doing' AND attempts = %(attempts)s "
        "AND (worker_id = %(worker_id)s OR worker_id IS NULL)"
    )
    for name in ("finish_owned_job", "retry_owned_job", "job_still_owned"):
        assert rule in " ".join(queries.get(name).split()), name
