"""CDN-Cache-Control and a targeted field of our own (RFC 9213): what the gateway's own cache
obeys, over Cache-Control, and never shows the client unless configured to."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.cache.directives import cache_view
from gateway.cache.policy import CachePolicy
from gateway.config import ConfigError
from gateway.store import Store
from tests.cache.conftest import Origin, Reply, cache_config, make_ctx, send


def origin(**fields: str) -> Origin:
    headers = [(k.replace("_", "-").encode(), v.encode()) for k, v in fields.items()]
    return Origin(Reply(headers=headers, body=b"payload"))


async def twice(store: Store, replying: Origin, **cache: Any) -> list[Any]:
    config = cache_config(cache=cache) if cache else cache_config()
    policy = CachePolicy.from_config(config, store)
    return [await send(policy, store, make_ctx(config), replying) for _ in range(2)]


@pytest.mark.parametrize(("fields", "statuses"), [
    # CDN-Cache-Control decides for the gateway, whatever Cache-Control says for others
    ({"cache_control": "no-store", "cdn_cache_control": "max-age=60"}, ["MISS", "HIT"]),
    ({"cache_control": "private", "cdn_cache_control": "max-age=60"}, ["MISS", "HIT"]),
    ({"cache_control": "max-age=60", "cdn_cache_control": "no-store"}, ["MISS", "MISS"]),
    ({"cache_control": "max-age=60", "cdn_cache_control": "private"}, ["MISS", "MISS"]),
    ({"cache_control": "max-age=60", "cdn_cache_control": "max-age=0"}, ["MISS", "MISS"]),
    ({"cache_control": "max-age=60", "cdn_cache_control": "no-cache"}, ["MISS", "MISS"]),
    # Expires is ignored with it (§2.2), and Cache-Control's freshness too
    ({"expires": "Sun, 06 Nov 1994 08:49:37 GMT", "cdn_cache_control": "max-age=60"}, ["MISS", "HIT"]),
    # an invalid one (not a structured dictionary: keys are lower-case) is ignored
    ({"cache_control": "no-store", "cdn_cache_control": "Max-Age=60"}, ["MISS", "MISS"]),
    ({"cache_control": "max-age=60", "cdn_cache_control": "max-age=6 0"}, ["MISS", "HIT"]),
])
async def test_cdn_cache_control_decides_what_the_gateway_stores(store: Store, fields: dict[str, str],
                                                                 statuses: list[str]) -> None:
    results = await twice(store, origin(**fields))
    assert [r.x_cache for r in results] == statuses
    for result in results:  # for this cache: never passed on
        assert result.header("cdn-cache-control") is None
        if "cache_control" in fields:
            assert result.header("cache-control") == fields["cache_control"]


async def test_our_own_targeted_field_comes_first(store: Store) -> None:
    replying = origin(cache_control="no-store", cdn_cache_control="no-store",
                      gateway_cache_control="max-age=60")
    results = await twice(store, replying, targeted_field="Gateway-Cache-Control")
    assert [r.x_cache for r in results] == ["MISS", "HIT"]
    assert all(r.header("gateway-cache-control") is None and r.header("cdn-cache-control") is None
               for r in results)


async def test_the_fields_can_be_passed_on(store: Store) -> None:
    results = await twice(store, origin(cdn_cache_control="max-age=60"), forward_targeted_fields=True)
    assert [r.x_cache for r in results] == ["MISS", "HIT"]
    assert all(r.header("cdn-cache-control") == "max-age=60" for r in results)


async def test_cdn_cache_control_can_be_ignored(store: Store) -> None:
    results = await twice(store, origin(cache_control="no-store", cdn_cache_control="max-age=60"),
                          cdn_cache_control=False)
    assert [r.x_cache for r in results] == ["MISS", "MISS"]
    assert results[0].header("cdn-cache-control") == "max-age=60"  # not ours: passed on


def test_the_view_replaces_cache_control_expires_and_pragma() -> None:
    headers = [(b"cache-control", b"no-store"), (b"expires", b"0"), (b"pragma", b"no-cache"),
               (b"cdn-cache-control", b"max-age=60"), (b"etag", b'"v"')]
    assert cache_view(headers, (b"cdn-cache-control",)) == [(b"etag", b'"v"'), (b"cache-control", b"max-age=60")]
    assert cache_view(headers, ()) == headers


@pytest.mark.parametrize("name", ["Cache-Control", "cdn-cache-control", "bad name", "a:b"])
def test_the_targeted_field_must_be_a_field_of_our_own(name: str) -> None:
    with pytest.raises(ConfigError, match="targeted_field"):
        cache_config(cache={"targeted_field": name})
