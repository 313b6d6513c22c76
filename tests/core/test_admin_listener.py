"""The admin listener: the admin API, the dashboard, the docs and the full metrics on a port of
their own; the public port serves only what clients need (and /docs, which the seed promises
there). Real gateway processes."""

from __future__ import annotations

import hashlib
import socket
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.processes import ROOT, GatewayProcess, MockService, free_port

ADMIN_KEY = "admin-listener-test-key"
ALICE_KEY = "alice-listener-key"


def config(users: MockService, **extra: Any) -> dict[str, Any]:
    return {
        "services": {"users": {"url": users.url}},
        "routes": {"/api/users": "users"},
        "auth": {"consumers": [{"id": "alice", "tier": "default",
                                "key_sha256": hashlib.sha256(ALICE_KEY.encode()).hexdigest()}],
                 "admin_keys_sha256": [hashlib.sha256(ADMIN_KEY.encode()).hexdigest()]},
        "logging": {"level": "WARNING"},
        **extra,
    }


@pytest.fixture(scope="module")
def users() -> Iterator[MockService]:
    service = MockService("users")
    yield service
    service.stop()


@pytest.fixture(scope="module")
def gw(users: MockService) -> Iterator[GatewayProcess]:
    with GatewayProcess(config(users)) as process:
        httpx.get(process.url + "/api/users", headers={"x-api-key": ALICE_KEY}, timeout=10)
        yield process


@pytest.mark.parametrize("path", ["/dashboard", "/dashboard/static/dashboard.js"])
def test_the_public_port_does_not_serve_the_admin_side(gw: GatewayProcess, path: str) -> None:
    response = httpx.get(gw.url + path, timeout=10)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"].endswith("/admin-only")
    assert httpx.get(gw.admin_url + path, timeout=10).status_code == 200


def test_the_admin_api_is_only_on_the_admin_listener(gw: GatewayProcess) -> None:
    body = {"url": "/api/users/1"}
    key = {"x-api-key": ADMIN_KEY}
    public = httpx.post(gw.url + "/admin/cache/purge", json=body, headers=key, timeout=10)
    assert public.status_code == 404
    assert httpx.post(gw.admin_url + "/admin/cache/purge", json=body, headers=key, timeout=10).status_code == 200
    assert httpx.post(gw.admin_url + "/admin/cache/purge", json=body, timeout=10).status_code == 401


@pytest.mark.parametrize("path", ["/", "/health", "/ready", "/docs", "/openapi.json",
                                  "/docs/assets/swagger-ui.css"])  # /docs: the seed's promise
def test_clients_keep_what_they_need_on_the_public_port(gw: GatewayProcess, path: str) -> None:
    assert httpx.get(gw.url + path, timeout=10).status_code == 200


def test_public_metrics_show_per_consumer_figures_only_with_an_admin_key(gw: GatewayProcess) -> None:
    public = httpx.get(gw.url + "/metrics", timeout=10).json()
    assert "consumers" not in public["rate_limits"] and "requests" in public
    with_key = httpx.get(gw.url + "/metrics", headers={"x-api-key": ADMIN_KEY}, timeout=10).json()
    assert "alice" in with_key["rate_limits"]["consumers"]
    other_key = httpx.get(gw.url + "/metrics", headers={"x-api-key": ALICE_KEY}, timeout=10).json()
    assert "consumers" not in other_key["rate_limits"]
    admin = httpx.get(gw.admin_url + "/metrics", timeout=10).json()
    assert "alice" in admin["rate_limits"]["consumers"]


def test_the_admin_listener_proxies_nothing(gw: GatewayProcess) -> None:
    assert httpx.get(gw.url + "/api/users", timeout=10).status_code == 200
    assert httpx.get(gw.admin_url + "/api/users", timeout=10).status_code == 404


def test_the_admin_listener_is_local_only_by_default() -> None:
    from gateway.config import parse_config

    parsed = parse_config({"services": {"u": {"url": "http://127.0.0.1:9"}}, "routes": {"/u": "u"}})
    assert parsed.admin.listen == "127.0.0.1:9000"


def test_control_public_says_what_the_public_port_shows(users: MockService) -> None:
    with GatewayProcess(config(users, control={"public": ["docs", "dashboard"]})) as process:
        for path in ("/docs", "/dashboard", "/openapi.json"):
            assert httpx.get(process.url + path, timeout=10).status_code == 200
        assert httpx.post(process.url + "/admin/cache/purge", json={"url": "/x"}, timeout=10).status_code == 404
    with GatewayProcess(config(users, control={"public": []})) as process:
        for path in ("/docs", "/dashboard", "/openapi.json"):
            assert httpx.get(process.url + path, timeout=10).status_code == 404
        assert httpx.post(process.url + "/admin/cache/purge", json={"url": "/x"}, timeout=10).status_code == 404


def test_without_an_admin_listener_everything_is_on_the_public_port(users: MockService) -> None:
    with GatewayProcess(config(users, admin={"listen": None})) as process:
        for path in ("/docs", "/dashboard"):
            assert httpx.get(process.url + path, timeout=10).status_code == 200
        purge = httpx.post(process.url + "/admin/cache/purge", json={"url": "/x"},
                           headers={"x-api-key": ADMIN_KEY}, timeout=10)
        assert purge.status_code == 200
        assert "consumers" in httpx.get(process.url + "/metrics", timeout=10).json()["rate_limits"]


def test_a_busy_admin_port_refuses_to_start(users: MockService, tmp_path: Any) -> None:
    import yaml

    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump(config(users)))
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        busy = holder.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "gateway.cli", "run", "--config", str(path),
                               "--host", "127.0.0.1", "--port", str(free_port()),
                               "--admin", f"127.0.0.1:{busy}"],
                              cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert f"admin.listen: 127.0.0.1:{busy} is in use" in done.stderr


def test_the_admin_listener_may_not_be_the_public_port(users: MockService, tmp_path: Any) -> None:
    import yaml

    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump(config(users)))
    port = free_port()
    done = subprocess.run([sys.executable, "-m", "gateway.cli", "run", "--config", str(path), "--host",
                           "127.0.0.1", "--port", str(port), "--admin", f"127.0.0.1:{port}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "is the public port" in done.stdout + done.stderr
