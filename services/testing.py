"""Endpoints for the gateway's tests: echo the request, stream a big body, answer on demand.

Download pattern: byte `i` of a body is `i % 256`, i.e. `bytes(range(256))` repeated and cut
to `size`; `pattern_sha256(size)` computes the hash a test should expect.
"""

from __future__ import annotations

import asyncio
import hashlib

from aiohttp import web

from services.problems import validation_problem
from services.schemas import FieldError

PATTERN = bytes(range(256))
MAX_DOWNLOAD = 64 * 1024**3
MAX_CHUNK = 16 * 1024 * 1024
READ_CHUNK = 64 * 1024
# Framing headers come from the body itself; letting a test set them would break the response.
FORBIDDEN_RESPOND_HEADERS = {"content-length", "transfer-encoding", "connection"}


class OriginHits:
    """How many times `/_mock/respond` has answered in this app."""

    def __init__(self) -> None:
        self.count = 0


ORIGIN_HITS = web.AppKey("origin_hits", OriginHits)


def pattern_bytes(size: int, offset: int = 0) -> bytes:
    """`size` bytes of the download pattern starting at byte `offset`."""
    start = offset % 256
    repeats = (start + size) // 256 + 1
    return (PATTERN * repeats)[start : start + size]


def pattern_sha256(size: int) -> str:
    """Hex SHA-256 of a `/_mock/download?size=<size>` body, computed in bounded memory."""
    digest = hashlib.sha256()
    block = pattern_bytes(1024 * 1024)  # a multiple of 256, so every block starts at offset 0
    for _ in range(size // len(block)):
        digest.update(block)
    digest.update(block[: size % len(block)])
    return digest.hexdigest()


async def echo(request: web.Request) -> web.Response:
    """Describe the request as received; the body is hashed chunk by chunk, never buffered."""
    digest = hashlib.sha256()
    length = 0
    async for chunk in request.content.iter_chunked(READ_CHUNK):
        digest.update(chunk)
        length += len(chunk)
    return web.json_response(
        {
            "method": request.method,
            "path": request.path,
            "raw_path": request.raw_path,
            # Raw, as sent: aiohttp's request.query_string is percent-decoded.
            "query_string": request.raw_path.partition("?")[2],
            "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in request.raw_headers],
            "transfer_encoding": request.headers.get("Transfer-Encoding"),
            "content_length": request.content_length,
            "body_length": length,
            "body_sha256": digest.hexdigest(),
        }
    )


def _int_param(
    request: web.Request, name: str, default: int, low: int, high: int, errors: list[FieldError]
) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        errors.append(FieldError(name, f"must be an integer between {low} and {high}"))
    return value


async def download(request: web.Request) -> web.StreamResponse:
    """Stream `size` bytes of the pattern in `chunk`-sized writes, with a Content-Length."""
    errors: list[FieldError] = []
    size = _int_param(request, "size", 0, 0, MAX_DOWNLOAD, errors)
    chunk = _int_param(request, "chunk", READ_CHUNK, 1, MAX_CHUNK, errors)
    if errors:
        return validation_problem(errors)
    response = web.StreamResponse(
        headers={"Content-Type": "application/octet-stream", "X-Body-Pattern": "byte i = i % 256"}
    )
    response.content_length = size
    await response.prepare(request)
    if request.method == "HEAD":
        return response
    # One buffer long enough to slice any chunk from any phase of the pattern.
    buffer = memoryview(pattern_bytes(chunk + 256))
    sent = 0
    while sent < size:
        n = min(chunk, size - sent)
        start = sent % 256
        await response.write(buffer[start : start + n])
        sent += n
    await response.write_eof()
    return response


async def respond(request: web.Request) -> web.StreamResponse:
    """A programmable origin: `?status=&h=Name: value&body=&delay=` (h repeatable).

    Every answer carries `X-Origin-Hits`, the number of times this endpoint has answered, so a
    cache test can tell a stored response from a fresh one.
    """
    errors: list[FieldError] = []
    status = _int_param(request, "status", 200, 200, 599, errors)
    delay = 0.0
    if (raw_delay := request.query.get("delay")) is not None:
        try:
            delay = float(raw_delay)
        except ValueError:
            delay = -1.0
        if not 0 <= delay <= 3600:
            errors.append(FieldError("delay", "must be seconds between 0 and 3600"))
    headers: list[tuple[str, str]] = []
    for raw in request.query.getall("h", []):
        name, colon, value = raw.partition(":")
        name = name.strip()
        if (
            not colon
            or not name
            or any(c in name for c in " \t\r\n")
            or any(c in value for c in "\r\n")
        ):
            errors.append(FieldError("h", f"{raw!r} is not 'Name: value'"))
        elif name.lower() in FORBIDDEN_RESPOND_HEADERS:
            errors.append(FieldError("h", f"{name} is set by the server"))
        else:
            headers.append((name, value.strip()))
    if errors:
        return validation_problem(errors)
    # Drain the request body so the connection stays usable.
    async for _ in request.content.iter_chunked(READ_CHUNK):
        pass
    if delay:
        await asyncio.sleep(delay)
    hits = request.app[ORIGIN_HITS]
    hits.count += 1
    response = web.Response(status=status)
    for name, value in headers:
        response.headers.add(name, value)
    response.headers["X-Origin-Hits"] = str(hits.count)
    if status not in (204, 304) and request.method != "HEAD":
        response.body = request.query.get("body", "").encode()
        if "Content-Type" not in response.headers:
            response.content_type = "text/plain"
    return response
