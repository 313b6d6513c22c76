"""Run-time consumers across replicas: a consumer added through replica A's admin API (or the
CLI) authenticates on B and C within a second; a deleted or disabled key is refused everywhere
within that second; a replica that missed the pub/sub message catches up by its version check.
Three gateway processes on one redis-server."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.processes import ROOT, GatewayProcess, MockService, RedisServer, services_config

pytestmark = [pytest.mark.cluster, pytest.mark.redis]

ADMIN_KEY = "cluster-consumers-admin"
ADMIN = {"x-api-key": ADMIN_KEY}


@pytest.fixture(scope="module")
def replicas() -> Iterator[list[GatewayProcess]]:
    with RedisServer() as redis, MockService("users") as users:
        assert isinstance(redis, RedisServer) and isinstance(users, MockService)
        config = services_config({"users": users}, redis={"url": redis.url},
                                 auth={"admin_keys_sha256": [hashlib.sha256(ADMIN_KEY.encode()).hexdigest()]})
        gateways: list[GatewayProcess] = []
        try:
            for _ in range(3):
                gateways.append(GatewayProcess(config))
            yield gateways
        finally:
            for g in gateways:
                g.stop()


def _status(gateway: GatewayProcess, key: str) -> int:
    return httpx.get(gateway.url + "/api/users", headers={"x-api-key": key}, timeout=5).status_code


def _within(seconds: float, check: Any) -> float:
    """How long until `check()` held (asserting it did within `seconds`)."""
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < seconds, f"not within {seconds}s"
        time.sleep(0.02)
    return time.monotonic() - started


def test_added_on_a_authenticates_on_b_and_c_within_a_second_and_a_delete_reaches_all(
        replicas: list[GatewayProcess]) -> None:
    a, b, c = replicas
    r = httpx.post(a.admin_url + "/admin/consumers", json={"id": "alice", "tier": "premium"},
                   headers=ADMIN, timeout=10)
    assert r.status_code == 201, r.text
    key = r.json()["key"]
    assert _status(a, key) == 200  # at once on the replica that made it
    _within(1.0, lambda: _status(b, key) == 200 and _status(c, key) == 200)
    r = httpx.patch(b.admin_url + "/admin/consumers/alice", json={"enabled": False}, headers=ADMIN, timeout=10)
    assert r.status_code == 200
    _within(1.0, lambda: all(_status(g, key) == 401 for g in replicas))
    httpx.patch(c.admin_url + "/admin/consumers/alice", json={"enabled": True}, headers=ADMIN, timeout=10)
    _within(1.0, lambda: all(_status(g, key) == 200 for g in replicas))
    assert httpx.delete(c.admin_url + "/admin/consumers/alice", headers=ADMIN, timeout=10).status_code == 204
    _within(1.0, lambda: all(_status(g, key) == 401 for g in replicas))


def test_a_replica_that_missed_the_message_catches_up(replicas: list[GatewayProcess]) -> None:
    a, b, c = replicas
    b.pause()  # B hears nothing while the change is published
    try:
        r = httpx.post(a.admin_url + "/admin/consumers", json={"id": "bruno"}, headers=ADMIN, timeout=10)
        key = r.json()["key"]
        time.sleep(0.3)
    finally:
        b.resume()
    # Its subscription may well deliver the buffered message; if not, the version check does.
    _within(2.0, lambda: _status(b, key) == 200)
    listed = httpx.get(b.admin_url + "/admin/consumers", headers=ADMIN, timeout=10).json()
    assert "bruno" in {x["id"] for x in listed["consumers"]}


def test_the_cli_adds_rotates_and_deletes(replicas: list[GatewayProcess]) -> None:
    a, b, c = replicas
    env = {**os.environ, "GATEWAY_ADMIN_KEY": ADMIN_KEY}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "gateway.cli", "consumers", "--admin-url", a.admin_url, *args],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)

    added = cli("add", "cleo", "--tier", "premium", "--limit", "40/60")
    assert added.returncode == 0, added.stderr
    key = added.stdout.strip()
    assert key.startswith("gwk_") and "shown once" in added.stderr
    _within(1.0, lambda: _status(c, key) == 200)
    limit = httpx.get(c.url + "/api/users", headers={"x-api-key": key}, timeout=5).headers["x-ratelimit-limit"]
    assert limit == "40"
    listed = cli("list")
    assert listed.returncode == 0 and "cleo\tpremium\truntime\tenabled" in listed.stdout
    rotated = cli("rotate", "cleo", "--grace", "0")
    assert rotated.returncode == 0
    new = rotated.stdout.strip()
    _within(1.0, lambda: _status(b, key) == 401 and _status(b, new) == 200)
    bad = cli("add", "dora", "--tier", "gold")
    assert bad.returncode == 1 and "tier" in bad.stderr
    no_key = subprocess.run([sys.executable, "-m", "gateway.cli", "consumers", "--admin-url", a.admin_url, "list"],
                            cwd=ROOT, env={k: v for k, v in os.environ.items() if k != "GATEWAY_ADMIN_KEY"},
                            capture_output=True, text=True, timeout=60)
    assert no_key.returncode == 2 and "admin key" in no_key.stderr
    assert cli("delete", "cleo").returncode == 0
    _within(1.0, lambda: all(_status(g, new) == 401 for g in replicas))


def test_a_redis_that_restarts_empty_gets_the_consumers_back_and_keys_keep_working() -> None:
    with RedisServer() as redis, MockService("users") as users:
        assert isinstance(redis, RedisServer) and isinstance(users, MockService)
        config = services_config({"users": users}, redis={"url": redis.url, "timeout": 0.5,
                                                          "connect_timeout": 0.5, "probe_interval": 0.2},
                                 auth={"admin_keys_sha256": [hashlib.sha256(ADMIN_KEY.encode()).hexdigest()]})
        with GatewayProcess(config) as a, GatewayProcess(config) as b:
            assert isinstance(a, GatewayProcess) and isinstance(b, GatewayProcess)
            r = httpx.post(a.admin_url + "/admin/consumers", json={"id": "hana"}, headers=ADMIN, timeout=10)
            key = r.json()["key"]
            _within(1.0, lambda: _status(b, key) == 200)
            redis.stop()
            # Redis gone: the replicas keep the consumers they hold (rate limits fall back to
            # local), and a change is refused without changing anything.
            assert _status(a, key) == 200 and _status(b, key) == 200
            down = httpx.post(a.admin_url + "/admin/consumers", json={"id": "ivan"}, headers=ADMIN, timeout=10)
            assert down.status_code == 503 and down.json()["type"].endswith("consumer-store-unavailable")
            redis.start()  # empty
            _within(5.0, lambda: redis.command("HLEN", "gw:consumers:{gw:consumers}:records") == "1")
            assert _status(a, key) == 200 and _status(b, key) == 200
            # And changes go on from the restored version.
            r = httpx.post(b.admin_url + "/admin/consumers", json={"id": "ivan"}, headers=ADMIN, timeout=10)
            assert r.status_code == 201
            _within(1.0, lambda: _status(a, r.json()["key"]) == 200)
