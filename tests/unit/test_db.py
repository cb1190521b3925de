"""The bounds of the supervisor's database calls follow the heartbeat
interval, within limits that keep the loop responsive."""

from __future__ import annotations

import pytest

from procrastinate_prefork.supervisor.db import Timeouts


@pytest.mark.parametrize(
    ("heartbeat", "statement", "lock", "call"),
    [
        (5.0, 5.0, 1.0, 6.0),  # the defaults
        (1.0, 1.0, 0.5, 2.0),
        (0.2, 1.0, 0.5, 2.0),  # never below a second
        (600.0, 10.0, 1.0, 11.0),  # never a frozen loop for minutes
    ],
)
def test_bounds_follow_the_heartbeat_interval(heartbeat, statement, lock, call):
    timeouts = Timeouts.for_heartbeat(heartbeat)
    assert (timeouts.statement, timeouts.lock, timeouts.call) == (statement, lock, call)
    assert (
        timeouts.call > timeouts.statement >= timeouts.lock
    )  # the server speaks first


def test_tcp_parameters_are_libpq_ones():
    params = Timeouts.for_heartbeat(5.0).connection_params()
    assert params["keepalives"] == 1 and params["keepalives_idle"] == 5
    assert params["tcp_user_timeout"] == 6000
    assert "options" not in params  # refused by PgBouncer
