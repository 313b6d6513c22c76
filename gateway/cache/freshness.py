"""Age, freshness, storability and stale-serving rules of RFC 9111 (and RFC 5861): pure functions.

Times are seconds (floats). Nothing here does I/O, so every rule is tested table-driven.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import NamedTuple

from gateway.cache.directives import CacheDirectives, split_directives
from gateway.context import Headers

# RFC 9110 §15.1: heuristically cacheable by default (206 left out: we keep no ranges).
HEURISTIC_STATUSES = frozenset({200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501})
# RFC 9111 §3: any final status may be stored when the response gives explicit freshness (or is
# `public`); heuristic freshness only for the statuses above. 206 never: we keep whole responses.
NEVER_STORED = frozenset({206})
# Statuses whose semantics we know (what `must-understand` asks for, §5.2.2.3).
UNDERSTOOD_STATUSES = HEURISTIC_STATUSES | frozenset({302, 303, 307, 451})

# §3.1: never stored; plus our own per-response headers.
_UNSTORED = frozenset(
    {
        b"connection", b"proxy-connection", b"keep-alive", b"te", b"transfer-encoding",
        b"upgrade", b"trailer", b"proxy-authenticate", b"proxy-authentication-info",
        b"proxy-authorization", b"age", b"x-cache",
    }
)
# §3.2: a 304 refreshes the stored fields except these.
_NOT_REFRESHED = _UNSTORED | {b"content-length", b"content-encoding", b"content-range", b"content-type"}


def header_values(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> list[bytes]:
    return [v for k, v in headers if k == name]


def first_header(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for k, v in headers:
        if k == name:
            return v
    return None


_MONTHS = {m: i for i, m in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)}
_DAY = "(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)"
_LONG_DAY = "(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday)"
_MONTH = "(" + "|".join(_MONTHS) + ")"
_TIME = r"(\d\d):(\d\d):(\d\d)"
# RFC 9110 §5.6.7, exactly (HTTP-date is case-sensitive): IMF-fixdate, then the two obsolete forms.
_IMF_FIXDATE = re.compile(rf"{_DAY}, (\d\d) {_MONTH} (\d{{4}}) {_TIME} GMT")
_RFC850 = re.compile(rf"{_LONG_DAY}, (\d\d)-{_MONTH}-(\d\d) {_TIME} GMT")
_ASCTIME = re.compile(rf"{_DAY} {_MONTH} ([ \d]\d) {_TIME} (\d{{4}})")


def parse_http_date(value: bytes | str | None) -> float | None:
    """An HTTP-date (IMF-fixdate, RFC 850 or asctime, RFC 9110 §5.6.7) as a POSIX time; None for
    anything else: another zone, a missing comma, extra spaces, one-digit fields, another
    separator (RFC 9111 §5.3: an invalid Expires then means "already expired")."""
    if value is None:
        return None
    text = (value.decode("latin-1") if isinstance(value, bytes) else value).strip(" \t")
    if (m := _IMF_FIXDATE.fullmatch(text)) is not None:
        day, month, year, hh, mm, ss = m.groups()
    elif (m := _RFC850.fullmatch(text)) is not None:
        day, month, yy, hh, mm, ss = m.groups()
        # Two digits: a date more than 50 years ahead is the latest past year with them.
        this_year = time.gmtime().tm_year
        year_n = this_year - this_year % 100 + int(yy)
        if year_n > this_year + 50:
            year_n -= 100
        year = str(year_n)
    elif (m := _ASCTIME.fullmatch(text)) is not None:
        month, day, hh, mm, ss, year = m.groups()
        if day[0] == "0":
            return None  # asctime pads the day with a space, never a zero
    else:
        return None
    second = int(ss)
    if second > 60:  # 60: a leap second, the end of that minute
        return None
    try:
        moment = datetime(int(year), _MONTHS[month], int(day), int(hh), int(mm), min(second, 59),
                          tzinfo=UTC)
    except ValueError:  # 31 Feb, hour 24, minute 60...
        return None
    return moment.timestamp() + (second == 60)


def unstorable_fields(headers: Headers) -> frozenset[bytes]:
    """Hop-by-hop fields, including those named by `Connection` (§3.1)."""
    named = {
        n.encode("latin-1")
        for v in header_values(headers, b"connection")
        for n, _ in split_directives(v.decode("latin-1"))
    }
    return _UNSTORED | named


def storable_headers(headers: Headers) -> Headers:
    drop = unstorable_fields(headers)
    return [(k, v) for k, v in headers if k not in drop]


def vary_names(headers: Headers) -> list[str] | None:
    """The request fields the response varies on, lower-case, sorted; None for `Vary: *`."""
    names: set[str] = set()
    for value in header_values(headers, b"vary"):
        for item in value.decode("latin-1").split(","):
            name = item.strip().lower()
            if name == "*":
                return None
            if name:
                names.add(name)
    return sorted(names)


def explicit_lifetime(cc: CacheDirectives, headers: Headers) -> float | None:
    """§4.2.1 for a shared cache: s-maxage, max-age, then Expires - Date; None if none given."""
    if cc.s_maxage is not None:
        return float(cc.s_maxage)
    if cc.max_age is not None:
        return float(cc.max_age)
    expires_values = header_values(headers, b"expires")
    if expires_values:
        expires = parse_http_date(expires_values[0])
        if expires is None or len(expires_values) > 1:
            return 0.0  # §5.3: an invalid Expires (e.g. "0") means already expired
        date = parse_http_date(first_header(headers, b"date"))
        if date is None:
            return 0.0
        return max(0.0, expires - date)
    return None


class Heuristic(NamedTuple):
    """RFC 9111 §4.2.2's heuristic: `fraction` of the time since Last-Modified, at most `cap` s."""

    fraction: float
    cap: float


