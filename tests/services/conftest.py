"""Fixtures: each service app on a real loopback socket (ephemeral port) with an aiohttp client."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp.test_utils import TestClient, TestServer

from services.app import create_app

MakeClient = Callable[[str], Awaitable[TestClient]]


@pytest.fixture
async def make_client() -> AsyncIterator[MakeClient]:
    clients: list[TestClient] = []

    async def make(name: str) -> TestClient:
        client = TestClient(TestServer(create_app(name), host="127.0.0.1"))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


@pytest.fixture
async def users(make_client: MakeClient) -> TestClient:
    return await make_client("users")


@pytest.fixture
async def products(make_client: MakeClient) -> TestClient:
    return await make_client("products")


@pytest.fixture
async def orders(make_client: MakeClient) -> TestClient:
    return await make_client("orders")
