"""BreakerBoard: every breaker state of the cluster, held in this replica's memory.

The hot path reads no breaker key from Redis while the board is live: each script that changes
a target's state (or an open target's open time) publishes the change on the breaker channel
(`SharedBreaker.channel`) and returns it in its reply, so

* the replica whose call made the change applies it at once (from the reply), and
* every other replica applies it when the message arrives (one pub/sub delivery, well under
  a millisecond on a LAN).

A message is `<state key>|<code>|<remaining ms>|<version>`; the version is the Redis clock in µs
at the change (never backwards per target), so a message that overtakes another (a reply and a
pub/sub copy travel on different connections) cannot undo a newer state.

Whatever the subscription missed, a full read (`resync`) repairs: one script call per service on
one round trip, when the subscription is (re)confirmed, every `sync_interval` seconds, and at once
when a call finds the board wrong (a probe lease asked for a target Redis says is closed). A read
replaces the board's entry unless a message newer than the read arrived while it was in flight.

The board is live only while subscribed and synced since; otherwise the policy reads the
shared state per request, as it does without a board.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence

from gateway.breaker.state import BreakerState, ServiceView, TargetView

log = logging.getLogger("gateway.breaker")

_CODES = (BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN)
CLOSED, OPEN, HALF_OPEN = _CODES


class _Entry:
    __slots__ = ("state", "deadline", "version", "at", "failures")

    def __init__(self) -> None:
        self.state = CLOSED
        self.deadline = 0.0  # while open: this clock's time at which a probe becomes due
        self.version = 0
        self.at = -math.inf  # this clock's time of the last update
        self.failures = 0  # consecutive failures, as of the last full read


class BreakerBoard:
    """The states of every target of every service, kept current by the change messages."""

    def __init__(self, state_keys: Mapping[str, Sequence[str]], clock: Callable[[], float]) -> None:
        self.clock = clock
        self.services = {service: [_Entry() for _ in keys] for service, keys in state_keys.items()}
        self._where = {key: (service, i) for service, keys in state_keys.items()
                       for i, key in enumerate(keys)}
        self._closed = {service: tuple(range(len(keys))) for service, keys in state_keys.items()}
        self.subscribed = False
        self.synced = False  # a full read has landed since the subscription was last confirmed
        self.synced_at: dict[str, float] = {}
        self.stopped_at: float | None = None  # when it last stopped being live
        self.applied = 0  # change messages applied (a message seen twice counts once)

    @property
    def live(self) -> bool:
        return self.subscribed and self.synced

    def stop(self) -> None:
        """The subscription or the store failed: no longer trusted until the next full read."""
        if self.live:
            self.stopped_at = self.clock()
        self.synced = False

    def valid_at(self) -> float | None:
        """Until when what the board holds is known current: now while live, else the moment
        it stopped (None: never live)."""
        return self.clock() if self.live else self.stopped_at

    # -- what the hot path reads ------------------------------------------------------------
    def closed(self, service: str) -> tuple[int, ...]:
        """The indexes of the service's closed targets (a tuple kept, rebuilt on change)."""
        return self._closed[service]

    def view(self, service: str, at: float | None = None) -> ServiceView:
        """The service as `breaker_read` would have answered at `at` (default now); an open
        target that is due counts as half-open."""
        now = self.clock() if at is None else at
        views = []
        for entry in self.services[service]:
            if entry.state is OPEN and entry.deadline > now:
                views.append(TargetView(OPEN, max(1, math.ceil((entry.deadline - now) * 1000)),
                                        entry.failures))
            elif entry.state is CLOSED:
                views.append(TargetView(CLOSED, 0, entry.failures))
            else:
                views.append(TargetView(HALF_OPEN, 0, entry.failures))
        return ServiceView(tuple(views))

    # -- what keeps it current --------------------------------------------------------------
    def deliver(self, message: str) -> None:
        """Apply one change message (from a script's reply or from the channel)."""
        try:
            key, code, remaining, version = message.rsplit("|", 3)
            where = self._where.get(key)
            state, left, ver = _CODES[int(code)], int(remaining), int(version)
        except (ValueError, IndexError):
            log.warning("circuit breaker: ignored a malformed change message %r", message[:200])
            return
        if where is None:  # a service this replica's configuration does not have
            return
        service, index = where
        entry = self.services[service][index]
        if ver <= entry.version:
            return
        now = self.clock()
        entry.state, entry.version, entry.at = state, ver, now
        entry.deadline = now + left / 1000 if state is OPEN else 0.0
        if state is CLOSED:
            entry.failures = 0
        self.applied += 1
        self._rebuild(service)

    def apply_read(self, service: str, sent_at: float, read: Sequence[tuple[TargetView, int]]) -> None:
        """Take a full read of `service`, sent at `sent_at` on this clock."""
        entries = self.services[service]
        if len(read) != len(entries):
            return
        now = self.clock()
        for entry, (view, version) in zip(entries, read, strict=True):
            if entry.at > sent_at and entry.version > version:
                continue  # a change newer than this read arrived while it was in flight
            entry.state, entry.version, entry.at = view.state, version, now
            entry.failures = view.failures
            entry.deadline = now + view.retry_after_ms / 1000 if view.state is OPEN else 0.0
        self.synced_at[service] = now
        self._rebuild(service)

    def _rebuild(self, service: str) -> None:
        self._closed[service] = tuple(
            i for i, entry in enumerate(self.services[service]) if entry.state is CLOSED)
