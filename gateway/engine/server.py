"""The HTTP/1.1 server: one asyncio.Protocol per client connection, parsed by llhttp.

A connection goes through these states, and only these (h11's habit of writing them down):

    idle      waiting for the first byte of a request          -> closed after idle_timeout
    head      a request head is arriving                        -> 408 after header_timeout,
                                                                   414 / 431 past the limits,
                                                                   400 / 505 when invalid
    handling  the application has the request; its body (if any) streams with backpressure,
              a gap longer than body_timeout fails the body (the application answers 408)
    sending   the response goes out; a client that reads nothing for send_timeout is dropped
    then      keep-alive: the next pipelined request (answered strictly in order), or idle;
              otherwise the connection closes once the response is out

Pipelined requests are parsed ahead and queued; past `max_pipelined` queued requests the
connection stops reading until the queue shrinks. A request body nobody read (an early refusal)
is discarded up to `DRAIN_LIMIT` bytes to keep the connection, else the connection closes
after the response. Every refusal is a problem body with `Connection: close`.

Timeouts are checked by one sweep per server (every `tick` seconds) over deadlines the
connections keep as plain numbers, so a request pays two float stores for them, not a timer.

Each connection has one runner task (`_serve`) that runs its requests one after another and
parks on a future between them: a request costs no task of its own, only that future.

The application is `async handler(request)`; it answers through `request.conn`: `respond()`
for a whole response, or `start()`, `await write()`, `end()` for a streamed one (`abort()` cuts
the connection). `interim()` sends a 1xx (103 Early Hints) before the final response.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from httptools import (
    HttpParserCallbackError,
    HttpParserError,
    HttpParserInvalidURLError,
    HttpParserUpgrade,
    HttpRequestParser,
    parse_url,
)
from mypy_extensions import mypyc_attr

from gateway.engine.body import BodyStream
from gateway.engine.wire import (
    LAST_CHUNK,
    SERVER,
    Headers,
    chunk,
    http_date,
    status_line,
    valid_host,
)
from gateway.problem import problem_body

log = logging.getLogger("gateway.engine")

DRAIN_LIMIT = 1024 * 1024  # unread request body bytes we discard to keep a connection
PARSE_SLICE = 16 * 1024  # bytes handed to llhttp at once when a read is larger
LINGER = 2.0  # seconds we keep reading (and dropping) after our last response on a close


# The request fields the engine itself reads (framing, expectations, the Host).
_ENGINE_FIELDS = frozenset({b"content-length", b"transfer-encoding", b"expect", b"host"})
# Response fields the engine sets itself: never passed on from the application's list.
_OWN_FIELDS = frozenset({b"content-length", b"date", b"server", b"connection", b"transfer-encoding"})


@mypyc_attr(native_class=False)  # compiled: a subclass of a builtin exception stays a Python class
class ClientGone(ConnectionResetError):
    """The client closed its connection; its request body will not complete."""


@mypyc_attr(native_class=False)  # compiled: a subclass of a builtin exception stays a Python class
class BodyTimeout(TimeoutError):
    """The request body stalled for longer than `body_timeout`."""


@dataclass(frozen=True, slots=True)
class Limits:
    """What one client may cost the server (the `proxy.*` settings)."""

    max_url_bytes: int = 8192
    max_header_bytes: int = 32 * 1024
    max_headers: int = 100
    header_timeout: float = 10.0
    idle_timeout: float = 60.0
    body_timeout: float = 60.0
    send_timeout: float = 60.0
    max_pipelined: int = 16
    max_connections: int = 0  # open client connections per process (0: no cap)
    max_connections_per_client: int = 0  # per peer address (0: no cap)
    request_timeout: float = 0.0  # from a request's start to its response's end (0: none)


class Request:
    """One parsed request head; `body` is None when the request has none."""

    __slots__ = ("method", "target", "path", "query", "headers", "version", "keep_alive", "body",
                 "conn", "expect_continue", "upgrade", "started", "complete", "content_length",
                 "chunked", "answered")

    def __init__(self, conn: HttpConnection, method: str, target: bytes, headers: Headers,
                 version: str, keep_alive: bool) -> None:
        self.conn = conn
        self.method = method
        self.target = target
        if target[:1] == b"/" or target == b"*":
            path, _, query = target.partition(b"?")
        else:  # absolute-form (RFC 9112 3.2.2): the path and query are in it
            try:
                url = parse_url(target)
                path, query = url.path or b"/", url.query or b""
            except HttpParserInvalidURLError:
                path, query = target, b""
        self.path = path
        self.query = query
        self.headers = headers
        self.version = version
        self.keep_alive = keep_alive
        self.body: BodyStream | None = None
        self.expect_continue = False
        self.upgrade = False  # the client offered a protocol upgrade
        self.started = 0.0
        self.complete = False  # the whole request (head and body) has arrived
        self.content_length: int | None = None
        self.chunked = False
        # the status the engine answered itself, ending the request early (the request timeout,
        # the end of a drain): what the client got, whatever the handler's response was
        self.answered = 0

    @property
    def peer(self) -> tuple[str, int]:
        return self.conn.peer

    @property
    def scheme(self) -> str:
        return self.conn.scheme


Handler = Callable[[Request], Awaitable[None]]


class Server:
    """Shared by every connection of one listening socket: the handler, limits, the sweep."""

    def __init__(self, handler: Handler, limits: Limits | None = None, *, scheme: str = "http") -> None:
        self.handler = handler
        self.scheme = scheme
        self.connections: set[HttpConnection] = set()
        self.per_peer: dict[str, int] = {}  # open connections per peer address (when capped)
        self.draining = False
        self._sweeper: asyncio.TimerHandle | None = None
        self.set_limits(limits or Limits())
        self.loop: asyncio.AbstractEventLoop | None = None
        self.servers: list[asyncio.base_events.Server] = []

    def set_limits(self, limits: Limits) -> None:
        """The limits of connections accepted from now on (a reload; open ones keep theirs)."""
        self.limits = lim = limits
        self.tick = max(0.05, min(1.0, lim.header_timeout / 4, lim.idle_timeout / 4,
                                  lim.body_timeout / 4, lim.send_timeout / 4,
                                  lim.request_timeout / 4 if lim.request_timeout else 1.0))

    def protocol(self) -> HttpConnection:
        return HttpConnection(self)

    async def listen(self, sock: Any = None, *, host: str | None = None, port: int | None = None,
                     backlog: int = 2048, tls: ssl.SSLContext | None = None,
                     handshake_timeout: float | None = None) -> asyncio.base_events.Server:
        """Accept connections (TLS ones with `tls`: the handshake must end within
        `handshake_timeout`, the head timeout's counterpart for a client that stalls there)."""
        loop = self.loop = asyncio.get_running_loop()
        extra: dict[str, Any] = {}
        if tls is not None:
            extra = {"ssl": tls, "ssl_handshake_timeout": handshake_timeout or self.limits.header_timeout}
        if sock is not None:
            server = await loop.create_server(self.protocol, sock=sock, backlog=backlog, **extra)
        else:
            server = await loop.create_server(self.protocol, host=host, port=port or 0, backlog=backlog,
                                              **extra)
        self.servers.append(server)
        if self._sweeper is None:
            self._sweeper = loop.call_later(self.tick, self._sweep)
        return server

    def _sweep(self) -> None:
        loop = self.loop
        assert loop is not None
        now = loop.time()
        for conn in list(self.connections):
            if conn.read_deadline and now > conn.read_deadline:
                conn.on_read_timeout()
            if conn.write_deadline and now > conn.write_deadline:
                conn.on_write_timeout()
            if conn.request_deadline and now > conn.request_deadline:
                conn.on_request_timeout()
        self._sweeper = loop.call_later(self.tick, self._sweep)

    def start_sweeping(self, loop: asyncio.AbstractEventLoop) -> None:
        """For connections made without `listen` (the in-process test client)."""
        self.loop = loop
        if self._sweeper is None:
            self._sweeper = loop.call_later(self.tick, self._sweep)

    async def shutdown(self, grace: float) -> None:
        """Stop accepting, close idle connections, let in-flight requests finish within
        `grace` seconds (their responses say `Connection: close`), then end what is left: a
        request not yet answered gets a 503 problem, a response under way is cut."""
        self.draining = True
        for server in self.servers:
            server.close()
        for conn in list(self.connections):
            conn.close_if_idle()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while self.connections and loop.time() < deadline:
            await asyncio.sleep(0.05)
            for conn in list(self.connections):
                conn.close_if_idle()
        for conn in list(self.connections):
            conn.end_for_shutdown()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for server in self.servers:
            await server.wait_closed()


class HttpConnection(asyncio.Protocol):
    """One client connection: parses requests, runs them in order, writes the responses."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.limits = server.limits
        self.handler = server.handler
        self.scheme = server.scheme
        self.loop = server.loop or asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.peer: tuple[str, int] = ("0.0.0.0", 0)
        self.parser = HttpRequestParser(self)
        self.closed = False
        self._counted = False  # counted in server.per_peer
        self.read_deadline = 0.0
        self.write_deadline = 0.0
        self.request_deadline = 0.0  # the running request's end, by proxy.request_timeout
        self._read_kind = ""
        # the request being parsed
        self._url: list[bytes] = []
        self._url_bytes = 0
        self._headers: Headers = []
        self._head_bytes = 0  # the size of the head's complete fields (exact)
        self._head_raw = 0  # bytes read for the head after the read it began in (a lower bound)
        self._in_head = False
        self._parsing: Request | None = None
        # the requests parsed and not yet answered, in order; the first one runs
        self._queue: deque[Request] = deque()
        self._active: Request | None = None
        self._draining_body: Request | None = None
        self._drain_until = 0  # received-count of the discarded body past which we close
        self._blocks = 0  # reasons to keep the socket unread (body backpressure, queue full)
        self._closing = False  # no more requests: the last response says Connection: close
        self._eof = False  # the client half-closed: answer what was asked, then close
        self._lingering = False
        self._stash = b""  # bytes read but not parsed while the pipeline queue is full
        # the response being written
        self._state = 0  # 0 none, 1 started (head buffered or sent), 2 ended
        self._head: bytes | None = None
        self._chunked = False
        self._remaining = -1  # Content-Length bytes still to send; -1 when not length-framed
        self._no_body = False
        self._write_paused = False
        self._drain: asyncio.Future[None] | None = None
        self._sent_continue = False
        self._end_waiters: list[asyncio.Future[None]] = []
        # failed with ClientGone if the client leaves while it is pending (see watch_leave)
        self._watched: asyncio.Future[Any] | None = None
        # the connection's runner task (see _serve)
        self._running = False
        self._waiter: asyncio.Future[Request | None] | None = None

    # -- asyncio.Protocol --------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            self.peer = (str(peer[0]), int(peer[1]))
        server = self.server
        limits = self.limits
        if limits.max_connections and len(server.connections) >= limits.max_connections:
            self._turn_away("the gateway is at its connection limit")
            return
        if limits.max_connections_per_client:
            address = self.peer[0]
            count = server.per_peer.get(address, 0)
            if count >= limits.max_connections_per_client:
                self._turn_away(f"more than {limits.max_connections_per_client} connections from this address")
                return
            server.per_peer[address] = count + 1
            self._counted = True
        server.connections.add(self)
        self._set_idle()

    def _turn_away(self, detail: str) -> None:
        """Refuse a connection past a cap: a 503 problem at once, then close (never queued)."""
        self._closing = True
        self.respond(503, [(b"content-type", b"application/problem+json"), (b"retry-after", b"1")],
                     problem_body(503, detail, kind="too-many-connections"))
        self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.read_deadline = self.write_deadline = self.request_deadline = 0.0
        self.server.connections.discard(self)
        if self._counted:
            self._counted = False
            per_peer = self.server.per_peer
            left = per_peer.get(self.peer[0], 1) - 1
            if left > 0:
                per_peer[self.peer[0]] = left
            else:
                per_peer.pop(self.peer[0], None)
        gone = ClientGone("the client closed the connection")
        self._client_left(gone)
        for request in (self._active, self._parsing, *self._queue):
            if request is not None and request.body is not None:
                request.body.fail(gone)
        self._queue.clear()
        drain = self._drain
        if drain is not None:
            self._drain = None
            if not drain.done():
                drain.set_exception(gone)
        self._ended()
        waiter = self._waiter
        if waiter is not None:  # the runner is parked: let it end
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def eof_received(self) -> bool | None:
        # The client half-closed. Answers to what it asked may still go out (keep our side
        # open); with nothing asked, close.
        self._eof = True
        self.read_deadline = 0.0
        if self._client_left(ClientGone("the client closed the connection before the response began")):
            return None  # it gave up on what it asked (nginx's 499): close, answer nothing
        # A body still arriving never will; left alone, its reader would wait for it forever,
        # and the connection with it. Served or being skipped: the client is gone, as if it had
        # reset (close; connection_lost fails the body). Queued behind a response: drop it.
        request = self._parsing
        if request is not None and request.body is not None and not request.complete:
            if request not in self._queue:
                return None
            self._queue.remove(request)
            request.body.fail(ClientGone("the client closed its side before the request body ended"))
        if self._active is None and not self._queue:
            return None
        return True

    def pause_writing(self) -> None:
        self._write_paused = True
        self.write_deadline = self.loop.time() + self.limits.send_timeout

    def resume_writing(self) -> None:
        self._write_paused = False
        self.write_deadline = 0.0
        drain = self._drain
        if drain is not None:
            self._drain = None
            if not drain.done():
                drain.set_result(None)

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            return  # after our last response: read and drop until the client closes
        if self._stash:  # we stopped reading with bytes still unparsed: they come first
            self._stash += data
            return
        # llhttp parses all it is given, and one read can hold hundreds of pipelined requests:
        # hand it one head (and then at most PARSE_SLICE of a body) at a time, and keep the
        # rest unparsed once the queue is full (reading stops then too), so `max_pipelined`
        # bounds the queue whatever the read size. A read holding one head is fed whole.
        size = len(data)
        begin = 0
        view: memoryview | None = None
        while begin < size:
            if self.closed or self._lingering:
                return
            if self._stash or len(self._queue) >= self.limits.max_pipelined:
                self._stash += data[begin:]
                return
            end = data.find(b"\r\n\r\n", begin)
            stop = size if end < 0 else end + 4
            if stop - begin > PARSE_SLICE:
                stop = begin + PARSE_SLICE
            if begin == 0 and stop == size:
                self._feed(data)
                return
            if view is None:
                view = memoryview(data)
            self._feed(view[begin:stop])
            begin = stop

    def _feed(self, data: bytes | memoryview) -> None:
        counted = self._in_head
        try:
            self.parser.feed_data(data)
        except HttpParserCallbackError as exc:
            refusal = exc.__context__
            if isinstance(refusal, _Refusal):
                self._refuse(refusal.status, refusal.detail, refusal.headers, refusal.kind)
            else:
                log.exception("request parsing failed", exc_info=refusal)
                self._refuse(400, "the request could not be parsed")
            return
        except HttpParserUpgrade as exc:
            self._upgrade_offered(data, exc)
            return
        except HttpParserError as exc:
            if str(exc) == "Invalid HTTP version":  # llhttp knows 1.0, 1.1 and 2.0 only
                self._refuse(505, "this HTTP version is not supported; use HTTP/1.1")
            else:
                self._refuse(400, f"malformed request: {exc}")
            return
        if self._in_head:
            # Two lower bounds of the head's size, checked apart (a field's bytes are in both:
            # their sum refused a head that came in pieces at about half the limit): the
            # complete fields, and the raw bytes of the reads after the one the head began in
            # (a 16 MB line is refused after about `max_header_bytes` read, though it never
            # completes a field).
            if counted:
                self._head_raw += len(data)
            limit = self.limits.max_header_bytes
            if self._head_raw > limit or self._head_bytes > limit:
                self._refuse(431, f"request headers exceed {limit} bytes")
            elif self._url and self._no_version(data):
                self._refuse(400, "the request line has no HTTP version")

    def _no_version(self, data: bytes | memoryview) -> bool:
        """The head under way began with a request line without a version (`GET /`, HTTP/0.9).
        llhttp takes such a line as the start of a head and waits for its end, but an HTTP/0.9
        client sends nothing more and waits for an answer: without this, it would get one only
        at header_timeout. Checked only while a head is incomplete after a read; a line that
        came in pieces is not recognised (it gets the 408 at header_timeout)."""
        if self.parser.get_http_version() == "0.9":  # set once a byte follows such a line
            return True
        if self._headers or data[-1:] != b"\n":
            return False
        data = bytes(data)
        # The read ended with the request line's end, and the line ends with the target.
        return data.rstrip(b"\r\n").endswith(b" " + b"".join(self._url))

    # -- llhttp callbacks --------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._in_head = True
        self._head_bytes = 0
        self._head_raw = 0
        self._url = []
        self._url_bytes = 0
        self._headers = []
        self.read_deadline = self.loop.time() + self.limits.header_timeout
        self._read_kind = "head"

    def on_url(self, url: bytes) -> None:
        self._url.append(url)
        self._url_bytes += len(url)
        if self._url_bytes > self.limits.max_url_bytes:
            raise _Refusal(414, f"the request target exceeds {self.limits.max_url_bytes} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        headers = self._headers
        headers.append((name, value))  # names to lower case in on_headers_complete, in one pass
        self._head_bytes += len(name) + len(value) + 4
        if len(headers) > self.limits.max_headers:
            raise _Refusal(431, f"more than {self.limits.max_headers} header fields")
        if self._head_bytes > self.limits.max_header_bytes:
            raise _Refusal(431, f"request headers exceed {self.limits.max_header_bytes} bytes")

    def on_headers_complete(self) -> None:
        self._in_head = False
        parser = self.parser
        version = parser.get_http_version()
        if version != "1.1" and version != "1.0":
            if version.startswith("0."):  # no version in the request line: not HTTP/1.x
                raise _Refusal(400, "the request line has no HTTP version")
            raise _Refusal(505, f"HTTP/{version} is not supported; use HTTP/1.1")
        method = parser.get_method().decode("ascii")
        if method == "CONNECT":
            raise _Refusal(405, "CONNECT (tunnelling) is not supported by this gateway",
                           [(b"allow", b"GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS")])
        target = self._url[0] if len(self._url) == 1 else b"".join(self._url)
        headers: Headers = []
        request = Request(self, method, target, headers, version, parser.should_keep_alive())
        now = request.started = self.loop.time()
        has_body = False
        hosts = 0
        for name, value in self._headers:
            name = name.lower()
            headers.append((name, value))
            if name not in _ENGINE_FIELDS:
                continue
            if name == b"host":
                hosts += 1
                if hosts > 1:
                    raise _Refusal(400, "the Host header field may appear only once", kind="duplicate-header")
                if not valid_host(value):
                    raise _Refusal(400, "the Host header field is not a valid host[:port]", kind="invalid-host")
            elif name == b"content-length":
                length = int(value)  # llhttp checked it (digits, a single value)
                request.content_length = length
                has_body = length > 0
            elif name == b"transfer-encoding":
                # llhttp undoes the chunking only; any other coding (`gzip, chunked`) would
                # reach the application still coded, and be forwarded as if it were not.
                if value.strip().lower() != b"chunked":
                    raise _Refusal(501, "only the chunked transfer coding is supported",
                                   kind="unsupported-transfer-coding")
                has_body = True
                request.chunked = True
            elif name == b"expect":
                if value.lower() != b"100-continue":
                    raise _Refusal(417, "the only expectation supported is 100-continue")
                request.expect_continue = version == "1.1"
        if not hosts and version == "1.1":
            raise _Refusal(400, "an HTTP/1.1 request must carry a Host header field (RFC 9112, 3.2)",
                           kind="missing-host")
        if has_body:
            request.body = BodyStream(self._block, self._unblock,
                                      self._send_continue if request.expect_continue else None)
            self.read_deadline = now + self.limits.body_timeout
            self._read_kind = "body"
        else:
            self.read_deadline = 0.0
        if parser.should_upgrade():
            request.upgrade = True
        self._parsing = request
        self._dispatch(request)

    def on_body(self, body: bytes) -> None:
        request = self._parsing
        if request is not None and request.body is not None:
            request.body.feed(body)
            self.read_deadline = self.loop.time() + self.limits.body_timeout
            if request is self._draining_body and request.body.received > self._drain_until:
                # A chunked body has no length to check up front: discard at most DRAIN_LIMIT.
                self._draining_body = None
                self._closing = True  # what the rest of this read holds is not served
                self._close_after_response()

    def on_message_complete(self) -> None:
        request = self._parsing
        self._parsing = None
        if request is None:
            return
        request.complete = True
        if request.body is not None:
            request.body.finish()
        if request is self._active or request in self._queue:
            self.read_deadline = 0.0  # the request is in; its handler runs on its own clock
        if request is self._draining_body:
            self._draining_body = None
            self._next()

    # -- running requests in order -----------------------------------------------------------
    def _dispatch(self, request: Request) -> None:
        if self._active is None and self._draining_body is None and not self._closing:
            self._start(request)
            return
        self._queue.append(request)
        if len(self._queue) == self.limits.max_pipelined:
            self._block()

    def _start(self, request: Request) -> None:
        self._active = request
        self._state = 0
        self._sent_continue = False
        if self.limits.request_timeout:
            self.request_deadline = self.loop.time() + self.limits.request_timeout
        if not self._running:
            self._running = True
            self.loop.create_task(self._serve(request))
            return
        waiter = self._waiter
        if waiter is not None:  # the runner is parked between requests: hand it this one
            self._waiter = None
            waiter.set_result(request)
        # else the runner is finishing the previous request and takes `_active` next

    async def _serve(self, request: Request | None) -> None:
        """The connection's runner: one task runs its requests one after another (parked on a
        future between them), so a request costs no task of its own."""
        try:
            while request is not None:
                try:
                    await self.handler(request)
                except Exception:
                    log.exception("the request handler failed")
                    if self._state == 0 and not self.closed:
                        self.respond(500, [(b"content-type", b"application/problem+json")],
                                     problem_body(500, "the gateway failed to handle this request"))
                finally:
                    if self._state != 2 and not self.closed:
                        if self._state == 0:
                            self.respond(500, [(b"content-type", b"application/problem+json")],
                                         problem_body(500, "the request was not answered"))
                        else:
                            self.abort()  # a response cut short must not look complete
                    self._finish(request)  # may start the next request: `_active`
                request = self._active
                if request is None:
                    if self.closed:
                        return
                    waiter = self._waiter = self.loop.create_future()
                    request = await waiter  # None: the connection is gone
        finally:
            self._running = False
            self._waiter = None

    def _finish(self, request: Request) -> None:
        self._active = None
        self.request_deadline = 0.0
        if self.closed:
            return
        if self._closing or not request.keep_alive or self.server.draining:
            self._close_after_response()
            return
        body = request.body
        if body is not None and not request.complete:
            if self._body_unskippable(request):
                self._close_after_response()
                return
            body.discard()  # read and drop the rest, then go on with the next request
            self._draining_body = request
            self._drain_until = body.received + DRAIN_LIMIT
            return
        self._next()

    def _body_unskippable(self, request: Request) -> bool:
        """The unread rest of `request`'s body cannot be discarded to reach the next request,
        so the connection ends with this response (which must say so): the body was never asked
        for (Expect: 100-continue without a 100), it failed (it stalled, or was cut short), or
        more than DRAIN_LIMIT bytes of it are still to come."""
        body = request.body
        if body is None or request.complete:
            return False
        if body.failed is not None or request.expect_continue and not self._sent_continue:
            return True
        return not request.chunked and (request.content_length or 0) - body.received > DRAIN_LIMIT

    def _next(self) -> None:
        if self._queue:
            request = self._queue.popleft()
            if len(self._queue) == self.limits.max_pipelined - 1:
                self._unblock()
                if self._stash:  # room in the queue again: parse on where we stopped
                    stash, self._stash = self._stash, b""
                    self.loop.call_soon(self.data_received, stash)
            self._start(request)
        elif self._eof:
            self.close()
        elif not self._in_head:
            self._set_idle()

    def _set_idle(self) -> None:
        if not self._in_head and self._parsing is None:
            self.read_deadline = self.loop.time() + self.limits.idle_timeout
            self._read_kind = "idle"

    def _block(self) -> None:
        self._blocks += 1
        if self._blocks == 1 and self.transport is not None and not self.closed:
            self.transport.pause_reading()
            if self._read_kind == "body":
                self.read_deadline = 0.0  # we stopped reading: the client is not stalling

    def _unblock(self) -> None:
        self._blocks -= 1
        if self._blocks == 0 and self.transport is not None and not self.closed:
            self.transport.resume_reading()
            if self._read_kind == "body":
                self.read_deadline = self.loop.time() + self.limits.body_timeout

    def _send_continue(self) -> None:
        if self._state == 0 and not self._sent_continue and self.transport is not None:
            self._sent_continue = True
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    # -- timeouts (called by the server's sweep) ---------------------------------------------
    def on_read_timeout(self) -> None:
        kind = self._read_kind
        self.read_deadline = 0.0
        if kind == "idle":
            self.close()
        elif kind == "head":
            self._refuse(408, f"the request head was not received within {self.limits.header_timeout:g}s")
        elif kind == "body":
            request = self._parsing
            if request is not None and request.body is not None and request is not self._draining_body:
                request.body.fail(BodyTimeout(
                    f"the request body stalled for {self.limits.body_timeout:g}s"))
            else:
                self.close()

    def on_write_timeout(self) -> None:
        self.write_deadline = 0.0
        self.abort()

    def on_request_timeout(self) -> None:
        """The running request outlived `request_timeout`: answer it now if nothing was sent
        (408 while its body is still arriving, else 504), or cut the response under way. The
        connection closes, so whatever still works on the request (an upload, the upstream's
        answer) is dropped with it (connection_lost)."""
        self.request_deadline = 0.0
        request = self._active
        if request is None or self.closed:
            return
        if self._state == 0:
            uploading = request.body is not None and not request.complete
            status = 408 if uploading else 504
            what = "its body did not arrive" if uploading else "it was not answered"
            self._answer_and_close(request, status, [], problem_body(
                status, f"{what} within the request timeout ({self.limits.request_timeout:g}s)",
                kind="request-timeout"))
        else:
            self.abort()

    # -- writing responses -------------------------------------------------------------------
    @property
    def left(self) -> bool:
        """The client closed its side or the connection: it will read no answer."""
        return self._eof or self.closed

    def watch_leave(self, future: asyncio.Future[Any]) -> None:
        """Fail `future` (the upstream's response head) with ClientGone if the client leaves
        before it resolves: the caller drops the upstream request instead of finishing it for
        nobody."""
        self._watched = future
        if self.left:
            self._client_left(ClientGone("the client closed the connection"))

    def _client_left(self, gone: ClientGone) -> bool:
        watched = self._watched
        if watched is None:
            return False
        self._watched = None
        if watched.done():
            return False
        watched.set_exception(gone)
        return True

    def interim(self, status: int, headers: Headers) -> None:
        """A 1xx before the final response (HTTP/1.1 clients only)."""
        request = self._active
        if self._state != 0 or self.closed or request is None or request.version != "1.1":
            return
        parts = [status_line(status)]
        for name, value in headers:
            parts += (name, b": ", value, b"\r\n")
        parts.append(b"\r\n")
        assert self.transport is not None
        self.transport.write(b"".join(parts))

    def _head_bytes_for(self, status: int, headers: Headers, length: int | None) -> bytes:
        request = self._active
        version = request.version if request is not None else "1.1"
        method = request.method if request is not None else "GET"
        keep_alive = (request is not None and request.keep_alive and not self._closing
                      and not self.server.draining and not self._body_unskippable(request))
        no_body = method == "HEAD" or status in (204, 304) or status < 200
        parts = [status_line(status) if version == "1.1" else status_line(status, b"1.0")]
        has_date = False
        given_length: bytes | None = None
        for name, value in headers:
            if name in _OWN_FIELDS:
                if name == b"date":
                    has_date = True
                elif name == b"content-length":
                    given_length = value
                    continue
                else:
                    continue
            parts += (name, b": ", value, b"\r\n")
        parts += (b"server: ", SERVER, b"\r\n")
        if not has_date:
            parts += (b"date: ", http_date(), b"\r\n")
        self._chunked = False
        self._remaining = -1
        self._no_body = no_body
        if no_body:
            # HEAD keeps the length of the body it stands for; 204 and 1xx carry none.
            if status != 204 and status >= 200:
                if given_length is not None:
                    parts += (b"content-length: ", given_length, b"\r\n")
                elif length:
                    parts += (b"content-length: ", b"%d" % length, b"\r\n")
        elif length is not None:
            parts += (b"content-length: ", b"%d" % length, b"\r\n")
            self._remaining = length
        elif version == "1.1":
            parts.append(b"transfer-encoding: chunked\r\n")
            self._chunked = True
        else:
            keep_alive = False  # HTTP/1.0 without a length: the close ends the body
        if not keep_alive:
            self._closing = True
            parts.append(b"connection: close\r\n")
        elif version == "1.0":
            parts.append(b"connection: keep-alive\r\n")
        parts.append(b"\r\n")
        return b"".join(parts)

    def respond(self, status: int, headers: Headers, body: bytes = b"") -> None:
        """The whole response at once (Content-Length is set from `body`)."""
        if self._state != 0:
            if self.closed:
                return  # cut (a drain past its grace, a timeout): there is no one to answer
            raise RuntimeError("a response was already started")
        self._state = 2
        if self._end_waiters:
            self._ended()
        if self.closed:
            return
        head = self._head_bytes_for(status, headers, len(body))
        assert self.transport is not None
        if body and not self._no_body:
            self.transport.write(head + body)
        else:
            self.transport.write(head)

    def start(self, status: int, headers: Headers, length: int | None = None) -> None:
        """Begin a streamed response: `length` bytes exactly, or chunked (close-delimited for
        HTTP/1.0) when None. The head goes out with the first chunk."""
        if self._state != 0:
            if self.closed:
                return  # cut: `write` raises ClientGone
            raise RuntimeError("a response was already started")
        self._state = 1
        self._head = self._head_bytes_for(status, headers, length)

    async def write(self, data: bytes) -> None:
        """One piece of a streamed body; waits while the client's socket buffer is full."""
        if self.closed:
            raise ClientGone("the client closed the connection")
        transport = self.transport
        assert transport is not None
        if self._no_body:
            data = b""
        elif self._remaining >= 0:
            if len(data) > self._remaining:
                data = data[: self._remaining]
            self._remaining -= len(data)
        elif self._chunked and data:
            data = chunk(data)
        head = self._head
        if head is not None:
            self._head = None
            data = head + data
        if data:
            transport.write(data)
        if self._write_paused:
            drain = self._drain = self.loop.create_future()
            await drain

    def end(self) -> None:
        """The streamed body is complete. Too few bytes for its Content-Length: cut."""
        if self._state != 1:
            return
        self._state = 2
        if self._end_waiters:
            self._ended()
        if self.closed:
            return
        assert self.transport is not None
        tail = LAST_CHUNK if self._chunked and not self._no_body else b""
        head = self._head
        if head is not None:
            self._head = None
            tail = head + tail
        if tail:
            self.transport.write(tail)
        if self._remaining > 0 and not self._no_body:
            self._remaining = -1
            self.abort()

    def response_finished(self) -> asyncio.Future[None]:
        """Resolves once the current response is complete or the connection is gone."""
        future: asyncio.Future[None] = self.loop.create_future()
        if self._state == 2 or self.closed:
            future.set_result(None)
        else:
            self._end_waiters.append(future)
        return future

    def _ended(self) -> None:
        waiters, self._end_waiters = self._end_waiters, []
        for future in waiters:
            if not future.done():
                future.set_result(None)

    # -- closing -----------------------------------------------------------------------------
    def abort(self) -> None:
        """Cut the connection now (a response that broke must not look complete), dropping
        whatever is still buffered: `transport.close()` would wait for a client that does not
        read, and hold the connection, its buffer and the upstream behind it indefinitely."""
        self._state = 2
        if self._end_waiters:
            self._ended()
        if not self.closed and self.transport is not None:
            self.closed = True
            self.transport.abort()  # connection_lost follows at once: the writer gets ClientGone

    def close(self) -> None:
        if not self.closed and self.transport is not None:
            self.closed = True
            self.transport.close()

    def end_for_shutdown(self) -> None:
        """The drain's grace ran out: answer a request that has no response yet with a 503
        (the application's own answer, when it comes, finds the connection closed and goes
        nowhere), and cut a response under way (it must not look complete)."""
        if self.closed:
            return
        request = self._active
        if request is not None and self._state == 0:
            self._answer_and_close(request, 503, [(b"retry-after", b"1")], problem_body(
                503, "the gateway is shutting down: retry the request", kind="shutting-down"))
        else:
            self.abort()

    def _answer_and_close(self, request: Request, status: int, headers: Headers, body: bytes) -> None:
        """The engine's own answer to a running request whose handler has not answered."""
        request.answered = status
        self._closing = True
        self.respond(status, [(b"content-type", b"application/problem+json"), *headers], body)
        self.close()

    def close_if_idle(self) -> None:
        if self._active is None and not self._queue and not self.closed:
            if self._in_head:
                self._refuse(503, "the server is shutting down")
            else:
                self.close()

    def _close_after_response(self) -> None:
        """Close once the response is out, without a reset that could destroy it in flight:
        send our FIN, read and drop what the client still sends, then close."""
        transport = self.transport
        if transport is None or self.closed:
            return
        self._lingering = True
        self.read_deadline = 0.0
        for request in self._queue:
            if request.body is not None:
                request.body.fail(ClientGone("the connection is closing"))
        self._queue.clear()
        if self._blocks:
            self._blocks = 0
            transport.resume_reading()
        if self._eof:
            self.close()
        elif transport.can_write_eof():
            transport.write_eof()
            self.loop.call_later(LINGER, self.close)
        else:
            self.close()

    def _refuse(self, status: int, detail: str, headers: Headers | None = None,
                kind: str | None = None) -> None:
        """Answer a request the connection cannot take, then close."""
        if self.closed:
            return
        self._in_head = False
        if self._active is not None:
            # A response is under way (this was a pipelined request): let it finish, answer
            # nothing more, and close after it.
            self._closing = True
            self.read_deadline = 0.0
            self._block()
            return
        self._closing = True
        self._state = 0
        self.respond(status, [(b"content-type", b"application/problem+json"), *(headers or ())],
                     problem_body(status, detail, kind=kind))
        self._close_after_response()

    def _upgrade_offered(self, data: bytes | memoryview, exc: HttpParserUpgrade) -> None:
        """llhttp stops at a request offering `Upgrade` (and at CONNECT). The request itself
        was dispatched; bytes after it belong to whatever comes next. We do not switch
        protocols here, so they are the next HTTP/1.1 request: parse them with a fresh parser."""
        offset = exc.args[0] if exc.args else len(data)
        self.parser = HttpRequestParser(self)
        if self._parsing is not None:  # the upgrade request's message ended at the offset
            self.on_message_complete()
        rest = bytes(data[offset:])
        if rest:
            self.data_received(rest)


class _Refusal(Exception):
    def __init__(self, status: int, detail: str, headers: Headers | None = None,
                 kind: str | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers or []
        self.kind = kind
