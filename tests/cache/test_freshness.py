"""Freshness, age, storability, stale and conditional rules of RFC 9111 / 9110 / 5861."""

from __future__ import annotations

import pytest

from gateway.cache.directives import CacheDirectives, parse_cache_control
from gateway.cache.freshness import (
    Heuristic,
    corrected_initial_age,
    decide_store,
    freshness_lifetime,
    may_serve_stale_on_error,
    no_stale,
    not_modified,
    parse_http_date,
    refreshed_headers,
    storable_headers,
    vary_names,
)
from gateway.cache.keys import secondary_key
from tests.cache.conftest import http_date

H = list[tuple[bytes, bytes]]


def cc(text: str) -> CacheDirectives:
    return parse_cache_control([text.encode()])


@pytest.mark.parametrize(
    ("status", "directives", "headers", "default_ttl", "lifetime"),
    [
        (200, "max-age=60", [], 300, 60),
        (200, "max-age=60, s-maxage=10", [], 300, 10),  # s-maxage wins in a shared cache
        (200, "", [(b"expires", http_date(100)), (b"date", http_date())], 300, 100),
        (200, "max-age=5", [(b"expires", http_date(100)), (b"date", http_date())], 300, 5),
        (200, "", [(b"expires", b"0"), (b"date", http_date())], 300, 0),  # invalid Expires: expired
        (200, "", [(b"expires", http_date(-50)), (b"date", http_date())], 300, 0),
        (200, "", [], 300, 300),  # heuristic: the configured ttl
        (200, "", [], 0, 0),  # ttl 0 turns the heuristic off
        (404, "", [], 300, 300),  # heuristically cacheable status
        (302, "", [], 300, 0),  # not heuristically cacheable
        (302, "public", [], 300, 300),  # ... unless public
    ],
)
def test_freshness_lifetime(status: int, directives: str, headers: H, default_ttl: float, lifetime: float) -> None:
    assert freshness_lifetime(status, cc(directives), headers, default_ttl) == pytest.approx(lifetime, abs=1)


@pytest.mark.parametrize(
    ("headers", "request_time", "response_time", "age"),
    [
        ([], 100.0, 100.5, 0.5),  # response delay counts
        ([(b"age", b"30")], 100.0, 101.0, 31.0),  # origin (or upstream cache) age + delay
        ([(b"age", b"junk")], 100.0, 100.0, 0.0),
        ([(b"age", b"99999999999")], 0.0, 0.0, 2_147_483_648.0),
    ],
)
def test_corrected_initial_age(headers: H, request_time: float, response_time: float, age: float) -> None:
    assert corrected_initial_age(headers, request_time, response_time) == pytest.approx(age)


def test_apparent_age_from_date() -> None:
    import time

    now = time.time()
    headers = [(b"date", http_date(-20))]
    assert corrected_initial_age(headers, now, now) == pytest.approx(20, abs=1.5)


