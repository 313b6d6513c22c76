"""What every section of the configuration is built from: the base model and shared checks.

Each policy keeps its own schema beside its code (`gateway/ratelimit/settings.py`,
`gateway/breaker/settings.py`, `gateway/cache/settings.py`, `gateway/identity/settings.py`);
`gateway/config.py` composes them into the whole file. This module imports nothing of the
gateway, so any of them can use it.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """A block of the configuration: unknown keys are errors, and it never changes once loaded."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def check_http_url(value: str) -> str:
    """An http:// or https:// URL with a host and no query or fragment, without a trailing '/'."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"must be an http:// or https:// URL with a host, got {value!r}")
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise ValueError(f"bad port in {value!r}") from exc
    if parts.query or parts.fragment:
        raise ValueError(f"must not carry a query or fragment, got {value!r}")
    return value.rstrip("/")


HTTP_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"}


def http_methods(value: list[str] | None) -> list[str] | None:
    """Upper-cased method names; an unknown one is an error naming it."""
    if value is None:
        return None
    upper = [m.upper() for m in value]
    for m in upper:
        if m not in HTTP_METHODS:
            raise ValueError(f"unknown HTTP method {m!r}")
    return upper


def host_port(value: str) -> tuple[str, int]:
    """`127.0.0.1:9000`, `[::1]:9000`, `0.0.0.0:9000` -> (host, port); raises ValueError."""
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{value!r} is not host:port")
    return host, int(port)
