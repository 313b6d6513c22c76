"""Outcomes batched across requests decide exactly as if each were recorded on its own."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from gateway.breaker.state import OutcomeRun, verdict
from tests.breaker.conftest import ORDERS

FIVE_XX = frozenset(range(500, 600))


def sequential_opens(count: int, outcomes: list[bool], threshold: int) -> tuple[bool, int]:
    """Reference: count one outcome at a time; (opened, count afterwards)."""
    for success in outcomes:
        count = 0 if success else count + 1
        if count >= threshold:
            return True, 0
    return False, count


@pytest.mark.parametrize("outcomes", [list(p) for n in range(1, 9)
                                      for p in itertools.product([True, False], repeat=n)])
def test_a_batched_run_decides_like_one_at_a_time(outcomes):
    run = OutcomeRun()
    for success in outcomes:
        run.add(success)
    for stored in range(4):
        longest, after = run.run_from(stored)
        opened, expected_after = sequential_opens(stored, outcomes, 4)
        assert (longest >= 4) == opened
        if not opened:
            assert after == expected_after


def test_verdicts():
    assert verdict(200, None, False, FIVE_XX) == (True, True)
    assert verdict(503, None, False, FIVE_XX) == (True, False)
    assert verdict(404, None, False, FIVE_XX) == (True, True)  # 4xx is the client's fault
    assert verdict(503, None, False, frozenset({502})) == (True, True)
    assert verdict(None, "connect", False, FIVE_XX) == (True, False)
    assert verdict(200, "reset", False, FIVE_XX) == (True, False)  # dropped mid-body
    assert verdict(None, "timeout", False, FIVE_XX) == (True, False)
    assert verdict(200, "reset", True, FIVE_XX)[0] is False  # the client left first
    assert verdict(None, None, False, FIVE_XX)[0] is False  # never reached the upstream


async def test_many_requests_recorded_in_one_flush(make_replica):
    gw = await make_replica(failure_threshold=5)
    for how in (500, 500, "ok", 500, 500, 500, 500, "ok", 500):  # longest run 4: stays closed
        gw.upstream.set(ORDERS, how)
        await gw.request(flush=False)
    await gw.policy.flush()
    assert (await gw.request(flush=False))[1].breaker_state == "closed"
    for how in (500, 500, 500, 500, 500, "ok"):  # a run of 5 inside the batch opens it
        gw.upstream.set(ORDERS, how)
        await gw.request(flush=False)
    await gw.policy.flush()
    assert (await gw.request())[0].status == 503


async def test_the_background_flush_records_without_being_asked(make_replica):
    gw = await make_replica()
    await gw.policy.start()
    gw.upstream.set(ORDERS, 500)
    for _ in range(3):
        await gw.request(flush=False)
    for _ in range(50):
        response, _ = await gw.request(flush=False)
        if response.status == 503:
            break
        await asyncio.sleep(0.01)
    assert response.status == 503
