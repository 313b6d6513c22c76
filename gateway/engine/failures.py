"""Why an upstream exchange produced no usable response: one name for each kind, everywhere.

The engine's client raises `UpstreamError(kind)` with one of these; the upstream call records it
on `UpstreamOutcome.failure`; the breaker, the cache, the statistics, the access log and the
problem bodies read it from there. `StrEnum`: each member is its own string (`"connect"`), as
metrics labels and log fields show it.

How transport errors map to them (gateway/engine/client.py):

    no connection within connect_timeout, refused, unreachable, DNS, TLS handshake  -> CONNECT
    no response head (or a body gap, or a stalled upload) within the stall timeout   -> TIMEOUT
    the connection closed or reset mid-exchange                                       -> RESET
    a response llhttp refuses, a bad status, an unknown coding, an oversized head    -> PROTOCOL
    no free pooled connection within the wait, or too many waiting (our own limit)    -> POOL
"""

from __future__ import annotations

from enum import StrEnum


class Failure(StrEnum):
    CONNECT = "connect"
    TIMEOUT = "timeout"
    RESET = "reset"
    PROTOCOL = "protocol"
    POOL = "pool"


# The upstream itself failed: the breaker counts these, the cache may serve stale on them.
# POOL is the gateway's own limit and says nothing about the upstream.
UPSTREAM_BROKEN = frozenset({Failure.CONNECT, Failure.TIMEOUT, Failure.RESET, Failure.PROTOCOL})
