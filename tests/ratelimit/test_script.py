"""lua/ratelimit.lua on fakeredis and on a real redis-server: limits, atomicity, exactness."""

from __future__ import annotations

import asyncio
import time

import pytest

from gateway.ratelimit.windows import Decision, WindowSpec, parse_reply, script_args
from gateway.store import Store

LOG = "sliding_log"
COUNTER = "sliding_window"


async def check(store: Store, specs: list[WindowSpec], rate_key: str = "c:alice") -> Decision:
    keys = [s.key("test", rate_key) for s in specs]
    reply = await store.eval(store.script("ratelimit"), keys, script_args(specs))
    return parse_reply(specs, reply)


def spec(algorithm: str, limit: int, window: float, name: str = "w") -> WindowSpec:
    return WindowSpec(name, "t", algorithm, limit, window)


@pytest.mark.parametrize("algorithm", [LOG, COUNTER])
async def test_admits_the_limit_then_refuses(store: Store, algorithm: str) -> None:
    windows = [spec(algorithm, 5, 60)]
    seen = [await check(store, windows) for _ in range(7)]
    assert [d.admitted for d in seen] == [True] * 5 + [False] * 2
    assert [d.windows[0].remaining for d in seen[:5]] == [4, 3, 2, 1, 0]
    refused = seen[-1]
    assert refused.windows[0].remaining == 0
    # The weighted counter waits for the full bucket to fade, which may take past one window.
    assert 1 <= refused.retry_after <= (60 if algorithm == LOG else 120)


@pytest.mark.parametrize("algorithm", [LOG, COUNTER])
async def test_consumers_are_counted_apart(store: Store, algorithm: str) -> None:
    windows = [spec(algorithm, 1, 60)]
    assert (await check(store, windows, "c:alice")).admitted
    assert (await check(store, windows, "c:bob")).admitted
    assert not (await check(store, windows, "c:alice")).admitted


@pytest.mark.parametrize("algorithm", [LOG, COUNTER])
async def test_a_refusal_consumes_nothing_in_any_window(store: Store, algorithm: str) -> None:
    tight, wide = spec(algorithm, 2, 60, "tight"), spec(algorithm, 10, 3600, "wide")
    for _ in range(2):
        assert (await check(store, [tight, wide])).admitted
    for _ in range(5):
        refused = await check(store, [tight, wide])
        assert not refused.admitted
        assert [w.allowed for w in refused.windows] == [False, True]
        assert refused.windows[1].remaining == 8  # the refused requests did not count
    # The wide window alone still has exactly 8 left.
    alone = [await check(store, [wide]) for _ in range(9)]
    assert [d.admitted for d in alone] == [True] * 8 + [False]


@pytest.mark.parametrize("algorithm", [LOG, COUNTER])
async def test_quota_comes_back_after_the_window(store: Store, algorithm: str) -> None:
    windows = [spec(algorithm, 3, 0.5)]
    assert all([(await check(store, windows)).admitted for _ in range(3)])
    refused = await check(store, windows)
    assert not refused.admitted and refused.windows[0].reset <= 1.0
    await asyncio.sleep(1.05)  # the sliding counter needs the previous bucket to fade too
    assert (await check(store, windows)).admitted


@pytest.mark.parametrize("algorithm", [LOG, COUNTER])
async def test_300_concurrent_requests_against_50_admit_exactly_50(
    store: Store, algorithm: str
) -> None:
    windows = [spec(algorithm, 50, 60)]
    results = await asyncio.gather(*(check(store, windows) for _ in range(300)))
    assert sum(d.admitted for d in results) == 50


async def test_sliding_log_never_admits_more_than_the_limit_in_any_rolling_window(
    store: Store,
) -> None:
    limit, window = 10, 0.4
    windows = [spec(LOG, limit, window)]
    admitted: list[tuple[float, float]] = []  # (sent, answered): the server's clock is in between
    deadline = time.monotonic() + 1.6
    while time.monotonic() < deadline:
        sent = time.monotonic()
        decision = await check(store, windows)
        answered = time.monotonic()
        if decision.admitted:
            admitted.append((sent, answered))
        await asyncio.sleep(0.004)
    assert len(admitted) >= 3 * limit  # the run covered several windows
    # If limit+1 admissions fit inside one window, the (i+limit)-th was answered less than a
    # window after the i-th was sent: that would be a violation whatever the clock jitter.
    for i in range(len(admitted) - limit):
        assert admitted[i + limit][1] - admitted[i][0] >= window * 0.999


async def test_every_key_of_one_call_shares_the_consumers_hash_tag() -> None:
    windows = [spec(LOG, 1, 1), spec(COUNTER, 1, 60), WindowSpec("r", "r/api/orders", LOG, 1, 60)]
    keys = [w.key("gw", "c:we{ird}") for w in windows]
    tags = {k[k.index("{") + 1 : k.index("}")] for k in keys}
    assert len(tags) == 1 and "{" not in tags.pop()


async def test_a_counter_key_lives_through_the_next_bucket_and_its_ttl_is_set_once_per_bucket(
        store: Store) -> None:
    window = spec(COUNTER, 100, 2.0)
    key = window.key("test", "c:ttl")
    # Start right after a bucket boundary so that the three requests below share one bucket.
    await asyncio.sleep(2.0 - (time.time() % 2.0) + 0.02)
    await check(store, [window], "c:ttl")
    first = await store.call("PTTL", key)
    assert 4000 < first <= 5000  # this bucket and the next (where it counts as previous)
    await asyncio.sleep(0.3)
    await check(store, [window], "c:ttl")
    await check(store, [window], "c:ttl")
    assert await store.call("PTTL", key) <= first - 250  # not set again inside the bucket
    await asyncio.sleep(2.0 - (time.time() % 2.0) + 0.02)  # the next bucket
    await check(store, [window], "c:ttl")
    assert await store.call("PTTL", key) > 4000  # its first request set it anew
