"""Drive the engine in-process, without sockets (tests and the in-process benchmark).

    status, headers, body = await exchange(Server(app), b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n")

The raw request is written into a fresh `HttpConnection` over an in-memory transport and the
bytes the engine writes back are parsed with llhttp, so the request goes through exactly the
parsing, limits and framing it would meet on a socket.
"""

from __future__ import annotations

import asyncio
from typing import Any

from httptools import HttpResponseParser

from gateway.engine.server import HttpConnection, Server


class MemoryTransport(asyncio.Transport):
    """The engine's side of an in-memory connection; what it writes goes to `on_write`."""

    def __init__(self, protocol: HttpConnection, on_write: Any, on_close: Any,
                 peer: tuple[str, int] = ("127.0.0.1", 40000)) -> None:
        super().__init__()
        self._protocol = protocol
        self._on_write = on_write
        self._on_close = on_close
        self._closing = False
        self._reading = True
        self._extra = {"peername": peer, "sockname": ("127.0.0.1", 80)}

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._extra.get(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._closing:
            self._on_write(bytes(data))

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.close()

    def is_closing(self) -> bool:
        return self._closing

    def is_reading(self) -> bool:
        return self._reading

    def pause_reading(self) -> None:
        self._reading = False

    def resume_reading(self) -> None:
        self._reading = True

    def close(self) -> None:
        if not self._closing:
            self._closing = True
            loop = asyncio.get_running_loop()
            loop.call_soon(self._protocol.connection_lost, None)
            loop.call_soon(self._on_close)

    def abort(self) -> None:
        self.close()


class _Reply:
    """Parses what the engine wrote back, until the final response is complete."""

    def __init__(self, head_only: bool = False) -> None:
        self.head_only = head_only  # a HEAD request's response has no body, whatever it says
        self.parser = HttpResponseParser(self)
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.done = asyncio.get_running_loop().create_future()
        self._interim = False

    def feed(self, data: bytes) -> None:
        if not self.done.done():
            try:
                self.parser.feed_data(data)
            except Exception as exc:  # the engine wrote something that is not HTTP/1.1
                if not self.done.done():
                    self.done.set_exception(ConnectionError(f"invalid response: {exc}"))

    def closed(self) -> None:
        if not self.done.done():
            if self.status:
                self.done.set_result(None)  # a close-delimited body, or a cut one
            else:
                self.done.set_exception(ConnectionError("the connection closed without a response"))

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status < 200:
            self._interim = True
            self.headers = []
            return
        self.status = status
        if self.head_only and not self.done.done():
            self.done.set_result(None)

    def on_body(self, body: bytes) -> None:
        if not self.head_only:
            self.body.append(body)

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        if not self.done.done():
            self.done.set_result(None)


async def exchange(server: Server, data: bytes, client: tuple[str, int] = ("127.0.0.1", 40000)
                   ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """Write `data` (one raw request) into a new in-memory connection of `server`; the final
    response's status, headers (as sent, names in lower case) and body."""
    server.start_sweeping(asyncio.get_running_loop())
    reply = _Reply(head_only=data.startswith(b"HEAD "))
    conn = server.protocol()
    transport = MemoryTransport(conn, reply.feed, reply.closed, client)
    conn.connection_made(transport)
    conn.data_received(data)
    try:
        await reply.done
    finally:
        transport.close()
    return reply.status, reply.headers, b"".join(reply.body)

