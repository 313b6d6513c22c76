"""RFC 9457 problem details: the one way the gateway answers with an error."""

from __future__ import annotations

import json
from typing import Any

from gateway.context import Headers, Response

PROBLEM_TYPE = "https://pygateway.dev/problems/"

TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    413: "Content Too Large",
    414: "URI Too Long",
    417: "Expectation Failed",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
    505: "HTTP Version Not Supported",
}


def problem_body(status: int, detail: str, *, request_id: str | None = None, kind: str | None = None,
                 instance: str | None = None, **extra: Any) -> bytes:
    title = TITLES.get(status, "Error")
    doc: dict[str, Any] = {
        "type": PROBLEM_TYPE + (kind or title.lower().replace(" ", "-")),
        "title": title,
        "status": status,
        "detail": detail,
    }
    if instance is not None:
        doc["instance"] = instance
    if request_id is not None:
        doc["request_id"] = request_id
    doc.update(extra)
    return json.dumps(doc, separators=(",", ":")).encode()


def problem(status: int, detail: str, *, request_id: str | None = None, kind: str | None = None,
            instance: str | None = None, headers: Headers | None = None, **extra: Any) -> Response:
    """A `Response` carrying an `application/problem+json` body."""
    body = problem_body(status, detail, request_id=request_id, kind=kind, instance=instance, **extra)
    out: Headers = [(b"content-type", b"application/problem+json")]
    if headers:
        out.extend(headers)
    return Response(status=status, headers=out, body=body)
