"""The engine's server side on the wire: what a client sees, byte for byte.

The gateway parses every request itself (gateway/engine/server.py on llhttp), so the promises
HTTP/1.1 makes to a client are ours to keep: keep-alive and its end, pipelined answers in
order, `100 Continue` only when the body is wanted, limits enforced while reading (a 16 MB
header line must cost the server a bounded read), timeouts against slow clients, and refusals
a client can read (a problem body, `Connection: close`, then the close). An HTTP client library
would hide most of this (it never pipelines, never trickles, never sends a malformed head), so
these tests speak raw bytes over loopback sockets, as a client or an attacker would. Every read
is bounded in time: a hang is a failure, never a stuck test run.

The last tests run `gateway run` as real processes: the drain on SIGTERM seen from the wire
(tests/core/test_processes.py checks that an in-flight request completes and the exit code; here:
the refusal of new connections, the close of idle ones, the in-flight response's
`Connection: close`, the time to exit), and the supervision of `--workers 2`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import struct
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from gateway.entry import GatewayApp
from tests.support.inproc import running_gateway, serving
from tests.support.processes import (
    GatewayProcess,
    MockService,
    RedisServer,
    free_port,
    services_config,
)

TIMEOUT = 5.0  # the longest any single read may take; most answers come in milliseconds
PROBLEM = "application/problem+json"


# -- a raw HTTP/1.1 client ---------------------------------------------------------------------
@dataclass
class Reply:
    """One response as it came off the wire."""

    version: str
    status: int
    headers: list[tuple[str, str]]
    body: bytes = b""

    def get(self, name: str) -> str | None:
        values = self.values(name)
        return values[0] if values else None

    def values(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k == name.lower()]

    @property
    def closes(self) -> bool:
        """The response announces the close of the connection."""
        tokens = {t.strip().lower() for v in self.values("connection") for t in v.split(",")}
        return "close" in tokens

    def json(self) -> Any:
        return json.loads(self.body)


def request(method: str, target: str, headers: list[tuple[str, str]] | None = None,
            body: bytes = b"", *, version: str = "1.1", host: bool = True) -> bytes:
    """A request head (and body); Content-Length is added for a body unless a framing is given."""
    fields = list(headers or [])
    names = {n.lower() for n, _ in fields}
    if host and version == "1.1" and "host" not in names:
        fields.insert(0, ("Host", "gateway.test"))
    if body and not names & {"content-length", "transfer-encoding"}:
        fields.append(("Content-Length", str(len(body))))
    head = f"{method} {target} HTTP/{version}\r\n" + "".join(f"{n}: {v}\r\n" for n, v in fields)
    return head.encode("latin-1") + b"\r\n" + body


async def connect(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return await asyncio.wait_for(asyncio.open_connection(host, int(port), limit=1 << 20), TIMEOUT)


async def read_reply(reader: asyncio.StreamReader, *, head_request: bool = False,
                     within: float = TIMEOUT) -> Reply:
    """Read one response (an interim 1xx is one too), checking what every final one carries."""
    async with asyncio.timeout(within):
        raw = await reader.readuntil(b"\r\n\r\n")
        lines = raw[:-4].decode("latin-1").split("\r\n")
        version, status, *_ = lines[0].split(" ", 2)
        assert version in ("HTTP/1.1", "HTTP/1.0"), lines[0]
        headers = []
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            assert sep and name == name.strip(), f"malformed response header {line!r}"
            headers.append((name.lower(), value.strip()))
        reply = Reply(version, int(status), headers)
        code = reply.status
        if code < 200 or code in (204, 304) or head_request:
            pass
        elif (reply.get("transfer-encoding") or "").lower() == "chunked":
            parts = []
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    while await reader.readuntil(b"\r\n") != b"\r\n":
                        pass  # trailer fields
                    break
                parts.append(await reader.readexactly(size))
                assert await reader.readexactly(2) == b"\r\n"
            reply.body = b"".join(parts)
        elif reply.get("content-length") is not None:
            reply.body = await reader.readexactly(int(reply.values("content-length")[0]))
        else:
            reply.body = await reader.read()  # delimited by the close
    if code >= 200:
        # Every final response, refusals included, says who and when (RFC 9110 6.6.1, 10.2.4).
        assert reply.values("server") == ["pygateway"], reply.headers
        dates = reply.values("date")
        assert len(dates) == 1, reply.headers
        assert abs(parsedate_to_datetime(dates[0]).timestamp() - time.time()) < 5
    return reply


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> bytes:
    """Wait for the server's close (EOF or reset); what came before it. Fails on a hang."""
    try:
        return await asyncio.wait_for(reader.read(), seconds)
    except ConnectionResetError:
        return b""
    except TimeoutError:
        pytest.fail(f"the server did not close the connection within {seconds}s")


