"""Per-consumer usage, counted cluster-wide without touching the request path.

Requests only bump an in-process dict; a background task sends the deltas every
`rate_limit.usage_flush_interval` seconds as one pipeline of HINCRBY on a single hash that every
replica shares. While the store is down the deltas are kept (bounded) and sent once it is back.
"""

from __future__ import annotations

import contextlib
import logging
from collections import Counter

from gateway.background import Periodic
from gateway.store import Store, StoreError

log = logging.getLogger("gateway.ratelimit")

MAX_PENDING_FIELDS = 10_000  # beyond this, new consumers' deltas are dropped until a flush


class UsageRecorder:
    """Counts admitted / rejected requests per consumer id and per fallback event."""

    def __init__(self, store: Store, key: str, interval: float = 1.0) -> None:
        self.store = store
        self.key = key
        self.interval = interval
        self._pending: Counter[str] = Counter()
        self.dropped = 0
        self._flusher = Periodic(interval, self.flush, "usage counters flush")

    def count(self, field: str, amount: int = 1) -> None:
        if field not in self._pending and len(self._pending) >= MAX_PENDING_FIELDS:
            self.dropped += amount
            return
        self._pending[field] += amount

    def consumer(self, consumer_id: str, admitted: bool) -> None:
        self.count(f"{consumer_id}|{'admitted' if admitted else 'rejected'}")

    async def flush(self) -> None:
        if not self._pending:
            return
        deltas, self._pending = self._pending, Counter()
        batch = self.store.batch()
        staged = [
            (field, amount, batch.call("HINCRBY", self.key, field, amount))
            for field, amount in deltas.items()
        ]
        await batch.execute()
        for field, amount, pending in staged:
            if not pending.ok:  # not counted in Redis: keep it for the next flush
                self.count(field, amount)

    async def start(self) -> None:
        self._flusher.start()

    async def close(self) -> None:
        await self._flusher.stop()
        with contextlib.suppress(StoreError):
            await self.flush()

    async def read(self) -> dict[str, dict[str, int]]:
        """Cluster-wide totals: {consumer or event: {kind: count}}. Raises StoreError."""
        raw = await self.store.call("HGETALL", self.key)
        items = raw.items() if isinstance(raw, dict) else zip(raw[0::2], raw[1::2], strict=True)
        out: dict[str, dict[str, int]] = {}
        for field, value in items:
            name, _, kind = _text(field).rpartition("|")
            out.setdefault(name, {})[kind] = int(value)
        # Deltas not yet flushed belong to the totals too.
        for field, amount in self._pending.items():
            name, _, kind = field.rpartition("|")
            bucket = out.setdefault(name, {})
            bucket[kind] = bucket.get(kind, 0) + amount
        return out


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