@pytest.mark.parametrize(
    ("method", "status", "request_cc", "response_cc", "headers", "authenticated", "ttl", "store", "shared"),
    [
        ("GET", 200, "", "max-age=60", [], False, 300, True, True),
        ("HEAD", 200, "", "max-age=60", [], False, 300, False, True),
        ("GET", 200, "no-store", "max-age=60", [], False, 300, False, True),
        ("GET", 200, "", "no-store", [], False, 300, False, True),
        ("GET", 200, "", "private, max-age=60", [], False, 300, False, True),
        ("GET", 200, "", "max-age=60", [(b"vary", b"*")], False, 300, False, True),
        ("GET", 200, "", "max-age=60", [(b"set-cookie", b"a=b")], False, 300, False, True),
        ("GET", 206, "", "max-age=60", [], False, 300, False, True),  # no range support
        # RFC 9111 §3: any final status with explicit freshness (or public) may be stored...
        ("GET", 500, "", "max-age=60", [], False, 300, True, True),
        ("GET", 503, "", "s-maxage=60", [], False, 300, True, True),
        ("GET", 418, "", "max-age=60", [], False, 300, True, True),
        ("GET", 201, "", "", [(b"expires", b"Sun, 06 Nov 2094 08:49:37 GMT"), (b"date", b"Sun, 06 Nov 1994 08:49:37 GMT")],
         False, 300, True, True),
        ("GET", 599, "", "public", [], False, 300, True, True),
        # ... but without it only the heuristically cacheable ones
        ("GET", 500, "", "", [], False, 300, False, True),
        ("GET", 201, "", "", [], False, 300, False, True),
        ("GET", 404, "", "", [], False, 300, True, True),
        ("GET", 405, "", "", [], False, 300, True, True),
        ("GET", 302, "", "", [], False, 300, False, True),  # no explicit freshness
        ("GET", 302, "", "max-age=60", [], False, 300, True, True),
        ("GET", 200, "", "", [], False, 0, False, True),  # ttl 0: only explicit freshness
        ("GET", 200, "", "", [], False, 300, True, True),
        ("GET", 200, "", "no-cache", [(b"etag", b'"v1"')], False, 300, True, True),  # kept for revalidation
        ("GET", 200, "", "no-cache", [], False, 300, False, True),  # nothing to revalidate with
        ("GET", 200, "", "max-age=0", [(b"etag", b'"v1"')], False, 300, True, True),
        # RFC 9111 §3.5: authenticated -> shared only when the response says so
        ("GET", 200, "", "max-age=60", [], True, 300, True, False),
        ("GET", 200, "", "public, max-age=60", [], True, 300, True, True),
        ("GET", 200, "", "s-maxage=60", [], True, 300, True, True),
        ("GET", 200, "", "must-revalidate, max-age=60", [], True, 300, True, True),
        ("GET", 200, "", "must-understand, no-store, max-age=60", [], False, 300, True, True),
        ("GET", 299, "", "must-understand, no-store, max-age=60", [], False, 300, False, True),
    ],
)
def test_decide_store(method: str, status: int, request_cc: str, response_cc: str, headers: H,
                      authenticated: bool, ttl: float, store: bool, shared: bool) -> None:
    decision = decide_store(method, status, cc(request_cc), cc(response_cc), headers,
                            authenticated=authenticated, default_ttl=ttl)
    assert decision.store is store, decision.reason
    if store:
        assert decision.shared is shared


@pytest.mark.parametrize(
    ("response_cc", "forbidden"),
    [("max-age=5", False), ("must-revalidate", True), ("proxy-revalidate", True), ("s-maxage=5", True),
     ("no-cache", True)],
)
def test_no_stale(response_cc: str, forbidden: bool) -> None:
    assert no_stale(cc(response_cc)) is forbidden


@pytest.mark.parametrize(
    ("staleness", "forbidden", "sie", "disconnected", "request_cc", "allowed"),
    [
        (10, False, 60.0, False, "", True),  # origin 5xx within stale-if-error
        (100, False, 60.0, False, "", False),  # beyond it
        (100, False, None, False, "", False),  # origin answered 5xx, no stale-if-error
        (100, False, None, True, "", True),  # disconnected (breaker open / connect failure)
        (100, True, 600.0, True, "", False),  # must-revalidate & co. forbid it
        (10, False, None, False, "stale-if-error=30", True),  # the client allows it
        (10, False, 60.0, True, "no-cache", False),
    ],
)
def test_stale_on_error(staleness: float, forbidden: bool, sie: float | None, disconnected: bool,
                        request_cc: str, allowed: bool) -> None:
    assert may_serve_stale_on_error(staleness, no_stale=forbidden, stale_if_error=sie,
                                    disconnected=disconnected, request_cc=cc(request_cc)) is allowed


STORED = [(b"etag", b'"abc"'), (b"last-modified", b"Tue, 01 Jul 2025 10:00:00 GMT")]


