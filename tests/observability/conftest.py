"""Fixtures for the observability tests: an in-process gateway in front of the users service."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.support.inproc import running_gateway


def gateway_config(users_url: str, **extra: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "services": {"users": {"url": users_url, "timeout": 2, "connect_timeout": 1,
                               "health_interval": 5}},
        "routes": {"/api/users": "users"},
        "logging": {"level": "INFO"},
        "cache": {"enabled": False},
        "circuit_breaker": {"enabled": False},
    }
    config.update(extra)
    return config


@pytest.fixture
async def gw(users_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with running_gateway(gateway_config(users_url)) as app:
        async with httpx.AsyncClient(base_url=app.url, timeout=10) as client:
            client.app = app  # type: ignore[attr-defined]
            yield client


def upstream_headers(resp: httpx.Response) -> dict[str, list[str]]:
    """The headers the upstream received, from the mock service's echo endpoint."""
    out: dict[str, list[str]] = {}
    for name, value in resp.json()["headers"]:
        out.setdefault(name.lower(), []).append(value)
    return out
