"""Which child exits become an event of the live page, and of what kind."""

from __future__ import annotations

import signal

import pytest

from procrastinate_prefork.fleet import events


def _death(label: str, code: int | None, signum: int | None = None):
    return events.death_event(
        label,
        code,
        slot=0,
        pid=42,
        cause="why",
        signal=signum,
        job_id=7,
        task_name="t",
        rss_bytes=1 << 20,
    )


@pytest.mark.parametrize(
    ("label", "code", "signum", "kind"),
    [
        ("signal", None, signal.SIGKILL, "crash"),
        ("exit", 13, None, "crash"),
        ("killed", None, signal.SIGKILL, "killed"),
        ("wedged", None, signal.SIGKILL, "killed"),
        ("time_limit", None, signal.SIGTERM, "time_limit"),
    ],
)
def test_unclean_exits_are_events_with_their_facts(label, code, signum, kind):
    event = _death(label, code, signum)
    assert event is not None
    assert (event.kind, event.exit_code, event.signal) == (kind, code, signum)
    assert (event.job_id, event.task_name, event.rss_bytes) == (7, "t", 1 << 20)


@pytest.mark.parametrize(
    ("label", "code"), [("exit", 0), ("recycled", 75), ("retired", 0)]
)
def test_clean_exits_are_no_event(label, code):
    assert _death(label, code) is None


def test_pending_events_are_bounded_oldest_dropped():
    pending: list[events.Event] = []
    for i in range(events.MAX_PENDING + 5):
        pending = events.keep(pending, [events.Event(kind="crash", pid=i)])
    assert len(pending) == events.MAX_PENDING
    assert pending[0].pid == 5 and pending[-1].pid == events.MAX_PENDING + 4
