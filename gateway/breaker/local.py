"""An in-process breaker with the shared breaker's semantics, for when the store is down.

It mirrors the Lua scripts step by step (`breaker_read`, `_acquire`, `_record`, `_probe`), so a
replica cut off from Redis keeps protecting its upstreams on its own evidence. The test suite
runs the same scenarios against both backends to keep them identical.

Its state outlives an outage: while the store is up it lies dormant (the shared state decides),
and when the replica needs it again it first catches up with the last shared state it read
(`merge`), so what it learned itself is kept and what the cluster learned since is taken. Per
target, the more severe or more recent knowledge wins:

* open beats closed, and of two opens the one that ends later wins (half-open counts as an open
  that ended when it was seen);
* except that a closed state seen after the other side's open had run out wins: the target was
  probed and closed since, or served fine, so a stale local open never reopens it;
* both closed: the consecutive failure count of the more recent side (never lowered by older
  knowledge), so a flap does not reset it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.breaker.shared import PROBE_FAILURE, PROBE_RELEASE, PROBE_SUCCESS
from gateway.breaker.state import (
    Admission,
    BreakerRules,
    BreakerState,
    OutcomeRun,
    ServiceView,
    TargetView,
    Transition,
)

CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN


@dataclass(slots=True)
class LocalTarget:
    """One target's breaker in this process (times in milliseconds of the local clock)."""

    state: BreakerState = CLOSED
    open_until: float = 0.0
    failures: int = 0
    successes: int = 0
    lease_seq: int = 0
    leases: dict[int, float] = field(default_factory=dict)  # lease -> expiry
    window: dict[int, list[int]] = field(default_factory=dict)  # bucket -> [successes, failures]
    last: tuple[str, str, float, str] | None = None  # from, to, at (wall clock s), reason
    transitions: int = 0
    known_at: float = -math.inf  # when it last learned something (an outcome, a transition, a view)


