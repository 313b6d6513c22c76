"""Three separate gateway processes on one store share rate limits, breaker states and cached
responses, and a gateway killed with SIGKILL takes none of it with it.

Every test runs twice: on a single redis-server, and on a local 3-master Redis Cluster (where a
script whose keys do not share a hash tag fails with CROSSSLOT).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from tests.cluster.conftest import RATE_LIMIT, api_key, policies_config
from tests.support.cluster import (
    Gateways,
    RedisCluster,
    Services,
    gateway_config,
    round_robin,
    wait_until,
)
from tests.support.processes import MockService, RedisServer

pytestmark = [pytest.mark.redis, pytest.mark.cluster]


@dataclass
class SharedStore:
    kind: str
    url: str


@pytest.fixture(scope="module", params=["redis", "redis-cluster"])
def store(request: pytest.FixtureRequest) -> Iterator[SharedStore]:
    if request.param == "redis":
        with RedisServer() as server:
            yield SharedStore("redis", server.url)
    else:
        with RedisCluster() as cluster:
            yield SharedStore("redis-cluster", cluster.url)


@pytest.fixture(scope="module")
def gateways(services: Services, store: SharedStore) -> Iterator[Gateways]:
    config = gateway_config(services, store.url, **policies_config())
    with Gateways(config, replicas=3) as started:
        yield started


def require(gateways: Gateways, policy: str) -> None:
    if not gateways.wired(policy):
        pytest.xfail(f"{policy} is not in the gateway's chain yet (gateway/composition.py)")


def statuses(responses: list[httpx.Response]) -> list[int]:
    return [r.status_code for r in responses]


def hits(service: MockService, path: str) -> int:
    """Requests `service` got for `path` (its health checks not counted)."""
    stats = httpx.get(service.url + "/_mock/stats", timeout=10).json()
    return int(stats["by_path"].get(path, 0))


# -- rate limits -----------------------------------------------------------------------------
def test_rate_limit_counts_requests_of_every_replica(gateways: Gateways):
    responses = round_robin(gateways.replicas, "/api/users", RATE_LIMIT + 5, api_key("exact"))
    assert statuses(responses) == [200] * RATE_LIMIT + [429] * 5
    remaining = [int(r.headers["x-ratelimit-remaining"]) for r in responses[:RATE_LIMIT]]
    assert remaining == list(range(RATE_LIMIT - 1, -1, -1))  # one counter, whoever answered
    rejected = responses[RATE_LIMIT:]
    assert {r.headers["content-type"] for r in rejected} == {"application/problem+json"}
    assert all(int(r.headers["retry-after"]) >= 1 for r in rejected)


def test_concurrent_burst_over_all_replicas_admits_exactly_the_limit(gateways: Gateways):
    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=10) as client:
            return await asyncio.gather(*(
                client.get(gateways[i % 3].url + "/api/users", headers=api_key("burst"))
                for i in range(3 * RATE_LIMIT)))

    codes = sorted(statuses(asyncio.run(burst())))
    assert codes == [200] * RATE_LIMIT + [429] * (2 * RATE_LIMIT)


def test_usage_is_reported_cluster_wide(gateways: Gateways):
    wait_until(lambda: gateways.metrics(2)["rate_limits"]["consumers"].get("exact", {})
               .get("rejected") == 5, timeout=10, what="exact's usage on replica 3's /metrics")
    assert gateways.metrics(2)["rate_limits"]["consumers"]["exact"]["admitted"] == RATE_LIMIT


# -- cache -----------------------------------------------------------------------------------
def test_a_response_cached_through_one_replica_is_a_hit_on_the_others(
        gateways: Gateways, services: Services):
    require(gateways, "cache")
    path = "/api/products/1"
    before = hits(services["products"], path)
    first = gateways.get(0, path)
    assert first.status_code == 200
    assert first.headers["x-cache"] == "MISS"
    # The fill is stored after the response went out: wait until another replica sees it.
    hit = wait_until(lambda: (r := gateways.get(1, path))
                     .headers.get("x-cache") == "HIT" and r, timeout=5, what="a HIT on replica 2")
    assert hit.json() == first.json()
    third = gateways.get(2, path)
    assert third.headers["x-cache"] == "HIT"
    assert hits(services["products"], path) - before == 1


# -- circuit breaker -------------------------------------------------------------------------
def test_a_breaker_opened_through_one_replica_is_open_on_the_others(
        gateways: Gateways, services: Services):
    require(gateways, "circuit_breaker")
    users = services["users"]
    users.set_faults(status=500)
    try:
        assert statuses(round_robin([gateways[0]], "/api/users/1", 3)) == [500, 500, 500]
        seen = hits(users, "/api/users/1")
        for replica in (1, 2):
            rejected = wait_until(
                lambda r=replica: (resp := httpx.get(gateways[r].url + "/api/users/1", timeout=10))
                .status_code == 503 and resp, timeout=5, what=f"503 on replica {replica + 1}")
            assert rejected.headers["x-circuit-state"] == "open"
            assert rejected.headers["content-type"] == "application/problem+json"
        assert hits(users, "/api/users/1") == seen  # the open breaker kept them off the backend
        health = httpx.get(gateways[2].url + "/health", timeout=10).json()
        assert health["services"]["users"]["circuit_breaker"]["state"] == "open"
    finally:
        users.clear_faults()


# -- a replica dies --------------------------------------------------------------------------
def test_killing_a_replica_loses_nothing_for_the_others(gateways: Gateways, services: Services):
    key = api_key("kill")
    before = round_robin([gateways[0]], "/api/products", 4, key)
    assert statuses(before) == [200] * 4
    cached = breaker = False
    # Cache fills and breaker outcomes are written just after the response (batched): wait
    # until they are shared, then crash the replica that made them.
    if gateways.wired("cache"):
        cached = True
        gateways.get(0, "/api/products/2")
        wait_until(lambda: gateways.cache_status(1, "/api/products/2") == "HIT", timeout=5,
                   what="the fill stored")
    if gateways.wired("circuit_breaker"):
        breaker = True
        services["orders"].set_faults(status=500)
        round_robin([gateways[0]], "/api/orders/1", 3)
        wait_until(lambda: gateways.breaker_state(1, "orders") == "open", timeout=5,
                   what="the breaker open in the store")
    try:
        gateways[0].kill()  # SIGKILL: no drain, no goodbye, nothing flushed
        survivors = gateways.replicas[1:]
        after = round_robin(survivors, "/api/products", RATE_LIMIT, key)
        # The 4 requests counted through the dead replica still count: 6 more, then 429.
        assert statuses(after) == [200] * (RATE_LIMIT - 4) + [429] * 4
        if cached:
            seen = hits(services["products"], "/api/products/2")
            for index in (1, 2):
                assert gateways.get(index, "/api/products/2").headers["x-cache"] == "HIT"
            assert hits(services["products"], "/api/products/2") == seen
        if breaker:
            for g in survivors:
                assert httpx.get(g.url + "/api/orders/1", timeout=10).status_code == 503
        # Anonymous traffic keeps flowing through every survivor, no 5xx.
        assert statuses(round_robin(survivors, "/api/products", 6)) == [200] * 6
    finally:
        services["orders"].clear_faults()
        if not gateways[0].alive():
            gateways[0].start()  # back for whoever uses the module's gateways next
