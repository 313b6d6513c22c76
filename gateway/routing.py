"""Routes: which service a path belongs to, and paths that try to leave their route."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from gateway.config import GatewayConfig, RouteSettings


@dataclass(frozen=True, slots=True)
class Route:
    """A routed prefix. Its identity is the prefix itself, never its position in the file."""

    prefix: str
    service: str
    settings: RouteSettings
    methods: frozenset[str] | None = field(init=False, compare=False)  # None: any method

    def __post_init__(self) -> None:
        methods = frozenset(self.settings.methods) if self.settings.methods else None
        object.__setattr__(self, "methods", methods)  # once, not per request

    def upstream_path(self, raw_path: bytes) -> bytes:
        """The path sent upstream: unchanged, or without the prefix when the route strips it.

        The prefix matched the decoded path, so it is cut from the raw one by walking the raw
        bytes as they decode (`/api/order%73/x` loses `/api/order%73`, not 11 raw bytes)."""
        if not self.settings.strip_prefix:
            return raw_path
        rest = raw_path[_raw_length(raw_path, len(self.prefix.encode())):]
        return rest if rest.startswith(b"/") else b"/" + rest


class RouteTable:
    """Longest-prefix match on whole path segments: `/api/users` matches `/api/users/7`, not `/api/usersx`."""

    def __init__(self, routes: list[Route]) -> None:
        self.routes = sorted(routes, key=lambda r: len(r.prefix), reverse=True)

    @classmethod
    def from_config(cls, config: GatewayConfig) -> RouteTable:
        return cls([Route(p, s.service, s) for p, s in config.routes.items()])

    def match(self, path: str) -> Route | None:
        for route in self.routes:
            prefix = route.prefix
            if path == prefix or path.startswith(prefix) and (prefix == "/" or path[len(prefix)] == "/"):
                return route
        return None

    @property
    def prefixes(self) -> list[str]:
        return [r.prefix for r in self.routes]


def _raw_length(raw_path: bytes, decoded: int) -> int:
    """How many raw bytes of `raw_path` decode to its first `decoded` bytes (its escapes are
    valid: `unsafe_path_reason` refused the others)."""
    i = 0
    while decoded > 0 and i < len(raw_path):
        i += 3 if raw_path[i] == 0x25 else 1  # '%XX' is one decoded byte
        decoded -= 1
    return i


_BAD_ESCAPE = re.compile(rb"%(?![0-9A-Fa-f]{2})")

# Encoded '/', '\', NUL and '.' (and their double encodings), raw backslashes: a backend may
# decode them into a different path than the one we matched, so a route's policies could be
# bypassed (`/api/users/..%2forders`). Such paths are refused with 400.
_SUSPICIOUS = re.compile(rb"%(25)*(2f|5c|00|2e)|\\", re.IGNORECASE)


def unsafe_path_reason(raw_path: bytes) -> str | None:
    """Why a raw request path could escape its route, or None if it is safe to forward."""
    if not raw_path.startswith(b"/"):
        return "the path must start with '/'"
    if _SUSPICIOUS.search(raw_path):
        return "encoded slashes, backslashes, dots or NUL are not allowed in the path"
    if b"%" in raw_path and _BAD_ESCAPE.search(raw_path):
        # `%u002e` or a lone `%`: servers decode these differently (or not at all).
        return "the path has an invalid percent-escape (a '%' must start two hex digits)"
    if b"/." not in raw_path:  # a dot-segment starts right after a slash
        return None
    for segment in raw_path.split(b"/"):
        # `..;x` is `..` to servers that strip path parameters (Tomcat, Jetty, Spring).
        if segment.split(b";", 1)[0] in (b".", b".."):
            return "dot-segments are not allowed in the path"
    return None
