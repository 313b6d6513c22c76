"""PURGE through the hot path: an admin key passes identity and purges on the cache."""

from __future__ import annotations

import httpx

from tests.support.inproc import running_gateway, running_service

ADMIN_SHA = "ac5bb3526d3be432ba19fb1fc0712d350c160bd2169cd24401c9fcaeaac2d860"  # demo-admin-key


async def test_purge_method_needs_an_admin_key_and_empties_the_entry() -> None:
    async with running_service("products") as url:
        config = {"services": {"products": {"url": url}}, "routes": {"/api/products": "products"},
                  "auth": {"admin_keys_sha256": [ADMIN_SHA]}, "logging": {"level": "WARNING"}}
        async with running_gateway(config) as app, httpx.AsyncClient(base_url=app.url) as client:
            await client.get("/api/products/1")
            assert (await client.get("/api/products/1")).headers["x-cache"] == "HIT"
            assert (await client.request("PURGE", "/api/products/1")).status_code == 401
            wrong = await client.request("PURGE", "/api/products/1", headers={"X-API-Key": "nope"})
            assert wrong.status_code == 401
            assert (await client.get("/api/products/1")).headers["x-cache"] == "HIT"
            purged = await client.request("PURGE", "/api/products/1",
                                          headers={"X-API-Key": "demo-admin-key"})
            assert purged.status_code == 200 and purged.json()["purged"] == 1
            assert (await client.get("/api/products/1")).headers["x-cache"] == "MISS"
            # The admin key is not a consumer: any other method with it is refused.
            other = await client.get("/api/products/1", headers={"X-API-Key": "demo-admin-key"})
            assert other.status_code == 401


async def test_purge_is_not_blocked_by_the_anonymous_quota() -> None:
    async with running_service("products") as url:
        config = {"services": {"products": {"url": url}}, "routes": {"/api/products": "products"},
                  "auth": {"admin_keys_sha256": [ADMIN_SHA]}, "logging": {"level": "WARNING"},
                  "rate_limits": {"default": 100, "anonymous": 2, "premium": 1000}}
        async with running_gateway(config) as app, httpx.AsyncClient(base_url=app.url) as client:
            statuses = [(await client.get("/api/products/1")).status_code for _ in range(3)]
            assert statuses == [200, 200, 429]
            purged = await client.request("PURGE", "/api/products/1",
                                          headers={"X-API-Key": "demo-admin-key"})
            assert purged.status_code == 200
