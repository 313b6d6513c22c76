"""The observability side of one gateway process, started and stopped by the runtime.

It owns what runs next to the hot path rather than in it: copying the hot path's totals into
the multiprocess files (under --workers), publishing this replica's snapshot into the store for
the cluster-wide view, timing the store's round trips, and the optional span export.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gateway.background import Periodic
from gateway.config import GatewayConfig
from gateway.metrics.cluster import ClusterStats
from gateway.metrics.multiproc import ProcessFiles, metrics_dir
from gateway.metrics.series import samples
from gateway.spans import SpanExport, span_export
from gateway.stats import RequestStats
from gateway.store import Store
from gateway.tracing import TracePropagation

log = logging.getLogger("gateway.metrics")

FLUSH_INTERVAL = 1.0  # seconds between copies of this process's totals into its metrics files


class Telemetry:
    """Metrics files, cluster snapshots, store timing and span export for one process."""

    def __init__(self, config: GatewayConfig, replica_id: str, stats: RequestStats) -> None:
        self.config = config
        self.replica_id = replica_id
        self.stats = stats
        tracing = config.tracing
        self.tracing = TracePropagation(tracing.sample_ratio) if tracing.enabled else None
        self.spans: SpanExport | None = None
        self.metrics_dir: Path | None = None
        self.cluster: ClusterStats | None = None
        self.policies: Mapping[str, Any] = {}
        self._files: ProcessFiles | None = None
        self._rounds: Periodic | None = None
        self._next_publish = 0.0

    async def start(self, store: Store, policies: Mapping[str, Any]) -> None:
        """`policies` by name: the cache's per-process counters are read from its metrics()."""
        self.policies = policies
        self.spans = span_export(self.config.tracing, self.replica_id) if self.tracing else None
        self.metrics_dir = metrics_dir()
        if self.metrics_dir is not None:
            self._files = ProcessFiles(self.metrics_dir)
        watch_store(store, self.stats)
        self.cluster = ClusterStats(store, self.config, self.replica_id, self.stats)
        await self.cluster.publish()
        self._next_publish = time.monotonic() + self.cluster.interval
        self._rounds = Periodic(min(FLUSH_INTERVAL, self.cluster.interval), self._round,
                                "telemetry round")
        self._rounds.start()

    def flush(self) -> None:
        """Copy this process's totals into its multiprocess files (no-op in a single process)."""
        if self._files is not None:
            self._files.write(samples(self.stats))

    async def _round(self) -> None:
        """Multiprocess files every round; the cluster snapshot every `cluster.interval`."""
        assert self.cluster is not None
        self.flush()
        if time.monotonic() >= self._next_publish:
            self._next_publish = time.monotonic() + self.cluster.interval
            await self._copy_policy_counters()
            await self.cluster.publish()

    async def _copy_policy_counters(self) -> None:
        """Per-process counters a policy keeps itself, taken from its public metrics()."""
        cache = self.policies.get("cache")
        metrics = getattr(cache, "metrics", None)
        if metrics is None:
            return
        with contextlib.suppress(Exception):
            doc: dict[str, Any] = await metrics()
            waits = doc.get("coalesced_waits")
            if isinstance(waits, int):
                self.stats.policy_counters["cache_coalesced_waits"] = waits

    async def close(self) -> None:
        if self._rounds is not None:
            await self._rounds.stop()
        self.flush()
        if self._files is not None:
            self._files.close()
        if self.cluster is not None:
            await self.cluster.withdraw()
        if self.spans is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.spans.close)


def watch_store(store: Store, stats: RequestStats) -> None:
    """Time every pipeline the store sends (one per event-loop tick, shared by the requests of
    that tick) and count its failures."""
    store.on_round_trip(stats.record_store_call)
