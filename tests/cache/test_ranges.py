"""Ranges from the cache (RFC 9110 §14): 206 from a stored whole response, multipart, 416, If-Range."""

from __future__ import annotations

import pytest

from gateway.cache.policy import CachePolicy
from gateway.cache.ranges import if_range_matches, parse_ranges
from gateway.store import Store
from tests.cache.conftest import Origin, Reply, make_ctx, send

BODY = b"0123456789"
MODIFIED = b"Sun, 06 Nov 1994 08:49:37 GMT"


@pytest.mark.parametrize(("value", "length", "ranges"), [
    (b"bytes=2-4", 10, [(2, 4)]),
    (b"bytes=7-", 10, [(7, 9)]),
    (b"bytes=-3", 10, [(7, 9)]),
    (b"bytes=-30", 10, [(0, 9)]),
    (b"bytes=8-100", 10, [(8, 9)]),
    (b"bytes=0-1, 5-6", 10, [(0, 1), (5, 6)]),
    (b"bytes=0-1,,5-6", 10, [(0, 1), (5, 6)]),
    (b"BYTES=0-0", 10, [(0, 0)]),
    (b"bytes=20-30", 10, []),  # unsatisfiable: 416
    (b"bytes=-0", 10, []),
    (b"bytes=20-30, 0-0", 10, [(0, 0)]),  # one satisfiable piece is enough
    (b"bytes=5-2", 10, None),  # invalid: ignored
    (b"bytes=", 10, None),
    (b"bytes=a-b", 10, None),
    (b"bytes=-", 10, None),
    (b"items=0-1", 10, None),  # another unit
    (b"bytes=" + b",".join(b"%d-%d" % (i, i) for i in range(17)), 100, None),  # too many
])
def test_parse_ranges(value: bytes, length: int, ranges: list[tuple[int, int]] | None) -> None:
    assert parse_ranges(value, length) == ranges


@pytest.mark.parametrize(("if_range", "stored", "matches"), [
    (None, [], True),
    (b'"v1"', [(b"etag", b'"v1"')], True),
    (b'"v2"', [(b"etag", b'"v1"')], False),
    (b'"v1"', [(b"etag", b'W/"v1"')], False),  # a weak tag never matches
    (b'W/"v1"', [(b"etag", b'W/"v1"')], False),
    (MODIFIED, [(b"last-modified", MODIFIED)], True),
    (b"Mon, 07 Nov 1994 08:49:37 GMT", [(b"last-modified", MODIFIED)], False),
    (b"not a date", [(b"last-modified", MODIFIED)], False),
])
def test_if_range(if_range: bytes | None, stored: list[tuple[bytes, bytes]], matches: bool) -> None:
    assert if_range_matches(if_range, stored) is matches


def stored_origin() -> Origin:
    return Origin(Reply(headers=[(b"cache-control", b"max-age=60"), (b"etag", b'"v1"'),
                                 (b"last-modified", MODIFIED), (b"content-type", b"text/plain")],
                        body=BODY))


async def get(policy: CachePolicy, store: Store, config, origin: Origin, *headers: tuple[bytes, bytes],
              method: str = "GET"):  # type: ignore[no-untyped-def]
    return await send(policy, store, make_ctx(config, method=method, headers=list(headers)), origin)


async def test_one_range_from_the_cache(policy: CachePolicy, store: Store, config) -> None:  # type: ignore[no-untyped-def]
    origin = stored_origin()
    await get(policy, store, config, origin)
    for value, body, content_range in [(b"bytes=2-4", b"234", "bytes 2-4/10"),
                                       (b"bytes=-3", b"789", "bytes 7-9/10"),
                                       (b"bytes=8-100", b"89", "bytes 8-9/10")]:
        result = await get(policy, store, config, origin, (b"range", value))
        assert (result.status, result.body, result.header("content-range")) == (206, body, content_range)
        assert result.x_cache == "HIT" and result.header("content-type") == "text/plain"
    assert origin.calls == 1


async def test_several_ranges_are_multipart(policy: CachePolicy, store: Store, config) -> None:  # type: ignore[no-untyped-def]
    origin = stored_origin()
    await get(policy, store, config, origin)
    result = await get(policy, store, config, origin, (b"range", b"bytes=0-1, 5-6"))
    assert result.status == 206
    content_type = result.header("content-type") or ""
    assert content_type.startswith("multipart/byteranges; boundary=")
    boundary = content_type.split("boundary=")[1].encode()
    parts = result.body.split(b"--" + boundary)
    assert parts[-1] == b"--\r\n"
    assert b"content-range: bytes 0-1/10\r\n\r\n01\r\n" in parts[1]
    assert b"content-range: bytes 5-6/10\r\n\r\n56\r\n" in parts[2]
    assert b"content-type: text/plain" in parts[1]


async def test_an_unsatisfiable_range_is_416(policy: CachePolicy, store: Store, config) -> None:  # type: ignore[no-untyped-def]
    origin = stored_origin()
    await get(policy, store, config, origin)
    result = await get(policy, store, config, origin, (b"range", b"bytes=20-30"))
    assert (result.status, result.header("content-range")) == (416, "bytes */10")
    assert result.header("content-type") == "application/problem+json"


@pytest.mark.parametrize(("range_value", "if_range", "status"), [
    (b"bytes=5-2", None, 200),  # invalid: the whole response
    (b"items=0-1", None, 200),
    (b"bytes=0-1", b'"v1"', 206),  # If-Range matches
    (b"bytes=0-1", b'"v0"', 200),  # it changed since: the whole response
    (b"bytes=0-1", MODIFIED, 206),
])
async def test_ranges_the_gateway_does_not_apply_get_the_whole_response(
        policy: CachePolicy, store: Store, config, range_value: bytes, if_range: bytes | None,  # type: ignore[no-untyped-def]
        status: int) -> None:
    origin = stored_origin()
    await get(policy, store, config, origin)
    headers = [(b"range", range_value)] + ([(b"if-range", if_range)] if if_range else [])
    result = await get(policy, store, config, origin, *headers)
    assert result.status == status and result.x_cache == "HIT"
    if status == 200:
        assert result.body == BODY


async def test_a_range_request_that_misses_goes_to_the_origin_and_nothing_partial_is_stored(
        policy: CachePolicy, store: Store, config) -> None:  # type: ignore[no-untyped-def]
    partial = Origin(Reply(status=206, headers=[(b"cache-control", b"max-age=60"),
                                               (b"content-range", b"bytes 0-1/10")], body=b"01"))
    result = await get(policy, store, config, partial, (b"range", b"bytes=0-1"))
    assert result.status == 206 and result.x_cache == "MISS"
    assert dict(partial.requests[0])[b"range"] == b"bytes=0-1"  # passed on as sent
    whole = stored_origin()
    assert (await get(policy, store, config, whole)).x_cache == "MISS"  # nothing was stored
    assert (await get(policy, store, config, whole, (b"range", b"bytes=0-1"))).status == 206


async def test_head_ignores_range(policy: CachePolicy, store: Store, config) -> None:  # type: ignore[no-untyped-def]
    origin = stored_origin()
    await get(policy, store, config, origin)
    result = await get(policy, store, config, origin, (b"range", b"bytes=0-1"), method="HEAD")
    assert result.status == 200 and result.body == b""
