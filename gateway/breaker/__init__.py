"""Cluster-wide circuit breaker: states shared in Redis, leased half-open probes, immediate 503s.

Its schema is `gateway.breaker.settings`. The policy is loaded on first use: `gateway.config`
imports the schema, and the policy imports `gateway.config`, so reading the schema must not
load the policy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.lazy import lazy_exports

if TYPE_CHECKING:
    from gateway.breaker.policy import CircuitBreakerPolicy
    from gateway.breaker.state import BreakerRules, BreakerState

__all__ = ["BreakerRules", "BreakerState", "CircuitBreakerPolicy"]
__getattr__ = lazy_exports(__name__, {
    "BreakerRules": "gateway.breaker.state",
    "BreakerState": "gateway.breaker.state",
    "CircuitBreakerPolicy": "gateway.breaker.policy",
})
