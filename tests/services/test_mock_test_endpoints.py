"""The echo, download and respond endpoints the gateway's tests rely on."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient

from services.testing import pattern_bytes, pattern_sha256


async def test_echo_describes_the_request(users: TestClient) -> None:
    response = await users.put("/_mock/echo?b=2&a=%20x", data=b"hello", headers={"X-Trace": "t1"})
    body = await response.json()
    assert body["method"] == "PUT"
    assert body["path"] == "/_mock/echo"
    assert body["query_string"] == "b=2&a=%20x"
    assert body["raw_path"] == "/_mock/echo?b=2&a=%20x"
    assert ["X-Trace", "t1"] in body["headers"]
    assert body["content_length"] == 5 and body["transfer_encoding"] is None
    assert body["body_length"] == 5
    assert body["body_sha256"] == hashlib.sha256(b"hello").hexdigest()


async def test_echo_keeps_header_order_case_and_raw_path(users: TestClient) -> None:
    # A raw request, so nothing between the test and the service normalises the headers.
    assert users.server.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", users.server.port)
    writer.write(
        b"GET /api/users/_mock/echo?x=%2F&y=a+b HTTP/1.1\r\nHost: t\r\nx-lower: 1\r\n"
        b"X-MiXeD: 2\r\nx-lower: 3\r\nConnection: close\r\n\r\n"
    )
    await writer.drain()
    raw = await asyncio.wait_for(reader.read(), timeout=5)
    writer.close()
    head, _, payload = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    body = json.loads(payload)
    assert body["headers"] == [
        ["Host", "t"],
        ["x-lower", "1"],
        ["X-MiXeD", "2"],
        ["x-lower", "3"],
        ["Connection", "close"],
    ]
    assert body["raw_path"] == "/api/users/_mock/echo?x=%2F&y=a+b"
    assert body["query_string"] == "x=%2F&y=a+b"


async def test_echo_hashes_a_streamed_multi_megabyte_upload(users: TestClient) -> None:
    chunk = bytes(range(256)) * 256  # 64 KiB
    count = 128  # 8 MiB, far past the 1 MiB limit on buffered bodies

    async def stream() -> AsyncIterator[bytes]:
        for _ in range(count):
            yield chunk

    response = await users.post("/api/users/_mock/echo", data=stream())
    assert response.status == 200
    body = await response.json()
    assert body["transfer_encoding"] == "chunked" and body["content_length"] is None
    assert body["body_length"] == len(chunk) * count
    assert body["body_sha256"] == hashlib.sha256(chunk * count).hexdigest()


async def test_echo_accepts_large_body_with_content_length(users: TestClient) -> None:
    data = pattern_bytes(3 * 1024 * 1024 + 7)
    body = await (await users.post("/_mock/echo", data=data)).json()
    assert body["content_length"] == len(data) == body["body_length"]
    assert body["body_sha256"] == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize(
    ("size", "chunk"), [(0, 65536), (1, 65536), (12_345, 1000), (5 * 1024 * 1024 + 3, 65536)]
)
async def test_download_streams_the_documented_pattern(
    products: TestClient, size: int, chunk: int
) -> None:
    response = await products.get(f"/api/products/_mock/download?size={size}&chunk={chunk}")
    assert response.status == 200
    assert int(response.headers["Content-Length"]) == size
    digest, received = hashlib.sha256(), 0
    async for piece in response.content.iter_chunked(65536):
        digest.update(piece)
        received += len(piece)
    assert received == size
    assert digest.hexdigest() == pattern_sha256(size)


async def test_download_pattern_helper_matches_bytes() -> None:
    assert pattern_bytes(300) == bytes(range(256)) + bytes(range(44))
    assert pattern_sha256(300) == hashlib.sha256(pattern_bytes(300)).hexdigest()


@pytest.mark.parametrize("query", ["size=-1", "size=lots", "chunk=0", "size=10&chunk=x"])
async def test_download_rejects_bad_parameters(products: TestClient, query: str) -> None:
    response = await products.get(f"/_mock/download?{query}")
    assert response.status == 422
    assert response.content_type == "application/problem+json"


async def test_respond_answers_as_programmed(orders: TestClient) -> None:
    response = await orders.get(
        "/_mock/respond",
        params=[
            ("status", "201"),
            ("h", "Cache-Control: max-age=5"),
            ("h", "X-Tag: a"),
            ("h", "X-Tag: b"),
            ("body", "cached?"),
        ],
    )
    assert response.status == 201
    assert response.headers["Cache-Control"] == "max-age=5"
    assert response.headers.getall("X-Tag") == ["a", "b"]
    assert await response.text() == "cached?"
    assert response.headers["X-Origin-Hits"] == "1"
    again = await orders.post(
        "/api/orders/_mock/respond?h=Content-Type:%20application/json&body=%7B%7D"
    )
    assert again.headers["X-Origin-Hits"] == "2"
    assert again.content_type == "application/json"
    assert await again.json() == {}


async def test_respond_delay_and_no_body_statuses(orders: TestClient) -> None:
    response = await orders.get("/_mock/respond?status=304&body=ignored&delay=0.05")
    assert response.status == 304
    assert await response.read() == b""


@pytest.mark.parametrize(
    "query",
    [
        "status=99",
        "status=x",
        "delay=-1",
        "h=NoColon",
        "h=Content-Length:%205",
        "h=Transfer-Encoding:%20chunked",
    ],
)
async def test_respond_rejects_bad_parameters(orders: TestClient, query: str) -> None:
    response = await orders.get(f"/_mock/respond?{query}")
    assert response.status == 422
    assert response.content_type == "application/problem+json"
