"""Background health checks of the upstream services (never on the request path).

They go through the engine's upstream client like proxied requests (same TLS verification and
`ca_file`), on a pool of their own per target, so a busy data plane cannot starve them and
they never take a connection a request could use.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

from gateway.config import GatewayConfig
from gateway.engine.client import TargetPool, UpstreamError, send
from gateway.upstream import Target, parse_target, tls_context

log = logging.getLogger("gateway.health")


@dataclass(slots=True)
class ServiceHealth:
    status: str = "unknown"  # "healthy" | "unhealthy" | "unknown"
    checked_at: float | None = None
    latency_ms: float | None = None
    error: str | None = None
    http_status: int | None = None


class HealthMonitor:
    """Polls each upstream target's `health_path` every `health_interval` seconds."""

    def __init__(self, config: GatewayConfig, *, previous: HealthMonitor | None = None) -> None:
        """`previous`: the monitor a reload replaces; its last results carry over."""
        self.config = config
        known = previous.results if previous is not None else {}
        self.results: dict[str, dict[str, ServiceHealth]] = {
            name: {url: known.get(name, {}).get(url) or ServiceHealth() for url in s.upstreams}
            for name, s in config.services.items()
        }
        self._tasks: list[asyncio.Task[None]] = []
        self._targets: dict[str, Target] = {}
        self._pools: dict[str, TargetPool] = {}

    async def start(self) -> None:
        for name, settings in self.config.services.items():
            context = None
            for url in settings.upstreams:
                target = self._targets[url] = parse_target(url)
                if target.tls:
                    context = context or tls_context(settings.ca_file)
                self._pools[url] = TargetPool(target.host, target.port, tls=context if target.tls else None,
                                              limit=1, wait_timeout=settings.timeout,
                                              keepalive=max(30.0, settings.health_interval * 2))
                self._tasks.append(asyncio.create_task(self._watch(name, url), name=f"health:{name}"))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for pool in self._pools.values():
            pool.close()

    async def _watch(self, name: str, url: str) -> None:
        settings = self.config.services[name]
        while True:
            await self.check(name, url)
            await asyncio.sleep(settings.health_interval)

    async def check(self, name: str, url: str) -> ServiceHealth:
        settings = self.config.services[name]
        result = self.results[name][url]
        started = time.perf_counter()
        before = result.status
        target = self._targets[url]
        head = b"GET %s%s HTTP/1.1\r\nhost: %s\r\nuser-agent: pygateway-health\r\n\r\n" % (
            target.base_path, settings.health_path.encode(), target.host_header)
        try:
            async with asyncio.timeout(min(settings.timeout, 5.0) + settings.connect_timeout):
                ex = await send(self._pools[url], head, None, chunked=False, head_only=False,
                                stall=min(settings.timeout, 5.0),
                                connect_timeout=settings.connect_timeout, small_body=64 * 1024)
                try:
                    if ex.reads_whole:
                        await ex.read_whole()
                    elif ex.stream is not None:
                        async for _ in ex.stream:
                            pass
                finally:
                    ex.release()
            result.http_status = ex.status
            result.status = "healthy" if ex.status < 400 else "unhealthy"
            result.error = None if ex.status < 400 else f"health check answered {ex.status}"
        except (UpstreamError, TimeoutError, OSError) as exc:
            result.status, result.http_status = "unhealthy", None
            result.error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        result.checked_at = time.time()
        result.latency_ms = round((time.perf_counter() - started) * 1000, 2)
        if before != result.status and before != "unknown":
            log.warning("service %s (%s) is now %s", name, url, result.status)
        return result

    def service_status(self, name: str) -> str:
        states = {r.status for r in self.results[name].values()}
        if states == {"healthy"}:
            return "healthy"
        if "healthy" in states:
            return "degraded"
        return "unknown" if states == {"unknown"} else "unhealthy"

    def snapshot(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, targets in self.results.items():
            out[name] = {
                "status": self.service_status(name),
                "targets": {
                    url: {
                        "status": r.status,
                        "checked_at": r.checked_at,
                        "latency_ms": r.latency_ms,
                        "http_status": r.http_status,
                        "error": r.error,
                    }
                    for url, r in targets.items()
                },
            }
        return out
