"""HTTP caching headers of the mock services: Cache-Control, ETag, Last-Modified, 304."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from aiohttp.test_utils import TestClient

MakeClient = Callable[[str], Awaitable[TestClient]]


@pytest.mark.parametrize(
    ("name", "cache_control"),
    [
        ("products", "public, max-age=60"),
        ("users", "private, max-age=30"),
        ("orders", "private, no-cache"),
    ],
)
async def test_cache_control_fits_the_data(
    make_client: MakeClient, name: str, cache_control: str
) -> None:
    client = await make_client(name)
    for path in (f"/api/{name}", f"/api/{name}/1"):
        response = await client.get(path)
        assert response.status == 200
        assert response.headers["Cache-Control"] == cache_control


async def test_item_has_strong_etag_and_last_modified(products: TestClient) -> None:
    response = await products.get("/api/products/1")
    etag = response.headers["ETag"]
    assert etag.startswith('"') and etag.endswith('"')
    assert "Last-Modified" in response.headers
    # Same representation, same tag.
    assert (await products.get("/api/products/1")).headers["ETag"] == etag
    assert (await products.get("/api/products/2")).headers["ETag"] != etag


@pytest.mark.parametrize("template", ["{tag}", "W/{tag}", '"other", {tag}', "*"])
async def test_matching_if_none_match_is_304_without_body(
    products: TestClient, template: str
) -> None:
    etag = (await products.get("/api/products/3")).headers["ETag"]
    response = await products.get(
        "/api/products/3", headers={"If-None-Match": template.format(tag=etag)}
    )
    assert response.status == 304
    assert await response.read() == b""
    assert response.headers["ETag"] == etag
    assert response.headers["Cache-Control"] == "public, max-age=60"


async def test_other_etag_gets_full_response(products: TestClient) -> None:
    response = await products.get("/api/products/3", headers={"If-None-Match": '"stale"'})
    assert response.status == 200
    assert (await response.json())["id"] == 3


async def test_writes_change_the_etag(products: TestClient) -> None:
    old = (await products.get("/api/products/4")).headers["ETag"]
    await products.patch("/api/products/4", json={"stock": 1})
    response = await products.get("/api/products/4", headers={"If-None-Match": old})
    assert response.status == 200
    assert response.headers["ETag"] != old


async def test_list_etag_changes_when_collection_changes(users: TestClient) -> None:
    old = (await users.get("/api/users")).headers["ETag"]
    assert (await users.get("/api/users", headers={"If-None-Match": old})).status == 304
    await users.post("/api/users", json={"name": "New", "email": "new@example.com"})
    assert (await users.get("/api/users", headers={"If-None-Match": old})).status == 200


async def test_if_modified_since_sees_every_write(orders: TestClient) -> None:
    first = (await orders.get("/api/orders/1")).headers["Last-Modified"]
    assert (await orders.get("/api/orders/1", headers={"If-Modified-Since": first})).status == 304
    # Two writes in the same second still move Last-Modified forward.
    await orders.patch("/api/orders/1", json={"status": "paid"})
    response = await orders.get("/api/orders/1", headers={"If-Modified-Since": first})
    assert response.status == 200
    second = response.headers["Last-Modified"]
    await orders.patch("/api/orders/1", json={"status": "shipped"})
    assert (await orders.get("/api/orders/1", headers={"If-Modified-Since": second})).status == 200
