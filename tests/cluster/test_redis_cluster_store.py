"""The Store on a real Redis Cluster: scripts on every node, slot rules, a master going away."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from gateway.config import RedisSettings
from gateway.store import Store, StoreError, StoreUnavailable
from gateway.topology import ClusterStore, make_store
from tests.support.cluster import RedisCluster, wait_until

pytestmark = [pytest.mark.redis, pytest.mark.cluster]


@pytest.fixture
async def store(redis_cluster: RedisCluster) -> AsyncIterator[Store]:
    made = make_store(RedisSettings(url=redis_cluster.url, timeout=0.5, probe_interval=0.2))
    assert isinstance(made, ClusterStore)
    assert await made.ping()  # initialises the client: slot map and command table
    yield made
    await made.close()


def tags_on_every_node(cluster: RedisCluster) -> list[str]:
    """One hash tag per master."""
    found: dict[int, str] = {}
    for i in range(1000):
        node = cluster.node_for(f"{{t{i}}}")
        found.setdefault(node.port, f"t{i}")
        if len(found) == len(cluster.nodes):
            return list(found.values())
    raise AssertionError("no tag found for some node")


async def test_one_batch_spans_every_master_and_survives_a_script_cache_flush(
        store: Store, redis_cluster: RedisCluster):
    tags = tags_on_every_node(redis_cluster)
    script = store.script("ratelimit")
    for expected_remaining in (4, 3):
        if expected_remaining == 3:
            for node in redis_cluster.nodes:  # e.g. a node restarted: EVALSHA gets NOSCRIPT
                node.command("SCRIPT", "FLUSH")
        batch = store.batch()
        pendings = [batch.eval(script, [f"gw:rl:{{{t}}}:w"], [2, 5, 60000]) for t in tags]
        await batch.execute()
        assert [p.result()[2] for p in pendings] == [expected_remaining] * len(tags)
    for tag in tags:  # each counter lives on the node its tag names
        assert redis_cluster.node_for(f"{{{tag}}}").command("HGET", f"gw:rl:{{{tag}}}:w", "c") == "2"


async def test_a_cross_slot_call_fails_alone_and_the_store_stays_up(
        store: Store, redis_cluster: RedisCluster):
    a, b = tags_on_every_node(redis_cluster)[:2]
    script = store.script("ratelimit")
    batch = store.batch()
    good = batch.eval(script, [f"gw:rl:{{{a}}}:x"], [2, 5, 60000])
    crossing = batch.eval(script, [f"gw:rl:{{{a}}}:y", f"gw:rl:{{{b}}}:y"], [2, 5, 60000, 2, 5, 1000])
    plain = batch.call("INCR", f"gw:{{{b}}}:n")
    await batch.execute()
    assert good.result()[0] == 1 and plain.result() == 1
    with pytest.raises(StoreError, match="CROSSSLOT.*'ratelimit'"):
        crossing.result()
    assert store.available


async def test_a_dead_master_fails_calls_fast_and_the_store_comes_back(
        store: Store, redis_cluster: RedisCluster):
    tags = tags_on_every_node(redis_cluster)
    victim = redis_cluster.node_for(f"{{{tags[0]}}}")
    back = asyncio.Event()
    store.on_availability(lambda up: back.set() if up else None)
    victim.kill()
    try:
        started = time.monotonic()
        batch = store.batch()
        pendings = [batch.call("INCR", f"gw:{{{t}}}:dead") for t in tags]
        await batch.execute()  # never raises, never hangs past the store timeout
        assert time.monotonic() - started < 2.0
        assert any(not p.ok for p in pendings)
        assert not store.available
        with pytest.raises(StoreUnavailable):  # known down: the next call does not even try
            await store.call("GET", f"gw:{{{tags[1]}}}:dead")
    finally:
        victim.start()  # same port, same nodes.conf: it rejoins with its slots
    wait_until(lambda: all("cluster_state:ok" in n.command("CLUSTER", "INFO")
                           for n in redis_cluster.nodes), timeout=20, what="cluster healing")
    await asyncio.wait_for(back.wait(), 15)  # the probe saw the cluster answer again
    assert store.available
    assert await store.call("INCR", f"gw:{{{tags[0]}}}:back") == 1
