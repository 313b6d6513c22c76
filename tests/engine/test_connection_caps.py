"""Connection caps: past `proxy.max_connections_per_client` (per peer address) or
`proxy.max_connections` (per process) a new connection gets a 503 problem at once and is
closed; the connections already open are served as before, and a freed slot is usable again."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from tests.support.inproc import proxy_config, running_service, serving

GET = b"GET /api/users HTTP/1.1\r\nHost: gw\r\n\r\n"


def config(users: str, **proxy: Any) -> dict[str, Any]:
    return proxy_config({"users": {"url": users, "timeout": 5}}, proxy=proxy)


async def status_of(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    body = await asyncio.wait_for(reader.readexactly(length), 5)
    return int(head.split()[1]), body


@pytest.mark.parametrize("cap", ["max_connections_per_client", "max_connections"])
async def test_past_the_cap_a_connection_gets_a_503_and_a_freed_slot_serves_again(cap: str) -> None:
    async with running_service("users") as users, serving(config(users, **{cap: 2})) as (app, server):
        host, port = app.url.removeprefix("http://").split(":")
        held = [await asyncio.open_connection(host, int(port)) for _ in range(2)]
        for reader, writer in held:  # both served, kept alive
            writer.write(GET)
            assert (await status_of(reader))[0] == 200
        reader, writer = await asyncio.open_connection(host, int(port))
        status, body = await status_of(reader)
        assert status == 503 and json.loads(body)["type"].endswith("/too-many-connections")
        assert await asyncio.wait_for(reader.read(), 5) == b""  # and closed
        writer.close()
        reader, writer = held[0]
        writer.write(GET)  # the open ones still work
        assert (await status_of(reader))[0] == 200
        writer.close()
        for _ in range(50):  # the slot frees once the server sees the close
            if len(server.connections) < 2:
                break
            await asyncio.sleep(0.02)
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(GET)
        assert (await status_of(reader))[0] == 200
        writer.close()
        held[1][1].close()
        for _ in range(50):
            if not server.per_peer:
                break
            await asyncio.sleep(0.02)
        assert server.per_peer == {}
