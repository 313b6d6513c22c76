"""The cors plugin through a real gateway: preflights answered first, origins allowed or not,
CORS fields on every answer (refusals included), never doubled with the upstream's."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from gateway.config import ConfigError, parse_config
from tests.support.inproc import running_gateway

ALICE = hashlib.sha256(b"key-alice").hexdigest()
SHOP = "https://shop.example.com"
PREFLIGHT = {"Origin": SHOP, "Access-Control-Request-Method": "POST",
             "Access-Control-Request-Headers": "content-type, x-api-key"}


def config(url: str, cors: dict[str, Any]) -> dict[str, Any]:
    return {
        "services": {"users": {"url": url, "timeout": 2, "connect_timeout": 1}},
        "routes": {"/api/users": "users"},
        "logging": {"level": "WARNING"},
        "rate_limit": {"enabled": False}, "cache": {"enabled": False},
        "circuit_breaker": {"enabled": False},
        "auth": {"consumers": [{"id": "alice", "tier": "default", "key_sha256": ALICE}]},
        "plugins": [{"use": "cors", "config": cors}],
    }


@pytest.fixture
async def gw(users_url: str) -> AsyncIterator[httpx.AsyncClient]:
    cors = {"origins": [SHOP], "credentials": True, "exposed_headers": ["X-Request-ID"], "max_age": 300}
    async with running_gateway(config(users_url, cors)) as app:
        async with httpx.AsyncClient(base_url=app.url, timeout=10) as client:
            yield client


async def test_a_preflight_is_answered_by_the_gateway_before_identity_and_the_upstream() -> None:
    # The upstream does not exist and no key is sent: only the gateway can have answered 204.
    async with running_gateway(config("http://127.0.0.1:9", {"origins": [SHOP]})) as app:
        async with httpx.AsyncClient(base_url=app.url, timeout=10) as client:
            resp = await client.options("/api/users/1", headers=PREFLIGHT)
    assert resp.status_code == 204
    assert resp.headers["access-control-allow-origin"] == SHOP
    assert "POST" in resp.headers["access-control-allow-methods"]
    assert resp.headers["access-control-allow-headers"] == "content-type, x-api-key"  # as asked
    assert resp.headers["access-control-max-age"] == "600"
    assert "Origin" in resp.headers["vary"]


async def test_a_disallowed_origin_gets_no_cors_fields(gw: httpx.AsyncClient) -> None:
    preflight = await gw.options("/api/users/1", headers={**PREFLIGHT, "Origin": "https://evil.example"})
    assert preflight.status_code == 204
    assert not any(k.startswith("access-control-") for k in preflight.headers)
    actual = await gw.get("/api/users/1", headers={"Origin": "https://evil.example"})
    assert actual.status_code == 200 and "access-control-allow-origin" not in actual.headers


async def test_allowed_requests_and_the_gateways_own_refusals_carry_the_cors_fields(gw: httpx.AsyncClient) -> None:
    ok = await gw.get("/api/users/1", headers={"Origin": SHOP, "X-API-Key": "key-alice"})
    assert ok.status_code == 200
    assert ok.headers["access-control-allow-origin"] == SHOP
    assert ok.headers["access-control-allow-credentials"] == "true"
    assert ok.headers["access-control-expose-headers"] == "X-Request-ID"
    assert "Origin" in ok.headers["vary"]
    refused = await gw.get("/api/users/1", headers={"Origin": SHOP, "X-API-Key": "wrong"})
    assert refused.status_code == 401  # the page can read why
    assert refused.headers["access-control-allow-origin"] == SHOP
    no_origin = await gw.get("/api/users/1")
    assert "access-control-allow-origin" not in no_origin.headers


async def test_the_upstreams_own_cors_fields_are_replaced_not_doubled(gw: httpx.AsyncClient) -> None:
    resp = await gw.get("/api/users/_mock/respond", params={"h": "Access-Control-Allow-Origin: *"},
                        headers={"Origin": SHOP})
    assert resp.headers.get_list("access-control-allow-origin") == [SHOP]


@pytest.mark.parametrize(("cors", "message"), [
    ({"origins": ["*"], "credentials": True}, "credentials need the origins listed"),
    ({"origins": ["https://shop.example.com/path"]}, "is not an origin"),
    ({"origins": []}, "list at least one origin"),
    ({"origins": ["*"], "methods": ["GET POST"]}, "is not a method or field name"),
])
def test_cors_settings_that_cannot_work_are_config_errors(cors: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(config("http://127.0.0.1:9", cors))
    assert message in str(err.value) and "plugins.0" in str(err.value)
