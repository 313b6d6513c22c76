"""Fixtures for the breaker tests: a policy on a chosen backend, a scripted fake upstream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from gateway.breaker import CircuitBreakerPolicy
from gateway.config import GatewayConfig, parse_config
from gateway.context import RequestContext, Response, UpstreamOutcome
from gateway.routing import Route
from gateway.store import Store, embedded_store, redis_store
from tests.support.chain import drive

USERS_A = "http://users-a.test:8001"
USERS_B = "http://users-b.test:8002"
ORDERS = "http://orders.test:8003"


def breaker_config(**breaker: Any) -> GatewayConfig:
    """Two services: `users` with two targets, `orders` with one; the given breaker settings."""
    settings = {"failure_threshold": 3, "timeout": 0.3, "half_open_timeout": 0.3, **breaker}
    return parse_config({
        "services": {"users": {"targets": [USERS_A, USERS_B]}, "orders": {"url": ORDERS}},
        "routes": {"/api/users": "users", "/api/orders": "orders"},
        "circuit_breaker": settings,
    })


async def until(condition: Any, within: float = 5.0) -> None:
    """Wait until `condition()` holds (a board synced, a change delivered)."""
    deadline = asyncio.get_running_loop().time() + within
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.002)


def make_ctx(config: GatewayConfig, service: str) -> RequestContext:
    prefix = f"/api/{service}"
    return RequestContext(
        request_id="req-test", method="GET", path=prefix + "/1",
        raw_path=(prefix + "/1").encode(), query_string=b"", headers=[], client_ip="127.0.0.1",
        scheme="http", route=Route(prefix, service, config.routes[prefix]),
    )


@dataclass
class FakeUpstream:
    """The terminal: answers per target as scripted; counts the requests that reached it.

    A behaviour is "ok" (200), an int status, "connect", "reset", "timeout" (a failure of that
    kind), "disconnect" (the client went away) or "hold" (waits until `release` is set).
    """

    behaviour: dict[str, str | int] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def set(self, target: str, behaviour: str | int) -> None:
        self.behaviour[target] = behaviour

    def count(self, target: str | None = None) -> int:
        return self.calls.get(target, 0) if target else sum(self.calls.values())

    async def __call__(self, ctx: RequestContext) -> Response:
        target = ctx.target or ""
        self.calls[target] = self.calls.get(target, 0) + 1
        how = self.behaviour.get(target, "ok")
        if how == "hold":
            await self.release.wait()
            how = "ok"
        if how == "disconnect":
            ctx.upstream = UpstreamOutcome(200, None, 0.001, target)
            ctx.client_disconnected = True
            return Response(200, body=b"partial")
        if how in ("connect", "reset", "timeout"):
            ctx.upstream = UpstreamOutcome(None, str(how), 0.001, target)
            return Response(502 if how != "timeout" else 504)
        status = 200 if how == "ok" else int(how)
        ctx.upstream = UpstreamOutcome(status, None, 0.001, target)
        return Response(status, body=b"{}")


@dataclass
class Replica:
    """One gateway replica's breaker on a store, driven like the hot path drives it."""

    config: GatewayConfig
    store: Store
    policy: CircuitBreakerPolicy
    upstream: FakeUpstream

    async def request(self, service: str = "orders", *, record: bool = True,
                      flush: bool = True) -> tuple[Response, RequestContext]:
        ctx = make_ctx(self.config, service)
        sent = await drive([self.policy], self.store, ctx, self.upstream, after=record)
        if record and flush:
            await self.policy.flush()
        return sent.response, ctx

    async def requests(self, n: int, service: str = "orders") -> list[int]:
        return [(await self.request(service))[0].status for _ in range(n)]



@pytest.fixture(params=["embedded", "local", pytest.param("redis", marks=pytest.mark.redis)])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """Where the breaker state lives: fakeredis, the local fallback (store down), real Redis."""
    yield request.param


@pytest.fixture
async def make_replica(backend: str, request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """`await make_replica(**breaker_settings)`: a replica; several calls share one store."""
    stores: list[Store] = []
    replicas: list[Replica] = []
    shared: dict[str, Store] = {}

    def store_for() -> Store:
        if backend == "redis":
            server = request.getfixturevalue("redis_server")
            store = redis_store(server.url, timeout=2.0)
        elif "store" in shared:
            return shared["store"]
        else:
            store = embedded_store()
            shared["store"] = store
        if backend == "local":
            store.available = False  # down for good: no probe task brings it back
        stores.append(store)
        return store

    async def make(upstream: FakeUpstream | None = None, config: GatewayConfig | None = None,
                   board: bool = True, **breaker: Any) -> Replica:
        config = config or breaker_config(**breaker)
        store = store_for()
        policy = CircuitBreakerPolicy.from_config(config, store)
        replica = Replica(config, store, policy, upstream or FakeUpstream())
        replicas.append(replica)
        if board and store.available:
            await policy.start()  # the board: subscribed and synced before the first request
            await until(lambda: policy.board.live)
        return replica

    yield make
    for replica in replicas:
        await replica.policy.close()
    for store in stores:
        await store.close()
