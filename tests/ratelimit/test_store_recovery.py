"""Redis back after an outage or a restart: shared state resumes at once, and exactly.

Three gateway processes and a real redis-server. A Redis that restarts leaves every pooled
connection dead; taken unchecked, each one used to fail one batch, mark the store down and cost
a probe interval of local fallback, so the first burst after a restart was inexact (18 or 22 of
20). Now a connection Redis closed is dropped when taken, the store's idle connections go when
it goes down, and the first probe comes at once: a burst one second after the restart admits
exactly the limit, across replicas. Around an outage no request waits longer than
`redis.timeout`, whatever `on_store_failure` says.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.ratelimit.test_policy import chain, config, send
from tests.ratelimit.test_store_failure import ALICE
from tests.support.processes import GatewayProcess, MockService, RedisServer, services_config

pytestmark = [pytest.mark.redis]

LIMIT = 30
KEY = "demo-key-recovery"


def _config(redis: RedisServer, users: MockService) -> dict[str, Any]:
    return services_config(
        {"users": users},
        redis={"url": redis.url, "timeout": 2, "connect_timeout": 2, "probe_interval": 1.0},
        rate_limits={"default": {"windows": [{"limit": LIMIT, "window": 3600}]}, "anonymous": 1000},
        # Nothing in the background touches Redis between the restart and the burst: the burst's
        # own requests are the first to meet the dead connections.
        rate_limit={"heartbeat_interval": 30, "usage_flush_interval": 30},
        auth={"consumers": [{"id": "recovery", "tier": "default",
                             "key_sha256": hashlib.sha256(KEY.encode()).hexdigest()}]},
        cache={"enabled": False},
        circuit_breaker={"enabled": False},
    )


@pytest.fixture
def replicas() -> Iterator[tuple[RedisServer, list[GatewayProcess]]]:
    with RedisServer() as redis, MockService("users") as users:
        gateways: list[GatewayProcess] = []
        try:
            for _ in range(3):
                gateways.append(GatewayProcess(_config(redis, users)))
            yield redis, gateways
        finally:
            for g in gateways:
                g.stop()


def burst(gateways: list[GatewayProcess], total: int, headers: dict[str, str]) -> list[int]:
    async def run() -> list[int]:
        async with httpx.AsyncClient(timeout=15, limits=httpx.Limits(max_connections=60)) as client:
            replies = await asyncio.gather(*(
                client.get(gateways[i % len(gateways)].url + "/api/users", headers=headers)
                for i in range(total)))
            return [r.status_code for r in replies]

    return asyncio.run(run())


@pytest.mark.slow
def test_a_burst_one_second_after_a_redis_restart_admits_exactly_the_limit(
        replicas: tuple[RedisServer, list[GatewayProcess]]) -> None:
    redis, gateways = replicas
    # Many concurrent requests: each replica's pools hold several idle connections now.
    assert set(burst(gateways, 60, {})) == {200}
    redis.kill()
    redis.start()  # an empty Redis on the same port; every pooled connection is dead
    time.sleep(1.0)
    statuses = burst(gateways, 3 * LIMIT, {"x-api-key": KEY})
    assert statuses.count(200) == LIMIT and statuses.count(429) == 2 * LIMIT, statuses
    for g in gateways:
        doc = httpx.get(g.url + "/metrics", timeout=10).json()["rate_limits"]
        assert doc["store_mode"] == "shared"


@pytest.mark.parametrize("mode", ["open", "local", "closed"])
@pytest.mark.parametrize("outage", ["hung", "killed"])
async def test_no_request_waits_longer_than_the_store_timeout_around_an_outage(
        redis_server: RedisServer, mode: str, outage: str) -> None:
    from gateway.store import redis_store

    timeout = 0.3
    store = redis_store(redis_server.url, timeout=timeout, probe_interval=0.1)
    cfg = config(rate_limits={"default": 1000, "anonymous": 1000, "premium": 1000},
                 rate_limit={"on_store_failure": mode})
    policies = chain(cfg, store)
    took: list[float] = []

    async def timed(n: int) -> None:
        for _ in range(n):
            started = time.monotonic()
            await send(policies, store, cfg, headers=ALICE)
            took.append(time.monotonic() - started)
            await asyncio.sleep(0.02)

    try:
        await timed(3)
        if outage == "hung":
            redis_server.pause()
        else:
            redis_server.kill()
        await timed(20)
        if outage == "hung":
            redis_server.resume()
        else:
            redis_server.start()
        await timed(20)
        assert store.available
    finally:
        redis_server.resume()
        await store.close()
    assert max(took) < timeout + 0.2, sorted(took)[-3:]
