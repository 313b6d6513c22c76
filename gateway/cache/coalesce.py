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

A waiter never outwaits the store. Once the store is known down (`Store.on_availability`) nobody
can store or release, so every waiter wakes at once with DOWN and fetches for itself, as any
request does while the store is down; a waiter that arrives after that does not wait at all. And
so that a replica learns of a hung Redis even without other traffic, while anyone waits one
heartbeat is in flight: every HEARTBEAT seconds, the PTTL of each awaited fill lock, bounded by
`redis.timeout` like every store call. A call that times out marks the store down (waking the
waiters), so no waiter sleeps past `redis.timeout` (+ HEARTBEAT) of Redis hanging; and a lock that
is gone while its waiters still sleep (a lost wake-up) wakes them to look again.
"""

from __future__ import annotations

import asyncio
import time

from gateway.store import Store
from gateway.subscription import Subscription

RECENT_SECONDS = 5.0
FALLBACK_POLL = 0.05  # seconds between looks while no subscription is up
HEARTBEAT = 0.1  # seconds between checks of the awaited locks while anyone waits
DOWN = "down"  # the outcome of a wait the store's outage ended


class FillWaiters:
    """Wakes local waiters when a fill of their key ends anywhere in the cluster."""

    def __init__(self, store: Store, channel: str) -> None:
        self.store = store
        self.channel = channel
        self._waiters: dict[str, list[asyncio.Future[str]]] = {}
        self._locks: dict[str, str] = {}  # awaited key -> its fill lock's Redis key
        self._recent: dict[str, tuple[float, str]] = {}
        self.subscription = Subscription(store, channel, self.deliver,
                                         on_down=lambda: self._wake_all("retry"),
                                         what="cache fill waiters")
        self._heartbeat: asyncio.Task[None] | None = None
        self.wakeups = 0
        self._closing = False
        store.on_availability(self._store_changed)

    @property
    def subscribed(self) -> bool:
        return self.subscription.subscribed

    async def start(self) -> None:
        self.subscription.start()

    async def close(self) -> None:
        self._closing = True
        await self.subscription.close()
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            self._heartbeat = None
        self._wake_all("retry")

    async def wait(self, key: str, since: float, lease: float, lock: str | None = None) -> str | None:
        """Wait for the fill of `key` to end; its outcome, DOWN once the store is known down, or
        None on timeout.

        `since` is the monotonic time at which the caller's lookup was sent: a wake-up that
        arrived after it counts. `lock` is the fill lock's Redis key, watched while waiting.
        """
        if not self.store.available:
            return DOWN
        recent = self._recent.get(key)
        if recent is not None and recent[0] >= since:
            return recent[1]
        if not self.subscribed:
            lease = min(lease, FALLBACK_POLL)
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(key, []).append(future)
        if lock is not None:
            self._locks[key] = lock
        if self._heartbeat is None or self._heartbeat.done():
            self._heartbeat = asyncio.get_running_loop().create_task(self._beat())
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
            if key not in self._waiters:
                self._locks.pop(key, None)

    def _store_changed(self, available: bool) -> None:
        if not available:
            self._wake_all(DOWN)

    async def _beat(self) -> None:
        """While anyone waits: look at the awaited locks, each call bounded by the store's
        timeout (a timeout marks the store down, which wakes every waiter)."""
        while self._waiters and not self._closing:
            await asyncio.sleep(HEARTBEAT)
            if not self._waiters or not self.store.available:
                return
            batch = self.store.batch()
            watched = [(key, batch.call("PTTL", lock)) for key, lock in self._locks.items()
                       if key in self._waiters]
            if not watched:
                batch.call("PING")
            await batch.execute()
            for key, pending in watched:
                if pending.ok and int(pending.result()) == -2:  # gone, and nobody told us
                    self._wake(key, "retry")

    def deliver(self, message: str) -> None:
        """Handle one published `<hash>|<scope>|<outcome>`."""
        key, _, outcome = message.rpartition("|")
        if not key:
            return
        now = time.monotonic()
        self._recent[key] = (now, outcome)
        if len(self._recent) > 4096:
            self._recent = {k: v for k, v in self._recent.items() if now - v[0] < RECENT_SECONDS}
        self._wake(key, outcome)

    def _wake(self, key: str, outcome: str) -> None:
        for future in self._waiters.pop(key, []):
            if not future.done():
                future.set_result(outcome)
                self.wakeups += 1
        self._locks.pop(key, None)

    def _wake_all(self, outcome: str) -> None:
        waiters, self._waiters = self._waiters, {}
        self._locks = {}
        for futures in waiters.values():
            for future in futures:
                if not future.done():
                    future.set_result(outcome)
