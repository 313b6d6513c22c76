"""In-process request statistics: what the hot path counts, for /metrics (JSON and Prometheus).

`RequestStats.record` runs once per request and only touches plain dicts and lists (about a
microsecond); exporters read the totals when asked. A snapshot (`export`) is JSON, so replicas
can publish theirs through Redis and any replica can merge them (`merge`) into the cluster view.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gateway.metrics.latency import LatencyHistogram

if TYPE_CHECKING:
    from gateway.context import RequestContext
    from gateway.routing import Route

# Label values are bounded: an unknown method is counted as OTHER, never as itself.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"})
STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")


@dataclass(slots=True)
class ServiceStats:
    requests: int = 0
    errors: int = 0  # 5xx answered for this service
    latency_total: float = 0.0
    latency_max: float = 0.0
    upstream_failures: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        avg = self.latency_total / self.requests if self.requests else 0.0
        return {
            "requests": self.requests,
            "errors": self.errors,
            "avg_latency_ms": round(avg * 1000, 3),
            "max_latency_ms": round(self.latency_max * 1000, 3),
            "upstream_failures": dict(self.upstream_failures),
        }

    def add(self, other: ServiceStats) -> None:
        self.requests += other.requests
        self.errors += other.errors
        self.latency_total += other.latency_total
        self.latency_max = max(self.latency_max, other.latency_max)
        for kind, n in other.upstream_failures.items():
            self.upstream_failures[kind] = self.upstream_failures.get(kind, 0) + n


class RequestStats:
    """Counters kept by the hot path, cheap enough to update on every request.

    Everything is cumulative since the process started; rates and recent percentiles are
    differences between two reads (what Prometheus and the dashboard do).
    """

    def __init__(self) -> None:
        self.started = time.time()
        self.total = 0
        self.successful = 0  # status < 400
        self.failed = 0  # status >= 400
        self.cached = 0  # answered from the cache (HIT or STALE)
        self.rate_limited = 0  # 429 answered by the rate limiter itself
        self.by_status: dict[str, int] = {}
        self.services: dict[str, ServiceStats] = {}
        # Prometheus series: label tuples -> value.
        # (route, service, method, status class, exact status code)
        self.requests: dict[tuple[str, str, str, str, str], int] = {}
        self.route_services: dict[str, str] = {}  # route -> its service (the histograms' label)
        self.latency: dict[str, LatencyHistogram] = {}  # route -> whole request, as clients see it
        self.own_latency: dict[str, LatencyHistogram] = {}  # route -> the gateway's own share
        self.upstream_latency: dict[str, LatencyHistogram] = {}  # service -> upstream exchange
        self.rate_limit: dict[tuple[str, str, str], int] = {}  # (tier, route, admitted|rejected)
        self.cache: dict[tuple[str, str], int] = {}  # (route, hit|miss|stale|bypass|...)
        self.store_latency = LatencyHistogram()  # one pipeline round trip to Redis
        self.store_errors: dict[str, int] = {}  # unavailable | error | down (not even tried)
        # Per-process counters that policies keep themselves (e.g. cache coalesced waits),
        # copied in periodically by the telemetry loop so they travel with the rest.
        self.policy_counters: dict[str, int] = {}
        self.reloads: dict[str, int] = {}  # applied | refused (gateway/reload.py)
        self.consumer_changes: dict[str, int] = {}  # created | updated | rotated | deleted

    # -- the hot path ------------------------------------------------------------------------
    def record(self, route: Route, method: str, status: int, duration: float,
               ctx: RequestContext | None) -> None:
        self.total += 1
        if status < 400:
            self.successful += 1
        else:
            self.failed += 1
        klass = STATUS_CLASSES[status // 100 - 1] if 100 <= status < 600 else "5xx"
        self.by_status[klass] = self.by_status.get(klass, 0) + 1
        prefix, service = route.prefix, route.service
        key = (prefix, service, method if method in METHODS else "OTHER", klass, _code(status))
        self.requests[key] = self.requests.get(key, 0) + 1
        hist = self.latency.get(prefix)
        if hist is None:
            hist = self.latency[prefix] = LatencyHistogram()
            self.own_latency[prefix] = LatencyHistogram()
            self.route_services[prefix] = service
        hist.observe(duration)
        svc = self.services.get(service)
        if svc is None:
            svc = self.services[service] = ServiceStats()
        svc.requests += 1
        if status >= 500:
            svc.errors += 1
        svc.latency_total += duration
        if duration > svc.latency_max:
            svc.latency_max = duration
        own = duration
        if ctx is not None:
            upstream = ctx.upstream
            if upstream is not None:
                own = max(0.0, duration - upstream.duration)
                up = self.upstream_latency.get(service)
                if up is None:
                    up = self.upstream_latency[service] = LatencyHistogram()
                up.observe(upstream.duration)
                if upstream.failure:
                    kind = upstream.failure
                    svc.upstream_failures[kind] = svc.upstream_failures.get(kind, 0) + 1
            cache = ctx.cache_status
            if cache is not None:
                if cache == "HIT" or cache == "STALE":
                    self.cached += 1
                ckey = (prefix, cache.lower())
                self.cache[ckey] = self.cache.get(ckey, 0) + 1
            if ctx.rate_limit_remaining is not None:
                # The limiter answers 429 itself, without an upstream call; an upstream's own
                # 429 came through an admitted request.
                rejected = status == 429 and upstream is None
                if rejected:
                    self.rate_limited += 1
                tier = ctx.consumer.tier if ctx.consumer is not None else "anonymous"
                rkey = (tier, prefix, "rejected" if rejected else "admitted")
                self.rate_limit[rkey] = self.rate_limit.get(rkey, 0) + 1
        self.own_latency[prefix].observe(own)

    def record_store_call(self, seconds: float | None, error: str | None) -> None:
        """One pipeline to the store: its round-trip time (None when not even tried) and how it
        failed, if it did."""
        if seconds is not None:
            self.store_latency.observe(seconds)
        if error is not None:
            self.store_errors[error] = self.store_errors.get(error, 0) + 1

    # -- the seed's JSON ---------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        overall = self.overall_latency()
        p50, p99 = overall.quantile(0.5), overall.quantile(0.99)
        return {
            "total": self.total,
            "successful": self.successful,
            "failed": self.failed,
            "cached": self.cached,
            "rate_limited": self.rate_limited,
            "by_status": dict(self.by_status),
            "latency_p50_ms": None if p50 is None else round(p50 * 1000, 3),
            "latency_p99_ms": None if p99 is None else round(p99 * 1000, 3),
            "uptime_seconds": round(time.time() - self.started, 1),
        }

    def services_snapshot(self) -> dict[str, Any]:
        return {name: s.as_dict() for name, s in self.services.items()}

    def cache_snapshot(self) -> dict[str, Any]:
        """Cache outcomes of answered requests, with the hit ratio (hits and stale over all)."""
        results: dict[str, int] = {}
        for (_, result), n in self.cache.items():
            results[result] = results.get(result, 0) + n
        looked_up = sum(results.values())
        served = results.get("hit", 0) + results.get("stale", 0)
        return {"results": results, "hit_ratio": round(served / looked_up, 4) if looked_up else None}

    def overall_latency(self) -> LatencyHistogram:
        total = LatencyHistogram()
        for hist in self.latency.values():
            total.add(hist)
        return total

    # -- snapshots between replicas ----------------------------------------------------------
    def export(self) -> dict[str, Any]:
        """Everything, as JSON-able data (tuple keys become lists)."""
        return {
            "started": self.started,
            "total": self.total,
            "successful": self.successful,
            "failed": self.failed,
            "cached": self.cached,
            "rate_limited": self.rate_limited,
            "by_status": dict(self.by_status),
            "services": {
                name: {"requests": s.requests, "errors": s.errors, "latency_total": s.latency_total,
                       "latency_max": s.latency_max, "upstream_failures": dict(s.upstream_failures)}
                for name, s in self.services.items()
            },
            "requests": [[*k, n] for k, n in self.requests.items()],
            "route_services": dict(self.route_services),
            "latency": {k: h.as_dict() for k, h in self.latency.items()},
            "own_latency": {k: h.as_dict() for k, h in self.own_latency.items()},
            "upstream_latency": {k: h.as_dict() for k, h in self.upstream_latency.items()},
            "rate_limit": [[*k, n] for k, n in self.rate_limit.items()],
            "cache": [[*k, n] for k, n in self.cache.items()],
            "store_latency": self.store_latency.as_dict(),
            "store_errors": dict(self.store_errors),
            "policy_counters": dict(self.policy_counters),
            "reloads": dict(self.reloads),
            "consumer_changes": dict(self.consumer_changes),
        }

    @classmethod
    def from_export(cls, data: dict[str, Any]) -> RequestStats:
        """The inverse of `export`; unknown or malformed parts of a snapshot are skipped."""
        stats = cls()
        stats.started = float(data.get("started") or stats.started)
        for name in ("total", "successful", "failed", "cached", "rate_limited"):
            setattr(stats, name, int(data.get(name) or 0))
        stats.by_status = {str(k): int(v) for k, v in (data.get("by_status") or {}).items()}
        for name, s in (data.get("services") or {}).items():
            stats.services[name] = ServiceStats(
                int(s.get("requests", 0)), int(s.get("errors", 0)), float(s.get("latency_total", 0)),
                float(s.get("latency_max", 0)),
                {str(k): int(v) for k, v in (s.get("upstream_failures") or {}).items()})
        # Rows of another width (a replica of an older version) are skipped.
        stats.requests = _table(data.get("requests"), 5)  # type: ignore[assignment]
        stats.route_services = {str(k): str(v) for k, v in (data.get("route_services") or {}).items()}
        stats.rate_limit = _table(data.get("rate_limit"), 3)  # type: ignore[assignment]
        stats.cache = _table(data.get("cache"), 2)  # type: ignore[assignment]
        for name in ("latency", "own_latency", "upstream_latency"):
            setattr(stats, name, {k: LatencyHistogram.from_dict(v)
                                  for k, v in (data.get(name) or {}).items()})
        stats.store_latency = LatencyHistogram.from_dict(data.get("store_latency"))
        stats.store_errors = {str(k): int(v) for k, v in (data.get("store_errors") or {}).items()}
        stats.policy_counters = {str(k): int(v)
                                 for k, v in (data.get("policy_counters") or {}).items()}
        for name in ("reloads", "consumer_changes"):
            setattr(stats, name, {str(k): int(v) for k, v in (data.get(name) or {}).items()})
        return stats

    def merge(self, other: RequestStats) -> None:
        """Add another replica's totals into this one (the cluster-wide view)."""
        self.started = min(self.started, other.started)
        for name in ("total", "successful", "failed", "cached", "rate_limited"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        _add(self.by_status, other.by_status)
        for name, s in other.services.items():
            self.services.setdefault(name, ServiceStats()).add(s)
        _add(self.requests, other.requests)
        for route, service in other.route_services.items():
            self.route_services.setdefault(route, service)
        _add(self.rate_limit, other.rate_limit)
        _add(self.cache, other.cache)
        _add(self.store_errors, other.store_errors)
        _add(self.policy_counters, other.policy_counters)
        _add(self.reloads, other.reloads)
        _add(self.consumer_changes, other.consumer_changes)
        for name in ("latency", "own_latency", "upstream_latency"):
            mine: dict[str, LatencyHistogram] = getattr(self, name)
            for key, hist in getattr(other, name).items():
                mine.setdefault(key, LatencyHistogram()).add(hist)
        self.store_latency.add(other.store_latency)


_CODES = {code: str(code) for code in range(100, 600)}


def _code(status: int) -> str:
    """The exact status as a label value (one string per status, made once)."""
    return _CODES.get(status) or "other"


def _add(into: dict[Any, int], other: dict[Any, int]) -> None:
    for key, n in other.items():
        into[key] = into.get(key, 0) + n


def _table(rows: Any, width: int) -> dict[tuple[str, ...], int]:
    out: dict[tuple[str, ...], int] = {}
    for row in rows or ():
        if isinstance(row, list) and len(row) == width + 1:
            out[tuple(str(x) for x in row[:width])] = int(row[width])
    return out
