"""Breaker states and the typed results the breaker backends hand to the policy.

Both backends (`SharedBreaker` in Redis, `LocalBreaker` in-process) speak these types, so the
policy does not care which one answered.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, NamedTuple

from gateway.engine.failures import UPSTREAM_BROKEN, Failure

if TYPE_CHECKING:
    from gateway.breaker.settings import BreakerSettings

log = logging.getLogger("gateway.breaker")


class BreakerState(StrEnum):
    """Where a target's breaker stands; the values are what `X-Circuit-State` carries."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


class TargetView(NamedTuple):
    """One target as the hot-path read saw it.

    `probe_due` is set for half-open targets and for open ones whose open time is over: the
    request then needs a probe lease (`acquire`) before it may go there.
    """

    state: BreakerState
    retry_after_ms: int
    failures: int

    @property
    def probe_due(self) -> bool:
        return self.state is BreakerState.HALF_OPEN


class ServiceView(NamedTuple):
    """Every target of a service, in `config.services[name].upstreams` order."""

    targets: tuple[TargetView, ...]


class Admission(NamedTuple):
    """The answer of `acquire` on the rare path.

    kind "closed": the target turned out closed, send as usual; "probe": a lease was granted
    (`lease` identifies it when the outcome is settled); "rejected": no target may be tried,
    `state` says why (open or half-open) and `retry_after_ms` how long to wait.
    """

    kind: str
    target: int = -1
    lease: int = 0
    retry_after_ms: int = 0
    state: BreakerState = BreakerState.OPEN


class Transition(NamedTuple):
    """A state change made by one call; only the replica whose call made it logs it."""

    service: str
    target: str
    from_state: str
    to_state: str
    reason: str


def log_transition(transition: Transition) -> None:
    service, target, from_state, to_state, reason = transition
    level = logging.INFO if to_state == BreakerState.CLOSED.value else logging.WARNING
    log.log(
        level,
        "circuit breaker %s %s: %s -> %s (%s)",
        service, target, from_state, to_state, reason,
        extra={"service": service, "target": target, "from_state": from_state,
               "to_state": to_state, "reason": reason},
    )


@dataclass(slots=True)
class OutcomeRun:
    """Outcomes of ordinary requests to one target, summarised in arrival order.

    Batching many requests into one record call must not change what consecutive counting
    decides: "5 failures, 1 success" opens a threshold-5 breaker, "1 success, 5 failures" too,
    "3 failures, 1 success, 3 failures" does not. Leading, longest and trailing failure runs are
    enough to decide that exactly against the stored count.
    """

    successes: int = 0
    failures: int = 0
    leading: int = 0  # failures before the first success
    longest: int = 0  # longest run of failures inside the batch
    trailing: int = 0  # failures after the last success

    def add(self, success: bool) -> None:
        if success:
            self.successes += 1
            self.trailing = 0
            return
        self.failures += 1
        self.trailing += 1
        if self.successes == 0:
            self.leading += 1
        self.longest = max(self.longest, self.trailing)

    def run_from(self, count: int) -> tuple[int, int]:
        """(longest consecutive run including the stored `count`, the count afterwards)."""
        if self.successes == 0:
            return count + self.failures, count + self.failures
        return max(count + self.leading, self.longest), self.trailing


class Verdict(NamedTuple):
    """How one upstream exchange counts for its target's breaker."""

    counted: bool
    success: bool


def verdict(status: int | None, failure: Failure | None, client_disconnected: bool,
            failure_statuses: frozenset[int]) -> Verdict:
    """Connect errors, resets, timeouts, broken HTTP framing and the configured statuses are
    failures; 4xx never; a client that went away first says nothing about the upstream, nor
    does a full connection pool (our own limit)."""
    if client_disconnected:
        return Verdict(False, False)
    if failure in UPSTREAM_BROKEN:
        return Verdict(True, False)
    if status is None:
        return Verdict(False, False)
    return Verdict(True, status not in failure_statuses)


class BreakerRules(NamedTuple):
    """A service's `BreakerSettings` in the units the backends work in (milliseconds)."""

    enabled: bool
    error_ratio_mode: bool
    failure_threshold: int
    open_ms: int
    lease_ms: int
    half_open_max_calls: int
    success_threshold: int
    ratio_threshold: float
    window_ms: int
    min_requests: int
    failure_statuses: frozenset[int]

    @classmethod
    def from_settings(cls, settings: BreakerSettings) -> BreakerRules:
        return cls(
            enabled=settings.enabled,
            error_ratio_mode=settings.mode == "error_ratio",
            failure_threshold=settings.failure_threshold,
            open_ms=max(1, round(settings.timeout * 1000)),
            lease_ms=max(1, round(settings.half_open_timeout * 1000)),
            half_open_max_calls=settings.half_open_max_calls,
            success_threshold=settings.success_threshold,
            ratio_threshold=settings.error_ratio.threshold,
            window_ms=max(10, round(settings.error_ratio.window * 1000)),
            min_requests=settings.error_ratio.min_requests,
            failure_statuses=frozenset(settings.failure_statuses),
        )
