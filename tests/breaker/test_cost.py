"""What the breaker costs in Redis calls, and that its keys fit Redis Cluster."""

from __future__ import annotations

import asyncio

from redis.crc import key_slot

from gateway.breaker import CircuitBreakerPolicy
from gateway.config import parse_config
from gateway.store import embedded_store, hash_tag
from tests.breaker.conftest import ORDERS, FakeUpstream, Replica, breaker_config


async def counted_replica(**breaker):
    config = breaker_config(**breaker)
    store = embedded_store()
    round_trips = []
    execute = store.execute

    async def counting(staged):
        round_trips.append(len(staged))
        await execute(staged)

    store.execute = counting  # type: ignore[method-assign]
    return Replica(config, store, CircuitBreakerPolicy.from_config(config, store),
                   FakeUpstream()), round_trips


async def test_closed_and_open_cost_at_most_one_staged_command():
    gw, trips = await counted_replica()
    await gw.request(record=False)
    assert trips == [1]  # the read, on the request's one pipeline
    gw.upstream.set(ORDERS, 500)
    for _ in range(3):
        await gw.request(flush=False)
    trips.clear()
    await gw.policy.flush()
    assert trips == [1]  # three requests' outcomes: one pipeline, one script call
    trips.clear()
    response, _ = await gw.request(record=False)
    assert response.status == 503 and trips == [1]  # learns it is open
    trips.clear()
    for _ in range(5):
        response, _ = await gw.request(record=False)
        assert response.status == 503
        assert response.header(b"retry-after") == b"1"
    assert trips == []  # and then answers from memory until a probe may be due
    await gw.store.close()


async def test_a_due_probe_costs_one_more_round_trip():
    gw, trips = await counted_replica(timeout=0.1)
    gw.upstream.set(ORDERS, 500)
    await gw.requests(3)
    await asyncio.sleep(0.15)
    trips.clear()
    await gw.request(record=False)
    assert trips == [1, 1]  # the read, then the lease
    await gw.store.close()


def test_every_key_of_a_service_is_in_one_cluster_slot():
    config = parse_config({
        "services": {"we{ird}": {"targets": ["http://a.test:1", "http://b.test:2"]}},
        "routes": {"/x": "we{ird}"},
    })
    policy = CircuitBreakerPolicy.from_config(config, embedded_store())
    keys = [k for target in policy.shared.keys["we{ird}"] for k in target]
    assert len({key_slot(k.encode()) for k in keys}) == 1
    assert all(f"{{{hash_tag('we{ird}')}}}" in k for k in keys)
