"""Upstream connections: HTTP/1.1 requests over asyncio.Protocol + llhttp, pooled per target.

One `TargetPool` per upstream target (scheme, host, port) keeps idle keep-alive connections
(last in, first out) and bounds how many are open; a request past the bound waits for one to
come free, at most `wait_timeout` seconds. One `Exchange` is one request on one connection:
the head and body go out, the response head comes back as a future, the body as bytes (small,
known length: read whole) or as a `BodyStream` with backpressure both ways.

How each failure is reported (`UpstreamError.kind`):

    connect    no connection: refused, unreachable, a TLS handshake or certificate error, or no
               connection within `connect_timeout`
    timeout    no response head, or a gap in the body longer than `timeout`
    reset      the connection closed or broke before the response was complete
    protocol   the upstream broke HTTP/1.1: an unparsable or oversized head, Content-Length
               with Transfer-Encoding, a transfer coding other than chunked, a status outside
               100-599, an upgrade nobody asked for
    pool       every connection to the target stayed busy for `wait_timeout`, or `max_pending`
               requests were already waiting

Framing rules kept here: no body for HEAD, 1xx, 204 and 304; a body without Content-Length or
chunked framing ends when the upstream closes the connection cleanly (a reset cuts it); bytes
past the end of a response (more than its Content-Length, or anything while idle) mean the
connection is out of step: the response gets exactly its own bytes and the connection is
closed, never reused. A connection goes back to its pool only after a complete response on a
connection both sides keep alive; an exchange abandoned for any reason (cancelled, the client
left, a partial read) closes its connection.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import AsyncIterable, Callable
from typing import Any

from httptools import (
    HttpParserCallbackError,
    HttpParserError,
    HttpParserUpgrade,
    HttpResponseParser,
)
from mypy_extensions import mypyc_attr

from gateway.engine.body import RESPONSE_HIGH_WATER, RESPONSE_LOW_WATER, BodyStream
from gateway.engine.failures import Failure
from gateway.engine.wire import HOP_BY_HOP, LAST_CHUNK, Headers, chunk, connection_tokens

MAX_RESPONSE_HEAD = 64 * 1024


class UpstreamError(Exception):
    """An upstream exchange that produced no usable response; `kind` says why (see above)."""

    def __init__(self, kind: Failure, reason: str, *, retryable: bool = False) -> None:
        super().__init__(f"{kind}: {reason}")
        self.kind = kind
        self.reason = reason
        # A reused keep-alive connection that closed before any byte of the response: the
        # upstream processed nothing, so an idempotent request without a body may go again.
        self.retryable = retryable


@mypyc_attr(native_class=False)  # compiled: a subclass of a builtin exception stays a Python class
class _UpstreamClosed(ConnectionResetError):
    """The upstream connection closed while the request was going out (never the client's
    side: a client's own ConnectionError from the body passes through `send` as it is)."""


class _HeadOnly(Exception):
    """Raised inside the parser to stop at the end of a head that has no body (HEAD)."""


class Exchange:
    """One request on one upstream connection, and its response as it arrives."""

    __slots__ = ("conn", "head_only", "on_interim", "small_body", "head", "status", "headers",
                 "content_length", "body", "stream", "whole", "complete", "until_eof", "got_bytes",
                 "error", "_whole_waiter")

    def __init__(self, conn: UpstreamConnection, head_only: bool, small_body: int,
                 on_interim: Callable[[int, Headers], None] | None) -> None:
        self.conn: UpstreamConnection | None = conn
        self.head_only = head_only
        self.on_interim = on_interim
        self.small_body = small_body
        self.head: asyncio.Future[None] = conn.loop.create_future()
        self.status = 0
        self.headers: Headers = []
        self.content_length: int | None = None
        self.body: bytes | None = None  # the whole body (small bodies, HEAD, no-body statuses)
        self.stream: BodyStream | None = None  # or the body as it streams
        self.whole: list[bytes] | None = None
        self.complete = False
        self.until_eof = False
        self.got_bytes = False
        self.error: UpstreamError | None = None
        self._whole_waiter: asyncio.Future[None] | None = None

    # -- the caller's side -----------------------------------------------------------------
    async def read_whole(self) -> bytes:
        """Wait for a small body chosen to be read whole (`reads_whole`)."""
        while self.body is None:
            if self.error is not None:
                raise self.error
            assert self.conn is not None
            waiter = self._whole_waiter = self.conn.loop.create_future()
            await waiter
        return self.body

    def _wake(self) -> None:
        waiter = self._whole_waiter
        if waiter is not None:
            self._whole_waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def release(self) -> None:
        """Done with this exchange. An incomplete one closes its connection (never pooled)."""
        conn = self.conn
        if conn is not None and not self.complete:
            self.conn = None
            conn.abandon()

    @property
    def reads_whole(self) -> bool:
        return self.whole is not None


class UpstreamConnection(asyncio.Protocol):
    """One keep-alive connection to one target; at most one exchange at a time."""

    def __init__(self, pool: TargetPool) -> None:
        self.pool = pool
        self.loop = pool.loop
        self.transport: asyncio.Transport | None = None
        self.parser = HttpResponseParser(self)
        self.exchange: Exchange | None = None
        self.uses = 0
        self.idle_since = 0.0
        self.closed = False
        self._headers: Headers = []
        self._head_bytes = 0
        self._field_bytes = 0  # the exchange's header fields so far (interim heads, trailers)
        self._interim = False
        self._keep_alive = False
        self._after_end = False  # the parser saw something after the response's end
        self._write_paused = False
        self._sending = False  # a request body is still going out
        self._drain: asyncio.Future[None] | None = None
        self._armed = False  # the pool's sweep watches this connection's clock
        self._timeout = 0.0
        self._last = 0.0
        self._timer_kind = ""

    # -- asyncio.Protocol --------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        ours = self.closed  # close() marks it first: we cut it, the upstream did not end it
        self.closed = True
        self._disarm()
        drain = self._drain
        if drain is not None and not drain.done():
            drain.set_exception(_UpstreamClosed("upstream connection lost"))
        ex = self.exchange
        if ex is not None:
            self.exchange = None
            # A close-delimited body ends here, complete, only at the upstream's clean close:
            # after a reset (exc) or our own close, the bytes so far may be any part of it.
            if ex.until_eof and ex.head.done() and not ex.complete and exc is None and not ours:
                self._finish(ex)
            else:
                self._fail(ex, UpstreamError(Failure.RESET, _lost_reason(exc), retryable=not ex.got_bytes
                                             and self.uses > 0 and not ex.head.done()))
        self.pool.lost(self)

    def eof_received(self) -> bool | None:
        if self.exchange is None:
            self.close()  # idle: out of the pool now, before a request could be handed it
        return None  # close our side too; connection_lost follows

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        drain = self._drain
        if drain is not None:
            self._drain = None
            if not drain.done():
                drain.set_result(None)

    def data_received(self, data: bytes) -> None:
        ex = self.exchange
        if ex is None:  # nothing was asked: a late byte of an old response, or a broken peer
            self.close()
            return
        ex.got_bytes = True
        self._last = self.loop.time()
        head_pending = not ex.head.done()
        if head_pending:
            self._head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, _HeadOnly):
                # Stopped at the end of a bodiless head; llhttp stays in the error state, so
                # the connection gets a fresh parser. Anything after the head in this chunk
                # would be a body the upstream should not have sent: then it is not reused.
                self.parser = HttpResponseParser(self)
                self._after_end = self._after_end or not data.endswith(b"\r\n\r\n")
                self._finish(ex)
                return
            if ex.complete:
                self._after_end = True
            else:
                self._fail(ex, cause if isinstance(cause, UpstreamError)
                           else UpstreamError(Failure.PROTOCOL, str(cause or exc)))
                return
        except HttpParserUpgrade:
            if not ex.complete:
                self._fail(ex, UpstreamError(Failure.PROTOCOL, "the upstream switched protocols unasked"))
                return
            self._after_end = True
        except HttpParserError as exc:
            if not ex.complete:
                self._fail(ex, UpstreamError(Failure.PROTOCOL, f"invalid response: {exc}"))
                return
            self._after_end = True  # garbage after a complete response
        if ex.complete:
            self._finish(ex)
        elif head_pending and not ex.head.done() and self._head_bytes > MAX_RESPONSE_HEAD:
            self._fail(ex, UpstreamError(Failure.PROTOCOL, f"response head over {MAX_RESPONSE_HEAD} bytes"))

    # -- llhttp callbacks --------------------------------------------------------------------
    def on_message_begin(self) -> None:
        ex = self.exchange
        if ex is None or ex.complete:
            self._after_end = True  # a second response where one was asked for
            raise UpstreamError(Failure.PROTOCOL, "bytes after the end of the response")
        self._headers = []

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))
        # The raw count in data_received only sees a head that is still incomplete after a
        # read; a whole oversized head arriving in one read passed it. Counting the fields
        # bounds the head whatever the reads were (one budget per exchange: interim heads,
        # the head, and chunked trailers, which llhttp hands over here too).
        self._field_bytes += len(name) + len(value) + 4
        if self._field_bytes > MAX_RESPONSE_HEAD:
            raise UpstreamError(Failure.PROTOCOL, f"response head over {MAX_RESPONSE_HEAD} bytes")

    def on_headers_complete(self) -> None:
        ex = self.exchange
        assert ex is not None
        status = self.parser.get_status_code()
        raw, self._headers = self._headers, []
        if not 100 <= status <= 599:
            raise UpstreamError(Failure.PROTOCOL, f"status {status} is outside 100-599")
        # One pass: names to lower case, the framing fields read, the hop-by-hop ones left out
        # (the exchange's headers are the end-to-end ones; see wire.end_to_end).
        headers: Headers = []
        length: int | None = None
        chunked = close = False
        codings = 0
        named: frozenset[bytes] | None = None
        for name, value in raw:
            name = name.lower()
            if name in HOP_BY_HOP:
                if name == b"transfer-encoding":
                    codings += 1
                    if value.strip().lower() != b"chunked" or codings > 1:
                        raise UpstreamError(Failure.PROTOCOL, f"unsupported transfer coding {value[:40]!r}")
                    chunked = True
                elif name == b"connection":
                    tokens = connection_tokens(value)
                    close = close or b"close" in tokens
                    named = tokens if named is None else named | tokens
                continue
            if name == b"content-length":
                length = int(value)  # llhttp checked it: digits, one value
            headers.append((name, value))
        if named is not None and not named <= HOP_BY_HOP:
            headers = [f for f in headers if f[0] not in named]
        if status < 200:
            if status == 101:
                raise UpstreamError(Failure.PROTOCOL, "101 Switching Protocols without an upgrade request")
            self._interim = True
            if status == 103 and ex.on_interim is not None:
                ex.on_interim(status, headers)
            return  # 100 Continue and other interim responses are consumed
        ex.status = status
        ex.headers = headers
        ex.content_length = None if chunked else length
        if ex.head_only:  # llhttp would count a HEAD reply without a length as close-delimited
            self._keep_alive = self.parser.get_http_version() == "1.1" and not close
        else:
            self._keep_alive = self.parser.should_keep_alive()
        no_body = ex.head_only or status in (204, 304)
        if no_body or length == 0:
            ex.body = b""
        elif not chunked and length is not None and length <= ex.small_body:
            ex.whole = []
        else:
            ex.until_eof = not chunked and length is None
            ex.stream = BodyStream(self._pause_reading, self._resume_reading,
                                   high=RESPONSE_HIGH_WATER, low=RESPONSE_LOW_WATER)
        if not ex.head.done():
            ex.head.set_result(None)
        if ex.head_only:
            raise _HeadOnly()  # llhttp would wait for Content-Length bytes that never come

    def on_body(self, body: bytes) -> None:
        ex = self.exchange
        assert ex is not None
        if ex.whole is not None:
            ex.whole.append(body)
        elif ex.stream is not None:
            ex.stream.feed(body)

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        ex = self.exchange
        if ex is not None:
            ex.complete = True

    # -- exchanges ---------------------------------------------------------------------------
    def begin(self, head_only: bool, small_body: int,
              on_interim: Callable[[int, Headers], None] | None) -> Exchange:
        ex = self.exchange = Exchange(self, head_only, small_body, on_interim)
        self._head_bytes = 0
        self._field_bytes = 0
        self._after_end = False
        return ex

    def _finish(self, ex: Exchange) -> None:
        """The response is complete: hand over the body, then pool or close the connection."""
        self.exchange = None
        ex.conn = None
        ex.complete = True
        self._armed = False
        stream = ex.stream
        if ex.whole is not None:
            ex.body = b"".join(ex.whole)
            ex.whole = None
        elif stream is not None:
            stream.detach()
            stream.finish()
        if ex._whole_waiter is not None:
            ex._wake()
        if self.closed:
            return
        # Answered before the whole request went out: the connection is out of step.
        if self._keep_alive and not self._after_end and not ex.until_eof and not self._sending:
            if stream is not None:  # its reader may have paused us
                self._resume_reading()
            self.pool.release(self)
        else:
            self.close()

    def _fail(self, ex: Exchange, error: UpstreamError) -> None:
        self.exchange = None
        ex.conn = None
        self._disarm()
        ex.error = error
        if not ex.head.done():
            ex.head.set_exception(error)
        ex._wake()
        if ex.stream is not None:
            ex.stream.detach()
            ex.stream.fail(error)
        self.close()

    def abandon(self) -> None:
        """The caller gave up on the exchange in flight: the connection is out of step."""
        self.exchange = None
        self.close()

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.close()
        self.pool.lost(self)  # the slot frees now, not when the close completes

    async def write_body(self, source: AsyncIterable[bytes], chunked: bool, stall: float) -> None:
        """Stream a request body; waits while the upstream's socket buffer is full."""
        transport = self.transport
        assert transport is not None
        self._sending = True
        try:
            async for data in source:
                if self.closed:
                    raise _UpstreamClosed("upstream connection lost")
                transport.write(chunk(data) if chunked else data)
                if self._write_paused:
                    await self._drained(stall)
            if self.closed:
                raise _UpstreamClosed("upstream connection lost")
            if chunked:
                transport.write(LAST_CHUNK)
        finally:
            self._sending = False

    async def _drained(self, stall: float) -> None:
        drain = self._drain = self.loop.create_future()
        self.arm(stall, "send")
        try:
            await drain
        finally:
            self._disarm()

    # -- timeouts: a clock the pool's sweep reads (no timer per request) -----------------------
    def arm(self, timeout: float, kind: str) -> None:
        """Fail the exchange when the upstream stays silent for `timeout` seconds (a "head"
        wait, or a gap in the body), or stops reading the request for that long ("send")."""
        self._timeout = timeout
        self._timer_kind = kind
        self._last = self.loop.time()
        self._armed = True
        pool = self.pool
        if pool._clock is None or timeout < pool._watched:
            pool.watch(timeout)

    def _disarm(self) -> None:
        self._armed = False

    def check_clock(self, now: float) -> None:
        """Called by the pool's sweep while armed."""
        ex = self.exchange
        # While the client is slow to take the body, the upstream is not the one stalling.
        if ex is not None and ex.stream is not None and ex.stream.paused:
            self._last = now
            return
        if now - self._last < self._timeout:
            return
        self._armed = False
        if self._timer_kind == "send":
            drain = self._drain
            if drain is not None and not drain.done():
                drain.set_exception(UpstreamError(Failure.TIMEOUT, "the upstream stopped reading the request"))
            self.close()
            return
        if ex is not None:
            what = "no response" if not ex.head.done() else "the response body stalled"
            self._fail(ex, UpstreamError(Failure.TIMEOUT, f"{what} within {self._timeout:g}s"))

    # -- backpressure from the reader of a streamed body ---------------------------------------
    def _pause_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if self.transport is not None and not self.closed and not self.transport.is_reading():
            self.transport.resume_reading()


