"""The gateway toward an upstream that misbehaves, or frames its responses in every legal way.

The engine's upstream side (gateway/engine/client.py, gateway/upstream.py) decides where a
response ends, whether a connection may be reused, when to retry and when to give up. A real
HTTP server library never sends a status 999, a body longer than its Content-Length or bytes on
an idle connection, and an HTTP client library hides an interim response, a re-framed body or
a cut connection. So the upstream here is a scripted fake that writes exact bytes (and pauses,
closes, resets, counts connections and requests), and the client side uses raw sockets wherever
the wire is what the test is about.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import ssl
import struct
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.inproc import running_gateway

HOST = "127.0.0.1"
HEALTH_PATH = "/_fake/health"  # the gateway's background health checks: answered, never counted
TIMEOUT = 1.0  # services.X.timeout unless a test needs its own
READ = 3.0  # the longest any single read in these tests may wait

OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
STREAM_UPLOADS = {"buffer_request_bytes": 0}  # every request body streams from its first byte


# -- the scripted fake upstream ------------------------------------------------------------------
@dataclass(eq=False)  # compared by identity: two identical requests are two requests
class UpRequest:
    """One request as the fake upstream received it."""

    method: str
    target: str
    headers: dict[str, str]  # lower-case names
    head: bytes
    body: bytes = b""  # decoded (chunked framing removed)
    raw_body: bytes = b""  # as on the wire
    complete: bool = True  # the whole body arrived before the connection ended


class Peer:
    """The fake upstream's side of one connection from the gateway."""

    def __init__(self, upstream: FakeUpstream, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.upstream = upstream
        self.reader = reader
        self.writer = writer
        self.requests: list[UpRequest] = []
        self.gone = asyncio.Event()  # the connection ended (the gateway closed it, or we did)
        self.closed = False

    async def read_request(self, *, with_body: bool = True) -> UpRequest | None:
        """The next proxied request (health checks are answered here); None at EOF.
        Without `with_body`, the body is left unread (`read_body` reads it)."""
        while True:
            try:
                head = await self.reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                self.gone.set()
                return None
            request = _parse_request_head(head)
            if request.target == HEALTH_PATH:
                self.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                continue
            if not self.requests:
                self.upstream.peers.append(self)
            self.requests.append(request)
            self.upstream.requests.append(request)
            self.upstream.arrival.set()
            if with_body:
                await self.read_body(request)
            return request

    async def read_body(self, request: UpRequest) -> None:
        reader = self.reader
        length = request.headers.get("content-length")
        raw: list[bytes] = []
        body: list[bytes] = []
        try:
            if length is not None:
                data = await reader.readexactly(int(length))
                raw.append(data)
                body.append(data)
            elif request.headers.get("transfer-encoding", "").lower() == "chunked":
                while True:
                    line = await reader.readuntil(b"\r\n")
                    raw.append(line)
                    size = int(line.split(b";")[0].strip(), 16)
                    if size == 0:
                        while True:  # trailer fields, up to the empty line
                            line = await reader.readuntil(b"\r\n")
                            raw.append(line)
                            if line == b"\r\n":
                                break
                        break
                    data = await reader.readexactly(size + 2)
                    raw.append(data)
                    body.append(data[:-2])
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            if isinstance(exc, asyncio.IncompleteReadError):
                raw.append(exc.partial)
                body.append(exc.partial)
            request.complete = False
            self.gone.set()
        request.raw_body = b"".join(raw)
        request.body = b"".join(body)

    def write(self, data: bytes) -> None:
        if not self.closed:
            self.writer.write(data)

    async def send(self, data: bytes) -> None:
        """Write and wait while the gateway is not reading (its backpressure)."""
        self.write(data)
        await self.writer.drain()

    async def wait_gone(self) -> None:
        """Until the gateway closes this connection (we read and drop what it still sends)."""
        while not self.gone.is_set():
            try:
                if not await self.reader.read(65536):
                    break
            except ConnectionError:
                break
        self.gone.set()

    async def ended(self) -> None:
        """Until this connection has ended (at most READ seconds)."""
        await asyncio.wait_for(self.gone.wait(), READ)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.writer.close()

    def reset(self) -> None:
        """Close with SO_LINGER 0: the gateway gets a RST, not a FIN."""
        if not self.closed:
            self.closed = True
            sock = self.writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.writer.transport.abort()


# What the fake does for one request: write these bytes, or run this (peer, request) coroutine.
Action = bytes | Callable[[Peer, UpRequest], Awaitable[None]]


class FakeUpstream:
    """An asyncio server on 127.0.0.1 that answers the n-th proxied request (over all its
    connections) with `actions[n]` (the last one repeats); a `script` runs each connection
    its own way instead."""

    def __init__(self, *actions: Action, script: Callable[[Peer], Awaitable[None]] | None = None,
                 tls: ssl.SSLContext | None = None) -> None:
        self.actions = actions or (OK,)
        self.script = script or self.in_turn
        self.tls = tls
        self.peers: list[Peer] = []  # connections that carried a proxied request, in order
        self.requests: list[UpRequest] = []
        self.errors: list[BaseException] = []
        self.arrival = asyncio.Event()  # set at each request's head
        self.url = ""
        self._server: asyncio.Server | None = None
        self._all: set[Peer] = set()
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def connections(self) -> int:
        return len(self.peers)

    async def wait_requests(self, count: int) -> None:
        """Until `count` proxied requests have arrived (their heads, at least)."""
        async with asyncio.timeout(READ):
            while len(self.requests) < count:
                self.arrival.clear()
                await self.arrival.wait()

    async def __aenter__(self) -> FakeUpstream:
        self._server = await asyncio.start_server(self._serve, HOST, 0, ssl=self.tls, limit=1 << 20)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"{'https' if self.tls else 'http'}://{HOST}:{port}"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        for peer in list(self._all):
            peer.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=2)
        await asyncio.wait_for(self._server.wait_closed(), 2)
        if self.errors and exc_info[0] is None:
            raise self.errors[0]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = Peer(self, reader, writer)
        self._all.add(peer)
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self.script(peer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        except Exception as exc:  # a broken script: the test fails at the end
            self.errors.append(exc)
        finally:
            peer.close()
            peer.gone.set()
            self._all.discard(peer)
            self._tasks.discard(task)

    async def in_turn(self, peer: Peer) -> None:
        """The default script: each request read whole, then answered with its action."""
        while not peer.closed:
            request = await peer.read_request()
            if request is None:
                return
            n = self.requests.index(request)
            action = self.actions[min(n, len(self.actions) - 1)]
            if isinstance(action, bytes):
                peer.write(action)
            else:
                await action(peer, request)


def _parse_request_head(head: bytes) -> UpRequest:
    lines = head[:-4].decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return UpRequest(method, target, headers, head)


async def close(peer: Peer, request: UpRequest) -> None:
    peer.close()


async def reset(peer: Peer, request: UpRequest) -> None:
    peer.reset()


async def hold(peer: Peer, request: UpRequest) -> None:
    """Never answer; keep the connection until the gateway closes it."""
    async with asyncio.timeout(30):
        await peer.wait_gone()


def response(body: bytes, *extra: bytes, status: bytes = b"200 OK") -> bytes:
    head = b"".join(h + b"\r\n" for h in extra)
    return b"HTTP/1.1 %s\r\ncontent-length: %d\r\n%s\r\n%s" % (status, len(body), head, body)


def pattern(size: int) -> bytes:
    """`size` bytes that are not all alike (every byte value, in a shifting order)."""
    block = bytes(range(256)) + bytes(range(255, -1, -1))
    return (block * (size // len(block) + 1))[:size]


def gateway_config(*urls: str, timeout: float = TIMEOUT, **extra: Any) -> dict[str, Any]:
    """Services a, b, ... at `urls`, routed at /a, /b, ...; policies off unless `extra` says."""
    names = "abcdefgh"
    config: dict[str, Any] = {
        "services": {names[i]: {"url": url, "timeout": timeout, "connect_timeout": 1,
                                "health_path": HEALTH_PATH, "health_interval": 60}
                     for i, url in enumerate(urls)},
        "routes": {f"/{names[i]}": names[i] for i in range(len(urls))},
        "logging": {"level": "WARNING"},
        "rate_limit": {"enabled": False},
        "cache": {"enabled": False},
        "circuit_breaker": {"enabled": False},
    }
    config.update(extra)
    return config


@contextlib.asynccontextmanager
async def gateway_to(*actions: Action, service_timeout: float = TIMEOUT,
                     **extra: Any) -> AsyncIterator[tuple[FakeUpstream, str]]:
    """A fake upstream answering with `actions` and a gateway in front of it (service a)."""
    async with FakeUpstream(*actions) as upstream:
        config = gateway_config(upstream.url, timeout=service_timeout, **extra)
        async with running_gateway(config) as app:
            yield upstream, app.url


# -- the client's side, raw ------------------------------------------------------------------------
@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]  # lower-case names; repeated fields joined with ", "
    head: bytes
    body: bytes = b""
    complete: bool = True  # the body arrived whole, as its framing said
    interim: list[RawResponse] = field(default_factory=list)  # 1xx before this response


@contextlib.asynccontextmanager
async def raw_connection(url: str) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port), limit=1 << 20)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer.wait_closed(), 1)


