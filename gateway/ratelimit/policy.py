"""RateLimitPolicy: per-tier (and per-route) sliding windows shared by every replica.

`stage` puts ONE call of `lua/ratelimit.lua` on the request's batch, covering every window that
applies (the consumer's tier plus the route's override for this method), all keyed under the
consumer's `{rate_key}` hash tag. `handle` reads the verdict: 429 with `Retry-After` when any
window refuses (and then none consumed), otherwise the request goes on. Either way the
`RateLimit-Policy` / `RateLimit` / `X-RateLimit-*` fields go on `ctx.response_headers`.

When the store fails, `rate_limit.on_store_failure` decides:

* `local` (default): an in-process limiter enforces `limit // live replicas` (at least 1), the
  live count being the last one the replica registry saw.
* `open`: admit, and count the event.
* `closed`: 503 with `Retry-After`.

The store fails fast while it is known to be down, so none of these waits on a dead Redis; the
shared counters take over again as soon as the store's probe sees it back.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from gateway.config import GatewayConfig
from gateway.context import Consumer, RequestContext, Response
from gateway.identity import DEFAULT_TIER, anonymous
from gateway.policy import Handler, Policy
from gateway.problem import problem
from gateway.ratelimit.headers import policy_field, ratelimit_headers, retry_after
from gateway.ratelimit.local import LocalLimiter
from gateway.ratelimit.settings import Algorithm, RateWindow
from gateway.ratelimit.usage import OTHER, UsageRecorder
from gateway.ratelimit.windows import (
    Decision,
    WindowSpec,
    format_seconds,
    parse_reply,
    script_args,
)
from gateway.replicas import ReplicaRegistry
from gateway.store import Pending, Store, StoreBatch, StoreError, StoreUnavailable, hash_tag

log = logging.getLogger("gateway.ratelimit")

EVENTS = "_events"  # the usage hash's pseudo-consumer for fallback events


class RouteOverride(NamedTuple):
    """A route's extra windows and the methods they apply to (None: every method)."""

    methods: frozenset[str] | None
    specs: tuple[WindowSpec, ...]


class WindowPlan(NamedTuple):
    """Everything per (tier, route, method) that does not depend on the caller, computed once."""

    specs: tuple[WindowSpec, ...]
    args: list[int]  # the script's ARGV
    key_suffixes: tuple[str, ...]
    policy_header: bytes  # RateLimit-Policy

    @classmethod
    def of(cls, specs: tuple[WindowSpec, ...]) -> WindowPlan:
        return cls(
            specs, script_args(specs), tuple(s.key_suffix for s in specs), policy_field(specs)
        )


class _Staged(NamedTuple):
    consumer: Consumer
    plan: WindowPlan
    pending: Pending


def tier_windows(
    name: str, windows: Sequence[RateWindow], algorithm: Algorithm, scope: str
) -> tuple[WindowSpec, ...]:
    """WindowSpecs named `name` (one window) or `name-<w>s` (several), for the headers."""
    return tuple(
        WindowSpec(
            name if len(windows) == 1 else f"{name}-{format_seconds(w.window)}s",
            scope,
            algorithm,
            w.limit,
            w.window,
        )
        for w in windows
    )


