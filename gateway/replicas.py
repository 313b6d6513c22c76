"""Which gateway replicas are alive, as seen through the shared store.

Each replica writes a heartbeat every `rate_limit.heartbeat_interval` seconds
(`lua/replica_heartbeat.lua`): its id in a ZSET scored by Redis' clock, and a short description
with a TTL of three intervals. The script answers with the number of live replicas, which the
rate limiter's `local` fallback divides its limits by. While Redis is down the registry keeps
the last count it saw: the replicas that were alive a moment ago are very likely still alive,
and dividing by a stale count is safer than each replica assuming it is alone.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
from typing import Any

from gateway.background import Periodic
from gateway.config import GatewayConfig
from gateway.store import Store, StoreError

log = logging.getLogger("gateway.replicas")

TTL_INTERVALS = 3  # a replica that missed this many heartbeats is gone


def heartbeat_ttl_ms(interval: float) -> int:
    """How long what a replica announces every `interval` seconds outlives a missed beat."""
    return max(1, round(interval * TTL_INTERVALS * 1000))


class ReplicaRegistry:
    """This replica's heartbeat, and the cluster's live replica count."""

    def __init__(self, store: Store, config: GatewayConfig, replica_id: str) -> None:
        self.store = store
        self.replica_id = replica_id
        self.interval = config.rate_limit.heartbeat_interval
        self.ttl_ms = heartbeat_ttl_ms(self.interval)
        prefix = config.redis.key_prefix
        self.set_key = f"{prefix}:{{replicas}}"
        self.info_key = f"{prefix}:{{replicas}}:{replica_id}"
        self.info = {
            "id": replica_id,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": time.time(),
        }
        self._live = 1
        self.last_beat: float | None = None  # monotonic time of the last successful heartbeat
        self._beat = Periodic(self.interval, self.heartbeat, "replica heartbeat")

    @property
    def live_count(self) -> int:
        """Live replicas at the last heartbeat that reached the store (at least 1: this one)."""
        return self._live

    async def heartbeat(self) -> int:
        """Announce this replica now; returns the live count (the last known one on failure)."""
        try:
            count = await self.store.eval(
                self.store.script("replica_heartbeat"),
                [self.set_key, self.info_key],
                [self.ttl_ms, self.replica_id, json.dumps(self.info)],
            )
        except StoreError as exc:
            log.debug("replica heartbeat failed, keeping live count %d: %s", self._live, exc)
            return self._live
        self._live = max(1, int(count))
        self.last_beat = time.monotonic()
        return self._live

    async def start(self) -> None:
        await self.heartbeat()
        self._beat.start()
        self.store.on_availability(self._store_changed)

    async def _store_changed(self, available: bool) -> None:
        if available:  # back (perhaps empty, after a restart): be counted again at once
            await self.heartbeat()

    async def close(self) -> None:
        """Stop beating and leave the live set, so the others' count drops at once."""
        await self._beat.stop()
        with contextlib.suppress(StoreError):
            batch = self.store.batch()
            batch.call("ZREM", self.set_key, self.replica_id)
            batch.call("DEL", self.info_key)
            await batch.execute()

    async def replicas(self) -> list[dict[str, Any]]:
        """Live replicas (id, host, pid, started, last_seen as Unix seconds), from the store."""
        try:
            entries = await self.store.call("ZRANGE", self.set_key, 0, -1, "WITHSCORES")
        except StoreError:
            return [{**self.info, "last_seen": None, "stale": True}]
        # redis-py answers WITHSCORES as [member, score] pairs or flat, depending on version.
        pairs = (
            entries
            if entries and isinstance(entries[0], list | tuple)
            else list(zip(entries[0::2], entries[1::2], strict=True))
        )
        ids = [_text(member) for member, _ in pairs]
        seen = [float(score) / 1000 for _, score in pairs]
        if not ids:
            return []
        try:
            infos = await self.store.call("MGET", *[f"{self.set_key}:{i}" for i in ids])
        except StoreError:
            infos = [None] * len(ids)
        out = []
        for replica_id, last_seen, raw in zip(ids, seen, infos, strict=True):
            if raw is None:
                continue  # its description expired: it stopped beating
            try:
                info = json.loads(raw)
            except ValueError:
                info = {"id": replica_id}
            out.append({**info, "id": replica_id, "last_seen": last_seen})
        return out


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
