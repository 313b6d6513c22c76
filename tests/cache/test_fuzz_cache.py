"""Property-based: whatever freshness headers an origin sends (valid, odd or invalid), the cache
never fails a request, never stores what RFC 9111 forbids, and never hands one consumer's
response to another unless the response allows it (RFC 9111 section 3.5).

Each example: one request fills (or not), a second asks for the same URL. The origin's headers
are drawn from directive and date values, odd ones included; the oracle reads them the simple
way (the generator makes no quoted strings that could hide a directive).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from gateway.cache.policy import CachePolicy
from gateway.context import Consumer
from gateway.store import Store, embedded_store
from tests.cache.conftest import Origin, Reply, cache_config, http_date, make_ctx, send


@dataclass
class Harness:
    loop: asyncio.AbstractEventLoop
    policy: CachePolicy
    store: Store


@pytest.fixture(scope="module")
def harness() -> Iterator[Harness]:
    loop = asyncio.new_event_loop()
    store = embedded_store()
    policy = CachePolicy.from_config(cache_config(), store)
    loop.run_until_complete(policy.start())
    try:
        yield Harness(loop, policy, store)
    finally:
        loop.run_until_complete(policy.close())
        loop.run_until_complete(store.close())
        loop.close()


_DIRECTIVES = ["public", "private", "no-store", "no-cache", "must-revalidate", "proxy-revalidate",
               "no-transform", "immutable", "max-age=60", "max-age=0", "max-age=-1", "max-age=abc",
               'max-age="30"', "MAX-AGE=60", "Public", "max-age=99999999999999999999", "s-maxage=60",
               "s-maxage=0", "stale-while-revalidate=30", "stale-if-error=30", "max-age", "=", "",
               "max-age=60, max-age=0", "x-ext=1"]
_DATES = st.sampled_from([http_date(-3600), http_date(), http_date(3600), b"0", b"garbage", b"",
                          b"Thu, 01 Jan 1970 00:00:00 GMT", b"Sun, 06 Nov 1994 08:49:37 GMT",
                          b"Sunday, 06-Nov-94 08:49:37 GMT", b"Sun Nov  6 08:49:37 1994"])
_UNIQUE = itertools.count()


@st.composite
def origin_headers(draw: Any) -> list[tuple[bytes, bytes]]:
    headers: list[tuple[bytes, bytes]] = []
    for _ in range(draw(st.integers(0, 2))):  # zero, one or two Cache-Control fields
        members = draw(st.lists(st.sampled_from(_DIRECTIVES), max_size=4))
        headers.append((b"cache-control", draw(st.sampled_from([", ", ","])).join(members).encode()))
    for name, values in ((b"expires", _DATES), (b"date", _DATES), (b"last-modified", _DATES),
                         (b"age", st.sampled_from([b"0", b"5", b"-3", b"abc", b"9" * 30, b""])),
                         (b"vary", st.sampled_from([b"accept", b"*", b"Accept-Encoding, X-Foo", b"",
                                                    b"accept, *"])),
                         (b"etag", st.sampled_from([b'"v1"', b'W/"v1"', b"unquoted", b""])),
                         (b"pragma", st.sampled_from([b"no-cache", b"x"]))):
        if draw(st.booleans()):
            headers.append((name, draw(values)))
    return headers


def _names(headers: list[tuple[bytes, bytes]], field: bytes) -> set[str]:
    """Directive names of every `field` line, lower-cased (no quoted strings are generated)."""
    out: set[str] = set()
    for k, v in headers:
        if k == field:
            out |= {part.split("=", 1)[0].strip().lower() for part in v.decode().split(",")}
    return out


def _vary_star(headers: list[tuple[bytes, bytes]]) -> bool:
    return any(k == b"vary" and "*" in (p.strip() for p in v.decode().split(",")) for k, v in headers)


ALICE = Consumer(id="alice", tier="default", authenticated=True, rate_key="c:alice")
BOB = Consumer(id="bob", tier="default", authenticated=True, rate_key="c:bob")


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(headers=origin_headers(), status=st.sampled_from([200, 200, 200, 203, 204, 301, 404, 410, 500]),
       first=st.sampled_from([None, ALICE]), second=st.sampled_from([None, ALICE, BOB]))
def test_a_second_request_is_served_from_cache_only_when_the_rfc_allows(
        harness: Harness, headers: list[tuple[bytes, bytes]], status: int,
        first: Consumer | None, second: Consumer | None) -> None:
    config = cache_config()
    url = f"/api/products/{next(_UNIQUE)}"
    body = b"payload-" + url.encode()
    origin = Origin(Reply(status=status, headers=headers, body=body))

    async def two() -> tuple[Any, Any]:
        one = await send(harness.policy, harness.store, make_ctx(config, url, consumer=first), origin)
        two = await send(harness.policy, harness.store, make_ctx(config, url, consumer=second), origin)
        return one, two

    one, again = harness.loop.run_until_complete(asyncio.wait_for(two(), 15))
    assert one.status == status and one.body == body  # the origin's answer, whatever its headers

    served_from_cache = origin.calls == 1
    event("hit" if served_from_cache else "miss")
    if not served_from_cache:
        assert again.status == status and again.body == body
        return
    # Served from the cache: the same bytes, with the cache's own fields.
    assert again.status == status and again.body == body
    assert again.x_cache in ("HIT", "STALE")
    age = again.header("age")
    assert age is not None and age.isdigit()
    response_cc = _names(headers, b"cache-control")
    assert "no-store" not in response_cc and "private" not in response_cc, headers
    assert not _vary_star(headers), headers
    if first is not None and second is not first:
        # Stored from one consumer's request, seen by another (or anonymous): only when the
        # response says a shared cache may use it for authenticated requests.
        assert response_cc & {"public", "s-maxage", "must-revalidate"}, headers
