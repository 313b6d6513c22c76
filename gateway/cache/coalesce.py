"""FillWaiters: requests waiting for another request (on any replica) to fill a cache entry.

One pub/sub subscription per process listens on the cache's channel; the store and release
scripts publish `<url hash>|<scope>|<outcome>` when a fill ends, and every local waiter for that
key wakes at once. Nobody polls: a waiter sleeps until woken, or until the holder's lease runs
out (the holder died), then looks up again and may take the lock itself.

A wake-up can overtake the lookup reply that told a request to wait (the two travel on
different connections), so recent wake-ups are remembered for a few seconds and a waiter that
registers late sees them at once. If the subscription breaks, every waiter is woken (it looks
up again) and the subscriber reconnects with backoff; meanwhile waiters fall back to short
timed waits.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from gateway.store import Store

log = logging.getLogger("gateway.cache")

RECENT_SECONDS = 5.0
FALLBACK_POLL = 0.05  # seconds between looks while no subscription is up


class FillWaiters:
    """Wakes local waiters when a fill of their key ends anywhere in the cluster."""

    def __init__(self, store: Store, channel: str) -> None:
        self.store = store
        self.channel = channel
        self._waiters: dict[str, list[asyncio.Future[str]]] = {}
        self._recent: dict[str, tuple[float, str]] = {}
        self._task: asyncio.Task[None] | None = None
        self.subscribed = False
        self.wakeups = 0
        self._closing = False

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._listen())

    async def close(self) -> None:
        self._closing = True
        if self._task is not None:
            # redis-py can swallow a cancellation that lands inside subscribe(), so cancel until
            # the task ends, bounded: a stuck subscription must not hold up shutdown.
            for _ in range(20):
                self._task.cancel()
                done, _ = await asyncio.wait({self._task}, timeout=0.05)
                if done:
                    break
            self._task = None
        self._wake_all("retry")

    async def wait(self, key: str, since: float, lease: float) -> str | None:
        """Wait for the fill of `key` to end; its outcome, or None on timeout.

        `since` is the monotonic time at which the caller's lookup was sent: a wake-up that
        arrived after it counts.
        """
        recent = self._recent.get(key)
        if recent is not None and recent[0] >= since:
            return recent[1]
        if not self.subscribed:
            lease = min(lease, FALLBACK_POLL)
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(key, []).append(future)
        try:
            return await asyncio.wait_for(future, max(0.001, lease))
        except TimeoutError:
            return None
        finally:
            waiting = self._waiters.get(key)
            if waiting is not None:
                if future in waiting:
                    waiting.remove(future)
                if not waiting:
                    del self._waiters[key]

    def deliver(self, message: str) -> None:
        """Handle one published `<hash>|<scope>|<outcome>`."""
        key, _, outcome = message.rpartition("|")
        if not key:
            return
        now = time.monotonic()
        self._recent[key] = (now, outcome)
        if len(self._recent) > 4096:
            self._recent = {k: v for k, v in self._recent.items() if now - v[0] < RECENT_SECONDS}
        for future in self._waiters.pop(key, []):
            if not future.done():
                future.set_result(outcome)
                self.wakeups += 1

    def _wake_all(self, outcome: str) -> None:
        waiters, self._waiters = self._waiters, {}
        for futures in waiters.values():
            for future in futures:
                if not future.done():
                    future.set_result(outcome)

    async def _listen(self) -> None:
        backoff = 0.1
        while not self._closing:
            pubsub: Any = None
            try:
                pubsub = self.store.client.pubsub()
                await pubsub.subscribe(self.channel)
                self.subscribed = True
                backoff = 0.1
                while not self._closing:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if message is None:
                        continue
                    if message.get("type") != "message":
                        continue
                    data = message.get("data")
                    self.deliver(data.decode() if isinstance(data, bytes) else str(data))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # connection lost, Redis down: wake everyone, retry later
                if self.subscribed:
                    log.warning("cache fill subscription lost (%s): waiters fall back to polling", exc)
                self.subscribed = False
                self._wake_all("retry")
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                self.subscribed = False
                if pubsub is not None:
                    try:
                        await asyncio.wait_for(pubsub.aclose(), 0.5)
                    except (Exception, asyncio.CancelledError):
                        pass
