"""problem+json answers of the control plane (FastAPI apps: /metrics, /admin, /dashboard): the
same body as the data plane's (`gateway.problem.problem_body`), as a Starlette `Response`."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import Response

from gateway.problem import problem_body

PROBLEM = "application/problem+json"


def problem_response(status: int, detail: str, request: Request | None = None,
                     headers: dict[str, str] | None = None, **extra: Any) -> Response:
    """`request`, when given, names the instance and carries the request id."""
    if request is not None:
        extra.setdefault("instance", request.url.path)
        extra.setdefault("request_id", request.headers.get("x-request-id"))
    return Response(problem_body(status, detail, **extra), status_code=status, media_type=PROBLEM,
                    headers=headers)
