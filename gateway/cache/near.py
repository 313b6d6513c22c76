"""NearCache: hot cache entries held in this process's memory, so a hit reads no body from Redis.

Every stored variant carries a version (a random id written by `cache_store`, new with every
store, so a revalidation or a refill is a new version). A lookup sends the versions this
process holds for the URL; when the variant Redis picks for the request is one of them, the
script returns no body and the entry held here is served. Redis still decides everything else
on every request (which variant, fresh or stale, the fill lock), so an entry invalidated,
purged or replaced anywhere in the cluster is never served from here: its version is simply no
longer what Redis finds. Entries stay immutable once held (a refreshed entry is a new object).

One version is held per variant (a newer one replaces it), at most MAX_HELD variants per URL;
bounded by bytes (`cache.near_max_bytes` per process), least recently used out first. A held
entry that Redis no longer knows only takes room until it is pushed out.
"""

from __future__ import annotations

from collections import OrderedDict

from gateway.cache.entry import CacheEntry

MAX_HELD = 8  # variants of one URL held (their versions go with each lookup of it)
ENTRY_OVERHEAD = 256  # bytes charged per held entry beyond its body, headers and URL


def entry_size(entry: CacheEntry) -> int:
    return (len(entry.body) + len(entry.url) + ENTRY_OVERHEAD
            + sum(len(k) + len(v) + 16 for k, v in entry.headers))


class NearCache:
    """Entries by version, least recently used first; `max_bytes` 0 holds nothing."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        # version -> (url hash, variant key, entry, size)
        self._entries: OrderedDict[str, tuple[str, str, CacheEntry, int]] = OrderedDict()
        self._by_url: dict[str, dict[str, str]] = {}  # url hash -> {variant key: version}
        self.bytes = 0
        self.hits = 0  # lookups answered without a body from Redis
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._entries)

    def held(self, h: str) -> tuple[tuple[str, CacheEntry], ...]:
        """The (version, entry) pairs held for URL hash `h`: sent with its lookup, and kept by
        the request so an eviction meanwhile cannot take the entry away from it."""
        variants = self._by_url.get(h)
        if not variants:
            return ()
        entries = self._entries
        return tuple((v, entries[v][2]) for v in variants.values())

    def used(self, version: str) -> None:
        """A lookup was answered from the entry of `version`."""
        self.hits += 1
        if version in self._entries:
            self._entries.move_to_end(version)

    def put(self, h: str, variant: str, version: str, entry: CacheEntry) -> None:
        """Hold `entry`, the `version` of `variant` (its Redis key) of URL hash `h`."""
        if not version or not variant or version in self._entries:
            return
        size = entry_size(entry)
        if size > self.max_bytes // 4:  # never let one entry push out most of the others
            return
        variants = self._by_url.setdefault(h, {})
        older = variants.get(variant)
        if older is not None:
            self._drop(older)
            variants = self._by_url.setdefault(h, {})
        elif len(variants) >= MAX_HELD:
            self._drop(next(iter(variants.values())))
            variants = self._by_url.setdefault(h, {})
        self._entries[version] = (h, variant, entry, size)
        variants[variant] = version
        self.bytes += size
        while self.bytes > self.max_bytes:
            self._drop(next(iter(self._entries)))
            self.evictions += 1

    def forget(self, h: str) -> None:
        """Drop what is held for URL hash `h` (this process invalidated or purged it)."""
        for version in list(self._by_url.get(h, {}).values()):
            self._drop(version)

    def _drop(self, version: str) -> None:
        h, variant, _, size = self._entries.pop(version)
        self.bytes -= size
        variants = self._by_url.get(h)
        if variants is not None:
            variants.pop(variant, None)
            if not variants:
                del self._by_url[h]
