"""The cluster-wide JSON view: replicas' snapshots through the store, and dead replicas leaving."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from typing import Any

import httpx
import pytest

from gateway.config import parse_config
from gateway.metrics.cluster import ClusterStats
from gateway.stats import RequestStats
from gateway.store import embedded_store
from tests.support.processes import GatewayProcess, MockService, RedisServer, services_config


def config(interval: float = 0.05) -> Any:
    return parse_config({"services": {"s": {"url": "http://127.0.0.1:9"}}, "routes": {"/s": "s"},
                         "rate_limit": {"heartbeat_interval": interval}})


def stats_with(total: int) -> RequestStats:
    stats = RequestStats()
    stats.total = stats.successful = total
    stats.by_status = {"2xx": total}
    return stats


def test_snapshots_survive_the_round_trip() -> None:
    stats = RequestStats()
    stats.total, stats.rate_limited = 7, 2
    stats.requests[("/api/users", "users", "GET", "2xx", "200")] = 5
    stats.route_services["/api/users"] = "users"
    stats.rate_limit[("premium", "/api/users", "rejected")] = 2
    stats.latency["/api/users"] = stats.store_latency.__class__()
    stats.latency["/api/users"].observe(0.004)
    stats.store_errors["down"] = 3
    again = RequestStats.from_export(json.loads(json.dumps(stats.export())))
    assert again.export() == stats.export()
    again.merge(stats)
    assert again.total == 14 and again.requests[("/api/users", "users", "GET", "2xx", "200")] == 10
    assert again.route_services == {"/api/users": "users"}
    assert again.latency["/api/users"].count == 2


def test_a_malformed_snapshot_reads_as_empty_parts() -> None:
    stats = RequestStats.from_export({"total": 3, "requests": [["x"]], "latency": {"/a": {"counts": [1]}}})
    assert stats.total == 3 and stats.requests == {} and stats.latency["/a"].count == 0


async def test_replicas_see_each_other_and_a_silent_one_drops_out() -> None:
    store = embedded_store()
    a = ClusterStats(store, config(), "a", stats_with(3))
    b = ClusterStats(store, config(), "b", stats_with(5))
    assert await a.publish() and await b.publish()
    view = await a.read()
    assert view.complete
    assert {r.replica_id: r.stats.total for r in view.replicas} == {"a": 3, "b": 5}
    await asyncio.sleep(0.2)  # b misses three intervals (ttl 150 ms)
    await a.publish()
    assert [r.replica_id for r in (await a.read()).replicas] == ["a"]
    await b.publish()  # back again
    assert len((await a.read()).replicas) == 2
    await b.withdraw()  # a clean stop leaves at once
    assert [r.replica_id for r in (await a.read()).replicas] == ["a"]
    await store.close()


async def test_store_down_shows_this_replica_and_says_so() -> None:
    store = embedded_store()
    a = ClusterStats(store, config(), "a", stats_with(3))
    store.available = False  # as after mark_down: calls fail at once
    assert not await a.publish()
    view = await a.read()
    assert not view.complete and view.error
    assert [r.replica_id for r in view.replicas] == ["a"]


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.load(resp)


def wait_for(check: Any, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


@pytest.mark.redis
@pytest.mark.cluster
def test_cluster_view_over_two_replica_processes(redis_server: RedisServer) -> None:
    users = MockService("users")
    config = services_config({"users": users}, redis={"url": redis_server.url},
                             rate_limit={"heartbeat_interval": 0.2})
    try:
        with GatewayProcess(config) as a, GatewayProcess(config) as b:
            for _ in range(3):
                assert httpx.get(a.url + "/api/users").status_code == 200
            for _ in range(5):
                assert httpx.get(b.url + "/api/users").status_code == 200

            def both() -> Any:
                doc = get_json(a.url + "/metrics")
                return doc if doc["requests"]["total"] == 8 and doc["cluster"]["replicas"] == 2 else None

            doc = wait_for(both)
            assert doc, get_json(a.url + "/metrics")
            assert doc["scope"] == "cluster" and doc["cluster"]["complete"]
            assert doc["services"]["users"]["requests"] == 8
            per_replica = sorted(r["requests"]["total"] for r in doc["replicas"])
            assert per_replica == [3, 5]
            assert sum(r["self"] for r in doc["replicas"]) == 1
            assert get_json(a.url + "/metrics?scope=replica")["requests"]["total"] == 3

            b.kill()  # no goodbye: its entry must expire (3 x 0.2 s)

            def one() -> Any:
                doc = get_json(a.url + "/metrics")
                return doc if doc["cluster"]["replicas"] == 1 else None

            doc = wait_for(one)
            assert doc and doc["requests"]["total"] == 3
    finally:
        users.stop()
