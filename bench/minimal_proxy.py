"""The least a Python proxy can be: asyncio.Protocol + httptools, both ways, no rules at all.

What the engine issue's prototype was: parse a request, forward it to one upstream over a
keep-alive connection, parse the response, send it back. No limits, no timeouts, no
keep-alive or framing rules, no bodies on requests, no backpressure, no error handling worth
the name: a bench reference only, never a server. The benchmark runs it beside the engine
(scenario `minimal`): engine / minimal is what the engine's rules cost per request.

Run:  .venv/bin/python bench/minimal_proxy.py --upstream http://127.0.0.1:8001 --port 8100
"""

from __future__ import annotations

import argparse
import asyncio
from urllib.parse import urlsplit

import httptools
import uvloop

_SKIP = {b"content-length", b"connection", b"transfer-encoding", b"keep-alive"}


class Upstream(asyncio.Protocol):
    """One keep-alive upstream connection; one response at a time."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[tuple[int, list[tuple[bytes, bytes]], bytes]] | None = None
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionResetError("upstream closed"))

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result((self.parser.get_status_code(), self.headers, b"".join(self.body)))
        self.headers, self.body = [], []


class Client(asyncio.Protocol):
    """One client connection: each request forwarded as soon as it is parsed."""

    def __init__(self, proxy: MinimalProxy) -> None:
        self.proxy = proxy
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_url(self, url: bytes) -> None:
        self.url = url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_message_complete(self) -> None:
        headers, self.headers = self.headers, []
        method = self.parser.get_method()
        asyncio.get_running_loop().create_task(self.proxy.forward(self, method, self.url, headers))


class MinimalProxy:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.idle: list[Upstream] = []

    async def forward(self, client: Client, method: bytes, url: bytes,
                      headers: list[tuple[bytes, bytes]]) -> None:
        loop = asyncio.get_running_loop()
        if self.idle:
            up = self.idle.pop()
        else:
            _, up = await loop.create_connection(Upstream, self.host, self.port)
        up.waiter = loop.create_future()
        head = [method, b" ", url, b" HTTP/1.1\r\nhost: upstream\r\n"]
        for name, value in headers:
            if name.lower() != b"host":
                head += (name, b": ", value, b"\r\n")
        head.append(b"\r\n")
        assert up.transport is not None
        up.transport.write(b"".join(head))
        try:
            status, response_headers, body = await up.waiter
        except ConnectionError:
            return
        self.idle.append(up)
        out = [b"HTTP/1.1 %d OK\r\n" % status]
        for name, value in response_headers:
            if name.lower() not in _SKIP:
                out += (name, b": ", value, b"\r\n")
        out += (b"content-length: %d\r\n\r\n" % len(body), body)
        if client.transport is not None and not client.transport.is_closing():
            client.transport.write(b"".join(out))


async def serve(upstream: str, host: str, port: int) -> None:
    url = urlsplit(upstream)
    proxy = MinimalProxy(url.hostname or "127.0.0.1", url.port or 80)
    server = await asyncio.get_running_loop().create_server(lambda: Client(proxy), host, port)
    await server.serve_forever()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--upstream", required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8100)
    args = p.parse_args()
    uvloop.run(serve(args.upstream, args.host, args.port))


if __name__ == "__main__":
    main()
