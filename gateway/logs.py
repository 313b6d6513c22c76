"""Logging: one JSON object per line in production, readable text under `gateway dev`.

Secrets never reach a log line: request headers are not logged at all, and the access log
carries only the fields the hot path chose (no API keys, Authorization or cookies).

The access log does not go through the `logging` module: a LogRecord, a handler lock, the
formatter and a write per request would cost more than the rest of a proxied request.
`AccessLog` encodes the line itself, in the same JSON shape (`ts`, `level`, `logger`, then the
fields) and to the same stream (stderr), and writes what accumulated every `FLUSH_INTERVAL`
seconds or every `FLUSH_LINES` lines, whichever comes first (nginx's `access_log ... buffer=
flush=` idea): one write for many requests. A clean stop flushes; a SIGKILL loses at most the
last `FLUSH_INTERVAL` of lines.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from typing import TYPE_CHECKING, Any, TextIO

from gateway.config import LoggingSettings

if TYPE_CHECKING:
    from gateway.context import RequestContext
    from gateway.routing import Route


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        fields = getattr(record, "fields", None)
        if fields:
            doc.update(fields)
        else:
            doc["message"] = record.getMessage()
        if record.exc_info:
            doc["error"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")


def configure_logging(settings: LoggingSettings, *, force_text: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    use_text = force_text or settings.format == "text"
    handler.setFormatter(TextFormatter() if use_text else JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.level)
    logging.getLogger("gateway.access").disabled = not settings.access_log


FLUSH_INTERVAL = 0.05  # seconds
FLUSH_LINES = 256


class AccessLog:
    """One line per proxied request, JSON or text, written in batches (see the module doc)."""

    def __init__(self, text: bool = False, stream: TextIO | None = None) -> None:
        self.text = text
        self._stream = stream  # None: sys.stderr as it is at write time
        self._pending: list[str] = []
        self._scheduled: asyncio.TimerHandle | None = None
        self._encode = json.JSONEncoder(separators=(",", ":"), default=str, check_circular=False).encode
        self._second = -1
        self._stamp = ""

    @classmethod
    def from_settings(cls, settings: LoggingSettings) -> AccessLog | None:
        """None when the access log is off, or the level is above INFO (where access lines live)."""
        if not settings.access_log or logging.getLevelName(settings.level) > logging.INFO:
            return None
        return cls(text=settings.format == "text")

    def _ts(self) -> str:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._stamp}.{int((now - second) * 1000):03d}Z"

    def write(self, fields: dict[str, Any]) -> None:
        ts = self._ts()
        if self.text:
            line = _text_line(ts, fields)
        else:
            # {"ts", "level", "logger", then the fields}: the fields encoded as they are, then
            # spliced in behind the fixed head (no merged copy of the dict per line).
            body = self._encode(fields)
            line = f'{{"ts":"{ts}","level":"info","logger":"gateway.access"' + (
                "," + body[1:] if len(body) > 2 else "}")
        self._add(line)

    def request(self, request_id: str, trace_id: str | None, method: str, path: str, route: str,
                service: str, status: int, duration_ms: float, gateway_ms: float,
                upstream_ms: float | None, upstream_status: int | None,
                upstream_failure: str | None, consumer: str | None, client_ip: str | None,
                cache: str | None, breaker: str | None, rate_limit_remaining: int | None,
                client_disconnected: bool = False) -> None:
        """One proxied request's line: the same fields and order as `write` would give for
        them, encoded without a dict or the generic JSON encoder (a third of the line's cost).
        The request id, method, trace id and client IP are tokens the engine and the hot path
        validated; every other string is JSON-escaped."""
        if self.text:
            self.write({
                "request_id": request_id, "trace_id": trace_id, "method": method, "path": path,
                "route": route, "service": service, "status": status, "duration_ms": duration_ms,
                "gateway_ms": gateway_ms, "upstream_ms": upstream_ms,
                "upstream_status": upstream_status, "upstream_failure": upstream_failure,
                "consumer": consumer, "client_ip": client_ip, "cache": cache, "breaker": breaker,
                "rate_limit_remaining": rate_limit_remaining,
                **({"client_disconnected": True} if client_disconnected else {}),
            })
            return
        line = (
            f'{{"ts":"{self._ts()}","level":"info","logger":"gateway.access",'
            f'"request_id":"{request_id}","trace_id":{_token(trace_id)},"method":"{method}",'
            f'"path":{_esc(path)},"route":{_esc(route)},"service":{_esc(service)},'
            f'"status":{status},"duration_ms":{duration_ms!r},"gateway_ms":{gateway_ms!r},'
            f'"upstream_ms":{_num(upstream_ms)},"upstream_status":{_num(upstream_status)},'
            f'"upstream_failure":{_token(upstream_failure)},"consumer":{_opt(consumer)},'
            f'"client_ip":{_token(client_ip)},"cache":{_token(cache)},"breaker":{_token(breaker)},'
            f'"rate_limit_remaining":{_num(rate_limit_remaining)}'
            + (',"client_disconnected":true}' if client_disconnected else "}")
        )
        self._add(line)

    def proxied(self, rid: str, method: str, path: str, route: Route, status: int, elapsed: float,
                ctx: RequestContext | None) -> None:
        """The line of one routed request, from what the hot path knows of it. Only these
        fields: never a header, the query string or a body, so API keys, Authorization and
        cookies cannot reach the log."""
        duration_ms = round(elapsed * 1000, 2)
        if ctx is None:  # answered before a context existed (400/405/413/501)
            self.request(rid, None, method, path, route.prefix, route.service, status,
                         duration_ms, duration_ms, None, None, None, None, None, None, None, None)
            return
        upstream = ctx.upstream
        consumer = ctx.consumer
        trace = ctx.trace
        if upstream is not None:
            upstream_ms: float | None = round(upstream.duration * 1000, 2)
            gateway_ms = round(max(0.0, duration_ms - upstream.duration * 1000), 2)
            upstream_status, upstream_failure = upstream.status, upstream.failure
        else:
            upstream_ms, gateway_ms, upstream_status, upstream_failure = None, duration_ms, None, None
        self.request(
            rid, trace.trace_id if trace is not None else None, method, path, route.prefix,
            route.service, status, duration_ms, gateway_ms, upstream_ms, upstream_status,
            upstream_failure, consumer.id if consumer is not None else None, ctx.client_ip,
            ctx.cache_status, ctx.breaker_state, ctx.rate_limit_remaining, ctx.client_disconnected)

    def _add(self, line: str) -> None:
        pending = self._pending
        pending.append(line)
        if self._scheduled is not None:
            if len(pending) >= FLUSH_LINES:
                self.flush()
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        self._scheduled = loop.call_later(FLUSH_INTERVAL, self.flush)

    def flush(self) -> None:
        if self._scheduled is not None:
            self._scheduled.cancel()
            self._scheduled = None
        if not self._pending:
            return
        data = "\n".join(self._pending) + "\n"
        self._pending.clear()
        stream = self._stream or sys.stderr
        try:
            stream.write(data)
            stream.flush()
        except (OSError, ValueError):  # stderr closed or gone: never fail a request over a log line
            pass


_esc = json.encoder.encode_basestring  # type: ignore[attr-defined]


def _token(value: str | None) -> str:
    return "null" if value is None else f'"{value}"'


def _opt(value: str | None) -> str:
    return "null" if value is None else _esc(value)


def _num(value: float | None) -> str:
    return "null" if value is None else repr(value)


def _text_line(ts: str, fields: dict[str, Any]) -> str:
    extras = " ".join(f"{k}={v}" for k, v in fields.items()
                      if v is not None and k not in ("method", "path", "status"))
    return (f"{ts[11:19]} INFO    gateway.access: {fields.get('method')} {fields.get('path')} "
            f"-> {fields.get('status')} {extras}")