async def still_open(reader: asyncio.StreamReader, seconds: float = 0.3) -> bool:
    """Nothing arrives and the connection stays up for `seconds`."""
    try:
        data = await asyncio.wait_for(reader.read(1), seconds)
    except TimeoutError:
        return True
    except ConnectionResetError:
        return False
    assert data == b"", f"unexpected bytes from the server: {data!r}"
    return False


def assert_refusal(reply: Reply, status: int) -> dict[str, Any]:
    """An engine-level refusal: a problem body a client can read, and the announced close."""
    assert reply.status == status, (reply.status, reply.body[:300])
    assert reply.get("content-type") == PROBLEM
    assert reply.closes, reply.headers
    doc: dict[str, Any] = reply.json()
    assert doc["status"] == status
    return doc


async def wait_until(predicate: Callable[[], bool], seconds: float, what: str) -> None:
    """Poll `predicate` every 50 ms for at most `seconds`."""
    for _ in range(max(1, int(seconds / 0.05))):
        if predicate():
            return
        await asyncio.sleep(0.05)
    if not predicate():
        pytest.fail(f"{what}: not within {seconds}s")


async def close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError):
        await asyncio.wait_for(writer.wait_closed(), 1)


# -- backends ----------------------------------------------------------------------------------
@dataclass
class Sink:
    """A backend that records which request bodies arrived whole (to see what got through)."""

    url: str = ""
    started: list[str] = field(default_factory=list)
    completed: list[tuple[str, int]] = field(default_factory=list)


@pytest.fixture
async def sink() -> AsyncIterator[Sink]:
    record = Sink()

    async def handler(request: web.Request) -> web.Response:
        if request.path == "/health":
            return web.Response(text="ok")
        record.started.append(request.path)
        body = await request.read()  # raises when the gateway cuts the request short
        record.completed.append((request.path, len(body)))
        return web.json_response({"body_length": len(body)})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    record.url = f"http://127.0.0.1:{port}"
    try:
        yield record
    finally:
        await runner.cleanup()


def gateway_config(users_url: str, sink_url: str | None = None, **proxy: Any) -> dict[str, Any]:
    """The users mock at /api/users (and /api/readonly: GET and HEAD only), the sink at
    /api/sink; no policies, so only the engine and the hot path stand between."""
    services = {"users": users_url, **({"sink": sink_url} if sink_url else {})}
    config: dict[str, Any] = {
        "services": {n: {"url": u, "timeout": 5, "connect_timeout": 1, "health_interval": 5}
                     for n, u in services.items()},
        "routes": {"/api/users": "users",
                   "/api/readonly": {"service": "users", "methods": ["GET", "HEAD"]},
                   **({"/api/sink": "sink"} if sink_url else {})},
        "logging": {"level": "WARNING", "access_log": False},
        "rate_limit": {"enabled": False},
        "cache": {"enabled": False},
        "circuit_breaker": {"enabled": False},
        "proxy": {"max_body_bytes": 100_000, **proxy},
    }
    return config


@pytest.fixture
async def gw(users_url: str) -> AsyncIterator[GatewayApp]:
    async with running_gateway(gateway_config(users_url)) as app:
        yield app


ECHO = "/api/users/_mock/echo"


# -- 1. keep-alive -----------------------------------------------------------------------------
async def test_keep_alive_serves_several_requests_on_one_connection(gw: GatewayApp) -> None:
    reader, writer = await connect(gw.url)
    try:
        for i in range(4):
            writer.write(request("GET", f"{ECHO}?n={i}"))
            reply = await read_reply(reader)
            assert reply.status == 200
            assert reply.json()["query_string"] == f"n={i}"
            assert not reply.closes
        assert await still_open(reader)
    finally:
        await close(writer)


async def test_http10_without_keep_alive_closes_after_the_response(gw: GatewayApp) -> None:
    reader, writer = await connect(gw.url)
    try:
        writer.write(request("GET", ECHO, version="1.0"))
        reply = await read_reply(reader)
        assert reply.version == "HTTP/1.0"
        assert reply.status == 200
        assert reply.json()["path"] == ECHO
        assert reply.closes
        assert await closed_within(reader, 1.0) == b""
    finally:
        await close(writer)


async def test_http10_with_keep_alive_stays_open(gw: GatewayApp) -> None:
    reader, writer = await connect(gw.url)
    try:
        for i in range(2):
            writer.write(request("GET", f"{ECHO}?n={i}", [("Connection", "keep-alive")], version="1.0"))
            reply = await read_reply(reader)
            assert reply.version == "HTTP/1.0"
            assert reply.status == 200
            assert reply.get("connection") == "keep-alive"
            assert reply.json()["query_string"] == f"n={i}"
        assert await still_open(reader)
    finally:
        await close(writer)


