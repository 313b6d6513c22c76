"""Per-consumer usage, counted cluster-wide without touching the request path.

Requests only bump an in-process dict; a background task sends the deltas every
`rate_limit.usage_flush_interval` seconds to a single hash that every replica shares, through
`lua/usage_add.lua` (one pipeline). The hash tracks at most `rate_limit.usage_max_consumers`
consumers: counts of any consumer beyond that go to `_other`, so ids a client makes up (in
`headers` auth mode) cannot grow Redis' memory without bound. While the store is down the deltas
are kept (bounded) and sent once it is back.
"""

from __future__ import annotations

import contextlib
import logging
from collections import Counter

from gateway.background import Periodic
from gateway.store import Store, StoreError

log = logging.getLogger("gateway.ratelimit")

MAX_PENDING_FIELDS = 10_000  # beyond this, new consumers' deltas are dropped until a flush
FIELDS_PER_CALL = 500  # deltas per script call: keeps each call short for Redis
OTHER = "_other"  # consumers beyond usage_max_consumers
_TRACKED = "_tracked"  # the hash's count of tracked consumers (not a consumer)


class UsageRecorder:
    """Counts admitted / rejected requests per consumer id and per fallback event."""

    def __init__(self, store: Store, key: str, interval: float = 1.0,
                 max_consumers: int = 10_000) -> None:
        self.store = store
        self.key = key
        self.interval = interval
        self.max_consumers = max_consumers
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
        script = self.store.script("usage_add")
        items = list(deltas.items())
        batch = self.store.batch()
        staged = []
        for start in range(0, len(items), FIELDS_PER_CALL):
            chunk = items[start:start + FIELDS_PER_CALL]
            args: list[str | int] = [self.max_consumers]
            for field, amount in chunk:
                args += (field, amount)
            staged.append((chunk, batch.eval(script, [self.key], args)))
        await batch.execute()
        for chunk, pending in staged:
            if not pending.ok:  # not counted in Redis (one script call is all or nothing)
                for field, amount in chunk:
                    self.count(field, amount)

    async def start(self) -> None:
        self._flusher.start()

    async def close(self) -> None:
        await self._flusher.stop()
        with contextlib.suppress(StoreError):
            await self.flush()

    async def read(self) -> dict[str, dict[str, int]]:
        """Cluster-wide totals: {consumer, event or `_other`: {kind: count}}. Raises StoreError."""
        raw = await self.store.call("HGETALL", self.key)
        items = raw.items() if isinstance(raw, dict) else zip(raw[0::2], raw[1::2], strict=True)
        out: dict[str, dict[str, int]] = {}
        tracked = 0
        for field, value in items:
            text = _text(field)
            if text == _TRACKED:
                tracked = int(value)
                continue
            name, _, kind = text.rpartition("|")
            out.setdefault(name, {})[kind] = int(value)
        # Deltas not yet flushed belong to the totals too (as the script will file them).
        for field, amount in self._pending.items():
            name, _, kind = field.rpartition("|")
            if name not in out and not name.startswith("_"):
                if tracked >= self.max_consumers:
                    name = OTHER
                else:
                    tracked += 1
            bucket = out.setdefault(name, {})
            bucket[kind] = bucket.get(kind, 0) + amount
        return out


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
