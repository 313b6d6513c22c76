"""Background work of one process: a job repeated every few seconds, stopped cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("gateway")


class Periodic:
    """Runs `job` every `interval` seconds until stopped; a failing round is logged, and the
    next round runs anyway (a store hiccup must not end heartbeats or flushes for good)."""

    def __init__(self, interval: float, job: Callable[[], Awaitable[object]], what: str) -> None:
        self.interval = interval
        self.job = job
        self.what = what
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name=self.what)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.job()
            except Exception:
                log.exception("%s failed", self.what)

    async def stop(self) -> None:
        """Cancel the loop and wait for it; the caller then does its final round itself."""
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