async def test_connection_close_closes_after_the_response(gw: GatewayApp) -> None:
    reader, writer = await connect(gw.url)
    try:
        writer.write(request("GET", ECHO, [("Connection", "close")]))
        reply = await read_reply(reader)
        assert reply.status == 200
        assert reply.closes
        assert await closed_within(reader, 1.0) == b""
    finally:
        await close(writer)


# -- 2. pipelining -----------------------------------------------------------------------------
async def test_pipelined_requests_are_answered_in_order(gw: GatewayApp) -> None:
    reader, writer = await connect(gw.url)
    try:
        batch = b""
        for i in range(5):
            rid = [("X-Request-ID", f"pipelined-{i}")]
            if i == 2:  # one with a body, in the middle
                batch += request("POST", f"{ECHO}?n={i}", rid, b"b" * 3000)
            else:
                batch += request("GET", f"{ECHO}?n={i}", rid)
        writer.write(batch)  # one send
        for i in range(5):
            reply = await read_reply(reader)
            assert reply.status == 200
            assert reply.get("x-request-id") == f"pipelined-{i}"
            echo = reply.json()
            assert echo["query_string"] == f"n={i}"
            assert echo["body_length"] == (3000 if i == 2 else 0)
        assert await still_open(reader)
    finally:
        await close(writer)


async def test_pipelining_past_max_pipelined_stops_reading_but_answers_all(users_url: str) -> None:
    async with serving(gateway_config(users_url, max_pipelined=2)) as (app, server):
        reader, writer = await connect(app.url)
        try:
            # The first request is slow, so the rest queue up behind it.
            batch = request("GET", f"{ECHO}?n=0", [("X-Mock-Delay", "0.4")])
            batch += b"".join(request("GET", f"{ECHO}?n={i}") for i in range(1, 8))
            writer.write(batch)
            await asyncio.sleep(0.2)
            (conn,) = server.connections
            assert conn.transport is not None
            assert not conn.transport.is_reading()  # the queue is full: the socket rests
            for i in range(8):
                reply = await read_reply(reader)
                assert reply.status == 200
                assert reply.json()["query_string"] == f"n={i}"
            assert conn.transport.is_reading()  # all answered: reading again
            writer.write(request("GET", f"{ECHO}?n=8"))
            assert (await read_reply(reader)).json()["query_string"] == "n=8"
        finally:
            await close(writer)


async def test_one_read_of_many_pipelined_requests_queues_at_most_max_pipelined(users_url: str) -> None:
    """llhttp parses all it is given: a single send of 800 tiny requests must still queue at
    most `max_pipelined` of them (the rest waits unparsed), and all are answered in order."""
    async with serving(gateway_config(users_url, max_pipelined=2)) as (app, server):
        reader, writer = await connect(app.url)
        try:
            batch = request("GET", f"{ECHO}?n=0", [("X-Mock-Delay", "0.3")])
            batch += b"".join(request("GET", f"{ECHO}?n={i}") for i in range(1, 800))
            assert len(batch) > 3 * 16 * 1024  # several parse slices
            writer.write(batch)
            await asyncio.sleep(0.15)
            (conn,) = server.connections
            assert len(conn._queue) <= 2
            for i in range(800):
                reply = await read_reply(reader)
                assert reply.json()["query_string"] == f"n={i}"
        finally:
            await close(writer)


# -- 3. Expect: 100-continue -------------------------------------------------------------------
async def test_expect_100_continue_comes_when_the_body_is_wanted(gw: GatewayApp) -> None:
    reader, writer = await connect(gw.url)
    try:
        body = os.urandom(5000)
        writer.write(request("POST", ECHO, [("Expect", "100-continue"),
                                            ("Content-Length", str(len(body)))]))
        interim = await read_reply(reader)
        assert (interim.version, interim.status) == ("HTTP/1.1", 100)
        writer.write(body)
        reply = await read_reply(reader)
        assert reply.status == 200
        assert reply.json()["body_length"] == len(body)
        # The connection goes on.
        writer.write(request("GET", ECHO))
        assert (await read_reply(reader)).status == 200
    finally:
        await close(writer)


@pytest.mark.parametrize(("target", "length", "status"), [
    (ECHO, 1_000_000, 413),  # over max_body_bytes
    ("/api/readonly", 100, 405),  # a method the route does not take
])
async def test_expect_100_refused_before_the_body_gets_no_100_and_closes(
        gw: GatewayApp, target: str, length: int, status: int) -> None:
    reader, writer = await connect(gw.url)
    try:
        writer.write(request("POST", target, [("Expect", "100-continue"),
                                              ("Content-Length", str(length))]))
        reply = await read_reply(reader)  # the final answer comes first: no 100
        assert reply.status == status
        assert reply.get("content-type") == PROBLEM
        # The body was never asked for, so it cannot be skipped: the connection ends, and the
        # response says so (a client must not send its next request on it).
        assert reply.closes, reply.headers
        assert await closed_within(reader, 3.0) == b""
    finally:
        await close(writer)


