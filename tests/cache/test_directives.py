"""Cache-Control parsing, including the odd and invalid values RFC 9111 tells caches to survive."""

from __future__ import annotations

import pytest

from gateway.cache.directives import (
    DELTA_MAX,
    CacheDirectives,
    parse_cache_control,
    request_directives,
)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([b"max-age=60"], CacheDirectives(max_age=60)),
        ([b"MAX-AGE=60, Public"], CacheDirectives(max_age=60, public=True)),
        ([b'max-age="60"'], CacheDirectives(max_age=60)),  # quoted form accepted (§5.2)
        ([b"max-age=60, max-age=5"], CacheDirectives(max_age=60)),  # first occurrence wins
        ([b"max-age=60", b"max-age=5"], CacheDirectives(max_age=60)),  # across field lines too
        ([b"max-age=abc"], CacheDirectives(max_age=0)),  # invalid -> stale
        ([b"max-age=-1"], CacheDirectives(max_age=0)),
        ([b"max-age"], CacheDirectives(max_age=0)),
        ([b"s-maxage=1.5"], CacheDirectives(s_maxage=0)),
        ([b"max-age=99999999999999"], CacheDirectives(max_age=DELTA_MAX)),  # clamped (§1.2.2)
        ([b"no-store"], CacheDirectives(no_store=True)),
        ([b'private="set-cookie"'], CacheDirectives(private=True)),  # qualified -> unqualified
        ([b'no-cache="set-cookie, x-a", max-age=10'], CacheDirectives(no_cache=True, max_age=10)),
        ([b"must-revalidate, proxy-revalidate"], CacheDirectives(must_revalidate=True, proxy_revalidate=True)),
        ([b"stale-while-revalidate=30, stale-if-error=600"],
         CacheDirectives(stale_while_revalidate=30, stale_if_error=600)),
        ([b"stale-if-error=x"], CacheDirectives()),  # invalid -> ignored
        ([b"max-stale"], CacheDirectives(max_stale=DELTA_MAX)),  # no value: any staleness
        ([b"max-stale=10, min-fresh=5"], CacheDirectives(max_stale=10, min_fresh=5)),
        ([b"only-if-cached"], CacheDirectives(only_if_cached=True)),
        ([b"  ,, foo=bar, , max-age=3 ,"], CacheDirectives(max_age=3)),  # empties and unknowns
        ([b"community=\"UCI\", max-age=7"], CacheDirectives(max_age=7)),
        ([b'foo="a,max-age=1", max-age=9'], CacheDirectives(max_age=9)),  # comma inside quotes
        ([b"must-understand, no-store"], CacheDirectives(must_understand=True, no_store=True)),
        ([], CacheDirectives()),
    ],
)
def test_parse_cache_control(values: list[bytes], expected: CacheDirectives) -> None:
    assert parse_cache_control(values) == expected


@pytest.mark.parametrize(
    ("headers", "no_cache"),
    [
        ([(b"pragma", b"no-cache")], True),  # HTTP/1.0 clients
        ([(b"pragma", b"no-cache"), (b"cache-control", b"max-age=5")], False),  # Cache-Control wins
        ([(b"pragma", b"x-foo")], False),
        ([], False),
    ],
)
def test_pragma_counts_only_without_cache_control(headers: list[tuple[bytes, bytes]], no_cache: bool) -> None:
    assert request_directives(headers).no_cache is no_cache
