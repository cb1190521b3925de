"""Telling a dead predecessor supervisor: the pure rule, and reading /proc."""

from __future__ import annotations

import os
import sys

import pytest

from procrastinate_prefork.fleet.identity import (
    ProcessIdentity,
    parse_start_ticks,
    predecessor_is_dead,
    process_identity,
)

OWN = ProcessIdentity("boot-a", 4026531836, 1000)


def _dead(recorded, current_start, silent=False, own=OWN):
    return predecessor_is_dead(
        silent=silent, recorded=recorded, own=own, current_start=current_start
    )


def test_same_boot_and_namespace_judged_by_the_process():
    row = ProcessIdentity("boot-a", 4026531836, 500)
    assert _dead(row, current_start=None)  # no such pid, or a zombie
    assert _dead(row, current_start=900)  # the pid was reused
    assert not _dead(row, current_start=500)  # that very process runs


def test_elsewhere_only_silence_counts():
    for row in (
        ProcessIdentity("boot-b", 4026531836, 500),  # before a reboot
        ProcessIdentity("boot-a", 4026532000, 500),  # another namespace
        None,
    ):  # an earlier version's row, or no /proc
        assert not _dead(row, current_start=None)
        assert _dead(row, current_start=None, silent=True)
    assert not _dead(ProcessIdentity("boot-a", 4026531836, 500), None, own=None)


def test_parse_start_ticks_with_odd_command_names():
    # pid, comm, state, then fields 4 to 21, then 22: starttime (proc(5))
    after = ["S", *(str(n) for n in range(4, 22)), "123456", "0"]
    stat = "42 (a (b) c) " + " ".join(after)
    state, start = parse_start_ticks(stat)
    assert state == "S"
    assert start == 123456


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_own_identity_is_stable_and_matches_proc():
    first, second = process_identity(), process_identity(os.getpid())
    assert first is not None and first == second
    assert first.pid_namespace == os.stat("/proc/self/ns/pid").st_ino
    assert process_identity(2**22 + 1) is None  # above any pid_max: no process
