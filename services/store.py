"""An in-memory collection of records with integer ids, validated by a `ResourceSchema`."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import NamedTuple

from services.data import Record
from services.schemas import ResourceSchema


class Page(NamedTuple):
    """One page of a listing plus the collection size."""

    items: list[Record]
    total: int


class Collection:
    """Records by id, with a modification time per record and for the whole collection.

    Modification times are whole seconds (HTTP dates have no finer resolution) and strictly
    increase with every write, so `If-Modified-Since` never misses two writes in one second.
    """

    def __init__(
        self,
        schema: ResourceSchema,
        records: list[Record],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.schema = schema
        self._clock = clock
        self._records: dict[int, Record] = {r["id"]: r for r in records}
        self._next_id = max(self._records, default=0) + 1
        self.modified_at = float(int(clock()))
        self._modified: dict[int, float] = dict.fromkeys(self._records, self.modified_at)

    def __len__(self) -> int:
        return len(self._records)

    def page(self, page: int, per_page: int) -> Page:
        ids = sorted(self._records)
        start = (page - 1) * per_page
        return Page([self._records[i] for i in ids[start : start + per_page]], len(ids))

    def get(self, record_id: int) -> Record | None:
        return self._records.get(record_id)

    def modified(self, record_id: int) -> float:
        return self._modified[record_id]

    def create(self, body: object, assigned: Record | None = None) -> Record:
        """Validate `body` and store it with a new id; `assigned` adds server-owned fields."""
        clean = self.schema.validate(body, partial=False)
        record: Record = {"id": self._next_id, **clean, **(assigned or {})}
        record.setdefault("created_at", _iso_now(self._clock()))
        self.schema.derive(record)
        self._next_id += 1
        return self._store(record)

    def replace(self, record_id: int, body: object) -> Record | None:
        """PUT: every writable field from `body` (defaults for absent optional ones)."""
        current = self._records.get(record_id)
        if current is None:
            return None
        clean = self.schema.validate(body, partial=False)
        owned = {k: v for k, v in current.items() if k in self.schema.server_owned}
        return self._store(self._complete({**owned, **clean}))

    def patch(self, record_id: int, body: object) -> Record | None:
        """PATCH: only the fields present in `body` change."""
        current = self._records.get(record_id)
        if current is None:
            return None
        clean = self.schema.validate(body, partial=True)
        return self._store(self._complete({**current, **clean}))

    def delete(self, record_id: int) -> bool:
        if self._records.pop(record_id, None) is None:
            return False
        del self._modified[record_id]
        self.modified_at = self._next_modification()
        return True

    def _complete(self, record: Record) -> Record:
        self.schema.derive(record)
        return record

    def _store(self, record: Record) -> Record:
        self._records[record["id"]] = record
        self.modified_at = self._next_modification()
        self._modified[record["id"]] = self.modified_at
        return record

    def _next_modification(self) -> float:
        return max(float(int(self._clock())), self.modified_at + 1)


def _iso_now(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