# -- 4. limits while reading -------------------------------------------------------------------
async def test_request_target_over_max_url_bytes_is_414(users_url: str) -> None:
    async with running_gateway(gateway_config(users_url, max_url_bytes=256)) as app:
        reader, writer = await connect(app.url)
        try:
            writer.write(request("GET", f"{ECHO}?q={'a' * 300}"))
            assert_refusal(await read_reply(reader), 414)
            assert await closed_within(reader, 3.0) == b""
        finally:
            await close(writer)
        reader, writer = await connect(app.url)
        try:
            target = f"{ECHO}?q="
            writer.write(request("GET", target + "a" * (256 - len(target))))  # at the limit: fine
            assert (await read_reply(reader)).status == 200
        finally:
            await close(writer)


async def test_16mb_header_line_is_431_after_a_bounded_read(users_url: str) -> None:
    limit = 8192
    async with running_gateway(gateway_config(users_url, max_header_bytes=limit)) as app:
        reader, writer = await connect(app.url)
        try:
            answer = asyncio.create_task(read_reply(reader, within=20))
            writer.write(b"GET /api/users HTTP/1.1\r\nHost: gateway.test\r\nX-Big: ")
            sent = 0
            block = b"a" * 16384
            with contextlib.suppress(ConnectionError):
                while sent < 16 * 1024 * 1024 and not answer.done():
                    writer.write(block)
                    await writer.drain()
                    sent += len(block)
                    await asyncio.sleep(0.002)  # slowly: the server reads as we send
            reply = await answer
            assert_refusal(reply, 431)
            assert sent <= limit + 256 * 1024, f"the server read {sent} bytes before refusing"
            assert await closed_within(reader, 3.0) == b""
        finally:
            await close(writer)


async def test_a_head_under_max_header_bytes_in_pieces_is_accepted(users_url: str) -> None:
    # The limit counts the head once, however it is split across reads.
    async with running_gateway(gateway_config(users_url, max_header_bytes=8192)) as app:
        reader, writer = await connect(app.url)
        try:
            fields = [(f"X-Field-{i}", "v" * 90) for i in range(60)]  # ~6.5 KB of fields
            raw = request("GET", ECHO, fields)
            assert 6000 < len(raw) < 8192
            for start in range(0, len(raw), 500):
                writer.write(raw[start:start + 500])
                await writer.drain()
                await asyncio.sleep(0.005)
            reply = await read_reply(reader)
            assert reply.status == 200, reply.body[:300]
        finally:
            await close(writer)


async def test_more_than_max_headers_is_431(users_url: str) -> None:
    async with running_gateway(gateway_config(users_url, max_headers=8)) as app:
        reader, writer = await connect(app.url)
        try:
            writer.write(request("GET", ECHO, [(f"X-F{i}", "v") for i in range(12)]))
            assert "header fields" in assert_refusal(await read_reply(reader), 431)["detail"]
            assert await closed_within(reader, 3.0) == b""
        finally:
            await close(writer)


# -- 5. slow clients ---------------------------------------------------------------------------
async def test_a_trickled_head_gets_408_within_the_header_timeout(users_url: str) -> None:
    async with running_gateway(gateway_config(users_url, header_timeout=0.5)) as app:
        reader, writer = await connect(app.url)
        head = request("GET", ECHO)

        async def trickle() -> None:
            with contextlib.suppress(ConnectionError):
                for byte in head[:-4]:  # never the end of the head
                    writer.write(bytes([byte]))
                    await writer.drain()
                    await asyncio.sleep(0.2)

        started = time.monotonic()
        sender = asyncio.create_task(trickle())
        try:
            reply = await read_reply(reader, within=3)
            elapsed = time.monotonic() - started
            assert_refusal(reply, 408)
            assert 0.4 < elapsed < 1.5, elapsed
            assert await closed_within(reader, 3.0) == b""
        finally:
            sender.cancel()
            await close(writer)


async def test_an_idle_keep_alive_connection_is_closed_after_idle_timeout(users_url: str) -> None:
    async with running_gateway(gateway_config(users_url, idle_timeout=0.5)) as app:
        reader, writer = await connect(app.url)
        silent_reader, silent_writer = await connect(app.url)  # never sends a byte
        try:
            writer.write(request("GET", ECHO))
            assert (await read_reply(reader)).status == 200
            done = time.monotonic()
            assert await still_open(reader, 0.25)  # not at once
            assert await closed_within(reader, 1.5) == b""  # closed quietly: nothing was asked
            assert 0.4 < time.monotonic() - done < 1.6
            assert await closed_within(silent_reader, 1.0) == b""
        finally:
            await close(writer)
            await close(silent_writer)


