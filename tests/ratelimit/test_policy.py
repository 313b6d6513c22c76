"""RateLimitPolicy through a hand-driven chain: 429s, headers, tiers, route overrides, metrics."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from typing import Any

from gateway.config import GatewayConfig
from gateway.identity import IdentityPolicy
from gateway.ratelimit import RateLimitPolicy
from gateway.store import Store
from tests.ratelimit.conftest import gateway_config, header, make_ctx, run_chain

PREMIUM = hashlib.sha256(b"demo-key-premium").hexdigest()
ALICE = hashlib.sha256(b"demo-key-alice").hexdigest()

# RateLimit-Policy / RateLimit members per draft-ietf-httpapi-ratelimit-headers (-08 .. -11).
POLICY_ITEM = re.compile(r'^"[^"\\]+";q=\d+;w=\d+$')
LIVE_ITEM = re.compile(r'^"[^"\\]+";r=\d+;t=\d+$')


def config(**extra: Any) -> GatewayConfig:
    sections: dict[str, Any] = {
        "rate_limits": {"default": 5, "anonymous": 3, "premium": 20},
        "auth": {
            "consumers": [
                {"id": "alice", "tier": "default", "key_sha256": ALICE},
                {"id": "premium-user", "tier": "premium", "key_sha256": PREMIUM},
            ]
        },
    }
    sections.update(extra)
    return gateway_config(**sections)


def chain(cfg: GatewayConfig, store: Store, **deps: Any) -> list[Any]:
    return [IdentityPolicy.from_config(cfg), RateLimitPolicy.from_config(cfg, store, **deps)]


async def send(policies: list[Any], store: Store, cfg: GatewayConfig, **kw: Any):
    ctx = make_ctx(cfg, **kw)
    response = await run_chain(policies, store, ctx)
    return ctx, response


async def test_tier_limit_then_429_problem_with_retry_after(store: Store) -> None:
    cfg = config()
    policies = chain(cfg, store)
    key = [(b"x-api-key", b"demo-key-alice")]
    statuses = [(await send(policies, store, cfg, headers=key))[1].status for _ in range(7)]
    assert statuses == [200] * 5 + [429] * 2

    ctx, response = await send(policies, store, cfg, headers=key)
    assert response.status == 429
    assert response.header(b"content-type") == b"application/problem+json"
    body = json.loads(response.body)
    assert body["status"] == 429 and "5 requests per 60 s" in body["detail"]
    retry = header(ctx, response, b"retry-after")
    assert retry is not None and retry.isdigit() and 1 <= int(retry) <= 120
    assert (
        header(ctx, response, b"ratelimit")
        == f'"default";r=0;t={header(ctx, response, b"x-ratelimit-reset")}'
    )
    assert ctx.upstream is None  # the backend never saw it


async def test_headers_on_every_routed_response(store: Store) -> None:
    cfg = config()
    policies = chain(cfg, store)
    ctx, response = await send(policies, store, cfg, headers=[(b"x-api-key", b"demo-key-alice")])
    assert response.status == 200
    assert header(ctx, response, b"ratelimit-policy") == '"default";q=5;w=60'
    live = header(ctx, response, b"ratelimit")
    assert live is not None and LIVE_ITEM.match(live) and live.startswith('"default";r=4;')
    assert header(ctx, response, b"x-ratelimit-limit") == "5"
    assert header(ctx, response, b"x-ratelimit-remaining") == "4"
    reset = header(ctx, response, b"x-ratelimit-reset")
    assert reset is not None and 0 <= int(reset) <= 60
    assert ctx.rate_limit_remaining == 4


async def test_several_windows_and_a_route_override_in_one_call(store: Store) -> None:
    cfg = config(
        rate_limits={
            "default": [{"limit": 3, "window": 1}, {"limit": 100, "window": 60}],
            "anonymous": 3,
            "premium": 20,
        },
        routes={
            "/api/orders": {
                "service": "orders",
                "rate_limit": {"windows": [{"limit": 2, "window": 60}], "methods": ["post"]},
            },
            "/api/users": "users",
        },
    )
    policies = chain(cfg, store)
    key = [(b"x-api-key", b"demo-key-alice")]
    batch = store.batch()
    ctx = make_ctx(cfg, "/api/orders", method="POST", headers=key)
    for p in policies:
        p.stage(ctx, batch)
    assert len(batch) == 1  # one script call for all three windows

    posts = [
        await send(policies, store, cfg, path="/api/orders", method="POST", headers=key)
        for _ in range(3)
    ]
    assert [r.status for _, r in posts] == [200, 200, 429]
    ctx, response = posts[0]
    members = (header(ctx, response, b"ratelimit-policy") or "").split(", ")
    assert members == ['"default-1s";q=3;w=1', '"default-60s";q=100;w=60', '"/api/orders";q=2;w=60']
    assert all(POLICY_ITEM.match(m) for m in members)
    assert all(LIVE_ITEM.match(m) for m in (header(ctx, response, b"ratelimit") or "").split(", "))
    assert header(ctx, response, b"x-ratelimit-limit") == "2"  # the most restrictive window

    # GET on the same route is not under the POST override (but still under the tier).
    ctx, response = await send(policies, store, cfg, path="/api/orders", method="GET", headers=key)
    assert response.status == 200
    assert '"/api/orders"' not in (header(ctx, response, b"ratelimit-policy") or "")


async def test_spoofed_premium_tier_header_gets_no_premium_limit(store: Store) -> None:
    cfg = config()
    policies = chain(cfg, store)
    spoof = [(b"x-user-tier", b"premium"), (b"x-user-id", b"premium-user")]
    statuses = [(await send(policies, store, cfg, headers=spoof))[1].status for _ in range(5)]
    assert statuses == [200] * 3 + [429] * 2  # the anonymous limit, not premium's 20
    ctx, _ = await send(policies, store, cfg, headers=[(b"x-api-key", b"demo-key-premium")])
    assert header(ctx, _, b"x-ratelimit-limit") == "20"


async def test_anonymous_callers_are_limited_per_ip(store: Store) -> None:
    cfg = config()
    policies = chain(cfg, store)
    for _ in range(3):
        assert (await send(policies, store, cfg, client_ip="192.0.2.1"))[1].status == 200
    assert (await send(policies, store, cfg, client_ip="192.0.2.1"))[1].status == 429
    assert (await send(policies, store, cfg, client_ip="192.0.2.2"))[1].status == 200


async def test_300_concurrent_requests_through_the_policy_admit_exactly_50(store: Store) -> None:
    cfg = config(
        rate_limits={"default": 50, "anonymous": 50, "premium": 50},
        rate_limit={"algorithm": "sliding_log"},
    )
    policies = chain(cfg, store)
    results = await asyncio.gather(
        *(
            send(policies, store, cfg, headers=[(b"x-api-key", b"demo-key-alice")])
            for _ in range(300)
        )
    )
    statuses = [r.status for _, r in results]
    assert statuses.count(200) == 50 and statuses.count(429) == 250


async def test_metrics_show_cluster_wide_usage_per_consumer(store: Store) -> None:
    cfg = config()
    policies = chain(cfg, store)
    limiter: RateLimitPolicy = policies[1]
    for _ in range(7):
        await send(policies, store, cfg, headers=[(b"x-api-key", b"demo-key-alice")])
    await send(policies, store, cfg)
    await limiter.usage.flush()
    # A second replica's policy on the same store sees the same totals.
    other = RateLimitPolicy.from_config(cfg, store)
    metrics = await other.metrics()
    assert metrics["store_mode"] == "shared" and metrics["cluster_wide"] is True
    assert metrics["consumers"]["alice"] == {"admitted": 5, "rejected": 2}
    assert metrics["consumers"]["anonymous"] == {"admitted": 1, "rejected": 0}
    json.dumps(metrics)


async def test_usage_tracks_at_most_max_consumers_and_files_the_rest_as_other(store: Store) -> None:
    # headers mode: every X-User-ID is a consumer, so a client could invent millions of them.
    cfg = config(auth={"mode": "headers"},
                 rate_limit={"usage_max_consumers": 3, "usage_flush_interval": 60},
                 redis={"key_prefix": "usagecap"})
    replicas = [chain(cfg, store), chain(cfg, store)]
    for i in range(10):
        policies = replicas[i % 2]  # two replicas, one shared hash
        for _ in range(2):
            await send(policies, store, cfg, headers=[(b"x-user-id", f"user-{i}".encode())])
        await policies[1].usage.flush()
    # A tracked consumer keeps being counted on its own.
    await send(replicas[1], store, cfg, headers=[(b"x-user-id", b"user-0")])
    await replicas[1][1].usage.flush()

    metrics = await replicas[0][1].metrics()
    assert metrics["max_consumers"] == 3
    assert set(metrics["consumers"]) == {"user-0", "user-1", "user-2"}
    assert metrics["consumers"]["user-0"] == {"admitted": 3, "rejected": 0}
    assert metrics["other_consumers"] == {"admitted": 14, "rejected": 0}
    total = sum(c["admitted"] for c in metrics["consumers"].values()) + 14
    assert total == 21  # nothing lost, nothing counted twice
    raw = await store.call("HLEN", "usagecap:rl:usage")
    assert raw <= 3 + 1 + 2  # three consumers, the count, _other (admitted)


async def test_usage_not_yet_flushed_respects_the_cap_too(store: Store) -> None:
    cfg = config(auth={"mode": "headers"},
                 rate_limit={"usage_max_consumers": 1, "usage_flush_interval": 60},
                 redis={"key_prefix": "usagecap2"})
    policies = chain(cfg, store)
    for name in (b"a", b"b", b"c"):
        await send(policies, store, cfg, headers=[(b"x-user-id", name)])
    metrics = await policies[1].metrics()  # before any flush
    assert len(metrics["consumers"]) == 1
    assert metrics["other_consumers"]["admitted"] == 2
    await policies[1].usage.flush()
    flushed = await policies[1].metrics()
    assert flushed["consumers"] == metrics["consumers"]
    assert flushed["other_consumers"] == metrics["other_consumers"]


async def test_disabled_rate_limiting_stages_nothing(store: Store) -> None:
    cfg = config(rate_limit={"enabled": False})
    policies = chain(cfg, store)
    ctx = make_ctx(cfg)
    batch = store.batch()
    for p in policies:
        p.stage(ctx, batch)
    assert len(batch) == 0
    ctx, response = await send(policies, store, cfg)
    assert response.status == 200 and header(ctx, response, b"ratelimit") is None


async def test_consumers_whose_ids_differ_only_by_an_escape_have_their_own_quotas(store: Store) -> None:
    # `a{b` percent-encoded inside the hash tag is `a%7Bb`: '%' is encoded too, so the two
    # consumers never share a counter.
    brace, escaped = hashlib.sha256(b"key-brace").hexdigest(), hashlib.sha256(b"key-escaped").hexdigest()
    cfg = config(rate_limits={"default": 2, "anonymous": 1, "premium": 20},
                 auth={"consumers": [{"id": "a{b", "tier": "default", "key_sha256": brace},
                                     {"id": "a%7Bb", "tier": "default", "key_sha256": escaped}]})
    policies = chain(cfg, store)
    first = [(await send(policies, store, cfg, headers=[(b"x-api-key", b"key-brace")]))[1].status
             for _ in range(3)]
    second = [(await send(policies, store, cfg, headers=[(b"x-api-key", b"key-escaped")]))[1].status
              for _ in range(3)]
    assert first == [200, 200, 429]
    assert second == [200, 200, 429]
