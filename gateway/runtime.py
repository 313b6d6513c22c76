"""The gateway's runtime: every long-lived resource of one process, made in the lifespan.

No module-level singletons: the ASGI entry owns one `Gateway`, the control plane reaches it as
`request.app.state.gateway`, and the policies get what they need passed in.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from typing import Any

from gateway import __version__
from gateway.composition import build as build_policies
from gateway.config import GatewayConfig
from gateway.forwarding import TrustedProxies
from gateway.health import HealthMonitor
from gateway.hotpath import HotPath
from gateway.identity.directory import ConsumerDirectory
from gateway.logs import AccessLog
from gateway.policy import Policy, PolicyChain
from gateway.redis_memory import check_memory
from gateway.replicas import ReplicaRegistry
from gateway.routing import RouteTable
from gateway.stats import RequestStats
from gateway.store import Store, embedded_store, redis_store
from gateway.telemetry import Telemetry
from gateway.upstream import UpstreamPool

log = logging.getLogger("gateway")

# Sections a reload cannot change in a running process (a new store, listener or trace
# exporter): a changed value is logged and kept until the next restart.
RESTART_ONLY = ("redis", "admin", "tracing", "logging")
RETIRE_WAIT = 300.0  # seconds a replaced configuration waits for its last request


def make_store(config: GatewayConfig) -> Store:
    """The configured store: a Redis URL (single, Cluster, Sentinel), or the embedded one."""
    settings = config.redis
    if not settings.url:
        return embedded_store()
    scheme = settings.url.split("://", 1)[0]
    if scheme.endswith("+cluster") or scheme == "redis+sentinel":
        from gateway import topology  # Cluster / Sentinel clients live there

        return topology.make_store(settings)
    return redis_store(settings.url, timeout=settings.timeout,
                       connect_timeout=settings.connect_timeout,
                       probe_interval=settings.probe_interval)


class Gateway:
    """One process's gateway: config, store, upstream pool, policies, health, statistics."""

    def __init__(self, config: GatewayConfig, *, replica_id: str | None = None) -> None:
        self.config = config
        self.replica_id = replica_id or f"{socket.gethostname()}-{os.getpid()}"
        self.version = __version__
        self.routes = RouteTable.from_config(config)
        self.stats = RequestStats()
        self.health = HealthMonitor(config)
        self.upstream = UpstreamPool(config)
        self.store: Store | None = None
        self.replicas: ReplicaRegistry | None = None
        self.policies: dict[str, Policy] = {}
        self.hotpath: HotPath | None = None
        self.telemetry: Telemetry | None = None
        self.access_log = AccessLog.from_settings(config.logging)
        self.ready = False
        self.draining = False
        self.started_at = time.time()
        self.reloaded_at: float | None = None
        self.consumers: ConsumerDirectory | None = None  # run-time consumers (outlive a reload)
        self.reloader: Any = None  # gateway/reload.py's Reloader, when the process watches a file
        self._retiring: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self.store = make_store(self.config)
        if self.store.embedded:
            log.warning(
                "using the embedded in-process store: state is not shared, run a single process "
                "only (set redis.url to share state between replicas)"
            )
        elif not await self.store.ping():
            log.warning("store %s does not answer yet; policies fall back until it does",
                        self.store.description)
            self.store.mark_down(ConnectionError("no answer at start-up"))
        else:
            await check_memory(self.store, self.config.cache)
        await self.upstream.start()
        self.replicas = ReplicaRegistry(self.store, self.config, self.replica_id)
        await self.replicas.start()
        self.telemetry = Telemetry(self.config, self.replica_id, self.stats)
        self.consumers = ConsumerDirectory(self.store, self.config.redis.key_prefix)
        await self.consumers.start()
        await self.telemetry.start(self.store, {})  # first: the hot path takes its span export
        self.policies, self.hotpath = await self._assemble(self.config, self.upstream)
        self.telemetry.policies = self.policies
        await self.health.start()
        self.ready = True
        log.info("gateway %s ready: replica %s, %d routes, store %s", self.version, self.replica_id,
                 len(self.routes.routes), self.store.description)

    async def _assemble(self, config: GatewayConfig,
                        upstream: UpstreamPool) -> tuple[dict[str, Policy], HotPath]:
        """The policies (started) and the hot path for `config`, on this process's store,
        replicas, upstream pool and telemetry. A policy that fails to start closes the ones
        started before it and raises."""
        assert self.store is not None and self.telemetry is not None
        composition = build_policies(config, self.store, self.replicas, self.consumers)
        started: list[Any] = []
        try:
            for policy in composition.policies:
                start = getattr(policy, "start", None)
                if start is not None:
                    await start()
                started.append(policy)
        except BaseException:
            await _close_policies(started)
            raise
        chain = PolicyChain(composition.policies, upstream, self.store, routes=composition.routes)
        proxy = config.proxy
        hotpath = HotPath(
            chain,
            trusted=TrustedProxies(proxy.trusted_proxies),
            max_body_bytes=proxy.max_body_bytes,
            underscores_in_headers=proxy.underscores_in_headers,
            stats=self.stats,
            access_log=self.access_log,
            tracing=self.telemetry.tracing,
            spans=self.telemetry.spans,
        )
        return {p.name: p for p in composition.policies}, hotpath

    async def reload(self, config: GatewayConfig) -> list[str]:
        """Swap to `config` (already validated) without dropping a request.

        Everything is built first (routes, upstream pools, policies, health checks); then one
        synchronous swap: a request that arrives after it runs on the new configuration, one
        in flight finishes on the one it started with. Pooled connections to unchanged targets
        (same address and pool settings) move to the new pool. The old generation is closed
        once its last request is done. Returns the sections that changed but need a restart
        (`RESTART_ONLY`); those keep their running values.
        """
        assert self.store is not None and self.telemetry is not None and self.hotpath is not None
        pinned = [name for name in RESTART_ONLY if getattr(config, name) != getattr(self.config, name)]
        if pinned:
            config = config.model_copy(update={name: getattr(self.config, name) for name in pinned})
        routes = RouteTable.from_config(config)
        upstream = UpstreamPool(config)
        kept = await upstream.start(adopt=self.upstream)
        try:
            policies, hotpath = await self._assemble(config, upstream)
        except BaseException:
            await upstream.retire(keep=kept)  # give back only what it made itself
            raise
        health = HealthMonitor(config, previous=self.health)
        await health.start()
        old = (self.hotpath, self.policies, self.upstream, self.health)
        # The swap: no await between these lines.
        self.config, self.routes, self.upstream, self.health = config, routes, upstream, health
        self.policies, self.hotpath = policies, hotpath
        self.telemetry.policies = policies
        self.reloaded_at = time.time()
        task = asyncio.create_task(self._retire(*old, kept=kept), name="retire config")
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)
        return pinned

    async def _retire(self, hotpath: HotPath, policies: dict[str, Policy], upstream: UpstreamPool,
                      health: HealthMonitor, *, kept: set[Any]) -> None:
        """Close a replaced generation once no request runs on it (at most RETIRE_WAIT)."""
        try:
            await health.close()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(RETIRE_WAIT):
                    await hotpath.drained()
            if hotpath.inflight:
                log.warning("closing the previous configuration with %d requests still running",
                            hotpath.inflight)
        finally:  # also when the gateway closes first
            await _close_policies(list(policies.values()))
            await upstream.retire(keep=kept)

    async def close(self) -> None:
        self.ready = False
        for task in self._retiring:
            task.cancel()
        await asyncio.gather(*self._retiring, return_exceptions=True)
        await self.health.close()
        await _close_policies(list(self.policies.values()))
        await self.upstream.close()
        if self.consumers is not None:
            await self.consumers.close()
        if self.telemetry is not None:
            await self.telemetry.close()
        if self.access_log is not None:
            self.access_log.flush()
        if self.replicas is not None:
            await self.replicas.close()
        if self.store is not None:
            await self.store.close()

    async def policy_metrics(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, policy in self.policies.items():
            metrics = getattr(policy, "metrics", None)
            if metrics is None:
                continue
            try:
                out[name] = await metrics()
            except Exception as exc:  # a store hiccup must not break /metrics
                out[name] = {"error": f"{type(exc).__name__}: {exc}"}
        return out


async def _close_policies(policies: list[Any]) -> None:
    for policy in reversed(policies):
        close = getattr(policy, "close", None)
        if close is not None:
            try:
                await close()
            except Exception:
                log.exception("closing policy %s failed", policy.name)
