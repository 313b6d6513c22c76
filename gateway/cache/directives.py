"""Cache-Control (and Pragma) parsing per RFC 9111 §5.2, forgiving where the RFC says to be.

Rules applied to odd input:

* Directive names are case-insensitive; both `max-age=5` and `max-age="5"` are accepted (§5.2).
* A directive given twice keeps its first occurrence (§4.2.1 allows "first wins").
* An invalid `max-age` / `s-maxage` value (not delta-seconds, e.g. `max-age=abc`, `-1`) makes the
  response stale: it parses as 0 (§4.2.1: "consider the response stale"). An invalid
  `min-fresh`, `stale-while-revalidate` or `stale-if-error` is ignored; an invalid `max-stale`
  value means the client accepts no staleness.
* delta-seconds beyond 2^31 are clamped to 2147483648 (§1.2.2).
* `private` and `no-cache` with a field-name list are treated as unqualified (allowed by §5.2.2.3
  and §5.2.2.4): we never store a partially private response.
* Unknown directives are ignored (§5.2.3).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

DELTA_MAX = 2_147_483_648
UNLIMITED = DELTA_MAX  # `max-stale` with no value: any staleness


@dataclass(frozen=True, slots=True)
class CacheDirectives:
    """The directives of one message's Cache-Control; absent numeric directives are None."""

    no_store: bool = False
    no_cache: bool = False
    private: bool = False
    public: bool = False
    must_revalidate: bool = False
    proxy_revalidate: bool = False
    must_understand: bool = False
    only_if_cached: bool = False
    max_age: int | None = None
    s_maxage: int | None = None
    max_stale: int | None = None
    min_fresh: int | None = None
    stale_while_revalidate: int | None = None
    stale_if_error: int | None = None

    @property
    def present(self) -> bool:
        return self != EMPTY


EMPTY = CacheDirectives()

_FLAGS = {
    "no-store": "no_store",
    "no-cache": "no_cache",
    "private": "private",
    "public": "public",
    "must-revalidate": "must_revalidate",
    "proxy-revalidate": "proxy_revalidate",
    "must-understand": "must_understand",
    "only-if-cached": "only_if_cached",
}
# name -> (field, value when the argument is invalid)
_NUMBERS: dict[str, tuple[str, int | None]] = {
    "max-age": ("max_age", 0),
    "s-maxage": ("s_maxage", 0),
    "min-fresh": ("min_fresh", None),
    "stale-while-revalidate": ("stale_while_revalidate", None),
    "stale-if-error": ("stale_if_error", None),
    "max-stale": ("max_stale", None),
}


def delta_seconds(value: str) -> int | None:
    """RFC 9111 §1.2.2 delta-seconds (1*DIGIT), clamped; None when invalid."""
    if not value or not value.isascii() or not value.isdigit():
        return None
    return min(int(value), DELTA_MAX)


def split_directives(text: str) -> list[tuple[str, str | None]]:
    """`a, b=1, c="x,y"` -> [("a", None), ("b", "1"), ("c", "x,y")]; commas inside quotes kept."""
    out: list[tuple[str, str | None]] = []
    items: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for ch in text:
        if escaped:
            current.append(ch)
            escaped = False
        elif quoted and ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
            current.append(ch)
        elif ch == "," and not quoted:
            items.append("".join(current))
            current = []
        else:
            current.append(ch)
    items.append("".join(current))
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip().lower()
        if not name:
            continue
        if not sep:
            out.append((name, None))
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
            value = value[1:-1]
        out.append((name, value))
    return out


def parse_cache_control(values: Iterable[bytes | str]) -> CacheDirectives:
    """Parse every Cache-Control field line of a message into one CacheDirectives."""
    found: dict[str, object] = {}
    for raw in values:
        text = raw.decode("latin-1") if isinstance(raw, bytes) else raw
        for name, value in split_directives(text):
            flag = _FLAGS.get(name)
            if flag is not None:
                found.setdefault(flag, True)
                continue
            number = _NUMBERS.get(name)
            if number is None or number[0] in found:
                continue
            field, invalid = number
            if name == "max-stale" and value is None:
                found[field] = UNLIMITED
            elif value is None:
                found[field] = invalid
            else:
                parsed = delta_seconds(value)
                found[field] = invalid if parsed is None else parsed
    found = {k: v for k, v in found.items() if v is not None}
    return CacheDirectives(**found)  # type: ignore[arg-type]


def request_directives(headers: Iterable[tuple[bytes, bytes]]) -> CacheDirectives:
    """A request's directives; `Pragma: no-cache` counts only without Cache-Control (§5.4)."""
    cc: list[bytes] = []
    pragma: list[bytes] = []
    for name, value in headers:
        if name == b"cache-control":
            cc.append(value)
        elif name == b"pragma":
            pragma.append(value)
    if cc:
        return parse_cache_control(cc)
    if any(name == "no-cache" for v in pragma for name, _ in split_directives(v.decode("latin-1"))):
        return CacheDirectives(no_cache=True)
    return EMPTY


def response_directives(headers: Iterable[tuple[bytes, bytes]]) -> CacheDirectives:
    return parse_cache_control(v for n, v in headers if n == b"cache-control")


# -- targeted fields (RFC 9213) ------------------------------------------------------------------
CDN_CACHE_CONTROL = b"cdn-cache-control"
# One member of a Structured Field Dictionary as targeted fields use it (RFC 9213 §2.1, RFC 8941
# §3.2): a lower-case key, optionally `=` an integer, a token or a string, then parameters.
_SF_MEMBER = re.compile(
    r'[a-z*][a-z0-9_.*-]*(?:=(?:-?[0-9]{1,15}|[A-Za-z*][A-Za-z0-9:/!#$%&\'*+.^_`|~-]*|"(?:[^"\\]|\\["\\])*"))?'
    r'(?:;[a-z*][a-z0-9_.*-]*(?:=[^,;]*)?)*')


def _valid_dictionary(value: str) -> bool:
    members = [m.strip(" \t") for m in value.split(",")]
    return bool(members) and all(_SF_MEMBER.fullmatch(m) for m in members)


def cache_view(headers: list[tuple[bytes, bytes]], targeted: tuple[bytes, ...]) -> list[tuple[bytes, bytes]]:
    """The response's fields as this cache judges them (RFC 9213 §2.2): when the first field
    of `targeted` present is a valid dictionary, it stands in for Cache-Control, and Cache-Control
    and Expires are ignored; otherwise the fields as they are. An invalid targeted field is
    ignored as if absent (the next one is tried)."""
    if not targeted:
        return headers
    for name in targeted:
        values = [v for k, v in headers if k == name]
        if not values:
            continue
        text = ", ".join(v.decode("latin-1") for v in values)
        if not _valid_dictionary(text):
            continue
        rest = [(k, v) for k, v in headers
                if k not in (b"cache-control", b"expires", b"pragma") and k not in targeted]
        return [*rest, (b"cache-control", text.encode("latin-1"))]
    return headers
