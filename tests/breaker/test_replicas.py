"""Three gateway processes on one redis-server in front of one mock service: the breaker is
one breaker for the whole cluster."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.processes import GatewayProcess, MockService, RedisServer, services_config

pytestmark = [pytest.mark.redis, pytest.mark.cluster, pytest.mark.slow]

OPEN_SECONDS = 1.0
UPSTREAM_TIMEOUT = 2.5
SYNC = 0.2  # seconds between the boards' full reads
PATH = "/api/orders"


class Cluster:
    def __init__(self, redis: RedisServer, orders: MockService, gateways: list[GatewayProcess]):
        self.redis, self.orders, self.gateways = redis, orders, gateways

    def reset(self) -> None:
        self.redis.command("FLUSHALL")
        self.orders.clear_faults()
        self.orders.reset_stats()
        # A FLUSHALL publishes nothing: each replica's board catches up at its next full read.
        time.sleep(SYNC * 2.5)

    def backend_hits(self) -> int:
        with urllib.request.urlopen(self.orders.url + "/_mock/stats", timeout=5) as resp:
            return int(json.load(resp)["by_path"].get(PATH, 0))

    def get(self, replica: int) -> httpx.Response:
        return httpx.get(self.gateways[replica].url + PATH, timeout=10)

    def breaker(self, replica: int) -> dict[str, Any]:
        metrics = httpx.get(self.gateways[replica].url + "/metrics", timeout=10).json()
        return metrics["circuit_breakers"]["services"]["orders"]


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with RedisServer() as redis, MockService("orders") as orders:
        config = services_config(
            {"orders": orders},
            redis={"url": redis.url, "timeout": 0.5},
            circuit_breaker={"failure_threshold": 3, "timeout": OPEN_SECONDS, "sync_interval": SYNC,
                             "half_open_timeout": 10, "half_open_max_calls": 2},
            rate_limit={"enabled": False},
            cache={"enabled": False},
        )
        config["services"]["orders"]["timeout"] = UPSTREAM_TIMEOUT
        gateways: list[GatewayProcess] = []
        try:
            for _ in range(3):
                gateways.append(GatewayProcess(config))
            made = Cluster(redis, orders, gateways)
            metrics = httpx.get(gateways[0].url + "/metrics", timeout=10).json()
            if not metrics.get("circuit_breakers"):
                pytest.skip("the circuit breaker is not in the gateway's chain (gateway/composition.py)")
            yield made
        finally:
            for g in gateways:
                g.stop()


@pytest.fixture
def fresh(cluster: Cluster) -> Cluster:
    cluster.reset()
    return cluster


def open_through(cluster: Cluster, replica: int, fault: dict[str, Any]) -> list[int]:
    cluster.orders.set_faults(**fault)
    return [cluster.get(replica).status_code for _ in range(3)]


def test_failures_through_one_replica_open_it_on_the_others(fresh: Cluster):
    assert open_through(fresh, 0, {"status": 500}) == [500, 500, 500]
    time.sleep(0.1)  # outcomes are recorded after the response, batched every few ms
    hits = fresh.backend_hits()
    for replica in (1, 2):
        response = fresh.get(replica)
        assert response.status_code == 503
        assert response.headers["x-circuit-state"] == "open"
        assert int(response.headers["retry-after"]) >= 1
        assert response.headers["content-type"] == "application/problem+json"
    assert fresh.backend_hits() == hits
    breaker = fresh.breaker(2)
    assert breaker["state"] == "open"
    assert breaker["targets"][fresh.orders.url]["last_transition"]["to"] == "open"


def test_half_open_lets_exactly_max_calls_through_then_recovery_closes_it_everywhere(fresh: Cluster):
    open_through(fresh, 0, {"status": 500})
    time.sleep(OPEN_SECONDS + 0.2)
    fresh.orders.set_faults(delay=1.5)  # healthy again, but slow: the probes stay in flight
    hits = fresh.backend_hits()

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=15) as client:
            return await asyncio.gather(*(
                client.get(fresh.gateways[i % 3].url + PATH) for i in range(50)))

    responses = asyncio.run(burst())
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200, 200] + [503] * 48
    assert fresh.backend_hits() - hits == 2
    rejected = [r for r in responses if r.status_code == 503]
    assert {r.headers["x-circuit-state"] for r in rejected} <= {"half-open", "open"}

    fresh.orders.clear_faults()
    time.sleep(0.1)
    for replica in range(3):
        assert fresh.get(replica).status_code == 200
        assert fresh.breaker(replica)["state"] == "closed"


def test_a_hanging_upstream_trips_it_through_timeouts(fresh: Cluster):
    fresh.orders.set_faults(delay=30)

    async def hanging() -> list[int]:
        async with httpx.AsyncClient(timeout=15) as client:
            responses = await asyncio.gather(*(
                client.get(fresh.gateways[1].url + PATH) for _ in range(3)))
        return [r.status_code for r in responses]

    started = time.monotonic()
    assert asyncio.run(hanging()) == [504, 504, 504]
    assert time.monotonic() - started < UPSTREAM_TIMEOUT + 3  # bounded by the service timeout
    time.sleep(0.1)
    response = fresh.get(2)
    assert response.status_code == 503 and response.headers["x-circuit-state"] == "open"
    reason = fresh.breaker(0)["targets"][fresh.orders.url]["last_transition"]["reason"]
    assert reason == "3 consecutive failures"
