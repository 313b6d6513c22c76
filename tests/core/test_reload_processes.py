"""Reload without dropping a request, with real processes: SIGHUP, `gateway reload` (which finds
every process serving the file, workers through their supervisor), and 20 reloads under load
across three replicas on one Redis."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.support.cluster import wait_until
from tests.support.processes import ROOT, GatewayProcess, MockService, RedisServer, services_config

pytestmark = [pytest.mark.cluster, pytest.mark.redis]

KEY = "reload-test-key"


@pytest.fixture(scope="module")
def users() -> Iterator[MockService]:
    service = MockService("users")
    yield service
    service.stop()


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    server = RedisServer()
    yield server
    server.stop()


def _config(users: MockService, redis_url: str | None = None, *, limit: int = 100_000,
            **extra: Any) -> dict[str, Any]:
    config = services_config({"users": users}, **extra)
    config["rate_limits"] = {"default": 1000, "anonymous": 1000, "premium": limit}
    config["auth"] = {"consumers": [{"id": "loader", "tier": "premium",
                                     "key_sha256": hashlib.sha256(KEY.encode()).hexdigest()}]}
    config["reload"] = {"watch": False}  # these tests trigger every reload themselves
    if redis_url:
        config["redis"] = {"url": redis_url}
    return config


def _write(path: str, config: dict[str, Any]) -> None:
    temporary = path + ".tmp"
    with open(temporary, "w") as f:
        yaml.safe_dump(config, f)
    os.replace(temporary, path)


def _reload_cli(path: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "GATEWAY_CONFIG"}
    return subprocess.run([sys.executable, "-m", "gateway.cli", "reload", "--config", path],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


def _reloads(gateway: GatewayProcess) -> dict[str, Any]:
    metrics = httpx.get(gateway.admin_url + "/metrics", params={"scope": "replica"}, timeout=10).json()
    return dict(metrics["config"])


def _limit(url: str) -> str:
    return httpx.get(url + "/api/users", headers={"x-api-key": KEY}, timeout=10).headers["x-ratelimit-limit"]


def test_sighup_reloads_instead_of_killing_the_process(users: MockService, tmp_path: Path) -> None:
    path = str(tmp_path / "gateway.yaml")
    config = _config(users, limit=500)
    with GatewayProcess(config, config_path=path) as gateway:
        assert _limit(gateway.url) == "500"
        _write(path, _config(users, limit=600))
        assert gateway.proc is not None
        gateway.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: _limit(gateway.url) == "600", timeout=10, what="the reloaded limit")
        assert gateway.alive()
        assert _reloads(gateway)["reloads"] == {"applied": 1, "refused": 0}


def test_gateway_reload_validates_first_and_says_who_it_signalled(users: MockService, tmp_path: Path) -> None:
    path = str(tmp_path / "gateway.yaml")
    nobody = _reload_cli(path)  # no file yet, no gateway
    assert nobody.returncode == 1
    config = _config(users, limit=500)
    _write(path, config)
    nobody = _reload_cli(path)
    assert nobody.returncode == 1 and "no running gateway serves" in nobody.stderr
    with GatewayProcess(config, config_path=path) as gateway:
        broken = _config(users, limit=500)
        broken["rate_limits"]["premium"] = -3
        _write(path, broken)
        refused = _reload_cli(path)
        assert refused.returncode == 1
        assert "rate_limits.premium" in refused.stderr and "keeps serving" in refused.stderr
        assert _reloads(gateway)["reloads"]["applied"] == 0  # never signalled
        # Written behind the CLI's back and signalled: the gateway itself refuses it, logs the
        # field and keeps serving the running configuration.
        assert gateway.proc is not None
        gateway.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: _reloads(gateway)["reloads"]["refused"] == 1, timeout=10, what="the refusal")
        assert "rate_limits.premium" in (_reloads(gateway)["last_reload"] or {})["error"]
        assert _limit(gateway.url) == "500"
        _write(path, _config(users, limit=700))
        done = _reload_cli(path)
        assert done.returncode == 0 and str(gateway.pid) in done.stdout
        wait_until(lambda: _limit(gateway.url) == "700", timeout=10, what="the reloaded limit")


def test_gateway_reload_reaches_every_worker(users: MockService, redis: RedisServer, tmp_path: Path) -> None:
    path = str(tmp_path / "gateway.yaml")
    with GatewayProcess(_config(users, redis.url, limit=500), config_path=path, workers=2) as gateway:
        _write(path, _config(users, redis.url, limit=800))
        assert _reload_cli(path).returncode == 0

        def all_workers_reloaded() -> bool:
            # New connections: the kernel spreads them over both workers.
            return all(_limit(gateway.url) == "800" for _ in range(30))

        wait_until(all_workers_reloaded, timeout=15, what="both workers on the new limit")


def test_twenty_reloads_under_load_across_three_replicas_fail_no_request(
        users: MockService, redis: RedisServer, tmp_path: Path) -> None:
    path = str(tmp_path / "gateway.yaml")
    base = _config(users, redis.url)
    replicas = []
    try:
        for _ in range(3):
            replicas.append(GatewayProcess(base, config_path=path))
        statuses: Counter[int] = Counter()
        limits: Counter[str] = Counter()
        failures: list[str] = []
        stop = threading.Event()

        def load(url: str) -> None:
            with httpx.Client(base_url=url, timeout=10, headers={"x-api-key": KEY}) as client:
                while not stop.is_set():
                    try:
                        # GETs on kept-alive connections, and a POST with a body.
                        r = client.get("/api/users")
                        statuses[r.status_code] += 1
                        limits[r.headers.get("x-ratelimit-limit", "-")] += 1
                        r = client.post("/api/users", json={"name": "reload", "email": "r@example.com"})
                        statuses[r.status_code] += 1
                    except httpx.HTTPError as exc:
                        failures.append(f"{url}: {type(exc).__name__}: {exc}")

        threads = [threading.Thread(target=load, args=(g.url,), daemon=True) for g in replicas for _ in range(2)]
        for thread in threads:
            thread.start()
        try:
            for n in range(1, 21):
                limit = 100_000 + n
                config = _config(users, redis.url, limit=limit)
                if n % 2:
                    config["routes"]["/api/extra"] = "users"  # routes come and go too
                _write(path, config)
                result = _reload_cli(path)
                assert result.returncode == 0, result.stderr
                wait_until(lambda limit=limit: all(_limit(g.url) == str(limit) for g in replicas),
                           timeout=15, what=f"reload {n} on every replica")
        finally:
            stop.set()
            for thread in threads:
                thread.join(15)
        assert not failures, failures[:5]
        assert set(statuses) <= {200, 201}, statuses
        assert sum(statuses.values()) > 200
        assert len(limits) >= 10  # the load ran across the reloads
        for gateway in replicas:
            assert _reloads(gateway)["reloads"] == {"applied": 20, "refused": 0}
            assert gateway.alive()
    finally:
        for gateway in replicas:
            gateway.stop()
