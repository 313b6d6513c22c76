"""The upstream call: the terminal handler of the policy chain, on the engine's connection pools.

Bodies stream both ways, and small ones are read whole first. A request body of at most
`proxy.buffer_request_bytes` is read from the client before an upstream connection is taken
(nginx's proxy_request_buffering, HAProxy's http-buffer-request): a client that stalls mid-upload
holds no upstream connection, and a whole chunked body goes upstream with a Content-Length. A
larger one goes upstream as the client sends it (the client's connection stops being read while
the upstream's socket is full). The response body comes back as an async iterator, so a 100 MB
upload or download never sits in memory; one of known length up to `SMALL_BODY` is read whole
first, the way nginx's proxy_buffering does: one write to the client, the connection back in its
pool at once, and an upstream that breaks mid-body still gets a clean 502 instead of a cut
response.

Nothing is ever sent twice: without configured retries (issue #17) a request is sent once, and
an upstream that fails it gets a 502/504 (a request is forwarded intact or refused). The pool
never hands out a connection the upstream has closed (its FIN closes an idle one at once), and
idle connections are closed after `proxy.upstream_keepalive` (4 s), before the common servers'
own keep-alive timeouts (uvicorn, Node and Apache: 5 s), so the race a retry would cover (an
upstream closing a kept-alive connection just as a request goes out on it) is rare; an origin
that reads a request and drops the connection sees it once, on a new connection or a reused one.

Timeouts follow nginx's `proxy_*_timeout` idea: `connect_timeout` to connect, then the service's
`timeout` (or the route's) both for the response head and for every gap while reading the body.
"""

from __future__ import annotations

import itertools
import ssl
import time
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from gateway.background import Periodic
from gateway.config import GatewayConfig, ServiceSettings
from gateway.context import RequestBody, RequestContext, Response, UpstreamOutcome
from gateway.engine.client import Exchange, TargetPool, UpstreamError, send
from gateway.engine.failures import Failure
from gateway.engine.server import BodyTimeout, ClientGone
from gateway.problem import problem

SMALL_BODY = 64 * 1024  # bytes; larger or unknown-length bodies stream

# Not forwarded: the gateway answers `Expect` itself, sets Host to the target's, and writes the
# body's framing from what the engine parsed (a client's framing fields are never copied: a
# `Connection: content-length` that dropped them must not leave a body unframed upstream, where
# it would be read as the next request).
_NOT_FORWARDED = frozenset({b"host", b"expect", b"content-length", b"transfer-encoding"})


class BodyTooLarge(Exception):
    """The request body grew past `proxy.max_body_bytes` while streaming."""


@dataclass(frozen=True, slots=True)
class Target:
    """One upstream base URL, parsed once."""

    url: str
    host: str
    port: int
    tls: bool
    host_header: bytes  # what the upstream sees as Host
    base_path: bytes  # a path in the service URL, prefixed to every request's path


def parse_target(url: str) -> Target:
    parts = urlsplit(url)
    tls = parts.scheme == "https"
    default = 443 if tls else 80
    port = parts.port or default
    host = parts.hostname or ""
    shown = f"[{host}]" if ":" in host else host
    host_header = shown if port == default else f"{shown}:{port}"
    return Target(url, host, port, tls, host_header.encode("idna"), parts.path.rstrip("/").encode())


def tls_context(ca_file: str | None) -> ssl.SSLContext:
    """Verification on, always: the system CAs, or the service's own bundle."""
    context = ssl.create_default_context(cafile=ca_file)
    context.set_alpn_protocols(["http/1.1"])
    return context