async def test_a_stalled_upload_gets_408_and_reaches_no_backend(users_url: str, sink: Sink) -> None:
    config = gateway_config(users_url, sink.url, body_timeout=0.5)
    async with running_gateway(config) as app:
        reader, writer = await connect(app.url)
        try:
            writer.write(request("POST", "/api/sink/stalled", [("Content-Length", "1000")]) + b"x" * 10)
            started = time.monotonic()
            try:
                reply: Reply | None = await read_reply(reader, within=3)
            except asyncio.IncompleteReadError:
                reply = None  # closed without an answer: allowed
            assert time.monotonic() - started < 1.5
            if reply is not None:
                assert_refusal(reply, 408)
            # The stalled client does not keep its connection: the rest of the body will not come.
            assert await closed_within(reader, 3.0) == b""
            await asyncio.sleep(0.1)
            assert sink.completed == []
        finally:
            await close(writer)


# -- 6. body size ------------------------------------------------------------------------------
async def test_content_length_over_max_body_bytes_is_413_before_the_upload(users_url: str) -> None:
    async with running_gateway(gateway_config(users_url, body_timeout=0.5)) as app:
        reader, writer = await connect(app.url)
        silent_reader, silent_writer = await connect(app.url)
        try:
            writer.write(request("POST", ECHO, [("Content-Length", "200000")]))  # no body yet
            reply = await read_reply(reader)
            assert reply.status == 413
            assert reply.get("content-type") == PROBLEM
            assert reply.json()["status"] == 413
            # A client that sends the refused body anyway keeps its connection (the server
            # skips up to 1 MiB of it)...
            writer.write(b"z" * 200_000 + request("GET", ECHO))
            assert (await read_reply(reader)).status == 200
            # ...one that goes silent instead is dropped after body_timeout.
            silent_writer.write(request("POST", ECHO, [("Content-Length", "200000")]) + b"z" * 10)
            assert (await read_reply(silent_reader)).status == 413
            started = time.monotonic()
            assert await closed_within(silent_reader, 2.0) == b""
            assert time.monotonic() - started < 1.5
        finally:
            await close(writer)
            await close(silent_writer)


async def test_a_chunked_body_past_max_body_bytes_is_413_and_never_complete_upstream(
        users_url: str, sink: Sink) -> None:
    config = gateway_config(users_url, sink.url, max_body_bytes=4096)
    async with running_gateway(config) as app:
        reader, writer = await connect(app.url)
        try:
            writer.write(request("POST", "/api/sink/chunked", [("Transfer-Encoding", "chunked")]))
            answer = asyncio.create_task(read_reply(reader))
            with contextlib.suppress(ConnectionError):
                for _ in range(8):
                    writer.write(b"400\r\n" + b"c" * 1024 + b"\r\n")
                    await writer.drain()
                    await asyncio.sleep(0.01)
                writer.write(b"0\r\n\r\n")  # the client even completes it: too late
            reply = await answer
            assert reply.status == 413
            assert reply.get("content-type") == PROBLEM
            await asyncio.sleep(0.1)
            assert sink.completed == []
        finally:
            await close(writer)


async def test_a_refused_chunked_body_is_skipped_only_up_to_a_bound(users_url: str) -> None:
    # After an early refusal the server reads and drops the rest of a body to keep the
    # connection, but a chunked body has no length to check: at most 1 MiB, then the close.
    async with running_gateway(gateway_config(users_url)) as app:
        reader, writer = await connect(app.url)
        try:
            writer.write(request("POST", "/api/readonly", [("Transfer-Encoding", "chunked")]))
            reply = await read_reply(reader)
            assert reply.status == 405
            block = b"4000\r\n" + b"c" * 0x4000 + b"\r\n"
            sent = 0
            with contextlib.suppress(ConnectionError):
                async with asyncio.timeout(5):
                    while sent < 8 * 1024 * 1024 and not reader.at_eof():
                        writer.write(block)
                        await writer.drain()
                        sent += len(block)
                        await asyncio.sleep(0)
            assert await closed_within(reader, 3.0) == b""
            assert sent < 4 * 1024 * 1024, f"the server read {sent} bytes of a refused body"
        finally:
            await close(writer)


# -- 7 + 8. bad input --------------------------------------------------------------------------
async def test_http_2_0_request_line_is_505(gw: GatewayApp) -> None:
    reader, writer = await connect(gw.url)
    try:
        writer.write(b"GET / HTTP/2.0\r\nHost: gateway.test\r\n\r\n")
        assert_refusal(await read_reply(reader), 505)
        assert await closed_within(reader, 3.0) == b""
    finally:
        await close(writer)


