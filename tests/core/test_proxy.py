"""The proxy hot path seen from a client: routing, forwarding, headers, errors."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.support.inproc import running_gateway, running_service
from tests.support.processes import free_port


def base_config(urls: dict[str, str], **extra: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "services": {n: {"url": u, "timeout": 2, "connect_timeout": 1, "health_interval": 5}
                     for n, u in urls.items()},
        "routes": {f"/api/{n}": n for n in urls},
        "logging": {"level": "WARNING"},
        "rate_limit": {"enabled": False},
        "cache": {"enabled": False},
        "circuit_breaker": {"enabled": False},
    }
    config.update(extra)
    return config


@pytest.fixture
async def gw(users_url: str) -> AsyncIterator[httpx.AsyncClient]:
    config = base_config({"users": users_url})
    config["routes"]["/api/stripped"] = {"service": "users", "strip_prefix": True}
    config["routes"]["/api/readonly"] = {"service": "users", "methods": ["GET", "HEAD"]}
    config["proxy"] = {"max_body_bytes": 1_000_000, "max_header_bytes": 8192,
                       "trusted_proxies": ["10.0.0.0/8"]}
    async with running_gateway(config) as app:
        async with httpx.AsyncClient(base_url=app.url, timeout=10) as client:
            yield client


def echo_headers(resp: httpx.Response) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in resp.json()["headers"]:
        out.setdefault(name.lower(), []).append(value)
    return out


async def test_routes_to_the_service_and_adds_gateway_headers(gw: httpx.AsyncClient) -> None:
    resp = await gw.get("/api/users")
    assert resp.status_code == 200
    assert resp.json()["total"] >= 1
    assert resp.headers["x-service"] == "users"
    assert resp.headers["x-response-time"].endswith("ms")
    assert len(resp.headers["x-request-id"]) >= 16
    assert resp.headers.get_list("date") and len(resp.headers.get_list("date")) == 1


async def test_prefix_matches_whole_segments_only(gw: httpx.AsyncClient) -> None:
    resp = await gw.get("/api/usersx")
    assert resp.status_code == 404
    assert resp.headers["content-type"] == "application/problem+json"
    assert resp.json()["status"] == 404


async def test_path_and_query_forwarded_unchanged(gw: httpx.AsyncClient) -> None:
    resp = await gw.get("/api/users/_mock/echo?b=2&a=1&a=%20x&empty=")
    body = resp.json()
    assert body["path"] == "/api/users/_mock/echo"
    assert body["query_string"] == "b=2&a=1&a=%20x&empty="


async def test_strip_prefix_only_when_route_asks(gw: httpx.AsyncClient) -> None:
    resp = await gw.get("/api/stripped/_mock/echo")
    assert resp.status_code == 200
    assert resp.json()["path"] == "/_mock/echo"


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
async def test_every_method_is_forwarded(gw: httpx.AsyncClient, method: str) -> None:
    content = b"payload" if method in ("POST", "PUT", "PATCH") else None
    resp = await gw.request(method, "/api/users/_mock/echo", content=content)
    assert resp.status_code == 200
    body = resp.json()
    assert body["method"] == method
    assert body["body_length"] == (7 if content else 0)


async def test_head_has_no_body(gw: httpx.AsyncClient) -> None:
    resp = await gw.head("/api/users/1")
    assert resp.status_code == 200
    assert resp.content == b""


async def test_hop_by_hop_headers_are_removed(gw: httpx.AsyncClient) -> None:
    resp = await gw.get("/api/users/_mock/echo", headers={
        "Connection": "keep-alive, X-Secret-Hop", "X-Secret-Hop": "1", "Keep-Alive": "timeout=5",
        "TE": "trailers", "Proxy-Authorization": "Basic abc", "X-Kept": "yes"})
    headers = echo_headers(resp)
    for gone in ("x-secret-hop", "keep-alive", "te", "proxy-authorization"):
        assert gone not in headers
    assert headers["x-kept"] == ["yes"]


async def test_forwarded_headers_from_untrusted_peer_are_replaced(gw: httpx.AsyncClient) -> None:
    resp = await gw.get("/api/users/_mock/echo", headers={
        "X-Forwarded-For": "6.6.6.6", "X-Forwarded-Proto": "https", "X-Real-IP": "6.6.6.6",
        "Host": "api.example.com"})
    headers = echo_headers(resp)
    assert headers["x-forwarded-for"] == ["127.0.0.1"]
    assert headers["x-forwarded-proto"] == ["http"]
    assert headers["x-forwarded-host"] == ["api.example.com"]
    assert headers["x-real-ip"] == ["127.0.0.1"]


async def test_forwarded_chain_extended_from_trusted_proxy(users_url: str) -> None:
    config = base_config({"users": users_url}, proxy={"trusted_proxies": ["127.0.0.1/32"]})
    async with running_gateway(config) as app, httpx.AsyncClient(base_url=app.url) as client:
        resp = await client.get("/api/users/_mock/echo", headers={
            "X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https",
            "X-Forwarded-Host": "shop.example.com"})
    headers = echo_headers(resp)
    assert headers["x-forwarded-for"] == ["203.0.113.7, 127.0.0.1"]
    assert headers["x-forwarded-proto"] == ["https"]
    assert headers["x-forwarded-host"] == ["shop.example.com"]
    assert headers["x-real-ip"] == ["203.0.113.7"]


async def test_request_id_kept_when_sane_and_sent_upstream(gw: httpx.AsyncClient) -> None:
    resp = await gw.get("/api/users/_mock/echo", headers={"X-Request-ID": "abc-123.DEF:9"})
    assert resp.headers["x-request-id"] == "abc-123.DEF:9"
    assert echo_headers(resp)["x-request-id"] == ["abc-123.DEF:9"]


@pytest.mark.parametrize("bad", ["has space", "x" * 129, "semi;colon", "<script>"])
async def test_insane_request_id_is_replaced(gw: httpx.AsyncClient, bad: str) -> None:
    resp = await gw.get("/api/users/_mock/echo", headers={"X-Request-ID": bad})
    rid = resp.headers["x-request-id"]
    assert rid != bad and len(rid) == 32
    assert echo_headers(resp)["x-request-id"] == [rid]


@pytest.mark.parametrize("path", [
    "/api/users/..%2forders", "/api/users/%2e%2e/orders", "/api/users/%2E%2E%2Forders",
    "/api/users/..%5corders", "/api/users/%252e%252e/orders", "/api/users/a%00b",
])
async def test_paths_that_try_to_leave_their_route_are_refused(gw: httpx.AsyncClient, path: str) -> None:
    resp = await gw.get(path)
    assert resp.status_code == 400
    assert resp.headers["content-type"] == "application/problem+json"
    assert resp.json()["request_id"] == resp.headers["x-request-id"]


@pytest.mark.parametrize("target", [b"/api/users/../orders", b"/api/users/..;/orders",
                                    b"/api/users/.;x/1", b"/api/users/./1"])
async def test_raw_dot_segments_are_refused(target: bytes) -> None:
    # httpx normalises dot-segments, so send the raw request line ourselves.
    async with running_service("users") as users_url:
        async with running_gateway(base_config({"users": users_url})) as app:
            port = int(app.url.rsplit(":", 1)[1])
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            await writer.drain()
            data = await reader.read()
            writer.close()
    assert data.startswith(b"HTTP/1.1 400")


async def test_method_not_allowed_where_route_restricts(gw: httpx.AsyncClient) -> None:
    resp = await gw.post("/api/readonly/x", content=b"{}")
    assert resp.status_code == 405
    assert resp.headers["allow"] == "GET, HEAD"
    assert resp.json()["status"] == 405


async def test_body_over_limit_is_413_and_the_backend_sees_nothing(gw: httpx.AsyncClient, users_url: str) -> None:
    async with httpx.AsyncClient(base_url=users_url, timeout=10) as direct:
        assert (await direct.delete("/_mock/stats")).status_code == 204
        resp = await gw.post("/api/users", content=b"x" * 1_000_001,
                             headers={"content-type": "application/json"})
        assert resp.status_code == 413 and resp.json()["status"] == 413
        # Refused on its Content-Length: not one byte of it went upstream.
        assert (await direct.get("/_mock/stats")).json()["requests"] == 0


async def test_chunked_body_over_limit_is_413_and_nothing_is_processed(gw: httpx.AsyncClient) -> None:
    before = (await gw.get("/api/users", params={"per_page": 1})).json()["total"]

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"name": "big", "email": "big@example.com", "pad": "'
        for _ in range(20):
            yield b"y" * 100_000
        yield b'"}'

    resp = await gw.post("/api/users", content=chunks(), headers={"content-type": "application/json"})
    assert resp.status_code == 413
    # The upstream got an unterminated request and never a complete one: no user was created.
    after = (await gw.get("/api/users", params={"per_page": 1})).json()["total"]
    assert after == before


async def test_chunked_upload_within_limit_streams(gw: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(5):
            yield b"z" * 100_000

    resp = await gw.post("/api/users/_mock/echo", content=chunks())
    assert resp.status_code == 200
    assert resp.json()["body_length"] == 500_000


async def test_headers_too_large_is_431(gw: httpx.AsyncClient) -> None:
    resp = await gw.get("/api/users", headers={"X-Big": "a" * 9000})
    assert resp.status_code == 431
    assert resp.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize("name", ["Content-Type", "Authorization", "X-API-Key", "Range"])
async def test_a_repeated_singleton_header_is_400_and_never_forwarded(gw: httpx.AsyncClient, name: str) -> None:
    # Two values the gateway and the backend might read differently (an identity, a body type).
    before = (await gw.get("/metrics")).json()["requests"]["total"]
    resp = await gw.request("HEAD", "/api/users", headers=[(name, "a"), (name, "b")])
    assert resp.status_code == 400
    assert resp.headers["content-type"] == "application/problem+json"
    resp = await gw.get("/api/users/_mock/echo", headers=[(name, "a"), (name, "b")])
    assert resp.status_code == 400
    assert resp.json()["type"].endswith("/duplicate-header") and name in resp.json()["detail"]
    after = (await gw.get("/metrics")).json()["requests"]
    assert after["total"] == before + 2 and after["failed"] >= 2
    users = (await gw.get("/metrics")).json()["services"].get("users", {})
    assert users.get("upstream_failures", {}) == {}  # nothing reached (or broke) the backend


async def test_bad_content_length_is_400_not_500(gw: httpx.AsyncClient) -> None:
    port = int(str(gw.base_url).rsplit(":", 1)[1].rstrip("/"))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /api/users/_mock/echo HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n"
                 b"Connection: close\r\n\r\n")
    await writer.drain()
    data = await reader.read()
    writer.close()
    assert data.startswith(b"HTTP/1.1 400")


async def _raw(gw: httpx.AsyncClient, request: bytes) -> tuple[int, dict[bytes, bytes], bytes]:
    """Send `request` as bytes on a new connection; the answer's status, headers and body."""
    port = int(str(gw.base_url).rsplit(":", 1)[1].rstrip("/"))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    lines = head[:-4].split(b"\r\n")
    fields = dict(line.lower().split(b": ", 1) for line in lines[1:])
    body = await asyncio.wait_for(reader.readexactly(int(fields[b"content-length"])), 10)
    writer.close()
    return int(lines[0].split()[1]), fields, body


