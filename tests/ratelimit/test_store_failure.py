"""Redis killed or hung mid-run: each on_store_failure mode does what it says, never a 500."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from gateway.replicas import ReplicaRegistry
from gateway.store import Store, redis_store
from tests.ratelimit.conftest import header
from tests.ratelimit.test_policy import chain, config, send
from tests.support.processes import RedisServer

pytestmark = pytest.mark.redis
ALICE = [(b"x-api-key", b"demo-key-alice")]


async def wait_until(predicate: Any) -> None:
    for _ in range(100):  # 5 s at most
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise TimeoutError("condition not reached within 5 s")


async def statuses(policies: list[Any], store: Store, cfg: Any, n: int) -> list[int]:
    return [(await send(policies, store, cfg, headers=ALICE))[1].status for _ in range(n)]


@pytest.mark.parametrize("mode", ["open", "local", "closed"])
async def test_redis_killed_mid_run_then_back(redis_server: RedisServer, mode: str) -> None:
    store = redis_store(redis_server.url, timeout=0.3, probe_interval=0.1)
    cfg = config(
        rate_limits={"default": 6, "anonymous": 3, "premium": 20},
        rate_limit={"on_store_failure": mode},
    )
    # Three replicas announced themselves: the local fallback enforces 6 // 3 = 2 each.
    registries = [ReplicaRegistry(store, cfg, f"replica-{i}") for i in range(3)]
    for registry in registries:
        await registry.heartbeat()
    assert await registries[0].heartbeat() == 3
    policies = chain(cfg, store, replicas=registries[0])
    limiter = policies[1]
    try:
        assert await statuses(policies, store, cfg, 2) == [200, 200]
        redis_server.kill()

        seen = await statuses(policies, store, cfg, 5)
        assert store.available is False
        if mode == "open":
            assert seen == [200] * 5
            assert limiter.store_mode == "fail_open"
        elif mode == "local":
            assert seen == [200, 200, 429, 429, 429]
            ctx, response = await send(policies, store, cfg, headers=ALICE)
            assert header(ctx, response, b"ratelimit-policy") == '"default";q=2;w=60'
            assert limiter.store_mode == "local_fallback"
        else:
            assert seen == [503] * 5
            ctx, response = await send(policies, store, cfg, headers=ALICE)
            assert response.header(b"content-type") == b"application/problem+json"
            assert int(header(ctx, response, b"retry-after") or 0) >= 1
            assert json.loads(response.body)["status"] == 503
            assert limiter.store_mode == "fail_closed"
        assert registries[0].live_count == 3  # remembered while Redis is gone
        metrics = await limiter.metrics()
        assert metrics["cluster_wide"] is False and metrics["store_mode"] == limiter.store_mode

        redis_server.start()  # an empty Redis on the same port
        await wait_until(lambda: store.available)
        ctx, response = await send(policies, store, cfg, headers=ALICE)
        assert response.status == 200
        assert header(ctx, response, b"ratelimit") is not None
        assert header(ctx, response, b"x-ratelimit-remaining") == "5"  # shared counters again
        assert limiter.store_mode == "shared"
        await limiter.usage.flush()
        events = (await limiter.metrics())["events"]
        expected = {
            "open": "open_admitted",
            "local": "local_admitted",
            "closed": "closed_rejected",
        }[mode]
        assert events.get(expected, 0) >= 1
    finally:
        await store.close()


async def test_hung_redis_costs_at_most_the_store_timeout(redis_server: RedisServer) -> None:
    store = redis_store(redis_server.url, timeout=0.3, probe_interval=0.1)
    cfg = config()
    policies = chain(cfg, store)
    try:
        assert await statuses(policies, store, cfg, 1) == [200]
        redis_server.pause()
        started = time.monotonic()
        assert await statuses(policies, store, cfg, 3) == [200, 200, 200]  # local fallback
        # One store timeout for the first request, the next ones skip the store at once.
        assert time.monotonic() - started < 2.0
        redis_server.resume()
        await wait_until(lambda: store.available)
    finally:
        redis_server.resume()
        await store.close()
