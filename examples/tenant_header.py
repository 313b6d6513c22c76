"""An example plugin: tell the backend which tenant a consumer belongs to, and count per tenant.

    plugins:
      - use: "examples.tenant_header:TenantHeader"
        config:
          tenants: {alice: acme, premium-user: globex}
          header: X-Tenant
          required: true          # an authenticated consumer without a tenant gets 403

It shows every phase: `stage` decides from the verified consumer (set by identity, which runs
before plugins at the default place) and may answer at once; `handle` adds a response field on
the way back; `after` counts what happened once the response has gone out. Its settings are a
pydantic model, so a typo in `config:` is a config error naming the field.
"""

from __future__ import annotations

from collections import Counter

from pydantic import BaseModel, ConfigDict, Field

from gateway.plugins import (
    Handler,
    Policy,
    PolicyDeps,
    RequestContext,
    Response,
    StoreBatch,
    problem,
)


class TenantHeader(Policy):
    name = "tenant-header"

    class Settings(BaseModel):
        model_config = ConfigDict(extra="forbid", frozen=True)

        tenants: dict[str, str] = Field(description="consumer id -> tenant")
        header: str = Field("X-Tenant", pattern=r"^[A-Za-z0-9-]+$")
        required: bool = False

    def __init__(self, settings: Settings, deps: PolicyDeps) -> None:
        self.tenants = settings.tenants
        self.header = settings.header.lower().encode()
        self.required = settings.required
        self.served: Counter[str] = Counter()  # tenant -> responses sent

    def stage(self, ctx: RequestContext, batch: StoreBatch) -> str | Response | None:
        # Never trust a tenant the client sent itself.
        ctx.headers = [(k, v) for k, v in ctx.headers if k != self.header]
        consumer = ctx.consumer
        tenant = self.tenants.get(consumer.id) if consumer is not None and consumer.authenticated else None
        if tenant is None:
            if self.required and consumer is not None and consumer.authenticated:
                return problem(403, "this consumer belongs to no tenant", request_id=ctx.request_id,
                               kind="no-tenant")
            return None
        ctx.headers.append((self.header, tenant.encode()))
        return tenant  # the staged value: handed back to handle and after

    async def handle(self, ctx: RequestContext, staged: str | None, call_next: Handler) -> Response:
        response = await call_next(ctx)
        if staged is not None:
            response.headers.append((self.header, staged.encode()))
        return response

    async def after(self, ctx: RequestContext, staged: str | None, response: Response) -> None:
        if staged is not None:
            self.served[staged] += 1
