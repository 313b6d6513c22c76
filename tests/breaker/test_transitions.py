"""Every transition of the breaker, on each backend: fakeredis, the local fallback, real Redis."""

from __future__ import annotations

import asyncio
import json
import logging

from gateway.breaker.state import BreakerState
from gateway.config import parse_config
from tests.breaker.conftest import ORDERS, USERS_A, USERS_B, FakeUpstream

OPEN_WAIT = 0.35  # a little more than the 0.3 s open time / lease of breaker_config()


async def test_consecutive_failures_open_it_and_open_answers_without_the_upstream(make_replica):
    gw = await make_replica()
    gw.upstream.set(ORDERS, 500)
    assert await gw.requests(2) == [500, 500]
    response, ctx = await gw.request()
    assert response.status == 500 and ctx.breaker_state == "closed"
    assert gw.upstream.count(ORDERS) == 3

    response, ctx = await gw.request()
    assert response.status == 503
    assert gw.upstream.count(ORDERS) == 3  # no upstream attempt
    assert response.header(b"content-type") == b"application/problem+json"
    assert response.header(b"x-circuit-state") == b"open"
    assert response.header(b"retry-after") == b"1"  # 0.3 s left, rounded up, at least 1
    body = json.loads(response.body)
    assert body["status"] == 503 and "circuit breaker is open" in body["detail"]
    assert ctx.breaker_state == "open" and ctx.breaker_rejected is True


async def test_retry_after_is_the_remaining_open_time(make_replica):
    gw = await make_replica(timeout=30)
    gw.upstream.set(ORDERS, "connect")
    await gw.requests(3)
    response, _ = await gw.request()
    assert response.header(b"retry-after") in (b"30", b"29")


async def test_a_success_resets_the_consecutive_count(make_replica):
    gw = await make_replica()
    for how in (500, 500, "ok", 500, 500, "ok", 500, 500):
        gw.upstream.set(ORDERS, how)
        await gw.request()
    # Never three failures in a row (the threshold) so far: still closed, this one goes through.
    response, ctx = await gw.request()
    assert response.status == 500 and ctx.breaker_state == "closed"
    assert gw.upstream.count(ORDERS) == 9
    # That was the third in a row: open, the next is refused without an upstream attempt.
    refused, _ = await gw.request()
    assert refused.status == 503 and gw.upstream.count(ORDERS) == 9


async def test_what_counts_as_failure(make_replica):
    gw = await make_replica(failure_statuses=[502, 503])
    # 4xx, a status outside failure_statuses and a client that went away never count
    for how in (404, 429, 500, "disconnect", 404, 500, "disconnect"):
        gw.upstream.set(ORDERS, how)
        await gw.request()
    assert (await gw.request())[1].breaker_state == "closed"
    # connect, reset, timeout and configured statuses do
    for how in ("connect", "reset", "timeout"):
        gw.upstream.set(ORDERS, how)
        await gw.request()
    assert (await gw.request())[0].status == 503
    gw2 = await make_replica(failure_statuses=[502, 503])
    if gw2.store is gw.store:
        return
    for how in (502, 503, 502):
        gw2.upstream.set(ORDERS, how)
        await gw2.request()
    assert (await gw2.request())[0].status == 503


async def test_half_open_probe_success_closes_it(make_replica, caplog):
    gw = await make_replica()
    gw.upstream.set(ORDERS, 500)
    await gw.requests(3)
    await asyncio.sleep(OPEN_WAIT)
    gw.upstream.set(ORDERS, "ok")
    caplog.set_level(logging.INFO, logger="gateway.breaker")
    response, ctx = await gw.request()
    assert response.status == 200 and ctx.breaker_state == "half-open"
    assert (await gw.request())[1].breaker_state == "closed"
    moves = [(r.from_state, r.to_state) for r in caplog.records if hasattr(r, "to_state")]
    assert moves == [("closed", "open"), ("open", "half-open"), ("half-open", "closed")]