def freshness_lifetime(status: int, cc: CacheDirectives, headers: Headers, default_ttl: float,
                       heuristic: Heuristic | None = None) -> float:
    """The response's freshness lifetime. Without an explicit one, for a heuristically cacheable
    status (or `public`): with `heuristic`, its fraction of the time since `Last-Modified` (as of
    `Date`); else, or without `Last-Modified`, the fixed `default_ttl` (0: none)."""
    explicit = explicit_lifetime(cc, headers)
    if explicit is not None:
        return explicit
    if not (status in HEURISTIC_STATUSES or cc.public):
        return 0.0
    if heuristic is not None:
        modified = parse_http_date(first_header(headers, b"last-modified"))
        if modified is not None:
            date = parse_http_date(first_header(headers, b"date"))
            now = date if date is not None else time.time()
            return max(0.0, min(heuristic.cap, heuristic.fraction * (now - modified)))
    return max(0.0, default_ttl)


def corrected_initial_age(headers: Headers, request_time: float, response_time: float) -> float:
    """§4.2.3 corrected_initial_age from the origin's `Age` and `Date` and our own clock."""
    date = parse_http_date(first_header(headers, b"date"))
    apparent = max(0.0, response_time - date) if date is not None else 0.0
    age_value = 0.0
    raw_age = first_header(headers, b"age")
    if raw_age is not None:
        # A list (`Age: 7200, 0`, or the field repeated): the first member counts.
        text = raw_age.decode("latin-1").split(",", 1)[0].strip()
        if text.isascii() and text.isdigit():
            age_value = float(min(int(text), 2_147_483_648))
    response_delay = max(0.0, response_time - request_time)
    return max(apparent, age_value + response_delay)


def no_stale(cc: CacheDirectives) -> bool:
    """True when the response forbids being served stale (§4.2.4, §5.2.2.10: s-maxage)."""
    return cc.must_revalidate or cc.proxy_revalidate or cc.no_cache or cc.s_maxage is not None


def shareable_when_authenticated(cc: CacheDirectives) -> bool:
    """§3.5: a response to an authenticated request may be shared only if it says so."""
    return cc.public or cc.s_maxage is not None or cc.must_revalidate


class StoreDecision(NamedTuple):
    """Whether and how to store a response; `shared` False means only for the same consumer."""

    store: bool
    reason: str
    shared: bool = True
    lifetime: float = 0.0


