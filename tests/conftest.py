"""Shared fixtures: real redis-server and mock services on ephemeral ports, started here."""

from __future__ import annotations

import os
import shutil
import sys

# The tests of the compiled build (deploy/wheel-check.sh): GATEWAY_TEST_BUILD is a folder the
# wheel was installed into; it goes before the checkout, so `gateway` is the wheel's (compiled)
# here and, through PYTHONPATH and PYTHONSAFEPATH, in every process the tests start.
if os.environ.get("GATEWAY_TEST_BUILD"):
    sys.path.insert(0, os.environ["GATEWAY_TEST_BUILD"])
from collections.abc import AsyncIterator, Iterator

import pytest

from tests.support.inproc import running_service
from tests.support.processes import MockService, RedisServer


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A fresh redis-server on an ephemeral port (tests marked `redis` use it)."""
    if not shutil.which("redis-server"):
        pytest.skip("redis-server is not installed")
    server = RedisServer()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def mock_services() -> Iterator[dict[str, MockService]]:
    """The three mock services as real processes."""
    started: dict[str, MockService] = {}
    try:
        for name in ("users", "products", "orders"):
            started[name] = MockService(name)
        yield started
    finally:
        for svc in started.values():
            svc.stop()


@pytest.fixture
async def users_url() -> AsyncIterator[str]:
    """The users mock service in the test's own event loop; its base URL."""
    async with running_service("users") as url:
        yield url
