"""The curated mutation check: put each defect back, run the tests that claim
to guard against it, and fail unless each of them is caught.

    scripts/mutants.sh [--list] [MUTANT_ID ...]

The mutants are data, in ``tests/mutants.py``. Each one replaces one exact
piece of text (``old``, which must occur exactly once in its file) by another
(``new``) in a scratch copy of the working tree (tracked and untracked files,
uncommitted changes included, ``.gitignore``'d ones such as ``.venv`` left
out), runs its tests there with this checkout's Python and restores the
file. A mutant is:

* killed: every test it names fails; what we want (each of them claims to
  guard against that defect);
* survived: one of its tests passed, or was skipped, with the defect in;
* stale: its ``old`` text no longer occurs exactly once in today's code, so
  it no longer puts its defect back: update it with the code;
* broken: anything else (pytest could not collect or run the tests, or a
  fixture failed: an unreachable database kills nothing).

The check exits 1 naming every mutant that is not killed.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from xml.etree import ElementTree

REPO = Path(__file__).resolve().parent.parent
PACKAGE = "procrastinate_prefork"
#: a mutant's tests must end within this (pytest's own per-test timeout is 300 s)
RUN_TIMEOUT = 900


@dataclasses.dataclass(frozen=True)
class Mutant:
    id: str
    promise: str  # the guarantee it breaks, as docs/discussions/delivery-guarantees.md
    path: str  # relative to the repository's root
    old: str  # must occur exactly once in the file
    new: str
    tests: tuple[str, ...]  # pytest node ids, each of which must fail


class Stale(Exception):
    """A mutant that no longer applies to the code it was written against."""


def mutate(mutant: Mutant, text: str) -> str:
    """``text`` with the mutant's defect put back; ``Stale`` if its ``old``
    text does not occur exactly once (the code moved on without it)."""
    count = text.count(mutant.old)
    if count != 1:
        raise Stale(
            f"{mutant.id}: its old text occurs {count} times in {mutant.path} "
            "(must be exactly once): update the mutant with the code"
        )
    if mutant.old == mutant.new:
        raise Stale(f"{mutant.id}: old and new text are the same")
    return text.replace(mutant.old, mutant.new)


def check_definitions(mutants: Sequence[Mutant]) -> list[str]:
    """What is wrong with the list itself: duplicate ids, no tests, missing
    test files."""
    problems = []
    seen: set[str] = set()
    for mutant in mutants:
        if mutant.id in seen:
            problems.append(f"{mutant.id}: duplicate id")
        seen.add(mutant.id)
        if not mutant.tests:
            problems.append(f"{mutant.id}: no tests named")
        for node in mutant.tests:
            if not (REPO / node.split("::")[0]).is_file():
                problems.append(f"{mutant.id}: no such test file: {node}")
    return problems


def _working_tree_files(repo: Path) -> list[str]:
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=repo,
        check=True,
        capture_output=True,
    ).stdout
    return [name for name in out.decode().split("\0") if name]


def copy_tree(repo: Path, dest: Path) -> None:
    """The working tree as git sees it (uncommitted changes too), without
    what is ignored (.venv, caches)."""
    for name in _working_tree_files(repo):
        source = repo / name
        if not source.is_file():  # deleted, not yet committed
            continue
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)


def _check_imports_from(scratch: Path) -> None:
    """The tests and the processes they start (``PYTHONPATH`` = the tests'
    own checkout) must import the scratch copy, not the editable install of
    this checkout: otherwise every mutant would survive for no reason."""
    out = subprocess.run(
        [sys.executable, "-c", f"import {PACKAGE}; print({PACKAGE}.__file__)"],
        cwd=scratch,
        env={**os.environ, "PYTHONPATH": str(scratch)},
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    if not Path(out).resolve().is_relative_to(scratch.resolve()):
        raise SystemExit(f"mutants: the scratch copy imports {PACKAGE} from {out}")


def _outcomes(junit_xml: Path) -> dict[str, str]:
    """Test name -> passed, failed, error or skipped, from pytest's JUnit XML.
    An error is one in a fixture (the database unreachable, say): the test
    itself never ran, so it proves nothing."""
    outcomes = {}
    # our own pytest's output, not untrusted input
    for case in ElementTree.parse(junit_xml).iter("testcase"):  # noqa: S314
        tags = {child.tag for child in case}
        name = f"{case.get('classname', '')}.{case.get('name', '')}"
        if "error" in tags:
            outcomes[name] = "error"
        elif "failure" in tags:
            outcomes[name] = "failed"
        elif "skipped" in tags:
            outcomes[name] = "skipped"
        else:
            outcomes[name] = "passed"
    return outcomes


def run_one(mutant: Mutant, scratch: Path) -> tuple[str, str]:
    """(outcome, detail) of one mutant, applied to the scratch copy and
    taken out again. Killed only if every test it names fails: each of them
    claims to guard against this defect."""
    target = scratch / mutant.path
    original = target.read_text()
    try:
        mutated = mutate(mutant, original)
    except Stale as exc:
        return "stale", str(exc)
    junit = scratch / "mutant-results.xml"
    junit.unlink(missing_ok=True)
    target.write_text(mutated)
    try:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                f"--junitxml={junit}",
                *mutant.tests,
            ],
            cwd=scratch,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        return "broken", f"its tests ran longer than {RUN_TIMEOUT} s"
    finally:
        target.write_text(original)
    if proc.returncode not in (0, 1) or not junit.exists():
        return "broken", f"pytest exited with {proc.returncode}:\n{proc.stdout[-3000:]}"
    outcomes = _outcomes(junit)
    if len(outcomes) < len(mutant.tests):
        return "broken", f"{len(outcomes)} tests ran, {len(mutant.tests)} named"
    errors = sorted(name for name, outcome in outcomes.items() if outcome == "error")
    if errors:
        return "broken", f"error outside the test in {', '.join(errors)}:\n" + (
            proc.stdout[-3000:]
        )
    escaped = sorted(name for name, outcome in outcomes.items() if outcome != "failed")
    if escaped:
        return "survived", "passed or skipped with the defect in: " + ", ".join(
            f"{name} ({outcomes[name]})" for name in escaped
        )
    return "killed", f"{len(outcomes)} of {len(outcomes)} tests failed"


def run(mutants: Iterable[Mutant]) -> int:
    mutants = list(mutants)
    problems = check_definitions(mutants)
    if problems:
        for problem in problems:
            print(f"mutants: {problem}", file=sys.stderr)
        return 1
    failed: list[str] = []
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="prefork-mutants-") as tmp:
        scratch = Path(tmp)
        copy_tree(REPO, scratch)
        _check_imports_from(scratch)
        for mutant in mutants:
            began = time.monotonic()
            outcome, detail = run_one(mutant, scratch)
            took = time.monotonic() - began
            print(f"mutants: {outcome:8} {mutant.id} ({took:.0f} s)", flush=True)
            if outcome != "killed":
                failed.append(mutant.id)
                print(detail, flush=True)
    total = time.monotonic() - start
    if failed:
        print(
            f"mutants: {len(failed)} of {len(mutants)} not killed after {total:.0f} s: "
            + ", ".join(failed),
            file=sys.stderr,
        )
        return 1
    print(f"mutants: all {len(mutants)} killed in {total:.0f} s", file=sys.stderr)
    return 0


def main(argv: Sequence[str]) -> int:
    from .mutants import MUTANTS

    if argv[:1] == ["--list"]:
        for mutant in MUTANTS:
            print(f"{mutant.id}: {mutant.promise} ({mutant.path})")
        return 0
    by_id = {mutant.id: mutant for mutant in MUTANTS}
    unknown = [name for name in argv if name not in by_id]
    if unknown:
        print(f"mutants: no such mutant: {', '.join(unknown)}", file=sys.stderr)
        return 2
    return run([by_id[name] for name in argv] if argv else MUTANTS)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
