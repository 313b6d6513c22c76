"""Consumers managed at run time, shared by every replica (the YAML's stay the declarative base).

A run-time consumer is a record in the store (Redis; on the embedded store, in memory): id,
tier, its keys as SHA-256 digests (each with an optional expiry: a rotated-out key stays valid
for its grace period), optional windows of its own instead of its tier's, and an enabled flag.
Every change goes through one script that checks the version it was computed on, writes the
record, bumps the directory's version and publishes it (`consumers_change.lua`).

Each replica holds the whole directory in memory (`ConsumerDirectory`), so a request looks its
key up in a dict, never in Redis. The replica reloads it when a change is published, and checks
the version every `SYNC_INTERVAL` seconds besides (a replica that missed a message, or was
cut off from Redis, catches up within that second). While Redis is unreachable a replica keeps
the directory it last read: run-time consumers keep working, and a key deleted meanwhile is
refused once Redis answers again. A Redis that comes back without them (restarted without
persistence: the directory's version went backwards, which no change ever does) is given back
the newest copy a replica holds.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway.background import Periodic
from gateway.context import Consumer
from gateway.ratelimit.settings import RateWindow
from gateway.store import Store, StoreError, hash_tag
from gateway.subscription import Subscription

log = logging.getLogger("gateway.identity")

SYNC_INTERVAL = 1.0  # seconds between version checks (the bound on how stale a replica can be)
KEY_PREFIX = "gwk_"  # generated keys: recognisable in a leaked log or a repository scan
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@:-]{0,127}")


class StoredKey(BaseModel):
    model_config = ConfigDict(extra="ignore")

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    created: float
    expires: float | None = None  # unix seconds; None: until rotated out or deleted


class ConsumerRecord(BaseModel):
    """One run-time consumer as stored (JSON) and as the admin API shows it (without digests)."""

    model_config = ConfigDict(extra="ignore")

    id: str
    tier: str = "default"
    keys: list[StoredKey] = Field(default_factory=list)
    limits: list[RateWindow] | None = None
    enabled: bool = True
    created: float
    updated: float

    def live_keys(self, now: float) -> list[StoredKey]:
        return [k for k in self.keys if k.expires is None or k.expires > now]

    def shown(self, now: float | None = None) -> dict[str, Any]:
        """As the admin API lists it: key fingerprints (8 hex digits of the digest), never digests."""
        now = time.time() if now is None else now
        return {
            "id": self.id, "tier": self.tier, "enabled": self.enabled, "source": "runtime",
            "limits": [w.model_dump() for w in self.limits] if self.limits is not None else None,
            "keys": [{"fingerprint": k.sha256[:8], "created": k.created, "expires": k.expires}
                     for k in self.live_keys(now)],
            "created": self.created, "updated": self.updated,
        }


class DirectoryError(Exception):
    """A change the directory refuses: `status` is the admin API's answer (404, 409)."""

    def __init__(self, status: int, message: str, kind: str) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind


