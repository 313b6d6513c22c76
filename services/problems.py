"""RFC 9457 problem responses: the one place the services shape an error body."""

from __future__ import annotations

import json
from collections.abc import Iterable
from http import HTTPStatus
from typing import Any

from aiohttp import web

from services.schemas import FieldError

PROBLEM_TYPE = "application/problem+json"
VALIDATION_TYPE = "urn:pygateway:problem:validation-failed"


def problem(status: int, detail: str | None = None, **extra: Any) -> web.Response:
    """A problem+json response; `title` is the status phrase unless `extra` overrides it."""
    body: dict[str, Any] = {"type": "about:blank", "title": _phrase(status), "status": status}
    if detail:
        body["detail"] = detail
    body.update(extra)
    return web.Response(status=status, text=json.dumps(body), content_type=PROBLEM_TYPE)


def validation_problem(errors: Iterable[FieldError]) -> web.Response:
    return problem(
        422,
        type=VALIDATION_TYPE,
        title="Validation failed",
        errors=[{"field": e.field, "message": e.message} for e in errors],
    )


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"
