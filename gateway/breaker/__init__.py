"""Cluster-wide circuit breaker: states shared in Redis, leased half-open probes, immediate 503s."""

from gateway.breaker.policy import CircuitBreakerPolicy
from gateway.breaker.state import BreakerRules, BreakerState

__all__ = ["BreakerRules", "BreakerState", "CircuitBreakerPolicy"]