class UpstreamPool:
    """The terminal handler: one keep-alive pool per upstream target, per-service settings."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.max_body_bytes = config.proxy.max_body_bytes  # 0: no limit
        self.buffer_bytes = config.proxy.buffer_request_bytes  # 0: always stream
        self._rr = {name: itertools.cycle(s.upstreams) for name, s in config.services.items()}
        self.targets: dict[str, Target] = {}
        self._tls: dict[str, ssl.SSLContext | None] = {}
        for service in config.services.values():
            context = None
            for url in service.upstreams:
                self.targets[url] = target = parse_target(url)
                if target.tls:
                    context = context or tls_context(service.ca_file)
                    self._tls[url] = context
        self.pools: dict[str, TargetPool] = {}
        self._sweeper: Periodic | None = None

    def _pool_settings(self, url: str) -> tuple[Any, ...]:
        """What a target's pool is made of: a reload keeps a pool whose settings are the same."""
        service = next(s for s in self.config.services.values() if url in s.upstreams)
        proxy = self.config.proxy
        target = self.targets[url]
        return (target.host, target.port, target.tls, service.ca_file,
                service.max_connections or proxy.pool_size, service.pending_timeout or proxy.pool_timeout,
                service.max_pending, proxy.upstream_keepalive)

    async def start(self, adopt: UpstreamPool | None = None) -> set[TargetPool]:
        """Make a pool per target; with `adopt` (the pool a reload replaces), take over its pools
        (and their idle connections) whose settings did not change. Returns the adopted ones."""
        proxy = self.config.proxy
        adopted: set[TargetPool] = set()
        for service in self.config.services.values():
            for url in service.upstreams:
                if url in self.pools:
                    continue  # a target listed by two services shares one pool
                previous = adopt.pools.get(url) if adopt is not None else None
                if (previous is not None and adopt is not None
                        and adopt._pool_settings(url) == self._pool_settings(url)):
                    self.pools[url] = previous
                    adopted.add(previous)
                    continue
                target = self.targets[url]
                self.pools[url] = TargetPool(
                    target.host, target.port, tls=self._tls.get(url),
                    limit=service.max_connections or proxy.pool_size,
                    wait_timeout=service.pending_timeout or proxy.pool_timeout,
                    max_pending=service.max_pending, keepalive=proxy.upstream_keepalive)
        self._sweeper = Periodic(min(5.0, proxy.upstream_keepalive / 2), self._sweep,
                                 "upstream pool sweep")
        self._sweeper.start()
        return adopted

    async def retire(self, keep: set[TargetPool]) -> None:
        """Close this (replaced) pool, except the target pools its successor took over."""
        if self._sweeper is not None:
            await self._sweeper.stop()
        for pool in self.pools.values():
            if pool not in keep:
                pool.close()

    async def _sweep(self) -> None:
        for pool in self.pools.values():
            pool.sweep()

    async def close(self) -> None:
        if self._sweeper is not None:
            await self._sweeper.stop()
        for pool in self.pools.values():
            pool.close()

    def pick_target(self, service: str) -> str:
        return next(self._rr[service])

    def settings(self, service: str) -> ServiceSettings:
        return self.config.services[service]

    async def __call__(self, ctx: RequestContext) -> Response:
        """The terminal handler: forward `ctx` and return the upstream's response."""
        service = self.config.services[ctx.service]
        url = ctx.target or self.pick_target(ctx.service)
        target = self.targets[url]
        pool = self.pools[url]
        stall = ctx.route.settings.timeout or service.timeout
        has_body = ctx.has_body
        outcome = ctx.upstream = UpstreamOutcome(target=url)
        started = time.perf_counter()
        body: AsyncIterable[bytes] | None = None
        chunked = ctx.chunked
        length: int | None = None  # of a chunked body read whole
        client = ctx.client
        try:
            if has_body and ctx.body:
                body = _Limited(ctx.body, self.max_body_bytes)
                if self.buffer_bytes:
                    body = await _Buffered.read(body, self.buffer_bytes)
                    if body.complete and chunked:
                        chunked, length = False, body.size
            head = _request_head(ctx, target, length)
            if client is not None and client.left:  # it gave up while the policies ran
                raise ClientGone("the client closed the connection")  # nothing goes upstream
            watch = client.watch_leave if client is not None else None
            ex = await send(pool, head, body, chunked=chunked, head_only=ctx.method == "HEAD",
                            stall=stall, connect_timeout=service.connect_timeout,
                            small_body=SMALL_BODY, on_interim=ctx.interim, watch=watch)
            outcome.status = ex.status
            headers = ex.headers  # the end-to-end fields (the engine left out the hop-by-hop ones)
            if ex.reads_whole:
                data = ex.body if ex.body is not None else await ex.read_whole()
                outcome.duration = time.perf_counter() - started
                return Response(status=ex.status, headers=headers, body=data)
            if ex.stream is None:  # HEAD, 204, 304 or an empty body
                outcome.duration = time.perf_counter() - started
                return Response(status=ex.status, headers=headers, body=ex.body or b"")
        except UpstreamError as exc:
            return self._answer_failure(ctx, outcome, started, exc.kind, exc.reason, stall)
        except BodyTooLarge:
            return self._refuse(ctx, outcome, started, 413,
                                f"request body exceeds {self.max_body_bytes} bytes")
        except BodyTimeout as exc:
            return self._refuse(ctx, outcome, started, 408, str(exc), kind="body-timeout")
        except ClientGone:
            ctx.client_disconnected = True
            return self._refuse(ctx, outcome, started, 499, "client closed the request")
        outcome.duration = time.perf_counter() - started
        return Response(status=ex.status, headers=headers, stream=_ResponseBody(ex, outcome, started),
                        close=ex.release)

    def _refuse(self, ctx: RequestContext, outcome: UpstreamOutcome, started: float, status: int,
                detail: str, kind: str | None = None) -> Response:
        """The client's side failed (body too large, stalled, gone): not the upstream's fault."""
        outcome.duration = time.perf_counter() - started
        return problem(status, detail, request_id=ctx.request_id, kind=kind)

    def _answer_failure(self, ctx: RequestContext, outcome: UpstreamOutcome, started: float,
                        failure: Failure, reason: str, stall: float) -> Response:
        outcome.duration = time.perf_counter() - started
        outcome.failure = failure
        if failure is Failure.POOL:
            return problem(503, f"upstream {ctx.service} is at its connection limit ({reason})",
                           request_id=ctx.request_id, service=ctx.service, kind="upstream-pool-full",
                           headers=[(b"retry-after", b"1")])
        status, detail = _FAILURE_ANSWERS[failure]
        return problem(status, detail.format(reason=reason, stall=stall), request_id=ctx.request_id,
                       service=ctx.service, kind=f"upstream-{failure}")


