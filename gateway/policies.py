"""Which policies run, in which order: the one place the chain is composed."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.breaker import CircuitBreakerPolicy
from gateway.cache.policy import CachePolicy
from gateway.identity import IdentityPolicy
from gateway.policy import Policy
from gateway.ratelimit.policy import RateLimitPolicy

if TYPE_CHECKING:
    from gateway.runtime import Gateway


def build(gateway: Gateway) -> list[Policy]:
    """identify -> rate limit -> cache -> circuit breaker (the upstream call is the terminal)."""
    config, store = gateway.config, gateway.store
    assert store is not None
    policies: list[Policy] = [IdentityPolicy.from_config(config)]
    if config.rate_limit.enabled:
        policies.append(RateLimitPolicy.from_config(config, store, replicas=gateway.replicas))
    if config.cache.enabled:
        policies.append(CachePolicy.from_config(config, store))
    if config.circuit_breaker.enabled or any(s.circuit_breaker for s in config.services.values()):
        policies.append(CircuitBreakerPolicy.from_config(config, store))
    return policies
