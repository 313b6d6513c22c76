"""CachePolicy against a programmable origin, on the embedded store: what a client observes."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import time

import pytest

from gateway.cache.policy import CachePolicy
from gateway.context import Consumer, RequestContext
from gateway.identity import IdentityPolicy
from gateway.policy import PolicyChain
from gateway.store import Store, StoreUnavailable
from tests.cache.conftest import ADMIN_KEY, Origin, Reply, cache_config, make_ctx, send
from tests.support.chain import drive, finish

CC = b"cache-control"


def reply(cache_control: str | None = "max-age=60", body: bytes = b"hello", status: int = 200,
          **headers: str) -> Reply:
    hdrs = [(CC, cache_control.encode())] if cache_control is not None else []
    hdrs += [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()]
    return Reply(status=status, headers=hdrs, body=body)


async def twice(policy: CachePolicy, store: Store, origin: Origin, url: str = "/api/products/1",
                **kw: object) -> tuple[str | None, str | None]:
    first = await send(policy, store, make_ctx(policy_config(policy), url, **kw), origin)  # type: ignore[arg-type]
    second = await send(policy, store, make_ctx(policy_config(policy), url, **kw), origin)  # type: ignore[arg-type]
    return first.x_cache, second.x_cache


def policy_config(policy: CachePolicy):  # the fixture's config, reachable from the policy
    return policy._config  # type: ignore[attr-defined]


@pytest.fixture(autouse=True)
def _remember_config(policy: CachePolicy, config) -> None:  # type: ignore[no-untyped-def]
    policy._config = config  # type: ignore[attr-defined]


# -- storability, table-driven -----------------------------------------------------------------
@pytest.mark.parametrize(
    ("origin_reply", "expected"),
    [
        (reply("max-age=60"), ("MISS", "HIT")),
        (reply("public, max-age=60"), ("MISS", "HIT")),
        (reply(None), ("MISS", "HIT")),  # no freshness: the configured ttl (300 s)
        (reply("no-store"), ("MISS", "MISS")),
        (reply("private, max-age=60"), ("MISS", "MISS")),
        (reply("max-age=60", vary="*"), ("MISS", "MISS")),
        (reply("max-age=60", set_cookie="session=1"), ("MISS", "MISS")),
        (reply("max-age=60", status=500), ("MISS", "HIT")),  # explicitly fresh: storable (§3)
        (reply(None, status=500), ("MISS", "MISS")),  # an error without freshness: never
        (reply("max-age=60", status=404), ("MISS", "HIT")),
        (reply("max-age=0"), ("MISS", "MISS")),
        (reply("max-age=10", age="30"), ("MISS", "MISS")),  # already stale when it arrived
        (reply("max-age=60", age="30"), ("MISS", "HIT")),
        (reply(None, expires="0"), ("MISS", "MISS")),  # invalid Expires: already expired
    ],
)
async def test_what_is_stored(policy: CachePolicy, store: Store, origin_reply: Reply, expected: tuple[str, str]) -> None:
    origin = Origin(origin_reply)
    assert await twice(policy, store, origin) == expected
    assert origin.calls == (1 if expected[1] == "HIT" else 2)


@pytest.mark.parametrize(
    ("request_cc", "expected"),
    [
        ("", "HIT"),
        ("no-cache", "MISS"),
        ("max-age=0", "MISS"),
        ("max-age=3600", "HIT"),
        ("min-fresh=3000", "MISS"),  # fresh for 60 s only
        ("min-fresh=10", "HIT"),
        ("no-store", "HIT"),  # may be served, just not stored
    ],
)
async def test_request_directives(policy: CachePolicy, store: Store, config, request_cc: str, expected: str) -> None:  # type: ignore[no-untyped-def]
    origin = Origin(reply("max-age=60"))
    await send(policy, store, make_ctx(config), origin)
    result = await send(policy, store, make_ctx(config, headers=[(CC, request_cc.encode())]), origin)
    assert result.x_cache == expected


async def test_pragma_no_cache_goes_to_the_origin(policy: CachePolicy, store: Store, config) -> None:  # type: ignore[no-untyped-def]
    origin = Origin(reply("max-age=60"))
    await send(policy, store, make_ctx(config), origin)
    result = await send(policy, store, make_ctx(config, headers=[(b"pragma", b"no-cache")]), origin)
    assert result.x_cache == "MISS" and origin.calls == 2


async def test_hit_has_age_and_no_upstream_contact(policy: CachePolicy, store: Store, config) -> None:  # type: ignore[no-untyped-def]
    origin = Origin(reply("max-age=60", age="25", etag='"v1"'))
    miss = await send(policy, store, make_ctx(config), origin)
    hit = await send(policy, store, make_ctx(config), origin)
    assert miss.header("age") == "25" and miss.x_cache == "MISS"
    assert hit.x_cache == "HIT" and int(hit.header("age") or 0) >= 25
    assert hit.body == b"hello" and hit.header("etag") == '"v1"'
    assert origin.calls == 1


async def test_query_is_part_of_the_key(policy: CachePolicy, store: Store, config) -> None:  # type: ignore[no-untyped-def]
    origin = Origin(lambda ctx: reply("max-age=60", body=ctx.query_string))
    assert (await send(policy, store, make_ctx(config, "/api/products?page=1"), origin)).body == b"page=1"
    assert (await send(policy, store, make_ctx(config, "/api/products?page=2"), origin)).body == b"page=2"
    assert (await send(policy, store, make_ctx(config, "/api/products?page=1"), origin)).x_cache == "HIT"


async def test_head_is_served_from_the_get_entry(policy: CachePolicy, store: Store, config) -> None:  # type: ignore[no-untyped-def]
    origin = Origin(reply("max-age=60"))
    head_miss = await send(policy, store, make_ctx(config, method="HEAD"), origin)
    assert head_miss.x_cache == "MISS"  # a HEAD response has no body to store
    await send(policy, store, make_ctx(config), origin)
    head = await send(policy, store, make_ctx(config, method="HEAD"), origin)
    assert head.x_cache == "HIT" and head.body == b"" and origin.calls == 2


async def test_body_is_stored_as_received(policy: CachePolicy, store: Store, config) -> None:  # type: ignore[no-untyped-def]
    body = gzip.compress(b"x" * 1000)
    origin = Origin(reply("max-age=60", body=body, content_encoding="gzip", vary="Accept-Encoding"))
    origin.reply.chunk = 100  # type: ignore[union-attr]
    headers = [(b"accept-encoding", b"gzip")]
    await send(policy, store, make_ctx(config, headers=headers), origin)
    hit = await send(policy, store, make_ctx(config, headers=headers), origin)
    assert hit.x_cache == "HIT" and hit.body == body and hit.header("content-encoding") == "gzip"


# -- Vary ----------------------------------------------------------------------------------------
async def test_vary_selects_the_variant(policy: CachePolicy, store: Store, config) -> None:  # type: ignore[no-untyped-def]
    origin = Origin(lambda ctx: reply("max-age=60", vary="Accept-Language",
                                      body=(ctx.header(b"accept-language") or b"none")))

    async def get(lang: bytes | None) -> tuple[str | None, bytes]:
        headers = [(b"accept-language", lang)] if lang is not None else []
        r = await send(policy, store, make_ctx(config, headers=headers), origin)
        return r.x_cache, r.body

    assert await get(b"en") == ("MISS", b"en")
    assert await get(b"fr") == ("MISS", b"fr")
    assert await get(b"en") == ("HIT", b"en")
    assert await get(b"fr") == ("HIT", b"fr")
    assert await get(None) == ("MISS", b"none")  # absent only matches absent
    assert await get(None) == ("HIT", b"none")
    assert origin.calls == 3


async def test_vary_compares_normalised_values(policy: CachePolicy, store: Store, config) -> None:  # type: ignore[no-untyped-def]
    # RFC 9111 §4.1: whitespace around commas never matters; case does not for fields whose
    # values are case-insensitive tokens (codings, language tags), and does for the others.
    origin = Origin(lambda ctx: reply("max-age=60", vary="Accept-Encoding, X-Token", body=b"v"))

    async def get(*headers: tuple[bytes, bytes]) -> str | None:
        return (await send(policy, store, make_ctx(config, headers=list(headers)), origin)).x_cache

    assert await get((b"accept-encoding", b"gzip, br"), (b"x-token", b"Ab")) == "MISS"
    assert await get((b"accept-encoding", b"GZIP,BR"), (b"x-token", b"Ab")) == "HIT"
    assert await get((b"accept-encoding", b"gzip"), (b"accept-encoding", b" br "), (b"x-token", b"Ab")) == "HIT"
    assert await get((b"accept-encoding", b"gzip, br"), (b"x-token", b"ab")) == "MISS"  # case-sensitive
    assert origin.calls == 2


async def test_variants_are_bounded(store: Store) -> None:
    config = cache_config(cache={"max_variants": 2})
    policy = CachePolicy.from_config(config, store)
    origin = Origin(lambda ctx: reply("max-age=60", vary="X-V", body=ctx.header(b"x-v") or b""))
    for v in (b"1", b"2", b"3"):
        await send(policy, store, make_ctx(config, headers=[(b"x-v", v)]), origin)
    assert (await send(policy, store, make_ctx(config, headers=[(b"x-v", b"3")]), origin)).x_cache == "HIT"
    assert (await send(policy, store, make_ctx(config, headers=[(b"x-v", b"1")]), origin)).x_cache == "MISS"
    assert (await policy.metrics())["entries"] == 2


# -- validation ------------------------------------------------------------------------------------
async def test_revalidation_with_304_refreshes_the_entry(policy: CachePolicy, store: Store, config) -> None:  # type: ignore[no-untyped-def]
    replies = [reply("max-age=10", age="20", etag='"v1"', x_version="1"),
               reply("max-age=60", status=304, etag='"v1"', x_version="2")]
    replies[1].body = b""
    origin = Origin(lambda ctx: replies[min(origin.calls, 1)])
    first = await send(policy, store, make_ctx(config), origin)
    assert first.x_cache == "MISS"
    second = await send(policy, store, make_ctx(config), origin)
    assert (b"if-none-match", b'"v1"') in origin.requests[1]  # revalidated with our validator
    assert second.status == 200 and second.body == b"hello" and second.x_cache == "HIT"
    assert second.header("x-version") == "2"  # stored headers refreshed by the 304
    third = await send(policy, store, make_ctx(config), origin)
    assert third.x_cache == "HIT" and origin.calls == 2  # fresh again for 60 s


async def test_client_conditional_is_answered_from_cache(policy: CachePolicy, store: Store, config) -> None:  # type: ignore[no-untyped-def]
    origin = Origin(reply("max-age=60", etag='"v1"', last_modified="Tue, 01 Jul 2025 10:00:00 GMT"))
    await send(policy, store, make_ctx(config), origin)
    r = await send(policy, store, make_ctx(config, headers=[(b"if-none-match", b'"v1"')]), origin)
    assert r.status == 304 and r.body == b"" and r.x_cache == "HIT" and r.header("etag") == '"v1"'
    r = await send(policy, store, make_ctx(config, headers=[(b"if-modified-since", b"Wed, 02 Jul 2025 10:00:00 GMT")]), origin)
    assert r.status == 304
    r = await send(policy, store, make_ctx(config, headers=[(b"if-none-match", b'"v0"')]), origin)
    assert r.status == 200 and r.body == b"hello"
    assert origin.calls == 1


async def test_a_miss_fetches_a_full_response_despite_client_validators(policy: CachePolicy, store: Store, config) -> None:  # type: ignore[no-untyped-def]
    origin = Origin(reply("max-age=60", etag='"v1"'))
    r = await send(policy, store, make_ctx(config, headers=[(b"if-none-match", b'"v1"')]), origin)
    assert r.status == 200 and not any(k == b"if-none-match" for k, _ in origin.requests[0])
    assert (await send(policy, store, make_ctx(config), origin)).x_cache == "HIT"


async def test_max_stale_and_only_if_cached(policy: CachePolicy, store: Store, config) -> None:  # type: ignore[no-untyped-def]
    origin = Origin(reply("max-age=10", age="40"))
    cold = await send(policy, store, make_ctx(config, headers=[(CC, b"only-if-cached")]), origin)
    assert cold.status == 504 and origin.calls == 0
    await send(policy, store, make_ctx(config), origin)
    stale = await send(policy, store, make_ctx(config, headers=[(CC, b"max-stale=60")]), origin)
    assert stale.x_cache == "STALE" and stale.body == b"hello" and origin.calls == 1
    too_stale = await send(policy, store, make_ctx(config, headers=[(CC, b"max-stale=5")]), origin)
    assert too_stale.x_cache == "MISS"


async def test_must_revalidate_is_never_served_stale_on_request(policy: CachePolicy, store: Store, config) -> None:  # type: ignore[no-untyped-def]
    origin = Origin(reply("max-age=10, must-revalidate", age="40", etag='"x"'))
    await send(policy, store, make_ctx(config), origin)
    r = await send(policy, store, make_ctx(config, headers=[(CC, b"max-stale")]), origin)
    assert r.x_cache != "STALE" and origin.calls == 2


# -- authenticated requests (RFC 9111 §3.5) ---------------------------------------------------------
def consumer(cid: str) -> Consumer:
    return Consumer(id=cid, tier="default", authenticated=True, rate_key="c:" + cid)


@pytest.mark.parametrize(
    ("cache_control", "b_sees_a", "anon_sees_a"),
    [
        ("max-age=60", False, False),  # not marked shareable: A's own scope only
        ("public, max-age=60", True, True),
        ("s-maxage=60", True, True),
        ("must-revalidate, max-age=60", True, True),
        ("private, max-age=60", False, False),
    ],
)
async def test_one_consumers_response_is_not_served_to_another(
        policy: CachePolicy, store: Store, config, cache_control: str, b_sees_a: bool, anon_sees_a: bool) -> None:  # type: ignore[no-untyped-def]
    origin = Origin(lambda ctx: reply(cache_control, body=(ctx.consumer.id if ctx.consumer else "anon").encode()))
    await send(policy, store, make_ctx(config, consumer=consumer("a")), origin)
    again = await send(policy, store, make_ctx(config, consumer=consumer("a")), origin)
    assert again.body == b"a"
    assert again.x_cache == ("MISS" if "private" in cache_control else "HIT")
    b = await send(policy, store, make_ctx(config, consumer=consumer("b")), origin)
    assert (b.body == b"a") is b_sees_a
    anon = await send(policy, store, make_ctx(config), origin)
    assert (anon.body == b"a") is anon_sees_a


async def test_authorization_header_scopes_like_a_consumer(policy: CachePolicy, store: Store, config) -> None:  # type: ignore[no-untyped-def]
    origin = Origin(lambda ctx: reply("max-age=60", body=ctx.header(b"authorization") or b"anon"))
    await send(policy, store, make_ctx(config, headers=[(b"authorization", b"Basic YTpi")]), origin)
    other = await send(policy, store, make_ctx(config, headers=[(b"authorization", b"Basic Yzpk")]), origin)
    assert other.body == b"Basic Yzpk" and other.x_cache == "MISS"
    anon = await send(policy, store, make_ctx(config), origin)
    assert anon.body == b"anon"
    same = await send(policy, store, make_ctx(config, headers=[(b"authorization", b"Basic YTpi")]), origin)
    assert same.x_cache == "HIT" and same.body == b"Basic YTpi"


async def test_anonymous_entries_are_not_served_to_authenticated_unless_shareable(policy: CachePolicy, store: Store, config) -> None:  # type: ignore[no-untyped-def]
    origin = Origin(lambda ctx: reply("max-age=60", body=b"auth" if ctx.consumer else b"anon"))
    await send(policy, store, make_ctx(config), origin)
    r = await send(policy, store, make_ctx(config, consumer=consumer("a")), origin)
    assert r.body == b"auth"


# -- coalescing across consumers -----------------------------------------------------------------
def twenty_consumers() -> list[dict[str, object]]:
    """make_ctx keywords of 20 consumers: ten verified (an API key), ten by an Authorization header."""
    return ([{"consumer": consumer(f"key-{i}")} for i in range(10)]
            + [{"headers": [(b"authorization", f"Bearer token-{i}".encode())]} for i in range(10)])


def requester(ctx: RequestContext) -> bytes:
    if ctx.consumer is not None:
        return ctx.consumer.id.encode()
    return ctx.header(b"authorization") or b"anonymous"


async def burst(policy: CachePolicy, store: Store, config, who: list[dict[str, object]], origin: Origin):  # type: ignore[no-untyped-def]
    await _subscribed(policy)
    return await asyncio.wait_for(asyncio.gather(*(
        send(policy, store, make_ctx(config, **kw), origin) for kw in who  # type: ignore[arg-type]
    )), 20)


async def test_a_shareable_miss_is_fetched_once_for_every_consumer(policy: CachePolicy, store: Store, config) -> None:  # type: ignore[no-untyped-def]
    origin = Origin(Reply(headers=[(CC, b"public, max-age=60")], body=b"for everyone", delay=0.3))
    results = await burst(policy, store, config, twenty_consumers(), origin)
    assert origin.calls == 1
    assert all(r.status == 200 and r.body == b"for everyone" for r in results)
    assert sum(r.x_cache == "MISS" for r in results) == 1
    assert sum(r.x_cache == "HIT" for r in results) == 19


@pytest.mark.parametrize(
    ("cache_control", "fetches"),
    [
        ("private, max-age=60", 22),  # never stored: everyone fetches for themselves
        ("max-age=60", 21),  # stored per consumer (the two anonymous requests share theirs)
    ],
)
async def test_a_per_consumer_response_is_never_served_to_the_other_waiters(
        policy: CachePolicy, store: Store, config, cache_control: str, fetches: int) -> None:  # type: ignore[no-untyped-def]
    # Twenty consumers and two anonymous requests miss together; whoever fills first, the
    # response turns out to be for one consumer only: each waiter then fetches its own.
    origin = Origin(lambda ctx: Reply(headers=[(CC, cache_control.encode())], body=b"for " + requester(ctx),
                                      delay=0.3))
    who = [*twenty_consumers(), {}, {}]
    expected = [b"for " + requester(make_ctx(config, **kw)) for kw in who]  # type: ignore[arg-type]
    results = await burst(policy, store, config, who, origin)
    assert [r.body for r in results] == expected
    assert origin.calls == fetches
    again = await burst(policy, store, config, who, origin)  # and what was stored is theirs alone
    assert [r.body for r in again] == expected
    if "private" not in cache_control:
        assert origin.calls == fetches and {r.x_cache for r in again} == {"HIT"}


async def test_a_shared_entry_that_varies_by_consumer_is_never_served_to_another(policy: CachePolicy, store: Store, config) -> None:  # type: ignore[no-untyped-def]
    # Shareable, but one variant per Authorization: each waiter finds the first fill is not its
    # variant and fetches its own at once (in parallel, not in line behind the others).
    origin = Origin(lambda ctx: Reply(headers=[(CC, b"public, max-age=60"), (b"vary", b"Authorization")],
                                      body=b"for " + requester(ctx), delay=0.3))
    who: list[dict[str, object]] = [{"headers": [(b"authorization", f"Bearer token-{i}".encode())]} for i in range(8)]
    loop = asyncio.get_running_loop()
    started = loop.time()
    results = await burst(policy, store, config, who, origin)
    took = loop.time() - started
    assert [r.body for r in results] == [f"for Bearer token-{i}".encode() for i in range(8)]
    assert origin.calls == 8
    assert took < 1.2, f"the waiters queued behind each other ({took:.2f} s)"


async def test_one_consumers_uncacheable_answer_does_not_stop_the_others_coalescing(policy: CachePolicy, store: Store, config) -> None:  # type: ignore[no-untyped-def]
    # The origin answers one consumer no-store (or a client makes it answer so): that
    # consumer's requests skip the lock for pass_ttl, nobody else's.
    def answer(ctx: RequestContext) -> Reply:
        cc = b"no-store" if requester(ctx) == b"key-0" else b"public, max-age=60"
        return Reply(headers=[(CC, cc)], body=b"for " + requester(ctx), delay=0.2)

    origin = Origin(answer)
    await _subscribed(policy)
    await send(policy, store, make_ctx(config, consumer=consumer("key-0")), origin)
    await asyncio.gather(*list(policy._tasks))  # its fill lock is back
    for _ in range(200):  # and its wake-up came by: late, it would send the burst's waiters off
        if any(outcome == "pass" for _, outcome in policy.waiters._recent.values()):
            break
        await asyncio.sleep(0.01)
    results = await burst(policy, store, config, twenty_consumers()[1:], origin)
    assert origin.calls == 2
    assert {r.body for r in results} == {results[0].body} and results[0].body != b"for key-0"


async def test_a_consumers_own_misses_still_coalesce(policy: CachePolicy, store: Store, config) -> None:  # type: ignore[no-untyped-def]
    # Four consumers, five requests each, a response stored per consumer: one fetch each.
    origin = Origin(lambda ctx: Reply(headers=[(CC, b"max-age=60")], body=b"for " + requester(ctx), delay=0.2))
    who: list[dict[str, object]] = [{"consumer": consumer(f"key-{i % 4}")} for i in range(20)]
    results = await burst(policy, store, config, who, origin)
    assert [r.body for r in results] == [f"for key-{i % 4}".encode() for i in range(20)]
    assert origin.calls == 4


# -- invalidation ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "status", "location", "invalidated"),
    [
        ("POST", 201, None, {"/api/products/1"}),
        ("PUT", 200, None, {"/api/products/1"}),
        ("DELETE", 204, None, {"/api/products/1"}),
        ("PATCH", 200, "/api/products/2", {"/api/products/1", "/api/products/2"}),
        ("POST", 201, "http://gw.test/api/products/2", {"/api/products/1", "/api/products/2"}),
        ("POST", 201, "http://elsewhere.test/api/products/2", {"/api/products/1"}),  # other origin
        ("POST", 400, None, set()),  # unsuccessful: nothing changes
        ("POST", 500, None, set()),
        # RFC 9111 §4.4: a method of unknown safety invalidates too; OPTIONS and TRACE do not
        ("M-SEARCH", 200, None, {"/api/products/1"}),
        ("PROPPATCH", 207, None, {"/api/products/1"}),
        ("OPTIONS", 200, None, set()),
        ("TRACE", 200, None, set()),
    ],
)
async def test_unsafe_methods_invalidate(policy: CachePolicy, store: Store, config, method: str, status: int,
                                         location: str | None, invalidated: set[str]) -> None:  # type: ignore[no-untyped-def]
    origin = Origin(reply("max-age=60"))
    urls = ["/api/products/1", "/api/products/2"]
    for url in urls:
        await send(policy, store, make_ctx(config, url), origin)
    extra = {"location": location} if location else {}
    write = Origin(reply(None, status=status, **extra))
    result = await send(policy, store, make_ctx(config, "/api/products/1", method=method), write)
    assert result.x_cache == "BYPASS"
    for url in urls:
        again = await send(policy, store, make_ctx(config, url), origin)
        assert (again.x_cache == "MISS") is (url in invalidated), url


async def test_a_fill_that_started_before_an_invalidation_is_not_stored(policy: CachePolicy, store: Store, config) -> None:  # type: ignore[no-untyped-def]
    origin = Origin(reply("max-age=60"))
    ctx = make_ctx(config)
    chain = PolicyChain([policy], origin, store)
    sent = await drive(chain, store, ctx, after=False)
    await send(policy, store, make_ctx(config, method="POST"), Origin(reply(None, status=204)))
    await finish(chain, ctx, sent)  # the old response is stored only now
    assert sent.status == 200
    assert (await send(policy, store, make_ctx(config), origin)).x_cache == "MISS"


# -- limits -------------------------------------------------------------------------------------
@pytest.mark.parametrize(("chunk", "content_length"), [(10, True), (10, False), (1000, True)])
async def test_streamed_bodies_are_stored_whether_or_not_their_length_is_known(
        policy: CachePolicy, store: Store, config, chunk: int, content_length: bool) -> None:  # type: ignore[no-untyped-def]
    body = bytes(range(256)) * 4
    origin = Origin(Reply(headers=[(CC, b"max-age=60")], body=body, chunk=chunk, content_length=content_length))
    first = await send(policy, store, make_ctx(config), origin)
    second = await send(policy, store, make_ctx(config), origin)
    assert first.body == body and second.body == body
    assert (first.x_cache, second.x_cache) == ("MISS", "HIT")


async def test_a_body_cut_short_is_not_stored(policy: CachePolicy, store: Store, config) -> None:  # type: ignore[no-untyped-def]
    origin = Origin(Reply(headers=[(CC, b"max-age=60"), (b"content-length", b"100")], body=b"x" * 50, chunk=10,
                          content_length=False))
    await send(policy, store, make_ctx(config), origin)
    assert (await send(policy, store, make_ctx(config), origin)).x_cache == "MISS"


@pytest.mark.parametrize("chunk", [0, 64])
async def test_large_bodies_stream_through_unstored(store: Store, chunk: int) -> None:
    config = cache_config(cache={"max_body_bytes": 100})
    policy = CachePolicy.from_config(config, store)
    body = b"x" * 1000
    origin = Origin(Reply(headers=[(CC, b"max-age=60")], body=body, chunk=chunk))
    first = await send(policy, store, make_ctx(config), origin)
    second = await send(policy, store, make_ctx(config), origin)
    assert first.body == body and second.body == body and second.x_cache == "MISS"
    assert origin.calls == 2
    assert (await policy.metrics())["too_large"] >= 1


async def test_configured_ttl_and_route_switches(store: Store) -> None:
    config = cache_config(
        cache={"ttl": 0},
        services={"products": {"url": "http://127.0.0.1:9"}, "users": {"url": "http://127.0.0.1:9"}},
        routes={"/api/products": {"service": "products", "cache": {"ttl": 30}},
                "/api/users": {"service": "users", "cache": False},
                "/api/other": "users"},
    )
    policy = CachePolicy.from_config(config, store)
    plain = Origin(reply(None))
    assert await twice_on(policy, store, config, plain, "/api/products/1") == ("MISS", "HIT")  # route ttl 30
    assert await twice_on(policy, store, config, plain, "/api/other/1") == ("MISS", "MISS")  # ttl 0
    assert await twice_on(policy, store, config, Origin(reply("max-age=60")), "/api/other/2") == ("MISS", "HIT")
    assert await twice_on(policy, store, config, Origin(reply("max-age=60")), "/api/users/1") == (None, None)


async def twice_on(policy: CachePolicy, store: Store, config, origin: Origin, url: str) -> tuple[str | None, str | None]:  # type: ignore[no-untyped-def]
    a = await send(policy, store, make_ctx(config, url), origin)
    b = await send(policy, store, make_ctx(config, url), origin)
    return a.x_cache, b.x_cache


# -- stale serving --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("stored_cc", "failure", "served"),
    [
        ("max-age=10, stale-if-error=600", Reply(status=500), "STALE"),
        ("max-age=10, stale-if-error=600", Reply(status=503), "STALE"),
        ("max-age=10", Reply(status=500), "MISS"),  # the origin answered; no stale-if-error
        ("max-age=10", Reply(failure="connect"), "STALE"),  # disconnected
        ("max-age=10", Reply(failure="timeout"), "STALE"),
        ("max-age=10", Reply(breaker_open=True), "STALE"),  # the breaker answered 503 for it
        ("max-age=10, must-revalidate", Reply(breaker_open=True), "MISS"),
        ("s-maxage=10", Reply(failure="connect"), "MISS"),
        ("max-age=10, stale-if-error=5", Reply(status=500), "MISS"),  # 30 s stale > 5 s
    ],
)
async def test_stale_if_error(policy: CachePolicy, store: Store, config, stored_cc: str, failure: Reply, served: str) -> None:  # type: ignore[no-untyped-def]
    await send(policy, store, make_ctx(config), Origin(reply(stored_cc, age="40", etag='"e"')))
    result = await send(policy, store, make_ctx(config), Origin(failure))
    assert result.x_cache == served
    if served == "STALE":
        assert result.status == 200 and result.body == b"hello"
    else:
        assert result.status >= 500


async def test_stale_while_revalidate_refreshes_once_in_the_background(policy: CachePolicy, store: Store, config) -> None:  # type: ignore[no-untyped-def]
    versions = iter([b"v1", b"v2", b"v3"])
    origin = Origin(lambda ctx: reply("max-age=10, stale-while-revalidate=600", age="20", body=next(versions)))
    await send(policy, store, make_ctx(config), origin)
    stale = await asyncio.gather(*(send(policy, store, make_ctx(config), origin) for _ in range(5)))
    assert {r.x_cache for r in stale} == {"STALE"} and {r.body for r in stale} == {b"v1"}
    await asyncio.gather(*list(policy._tasks))
    assert origin.calls == 2  # one background refresh, not five
    after = await send(policy, store, make_ctx(config), origin)
    assert after.body == b"v2"


# -- the fill lock of an uncacheable response ---------------------------------------------------
async def _subscribed(policy: CachePolicy) -> None:
    for _ in range(200):
        if policy.waiters.subscribed:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the fill subscription did not come up")


@pytest.mark.parametrize(
    ("cache_control", "content_length"),
    [
        ("no-store", True),
        ("private, max-age=60", True),  # to an anonymous request
        ("max-age=60", True),  # its Content-Length is over max_body_bytes
        ("max-age=60", False),  # chunked: outgrows max_body_bytes after 4 of its 20 chunks
    ],
)
async def test_an_uncacheable_response_gives_its_fill_back_at_the_head(
        store: Store, cache_control: str, content_length: bool) -> None:
    # Known uncacheable from the head (or once a chunked body outgrew the limit): the fill lock
    # goes back then ('pass': the next requests go straight to the origin), not once the slow
    # body has ended, and only once.
    config = cache_config(cache={"max_body_bytes": 300})
    policy = CachePolicy.from_config(config, store)
    await policy.start()
    released: list[tuple[str, str]] = []
    release = policy.cache.release

    async def counted(key, token: str, outcome: str, **kw) -> None:  # type: ignore[no-untyped-def]
        released.append((token, outcome))
        await release(key, token, outcome, **kw)

    policy.cache.release = counted  # type: ignore[method-assign]
    body = bytes(range(100)) * 20  # 2000 bytes in 20 chunks, 50 ms apart: about 1 s

    def answer(ctx: RequestContext) -> Reply:
        slow = origin.calls == 0
        return Reply(headers=[(CC, cache_control.encode())], body=body if slow else b"quick",
                     chunk=100 if slow else 0, chunk_delay=0.05, content_length=content_length)

    origin = Origin(answer)
    try:
        await _subscribed(policy)
        loop = asyncio.get_running_loop()
        first = asyncio.create_task(send(policy, store, make_ctx(config), origin))
        for _ in range(400):
            if origin.calls:
                break
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.1)  # the first body streams
        started = loop.time()
        second = await asyncio.wait_for(send(policy, store, make_ctx(config), origin), 5)
        took = loop.time() - started
        assert took < 0.5, f"the second request waited {took:.2f} s for the first body"
        assert not first.done(), "the first body should still be streaming"
        assert second.status == 200 and second.body == b"quick"
        assert (await first).body == body
        await asyncio.gather(*list(policy._tasks))
        assert origin.calls == 2
        assert [outcome for token, outcome in released if token] == ["pass"]  # once, by the holder
    finally:
        await policy.close()


# -- store failures ----------------------------------------------------------------------------
async def test_store_down_bypasses(policy: CachePolicy, store: Store, config) -> None:  # type: ignore[no-untyped-def]
    origin = Origin(reply("max-age=60"))
    await send(policy, store, make_ctx(config), origin)
    store.available = False  # known down: calls fail at once with StoreUnavailable
    try:
        r = await send(policy, store, make_ctx(config), origin)
        assert r.status == 200 and r.x_cache == "BYPASS" and r.body == b"hello"
        metrics = await policy.metrics()
        assert metrics["bypass"] == 1 and metrics["entries"] is None
    finally:
        store.available = True
    assert StoreUnavailable  # the error the core's store raises


# -- purge --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ([], 401),  # no key: admin-key-required
        ([(b"x-api-key", b"wrong")], 401),  # identity: not a valid key at all
        ([(b"x-api-key", b"consumer-key")], 403),  # a consumer's key is not an admin's
        ([(b"x-api-key", ADMIN_KEY.encode())], 200),
        ([(b"authorization", b"Bearer " + ADMIN_KEY.encode())], 200),
    ],
)
async def test_purge_method(policy: CachePolicy, store: Store, headers, status: int) -> None:  # type: ignore[no-untyped-def]
    # Identity decides who may purge (an admin key marks the caller admin), the cache obeys.
    config = cache_config(auth={
        "admin_keys_sha256": [hashlib.sha256(ADMIN_KEY.encode()).hexdigest()],
        "consumers": [{"id": "c1", "tier": "default",
                       "key_sha256": hashlib.sha256(b"consumer-key").hexdigest()}]})
    identity = IdentityPolicy.from_config(config)
    origin = Origin(reply("max-age=60"))

    async def through(ctx):  # type: ignore[no-untyped-def]
        return await drive([identity, policy], store, ctx, origin)

    await through(make_ctx(config))
    r = await through(make_ctx(config, method="PURGE", headers=headers))
    assert r.status == status
    if status != 200:
        assert r.header("content-type") == "application/problem+json"
    after = await through(make_ctx(config))
    assert after.header("x-cache") == ("MISS" if status == 200 else "HIT")
    assert origin.calls == (2 if status == 200 else 1)


async def test_a_fill_that_looked_up_before_a_purge_is_not_stored(policy: CachePolicy, store: Store, config) -> None:  # type: ignore[no-untyped-def]
    # The miss looks up, the origin takes its time, a purge lands meanwhile: the response the
    # origin gave before the purge must not be stored after it.
    slow = Origin(Reply(headers=[(b"cache-control", b"max-age=60")], delay=0.3))
    miss = asyncio.create_task(send(policy, store, make_ctx(config), slow))
    await asyncio.sleep(0.1)
    assert await policy.purge(url="/api/products/1") == 0
    assert (await miss).x_cache == "MISS"
    origin = Origin(reply("max-age=60"))
    assert (await send(policy, store, make_ctx(config), origin)).x_cache == "MISS"
    assert origin.calls == 1


async def test_a_fill_right_after_a_purge_is_stored(policy: CachePolicy, store: Store, config) -> None:  # type: ignore[no-untyped-def]
    # Lookups and invalidations are ordered by the Redis clock in microseconds: a GET that
    # follows a purge within the same millisecond still fills the cache.
    origin = Origin(reply("max-age=60"))
    for _ in range(20):
        await send(policy, store, make_ctx(config), origin)
        assert await policy.purge(url="/api/products/1") == 1
    assert origin.calls == 20
    assert (await send(policy, store, make_ctx(config), origin)).x_cache == "MISS"
    assert (await send(policy, store, make_ctx(config), origin)).x_cache == "HIT"


async def test_purge_by_prefix(policy: CachePolicy, store: Store, config) -> None:  # type: ignore[no-untyped-def]
    origin = Origin(reply("max-age=60"))
    urls = ["/api/products", "/api/products/1", "/api/products/1/reviews", "/api/products?page=2"]
    for url in urls:
        await send(policy, store, make_ctx(config, url), origin)
    assert (await policy.metrics())["entries"] == 4
    assert await policy.purge(prefix="/api/products/1") == 2
    assert (await send(policy, store, make_ctx(config, "/api/products/1"), origin)).x_cache == "MISS"
    assert (await send(policy, store, make_ctx(config, "/api/products"), origin)).x_cache == "HIT"
    assert await policy.purge(prefix="/api") == 3  # the two left, plus the refetched one
    assert (await policy.metrics())["entries"] == 0


async def test_metrics_count_size_and_outcomes(policy: CachePolicy, store: Store, config) -> None:  # type: ignore[no-untyped-def]
    origin = Origin(reply("max-age=60", body=b"x" * 50))
    await twice(policy, store, origin)
    m = await policy.metrics()
    assert m["entries"] == 1 and m["bytes"] > 50 and m["hits"] == 1 and m["misses"] == 1


@pytest.mark.parametrize(("heuristic", "hit"), [(None, False), ({"fraction": 0.1, "max": 3600}, True)])
async def test_the_configured_heuristic_gives_a_last_modified_response_its_lifetime(
        store: Store, heuristic: dict | None, hit: bool) -> None:
    from email.utils import formatdate

    config = cache_config(cache={"ttl": 300, **({"heuristic": heuristic} if heuristic else {})})
    policy = CachePolicy.from_config(config, store)
    ten_days_ago = formatdate(time.time() - 10 * 86400, usegmt=True)
    origin = Origin(reply(None, last_modified=ten_days_ago))  # no explicit freshness
    await send(policy, store, make_ctx(config), origin)
    # Fresh for at least 1000 more seconds? Only with the heuristic (min(3600, 1 day)), not the
    # fixed ttl (300).
    again = await send(policy, store, make_ctx(config, headers=[(b"cache-control", b"min-fresh=1000")]), origin)
    assert (again.x_cache == "HIT") is hit


async def test_an_explicitly_fresh_error_is_stored_and_served(policy: CachePolicy, store: Store, config) -> None:  # type: ignore[no-untyped-def]
    origin = Origin(reply("max-age=60", status=503, body=b"maintenance"))
    assert await twice(policy, store, origin) == ("MISS", "HIT")
    unmarked = Origin(reply(None, status=503, body=b"down"))
    assert await twice(policy, store, unmarked, "/api/products/2") == ("MISS", "MISS")
