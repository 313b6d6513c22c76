"""The `store` fixture shared by the policy tests: each test runs on the embedded store
(fakeredis) and on a real redis-server the fixtures started."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from gateway.store import Store, embedded_store, redis_store
from tests.support.processes import RedisServer


def wide_pool(store: Store, size: int = 512) -> Store:
    """The store with room for `size` concurrent pipelines.

    redis-py's asyncio pool refuses a 101st connection outright (MaxConnectionsError), which the
    store treats as "Redis down"; the concurrency tests need every request in flight at once.
    """
    store.client.connection_pool.max_connections = size
    return store


@pytest.fixture(params=["embedded", pytest.param("redis", marks=pytest.mark.redis)])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    if request.param == "embedded":
        s = embedded_store()
    else:
        server: RedisServer = request.getfixturevalue("redis_server")
        # Generous: these tests check behaviour, not timing; a busy machine must not fake "down".
        s = redis_store(server.url, timeout=10, connect_timeout=10, probe_interval=0.1)
    yield wide_pool(s)
    await s.close()
