"""The gateway's runtime: every long-lived resource of one process, made in the lifespan.

No module-level singletons: the ASGI entry owns one `Gateway`, the control plane reaches it as
`request.app.state.gateway`, and the policies get what they need passed in.
"""

from __future__ import annotations

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
        composition = build_policies(self.config, self.store, self.replicas)
        chain_policies = composition.policies
        self.policies = {p.name: p for p in chain_policies}
        for policy in chain_policies:
            start = getattr(policy, "start", None)
            if start is not None:
                await start()
        await self.telemetry.start(self.store, self.policies)
        chain = PolicyChain(chain_policies, self.upstream, self.store, routes=composition.routes)
        proxy = self.config.proxy
        self.hotpath = HotPath(
            chain,
            trusted=TrustedProxies(proxy.trusted_proxies),
            max_body_bytes=proxy.max_body_bytes,
            underscores_in_headers=proxy.underscores_in_headers,
            stats=self.stats,
            access_log=self.access_log,
            tracing=self.telemetry.tracing,
            spans=self.telemetry.spans,
        )
        await self.health.start()
        self.ready = True
        log.info("gateway %s ready: replica %s, %d routes, store %s", self.version, self.replica_id,
                 len(self.routes.routes), self.store.description)

    async def close(self) -> None:
        self.ready = False
        await self.health.close()
        for policy in reversed(list(self.policies.values())):
            close = getattr(policy, "close", None)
            if close is not None:
                try:
                    await close()
                except Exception:
                    log.exception("closing policy %s failed", policy.name)
        await self.upstream.close()
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
