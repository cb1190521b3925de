"""The test harness itself: a fleet's log file is not left open in the test
process (Python 3.13 reported dozens of unclosed ``fleet-N.log`` handles)."""

from __future__ import annotations

import sys

import psutil

from ..fleet_helper import FleetFactory


def test_fleet_log_is_not_held_open(tmp_path):
    factory = FleetFactory("postgresql://unused", tmp_path)
    fleet = factory.new()
    fleet.start(command=[sys.executable, "-c", (
        "import time; print('children ready', flush=True); time.sleep(60)")])
    fleet.stop()
    assert "children ready" in fleet.log()
    fleet.start(command=[sys.executable, "-c", "print('again')"], wait_ready=False)
    assert fleet.wait(timeout=30) == 0
    assert fleet.log().splitlines() == ["children ready", "again"]
    factory.cleanup()
    open_paths = {f.path for f in psutil.Process().open_files()}
    assert str(fleet.log_path) not in open_paths


def test_cleanup_of_a_fleet_never_started(tmp_path):
    factory = FleetFactory("postgresql://unused", tmp_path)
    factory.new()
    factory.cleanup()  # a test skipped after its fleet fixture was made
