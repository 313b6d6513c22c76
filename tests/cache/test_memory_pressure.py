"""A cache filled far past Redis' `maxmemory` never costs a rate-limit window (issue #12).

A real gateway process, a real redis-server capped at 12 MB with `noeviction`, and 24 MB of
distinct cacheable responses: the gateway keeps the cache inside its own budget
(`cache.max_bytes`), so Redis never runs out of memory and never has to choose a victim; a
consumer who spent its quota and went quiet is still limited afterwards, a fresh one gets
exactly its limit, and the cache's reported size is what Redis holds.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.support.processes import GatewayProcess, MockService, RedisServer, services_config

pytestmark = [pytest.mark.redis, pytest.mark.slow]

KEYS = {"quiet": "key-quiet", "fresh": "key-fresh", "filler": "key-filler"}
LIMIT = 20
BUDGET = 4 * 1024 * 1024
BODY = 16 * 1024
FILL = 1500  # x 16 kB = 24 MB of cacheable responses, twice Redis' maxmemory


def _config(redis: RedisServer, products: MockService) -> dict[str, Any]:
    return services_config(
        {"products": products},
        redis={"url": redis.url, "timeout": 5, "connect_timeout": 5},
        # An hour's window: the fill takes tens of seconds, and a sliding window would otherwise
        # give the quiet consumer part of its quota back by itself.
        rate_limits={"default": {"windows": [{"limit": LIMIT, "window": 3600}]},
                     "anonymous": LIMIT, "bulk": 100_000},
        auth={"consumers": [
            {"id": cid, "tier": "bulk" if cid == "filler" else "default",
             "key_sha256": hashlib.sha256(key.encode()).hexdigest()}
            for cid, key in KEYS.items()
        ]},
        cache={"max_bytes": BUDGET, "ttl": 300},
        circuit_breaker={"enabled": False},
    )


@pytest.fixture(scope="module")
def setup() -> Iterator[tuple[RedisServer, GatewayProcess]]:
    with RedisServer(extra=["--maxmemory", "12mb", "--maxmemory-policy", "noeviction"]) as redis, \
            MockService("products") as products:
        gateway = GatewayProcess(_config(redis, products))
        try:
            yield redis, gateway
        finally:
            gateway.stop()


def _get(gateway: GatewayProcess, consumer: str, path: str = "/api/products") -> httpx.Response:
    return httpx.get(gateway.url + path, headers={"x-api-key": KEYS[consumer]}, timeout=15)


def _info(redis: RedisServer, section: str) -> dict[str, str]:
    out = {}
    for line in redis.command("INFO", section).splitlines():
        name, colon, value = line.partition(":")
        if colon:
            out[name] = value.strip()
    return out


def _stored_variants(redis: RedisServer) -> int:
    """Variant keys really in Redis: `gw:c:{<hash>}:<vid>`."""
    keys = redis.command("--scan", "--pattern", "gw:c:{*}:[0-9]*").split()
    return len(keys)


def test_filling_the_cache_past_maxmemory_leaves_every_limit_exact(setup: tuple[RedisServer, GatewayProcess]) -> None:
    redis, gateway = setup
    spent = [_get(gateway, "quiet").status_code for _ in range(LIMIT + 1)]
    assert spent.count(200) == LIMIT and spent[-1] == 429

    def fill(i: int) -> int:
        return _get(gateway, "filler", f"/api/products/_mock/download?size={BODY}&n={i}").status_code

    with ThreadPoolExecutor(4) as pool:
        statuses = list(pool.map(fill, range(FILL)))
    assert statuses.count(200) == FILL, {s: statuses.count(s) for s in set(statuses)}

    memory, stats, errors = _info(redis, "memory"), _info(redis, "stats"), _info(redis, "errorstats")
    assert int(memory["used_memory"]) < int(memory["maxmemory"])
    assert stats["evicted_keys"] == "0"
    assert not any("OOM" in name for name in errors), errors  # no write was ever refused

    # The consumer who spent its quota and went quiet is still limited; a fresh one gets exactly
    # its limit.
    assert _get(gateway, "quiet").status_code == 429
    fresh = [_get(gateway, "fresh").status_code for _ in range(LIMIT + 10)]
    assert fresh.count(200) == LIMIT and fresh.count(429) == 10

    # What /metrics reports is what Redis holds, inside the budget.
    cache = httpx.get(gateway.url + "/metrics", timeout=10).json()["cache"]
    assert 0 < cache["bytes"] <= BUDGET
    assert cache["evicted"] > 0
    assert cache["entries"] == _stored_variants(redis)
    assert cache["entries"] < FILL
    assert "maxmemory" not in gateway.log()  # the settings the docs recommend draw no warning


def test_entries_the_budget_evicted_are_fetched_again(setup: tuple[RedisServer, GatewayProcess]) -> None:
    redis, gateway = setup
    first = _get(gateway, "filler", f"/api/products/_mock/download?size={BODY}&n=0")  # the oldest fill
    assert first.status_code == 200 and first.headers.get("x-cache") == "MISS"
    again = _get(gateway, "filler", f"/api/products/_mock/download?size={BODY}&n=0")
    assert again.headers.get("x-cache") == "HIT" and again.content == first.content