class RateLimitPolicy(Policy):
    """Cluster-exact rate limiting per consumer tier, with a configured store-failure mode."""

    name = "rate_limit"

    def __init__(
        self,
        store: Store,
        tiers: Mapping[str, tuple[WindowSpec, ...]],
        routes: Mapping[str, RouteOverride] | None = None,
        *,
        key_prefix: str = "gw",
        on_store_failure: str = "local",
        headers: bool = True,
        enabled: bool = True,
        replicas: ReplicaRegistry | None = None,
        usage_interval: float = 1.0,
        usage_max_consumers: int = 10_000,
        algorithm: str = "sliding_window",
    ) -> None:
        if DEFAULT_TIER not in tiers:
            raise ValueError("the 'default' tier is required")
        self.store = store
        self.tiers = dict(tiers)
        self.routes = dict(routes or {})
        self.key_prefix = key_prefix
        self.on_store_failure = on_store_failure
        self.headers = headers
        self.enabled = enabled
        self.replicas = replicas
        self.algorithm = algorithm
        self.script = store.script("ratelimit")
        self.local = LocalLimiter()
        self.usage = UsageRecorder(
            store, f"{key_prefix}:rl:usage", usage_interval, usage_max_consumers
        )
        self.decisions: Counter[str] = Counter()  # this replica's, by source and outcome
        # Bounded: tiers x routes x the nine HTTP methods.
        self._plans: dict[tuple[str, str, str], WindowPlan] = {}
        self._own_plans: dict[tuple[tuple[tuple[int, float], ...], str, str], WindowPlan] = {}
        self._last_error_log = 0.0
        store.on_availability(self._store_changed)

    @classmethod
    def from_config(
        cls, config: GatewayConfig, store: Store, replicas: ReplicaRegistry | None = None, **_: Any
    ) -> RateLimitPolicy:
        default = config.rate_limit.algorithm
        tiers = {
            name: tier_windows(name, tier.windows, tier.algorithm or default, "t")
            for name, tier in config.rate_limits.items()
        }
        routes = {}
        for prefix, route in config.routes.items():
            override = route.rate_limit
            if override is None:
                continue
            specs = tier_windows(
                prefix, override.windows, override.algorithm or default, "r" + prefix
            )
            routes[prefix] = RouteOverride(
                frozenset(override.methods) if override.methods else None, specs
            )
        return cls(
            store,
            tiers,
            routes,
            key_prefix=config.redis.key_prefix,
            on_store_failure=config.rate_limit.on_store_failure,
            headers=config.rate_limit.headers,
            enabled=config.rate_limit.enabled,
            replicas=replicas,
            usage_interval=config.rate_limit.usage_flush_interval,
            usage_max_consumers=config.rate_limit.usage_max_consumers,
            algorithm=default,
        )

    # -- which windows apply --------------------------------------------------------------
    def windows_for(self, tier: str, prefix: str, method: str) -> WindowPlan:
        """The windows (tier's, then the route's for this method) with their script ARGV."""
        cache_key = (tier, prefix, method)
        found = self._plans.get(cache_key)
        if found is None:
            specs = self.tiers.get(tier) or self.tiers[DEFAULT_TIER]
            override = self.routes.get(prefix)
            if override is not None and (override.methods is None or method in override.methods):
                specs = specs + override.specs
            found = self._plans[cache_key] = WindowPlan.of(specs)
        return found

    def own_windows(self, windows: tuple[tuple[int, float], ...], prefix: str, method: str) -> WindowPlan:
        """A run-time consumer's own windows (instead of its tier's), then the route's."""
        cache_key = (windows, prefix, method)
        found = self._own_plans.get(cache_key)
        if found is None:
            if len(self._own_plans) > 10_000:  # bounded by the consumers that have their own
                self._own_plans.clear()
            specs = tier_windows("consumer", [RateWindow(limit=n, window=w) for n, w in windows],
                                 self.algorithm, "c")  # type: ignore[arg-type]
            override = self.routes.get(prefix)
            if override is not None and (override.methods is None or method in override.methods):
                specs = specs + override.specs
            found = self._own_plans[cache_key] = WindowPlan.of(specs)
        return found

    # -- the request path -------------------------------------------------------------------
    def stage(self, ctx: RequestContext, batch: StoreBatch) -> _Staged | None:
        if not self.enabled:
            return None
        consumer = ctx.consumer or anonymous(ctx.client_ip)
        if consumer.windows is None:
            plan = self.windows_for(consumer.tier, ctx.route.prefix, ctx.method)
        else:
            plan = self.own_windows(consumer.windows, ctx.route.prefix, ctx.method)
        head = f"{self.key_prefix}:rl:{{{hash_tag(consumer.rate_key)}}}"
        keys = [head + suffix for suffix in plan.key_suffixes]
        return _Staged(consumer, plan, batch.eval(self.script, keys, plan.args))

    async def handle(self, ctx: RequestContext, staged: _Staged | None, call_next: Handler) -> Response:
        if staged is None:
            return await call_next(ctx)
        try:
            decision = parse_reply(staged.plan.specs, staged.pending.result())
        except (StoreError, ValueError) as exc:
            outcome = self._fallback(ctx, staged, exc)
            if isinstance(outcome, Response):
                return outcome
            decision = outcome
        self.decisions[f"{decision.source}_{'admitted' if decision.admitted else 'rejected'}"] += 1
        self.usage.consumer(staged.consumer.id, decision.admitted)
        if self.headers:
            if decision.windows:
                # The local fallback reports its own (smaller) quotas: build that field anew.
                known = staged.plan.policy_header if decision.source == "shared" else None
                ctx.response_headers.extend(ratelimit_headers(decision, known))
            else:
                ctx.response_headers.append((b"ratelimit-policy", staged.plan.policy_header))
        tight = decision.tightest
        if tight is not None:
            ctx.rate_limit_remaining = tight.remaining
        if decision.admitted:
            return await call_next(ctx)
        return self._too_many(ctx, decision)

    def _too_many(self, ctx: RequestContext, decision: Decision) -> Response:
        wait = decision.retry_after
        refused = next(w for w in decision.windows if not w.allowed)
        spec = refused.spec
        return problem(
            429,
            f"Rate limit exceeded: {spec.limit} requests per {format_seconds(spec.window)} s "
            f"({spec.name}). Retry in {wait} s.",
            request_id=ctx.request_id,
            kind="rate-limited",
            headers=[retry_after(wait)],
            policy=spec.name,
            retry_after=wait,
        )

    # -- when the store fails ---------------------------------------------------------------
    def _fallback(
        self, ctx: RequestContext, staged: _Staged, error: Exception
    ) -> Decision | Response:
        if not isinstance(error, StoreUnavailable):
            self._log_error(error)
        mode = self.on_store_failure
        if mode == "open":
            self.usage.count(f"{EVENTS}|open_admitted")
            return Decision(True, (), "open")
        if mode == "closed":
            self.usage.count(f"{EVENTS}|closed_rejected")
            self.decisions["closed_rejected"] += 1
            wait = max(1, math.ceil(self.store.probe_interval))
            headers = [retry_after(wait)]
            if self.headers:
                ctx.response_headers.append((b"ratelimit-policy", staged.plan.policy_header))
            return problem(
                503,
                "Rate limits cannot be checked right now (shared store unavailable).",
                request_id=ctx.request_id,
                kind="rate-limit-store-unavailable",
                headers=headers,
            )
        divisor = self.replicas.live_count if self.replicas is not None else 1
        decision = self.local.check(staged.consumer.rate_key, staged.plan.specs, divisor)
        self.usage.count(f"{EVENTS}|local_{'admitted' if decision.admitted else 'rejected'}")
        return decision

    def _log_error(self, error: Exception) -> None:
        now = time.monotonic()
        if now - self._last_error_log > 10:  # a broken script would otherwise log per request
            self._last_error_log = now
            log.error(
                "rate-limit script failed, using the %s fallback: %s", self.on_store_failure, error
            )

    def _store_changed(self, available: bool) -> None:
        if available:
            self.local.clear()  # the shared counters are authoritative again

    # -- lifecycle and visibility -------------------------------------------------------------
    @property
    def store_mode(self) -> str:
        if self.store.available:
            return "shared"
        return {"local": "local_fallback", "open": "fail_open", "closed": "fail_closed"}[
            self.on_store_failure
        ]

    async def start(self) -> None:
        await self.usage.start()

    async def close(self) -> None:
        await self.usage.close()

    async def metrics(self) -> dict[str, Any]:
        """Per-consumer usage and fallback events (cluster-wide, from Redis) and the store mode."""
        out: dict[str, Any] = {
            "enabled": self.enabled,
            "algorithm": self.algorithm,
            "on_store_failure": self.on_store_failure,
            "store_mode": self.store_mode,
            "live_replicas": self.replicas.live_count if self.replicas is not None else 1,
            "this_replica": {"decisions": dict(self.decisions), "local_keys": len(self.local)},
        }
        try:
            totals = await self.usage.read()
            out["cluster_wide"] = True
        except StoreError:
            totals = {}
            out["cluster_wide"] = False
        out["events"] = totals.pop(EVENTS, {})
        other = totals.pop(OTHER, {})
        out["max_consumers"] = self.usage.max_consumers
        out["other_consumers"] = {"admitted": other.get("admitted", 0),
                                  "rejected": other.get("rejected", 0)}
        out["consumers"] = {
            name: {"admitted": counts.get("admitted", 0), "rejected": counts.get("rejected", 0)}
            for name, counts in sorted(totals.items())
        }
        return out
