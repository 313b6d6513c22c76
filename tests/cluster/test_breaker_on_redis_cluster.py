"""The circuit breaker's own tests, run verbatim on a real 3-master Redis Cluster.

The breaker tests make their stores with `redis_store(redis_server.url)`; here `redis_server` is a
local Redis Cluster and `redis_store` makes a Cluster store, so every script call crosses the
real slot checks (CROSSSLOT shows only there; fakeredis has no Cluster emulation).
"""

from __future__ import annotations

from typing import Any

import pytest

import tests.breaker.conftest as breaker_fixtures
import tests.breaker.test_concurrency as breaker_concurrency
from gateway.config import RedisSettings
from gateway.store import Store
from gateway.topology import make_store
from tests.breaker.conftest import *  # noqa: F403 - the breaker tests' fixtures and helpers
from tests.breaker.test_concurrency import *  # noqa: F403 - collected again here, on Cluster
from tests.breaker.test_recording import (  # only the ones on a store, not the pure verdicts
    test_many_requests_recorded_in_one_flush,  # noqa: F401
    test_the_background_flush_records_without_being_asked,  # noqa: F401
)
from tests.breaker.test_transitions import *  # noqa: F403
from tests.support.cluster import RedisCluster

pytestmark = [pytest.mark.redis, pytest.mark.cluster]


@pytest.fixture
def redis_server(redis_cluster: RedisCluster) -> RedisCluster:  # what the breaker tests call Redis
    redis_cluster.flush()
    return redis_cluster


@pytest.fixture
def backend() -> str:  # only the real-store case: "redis", which now means the cluster
    return "redis"


def cluster_store(url: str, *, timeout: float = 0.25, **_: Any) -> Store:
    return make_store(RedisSettings(url=url, timeout=timeout))


@pytest.fixture(autouse=True)
def _stores_on_the_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(breaker_fixtures, "redis_store", cluster_store)
    monkeypatch.setattr(breaker_concurrency, "redis_store", cluster_store)
