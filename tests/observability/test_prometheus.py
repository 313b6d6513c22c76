"""/metrics for Prometheus: content negotiation, the series after real traffic, and the lint."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from asyncio.subprocess import PIPE
from collections.abc import AsyncIterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.observability.conftest import gateway_config
from tests.support.inproc import running_gateway
from tests.support.processes import free_port

PROMTOOL_PLACES = ("/opt/promtool-deb/usr/bin/promtool",)


def promtool() -> str | None:
    """promtool from $PROMTOOL, PATH, or Debian's prometheus package unpacked (see the notes)."""
    for candidate in (os.environ.get("PROMTOOL"), shutil.which("promtool"), *PROMTOOL_PLACES):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


@pytest.fixture
async def busy(users_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """A gateway that has served successes, 404s, 429s and upstream failures."""
    dead = f"http://127.0.0.1:{free_port()}"
    config = gateway_config(users_url)
    config["services"]["orders"] = {"url": dead, "timeout": 1, "connect_timeout": 0.5}
    config["routes"]["/api/orders"] = "orders"
    config["rate_limits"] = {"default": 100, "anonymous": 5}
    config["circuit_breaker"] = {"enabled": True, "failure_threshold": 2}
    async with running_gateway(config) as app:
        async with httpx.AsyncClient(base_url=app.url, timeout=10) as client:
            client.app = app  # type: ignore[attr-defined]
            await client.get("/api/orders")  # two failures: threshold 2 opens its breaker
            await client.get("/api/orders")
            await client.get("/api/users")
            await client.get("/api/users/999999")
            await client.post("/api/users", json={})
            for _ in range(4):  # the anonymous tier's 5 per minute are used up: 429s
                await client.get("/api/users")
            yield client


async def scrape(client: httpx.AsyncClient, **kwargs: object) -> str:
    resp = await client.get("/metrics", headers={"accept": "text/plain"}, **kwargs)  # type: ignore[arg-type]
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain; version=0.0.4")
    return resp.text


def values(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def test_json_stays_the_default(gw: httpx.AsyncClient) -> None:
    for accept in (None, "*/*", "application/json", "text/html,application/xhtml+xml,*/*;q=0.8"):
        headers = {"accept": accept} if accept else {}
        resp = await gw.get("/metrics", headers=headers)
        assert resp.headers["content-type"] == "application/json"
        assert {"requests", "services", "rate_limits", "circuit_breakers", "cache"} <= set(resp.json())


async def test_negotiates_prometheus_and_openmetrics(gw: httpx.AsyncClient) -> None:
    await gw.get("/api/users")
    text = await gw.get("/metrics", headers={"accept": "text/plain;version=0.0.4"})
    assert text.headers["content-type"].startswith("text/plain")
    assert "# TYPE gateway_requests_total counter" in text.text
    # What Prometheus itself sends: OpenMetrics preferred.
    prom_accept = ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
                   "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1")
    om = await gw.get("/metrics", headers={"accept": prom_accept})
    assert om.headers["content-type"].startswith("application/openmetrics-text")
    assert om.text.rstrip().endswith("# EOF")
    by_param = await gw.get("/metrics?format=prometheus")
    assert by_param.headers["content-type"].startswith("text/plain")
    assert (await gw.get("/metrics?format=openmetrics")).text.rstrip().endswith("# EOF")


async def test_unknown_format_is_a_problem(gw: httpx.AsyncClient) -> None:
    resp = await gw.get("/metrics?format=xml")
    assert resp.status_code == 400
    assert resp.headers["content-type"] == "application/problem+json"
    assert "format" in resp.json()["detail"]


def total(v: dict[tuple[str, tuple[tuple[str, str], ...]], float], metric: str, **labels: str) -> float:
    """The sum of `metric`'s series whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(n for (name, series), n in v.items() if name == metric and wanted <= set(series))


async def test_series_after_traffic(busy: httpx.AsyncClient) -> None:
    v = values(await scrape(busy))
    requests = "gateway_requests_total"
    assert total(v, requests, method="GET", route="/api/users", status_class="2xx") >= 1
    assert total(v, requests, method="GET", route="/api/users", status_class="4xx") >= 2
    assert total(v, requests, method="POST", route="/api/users", status_class="4xx") == 1
    assert total(v, requests, method="GET", route="/api/orders", status_class="5xx") == 2
    # the exact status and the service, as in kong_http_requests_total{service,route,code}
    assert total(v, requests, route="/api/users", service="users", code="200") >= 1
    assert total(v, requests, route="/api/users", service="users", code="429") == 4
    assert total(v, requests, route="/api/orders", service="orders", code="502") == 2
    assert total(v, requests, status_class="4xx") == sum(
        total(v, requests, code=str(c)) for c in range(400, 500))
    assert v[("gateway_upstream_errors_total", (("kind", "connect"), ("service", "orders")))] == 2
    decisions = "gateway_rate_limit_decisions_total"
    assert total(v, decisions, decision="admitted", tier="anonymous") == 5
    assert total(v, decisions, decision="rejected", tier="anonymous", route="/api/users") == 4
    users = (("route", "/api/users"), ("service", "users"))
    count = v[("gateway_request_duration_seconds_count", users)]
    assert count == 7
    assert v[("gateway_request_duration_seconds_bucket", (("le", "+Inf"), *users))] == count
    assert v[("gateway_upstream_duration_seconds_count", (("service", "users"),))] == 3  # 429s never went
    assert v[("gateway_processing_duration_seconds_count", users)] == count
    assert v[("gateway_store_duration_seconds_count", ())] >= 8
    assert v[("gateway_store_mode", (("mode", "embedded"),))] == 1
    assert v[("gateway_store_up", ())] == 1


async def test_breaker_state_and_transitions_are_exported(busy: httpx.AsyncClient) -> None:
    if "circuit_breaker" not in busy.app.gateway.policies:  # type: ignore[attr-defined]
        pytest.skip("the circuit breaker is not in the policy chain")
    for _ in range(100):  # outcomes are recorded in batches after the responses
        v = values(await scrape(busy))
        states = {dict(labels)["state"]: value for (name, labels), value in v.items()
                  if name == "gateway_breaker_state" and dict(labels)["service"] == "orders"}
        if states.get("open"):
            break
        await asyncio.sleep(0.05)
    assert states == {"closed": 0, "open": 1, "half-open": 0}
    transitions = [value for (name, labels), value in v.items()
                   if name == "gateway_breaker_transitions_total" and dict(labels)["service"] == "orders"]
    assert transitions == [1]


# -- the lint ---------------------------------------------------------------------------------
UNIT_WORDS = re.compile(r"duration|latency|time|age|size|bytes")


def lint(text: str) -> list[str]:
    """Prometheus' naming rules as `promtool check metrics` applies them, plus ours."""
    problems = []
    helps = dict(re.findall(r"^# HELP (\S+) (.+)$", text, re.M))
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
    for name, kind in types.items():
        if not re.fullmatch(r"gateway_[a-z0-9_]+", name):
            problems.append(f"{name}: not snake_case under gateway_")
        if not helps.get(name, "").strip():
            problems.append(f"{name}: no HELP")
        if kind == "counter" and not name.endswith("_total"):
            problems.append(f"{name}: counter without _total")
        if kind != "counter" and name.endswith("_total"):
            problems.append(f"{name}: _total on a {kind}")
        if re.search(r"_(milli|micro|nano)?seconds?_|_ms$|_millis|_kilo|_mega|_percent", name):
            problems.append(f"{name}: not a base unit")
        base = name.removesuffix("_total")
        if UNIT_WORDS.search(base) and not base.endswith(("_seconds", "_bytes")):
            problems.append(f"{name}: needs a unit suffix (_seconds, _bytes)")
    return problems


async def test_names_pass_the_lint(busy: httpx.AsyncClient) -> None:
    await busy.get("/api/orders")
    text = await scrape(busy)
    assert lint(text) == []
    assert lint("# HELP gateway_x_ms x\n# TYPE gateway_x_ms gauge\ngateway_x_ms 1\n")  # it bites


async def test_promtool_check_metrics(busy: httpx.AsyncClient) -> None:
    tool = promtool()
    if tool is None:
        pytest.skip("promtool not found (Debian's prometheus package ships it; see notes/observability.md)")
    await busy.get("/api/orders")
    text = await scrape(busy)
    proc = await asyncio.create_subprocess_exec(tool, "check", "metrics", stdin=PIPE, stdout=PIPE, stderr=PIPE)
    out, err = await asyncio.wait_for(proc.communicate(text.encode()), 30)
    assert proc.returncode == 0 and out.strip() == b"" and err.strip() == b"", out + err


async def test_breaker_families_from_the_policy_metrics_shape() -> None:
    """The breaker's documented metrics() shape becomes state gauges and transition counters."""
    from types import SimpleNamespace

    from gateway.metrics.exposition import _breaker_families

    class Breaker:
        async def metrics(self) -> dict[str, object]:
            return {"source": "redis", "services": {"orders": {"state": "open", "targets": {
                "http://a:1": {"state": "open", "transitions": 3},
                "http://b:1": {"state": "half-open", "transitions": 4}}}}}

    state, transitions = await _breaker_families(SimpleNamespace(policies={"circuit_breaker": Breaker()}))  # type: ignore[arg-type]
    current = {(s.labels["target"], s.labels["state"]) for s in state.samples if s.value == 1}
    assert current == {("http://a:1", "open"), ("http://b:1", "half-open")}
    assert {s.labels["target"]: s.value for s in transitions.samples if s.name.endswith("_total")} == \
        {"http://a:1": 3, "http://b:1": 4}