def request_bytes(method: str, path: str, *headers: bytes, body: bytes = b"") -> bytes:
    fields = b"".join(h + b"\r\n" for h in headers)
    if body:
        fields += b"content-length: %d\r\n" % len(body)
    return b"%s %s HTTP/1.1\r\nhost: gateway.test\r\n%s\r\n%s" % (method.encode(), path.encode(),
                                                                  fields, body)


async def read_message(reader: asyncio.StreamReader, method: str = "GET") -> RawResponse:
    """One response message (a 1xx too) exactly as its framing says; a cut body is incomplete."""
    async with asyncio.timeout(READ):
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head[:-4].decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name, value = name.strip().lower(), value.strip()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        message = RawResponse(status, headers, head)
        if status < 200 or method == "HEAD" or status in (204, 304):
            return message
        try:
            if "content-length" in headers:
                message.body = await reader.readexactly(int(headers["content-length"]))
            elif headers.get("transfer-encoding") == "chunked":
                parts: list[bytes] = []
                while True:
                    size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                    if size == 0:
                        while await reader.readuntil(b"\r\n") != b"\r\n":
                            pass
                        break
                    parts.append((await reader.readexactly(size + 2))[:-2])
                    message.body = b"".join(parts)
                message.body = b"".join(parts)
            else:
                message.body = await reader.read()
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            if isinstance(exc, asyncio.IncompleteReadError) and "content-length" in headers:
                message.body = exc.partial
            message.complete = False
        return message


async def read_response(reader: asyncio.StreamReader, method: str = "GET") -> RawResponse:
    """The final response, with the interim ones that came before it."""
    interim: list[RawResponse] = []
    while True:
        message = await read_message(reader, method)
        if message.status >= 200:
            message.interim = interim
            return message
        interim.append(message)


async def chunked_upload(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                         pieces: list[bytes]) -> RawResponse:
    """POST /a/up with a chunked body sent piece by piece (a pause between them); the answer."""
    writer.write(request_bytes("POST", "/a/up", b"transfer-encoding: chunked"))
    for piece in pieces:
        writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
        await writer.drain()
        await asyncio.sleep(0.01)
    writer.write(b"0\r\n\r\n")
    return await read_response(reader)


