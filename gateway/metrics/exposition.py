"""/metrics in Prometheus' text format or OpenMetrics, chosen by the scraper's Accept header.

Counters and histograms come from the hot path's RequestStats: this process's own, or, under
--workers, every worker's merged from the multiprocess files. Gauges of shared state (breaker
states, cache size, store mode, live replicas) are read when scraped; those read from Redis are
cluster-wide, so every replica reports the same value (aggregate them with max, not sum).
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
)
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST as OPENMETRICS
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from gateway.metrics.series import families, samples

if TYPE_CHECKING:
    from gateway.runtime import Gateway

BREAKER_STATES = ("closed", "open", "half-open")
# The classic text format: what every Prometheus version parses (our names need no escaping).
TEXT_FORMAT = "text/plain; version=0.0.4; charset=utf-8"


def wants_prometheus(accept: str, fmt: str | None) -> str | None:
    """"openmetrics", "text" or None (the JSON document) for a request's Accept / ?format=."""
    if fmt:
        fmt = fmt.lower()
        if fmt in ("prometheus", "text"):
            return "text"
        if fmt == "openmetrics":
            return "openmetrics"
        return None
    accept = accept.lower()
    if "application/openmetrics-text" in accept:
        return "openmetrics"
    if "text/plain" in accept and "application/json" not in accept:
        return "text"
    return None


class _Families:
    """A collector over families gathered before the scrape (collect() cannot await)."""

    def __init__(self, metrics: Iterable[Metric]) -> None:
        self.metrics = list(metrics)

    def collect(self) -> Iterable[Metric]:
        return self.metrics


async def render(gw: Gateway, flavour: str) -> tuple[bytes, str]:
    """The exposition body and its content type."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families([*request_families(gw), *await shared_state_families(gw)]))
    if flavour == "openmetrics":
        return generate_openmetrics(registry), OPENMETRICS
    return generate_latest(registry), TEXT_FORMAT


def request_families(gw: Gateway) -> list[Metric]:
    telemetry = gw.telemetry
    if telemetry is None or telemetry.metrics_dir is None:
        return families(samples(gw.stats))
    path = telemetry.metrics_dir
    telemetry.flush()  # this worker's numbers as of now; the others' are at most a second old
    return list(MultiProcessCollector.merge(glob.glob(os.path.join(path, "*.db")), accumulate=True))


async def shared_state_families(gw: Gateway) -> list[Metric]:
    out: list[Metric] = []
    info = GaugeMetricFamily("gateway_info", "This gateway process: version and replica id.",
                             labels=["version", "replica"])
    info.add_metric([gw.version, gw.replica_id], 1)
    out.append(info)
    store = gw.store
    if store is not None:
        mode = "embedded" if store.embedded else ("shared" if store.available else "local_fallback")
        gauge = GaugeMetricFamily(
            "gateway_store_mode",
            "Where shared state lives now: shared (Redis), local_fallback (Redis down: "
            "per-process fallbacks) or embedded (in-process store, single process).",
            labels=["mode"])
        for name in ("shared", "local_fallback", "embedded"):
            gauge.add_metric([name], 1 if name == mode else 0)
        out.append(gauge)
        out.append(GaugeMetricFamily("gateway_store_up", "1 when the shared store answers.",
                                     value=1 if store.available else 0))
    if gw.replicas is not None:
        out.append(GaugeMetricFamily("gateway_replicas", "Live gateway replicas seen through the store.",
                                     value=gw.replicas.live_count))
    out.extend(await _breaker_families(gw))
    out.extend(await _cache_families(gw))
    return out


async def _policy_metrics(gw: Gateway, name: str) -> dict[str, Any] | None:
    policy = gw.policies.get(name)
    metrics = getattr(policy, "metrics", None)
    if metrics is None:
        return None
    try:
        result = await metrics()
    except Exception:  # a store hiccup must not break the scrape
        return None
    return result if isinstance(result, dict) else None


async def _breaker_families(gw: Gateway) -> list[Metric]:
    doc = await _policy_metrics(gw, "circuit_breaker")
    if not doc:
        return []
    state = GaugeMetricFamily(
        "gateway_breaker_state",
        "Circuit breaker state per service and upstream target: 1 for the current state.",
        labels=["service", "target", "state"])
    transitions = CounterMetricFamily(
        "gateway_breaker_transitions", "Circuit breaker state changes per service and target.",
        labels=["service", "target"])
    for service, info in (doc.get("services") or {}).items():
        for target, t in (info.get("targets") or {}).items():
            for name in BREAKER_STATES:
                state.add_metric([service, target, name], 1 if t.get("state") == name else 0)
            if "transitions" in t:
                transitions.add_metric([service, target], float(t["transitions"]))
    return [state, transitions]


async def _cache_families(gw: Gateway) -> list[Metric]:
    doc = await _policy_metrics(gw, "cache")
    if not doc:
        return []
    out: list[Metric] = []
    if doc.get("entries") is not None:
        out.append(GaugeMetricFamily("gateway_cache_entries", "Responses stored in the shared cache.",
                                     value=doc["entries"]))
    if doc.get("bytes") is not None:
        out.append(GaugeMetricFamily("gateway_cache_size_bytes", "Bytes of responses stored in the shared cache.",
                                     value=doc["bytes"]))
    if doc.get("max_bytes"):
        out.append(GaugeMetricFamily("gateway_cache_max_bytes", "The shared cache's byte budget (cache.max_bytes).",
                                     value=doc["max_bytes"]))
    if doc.get("evicted") is not None:
        out.append(CounterMetricFamily(
            "gateway_cache_evictions", "Entries deleted, cluster-wide, to keep the cache within cache.max_bytes.",
            value=doc["evicted"]))
    return out