def decide_store(
    method: str,
    status: int,
    request_cc: CacheDirectives,
    response_cc: CacheDirectives,
    headers: Headers,
    *,
    authenticated: bool,
    default_ttl: float,
    heuristic: Heuristic | None = None,
) -> StoreDecision:
    """§3: may a shared cache store this response, and under which scope."""
    if method != "GET":
        return StoreDecision(False, "method")
    if request_cc.no_store:
        return StoreDecision(False, "request no-store")
    if response_cc.must_understand:
        if status not in UNDERSTOOD_STATUSES:
            return StoreDecision(False, "must-understand status")
    elif response_cc.no_store:
        return StoreDecision(False, "no-store")
    if response_cc.private:
        return StoreDecision(False, "private")
    if status in NEVER_STORED or not 200 <= status <= 599:
        return StoreDecision(False, f"status {status}")
    if vary_names(headers) is None:
        return StoreDecision(False, "vary *")
    if first_header(headers, b"set-cookie") is not None:
        return StoreDecision(False, "set-cookie")
    explicit = explicit_lifetime(response_cc, headers)
    if explicit is None and status not in HEURISTIC_STATUSES and not response_cc.public:
        return StoreDecision(False, "no explicit freshness")
    lifetime = freshness_lifetime(status, response_cc, headers, default_ttl, heuristic)
    if response_cc.no_cache:
        lifetime = 0.0
    validators = first_header(headers, b"etag") is not None or first_header(headers, b"last-modified") is not None
    if lifetime <= 0 and not (validators and (explicit is not None or response_cc.no_cache)):
        return StoreDecision(False, "no freshness")
    shared = not authenticated or shareable_when_authenticated(response_cc)
    return StoreDecision(True, "ok", shared, lifetime)


def retention(lifetime: float, swr: float, sie: float, stale_retention: float) -> float:
    """How long Redis keeps an entry: fresh life plus the longest window it may be served stale."""
    return lifetime + max(swr, sie, stale_retention)


def may_serve_stale_on_error(
    staleness: float,
    *,
    no_stale: bool,
    stale_if_error: float | None,
    disconnected: bool,
    request_cc: CacheDirectives,
) -> bool:
    """§4.2.4 and RFC 5861 §4: serve a stale copy when the origin failed or is unreachable.

    `disconnected` (breaker open, connect failure, timeout) allows stale within the retention
    window; an origin's 5xx answer only within `stale-if-error`. Never when the response forbids
    stale, nor when the request asks for no-cache.
    """
    if no_stale or request_cc.no_cache:
        return False
    window = stale_if_error
    if request_cc.stale_if_error is not None:
        window = request_cc.stale_if_error if window is None else max(window, request_cc.stale_if_error)
    if window is not None and staleness <= window:
        return True
    return disconnected


_ETAG_SPLIT = re.compile(r'\s*(?:W/)?("[^"]*"|\*)\s*')


def _etags(value: str) -> list[str]:
    return [m.group(1) for m in _ETAG_SPLIT.finditer(value)]


def not_modified(request_headers: Headers, stored_headers: Headers) -> bool:
    """RFC 9110 §13.1: does the client's conditional GET/HEAD match the stored response?"""
    inm = header_values(request_headers, b"if-none-match")
    if inm:
        etag = first_header(stored_headers, b"etag")
        wanted = [t for v in inm for t in _etags(v.decode("latin-1"))]
        if "*" in wanted:
            return True
        if etag is None:
            return False
        ours = _etags(etag.decode("latin-1"))
        return bool(ours) and ours[0] in wanted  # weak comparison: W/ ignored on both sides
    since = parse_http_date(first_header(request_headers, b"if-modified-since"))
    if since is None:
        return False
    modified = parse_http_date(first_header(stored_headers, b"last-modified"))
    if modified is None:
        modified = parse_http_date(first_header(stored_headers, b"date"))
    return modified is not None and modified <= since


_304_FIELDS = frozenset({b"cache-control", b"content-location", b"date", b"etag", b"expires", b"vary", b"last-modified"})


def not_modified_headers(stored_headers: Headers) -> Headers:
    """The fields a 304 carries (RFC 9110 §15.4.5)."""
    return [(k, v) for k, v in stored_headers if k in _304_FIELDS]


def refreshed_headers(stored: Headers, fresh: Headers) -> Headers:
    """§3.2: the stored fields updated with those of a 304 (or HEAD) response."""
    drop = unstorable_fields(fresh) | _NOT_REFRESHED
    updates = [(k, v) for k, v in fresh if k not in drop]
    replaced = {k for k, _ in updates}
    return [(k, v) for k, v in stored if k not in replaced] + updates


def has_validators(headers: Headers) -> bool:
    return first_header(headers, b"etag") is not None or first_header(headers, b"last-modified") is not None


def conditional_headers(stored: Headers) -> Headers:
    """The validators to revalidate a stored response with the origin (§4.3.1)."""
    out: Headers = []
    etag = first_header(stored, b"etag")
    if etag is not None:
        out.append((b"if-none-match", etag))
    modified = first_header(stored, b"last-modified")
    if modified is not None:
        out.append((b"if-modified-since", modified))
    return out
