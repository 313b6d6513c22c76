"""CachePolicy: the shared RFC 9111 response cache on the hot path.

    stage      GET/HEAD: one Lua lookup joins the request's single pre-upstream round trip; it
               picks the Vary variant, judges freshness and, on a miss, tries to take the fill lock.
    handle     fresh           -> the stored response, no upstream contact (X-Cache: HIT)
               stale allowed   -> max-stale / stale-while-revalidate (refreshed once, in the
                                  background)  (X-Cache: STALE)
               miss + lock     -> upstream; the body is teed while it streams to the client
                                  and stored afterwards (X-Cache: MISS)
               miss, no lock   -> wait (pub/sub) for the replica filling it, then look again;
                                  the store going down ends the wait (X-Cache: BYPASS)
               upstream failed -> a stale copy if the response and RFC 5861 allow (X-Cache: STALE)
               store down      -> straight upstream (X-Cache: BYPASS), never an error
    after      the response went out: store the teed body (or the revalidated entry) and
               release its fill, start the background refresh (a fill that ends unstored was
               given back by `handle` already, at the response head)
    other methods   a 2xx/3xx to any method but GET, HEAD, OPTIONS and TRACE (unsafe, or of
               unknown safety) invalidates the URL and same-origin Location / Content-Location
               in `handle`, before the response head goes out: a GET through any replica
               after the client has its answer never gets what the request changed
    PURGE <url>     an admin key purges the URL, on every replica at once

The jobs live apart: this module decides (lookup, coalescing, fetch, stale serving, refresh,
PURGE); gateway/cache/fill.py stores (the decision, the teed body, the fill lock);
gateway/cache/invalidation.py names URLs (the key's, purge targets, what an unsafe answer
invalidates); gateway/cache/state.py holds the per-request staged values and the counters. What
`handle` decides for later is written on the staged value (`LookupState.store`, `.refresh`)
and `after` carries it out: no closures, nothing on the context. A fill that
ends without storing is given back when `handle` knows it (at the response head), in a
background task (`LookupState.released` notes it, so that `after` never releases twice).

Authenticated requests (a verified consumer, or an Authorization header) never see another
consumer's response: a response to them is stored in the shared scope only when it says it may
be shared (public, s-maxage, must-revalidate; RFC 9111 §3.5), otherwise in that consumer's own
scope, seen by that consumer alone. `private` and `no-store` responses are never stored.

Misses coalesce across consumers, as in a shared cache: a miss takes (or waits on) the URL's
fill lock, common to every consumer and anonymous requests alike (`<p>:c:{h}:lock:s`), since
its fill may be stored shared. A waiter is never handed the holder's response: woken, it looks
up again with its own key, so it sees only what the rules above let it see. When the fill stored
something, an authenticated waiter looks again under its own scope's lock: it finds the shared
entry, or (stored for the holder's consumer only, or another Vary variant) it fills for itself,
coalescing with its own consumer's requests, never queueing behind other consumers'. When the
fill was uncacheable ('pass') every waiter fetches for itself at once; the pass marker that
spares later requests the lock is set in the holder's own scope only, so what one consumer (or a
client's odd request) got never changes how another's requests are coalesced.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import secrets
import time
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

from gateway.cache.coalesce import DOWN, FillWaiters
from gateway.cache.directives import cache_view, request_directives, response_directives
from gateway.cache.entry import CacheEntry
from gateway.cache.fill import Filler
from gateway.cache.freshness import (
    conditional_headers,
    corrected_initial_age,
    explicit_lifetime,
    has_validators,
    may_serve_stale_on_error,
    not_modified,
    not_modified_headers,
    refreshed_headers,
)
from gateway.cache.invalidation import invalidation_targets, path_and_query, request_url
from gateway.cache.keys import SHARED_SCOPE, CacheKeys, consumer_scope, url_hash
from gateway.cache.near import NearCache
from gateway.cache.ranges import if_range_matches, parse_ranges, ranged, unsatisfiable
from gateway.cache.settings import CacheSettings, RouteCache
from gateway.cache.state import (
    CacheCounters,
    LookupState,
    Pass,
    Purge,
    Staged,
    Unsafe,
    upstream_failed,
)
from gateway.cache.store import (
    EXPIRED,
    FRESH,
    MISS,
    PASS,
    STALE,
    STORED,
    SWR,
    CacheStore,
    Lookup,
    LookupKey,
)
from gateway.config import GatewayConfig
from gateway.context import Headers, RequestContext, Response
from gateway.engine.failures import UPSTREAM_BROKEN
from gateway.identity import admin_required
from gateway.policy import Handler, Policy
from gateway.problem import problem
from gateway.store import Store, StoreBatch, StoreError

log = logging.getLogger("gateway.cache")

HIT, MISS_, STALE_, BYPASS = b"HIT", b"MISS", b"STALE", b"BYPASS"
_CLIENT_CONDITIONALS = (b"if-none-match", b"if-modified-since")
_SAFE = frozenset({"GET", "HEAD"})
_SAFE_UNCACHED = frozenset({"OPTIONS", "TRACE"})  # safe, but never answered from the cache
MAX_WAITS = 4  # lookups after waiting before a request gives up on coalescing and fetches


@dataclass(frozen=True, slots=True)
class RouteCachePlan:
    enabled: bool
    ttl: float


class CachePolicy(Policy):
    """The shared response cache (see the module docstring)."""

    name = "cache"

    def __init__(
        self,
        settings: CacheSettings,
        store: Store,
        *,
        key_prefix: str = "gw",
        routes: Mapping[str, RouteCache] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.keys = CacheKeys(key_prefix)
        self.cache = CacheStore(store, self.keys, lock_timeout=settings.lock_timeout,
                                max_variants=settings.max_variants, pass_ttl=settings.pass_ttl,
                                max_bytes=settings.max_bytes, near=NearCache(settings.near_max_bytes))
        self.waiters = FillWaiters(store, self.keys.channel)
        self.counters = CacheCounters()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.filler = Filler(self.cache, settings, self.counters, self._spawn)
        self.targeted = settings.targeted
        # Removed on the way to the client unless configured otherwise: they were for us.
        self._hidden = frozenset(() if settings.forward_targeted_fields else self.targeted)
        self._plans = {
            prefix: RouteCachePlan(settings.enabled and rc.enabled, settings.ttl if rc.ttl is None else rc.ttl)
            for prefix, rc in (routes or {}).items()
        }
        self._default_plan = RouteCachePlan(settings.enabled, settings.ttl)

    @classmethod
    def from_config(cls, config: GatewayConfig, store: Store, **deps: Any) -> CachePolicy:
        return cls(
            config.cache, store, key_prefix=config.redis.key_prefix,
            routes={prefix: route.cache for prefix, route in config.routes.items()},
        )

    async def start(self) -> None:
        await self.waiters.start()

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await self.waiters.close()

    def plan(self, route_prefix: str) -> RouteCachePlan:
        return self._plans.get(route_prefix, self._default_plan)

    async def purge(self, *, url: str | None = None, prefix: str | None = None) -> int:
        """Delete a URL's stored responses, or every URL under a prefix. Raises StoreError."""
        if url is not None:
            return await self.cache.invalidate([path_and_query(url)])
        assert prefix is not None
        return await self.cache.purge_prefix(path_and_query(prefix))

    async def metrics(self) -> dict[str, Any]:
        out: dict[str, Any] = dataclasses.asdict(self.counters)
        out["max_bytes"] = self.settings.max_bytes
        try:
            size = await self.cache.size()
            out["entries"], out["bytes"], out["evicted"] = size.entries, size.bytes, size.evicted
        except StoreError:
            out["entries"] = out["bytes"] = out["evicted"] = None
        out["subscribed"] = self.waiters.subscribed
        near = self.cache.near
        out["near"] = {"max_bytes": near.max_bytes, "entries": len(near), "bytes": near.bytes,
                       "hits": near.hits, "evictions": near.evictions}
        return out

    # -- stage ---------------------------------------------------------------------------
    def stage(self, ctx: RequestContext, batch: StoreBatch) -> Staged | Response | None:
        plan = self.plan(ctx.route.prefix)
        if not plan.enabled:
            return None
        method = ctx.method
        if method == "PURGE":
            refused = admin_required(ctx.consumer)  # identity marks an admin key's caller
            if refused is not None:
                return refused
            return Purge(request_url(ctx))
        if method not in _SAFE:
            # RFC 9111 §4.4: every method not known to be safe invalidates (POST, PUT, PATCH,
            # DELETE, and any the gateway does not know, e.g. M-SEARCH); OPTIONS and TRACE pass.
            return Pass("method") if method in _SAFE_UNCACHED else Unsafe(request_url(ctx))
        if ctx.has_body:
            return Pass("body")  # a GET or HEAD with a body: its answer may depend on it
        request_cc = request_directives(ctx.headers)
        consumer = ctx.consumer
        authorization = ctx.header(b"authorization")
        cookie = ctx.header(b"cookie")
        # A Cookie is a credential too (as in Varnish's built-in policy): such a request is
        # answered from, and stored in, its own scope, shared only when the response says so.
        authenticated = (bool(consumer and consumer.authenticated) or authorization is not None
                         or cookie is not None)
        if authenticated:
            credentials = authorization if cookie is None else (authorization or b"") + b"\n" + cookie
            scope = consumer_scope(consumer.id if consumer and consumer.authenticated else None,
                                   credentials)
        else:
            scope = SHARED_SCOPE
        url = request_url(ctx)
        h = url_hash(url)
        key = LookupKey(
            url=url, h=h, scope=scope, check_shared=authenticated,
            token=secrets.token_hex(8),
            # A range request is answered from a stored whole response (gateway/cache/ranges.py),
            # or goes to the origin as it is: a partial answer is never stored.
            may_fill=method == "GET" and not request_cc.no_store and ctx.header(b"range") is None,
            request_cc=request_cc, headers=tuple(ctx.headers), held=self.cache.near.held(h),
        )
        pending = self.cache.stage_lookup(batch, key)
        return LookupState(key, pending, time.monotonic(), authenticated, plan.ttl)

    # -- handle --------------------------------------------------------------------------
    async def handle(self, ctx: RequestContext, staged: Staged | None, call_next: Handler) -> Response:
        if staged is None:
            return await call_next(ctx)
        if isinstance(staged, LookupState):
            return await self._cached(ctx, staged, call_next)
        if isinstance(staged, Purge):
            return await self._purge_request(ctx, staged)
        response = await call_next(ctx)
        self._mark(ctx, response, BYPASS)
        if isinstance(staged, Unsafe) and 200 <= response.status < 400 and not upstream_failed(ctx):
            # Read-your-writes: done in Redis before the head goes out, so a GET sent through
            # any replica once this answer arrived finds no entry from before the change. (A
            # fill that looked up before it is dropped by cache_store.)
            await self._invalidate(invalidation_targets(ctx, staged.url, response))
        return response

    # -- after ---------------------------------------------------------------------------
    async def after(self, ctx: RequestContext, staged: Staged | None, response: Response) -> None:
        if isinstance(staged, LookupState):
            if staged.store is not None:
                await self.filler.store(ctx, staged, staged.store)
            if staged.refresh is not None:
                self._spawn_refresh(ctx, staged, *staged.refresh)

    async def _cached(self, ctx: RequestContext, st: LookupState, call_next: Handler) -> Response:
        key = st.key
        try:
            found = self.cache.parse_lookup(st.pending.result(), key)
        except StoreError:
            return await self._bypass(ctx, call_next)
        staged_at = st.staged_at
        waited = 0
        while True:
            state = found.state
            if state == FRESH:
                self.counters.hits += 1
                return self._from_cache(ctx, found.entry, found.age, HIT)  # type: ignore[arg-type]
            if state == STALE:
                self.counters.stale += 1
                return self._from_cache(ctx, found.entry, found.age, STALE_)  # type: ignore[arg-type]
            if state == SWR:
                if found.got_lock:
                    st.refresh = (found, call_next)
                self.counters.stale += 1
                return self._from_cache(ctx, found.entry, found.age, STALE_)  # type: ignore[arg-type]
            if key.request_cc.only_if_cached:
                self.counters.misses += 1
                ctx.response_headers.append((b"x-cache", MISS_))
                ctx.cache_status = "MISS"
                return problem(504, "the response is not in the cache and the request said only-if-cached",
                               request_id=ctx.request_id, kind="not-cached")
            if state == PASS or found.got_lock or not key.may_fill or key.request_cc.no_cache or waited >= MAX_WAITS:
                return await self._fetch(ctx, st, found, call_next, holding=found.got_lock)
            # Another request (maybe on another replica) is filling this key: wait for it.
            if waited == 0:
                self.counters.coalesced_waits += 1
            waited += 1
            outcome = await self.waiters.wait(f"{key.h}|{found.lock_scope}", staged_at, found.lock_ttl + 0.05,
                                              self.keys.lock(key.h, found.lock_scope))
            if outcome == DOWN:  # nobody can store or release now: fetch, as the store is down
                return await self._bypass(ctx, call_next)
            if outcome == "pass":
                return await self._fetch(ctx, st, found, call_next, holding=False)
            if outcome == "error" and found.entry is not None and self._stale_on_error(st, found, disconnected=True):
                self.counters.stale += 1
                return self._from_cache(ctx, found.entry, found.age, STALE_)
            if outcome == STORED and found.lock_scope == SHARED_SCOPE and key.scope != SHARED_SCOPE:
                # A consumer's fill of the URL's shared lock ended: what it stored is ours if it
                # was stored shared (and matches our Vary fields); else it was for its consumer
                # (or anonymous requests) only, never ours to see. Look again, and fill for
                # ourselves under our own lock if it is not ours: no second wait in line behind
                # other consumers whose responses we could not use either.
                key = st.key = key._replace(shared_lock=False)
            staged_at = time.monotonic()
            try:
                found = await self.cache.lookup(key)
            except StoreError:
                return await self._bypass(ctx, call_next)
            if outcome == "error" and found.state in (MISS, EXPIRED) and not found.got_lock:
                return await self._fetch(ctx, st, found, call_next, holding=False)

    # -- upstream ------------------------------------------------------------------------
    async def _fetch(self, ctx: RequestContext, st: LookupState, found: Lookup, call_next: Handler,
                     *, holding: bool) -> Response:
        key = st.key
        token = key.token if holding else ""
        client_conditionals = [(k, v) for k, v in ctx.headers if k in _CLIENT_CONDITIONALS]
        stored = found.entry
        revalidating = False
        if key.may_fill:
            # Fetch what we can store: a full response, or a 304 for our own validators.
            for name in _CLIENT_CONDITIONALS:
                ctx.remove_header(name)
            if stored is not None and stored.status == 200 and has_validators(stored.headers):
                ctx.headers.extend(conditional_headers(stored.headers))
                revalidating = True
        request_time = time.time()
        response = await call_next(ctx)
        response_time = time.time()

        failure = _failure_kind(ctx, response)
        if failure is not None:
            if stored is not None and self._stale_on_error(st, found, disconnected=failure == "disconnected"):
                _discard(response)
                if holding:
                    self.filler.release_soon(st, found, token, "error")
                self.counters.stale += 1
                return self._from_cache(ctx, stored, found.age, STALE_, client_conditionals)
            failure = None if failure == "error" and self._explicitly_fresh(response) else failure
        if failure is not None:
            if holding:
                self.filler.release_soon(st, found, token, "error")
            self.counters.misses += 1
            return self._mark(ctx, response, MISS_)

        if revalidating and response.status == 304 and stored is not None:
            _discard(response)
            merged = CacheEntry(stored.url, stored.status, refreshed_headers(stored.headers, response.headers), stored.body)
            age = corrected_initial_age(response.headers, request_time, response_time)
            self.filler.plan(ctx, st, found, token, merged, age, response_time, None)
            self.counters.revalidated += 1
            served = self._from_cache(ctx, merged, age, HIT, client_conditionals)
            ctx.cache_status = "REVALIDATED"
            return served

        self.counters.misses += 1
        age = corrected_initial_age(response.headers, request_time, response_time)
        self._mark(ctx, response, MISS_, age, hide=False)
        if key.may_fill:
            self.filler.plan(ctx, st, found, token, None, age, response_time, response)
        elif holding:
            self.filler.release_soon(st, found, token, "retry")
        return self._hide(response)

    def _stale_on_error(self, st: LookupState, found: Lookup, *, disconnected: bool) -> bool:
        return may_serve_stale_on_error(
            found.staleness, no_stale=found.no_stale,
            stale_if_error=found.stale_if_error or None, disconnected=disconnected,
            request_cc=st.key.request_cc,
        )

    # -- stale-while-revalidate ----------------------------------------------------------
    def _spawn_refresh(self, ctx: RequestContext, st: LookupState, found: Lookup, call_next: Handler) -> None:
        self._spawn(self._refresh(ctx.fork(), st.fresh(), found, call_next))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run `work` in the background; cancelled when the policy closes."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _refresh(self, copy: RequestContext, st: LookupState, found: Lookup, call_next: Handler) -> None:
        """Fetch once more in the background (RFC 5861 §3) on a copy of the request, through
        the rest of the chain, then run this policy's `after` and theirs for it."""
        try:
            response = await self._fetch(copy, st, found, call_next, holding=True)
            if response.stream is not None:
                async for _ in response.stream:
                    pass
            if response.close is not None:
                response.close()
        except Exception:
            log.exception("background refresh of %s failed", st.key.url)
            if st.released is None:
                st.released = "retry"
                await self.filler.release(st.key, found, st.key.token, "retry")
            return
        await self.after(copy, st, response)
        inner_after = getattr(call_next, "after", None)  # the chain's: the policies inward
        if inner_after is not None:
            try:
                await inner_after(copy, response)
            except Exception:
                log.exception("after-response work of a background refresh failed")

    # -- responses -----------------------------------------------------------------------
    def _from_cache(self, ctx: RequestContext, entry: CacheEntry, age: float, status: bytes,
                    conditionals: Headers | None = None) -> Response:
        ctx.response_headers.append((b"x-cache", status))
        ctx.cache_status = status.decode()
        age_header = (b"age", str(int(age)).encode())
        request_headers = ctx.headers if conditionals is None else conditionals
        if entry.status == 200 and not_modified(request_headers, entry.headers):
            # A 304 has no body and, from here, no body length: the full body's Content-Length
            # on it made the engine wait for bytes that never came, cutting the connection.
            return Response(304, [*not_modified_headers(entry.headers), age_header])
        hidden = self._hidden
        headers = [(k, v) for k, v in entry.headers if k != b"age" and k not in hidden] + [age_header]
        wanted = ctx.header(b"range") if ctx.method == "GET" and entry.status == 200 else None
        if wanted is not None and if_range_matches(ctx.header(b"if-range"), entry.headers):
            ranges = parse_ranges(wanted, len(entry.body))
            if ranges == []:
                return unsatisfiable(len(entry.body), ctx.request_id)
            if ranges is not None:
                return ranged(headers, entry.body, ranges)
        return Response(entry.status, headers, b"" if ctx.method == "HEAD" else entry.body)

    async def _bypass(self, ctx: RequestContext, call_next: Handler) -> Response:
        self.counters.bypass += 1
        response = await call_next(ctx)
        return self._mark(ctx, response, BYPASS)

    def _mark(self, ctx: RequestContext, response: Response, status: bytes, age: float | None = None,
              *, hide: bool = True) -> Response:
        ctx.response_headers.append((b"x-cache", status))
        ctx.cache_status = status.decode()
        if age is not None:
            response.set_header(b"age", str(int(age)).encode())
        elif response.header(b"age") is None:
            response.headers.append((b"age", b"0"))
        return self._hide(response) if hide else response

    def _hide(self, response: Response) -> Response:
        """Leave out the targeted fields meant for this cache (a new list: a store plan keeps
        the one it judged)."""
        hidden = self._hidden
        if hidden and any(k in hidden for k, _ in response.headers):
            response.headers = [(k, v) for k, v in response.headers if k not in hidden]
        return response

    def _explicitly_fresh(self, response: Response) -> bool:
        """An origin's error that says how long it stays fresh (RFC 9111 §3: storable like any
        final response), e.g. a 503 with `max-age=30` during maintenance."""
        judged = cache_view(response.headers, self.targeted)
        cc = response_directives(judged)
        return cc.public or explicit_lifetime(cc, judged) is not None

    async def _invalidate(self, urls: list[str]) -> None:
        try:
            await self.cache.invalidate(urls)
            self.counters.invalidations += 1
        except StoreError as exc:
            self.counters.store_errors += 1
            log.warning("cache invalidation of %s failed: %s", urls, exc)

    async def _purge_request(self, ctx: RequestContext, st: Purge) -> Response:
        try:
            count = await self.purge(url=st.url)
        except StoreError:
            return problem(503, "the cache store is unavailable; nothing was purged",
                           request_id=ctx.request_id, kind="cache-store-unavailable")
        body = json.dumps({"purged": count, "url": st.url}).encode()
        return Response(200, [(b"content-type", b"application/json")], body)


def _failure_kind(ctx: RequestContext, response: Response) -> str | None:
    """'disconnected' (no answer from the origin), 'error' (an origin 5xx), or None."""
    if ctx.breaker_rejected:
        return "disconnected"
    if ctx.upstream is not None and ctx.upstream.failure in UPSTREAM_BROKEN:
        return "disconnected"
    if response.status in (500, 502, 503, 504):
        return "error"
    return None


def _discard(response: Response) -> None:
    if response.close is not None:
        response.close()


__all__ = ["CachePolicy", "RouteCachePlan"]
