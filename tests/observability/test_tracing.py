"""W3C trace context: what the upstream receives in traceparent / tracestate."""

from __future__ import annotations

import re

import httpx
import pytest

from gateway.tracing import TracePropagation, parse_traceparent
from tests.observability.conftest import upstream_headers

ECHO = "/api/users/_mock/echo"
CALLER = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-0[01]")


@pytest.mark.parametrize("value", [
    CALLER,
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
    "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future-field",  # later version
])
def test_valid_traceparents_parse(value: str) -> None:
    assert parse_traceparent(value.encode()) is not None


@pytest.mark.parametrize("value", [
    "", "garbage", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
    "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # zero trace id
    "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  # zero parent id
    "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  # forbidden version
    "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",  # upper case
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",  # v00 has 4 fields
])
def test_invalid_traceparents_are_rejected(value: str) -> None:
    assert parse_traceparent(value.encode()) is None


def test_sample_ratio_zero_marks_new_traces_unsampled() -> None:
    assert not TracePropagation(0.0).start(None, None).sampled
    assert TracePropagation(1.0).start(None, None).sampled
    # A caller's decision is kept whatever our ratio.
    assert TracePropagation(0.0).start(CALLER.encode(), None).sampled


async def test_caller_trace_continues_with_the_gateway_as_parent(gw: httpx.AsyncClient) -> None:
    resp = await gw.get(ECHO, headers={"traceparent": CALLER, "tracestate": "vendor=abc,other=1"})
    seen = upstream_headers(resp)
    assert len(seen["traceparent"]) == 1
    m = TRACEPARENT.fullmatch(seen["traceparent"][0])
    assert m is not None
    assert m.group(1) == "4bf92f3577b34da6a3ce929d0e0e4736"  # same trace
    assert m.group(2) != "00f067aa0ba902b7"  # the gateway's own span is the parent now
    assert seen["traceparent"][0].endswith("-01")  # the caller's sampling decision is kept
    assert seen["tracestate"] == ["vendor=abc,other=1"]


async def test_new_trace_when_absent(gw: httpx.AsyncClient) -> None:
    first = upstream_headers(await gw.get(ECHO))["traceparent"][0]
    second = upstream_headers(await gw.get(ECHO))["traceparent"][0]
    a, b = TRACEPARENT.fullmatch(first), TRACEPARENT.fullmatch(second)
    assert a is not None and b is not None
    assert a.group(1) != b.group(1)  # each request starts its own trace


@pytest.mark.parametrize("bad", ["nonsense", "00-" + "0" * 32 + "-00f067aa0ba902b7-01"])
async def test_invalid_traceparent_is_replaced_and_its_tracestate_dropped(
        gw: httpx.AsyncClient, bad: str) -> None:
    seen = upstream_headers(await gw.get(ECHO, headers={"traceparent": bad, "tracestate": "k=v"}))
    assert len(seen["traceparent"]) == 1
    assert TRACEPARENT.fullmatch(seen["traceparent"][0])
    assert "tracestate" not in seen


async def test_repeated_traceparent_starts_a_new_trace(gw: httpx.AsyncClient) -> None:
    other = "00-11111111111111111111111111111111-2222222222222222-01"
    headers = [("traceparent", CALLER), ("traceparent", other)]
    seen = upstream_headers(await gw.get(ECHO, headers=headers))
    assert len(seen["traceparent"]) == 1
    trace_id = seen["traceparent"][0].split("-")[1]
    assert trace_id not in ("4bf92f3577b34da6a3ce929d0e0e4736", "1" * 32)


async def test_multiple_tracestate_headers_are_combined(gw: httpx.AsyncClient) -> None:
    headers = [("traceparent", CALLER), ("tracestate", "a=1"), ("tracestate", "b=2")]
    seen = upstream_headers(await gw.get(ECHO, headers=headers))
    assert seen["tracestate"] == ["a=1,b=2"]
