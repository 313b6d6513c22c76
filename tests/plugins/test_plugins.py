"""Plugins through a real gateway: loading, config errors that name the field, places in the
chain, route scoping, and the built-in headers and ip-restriction plugins."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from gateway.config import ConfigError, parse_config
from gateway.plugins.ip_restriction import IpRestriction
from gateway.policy import PolicyDeps
from gateway.store import embedded_store
from tests.support.inproc import running_gateway

ALICE = hashlib.sha256(b"key-alice").hexdigest()
BOB = hashlib.sha256(b"key-bob").hexdigest()


def config(users_url: str, plugins: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "services": {"users": {"url": users_url, "timeout": 2}},
        "routes": {"/api/users": "users", "/api/other": {"service": "users", "strip_prefix": True}},
        "logging": {"level": "WARNING"},
        "rate_limit": {"enabled": False}, "cache": {"enabled": False},
        "circuit_breaker": {"enabled": False},
        "auth": {"consumers": [{"id": "alice", "tier": "default", "key_sha256": ALICE},
                               {"id": "bob", "tier": "default", "key_sha256": BOB}]},
        "plugins": plugins,
    }
    cfg.update(extra)
    return cfg


@pytest.fixture
async def client_for(users_url: str) -> AsyncIterator[Any]:
    stack: list[Any] = []

    async def make(plugins: list[dict[str, Any]], **extra: Any) -> httpx.AsyncClient:
        gateway = running_gateway(config(users_url, plugins, **extra))
        app = await gateway.__aenter__()
        client = httpx.AsyncClient(base_url=app.url, timeout=10)
        stack.append((gateway, client))
        return client

    yield make
    for gateway, client in reversed(stack):
        await client.aclose()
        await gateway.__aexit__(None, None, None)


def seen(resp: httpx.Response) -> dict[str, list[str]]:
    """The request fields the backend received (the mock's echo)."""
    out: dict[str, list[str]] = {}
    for name, value in resp.json()["headers"]:
        out.setdefault(name.lower(), []).append(value)
    return out


# -- loading and config errors -------------------------------------------------------------------
@pytest.mark.parametrize(("plugin", "message"), [
    ({"use": "no-such-plugin"}, "plugins.0: unknown plugin 'no-such-plugin'"),
    ({"use": "examples.nope:Thing"}, "cannot import 'examples.nope'"),
    ({"use": "examples.tenant_header:Missing"}, "has no 'Missing'"),
    ({"use": "examples.tenant_header:Counter"}, "implements none of the phases"),
    ({"use": "examples.tenant_header:TenantHeader", "config": {}}, "config.tenants: Field required"),
    ({"use": "examples.tenant_header:TenantHeader", "config": {"tenants": {}, "header": "a b"}},
     "config.header: String should match pattern"),
    ({"use": "examples.tenant_header:TenantHeader", "config": {"tenants": {}, "tennants": 1}},
     "config.tennants: Extra inputs are not permitted"),
    ({"use": "headers", "config": {"request": {"set": {"Content-Length": "1"}}}},
     "Content-Length cannot be changed by the headers plugin"),
    ({"use": "headers", "config": {"request": {"set": {"X-A": "{secret}"}}}}, "uses {secret}"),
    ({"use": "headers", "config": {"request": {"set": {"X-A": "a\x01b"}}}}, "holds a control character"),
    ({"use": "headers", "config": {"request": {"add": {"X-A": "caf\u0101"}}}}, "holds a control character"),
    ({"use": "headers", "config": {"response": {"remove": ["X_A B"]}}}, "'X_A B' is not a header field name"),
    ({"use": "headers", "config": {"response": {"remove": ["Keep-Alive"]}}}, "Keep-Alive cannot be changed"),
    ({"use": "cors", "config": {"origins": ["*"], "methods": ["GET", "PÜT"]}}, "'PÜT' is not a method"),
    ({"use": "ip-restriction", "config": {"allow": ["10.0.0.0/33"]}}, "'10.0.0.0/33' is not an IP"),
    ({"use": "ip-restriction", "config": {"allow": ["10.0.0.0/8"]}, "routes": ["/api/nope"]},
     "plugins.0.routes: '/api/nope' is not a configured route"),
    ({"use": "headers", "at": "middle"}, "plugins.0.at"),
])
def test_a_bad_plugin_is_a_config_error_that_names_the_field(plugin: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(config("http://127.0.0.1:9", [plugin]))
    assert message in str(err.value)


# -- the example plugin, end to end -------------------------------------------------------------
async def test_the_example_plugin_sees_the_verified_consumer_in_every_phase(client_for: Any) -> None:
    client = await client_for([{"use": "examples.tenant_header:TenantHeader",
                                "config": {"tenants": {"alice": "acme"}, "required": True}}])
    resp = await client.get("/api/users/_mock/echo", headers={"X-API-Key": "key-alice", "X-Tenant": "evil"})
    assert resp.status_code == 200
    assert seen(resp)["x-tenant"] == ["acme"]  # the client's own value was dropped
    assert resp.headers["x-tenant"] == "acme"  # handle: on the way back
    anonymous = await client.get("/api/users/_mock/echo", headers={"X-Tenant": "evil"})
    assert anonymous.status_code == 200 and "x-tenant" not in seen(anonymous)
    refused = await client.get("/api/users/_mock/echo", headers={"X-API-Key": "key-bob"})
    assert refused.status_code == 403 and refused.json()["type"].endswith("no-tenant")


async def test_a_plugins_after_phase_runs_once_the_response_went_out(users_url: str) -> None:
    async with running_gateway(config(users_url, [{"use": "examples.tenant_header:TenantHeader",
                                                   "config": {"tenants": {"alice": "acme"}}}])) as app:
        async with httpx.AsyncClient(base_url=app.url, timeout=10) as client:
            for _ in range(3):
                assert (await client.get("/api/users/1", headers={"X-API-Key": "key-alice"})).status_code == 200
        plugin = app.gateway.policies["tenant-header"]
        assert plugin.served["acme"] == 3


# -- headers -------------------------------------------------------------------------------------
async def test_headers_edits_both_directions_with_values_from_the_request(client_for: Any) -> None:
    client = await client_for([{"use": "headers", "routes": ["/api/users"], "config": {
        "request": {"set": {"X-Consumer": "{consumer}", "X-Source": "gw"}, "add": {"X-Env": "prod"},
                    "remove": ["X-Debug"]},
        "response": {"set": {"Cache-Control": "no-store"}, "remove": ["X-Internal"],
                     "add": {"X-Trace": "{request_id}"}}}}])
    resp = await client.get("/api/users/_mock/echo", headers={
        "X-API-Key": "key-alice", "X-Debug": "1", "X-Source": "client", "X-Env": "dev"})
    fields = seen(resp)
    assert fields["x-consumer"] == ["alice"] and fields["x-source"] == ["gw"]
    assert fields["x-env"] == ["dev"]  # add: only when absent
    assert "x-debug" not in fields
    shaped = await client.get("/api/users/_mock/respond", params={"h": "X-Internal: secret"})
    assert shaped.status_code == 200
    assert "x-internal" not in shaped.headers
    assert shaped.headers["cache-control"] == "no-store"
    assert shaped.headers["x-trace"] == shaped.headers["x-request-id"]


async def test_a_plugin_limited_to_some_routes_leaves_the_others_alone(client_for: Any) -> None:
    client = await client_for([{"use": "headers", "routes": ["/api/users"],
                                "config": {"request": {"set": {"X-Source": "gw"}}}}])
    assert seen(await client.get("/api/users/_mock/echo"))["x-source"] == ["gw"]
    assert "x-source" not in seen(await client.get("/api/other/_mock/echo"))


# -- ip-restriction ------------------------------------------------------------------------------
async def test_ip_restriction_refuses_before_identity_and_honours_trusted_proxies(client_for: Any) -> None:
    client = await client_for(
        [{"use": "ip-restriction", "routes": ["/api/users"], "config": {"allow": ["10.0.0.0/8"],
                                                                          "deny": ["10.6.6.0/24"]}}],
        proxy={"trusted_proxies": ["127.0.0.1/32"]})
    # Runs first: a denied address gets 403 even with a bad key (identity would say 401).
    refused = await client.get("/api/users/1", headers={"X-API-Key": "wrong"})
    assert refused.status_code == 403 and refused.json()["type"].endswith("ip-not-allowed")
    allowed = await client.get("/api/users/1", headers={"X-Forwarded-For": "10.1.2.3"})
    assert allowed.status_code == 200
    denied = await client.get("/api/users/1", headers={"X-Forwarded-For": "10.6.6.6"})
    assert denied.status_code == 403
    assert (await client.get("/api/other/_mock/echo")).status_code == 200  # not its route


def test_ip_restriction_matches_v4_mapped_v6_and_refuses_what_is_not_an_address() -> None:
    plugin = IpRestriction(IpRestriction.Settings(allow=["192.0.2.0/24", "2001:db8::/32"]),
                           PolicyDeps(store=embedded_store()))
    assert plugin.allowed("192.0.2.9") and plugin.allowed("::ffff:192.0.2.9")
    assert plugin.allowed("2001:db8::1") and not plugin.allowed("2001:db9::1")
    assert not plugin.allowed("198.51.100.1") and not plugin.allowed("not-an-ip")
