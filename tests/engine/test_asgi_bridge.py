"""The ASGI bridge: any ASGI 3 application (the FastAPI control plane) served by the engine.

Driven in-process through `gateway.engine.testclient.exchange` (raw request bytes into an engine
connection, the engine's bytes parsed back): the scope an application sees, request bodies in
pieces, responses in one piece or streamed (Content-Length or chunked), `http.disconnect`, the
lifespan, and an application that misbehaves.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from gateway.engine.asgi import AsgiBridge
from gateway.engine.server import Request, Server
from gateway.engine.testclient import exchange

# A split message, a control byte (RFC 9110 §5.5), a name that is not a token.
BAD_FIELDS = [(b"x-bad", b"one\r\ntwo"), (b"x-bad", b"one\x01two"), (b"x bad", b"v"), (b"x-b\xe9", b"v")]


class Recorder:
    """An ASGI app: echoes what it saw; `?stream=N` streams N chunks, `?length=1` with a
    Content-Length; `?bad=N` sends the invalid field BAD_FIELDS[N]; `?boom=1` raises."""

    def __init__(self) -> None:
        self.scopes: list[dict[str, Any]] = []
        self.after: list[dict[str, Any]] = []
        self.lifespan: list[str] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                self.lifespan.append(message["type"])
                if message["type"] == "lifespan.startup":
                    scope["state"]["ready"] = "yes"
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        self.scopes.append(scope)
        query = dict(p.split("=") for p in scope["query_string"].decode().split("&") if "=" in p)
        if query.get("boom"):
            raise RuntimeError("the application failed")
        parts = []
        while True:
            message = await receive()
            assert message["type"] == "http.request"
            parts.append(message["body"])
            if not message.get("more_body"):
                break
        body = b"".join(parts)
        if query.get("bad"):
            await send({"type": "http.response.start", "status": 200,
                        "headers": [BAD_FIELDS[int(query["bad"])]]})
            return
        if "stream" in query:
            chunks = [b"chunk-%d;" % i for i in range(int(query["stream"]))]
            headers = [(b"content-type", b"text/plain")]
            if query.get("length"):
                headers.append((b"content-length", str(sum(map(len, chunks))).encode()))
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            for chunk in chunks:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        else:
            doc = {"path": scope["path"], "raw_path": scope["raw_path"].decode(), "body": body.decode(),
                   "method": scope["method"], "state": scope["state"].get("ready")}
            await send({"type": "http.response.start", "status": 201,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": json.dumps(doc).encode()})
        self.after.append(await receive())  # once the response is out: http.disconnect


@pytest.fixture
async def served() -> Any:
    app = Recorder()
    bridge = AsgiBridge(app)
    await bridge.startup()

    async def handler(request: Request) -> None:
        await bridge(request)

    yield app, Server(handler)
    await bridge.shutdown()
    assert app.lifespan == ["lifespan.startup", "lifespan.shutdown"]


async def call(server: Server, raw: bytes) -> tuple[int, dict[bytes, bytes], bytes]:
    status, headers, body = await asyncio.wait_for(exchange(server, raw), 5)
    return status, dict(headers), body


async def test_the_scope_a_request_body_in_pieces_and_the_lifespan_state(served: Any) -> None:
    app, server = served
    raw = (b"POST /admin/caf%C3%A9?x=1 HTTP/1.1\r\nhost: gw\r\ntransfer-encoding: chunked\r\n\r\n"
           b"3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n")
    status, headers, body = await call(server, raw)
    assert status == 201 and headers[b"content-length"] == str(len(body)).encode()
    doc = json.loads(body)
    assert doc == {"path": "/admin/café", "raw_path": "/admin/caf%C3%A9", "body": "abcdefg",
                   "method": "POST", "state": "yes"}
    scope = app.scopes[0]
    assert scope["type"] == "http" and scope["http_version"] == "1.1" and scope["scheme"] == "http"
    assert scope["query_string"] == b"x=1" and (b"host", b"gw") in scope["headers"]
    assert scope["client"] == ("127.0.0.1", 40000) and scope["asgi"]["version"] == "3.0"
    assert app.after == [{"type": "http.disconnect"}]


@pytest.mark.parametrize("with_length", [False, True])
async def test_a_streamed_response_is_chunked_or_length_framed(served: Any, with_length: bool) -> None:
    _, server = served
    query = b"stream=5" + (b"&length=1" if with_length else b"")
    status, headers, body = await call(server, b"GET /s?" + query + b" HTTP/1.1\r\nhost: gw\r\n\r\n")
    assert status == 200
    assert body == b"".join(b"chunk-%d;" % i for i in range(5))
    if with_length:
        assert headers[b"content-length"] == str(len(body)).encode()
        assert b"transfer-encoding" not in headers
    else:
        assert headers[b"transfer-encoding"] == b"chunked"


async def test_head_gets_no_body_and_every_response_has_date_and_server(served: Any) -> None:
    _, server = served
    status, headers, body = await call(server, b"HEAD / HTTP/1.1\r\nhost: gw\r\n\r\n")
    assert status == 201 and body == b""
    assert headers[b"server"] == b"pygateway" and b"date" in headers


@pytest.mark.parametrize("query", [b"bad=0", b"bad=1", b"bad=2", b"bad=3", b"boom=1"])
async def test_a_misbehaving_application_gets_a_500_problem_never_a_hang(served: Any, query: bytes) -> None:
    _, server = served
    status, headers, body = await call(server, b"GET /?" + query + b" HTTP/1.1\r\nhost: gw\r\n\r\n")
    assert status == 500
    assert headers[b"content-type"] == b"application/problem+json"
    assert json.loads(body)["status"] == 500


async def test_an_application_without_lifespan_support_still_serves() -> None:
    async def plain(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            raise ValueError("no lifespan here")
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    bridge = AsgiBridge(plain)
    await bridge.startup()

    async def handler(request: Request) -> None:
        await bridge(request)

    status, headers, body = await call(Server(handler), b"GET / HTTP/1.1\r\nhost: gw\r\n\r\n")
    assert status == 204 and body == b"" and b"content-length" not in headers
    await bridge.shutdown()
