"""CacheStore: the cache's Redis operations (lookup, store, release, invalidate, purge, size).

Memory is bounded by the gateway, not by Redis' eviction: every stored variant is charged to a
cluster-wide account (`lua/cache_account.lua`: its body and head, its URL and a fixed overhead
per entry) and, past `cache.max_bytes`, the variants closest to the end of their retention are
deleted. So Redis can run with `maxmemory-policy noeviction` and never has to choose a victim
among rate-limit windows and breaker states (docs/deployment.md). Every key also carries a TTL
(freshness lifetime plus the window it may still be served stale: `cache.stale_retention`, or
longer `stale-while-revalidate` / `stale-if-error`); the account is the only key without one,
and it holds one member per stored variant, so the budget bounds it too. A deleted entry is
simply a miss. The account also names each variant's URL, which is what a prefix purge scans.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from gateway.cache.directives import CacheDirectives
from gateway.cache.entry import CacheEntry, EntryFormatError
from gateway.cache.keys import SHARED_SCOPE, CacheKeys, secondary_key, url_hash
from gateway.cache.near import NearCache
from gateway.store import Pending, Store, StoreBatch

# Lookup states (the Lua's words).
FRESH, STALE, SWR, EXPIRED, MISS, PASS = "fresh", "stale", "swr", "expired", "miss", "pass"
STORED = "stored"  # a fill's outcome (with 'pass', 'error', 'retry')
INVALIDATION_MEMORY_MS = 300_000  # a fill slower than this after an invalidation may still land
PURGE_CHUNK = 200
# Charged per variant on top of its blob and URL: the variant HASH's fields and encoding, its
# root HASH, the account's members (measured on Redis 7 with `used_memory`: 1,500-1,560 bytes
# per entry beyond blob and URL, for bodies of 100 B to 20 kB).
ENTRY_OVERHEAD = 1536


class Lookup(NamedTuple):
    """What the cache holds for a request. Times in seconds; `entry` None on a miss."""

    state: str
    entry: CacheEntry | None
    age: float
    lifetime: float
    swr: float
    stale_if_error: float
    no_stale: bool
    got_lock: bool
    lock_ttl: float
    scope: str
    now_us: int  # the Redis clock at the lookup, microseconds
    lock_scope: str  # whose fill lock this request took or waits on: 's' (the URL's) or its own

    @property
    def staleness(self) -> float:
        return max(0.0, self.age - self.lifetime)


class LookupKey(NamedTuple):
    """Everything needed to run (or re-run) one request's lookup."""

    url: str
    h: str
    scope: str
    check_shared: bool
    token: str
    may_fill: bool
    request_cc: CacheDirectives
    headers: tuple[tuple[bytes, bytes], ...]
    # A miss takes (or waits on) the URL's shared lock, common to every consumer, since its
    # fill may be stored shared; False (the scope's own lock) once a shared fill stored
    # something: the request then finds it, or it was not for this consumer and it fills its own.
    shared_lock: bool = True
    # What this process holds in memory for the URL (gateway/cache/near.py): (version, entry)
    held: tuple[tuple[str, CacheEntry], ...] = ()


class CacheSize(NamedTuple):
    """The cluster-wide account: entries, bytes charged, entries ever evicted for the budget."""

    entries: int
    bytes: int
    evicted: int


class StoredFreshness(NamedTuple):
    """The numbers kept next to an entry so that the lookup script judges freshness."""

    age: float
    lifetime: float
    swr: float
    stale_if_error: float
    no_stale: bool
    shared_with_authenticated: bool
    retention: float


def _ms(seconds: float) -> int:
    return max(0, int(seconds * 1000))


