"""The gateway and mock services inside the test's own event loop (fast end-to-end tests).

`running_gateway(config)` serves the gateway on the engine, on an ephemeral loopback port, so
tests talk HTTP to it exactly as a client would; only the process boundary is missing.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from gateway.config import parse_config
from gateway.engine.server import Server
from gateway.entry import GatewayApp
from gateway.serve import limits_from
from tests.support.processes import free_port


@contextlib.asynccontextmanager
async def running_service(name: str) -> AsyncIterator[str]:
    """A mock service on an ephemeral port; yields its base URL."""
    from services.app import create_app

    runner = web.AppRunner(create_app(name), access_log=None)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def proxy_config(services: dict[str, dict[str, Any]], routes: dict[str, Any] | None = None,
                 **extra: Any) -> dict[str, Any]:
    """A config for the data plane alone: every policy off; `services` as the config takes them,
    routed at `/api/<name>` unless `routes` says otherwise; `extra` sections added as given."""
    return {
        "services": services,
        "routes": routes if routes is not None else {f"/api/{name}": name for name in services},
        "rate_limit": {"enabled": False}, "cache": {"enabled": False},
        "circuit_breaker": {"enabled": False}, **extra,
    }


@contextlib.asynccontextmanager
async def serving(config: dict[str, Any]) -> AsyncIterator[tuple[GatewayApp, Server]]:
    """A gateway serving `config` on an ephemeral port: the app (`app.url` is set) and the
    engine's Server (for tests that look at its connections)."""
    parsed = parse_config(config)
    app = GatewayApp(parsed)
    server = Server(app, limits_from(parsed.proxy))
    await app.start()
    try:
        listener = await server.listen(host="127.0.0.1", port=0)
        app.url = f"http://127.0.0.1:{listener.sockets[0].getsockname()[1]}"
        yield app, server
    finally:
        await server.shutdown(5.0)
        await app.close()


async def start_app(app: Any) -> tuple[Any, str]:
    """An aiohttp application serving on an ephemeral port: (its runner, to clean up; its URL)."""
    from aiohttp import web

    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}"


@contextlib.asynccontextmanager
async def running_gateway(config: dict[str, Any]) -> AsyncIterator[GatewayApp]:
    """A gateway serving `config` on an ephemeral port; yields the app (`app.url` is set)."""
    async with serving(config) as (app, _):
        yield app
