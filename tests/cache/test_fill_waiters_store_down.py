"""Requests waiting on another's cache fill and a store that goes down (#12).

A waiter sleeps until the holder's fill ends (pub/sub) or its lease runs out. Once the store is
known down nothing will ever wake it (the holder cannot store nor release), so it must stop
waiting then and fetch from the origin itself, as every request does while the store is down
(X-Cache: BYPASS); and it must come to know that within `redis.timeout`, even on a replica that
has no other traffic to notice the outage.
"""

from __future__ import annotations

import asyncio

import pytest

from gateway.cache.coalesce import DOWN, FillWaiters
from gateway.store import Store, embedded_store, redis_store
from tests.cache.conftest import Origin, Reply, cache_config, make_ctx, send
from tests.cache.test_coalesce import started_replicas
from tests.support.processes import RedisServer

TIMEOUT = 0.3  # redis.timeout of the test's stores
MARGIN = 0.5  # scheduling on a busy machine; far below the 5 s lease either way


async def _until(condition, limit: float = 3.0) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not condition():
        assert loop.time() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


@pytest.mark.redis
async def test_a_waiter_fetches_itself_within_redis_timeout_when_redis_hangs(redis_server: RedisServer) -> None:
    config = cache_config(cache={"lock_timeout": 5.0})  # the default lease
    stores = [redis_store(redis_server.url, timeout=TIMEOUT) for _ in range(2)]
    async with started_replicas(stores, config) as replicas:
        (holder, holder_store), (policy, store) = replicas
        batch = holder_store.batch()
        holder.stage(make_ctx(config), batch)
        await batch.execute()  # replica 0 holds the fill (for the whole 5 s lease)
        origin = Origin(Reply(headers=[(b"cache-control", b"max-age=60")], body=b"fetched"))
        waiter = asyncio.create_task(send(policy, store, make_ctx(config), origin))
        await _until(lambda: policy.counters.coalesced_waits == 1)  # replica 1 waits on it
        await asyncio.sleep(0.2)
        assert not waiter.done()
        loop = asyncio.get_running_loop()
        redis_server.pause()
        try:
            started = loop.time()
            result = await asyncio.wait_for(waiter, 10)
            elapsed = loop.time() - started
        finally:
            redis_server.resume()
        assert result.status == 200 and result.body == b"fetched"
        assert result.x_cache == "BYPASS"  # what any request does while the store is down
        assert origin.calls == 1
        assert elapsed < TIMEOUT + MARGIN, f"the waiter answered after {elapsed:.2f} s"
        assert not store.available  # this replica found out by itself


async def _waiters(store: Store) -> FillWaiters:
    waiters = FillWaiters(store, "test:fills")
    await waiters.start()
    await _until(lambda: waiters.subscribed)
    return waiters


async def test_every_waiter_wakes_when_the_store_goes_down() -> None:
    store = embedded_store()
    waiters = await _waiters(store)
    try:
        loop = asyncio.get_running_loop()
        waiting = [asyncio.create_task(waiters.wait(f"h{i}|s", loop.time(), 5.0)) for i in range(5)]
        await asyncio.sleep(0.05)
        assert not any(w.done() for w in waiting)
        started = loop.time()
        store.mark_down(RuntimeError("gone"))
        outcomes = await asyncio.wait_for(asyncio.gather(*waiting), 2)
        assert outcomes == [DOWN] * 5
        assert loop.time() - started < 0.1
    finally:
        await waiters.close()
        await store.close()


async def test_a_waiter_does_not_wait_once_the_store_is_known_down() -> None:
    # Its lookup answered, then the store went down before it began to wait: the wake-up that
    # went to the others came too early for it.
    store = embedded_store()
    waiters = await _waiters(store)
    try:
        store.available = False
        loop = asyncio.get_running_loop()
        outcome = await asyncio.wait_for(waiters.wait("h|s", loop.time(), 5.0), 1)
        assert outcome == DOWN
    finally:
        store.available = True
        await waiters.close()
        await store.close()
