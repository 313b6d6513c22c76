"""The upstream call: the terminal handler of the policy chain, on one aiohttp session.

Bodies stream both ways: the request body is read from the ASGI `receive` as the upstream
accepts it, and the response body is handed back as an async iterator, so a 100 MB upload or
download never sits in memory. Nothing is retried once any of the request may have been sent
(a request is forwarded intact or refused, never sent twice); the one retry is an idempotent
request without a body whose pooled keep-alive connection turned out to be closed.

Timeouts follow nginx's `proxy_*_timeout` idea: `connect_timeout` to connect, then the
service's `timeout` both for the response head and for every gap while reading the body.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from gateway.config import GatewayConfig, ServiceSettings
from gateway.context import Headers, RequestContext, Response, UpstreamOutcome
from gateway.forwarding import strip_hop_by_hop
from gateway.problem import problem

IDEMPOTENT_NO_BODY = frozenset({"GET", "HEAD", "OPTIONS", "DELETE", "TRACE"})
_CHUNK = 64 * 1024
SMALL_BODY = 64 * 1024  # bytes; larger or unknown-length bodies stream


# Headers aiohttp would add by itself; a forwarded request carries the client's headers only.
_NO_AUTO: CIMultiDict[None] = CIMultiDict(
    (name, None) for name in ("Accept", "Accept-Encoding", "Content-Type", "User-Agent"))


class UpstreamRequest(aiohttp.ClientRequest):
    """aiohttp's request without its automatic headers.

    The session's `skip_auto_headers` would do the same, but aiohttp then copies every request's
    headers and builds the skip list anew to decide which defaults to add; a proxy adds none, so
    this class skips them all and that per-request work goes.
    """

    def update_auto_headers(self, skip_auto_headers: Any) -> None:
        self._skip_auto_headers = _NO_AUTO  # read-only for aiohttp: one shared instance


class BodyTooLarge(Exception):
    """The request body grew past `proxy.max_body_bytes` while streaming."""


class ClientGone(Exception):
    """The client disconnected before its request body was read."""


class UpstreamPool:
    """One aiohttp ClientSession per process, with a keep-alive pool and per-service settings."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.session: aiohttp.ClientSession | None = None
        self._rr = {name: itertools.cycle(s.upstreams) for name, s in config.services.items()}
        self._timeouts = {
            name: aiohttp.ClientTimeout(
                total=None, sock_connect=s.connect_timeout, sock_read=s.timeout
            )
            for name, s in config.services.items()
        }
        self._route_timeouts: dict[tuple[str, float], aiohttp.ClientTimeout] = {}

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=self.config.proxy.pool_size,
            limit_per_host=0,
            keepalive_timeout=30,
            ttl_dns_cache=10,
            enable_cleanup_closed=True,
        )
        self.session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,  # bodies go through as received, Content-Encoding intact
            cookie_jar=aiohttp.DummyCookieJar(),  # never carry one client's cookies to another
            request_class=UpstreamRequest,  # no User-Agent, Accept(-Encoding), Content-Type
            timeout=aiohttp.ClientTimeout(total=None),
            read_bufsize=_CHUNK,
        )

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()

    def _timeout(self, ctx: RequestContext) -> aiohttp.ClientTimeout:
        route_timeout = ctx.route.settings.timeout
        if route_timeout is None:
            return self._timeouts[ctx.service]
        key = (ctx.service, route_timeout)
        found = self._route_timeouts.get(key)
        if found is None:
            connect = self.config.services[ctx.service].connect_timeout
            found = self._route_timeouts[key] = aiohttp.ClientTimeout(
                total=None, sock_connect=connect, sock_read=route_timeout)
        return found

    def pick_target(self, service: str) -> str:
        return next(self._rr[service])

    def settings(self, service: str) -> ServiceSettings:
        return self.config.services[service]

    async def __call__(self, ctx: RequestContext) -> Response:
        """The terminal handler: forward `ctx` and return the upstream's streaming response."""
        assert self.session is not None, "UpstreamPool.start() was not awaited"
        service = self.settings(ctx.service)
        target = ctx.target or self.pick_target(ctx.service)
        head_timeout = ctx.route.settings.timeout or service.timeout
        path = ctx.route.upstream_path(ctx.raw_path)
        url = URL(target + path.decode("latin-1") + (
            "?" + ctx.query_string.decode("latin-1") if ctx.query_string else ""), encoded=True)
        # A plain list: aiohttp merges it into a CIMultiDict of its own anyway.
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in ctx.headers if k != b"host"]
        has_body = ctx.has_body
        outcome = ctx.upstream = UpstreamOutcome(target=target)
        started = time.perf_counter()
        attempts = 1 if has_body or ctx.method not in IDEMPOTENT_NO_BODY else 2
        upstream: aiohttp.ClientResponse | None = None
        for attempt in range(attempts):
            try:
                # sock_read bounds the wait for the response head and every gap in the body.
                upstream = await self.session.request(
                    ctx.method,
                    url,
                    headers=headers,
                    data=_request_body(ctx) if has_body else None,
                    timeout=self._timeout(ctx),
                    allow_redirects=False,
                    compress=None,
                    auto_decompress=False,
                )
                break
            except (BodyTooLarge, ClientGone, TimeoutError, aiohttp.ClientError) as exc:
                failure = _classify(exc)
                if failure == "stale" and attempt + 1 < attempts:
                    continue  # a stale pooled keep-alive connection; nothing was processed
                return self._answer_failure(ctx, outcome, started, failure, exc, head_timeout)
        assert upstream is not None
        outcome.status = upstream.status
        length = upstream.content_length
        if length is not None and length <= SMALL_BODY and ctx.method != "HEAD":
            # A small body is read whole before answering (nginx's proxy_buffering does the
            # same): one ASGI send for the body, the connection back in the pool at once, and
            # an upstream that breaks mid-body still gets a clean 502 instead of a cut response.
            try:
                body = await upstream.read()
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                upstream.release()
                return self._answer_failure(ctx, outcome, started, _classify(exc), exc, head_timeout)
            outcome.duration = time.perf_counter() - started
            return Response(status=upstream.status, headers=_response_headers(upstream.raw_headers),
                            body=body)
        outcome.duration = time.perf_counter() - started
        return Response(
            status=upstream.status,
            headers=_response_headers(upstream.raw_headers),
            stream=_response_body(upstream, ctx, outcome, started),
            close=upstream.release,
        )

    def _answer_failure(self, ctx: RequestContext, outcome: UpstreamOutcome, started: float,
                        failure: str, exc: BaseException, head_timeout: float) -> Response:
        outcome.duration = time.perf_counter() - started
        if failure == "too_large":
            return problem(413, f"request body exceeds {ctx.state.get('max_body_bytes')} bytes",
                           request_id=ctx.request_id)
        if failure == "client_gone":
            ctx.client_disconnected = True
            return problem(499, "client closed the request", request_id=ctx.request_id)
        if failure == "stale":
            failure = "reset"
        outcome.failure = failure
        detail = {
            "connect": f"could not connect to the upstream ({_reason(exc)})",
            "timeout": f"upstream did not answer within {head_timeout:g}s",
            "reset": f"upstream connection failed ({_reason(exc)})",
        }[failure]
        return problem(504 if failure == "timeout" else 502, detail, request_id=ctx.request_id,
                       service=ctx.service, kind=f"upstream-{failure}")


