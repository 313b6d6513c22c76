"""Subscription: one pub/sub channel of the store, kept subscribed for the life of a process.

The cache's fill waiters and the breaker board each listen on a channel the Lua scripts publish
to. A subscription reconnects by itself with backoff when the connection breaks (Redis
restarted, a network fault) and tells its owner both ways: `on_up` once the subscription is
confirmed (each time: whatever was published while it was down is lost, so the owner catches up
then), `on_down` when it is lost (the owner stops trusting what it learned from messages).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from gateway.store import Store

log = logging.getLogger("gateway")

MAX_BACKOFF = 5.0


class Subscription:
    """Delivers every message published on `channel` to `deliver(text)`."""

    def __init__(self, store: Store, channel: str, deliver: Callable[[str], None], *,
                 on_up: Callable[[], None] | None = None,
                 on_down: Callable[[], None] | None = None, what: str = "") -> None:
        self.store = store
        self.channel = channel
        self.deliver = deliver
        self.on_up = on_up
        self.on_down = on_down
        self.what = what or channel
        self.subscribed = False
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def start(self) -> None:
        if self._task is None:
            self._closing = False
            self._task = asyncio.get_running_loop().create_task(self._listen(), name=self.what)

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
        self.subscribed = False

    def _lost(self) -> None:
        self.subscribed = False
        if self.on_down is not None:
            self.on_down()

    async def _listen(self) -> None:
        backoff = 0.1
        while not self._closing:
            pubsub: Any = None
            try:
                pubsub = self.store.client.pubsub()
                await pubsub.subscribe(self.channel)
                self.subscribed = True
                backoff = 0.1
                if self.on_up is not None:
                    self.on_up()
                while not self._closing:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if message is None or message.get("type") != "message":
                        continue
                    data = message.get("data")
                    self.deliver(data.decode() if isinstance(data, bytes) else str(data))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # connection lost, Redis down: tell the owner, retry later
                if self.subscribed:
                    log.warning("%s: subscription lost (%s), resubscribing", self.what, exc)
                self._lost()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
            finally:
                if self.subscribed:
                    self._lost()
                if pubsub is not None:
                    try:
                        await asyncio.wait_for(pubsub.aclose(), 0.5)
                    except (Exception, asyncio.CancelledError):
                        pass