class CacheStore:
    """The cache's data in Redis, shared by every replica."""

    def __init__(self, store: Store, keys: CacheKeys, *, lock_timeout: float, max_variants: int,
                 pass_ttl: float, max_bytes: int = 0, near: NearCache | None = None) -> None:
        self.store = store
        self.near = near if near is not None else NearCache(0)
        self.keys = keys
        self.lock_timeout = lock_timeout
        self.max_variants = max_variants
        self.pass_ttl = pass_ttl
        self.max_bytes = max_bytes

    # -- lookup --------------------------------------------------------------------------
    def _lookup_call(self, key: LookupKey) -> tuple[list[str], list[Any]]:
        cc = key.request_cc
        args: list[Any] = [
            _ms(self.lock_timeout), key.token, int(key.may_fill), int(cc.no_cache),
            _ms(cc.max_age) if cc.max_age is not None else -1,
            _ms(cc.min_fresh or 0),
            _ms(cc.max_stale) if cc.max_stale is not None else -1,
            key.scope, int(key.check_shared), int(key.shared_lock),
            ",".join([version for version, _ in key.held]) if key.held else "",
        ]
        for name, value in key.headers:
            args.append(name)
            args.append(value)
        keys = [self.keys.root(key.h), self.keys.lock(key.h, SHARED_SCOPE), self.keys.lock(key.h, key.scope)]
        return keys, args

    def stage_lookup(self, batch: StoreBatch, key: LookupKey) -> Pending:
        keys, args = self._lookup_call(key)
        return batch.eval(self.store.script("cache_lookup"), keys, args)

    async def lookup(self, key: LookupKey) -> Lookup:
        """A second lookup (after waiting on a fill): its own round trip. Raises StoreError."""
        keys, args = self._lookup_call(key)
        return self.parse_lookup(await self.store.eval(self.store.script("cache_lookup"), keys, args), key)

    def parse_lookup(self, reply: Sequence[Any], key: LookupKey) -> Lookup:
        state = _text(reply[0])
        entry = None
        blob = reply[1]
        if int(reply[14]):  # the variant found is one this process holds: no body was sent
            version = _text(reply[13])
            entry = next((e for v, e in key.held if v == version), None)
            self.near.used(version)
        elif blob:
            try:
                entry = CacheEntry.from_bytes(bytes(blob))
            except EntryFormatError:
                entry = None
            else:
                self.near.put(key.h, _text(reply[12]), _text(reply[13]), entry)
        if entry is not None and entry.url != key.url:  # a url-hash collision: never serve it
            entry = None
        if entry is None and state in (FRESH, STALE, SWR, EXPIRED):
            state = MISS
        return Lookup(
            state=state, entry=entry, age=int(reply[2]) / 1000, lifetime=int(reply[3]) / 1000,
            swr=int(reply[4]) / 1000, stale_if_error=int(reply[5]) / 1000, no_stale=bool(int(reply[6])),
            got_lock=bool(int(reply[7])), lock_ttl=max(0, int(reply[8])) / 1000, scope=_text(reply[9]),
            now_us=int(reply[10]), lock_scope=_text(reply[11]),
        )

    # -- store / release -----------------------------------------------------------------
    def wake_message(self, h: str, lock_scope: str, outcome: str) -> str:
        """`<url hash>|<lock scope>|<outcome>`: what the waiters of that lock are told."""
        return f"{h}|{lock_scope}|{outcome}"

    async def save(self, *, key: LookupKey, scope: str, lock_scope: str, token: str, entry: CacheEntry,
                   vary: list[str], request_headers: Iterable[tuple[bytes, bytes]],
                   freshness: StoredFreshness, looked_up_at_us: int) -> bool:
        """Store a variant in `scope` (and account for it), releasing the fill lock of
        `lock_scope`. True when stored. Raises StoreError."""
        blob = entry.to_bytes()
        version = secrets.token_hex(8)
        retention_ms = max(1, _ms(freshness.retention))
        reply = await self.store.eval(
            self.store.script("cache_store"),
            [self.keys.root(key.h), self.keys.lock(key.h, lock_scope), self.keys.invalidated(key.h)],
            [
                token, scope, "\n".join(vary), secondary_key(vary, request_headers),
                _ms(freshness.age), _ms(freshness.lifetime), _ms(freshness.swr),
                _ms(freshness.stale_if_error), int(freshness.no_stale),
                int(freshness.shared_with_authenticated), retention_ms, blob, self.max_variants,
                self.keys.channel, self.wake_message(key.h, lock_scope, STORED), looked_up_at_us,
                version,
            ],
        )
        if _text(reply[0]) != "stored":
            return False
        self.near.put(key.h, _text(reply[1]), version, entry)
        charged = len(blob) + len(key.url) + ENTRY_OVERHEAD
        ops: list[Any] = ["add", _text(reply[1]), charged, retention_ms, key.url]
        for evicted in reply[2:]:
            ops += ["del", _text(evicted)]
        await self._account(ops)
        return True

    async def _account(self, ops: list[Any]) -> CacheSize:
        """Apply accounting operations and delete what the budget evicted."""
        reply = await self.store.eval(self.store.script("cache_account"), self._size_keys(),
                                      [self.max_bytes, *ops])
        victims = [_text(k) for k in reply[3:]]
        if victims:
            batch = self.store.batch()
            for victim in victims:
                batch.call("DEL", victim)
            await batch.execute()
        return CacheSize(int(reply[0]), int(reply[1]), int(reply[2]))

    async def release(self, key: LookupKey, token: str, outcome: str, *, lock_scope: str) -> None:
        """Give up a fill of `lock_scope`'s lock (and wake its waiters): 'pass' (uncacheable,
        remembered for `pass_ttl` in the request's own scope), 'error' or 'retry'."""
        await self.store.eval(
            self.store.script("cache_release"),
            [self.keys.lock(key.h, lock_scope), self.keys.root(key.h)],
            [token, outcome, key.scope, max(1, _ms(self.pass_ttl)), self.keys.channel,
             self.wake_message(key.h, lock_scope, outcome)],
        )

    # -- invalidation and purge ----------------------------------------------------------
    async def invalidate(self, urls: Iterable[str]) -> int:
        """Delete every variant of each URL (all scopes). Returns how many entries went."""
        urls = list(dict.fromkeys(urls))
        total = 0
        for start in range(0, len(urls), PURGE_CHUNK):
            chunk = urls[start:start + PURGE_CHUNK]
            batch = self.store.batch()
            pendings = []
            for url in chunk:
                h = url_hash(url)
                pendings.append(batch.eval(
                    self.store.script("cache_invalidate"),
                    [self.keys.root(h), self.keys.invalidated(h)], [INVALIDATION_MEMORY_MS],
                ))
            await batch.execute()
            for url in chunk:
                self.near.forget(url_hash(url))
            deleted = [_text(k) for p in pendings for k in p.result()]
            total += len(deleted)
            if deleted:
                ops: list[Any] = []
                for k in deleted:
                    ops += ["del", k]
                await self._account(ops)
        return total

    async def purge_prefix(self, prefix: str) -> int:
        """Delete every stored URL under `prefix` (path-segment aware), found in the account."""
        urls: set[str] = set()
        cursor: Any = 0
        while True:
            cursor, found = await self.store.call("HSCAN", self.keys.size_urls, cursor, "COUNT", 1000)
            values = found.values() if isinstance(found, dict) else found[1::2]
            urls.update(u for u in map(_text, values) if _under(u, prefix))
            if int(cursor) == 0:
                break
        return await self.invalidate(sorted(urls))

    # -- size ----------------------------------------------------------------------------
    def _size_keys(self) -> list[str]:
        return [self.keys.size_exp, self.keys.size_bytes, self.keys.size_total, self.keys.size_urls]

    async def size(self) -> CacheSize:
        """The size across the whole cluster. Raises StoreError."""
        return await self._account([])


def _under(url: str, prefix: str) -> bool:
    """`/api/products/1` and `/api/products?x` are under `/api/products`; `/api/productsx` is not."""
    if prefix in ("", "/") or prefix.endswith("/"):
        return url.startswith(prefix) or prefix in ("", "/")
    return url == prefix or url.startswith(prefix + "/") or url.startswith(prefix + "?")


def _text(value: Any) -> str:
    return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else str(value)