def _classify(exc: BaseException) -> str:
    """too_large | client_gone | connect | timeout | stale | reset."""
    for err in (exc, exc.__cause__):
        if isinstance(err, BodyTooLarge):
            return "too_large"
        if isinstance(err, ClientGone):
            return "client_gone"
    if isinstance(exc, aiohttp.ConnectionTimeoutError | aiohttp.ClientConnectorError):
        return "connect"
    if isinstance(exc, TimeoutError):  # includes aiohttp.ServerTimeoutError
        return "timeout"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "stale"
    return "reset"


def _reason(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        return str(exc.os_error.strerror or type(exc.os_error).__name__)
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return "connect timeout"
    return type(exc).__name__


async def _request_body(ctx: RequestContext) -> AsyncIterator[bytes]:
    limit = ctx.state.get("max_body_bytes", 0)
    received = 0
    while True:
        message = await ctx.receive()
        if message["type"] == "http.disconnect":
            raise ClientGone()
        chunk = message.get("body", b"")
        if chunk:
            received += len(chunk)
            if limit and received > limit:
                raise BodyTooLarge()
            yield chunk
        if not message.get("more_body", False):
            return


async def _response_body(upstream: aiohttp.ClientResponse, ctx: RequestContext,
                         outcome: UpstreamOutcome, started: float) -> AsyncIterator[bytes]:
    try:
        async for chunk in upstream.content.iter_any():
            yield chunk
    except (TimeoutError, aiohttp.ServerTimeoutError):
        outcome.failure = "timeout"
        raise
    except (aiohttp.ClientError, OSError):
        outcome.failure = "reset"
        raise
    finally:
        outcome.duration = time.perf_counter() - started


def _response_headers(raw: Any) -> Headers:
    return strip_hop_by_hop([(k.lower(), v) for k, v in raw])