async def fetch(url: str, method: str = "GET", path: str = "/a/x", *headers: bytes,
                body: bytes = b"") -> RawResponse:
    """One request on a connection of its own."""
    async with raw_connection(url) as (reader, writer):
        writer.write(request_bytes(method, path, *headers, body=body))
        return await read_response(reader, method)


async def at_eof(reader: asyncio.StreamReader) -> bool:
    """The gateway closed (or cut) the client's connection."""
    try:
        async with asyncio.timeout(READ):
            return await reader.read(1) == b""
    except ConnectionError:
        return True


def abort(writer: asyncio.StreamWriter) -> None:
    """The client leaves with a RST (SO_LINGER 0), not a FIN."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def problem_kind(message: RawResponse) -> str:
    assert message.headers["content-type"] == "application/problem+json"
    doc = json.loads(message.body)
    assert doc["status"] == message.status
    return str(doc["type"]).rsplit("/", 1)[1]


# -- 1. framing of the response body ---------------------------------------------------------------
@pytest.mark.parametrize("size", [11, 200_000], ids=["read-whole", "streamed"])
async def test_content_length_body_is_forwarded_byte_exact(size: int) -> None:
    body = pattern(size)
    async with gateway_to(response(body, b"x-up: 1")) as (upstream, url):
        async with raw_connection(url) as (reader, writer):
            for _ in range(2):
                writer.write(request_bytes("GET", "/a/x"))
                got = await read_response(reader)
                assert got.status == 200 and got.complete
                assert got.headers["content-length"] == str(size)
                assert got.headers["x-up"] == "1"
                assert got.body == body
        assert upstream.connections == 1  # kept alive and reused


async def test_chunked_body_is_reframed_and_byte_exact() -> None:
    body = pattern(150_000)
    pieces = [body[:1], body[1:40_000], body[40_000:40_100], body[40_100:]]
    wire = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(p), p) for p in pieces)
    upstream_says = (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nx-up: 1\r\n\r\n" + wire
                     + b"0\r\nx-trailer: t\r\n\r\n")
    async with gateway_to(upstream_says) as (upstream, url):
        async with raw_connection(url) as (reader, writer):
            for _ in range(2):
                writer.write(request_bytes("GET", "/a/x"))
                got = await read_response(reader)
                assert got.status == 200 and got.complete
                assert got.headers["transfer-encoding"] == "chunked"
                assert "content-length" not in got.headers
                assert got.body == body
        assert upstream.connections == 1  # the last-chunk ended the response: reused


async def test_close_delimited_body_is_forwarded_whole() -> None:
    body = pattern(300_000)

    async def until_close(peer: Peer, request: UpRequest) -> None:
        await peer.send(b"HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\n\r\n")
        for i in range(0, len(body), 70_000):
            await peer.send(body[i:i + 70_000])
            await asyncio.sleep(0.01)
        peer.close()

    async with gateway_to(until_close) as (upstream, url):
        async with raw_connection(url) as (reader, writer):
            for _ in range(2):
                writer.write(request_bytes("GET", "/a/x"))
                got = await read_response(reader)
                assert got.status == 200 and got.complete  # the last-chunk came: not cut
                assert got.headers["transfer-encoding"] == "chunked"
                assert got.body == body
        assert upstream.connections == 2  # a close-delimited body's connection is done


async def test_a_close_delimited_body_cut_by_a_reset_is_not_complete() -> None:
    async def until_reset(peer: Peer, request: UpRequest) -> None:
        await peer.send(b"HTTP/1.1 200 OK\r\n\r\n" + b"r" * 100_000)
        await asyncio.sleep(0.1)
        peer.reset()  # an abort, not the end of the body: a FIN would be

    async with gateway_to(until_reset) as (_, url):
        async with raw_connection(url) as (reader, writer):
            writer.write(request_bytes("GET", "/a/x"))
            got = await read_response(reader)
        assert got.status == 200 and got.headers["transfer-encoding"] == "chunked"
        assert not got.complete  # no last-chunk: the client sees the response was cut
        assert got.body == b"r" * len(got.body)


@pytest.mark.parametrize("answer", [
    b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok",
], ids=["http-1.0", "connection-close"])
async def test_a_response_that_ends_its_connection_is_not_reused(answer: bytes) -> None:
    # The fake keeps the connection open: only the response's own words end it.
    async with gateway_to(answer) as (upstream, url):
        async with raw_connection(url) as (reader, writer):
            for _ in range(2):
                writer.write(request_bytes("GET", "/a/x"))
                got = await read_response(reader)
                assert got.status == 200 and got.body == b"ok"
                assert "connection" not in got.headers  # hop-by-hop: the client's stays open
        assert upstream.connections == 2
        await upstream.peers[0].ended()


# -- 2. responses without a body --------------------------------------------------------------------
async def test_head_with_a_length_and_no_body_does_not_hang_and_reuses_the_connection() -> None:
    async def answer(peer: Peer, request: UpRequest) -> None:
        if request.method == "HEAD":
            peer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n")
        else:
            peer.write(response(b"hello"))

    async with gateway_to(answer) as (upstream, url):
        async with raw_connection(url) as (reader, writer):
            started = time.monotonic()
            writer.write(request_bytes("HEAD", "/a/x"))
            got = await read_response(reader, "HEAD")
            assert got.status == 200 and got.headers["content-length"] == "5"
            writer.write(request_bytes("GET", "/a/x"))  # the same client connection: no body
            got = await read_response(reader)  # bytes came between the two responses
            assert got.status == 200 and got.body == b"hello"
            assert time.monotonic() - started < TIMEOUT / 2
        assert [r.method for r in upstream.requests] == ["HEAD", "GET"]
        assert upstream.connections == 1


async def test_a_body_after_a_head_reply_is_not_forwarded_and_ends_the_connection() -> None:
    async with gateway_to(response(b"hello"), response(b"next")) as (upstream, url):
        async with raw_connection(url) as (reader, writer):
            writer.write(request_bytes("HEAD", "/a/x"))
            got = await read_response(reader, "HEAD")
            assert got.status == 200 and got.headers["content-length"] == "5"
            writer.write(request_bytes("GET", "/a/x"))
            got = await read_response(reader)  # not "hello": that was no answer to anything
            assert got.status == 200 and got.body == b"next"
        assert upstream.connections == 2  # the connection with stray bytes was not reused


@pytest.mark.parametrize("status", [b"204 No Content", b"304 Not Modified"])
async def test_204_and_304_have_no_body(status: bytes) -> None:
    length = b"" if status.startswith(b"204") else b"content-length: 5\r\n"
    no_body = b"HTTP/1.1 %s\r\n%setag: \"v1\"\r\n\r\n" % (status, length)
    async with gateway_to(no_body, response(b"next")) as (upstream, url):
        async with raw_connection(url) as (reader, writer):
            started = time.monotonic()
            writer.write(request_bytes("GET", "/a/x"))
            got = await read_response(reader)
            assert got.status == int(status[:3]) and got.headers["etag"] == '"v1"'
            writer.write(request_bytes("GET", "/a/x"))
            got = await read_response(reader)
            assert got.status == 200 and got.body == b"next"
            assert time.monotonic() - started < TIMEOUT / 2
        assert upstream.connections == 1


# -- 3. interim responses --------------------------------------------------------------------------
async def test_100_continue_from_the_upstream_never_reaches_the_client() -> None:
    async with gateway_to(b"HTTP/1.1 100 Continue\r\n\r\n" + response(b"done")) as (_, url):
        async with raw_connection(url) as (reader, writer):
            writer.write(request_bytes("POST", "/a/x", body=b"payload"))
            got = await read_response(reader, "POST")
            assert got.interim == []  # the first bytes the client saw were the 200's
            assert got.head.startswith(b"HTTP/1.1 200 ") and got.body == b"done"


EARLY_HINTS = b"HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload; as=style\r\n\r\n"


async def test_103_early_hints_reach_an_http11_client_before_the_final_response() -> None:
    async def hints_then_answer(peer: Peer, request: UpRequest) -> None:
        await peer.send(EARLY_HINTS)
        await asyncio.sleep(0.05)
        peer.write(response(b"page"))

    async with gateway_to(hints_then_answer) as (_, url):
        async with raw_connection(url) as (reader, writer):
            writer.write(request_bytes("GET", "/a/x"))
            async with asyncio.timeout(READ):
                first = await reader.readuntil(b"\r\n\r\n")
            assert first.startswith(b"HTTP/1.1 103 ")  # the very first bytes the client sees
            assert b"\r\nlink: </style.css>; rel=preload; as=style\r\n" in first
            got = await read_response(reader)
            assert got.status == 200 and got.body == b"page" and not got.interim
        # The same, parsed whole: one 103 with its Link, then the response.
        got = await fetch(url)
        assert [m.status for m in got.interim] == [103]
        assert got.interim[0].headers["link"] == "</style.css>; rel=preload; as=style"
        assert got.status == 200 and got.body == b"page"


async def test_103_is_not_sent_to_an_http10_client() -> None:
    async with gateway_to(EARLY_HINTS + response(b"page")) as (_, url):
        async with raw_connection(url) as (reader, writer):
            writer.write(b"GET /a/x HTTP/1.0\r\nhost: gateway.test\r\n\r\n")
            got = await read_response(reader)
            assert got.status == 200 and got.body == b"page" and not got.interim


async def test_103_is_never_stored_in_the_cache() -> None:
    answer = EARLY_HINTS + response(b"page", b"cache-control: public, max-age=60")
    async with gateway_to(answer, cache={"enabled": True}) as (upstream, url):
        async with raw_connection(url) as (reader, writer):
            writer.write(request_bytes("GET", "/a/x"))
            first = await read_response(reader)
            assert [m.status for m in first.interim] == [103]
            assert first.headers["x-cache"] == "MISS"
            writer.write(request_bytes("GET", "/a/x"))
            second = await read_response(reader)
        assert second.headers["x-cache"] == "HIT"
        assert second.status == 200 and second.body == b"page"
        assert second.interim == []  # the hint was for that one exchange, not stored
        assert len(upstream.requests) == 1


# -- 4. responses that break HTTP/1.1 -----------------------------------------------------------------
BROKEN = {
    "length-and-chunked": b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n"
                          b"5\r\nhello\r\n0\r\n\r\n",
    "chunked-then-length": b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 5\r\n\r\n"
                           b"5\r\nhello\r\n0\r\n\r\n",
    "gzip-coding": b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\nxxxxx",
    "gzip-then-chunked": b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n5\r\nxxxxx\r\n0\r\n\r\n",
    "status-999": b"HTTP/1.1 999 Odd\r\ncontent-length: 2\r\n\r\nok",
    "status-099": b"HTTP/1.1 099 Odd\r\ncontent-length: 2\r\n\r\nok",
    "not-http": b"SSH-2.0-OpenSSH_9.6\r\n\r\n",
    "unasked-101": b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n",
    "head-over-64k": b"HTTP/1.1 200 OK\r\nx-big: " + b"a" * (70 * 1024) + b"\r\ncontent-length: 2\r\n\r\nok",
    "many-fields-over-64k": b"HTTP/1.1 200 OK\r\n" + b"".join(b"x-f%d: %s\r\n" % (i, b"v" * 90)
                                                            for i in range(800)) + b"\r\nok",
}


@pytest.mark.parametrize("raw", list(BROKEN.values()), ids=list(BROKEN))
async def test_a_broken_response_is_a_prompt_502_and_the_gateway_serves_on(raw: bytes) -> None:
    # After the broken bytes the fake keeps its connection open: only the gateway's own
    # judgement can end the exchange (not a close, not the service timeout).
    async with gateway_to(raw, OK) as (upstream, url):
        started = time.monotonic()
        got = await fetch(url)
        elapsed = time.monotonic() - started
        assert got.status == 502 and problem_kind(got) == "upstream-protocol"
        assert elapsed < TIMEOUT / 2
        await upstream.peers[0].ended()  # that connection is not reused
        got = await fetch(url)
        assert got.status == 200 and got.body == b"ok"
        assert upstream.connections == 2


async def test_a_head_that_never_ends_is_a_502_past_64k() -> None:
    async def endless_head(peer: Peer, request: UpRequest) -> None:
        await peer.send(b"HTTP/1.1 200 OK\r\n")
        for _ in range(100):  # 100 x 1 KiB fields, a little at a time
            if peer.gone.is_set():
                return
            await peer.send(b"x-more: " + b"m" * 1014 + b"\r\n")
            await asyncio.sleep(0.001)
        await hold(peer, request)

    async with gateway_to(endless_head) as (upstream, url):
        started = time.monotonic()
        got = await fetch(url)
        assert got.status == 502 and problem_kind(got) == "upstream-protocol"
        assert time.monotonic() - started < TIMEOUT / 2


# -- 5. a body longer or shorter than its Content-Length -----------------------------------------------
@pytest.mark.parametrize("size", [5, 100_000], ids=["read-whole", "streamed"])
async def test_bytes_past_the_content_length_are_dropped_with_the_connection(size: int) -> None:
    body = pattern(size)
    async with gateway_to(response(body) + b"EXTRA BYTES", OK) as (upstream, url):
        async with raw_connection(url) as (reader, writer):
            writer.write(request_bytes("GET", "/a/x"))
            got = await read_response(reader)
            assert got.status == 200 and got.complete
            assert got.headers["content-length"] == str(size) and got.body == body
            await upstream.peers[0].ended()  # the out-of-step connection was closed
            writer.write(request_bytes("GET", "/a/x"))  # the client's connection goes on
            got = await read_response(reader)
            assert got.status == 200 and got.body == b"ok"
        assert upstream.connections == 2


async def test_a_short_small_body_is_a_502() -> None:
    async def short(peer: Peer, request: UpRequest) -> None:
        await peer.send(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhello")
        peer.close()

    async with gateway_to(short) as (_, url):
        got = await fetch(url)
        assert got.status == 502 and problem_kind(got) == "upstream-reset"


async def test_a_short_large_body_cuts_the_client_connection() -> None:
    body = pattern(200_000)

    async def short(peer: Peer, request: UpRequest) -> None:
        await peer.send(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(body))
        await peer.send(body[:100_000])
        await asyncio.sleep(0.05)
        peer.close()

    async with gateway_to(short) as (_, url):
        async with raw_connection(url) as (reader, writer):
            writer.write(request_bytes("GET", "/a/x"))
            got = await read_response(reader)
            assert got.status == 200 and got.headers["content-length"] == "200000"
            assert not got.complete  # EOF before Content-Length bytes: visibly truncated
            assert got.body == body[:len(got.body)] and len(got.body) == 100_000
            assert await at_eof(reader)


# -- 6. bytes on an idle pooled connection ---------------------------------------------------------------
@pytest.mark.parametrize("late", [b"garbage\r\n", OK], ids=["garbage", "an-extra-response"])
async def test_bytes_on_an_idle_connection_close_it(late: bytes) -> None:
    async def answer_then_more(peer: Peer, request: UpRequest) -> None:
        await peer.send(response(b"first"))
        await asyncio.sleep(0.1)  # the connection is idle in the gateway's pool by now
        await peer.send(late)

    async with gateway_to(answer_then_more, response(b"second")) as (upstream, url):
        async with httpx.AsyncClient(base_url=url, timeout=READ) as client:
            assert (await client.get("/a/x")).content == b"first"
            await upstream.peers[0].ended()
            resp = await client.get("/a/x")
        assert resp.status_code == 200 and resp.content == b"second"
        assert upstream.connections == 2


# -- 7. timeouts ----------------------------------------------------------------------------------------
async def test_an_upstream_that_never_answers_is_a_504_after_the_timeout() -> None:
    async with gateway_to(hold, service_timeout=0.5) as (upstream, url):
        started = time.monotonic()
        got = await fetch(url)
        elapsed = time.monotonic() - started
        assert got.status == 504 and problem_kind(got) == "upstream-timeout"
        assert 0.45 <= elapsed < 1.5
        await upstream.peers[0].ended()  # and the gateway closed that connection


async def test_a_body_that_stalls_cuts_the_client_after_the_timeout() -> None:
    async def stall(peer: Peer, request: UpRequest) -> None:
        await peer.send(b"HTTP/1.1 200 OK\r\ncontent-length: 200000\r\n\r\n" + b"s" * 1000)
        await hold(peer, request)

    async with gateway_to(stall, service_timeout=0.5) as (upstream, url):
        async with raw_connection(url) as (reader, writer):
            writer.write(request_bytes("GET", "/a/x"))
            started = time.monotonic()
            got = await read_response(reader)
            elapsed = time.monotonic() - started
        assert got.status == 200 and not got.complete and got.body == b"s" * 1000
        assert 0.45 <= elapsed < 1.5
        await upstream.peers[0].ended()


async def test_a_small_body_that_stalls_is_a_504() -> None:
    async def stall(peer: Peer, request: UpRequest) -> None:
        await peer.send(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhello")
        await hold(peer, request)

    async with gateway_to(stall, service_timeout=0.5) as (_, url):
        started = time.monotonic()
        got = await fetch(url)
        assert got.status == 504 and problem_kind(got) == "upstream-timeout"
        assert 0.45 <= time.monotonic() - started < 1.5


# -- 8. never sent twice (no retries without configured ones) --------------------------------------------
@pytest.mark.parametrize("ending", [close, reset], ids=["closed", "reset"])
@pytest.mark.parametrize("method", ["GET", "HEAD", "DELETE", "OPTIONS"])
async def test_an_origin_that_took_the_request_on_a_reused_connection_sees_it_once(
        method: str, ending: Action) -> None:
    # An idempotent request on a kept-alive connection that the origin reads and drops (a
    # crash after processing) is not sent again: without configured retries, never twice.
    async with gateway_to(response(b"first"), ending, response(b"next")) as (upstream, url):
        async with httpx.AsyncClient(base_url=url, timeout=READ) as client:
            assert (await client.get("/a/x")).content == b"first"
            resp = await client.request(method, "/a/x")
            assert resp.status_code == 502
            if method != "HEAD":
                assert resp.json()["type"].endswith("/upstream-reset")
            again = await client.get("/a/x")  # on a new connection
        assert again.status_code == 200 and again.content == b"next"
        assert [len(p.requests) for p in upstream.peers] == [2, 1]  # it arrived once


async def test_a_connection_idle_past_the_keepalive_is_never_reused() -> None:
    # The upstream may be closing it as a request goes out: a new connection instead.
    async with gateway_to(OK, proxy={"upstream_keepalive": 0.3}) as (upstream, url):
        async with httpx.AsyncClient(base_url=url, timeout=READ) as client:
            assert (await client.get("/a/x")).status_code == 200
            assert (await client.get("/a/x")).status_code == 200  # reused at once
            await asyncio.sleep(0.4)
            assert (await client.get("/a/x")).status_code == 200
        assert [len(p.requests) for p in upstream.peers] == [2, 1]


async def test_an_idle_connection_the_upstream_closed_is_never_handed_out() -> None:
    async def answer_then_close_when_idle(peer: Peer, request: UpRequest) -> None:
        peer.write(OK)
        await asyncio.sleep(0.05)
        peer.close()  # its own keep-alive timeout, while the gateway holds the connection idle

    async with gateway_to(answer_then_close_when_idle) as (upstream, url):
        async with httpx.AsyncClient(base_url=url, timeout=READ) as client:
            for _ in range(3):
                assert (await client.get("/a/x")).status_code == 200
                await asyncio.sleep(0.2)
        assert [len(p.requests) for p in upstream.peers] == [1, 1, 1]  # never a 502, never twice


async def test_a_post_on_a_stale_connection_is_not_retried() -> None:
    async with gateway_to(response(b"first"), close, response(b"never")) as (upstream, url):
        async with httpx.AsyncClient(base_url=url, timeout=READ) as client:
            assert (await client.get("/a/x")).content == b"first"
            resp = await client.post("/a/x", content=b"order=1")
            assert resp.status_code == 502
            assert resp.json()["type"].endswith("/upstream-reset")
        posts = [r for r in upstream.requests if r.method == "POST"]
        assert len(posts) == 1 and posts[0].body == b"order=1"
        assert upstream.connections == 1


@pytest.mark.parametrize("ending", [close, reset], ids=["closed", "reset"])
@pytest.mark.parametrize("method", ["GET", "HEAD", "DELETE", "PUT", "POST", "PATCH"])
async def test_an_origin_that_took_the_request_on_a_fresh_connection_sees_it_once(
        method: str, ending: Action) -> None:
    # The origin reads each request whole, then drops the connection without answering (a
    # crash after processing). A fresh connection is never retried, whatever the method.
    async with gateway_to(ending) as (upstream, url):
        async with httpx.AsyncClient(base_url=url, timeout=READ) as client:
            for _ in range(3):
                body = b"x=1" if method in ("PUT", "POST", "PATCH") else None
                resp = await client.request(method, "/a/x", content=body)
                assert resp.status_code == 502
        await asyncio.sleep(0.1)
        assert len(upstream.requests) == 3 and upstream.connections == 3  # each arrived once


# -- 9. the connection pool ---------------------------------------------------------------------------------
async def test_a_full_pool_is_a_503_while_other_targets_are_unaffected() -> None:
    released = asyncio.Event()

    async def held(peer: Peer, request: UpRequest) -> None:
        await released.wait()
        peer.write(response(b"held"))

    async with FakeUpstream(held) as busy, FakeUpstream(response(b"other")) as other:
        config = gateway_config(busy.url, other.url, timeout=2,
                                proxy={"pool_size": 1, "pool_timeout": 0.3})
        async with running_gateway(config) as app:
            first = asyncio.create_task(fetch(app.url))
            try:
                await busy.wait_requests(1)
                started = time.monotonic()
                second = asyncio.create_task(fetch(app.url))
                assert (await fetch(app.url, "GET", "/b/x")).body == b"other"
                assert not second.done()  # b answered while a's second request waits
                got = await second
                elapsed = time.monotonic() - started
                assert got.status == 503 and problem_kind(got) == "upstream-pool-full"
                assert got.headers["retry-after"] == "1"
                assert 0.25 <= elapsed < 1.0
            finally:
                released.set()
            assert (await first).body == b"held"
        assert busy.connections == 1 and len(busy.requests) == 1


# -- 10. request bodies going upstream -------------------------------------------------------------------------
async def test_a_chunked_upload_is_forwarded_chunked_and_byte_exact() -> None:
    body = pattern(300_000)
    pieces = [body[:1], body[1:100_000], body[100_000:100_007], body[100_007:]]

    async def echo_length(peer: Peer, request: UpRequest) -> None:
        peer.write(response(b"%d" % len(request.body)))

    async with gateway_to(echo_length) as (upstream, url):
        async with raw_connection(url) as (reader, writer):
            got = await chunked_upload(reader, writer, pieces)
        assert got.status == 200 and got.body == b"300000"
        [request] = upstream.requests
        assert request.headers["transfer-encoding"] == "chunked"
        assert "content-length" not in request.headers
        assert request.complete and request.body == body
        assert request.raw_body.endswith(b"\r\n0\r\n\r\n")


async def test_a_stalled_small_upload_holds_no_upstream_connection() -> None:
    """300 stalled uploads used to hold every pooled connection: small bodies are read first."""
    async with gateway_to(OK, proxy={"pool_size": 2, "pool_timeout": 0.5}) as (upstream, url):
        async with contextlib.AsyncExitStack() as stack:
            stalled = []
            for _ in range(10):  # five times the pool
                reader, writer = await stack.enter_async_context(raw_connection(url))
                writer.write(request_bytes("POST", "/a/up", b"content-length: 1000") + b"0123456789")
                stalled.append((reader, writer))
            await asyncio.sleep(0.3)
            assert upstream.requests == []  # nothing went upstream yet
            for _ in range(3):
                got = await fetch(url)  # the pool is free for everyone else
                assert got.status == 200
            reader, writer = stalled[0]
            writer.write(b"u" * 990)  # the upload completes: it goes upstream whole
            got = await read_response(reader)
            assert got.status == 200
        posts = [r for r in upstream.requests if r.method == "POST"]
        assert len(posts) == 1 and posts[0].complete
        assert posts[0].body == b"0123456789" + b"u" * 990
        assert posts[0].headers["content-length"] == "1000"


async def test_a_small_chunked_upload_goes_upstream_whole_with_a_content_length() -> None:
    body = pattern(5000)
    pieces = [body[:1], body[1:3000], body[3000:]]

    async def echo_length(peer: Peer, request: UpRequest) -> None:
        peer.write(response(b"%d" % len(request.body)))

    async with gateway_to(echo_length) as (upstream, url):
        async with raw_connection(url) as (reader, writer):
            got = await chunked_upload(reader, writer, pieces)
        assert got.status == 200 and got.body == b"5000"
        [request] = upstream.requests
        assert request.headers["content-length"] == "5000"
        assert "transfer-encoding" not in request.headers
        assert request.body == body


async def test_an_upload_past_the_buffer_starts_upstream_before_it_ends() -> None:
    async with gateway_to(response(b"done"), proxy={"buffer_request_bytes": 1000}) as (upstream, url):
        async with raw_connection(url) as (reader, writer):
            writer.write(request_bytes("POST", "/a/up", b"content-length: 5000") + b"u" * 2000)
            await upstream.wait_requests(1)  # the head went upstream with the first 2000 bytes
            writer.write(b"u" * 3000)
            got = await read_response(reader)
        assert got.status == 200
        [request] = upstream.requests
        assert request.complete and request.body == b"u" * 5000


async def test_a_client_leaving_a_buffered_upload_sends_nothing_upstream() -> None:
    async with gateway_to(OK) as (upstream, url):
        async with raw_connection(url) as (reader, writer):
            writer.write(request_bytes("POST", "/a/up", b"content-length: 1000") + b"u" * 10)
            await asyncio.sleep(0.1)
            abort(writer)
        await asyncio.sleep(0.2)
        assert upstream.requests == [] and upstream.connections == 0


async def test_an_answer_before_the_upload_ended_is_forwarded_and_not_reused() -> None:
    body = pattern(200_000)

    async def refuse_early(peer: Peer) -> None:
        request = await peer.read_request(with_body=False)
        if request is None:
            return
        if peer.upstream.connections == 1:
            peer.write(response(b"too big", status=b"413 Content Too Large"))
        await peer.read_body(request)  # (a polite server drains what it refused)
        if peer.upstream.connections > 1:
            peer.write(response(b"%d" % len(request.body)))
        await peer.upstream.in_turn(peer)

    async with FakeUpstream(script=refuse_early) as upstream:
        async with running_gateway(gateway_config(upstream.url, proxy=STREAM_UPLOADS)) as app:
            async with raw_connection(app.url) as (reader, writer):
                writer.write(request_bytes("PUT", "/a/up", body=body)[:-150_000])
                await upstream.wait_requests(1)
                # Answered while the body was still going out: out of step, so closed.
                await upstream.peers[0].ended()
                writer.write(body[-150_000:])
                got = await read_response(reader)
                assert got.status == 413 and got.body == b"too big"
                writer.write(request_bytes("PUT", "/a/up", body=body))
                got = await read_response(reader)
                assert got.status == 200 and got.body == b"200000"
        first, second = upstream.requests
        assert not first.complete and second.complete and second.body == body
        assert upstream.connections == 2


@pytest.mark.parametrize("leaving", ["reset", "fin"])
@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_a_client_leaving_mid_upload_closes_the_upstream_connection(framing: str,
                                                                          leaving: str) -> None:
    async with gateway_to(response(b"never"), proxy=STREAM_UPLOADS) as (upstream, url):
        async with raw_connection(url) as (reader, writer):
            if framing == "chunked":
                writer.write(request_bytes("POST", "/a/up", b"transfer-encoding: chunked")
                             + b"2710\r\n" + b"u" * 10_000 + b"\r\n")
            else:
                writer.write(request_bytes("POST", "/a/up", b"content-length: 100000")
                             + b"u" * 10_000)
            await upstream.wait_requests(1)
            try:
                if leaving == "reset":
                    abort(writer)
                else:
                    writer.write_eof()  # what a client's close() sends: the body cannot go on
                # The upstream sees its request end before the body did, at once.
                await asyncio.wait_for(upstream.peers[0].gone.wait(), 1.0)
            finally:
                if not writer.transport.is_closing():
                    abort(writer)  # (so a gateway that missed the FIN is not held to shutdown)
        [request] = upstream.requests
        assert not request.complete and 0 < len(request.body) < 100_000
        await asyncio.sleep(0.1)
        assert len(upstream.requests) == 1 and upstream.connections == 1  # not retried


# -- 11. a client leaving while the response streams ---------------------------------------------------------
async def test_a_client_leaving_mid_response_drops_the_upstream_connection() -> None:
    client_gone = asyncio.Event()

    async def long_body(peer: Peer, request: UpRequest) -> None:
        await peer.send(b"HTTP/1.1 200 OK\r\ncontent-length: 1000000\r\n\r\n" + b"b" * 100_000)
        await client_gone.wait()
        with contextlib.suppress(ConnectionError):
            await peer.send(b"b" * 300_000)  # more, but not the end of the response
        await hold(peer, request)

    async with gateway_to(long_body, response(b"fresh")) as (upstream, url):
        async with raw_connection(url) as (reader, writer):
            writer.write(request_bytes("GET", "/a/x"))
            async with asyncio.timeout(READ):
                await reader.readuntil(b"\r\n\r\n")
                await reader.readexactly(1000)
            abort(writer)
        client_gone.set()
        await upstream.peers[0].ended()
        got = await fetch(url)
        assert got.status == 200 and got.body == b"fresh"
        assert upstream.connections == 2


@pytest.mark.parametrize("goodbye", ["fin", "reset"])
async def test_a_client_leaving_before_the_response_head_drops_the_upstream_request(goodbye: str) -> None:
    # As nginx does (proxy_ignore_client_abort off): nobody will read the answer, so the
    # upstream connection is closed at once instead of held until the upstream's timeout.
    async with gateway_to(hold, response(b"fresh")) as (upstream, url):
        async with raw_connection(url) as (reader, writer):
            writer.write(request_bytes("GET", "/a/slow"))
            await upstream.wait_requests(1)
            if goodbye == "fin":
                writer.write_eof()
                async with asyncio.timeout(READ):
                    assert await reader.read() == b""  # nothing answered, our side closed
            else:
                abort(writer)
            async with asyncio.timeout(1.0):
                await upstream.peers[0].ended()
        got = await fetch(url)
        assert got.status == 200 and got.body == b"fresh"
        assert upstream.connections == 2


@pytest.mark.parametrize("goodbye", ["fin", "reset"])
async def test_a_client_leaving_while_queued_for_a_connection_is_never_forwarded(goodbye: str) -> None:
    released = asyncio.Event()

    async def held(peer: Peer, request: UpRequest) -> None:
        await released.wait()
        peer.write(response(b"held"))

    async with gateway_to(held, response(b"next"), proxy={"pool_size": 1, "pool_timeout": 5}) as (upstream, url):
        first = asyncio.create_task(fetch(url))
        try:
            await upstream.wait_requests(1)
            async with raw_connection(url) as (reader, writer):
                writer.write(request_bytes("GET", "/a/queued"))
                await asyncio.sleep(0.2)  # waiting for the only connection
                if goodbye == "fin":
                    writer.write_eof()
                    async with asyncio.timeout(1.0):  # it stops waiting at once, answers nothing
                        assert await reader.read() == b""
                else:
                    abort(writer)
                    await asyncio.sleep(0.2)
        finally:
            released.set()
        assert (await first).body == b"held"
        got = await fetch(url)  # the connection went back to the pool, not to the one who left
        assert got.status == 200 and got.body == b"next"
        assert [r.target for r in upstream.requests] == ["/a/x", "/a/x"] and upstream.connections == 1


# -- 12. https upstreams -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def private_ca(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path, Path]]:
    """A CA and a server certificate for IP 127.0.0.1 it signed: (ca.pem, server.pem, server.key)."""
    tmp = tmp_path_factory.mktemp("ca")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=tmp, check=True, capture_output=True, timeout=20)

    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=pygateway test CA", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    openssl("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    (tmp / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
                                 "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf")
    yield tmp / "ca.pem", tmp / "server.pem", tmp / "server.key"


def server_tls(private_ca: tuple[Path, Path, Path]) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(private_ca[1], private_ca[2])
    return context


async def test_an_https_upstream_with_its_ca_file_is_verified_and_served(
        private_ca: tuple[Path, Path, Path]) -> None:
    async with FakeUpstream(response(b"secure"), tls=server_tls(private_ca)) as upstream:
        config = gateway_config(upstream.url)
        config["services"]["a"]["ca_file"] = str(private_ca[0])
        async with running_gateway(config) as app:
            for _ in range(2):
                got = await fetch(app.url)
                assert got.status == 200 and got.body == b"secure"
        assert upstream.connections == 1


async def test_an_https_upstream_outside_the_system_cas_is_refused(
        private_ca: tuple[Path, Path, Path]) -> None:
    async with FakeUpstream(response(b"secure"), tls=server_tls(private_ca)) as upstream:
        async with running_gateway(gateway_config(upstream.url)) as app:
            got = await fetch(app.url)
        assert got.status == 502 and problem_kind(got) == "upstream-connect"
        assert "certificate" in json.loads(got.body)["detail"].lower()
        assert upstream.requests == []  # nothing was sent over an unverified connection
