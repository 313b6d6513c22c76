"""Helpers for the cache tests: requests built by hand, a programmable origin, a request driver."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any

import pytest

from gateway.cache.policy import CachePolicy
from gateway.config import GatewayConfig, parse_config
from gateway.context import Consumer, Headers, RequestContext, Response, UpstreamOutcome
from gateway.routing import RouteTable
from gateway.store import Store
from tests.cache.site import Site, reflecting_site
from tests.support import stores
from tests.support.chain import drive

store = stores.store  # every cache test runs on the embedded store and on a real redis-server

ADMIN_KEY = "admin-secret"
ADMIN_SHA = "a1e4cb2a5ec0e2c8d1f3f8b5a4e0b4ba9d8a3a2f0c6c1f7e2f8c49d5d1c7c1a0"


def cache_config(**sections: Any) -> GatewayConfig:
    import hashlib

    base: dict[str, Any] = {
        "services": {"products": {"url": "http://127.0.0.1:9"}, "users": {"url": "http://127.0.0.1:9"}},
        "routes": {"/api/products": "products", "/api/users": {"service": "users", "cache": False}},
        "auth": {"admin_keys_sha256": [hashlib.sha256(ADMIN_KEY.encode()).hexdigest()]},
    }
    return parse_config({**base, **sections})


def make_ctx(config: GatewayConfig, url: str = "/api/products/1", *, method: str = "GET",
             headers: list[tuple[bytes, bytes]] | None = None, consumer: Consumer | None = None) -> RequestContext:
    path, _, query = url.partition("?")
    route = RouteTable.from_config(config).match(path)
    assert route is not None
    hdrs = [(b"host", b"gw.test"), *(headers or [])]
    return RequestContext(
        client_headers=list(hdrs), request_id="req", method=method, path=path,
        raw_path=path.encode(), query_string=query.encode(), headers=list(hdrs),
        client_ip="203.0.113.7", scheme="http", route=route, consumer=consumer,
    )


def http_date(offset: float = 0.0) -> bytes:
    import time

    return formatdate(time.time() + offset, usegmt=True).encode()


@dataclass
class Reply:
    """What the origin answers: status, headers, body (streamed in chunks), or a failure."""

    status: int = 200
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b"hello"
    chunk: int = 0  # stream in chunks of this size (0: one chunk)
    content_length: bool = True  # a streamed body announces its length (else: chunked)
    failure: str | None = None  # "connect" / "timeout" / "reset": answer 502/504 like the terminal
    breaker_open: bool = False
    delay: float = 0.0  # before the response head
    chunk_delay: float = 0.0  # before each streamed chunk after the first (a slow body)


class Origin:
    """A programmable stand-in for `call_next` (breaker + upstream) that counts its requests."""

    def __init__(self, reply: Reply | Callable[[RequestContext], Reply] | None = None) -> None:
        self.reply = reply or Reply(headers=[(b"cache-control", b"max-age=60")])
        self.requests: list[Headers] = []

    @property
    def calls(self) -> int:
        return len(self.requests)

    async def __call__(self, ctx: RequestContext) -> Response:
        reply = self.reply(ctx) if callable(self.reply) else self.reply
        if reply.breaker_open:
            ctx.breaker_rejected = True
            ctx.breaker_state = "open"
            return Response(503, [(b"content-type", b"application/problem+json")], b'{"status":503}')
        self.requests.append(list(ctx.headers))
        if reply.delay:
            await asyncio.sleep(reply.delay)
        if reply.failure:
            ctx.upstream = UpstreamOutcome(status=None, failure=reply.failure)
            status = 504 if reply.failure == "timeout" else 502
            return Response(status, [(b"content-type", b"application/problem+json")], b'{"status":%d}' % status)
        ctx.upstream = UpstreamOutcome(status=reply.status)
        headers = [(b"date", http_date()), *reply.headers]
        if reply.chunk:
            body = reply.body
            size = reply.chunk
            pause = reply.chunk_delay

            async def stream() -> AsyncIterator[bytes]:
                for i in range(0, len(body), size):
                    if pause and i:
                        await asyncio.sleep(pause)
                    yield body[i:i + size]

            if reply.content_length:
                headers.append((b"content-length", str(len(body)).encode()))
            return Response(reply.status, headers, stream=stream())
        return Response(reply.status, headers, reply.body)


@dataclass
class Result:
    status: int
    headers: Headers
    body: bytes

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k == name.lower().encode():
                return v.decode("latin-1")
        return None

    @property
    def x_cache(self) -> str | None:
        return self.header("x-cache")


async def send(policy: CachePolicy, store: Store, ctx: RequestContext, origin: Any) -> Result:
    """One request through the real chain (the cache, then `origin` as breaker + upstream)."""
    sent = await drive([policy], store, ctx, origin)
    return Result(sent.status, sent.headers, sent.body)


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    """A real gateway in front of a reflecting origin (tests/cache/site.py)."""
    yield from reflecting_site()


@pytest.fixture
def config() -> GatewayConfig:
    return cache_config()


@pytest.fixture
async def policy(config: GatewayConfig, store: Store) -> AsyncIterator[CachePolicy]:
    p = CachePolicy.from_config(config, store)
    await p.start()
    try:
        yield p
    finally:
        await p.close()
