"""The policy chain's lifecycle: stage in order, handle nested in order, after in reverse once
the response went out, for every policy whose stage ran; plugins with only some phases."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from gateway.breaker import CircuitBreakerPolicy
from gateway.cache.policy import CachePolicy
from gateway.config import parse_config
from gateway.context import RequestContext, Response, UpstreamOutcome
from gateway.policy import Handler, Policy, PolicyChain
from gateway.routing import RouteTable
from gateway.store import Store, StoreBatch, embedded_store
from tests.support.chain import drive

CONFIG = parse_config({
    "services": {"orders": {"url": "http://orders.test:8003"}},
    "routes": {"/api/orders": "orders"},
    "cache": {"enabled": True},
    "circuit_breaker": {"enabled": True, "failure_threshold": 1, "timeout": 30},
})


def make_ctx(path: str = "/api/orders/1") -> RequestContext:
    route = RouteTable.from_config(CONFIG).match(path)
    assert route is not None
    return RequestContext(request_id="req-1", method="GET", path=path, raw_path=path.encode(),
                          query_string=b"", headers=[(b"host", b"gw.test")], client_ip="127.0.0.1",
                          scheme="http", route=route)


class Recorder(Policy):
    """Notes every phase it runs into a shared journal; may answer in one of them."""

    def __init__(self, name: str, journal: list[str], *, answer_in: str | None = None) -> None:
        self.name = name
        self.journal = journal
        self.answer_in = answer_in

    def stage(self, ctx: RequestContext, batch: StoreBatch) -> Any:
        self.journal.append(f"stage {self.name}")
        if self.answer_in == "stage":
            return Response(403, body=b"no")
        return f"staged by {self.name}"

    async def handle(self, ctx: RequestContext, staged: Any, call_next: Handler) -> Response:
        self.journal.append(f"handle {self.name} ({staged})")
        if self.answer_in == "handle":
            return Response(429)
        response = await call_next(ctx)
        self.journal.append(f"back {self.name}")
        return response

    async def after(self, ctx: RequestContext, staged: Any, response: Response) -> None:
        self.journal.append(f"after {self.name} ({staged}, {response.status})")


@pytest.fixture
async def store() -> Any:
    s = embedded_store()
    yield s
    await s.close()


def terminal(journal: list[str]) -> Handler:
    async def call(ctx: RequestContext) -> Response:
        journal.append("upstream")

        async def body() -> Any:
            journal.append("body read")
            yield b"hello"

        return Response(200, [(b"content-length", b"5")], stream=body())

    return call


async def test_phases_run_in_order_and_after_runs_in_reverse_once_the_body_went_out(store: Store) -> None:
    journal: list[str] = []
    policies = [Recorder("a", journal), Recorder("b", journal)]
    sent = await drive(policies, store, make_ctx(), terminal(journal))
    assert sent.status == 200 and sent.body == b"hello"
    assert journal == [
        "stage a", "stage b",
        "handle a (staged by a)", "handle b (staged by b)", "upstream", "back b", "back a",
        "body read",
        "after b (staged by b, 200)", "after a (staged by a, 200)",
    ]


async def test_an_answer_in_stage_skips_the_rest_but_every_staged_policy_gets_its_after(store: Store) -> None:
    journal: list[str] = []
    policies = [Recorder("a", journal), Recorder("b", journal, answer_in="stage"), Recorder("c", journal)]
    sent = await drive(policies, store, make_ctx(), terminal(journal))
    assert sent.status == 403
    assert journal == ["stage a", "stage b", "after b (None, 403)", "after a (staged by a, 403)"]


async def test_an_answer_in_handle_never_reaches_the_inner_policies_or_the_upstream(store: Store) -> None:
    journal: list[str] = []
    policies = [Recorder("a", journal, answer_in="handle"), Recorder("b", journal)]
    sent = await drive(policies, store, make_ctx(), terminal(journal))
    assert sent.status == 429
    assert "upstream" not in journal and "handle b (staged by b)" not in journal
    assert journal[-2:] == ["after b (staged by b, 429)", "after a (staged by a, 429)"]


async def test_policies_with_only_some_phases_and_duck_typed_ones(store: Store) -> None:
    journal: list[str] = []

    class OnlyAfter(Policy):
        name = "only-after"

        async def after(self, ctx: RequestContext, staged: Any, response: Response) -> None:
            journal.append(f"only-after {staged} {response.status}")

    class DuckHandle:  # not a Policy subclass: the chain looks for the methods
        name = "duck"

        async def handle(self, ctx: RequestContext, staged: Any, call_next: Handler) -> Response:
            response = await call_next(ctx)
            response.headers.append((b"x-duck", b"1"))
            return response

    sent = await drive([OnlyAfter(), DuckHandle()], store, make_ctx(), terminal(journal))
    assert sent.header("x-duck") == "1"
    assert journal == ["upstream", "body read", "only-after None 200"]


async def test_a_failing_after_is_logged_and_the_others_still_run(store: Store, caplog: pytest.LogCaptureFixture) -> None:
    journal: list[str] = []

    class Broken(Policy):
        name = "broken"

        async def after(self, ctx: RequestContext, staged: Any, response: Response) -> None:
            raise RuntimeError("boom")

    with caplog.at_level(logging.ERROR, logger="gateway.policy"):
        sent = await drive([Recorder("a", journal), Broken()], store, make_ctx(), terminal(journal))
    assert sent.status == 200
    assert journal[-1] == "after a (staged by a, 200)"
    assert "the broken policy failed after request req-1" in caplog.text


async def test_a_background_refresh_goes_through_the_breaker_and_its_outcome_is_recorded(store: Store) -> None:
    # The stale-while-revalidate refresh is a request of the gateway's own through the rest of
    # the chain: the breaker's `after` records its outcome (here a 500 opens the breaker).
    cache = CachePolicy.from_config(CONFIG, store)
    breaker = CircuitBreakerPolicy.from_config(CONFIG, store)
    await cache.start()
    await breaker.start()
    answers = iter([200, 500])

    async def origin(ctx: RequestContext) -> Response:
        status = next(answers)
        ctx.upstream = UpstreamOutcome(status=status, target=ctx.target or "")
        return Response(status, [(b"cache-control", b"max-age=1, stale-while-revalidate=600"),
                                 (b"age", b"5")], b"v%d" % status)

    chain = PolicyChain([cache, breaker], origin, store)
    try:
        first = await drive(chain, store, make_ctx())
        stale = await drive(chain, store, make_ctx())
        assert (first.header("x-cache"), stale.header("x-cache")) == ("MISS", "STALE")
        await asyncio.gather(*list(cache._tasks))  # the refresh: the origin answers 500
        await breaker.flush()
        metrics = await breaker.metrics()
        assert metrics["services"]["orders"]["state"] == "open"
    finally:
        await cache.close()
        await breaker.close()
