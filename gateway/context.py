"""Per-request state handed through the policies, and the response they hand back."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from gateway.engine.failures import Failure

if TYPE_CHECKING:
    from gateway.routing import Route
    from gateway.tracing import TraceContext

Headers = list[tuple[bytes, bytes]]  # lower-case names, as the engine carries them


class RequestBody(Protocol):
    """The client's request body as it arrives: `await read()` gives the next chunk, b"" at
    the end (the engine's `BodyStream`)."""

    async def read(self) -> bytes: ...


class ClientSide(Protocol):
    """The client's connection as the upstream call sees it (the engine's `HttpConnection`)."""

    @property
    def left(self) -> bool: ...

    def watch_leave(self, future: asyncio.Future[Any]) -> None: ...


@dataclass(slots=True)
class Consumer:
    """Who is calling, as verified by the identity step (never taken from a spoofable header)."""

    id: str
    tier: str
    authenticated: bool
    rate_key: str  # what rate-limit counters are keyed on: consumer id, or client IP if anonymous
    admin: bool = False  # presented an admin key (`auth.admin_keys_sha256`): may PURGE
    # A run-time consumer's own windows, (limit, seconds) each, instead of its tier's.
    windows: tuple[tuple[int, float], ...] | None = None


@dataclass(slots=True)
class Response:
    """A response on its way back through the policies.

    `stream`, when set, yields the body; otherwise `body` is the whole body. `close` releases
    whatever the stream holds (the upstream connection) and is always called once.
    """

    status: int
    headers: Headers = field(default_factory=list)
    body: bytes = b""
    stream: AsyncIterator[bytes] | None = None
    close: Callable[[], None] | None = None

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def set_header(self, name: bytes, value: bytes) -> None:
        self.headers = [(k, v) for k, v in self.headers if k != name]
        self.headers.append((name, value))


@dataclass(slots=True)
class UpstreamOutcome:
    """What the upstream did, for the breaker and the metrics. `failure` is None on success."""

    status: int | None = None
    failure: Failure | None = None  # gateway/engine/failures.py
    duration: float = 0.0  # seconds
    target: str = ""


@dataclass(slots=True)
class RequestContext:
    """Everything the hot path knows about one request."""

    request_id: str
    method: str
    path: str  # percent-decoded, used for matching
    raw_path: bytes  # as received, forwarded upstream unchanged
    query_string: bytes
    headers: Headers  # what goes upstream; policies may edit it
    client_ip: str
    scheme: str
    route: Route
    body: RequestBody | None = None  # None when the request has no body
    client_headers: Headers = field(default_factory=list)  # as received, before any edit
    has_body: bool = False  # the client sent Content-Length > 0 or Transfer-Encoding
    chunked: bool = False  # ... with Transfer-Encoding: chunked (no length known)
    # The client's Content-Length as the engine parsed it (None: absent, or chunked). The upstream
    # request's framing is written from this, never copied from the client's fields.
    content_length: int | None = None
    # Sends a 1xx interim response (103 Early Hints) to the client before the final one.
    interim: Callable[[int, Headers], None] | None = None
    # The client's connection: whether it left, and a watch on the upstream's response head.
    client: ClientSide | None = None
    started: float = field(default_factory=time.perf_counter)
    consumer: Consumer | None = None
    target: str | None = None  # upstream base URL chosen for this request (breaker may pick it)
    # Headers every policy wants on the response (RateLimit-*, X-Cache, ...).
    response_headers: Headers = field(default_factory=list)
    upstream: UpstreamOutcome | None = None
    cache_status: str | None = None
    breaker_state: str | None = None
    rate_limit_remaining: int | None = None
    client_disconnected: bool = False
    # The breaker answered 503 instead of calling the upstream (the cache may serve stale then).
    breaker_rejected: bool = False
    trace: TraceContext | None = None  # the W3C trace context, when tracing is on
    # The chain's own: what each policy staged, by position, and how many stages ran. A policy
    # gets its own value as an argument, never by reading these.
    staged: list[Any] = field(default_factory=list)
    staged_through: int = 0

    def fork(self) -> RequestContext:
        """A copy for a request of the gateway's own (a background refresh): no client body,
        its own headers and response fields, the same identity and staged values."""
        return dataclasses.replace(
            self, body=None, headers=list(self.headers), response_headers=[], upstream=None,
            has_body=False, chunked=False, content_length=None, interim=None, client=None,
            client_disconnected=False,
            staged=list(self.staged), cache_status=None, breaker_state=None,
            breaker_rejected=False, target=None,
        )

    def header(self, name: bytes) -> bytes | None:
        """First value of a request header (lower-case name)."""
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def remove_header(self, name: bytes) -> None:
        self.headers = [(k, v) for k, v in self.headers if k != name]

    @property
    def service(self) -> str:
        return self.route.service