def _lost_reason(exc: BaseException | None) -> str:
    if exc is None:
        return "the upstream closed the connection"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class TargetPool:
    """Keep-alive connections to one target, at most `limit` open at once."""

    def __init__(self, host: str, port: int, *, tls: ssl.SSLContext | None, limit: int,
                 wait_timeout: float, keepalive: float = 30.0, max_pending: int = 1024) -> None:
        self.host = host
        self.port = port
        self.tls = tls
        self.limit = limit
        self.wait_timeout = wait_timeout
        self.max_pending = max_pending
        self.keepalive = keepalive
        self.loop = asyncio.get_running_loop()
        self.idle: list[UpstreamConnection] = []
        self.connections: set[UpstreamConnection] = set()
        self.opening = 0
        self._waiters: deque[asyncio.Future[UpstreamConnection | None]] = deque()
        self._tick = 0.1  # seconds between clock checks: a timeout fires within a tick of due
        self._watched = 0.0  # the shortest timeout the running clock was set for
        self._clock: asyncio.TimerHandle | None = None

    def watch(self, timeout: float) -> None:
        """A connection armed a timeout: make sure the clock runs, often enough for it."""
        self._watched = min(self._watched, timeout) if self._clock is not None else timeout
        tick = max(0.01, min(0.1, timeout / 4))
        if self._clock is None or tick < self._tick:
            if self._clock is not None:
                self._clock.cancel()
            self._tick = tick
            self._clock = self.loop.call_later(tick, self._check_clocks)

    def _check_clocks(self) -> None:
        self._clock = None
        now = self.loop.time()
        armed = False
        for conn in list(self.connections):
            if conn._armed:
                conn.check_clock(now)
                armed = armed or conn._armed
        if armed:
            self._clock = self.loop.call_later(self._tick, self._check_clocks)
        else:
            self._tick = 0.1

    @property
    def size(self) -> int:
        return len(self.connections) + self.opening

    def take(self) -> UpstreamConnection | None:
        """An idle connection at once, or None (the common case costs no coroutine)."""
        idle = self.idle
        while idle:
            conn = idle.pop()
            if not conn.closed:
                if conn.idle_since >= self.loop.time() - self.keepalive:
                    return conn
                self._expire_idle(conn)
        return None

    def _expire_idle(self, conn: UpstreamConnection) -> None:
        """`conn` (the most recently used idle one) outlived `keepalive`: so did every older one.
        Never reused past it: the upstream may be closing it as a request goes out."""
        conn.close()
        for old in self.idle:
            old.close()
        self.idle.clear()

    async def acquire(self, connect_timeout: float, fresh: bool = False,
                      watch: Callable[[asyncio.Future[Any]], None] | None = None) -> UpstreamConnection:
        """An idle connection (reused) or a new one; waits while `limit` are busy. `fresh`
        (a retry) never takes a reused one. `watch` is handed the wait, so that a client who
        leaves meanwhile stops waiting (it fails the wait)."""
        while True:
            idle = self.idle
            while idle:
                conn = idle.pop()
                if conn.closed:
                    continue
                if conn.idle_since < self.loop.time() - self.keepalive:
                    self._expire_idle(conn)
                    break
                if not fresh:
                    return conn
                conn.close()  # frees its slot for the new connection
            if self.size < self.limit:
                return await self._connect(connect_timeout)
            if len(self._waiters) >= self.max_pending:  # a bulkhead: refuse now, not queue on
                raise UpstreamError(Failure.POOL, f"{len(self._waiters)} requests already wait for a connection")
            handed = await self._wait(watch)
            if handed is None or handed.closed:
                continue  # a slot came free (or the handed connection died): look again
            if not fresh:
                return handed
            handed.close()

    async def _wait(self, watch: Callable[[asyncio.Future[Any]], None] | None) -> UpstreamConnection | None:
        waiter: asyncio.Future[UpstreamConnection | None] = self.loop.create_future()
        self._waiters.append(waiter)
        timer = self.loop.call_later(self.wait_timeout, _expire, waiter, self.wait_timeout)
        if watch is not None:
            watch(waiter)  # the watcher only ever fails it (ClientGone)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                handed = waiter.result()
                if handed is not None:
                    self.release(handed)
                else:
                    self._wake()
            raise
        finally:
            timer.cancel()
            if not waiter.done():
                waiter.cancel()
            try:
                self._waiters.remove(waiter)
            except ValueError:
                pass

    async def _connect(self, within: float) -> UpstreamConnection:
        self.opening += 1
        try:
            async with asyncio.timeout(within):
                _, conn = await self.loop.create_connection(
                    lambda: UpstreamConnection(self), self.host, self.port, ssl=self.tls,
                    server_hostname=self.host if self.tls is not None else None)
            self.connections.add(conn)
            return conn
        except TimeoutError:
            self._wake()
            raise UpstreamError(Failure.CONNECT, f"no connection within {within:g}s") from None
        except ssl.SSLError as exc:
            self._wake()
            raise UpstreamError(Failure.CONNECT, f"TLS: {exc.reason or exc}") from None
        except OSError as exc:
            self._wake()
            raise UpstreamError(Failure.CONNECT, exc.strerror or type(exc).__name__) from None
        except BaseException:
            self._wake()
            raise
        finally:
            self.opening -= 1

    def release(self, conn: UpstreamConnection) -> None:
        """A connection after a complete response: to a waiting request, or idle."""
        conn.uses += 1
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        conn.idle_since = self.loop.time()
        self.idle.append(conn)

    def lost(self, conn: UpstreamConnection) -> None:
        if conn in self.connections:
            self.connections.discard(conn)
            try:
                self.idle.remove(conn)
            except ValueError:
                pass
            self._wake()

    def _wake(self) -> None:
        """A slot came free: let one waiter open a connection of its own."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def sweep(self) -> None:
        """Close connections idle for longer than `keepalive` (before the upstream does)."""
        if not self.idle:
            return
        horizon = self.loop.time() - self.keepalive
        for conn in [c for c in self.idle if c.idle_since < horizon]:
            self.idle.remove(conn)
            conn.close()

    def close(self) -> None:
        for conn in list(self.connections):
            conn.close()
        self.idle.clear()
        if self._clock is not None:
            self._clock.cancel()
            self._clock = None


def _expire(waiter: asyncio.Future[UpstreamConnection | None], timeout: float) -> None:
    if not waiter.done():
        waiter.set_exception(UpstreamError(Failure.POOL, f"no free upstream connection within {timeout:g}s"))


async def send(pool: TargetPool, head: bytes, body: AsyncIterable[bytes] | None, *, chunked: bool,
               head_only: bool, stall: float, connect_timeout: float, small_body: int,
               on_interim: Callable[[int, Headers], None] | None = None,
               fresh: bool = False,
               watch: Callable[[asyncio.Future[Any]], None] | None = None) -> Exchange:
    """Send one request and wait for its response head.

    `stall` bounds the wait for the head and every gap in the body (and a stalled upload);
    bodies with a known length up to `small_body` bytes are read whole (`read_whole`), others
    stream (`stream`). Raises `UpstreamError`; an error raised by `body` (the client's side)
    propagates as it is, after the upstream connection was closed mid-request (the upstream
    sees an unterminated request and processes nothing). `watch` is handed the head's future
    once the request is out; failing it (the client left) drops the upstream connection.
    """
    conn = None if fresh else pool.take()
    if conn is None:
        conn = await pool.acquire(connect_timeout, fresh=fresh, watch=watch)
    ex = conn.begin(head_only, small_body, on_interim)
    transport = conn.transport
    assert transport is not None
    try:
        transport.write(head)
        if body is not None:
            await conn.write_body(body, chunked, stall)
        if conn.exchange is ex:
            conn.arm(stall, "head")  # stays armed through the body: every gap is bounded
        if watch is not None:
            watch(ex.head)
        await ex.head
    except UpstreamError:
        _abandon(ex)
        raise
    except _UpstreamClosed:
        if ex.head.done() and not ex.head.cancelled() and ex.head.exception() is None:
            return ex  # the upstream answered early, then closed: its answer stands
        _abandon(ex)
        raise UpstreamError(Failure.RESET, "the upstream closed the connection during the request") from None
    except BaseException:
        _abandon(ex)  # the client's body failed, or we were cancelled: never half-sent
        raise
    return ex


def _abandon(ex: Exchange) -> None:
    ex.release()
    head = ex.head
    if head.done() and not head.cancelled():
        head.exception()  # retrieved: the caller has the error already