class LocalBreaker:
    """Breakers of every service in this process only; same rules as `SharedBreaker`."""

    def __init__(self, targets: Mapping[str, Sequence[str]], rules: Mapping[str, BreakerRules],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.targets = {service: list(urls) for service, urls in targets.items()}
        self.rules = rules
        self.clock = clock
        self.services: dict[str, list[LocalTarget]] = {}
        self.synced: dict[str, float] = {}  # service -> when (ms) the shared view merged was read

    def _now(self) -> float:
        return self.clock() * 1000

    # -- lifecycle ---------------------------------------------------------------------------
    def has(self, service: str) -> bool:
        return service in self.services

    def merge(self, service: str, view: ServiceView | None, seen_at: float | None = None) -> None:
        """Catch up with the shared state read at `seen_at` (seconds on this clock; now if None).

        A service seen for the first time starts from that view; one known already keeps what
        it learned where it knows more (see the module's rule). A view no newer than the last
        one merged changes nothing, so calling this before every local use is cheap and safe."""
        targets = self.services.get(service)
        if targets is None:
            targets = self.services[service] = [LocalTarget() for _ in self.targets[service]]
        if view is None or len(view.targets) != len(targets):
            return
        seen_ms = (self.clock() if seen_at is None else seen_at) * 1000
        if seen_ms <= self.synced.get(service, -math.inf):
            return
        self.synced[service] = seen_ms
        for local, seen in zip(targets, view.targets, strict=True):
            _merge_target(local, seen, seen_ms)

    def opens(self) -> list[tuple[str, int, int]]:
        """(service, target index, remaining ms) of every target open here right now."""
        now = self._now()
        return [
            (service, i, int(t.open_until - now))
            for service, targets in self.services.items()
            for i, t in enumerate(targets)
            if t.state is OPEN and t.open_until > now
        ]

    def clear(self) -> None:
        self.services.clear()
        self.synced.clear()

    def _get(self, service: str) -> list[LocalTarget]:
        found = self.services.get(service)
        if found is None:
            self.merge(service, None)
            found = self.services[service]
        return found

    # -- as breaker_read -----------------------------------------------------------------------
    def view(self, service: str) -> ServiceView:
        now = self._now()
        out = []
        for t in self._get(service):
            if t.state is OPEN:
                if now < t.open_until:
                    out.append(TargetView(OPEN, int(t.open_until - now), t.failures))
                else:
                    out.append(TargetView(HALF_OPEN, 0, t.failures))
            else:
                out.append(TargetView(t.state, 0, t.failures))
        return ServiceView(tuple(out))

    # -- as breaker_acquire --------------------------------------------------------------------
    def acquire(self, service: str) -> tuple[Admission, list[Transition]]:
        rules = self.rules[service]
        now = self._now()
        transitions: list[Transition] = []
        retry: float | None = None
        half_open_seen = False
        for index, t in enumerate(self._get(service)):
            if t.state is CLOSED:
                return Admission("closed", index), transitions
            if t.state is OPEN:
                if now < t.open_until:
                    retry = t.open_until - now if retry is None else min(retry, t.open_until - now)
                else:
                    t.state, t.successes = HALF_OPEN, 0
                    t.leases.clear()
                    transitions.append(self._move(service, index, OPEN, HALF_OPEN, "open time elapsed"))
            if t.state is HALF_OPEN:
                half_open_seen = True
                t.leases = {k: exp for k, exp in t.leases.items() if exp > now}
                if len(t.leases) < rules.half_open_max_calls:
                    t.lease_seq += 1
                    t.leases[t.lease_seq] = now + rules.lease_ms
                    return Admission("probe", index, t.lease_seq, state=HALF_OPEN), transitions
        if half_open_seen:
            return Admission("rejected", retry_after_ms=1000, state=HALF_OPEN), transitions
        return Admission("rejected", retry_after_ms=int(retry or 1000), state=OPEN), transitions

    # -- as breaker_record ---------------------------------------------------------------------
    def record(self, service: str, index: int, run: OutcomeRun) -> list[Transition]:
        rules = self.rules[service]
        t = self._get(service)[index]
        if t.state is not CLOSED:
            return []
        now = self._now()
        t.known_at = now
        width = max(1, rules.window_ms // 10)
        bucket = int(now // width)
        counts = t.window.setdefault(bucket, [0, 0])
        counts[0] += run.successes
        counts[1] += run.failures
        t.window = {b: c for b, c in t.window.items() if b > bucket - 10}
        total_s = sum(c[0] for c in t.window.values())
        total_f = sum(c[1] for c in t.window.values())
        longest, after = run.run_from(t.failures)
        reason = None
        if not rules.error_ratio_mode:
            if longest >= rules.failure_threshold:
                reason = f"{longest} consecutive failures"
        else:
            total = total_s + total_f
            if total >= rules.min_requests and total_f / total >= rules.ratio_threshold:
                reason = f"failure ratio {total_f / total:.2f} over {total} requests"
        if reason is None:
            t.failures = after
            return []
        t.state, t.open_until, t.failures, t.successes = OPEN, now + rules.open_ms, 0, 0
        return [self._move(service, index, CLOSED, OPEN, reason)]

    # -- as breaker_probe ----------------------------------------------------------------------
    def settle_probe(self, service: str, index: int, lease: int, outcome: int) -> list[Transition]:
        rules = self.rules[service]
        t = self._get(service)[index]
        t.leases.pop(lease, None)
        if t.state is not HALF_OPEN or outcome == PROBE_RELEASE:
            return []
        if outcome == PROBE_SUCCESS:
            t.successes += 1
            if t.successes < rules.success_threshold:
                return []
            reason = f"probes succeeded: {t.successes}"
            t.state, t.failures, t.successes = CLOSED, 0, 0
            t.window.clear()
            to = CLOSED
        else:
            assert outcome == PROBE_FAILURE
            reason, to = "probe failed", OPEN
            t.state, t.open_until, t.successes = OPEN, self._now() + rules.open_ms, 0
        t.leases.clear()
        return [self._move(service, index, HALF_OPEN, to, reason)]

    def _move(self, service: str, index: int, from_state: BreakerState, to_state: BreakerState,
              reason: str) -> Transition:
        t = self.services[service][index]
        t.last = (from_state.value, to_state.value, time.time(), reason)
        t.transitions += 1
        t.known_at = self._now()
        return Transition(service, self.targets[service][index], from_state.value,
                          to_state.value, reason)

    # -- visibility ----------------------------------------------------------------------------
    def metrics(self) -> dict[str, dict[str, Any]]:
        """Same shape as `SharedBreaker.metrics`, for this process only."""
        now = self._now()
        wall = time.time()
        out: dict[str, dict[str, Any]] = {}
        for service, urls in self.targets.items():
            view = self.view(service)
            width = max(1, self.rules[service].window_ms // 10)
            bucket = int(now // width)
            targets: dict[str, dict[str, Any]] = {}
            for url, t, seen in zip(urls, self._get(service), view.targets, strict=True):
                recent = [c for b, c in t.window.items() if b > bucket - 10]
                targets[url] = {
                    "state": seen.state.value,
                    "retry_after_ms": seen.retry_after_ms,
                    "consecutive_failures": t.failures,
                    "recent_requests": sum(c[0] + c[1] for c in recent),
                    "recent_failures": sum(c[1] for c in recent),
                    "probes_in_flight": sum(1 for exp in t.leases.values() if exp > now),
                    "transitions": t.transitions,
                    "last_transition": {
                        "from": t.last[0], "to": t.last[1], "at": t.last[2],
                        "ago_s": round(wall - t.last[2], 3), "reason": t.last[3],
                    } if t.last else None,
                }
            out[service] = targets
        return out


def _merge_target(local: LocalTarget, seen: TargetView, seen_ms: float) -> None:
    """Merge one target's shared view (read at `seen_ms`) into its local state, in place.

    Each side's open "ends" at its open_until (a half-open one: when its open ended; for the
    shared view, when it was seen); a closed side has no end."""
    seen_end = None if seen.state is CLOSED else seen_ms + seen.retry_after_ms
    local_end = None if local.state is CLOSED else local.open_until
    if seen_end is None and local_end is None:
        # Both closed: the more recent count (the shared one has seen what came after ours,
        # such as a success that ended the run); ours is never lowered by an older view.
        local.failures = (seen.failures if seen_ms > local.known_at
                          else max(local.failures, seen.failures))
        local.known_at = max(local.known_at, seen_ms)
        return
    if seen_end is None:
        assert local_end is not None
        if seen_ms >= local_end:
            # Closed in the shared state after our open had run out: probed and closed (or
            # serving fine) since; a stale local open must not reopen it.
            _take(local, seen, seen_ms)
        return  # else our open is newer than what the cluster knew: open beats closed
    if local_end is None:
        if local.known_at < seen_end:
            _take(local, seen, seen_ms)  # open beats closed, unless ours closed after it ended
        return
    if seen_end > local_end and not (seen.state is HALF_OPEN and local.state is HALF_OPEN):
        _take(local, seen, seen_ms)  # of two opens the later end wins (ours keeps its probes)


def _take(local: LocalTarget, seen: TargetView, seen_ms: float) -> None:
    """Adopt the shared view of a target (what the first merge of a service does)."""
    if seen.state is CLOSED and local.state is not CLOSED:
        local.window.clear()  # as a close by probes does: outcomes from before the open are gone
    local.state = seen.state
    local.open_until = seen_ms + seen.retry_after_ms if seen.state is not CLOSED else 0.0
    local.failures, local.successes = seen.failures, 0
    local.leases.clear()
    local.known_at = seen_ms
