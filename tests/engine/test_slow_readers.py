"""Clients that stop reading: cut after `proxy.send_timeout`, and nothing stays behind them.

A client that reads nothing while a large response streams fills the kernel's buffers, then the
connection's write buffer pauses the stream (the upstream is read no faster than the client
takes it). Past `send_timeout` the connection is dropped at once, its buffer with it, and the
upstream connection feeding it is closed: a crowd of slow readers cannot hold a service's pool.
"""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

from tests.support.inproc import proxy_config, running_service, serving

SEND_TIMEOUT = 0.5


def config(users: str, **proxy: Any) -> dict[str, Any]:
    return proxy_config({"users": {"url": users, "timeout": 5}},
                        proxy={"send_timeout": SEND_TIMEOUT, **proxy})


async def non_reader(url: str, path: bytes) -> socket.socket:
    """A client with a tiny receive buffer that sends its request and never reads."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, (host, int(port)))
    await loop.sock_sendall(sock, b"GET " + path + b" HTTP/1.1\r\nHost: gw\r\n\r\n")
    return sock


def busy_upstream_connections(app: Any) -> int:
    return sum(pool.size - len(pool.idle) for pool in app.gateway.upstream.pools.values())


async def test_a_client_that_stops_reading_is_dropped_with_its_upstream_connection() -> None:
    async with running_service("users") as users, serving(config(users)) as (app, server):
        socks = [await non_reader(app.url, b"/api/users/_mock/download?size=20000000") for _ in range(5)]
        try:
            await asyncio.sleep(0.3)
            assert len(server.connections) == 5 and busy_upstream_connections(app) == 5
            started = time.monotonic()
            while server.connections or busy_upstream_connections(app):
                assert time.monotonic() - started < SEND_TIMEOUT + 2.0, (
                    len(server.connections), busy_upstream_connections(app))
                await asyncio.sleep(0.05)
            # The service is free for everyone else.
            reader, writer = await asyncio.open_connection(*app.url.removeprefix("http://").split(":"))
            writer.write(b"GET /api/users/_mock/echo HTTP/1.1\r\nHost: gw\r\n\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(b"HTTP/1.1 200")
            writer.close()
        finally:
            for sock in socks:
                sock.close()


async def test_what_a_slow_reader_costs_is_bounded_by_the_write_buffer() -> None:
    # While it is paused, a slow reader's connection holds at most the write buffer's high-water
    # mark plus one piece of the body, not the response: the stream waits for the client.
    async with running_service("users") as users, serving(config(users, send_timeout=30)) as (app, server):
        sock = await non_reader(app.url, b"/api/users/_mock/download?size=20000000")
        try:
            await asyncio.sleep(0.5)
            (conn,) = server.connections
            assert conn.transport is not None
            assert conn.transport.get_write_buffer_size() <= 512 * 1024
        finally:
            sock.close()


def test_a_crowd_of_slow_readers_costs_normal_traffic_little_and_goes_at_send_timeout() -> None:
    """200 clients reading a large download at a trickle, in a real gateway process: normal
    requests beside them stay fast, memory stays bounded, and the crowd is cut at send_timeout."""
    import statistics
    from pathlib import Path

    import httpx

    from tests.core.test_processes import rss_mb
    from tests.support.processes import GatewayProcess, MockService, services_config

    with MockService("users") as users:
        config = services_config({"users": users}, rate_limit={"enabled": False},
                                 cache={"enabled": False}, proxy={"send_timeout": 4},
                                 logging={"level": "INFO", "access_log": True})
        gw = GatewayProcess(config)
        socks: list[socket.socket] = []
        try:
            host, port = gw.url.removeprefix("http://").split(":")
            before = rss_mb(gw.proc.pid)  # type: ignore[union-attr]
            for _ in range(200):
                sock = socket.create_connection((host, int(port)))
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                sock.sendall(b"GET /api/users/_mock/download?size=50000000 HTTP/1.1\r\nHost: gw\r\n\r\n")
                socks.append(sock)
            # The first second or two go to filling the kernel's socket buffers (several MB per
            # connection on loopback); then every stream is paused and costs nothing.
            time.sleep(2.0)
            took = []
            with httpx.Client(base_url=gw.url, timeout=10) as client:
                for _ in range(50):
                    started = time.monotonic()
                    assert client.get("/api/users").status_code == 200
                    took.append(time.monotonic() - started)
            grown = rss_mb(gw.proc.pid) - before  # type: ignore[union-attr]
            # (A shared 2-core machine: the median, and no request anywhere near the 12 s seen
            # before the fix.)
            assert statistics.median(took) < 0.02 and max(took) < 2.0, sorted(took)[-5:]
            # Per slow reader: the write buffer past its 64 KiB mark, the upstream stream's 64 KiB,
            # and a read of up to 256 KiB in flight on each side: well under 1 MB, whatever the
            # size of the response (50 MB here).
            assert grown < 200, f"RSS grew by {grown:.0f} MB with 200 slow readers"
            # Past send_timeout (from when each stream paused, a second or two in), every slow
            # reader is cut, and logged so (reading here would drain them: not a slow reader).
            deadline = time.monotonic() + 12
            cut = 0
            while cut < len(socks) and time.monotonic() < deadline:
                time.sleep(0.25)
                log = Path(gw.log_path).read_text()  # (the whole log: gw.log() is its tail)
                cut = sum(1 for line in log.splitlines()
                          if "/_mock/download" in line and '"client_disconnected":true' in line)
            assert cut == len(socks)
        finally:
            for sock in socks:
                sock.close()
            gw.stop()
