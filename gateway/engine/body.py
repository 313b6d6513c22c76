"""A message body in flight: chunks from one connection to one reader, with backpressure.

The connection feeds chunks as the parser hands them over; past `high` buffered bytes it asks
the connection to stop reading its socket (`pause`), and once the reader has taken the buffer
below `low` it lets it read again (`resume`). So a 100 MB body never sits in memory: it moves
at the pace of the slower side. Request bodies (client -> gateway) and response bodies
(upstream -> gateway) are both `BodyStream`s.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

HIGH_WATER = 256 * 1024
LOW_WATER = 64 * 1024
# A response body from an upstream waits for a client that may read slowly: it buffers less.
RESPONSE_HIGH_WATER = 64 * 1024
RESPONSE_LOW_WATER = 16 * 1024


def _nothing() -> None:
    return None


class BodyStream:
    """Chunks fed by a connection, read by one consumer (`await read()`, or `async for`)."""

    __slots__ = ("_chunks", "_size", "_done", "_error", "_waiter", "_pause", "_resume", "paused",
                 "received", "discarding", "_on_read", "_high", "_low")

    def __init__(self, pause: Callable[[], None] = _nothing, resume: Callable[[], None] = _nothing,
                 on_read: Callable[[], None] | None = None, high: int = HIGH_WATER,
                 low: int = LOW_WATER) -> None:
        self._high = high
        self._low = low
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._done = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._pause = pause
        self._resume = resume
        self._on_read = on_read  # called at the first read (Expect: 100-continue)
        self.paused = False
        self.received = 0  # bytes fed so far
        self.discarding = False  # nobody will read: drop what arrives

    # -- the connection's side ---------------------------------------------------------------
    def feed(self, chunk: bytes) -> None:
        self.received += len(chunk)
        if self.discarding:
            return
        self._chunks.append(chunk)
        self._size += len(chunk)
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)
        if self._size > self._high and not self.paused:
            self.paused = True
            self._pause()

    def finish(self) -> None:
        self._done = True
        self._wake()

    def fail(self, exc: BaseException) -> None:
        """The body will not complete (the peer went away, a timeout): the reader gets `exc`."""
        if self._done:
            return
        self._error = exc
        self._wake()

    def detach(self) -> None:
        """The connection moved on (back to its pool): stop steering its reading."""
        self._pause = self._resume = _nothing

    def discard(self) -> None:
        """Nobody will read the rest: drop buffered and future chunks, let the peer send on."""
        self.discarding = True
        self._chunks.clear()
        self._size = 0
        if self.paused:
            self.paused = False
            self._resume()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    # -- the reader's side -------------------------------------------------------------------
    @property
    def failed(self) -> BaseException | None:
        return self._error

    async def read(self) -> bytes:
        """The next chunk; b"" once the body is complete. Raises what `fail` was given."""
        if self._on_read is not None:
            on_read, self._on_read = self._on_read, None
            on_read()
        while not self._chunks:
            if self._error is not None:
                raise self._error
            if self._done:
                return b""
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            await waiter
        chunk = self._chunks.popleft()
        self._size -= len(chunk)
        if self.paused and self._size <= self._low:
            self.paused = False
            self._resume()
        return chunk

    def __aiter__(self) -> BodyStream:
        return self

    async def __anext__(self) -> bytes:
        chunk = await self.read()
        if not chunk:
            raise StopAsyncIteration
        return chunk
