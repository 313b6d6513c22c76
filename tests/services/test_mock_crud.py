"""CRUD, pagination and validation of the mock users / products / orders services."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from aiohttp.test_utils import TestClient

MakeClient = Callable[[str], Awaitable[TestClient]]

PROBLEM = "application/problem+json"


@pytest.mark.parametrize("name", ["users", "products", "orders"])
async def test_health_names_the_service(make_client: MakeClient, name: str) -> None:
    client = await make_client(name)
    response = await client.get("/health")
    assert response.status == 200
    assert await response.json() == {"status": "healthy", "service": name}


@pytest.mark.parametrize(("name", "total"), [("users", 10), ("products", 20), ("orders", 5)])
async def test_list_has_seed_data_and_default_page(
    make_client: MakeClient, name: str, total: int
) -> None:
    client = await make_client(name)
    body = await (await client.get(f"/api/{name}")).json()
    assert body["total"] == total
    assert (body["page"], body["per_page"]) == (1, 20)
    assert [item["id"] for item in body["items"]] == list(range(1, total + 1))


async def test_seed_records_have_the_documented_fields(make_client: MakeClient) -> None:
    expected = {
        "users": {"id", "name", "email", "tier", "created_at"},
        "products": {"id", "name", "description", "price", "category", "stock"},
        "orders": {"id", "user_id", "product_id", "quantity", "status", "total", "created_at"},
    }
    for name, fields in expected.items():
        client = await make_client(name)
        items = (await (await client.get(f"/api/{name}")).json())["items"]
        assert all(set(item) == fields for item in items)


async def test_pagination_pages_through_in_id_order(products: TestClient) -> None:
    body = await (await products.get("/api/products?page=2&per_page=7")).json()
    assert [item["id"] for item in body["items"]] == list(range(8, 15))
    assert (body["total"], body["page"], body["per_page"]) == (20, 2, 7)
    past_end = await (await products.get("/api/products?page=9&per_page=100")).json()
    assert past_end["items"] == [] and past_end["total"] == 20


@pytest.mark.parametrize(
    ("query", "fields"),
    [
        ("per_page=101", ["per_page"]),
        ("per_page=0", ["per_page"]),
        ("page=0", ["page"]),
        ("page=abc&per_page=1.5", ["page", "per_page"]),
    ],
)
async def test_bad_pagination_is_422(users: TestClient, query: str, fields: list[str]) -> None:
    response = await users.get(f"/api/users?{query}")
    assert response.status == 422
    assert response.content_type == PROBLEM
    body = await response.json()
    assert body["title"] == "Validation failed" and body["status"] == 422
    assert [e["field"] for e in body["errors"]] == fields


async def test_get_by_id_and_missing_id_is_404_problem(users: TestClient) -> None:
    ada = await (await users.get("/api/users/1")).json()
    assert ada["email"] == "ada@example.com"
    for path in ("/api/users/999", "/api/users/abc", "/api/users/-1"):
        response = await users.get(path)
        assert response.status == 404, path
        assert response.content_type == PROBLEM
        assert (await response.json())["status"] == 404


async def test_create_returns_201_with_location(users: TestClient) -> None:
    response = await users.post(
        "/api/users", json={"name": "Hedy Lamarr", "email": "hedy@example.com"}
    )
    assert response.status == 201
    created = await response.json()
    assert created["id"] == 11 and created["tier"] == "free" and created["created_at"].endswith("Z")
    assert response.headers["Location"] == "/api/users/11"
    assert await (await users.get(response.headers["Location"])).json() == created


async def test_order_with_product_and_quantity_is_created_for_the_header_user(
    orders: TestClient,
) -> None:
    response = await orders.post(
        "/api/orders", json={"product_id": 1, "quantity": 2}, headers={"X-User-ID": "user-7"}
    )
    assert response.status == 201
    order = await response.json()
    assert order["user_id"] == "user-7"
    assert order["status"] == "pending"
    assert order["total"] == pytest.approx(2 * 89.99)


async def test_order_without_user_header_is_anonymous(orders: TestClient) -> None:
    response = await orders.post("/api/orders", json={"product_id": 1, "quantity": 2})
    assert response.status == 201
    assert (await response.json())["user_id"] == "anonymous"


@pytest.mark.parametrize("quantity", [0, -1, "2", True, 1.5, None])
async def test_order_quantity_must_be_a_positive_integer(
    orders: TestClient, quantity: object
) -> None:
    response = await orders.post("/api/orders", json={"product_id": 1, "quantity": quantity})
    assert response.status == 422
    assert response.content_type == PROBLEM
    assert (await response.json())["errors"] == [
        {"field": "quantity", "message": "must be a positive integer"}
    ]


async def test_order_for_unknown_product_is_422(orders: TestClient) -> None:
    response = await orders.post("/api/orders", json={"product_id": 999, "quantity": 1})
    assert response.status == 422
    assert (await response.json())["errors"][0]["field"] == "product_id"


async def test_all_field_errors_are_reported_at_once(products: TestClient) -> None:
    response = await products.post(
        "/api/products", json={"name": "", "price": -1, "colour": "red", "stock": "many"}
    )
    assert response.status == 422
    fields = {e["field"] for e in (await response.json())["errors"]}
    assert fields == {"colour", "name", "price", "category", "stock"}


async def test_invalid_json_is_400_and_non_object_is_422(users: TestClient) -> None:
    response = await users.post(
        "/api/users", data=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert response.status == 400
    assert response.content_type == PROBLEM
    response = await users.post("/api/users", json=[1, 2])
    assert response.status == 422
    assert (await response.json())["errors"][0]["field"] == "body"


async def test_put_replaces_whole_record_and_ignores_server_fields(users: TestClient) -> None:
    original = await (await users.get("/api/users/2")).json()
    response = await users.put(
        "/api/users/2",
        json={"id": 99, "created_at": "x", "name": "G. Hopper", "email": "gh@example.com"},
    )
    assert response.status == 200
    replaced = await response.json()
    # tier was absent: a full replace resets it to its default.
    assert replaced == {**original, "name": "G. Hopper", "email": "gh@example.com", "tier": "free"}


async def test_put_missing_required_field_is_422(users: TestClient) -> None:
    response = await users.put("/api/users/2", json={"name": "Only name"})
    assert response.status == 422
    assert (await response.json())["errors"] == [{"field": "email", "message": "is required"}]


async def test_patch_changes_only_given_fields_and_reprices_orders(orders: TestClient) -> None:
    before = await (await orders.get("/api/orders/2")).json()
    response = await orders.patch("/api/orders/2", json={"quantity": 3})
    assert response.status == 200
    after = await response.json()
    assert after == {**before, "quantity": 3, "total": pytest.approx(3 * 89.99)}


async def test_update_of_missing_record_is_404(products: TestClient) -> None:
    assert (await products.put("/api/products/404", json={})).status == 404
    assert (await products.patch("/api/products/404", json={})).status == 404


async def test_delete_then_gone(products: TestClient) -> None:
    assert (await products.delete("/api/products/5")).status == 204
    assert (await products.get("/api/products/5")).status == 404
    assert (await products.delete("/api/products/5")).status == 404
    assert (await (await products.get("/api/products")).json())["total"] == 19


async def test_unknown_path_and_method_are_problems(users: TestClient) -> None:
    response = await users.get("/api/products")
    assert response.status == 404 and response.content_type == PROBLEM
    response = await users.post("/api/users/1", json={})
    assert response.status == 405 and response.content_type == PROBLEM
    assert "GET" in response.headers["Allow"]


async def test_oversized_json_body_is_413_problem(users: TestClient) -> None:
    response = await users.post("/api/users", data=b"[" + b"1," * 600_000 + b"1]")
    assert response.status == 413
    assert response.content_type == PROBLEM


async def test_each_app_has_its_own_data(make_client: MakeClient) -> None:
    first, second = await make_client("users"), await make_client("users")
    await first.delete("/api/users/1")
    assert (await second.get("/api/users/1")).status == 200
