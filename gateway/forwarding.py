"""Request headers on their way upstream: hop-by-hop removal, X-Forwarded-*, request ids.

Client-IP headers are trusted only from configured proxies (the habit of uvicorn's
ProxyHeadersMiddleware): from anyone else an incoming X-Forwarded-For chain is dropped, not
extended, so a client cannot choose the IP its anonymous rate limit is keyed on.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Iterable

from gateway.context import Headers
from gateway.engine.wire import HOP_BY_HOP

_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:\-]{1,128}")

# Fields that make an origin build another URL or run another method than the one the gateway
# routed, checked and keyed its cache on: never forwarded, whoever sends them. (A route's
# `methods` could be bypassed by a method override; an origin that builds links or routes
# from a rewrite field would let a client shape a shared cache entry.)
REWRITES = frozenset({
    b"x-forwarded-prefix", b"x-forwarded-port", b"x-forwarded-scheme", b"x-forwarded-server",
    b"x-original-url", b"x-rewrite-url", b"x-original-uri",
    b"x-http-method-override", b"x-method-override", b"x-http-method",
})
# What the hot path leaves out of a client's request by default: hop-by-hop fields and rewrites.
NOT_FORWARDED = HOP_BY_HOP | REWRITES


def request_id_from(value: bytes | None) -> str:
    """The client's request id if it is a sane token of at most 128 characters, else a new one."""
    if value is not None and _REQUEST_ID.fullmatch(value):
        return value.decode("ascii")
    return os.urandom(16).hex()


class TrustedProxies:
    """Which peers may tell us the client's address (configured CIDRs)."""

    def __init__(self, networks: Iterable[str]) -> None:
        self.networks = [ipaddress.ip_network(n, strict=False) for n in networks]

    def __bool__(self) -> bool:
        return bool(self.networks)

    def trusts(self, address: str) -> bool:
        if not self.networks:
            return False
        try:
            ip = ipaddress.ip_address(address.strip().strip("[]"))
        except ValueError:
            return False
        return any(ip in net for net in self.networks)

    def client_ip(self, peer: str, forwarded_for: bytes | None) -> str:
        """The first untrusted address walking the chain from the right (the real client)."""
        if forwarded_for is None or not self.trusts(peer):
            return peer
        hops = [h.strip() for h in forwarded_for.decode("latin-1").split(",") if h.strip()]
        for hop in reversed(hops):
            if not self.trusts(hop):
                return _valid_ip(hop) or peer
        first = _valid_ip(hops[0]) if hops else None  # every hop is a trusted proxy
        return first or peer


def _valid_ip(text: str) -> str | None:
    try:
        return str(ipaddress.ip_address(text.strip("[]")))
    except ValueError:
        return None


def forwarded_headers(
    headers: Headers, *, peer: str, scheme: str, trusted: TrustedProxies, request_id: str,
    drop: frozenset[bytes] | set[bytes] = NOT_FORWARDED, underscores: bool = True,
) -> tuple[Headers, str]:
    """Set X-Forwarded-For/-Proto/-Host, X-Real-IP and X-Request-ID; return (headers, client_ip).

    From a trusted proxy the incoming chain is extended with the peer; from anyone else the
    client's own X-Forwarded-*/Forwarded/X-Real-IP are replaced. Fields in `drop` are left out
    in the same pass: the hop-by-hop ones (`HOP_BY_HOP`, plus those the client's `Connection`
    named, see `connection_tokens`) and the `REWRITES` when `headers` are the client's as
    received. Without
    `underscores`, a field whose name holds `_` is left out too: CGI and WSGI backends read
    `X_User_ID` and `X-User-ID` as the same variable, so it could smuggle a stripped field.
    """
    incoming_for = incoming_proto = incoming_host = None
    host = None
    out: Headers = []
    for key, value in headers:
        if key == b"x-forwarded-for":
            incoming_for = value if incoming_for is None else incoming_for + b", " + value
        elif key == b"x-forwarded-proto":
            incoming_proto = value
        elif key == b"x-forwarded-host":
            incoming_host = value
        elif key == b"x-real-ip" or key == b"forwarded" or key == b"x-request-id" or key in drop:
            continue
        elif not underscores and b"_" in key:
            continue
        else:
            if key == b"host":
                host = value
            out.append((key, value))
    peer_b = peer.encode()
    if trusted.trusts(peer):
        client_ip = trusted.client_ip(peer, incoming_for)
        # Extended with the peer, empty members dropped (`a, , b` and blank fields say nothing).
        hops = [h.strip() for h in incoming_for.split(b",")] if incoming_for else []
        chain = b", ".join([h for h in hops if h] + [peer_b])
        proto = incoming_proto or scheme.encode()
        fwd_host = incoming_host or host
    else:
        client_ip = peer
        chain = peer_b
        proto = scheme.encode()
        fwd_host = host
    out.append((b"x-forwarded-for", chain))
    out.append((b"x-forwarded-proto", proto))
    if fwd_host is not None:
        out.append((b"x-forwarded-host", fwd_host))
    out.append((b"x-real-ip", client_ip.encode()))
    out.append((b"x-request-id", request_id.encode()))
    return out, client_ip
