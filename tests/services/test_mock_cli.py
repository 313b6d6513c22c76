"""Running a service as a process (`python -m services`) and in-process (`services.app.start`)."""

from __future__ import annotations

import http.client
import json
import signal
import subprocess
import sys
import urllib.request

import pytest

from services.app import create_app, start


def _spawn(*args: str) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "services", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()  # printed once the socket is bound
    return process, line.split()[-1]


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_cli_serves_until_signal_then_exits_0(stop_signal: signal.Signals) -> None:
    process, url = _spawn("products", "--port", "0")
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
            assert json.load(response) == {"status": "healthy", "service": "products"}
        process.send_signal(stop_signal)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()  # type: ignore[union-attr]
        process.stderr.close()  # type: ignore[union-attr]


def test_cli_rejects_unknown_service() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "services", "payments"], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert "invalid choice" in result.stderr


def test_create_app_rejects_unknown_service() -> None:
    with pytest.raises(ValueError, match="payments"):
        create_app("payments")


async def test_start_binds_a_free_port_and_closes() -> None:
    service = await start("users", port=0)
    try:
        assert service.port > 0
        assert service.url == f"http://127.0.0.1:{service.port}"
    finally:
        await service.close()


def test_cli_process_drops_and_resets_connections() -> None:
    # The CLI runs on uvloop when installed; its transports must support both faults too.
    process, url = _spawn("orders", "--port", "0")
    try:
        with pytest.raises((ConnectionError, http.client.HTTPException)):
            urllib.request.urlopen(
                urllib.request.Request(f"{url}/api/orders", headers={"X-Mock-Drop": "1"}), timeout=5
            )
        response = urllib.request.urlopen(
            urllib.request.Request(f"{url}/api/orders", headers={"X-Mock-Reset": "1"}), timeout=5
        )
        assert response.status == 200
        with pytest.raises((ConnectionError, http.client.IncompleteRead)):
            response.read()
        with urllib.request.urlopen(f"{url}/health", timeout=5) as healthy:
            assert healthy.status == 200
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        process.stdout.close()  # type: ignore[union-attr]
        process.stderr.close()  # type: ignore[union-attr]
