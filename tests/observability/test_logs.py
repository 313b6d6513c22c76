"""The access log: one JSON line per request with the agreed fields, and never a secret."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator

import httpx
import pytest

from gateway.config import LoggingSettings
from gateway.logs import JsonFormatter, TextFormatter, configure_logging
from tests.observability.conftest import gateway_config
from tests.support.inproc import running_gateway
from tests.support.processes import GatewayProcess, MockService

FIELDS = {"request_id", "trace_id", "consumer", "route", "service", "method", "path", "status",
          "duration_ms", "gateway_ms", "upstream_ms", "cache", "breaker", "rate_limit_remaining"}


class Lines(logging.Handler):
    """Collects formatted records (JSON) from the root logger."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(JsonFormatter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    def access(self) -> list[dict[str, object]]:
        docs = [json.loads(line) for line in self.lines]
        return [d for d in docs if d["logger"] == "gateway.access"]


@pytest.fixture
def captured() -> Iterator[Lines]:
    handler = Lines()
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


async def test_one_json_line_per_request_with_every_field(users_url: str, captured: Lines) -> None:
    async with running_gateway(gateway_config(users_url)) as app:
        async with httpx.AsyncClient(base_url=app.url) as client:
            ok = await client.get("/api/users", headers={"x-request-id": "req-1"})
            missing = await client.get("/api/users/999999")
    assert ok.status_code == 200 and missing.status_code == 404
    lines = captured.access()
    assert len(lines) == 2
    first, second = lines
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


async def test_early_answers_are_logged_too(users_url: str, captured: Lines) -> None:
    async with running_gateway(gateway_config(users_url)) as app:
        async with httpx.AsyncClient(base_url=app.url) as client:
            resp = await client.get("/api/users/%2e%2e/admin")
    assert resp.status_code == 400
    (line,) = captured.access()
    assert line["status"] == 400 and line["upstream_ms"] is None


async def test_access_log_can_be_turned_off(users_url: str, captured: Lines) -> None:
    config = gateway_config(users_url, logging={"level": "INFO", "access_log": False})
    async with running_gateway(config) as app:
        async with httpx.AsyncClient(base_url=app.url) as client:
            await client.get("/api/users")
    assert captured.access() == []


def test_text_format_for_people() -> None:
    record = logging.LogRecord("gateway.access", logging.INFO, __file__, 1, "%s", ("x",), None)
    record.fields = {"method": "GET", "path": "/api/users", "status": 200, "request_id": "r1",
                     "consumer": None, "duration_ms": 1.5}
    text = TextFormatter().format(record)
    assert "GET /api/users -> 200" in text and "request_id=r1" in text
    assert "consumer" not in text  # absent fields are left out


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
