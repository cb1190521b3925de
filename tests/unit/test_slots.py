"""The fork/retire plan converges to the target from any state."""

from __future__ import annotations

import dataclasses
import itertools

import pytest

from procrastinate_prefork.supervisor.slots import Member, Plan, plan


def ready(pid: int, generation: int, slot: int | None = None, **kw) -> Member:
    return Member(
        pid=pid,
        slot=pid if slot is None else slot,
        generation=generation,
        ready=True,
        **kw,
    )


def booting(pid: int, generation: int) -> Member:
    return Member(pid=pid, slot=pid, generation=generation)


def test_steady_fleet_needs_nothing():
    assert plan([ready(1, 0), ready(2, 0)], target=2, generation=0, pending=0).empty


def test_missing_children_are_forked_unless_refill_is_off():
    assert plan([ready(1, 0)], target=3, generation=0, pending=1) == Plan(fork=1)
    assert plan([ready(1, 0)], target=3, generation=0, pending=0, refill=False).empty


def test_rolling_restart_keeps_old_children_until_new_ones_are_ready():
    old = [ready(1, 0), ready(2, 0)]
    assert plan(old, target=2, generation=1, pending=0) == Plan(fork=2)
    assert plan(old, target=2, generation=1, pending=2) == Plan()
    one_new = [*old, ready(3, 1), booting(4, 1)]
    assert plan(one_new, target=2, generation=1, pending=0) == Plan(retire=(1,))
    both = [ready(1, 0, retiring=True), ready(2, 0), ready(3, 1), ready(4, 1)]
    assert plan(both, target=2, generation=1, pending=0) == Plan(retire=(2,))


def test_sighup_during_a_handover_restarts_it():
    """Generation 1 was still booting when generation 2 was asked for: its
    children retire at once and only two new ones are forked."""
    children = [ready(1, 0), ready(2, 0), booting(3, 1), booting(4, 1)]
    result = plan(children, target=2, generation=2, pending=0)
    assert result == Plan(fork=2, retire=(3, 4))


def test_ready_children_of_an_intermediate_generation_serve_until_replaced():
    children = [ready(1, 0), ready(2, 0), ready(3, 1), ready(4, 1)]
    result = plan(children, target=2, generation=2, pending=2)
    assert set(result.retire) == {1, 2}  # the oldest go first, two keep serving
    assert result.fork == 0


def test_scale_down_during_a_handover():
    """kill -HUP; kill -TTOU on three children: two are kept in the end."""
    children = [ready(1, 0), ready(2, 0), ready(3, 0)]
    result = plan(children, target=2, generation=1, pending=3)
    assert result == Plan(cancel=1, retire=(1,))
    new = [*children, ready(4, 1), ready(5, 1)]
    assert set(plan(new, target=2, generation=1, pending=0).retire) == {1, 2, 3}


def test_excess_current_children_retire_booting_then_idle_highest_slot_first():
    children = [
        ready(1, 0, slot=0, busy=True),
        ready(2, 0, slot=1),
        ready(3, 0, slot=2),
        booting(4, 0),
    ]
    assert plan(children, target=2, generation=0, pending=0).retire == (4, 3)


def test_busy_old_children_are_kept_rather_than_idle_ones():
    children = [ready(1, 0, busy=True), ready(2, 0), ready(3, 1), booting(4, 1)]
    assert plan(children, target=2, generation=1, pending=0).retire == (2,)


@dataclasses.dataclass
class _Sim:
    """The supervisor's bookkeeping, with children that get ready after
    ``boot`` turns and retiring children that exit one turn later."""

    target: int
    boot: int = 3
    generation: int = 0
    pending: int = 0
    children: dict[int, list] = dataclasses.field(default_factory=dict)
    pids: itertools.count = dataclasses.field(
        default_factory=lambda: itertools.count(1)
    )

    def turn(self) -> None:
        for pid, (_, age, retiring) in list(self.children.items()):
            if retiring:
                del self.children[pid]
            else:
                self.children[pid][1] = age + 1
        for _ in range(self.pending):  # every due fork is made
            self.children[next(self.pids)] = [self.generation, 0, False]
        self.pending = 0
        members = [
            Member(pid=pid, slot=pid, generation=g, retiring=r, ready=age >= self.boot)
            for pid, (g, age, r) in self.children.items()
        ]
        result = plan(
            members,
            target=self.target,
            generation=self.generation,
            pending=self.pending,
        )
        self.pending += result.fork - result.cancel
        for pid in result.retire:
            self.children[pid][2] = True

    def live(self) -> int:
        return len(self.children)


@pytest.mark.parametrize(
    "events",
    [
        ["hup"] * 20,
        ["hup", "hup"],
        ["hup", "ttou"],
        ["hup", "ttin", "hup", "ttou", "ttou"],
        ["ttin", "hup", "hup", "ttou"],
    ],
)
@pytest.mark.parametrize("gap", [0, 1, 2, 5])
def test_any_burst_converges_to_the_target(events, gap):
    sim = _Sim(target=3)
    for _ in range(10):
        sim.turn()
    for event in events:
        if event == "hup":
            sim.generation += 1
        elif event == "ttin":
            sim.target += 1
        elif sim.target > 1:
            sim.target -= 1
        for _ in range(gap):
            sim.turn()
        assert sim.live() <= 3 * max(sim.target, 3) + 2  # bounded on the way
    for _ in range(30):
        sim.turn()
    assert sim.live() == sim.target
    assert {g for g, _, _ in sim.children.values()} == {sim.generation}


def test_free_slot_is_the_lowest_unused():
    from procrastinate_prefork.supervisor.slots import free_slot

    assert free_slot(set(), limit=4) == 0
    assert free_slot({0, 1, 3}, limit=4) == 2
    with pytest.raises(StopIteration):
        free_slot({0, 1}, limit=2)
