"""The rule by which a replica's local breaker catches up with the last shared state it read.

Per target the more severe or the more recent knowledge wins: open beats closed, of two opens
the one ending later wins, a closed state seen after the other side's open ran out wins, and a
closed target keeps the consecutive failure count of the more recent side.
"""

from __future__ import annotations

import pytest

from gateway.breaker.local import LocalBreaker
from gateway.breaker.state import (
    BreakerRules,
    BreakerState,
    OutcomeRun,
    ServiceView,
    TargetView,
)
from tests.breaker.conftest import ORDERS, breaker_config

CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def local(clock: Clock) -> LocalBreaker:
    config = breaker_config(timeout=10)  # failure_threshold 3, open for 10 s
    rules = {"orders": BreakerRules.from_settings(config.breaker_for("orders"))}
    return LocalBreaker({"orders": [ORDERS]}, rules, clock)


def shared(state: BreakerState, retry_ms: int = 0, failures: int = 0) -> ServiceView:
    return ServiceView((TargetView(state, retry_ms, failures),))


def seen(local: LocalBreaker) -> TargetView:
    return local.view("orders").targets[0]


def open_locally(local: LocalBreaker) -> None:
    run = OutcomeRun()
    for _ in range(3):
        run.add(False)
    assert local.record("orders", 0, run)


def test_a_first_merge_starts_from_the_shared_view(local, clock):
    local.merge("orders", shared(OPEN, 4000), clock.now)
    assert seen(local) == TargetView(OPEN, 4000, 0)


def test_a_local_open_beats_an_older_closed_view(local, clock):
    local.merge("orders", shared(CLOSED), clock.now)
    clock.now += 1
    open_locally(local)  # open until 111
    clock.now += 1
    local.merge("orders", shared(CLOSED), clock.now - 0.5)  # read while it was open here
    assert seen(local).state is OPEN


def test_a_closed_view_read_after_the_local_open_ran_out_wins(local, clock):
    open_locally(local)  # open until 110
    clock.now = 115
    local.merge("orders", shared(CLOSED, failures=1), 112)
    assert seen(local) == TargetView(CLOSED, 0, 1)
    assert local.opens() == []


def test_of_two_opens_the_later_end_wins(local, clock):
    open_locally(local)  # until 110
    local.merge("orders", shared(OPEN, 20_000), clock.now)  # until 120
    assert seen(local) == TargetView(OPEN, 20_000, 0)
    local.merge("orders", shared(OPEN, 1_000), clock.now + 0.1)  # until 101.1: ours is later
    assert seen(local).retry_after_ms == 20_000


def test_a_closed_target_keeps_the_more_recent_failure_count(local, clock):
    run = OutcomeRun()
    run.add(False)
    run.add(False)
    local.record("orders", 0, run)  # 2 failures at 100
    local.merge("orders", shared(CLOSED, failures=0), 99)  # read before them: kept
    assert seen(local).failures == 2
    local.merge("orders", shared(CLOSED, failures=0), 101)  # read after them: the cluster's
    assert seen(local).failures == 0


def test_an_open_view_beats_a_closed_local_state_unless_it_closed_later(local, clock):
    local.merge("orders", shared(CLOSED), 90)
    local.merge("orders", shared(OPEN, 5000), 95)  # open until 100: we knew nothing later
    assert seen(local).state is HALF_OPEN  # its open time is over: due for a probe


def test_a_local_probe_in_flight_survives_a_half_open_view(local, clock):
    local.merge("orders", shared(HALF_OPEN), 99)
    admission, _ = local.acquire("orders")
    assert admission.kind == "probe"
    local.merge("orders", shared(HALF_OPEN), 99.5)
    assert local.acquire("orders")[0].kind == "rejected"  # still one probe at a time
