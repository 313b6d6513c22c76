"""The ASGI bridge: an ASGI 3 application (the FastAPI control plane) served by the engine.

Everything off the hot path goes through here: `/`, `/health`, `/ready`, `/metrics`, `/docs`,
`/dashboard`, `/admin/...`. The scope is the full ASGI HTTP scope; the request body reaches the
application through `receive` as it arrives (with the engine's backpressure), the response
leaves through `send` (one write when it comes in one piece, streamed otherwise); `receive`
reports `http.disconnect` once the response is out or the client has gone. `startup()` and
`shutdown()` run the application's lifespan, when it has one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import unquote

from gateway.engine.server import BodyTimeout, ClientGone, Request
from gateway.engine.wire import valid_field_name, valid_field_value

log = logging.getLogger("gateway.engine")

Scope = dict[str, Any]
Message = dict[str, Any]
AsgiApp = Callable[..., Awaitable[None]]  # (scope, receive, send), ASGI 3

_ASGI = {"version": "3.0", "spec_version": "2.4"}


class AsgiBridge:
    """Runs one ASGI application for requests the engine hands it."""

    def __init__(self, app: AsgiApp) -> None:
        self.app = app
        self.state: dict[str, Any] = {}
        self._lifespan: _Lifespan | None = None

    async def startup(self) -> None:
        self._lifespan = _Lifespan(self.app, self.state)
        await self._lifespan.startup()

    async def shutdown(self) -> None:
        if self._lifespan is not None:
            await self._lifespan.shutdown()
            self._lifespan = None

    async def __call__(self, request: Request, path: str | None = None) -> None:
        conn = request.conn
        transport = conn.transport
        sockname = transport.get_extra_info("sockname") if transport is not None else None
        server = (str(sockname[0]), int(sockname[1])) if isinstance(sockname, tuple) else None
        scope: Scope = {
            "type": "http",
            "asgi": _ASGI,
            "http_version": request.version,
            "method": request.method,
            "scheme": request.scheme,
            "path": path if path is not None else unquote(request.path.decode("latin-1")),
            "raw_path": request.path,
            "query_string": request.query,
            "root_path": "",
            "headers": request.headers,
            "client": conn.peer,
            "server": server,
            "state": dict(self.state),
        }
        exchange = _Exchange(request)
        await self.app(scope, exchange.receive, exchange.send)


class _Exchange:
    """`receive` and `send` for one request."""

    __slots__ = ("request", "conn", "body_done", "status", "headers", "streaming", "done")

    def __init__(self, request: Request) -> None:
        self.request = request
        self.conn = request.conn
        self.body_done = False
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.streaming = False
        self.done = False

    async def receive(self) -> Message:
        body = self.request.body
        if not self.body_done and body is None:
            self.body_done = True
            return {"type": "http.request", "body": b"", "more_body": False}
        if not self.body_done and body is not None:
            try:
                chunk = await body.read()
            except (ClientGone, BodyTimeout):
                self.body_done = True
                return {"type": "http.disconnect"}
            if chunk:
                return {"type": "http.request", "body": chunk, "more_body": True}
            self.body_done = True
            return {"type": "http.request", "body": b"", "more_body": False}
        if not self.done and not self.conn.closed:
            await self.conn.response_finished()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            if self.status:
                raise RuntimeError("http.response.start sent twice")
            self.status = int(message["status"])
            headers = []
            for name, value in message.get("headers", ()):
                name, value = bytes(name).lower(), bytes(value)
                if not valid_field_name(name) or not valid_field_value(value):
                    raise ValueError(f"invalid response header {name!r}")
                headers.append((name, value))
            self.headers = headers
            return
        if kind != "http.response.body":
            return  # trailers and extensions are not offered
        if not self.status:
            raise RuntimeError("http.response.body before http.response.start")
        if self.done:
            return
        data = bytes(message.get("body", b""))
        more = bool(message.get("more_body", False))
        conn = self.conn
        if not self.streaming:
            if not more:
                self.done = True
                conn.respond(self.status, self.headers, data)
                return
            self.streaming = True
            length = next((v for k, v in self.headers if k == b"content-length"), None)
            conn.start(self.status, self.headers,
                       int(length) if length is not None and length.isdigit() else None)
        if data:
            await conn.write(data)
        if not more:
            self.done = True
            conn.end()


class _Lifespan:
    """The ASGI lifespan protocol, for applications that speak it."""

    def __init__(self, app: AsgiApp, state: dict[str, Any]) -> None:
        self.app = app
        self.state = state
        self._inbox: asyncio.Queue[Message] = asyncio.Queue()
        self._started: asyncio.Future[None] | None = None
        self._stopped: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._unsupported = False

    async def startup(self) -> None:
        loop = asyncio.get_running_loop()
        self._started = loop.create_future()
        self._stopped = loop.create_future()
        self._task = loop.create_task(self._run())
        await self._inbox.put({"type": "lifespan.startup"})
        await self._started

    async def shutdown(self) -> None:
        if self._unsupported or self._task is None or self._task.done():
            return
        await self._inbox.put({"type": "lifespan.shutdown"})
        assert self._stopped is not None
        await self._stopped
        await self._task

    async def _run(self) -> None:
        scope = {"type": "lifespan", "asgi": _ASGI, "state": self.state}
        try:
            await self.app(scope, self._inbox.get, self._send)
        except Exception as exc:
            if self._started is not None and not self._started.done():
                # An application without lifespan support raises at once: that is fine.
                self._unsupported = True
                log.debug("the ASGI application has no lifespan: %s", exc)
                self._started.set_result(None)
            else:
                log.exception("the ASGI application's lifespan failed")
        finally:
            for future in (self._started, self._stopped):
                if future is not None and not future.done():
                    future.set_result(None)

    async def _send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "lifespan.startup.complete":
            assert self._started is not None
            self._started.set_result(None)
        elif kind == "lifespan.startup.failed":
            assert self._started is not None
            self._started.set_exception(RuntimeError(message.get("message") or "startup failed"))
        elif kind in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
            assert self._stopped is not None
            if not self._stopped.done():
                self._stopped.set_result(None)
