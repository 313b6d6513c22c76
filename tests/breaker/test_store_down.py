"""Redis unavailable: each replica falls back to its own breaker and re-syncs when it is back."""

from __future__ import annotations

import asyncio

import pytest

from gateway.breaker import CircuitBreakerPolicy
from gateway.store import StoreUnavailable, embedded_store, redis_store
from tests.breaker.conftest import ORDERS, FakeUpstream, Replica, breaker_config


@pytest.fixture
async def pair():
    """Two replicas on one embedded store whose availability the test switches by hand."""
    store = embedded_store()
    config = breaker_config(timeout=0.3)
    replicas = [Replica(config, store, CircuitBreakerPolicy.from_config(config, store),
                        FakeUpstream()) for _ in range(2)]
    yield replicas
    for r in replicas:
        await r.policy.close()
    await store.close()


async def test_an_open_breaker_stays_open_through_an_outage(pair):
    a, _ = pair
    a.upstream.set(ORDERS, 500)
    await a.requests(3)
    assert (await a.request())[0].status == 503  # a saw the shared state: open
    a.store.available = False
    response, ctx = await a.request()
    assert response.status == 503 and ctx.breaker_state == "open"
    assert a.upstream.count() == 3
    await asyncio.sleep(0.35)
    a.upstream.set(ORDERS, "ok")
    assert (await a.request())[1].breaker_state == "half-open"  # a local probe
    assert (await a.request())[1].breaker_state == "closed"


async def test_failures_during_an_outage_open_it_locally_and_are_pushed_when_back(pair):
    a, b = pair
    a.store.available = False
    a.upstream.set(ORDERS, "timeout")
    await a.requests(3)
    assert (await a.request())[0].status == 503
    assert a.upstream.count() == 3
    a.store.available = True
    await a.policy.resync()  # what the store's "back" notification runs
    assert not a.policy.local.has("orders")
    response, _ = await b.request()  # b never saw a failure itself
    assert response.status == 503 and b.upstream.count() == 0
    metrics = await b.policy.metrics()
    last = metrics["services"]["orders"]["targets"][ORDERS]["last_transition"]
    assert last["to"] == "open" and "store was down" in last["reason"]


async def test_outcomes_that_cannot_be_stored_count_locally(pair):
    a, _ = pair
    a.upstream.set(ORDERS, 500)
    for _ in range(3):
        await a.request(flush=False)  # admitted through the shared state
    a.store.available = False  # the flush fails: the local breaker counts them
    await a.policy.flush()
    response, _ = await a.request()
    assert response.status == 503


async def test_a_second_outage_starts_from_the_latest_shared_state(pair):
    a, b = pair
    a.store.mark_down(StoreUnavailable("first outage"))  # notifies the policies
    a.store._probe_task.cancel()
    await a.request()  # served by the local breaker: closed
    a.store.available = True
    await a.policy.resync()
    b.upstream.set(ORDERS, 500)
    await b.requests(3)  # opened through b while the store is up
    await a.request()  # a reads the shared state: open
    a.store.mark_down(StoreUnavailable("second outage"))
    a.store._probe_task.cancel()
    response, _ = await a.request()
    assert response.status == 503 and a.upstream.count() == 1  # only the first outage's


@pytest.mark.redis
async def test_redis_killed_and_restarted(redis_server, caplog):
    config = breaker_config(timeout=30)
    stores = [redis_store(redis_server.url, timeout=0.2, probe_interval=0.1) for _ in range(2)]
    a, b = (Replica(config, s, CircuitBreakerPolicy.from_config(config, s), FakeUpstream())
            for s in stores)
    try:
        assert (await a.request())[0].status == 200
        redis_server.kill()
        a.upstream.set(ORDERS, "connect")
        statuses = await a.requests(4)
        assert statuses == [502, 502, 502, 503]  # never a 500, opened on local evidence
        assert (await a.policy.metrics())["source"] == "local"
        redis_server.start()  # an empty Redis
        for _ in range(100):
            if a.store.available and not a.policy.local.has("orders"):
                break
            await asyncio.sleep(0.05)
        assert not a.policy.local.has("orders"), "the store probe did not trigger the resync"
        response, _ = await b.request()
        assert response.status == 503 and b.upstream.count() == 0
        assert (await b.policy.metrics())["source"] == "redis"
    finally:
        for r in (a, b):
            await r.policy.close()
            await r.store.close()
