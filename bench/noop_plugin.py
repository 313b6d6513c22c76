"""A plugin that does nothing in every phase: what the plugin machinery itself costs a request
(bench/inprocess.py, phase `plugin-noop`)."""

from __future__ import annotations

from typing import Any

from gateway.plugins import Handler, Policy, PolicyDeps, RequestContext, Response, StoreBatch


class NoopPlugin(Policy):
    name = "noop"

    def __init__(self, settings: Any, deps: PolicyDeps) -> None:
        pass

    def stage(self, ctx: RequestContext, batch: StoreBatch) -> None:
        return None

    async def handle(self, ctx: RequestContext, staged: None, call_next: Handler) -> Response:
        return await call_next(ctx)

    async def after(self, ctx: RequestContext, staged: None, response: Response) -> None:
        return None
