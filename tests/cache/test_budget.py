"""The cache's byte budget (`cache.max_bytes`): the gateway, not Redis, decides what leaves."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway.cache.policy import CachePolicy
from gateway.cache.store import ENTRY_OVERHEAD
from gateway.config import CacheSettings, ConfigError
from gateway.redis_memory import check_memory, memory_warnings
from gateway.store import Store, redis_store
from tests.cache.conftest import Origin, Reply, cache_config, make_ctx, send
from tests.support.processes import RedisServer

BODY = 2000
PER_ENTRY = BODY + ENTRY_OVERHEAD  # plus the blob's head and the URL: a little more


@pytest.fixture
async def small(store: Store) -> AsyncIterator[CachePolicy]:
    """Room for about five entries of BODY bytes."""
    config = cache_config(cache={"max_bytes": 6 * PER_ENTRY, "max_body_bytes": 4096})
    policy = CachePolicy.from_config(config, store)
    await policy.start()
    try:
        yield policy
    finally:
        await policy.close()


def origin_with(max_age: int) -> Origin:
    return Origin(Reply(headers=[(b"cache-control", f"max-age={max_age}".encode())], body=b"x" * BODY))


async def _stored_variants(store: Store) -> int:
    """Variant keys really in Redis (`gw:c:{<hash>}:<vid>`), on every master of a Cluster."""
    pattern = "gw:c:{*}:[0-9]*"
    client = store.client
    if hasattr(client, "get_primaries"):
        counts = [len(await client.execute_command("KEYS", pattern, target_nodes=node))
                  for node in client.get_primaries()]
        return sum(counts)
    return len(await store.call("KEYS", pattern))


async def test_past_the_budget_the_entry_closest_to_expiry_leaves_first(small: CachePolicy, store: Store) -> None:
    config = cache_config()
    # Stored in this order, but the first lives longest: eviction goes by retention, not age.
    await send(small, store, make_ctx(config, "/api/products/long"), origin_with(3600))
    for i in range(10):
        await send(small, store, make_ctx(config, f"/api/products/{i}"), origin_with(60 + i))
    m = await small.metrics()
    assert m["bytes"] <= 6 * PER_ENTRY and m["evicted"] >= 5
    assert m["entries"] == await _stored_variants(store)  # the account is what Redis holds
    assert (await send(small, store, make_ctx(config, "/api/products/long"), origin_with(3600))).x_cache == "HIT"
    assert (await send(small, store, make_ctx(config, "/api/products/9"), origin_with(69))).x_cache == "HIT"
    assert (await send(small, store, make_ctx(config, "/api/products/0"), origin_with(60))).x_cache == "MISS"


async def test_a_prefix_purge_finds_every_stored_url_in_the_account(small: CachePolicy, store: Store) -> None:
    config = cache_config()
    for url in ("/api/products/1", "/api/products/1?v=2", "/api/products/12", "/api/products/2"):
        await send(small, store, make_ctx(config, url), origin_with(60))
    assert await small.purge(prefix="/api/products/1") == 2  # segment-aware: /12 stays
    assert (await small.metrics())["entries"] == 2 == await _stored_variants(store)
    assert await small.purge(prefix="/api/products") == 2
    assert (await small.metrics())["entries"] == 0 == await _stored_variants(store)


async def test_no_budget_keeps_everything_until_it_expires(store: Store) -> None:
    config = cache_config(cache={"max_bytes": 0, "max_body_bytes": 4096})
    policy = CachePolicy.from_config(config, store)
    await policy.start()
    try:
        for i in range(12):
            await send(policy, store, make_ctx(config, f"/api/products/{i}"), origin_with(60))
        m = await policy.metrics()
        assert m["entries"] == 12 and m["evicted"] == 0 and m["max_bytes"] == 0
    finally:
        await policy.close()


def test_a_budget_smaller_than_one_body_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"cache: max_bytes \(1000\) must be at least max_body_bytes"):
        cache_config(cache={"max_bytes": 1000})


@pytest.mark.parametrize("maxmemory, eviction, settings, expected", [
    (256 << 20, "noeviction", {"max_bytes": 128 << 20}, []),
    (0, "noeviction", {}, []),  # no cap: nothing to fill
    (256 << 20, "volatile-lru", {"max_bytes": 128 << 20}, ["maxmemory-policy is volatile-lru"]),
    (256 << 20, "noeviction", {"max_bytes": 0}, ["cache.max_bytes is 0"]),
    (64 << 20, "noeviction", {"max_bytes": 64 << 20}, ["leaves rate-limit windows"]),
    (64 << 20, "noeviction", {"max_bytes": 64 << 20, "enabled": False}, []),
])
def test_redis_memory_settings_that_could_cost_a_counter_are_named(
    maxmemory: int, eviction: str, settings: dict[str, Any], expected: list[str]
) -> None:
    warnings = memory_warnings(maxmemory, eviction, CacheSettings(**settings))
    assert len(warnings) == len(expected)
    for warning, text in zip(warnings, expected, strict=True):
        assert text in warning


@pytest.mark.redis
async def test_a_redis_that_evicts_is_warned_about_at_start(caplog: pytest.LogCaptureFixture) -> None:
    with RedisServer(extra=["--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru"]) as server:
        store = redis_store(server.url, timeout=5)
        try:
            with caplog.at_level(logging.WARNING, logger="gateway.store"):
                await check_memory(store, CacheSettings())
        finally:
            await store.close()
    assert "maxmemory-policy is allkeys-lru" in caplog.text
    assert "leaves rate-limit windows" in caplog.text  # 64 MiB of 64 MiB
