"""What the cache keeps: per request (the staged values `handle` fills in for `after`, the teed
body) and per process (the counters /metrics shows)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gateway.cache.directives import CacheDirectives
from gateway.cache.entry import CacheEntry
from gateway.cache.freshness import StoreDecision
from gateway.cache.store import Lookup, LookupKey
from gateway.context import Headers, RequestContext, Response
from gateway.policy import Handler
from gateway.store import Pending


@dataclass(slots=True)
class StorePlan:
    """A response `handle` decided to store; `after` stores it once the body went out."""

    token: str
    found: Lookup
    status: int
    headers: Headers
    decision: StoreDecision
    response_cc: CacheDirectives
    age: float
    response_time: float
    entry: CacheEntry | None = None  # a revalidated entry (whole already)
    response: Response | None = None  # ... or the fresh response, its body whole or teed
    tee: BodyTee | None = None


@dataclass(slots=True)
class LookupState:
    """A GET/HEAD's lookup, staged; `handle` notes what `after` does."""

    key: LookupKey
    pending: Pending
    staged_at: float
    authenticated: bool
    ttl: float
    store: StorePlan | None = None
    # The fill was given back (or a pass marker set) with this outcome as soon as `handle`
    # decided it, in the background: `after` has nothing more to release.
    released: str | None = None
    refresh: tuple[Lookup, Handler] | None = None  # stale-while-revalidate: refresh after

    def fresh(self) -> LookupState:
        return LookupState(self.key, self.pending, self.staged_at, self.authenticated, self.ttl)


@dataclass(slots=True)
class Pass:
    reason: str


@dataclass(slots=True)
class Unsafe:
    url: str  # invalidated with its Location / Content-Location by a 2xx/3xx answer


@dataclass(slots=True)
class Purge:
    url: str


Staged = LookupState | Pass | Unsafe | Purge


@dataclass(slots=True)
class CacheCounters:
    """Per-process counters for /metrics (size comes from Redis, cluster-wide)."""

    hits: int = 0
    misses: int = 0
    stale: int = 0
    bypass: int = 0
    revalidated: int = 0
    coalesced_waits: int = 0
    stored: int = 0
    not_stored: int = 0
    too_large: int = 0
    invalidations: int = 0
    store_errors: int = 0


def upstream_failed(ctx: RequestContext) -> bool:
    """The upstream failed (no usable answer), as opposed to answering with an error status."""
    return ctx.upstream is not None and ctx.upstream.failure is not None


@dataclass(slots=True)
class BodyTee:
    """Copies a streamed body into memory up to `limit` bytes; beyond that it only streams."""

    limit: int
    expected: int | None = None  # Content-Length, when the upstream gave one
    on_overflow: Callable[[], None] | None = None  # called once, when the body outgrows `limit`
    chunks: list[bytes] = field(default_factory=list)
    size: int = 0
    complete: bool = False
    overflow: bool = False

    def wrap(self, source: Any) -> Any:
        async def stream() -> Any:
            async for chunk in source:
                self.size += len(chunk)
                if not self.overflow:
                    if self.size > self.limit:
                        self.overflow = True
                        self.chunks = []
                        if self.on_overflow is not None:
                            self.on_overflow()
                    else:
                        self.chunks.append(chunk)
                # The sender may stop asking once Content-Length bytes went out, so the body
                # is complete when they have arrived, not only when the stream says it ended.
                if self.expected is not None and self.size == self.expected:
                    self.complete = True
                yield chunk
            self.complete = self.expected is None or self.size == self.expected

        return stream()

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)