@pytest.mark.parametrize(
    ("request_headers", "matches"),
    [
        ([(b"if-none-match", b'"abc"')], True),
        ([(b"if-none-match", b'W/"abc"')], True),  # weak comparison
        ([(b"if-none-match", b'"x", "abc"')], True),
        ([(b"if-none-match", b"*")], True),
        ([(b"if-none-match", b'"other"')], False),
        ([(b"if-none-match", b'"other"'), (b"if-modified-since", b"Wed, 02 Jul 2025 10:00:00 GMT")], False),
        ([(b"if-modified-since", b"Wed, 02 Jul 2025 10:00:00 GMT")], True),
        ([(b"if-modified-since", b"Mon, 30 Jun 2025 10:00:00 GMT")], False),
        ([(b"if-modified-since", b"garbage")], False),
        ([], False),
    ],
)
def test_not_modified(request_headers: H, matches: bool) -> None:
    assert not_modified(request_headers, STORED) is matches


def test_304_refreshes_stored_headers_but_not_the_body_framing() -> None:
    stored = [(b"content-type", b"text/plain"), (b"content-length", b"5"), (b"cache-control", b"max-age=1"),
              (b"etag", b'"1"')]
    fresh = [(b"cache-control", b"max-age=60"), (b"content-length", b"0"), (b"x-new", b"y"), (b"connection", b"close")]
    merged = dict(refreshed_headers(stored, fresh))
    assert merged[b"cache-control"] == b"max-age=60"
    assert merged[b"content-length"] == b"5"
    assert merged[b"x-new"] == b"y"
    assert b"connection" not in merged


def test_hop_by_hop_fields_are_not_stored() -> None:
    headers = [(b"connection", b"x-hop"), (b"x-hop", b"1"), (b"keep-alive", b"5"), (b"transfer-encoding", b"chunked"),
               (b"content-encoding", b"gzip"), (b"age", b"3")]
    assert storable_headers(headers) == [(b"content-encoding", b"gzip")]


@pytest.mark.parametrize(
    ("vary", "names"),
    [([], []), ([b"Accept-Encoding"], ["accept-encoding"]), ([b"accept, Accept-Language", b"accept"],
      ["accept", "accept-language"]), ([b"accept, *"], None)],
)
def test_vary_names(vary: list[bytes], names: list[str] | None) -> None:
    assert vary_names([(b"vary", v) for v in vary]) == names


def test_secondary_key_lower_cases_only_the_caseless_fields() -> None:
    assert (secondary_key(["accept-encoding", "accept-language"], [(b"accept-encoding", b"GZip"), (b"accept-language", b"EN-us")])
            == secondary_key(["accept-encoding", "accept-language"], [(b"accept-encoding", b"gzip"), (b"accept-language", b"en-US")]))
    assert secondary_key(["x-token"], [(b"x-token", b"Ab")]) != secondary_key(["x-token"], [(b"x-token", b"ab")])


def test_secondary_key_normalises_whitespace_and_absence() -> None:
    a = secondary_key(["accept", "x-a"], [(b"accept", b"text/html ,  application/json")])
    b = secondary_key(["accept", "x-a"], [(b"accept", b" text/html"), (b"accept", b"application/json ")])
    c = secondary_key(["accept", "x-a"], [(b"accept", b"text/html,application/json"), (b"x-a", b"")])
    assert a == b
    assert a != c  # an empty field is not an absent one


# -- HTTP-date, exactly (RFC 9110 §5.6.7; RFC 9111 §5.3) ------------------------------------------
NOV_6_1994 = 784111777.0


@pytest.mark.parametrize("text", [
    "Sun, 06 Nov 1994 08:49:37 GMT",  # IMF-fixdate
    "Sunday, 06-Nov-94 08:49:37 GMT",  # RFC 850
    "Sun Nov  6 08:49:37 1994",  # asctime
])
def test_the_three_http_date_formats_are_accepted(text: str) -> None:
    assert parse_http_date(text) == NOV_6_1994
    assert parse_http_date(text.encode()) == NOV_6_1994


