"""The near cache: hot entries held in each replica's memory, so a hit reads no body from Redis.

Two replicas (two cache policies, each with its own near cache) on one store, on the embedded
store and on a real redis-server. Redis still decides every request: an entry invalidated,
purged or replaced through one replica is never served from the other's memory.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway.cache.entry import CacheEntry
from gateway.cache.near import NearCache, entry_size
from gateway.cache.policy import CachePolicy
from gateway.config import GatewayConfig
from gateway.context import Consumer
from gateway.store import Store
from tests.cache.conftest import Origin, Reply, cache_config, make_ctx, send


class Replica:
    """A cache policy whose lookups are watched: how many body bytes each reply carried."""

    def __init__(self, config: GatewayConfig, store: Store) -> None:
        self.config = config
        self.store = store
        self.policy = CachePolicy.from_config(config, store)
        self.bodies: list[int] = []  # blob bytes per lookup reply
        parse = self.policy.cache.parse_lookup

        def watched(reply: Any, key: Any) -> Any:
            self.bodies.append(len(reply[1]))
            return parse(reply, key)

        self.policy.cache.parse_lookup = watched  # type: ignore[method-assign]

    async def get(self, origin: Origin, url: str = "/api/products/1", **kw: Any):
        return await send(self.policy, self.store, make_ctx(self.config, url, **kw), origin)

    @property
    def near(self) -> NearCache:
        return self.policy.cache.near


@pytest.fixture
async def pair(store: Store) -> AsyncIterator[tuple[Replica, Replica]]:
    config = cache_config()
    a, b = Replica(config, store), Replica(config, store)
    for r in (a, b):
        await r.policy.start()
    yield a, b
    for r in (a, b):
        await r.policy.close()


def versioned(body: bytes, cc: bytes = b"max-age=60") -> Origin:
    return Origin(Reply(headers=[(b"cache-control", cc)], body=body))


async def held_by_b(a: Replica, b: Replica, origin: Origin) -> None:
    """Filled through A, then served twice by B: B holds it and its second hit read no body."""
    await a.get(origin)
    await b.get(origin)
    await b.get(origin)
    assert b.bodies[-1] == 0


async def test_a_hit_on_an_entry_held_in_memory_reads_no_body(pair):
    a, b = pair
    origin = versioned(b"x" * 5000)
    assert (await a.get(origin)).x_cache == "MISS"
    first = await b.get(origin)  # B's first hit: the body comes from Redis, and is kept
    assert first.x_cache == "HIT" and first.body == b"x" * 5000 and b.bodies[-1] > 5000
    for _ in range(5):
        again = await b.get(origin)
        assert again.x_cache == "HIT" and again.body == b"x" * 5000
        assert b.bodies[-1] == 0  # no body bytes from Redis
    assert b.near.hits == 5
    hit_on_a = await a.get(origin)  # A stored it: it holds it since the store
    assert hit_on_a.x_cache == "HIT" and a.bodies[-1] == 0
    assert origin.calls == 1


async def test_an_unsafe_request_through_one_replica_is_never_hidden_by_the_others_memory(pair):
    a, b = pair
    origin = versioned(b"old")
    await held_by_b(a, b, origin)
    origin.reply = Reply(headers=[(b"cache-control", b"max-age=60")], body=b"new")
    assert (await a.get(origin, method="POST")).status == 200  # invalidates
    after = await b.get(origin)
    assert after.x_cache == "MISS" and after.body == b"new"
    assert (await a.get(origin)).body == b"new"


async def test_a_purge_through_one_replica_is_never_hidden_by_the_others_memory(pair):
    a, b = pair
    origin = versioned(b"old")
    await held_by_b(a, b, origin)
    assert await a.policy.purge(url="/api/products/1") == 1
    origin.reply = Reply(headers=[(b"cache-control", b"max-age=60")], body=b"new")
    after = await b.get(origin)
    assert after.x_cache == "MISS" and after.body == b"new"


async def test_a_refill_is_a_new_version(pair):
    a, b = pair
    origin = versioned(b"first", b"max-age=60")
    await a.get(origin)
    await b.get(origin)
    await a.policy.purge(url="/api/products/1")
    origin.reply = Reply(headers=[(b"cache-control", b"max-age=60")], body=b"second")
    assert (await a.get(origin)).body == b"second"  # refilled through A
    seen = await b.get(origin)
    assert seen.x_cache == "HIT" and seen.body == b"second" and b.bodies[-1] > 0
    assert (await b.get(origin)).body == b"second" and b.bodies[-1] == 0


async def test_vary_variants_each_held_and_each_served_to_its_own_requests(pair):
    a, b = pair

    def by_language(ctx):
        lang = ctx.header(b"accept-language") or b"none"
        return Reply(headers=[(b"cache-control", b"max-age=60"), (b"vary", b"accept-language")],
                     body=b"body-" + lang)

    origin = Origin(by_language)
    for lang in (b"en", b"fr"):
        await a.get(origin, headers=[(b"accept-language", lang)])
    for _ in range(2):
        for lang in (b"en", b"fr"):
            got = await b.get(origin, headers=[(b"accept-language", lang)])
            assert got.x_cache == "HIT" and got.body == b"body-" + lang
    assert b.bodies[-2:] == [0, 0] and len(b.near) == 2
    assert origin.calls == 2


async def test_one_consumers_entry_held_in_memory_is_never_served_to_another(pair):
    a, b = pair
    alice = Consumer("alice", "premium", True, "alice")
    bob = Consumer("bob", "premium", True, "bob")

    def per_consumer(ctx):
        return Reply(headers=[(b"cache-control", b"private, max-age=60")],
                     body=b"for-" + ctx.consumer.id.encode())

    origin = Origin(per_consumer)
    await a.get(origin, consumer=alice)
    await b.get(origin, consumer=alice)
    assert (await b.get(origin, consumer=alice)).body == b"for-alice" and b.bodies[-1] == 0
    got = await b.get(origin, consumer=bob)  # B holds alice's entry: bob still never gets it
    assert got.x_cache == "MISS" and got.body == b"for-bob"


async def test_without_a_near_cache_every_hit_reads_its_body(store):
    config = cache_config(cache={"near_max_bytes": 0})
    a, b = Replica(config, store), Replica(config, store)
    origin = versioned(b"x" * 100)
    await a.get(origin)
    for _ in range(3):
        assert (await b.get(origin)).x_cache == "HIT" and b.bodies[-1] > 100
    assert len(b.near) == 0


async def test_the_near_cache_shows_in_the_metrics(pair):
    a, b = pair
    await held_by_b(a, b, versioned(b"x"))
    near = (await b.policy.metrics())["near"]
    assert near["entries"] == 1 and near["hits"] == 1 and near["bytes"] > 0


# -- the memory bound (no store) -------------------------------------------------------------------

def entry(url: str, size: int) -> CacheEntry:
    return CacheEntry(url, 200, [(b"content-type", b"text/plain")], b"x" * size)


def test_bounded_by_bytes_least_recently_used_out_first():
    near = NearCache(20_000)
    for i in range(10):
        near.put(f"h{i}", f"root{i}:1", f"v{i}", entry(f"/u{i}", 3000))
        assert near.bytes <= 20_000
    assert near.evictions > 0 and not near.held("h0")  # the oldest went first
    near.used("v5")  # used recently: kept over older ones
    near.put("h10", "root10:1", "v10", entry("/u10", 3000))
    assert near.held("h5") and near.bytes <= 20_000


def test_one_version_per_variant_and_a_bounded_number_of_variants_per_url():
    near = NearCache(10_000_000)
    near.put("h", "root:1", "v1", entry("/u", 10))
    near.put("h", "root:1", "v2", entry("/u", 10))  # a newer version of the same variant
    assert [v for v, _ in near.held("h")] == ["v2"] and len(near) == 1
    for i in range(2, 20):
        near.put("h", f"root:{i}", f"w{i}", entry("/u", 10))
    assert len(near.held("h")) == 8


def test_an_entry_too_big_for_a_quarter_of_the_budget_is_not_held():
    near = NearCache(40_000)
    big = entry("/big", 20_000)
    assert entry_size(big) > 10_000
    near.put("h", "root:1", "v", big)
    assert len(near) == 0 and near.bytes == 0


def test_forgetting_a_url_drops_all_its_variants():
    near = NearCache(1_000_000)
    near.put("h", "root:1", "v1", entry("/u", 10))
    near.put("h", "root:2", "v2", entry("/u", 10))
    near.put("g", "other:1", "v3", entry("/g", 10))
    near.forget("h")
    assert not near.held("h") and len(near) == 1 and near.bytes == entry_size(entry("/g", 10))
