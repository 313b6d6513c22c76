"""Fixtures for the multi-process tests: the mock services, and consumers with known keys."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.cluster import RedisCluster, Services

RATE_LIMIT = 10  # the `default` tier: requests per minute, per consumer, cluster-wide
CONSUMERS = ("exact", "burst", "kill", "sentinel", "front")


def api_key(consumer: str) -> dict[str, str]:
    """The X-API-Key header of one of CONSUMERS."""
    return {"X-API-Key": f"cluster-test-key-{consumer}"}


def policies_config() -> dict[str, Any]:
    """Consumers on a 10/min tier, anonymous traffic unthrottled, a quick breaker."""
    return {
        "rate_limits": {"default": RATE_LIMIT, "anonymous": 100_000, "premium": 1000},
        "auth": {"mode": "api_keys", "consumers": [
            {"id": c, "tier": "default",
             "key_sha256": hashlib.sha256(api_key(c)["X-API-Key"].encode()).hexdigest()}
            for c in CONSUMERS
        ]},
        "circuit_breaker": {"failure_threshold": 3, "timeout": 30, "half_open_timeout": 10},
        "cache": {"ttl": 60},
    }


@pytest.fixture(scope="module")
def services() -> Iterator[Services]:
    if not shutil.which("redis-server"):
        pytest.skip("redis-server is not installed")
    with Services() as started:
        yield started


@pytest.fixture(scope="module")
def redis_cluster() -> Iterator[RedisCluster]:
    """A local 3-master Redis Cluster, one per test module."""
    with RedisCluster() as cluster:
        yield cluster
