"""The test harness itself: a fleet's log file is not left open in the test
process (Python 3.13 reported dozens of unclosed ``fleet-N.log`` handles)."""

from __future__ import annotations

import sys

import psutil

from ..fleet_helper import FleetFactory


def test_fleet_log_is_not_held_open(tmp_path):
    factory = FleetFactory("postgresql://unused", tmp_path)
    fleet = factory.new()
    # ready as a fleet is: its fleet_ready event written (tests/apps/events.py)
    fleet.start(
        command=[
            sys.executable,
            "-c",
            (
                "import os, time; print('first', flush=True)\n"
                "with open(os.environ['PREFORK_TEST_RESULTS'] + '/events.jsonl', 'a') "
                "as f:\n"
                '    f.write(\'{"action": "fleet_ready"}\\n\')\n'
                "time.sleep(60)"
            ),
        ]
    )
    fleet.stop()
    fleet.start(command=[sys.executable, "-c", "print('again')"], wait_ready=False)
    assert fleet.wait(timeout=30) == 0
    assert fleet.log().splitlines() == ["first", "again"]  # appended, then closed
    factory.cleanup()
    open_paths = {f.path for f in psutil.Process().open_files()}
    assert str(fleet.log_path) not in open_paths


def test_cleanup_of_a_fleet_never_started(tmp_path):
    factory = FleetFactory("postgresql://unused", tmp_path)
    factory.new()
    factory.cleanup()  # a test skipped after its fleet fixture was made
