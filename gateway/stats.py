"""In-process request statistics: the seed's /metrics numbers for this replica."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.context import RequestContext


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


class RequestStats:
    """Counters kept by the hot path, cheap enough to update on every request."""

    def __init__(self) -> None:
        self.started = time.time()
        self.total = 0
        self.successful = 0  # status < 400
        self.failed = 0  # status >= 400
        self.cached = 0  # answered from the cache (HIT or STALE)
        self.by_status: dict[str, int] = {}
        self.services: dict[str, ServiceStats] = {}

    def record(self, service: str, status: int, duration: float, ctx: RequestContext | None) -> None:
        self.total += 1
        if status < 400:
            self.successful += 1
        else:
            self.failed += 1
        klass = f"{status // 100}xx"
        self.by_status[klass] = self.by_status.get(klass, 0) + 1
        svc = self.services.get(service)
        if svc is None:
            svc = self.services[service] = ServiceStats()
        svc.requests += 1
        if status >= 500:
            svc.errors += 1
        svc.latency_total += duration
        if duration > svc.latency_max:
            svc.latency_max = duration
        if ctx is not None:
            if ctx.cache_status in ("HIT", "STALE"):
                self.cached += 1
            if ctx.upstream is not None and ctx.upstream.failure:
                kind = ctx.upstream.failure
                svc.upstream_failures[kind] = svc.upstream_failures.get(kind, 0) + 1

    def snapshot(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "successful": self.successful,
            "failed": self.failed,
            "cached": self.cached,
            "by_status": dict(self.by_status),
            "uptime_seconds": round(time.time() - self.started, 1),
        }

    def services_snapshot(self) -> dict[str, Any]:
        return {name: s.as_dict() for name, s in self.services.items()}
