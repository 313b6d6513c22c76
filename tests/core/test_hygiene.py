"""Header and request-line hygiene (the hardening issue): what a client cannot make the gateway
forward. Raw requests on a real socket; the mock service's echo reports what arrived."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway.engine.wire import Headers
from tests.support.inproc import proxy_config, running_gateway

ECHO = "/api/users/_mock/echo"


def config(users_url: str, **proxy: Any) -> dict[str, Any]:
    return proxy_config(
        {"users": {"url": users_url, "timeout": 5}},
        {"/api/users": "users",
         "/api/stripped": {"service": "users", "strip_prefix": True},
         "/api/traced": {"service": "users", "methods": ["GET", "TRACE"], "strip_prefix": True}},
        proxy=proxy)


@pytest.fixture
async def gw(users_url: str) -> AsyncIterator[str]:
    async with running_gateway(config(users_url)) as app:
        yield app.url


async def raw(url: str, data: bytes) -> tuple[int, Headers, bytes]:
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(data)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        fields = [tuple(line.split(b": ", 1)) for line in lines[1:] if line]
        length = next(int(v) for k, v in fields if k.lower() == b"content-length")
        body = await asyncio.wait_for(reader.readexactly(length), 5)
        return status, fields, body  # type: ignore[return-value]
    finally:
        writer.close()


def request(path: str, *fields: bytes, method: bytes = b"GET", host: bytes = b"gw.test") -> bytes:
    return b"%s %s HTTP/1.1\r\nHost: %s\r\n%sConnection: close\r\n\r\n" % (
        method, path.encode(), host, b"".join(f + b"\r\n" for f in fields))


async def test_fields_whose_names_hold_an_underscore_are_dropped(gw: str) -> None:
    status, _, body = await raw(gw, request(ECHO, b"X_User_ID: admin", b"Transfer_Encoding: x",
                                            b"X-Plain: kept"))
    assert status == 200
    names = [k.lower() for k, _ in json.loads(body)["headers"]]
    assert "x-plain" in names
    assert not any("_" in n for n in names), names


async def test_underscores_pass_when_configured(users_url: str) -> None:
    async with running_gateway(config(users_url, underscores_in_headers=True)) as app:
        status, _, body = await raw(app.url, request(ECHO, b"X_Custom: yes"))
    assert status == 200
    assert ["x_custom", "yes"] in json.loads(body)["headers"]  # names travel in lower case


async def test_header_value_bytes_pass_unchanged(gw: str) -> None:
    value = bytes(range(0x80, 0x100)) + b" \tend"
    status, _, body = await raw(gw, request(ECHO, b"X-Bytes: " + value))
    assert status == 200
    sent = dict((k.lower(), v) for k, v in json.loads(body)["headers"])
    assert sent["x-bytes"].encode("latin-1") == value.rstrip(b" \t")  # OWS around a value is not part of it


@pytest.mark.parametrize("host", [b"evil example", b"evil.example/x?@", b"a@b", b"[::1", b"gw.test:80x"])
async def test_an_invalid_host_is_a_400_never_forwarded(gw: str, host: bytes) -> None:
    status, fields, body = await raw(gw, request(ECHO, host=host))
    assert status == 400
    assert json.loads(body)["type"].endswith("/invalid-host")
    assert (b"content-type", b"application/problem+json") in fields


@pytest.mark.parametrize("host", [b"gw.test", b"127.0.0.1:8000", b"[::1]:8080", b"xn--bcher-kva.example"])
async def test_valid_hosts_pass(gw: str, host: bytes) -> None:
    status, _, body = await raw(gw, request(ECHO, host=host))
    assert status == 200
    assert ["x-forwarded-host", host.decode()] in [[k.lower(), v] for k, v in json.loads(body)["headers"]]


@pytest.mark.parametrize("path", ["/api/users/%u002e", "/api/users/a%", "/api/users/%4", "/api/users/%zz"])
async def test_an_invalid_percent_escape_in_the_path_is_a_400(gw: str, path: str) -> None:
    status, _, body = await raw(gw, request(path))
    assert status == 400
    assert json.loads(body)["type"].endswith("/unsafe-path")


async def test_trace_is_refused_unless_the_route_lists_it(gw: str) -> None:
    status, fields, body = await raw(gw, request(ECHO, b"Cookie: secret=1", method=b"TRACE"))
    assert status == 405 and dict(fields)[b"allow"].startswith(b"GET")
    assert b"secret" not in body
    status, _, _ = await raw(gw, request("/api/traced/_mock/echo", method=b"TRACE"))
    assert status == 200


async def test_strip_prefix_cuts_the_raw_path_where_the_decoded_prefix_ends(gw: str) -> None:
    # `%73` is `s`: the route is /api/stripped, and what reaches the origin is what follows it.
    status, _, body = await raw(gw, request("/api/stripp%65d/_mock/echo?x=1"))
    assert status == 200
    assert json.loads(body)["raw_path"] == "/_mock/echo?x=1"


@pytest.mark.parametrize("named", [b"content-length", b"Content-Length, keep-alive", b"transfer-encoding"])
async def test_a_connection_field_naming_the_framing_cannot_smuggle_a_request(gw: str, named: bytes) -> None:
    # Connection names the fields to drop (RFC 9110 7.6.1); the body must still go upstream
    # framed by what the gateway read, or it would be read there as a second request.
    smuggled = b"GET /internal/admin HTTP/1.1\r\nHost: x\r\nX-User-ID: admin\r\n\r\n"
    if named == b"transfer-encoding":
        framing, body = b"Transfer-Encoding: chunked", b"%x\r\n%s\r\n0\r\n\r\n" % (len(smuggled), smuggled)
    else:
        framing, body = b"Content-Length: %d" % len(smuggled), smuggled
    data = (b"POST /api/users/_mock/echo HTTP/1.1\r\nHost: gw.test\r\nConnection: %s\r\n%s\r\n\r\n"
            % (named, framing)) + body
    status, _, answer = await raw(gw, data)
    assert status == 200
    echo = json.loads(answer)
    assert echo["body_length"] == len(smuggled)  # the whole body, as a body
    assert echo["content_length"] == len(smuggled) or echo["transfer_encoding"] == "chunked"
