"""CRUD handlers for a service's collection, with HTTP caching headers that fit the data."""

from __future__ import annotations

import hashlib
import json
from email.utils import formatdate
from typing import Any

from aiohttp import web

from services.problems import problem, validation_problem
from services.schemas import FieldError, ValidationFailed
from services.store import Collection

SERVICE_NAME = web.AppKey("service_name", str)
COLLECTION = web.AppKey("collection", Collection)

# Products are the same for everyone and change rarely; users and orders are per-person,
# and an order's status must never be served stale.
CACHE_CONTROL = {
    "products": "public, max-age=60",
    "users": "private, max-age=30",
    "orders": "private, no-cache",
}
MAX_PER_PAGE = 100


async def list_items(request: web.Request) -> web.Response:
    errors: list[FieldError] = []
    page = _query_int(request, "page", 1, errors)
    per_page = _query_int(request, "per_page", 20, errors)
    if "page" not in {e.field for e in errors} and page < 1:
        errors.append(FieldError("page", "must be an integer >= 1"))
    if "per_page" not in {e.field for e in errors} and not 1 <= per_page <= MAX_PER_PAGE:
        errors.append(FieldError("per_page", f"must be an integer between 1 and {MAX_PER_PAGE}"))
    if errors:
        return validation_problem(errors)
    collection = request.app[COLLECTION]
    result = collection.page(page, per_page)
    payload = {"items": result.items, "total": result.total, "page": page, "per_page": per_page}
    return _conditional_json(request, payload, collection.modified_at)


async def get_item(request: web.Request) -> web.Response:
    collection = request.app[COLLECTION]
    record_id = int(request.match_info["id"])
    record = collection.get(record_id)
    if record is None:
        return _not_found(request, record_id)
    return _conditional_json(request, record, collection.modified(record_id))


async def create_item(request: web.Request) -> web.Response:
    body = await _json_body(request)
    if isinstance(body, web.Response):
        return body
    name = request.app[SERVICE_NAME]
    # The gateway authenticates the caller and passes who it is; orders belong to that caller.
    assigned = (
        {"user_id": request.headers.get("X-User-ID") or "anonymous"} if name == "orders" else {}
    )
    try:
        record = request.app[COLLECTION].create(body, assigned)
    except ValidationFailed as exc:
        return validation_problem(exc.errors)
    return web.json_response(
        record, status=201, headers={"Location": f"/api/{name}/{record['id']}"}
    )


async def replace_item(request: web.Request) -> web.Response:
    return await _update(request, partial=False)


async def patch_item(request: web.Request) -> web.Response:
    return await _update(request, partial=True)


async def delete_item(request: web.Request) -> web.Response:
    record_id = int(request.match_info["id"])
    if not request.app[COLLECTION].delete(record_id):
        return _not_found(request, record_id)
    return web.Response(status=204)


async def _update(request: web.Request, *, partial: bool) -> web.Response:
    collection = request.app[COLLECTION]
    record_id = int(request.match_info["id"])
    if collection.get(record_id) is None:
        return _not_found(request, record_id)
    body = await _json_body(request)
    if isinstance(body, web.Response):
        return body
    try:
        if partial:
            record = collection.patch(record_id, body)
        else:
            record = collection.replace(record_id, body)
    except ValidationFailed as exc:
        return validation_problem(exc.errors)
    return web.json_response(record)


async def _json_body(request: web.Request) -> Any:
    """The decoded JSON body, or a 400 problem response when it is not JSON."""
    raw = await request.read()
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return problem(400, "request body is not valid JSON")


def _query_int(request: web.Request, name: str, default: int, errors: list[FieldError]) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        errors.append(FieldError(name, "must be an integer"))
        return default


def _not_found(request: web.Request, record_id: int) -> web.Response:
    name = request.app[SERVICE_NAME]
    return problem(404, f"no {name[:-1]} with id {record_id}")


def _conditional_json(request: web.Request, payload: Any, modified_at: float) -> web.Response:
    """JSON with ETag, Last-Modified and Cache-Control, or 304 when the client's copy is current."""
    body = json.dumps(payload).encode()
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    headers = {
        "ETag": etag,
        "Last-Modified": formatdate(modified_at, usegmt=True),
        "Cache-Control": CACHE_CONTROL[request.app[SERVICE_NAME]],
    }
    if _not_modified(request, etag, modified_at):
        return web.Response(status=304, headers=headers)
    return web.Response(body=body, content_type="application/json", headers=headers)


def _not_modified(request: web.Request, etag: str, modified_at: float) -> bool:
    # RFC 9110 13.1.2: If-None-Match uses weak comparison and, when present, wins over
    # If-Modified-Since.
    if_none_match = request.headers.get("If-None-Match")
    if if_none_match is not None:
        tags = [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
        return "*" in tags or etag in tags
    since = request.if_modified_since
    return since is not None and modified_at <= since.timestamp()
