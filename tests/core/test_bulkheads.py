"""Bulkheads: a service's own limits on upstream connections and on requests waiting for one,
so a slow service fills only its own compartment (Envoy's per-cluster circuit breakers)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from tests.support.inproc import proxy_config, running_gateway, running_service


def config(users: str, products: str) -> dict[str, Any]:
    return proxy_config({
        "users": {"url": users, "timeout": 5, "max_connections": 1, "max_pending": 1,
                  "pending_timeout": 3},
        "products": {"url": products, "timeout": 5},
    })


async def test_past_max_pending_a_request_is_refused_at_once_and_other_services_are_untouched() -> None:
    async with running_service("users") as users, running_service("products") as products, \
            running_gateway(config(users, products)) as app, \
            httpx.AsyncClient(base_url=app.url, timeout=10) as client:

        async def slow() -> tuple[int, float, dict[str, Any]]:
            started = time.monotonic()
            r = await client.get("/api/users/_mock/echo", headers={"x-mock-delay": "0.8"})
            body = r.json() if r.headers.get("content-type", "").endswith("json") else {}
            return r.status_code, time.monotonic() - started, body

        first = asyncio.create_task(slow())
        await asyncio.sleep(0.2)  # it holds the one connection
        second = asyncio.create_task(slow())  # waits for it
        await asyncio.sleep(0.1)
        started = time.monotonic()
        refused = await client.get("/api/users/_mock/echo")
        refused_after = time.monotonic() - started
        other = await client.get("/api/products")  # another service: its own pool, at once
        results = await asyncio.gather(first, second)
    assert refused.status_code == 503 and refused_after < 0.5
    assert refused.json()["type"].endswith("/upstream-pool-full")
    assert refused.headers["retry-after"] == "1"
    assert other.status_code == 200
    assert [status for status, _, _ in results] == [200, 200]
    assert results[1][1] > 1.0  # the waiter got the connection once the first was done


async def test_a_request_waiting_past_the_services_pending_timeout_gets_a_503() -> None:
    async with running_service("users") as users, running_service("products") as products:
        cfg = config(users, products)
        cfg["services"]["users"]["pending_timeout"] = 0.3  # the service's own, not proxy.pool_timeout
        async with running_gateway(cfg) as app, httpx.AsyncClient(base_url=app.url, timeout=10) as client:
            first = asyncio.create_task(client.get("/api/users/_mock/echo", headers={"x-mock-delay": "1.5"}))
            await asyncio.sleep(0.2)  # it holds the one connection
            started = time.monotonic()
            waited = await client.get("/api/users/_mock/echo")
            took = time.monotonic() - started
            assert (await first).status_code == 200
    assert waited.status_code == 503 and waited.json()["type"].endswith("/upstream-pool-full")
    assert 0.25 <= took < 1.0
