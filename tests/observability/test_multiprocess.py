"""prometheus_client multiprocess mode under --workers: merged counters, directory wiped at start."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.metrics.multiproc import MARKER, ProcessFiles, prepare
from gateway.metrics.series import Sample
from tests.support.processes import (
    GatewayProcess,
    MockService,
    RedisServer,
    services_config,
)


def stale_file(path: Path) -> None:
    files = ProcessFiles(path, pid=999_999)
    files.write(iter([Sample("counter", "gateway_requests", "gateway_requests_total",
                             (("route", "/stale"), ("method", "GET"), ("status_class", "2xx")),
                             "stale", 1234.0)]))
    files.close()


def test_prepare_wipes_once_per_start(tmp_path: Path) -> None:
    stale_file(tmp_path)
    (tmp_path / "leftover").mkdir()
    prepare(tmp_path, "100 5")
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != ".pygateway-lock") == [MARKER]
    stale_file(tmp_path)  # a worker of this start wrote its file
    prepare(tmp_path, "100 5")  # a second worker of the same start keeps it
    assert (tmp_path / "counter_999999.db").exists()
    prepare(tmp_path, "100 6")  # a new start (same pid, later start time) wipes
    assert not (tmp_path / "counter_999999.db").exists()


def requests_total(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == "gateway_requests":
            for s in family.samples:
                out[s.labels["route"]] = out.get(s.labels["route"], 0) + s.value
    return out


@pytest.mark.redis
@pytest.mark.cluster
@pytest.mark.parametrize("explicit", [True, False], ids=["PROMETHEUS_MULTIPROC_DIR", "default-dir"])
def test_workers_share_one_exposition(redis_server: RedisServer, tmp_path: Path, explicit: bool) -> None:
    metrics_dir = tmp_path / "prom"
    metrics_dir.mkdir()
    stale_file(metrics_dir)
    users = MockService("users")
    config = services_config({"users": users}, redis={"url": redis_server.url})
    env = {"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)} if explicit else {}
    try:
        with GatewayProcess(config, workers=2, env=env) as gw:  # `gateway run --workers 2`
            if explicit:
                assert not (metrics_dir / "counter_999999.db").exists()  # wiped at start-up
            else:
                metrics_dir = Path(tempfile.gettempdir()) / f"pygateway-metrics-{gw.pid}"
            for _ in range(20):  # a new connection each: the kernel spreads them over workers
                assert httpx.get(gw.url + "/api/users", headers={"connection": "close"}).status_code == 200
            deadline = time.monotonic() + 10
            while True:
                seen = [requests_total(httpx.get(gw.url + "/metrics?format=prometheus",
                                                 headers={"connection": "close"}).text)
                        for _ in range(4)]
                if all(s == {"/api/users": 20} for s in seen) or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            assert all(s == {"/api/users": 20} for s in seen), seen
            files = sorted(p.name for p in metrics_dir.glob("counter_*.db"))
            assert len(files) == 2 and os.path.exists(metrics_dir / MARKER)
    finally:
        users.stop()
