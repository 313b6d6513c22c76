"""Redis unavailable: each replica falls back to its own breaker and re-syncs when it is back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest

from gateway.breaker import CircuitBreakerPolicy
from gateway.store import Store, StoreUnavailable, embedded_store, redis_store
from tests.breaker.conftest import ORDERS, FakeUpstream, Replica, breaker_config


@pytest.fixture
async def pair():
    """Two replicas on one embedded store whose availability the test switches by hand."""
    store = embedded_store()
    config = breaker_config(timeout=0.3)
    replicas = [Replica(config, store, CircuitBreakerPolicy.from_config(config, store),
                        FakeUpstream()) for _ in range(2)]
    yield replicas
    for r in replicas:
        await r.policy.close()
    await store.close()


async def _until(condition: Callable[[], bool], what: str, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen within {seconds} s"
        await asyncio.sleep(0.01)


class Flapping:
    """An embedded store that goes down and comes back the way a real one does: `down()` marks
    it down (the policies are told, the store's probe starts), the probe's ping fails until
    `up()`; `up()` returns once the probe saw it back and every policy's resync has run."""

    def __init__(self, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
        self.store = store
        self.answers = True
        store.probe_interval = 0.01

        async def ping() -> bool:
            return self.answers

        monkeypatch.setattr(store, "ping", ping)

    def down(self) -> None:
        self.answers = False
        self.store.mark_down(StoreUnavailable("flap"))
        assert not self.store.available

    async def up(self, *replicas: Replica) -> None:
        self.answers = True
        await _until(lambda: self.store.available
                     and not any(r.policy.resyncing for r in replicas), "the store's return")


@pytest.fixture
async def flapping(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[Flapping, Replica, Replica]]:
    """Two replicas on one embedded store that flaps; breakers open for 1 s."""
    store = embedded_store()
    config = breaker_config(timeout=1.0)
    replicas = [Replica(config, store, CircuitBreakerPolicy.from_config(config, store),
                        FakeUpstream()) for _ in range(2)]
    yield Flapping(store, monkeypatch), replicas[0], replicas[1]
    for r in replicas:
        await r.policy.close()
    await store.close()


async def test_an_open_breaker_stays_open_through_an_outage(pair):
    a, _ = pair
    a.upstream.set(ORDERS, 500)
    await a.requests(3)
    assert (await a.request())[0].status == 503  # a saw the shared state: open
    a.store.available = False
    response, ctx = await a.request()
    assert response.status == 503 and ctx.breaker_state == "open"
    assert a.upstream.count() == 3
    await asyncio.sleep(0.35)
    a.upstream.set(ORDERS, "ok")
    assert (await a.request())[1].breaker_state == "half-open"  # a local probe
    assert (await a.request())[1].breaker_state == "closed"


async def test_failures_during_an_outage_open_it_locally_and_are_pushed_when_back(pair):
    a, b = pair
    a.store.available = False
    a.upstream.set(ORDERS, "timeout")
    await a.requests(3)
    assert (await a.request())[0].status == 503
    assert a.upstream.count() == 3
    a.store.available = True
    await a.policy.resync()  # what the store's "back" notification runs
    assert a.policy.local.opens(), "the local state is kept for a next outage"
    response, _ = await b.request()  # b never saw a failure itself
    assert response.status == 503 and b.upstream.count() == 0
    metrics = await b.policy.metrics()
    last = metrics["services"]["orders"]["targets"][ORDERS]["last_transition"]
    assert last["to"] == "open" and "store was down" in last["reason"]


async def test_outcomes_that_cannot_be_stored_count_locally(pair):
    a, _ = pair
    a.upstream.set(ORDERS, 500)
    for _ in range(3):
        await a.request(flush=False)  # admitted through the shared state
    a.store.available = False  # the flush fails: the local breaker counts them
    await a.policy.flush()
    response, _ = await a.request()
    assert response.status == 503


async def test_a_second_outage_starts_from_the_latest_shared_state(pair):
    """The local state outlives an outage, but what the cluster learned since wins over it.

    Before #12 going down cleared the local breaker and reseeded it from the last shared view;
    now it is kept and merged with that view (open beats closed, the later end of an open wins).
    Here a's local breaker only knows "closed" from the first outage, while the shared state,
    read later, says b opened it: the newer open wins, so a rejects without a request."""
    a, b = pair
    a.store.mark_down(StoreUnavailable("first outage"))  # notifies the policies
    a.store._probe_task.cancel()
    await a.request()  # served by the local breaker: closed
    a.store.available = True
    await a.policy.resync()
    b.upstream.set(ORDERS, 500)
    await b.requests(3)  # opened through b while the store is up
    await a.request()  # a reads the shared state: open
    a.store.mark_down(StoreUnavailable("second outage"))
    a.store._probe_task.cancel()
    response, _ = await a.request()
    assert response.status == 503 and a.upstream.count() == 1  # only the first outage's


@pytest.mark.redis
async def test_redis_killed_and_restarted(redis_server, caplog):
    config = breaker_config(timeout=30)
    stores = [redis_store(redis_server.url, timeout=0.2, probe_interval=0.1) for _ in range(2)]
    a, b = (Replica(config, s, CircuitBreakerPolicy.from_config(config, s), FakeUpstream())
            for s in stores)
    try:
        assert (await a.request())[0].status == 200
        redis_server.kill()
        a.upstream.set(ORDERS, "connect")
        statuses = await a.requests(4)
        assert statuses == [502, 502, 502, 503]  # never a 500, opened on local evidence
        assert (await a.policy.metrics())["source"] == "local"
        redis_server.start()  # an empty Redis
        await _until(lambda: a.store.available and not a.policy.resyncing, "the resync")
        response, _ = await b.request()
        assert response.status == 503 and b.upstream.count() == 0
        assert (await b.policy.metrics())["source"] == "redis"
    finally:
        for r in (a, b):
            await r.policy.close()
            await r.store.close()


@pytest.mark.parametrize("reads_while_up", [0, 2])
async def test_a_flap_costs_no_more_requests_against_a_dead_origin(flapping, reads_while_up):
    """Origin dead, store down: the local breaker opens after failure_threshold (3) failures.
    The store comes back briefly (the local open is pushed to the shared state) and goes down
    again: the origin sees no request more while the open time runs, then exactly
    half_open_max_calls (1) probe. With no read while the store was up, the replica's last
    shared view is from before the first outage ("closed"): it must not win over the newer
    local open (before #12 the second outage reseeded from it: 3 more requests)."""
    store, a, b = flapping
    assert (await a.request())[0].status == 200  # a has read the shared state: closed
    a.upstream.set(ORDERS, "connect")
    store.down()
    assert await a.requests(4) == [502, 502, 502, 503]
    opened = time.monotonic()
    assert a.upstream.count() == 4
    await store.up(a, b)
    for _ in range(reads_while_up):
        response, ctx = await a.request()
        assert response.status == 503 and ctx.breaker_state == "open"
    response, _ = await b.request()  # b learns it from the shared state
    assert response.status == 503 and b.upstream.count() == 0
    store.down()  # the flap
    statuses = await a.requests(5)
    assert time.monotonic() - opened < 1.0, "too slow: the open time ran out during the checks"
    assert statuses == [503] * 5 and a.upstream.count() == 4
    assert (await a.policy.metrics())["source"] == "local"
    # The open time runs out: one local probe at a time, the others wait.
    await asyncio.sleep(max(0.0, opened + 1.05 - time.monotonic()))
    a.upstream.set(ORDERS, "hold")
    sent = [asyncio.ensure_future(a.request()) for _ in range(4)]
    await _until(lambda: a.upstream.count() == 5, "the probe")
    await asyncio.sleep(0.02)
    a.upstream.release.set()
    results = await asyncio.gather(*sent)
    assert sorted(ctx.breaker_state for _, ctx in results) == ["half-open"] * 4
    assert a.upstream.count() == 5  # exactly one probe reached the origin
    assert (await a.request())[1].breaker_state == "closed"  # the probe succeeded


async def test_a_flap_does_not_reset_the_failure_count(flapping):
    """Two failures during an outage, a short return with no request, one more failure in the
    next outage: that is three in a row, the breaker opens."""
    store, a, _ = flapping
    await a.request()
    a.upstream.set(ORDERS, 500)
    store.down()
    assert await a.requests(2) == [500, 500]
    await store.up(a)
    store.down()
    assert await a.requests(2) == [500, 503]
    assert a.upstream.count() == 4


async def test_a_breaker_closed_in_the_shared_state_is_not_reopened_by_an_old_local_open(pair):
    """The reverse: a's local breaker opened during an outage; after the store came back the
    cluster probed the target and closed it, and a read that. In the next outage a's old local
    open (its open time long over) must not win: a closed state seen after an open ran out is
    newer knowledge."""
    a, b = pair  # open for 0.3 s
    a.store.available = False
    a.upstream.set(ORDERS, "reset")
    await a.requests(3)
    assert (await a.request())[0].status == 503
    a.store.available = True
    await a.policy.resync()
    await asyncio.sleep(0.35)
    assert (await b.request())[1].breaker_state == "half-open"  # b's probe succeeds: closed
    a.upstream.set(ORDERS, "ok")
    assert (await a.request())[1].breaker_state == "closed"  # a reads "closed"
    a.store.available = False
    response, ctx = await a.request()
    assert response.status == 200 and ctx.breaker_state == "closed"
    assert (await a.policy.metrics())["source"] == "local"
    assert (await a.policy.metrics())["services"]["orders"]["state"] == "closed"


async def test_requests_wait_for_the_local_opens_to_be_pushed(flapping, monkeypatch):
    """Between the store's return and the end of the resync a request reads nothing shared (it
    would say closed for a target a knows dead): the local breaker answers."""
    store, a, _ = flapping
    await a.request()
    a.upstream.set(ORDERS, "timeout")
    store.down()
    await a.requests(3)
    merging, go_on = asyncio.Event(), asyncio.Event()
    merge_open = a.policy.shared.merge_open

    async def slow_merge(*args):
        merging.set()
        await go_on.wait()
        return await merge_open(*args)

    monkeypatch.setattr(a.policy.shared, "merge_open", slow_merge)
    store.answers = True
    await asyncio.wait_for(merging.wait(), 5)  # the store is back, the resync under way
    assert store.store.available and a.policy.resyncing
    response, ctx = await a.request()
    assert response.status == 503 and ctx.breaker_state == "open"
    go_on.set()
    await store.up(a)
    assert (await a.request())[0].status == 503 and a.upstream.count() == 4


@pytest.mark.redis
@pytest.mark.parametrize("reads_while_up", [0, 1])
async def test_redis_flapping_costs_no_more_requests_against_a_dead_origin(redis_server,
                                                                          reads_while_up):
    """The flap on a real redis-server: killed, restarted (empty), killed again."""
    config = breaker_config(timeout=30)
    store = redis_store(redis_server.url, timeout=0.2, probe_interval=0.05)
    a = Replica(config, store, CircuitBreakerPolicy.from_config(config, store), FakeUpstream())
    try:
        assert (await a.request())[0].status == 200
        a.upstream.set(ORDERS, "connect")
        redis_server.kill()
        assert await a.requests(4) == [502, 502, 502, 503]
        assert a.upstream.count() == 4
        redis_server.start()  # an empty Redis: only the merge tells it about the open breaker
        await _until(lambda: store.available and not a.policy.resyncing, "the resync")
        state = redis_server.command("HGET", f"gw:cb:{{orders}}:s:{ORDERS}", "state")
        assert state == "open"
        for _ in range(reads_while_up):
            assert (await a.request())[0].status == 503
        redis_server.kill()  # down again
        assert await a.requests(5) == [503] * 5
        assert a.upstream.count() == 4
        assert (await a.policy.metrics())["source"] == "local"
    finally:
        if not redis_server.alive():
            redis_server.start()
        await a.policy.close()
        await store.close()
