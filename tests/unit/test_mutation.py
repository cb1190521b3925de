"""The mutation check's own rules (tests/mutation.py): a mutant whose text no
longer occurs exactly once is stale, and every curated mutant applies to
today's code, so that a refactoring that moves a mutant's text fails here
already, not only in the (longer) mutation check."""

from __future__ import annotations

import pytest

from ..mutants import MUTANTS
from ..mutation import REPO, Mutant, Stale, _outcomes, check_definitions, mutate


def _mutant(old: str, new: str = "X") -> Mutant:
    return Mutant(
        id="m", promise="p", path="f.py", old=old, new=new, tests=("t.py::t",)
    )


def test_a_mutant_replaces_its_one_occurrence():
    assert mutate(_mutant("b = 2"), "a = 1\nb = 2\n") == "a = 1\nX\n"


@pytest.mark.parametrize("text", ["a = 1\n", "b = 2\nb = 2\n"])
def test_a_mutant_not_found_exactly_once_is_stale(text):
    with pytest.raises(Stale) as caught:
        mutate(_mutant("b = 2"), text)
    assert str(caught.value).startswith("m:")  # names the mutant


def test_a_mutant_that_changes_nothing_is_stale():
    with pytest.raises(Stale):
        mutate(_mutant("b = 2", "b = 2"), "b = 2\n")


def test_every_curated_mutant_applies_to_todays_code():
    assert check_definitions(MUTANTS) == []
    for mutant in MUTANTS:
        mutate(mutant, (REPO / mutant.path).read_text())


def test_a_mutant_naming_a_missing_test_file_is_refused():
    [problem] = check_definitions([_mutant("x")])
    assert problem.startswith("m: no such test file")


def test_a_fixture_error_is_not_a_failure(tmp_path):
    """An unreachable database errors in the fixture: that kills no mutant."""
    junit = tmp_path / "results.xml"
    junit.write_text(
        '<testsuites><testsuite name="pytest">'
        '<testcase classname="t" name="failed"><failure message="x"/></testcase>'
        '<testcase classname="t" name="error"><error message="x"/></testcase>'
        '<testcase classname="t" name="skipped"><skipped message="x"/></testcase>'
        '<testcase classname="t" name="passed"/>'
        "</testsuite></testsuites>"
    )
    assert _outcomes(junit) == {
        "t.failed": "failed",
        "t.error": "error",
        "t.skipped": "skipped",
        "t.passed": "passed",
    }