def new_key() -> str:
    """A fresh API key: 256 random bits, URL-safe."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


class ConsumerDirectory:
    """This replica's copy of the run-time consumers, and the changes made through it."""

    def __init__(self, store: Store, key_prefix: str = "gw", *,
                 sync_interval: float = SYNC_INTERVAL,
                 on_change: Callable[[], None] | None = None) -> None:
        self.store = store
        tag = "{" + hash_tag(key_prefix) + ":consumers}"
        self.records_key = f"{key_prefix}:consumers:{tag}:records"
        self.version_key = f"{key_prefix}:consumers:{tag}:ver"
        self.channel = f"{key_prefix}:consumers:changes"
        self.version = -1  # nothing read yet
        self.records: dict[str, ConsumerRecord] = {}
        self._by_digest: dict[str, tuple[Consumer, float | None]] = {}
        self._read = store.script("consumers_read")
        self._change = store.script("consumers_change")
        self._restore = store.script("consumers_restore")
        self._subscription = Subscription(store, self.channel, self._message,
                                          on_up=self._resync, what="consumer changes")
        self._sync = Periodic(sync_interval, self._check, "consumer directory sync")
        self._refreshing: asyncio.Task[None] | None = None
        self.on_change = on_change

    # -- life ------------------------------------------------------------------------------
    async def start(self) -> None:
        try:
            await self.refresh()
        except StoreError as exc:
            log.warning("run-time consumers not read yet (%s); retrying every %gs", exc, self._sync.interval)
        self._subscription.start()
        self._sync.start()

    async def close(self) -> None:
        await self._sync.stop()
        await self._subscription.close()
        if self._refreshing is not None:
            self._refreshing.cancel()
            await asyncio.gather(self._refreshing, return_exceptions=True)

    # -- the request path --------------------------------------------------------------------
    def lookup(self, digest: str) -> Consumer | None:
        """The enabled run-time consumer holding this key digest (a key past its grace: None)."""
        found = self._by_digest.get(digest)
        if found is None:
            return None
        consumer, expires = found
        if expires is not None and time.time() >= expires:
            return None
        return consumer

    # -- keeping up ------------------------------------------------------------------------
    def _message(self, text: str) -> None:
        try:
            version = int(text)
        except ValueError:
            return
        if version > self.version:
            self._resync()

    def _resync(self) -> None:
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.get_running_loop().create_task(self._refresh_quietly(),
                                                                      name="consumer directory read")

    async def _refresh_quietly(self) -> None:
        try:
            await self.refresh()
        except StoreError as exc:
            log.warning("reading the run-time consumers failed: %s (the version check retries)", exc)

    async def _check(self) -> None:
        try:
            raw = await self.store.call("GET", self.version_key)
        except StoreError:
            return  # keep serving what was last read
        if int(raw or 0) != self.version:
            await self.refresh()

    async def refresh(self) -> None:
        """Read every record and the version together; rebuild the key index. Raises StoreError."""
        keys = [self.records_key, self.version_key]
        reply = await self.store.eval(self._read, keys, [])
        version = int(reply[0])
        if version < self.version and self.records:
            # The version only grows: the store lost the directory (restarted without
            # persistence, a failover behind the last writes). Put this replica's copy back.
            flat: list[str] = []
            for record in self.records.values():
                flat += [record.id, record.model_dump_json()]
            if await self.store.eval(self._restore, keys, [self.version, self.channel, *flat]):
                log.warning("the store had lost the run-time consumers (version %d, this replica "
                            "held %d): restored %d from this replica's copy", version, self.version,
                            len(self.records))
            reply = await self.store.eval(self._read, keys, [])
            version = int(reply[0])
        records: dict[str, ConsumerRecord] = {}
        for i in range(1, len(reply) - 1, 2):
            name = _text(reply[i])
            try:
                records[name] = ConsumerRecord.model_validate_json(reply[i + 1])
            except ValidationError as exc:
                log.error("run-time consumer %r: unreadable record skipped (%s)", name, exc.error_count())
        self._install(version, records)

    def _install(self, version: int, records: dict[str, ConsumerRecord]) -> None:
        index: dict[str, tuple[Consumer, float | None]] = {}
        for record in records.values():
            if not record.enabled:
                continue
            windows = tuple((w.limit, w.window) for w in record.limits) if record.limits else None
            consumer = Consumer(id=record.id, tier=record.tier, authenticated=True,
                                rate_key="c:" + record.id, windows=windows)
            for key in record.keys:
                index[key.sha256] = (consumer, key.expires)
        self.version, self.records, self._by_digest = version, records, index
        if self.on_change is not None:
            self.on_change()

    # -- changes (the admin API) -----------------------------------------------------------
    async def change(self, consumer_id: str,
                     mutate: Callable[[ConsumerRecord | None, float], ConsumerRecord | None]) -> ConsumerRecord | None:
        """Apply `mutate(current record or None, now)` -> the new record (None: delete) on the
        latest version, retrying when another replica changed the directory meanwhile. `mutate`
        raises DirectoryError to refuse. Raises StoreError when the store does not answer."""
        for _ in range(20):
            await self.refresh()
            now = time.time()
            current = self.records.get(consumer_id)
            updated = mutate(current, now)
            if updated is not None:
                updated.keys = updated.live_keys(now)  # expired keys are dropped on every write
            payload = updated.model_dump_json() if updated is not None else ""
            written, version = await self.store.eval(
                self._change, [self.records_key, self.version_key],
                [self.version, consumer_id, payload, self.channel])
            if int(written):
                records = dict(self.records)
                if updated is None:
                    records.pop(consumer_id, None)
                else:
                    records[consumer_id] = updated
                self._install(int(version), records)
                return updated
        raise DirectoryError(409, "the consumers kept changing under this request; try again",
                             "consumer-conflict")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)

