"""Background health checks of the upstream services (never on the request path)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

import aiohttp

from gateway.config import GatewayConfig

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

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.results: dict[str, dict[str, ServiceHealth]] = {
            name: {url: ServiceHealth() for url in s.upstreams} for name, s in config.services.items()
        }
        self._tasks: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())
        for name, settings in self.config.services.items():
            for url in settings.upstreams:
                self._tasks.append(asyncio.create_task(self._watch(name, url), name=f"health:{name}"))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._session is not None:
            await self._session.close()

    async def _watch(self, name: str, url: str) -> None:
        settings = self.config.services[name]
        while True:
            await self.check(name, url)
            await asyncio.sleep(settings.health_interval)

    async def check(self, name: str, url: str) -> ServiceHealth:
        settings = self.config.services[name]
        result = self.results[name][url]
        started = time.perf_counter()
        assert self._session is not None
        before = result.status
        try:
            timeout = aiohttp.ClientTimeout(total=min(settings.timeout, 5.0), sock_connect=settings.connect_timeout)
            async with self._session.get(url + settings.health_path, timeout=timeout) as resp:
                await resp.read()
                result.http_status = resp.status
                result.status = "healthy" if resp.status < 400 else "unhealthy"
                result.error = None if resp.status < 400 else f"health check answered {resp.status}"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
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
