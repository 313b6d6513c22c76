"""Which policies run, in which order: the one place the chain is composed.

    plugins at `first`                  (e.g. ip-restriction)
    identity
    plugins at `after_identity`         (the default place; e.g. headers)
    rate limit -> cache -> circuit breaker
    plugins at `before_upstream`
    (the upstream call is the terminal)

Plugins at one place keep the order of the config's `plugins:` list.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from gateway.breaker import CircuitBreakerPolicy
from gateway.cache.policy import CachePolicy
from gateway.config import GatewayConfig
from gateway.identity import IdentityPolicy
from gateway.identity.directory import ConsumerDirectory
from gateway.plugins.loading import build as build_plugin
from gateway.policy import PolicyDeps
from gateway.ratelimit.policy import RateLimitPolicy
from gateway.replicas import ReplicaRegistry
from gateway.store import Store


class Composition(NamedTuple):
    policies: list[Any]
    routes: dict[int, frozenset[str]]  # position -> the route prefixes a plugin is limited to


def build(config: GatewayConfig, store: Store, replicas: ReplicaRegistry | None,
          directory: ConsumerDirectory | None = None) -> Composition:
    """The chain's policies, from the config and the few things they share (never the gateway);
    `directory`: the run-time consumers, which outlive a reload."""
    deps = PolicyDeps(store=store, key_prefix=config.redis.key_prefix, replicas=replicas)
    places: dict[str, list[tuple[Any, frozenset[str] | None]]] = {
        "first": [], "after_identity": [], "before_upstream": []}
    for plugin in config.plugins:
        routes = frozenset(plugin.routes) if plugin.routes is not None else None
        places[plugin.place].append((build_plugin(plugin.use, plugin.config, deps), routes))
    built_in: list[Any] = []
    if config.rate_limit.enabled:
        built_in.append(RateLimitPolicy.from_config(config, store, replicas=replicas))
    if config.cache.enabled:
        built_in.append(CachePolicy.from_config(config, store))
    if config.circuit_breaker.enabled or any(s.circuit_breaker for s in config.services.values()):
        built_in.append(CircuitBreakerPolicy.from_config(config, store))
    ordered: list[tuple[Any, frozenset[str] | None]] = [
        *places["first"], (IdentityPolicy.from_config(config, directory), None), *places["after_identity"],
        *((p, None) for p in built_in), *places["before_upstream"]]
    return Composition([p for p, _ in ordered],
                       {i: routes for i, (_, routes) in enumerate(ordered) if routes is not None})
