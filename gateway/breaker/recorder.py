"""Batching of ordinary requests' outcomes: one pipeline per flush instead of one call each.

Outcomes are summarised per target (`OutcomeRun`) as they arrive, so memory stays bounded by
the number of targets however slow the store is, and consecutive counting stays exact.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from gateway.breaker.shared import SharedBreaker
from gateway.breaker.state import OutcomeRun, Transition, log_transition
from gateway.store import StoreError

log = logging.getLogger("gateway.breaker")

Fallback = Callable[[str, int, OutcomeRun], list[Transition]]


class OutcomeRecorder:
    """Collects outcomes and flushes them to the shared breaker every `interval` seconds.

    Runs the store could not take go to `fallback` (the local breaker), so failures seen while
    Redis is down still open the breaker on this replica.
    """

    def __init__(self, shared: SharedBreaker, fallback: Fallback, interval: float = 0.005) -> None:
        self.shared = shared
        self.fallback = fallback
        self.interval = interval
        self._runs: dict[tuple[str, int], OutcomeRun] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def add(self, service: str, index: int, success: bool) -> None:
        run = self._runs.get((service, index))
        if run is None:
            run = self._runs[(service, index)] = OutcomeRun()
        run.add(success)
        self._wake.set()

    @property
    def pending(self) -> int:
        return sum(r.successes + r.failures for r in self._runs.values())

    async def flush(self) -> None:
        """Store everything collected so far (one pipeline); never raises."""
        if not self._runs:
            return
        runs, self._runs = self._runs, {}
        try:
            transitions, failed = await self.shared.record(runs)
        except StoreError:  # defensive: record() reports per run, but never lose the counts
            transitions, failed = [], runs
        for (service, index), run in failed.items():
            transitions.extend(self.fallback(service, index, run))
        for transition in transitions:
            log_transition(transition)

    async def _loop(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(self.interval)
            self._wake.clear()
            try:
                await self.flush()
            except Exception:  # a bug here must not stop recording for good
                log.exception("circuit breaker: recording outcomes failed")

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        await self.flush()
