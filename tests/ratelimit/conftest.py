"""Helpers for the rate-limit tests: requests built by hand, stores on fakeredis and real Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway.config import GatewayConfig, parse_config
from gateway.context import RequestContext, Response, UpstreamOutcome
from gateway.routing import RouteTable
from gateway.store import Store, embedded_store, redis_store
from tests.support import stores
from tests.support.chain import drive
from tests.support.processes import RedisServer

store = stores.store  # every script test runs on the embedded store and on a real redis-server


def gateway_config(**sections: Any) -> GatewayConfig:
    base: dict[str, Any] = {
        "services": {
            "orders": {"url": "http://127.0.0.1:9"},
            "users": {"url": "http://127.0.0.1:9"},
        },
        "routes": {"/api/orders": "orders", "/api/users": "users"},
    }
    return parse_config({**base, **sections})


def make_ctx(
    config: GatewayConfig,
    path: str = "/api/users",
    *,
    method: str = "GET",
    headers: list[tuple[bytes, bytes]] | None = None,
    client_ip: str = "203.0.113.7",
) -> RequestContext:
    route = RouteTable.from_config(config).match(path)
    assert route is not None

    return RequestContext(
        request_id="test-request",
        method=method,
        path=path,
        raw_path=path.encode(),
        query_string=b"",
        headers=list(headers or []),
        client_ip=client_ip,
        scheme="http",
        route=route,
    )


async def upstream_ok(ctx: RequestContext) -> Response:
    """A stand-in terminal: notes that it was called (`ctx.upstream`), answers 200."""
    ctx.upstream = UpstreamOutcome(status=200)
    return Response(200, [(b"content-type", b"text/plain")], b"ok")


async def run_chain(policies: list[Any], store: Store, ctx: RequestContext) -> Response:
    """The real chain around `upstream_ok`: stage, one batch, handles, after."""
    return (await drive(policies, store, ctx, upstream_ok)).response


def header(ctx: RequestContext, response: Response, name: bytes) -> str | None:
    """A response header as the client would see it (response headers plus ctx's)."""
    for key, value in [*response.headers, *ctx.response_headers]:
        if key == name:
            return value.decode()
    return None


@pytest.fixture
async def fake_store() -> AsyncIterator[Store]:
    store = embedded_store()
    yield store
    await store.close()


@pytest.fixture
async def real_store(redis_server: RedisServer) -> AsyncIterator[Store]:
    store = redis_store(redis_server.url, timeout=0.5, probe_interval=0.1)
    yield store
    await store.close()
