"""Cluster-wide circuit breaker: states shared in Redis, leased half-open probes, immediate 503s.

Its schema is `gateway.breaker.settings`. The policy is loaded on first use: `gateway.config`
imports the schema, and the policy imports `gateway.config`, so reading the schema must not
load the policy.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.breaker.policy import CircuitBreakerPolicy
    from gateway.breaker.state import BreakerRules, BreakerState

__all__ = ["BreakerRules", "BreakerState", "CircuitBreakerPolicy"]
_HOMES = {
    "BreakerRules": "gateway.breaker.state",
    "BreakerState": "gateway.breaker.state",
    "CircuitBreakerPolicy": "gateway.breaker.policy",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value
