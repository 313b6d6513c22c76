"""The hot path: every routed request, straight from the engine (no ASGI, no framework).

The whole flow of a proxied request is in `HotPath.__call__`:

    check the request (path tricks, repeated or missing fields, methods, sizes, upgrades)
                                                  -> 400 / 405 / 413 / 501
    (the engine already refused oversized heads and targets, other codings: 431 / 414 / 501)
    build the RequestContext (request id, X-Forwarded-*, client ip)
    PolicyChain: identify -> rate limit -> cache -> breaker -> upstream   (one Redis round trip)
    send the response (streaming), then the policies' `after` phase (record outcomes, store cache)
    statistics (plain counters, gateway/stats.py), the access-log line (gateway/logs.py), the span
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from gateway.context import RequestContext, Response
from gateway.engine.failures import Failure
from gateway.engine.server import HttpConnection, Request
from gateway.engine.wire import connection_tokens
from gateway.forwarding import NOT_FORWARDED, TrustedProxies, forwarded_headers, request_id_from
from gateway.logs import AccessLog
from gateway.policy import PolicyChain
from gateway.problem import problem
from gateway.routing import Route, unsafe_path_reason
from gateway.stats import RequestStats
from gateway.tracing import TraceContext, TracePropagation

if TYPE_CHECKING:
    from gateway.spans import SpanExport

log = logging.getLogger("gateway.proxy")

# Fields a request may carry once (RFC 9110/9112 singletons, and our API key). Sent twice, such a
# field is ambiguous: this gateway and the backend might read different copies (an identity, a
# body type), and some backends answer with a broken response that counts against the breaker.
SINGLETON_FIELDS = frozenset({  # (Host: the engine checks it, for every request)
    b"content-length", b"content-type", b"authorization", b"proxy-authorization",
    b"x-api-key", b"range", b"if-range", b"if-modified-since", b"if-unmodified-since",
})
_FIELD_NAMES = {b"x-api-key": "X-API-Key"}
_DEFAULT_ALLOW = b"GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"

# The fields the hot path looks at, by code (one dict lookup per field; the rest are skipped).
_SINGLETON = 16
_REQUEST_ID, _TRACEPARENT, _TRACESTATE, _UPGRADE, _CONNECTION = range(1, 6)
_FIELDS: dict[bytes, int] = {name: _SINGLETON for name in SINGLETON_FIELDS}
_FIELDS.update({b"x-request-id": _REQUEST_ID, b"traceparent": _TRACEPARENT, b"tracestate": _TRACESTATE,
                b"upgrade": _UPGRADE, b"connection": _CONNECTION})



class HotPath:
    """Serves requests whose path matched a route."""

    def __init__(self, chain: PolicyChain, *, trusted: TrustedProxies, max_body_bytes: int,
                 stats: RequestStats, underscores_in_headers: bool = False,
                 access_log: AccessLog | None = None,
                 tracing: TracePropagation | None = None, spans: SpanExport | None = None) -> None:
        self.chain = chain
        self.trusted = trusted
        self.max_body_bytes = max_body_bytes
        self.underscores = underscores_in_headers
        self.stats = stats
        self.access_log = access_log
        self.tracing = tracing
        self.spans = spans
        self.inflight = 0  # requests running on this hot path (its configuration's generation)
        self._idle: asyncio.Event | None = None  # set when a replaced hot path runs dry

    async def drained(self) -> None:
        """Returns once no request runs here (a reload replaced it: no new ones come)."""
        if self.inflight:
            self._idle = asyncio.Event()
            await self._idle.wait()

    async def __call__(self, route: Route, request: Request, path: str) -> None:
        """Answer `request` (its decoded path is `path`, which matched `route`)."""
        self.inflight += 1  # a reload closes this hot path's policies when it reaches 0
        try:
            started = time.perf_counter()
            raw_headers = request.headers
            request_id = traceparent = tracestate = duplicate = None
            refused: tuple[int, str, str] | None = None  # (status, detail, kind) found in the fields
            singletons: set[bytes] = set()
            hop_by_hop: frozenset[bytes] | set[bytes] = NOT_FORWARDED
            fields = _FIELDS
            for key, value in raw_headers:
                code = fields.get(key)
                if code is None:  # most fields: one lookup
                    continue
                if code & _SINGLETON:
                    if key in singletons:
                        duplicate = key
                    singletons.add(key)
                    code &= ~_SINGLETON
                if code == _REQUEST_ID:
                    request_id = value
                elif code == _TRACEPARENT:
                    # A repeated traceparent is invalid: keeping the first would guess.
                    traceparent = value if traceparent is None else b"-"
                elif code == _TRACESTATE:
                    tracestate = value if tracestate is None else tracestate + b"," + value
                elif code == _UPGRADE:
                    if b"websocket" in value.lower():
                        refused = (501, "WebSocket upgrades are not supported by this gateway", "upgrade-not-supported")
                elif code == _CONNECTION:  # the fields it names are hop-by-hop too
                    hop_by_hop = hop_by_hop | connection_tokens(value)
            rid = request_id_from(request_id)
            method = request.method
            raw_path = request.path
            conn = request.conn

            early = self._check(route, method, raw_path, request.content_length, rid, duplicate, refused)
            if early is not None:
                self._send_whole(conn, early, rid, route.service, started)
                elapsed = time.perf_counter() - started
                self.stats.record(route, method, early.status, elapsed, None)
                if self.access_log is not None:
                    self.access_log.proxied(rid, method, path, route, early.status, elapsed, None)
                return

            scheme = request.scheme
            headers, client_ip = forwarded_headers(
                raw_headers, peer=conn.peer[0], scheme=scheme, trusted=self.trusted, request_id=rid,
                drop=hop_by_hop, underscores=self.underscores,
            )
            trace: TraceContext | None = None
            if self.tracing is not None:
                trace = self.tracing.start(traceparent, tracestate)
                headers = self.tracing.apply(headers, trace, traceparent is not None or tracestate is not None)
            ctx = RequestContext(
                request_id=rid, method=method, path=path, raw_path=raw_path,
                query_string=request.query, headers=headers, client_ip=client_ip, scheme=scheme,
                route=route, body=request.body, client_headers=raw_headers,
                has_body=request.body is not None,  # the engine's: Content-Length > 0 or chunked
                chunked=request.chunked, content_length=request.content_length, interim=conn.interim,
                client=conn, started=started, trace=trace,
            )
            try:
                response = await self.chain(ctx)
            except Exception:
                log.exception("request %s failed inside the gateway", rid)
                response = problem(500, "the gateway failed to handle this request", request_id=rid)
            await self._send(conn, response, rid, route.service, started, method, ctx)
            elapsed = time.perf_counter() - started  # until the last byte went out
            if self.chain.has_after:
                await self.chain.after(ctx, response)  # each policy's `after` (outcomes, cache stores)
            status = response.status
            if request.answered:  # the engine answered first (request timeout, end of a drain)
                status = request.answered
                ctx.client_disconnected = False
            self.stats.record(route, method, status, elapsed, ctx)
            if self.access_log is not None:
                self.access_log.proxied(rid, method, ctx.path, route, status, elapsed, ctx)
            if self.spans is not None and trace is not None and trace.sampled:
                self.spans.record(ctx, trace, status, elapsed)
        finally:
            self.inflight -= 1
            if self._idle is not None and not self.inflight:
                self._idle.set()

    def _check(self, route: Route, method: str, raw_path: bytes, content_length: int | None,
               rid: str, duplicate: bytes | None = None,
               refused: tuple[int, str, str] | None = None) -> Response | None:
        reason = unsafe_path_reason(raw_path)
        if reason is not None:
            return problem(400, reason, request_id=rid, kind="unsafe-path")
        if duplicate is not None:
            name = _FIELD_NAMES.get(duplicate) or duplicate.decode("latin-1").title()
            return problem(400, f"the {name} header field may appear only once",
                           request_id=rid, kind="duplicate-header")
        allowed = route.methods
        if allowed is not None and method not in allowed:
            return problem(405, f"{method} is not allowed on {route.prefix}", request_id=rid,
                           headers=[(b"allow", ", ".join(sorted(allowed)).encode())])
        if method == "TRACE" and allowed is None:
            # TRACE echoes the request (cookies, credentials) back: off unless a route lists it.
            return problem(405, "TRACE is not allowed (list it in the route's methods to allow it)",
                           request_id=rid, headers=[(b"allow", _DEFAULT_ALLOW)])
        # (llhttp checked the value: digits, one of them; the engine parsed it)
        if self.max_body_bytes and content_length is not None and content_length > self.max_body_bytes:
            return problem(413, f"request body exceeds {self.max_body_bytes} bytes", request_id=rid)
        if refused is not None:  # a WebSocket upgrade
            return problem(refused[0], refused[1], request_id=rid, kind=refused[2])
        return None

    @staticmethod
    def _headers(response: Response, rid: str, service: str, started: float,
                 ctx: RequestContext | None) -> list[tuple[bytes, bytes]]:
        elapsed_ms = (time.perf_counter() - started) * 1000
        headers = response.headers
        if ctx is not None and ctx.response_headers:
            headers = headers + ctx.response_headers
        return headers + [
            (b"x-request-id", rid.encode()),
            (b"x-response-time", f"{elapsed_ms:.2f}ms".encode()),
            (b"x-service", service.encode()),
        ]

    def _send_whole(self, conn: HttpConnection, response: Response, rid: str, service: str,
                    started: float, ctx: RequestContext | None = None) -> None:
        if conn.closed and ctx is not None:
            ctx.client_disconnected = True
        conn.respond(response.status, self._headers(response, rid, service, started, ctx), response.body)

    async def _send(self, conn: HttpConnection, response: Response, rid: str, service: str,
                    started: float, method: str, ctx: RequestContext) -> None:
        stream = response.stream
        try:
            if stream is None:
                self._send_whole(conn, response, rid, service, started, ctx)
                return
            length = response.header(b"content-length")
            conn.start(response.status, self._headers(response, rid, service, started, ctx),
                       int(length) if length is not None and length.isdigit() else None)
            if method != "HEAD":
                try:
                    async for chunk in stream:
                        await conn.write(chunk)
                except OSError:
                    raise  # the client went away (handled below)
                except Exception as exc:
                    # The upstream broke mid-body: cut the client's connection, so the client
                    # sees a truncated response instead of a silently short "complete" one.
                    log.warning("request %s: upstream body failed mid-stream: %s", rid, type(exc).__name__)
                    if ctx.upstream is not None and ctx.upstream.failure is None:
                        ctx.upstream.failure = Failure.RESET
                    conn.abort()
                    return
            conn.end()
        except OSError:
            ctx.client_disconnected = True
        finally:
            if response.close is not None:
                response.close()
