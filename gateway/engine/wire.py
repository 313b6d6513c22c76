"""HTTP/1.1 on the wire, the pieces both directions share: status lines, chunked framing,
the Date field, field-syntax checks.

Header names are sent as the engine holds them (lower case, which HTTP/1.1 allows); values are
sent unchanged (bytes outside ASCII pass as received).
"""

from __future__ import annotations

import re
import time
from email.utils import formatdate
from http import HTTPStatus

Headers = list[tuple[bytes, bytes]]

SERVER = b"pygateway"

_REASONS: dict[int, bytes] = {s.value: s.phrase.encode() for s in HTTPStatus}
_REASONS[499] = b"Client Closed Request"
_STATUS_LINES: dict[int, bytes] = {}

_date_cache: list[object] = [0, b""]


def http_date() -> bytes:
    """The IMF-fixdate for now, formatted once per second."""
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache[0], _date_cache[1] = now, formatdate(now, usegmt=True).encode()
    return _date_cache[1]  # type: ignore[return-value]


def status_line(status: int, version: bytes = b"1.1") -> bytes:
    """`HTTP/1.1 200 OK\\r\\n` (cached per status)."""
    if version == b"1.1":
        line = _STATUS_LINES.get(status)
        if line is None:
            line = _STATUS_LINES[status] = b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b""))
        return line
    return b"HTTP/%s %d %s\r\n" % (version, status, _REASONS.get(status, b""))


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked body (never call with b"": that is the last-chunk)."""
    return b"%x\r\n%s\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"

# RFC 9110 §7.6.1, plus the de-facto ones proxies also drop.
HOP_BY_HOP = frozenset({
    b"connection", b"proxy-connection", b"keep-alive", b"te", b"trailer", b"transfer-encoding",
    b"upgrade", b"proxy-authenticate", b"proxy-authorization",
})

_tokens_seen: dict[bytes, frozenset[bytes]] = {}


def connection_tokens(value: bytes) -> frozenset[bytes]:
    """The field names a `Connection` field lists (hop-by-hop by being named). The few values
    peers actually send (`keep-alive`, `close`, `Upgrade`) are remembered, not split again."""
    tokens = _tokens_seen.get(value)
    if tokens is None:
        tokens = frozenset(t.strip().lower() for t in value.split(b","))
        if len(_tokens_seen) < 64 and len(value) <= 64:
            _tokens_seen[value] = tokens
    return tokens


def end_to_end(fields: Headers) -> Headers:
    """`fields` (names in lower case) without the hop-by-hop ones, including every field named
    in `Connection`: one pass, a second only when `Connection` names a field of its own."""
    kept: Headers = []
    named: frozenset[bytes] | None = None
    for field in fields:
        name = field[0]
        if name in HOP_BY_HOP:
            if name == b"connection":
                tokens = connection_tokens(field[1])
                named = tokens if named is None else named | tokens
            continue
        kept.append(field)
    if named is not None and not named <= HOP_BY_HOP:
        return [f for f in kept if f[0] not in named]
    return kept


def valid_field_value(value: bytes) -> bool:
    """A field value as RFC 9110 §5.5 writes it: visible bytes, obs-text, SP and HTAB, no control."""
    return not value.translate(None, _VALUE_BYTES)


# RFC 9110 7.2 / RFC 3986 3.2.2: uri-host [ ":" port ]; a reg-name, an IPv4 address or an
# IP-literal. Anything else (`evil example`, `a/b?@`) is refused, never forwarded as
# X-Forwarded-Host. Empty is valid (RFC 9112 3.2: a target without an authority).
_HOST_SYNTAX = re.compile(rb"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~%!$&'()*+,;=]+)(?::[0-9]{1,5})?")


def valid_host(value: bytes) -> bool:
    return not value or _HOST_SYNTAX.fullmatch(value) is not None


def valid_field_name(name: bytes) -> bool:
    """A field name (or method): one or more RFC 9110 `tchar`s."""
    return bool(name) and not name.translate(None, _TCHAR)


_TCHAR = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_VALUE_BYTES = bytes([9, *range(0x20, 0x7F), *range(0x80, 0x100)])
