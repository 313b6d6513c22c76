"""Fault injection: make a service slow, failing, or drop connections, on demand.

Two sources, merged per request (header values win):
- request headers `X-Mock-Delay`, `X-Mock-Status`, `X-Mock-Drop`, `X-Mock-Reset`, for one request;
- a `FaultPlan` set through `POST /_mock/faults`, for every request (or the next `times` ones).
Admin paths (`/_mock/...`) are never faulted; `/health` only when the plan says `include_health`.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

from aiohttp import web

from services.problems import problem, validation_problem
from services.schemas import FieldError, ValidationFailed
from services.stats import REQUEST_STATS

MAX_DELAY = 3600.0
# Bytes of body sent before a reset, and the length promised: the client must see a short body.
RESET_SENT = 16 * 1024
RESET_PROMISED = 1024 * 1024

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class FaultPlan:
    """What to do to a request: wait `delay` seconds, then drop, reset, or answer `status`."""

    delay: float = 0.0
    status: int | None = None
    drop: bool = False
    reset: bool = False
    times: int | None = None
    include_health: bool = False

    @classmethod
    def from_json(cls, body: object) -> FaultPlan:
        if not isinstance(body, dict):
            raise ValidationFailed([FieldError("body", "must be a JSON object")])
        errors = [FieldError(str(k), "unknown field") for k in body if k not in _PLAN_CHECKS]
        for name, check in _PLAN_CHECKS.items():
            if name in body and (message := check(body[name])) is not None:
                errors.append(FieldError(name, message))
        if errors:
            raise ValidationFailed(errors)
        values = {k: v for k, v in body.items() if v is not None or k in ("status", "times")}
        if "delay" in values:
            values["delay"] = float(values["delay"])
        return cls(**values)

    @property
    def acts(self) -> bool:
        return bool(self.delay or self.status or self.drop or self.reset)


def _delay_check(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= MAX_DELAY:
        return f"must be a number of seconds between 0 and {MAX_DELAY:g}"
    return None


def _status_check(value: Any) -> str | None:
    if value is None or (type(value) is int and 200 <= value <= 599):
        return None
    return "must be an HTTP status code between 200 and 599, or null"


def _bool_check(value: Any) -> str | None:
    return None if value is None or isinstance(value, bool) else "must be true or false"


def _times_check(value: Any) -> str | None:
    if value is None or (type(value) is int and value > 0):
        return None
    return "must be a positive integer, or null for always"


_PLAN_CHECKS: dict[str, Callable[[Any], str | None]] = {
    "delay": _delay_check,
    "status": _status_check,
    "drop": _bool_check,
    "reset": _bool_check,
    "times": _times_check,
    "include_health": _bool_check,
}


class FaultSwitch:
    """The plan set by the admin endpoint, and how many more requests it applies to."""

    def __init__(self) -> None:
        self.plan: FaultPlan | None = None
        self.remaining: int | None = None

    def set(self, plan: FaultPlan) -> None:
        self.plan, self.remaining = plan, plan.times

    def clear(self) -> None:
        self.plan, self.remaining = None, None

    def take(self, path: str) -> FaultPlan | None:
        """The plan for one request to `path`, counting it against `times`."""
        plan = self.plan
        if plan is None or (path == "/health" and not plan.include_health):
            return None
        if self.remaining is not None:
            self.remaining -= 1
            if self.remaining <= 0:
                self.clear()
        return plan

    def describe(self) -> dict[str, Any]:
        plan = self.plan or FaultPlan()
        return {"active": self.plan is not None, **asdict(plan), "remaining": self.remaining}


FAULT_SWITCH = web.AppKey("fault_switch", FaultSwitch)


class BadFaultHeader(ValueError):
    """An `X-Mock-*` header whose value cannot be understood."""


def header_overrides(headers: Mapping[str, str]) -> dict[str, Any]:
    """Fault fields requested by this request's `X-Mock-*` headers."""
    overrides: dict[str, Any] = {}
    if (raw := headers.get("X-Mock-Delay")) is not None:
        try:
            delay = float(raw)
        except ValueError:
            delay = -1.0
        if not 0 <= delay <= MAX_DELAY:  # also false for NaN
            raise BadFaultHeader(f"X-Mock-Delay must be seconds between 0 and {MAX_DELAY:g}")
        overrides["delay"] = delay
    if (raw := headers.get("X-Mock-Status")) is not None:
        if not raw.strip().isdigit() or not 200 <= int(raw) <= 599:
            raise BadFaultHeader("X-Mock-Status must be an HTTP status code between 200 and 599")
        overrides["status"] = int(raw)
    for name in ("drop", "reset"):
        if (raw := headers.get(f"X-Mock-{name.capitalize()}")) is not None:
            overrides[name] = _flag(f"X-Mock-{name.capitalize()}", raw)
    return overrides