async def test_http_0_9_request_is_400_not_a_hang(gw: GatewayApp) -> None:
    reader, writer = await connect(gw.url)
    try:
        writer.write(b"GET /\r\n")
        assert_refusal(await read_reply(reader, within=2), 400)
        assert await closed_within(reader, 3.0) == b""
    finally:
        await close(writer)


@pytest.mark.parametrize("raw", [
    b"GET /api/users HTTP/1.1 extra\r\nHost: x\r\n\r\n",  # junk after the version
    b"G(T /api/users HTTP/1.1\r\nHost: x\r\n\r\n",  # a separator in the method
    b"GET /api/us ers HTTP/1.1\r\nHost: x\r\n\r\n",  # a space in the target
    b"GET /api/users HTTP/1.1\r\nHost x\r\n\r\n",  # a field without a colon
    b"GET /api/users HTTP/1.1\r\nHost : x\r\n\r\n",  # whitespace before the colon (RFC 9112 5.1)
    b"GET /api/users HTTP/1.1\r\nHo\x01st: x\r\n\r\n",  # a control character in a name
    b"GET /api/users HTTP/1.1\r\nHost: x\r\nX: a\x00b\r\n\r\n",  # NUL in a value
    b"GET /api/users HTTP/1.1\r\nHost: x\r\nContent-Length: 5x\r\n\r\nhello",  # not a number
], ids=["version-junk", "method", "target-space", "no-colon", "space-before-colon", "ctl-name",
        "nul-value", "length-not-a-number"])
async def test_invalid_request_syntax_is_400(gw: GatewayApp, raw: bytes) -> None:
    reader, writer = await connect(gw.url)
    try:
        writer.write(raw)
        assert_refusal(await read_reply(reader, within=2), 400)
        assert await closed_within(reader, 3.0) == b""
    finally:
        await close(writer)


@pytest.mark.parametrize("value", ["5   ", "5\t", " 5"])
async def test_content_length_with_surrounding_whitespace_is_accepted(gw: GatewayApp, value: str) -> None:
    reader, writer = await connect(gw.url)
    try:
        writer.write(f"POST {ECHO} HTTP/1.1\r\nHost: x\r\nContent-Length: {value}\r\n\r\nhello".encode())
        reply = await read_reply(reader)
        assert reply.status == 200, reply.body[:300]
        assert reply.json()["body_length"] == 5
        writer.write(request("GET", ECHO))  # framed right: the next request parses
        assert (await read_reply(reader)).status == 200
    finally:
        await close(writer)


