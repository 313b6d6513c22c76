"""The cache policy's own tests, run verbatim on a real 3-master Redis Cluster.

fakeredis has no Cluster emulation: a script whose keys are in different slots, or a pipeline
spanning nodes in a way the policy did not expect, only shows here.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from gateway.cache.policy import CachePolicy
from gateway.config import RedisSettings
from gateway.store import Store
from gateway.topology import make_store
from tests.cache.conftest import *  # noqa: F403 - the cache tests' fixtures and helpers
from tests.cache.test_admin import *  # noqa: F403
from tests.cache.test_budget import *  # noqa: F403 - evictions delete keys on other slots
from tests.cache.test_coalesce import *  # noqa: F403 - fill waiters over pub/sub on Cluster
from tests.cache.test_policy import *  # noqa: F403 - collected again here, on Redis Cluster
from tests.cache.test_policy import _remember_config  # noqa: F401 - an autouse fixture
from tests.support.cluster import RedisCluster

pytestmark = [pytest.mark.redis, pytest.mark.cluster]


async def answering(cluster_store: Store) -> None:
    """Until the cluster answers: on a loaded machine a node stalled past the cluster's node
    timeout is briefly failed by the others (CLUSTERDOWN), which these tests are not about."""
    for _ in range(50):
        if await cluster_store.ping():
            return
        await asyncio.sleep(0.2)
    raise AssertionError("the Redis Cluster does not answer")


@pytest.fixture
async def store(redis_cluster: RedisCluster) -> AsyncIterator[Store]:  # overrides the cache tests'
    redis_cluster.flush()
    # Generous: these tests check behaviour, not timing; a busy machine must not fake "down".
    cluster_store = make_store(RedisSettings(url=redis_cluster.url, timeout=10.0))
    await answering(cluster_store)
    yield cluster_store
    await cluster_store.close()


@pytest.fixture
async def replicas(redis_cluster: RedisCluster) -> AsyncIterator[list[tuple[CachePolicy, Store]]]:
    """Three 'replicas' (own store, own subscriber) on the cluster, as test_coalesce wants."""
    redis_cluster.flush()
    stores = [make_store(RedisSettings(url=redis_cluster.url, timeout=10.0)) for _ in range(3)]
    for cluster_store in stores:
        await answering(cluster_store)
    async with started_replicas(stores) as made:  # noqa: F405 - from test_coalesce
        yield made
