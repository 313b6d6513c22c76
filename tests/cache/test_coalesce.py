"""Coalescing concurrent misses across 'replicas' (separate stores and subscribers) on real Redis."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from gateway.cache.policy import CachePolicy
from gateway.config import GatewayConfig
from gateway.store import Store, redis_store
from tests.cache.conftest import Origin, Reply, cache_config, make_ctx, send
from tests.support.processes import RedisServer

pytestmark = pytest.mark.redis


@contextlib.asynccontextmanager
async def started_replicas(stores: list[Store], config: GatewayConfig | None = None,
                           ) -> AsyncIterator[list[tuple[CachePolicy, Store]]]:
    """One cache policy per store ('replica': own store, own fill subscriber), subscribed
    before the test's burst; closed with their stores afterwards. A 1 s fill lease unless
    `config` says otherwise."""
    config = config or cache_config(cache={"lock_timeout": 1.0})
    made = []
    for store in stores:
        policy = CachePolicy.from_config(config, store)
        await policy.start()
        made.append((policy, store))
    for policy, _ in made:  # the subscriptions are up before the burst
        for _ in range(100):
            if policy.waiters.subscribed:
                break
            await asyncio.sleep(0.02)
    try:
        yield made
    finally:
        for policy, store in made:
            await policy.close()
            await store.close()


@pytest.fixture
async def replicas(redis_server: RedisServer) -> AsyncIterator[list[tuple[CachePolicy, Store]]]:
    stores = [redis_store(redis_server.url, timeout=2.0) for _ in range(3)]
    async with started_replicas(stores) as made:
        yield made


async def test_concurrent_misses_on_three_replicas_make_one_upstream_request(replicas) -> None:  # type: ignore[no-untyped-def]
    config = cache_config()
    origin = Origin(Reply(headers=[(b"cache-control", b"max-age=60")], body=b"payload", delay=0.3))
    results = await asyncio.wait_for(asyncio.gather(*(
        send(replicas[i % 3][0], replicas[i % 3][1], make_ctx(config), origin) for i in range(100)
    )), 20)
    assert origin.calls == 1
    assert all(r.status == 200 and r.body == b"payload" for r in results)
    assert sum(r.x_cache == "MISS" for r in results) == 1
    assert sum(r.x_cache == "HIT" for r in results) == 99
    waits = sum([(await p.metrics())["coalesced_waits"] for p, _ in replicas])
    assert waits == 99


async def test_uncacheable_responses_release_the_waiters_at_once(replicas) -> None:  # type: ignore[no-untyped-def]
    config = cache_config()
    origin = Origin(Reply(headers=[(b"cache-control", b"private")], delay=0.2))
    results = await asyncio.wait_for(asyncio.gather(*(
        send(replicas[i % 3][0], replicas[i % 3][1], make_ctx(config), origin) for i in range(30)
    )), 10)
    assert all(r.status == 200 for r in results)
    # The first fetch found it uncacheable; the waiters then went upstream together, not one by one.
    assert origin.calls == 30
    later = await send(replicas[0][0], replicas[0][1], make_ctx(config), origin)
    assert later.x_cache == "MISS"  # remembered as uncacheable: straight upstream, no waiting


async def test_when_the_filler_dies_another_fetches_after_the_lease(replicas) -> None:  # type: ignore[no-untyped-def]
    config = cache_config()
    dead_policy, dead_store = replicas[0]
    ctx = make_ctx(config)
    batch = dead_store.batch()
    dead_policy.stage(ctx, batch)
    await batch.execute()  # took the fill lock, then "crashed": never fetches nor releases
    origin = Origin(Reply(headers=[(b"cache-control", b"max-age=60")], body=b"late"))
    loop = asyncio.get_running_loop()
    started = loop.time()
    results = await asyncio.wait_for(asyncio.gather(*(
        send(replicas[1 + i % 2][0], replicas[1 + i % 2][1], make_ctx(config), origin) for i in range(10)
    )), 10)
    assert all(r.body == b"late" for r in results)
    assert origin.calls == 1  # one of the waiters took over after the 1 s lease
    assert loop.time() - started >= 0.5


async def test_stale_if_error_wakes_waiters_with_the_stale_copy(replicas) -> None:  # type: ignore[no-untyped-def]
    config = cache_config()
    policy, store = replicas[0]
    await send(policy, store, make_ctx(config), Origin(Reply(headers=[(b"cache-control", b"max-age=1"), (b"age", b"5")])))
    # The failing fetch lasts long enough that every other request looks up while it is under
    # way, even on a loaded machine (one that looked up after it ended would fetch again).
    down = Origin(Reply(failure="connect", delay=1.0))
    results = await asyncio.wait_for(asyncio.gather(*(
        send(replicas[i % 3][0], replicas[i % 3][1], make_ctx(config), down) for i in range(12)
    )), 10)
    assert {r.x_cache for r in results} == {"STALE"}
    assert {r.body for r in results} == {b"hello"}
    assert down.calls == 1