# What the client is told when the upstream failed: status and detail, per failure kind.
_FAILURE_ANSWERS: dict[Failure, tuple[int, str]] = {
    Failure.CONNECT: (502, "could not connect to the upstream ({reason})"),
    Failure.TIMEOUT: (504, "upstream did not answer within {stall:g}s"),
    Failure.RESET: (502, "upstream connection failed ({reason})"),
    Failure.PROTOCOL: (502, "upstream sent an invalid response ({reason})"),
}


def _request_head(ctx: RequestContext, target: Target, length: int | None = None) -> bytes:
    """The request head for the upstream; `length`: a chunked body read whole, sent with it."""
    path = ctx.route.upstream_path(ctx.raw_path)
    if target.base_path:
        path = target.base_path + path
    parts = [ctx.method.encode("ascii"), b" ", path]
    if ctx.query_string:
        parts += (b"?", ctx.query_string)
    parts += (b" HTTP/1.1\r\nhost: ", target.host_header, b"\r\n")
    for name, value in ctx.headers:
        if name not in _NOT_FORWARDED:
            parts += (name, b": ", value, b"\r\n")
    if length is None:
        length = ctx.content_length
    if ctx.chunked and length is None:
        parts.append(b"transfer-encoding: chunked\r\n")
    elif length is not None:
        parts += (b"content-length: ", str(length).encode(), b"\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


class _Limited:
    """The client's request body as it streams upstream, refused past `limit` bytes (0: none)."""

    __slots__ = ("body", "limit", "received")

    def __init__(self, body: RequestBody, limit: int) -> None:
        self.body = body
        self.limit = limit
        self.received = 0

    def __aiter__(self) -> _Limited:
        return self

    async def read(self) -> bytes:
        """The next chunk, b"" at the end."""
        chunk = await self.body.read()
        self.received += len(chunk)
        if self.limit and self.received > self.limit:
            raise BodyTooLarge()
        return chunk

    async def __anext__(self) -> bytes:
        chunk = await self.read()
        if not chunk:
            raise StopAsyncIteration
        return chunk


class _Buffered:
    """A request body read ahead up to `limit` bytes: all of it (`complete`), or that much
    first and the rest as it arrives."""

    __slots__ = ("chunks", "rest", "size")

    def __init__(self, chunks: list[bytes], rest: _Limited | None, size: int) -> None:
        self.chunks = chunks
        self.rest = rest  # None: the whole body is in `chunks`
        self.size = size

    @property
    def complete(self) -> bool:
        return self.rest is None

    @classmethod
    async def read(cls, body: _Limited, limit: int) -> _Buffered:
        """Raises what reading the client's body raises (too large, stalled, gone)."""
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = await body.read()
            if not chunk:
                return cls(chunks, None, size)
            chunks.append(chunk)
            size += len(chunk)
        return cls(chunks, body, size)

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk
        if self.rest is not None:
            async for chunk in self.rest:
                yield chunk


class _ResponseBody:
    """The streamed response body; a failure is recorded on the outcome for the breaker."""

    __slots__ = ("ex", "outcome", "started")

    def __init__(self, ex: Exchange, outcome: UpstreamOutcome, started: float) -> None:
        self.ex = ex
        self.outcome = outcome
        self.started = started

    def __aiter__(self) -> _ResponseBody:
        return self

    async def __anext__(self) -> bytes:
        stream = self.ex.stream
        assert stream is not None
        try:
            chunk = await stream.read()
        except UpstreamError as exc:
            self.outcome.failure = exc.kind
            self.outcome.duration = time.perf_counter() - self.started
            raise
        if not chunk:
            self.outcome.duration = time.perf_counter() - self.started
            raise StopAsyncIteration
        return chunk

