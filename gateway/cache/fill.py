"""Filling the cache: decide whether a response is stored, tee its body while it streams to the
client, store it once it went out (or give the fill lock back), and release fills.

A fill known to end without storing (an uncacheable head, a failed upstream, a chunked body that
outgrew `max_body_bytes`) is given back at once, in the background (`release_soon`), not after
the body: its waiters go to the origin while a slow body still streams, and the response does
not wait for the Redis call. `LookupState.released` makes it once per request."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from gateway.cache.directives import cache_view, response_directives
from gateway.cache.entry import CacheEntry
from gateway.cache.freshness import (
    Heuristic,
    decide_store,
    has_validators,
    no_stale,
    retention,
    shareable_when_authenticated,
    storable_headers,
    vary_names,
)
from gateway.cache.keys import SHARED_SCOPE, keyed_vary
from gateway.cache.settings import CacheSettings
from gateway.cache.state import BodyTee, CacheCounters, LookupState, StorePlan, upstream_failed
from gateway.cache.store import PASS, CacheStore, Lookup, LookupKey, StoredFreshness
from gateway.context import RequestContext, Response
from gateway.store import StoreError

log = logging.getLogger("gateway.cache")


class Filler:
    """The store side of the cache policy: `plan` in `handle` (giving back at once a fill that
    will not be stored), `store` in `after`."""

    def __init__(self, cache: CacheStore, settings: CacheSettings, counters: CacheCounters,
                 spawn: Callable[[Coroutine[Any, Any, None]], object]) -> None:
        self.cache = cache
        self.settings = settings
        self.counters = counters
        self.spawn = spawn  # runs a coroutine in the background (the policy keeps the task)
        self.targeted = settings.targeted
        h = settings.heuristic
        self.heuristic = Heuristic(h.fraction, h.max) if h is not None else None

    def plan(self, ctx: RequestContext, st: LookupState, found: Lookup, token: str,
                    entry: CacheEntry | None, age: float, response_time: float,
                    response: Response | None) -> None:
        """Decide whether to store; `after` stores it once it went out. An uncacheable response
        gives the fill back now ('pass'), whatever its body still has to stream."""
        key = st.key
        headers = entry.headers if entry is not None else response.headers  # type: ignore[union-attr]
        status = entry.status if entry is not None else response.status  # type: ignore[union-attr]
        judged = cache_view(headers, self.targeted)  # a targeted field stands in for Cache-Control
        response_cc = response_directives(judged)
        decision = decide_store("GET", status, key.request_cc, response_cc, judged,
                                authenticated=st.authenticated, default_ttl=st.ttl,
                                heuristic=self.heuristic)
        if not decision.store:
            self.counters.not_stored += 1
            if token or found.state != PASS:
                self.release_soon(st, found, token, "pass")
            return
        tee: BodyTee | None = None
        if entry is None:
            assert response is not None
            limit = self.settings.max_body_bytes
            length = response.header(b"content-length")
            if length is not None and length.strip().isdigit() and int(length) > limit:
                self.counters.too_large += 1
                self.release_soon(st, found, token, "pass")
                return
            if response.stream is not None:
                expected = int(length) if length is not None and length.strip().isdigit() else None
                tee = BodyTee(limit, expected, lambda: self.release_soon(st, found, token, "pass"))
                response.stream = tee.wrap(response.stream)
            elif len(response.body) > limit:
                self.counters.too_large += 1
                self.release_soon(st, found, token, "pass")
                return
        st.store = StorePlan(token, found, status, headers, decision, response_cc, age,
                              response_time, entry, response, tee)

    async def store(self, ctx: RequestContext, st: LookupState, plan: StorePlan) -> None:
        key, token, headers, response_cc = st.key, plan.token, plan.headers, plan.response_cc
        stored_entry = plan.entry
        if stored_entry is None:
            response, tee = plan.response, plan.tee
            assert response is not None
            if tee is not None:
                if tee.overflow:  # given back when it overflowed
                    self.counters.too_large += 1
                    return
                if not tee.complete or upstream_failed(ctx):
                    if st.released is None:
                        st.released = "retry"
                        await self.release(key, plan.found, token, "retry")
                    return
                body = tee.body
            else:
                body = response.body
            stored_entry = CacheEntry(key.url, plan.status, storable_headers(headers), body)
        lifetime = plan.decision.lifetime
        swr = float(response_cc.stale_while_revalidate or 0)
        stale_if_error = float(response_cc.stale_if_error or 0)
        freshness = StoredFreshness(
            age=plan.age + max(0.0, time.time() - plan.response_time),
            lifetime=lifetime,
            swr=swr,
            stale_if_error=stale_if_error,
            no_stale=no_stale(response_cc),
            shared_with_authenticated=shareable_when_authenticated(response_cc),
            retention=retention(lifetime, swr, stale_if_error,
                                0.0 if no_stale(response_cc) and not has_validators(headers)
                                else self.settings.stale_retention),
        )
        scope = SHARED_SCOPE if plan.decision.shared else key.scope
        # A holder releases its lock and wakes its waiters; a request that held none tells
        # those who wait on the scope it stored in.
        lock_scope = plan.found.lock_scope if token else scope
        try:
            stored = await self.cache.save(
                key=key, scope=scope, lock_scope=lock_scope, token=token, entry=stored_entry,
                vary=keyed_vary(vary_names(headers) or []), request_headers=key.headers, freshness=freshness,
                looked_up_at_us=plan.found.now_us,
            )
            if stored:
                self.counters.stored += 1
        except StoreError as exc:
            self.counters.store_errors += 1
            log.debug("cache store failed for %s: %s", key.url, exc)

    def release_soon(self, st: LookupState, found: Lookup, token: str, outcome: str) -> None:
        """Give the fill `found` led to back now, in the background, once per request."""
        if st.released is not None:
            return
        st.released = outcome
        self.spawn(self.release(st.key, found, token, outcome))

    async def release(self, key: LookupKey, found: Lookup, token: str, outcome: str) -> None:
        """Give back the lock `found` took (`token`), or with no token (a request that held
        none) only set the pass marker and tell its own scope's waiters: never those of the
        URL's shared lock, who wait on another consumer's fill."""
        lock_scope = found.lock_scope if token else key.scope
        try:
            await self.cache.release(key, token, outcome, lock_scope=lock_scope)
        except StoreError as exc:  # the lease runs out on its own
            self.counters.store_errors += 1
            log.debug("cache release failed for %s: %s", key.url, exc)