async def test_two_different_content_lengths_are_400(gw: GatewayApp) -> None:
    reader, writer = await connect(gw.url)
    try:
        writer.write(f"POST {ECHO} HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                     "Content-Length: 6\r\n\r\nhello!".encode())
        assert_refusal(await read_reply(reader), 400)
        assert await closed_within(reader, 3.0) == b""
    finally:
        await close(writer)


async def test_connect_is_405(gw: GatewayApp) -> None:
    reader, writer = await connect(gw.url)
    try:
        writer.write(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
        reply = await read_reply(reader)
        assert_refusal(reply, 405)
        assert "GET" in (reply.get("allow") or "")
        assert await closed_within(reader, 3.0) == b""
    finally:
        await close(writer)


async def test_an_h2c_upgrade_offer_is_answered_as_http11_with_the_next_request(gw: GatewayApp) -> None:
    reader, writer = await connect(gw.url)
    try:
        writer.write(
            request("GET", f"{ECHO}?n=1", [("Connection", "Upgrade, HTTP2-Settings"), ("Upgrade", "h2c"),
                                           ("HTTP2-Settings", "AAMAAABkAARAAAAAAAIAAAAA")])
            + request("GET", f"{ECHO}?n=2"))
        first = await read_reply(reader)
        second = await read_reply(reader)
        assert (first.version, first.status) == ("HTTP/1.1", 200)
        assert first.get("upgrade") is None
        assert first.json()["query_string"] == "n=1"
        assert (second.version, second.status) == ("HTTP/1.1", 200)
        assert second.json()["query_string"] == "n=2"
    finally:
        await close(writer)


async def test_an_unknown_route_still_carries_date_and_server(gw: GatewayApp) -> None:
    # The control plane answers through the same engine (read_reply checks Date and Server).
    reader, writer = await connect(gw.url)
    try:
        writer.write(request("GET", "/no/such/path") + request("HEAD", "/no/such/path"))
        assert (await read_reply(reader)).status == 404
        assert (await read_reply(reader, head_request=True)).status in (404, 405)
    finally:
        await close(writer)


# -- 9. clients that go away -------------------------------------------------------------------
async def test_clients_disconnecting_mid_request_or_response_leave_nothing_behind(users_url: str) -> None:
    async with serving(gateway_config(users_url)) as (app, server):
        aborted = []
        # Mid-head, mid-body, while the upstream works, and mid-way through a 20 MB response.
        for raw in (b"GET /api/users HTTP/1.1\r\nHost: x\r\nX-Partial",
                    request("POST", ECHO, [("Content-Length", "100000")]) + b"x" * 1000,
                    request("GET", ECHO, [("X-Mock-Delay", "0.3")]),
                    request("GET", "/api/users/_mock/download?size=20000000")):
            reader, writer = await connect(app.url)
            writer.write(raw)
            await asyncio.sleep(0.1)
            if b"download" in raw:
                assert (await asyncio.wait_for(reader.read(65536), TIMEOUT)).startswith(b"HTTP/1.1 200")
            writer.transport.abort()  # a reset, no goodbye
            aborted.append(writer)
        # Someone else is served meanwhile.
        reader, writer = await connect(app.url)
        writer.write(request("GET", ECHO))
        assert (await read_reply(reader)).status == 200
        await close(writer)
        await wait_until(lambda: not server.connections, 3, "connections left in server.connections")
        # And after the upstream's delay passed, still fine.
        await asyncio.sleep(0.3)
        reader, writer = await connect(app.url)
        writer.write(request("GET", ECHO, [("Connection", "close")]))
        assert (await read_reply(reader)).status == 200
        await close(writer)


def reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset (SO_LINGER 0): a client that crashed."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


@pytest.mark.parametrize("goodbye", ["reset", "fin"])
@pytest.mark.parametrize("sent", [
    request("POST", ECHO, [("Content-Length", "100000")]) + b"x" * 1000,  # mid-upload
    request("GET", ECHO, [("X-Mock-Delay", "5")]),  # while the upstream works on the answer
], ids=["mid-upload", "upstream-working"])
async def test_a_client_vanishing_is_a_499_logged_at_once_not_an_upstream_failure(
        users_url: str, capsys: pytest.CaptureFixture[str], goodbye: str, sent: bytes) -> None:
    config = gateway_config(users_url)
    config["logging"] = {"level": "INFO", "access_log": True}
    async with running_gateway(config) as app:
        reader, writer = await connect(app.url)
        writer.write(sent)
        await writer.drain()
        await asyncio.sleep(0.1)  # the head (and the first body bytes) went upstream
        if goodbye == "reset":
            reset(writer)
        else:
            writer.transport.abort()  # nothing unread: a FIN
        await asyncio.sleep(0.3)  # far less than the upstream's 5 s
        lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
        (access,) = [doc for doc in lines if doc.get("logger") == "gateway.access"]
    assert access.get("client_disconnected") is True
    assert (access["status"], access["upstream_failure"]) == (499, None), access
    assert access["duration_ms"] < 1000


async def test_a_drain_past_its_grace_ends_requests_with_a_503_without_handler_errors(
        users_url: str, caplog: pytest.LogCaptureFixture) -> None:
    async with serving(gateway_config(users_url)) as (app, server):
        reader, writer = await connect(app.url)
        writer.write(request("GET", ECHO, [("X-Mock-Delay", "0.4")]))
        await asyncio.sleep(0.1)
        with caplog.at_level(logging.ERROR, logger="gateway"):
            await server.shutdown(0.1)  # the request needs longer: answered 503, then closed
            data = await closed_within(reader, 1.0)
            assert data.startswith(b"HTTP/1.1 503"), data[:200]  # never a 500
            assert b"connection: close" in data.lower()
            await asyncio.sleep(0.5)  # the upstream answers meanwhile, to nobody
        await close(writer)
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR and r.name.startswith("gateway")]
        assert errors == [], [r.getMessage() for r in errors]


# -- 10. drain on SIGTERM, as a real process ---------------------------------------------------
@pytest.fixture
def users_process() -> Iterator[MockService]:
    svc = MockService("users")
    with svc:
        yield svc


async def test_sigterm_drain_seen_from_the_wire(users_process: MockService) -> None:
    config = services_config({"users": users_process}, rate_limit={"enabled": False},
                             cache={"enabled": False}, circuit_breaker={"enabled": False})
    gw = GatewayProcess(config)
    with gw:
        assert gw.proc is not None
        idle_reader, idle_writer = await connect(gw.url)
        idle_writer.write(request("GET", ECHO))
        assert (await read_reply(idle_reader)).status == 200  # now idle, kept alive
        slow_reader, slow_writer = await connect(gw.url)
        slow_writer.write(request("GET", ECHO, [("X-Mock-Delay", "1.5")]))
        await asyncio.sleep(0.3)  # in flight upstream

        sigterm = time.monotonic()
        gw.proc.send_signal(signal.SIGTERM)
        # The idle connection is closed at once.
        assert await closed_within(idle_reader, 1.0) == b""
        # New connections are refused soon.
        async with asyncio.timeout(2):
            while True:
                try:
                    _, probe = await connect(gw.url)
                except ConnectionRefusedError:
                    break
                await close(probe)
                await asyncio.sleep(0.05)
        assert time.monotonic() - sigterm < 1.5
        # The in-flight request completes, and says it is the last one.
        reply = await read_reply(slow_reader)
        assert reply.status == 200
        assert reply.closes
        assert await closed_within(slow_reader, 3.0) == b""
        code = await asyncio.to_thread(gw.proc.wait, 10)
        assert code == 0, gw.log()
        assert time.monotonic() - sigterm < 4.0  # the drain took what it needed, not the grace (5 s)
        await close(idle_writer)
        await close(slow_writer)


# -- 11. --workers supervision, as a real process ----------------------------------------------
def _children(pid: int) -> set[int]:
    out: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            out.update(int(p) for p in (task / "children").read_text().split())
    return out


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def worker_pids(supervisor: int) -> set[int]:
    """The supervisor's worker processes (multiprocessing spawn children, not its resource
    tracker)."""
    return {pid for pid in _children(supervisor) if b"spawn_main" in _cmdline(pid)}


def listening_pids(port: int, pids: set[int]) -> set[int]:
    """Which of `pids` hold a listening socket on `port` (from /proc, no psutil)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                cols = line.split()
                if int(cols[1].rsplit(":", 1)[1], 16) == port and cols[3] == "0A":
                    inodes.add(cols[9])
    holding = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    link = os.readlink(fd)
                    if link.startswith("socket:[") and link[8:-1] in inodes:
                        holding.add(pid)
                        break
    return holding


def gone(pid: int) -> bool:
    """The process has exited (reaped, or a zombie: its sockets are closed either way)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


async def wait_for_workers(supervisor: int, port: int, count: int, seconds: float = 15) -> set[int]:
    """The supervisor's `count` workers, once each of them listens on `port`."""
    found: set[int] = set()

    def serving() -> bool:
        nonlocal found
        found = worker_pids(supervisor)
        return len(found) == count and listening_pids(port, found) == found

    await wait_until(serving, seconds, f"{count} workers listening on {port}")
    return found


async def get_ok(url: str, times: int) -> None:
    """`times` requests, each on a new connection (so the kernel spreads them over workers)."""
    for _ in range(times):
        reader, writer = await connect(url)
        writer.write(request("GET", "/api/users", [("Connection", "close")]))
        reply = await read_reply(reader)
        assert reply.status == 200, reply.body[:300]
        await close(writer)


@pytest.mark.redis
@pytest.mark.cluster
async def test_a_killed_worker_is_replaced_and_sigterm_stops_all(
        users_process: MockService, redis_server: RedisServer) -> None:
    config = services_config({"users": users_process}, redis={"url": redis_server.url},
                             rate_limit={"enabled": False}, cache={"enabled": False},
                             circuit_breaker={"enabled": False})
    seen: set[int] = set()
    gw = GatewayProcess(config, workers=2)
    with gw:
        try:
            first = await wait_for_workers(gw.pid, gw.port, 2)
            seen |= first
            await get_ok(gw.url, 6)

            victim, survivor = sorted(first)
            os.kill(victim, signal.SIGKILL)
            await wait_until(lambda: gone(victim), 5, "the killed worker exits")
            await get_ok(gw.url, 6)  # the survivor serves meanwhile
            second = await wait_for_workers(gw.pid, gw.port, 2, seconds=10)
            seen |= second
            assert victim not in second and survivor in second
            (replacement,) = second - first

            # With the original survivor gone too, only the replacement can answer.
            os.kill(survivor, signal.SIGKILL)
            await wait_until(lambda: gone(survivor), 5, "the killed worker exits")
            await get_ok(gw.url, 6)
            seen |= await wait_for_workers(gw.pid, gw.port, 2, seconds=10)
            assert replacement in seen

            children = _children(gw.pid)  # the workers and multiprocessing's resource tracker
            assert gw.proc is not None
            gw.proc.send_signal(signal.SIGTERM)
            code = await asyncio.to_thread(gw.proc.wait, 20)
            assert code == 0, gw.log()
            await wait_until(lambda: all(gone(pid) for pid in children | seen), 5,
                             "every worker (and the resource tracker) exits with the supervisor")
        finally:
            for pid in seen:  # never leave a worker behind, whatever failed above
                if b"spawn_main" in _cmdline(pid):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
