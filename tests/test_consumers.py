"""Run-time consumers (gateway/identity/directory.py, /admin/consumers) in one process on the
embedded store: the admin API, the keys it hands out, rotation with a grace period, own
limits, and the errors. Across replicas on Redis and the CLI: test_consumers_cluster.py."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from gateway.entry import GatewayApp
from tests.support.inproc import proxy_config, running_service, serving

ADMIN_KEY = "consumers-admin-key"
ADMIN = {"x-api-key": ADMIN_KEY}
YAML_KEY = "yaml-consumer-key"


def _config(users_url: str) -> dict[str, Any]:
    return proxy_config(
        {"users": {"url": users_url}},
        rate_limit={"enabled": True},
        rate_limits={"default": 100, "anonymous": 50, "premium": 1000},
        auth={"admin_keys_sha256": [hashlib.sha256(ADMIN_KEY.encode()).hexdigest()],
              "consumers": [{"id": "carol", "key_sha256": hashlib.sha256(YAML_KEY.encode()).hexdigest()}]},
    )


@pytest.fixture
async def gateway() -> AsyncIterator[tuple[GatewayApp, httpx.AsyncClient]]:
    async with running_service("users") as users, serving(_config(users)) as (app, _), \
            httpx.AsyncClient(base_url=app.url, timeout=10) as client:
        yield app, client


async def _create(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    r = await client.post("/admin/consumers", json=body, headers=ADMIN)
    assert r.status_code == 201, r.text
    return dict(r.json())


async def test_a_created_consumer_authenticates_with_the_key_shown_once(
        gateway: tuple[GatewayApp, httpx.AsyncClient]) -> None:
    app, client = gateway
    made = await _create(client, id="alice", tier="premium")
    key = made["key"]
    assert key.startswith("gwk_") and len(key) > 40
    assert made["consumer"]["tier"] == "premium" and made["consumer"]["source"] == "runtime"
    r = await client.get("/api/users", headers={"x-api-key": key})
    assert r.status_code == 200 and r.headers["x-ratelimit-limit"] == "1000"
    listed = (await client.get("/admin/consumers", headers=ADMIN)).json()
    ids = {(c["id"], c["source"]) for c in listed["consumers"]}
    assert ids == {("alice", "runtime"), ("carol", "config")}
    # Only a fingerprint of the digest is ever shown; the key itself never again.
    text = (await client.get("/admin/consumers/alice", headers=ADMIN)).text
    assert key not in text and hashlib.sha256(key.encode()).hexdigest() not in text
    assert hashlib.sha256(key.encode()).hexdigest()[:8] in text
    assert app.gateway.stats.consumer_changes == {"created": 1}


async def test_update_disable_delete(gateway: tuple[GatewayApp, httpx.AsyncClient]) -> None:
    _, client = gateway
    key = (await _create(client, id="bob"))["key"]
    bob = {"x-api-key": key}
    assert (await client.get("/api/users", headers=bob)).headers["x-ratelimit-limit"] == "100"
    r = await client.patch("/admin/consumers/bob", json={"limits": [{"limit": 7, "window": 60}]}, headers=ADMIN)
    assert r.status_code == 200
    assert (await client.get("/api/users", headers=bob)).headers["x-ratelimit-limit"] == "7"
    await client.patch("/admin/consumers/bob", json={"limits": [], "tier": "premium"}, headers=ADMIN)
    assert (await client.get("/api/users", headers=bob)).headers["x-ratelimit-limit"] == "1000"
    await client.patch("/admin/consumers/bob", json={"enabled": False}, headers=ADMIN)
    refused = await client.get("/api/users", headers=bob)
    assert refused.status_code == 401 and refused.json()["type"].endswith("invalid-api-key")
    await client.patch("/admin/consumers/bob", json={"enabled": True}, headers=ADMIN)
    assert (await client.get("/api/users", headers=bob)).status_code == 200
    assert (await client.delete("/admin/consumers/bob", headers=ADMIN)).status_code == 204
    assert (await client.get("/api/users", headers=bob)).status_code == 401
    assert (await client.get("/admin/consumers/bob", headers=ADMIN)).status_code == 404


async def test_own_limits_are_enforced(gateway: tuple[GatewayApp, httpx.AsyncClient]) -> None:
    _, client = gateway
    key = (await _create(client, id="dave", limits=[{"limit": 3, "window": 60}]))["key"]
    statuses = [(await client.get("/api/users", headers={"x-api-key": key})).status_code for _ in range(5)]
    assert statuses == [200, 200, 200, 429, 429]


async def test_rotation_keeps_the_old_key_for_the_grace_period(
        gateway: tuple[GatewayApp, httpx.AsyncClient]) -> None:
    _, client = gateway
    old = (await _create(client, id="erin"))["key"]
    r = await client.post("/admin/consumers/erin/keys", json={"grace": 1}, headers=ADMIN)
    assert r.status_code == 201
    new = r.json()["key"]
    assert new != old
    for key in (old, new):
        assert (await client.get("/api/users", headers={"x-api-key": key})).status_code == 200
    keys = r.json()["consumer"]["keys"]
    assert len(keys) == 2 and sum(1 for k in keys if k["expires"]) == 1
    await asyncio.sleep(1.1)
    assert (await client.get("/api/users", headers={"x-api-key": old})).status_code == 401
    assert (await client.get("/api/users", headers={"x-api-key": new})).status_code == 200
    # grace 0: the current key is revoked at once.
    newer = (await client.post("/admin/consumers/erin/keys", json={"grace": 0}, headers=ADMIN)).json()["key"]
    assert (await client.get("/api/users", headers={"x-api-key": new})).status_code == 401
    assert (await client.get("/api/users", headers={"x-api-key": newer})).status_code == 200


async def test_bad_requests_get_problems_naming_the_field(gateway: tuple[GatewayApp, httpx.AsyncClient]) -> None:
    _, client = gateway
    cases = [
        ({"id": "x", "tier": "gold"}, 400, "tier"),
        ({"id": "has space"}, 400, "id"),
        ({"id": "x", "limits": [{"limit": 0, "window": 60}]}, 400, "limits.0.limit"),
        ({"id": "x", "colour": "red"}, 400, "colour"),
        ({"id": "carol"}, 409, None),
    ]
    for body, status, field in cases:
        r = await client.post("/admin/consumers", json=body, headers=ADMIN)
        assert r.status_code == status, (body, r.text)
        assert r.headers["content-type"] == "application/problem+json"
        if field:
            assert field in {e["field"] for e in r.json()["errors"]} or field in r.json()["detail"], r.text
    r = await client.post("/admin/consumers", content=b"{not json", headers=ADMIN)
    assert r.status_code == 400
    await _create(client, id="frank")
    assert (await client.post("/admin/consumers", json={"id": "frank"}, headers=ADMIN)).status_code == 409
    assert (await client.patch("/admin/consumers/nobody", json={}, headers=ADMIN)).status_code == 404
    assert (await client.delete("/admin/consumers/carol", headers=ADMIN)).status_code == 409
    assert (await client.post("/admin/consumers/frank/keys", json={"grace": -1}, headers=ADMIN)).status_code == 400


async def test_the_admin_api_needs_an_admin(gateway: tuple[GatewayApp, httpx.AsyncClient]) -> None:
    _, client = gateway
    assert (await client.get("/admin/consumers")).status_code == 401
    assert (await client.post("/admin/consumers", json={"id": "x"})).status_code == 401
    r = await client.get("/admin/consumers", headers={"x-api-key": YAML_KEY})
    assert r.status_code == 403


async def test_runtime_consumers_survive_a_reload(gateway: tuple[GatewayApp, httpx.AsyncClient]) -> None:
    from gateway.config import parse_config

    app, client = gateway
    key = (await _create(client, id="gina"))["key"]
    users = app.gateway.config.services["users"].url
    assert users is not None
    await app.reload(parse_config(_config(users)))
    assert (await client.get("/api/users", headers={"x-api-key": key})).status_code == 200


async def test_the_openapi_document_describes_the_consumers_api(gateway: tuple[GatewayApp, httpx.AsyncClient]) -> None:
    _, client = gateway
    paths = (await client.get("/openapi.json")).json()["paths"]
    create = paths["/admin/consumers"]["post"]
    schema = create["requestBody"]["content"]["application/json"]["schema"]
    assert schema["required"] == ["id"] and "limits" in schema["properties"]
    assert "$ref" not in str(schema)
    assert {"get", "patch", "delete"} <= set(paths["/admin/consumers/{consumer_id}"])
    assert "post" in paths["/admin/consumers/{consumer_id}/keys"]
