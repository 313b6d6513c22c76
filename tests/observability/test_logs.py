"""The access log: one JSON line per request with the agreed fields, and never a secret."""

from __future__ import annotations

import hashlib
import io
import json
import logging
from typing import Any

import httpx
import pytest

from gateway.config import LoggingSettings
from gateway.logs import AccessLog, configure_logging
from tests.observability.conftest import gateway_config
from tests.support.inproc import running_gateway
from tests.support.processes import GatewayProcess, MockService

FIELDS = {"request_id", "trace_id", "consumer", "route", "service", "method", "path", "status",
          "duration_ms", "gateway_ms", "upstream_ms", "cache", "breaker", "rate_limit_remaining"}


def access_lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    """The access-log lines the gateway wrote to stderr."""
    out = []
    for line in capsys.readouterr().err.splitlines():
        if line.startswith("{"):
            doc = json.loads(line)
            if doc.get("logger") == "gateway.access":
                out.append(doc)
    return out


async def test_one_json_line_per_request_with_every_field(users_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    async with running_gateway(gateway_config(users_url)) as app:
        async with httpx.AsyncClient(base_url=app.url) as client:
            ok = await client.get("/api/users", headers={"x-request-id": "req-1"})
            missing = await client.get("/api/users/999999")
    assert ok.status_code == 200 and missing.status_code == 404
    lines = access_lines(capsys)
    assert len(lines) == 2
    first, second = lines
    assert (first["level"], first["logger"]) == ("info", "gateway.access") and first["ts"].endswith("Z")
    assert FIELDS <= set(first)
    assert first["request_id"] == "req-1"
    assert (first["method"], first["path"], first["route"], first["service"], first["status"]) == \
        ("GET", "/api/users", "/api/users", "users", 200)
    assert first["consumer"] == "anonymous"
    assert isinstance(first["upstream_ms"], float) and isinstance(first["duration_ms"], float)
    assert first["duration_ms"] >= first["upstream_ms"]
    assert first["gateway_ms"] == pytest.approx(first["duration_ms"] - first["upstream_ms"], abs=0.02)
    assert isinstance(first["rate_limit_remaining"], int)
    assert len(str(first["trace_id"])) == 32
    assert second["status"] == 404 and second["request_id"] != "req-1"


async def test_early_answers_are_logged_too(users_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    async with running_gateway(gateway_config(users_url)) as app:
        async with httpx.AsyncClient(base_url=app.url) as client:
            resp = await client.get("/api/users/%2e%2e/admin")
    assert resp.status_code == 400
    (line,) = access_lines(capsys)
    assert line["status"] == 400 and line["upstream_ms"] is None


async def test_access_log_can_be_turned_off(users_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    config = gateway_config(users_url, logging={"level": "INFO", "access_log": False})
    async with running_gateway(config) as app:
        async with httpx.AsyncClient(base_url=app.url) as client:
            await client.get("/api/users")
    assert access_lines(capsys) == []


@pytest.mark.parametrize("path, consumer", [
    ("/api/users", "alice"), ('/api/users/"quoted"\\back', 'a"b\\c'), ("/api/usérs/\u2028", None),
])
@pytest.mark.parametrize("disconnected", [False, True])
def test_the_fast_access_line_is_the_same_json_as_the_generic_one(
        path: str, consumer: str | None, disconnected: bool) -> None:
    """The hot path's `request()` encodes its line by hand: it must be exactly the object the
    generic `write()` gives for the same fields, whatever the path or consumer id holds."""
    values = dict(request_id="r-1", trace_id="4bf92f3577b34da6a3ce929d0e0e4736", method="GET",
                  path=path, route="/api/users", service="users", status=200, duration_ms=1.23,
                  gateway_ms=0.5, upstream_ms=0.73, upstream_status=200, upstream_failure=None,
                  consumer=consumer, client_ip="203.0.113.7", cache="MISS", breaker=None,
                  rate_limit_remaining=41)
    fast, generic = io.StringIO(), io.StringIO()
    AccessLog(stream=fast).request(**values, client_disconnected=disconnected)  # type: ignore[arg-type]
    AccessLog(stream=generic).write({**values, **({"client_disconnected": True} if disconnected else {})})
    a, b = json.loads(fast.getvalue()), json.loads(generic.getvalue())
    a.pop("ts"), b.pop("ts")
    assert a == b and list(a) == list(b)


def test_text_access_lines_under_dev() -> None:
    stream = io.StringIO()
    AccessLog(text=True, stream=stream).write({"method": "GET", "path": "/api/users", "status": 200,
                                               "request_id": "r1", "cache": None})
    line = stream.getvalue()
    assert "gateway.access: GET /api/users -> 200 request_id=r1" in line and "cache" not in line


def test_access_log_follows_the_level_and_switch() -> None:
    assert AccessLog.from_settings(LoggingSettings(level="INFO")) is not None
    assert AccessLog.from_settings(LoggingSettings(level="DEBUG")) is not None
    assert AccessLog.from_settings(LoggingSettings(level="WARNING")) is None
    assert AccessLog.from_settings(LoggingSettings(access_log=False)) is None
    assert AccessLog.from_settings(LoggingSettings(format="text")).text  # type: ignore[union-attr]


def test_level_is_configurable() -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_logging(LoggingSettings(level="warning"))
        assert root.level == logging.WARNING
        configure_logging(LoggingSettings(level="DEBUG"))
        assert root.level == logging.DEBUG
    finally:
        root.handlers[:], _ = saved[0], root.setLevel(saved[1])
        logging.getLogger("gateway.access").disabled = False


SECRET_KEY = "sk-live-0123456789-very-secret-key"
SECRET_BEARER = "bearer-secret-0987654321"
SECRET_COOKIE = "cookie-secret-5555"
SECRET_QUERY = "query-secret-7777"


@pytest.mark.cluster
def test_api_keys_authorization_and_cookies_never_reach_the_log(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A real gateway process at DEBUG: send every kind of secret, grep everything it wrote."""
    users = MockService("users")
    try:
        config = gateway_config(users.url, logging={"level": "DEBUG", "format": "json"})
        config["auth"] = {"consumers": [{"id": "alice", "tier": "premium",
                                         "key_sha256": hashlib.sha256(SECRET_KEY.encode()).hexdigest()}]}
        log_path = str(tmp_path / "gateway.log")
        gateway = GatewayProcess(config, log_path=log_path)
        try:
            with httpx.Client(base_url=gateway.url, timeout=10) as client:
                cookie = {"cookie": f"session={SECRET_COOKIE}"}
                assert client.get("/api/users", headers={"x-api-key": SECRET_KEY, **cookie}).status_code == 200
                assert client.get("/api/users", headers={"authorization": f"Bearer {SECRET_KEY}"}).status_code == 200
                assert client.get("/api/users", headers={"authorization": f"Bearer {SECRET_BEARER}"}).status_code == 401
                assert client.get("/api/users", headers={"x-api-key": SECRET_BEARER}).status_code == 401
                client.get("/api/users", headers={"authorization": f"Basic {SECRET_BEARER}", **cookie})
                client.get(f"/api/users?api_key={SECRET_QUERY}", headers=cookie)
                client.get("/metrics", headers={"authorization": f"Bearer {SECRET_BEARER}", **cookie})
        finally:
            gateway.stop()
        text = open(log_path).read()
    finally:
        users.stop()
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    access = [line for line in lines if line.get("logger") == "gateway.access"]
    assert len(access) >= 6, text[-3000:]
    assert any(line["consumer"] == "alice" for line in access)
    for secret in (SECRET_KEY, SECRET_BEARER, SECRET_COOKIE, SECRET_QUERY):
        assert secret not in text
    assert "session=" not in text
