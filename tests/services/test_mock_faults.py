"""Fault injection (headers and admin endpoint) and request stats of the mock services."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

PROBLEM = "application/problem+json"


async def test_delay_header_makes_a_client_timeout_fire(users: TestClient) -> None:
    with pytest.raises(asyncio.TimeoutError):
        await users.get(
            "/api/users/1",
            headers={"X-Mock-Delay": "5"},
            timeout=aiohttp.ClientTimeout(total=0.2),
        )


async def test_delay_header_delays_then_answers(users: TestClient) -> None:
    started = time.monotonic()
    response = await users.get("/api/users/1", headers={"X-Mock-Delay": "0.2"})
    assert response.status == 200
    assert time.monotonic() - started >= 0.2


@pytest.mark.parametrize("status", [500, 502, 503, 429])
async def test_status_header_answers_that_status_with_json(users: TestClient, status: int) -> None:
    response = await users.get("/api/users/1", headers={"X-Mock-Status": str(status)})
    assert response.status == status
    assert response.content_type == PROBLEM
    assert (await response.json())["status"] == status


async def test_drop_header_closes_connection_without_response(users: TestClient) -> None:
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await users.get("/api/users/1", headers={"X-Mock-Drop": "1"})
    assert (await users.get("/api/users/1")).status == 200


async def test_reset_header_aborts_mid_body(users: TestClient) -> None:
    response = await users.get("/api/users", headers={"X-Mock-Reset": "1"})
    assert response.status == 200
    assert int(response.headers["Content-Length"]) > 0
    with pytest.raises(aiohttp.ClientPayloadError):
        await response.read()
    assert (await users.get("/api/users/1")).status == 200


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("X-Mock-Delay", "soon"),
        ("X-Mock-Delay", "-1"),
        ("X-Mock-Delay", "nan"),
        ("X-Mock-Status", "99"),
        ("X-Mock-Status", "abc"),
        ("X-Mock-Drop", "maybe"),
    ],
)
async def test_bad_fault_header_is_400_problem(users: TestClient, header: str, value: str) -> None:
    response = await users.get("/api/users", headers={header: value})
    assert response.status == 400
    assert response.content_type == PROBLEM
    assert header in (await response.json())["detail"]


async def test_admin_status_fault_for_next_n_requests(products: TestClient) -> None:
    response = await products.post("/_mock/faults", json={"status": 503, "times": 2})
    assert response.status == 200
    assert (await response.json())["remaining"] == 2
    assert (await products.get("/api/products")).status == 503
    assert (await (await products.get("/_mock/faults")).json())["remaining"] == 1
    assert (await products.get("/api/products/1")).status == 503
    assert (await products.get("/api/products")).status == 200
    assert (await (await products.get("/_mock/faults")).json())["active"] is False


async def test_admin_fault_spares_admin_and_health_unless_asked(products: TestClient) -> None:
    await products.post("/_mock/faults", json={"status": 500})
    assert (await products.get("/health")).status == 200
    assert (await products.get("/_mock/stats")).status == 200
    assert (await products.get("/api/products")).status == 500
    await products.post("/_mock/faults", json={"status": 500, "include_health": True})
    assert (await products.get("/health")).status == 500


async def test_admin_fault_shown_and_cleared(products: TestClient) -> None:
    await products.post("/_mock/faults", json={"delay": 2.0, "status": 503, "drop": False})
    shown = await (await products.get("/_mock/faults")).json()
    assert shown["active"] is True
    assert (shown["delay"], shown["status"], shown["drop"], shown["times"]) == (
        2.0,
        503,
        False,
        None,
    )
    assert (await products.delete("/_mock/faults")).status == 204
    assert (await (await products.get("/_mock/faults")).json())["active"] is False
    assert (await products.get("/api/products")).status == 200


async def test_admin_drop_and_delay(orders: TestClient) -> None:
    await orders.post("/_mock/faults", json={"drop": True, "times": 1})
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await orders.get("/api/orders")
    await orders.post("/_mock/faults", json={"delay": 5})
    with pytest.raises(asyncio.TimeoutError):
        await orders.get("/api/orders", timeout=aiohttp.ClientTimeout(total=0.2))


async def test_header_overrides_admin_plan(orders: TestClient) -> None:
    await orders.post("/_mock/faults", json={"status": 503})
    assert (await orders.get("/api/orders", headers={"X-Mock-Status": "502"})).status == 502


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"delay": -1}, "delay"),
        ({"status": 42}, "status"),
        ({"drop": "yes"}, "drop"),
        ({"times": 0}, "times"),
        ({"explode": True}, "explode"),
        ([], "body"),
    ],
)
async def test_admin_rejects_bad_plan(orders: TestClient, body: object, field: str) -> None:
    response = await orders.post("/_mock/faults", json=body)
    assert response.status == 422
    assert response.content_type == PROBLEM
    assert [e["field"] for e in (await response.json())["errors"]] == [field]
    assert (await (await orders.get("/_mock/faults")).json())["active"] is False


async def test_admin_rejects_invalid_json(orders: TestClient) -> None:
    response = await orders.post(
        "/_mock/faults", data=b"{", headers={"Content-Type": "application/json"}
    )
    assert response.status == 400


async def test_stats_count_requests_that_reached_the_service(users: TestClient) -> None:
    await users.get("/api/users")
    await users.get("/api/users/1")
    await users.get("/api/users/1", headers={"X-Mock-Status": "503"})
    await users.get("/health")
    await users.post("/api/users/_mock/echo", data=b"x")
    await users.get("/_mock/echo")  # admin path: not counted
    await users.get("/_mock/faults")
    stats = await (await users.get("/_mock/stats")).json()
    assert stats["requests"] == 5
    assert stats["by_path"] == {
        "/api/users": 1,
        "/api/users/1": 2,
        "/health": 1,
        "/api/users/_mock/echo": 1,
    }
    assert (await users.delete("/_mock/stats")).status == 204
    assert (await (await users.get("/_mock/stats")).json())["requests"] == 0


async def test_stats_show_requests_in_flight(users: TestClient) -> None:
    slow = asyncio.ensure_future(users.get("/api/users", headers={"X-Mock-Delay": "0.5"}))
    for _ in range(50):
        await asyncio.sleep(0.02)
        if (await (await users.get("/_mock/stats")).json())["in_flight"] == 1:
            break
    else:
        pytest.fail("the delayed request never showed as in flight")
    assert (await slow).status == 200
    assert (await (await users.get("/_mock/stats")).json())["in_flight"] == 0


async def test_prefixed_test_endpoints_are_faulted_but_bare_ones_not(users: TestClient) -> None:
    await users.post("/_mock/faults", json={"status": 503})
    assert (await users.get("/api/users/_mock/respond")).status == 503
    assert (await users.get("/_mock/respond")).status == 200
