"""`POST /admin/cache/purge`: purge a URL or a prefix on every replica (admin key required)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from gateway.control_problem import problem_response
from gateway.identity import admin_caller, admin_required
from gateway.store import StoreError

router = APIRouter(prefix="/admin/cache", tags=["cache"])


class PurgeRequest(BaseModel):
    """Exactly one of `url` (a path with optional query) or `prefix` (path-segment aware)."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(None, min_length=1, max_length=8192, examples=["/api/products/1"])
    prefix: str | None = Field(None, min_length=1, max_length=8192, examples=["/api/products"])

    @model_validator(mode="after")
    def _one(self) -> PurgeRequest:
        if (self.url is None) == (self.prefix is None):
            raise ValueError("give exactly one of 'url' or 'prefix'")
        value = self.url if self.url is not None else self.prefix
        assert value is not None
        if not (value.startswith("/") or value.startswith(("http://", "https://"))):
            raise ValueError("must be a path starting with '/' (or an absolute http(s) URL)")
        return self


class PurgeResult(BaseModel):
    purged: int
    url: str | None = None
    prefix: str | None = None


@router.post(
    "/purge",
    response_model=PurgeResult,
    summary="Purge cached responses by URL or prefix",
    responses={400: {}, 401: {}, 403: {}, 503: {}},
)
async def purge(request: Request) -> Response:
    gateway = request.app.state.gateway
    policy = gateway.policies.get("cache") if gateway is not None else None
    if policy is None:
        return problem_response(503, "the cache is not running", kind="cache-disabled")
    refused = admin_required(admin_caller(gateway, list(request.scope.get("headers") or [])))
    if refused is not None:
        return Response(refused.body, status_code=refused.status, media_type="application/problem+json",
                        headers={k.decode(): v.decode() for k, v in refused.headers if k != b"content-type"})
    try:
        body = await request.json()
        spec = PurgeRequest.model_validate(body)
    except ValidationError as exc:
        errors = [{"field": ".".join(str(p) for p in e["loc"]) or "(body)", "message": e["msg"].removeprefix("Value error, ")}
                  for e in exc.errors()]
        return problem_response(400, "the purge request is not valid", kind="invalid-purge", errors=errors)
    except ValueError:
        return problem_response(400, "the body must be JSON: {\"url\": ...} or {\"prefix\": ...}", kind="invalid-purge")
    try:
        count = await policy.purge(url=spec.url, prefix=spec.prefix)
    except StoreError:
        return problem_response(503, "the cache store is unavailable; nothing was purged", kind="cache-store-unavailable")
    return JSONResponse(PurgeResult(purged=count, url=spec.url, prefix=spec.prefix).model_dump(exclude_none=True))
