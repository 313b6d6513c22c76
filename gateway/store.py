"""The shared state store: Redis (single, Cluster or Sentinel) or an embedded fakeredis.

Every policy talks to Redis through one `Store` per process, made in the lifespan. Two rules
from the design shape this module:

* Before the upstream call a request makes at most one round trip. Policies do not call Redis
  themselves on the request path; they *stage* commands on a `StoreBatch` and read the results
  after `StoreBatch.execute()` has sent them all in one pipeline.
* A dead or hung Redis never stalls a request. Every call is bounded by `timeout`; the first
  failure marks the store down, after which calls fail at once with `StoreUnavailable` until a
  background probe sees Redis answer again. Each policy decides what "store down" means for it.

Error tree::

    StoreError                 a command failed (bad script, wrong type...)
     └── StoreUnavailable      the store did not answer in time, or is known to be down
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from importlib import resources
from typing import Any

import redis.asyncio as aioredis
from hiredis import pack_command as _hiredis_pack
from redis.exceptions import (
    MaxConnectionsError,
    NoScriptError,
    RedisClusterException,
    RedisError,
    ResponseError,
)

from gateway.redis_lane import RespPool, closed_by_peer
from gateway.redis_urls import redact

log = logging.getLogger("gateway.store")


KeyArg = str | bytes
ScriptArg = str | bytes | int | float


def hash_tag(name: str) -> str:
    """`name` made safe inside a Redis Cluster hash tag `{...}`.

    Braces would end or split the tag (and scatter one owner's keys over slots); they are
    percent-encoded, and so is `%` itself, so distinct names stay distinct (`a{b` and `a%7Bb`
    never share a key). The one encoding for every key family (rate limits, breakers).
    """
    if "{" in name or "}" in name or "%" in name:
        return name.replace("%", "%25").replace("{", "%7B").replace("}", "%7D")
    return name


class StoreError(Exception):
    """A store command failed."""


class StoreUnavailable(StoreError):
    """The store did not answer within its timeout, or is known to be down."""


class LuaScript:
    """A Lua file from `lua/`, registered once with redis-py (EVALSHA, reloaded on NOSCRIPT)."""

    def __init__(self, name: str, source: str, client: Any) -> None:
        self.name = name
        self.source = source
        self.script = client.register_script(source)

    @property
    def sha(self) -> str:
        return str(self.script.sha)


class Pending:
    """The result of one staged command, filled in by `StoreBatch.execute()`."""

    __slots__ = ("_value", "_error", "_done")

    def __init__(self) -> None:
        self._value: Any = None
        self._error: BaseException | None = None
        self._done = False

    def _set(self, value: Any) -> None:
        self._value, self._done = value, True

    def _fail(self, error: BaseException) -> None:
        self._error, self._done = error, True

    @property
    def ok(self) -> bool:
        return self._done and self._error is None

    @property
    def error(self) -> BaseException | None:
        return self._error

    def result(self) -> Any:
        """The command's reply; raises `StoreError` / `StoreUnavailable` if it failed."""
        if not self._done:
            raise StoreError("batch was not executed")
        if self._error is not None:
            raise self._error
        return self._value


class _Staged:
    __slots__ = ("script", "args", "pending")

    def __init__(self, script: LuaScript | None, args: tuple[Any, ...], pending: Pending) -> None:
        self.script = script
        self.args = args
        self.pending = pending


class StoreBatch:
    """Commands of every policy for one request, sent to Redis in a single round trip."""

    __slots__ = ("_store", "_staged")

    def __init__(self, store: Store) -> None:
        self._store = store
        self._staged: list[_Staged] = []

    def __len__(self) -> int:
        return len(self._staged)

    def eval(self, script: LuaScript, keys: Sequence[KeyArg], args: Sequence[ScriptArg]) -> Pending:
        """Stage an EVALSHA of `script`."""
        pending = Pending()
        self._staged.append(_Staged(script, (len(keys), *keys, *args), pending))
        return pending

    def call(self, *command: Any) -> Pending:
        """Stage a plain command, e.g. `batch.call("GET", key)`."""
        pending = Pending()
        self._staged.append(_Staged(None, command, pending))
        return pending

    async def execute(self) -> None:
        """Send everything staged in one pipeline; never raises, results land in the Pendings."""
        if self._staged:
            await self._store.execute(self._staged)


FIRST_PROBE = 0.05  # seconds from the first failure to the first probe


class Store:
    """One process's handle on the shared store. Made in the lifespan, passed in explicitly."""

    def __init__(
        self,
        client: Any,
        *,
        embedded: bool = False,
        timeout: float = 0.25,
        probe_interval: float = 1.0,
        description: str = "",
    ) -> None:
        self.client = client
        self.embedded = embedded
        self.timeout = timeout
        self.probe_interval = probe_interval
        self.description = description or ("embedded" if embedded else "redis")
        self.available = True
        self.down_since: float | None = None
        self.failures = 0
        self._scripts: dict[str, LuaScript] = {}
        self._probe_task: asyncio.Task[None] | None = None
        self._listeners: list[Callable[[bool], Awaitable[None] | None]] = []
        self._queued: list[tuple[list[_Staged], asyncio.Future[None]]] = []
        self._flush_scheduled = False
        self._flushes: set[asyncio.Future[None]] = set()
        self._observers: list[Callable[[float | None, str | None], None]] = []
        self.resp: RespPool | None = None  # set for plain redis:// stores (see gateway/redis_lane.py)

    # -- scripts -------------------------------------------------------------------------
    def script(self, name: str) -> LuaScript:
        """The Lua script `lua/<name>.lua` (the package `gateway.lua`), read once per process."""
        found = self._scripts.get(name)
        if found is None:
            source = lua_source(name)
            found = self._scripts[name] = LuaScript(name, source, self.client)
        return found

    # -- calls ---------------------------------------------------------------------------
    def batch(self) -> StoreBatch:
        return StoreBatch(self)

    async def eval(self, script: LuaScript, keys: Sequence[KeyArg], args: Sequence[ScriptArg]) -> Any:
        """Run one script now (off the hot path: recording outcomes, admin). Raises StoreError."""
        batch = self.batch()
        pending = batch.eval(script, keys, args)
        await batch.execute()
        return pending.result()

    async def call(self, *command: Any) -> Any:
        """Run one plain command now with the store's timeout. Raises StoreError."""
        batch = self.batch()
        pending = batch.call(*command)
        await batch.execute()
        return pending.result()

    async def execute(self, staged: list[_Staged]) -> None:
        """Send `staged` with every other batch of this event-loop tick, in one pipeline.

        Requests that arrive together (the loop parsed several connections' data in one
        iteration) share one pipeline: one connection checkout, one write, one read. That costs
        far less client CPU than a pipeline per request, and keeps the number of connections
        to Redis small however many requests are in flight.
        """
        if not self.available:
            error = StoreUnavailable(f"store {self.description} is down")
            for item in staged:
                item.pending._fail(error)
            return
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        self._queued.append((staged, done))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._start_flush)
        await done

    def _start_flush(self) -> None:
        self._flush_scheduled = False
        groups, self._queued = self._queued, []
        task = asyncio.ensure_future(self._flush(groups))
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)

    async def _flush(self, groups: list[tuple[list[_Staged], asyncio.Future[None]]]) -> None:
        try:
            await self._run([item for staged, _ in groups for item in staged])
        finally:
            for _, done in groups:
                if not done.done():
                    done.set_result(None)

    def on_round_trip(self, observer: Callable[[float | None, str | None], None]) -> None:
        """Call `observer(seconds, error)` after every pipeline sent (seconds None, error
        "down" when the store was skipped as known down; error "unavailable" / "error")."""
        self._observers.append(observer)

    def _observe(self, seconds: float | None, error: str | None) -> None:
        for observer in self._observers:
            observer(seconds, error)

    async def _run(self, staged: list[_Staged]) -> None:
        if not self.available:
            down = StoreUnavailable(f"store {self.description} is down")
            for item in staged:
                item.pending._fail(down)
            self._observe(None, "down")
            return
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout):
                replies = await self._pipeline(staged)
            retry = [i for i, r in enumerate(replies) if isinstance(r, NoScriptError)]
            if retry:
                # Redis restarted or flushed its script cache: load and rerun only those calls.
                # EVALSHA that failed with NOSCRIPT did not run, so rerunning cannot double-count.
                async with asyncio.timeout(self.timeout):
                    scripts = {item.script for i in retry if (item := staged[i]).script is not None}
                    for script in scripts:
                        await self.client.script_load(script.source)
                    again = await self._pipeline([staged[i] for i in retry])
                for i, reply in zip(retry, again, strict=True):
                    replies[i] = reply
        except (TimeoutError, RedisError, RedisClusterException, OSError) as exc:
            # RedisClusterException: the Cluster client found no reachable node or no node for
            # a slot (a cross-slot script never gets here: ClusterStore fails that call alone).
            if isinstance(exc, ResponseError | MaxConnectionsError):
                # The server answered (it is up), or this process ran out of connections
                # (a local limit, not a dead Redis): fail these calls, keep the store up.
                error: StoreError = StoreError(str(exc))
            else:
                error = StoreUnavailable(f"store {self.description}: {type(exc).__name__}: {exc}")
                self.mark_down(error)
            for item in staged:
                item.pending._fail(error)
            self._observe(time.perf_counter() - started,
                          "unavailable" if isinstance(error, StoreUnavailable) else "error")
            return
        failed = False
        for item, reply in zip(staged, replies, strict=True):
            if isinstance(reply, Exception):
                item.pending._fail(StoreError(str(reply)))
                failed = True
            else:
                item.pending._set(reply)
        self._observe(time.perf_counter() - started, "error" if failed else None)

    async def _pipeline(self, staged: list[_Staged]) -> list[Any]:
        if self.resp is not None and all(item.script is not None for item in staged):
            # Scripts only (the hot path): the lean lane, no redis-py reply machinery.
            return await self.resp.execute(
                [("EVALSHA", item.script.sha, *item.args) for item in staged if item.script])
        pipe = self.client.pipeline(transaction=False)
        for item in staged:
            if item.script is not None:
                # execute_command, not pipe.evalsha(): redis-py's ClusterPipeline blocks the
                # evalsha method, while EVALSHA itself routes by its keys' slot; same bytes.
                pipe.execute_command("EVALSHA", item.script.sha, *item.args)
            else:
                pipe.execute_command(*item.args)
        return list(await pipe.execute(raise_on_error=False))

    # -- availability --------------------------------------------------------------------
    def on_availability(self, listener: Callable[[bool], Awaitable[None] | None]) -> None:
        """Call `listener(available)` whenever the store goes down or comes back."""
        self._listeners.append(listener)

    def mark_down(self, error: BaseException) -> None:
        self.failures += 1
        if not self.available:
            return
        self.available = False
        self.down_since = time.monotonic()
        log.warning("store %s unavailable, falling back until it answers: %s", self.description, error)
        if self.resp is not None:
            self.resp.close()  # its idle connections are as dead as the one that failed
        self._notify(False)
        if self._probe_task is None or self._probe_task.done():
            self._probe_task = asyncio.get_running_loop().create_task(self._probe())

    def _notify(self, available: bool) -> None:
        for listener in self._listeners:
            try:
                result = listener(available)
                if asyncio.iscoroutine(result):
                    asyncio.get_running_loop().create_task(result)
            except Exception:  # a listener's bug must not take the store down with it
                log.exception("store availability listener failed")

    async def _probe(self) -> None:
        # The first look comes at once: a failure on a connection Redis dropped (it restarted)
        # is over as soon as a fresh connection answers, not one probe interval later.
        delay = min(FIRST_PROBE, self.probe_interval)
        while not self.available:
            await asyncio.sleep(delay)
            delay = self.probe_interval
            if not await self.ping():  # a subclass may prepare the client first (Cluster)
                continue
            await self._drop_idle_connections()
            self.available = True
            self.down_since = None
            log.warning("store %s is back, shared state resumes", self.description)
            self._notify(True)

    async def _drop_idle_connections(self) -> None:
        """Before the store is used again: no request may get a connection from before the
        outage (redis-py's pool does not check them: health checks are off)."""
        if self.resp is not None:
            self.resp.close()
        pool = getattr(self.client, "connection_pool", None)
        if pool is not None:
            try:
                await pool.disconnect(inuse_connections=False)
            except (RedisError, OSError):
                pass

    async def ping(self) -> bool:
        """True when the store answers now (used by /ready and /health)."""
        try:
            await asyncio.wait_for(self.client.ping(), self.timeout)
            return True
        except (TimeoutError, RedisError, RedisClusterException, OSError):
            return False

    async def close(self) -> None:
        if self._probe_task is not None:
            self._probe_task.cancel()
        if self.resp is not None:
            self.resp.close()
        try:
            await self.client.aclose()
        except (RedisError, OSError, AttributeError):
            pass