async def test_half_open_probe_failure_reopens_it(make_replica):
    gw = await make_replica()
    gw.upstream.set(ORDERS, 500)
    await gw.requests(3)
    await asyncio.sleep(OPEN_WAIT)
    response, ctx = await gw.request()
    assert response.status == 500 and ctx.breaker_state == "half-open"
    response, ctx = await gw.request()
    assert response.status == 503 and ctx.breaker_state == "open"
    assert gw.upstream.count(ORDERS) == 4


async def test_only_half_open_max_calls_probes_run_at_once(make_replica):
    gw = await make_replica(half_open_max_calls=2, timeout=0.2, half_open_timeout=5)
    gw.upstream.set(ORDERS, 500)
    await gw.requests(3)
    await asyncio.sleep(0.25)
    gw.upstream.set(ORDERS, "hold")
    tasks = [asyncio.create_task(gw.request()) for _ in range(10)]
    await asyncio.sleep(0.1)
    done = [t for t in tasks if t.done()]
    assert len(done) == 8
    for t in done:
        response, ctx = t.result()
        assert response.status == 503
        assert response.header(b"x-circuit-state") == b"half-open"
        assert ctx.breaker_state == "half-open" and ctx.breaker_rejected
    assert gw.upstream.count(ORDERS) == 3 + 2
    gw.upstream.release.set()
    results = await asyncio.gather(*tasks)
    assert sorted(r.status for r, _ in results) == [200, 200] + [503] * 8


async def test_success_threshold_needs_that_many_probe_successes(make_replica):
    gw = await make_replica(success_threshold=2)
    gw.upstream.set(ORDERS, 500)
    await gw.requests(3)
    await asyncio.sleep(OPEN_WAIT)
    gw.upstream.set(ORDERS, "ok")
    assert (await gw.request())[1].breaker_state == "half-open"
    assert (await gw.request())[1].breaker_state == "half-open"
    assert (await gw.request())[1].breaker_state == "closed"


async def test_an_unreported_probe_lease_expires(make_replica):
    gw = await make_replica(timeout=0.2, half_open_timeout=0.3)
    gw.upstream.set(ORDERS, 500)
    await gw.requests(3)
    await asyncio.sleep(0.25)
    gw.upstream.set(ORDERS, "ok")
    _, ctx = await gw.request(record=False)  # the replica holding the lease "crashed"
    assert ctx.breaker_state == "half-open"
    response, _ = await gw.request()
    assert response.status == 503 and response.header(b"x-circuit-state") == b"half-open"
    await asyncio.sleep(OPEN_WAIT)
    response, ctx = await gw.request()
    assert response.status == 200 and ctx.breaker_state == "half-open"
    assert (await gw.request())[1].breaker_state == "closed"


async def test_a_probe_whose_client_left_gives_its_lease_back(make_replica):
    gw = await make_replica(half_open_timeout=30)
    gw.upstream.set(ORDERS, 500)
    await gw.requests(3)
    await asyncio.sleep(OPEN_WAIT)
    gw.upstream.set(ORDERS, "disconnect")
    assert (await gw.request())[1].breaker_state == "half-open"
    gw.upstream.set(ORDERS, "ok")
    response, ctx = await gw.request()  # no 30 s wait for the lease
    assert response.status == 200 and ctx.breaker_state == "half-open"


async def test_error_ratio_mode(make_replica):
    gw = await make_replica(mode="error_ratio", error_ratio={"threshold": 0.5, "window": 5,
                                                            "min_requests": 10})
    # 9 failures are below min_requests: still closed, however bad the ratio
    gw.upstream.set(ORDERS, 500)
    await gw.requests(9)
    assert (await gw.request())[1].breaker_state == "closed"  # 10th request, the 10th failure
    assert (await gw.request())[0].status == 503


async def test_error_ratio_below_the_threshold_stays_closed(make_replica):
    gw = await make_replica(mode="error_ratio", error_ratio={"threshold": 0.5, "window": 5,
                                                            "min_requests": 4})
    for how in ["ok", "ok", 500] * 6:  # ratio 1/3 with long failure-free stretches
        gw.upstream.set(ORDERS, how)
        await gw.request()
    for how in (500, 500, 500, 500, 500, 500):  # ratio climbs to 12/24 = 0.5
        gw.upstream.set(ORDERS, how)
        await gw.request()
    assert (await gw.request())[0].status == 503


