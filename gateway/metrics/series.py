"""The Prometheus series of one process's RequestStats, and how they become metric families.

Names follow Prometheus' conventions (and pass `promtool check metrics`): base units (seconds,
bytes), `_total` on counters, a HELP line on every metric.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any, NamedTuple

from prometheus_client.metrics_core import Metric
from prometheus_client.utils import floatToGoString

from gateway.metrics.latency import BOUNDS, LatencyHistogram
from gateway.stats import RequestStats

Labels = tuple[tuple[str, str], ...]

HELP = {
    "gateway_requests": "Requests answered by the gateway, by route, service, method, status class and exact status code.",
    "gateway_request_duration_seconds": "Whole request time at the gateway, first byte in to last byte out.",
    "gateway_processing_duration_seconds": "The gateway's own share of a request: whole time minus the upstream exchange.",
    "gateway_upstream_duration_seconds": "Time of the upstream exchange, by service.",
    "gateway_rate_limit_decisions": "Rate-limit decisions, by consumer tier, route and decision (admitted or rejected).",
    "gateway_cache_requests": "Cache outcome of answered requests, by route and result (hit, miss, stale, bypass, revalidated).",
    "gateway_cache_coalesced_waits": "Requests that waited for another request filling the same cache entry.",
    "gateway_upstream_errors": "Failed upstream exchanges, by service and kind (connect, reset, timeout).",
    "gateway_store_duration_seconds": "Round-trip time of one pipeline to the shared store (Redis).",
    "gateway_store_errors": "Store calls that failed, by kind: unavailable (no answer in time), error (a command failed), down (not tried: store known down).",
    "gateway_config_reloads": "Configuration reloads, by result: applied, or refused (an invalid file; the previous configuration kept serving).",
    "gateway_consumer_changes": "Changes to run-time consumers made through this replica's admin API, by action.",
}

# policy counter name in RequestStats.policy_counters -> counter metric
POLICY_COUNTERS = {"cache_coalesced_waits": "gateway_cache_coalesced_waits"}


class Sample(NamedTuple):
    """One value of one series, as prometheus_client's multiprocess files store it.

    Histogram buckets are per bucket (not cumulative), as in those files; `families` adds them up.
    """

    kind: str  # counter | histogram
    metric: str
    name: str
    labels: Labels
    help: str
    value: float


def samples(stats: RequestStats) -> Iterator[Sample]:
    """Every counter and histogram sample of `stats`."""
    yield from _counter("gateway_requests", ("route", "service", "method", "status_class", "code"),
                        stats.requests)
    yield from _counter("gateway_rate_limit_decisions", ("tier", "route", "decision"), stats.rate_limit)
    yield from _counter("gateway_cache_requests", ("route", "result"), stats.cache)
    errors = {(service, kind): n for service, s in stats.services.items()
              for kind, n in s.upstream_failures.items()}
    yield from _counter("gateway_upstream_errors", ("service", "kind"), errors)
    yield from _counter("gateway_store_errors", ("kind",), {(k,): n for k, n in stats.store_errors.items()})
    for counter, metric in POLICY_COUNTERS.items():
        if counter in stats.policy_counters:
            yield Sample("counter", metric, metric + "_total", (), HELP[metric],
                         stats.policy_counters[counter])
    yield from _counter("gateway_config_reloads", ("result",), {(k,): n for k, n in stats.reloads.items()})
    yield from _counter("gateway_consumer_changes", ("action",),
                        {(k,): n for k, n in stats.consumer_changes.items()})
    services = stats.route_services
    for metric, table in (("gateway_request_duration_seconds", stats.latency),
                          ("gateway_processing_duration_seconds", stats.own_latency)):
        for route, hist in table.items():
            yield from _histogram(metric, (("route", route), ("service", services.get(route, ""))), hist)
    yield from _histograms("gateway_upstream_duration_seconds", "service", stats.upstream_latency)
    if stats.store_latency.count:
        yield from _histogram("gateway_store_duration_seconds", (), stats.store_latency)


def _counter(metric: str, names: tuple[str, ...], table: Mapping[Any, int]) -> Iterator[Sample]:
    help_text = HELP[metric]
    for values, n in table.items():
        yield Sample("counter", metric, metric + "_total", tuple(zip(names, values, strict=True)),
                     help_text, n)


def _histograms(metric: str, label: str, table: dict[str, LatencyHistogram]) -> Iterator[Sample]:
    for value, hist in table.items():
        yield from _histogram(metric, ((label, value),), hist)


def _histogram(metric: str, labels: Labels, hist: LatencyHistogram) -> Iterator[Sample]:
    help_text = HELP[metric]
    bucket = metric + "_bucket"
    for bound, n in zip((*BOUNDS, float("inf")), hist.counts, strict=True):
        yield Sample("histogram", metric, bucket, (*labels, ("le", floatToGoString(bound))), help_text, n)
    yield Sample("histogram", metric, metric + "_sum", labels, help_text, hist.sum)


def families(all_samples: Iterable[Sample]) -> list[Metric]:
    """Metric families with cumulative buckets and `_count`, ready for exposition."""
    metrics: dict[str, Metric] = {}
    running: dict[tuple[str, Labels], float] = {}
    for s in all_samples:
        family = metrics.get(s.metric)
        if family is None:
            family = metrics[s.metric] = Metric(s.metric, s.help, s.kind)
        if s.kind == "histogram" and s.name.endswith("_bucket"):
            base = tuple(p for p in s.labels if p[0] != "le")
            acc = running.get((s.metric, base), 0.0) + s.value
            running[(s.metric, base)] = acc
            family.add_sample(s.name, dict(s.labels), acc)
            if s.labels[-1] == ("le", "+Inf"):
                family.add_sample(s.metric + "_count", dict(base), acc)
        else:
            family.add_sample(s.name, dict(s.labels), s.value)
    return list(metrics.values())