@pytest.mark.parametrize("text", [
    "Sun, 06 Nov 1994 08:49:37 UTC",  # another zone
    "Sun, 06 Nov 1994 08:49:37 AEST",
    "Sun, 06 Nov 1994 08:49:37 +0000",
    "Sun 06 Nov 1994 08:49:37 GMT",  # no comma
    "Sun,  06 Nov 1994 08:49:37 GMT",  # several spaces
    "Sun, 06 Nov  1994 08:49:37 GMT",
    "Sun, 06-Nov-1994 08:49:37 GMT",  # dashes in an IMF-fixdate
    "Sun, 06 Nov 1994 8:49:37 GMT",  # a one-digit hour
    "Sun, 6 Nov 1994 08:49:37 GMT",  # a one-digit day
    "Sun, 06 Nov 1994 08.49.37 GMT",  # `.` instead of `:`
    "Sun, 06 Nov 94 08:49:37 GMT",  # a two-digit year in IMF form
    "sun, 06 nov 1994 08:49:37 gmt",  # HTTP-date is case-sensitive
    "Sun, 31 Feb 1994 08:49:37 GMT",  # no such day
    "Sun, 06 Nov 1994 24:00:00 GMT",
    "Sun Nov 06 08:49:37 1994",  # asctime pads with a space
    "Sunday, 06-Nov-94 08:49:37 UTC",
    "0", "-1", "", "tomorrow",
])
def test_anything_else_is_not_a_date(text: str) -> None:
    assert parse_http_date(text) is None


def test_a_two_digit_year_more_than_50_years_ahead_is_in_the_past() -> None:
    import time as _time

    this_year = _time.gmtime().tm_year
    ahead = (this_year + 60) % 100
    stamp = parse_http_date(f"Sunday, 06-Nov-{ahead:02d} 08:49:37 GMT")
    assert stamp is not None and _time.gmtime(stamp).tm_year == this_year + 60 - 100


@pytest.mark.parametrize("expires", [b"Sun, 06 Nov 2094 08:49:37 UTC", b"Sun 06 Nov 2094 08:49:37 GMT",
                                     b"Sun, 06 Nov 94 08:49:37 GMT"])
def test_an_expires_that_is_not_an_http_date_means_already_expired(expires: bytes) -> None:
    headers = [(b"expires", expires), (b"date", http_date())]
    assert freshness_lifetime(200, cc(""), headers, 300) == 0


@pytest.mark.parametrize(("age", "expected"), [(b"7200, 0", 7200), (b"60,60", 60), (b" 5 ", 5),
                                               (b"x, 7200", 0), (b"-1", 0)])
def test_an_age_list_counts_its_first_member(age: bytes, expected: float) -> None:
    now = 1_000_000.0
    assert corrected_initial_age([(b"age", age)], now, now) == expected


# -- heuristic freshness (RFC 9111 §4.2.2) -------------------------------------------------------
TEN_DAYS = 10 * 86400


def modified(seconds_ago: float) -> H:
    date = 1_000_000_000.0
    from email.utils import formatdate
    return [(b"date", formatdate(date, usegmt=True).encode()),
            (b"last-modified", formatdate(date - seconds_ago, usegmt=True).encode())]


@pytest.mark.parametrize(("status", "headers", "lifetime"), [
    (200, modified(TEN_DAYS), TEN_DAYS / 10),  # 10% of the time since Last-Modified
    (404, modified(1000), 100),
    (200, modified(100 * 86400), 86400),  # capped
    (200, [], 300),  # no Last-Modified: the fixed ttl
    (201, modified(TEN_DAYS), 0),  # not heuristically cacheable
])
def test_the_last_modified_heuristic(status: int, headers: H, lifetime: float) -> None:
    rule = Heuristic(0.1, 86400)
    assert freshness_lifetime(status, cc(""), headers, 300, rule) == pytest.approx(lifetime)


def test_explicit_freshness_always_wins_over_the_heuristic() -> None:
    assert freshness_lifetime(200, cc("max-age=5"), modified(TEN_DAYS), 300, Heuristic(0.1, 86400)) == 5


def test_the_heuristic_decides_what_is_stored() -> None:
    decision = decide_store("GET", 200, cc(""), cc(""), modified(TEN_DAYS), authenticated=False,
                            default_ttl=0, heuristic=Heuristic(0.1, 86400))
    assert decision.store and decision.lifetime == pytest.approx(TEN_DAYS / 10)
