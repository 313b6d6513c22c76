"""`/admin/consumers`: consumers managed at run time, on every replica within a second.

Like Kong's `/consumers` and `/consumers/{id}/key-auth`: create (the new key is in the answer,
once; only its SHA-256 is stored), list, show, update (tier, own limits, enabled), rotate the key
(the old ones stay valid for `grace` seconds), delete. Every call needs an admin key or a bearer
JWT with the admin claim. The consumers of the config file are listed too (`source: config`)
but are changed in the file (and a reload), never here.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from gateway.control_problem import problem_response
from gateway.identity.directory import (
    ID_PATTERN,
    ConsumerDirectory,
    ConsumerRecord,
    DirectoryError,
    StoredKey,
    new_key,
)
from gateway.identity.policy import admin_caller, key_digest
from gateway.ratelimit.settings import RateWindow, _distinct_windows
from gateway.store import StoreError

router = APIRouter(prefix="/admin/consumers", tags=["consumers"])

MAX_GRACE = 30 * 86400.0
DEFAULT_GRACE = 3600.0


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @field_validator("limits", check_fields=False)
    @classmethod
    def _windows(cls, value: list[RateWindow] | None) -> list[RateWindow] | None:
        return _distinct_windows(value) if value else value


class ConsumerCreate(_Body):
    id: str = Field(min_length=1, max_length=128, examples=["alice"])
    tier: str = Field("default", examples=["premium"])
    limits: list[RateWindow] | None = Field(
        None, description="windows of its own instead of its tier's", examples=[[{"limit": 500, "window": 60}]])
    enabled: bool = True

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not ID_PATTERN.fullmatch(value):
            raise ValueError("letters, digits and . _ @ : - only, starting with a letter or digit")
        return value


class ConsumerUpdate(_Body):
    tier: str | None = None
    limits: list[RateWindow] | None = Field(None, description="null or absent: keep; [] : back to the tier's")
    enabled: bool | None = None


class KeyRotation(_Body):
    grace: float = Field(DEFAULT_GRACE, ge=0, le=MAX_GRACE,
                         description="seconds the current keys stay valid beside the new one (0: revoked now)")


def _inline(schema: Any, defs: dict[str, Any]) -> Any:
    if isinstance(schema, dict):
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            return _inline(defs[ref.removeprefix("#/$defs/")], defs)
        return {k: _inline(v, defs) for k, v in schema.items() if k != "$defs"}
    if isinstance(schema, list):
        return [_inline(v, defs) for v in schema]
    return schema


def _described(model: type[BaseModel]) -> dict[str, Any]:
    """The OpenAPI request body of `model` (read and checked by the handler itself, after the
    admin check, so an anonymous caller learns nothing from a validation error)."""
    schema = model.model_json_schema()
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": _inline(schema, schema.get("$defs", {}))}}}}


def _refused(request: Request) -> Response | None:
    gateway = request.app.state.gateway
    caller = admin_caller(gateway, list(request.scope.get("headers") or []))
    if caller is None or not caller.authenticated:
        return problem_response(401, "the admin API needs an admin key (X-API-Key or Authorization: Bearer) "
                                "or a bearer JWT with the admin claim", request, kind="admin-key-required",
                                headers={"www-authenticate": 'Bearer realm="gateway-admin"'})
    if not caller.admin:
        return problem_response(403, "this credential is not an admin's", request, kind="not-an-admin-key")
    return None


def _directory(request: Request) -> ConsumerDirectory:
    directory: ConsumerDirectory | None = request.app.state.gateway.consumers
    assert directory is not None, "the gateway starts its consumer directory before it serves"
    return directory


async def _body(request: Request, model: type[BaseModel]) -> BaseModel | Response:
    try:
        raw = await request.body()
        return model.model_validate_json(raw or b"{}")
    except ValidationError as exc:
        errors = [{"field": ".".join(str(p) for p in e["loc"]) or "(body)",
                   "message": e["msg"].removeprefix("Value error, ")} for e in exc.errors()]
        return problem_response(400, "the request body is not valid", request, kind="invalid-consumer",
                                errors=errors)


def _check_tier(request: Request, tier: str | None) -> Response | None:
    tiers = request.app.state.gateway.config.rate_limits
    if tier is not None and tier not in tiers:
        return problem_response(400, f"tier: {tier!r} is not a configured tier ({', '.join(sorted(tiers))})",
                                request, kind="invalid-consumer",
                                errors=[{"field": "tier", "message": "not a configured tier"}])
    return None


def _config_ids(request: Request) -> dict[str, Any]:
    return {c.id: c for c in request.app.state.gateway.config.auth.consumers}


def _count(request: Request, action: str) -> None:
    changes = request.app.state.gateway.stats.consumer_changes
    changes[action] = changes.get(action, 0) + 1


def _unavailable(request: Request) -> Response:
    return problem_response(503, "the consumer store is unavailable; nothing changed", request,
                            kind="consumer-store-unavailable")


@router.get("", summary="List consumers (the config file's and the run-time ones)",
            responses={401: {}, 403: {}})
async def list_consumers(request: Request) -> Response:
    refused = _refused(request)
    if refused is not None:
        return refused
    directory = _directory(request)
    configured = [{"id": c.id, "tier": c.tier, "enabled": True, "source": "config", "limits": None,
                   "keys": [{"fingerprint": c.key_sha256[:8], "created": None, "expires": None}]}
                  for c in request.app.state.gateway.config.auth.consumers]
    runtime = [r.shown() for r in sorted(directory.records.values(), key=lambda r: r.id)]
    return JSONResponse({"version": directory.version, "consumers": configured + runtime})


@router.get("/{consumer_id}", summary="One consumer", responses={401: {}, 403: {}, 404: {}})
async def show_consumer(request: Request, consumer_id: str) -> Response:
    refused = _refused(request)
    if refused is not None:
        return refused
    record = _directory(request).records.get(consumer_id)
    if record is None:
        configured = _config_ids(request).get(consumer_id)
        if configured is not None:
            return JSONResponse({"id": configured.id, "tier": configured.tier, "enabled": True,
                                 "source": "config", "limits": None,
                                 "keys": [{"fingerprint": configured.key_sha256[:8]}]})
        return problem_response(404, f"no consumer {consumer_id!r}", request, kind="no-such-consumer")
    return JSONResponse(record.shown())


@router.post("", status_code=201, summary="Create a consumer; the answer holds its key, once",
             responses={400: {}, 401: {}, 403: {}, 409: {}, 503: {}}, openapi_extra=_described(ConsumerCreate))
async def create_consumer(request: Request) -> Response:
    refused = _refused(request)
    if refused is not None:
        return refused
    spec = await _body(request, ConsumerCreate)
    if isinstance(spec, Response):
        return spec
    assert isinstance(spec, ConsumerCreate)
    bad = _check_tier(request, spec.tier)
    if bad is not None:
        return bad
    if spec.id in _config_ids(request):
        return problem_response(409, f"{spec.id!r} is a consumer of the config file: change it there",
                                request, kind="consumer-exists")
    key = new_key()

    def create(current: ConsumerRecord | None, now: float) -> ConsumerRecord:
        if current is not None:
            raise DirectoryError(409, f"consumer {spec.id!r} exists", "consumer-exists")
        return ConsumerRecord(id=spec.id, tier=spec.tier, limits=spec.limits or None, enabled=spec.enabled,
                              keys=[StoredKey(sha256=key_digest(key), created=now)], created=now, updated=now)

    return await _apply(request, spec.id, create, "created", key=key, status=201)


@router.patch("/{consumer_id}", summary="Change a consumer's tier, own limits or enabled flag",
              responses={400: {}, 401: {}, 403: {}, 404: {}, 503: {}}, openapi_extra=_described(ConsumerUpdate))
async def update_consumer(request: Request, consumer_id: str) -> Response:
    refused = _refused(request)
    if refused is not None:
        return refused
    spec = await _body(request, ConsumerUpdate)
    if isinstance(spec, Response):
        return spec
    assert isinstance(spec, ConsumerUpdate)
    bad = _check_tier(request, spec.tier)
    if bad is not None:
        return bad
    given = spec.model_fields_set

    def update(current: ConsumerRecord | None, now: float) -> ConsumerRecord:
        record = _existing(current, consumer_id).model_copy(deep=True)
        if spec.tier is not None:
            record.tier = spec.tier
        if "limits" in given:
            record.limits = spec.limits or None
        if spec.enabled is not None:
            record.enabled = spec.enabled
        record.updated = now
        return record

    return await _apply(request, consumer_id, update, "updated")


@router.post("/{consumer_id}/keys", status_code=201,
             summary="Rotate the key: a new one (in the answer, once); the current ones expire after `grace`",
             responses={400: {}, 401: {}, 403: {}, 404: {}, 503: {}}, openapi_extra=_described(KeyRotation))
async def rotate_key(request: Request, consumer_id: str) -> Response:
    refused = _refused(request)
    if refused is not None:
        return refused
    spec = await _body(request, KeyRotation)
    if isinstance(spec, Response):
        return spec
    assert isinstance(spec, KeyRotation)
    key = new_key()

    def rotate(current: ConsumerRecord | None, now: float) -> ConsumerRecord:
        record = _existing(current, consumer_id).model_copy(deep=True)
        until = now + spec.grace
        old = [k.model_copy(update={"expires": min(k.expires or until, until)})
               for k in record.live_keys(now)] if spec.grace else []
        record.keys = [*old, StoredKey(sha256=key_digest(key), created=now)]
        record.updated = now
        return record

    return await _apply(request, consumer_id, rotate, "rotated", key=key, status=201)


@router.delete("/{consumer_id}", status_code=204, summary="Delete a consumer: its keys are refused everywhere",
               responses={401: {}, 403: {}, 404: {}, 503: {}})
async def delete_consumer(request: Request, consumer_id: str) -> Response:
    refused = _refused(request)
    if refused is not None:
        return refused

    def delete(current: ConsumerRecord | None, now: float) -> None:
        _existing(current, consumer_id)

    return await _apply(request, consumer_id, delete, "deleted", status=204)


def _existing(current: ConsumerRecord | None, consumer_id: str) -> ConsumerRecord:
    if current is None:
        raise DirectoryError(404, f"no run-time consumer {consumer_id!r}", "no-such-consumer")
    return current


async def _apply(request: Request, consumer_id: str, mutate: Any, action: str, *,
                 key: str | None = None, status: int = 200) -> Response:
    if consumer_id in _config_ids(request) and action != "created":
        return problem_response(409, f"{consumer_id!r} is a consumer of the config file: change it there",
                                request, kind="config-consumer")
    try:
        record = await _directory(request).change(consumer_id, mutate)
    except DirectoryError as exc:
        return problem_response(exc.status, str(exc), request, kind=exc.kind)
    except StoreError:
        return _unavailable(request)
    _count(request, action)
    if record is None:
        return Response(status_code=status)
    body: dict[str, Any] = {"consumer": record.shown()}
    if key is not None:
        body["key"] = key  # the only time it is shown: only its SHA-256 is kept
    return JSONResponse(body, status_code=status)
