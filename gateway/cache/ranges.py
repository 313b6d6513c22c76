"""Byte ranges served from a stored complete response (RFC 9110 §14): 206, multipart, 416.

A GET with `Range: bytes=...` that finds a whole response in the cache is answered from it: one
range as a 206 with `Content-Range`, several as `multipart/byteranges`, none satisfiable as a
416 problem with `Content-Range: bytes */<length>`. `If-Range` must match the stored entry (a strong
entity-tag, or the exact Last-Modified date) for the ranges to apply; otherwise, as for a
Range the gateway will not honour (not bytes, malformed, too many pieces), the whole response
goes out as a 200. Ranges are of the stored representation (its Content-Encoding kept).
"""

from __future__ import annotations

import os
import re

from gateway.cache.freshness import first_header, parse_http_date
from gateway.context import Headers, Response
from gateway.problem import problem

MAX_RANGES = 16  # more pieces than this: the whole response (RFC 9110 §14.2 allows ignoring)
_SPEC = re.compile(r"(\d*)-(\d*)")


def parse_ranges(value: bytes, length: int) -> list[tuple[int, int]] | None:
    """The satisfiable ranges (first, last inclusive) of a `Range` value for a body of `length`
    bytes; [] when none is satisfiable (416); None when the field is to be ignored (not
    `bytes`, malformed, too many ranges)."""
    text = value.decode("latin-1").strip()
    unit, sep, specs = text.partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return None
    ranges: list[tuple[int, int]] = []
    pieces = [p.strip(" \t") for p in specs.split(",")]
    pieces = [p for p in pieces if p]  # empty list elements are allowed (RFC 9110 §5.6.1)
    if not pieces or len(pieces) > MAX_RANGES:
        return None
    for piece in pieces:
        m = _SPEC.fullmatch(piece)
        if m is None or (not m.group(1) and not m.group(2)):
            return None
        first, last = m.group(1), m.group(2)
        if first:
            start = int(first)
            end = int(last) if last else length - 1
            if last and end < start:
                return None  # invalid, so the whole field is ignored
            if start >= length:
                continue  # unsatisfiable piece
            ranges.append((start, min(end, length - 1)))
        else:
            suffix = int(last)
            if suffix == 0 or length == 0:
                continue
            ranges.append((max(0, length - suffix), length - 1))
    return ranges


def if_range_matches(value: bytes | None, stored: Headers) -> bool:
    """RFC 9110 §13.1.5: no If-Range, or one that names this entry (strong comparison)."""
    if value is None:
        return True
    text = value.decode("latin-1").strip()
    if text.startswith('"'):
        etag = first_header(stored, b"etag")
        return etag is not None and not etag.startswith(b"W/") and etag.decode("latin-1").strip() == text
    if text.startswith("W/"):
        return False  # a weak tag never matches
    modified = first_header(stored, b"last-modified")
    date = parse_http_date(text)
    return date is not None and modified is not None and parse_http_date(modified) == date


def unsatisfiable(length: int, request_id: str) -> Response:
    """416: no range of the request is inside the stored body (a problem, like every refusal)."""
    return problem(416, f"no requested range is within the {length} bytes of this response",
                   request_id=request_id, kind="range-not-satisfiable",
                   headers=[(b"content-range", b"bytes */%d" % length)])


def ranged(headers: Headers, body: bytes, ranges: list[tuple[int, int]]) -> Response:
    """The 206 for `ranges` (at least one) of a stored 200: one range, or multipart/byteranges."""
    length = len(body)
    kept = [(k, v) for k, v in headers if k not in (b"content-length", b"content-range", b"content-type")]
    content_type = first_header(headers, b"content-type")
    if len(ranges) == 1:
        start, end = ranges[0]
        extra = [(b"content-range", b"bytes %d-%d/%d" % (start, end, length))]
        if content_type is not None:
            extra.append((b"content-type", content_type))
        return Response(206, [*kept, *extra], body[start:end + 1])
    boundary = os.urandom(12).hex().encode()
    parts = []
    for start, end in ranges:
        head = b"--" + boundary + b"\r\n"
        if content_type is not None:
            head += b"content-type: " + content_type + b"\r\n"
        head += b"content-range: bytes %d-%d/%d\r\n\r\n" % (start, end, length)
        parts.append(head + body[start:end + 1] + b"\r\n")
    payload = b"".join(parts) + b"--" + boundary + b"--\r\n"
    return Response(206, [*kept, (b"content-type", b"multipart/byteranges; boundary=" + boundary)],
                    payload)
