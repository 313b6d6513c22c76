"""JWT bearer tokens beside API keys, end to end: real RS256 and ES256 key pairs in a JWKS file
(and at a JWKS URL), an HS256 secret from the environment, a real gateway over sockets in front
of a mock service that echoes what it received."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from gateway.config import ConfigError, parse_config
from tests.support.inproc import running_gateway, running_service, start_app

ISSUER, AUDIENCE, SECRET = "https://idp.test/", "gateway", "a-long-test-secret-of-32-bytes!!"
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
API_KEY = "plain-api-key"


def jwk(private_key: Any, kid: str, alg: str) -> dict[str, Any]:
    algorithm = jwt.algorithms.RSAAlgorithm if alg == "RS256" else jwt.algorithms.ECAlgorithm
    document = json.loads(algorithm.to_jwk(private_key.public_key()))
    return {**document, "kid": kid, "alg": alg, "use": "sig"}


def token(key: Any = RSA_KEY, alg: str = "RS256", kid: str | None = "rsa1", **claims: Any) -> str:
    now = int(time.time())
    body = {"sub": "alice", "plan": "premium", "iss": ISSUER, "aud": AUDIENCE, "iat": now,
            "exp": now + 300, **claims}
    body = {k: v for k, v in body.items() if v is not None}
    return jwt.encode(body, key, algorithm=alg, headers={"kid": kid} if kid else None)


def jwt_config(users: str, **jwt_settings: Any) -> dict[str, Any]:
    return {
        "services": {"users": {"url": users}},
        "routes": {"/api/users": "users"},
        "rate_limits": {"default": 100, "premium": 1000, "anonymous": 50},
        "cache": {"enabled": False}, "circuit_breaker": {"enabled": False},
        "auth": {"consumers": [{"id": "key-user", "tier": "default",
                                "key_sha256": hashlib.sha256(API_KEY.encode()).hexdigest()}],
                 "jwt": {"issuer": ISSUER, "audience": AUDIENCE, "leeway": 10,
                         "claims": {"consumer": "sub", "tier": "plan"}, **jwt_settings}},
        "logging": {"level": "WARNING"},
    }


@pytest.fixture
def jwks_file(tmp_path: Path) -> str:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [jwk(RSA_KEY, "rsa1", "RS256"), jwk(EC_KEY, "ec1", "ES256")]}))
    return str(path)


@pytest.fixture
async def gw(jwks_file: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[httpx.AsyncClient]:
    monkeypatch.setenv("TEST_JWT_SECRET", SECRET)
    async with running_service("users") as users:
        config = jwt_config(users, jwks_file=jwks_file, secret_env="TEST_JWT_SECRET",
                            algorithms=["RS256", "ES256", "HS256"])
        async with running_gateway(config) as app:
            async with httpx.AsyncClient(base_url=app.url, timeout=10) as client:
                yield client


async def echo(client: httpx.AsyncClient, bearer: str | None = None, **headers: str) -> httpx.Response:
    if bearer is not None:
        headers["authorization"] = f"Bearer {bearer}"
    return await client.get("/api/users/_mock/echo", headers=headers)


def received(response: httpx.Response) -> dict[str, str]:
    return {k.lower(): v for k, v in response.json()["headers"]}


@pytest.mark.parametrize(("key", "alg", "kid"), [(RSA_KEY, "RS256", "rsa1"), (EC_KEY, "ES256", "ec1"),
                                                 (SECRET, "HS256", None)])
async def test_a_valid_token_names_the_consumer_and_its_tier(gw: httpx.AsyncClient, key: Any, alg: str,
                                                             kid: str | None) -> None:
    response = await echo(gw, token(key, alg, kid))
    assert response.status_code == 200, response.text
    seen = received(response)
    assert seen["x-user-id"] == "alice" and seen["x-user-tier"] == "premium"
    assert "authorization" not in seen  # the credential is not forwarded
    assert "q=1000" in response.headers["ratelimit-policy"]


AGO, AHEAD = "ago", "ahead"  # times relative to the request, resolved when it is sent


@pytest.mark.parametrize(("claims", "why"), [
    ({"exp": (AGO, 60)}, "expired"),
    ({"nbf": (AHEAD, 120)}, "not valid yet"),
    ({"aud": "someone-else"}, "another audience"),
    ({"iss": "https://evil.test/"}, "another issuer"),
    ({"sub": None}, "'sub' claim"),
    ({"exp": None}, "exp"),
])
async def test_a_bad_token_is_a_401_with_a_bearer_challenge(gw: httpx.AsyncClient, claims: dict[str, Any],
                                                            why: str) -> None:
    now = int(time.time())
    resolved = {k: (now - v[1] if v[0] == AGO else now + v[1]) if isinstance(v, tuple) else v
                for k, v in claims.items()}
    response = await echo(gw, token(**resolved))
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith('Bearer realm="gateway", error="invalid_token"')
    assert why in response.json()["detail"]


async def test_the_leeway_forgives_a_little_clock_skew(gw: httpx.AsyncClient) -> None:
    assert (await echo(gw, token(exp=int(time.time()) - 3))).status_code == 200
    assert (await echo(gw, token(nbf=int(time.time()) + 3))).status_code == 200


async def test_forged_tokens_are_refused(gw: httpx.AsyncClient) -> None:
    other = await echo(gw, token(OTHER_RSA_KEY))  # the right kid, the wrong key
    assert other.status_code == 401 and "signature" in other.json()["detail"].lower()
    unsigned = jwt.encode({"sub": "alice", "exp": int(time.time()) + 60, "iss": ISSUER, "aud": AUDIENCE},
                          None, algorithm="none")
    assert (await echo(gw, unsigned)).status_code == 401
    # algorithm confusion: HS256 "signed" with the RSA public key as the secret
    pem = RSA_KEY.public_key().public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    header = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT","kid":"rsa1"}').rstrip(b"=")
    payload = base64.urlsafe_b64encode(json.dumps(
        {"sub": "alice", "exp": int(time.time()) + 60, "iss": ISSUER, "aud": AUDIENCE}).encode()).rstrip(b"=")
    signature = base64.urlsafe_b64encode(hmac.new(pem, header + b"." + payload, hashlib.sha256).digest()).rstrip(b"=")
    confused = (header + b"." + payload + b"." + signature).decode()
    assert (await echo(gw, confused)).status_code == 401
    assert (await echo(gw, token(kid="nobody"))).status_code == 401


async def test_a_tier_that_is_not_configured_is_the_default(gw: httpx.AsyncClient) -> None:
    response = await echo(gw, token(plan="platinum"))
    assert response.status_code == 200 and received(response)["x-user-tier"] == "default"


async def test_api_keys_still_work_beside_tokens(gw: httpx.AsyncClient) -> None:
    by_header = await echo(gw, **{"x-api-key": API_KEY})
    assert by_header.status_code == 200 and received(by_header)["x-user-id"] == "key-user"
    opaque = await echo(gw, API_KEY)  # a Bearer that is not a JWT is an API key
    assert opaque.status_code == 200 and received(opaque)["x-user-id"] == "key-user"
    anonymous = await echo(gw)
    assert anonymous.status_code == 200 and "x-user-id" not in received(anonymous)


async def test_keys_from_a_jwks_url_and_a_rotation(tmp_path: Path) -> None:
    served = {"keys": [jwk(RSA_KEY, "rsa1", "RS256")]}

    async def jwks(_: web.Request) -> web.Response:
        return web.json_response(served)

    app = web.Application()
    app.router.add_get("/jwks.json", jwks)
    runner, url = await start_app(app)
    try:
        async with running_service("users") as users:
            config = jwt_config(users, jwks_url=url + "/jwks.json", refresh_interval=3600,
                                algorithms=["RS256", "ES256"])
            async with running_gateway(config) as gateway, httpx.AsyncClient(base_url=gateway.url) as client:
                assert (await echo(client, token())).status_code == 200
                served["keys"].append(jwk(EC_KEY, "ec2", "ES256"))
                new = token(EC_KEY, "ES256", "ec2")
                assert (await echo(client, new)).status_code == 401  # unknown kid: refetched, not waited for
                for _ in range(50):
                    await asyncio.sleep(0.02)
                    if (await echo(client, new)).status_code == 200:
                        break
                else:
                    raise AssertionError("the rotated key was never fetched")
    finally:
        await runner.cleanup()


def test_config_errors_name_the_field(tmp_path: Path) -> None:
    base = {"services": {"users": {"url": "http://127.0.0.1:9"}}, "routes": {"/api/users": "users"}}
    with pytest.raises(ConfigError, match="auth.jwt"):
        parse_config({**base, "auth": {"jwt": {"algorithms": ["RS256"]}}})
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="jwks_file"):
        parse_config({**base, "auth": {"jwt": {"jwks_file": str(bad)}}})
    with pytest.raises(ConfigError, match="algorithms"):
        parse_config({**base, "auth": {"jwt": {"jwks_file": str(bad), "algorithms": ["none"]}}})


async def test_a_route_can_require_a_jwt_or_an_api_key(jwks_file: str) -> None:
    async with running_service("users") as users:
        config = jwt_config(users, jwks_file=jwks_file)
        config["routes"] = {"/api/users": {"service": "users", "auth": {"require": ["jwt"]}},
                            "/api/keys": {"service": "users", "strip_prefix": True,
                                          "auth": {"require": ["api_key"]}},
                            "/api/open": {"service": "users", "strip_prefix": True}}
        async with running_gateway(config) as app, httpx.AsyncClient(base_url=app.url) as client:
            async def status(path: str, **headers: str) -> int:
                return (await client.get(path, headers=headers)).status_code

            bearer = {"authorization": f"Bearer {token()}"}
            key = {"x-api-key": API_KEY}
            assert await status("/api/users/_mock/echo", **bearer) == 200
            refused = await client.get("/api/users/_mock/echo", headers=key)
            assert refused.status_code == 401 and "bearer JWT" in refused.json()["detail"]
            assert refused.headers["www-authenticate"].startswith("Bearer")
            assert await status("/api/users/_mock/echo") == 401  # anonymous
            assert await status("/api/keys/_mock/echo", **key) == 200
            assert await status("/api/keys/_mock/echo", **bearer) == 401
            assert await status("/api/open/_mock/echo") == 200  # the route without a rule


def test_a_route_requiring_jwt_needs_auth_jwt() -> None:
    base = {"services": {"users": {"url": "http://127.0.0.1:9"}}}
    with pytest.raises(ConfigError, match=r"routes\./api/users\.auth"):
        parse_config({**base, "routes": {"/api/users": {"service": "users", "auth": {"require": ["jwt"]}}}})
    with pytest.raises(ConfigError, match="auth.mode"):
        parse_config({**base, "auth": {"mode": "headers"},
                      "routes": {"/api/users": {"service": "users", "auth": {"require": ["api_key"]}}}})


async def test_a_jwt_with_the_admin_claim_may_use_the_admin_api(jwks_file: str) -> None:
    async with running_service("users") as users:
        config = jwt_config(users, jwks_file=jwks_file)
        config["cache"] = {"enabled": True}
        config["auth"]["jwt"]["claims"] |= {"admin": "roles", "admin_value": "gateway-admin"}
        async with running_gateway(config) as app, httpx.AsyncClient(base_url=app.url) as client:
            async def purge(bearer: str | None) -> int:
                headers = {"authorization": f"Bearer {bearer}"} if bearer else {}
                response = await client.post("/admin/cache/purge", json={"url": "/api/users/1"}, headers=headers)
                return response.status_code

            assert await purge(token(roles=["reader", "gateway-admin"])) == 200
            assert await purge(token(roles=["reader"])) == 403  # verified, but not an admin
            assert await purge(token(roles="gateway-admin", exp=int(time.time()) - 60)) == 401  # expired
            assert await purge(None) == 401
            on_the_path = await client.request("PURGE", "/api/users/1",
                                               headers={"authorization": f"Bearer {token(roles=['gateway-admin'])}"})
            assert on_the_path.status_code == 200
            refused = await client.request("PURGE", "/api/users/1", headers={"authorization": f"Bearer {token()}"})
            assert refused.status_code == 403