async def test_error_ratio_window_forgets_old_failures(make_replica):
    gw = await make_replica(mode="error_ratio", error_ratio={"threshold": 0.5, "window": 0.3,
                                                            "min_requests": 4})
    gw.upstream.set(ORDERS, 500)
    await gw.requests(3)
    await asyncio.sleep(0.4)
    gw.upstream.set(ORDERS, "ok")
    await gw.requests(2)
    gw.upstream.set(ORDERS, 500)
    await gw.request()  # 1 of 3 in the window: closed
    assert (await gw.request())[1].breaker_state == "closed"


async def test_each_target_has_its_own_breaker(make_replica):
    gw = await make_replica()
    gw.upstream.set(USERS_A, 500)
    await gw.requests(6, "users")  # round-robin: 3 failures on A
    for _ in range(4):
        response, ctx = await gw.request("users")
        assert response.status == 200 and ctx.target == USERS_B
    gw.upstream.set(USERS_B, "reset")
    await gw.requests(3, "users")
    response, ctx = await gw.request("users")
    assert response.status == 503 and ctx.breaker_state == "open"
    assert (await gw.request("orders"))[0].status == 200


async def test_settings_per_service_override_the_global_ones(make_replica):
    config = parse_config({
        "services": {"users": {"targets": [USERS_A, USERS_B],
                               "circuit_breaker": {"enabled": False}},
                     "orders": {"url": ORDERS, "circuit_breaker": {"failure_threshold": 1}}},
        "routes": {"/api/users": "users", "/api/orders": "orders"},
        "circuit_breaker": {"failure_threshold": 3},
    })
    gw = await make_replica(config=config)
    gw.upstream.set(ORDERS, 500)
    await gw.request("orders")
    assert (await gw.request("orders"))[0].status == 503
    gw.upstream.set("", 500)  # no target chosen: the breaker is off for users
    statuses = await gw.requests(10, "users")
    assert statuses == [500] * 10
    assert "users" not in (await gw.policy.metrics())["services"]


async def test_transitions_are_logged_once_with_their_fields(make_replica, caplog):
    gw = await make_replica()
    caplog.set_level(logging.INFO, logger="gateway.breaker")
    gw.upstream.set(ORDERS, 500)
    await gw.requests(5)
    records = [r for r in caplog.records if hasattr(r, "to_state")]
    assert len(records) == 1
    r = records[0]
    assert (r.service, r.target, r.from_state, r.to_state) == ("orders", ORDERS, "closed", "open")
    assert r.reason == "3 consecutive failures"
    assert r.name == "gateway.breaker"


async def test_metrics_show_state_recent_failures_and_last_transition(make_replica):
    gw = await make_replica()
    gw.upstream.set(ORDERS, 500)
    await gw.requests(3)
    metrics = await gw.policy.metrics()
    assert metrics["source"] == ("local" if gw.store.available is False else "redis")
    orders = metrics["services"]["orders"]
    assert orders["state"] == "open" and orders["recent_failures"] == 3
    target = orders["targets"][ORDERS]
    assert target["state"] == "open" and 0 < target["retry_after_ms"] <= 300
    assert target["last_transition"]["from"] == "closed"
    assert target["last_transition"]["to"] == "open"
    assert target["last_transition"]["reason"] == "3 consecutive failures"
    users = metrics["services"]["users"]
    assert users["state"] == "closed" and users["targets"][USERS_A]["last_transition"] is None
    await asyncio.sleep(OPEN_WAIT)
    assert (await gw.policy.metrics())["services"]["orders"]["state"] == BreakerState.HALF_OPEN


async def test_replicas_share_the_state(make_replica):
    a = await make_replica()
    b = await make_replica(upstream=FakeUpstream())
    if a.store.available is False:
        return  # the local fallback is per replica by design
    a.upstream.set(ORDERS, 500)
    await a.requests(3)
    response, _ = await b.request()
    assert response.status == 503 and b.upstream.count() == 0
    await asyncio.sleep(OPEN_WAIT)
    assert (await b.request())[1].breaker_state == "half-open"
    assert (await a.request())[1].breaker_state == "closed"