async def test_http11_without_host_is_400(gw: httpx.AsyncClient) -> None:
    status, fields, body = await _raw(gw, b"GET /api/users HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert status == 400 and fields[b"content-type"] == b"application/problem+json"
    assert json.loads(body)["type"].endswith("/missing-host")
    # HTTP/1.0 has no Host requirement.
    status, _, _ = await _raw(gw, b"GET /api/users HTTP/1.0\r\n\r\n")
    assert status == 200


async def test_a_transfer_coding_other_than_chunked_is_501(gw: httpx.AsyncClient) -> None:
    status, fields, body = await _raw(
        gw, b"POST /api/users/_mock/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n"
            b"Connection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
    assert status == 501 and fields[b"content-type"] == b"application/problem+json"
    status, _, body = await _raw(
        gw, b"POST /api/users/_mock/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            b"Connection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
    assert status == 200 and json.loads(body)["body_length"] == 5


async def test_websocket_upgrade_is_a_clear_501_and_other_upgrades_are_ignored(gw: httpx.AsyncClient) -> None:
    status, fields, body = await _raw(
        gw, b"GET /api/users HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    assert status == 501 and fields[b"content-type"] == b"application/problem+json"
    assert "WebSocket" in json.loads(body)["detail"]
    # An h2c upgrade is optional for the server: answered as plain HTTP/1.1, Upgrade not forwarded.
    status, _, body = await _raw(
        gw, b"GET /api/users/_mock/echo HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\n"
            b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n")
    assert status == 200
    sent = {k.lower() for k, _ in json.loads(body)["headers"]}
    assert not sent & {"upgrade", "http2-settings", "connection"}


async def test_refused_upstream_is_502() -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    async with running_gateway(base_config({"users": dead})) as app:
        async with httpx.AsyncClient(base_url=app.url) as client:
            resp = await client.get("/api/users")
    assert resp.status_code == 502
    body = resp.json()
    assert body["type"].endswith("upstream-connect")
    assert body["request_id"] == resp.headers["x-request-id"]


async def test_upstream_timeout_is_504(gw: httpx.AsyncClient) -> None:
    resp = await gw.get("/api/users", headers={"X-Mock-Delay": "3"})
    assert resp.status_code == 504
    assert resp.json()["type"].endswith("upstream-timeout")


async def test_dropped_connection_is_502(gw: httpx.AsyncClient) -> None:
    resp = await gw.get("/api/users", headers={"X-Mock-Drop": "1"})
    assert resp.status_code == 502
    assert resp.json()["type"].endswith("upstream-reset")


async def test_reset_mid_body_truncates_the_client_response(gw: httpx.AsyncClient) -> None:
    with pytest.raises(httpx.RemoteProtocolError):
        await gw.get("/api/users", headers={"X-Mock-Reset": "1"})
    # The gateway keeps serving.
    assert (await gw.get("/api/users")).status_code == 200


async def test_upstream_status_and_body_pass_through(gw: httpx.AsyncClient) -> None:
    resp = await gw.get("/api/users/999999")
    assert resp.status_code == 404
    created = await gw.post("/api/users", json={"name": "Ann", "email": "ann@example.com"})
    assert created.status_code == 201, created.text
    assert created.headers["location"].startswith("/api/users/")
    invalid = await gw.post("/api/users", json={"name": ""})
    assert invalid.status_code == 422
    assert invalid.json()["errors"]


async def test_no_cookies_leak_between_clients(gw: httpx.AsyncClient) -> None:
    first = await gw.get("/api/users/_mock/respond?h=Set-Cookie:%20session=alice")
    assert first.headers["set-cookie"] == "session=alice"  # passed on to its client...
    async with httpx.AsyncClient(base_url=gw.base_url) as other:
        resp = await other.get("/api/users/_mock/echo")
    assert "cookie" not in echo_headers(resp)  # ...and never replayed for another one


async def test_compressed_body_passes_as_received(gw: httpx.AsyncClient) -> None:
    resp = await gw.get("/api/users/_mock/respond?h=Content-Encoding:%20identity&body=hello",
                        headers={"Accept-Encoding": "gzip"})
    assert resp.headers["content-encoding"] == "identity"
    async with httpx.AsyncClient(base_url=gw.base_url) as bare:
        bare.headers.pop("accept-encoding")
        echo = await bare.get("/api/users/_mock/echo")
    assert "accept-encoding" not in echo_headers(echo)  # none added on the client's behalf


async def test_control_plane_endpoints(gw: httpx.AsyncClient) -> None:
    root = (await gw.get("/")).json()
    assert "/api/users" in root["routes"] and "users" in root["services"]
    health = await gw.get("/health")
    assert health.status_code == 200 and "store" in health.json()
    assert (await gw.get("/ready")).status_code == 200
    metrics = (await gw.get("/metrics")).json()
    for key in ("requests", "services", "rate_limits", "circuit_breakers", "cache"):
        assert key in metrics
    assert {"total", "successful", "failed", "cached"} <= set(metrics["requests"])
    spec = (await gw.get("/openapi.json")).json()
    assert "/api/users" in spec["paths"] and "/api/users/{path}" in spec["paths"]
    assert (await gw.get("/docs")).status_code == 200


async def test_metrics_count_requests(gw: httpx.AsyncClient) -> None:
    await gw.get("/api/users")
    await gw.get("/api/users/999999")
    metrics = (await gw.get("/metrics")).json()
    assert metrics["requests"]["total"] >= 2
    assert metrics["requests"]["successful"] >= 1 and metrics["requests"]["failed"] >= 1
    assert metrics["services"]["users"]["requests"] >= 2


async def test_health_reports_service_status(users_url: str) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    async with running_gateway(base_config({"users": users_url, "orders": dead})) as app:
        async with httpx.AsyncClient(base_url=app.url) as client:
            for _ in range(50):
                body = (await client.get("/health")).json()
                if body["services"]["orders"]["status"] != "unknown" and \
                        body["services"]["users"]["status"] != "unknown":
                    break
                await asyncio.sleep(0.05)
    assert body["services"]["users"]["status"] == "healthy"
    assert body["services"]["orders"]["status"] == "unhealthy"
    assert body["status"] == "degraded"


async def test_control_plane_404_is_a_problem(gw: httpx.AsyncClient) -> None:
    resp = await gw.get("/nothing/here")
    assert resp.status_code == 404
    assert resp.headers["content-type"] == "application/problem+json"
    assert json.loads(resp.content)["title"] == "Not Found"


async def test_small_body_cut_short_upstream_is_a_clean_502() -> None:
    # An upstream that promises 100 bytes, sends 10 and hangs up: small bodies are read whole
    # before answering, so the client gets a 502 problem instead of a truncated 200.
    async def broken(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nContent-Type: text/plain\r\n\r\n0123456789")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(broken, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with running_gateway(base_config({"users": f"http://127.0.0.1:{port}"})) as app:
            async with httpx.AsyncClient(base_url=app.url) as client:
                resp = await client.get("/api/users")
    finally:
        server.close()
        await server.wait_closed()
    assert resp.status_code == 502
    assert resp.json()["type"].endswith("upstream-reset")
