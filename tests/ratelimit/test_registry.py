"""ReplicaRegistry: heartbeats in the shared store, live count, last count kept when Redis is down."""

from __future__ import annotations

import asyncio
import os

from gateway.replicas import ReplicaRegistry
from gateway.store import Store
from tests.ratelimit.conftest import gateway_config


async def test_replicas_count_each_other_and_leave_on_close(store: Store) -> None:
    cfg = gateway_config(rate_limit={"heartbeat_interval": 0.2})
    a, b, c = (ReplicaRegistry(store, cfg, name) for name in "abc")
    for registry in (a, b, c):
        await registry.start()
    try:
        assert await a.heartbeat() == 3
        listed = await a.replicas()
        assert sorted(r["id"] for r in listed) == ["a", "b", "c"]
        assert all(r["pid"] == os.getpid() and r["host"] and r["last_seen"] > 0 for r in listed)
        await c.close()
        assert await a.heartbeat() == 2
    finally:
        for registry in (a, b):
            await registry.close()


async def test_a_silent_replica_drops_out_after_its_ttl(store: Store) -> None:
    cfg = gateway_config(rate_limit={"heartbeat_interval": 0.1})
    a, b = ReplicaRegistry(store, cfg, "a"), ReplicaRegistry(store, cfg, "b")
    await a.heartbeat()
    assert await b.heartbeat() == 2
    await asyncio.sleep(0.45)  # a missed three heartbeats (it crashed: no close)
    assert await b.heartbeat() == 1
    assert [r["id"] for r in await b.replicas()] == ["b"]


async def test_last_count_is_kept_while_the_store_is_down(store: Store) -> None:
    cfg = gateway_config()
    a, b = ReplicaRegistry(store, cfg, "a"), ReplicaRegistry(store, cfg, "b")
    await a.heartbeat()
    assert await b.heartbeat() == 2
    store.available = False  # what the store does after a failure, until its probe succeeds
    assert await b.heartbeat() == 2
    assert b.live_count == 2
    listed = await b.replicas()
    assert listed[0]["id"] == "b" and listed[0]["stale"] is True
    store.available = True
