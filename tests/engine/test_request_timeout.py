"""`proxy.request_timeout`: no request lives longer, however its client or upstream trickles.

The per-gap timeouts (body_timeout, the service's timeout) never fire for a peer that sends one
byte just before each would; the request timeout bounds the whole request: a 408 while the body
is still arriving, a 504 while the upstream has not answered, a cut while the response streams.
The access log says what the client got. The drain's end is logged the same way (503).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from tests.support.inproc import proxy_config, running_service, serving

LIMIT = 1.0


def config(users: str, **proxy: Any) -> dict[str, Any]:
    return proxy_config({"users": {"url": users, "timeout": 10}},
                        proxy={"request_timeout": LIMIT, **proxy},
                        logging={"level": "INFO", "access_log": True})


async def read_all(reader: asyncio.StreamReader, limit: float = 5) -> bytes:
    chunks = []
    while True:
        chunk = await asyncio.wait_for(reader.read(65536), limit)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def access_lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    docs = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    return [doc for doc in docs if doc.get("logger") == "gateway.access"]


async def test_an_upstream_that_trickles_past_the_limit_is_a_504(capsys: pytest.CaptureFixture[str]) -> None:
    async with running_service("users") as users, serving(config(users)) as (app, _):
        host, port = app.url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        started = time.monotonic()
        writer.write(b"GET /api/users/_mock/echo HTTP/1.1\r\nHost: gw\r\nX-Mock-Delay: 5\r\n\r\n")
        data = await read_all(reader)
        took = time.monotonic() - started
        writer.close()
        await asyncio.sleep(0.1)
        (access,) = access_lines(capsys)
    assert LIMIT <= took < LIMIT + 1.0
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 504"), data[:300]
    assert b"connection: close" in head.lower()
    doc = json.loads(body)
    assert doc["type"].endswith("/request-timeout") and doc["status"] == 504
    assert access["status"] == 504 and not access.get("client_disconnected")


async def test_an_upload_that_trickles_past_the_limit_is_a_408(capsys: pytest.CaptureFixture[str]) -> None:
    # Each byte arrives well within body_timeout, and the body is larger than the buffer: it
    # streams upstream, so the upstream's connection is dropped with the client's.
    async with running_service("users") as users, \
            serving(config(users, buffer_request_bytes=0)) as (app, _):
        host, port = app.url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"POST /api/users/_mock/echo HTTP/1.1\r\nHost: gw\r\nContent-Length: 100\r\n\r\n")
        started = time.monotonic()
        got = b""
        for _ in range(40):
            writer.write(b"x")
            await asyncio.sleep(0.1)
            try:
                got = await asyncio.wait_for(reader.read(65536), 0.01)
            except TimeoutError:
                continue
            break
        took = time.monotonic() - started
        data = got + await read_all(reader)
        writer.close()
        await asyncio.sleep(0.1)
        (access,) = access_lines(capsys)
    assert LIMIT <= took < LIMIT + 1.0
    assert data.startswith(b"HTTP/1.1 408"), data[:300]
    assert json.loads(data.partition(b"\r\n\r\n")[2])["type"].endswith("/request-timeout")
    assert access["status"] == 408


async def test_a_response_streaming_past_the_limit_is_cut() -> None:
    async with running_service("users") as users, serving(config(users)) as (app, _):
        host, port = app.url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        size = 50 * 1024 * 1024
        writer.write(b"GET /api/users/_mock/download?size=%d HTTP/1.1\r\nHost: gw\r\n\r\n" % size)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200")
        await asyncio.sleep(LIMIT + 0.6)  # nobody reads: the response cannot finish in time
        rest = await read_all(reader)
        writer.close()
    assert len(rest) < size  # cut: the client can tell it is incomplete


async def test_requests_within_the_limit_on_one_connection_are_each_timed_alone() -> None:
    async with running_service("users") as users, serving(config(users)) as (app, _):
        host, port = app.url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        for _ in range(3):  # 3 x 0.6 s on one connection: more than the limit in all
            writer.write(b"GET /api/users/_mock/echo HTTP/1.1\r\nHost: gw\r\nX-Mock-Delay: 0.6\r\n\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(b"HTTP/1.1 200"), head
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length")))
            await reader.readexactly(length)
        writer.close()


async def test_the_503_at_the_end_of_a_drain_is_what_the_access_log_says(
        capsys: pytest.CaptureFixture[str]) -> None:
    async with running_service("users") as users, serving(config(users, request_timeout=0)) as (app, server):
        host, port = app.url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"GET /api/users/_mock/echo HTTP/1.1\r\nHost: gw\r\nX-Mock-Delay: 3\r\n\r\n")
        await asyncio.sleep(0.3)
        await server.shutdown(0.3)
        data = await read_all(reader)
        writer.close()
        await asyncio.sleep(0.2)
        (access,) = access_lines(capsys)
    assert data.startswith(b"HTTP/1.1 503")
    assert access["status"] == 503 and not access.get("client_disconnected")
