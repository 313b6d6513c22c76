"""IdentityPolicy: API keys, anonymous callers, spoofed identity headers, trusted-header mode."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from gateway.config import GatewayConfig
from gateway.identity import IdentityPolicy, admin_key_matches, key_digest
from gateway.store import embedded_store
from tests.ratelimit.conftest import gateway_config, make_ctx

ALICE = hashlib.sha256(b"demo-key-alice").hexdigest()
PREMIUM = hashlib.sha256(b"demo-key-premium").hexdigest()
ADMIN = hashlib.sha256(b"demo-admin-key").hexdigest()


def config(**auth: Any) -> GatewayConfig:
    return gateway_config(
        auth={
            "consumers": [
                {"id": "alice", "tier": "default", "key_sha256": ALICE},
                {"id": "premium-user", "tier": "premium", "key_sha256": PREMIUM},
            ],
            "admin_keys_sha256": [ADMIN],
            **auth,
        }
    )


def identify(
    cfg: GatewayConfig, headers: list[tuple[bytes, bytes]], client_ip: str = "198.51.100.4"
):
    ctx = make_ctx(cfg, headers=headers, client_ip=client_ip)
    early = IdentityPolicy.from_config(cfg).stage(ctx, embedded_store().batch())
    return ctx, early


def test_demo_key_digests_are_the_documented_ones() -> None:
    assert (
        key_digest("demo-key-alice")
        == "f80024220afd493b4d9592af870de7afe98061992d28fdb75480c9b717783fa2"
    )
    assert (
        key_digest("demo-key-premium")
        == "a236634bf0c5b765ed511a135728313cd986f9116ff5e6e39b968b8b2eddd587"
    )
    assert (
        key_digest("demo-admin-key")
        == "ac5bb3526d3be432ba19fb1fc0712d350c160bd2169cd24401c9fcaeaac2d860"
    )


def test_x_api_key_resolves_the_consumer_and_its_tier() -> None:
    ctx, early = identify(config(), [(b"x-api-key", b"demo-key-premium")])
    assert early is None
    assert ctx.consumer is not None
    assert (ctx.consumer.id, ctx.consumer.tier, ctx.consumer.authenticated) == (
        "premium-user",
        "premium",
        True,
    )
    assert ctx.consumer.rate_key == "c:premium-user"


def test_bearer_token_works_like_x_api_key() -> None:
    ctx, early = identify(config(), [(b"authorization", b"Bearer demo-key-alice")])
    assert early is None and ctx.consumer is not None and ctx.consumer.id == "alice"


def test_unknown_key_is_a_401_problem_with_a_challenge() -> None:
    for headers in (
        [(b"x-api-key", b"nope")],
        [(b"authorization", b"Bearer nope")],
        [(b"x-api-key", b"")],
    ):
        ctx, early = identify(config(), headers)
        assert early is not None and early.status == 401
        assert early.header(b"content-type") == b"application/problem+json"
        assert (early.header(b"www-authenticate") or b"").startswith(b"Bearer")
        body = json.loads(early.body)
        assert body["status"] == 401 and body["detail"]
        assert ctx.consumer is None


def test_no_key_is_anonymous_keyed_by_client_ip() -> None:
    ctx, early = identify(config(), [], client_ip="198.51.100.4")
    assert early is None and ctx.consumer is not None
    assert (ctx.consumer.tier, ctx.consumer.authenticated, ctx.consumer.rate_key) == (
        "anonymous",
        False,
        "ip:198.51.100.4",
    )


def test_spoofed_identity_headers_are_replaced_by_the_resolved_ones() -> None:
    spoof = [(b"x-user-id", b"admin"), (b"x-user-tier", b"premium")]
    ctx, _ = identify(config(), spoof)
    assert ctx.consumer is not None and ctx.consumer.tier == "anonymous"
    assert ctx.header(b"x-user-id") is None
    assert [v for k, v in ctx.headers if k == b"x-user-tier"] == [b"anonymous"]

    ctx, _ = identify(config(), [*spoof, (b"x-api-key", b"demo-key-alice")])
    assert [v for k, v in ctx.headers if k == b"x-user-id"] == [b"alice"]
    assert [v for k, v in ctx.headers if k == b"x-user-tier"] == [b"default"]


def test_credentials_are_not_forwarded_unless_configured() -> None:
    ctx, _ = identify(config(), [(b"x-api-key", b"demo-key-alice")])
    assert ctx.header(b"x-api-key") is None
    ctx, _ = identify(config(), [(b"authorization", b"Bearer demo-key-alice")])
    assert ctx.header(b"authorization") is None
    ctx, _ = identify(config(hide_credentials=False), [(b"x-api-key", b"demo-key-alice")])
    assert ctx.header(b"x-api-key") == b"demo-key-alice"


def test_basic_authorization_is_not_ours_and_passes_through() -> None:
    ctx, early = identify(config(), [(b"authorization", b"Basic dXNlcjpwYXNz")])
    assert early is None and ctx.consumer is not None and ctx.consumer.tier == "anonymous"
    assert ctx.header(b"authorization") == b"Basic dXNlcjpwYXNz"


def test_headers_mode_trusts_the_proxy_headers() -> None:
    cfg = config(mode="headers")
    ctx, _ = identify(cfg, [(b"x-user-id", b"u42"), (b"x-user-tier", b"premium")])
    assert ctx.consumer is not None and (ctx.consumer.id, ctx.consumer.tier) == ("u42", "premium")
    assert ctx.consumer.rate_key == "u:u42"

    ctx, _ = identify(cfg, [(b"x-user-id", b"u42"), (b"x-user-tier", b"platinum")])
    assert ctx.consumer is not None and ctx.consumer.tier == "default"  # unknown tier
    assert [v for k, v in ctx.headers if k == b"x-user-tier"] == [b"default"]

    ctx, _ = identify(cfg, [(b"x-user-tier", b"premium")])
    assert ctx.consumer is not None and ctx.consumer.tier == "anonymous"  # no id, no tier

    ctx, early = identify(cfg, [(b"x-user-id", b"x" * 500)])
    assert early is not None and early.status == 400


def test_admin_keys() -> None:
    cfg = config()
    assert admin_key_matches(cfg, "demo-admin-key")
    assert admin_key_matches(cfg, b"demo-admin-key")
    assert not admin_key_matches(cfg, "demo-key-alice")
    assert not admin_key_matches(cfg, None)
