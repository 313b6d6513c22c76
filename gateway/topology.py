"""Stores on Redis Cluster and Redis Sentinel, from `redis+cluster://` and `redis+sentinel://` URLs
(their forms: gateway/redis_urls.py).

For Cluster the seeds are only where discovery starts: the client reads the slot map
(CLUSTER SLOTS) from the first seed that answers and talks to every master directly. For
Sentinel the client asks the sentinels which node is the master, connects to it, and asks again
whenever a connection has to be made (so after a failover, new connections go to the promoted
replica).

Both clients get the same treatment as the single-node one in `gateway.store.redis_store`:
short socket timeouts and no retries (no redis-py retry loops with backoff: one attempt, bounded
by `redis.timeout`; the Store's probe decides when to try again). A Cluster client is
initialised (slot map and command table loaded) by the first `ping()`, which the runtime makes
at start-up before any request is served; that one call may take longer than `redis.timeout`.
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis.crc import key_slot
from redis.exceptions import RedisClusterException, RedisError

from gateway.config import ConfigError, RedisSettings
from gateway.redis_urls import Topology, parse_url, redact
from gateway.store import Store, StoreError, _Staged

INIT_TIMEOUT = 5.0  # loading the slot map and command table: once per (re)initialisation


def make_store(settings: RedisSettings) -> Store:
    """The Store for a Cluster or Sentinel URL in `settings.url`. Raises ConfigError."""
    assert settings.url
    try:
        topology = parse_url(settings.url)
    except ValueError as exc:
        raise ConfigError(f"redis.url: {exc}") from exc
    if topology.kind == "cluster":
        return _cluster_store(topology, settings)
    return _sentinel_store(topology, settings)


def _no_retry() -> Any:
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    return Retry(NoBackoff(), 0)


class ClusterStore(Store):
    """A Store on Redis Cluster.

    It initialises the client (slot map) before declaring the store up, and fails a script call
    whose keys span several slots on its own, before sending: redis-py would refuse the whole
    pipeline, and every policy of that request would lose its answer for one call's bug.
    """

    async def ping(self) -> bool:
        # Initialising reads CLUSTER SLOTS and COMMAND (a large reply): allow it more than the
        # per-call timeout, once, instead of timing out forever on a busy machine.
        try:
            if self.client._initialize:
                await asyncio.wait_for(self.client.initialize(), max(INIT_TIMEOUT, self.timeout))
        except (TimeoutError, RedisError, RedisClusterException, OSError):
            return False
        return await super().ping()

    async def execute(self, staged: list[_Staged]) -> None:
        sendable = []
        for item in staged:
            if item.script is not None and len(_slots(item.args)) > 1:
                keys = item.args[1:1 + int(item.args[0])]
                item.pending._fail(StoreError(
                    f"CROSSSLOT: the keys of script {item.script.name!r} are in different "
                    f"Redis Cluster slots (give them one {{hash tag}}): {keys!r}"))
            else:
                sendable.append(item)
        if sendable:
            await super().execute(sendable)


def _slots(args: tuple[Any, ...]) -> set[int]:
    """The slots of an EVALSHA's keys; args are (numkeys, *keys, *argv)."""
    return {key_slot(k if isinstance(k, bytes) else str(k).encode()) for k in args[1:1 + int(args[0])]}


class SentinelStore(Store):
    """A Store on the master that Sentinel names; closing it closes the sentinel connections too."""

    def __init__(self, client: Any, sentinel: Any, **kwargs: Any) -> None:
        super().__init__(client, **kwargs)
        self.sentinel = sentinel

    async def close(self) -> None:
        await super().close()
        try:
            await self.sentinel.aclose()
        except (RedisError, OSError):
            pass


def _cluster_store(topology: Topology, settings: RedisSettings) -> Store:
    from redis.asyncio.cluster import ClusterNode, RedisCluster

    client = RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in topology.hosts],
        username=topology.username,
        password=topology.password,
        ssl=topology.tls,
        socket_timeout=settings.timeout,
        socket_connect_timeout=settings.connect_timeout,
        retry=_no_retry(),
        health_check_interval=0,
        # Slots must all be served, or the client refuses to start: a partial cluster would
        # split one consumer's state between "store up" and "store down" per key.
        require_full_coverage=True,
    )
    return ClusterStore(client, timeout=settings.timeout, probe_interval=settings.probe_interval,
                        description=redact(settings.url or ""))


def _sentinel_store(topology: Topology, settings: RedisSettings) -> Store:
    from redis.asyncio.sentinel import Sentinel

    assert topology.master_name is not None
    bounded = {
        "socket_timeout": settings.timeout,
        "socket_connect_timeout": settings.connect_timeout,
        "retry": _no_retry(),
        "health_check_interval": 0,
    }
    sentinel = Sentinel(
        topology.hosts,
        sentinel_kwargs={**bounded, "password": topology.sentinel_password},
        **bounded,
    )
    client = sentinel.master_for(
        topology.master_name, username=topology.username, password=topology.password,
        db=topology.db, **bounded,
    )
    return SentinelStore(client, sentinel, timeout=settings.timeout,
                         probe_interval=settings.probe_interval,
                         description=redact(settings.url or ""))
