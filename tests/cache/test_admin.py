"""`POST /admin/cache/purge`: admin key required, URL or prefix, clear 4xx on bad input."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from gateway.cache.admin import router
from gateway.cache.policy import CachePolicy
from gateway.store import Store
from tests.cache.conftest import ADMIN_KEY, Origin, Reply, make_ctx, send

KEY = {"x-api-key": ADMIN_KEY}


@pytest.fixture
async def client(policy: CachePolicy, config) -> Any:  # type: ignore[no-untyped-def]
    app = FastAPI()
    app.include_router(router)
    app.state.gateway = SimpleNamespace(policies={"cache": policy}, config=config)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as c:
        yield c


async def fill(policy: CachePolicy, store: Store, config, urls: list[str]) -> Origin:  # type: ignore[no-untyped-def]
    origin = Origin(Reply(headers=[(b"cache-control", b"max-age=60")]))
    for url in urls:
        await send(policy, store, make_ctx(config, url), origin)
    return origin


@pytest.mark.parametrize(
    ("headers", "body", "status"),
    [
        ({}, {"url": "/api/products/1"}, 401),
        ({"x-api-key": "nope"}, {"url": "/api/products/1"}, 403),
        ({"authorization": "Bearer nope"}, {"url": "/api/products/1"}, 403),
        (KEY, {}, 400),
        (KEY, {"url": "/a", "prefix": "/b"}, 400),
        (KEY, {"url": "api/no-slash"}, 400),
        (KEY, {"url": 5}, 400),
        (KEY, {"url": "/a", "extra": 1}, 400),
        (KEY, ["/a"], 400),
    ],
)
async def test_refusals_are_problems(client: httpx.AsyncClient, headers: dict[str, str], body: Any, status: int) -> None:
    r = await client.post("/admin/cache/purge", json=body, headers=headers)
    assert r.status_code == status
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["status"] == status


async def test_not_json_is_a_400(client: httpx.AsyncClient) -> None:
    r = await client.post("/admin/cache/purge", content=b"{nope", headers=KEY)
    assert r.status_code == 400


async def test_purge_url_and_prefix(client: httpx.AsyncClient, policy: CachePolicy, store: Store, config) -> None:  # type: ignore[no-untyped-def]
    origin = await fill(policy, store, config, ["/api/products/1", "/api/products/2", "/api/products/2?x=1"])
    r = await client.post("/admin/cache/purge", json={"url": "/api/products/1"}, headers=KEY)
    assert r.status_code == 200 and r.json() == {"purged": 1, "url": "/api/products/1"}
    assert (await send(policy, store, make_ctx(config, "/api/products/1"), origin)).x_cache == "MISS"
    r = await client.post("/admin/cache/purge", json={"prefix": "/api/products/2"},
                          headers={"authorization": f"Bearer {ADMIN_KEY}"})
    assert r.json() == {"purged": 2, "prefix": "/api/products/2"}
    assert (await send(policy, store, make_ctx(config, "/api/products/2?x=1"), origin)).x_cache == "MISS"
    assert (await send(policy, store, make_ctx(config, "/api/products/1"), origin)).x_cache == "HIT"


async def test_store_down_is_a_503(client: httpx.AsyncClient, store: Store) -> None:
    store.available = False
    try:
        r = await client.post("/admin/cache/purge", json={"prefix": "/api"}, headers=KEY)
    finally:
        store.available = True
    assert r.status_code == 503 and r.headers["content-type"] == "application/problem+json"
