"""The documentation cannot drift from the code.

- docs/reference/configuration.md is exactly what scripts/gen_config_docs.py
  writes from ``options.OPTIONS``, and names every option, flag and variable;
- every log event (``extra={"action": ...}``) and every signal the supervisor
  handles is documented, and every command of the CLI;
- the Python and YAML examples parse;
- ``mkdocs build --strict`` passes: no broken link or anchor, no page left out
  of the nav, no warning.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from procrastinate_prefork import cli
from procrastinate_prefork.config import table as options
from procrastinate_prefork.supervisor import signals

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
REGENERATE = ".venv/bin/python scripts/gen_config_docs.py"


def _generator():
    spec = importlib.util.spec_from_file_location(
        "gen_config_docs", REPO / "scripts" / "gen_config_docs.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_configuration_reference_is_generated_from_the_option_table():
    committed = (DOCS / "reference" / "configuration.md").read_text()
    assert committed == _generator().render(), (
        f"docs/reference/configuration.md is stale: run {REGENERATE}"
    )


@pytest.mark.parametrize("option", options.OPTIONS, ids=lambda o: o.name)
def test_every_option_is_in_the_configuration_reference(option):
    text = (DOCS / "reference" / "configuration.md").read_text()
    assert f"\n### {option.name}\n" in text
    assert f"(#{option.name})" in text  # in the summary table
    for flag in option.flags:
        assert f"`{flag}" in text, flag
    if option.negative_flag:
        assert f"`{option.negative_flag}`" in text
    for var in option.env_vars:
        assert f"`{var}`" in text, var
    assert f'PROCRASTINATE_PREFORK["{option.name}"]' in text
    assert option.help in text


def test_generator_check_mode_agrees():
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "gen_config_docs.py"), "--check"],
        check=False,
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr


def _log_actions() -> set[str]:
    actions = set()
    for path in (REPO / "procrastinate_prefork").rglob("*.py"):
        actions |= set(re.findall(r'"action":\s*"(\w+)"', path.read_text()))
    return actions


def test_every_log_event_is_documented():
    text = (DOCS / "reference" / "log-events.md").read_text()
    actions = _log_actions()
    assert len(actions) > 10  # the pattern still finds them
    missing = sorted(a for a in actions if f"| `{a}` |" not in text)
    assert not missing, (
        f"add these log events to docs/reference/log-events.md: {missing}"
    )


def test_every_handled_signal_is_documented():
    handled = {signal.Signals(signum).name for signum in signals.HANDLED}
    assert {"SIGTERM", "SIGHUP", "SIGTTIN"} <= handled
    text = (DOCS / "reference" / "signals.md").read_text()
    missing = sorted(name for name in handled if f"`{name}`" not in text)
    assert not missing, f"add these signals to docs/reference/signals.md: {missing}"


def test_every_cli_command_is_documented():
    parser = cli.build_parser()
    [commands] = [
        a for a in parser._actions if isinstance(a, argparse._SubParsersAction)
    ]
    text = (DOCS / "reference" / "cli.md").read_text()
    missing = sorted(name for name in commands.choices if f"\n### {name}\n" not in text)
    assert not missing, f"add these commands to docs/reference/cli.md: {missing}"


def test_readme_links_into_docs_exist():
    readme = (REPO / "README.md").read_text()
    targets = re.findall(r"\]\((docs/[^)#\s]+)", readme)
    assert targets, "the README links into docs/"
    missing = [t for t in targets if not (REPO / t).exists()]
    assert not missing, missing


def _code_blocks(language: str) -> list[tuple[str, str]]:
    pages = [REPO / "README.md", *sorted(DOCS.rglob("*.md"))]
    return [
        (str(page.relative_to(REPO)), body)
        for page in pages
        for lang, body in re.findall(r"```(\w+)\n(.*?)```", page.read_text(), re.DOTALL)
        if lang == language
    ]


def test_python_and_yaml_examples_parse():
    import ast

    import yaml  # comes with mkdocs

    python, manifests = _code_blocks("python"), _code_blocks("yaml")
    assert python and manifests
    for page, body in python:
        try:
            ast.parse(body)
        except SyntaxError as exc:
            pytest.fail(f"{page}: a python example does not parse: {exc}")
    for page, body in manifests:
        try:
            list(yaml.safe_load_all(body))
        except yaml.YAMLError as exc:
            pytest.fail(f"{page}: a yaml example does not parse: {exc}")


def test_mkdocs_build_is_strict_and_clean(tmp_path):
    # mkdocs comes with the `test` extra; strict mode turns every warning
    # (broken link or anchor, page missing from the nav) into a failure.
    # Not --quiet: it hides the warnings from strict mode's count.
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "--config-file",
            str(REPO / "mkdocs.yml"),
            "--site-dir",
            str(tmp_path / "site"),
        ],
        check=False,
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "WARNING" not in output, output
    assert (tmp_path / "site" / "index.html").exists()
