"""Real processes for integration tests: redis-server, mock services, gateway replicas.

Every process listens on an ephemeral loopback port and is stopped by its PID. Nothing here
relies on a service the tests did not start.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from gateway.localcluster import free_port, terminate  # one port picker, one stop, for all

ROOT = Path(__file__).resolve().parents[2]
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def wait_http(url: str, timeout: float = 15.0, proc: subprocess.Popen[bytes] | None = None,
              status: int = 200, context: ssl.SSLContext | None = None) -> None:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=1, context=context) as resp:
                if resp.status == status:
                    return
                last = resp.status
        except urllib.error.HTTPError as exc:
            last = exc.code
        except OSError as exc:
            last = exc
        time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer {status} within {timeout}s (last: {last})")


class Process:
    """A child process stopped by PID: SIGTERM, then SIGKILL."""

    proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is not None:
            terminate(self.proc, timeout)

    def kill(self) -> None:
        """SIGKILL: a crash, no goodbye."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)

    def pause(self) -> None:
        """SIGSTOP: the process hangs (a hung Redis / upstream)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def __enter__(self) -> Process:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.resume()
            except (ProcessLookupError, AssertionError):
                pass
        self.stop()


class RedisServer(Process):
    """A throw-away redis-server on an ephemeral port (no persistence)."""

    def __init__(self, port: int | None = None, extra: list[str] | None = None) -> None:
        self.port = port or free_port()
        self.extra = extra or []
        self.dir = tempfile.mkdtemp(prefix="gw-redis-")
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir, *self.extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.02)
        self.kill()  # never leave a half-started server behind
        raise TimeoutError(f"redis-server did not start on {self.port}")

    def restart(self) -> None:
        """Start again on the same port (after stop/kill): an empty Redis comes back."""
        self.stop()
        self.start()

    def command(self, *args: str) -> str:
        out = subprocess.run(["redis-cli", "-p", str(self.port), *args], capture_output=True,
                             text=True, timeout=10)
        return out.stdout.strip()


class MockService(Process):
    """One mock backend (`python -m services NAME`) on an ephemeral port."""

    def __init__(self, name: str, port: int | None = None) -> None:
        self.name = name
        self.port = port or free_port()
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "services", self.name, "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            wait_http(self.url + "/health", proc=self.proc)
        except Exception:
            self.kill()
            raise

    def requests_seen(self) -> int:
        import json

        with urllib.request.urlopen(self.url + "/_mock/stats", timeout=5) as resp:
            return int(json.load(resp)["requests"])

    def reset_stats(self) -> None:
        _request("DELETE", self.url + "/_mock/stats")

    def set_faults(self, **faults: Any) -> None:
        _request("POST", self.url + "/_mock/faults", faults)

    def clear_faults(self) -> None:
        _request("DELETE", self.url + "/_mock/faults")


def _request(method: str, url: str, body: Any = None) -> None:
    import json

    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        resp.read()


class GatewayProcess(Process):
    """A gateway replica (`gateway run`) with the given config, on an ephemeral port."""

    def __init__(self, config: dict[str, Any], port: int | None = None, *, workers: int = 1,
                 env: dict[str, str] | None = None, log_path: str | None = None,
                 config_path: str | None = None, tls_ca: str | None = None) -> None:
        """`config_path`: the file to write the config to (replicas of one deployment may
        share one); by default a file of its own. `tls_ca`: the config has `tls`, and this CA
        verifies it (the URL is https)."""
        self.config = config
        self.tls_ca = tls_ca
        self.port = port or free_port()
        # Its admin listener on a port of its own (replicas share this host), unless the config
        # says where (or none).
        self.admin_port = None
        if "admin" not in config:
            while self.admin_port in (None, self.port):  # two probes may hand out one port
                self.admin_port = free_port()
        self.workers = workers
        self.env = env or {}
        if config_path is None:
            fd, self.config_path = tempfile.mkstemp(prefix="gw-config-", suffix=".yaml")
            os.close(fd)
        else:
            self.config_path = config_path
        with open(self.config_path, "w") as f:
            yaml.safe_dump(config, f)
        if log_path is None:
            fd, log_path = tempfile.mkstemp(prefix="gw-", suffix=".log")
            os.close(fd)
        self.log_path = log_path
        self.start()

    @property
    def url(self) -> str:
        return f"{'https' if self.tls_ca else 'http'}://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        """The admin listener: the admin API, the dashboard, the docs, the full metrics."""
        if self.admin_port is None:
            listen = (self.config.get("admin") or {}).get("listen")
            return f"http://{listen}" if listen else self.url
        return f"http://127.0.0.1:{self.admin_port}"

    def start(self) -> None:
        env = {**os.environ, **self.env}
        env.pop("GATEWAY_CONFIG", None)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "run", "--config", self.config_path,
             "--host", "127.0.0.1", "--port", str(self.port), "--workers", str(self.workers),
             "--grace", "5", *(("--admin", f"127.0.0.1:{self.admin_port}") if self.admin_port else ())],
            cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT,
        )
        try:
            context = ssl.create_default_context(cafile=self.tls_ca) if self.tls_ca else None
            wait_http(self.url + "/ready", proc=self.proc, timeout=20, context=context)
        except Exception as exc:
            self.kill()
            raise RuntimeError(f"gateway failed to start: {exc}\n{self.log()}") from exc

    def log(self) -> str:
        try:
            return Path(self.log_path).read_text()[-5000:]
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        super().stop(timeout)
        if getattr(self, "_log", None):
            self._log.close()


def services_config(services: dict[str, MockService], **extra: Any) -> dict[str, Any]:
    """A gateway config routing /api/<name> to each running mock service."""
    config: dict[str, Any] = {
        "services": {name: {"url": svc.url, "timeout": 5, "health_path": "/health",
                            "health_interval": 1}
                     for name, svc in services.items()},
        "routes": {f"/api/{name}": name for name in services},
        "logging": {"level": "WARNING"},
    }
    for key, value in extra.items():
        config[key] = value
    return config
