"""Filling the cache: decide whether a response is stored, tee its body while it streams to the
client, store it once it went out (or give the fill lock back), and release fills."""

from __future__ import annotations

import logging
import time

from gateway.cache.directives import response_directives
from gateway.cache.entry import CacheEntry
from gateway.cache.freshness import (
    decide_store,
    has_validators,
    no_stale,
    retention,
    shareable_when_authenticated,
    storable_headers,
    vary_names,
)
from gateway.cache.keys import SHARED_SCOPE
from gateway.cache.settings import CacheSettings
from gateway.cache.state import BodyTee, CacheCounters, LookupState, StorePlan, upstream_failed
from gateway.cache.store import PASS, CacheStore, Lookup, LookupKey, StoredFreshness
from gateway.context import RequestContext, Response
from gateway.store import StoreError

log = logging.getLogger("gateway.cache")


class Filler:
    """The store side of the cache policy (its `after` phase calls `store` or `release`)."""

    def __init__(self, cache: CacheStore, settings: CacheSettings, counters: CacheCounters) -> None:
        self.cache = cache
        self.settings = settings
        self.counters = counters

    def plan(self, ctx: RequestContext, st: LookupState, found: Lookup, token: str,
                    entry: CacheEntry | None, age: float, response_time: float,
                    response: Response | None) -> None:
        """Decide whether to store; `after` stores (or gives the fill back) once it went out."""
        key = st.key
        headers = entry.headers if entry is not None else response.headers  # type: ignore[union-attr]
        status = entry.status if entry is not None else response.status  # type: ignore[union-attr]
        response_cc = response_directives(headers)
        decision = decide_store("GET", status, key.request_cc, response_cc, headers,
                                authenticated=st.authenticated, default_ttl=st.ttl)
        if not decision.store:
            self.counters.not_stored += 1
            if token or found.state != PASS:
                st.release_with(token, "pass")
            return
        tee: BodyTee | None = None
        if entry is None:
            assert response is not None
            limit = self.settings.max_body_bytes
            length = response.header(b"content-length")
            if length is not None and length.strip().isdigit() and int(length) > limit:
                self.counters.too_large += 1
                st.release_with(token, "pass")
                return
            if response.stream is not None:
                expected = int(length) if length is not None and length.strip().isdigit() else None
                tee = BodyTee(limit, expected)
                response.stream = tee.wrap(response.stream)
            elif len(response.body) > limit:
                self.counters.too_large += 1
                st.release_with(token, "pass")
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
                if tee.overflow:
                    self.counters.too_large += 1
                    await self.release(key, token, "pass")
                    return
                if not tee.complete or upstream_failed(ctx):
                    await self.release(key, token, "retry")
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
        try:
            stored = await self.cache.save(
                key=key, scope=scope, token=token, entry=stored_entry, vary=vary_names(headers) or [],
                request_headers=key.headers, freshness=freshness, looked_up_at_us=plan.found.now_us,
            )
            if stored:
                self.counters.stored += 1
        except StoreError as exc:
            self.counters.store_errors += 1
            log.debug("cache store failed for %s: %s", key.url, exc)

    async def release(self, key: LookupKey, token: str, outcome: str) -> None:
        try:
            await self.cache.release(key, token, outcome)
        except StoreError as exc:  # the lease runs out on its own
            self.counters.store_errors += 1
            log.debug("cache release failed for %s: %s", key.url, exc)