def lua_source(name: str) -> str:
    """The text of `lua/<name>.lua`, from the installed package (a wheel or the checkout).

    A line `--@include <part>` is replaced by the text of `lua/<part>.lua` (code several
    scripts share, e.g. `_breaker_changed`); Redis only ever sees whole scripts."""
    text = resources.files("gateway.lua").joinpath(f"{name}.lua").read_text(encoding="utf-8")
    return _INCLUDE.sub(lambda m: lua_source(m.group(1)).rstrip("\n"), text)


_INCLUDE = re.compile(r"^--@include ([A-Za-z0-9_]+)$", re.MULTILINE)


def embedded_store() -> Store:
    """An in-process fakeredis with Lua: for a first run and tests, single process only."""
    import fakeredis

    client = fakeredis.FakeAsyncRedis()
    return Store(client, embedded=True, timeout=5.0, description="embedded (in-process, single process only)")


def redis_store(url: str, *, timeout: float = 0.25, connect_timeout: float = 0.25, probe_interval: float = 1.0) -> Store:
    """A Store on a real Redis URL with short timeouts and no retries.

    redis-py's defaults (5 s timeouts, retries with backoff) stalled requests for a minute when
    Redis hung; here one attempt bounded by `timeout` is all a request ever waits.
    """
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    extra: dict[str, Any] = {}
    if url.startswith("redis://"):
        extra["connection_class"] = HiredisPackingConnection
    client = aioredis.Redis.from_url(
        url,
        **extra,
        socket_timeout=timeout,
        socket_connect_timeout=connect_timeout,
        retry=Retry(NoBackoff(), 0),
        retry_on_timeout=False,
        health_check_interval=0,
    )
    store = Store(client, timeout=timeout, probe_interval=probe_interval, description=redact(url))
    if url.startswith("redis://"):
        store.resp = RespPool(url)
    return store


class HiredisPackingConnection(aioredis.Connection):
    """A redis-py asyncio connection that packs commands with hiredis (C) instead of Python.

    redis-py's asyncio client packs every argument in Python; with the cache lookup carrying
    the request's headers as ARGV, that was ~7% of the gateway's CPU on a cache hit.

    It is also re-dialled when taken from the pool after Redis closed it (a restart): redis-py
    hands such a connection out unchecked, and the command on it fails, marking the store down.
    """

    async def connect_check_health(self, check_health: bool = True, retry_socket_connect: bool = True) -> None:
        reader, writer = self._reader, self._writer
        if reader is not None and writer is not None and closed_by_peer(reader, writer):
            await self.disconnect()
        await super().connect_check_health(check_health=check_health, retry_socket_connect=retry_socket_connect)

    def pack_command(self, *args: Any) -> list[bytes]:
        first = args[0]
        if (isinstance(first, str) and " " in first) or (isinstance(first, bytes) and b" " in first):
            return super().pack_command(*args)  # "CONFIG GET"-style names are split by redis-py
        return [_hiredis_pack(args)]
