"""CircuitBreakerPolicy: the chain step in front of the upstream call.

Per request (see docs/architecture.md):

* `stage`: nothing at all while the board is live (`gateway/breaker/board.py`: every
  replica holds every breaker state, kept current by the change messages the scripts
  publish). Without a live board (not yet subscribed and synced, the subscription lost), one
  read-only script call on the request's single round trip returns the state of every target
  of the service; while every target is known to be open not even that: the replica
  remembers until when, answers from memory, and reads again once a probe may be due.
* `handle`: a closed target is picked round-robin and set as `ctx.target`. When no target is
  closed and none is due for a probe, the answer is an immediate 503 (`Retry-After`,
  `X-Circuit-State: open`) with no upstream attempt. When a target is due for a probe (or
  half-open), a second round trip (rare path) tries to take one of the cluster-wide probe
  leases; without one the answer is 503 with `X-Circuit-State: half-open`.
* `after` (the response went out): ordinary outcomes go to the batching recorder, a probe's
  outcome is settled at once (it decides between closed and open).

Stale serving: a 503 from here sets `ctx.breaker_state` ("open"/"half-open") and
`ctx.breaker_rejected`; the cache policy, which runs before this one, replaces
such a response with a stale copy when it has one (`X-Cache: STALE`).

Store down: every replica falls back to its own `LocalBreaker`, which first catches up with
the last shared state it read (`LocalBreaker.merge`: open beats closed, the later end of an
open wins, a closed state seen after an open ran out wins, failure counts are kept). When the
store is back, the targets open locally are pushed to the shared state (`breaker_merge`, never
shortening a shared open) before any request reads it again, and the shared state rules. The
local state is kept, not dropped: if the store goes down again (a flap), a breaker opened
during the earlier outage is still open here, so the flap costs no more requests against a
dead upstream; a breaker the cluster closed meanwhile is not reopened by it.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.background import Periodic
from gateway.breaker.board import BreakerBoard
from gateway.breaker.local import LocalBreaker
from gateway.breaker.recorder import OutcomeRecorder
from gateway.breaker.shared import (
    PROBE_FAILURE,
    PROBE_RELEASE,
    PROBE_SUCCESS,
    SharedBreaker,
)
from gateway.breaker.state import (
    Admission,
    BreakerRules,
    BreakerState,
    OutcomeRun,
    ServiceView,
    Transition,
    log_transition,
    verdict,
)
from gateway.config import GatewayConfig
from gateway.context import RequestContext, Response
from gateway.policy import Handler, Policy
from gateway.problem import problem
from gateway.store import Pending, Store, StoreBatch, StoreError, StoreUnavailable
from gateway.subscription import Subscription

log = logging.getLogger("gateway.breaker")



@dataclass(slots=True)
class _Turn:
    """One request's turn at a service's breaker: what `stage` read, where `handle` sent it."""

    read: Pending | None = None  # the shared state, on the round trip (None: the local breaker)
    open_until: float | None = None  # every target known open until then: no read at all
    index: int = -1  # the target it went to (set before the upstream call)
    lease: int = 0  # a half-open probe's lease, given back in `after` whatever happens
    shared: bool = False
    board: bool = False  # the state came from the board (nothing was read)


class CircuitBreakerPolicy(Policy):
    """Cluster-wide circuit breaker per service and upstream target, shared through the store."""

    name = "circuit_breaker"

    def __init__(
        self,
        store: Store,
        targets: Mapping[str, Sequence[str]],
        rules: Mapping[str, BreakerRules],
        *,
        key_prefix: str = "gw",
        flush_interval: float = 0.005,
        sync_interval: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.rules = {s: r for s, r in rules.items() if r.enabled}
        self.targets = {s: list(targets[s]) for s in self.rules}
        self.clock = clock
        self.shared = SharedBreaker(store, key_prefix, self.targets, self.rules)
        self.board = BreakerBoard({s: [k.state for k in keys] for s, keys in self.shared.keys.items()},
                                  clock)
        self.shared.changed = self.board.deliver
        self.subscription = Subscription(store, self.shared.channel, self.board.deliver,
                                         on_up=self._subscribed, on_down=self._unsubscribed,
                                         what="circuit breaker board")
        self._sync = Periodic(sync_interval, self.sync_board, "circuit breaker board sync")
        self._generation = 0  # bumped whenever the subscription comes or goes
        self._syncing: Any = None
        self.local = LocalBreaker(self.targets, self.rules, clock)
        self.recorder = OutcomeRecorder(self.shared, self._record_locally, flush_interval)
        self._last_seen: dict[str, tuple[ServiceView, float]] = {}
        self._turn = {s: itertools.count() for s in self.rules}
        # service -> local clock time until which every target is known to stay open
        self._open_until: dict[str, float] = {}
        # resyncs under way: until the local opens are pushed, requests use the local breaker
        # (a read of the shared state could say closed for a target known dead here)
        self._resyncing = 0
        store.on_availability(self._on_store)

    @classmethod
    def from_config(cls, config: GatewayConfig, store: Store, **deps: Any) -> CircuitBreakerPolicy:
        targets = {name: svc.upstreams for name, svc in config.services.items()}
        rules = {name: BreakerRules.from_settings(config.breaker_for(name)) for name in config.services}
        return cls(store, targets, rules, key_prefix=config.redis.key_prefix,
                   sync_interval=config.circuit_breaker.sync_interval, **deps)

    # -- the chain -----------------------------------------------------------------------------
    def stage(self, ctx: RequestContext, batch: StoreBatch) -> _Turn | None:
        service = ctx.route.service
        if service not in self.rules:
            return None
        until = self._open_until.get(service)
        if until is not None:
            # Open ends only by time running out (probes start after it), so until then the
            # answer is known without asking Redis: no command at all while a service is down.
            if self.clock() < until:
                return _Turn(open_until=until)
            del self._open_until[service]
        if self.store.available and not self._resyncing:
            if self.board.live:
                return _Turn(board=True, shared=True)
            return _Turn(self.shared.stage_read(batch, service))
        return _Turn()

    async def handle(self, ctx: RequestContext, turn: _Turn | None, call_next: Handler) -> Response:
        if turn is None:  # a service without a breaker
            return await call_next(ctx)
        service = ctx.route.service
        if turn.open_until is not None:
            return self._reject(ctx, BreakerState.OPEN, int((turn.open_until - self.clock()) * 1000))
        view: ServiceView | None = None  # the board's is built only when no target is closed
        if turn.board:
            closed: Sequence[int] = self.board.closed(service)
            shared = True
        else:
            view, shared = self._view(service, turn.read)
            closed = [i for i, t in enumerate(view.targets) if t.state is BreakerState.CLOSED]
        if closed:
            index = closed[next(self._turn[service]) % len(closed)] if len(closed) > 1 else closed[0]
            return await self._send(ctx, call_next, turn, index, 0, shared)
        if view is None:
            view = self.board.view(service)
        if not any(t.probe_due for t in view.targets):
            retry = min(t.retry_after_ms for t in view.targets)
            if shared and not turn.board:
                self._open_until[service] = self.clock() + retry / 1000
            return self._reject(ctx, BreakerState.OPEN, retry)
        admission, shared = await self._acquire(service, shared)
        if admission.kind == "closed" and turn.board:
            self._sync_soon()  # the board said no target was closed: it missed a change
        if admission.kind == "rejected":
            return self._reject(ctx, admission.state, admission.retry_after_ms)
        return await self._send(ctx, call_next, turn, admission.target, admission.lease, shared)

    async def after(self, ctx: RequestContext, turn: _Turn | None, response: Response) -> None:
        if turn is not None and turn.index >= 0:
            await self._record(ctx, ctx.route.service, turn.index, turn.lease, turn.shared)

    def _view(self, service: str, pending: Pending | None) -> tuple[ServiceView, bool]:
        """The shared state read in the round trip, or the local breaker's if the store failed."""
        if pending is not None:
            try:
                view = SharedBreaker.parse_read(pending.result())
            except StoreError as exc:
                self._store_failed(service, exc)
            else:
                self._last_seen[service] = (view, self.clock())
                return view, True
        self._ensure_local(service)
        return self.local.view(service), False

    async def _acquire(self, service: str, shared: bool) -> tuple[Admission, bool]:
        if shared:
            try:
                admission, transitions = await self.shared.acquire(service)
            except StoreError as exc:
                self._store_failed(service, exc)
            else:
                _log_all(transitions)
                return admission, True
        self._ensure_local(service)
        admission, transitions = self.local.acquire(service)
        _log_all(transitions)
        return admission, False

    async def _send(self, ctx: RequestContext, call_next: Handler, turn: _Turn, index: int,
                    lease: int, shared: bool) -> Response:
        ctx.target = self.targets[ctx.route.service][index]
        ctx.breaker_state = (BreakerState.HALF_OPEN if lease else BreakerState.CLOSED).value
        # Noted before the call: `after` gives a probe's lease back whatever happens.
        turn.index, turn.lease, turn.shared = index, lease, shared
        return await call_next(ctx)

    def _reject(self, ctx: RequestContext, state: BreakerState, retry_ms: int) -> Response:
        service = ctx.route.service
        seconds = max(1, math.ceil(retry_ms / 1000))
        ctx.breaker_state = state.value
        ctx.breaker_rejected = True
        return problem(
            503,
            f"service {service!r} is unavailable: its circuit breaker is {state.value}; "
            f"retry in {seconds} s",
            request_id=ctx.request_id,
            kind="circuit-open",
            headers=[
                (b"retry-after", str(seconds).encode()),
                (b"x-circuit-state", state.value.encode()),
                (b"cache-control", b"no-store"),
            ],
            service=service,
        )

    # -- after the response --------------------------------------------------------------------
    async def _record(self, ctx: RequestContext, service: str, index: int, lease: int,
                      shared: bool) -> None:
        up = ctx.upstream
        rules = self.rules[service]
        counted, success = verdict(up.status if up else None, up.failure if up else None,
                                   ctx.client_disconnected, rules.failure_statuses)
        if lease:
            outcome = PROBE_RELEASE if not counted else PROBE_SUCCESS if success else PROBE_FAILURE
            await self._settle(service, index, lease, outcome, shared)
        elif not counted:
            return
        elif shared:
            self.recorder.add(service, index, success)
        else:
            run = OutcomeRun()
            run.add(success)
            _log_all(self._record_locally(service, index, run))

    async def _settle(self, service: str, index: int, lease: int, outcome: int, shared: bool) -> None:
        if shared:
            try:
                _log_all(await self.shared.settle_probe(service, index, lease, outcome))
                return
            except StoreError as exc:
                # The shared lease expires by itself; the local breaker learns the verdict.
                self._store_failed(service, exc)
        self._ensure_local(service)
        _log_all(self.local.settle_probe(service, index, lease, outcome))

    def _record_locally(self, service: str, index: int, run: OutcomeRun) -> list[Transition]:
        self._ensure_local(service)
        return self.local.record(service, index, run)

    # -- store down / back ---------------------------------------------------------------------
    def _ensure_local(self, service: str) -> None:
        """Before the local breaker answers: let it catch up with the last shared state known
        (the board's, or the last one read; a no-op unless a newer one was seen since)."""
        seen = self._last_seen.get(service)
        board_at = self.board.valid_at()
        if board_at is not None and (seen is None or board_at > seen[1]):
            seen = (self.board.view(service, board_at), board_at)
        if seen is None:
            self.local.merge(service, None)
        else:
            self.local.merge(service, seen[0], seen[1])

    def _store_failed(self, service: str, exc: StoreError) -> None:
        if not isinstance(exc, StoreUnavailable):
            # The store answered with an error (a bug, a wrong key type): say so loudly, but
            # keep protecting the upstream with the local breaker.
            log.error("circuit breaker %s: store error, using the local breaker: %s", service, exc)

    def _on_store(self, available: bool) -> Any:
        # Going down: the board is no longer current; the local breaker keeps what it knows and
        # catches up with the last shared state when first used (`_ensure_local`).
        if available:
            self._resyncing += 1  # at once, before any request can read the shared state
            return self._resync()
        self.board.stop()
        return None

    @property
    def resyncing(self) -> bool:
        """True while local opens are being pushed to a store that came back."""
        return self._resyncing > 0

    async def resync(self) -> None:
        """Push the targets open locally to the shared state (what the store's "back"
        notification runs)."""
        self._resyncing += 1
        await self._resync()

    async def _resync(self) -> None:
        try:
            for service, index, remaining_ms in self.local.opens():
                try:
                    _log_all(await self.shared.merge_open(service, index, remaining_ms))
                except StoreError:
                    return  # down again: the local state stays as it is, the next "back" retries
            await self.sync_board()
            log.info("circuit breaker: store is back, shared state resumes")
        finally:
            self._resyncing -= 1

    # -- the board -----------------------------------------------------------------------------
    def _subscribed(self) -> None:
        self._generation += 1
        self.board.subscribed = True
        self.board.synced = False  # what was published while unsubscribed is lost: read all
        self._sync_soon()

    def _unsubscribed(self) -> None:
        self._generation += 1
        self.board.stop()
        self.board.subscribed = False

    def _sync_soon(self) -> None:
        if self._syncing is None or self._syncing.done():
            self._syncing = asyncio.get_running_loop().create_task(self.sync_board())

    async def sync_board(self) -> None:
        """Read every breaker state (one round trip) into the board; it is live once this lands
        while subscribed. Never raises: a failed read leaves the board as it was."""
        if not self.rules or not self.board.subscribed or not self.store.available:
            return
        generation, sent_at = self._generation, self.clock()
        batch = self.store.batch()
        reads = self.shared.stage_read_all(batch)
        await batch.execute()
        try:
            parsed = {service: SharedBreaker.parse_versioned(p.result()) for service, p in reads.items()}
        except (StoreError, ValueError, IndexError) as exc:
            log.debug("circuit breaker: board sync failed: %s", exc)
            return
        for service, read in parsed.items():
            self.board.apply_read(service, sent_at, read)
        if generation == self._generation and self.board.subscribed and self.store.available:
            self.board.synced = True

    # -- lifecycle and visibility --------------------------------------------------------------
    async def start(self) -> None:
        self.recorder.start()
        if self.rules:
            self.subscription.start()
            self._sync.start()

    async def close(self) -> None:
        await self._sync.stop()
        await self.subscription.close()
        if self._syncing is not None:
            self._syncing.cancel()
        await self.recorder.close()

    async def flush(self) -> None:
        """Store the outcomes collected so far now (tests, shutdown)."""
        await self.recorder.flush()

    async def metrics(self) -> dict[str, Any]:
        """Per service and target: state, recent failures, last transition. Read from the
        store (cluster-wide); from this process's local breaker while the store is down."""
        source = "redis"
        try:
            services = await self.shared.metrics() if self.rules else {}
        except StoreError:
            source = "local"
            for service in self.rules:
                self._ensure_local(service)
            services = self.local.metrics()
        out: dict[str, Any] = {}
        for service, targets in services.items():
            rules = self.rules[service]
            out[service] = {
                "state": _summary([t["state"] for t in targets.values()]),
                "mode": "error_ratio" if rules.error_ratio_mode else "consecutive",
                "recent_failures": sum(t["recent_failures"] for t in targets.values()),
                "targets": targets,
            }
        board = {"live": self.board.live, "changes_applied": self.board.applied}
        return {"source": source, "services": out, "board": board}


def _summary(states: list[str]) -> str:
    """A service's state: its targets' common state, or "degraded" when only some are closed."""
    closed = BreakerState.CLOSED.value
    if all(s == closed for s in states):
        return closed
    if any(s == closed for s in states):
        return "degraded"
    if any(s == BreakerState.HALF_OPEN.value for s in states):
        return BreakerState.HALF_OPEN.value
    return BreakerState.OPEN.value


def _log_all(transitions: list[Transition]) -> None:
    for transition in transitions:
        log_transition(transition)
