"""Three gateway processes sharing one redis-server: one rate limit for the whole cluster."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.processes import GatewayProcess, MockService, RedisServer, services_config

pytestmark = [pytest.mark.redis, pytest.mark.cluster, pytest.mark.slow]

PATH = "/api/users"
KEYS = {"alice": "demo-key-alice", "premium-user": "demo-key-premium"}
LIMITS = {"alice": 30, "premium-user": 45}


def cluster_config(redis: RedisServer, users: MockService, **rate_limit: Any) -> dict[str, Any]:
    return services_config(
        {"users": users},
        # Generous timeouts: a burst opens many connections at once on a busy 2-core machine, and
        # a spurious "store down" would switch to the local fallback in the middle of the count.
        redis={"url": redis.url, "timeout": 5, "connect_timeout": 5, "probe_interval": 0.2},
        rate_limits={
            "default": 30,  # sliding_window (the default algorithm)
            "anonymous": 30,
            "premium": {"windows": [{"limit": 45, "window": 60}], "algorithm": "sliding_log"},
        },
        rate_limit={"heartbeat_interval": 0.3, "usage_flush_interval": 0.2, **rate_limit},
        auth={
            "consumers": [
                {
                    "id": cid,
                    "tier": "premium" if cid == "premium-user" else "default",
                    "key_sha256": hashlib.sha256(key.encode()).hexdigest(),
                }
                for cid, key in KEYS.items()
            ]
        },
        cache={"enabled": False},
        circuit_breaker={"enabled": False},
    )


class Cluster:
    def __init__(self, redis: RedisServer, gateways: list[GatewayProcess]) -> None:
        self.redis, self.gateways = redis, gateways

    def get(self, replica: int, consumer: str) -> httpx.Response:
        return httpx.get(
            self.gateways[replica].url + PATH, headers={"x-api-key": KEYS[consumer]}, timeout=10
        )

    def metrics(self, replica: int) -> dict[str, Any]:
        return httpx.get(self.gateways[replica].admin_url + "/metrics", timeout=10).json()["rate_limits"]

    def wait_for_live(self, count: int) -> None:
        for _ in range(100):
            if all(self.metrics(i)["live_replicas"] == count for i in range(len(self.gateways))):
                return
            time.sleep(0.1)
        raise TimeoutError(f"replicas never all saw {count} live")


def start_cluster(redis: RedisServer, users: MockService, **rate_limit: Any) -> Cluster:
    config = cluster_config(redis, users, **rate_limit)
    gateways: list[GatewayProcess] = []
    try:
        for _ in range(3):
            gateways.append(GatewayProcess(config))
    except Exception:
        for g in gateways:
            g.stop()
        raise
    cluster = Cluster(redis, gateways)
    if not cluster.metrics(0):
        for g in gateways:
            g.stop()
        pytest.skip("the rate limiter is not in the gateway's chain (gateway/composition.py)")
    cluster.wait_for_live(3)
    return cluster


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with RedisServer() as redis, MockService("users") as users:
        made = start_cluster(redis, users)
        try:
            yield made
        finally:
            for g in made.gateways:
                g.stop()


@pytest.fixture
def fresh(cluster: Cluster) -> Cluster:
    cluster.redis.command("FLUSHALL")
    time.sleep(0.4)  # FLUSHALL also dropped the heartbeats: let every replica beat again
    cluster.wait_for_live(3)
    return cluster


def burst(cluster: Cluster, consumer: str, total: int) -> list[httpx.Response]:
    async def run() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=60)
        async with httpx.AsyncClient(timeout=15, limits=limits) as client:
            return await asyncio.gather(
                *(
                    client.get(
                        cluster.gateways[i % 3].url + PATH, headers={"x-api-key": KEYS[consumer]}
                    )
                    for i in range(total)
                )
            )

    return asyncio.run(run())


@pytest.mark.parametrize("consumer", ["alice", "premium-user"])  # sliding_window, sliding_log
def test_three_times_the_limit_round_robin_admits_exactly_the_limit(
    fresh: Cluster, consumer: str
) -> None:
    limit = LIMITS[consumer]
    responses = burst(fresh, consumer, 3 * limit)
    statuses = [r.status_code for r in responses]
    assert statuses.count(200) == limit
    assert statuses.count(429) == 2 * limit
    for r in responses:
        if r.status_code == 429:
            assert int(r.headers["retry-after"]) >= 1
            assert r.headers["content-type"] == "application/problem+json"


def test_every_replica_reports_the_same_remaining(fresh: Cluster) -> None:
    limit = LIMITS["alice"]
    remaining = [int(fresh.get(i % 3, "alice").headers["x-ratelimit-remaining"]) for i in range(9)]
    assert remaining == list(range(limit - 1, limit - 10, -1))
    for i in range(3):
        policy = fresh.get(i, "alice").headers["ratelimit-policy"]
        assert policy == '"default";q=30;w=60'
    time.sleep(0.6)  # usage counters are flushed every 0.2 s
    seen = [fresh.metrics(i)["consumers"]["alice"] for i in range(3)]
    assert seen[0] == seen[1] == seen[2] == {"admitted": 12, "rejected": 0}


def test_redis_killed_mid_run_local_fallback_no_5xx_then_shared_again(fresh: Cluster) -> None:
    fresh.get(0, "alice")
    fresh.redis.kill()
    try:
        statuses = [r.status_code for r in burst(fresh, "alice", 60)]
        assert all(s in (200, 429) for s in statuses), statuses
        # Each replica enforces 30 // 3 live replicas = 10 on its own.
        assert statuses.count(200) == 30
        assert {fresh.metrics(i)["store_mode"] for i in range(3)} == {"local_fallback"}
        assert fresh.get(1, "alice").headers["ratelimit-policy"] == '"default";q=10;w=60'
    finally:
        fresh.redis.start()
    for _ in range(50):
        if {fresh.metrics(i)["store_mode"] for i in range(3)} == {"shared"}:
            break
        time.sleep(0.1)
    response = fresh.get(2, "alice")
    assert response.status_code == 200
    assert response.headers["x-ratelimit-remaining"] == "29"  # an empty Redis: shared again
    fresh.wait_for_live(3)


def test_redis_killed_mid_run_open_mode_admits_everything() -> None:
    with RedisServer() as redis, MockService("users") as users:
        cluster = start_cluster(redis, users, on_store_failure="open")
        try:
            redis.kill()
            statuses = [r.status_code for r in burst(cluster, "alice", 60)]
            assert statuses == [200] * 60
            assert cluster.metrics(0)["store_mode"] == "fail_open"
        finally:
            for g in cluster.gateways:
                g.stop()
