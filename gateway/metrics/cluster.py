"""The cluster-wide statistics: every replica publishes its snapshot into the store, any reads all.

Each replica (each worker process, under --workers) writes its cumulative RequestStats every
`rate_limit.heartbeat_interval` seconds (`lua/stats_publish.lua`). A replica that stops
publishing drops out of the view after three intervals (the same rule as the replica
heartbeat), so a crashed replica's numbers disappear from the cluster totals rather than
freezing in them; a replica that stops cleanly removes its entry at once.

While the store is down each replica can only show its own numbers; the view says so
(`complete: false`) instead of pretending to be the cluster.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from typing import Any, NamedTuple

from gateway.config import GatewayConfig
from gateway.replicas import heartbeat_ttl_ms
from gateway.stats import RequestStats
from gateway.store import Store, StoreError

log = logging.getLogger("gateway.metrics")


class ReplicaSnapshot(NamedTuple):
    """One live replica's published statistics."""

    replica_id: str
    info: dict[str, Any]
    age: float  # seconds since it published
    stats: RequestStats


class ClusterView(NamedTuple):
    replicas: list[ReplicaSnapshot]
    complete: bool  # False: the store could not be read, only this replica is shown
    error: str | None = None


class ClusterStats:
    """Publishes this replica's statistics and reads back the live replicas' ones."""

    def __init__(self, store: Store, config: GatewayConfig, replica_id: str, stats: RequestStats) -> None:
        self.store = store
        self.stats = stats
        self.replica_id = replica_id
        self.interval = config.rate_limit.heartbeat_interval
        self.ttl_ms = heartbeat_ttl_ms(self.interval)  # a snapshot lives as long as a heartbeat
        prefix = config.redis.key_prefix
        self.hash_key = f"{prefix}:{{stats}}:snapshots"
        self.seen_key = f"{prefix}:{{stats}}:seen"
        self.info = {"id": replica_id, "host": socket.gethostname(), "pid": os.getpid()}

    def snapshot(self) -> dict[str, Any]:
        return {"info": self.info, "published": time.time(), "stats": self.stats.export()}

    async def publish(self) -> bool:
        """Store this replica's snapshot; False when the store did not take it."""
        try:
            await self.store.eval(self.store.script("stats_publish"), [self.hash_key, self.seen_key],
                                  [self.ttl_ms, self.replica_id, json.dumps(self.snapshot())])
            return True
        except StoreError as exc:
            log.debug("publishing statistics failed: %s", exc)
            return False

    async def read(self) -> ClusterView:
        """The live replicas, this one always with its current (not published) numbers."""
        me = ReplicaSnapshot(self.replica_id, self.info, 0.0, self.stats)
        try:
            reply = await self.store.eval(self.store.script("stats_read"),
                                          [self.hash_key, self.seen_key], [self.ttl_ms])
        except StoreError as exc:
            return ClusterView([me], False, f"{type(exc).__name__}: {exc}")
        replicas = [me]
        for i in range(0, len(reply) - 2, 3):
            replica_id = _text(reply[i])
            if replica_id == self.replica_id:
                continue
            try:
                doc = json.loads(reply[i + 2])
                stats = RequestStats.from_export(doc["stats"])
                info = doc.get("info") if isinstance(doc.get("info"), dict) else {}
            except (ValueError, KeyError, TypeError, AttributeError):
                log.warning("skipping an unreadable statistics snapshot of replica %s", replica_id)
                continue
            replicas.append(ReplicaSnapshot(replica_id, info, int(reply[i + 1]) / 1000, stats))
        replicas.sort(key=lambda r: r.replica_id)
        return ClusterView(replicas, True)

    async def withdraw(self) -> None:
        """Leave the view at once (a clean stop)."""
        try:
            batch = self.store.batch()
            batch.call("HDEL", self.hash_key, self.replica_id)
            batch.call("ZREM", self.seen_key, self.replica_id)
            await batch.execute()
        except StoreError:
            pass


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
