"""A start-up check of Redis' memory settings against what the gateway relies on.

The gateway bounds its cache itself (`cache.max_bytes`) so that Redis never evicts; a Redis that
evicts (`maxmemory-policy` other than `noeviction`) may drop rate-limit windows and breaker
states under pressure, and a `maxmemory` that the cache budget nearly fills leaves the counters
no room. Both are logged as warnings at start-up (docs/deployment.md); nothing is refused, as a
managed Redis may not let the operator change them at once.
"""

from __future__ import annotations

import logging
from typing import Any

from gateway.cache.settings import CacheSettings
from gateway.store import Store, StoreError

log = logging.getLogger("gateway.store")

COUNTER_SHARE = 0.25  # at least this share of maxmemory should stay free of cache entries


def memory_warnings(maxmemory: int, policy: str, cache: CacheSettings) -> list[str]:
    """What is wrong with `maxmemory` / `maxmemory-policy` for this cache configuration."""
    out = []
    if policy != "noeviction":
        out.append(
            f"Redis maxmemory-policy is {policy}: under memory pressure Redis may evict rate-limit "
            "windows and breaker states; use noeviction (the cache keeps itself within cache.max_bytes)"
        )
    if cache.enabled and maxmemory > 0:
        if cache.max_bytes == 0:
            out.append("cache.max_bytes is 0: the cache may fill Redis' maxmemory; set a budget below it")
        elif cache.max_bytes > maxmemory * (1 - COUNTER_SHARE):
            out.append(
                f"cache.max_bytes ({cache.max_bytes}) leaves rate-limit windows and breaker states less "
                f"than {COUNTER_SHARE:.0%} of Redis' maxmemory ({maxmemory})"
            )
    return out


def _settings(info: Any) -> list[tuple[int, str]]:
    """(maxmemory, policy) of each node an INFO memory reply describes."""
    if isinstance(info, dict) and "maxmemory_policy" not in info:  # a Cluster: one reply per node
        return [s for node in info.values() for s in _settings(node)]
    if isinstance(info, (bytes, str)):
        text = info.decode() if isinstance(info, bytes) else info
        info = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    if not isinstance(info, dict) or "maxmemory_policy" not in info:
        return []
    return [(int(info.get("maxmemory", 0)), str(info["maxmemory_policy"]).strip())]


async def check_memory(store: Store, cache: CacheSettings) -> None:
    """Log a warning for each problem found; silent when INFO is refused or the store is down."""
    try:
        info = await store.call("INFO", "memory")
    except StoreError:
        return
    seen: set[str] = set()
    for maxmemory, policy in _settings(info):
        for warning in memory_warnings(maxmemory, policy, cache):
            if warning not in seen:
                seen.add(warning)
                log.warning("%s (docs/deployment.md)", warning)
