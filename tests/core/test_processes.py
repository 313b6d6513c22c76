"""The gateway as real processes: `gateway dev`, 100 MB streams in bounded memory, drain on SIGTERM."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway.cli import port_free
from services.testing import pattern_sha256
from tests.support.processes import (
    ROOT,
    GatewayProcess,
    MockService,
    free_port,
    services_config,
    wait_http,
)

SIZE = 100 * 1024 * 1024


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.fixture
def users() -> Iterator[MockService]:
    with MockService("users") as svc:
        yield svc


@pytest.mark.slow
def test_100mb_upload_and_download_byte_exact_in_bounded_memory(users: MockService) -> None:
    config = services_config({"users": users}, cache={"enabled": False},
                             rate_limit={"enabled": False})
    with GatewayProcess(config) as gw:
        with httpx.Client(base_url=gw.url, timeout=60) as client:
            client.get("/api/users")
            baseline = rss_mb(gw.pid)

            block = os.urandom(1024 * 1024)

            def body() -> Iterator[bytes]:
                for _ in range(SIZE // len(block)):
                    yield block

            digest = hashlib.sha256()
            for chunk in body():
                digest.update(chunk)
            expected_upload = digest.hexdigest()
            up = client.post("/api/users/_mock/echo", content=body())
            assert up.status_code == 200
            assert up.json()["body_length"] == SIZE
            assert up.json()["body_sha256"] == expected_upload

            down = hashlib.sha256()
            received = 0
            with client.stream("GET", f"/api/users/_mock/download?size={SIZE}") as resp:
                assert resp.status_code == 200
                assert resp.headers["content-length"] == str(SIZE)
                for chunk in resp.iter_raw():
                    down.update(chunk)
                    received += len(chunk)
            assert received == SIZE
            assert down.hexdigest() == pattern_sha256(SIZE)
            growth = peak_rss_mb(gw.pid) - baseline
        assert growth < 40, f"gateway memory grew by {growth:.0f} MB while streaming 2x100 MB"


def test_sigterm_drains_in_flight_requests_then_exits_0(users: MockService) -> None:
    gw = GatewayProcess(services_config({"users": users}, rate_limit={"enabled": False}))
    result: dict[str, object] = {}

    def slow_request() -> None:
        with httpx.Client(base_url=gw.url, timeout=10) as client:
            r = client.get("/api/users", headers={"X-Mock-Delay": "1.5"})
            result["status"] = r.status_code

    worker = threading.Thread(target=slow_request)
    worker.start()
    time.sleep(0.5)
    assert gw.proc is not None
    gw.proc.send_signal(signal.SIGTERM)
    worker.join(timeout=10)
    assert gw.proc.wait(timeout=10) == 0
    assert result.get("status") == 200  # the in-flight request finished before the exit
    gw.stop()


def test_sigterm_past_the_grace_answers_503_and_logs_it_never_500(users: MockService) -> None:
    config = services_config({"users": users}, rate_limit={"enabled": False},
                             logging={"level": "INFO", "access_log": True})
    config["services"]["users"]["timeout"] = 30  # the upstream may take longer than the grace
    gw = GatewayProcess(config)  # --grace 5
    result: dict[str, object] = {}

    def slow_request() -> None:
        with httpx.Client(base_url=gw.url, timeout=20) as client:
            r = client.get("/api/users", headers={"X-Mock-Delay": "8"})
            result["status"], result["body"] = r.status_code, r.json()
            result["connection"] = r.headers.get("connection")

    worker = threading.Thread(target=slow_request)
    worker.start()
    time.sleep(0.5)
    assert gw.proc is not None
    started = time.monotonic()
    gw.proc.send_signal(signal.SIGTERM)
    worker.join(timeout=15)
    assert gw.proc.wait(timeout=10) == 0
    assert 4.5 < time.monotonic() - started < 8  # the grace, not the upstream's 8 s
    assert result.get("status") == 503 and result.get("connection") == "close"
    assert str(result["body"]["type"]).endswith("/shutting-down")  # type: ignore[index]
    lines = [json.loads(line) for line in gw.log().splitlines() if line.startswith("{")]
    access = [doc for doc in lines if doc.get("logger") == "gateway.access"]
    assert [doc["status"] for doc in access] == [503], access
    gw.stop()


def test_gateway_dev_runs_everything_and_ctrl_c_stops_all() -> None:
    port, services_port, admin_port = free_port(), free_port(), free_port()
    while any(not _port_free(services_port + i) for i in range(3)):
        services_port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "dev", "--port", str(port),
         "--services-port", str(services_port), "--admin", f"127.0.0.1:{admin_port}"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        env={k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")},
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/ready", proc=proc, timeout=30)
        smoke = subprocess.run([sys.executable, "-m", "gateway.cli", "smoke", f"http://127.0.0.1:{port}"],
                               capture_output=True, text=True, timeout=120)
        assert smoke.returncode == 0, smoke.stdout
        assert "0 failed" in smoke.stdout
        again = subprocess.run([sys.executable, "-m", "gateway.cli", "smoke", f"http://127.0.0.1:{port}"],
                               capture_output=True, text=True, timeout=120)
        assert again.returncode == 0 and "0 failed" in again.stdout, again.stdout  # safe to repeat
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=20)
    assert code == 0
    for i in range(3):  # the mock services are gone too
        assert _port_free(services_port + i)


def _port_free(port: int) -> bool:
    return port_free("127.0.0.1", port)


def test_gateway_dev_with_a_port_in_use_says_so_and_starts_nothing() -> None:
    import socket

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        busy = holder.getsockname()[1]
        services_port = free_port()
        while any(not _port_free(services_port + i) for i in range(3)):
            services_port = free_port()
        done = subprocess.run(
            [sys.executable, "-m", "gateway.cli", "dev", "--port", str(busy), "--services-port", str(services_port),
             "--admin", f"127.0.0.1:{free_port()}"],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
            env={k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")})
    assert done.returncode == 1
    assert f"port in use: 127.0.0.1:{busy} (gateway)" in done.stderr
    assert "listening" not in done.stdout + done.stderr and "gateway on" not in done.stderr
    assert all(_port_free(services_port + i) for i in range(3))  # no mock was started


@pytest.mark.redis
def test_run_with_several_workers_on_redis(users: MockService, redis_server) -> None:  # type: ignore[no-untyped-def]
    config = services_config({"users": users}, redis={"url": redis_server.url},
                             rate_limits={"default": 100, "anonymous": 5, "premium": 1000})
    with GatewayProcess(config, workers=2) as gw:
        statuses = [httpx.get(gw.url + "/api/users", timeout=10).status_code for _ in range(8)]
        # Two worker processes, one shared limit: exactly 5 admitted.
        assert statuses == [200] * 5 + [429] * 3
        assert gw.proc is not None
        gw.proc.send_signal(signal.SIGTERM)
        assert gw.proc.wait(timeout=20) == 0


def test_gateway_run_answers_a_websocket_upgrade_with_a_problem(users: MockService) -> None:
    # `gateway run` serves no WebSockets (uvicorn ws="none"): the upgrade reaches the hot path.
    import socket

    with GatewayProcess(services_config({"users": users})) as gw:
        port = int(gw.url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"GET /api/users HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
                         b"Upgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                         b"Sec-WebSocket-Version: 13\r\n\r\n")
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
        assert data.startswith(b"HTTP/1.1 501"), data[:200]
        assert b"content-type: application/problem+json" in data.lower()
