"""Against a real redis-server: probe leases are exact under concurrency from many clients."""

from __future__ import annotations

import asyncio

import pytest

from gateway.breaker import CircuitBreakerPolicy
from gateway.store import redis_store
from tests.breaker.conftest import ORDERS, FakeUpstream, Replica, breaker_config

pytestmark = pytest.mark.redis


@pytest.fixture
async def replicas(redis_server):
    """Three replicas, each with its own Redis connection pool, on one redis-server."""
    config = breaker_config(timeout=0.2, half_open_timeout=10, half_open_max_calls=2)
    upstream = FakeUpstream()  # one backend behind all three
    made = []
    for _ in range(3):
        store = redis_store(redis_server.url, timeout=2.0, connect_timeout=2.0)
        made.append(Replica(config, store, CircuitBreakerPolicy.from_config(config, store), upstream))
    yield made
    for r in made:
        await r.policy.close()
        await r.store.close()


async def open_then_wait(replicas):
    replicas[0].upstream.set(ORDERS, 500)
    await replicas[0].requests(3)
    await asyncio.sleep(0.25)


async def test_concurrent_acquisitions_grant_exactly_half_open_max_calls(replicas):
    await open_then_wait(replicas)
    calls = [r.policy.shared.acquire("orders") for r in replicas for _ in range(40)]
    results = await asyncio.gather(*calls)
    granted = [a for a, _ in results if a.kind == "probe"]
    assert len(granted) == 2
    assert len({a.lease for a in granted}) == 2
    moves = [t for _, ts in results for t in ts]
    assert [(t.from_state, t.to_state) for t in moves] == [("open", "half-open")]  # made once


async def test_fifty_concurrent_requests_over_three_replicas_let_two_through(replicas):
    await open_then_wait(replicas)
    upstream = replicas[0].upstream
    before = upstream.count()
    upstream.set(ORDERS, "hold")
    tasks = [asyncio.create_task(replicas[i % 3].request()) for i in range(50)]
    for _ in range(100):
        if sum(t.done() for t in tasks) == 48:
            break
        await asyncio.sleep(0.02)
    assert upstream.count() - before == 2
    upstream.release.set()
    results = await asyncio.gather(*tasks)
    assert sorted(r.status for r, _ in results) == [200, 200] + [503] * 48
    for r in replicas:  # closed everywhere
        assert (await r.request())[1].breaker_state == "closed"
