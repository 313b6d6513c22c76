"""Which policies run, in which order: the one place the chain is composed."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.policy import Policy

if TYPE_CHECKING:
    from gateway.runtime import Gateway


def build(gateway: Gateway) -> list[Policy]:
    """identify -> rate limit -> cache -> circuit breaker (the upstream call is the terminal)."""
    return []
