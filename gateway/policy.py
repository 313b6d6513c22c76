"""The policy chain: ordered policies around the upstream call, with one pre-upstream round trip.

A policy has three named phases (in the spirit of Kong's `access` / `header_filter` / `log`),
each optional; the chain owns the lifecycle and keeps what each policy staged:

* `stage(ctx, batch)`: synchronous, before anything is awaited. It may put Redis commands on the
  request's `StoreBatch` (the pipeline sends them all in one round trip) and returns what it
  staged (any value; None for nothing), or a `Response` to answer at once (e.g. 401 for an
  unknown API key), which skips the stages after it and every `handle`.
* `handle(ctx, staged, call_next)`: decides on its staged value and either answers (429, a cache
  hit, 503 while the breaker is open) or returns `await call_next(ctx)`, the rest of the chain.
* `after(ctx, staged, response)`: once the response has gone out (its body too), record what
  happened (outcomes for the breaker, cache stores, invalidations). The chain runs the `after`
  of every policy whose `stage` ran, in reverse order, also when a policy answered early.

A policy stops a request by returning a response, never by raising through the others. A phase
a policy does not implement costs nothing per request: the chain links only the `handle`s that
exist. A policy may be limited to some routes (a plugin's `routes:`): elsewhere none of its
phases run. The order is data, composed once at start-up, the way Starlette builds its
middleware stack. Plugins use the same phases (gateway/plugins/, docs/plugins.md).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gateway.context import RequestContext, Response
from gateway.store import Store, StoreBatch

if TYPE_CHECKING:
    from gateway.replicas import ReplicaRegistry

log = logging.getLogger("gateway.policy")

Handler = Callable[[RequestContext], Awaitable[Response]]


class Policy:
    """The phases, each a no-op by default: subclass and implement the ones you need.

    `name` names the policy in logs and metrics. Implementing the phases without subclassing
    works too (the chain looks for the methods).
    """

    name = "policy"

    def stage(self, ctx: RequestContext, batch: StoreBatch) -> Any:
        return None

    async def handle(self, ctx: RequestContext, staged: Any, call_next: Handler) -> Response:
        return await call_next(ctx)

    async def after(self, ctx: RequestContext, staged: Any, response: Response) -> None:
        return None


@dataclass(frozen=True)
class PolicyDeps:
    """What a policy may use besides its own settings (never the whole gateway)."""

    store: Store  # Redis (single, Cluster, Sentinel) or the embedded store
    key_prefix: str = "gw"  # every Redis key of this gateway starts with it
    replicas: ReplicaRegistry | None = None  # live replicas of the cluster
    clock: Callable[[], float] = field(default=time.monotonic)


# The staged value of a policy on a route it does not apply to: none of its phases run.
_OUT_OF_SCOPE: Any = object()


def _stage_nothing(ctx: RequestContext, batch: StoreBatch) -> None:
    return None


def implements(policy: object, phase: str) -> bool:
    """Whether `policy` (or a policy class) has its own `phase` (not absent, not the base
    class's no-op)."""
    method = getattr(policy if isinstance(policy, type) else type(policy), phase, None)
    return method is not None and method is not getattr(Policy, phase)


class _Link:
    """`call_next` for one position: that policy's `handle` with its staged value.

    Calling it returns the handle's coroutine itself (no coroutine of its own in between).
    `after(ctx, response)` runs the `after` phases from this position inward, for a request
    the chain does not finish itself (the cache's background refresh of a stale entry).
    """

    __slots__ = ("chain", "handle", "index", "call_next")

    def __init__(self, chain: PolicyChain, index: int, call_next: Handler) -> None:
        self.chain = chain
        self.index = index
        self.handle = chain.policies[index].handle
        self.call_next = call_next

    def __call__(self, ctx: RequestContext) -> Awaitable[Response]:
        staged = ctx.staged[self.index]
        if staged is _OUT_OF_SCOPE:
            return self.call_next(ctx)
        return self.handle(ctx, staged, self.call_next)

    async def after(self, ctx: RequestContext, response: Response) -> None:
        await self.chain.after(ctx, response, start=self.index)


class _Terminal:
    """`call_next` of the innermost policy: the upstream call."""

    __slots__ = ("chain", "call", "index")

    def __init__(self, chain: PolicyChain, call: Handler) -> None:
        self.chain = chain
        self.call = call
        self.index = len(chain.policies)

    def __call__(self, ctx: RequestContext) -> Awaitable[Response]:
        return self.call(ctx)

    async def after(self, ctx: RequestContext, response: Response) -> None:
        return None


class PolicyChain:
    """Runs `policies` in order around `terminal` (the upstream call)."""

    def __init__(self, policies: Sequence[Any], terminal: Handler, store: Store,
                 routes: Mapping[int, frozenset[str]] | None = None) -> None:
        """`routes`: for the policies (by position) that apply to some route prefixes only."""
        self.policies = list(policies)
        self.store = store
        scopes = dict(routes or {})
        self._stages = [(i, p.stage if implements(p, "stage") else _stage_nothing, scopes.get(i))
                        for i, p in enumerate(self.policies) if implements(p, "stage") or i in scopes]
        self._afters = [(i, p) for i, p in enumerate(self.policies) if implements(p, "after")]
        self._afters.reverse()  # innermost first
        self.has_after = bool(self._afters)  # the hot path skips `after` when nothing has one
        self._entry = self.link(terminal)

    def link(self, terminal: Handler) -> Handler:
        """The chain's handles linked around `terminal` (tests and benches swap the terminal)."""
        handler: Handler = _Terminal(self, terminal)
        for index in reversed(range(len(self.policies))):
            if implements(self.policies[index], "handle"):
                handler = _Link(self, index, handler)
        return handler

    def relink(self, terminal: Handler) -> None:
        self._entry = self.link(terminal)

    async def __call__(self, ctx: RequestContext) -> Response:
        """Stage every policy, send the batch once, then run the handles around the upstream."""
        staged: list[Any] = [None] * len(self.policies)
        ctx.staged = staged
        batch = self.store.batch()
        for index, stage, scope in self._stages:
            if scope is not None and ctx.route.prefix not in scope:
                staged[index] = _OUT_OF_SCOPE
                continue
            value = stage(ctx, batch)
            if isinstance(value, Response):
                ctx.staged_through = index + 1
                return value
            staged[index] = value
        ctx.staged_through = len(staged)
        if len(batch):  # nothing staged (no policy needs Redis now): no coroutine to run
            await batch.execute()
        return await self._entry(ctx)

    async def after(self, ctx: RequestContext, response: Response, *, start: int = 0) -> None:
        """Every staged policy's `after`, innermost first (from position `start` inward)."""
        staged = ctx.staged
        through = ctx.staged_through
        for index, policy in self._afters:
            if index >= through or index < start or staged[index] is _OUT_OF_SCOPE:
                continue
            try:
                await policy.after(ctx, staged[index], response)
            except Exception:
                log.exception("the %s policy failed after request %s", policy.name, ctx.request_id)