def _flag(header: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise BadFaultHeader(f"{header} must be 1 or 0")


def is_admin(path: str) -> bool:
    return path == "/_mock" or path.startswith("/_mock/")


@web.middleware
async def fault_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count the request, then apply the merged fault plan before the real handler runs."""
    path = request.path
    if is_admin(path):
        return await handler(request)
    stats = request.app[REQUEST_STATS]
    stats.record(path)
    stats.in_flight += 1
    try:
        try:
            overrides = header_overrides(request.headers)
        except BadFaultHeader as exc:
            return problem(400, str(exc))
        plan = request.app[FAULT_SWITCH].take(path)
        if overrides:
            plan = replace(plan or FaultPlan(), **overrides)
        if plan is not None and plan.acts:
            response = await apply(request, plan)
            if response is not None:
                return response
        return await handler(request)
    finally:
        stats.in_flight -= 1


async def apply(request: web.Request, plan: FaultPlan) -> web.StreamResponse | None:
    """Carry out `plan`; None means the request proceeds normally after the delay."""
    if plan.delay:
        await asyncio.sleep(plan.delay)
    if plan.drop:
        return drop_connection(request)
    if plan.reset:
        return await reset_mid_body(request)
    if plan.status:
        return injected_status(plan.status)
    return None


def drop_connection(request: web.Request) -> web.StreamResponse:
    """Close the connection without a byte of response (the client sees a disconnect)."""
    if request.transport is not None:
        request.transport.close()
    # aiohttp fails to write this to the closed transport and discards it quietly.
    return web.Response(status=204)


async def reset_mid_body(request: web.Request) -> web.StreamResponse:
    """Send the status line, headers and part of the promised body, then reset the connection."""
    response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
    response.content_length = RESET_PROMISED
    await response.prepare(request)
    await response.write(b'{"items": [' + b" " * (RESET_SENT - 11))
    transport = request.transport
    if transport is None:
        return response
    # abort() discards unsent bytes; wait until the partial body is on the wire first.
    for _ in range(200):
        if transport.get_write_buffer_size() == 0:
            break
        await asyncio.sleep(0.005)
    await asyncio.sleep(0.02)
    sock = transport.get_extra_info("socket")
    if sock is not None:
        # SO_LINGER 0 turns close into a TCP RST, which is what a crashed upstream looks like.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
    return response


def injected_status(status: int) -> web.Response:
    if status in (204, 304):
        return web.Response(status=status)
    return problem(status, "injected by the mock service's fault injection")


async def get_faults(request: web.Request) -> web.Response:
    return web.json_response(request.app[FAULT_SWITCH].describe())


async def post_faults(request: web.Request) -> web.Response:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return problem(400, "request body is not valid JSON")
    try:
        plan = FaultPlan.from_json(body)
    except ValidationFailed as exc:
        return validation_problem(exc.errors)
    request.app[FAULT_SWITCH].set(plan)
    return web.json_response(request.app[FAULT_SWITCH].describe())


async def delete_faults(request: web.Request) -> web.Response:
    request.app[FAULT_SWITCH].clear()
    return web.Response(status=204)
