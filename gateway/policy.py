"""The policy chain: ordered policies around the upstream call, with one pre-upstream round trip.

A policy is a small object with two steps:

* `stage(ctx, batch)`: synchronous, before anything is awaited. It may put Redis commands on the
  request's `StoreBatch` (the pipeline sends them all in one round trip) or answer at once by
  returning a `Response` (e.g. 401 for an unknown API key), which skips the rest.
* `__call__(ctx, call_next)`: reads its staged results and either answers (429, cache hit, 503
  while the breaker is open) or calls `call_next(ctx)` and may touch the response on its way back.

A policy stops a request by returning a response, never by raising through the others. The
order is data, composed once at start-up, the way Starlette builds its middleware stack.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from gateway.context import RequestContext, Response
from gateway.store import Store, StoreBatch

Handler = Callable[[RequestContext], Awaitable[Response]]


class Policy(Protocol):
    name: str

    def stage(self, ctx: RequestContext, batch: StoreBatch) -> Response | None: ...

    async def __call__(self, ctx: RequestContext, call_next: Handler) -> Response: ...


class PolicyChain:
    """Runs `policies` in order around `terminal` (the upstream call)."""

    def __init__(self, policies: Sequence[Policy], terminal: Handler, store: Store) -> None:
        self.policies = list(policies)
        self.store = store
        handler = terminal
        for policy in reversed(self.policies):
            handler = _bind(policy, handler)
        self._handler = handler

    async def __call__(self, ctx: RequestContext) -> Response:
        batch = self.store.batch()
        for policy in self.policies:
            early = policy.stage(ctx, batch)
            if early is not None:
                return early
        if len(batch):  # nothing staged (no policy needs Redis now): no coroutine to run
            await batch.execute()
        return await self._handler(ctx)


def _bind(policy: Policy, call_next: Handler) -> Handler:
    async def handler(ctx: RequestContext) -> Response:
        return await policy(ctx, call_next)

    return handler
