"""W3C Trace Context (https://www.w3.org/TR/trace-context/): `traceparent` / `tracestate`.

The gateway is a hop: for every proxied request it makes a span of its own, so upstream sees
`traceparent` with the caller's trace id and the gateway's span id as parent-id. Without a
(valid) incoming `traceparent` it starts a new trace; an invalid one is replaced, and its
`tracestate` is dropped with it (the spec forbids trusting tracestate without a parent).
"""

from __future__ import annotations

import random
import re
from typing import NamedTuple

from gateway.engine.wire import Headers

_PARENT = re.compile(rb"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_ZERO_TRACE = b"0" * 32
_ZERO_SPAN = b"0" * 16
MAX_TRACESTATE = 512  # bytes; beyond that the spec lets a hop drop it


class TraceContext(NamedTuple):
    """This hop's place in a trace (hex strings, as on the wire)."""

    trace_id: str
    span_id: str  # the gateway's own span: the parent-id upstream sees
    parent_id: str | None  # the caller's span, None when the gateway started the trace
    sampled: bool
    tracestate: bytes | None

    @property
    def traceparent(self) -> bytes:
        return f"00-{self.trace_id}-{self.span_id}-{'01' if self.sampled else '00'}".encode()


def parse_traceparent(value: bytes) -> tuple[str, str, bool] | None:
    """(trace_id, parent_id, sampled) of a valid header value, else None."""
    m = _PARENT.fullmatch(value.strip())
    if m is None:
        return None
    version, trace_id, parent_id, flags, rest = m.groups()
    if version == b"ff" or trace_id == _ZERO_TRACE or parent_id == _ZERO_SPAN:
        return None
    if version == b"00" and rest:  # version 00 has exactly four fields
        return None
    return trace_id.decode(), parent_id.decode(), bool(int(flags, 16) & 1)


def new_span_id() -> str:
    return f"{random.getrandbits(64) or 1:016x}"


class TracePropagation:
    """Decides this hop's TraceContext and rewrites the upstream request's headers."""

    def __init__(self, sample_ratio: float = 1.0) -> None:
        self.sample_ratio = sample_ratio

    def start(self, traceparent: bytes | None, tracestate: bytes | None) -> TraceContext:
        parsed = parse_traceparent(traceparent) if traceparent is not None else None
        if parsed is not None:
            trace_id, parent_id, sampled = parsed
            state = tracestate if tracestate is not None and len(tracestate) <= MAX_TRACESTATE else None
            return TraceContext(trace_id, new_span_id(), parent_id, sampled, state)
        sampled = self.sample_ratio >= 1.0 or random.random() < self.sample_ratio
        return TraceContext(f"{random.getrandbits(128) or 1:032x}", new_span_id(), None, sampled, None)

    @staticmethod
    def apply(headers: Headers, trace: TraceContext, had_headers: bool) -> Headers:
        """`headers` with the client's trace fields replaced by this hop's."""
        if had_headers:
            headers = [(k, v) for k, v in headers if k != b"traceparent" and k != b"tracestate"]
        headers.append((b"traceparent", trace.traceparent))
        if trace.tracestate:
            headers.append((b"tracestate", trace.tracestate))
        return headers
