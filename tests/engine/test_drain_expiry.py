"""When the drain's grace runs out: a request with no answer yet gets a 503 problem with
`Connection: close` (never a 500, never silence); a response already streaming is cut."""

from __future__ import annotations

import asyncio
import json
import time

from tests.support.inproc import proxy_config, running_service, serving


def config(users: str) -> dict[str, object]:
    return proxy_config({"users": {"url": users, "timeout": 10}})


async def read_all(reader: asyncio.StreamReader) -> bytes:
    chunks = []
    while True:
        chunk = await asyncio.wait_for(reader.read(65536), 5)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


async def test_an_unanswered_request_gets_a_503_when_the_grace_runs_out() -> None:
    async with running_service("users") as users, serving(config(users)) as (app, server):
        host, port = app.url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"GET /api/users/_mock/echo HTTP/1.1\r\nHost: gw\r\nX-Mock-Delay: 3\r\n\r\n")
        await asyncio.sleep(0.3)  # the request is with the upstream
        started = time.monotonic()
        await server.shutdown(0.5)
        took = time.monotonic() - started
        data = await read_all(reader)
        writer.close()
    assert took < 1.5
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503"), data[:300]
    assert b"connection: close" in head.lower()
    assert json.loads(body)["type"].endswith("/shutting-down")


async def test_a_response_under_way_is_cut_not_completed() -> None:
    async with running_service("users") as users, serving(config(users)) as (app, server):
        host, port = app.url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        size = 50 * 1024 * 1024
        writer.write(b"GET /api/users/_mock/download?size=%d HTTP/1.1\r\nHost: gw\r\n\r\n" % size)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)  # streaming has begun
        assert head.startswith(b"HTTP/1.1 200")
        await server.shutdown(0.2)  # nobody reads: the response cannot finish in time
        rest = await read_all(reader)
        writer.close()
    assert len(rest) < size  # cut: the client can tell it is incomplete
