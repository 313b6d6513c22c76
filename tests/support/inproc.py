"""The gateway and mock services inside the test's own event loop (fast end-to-end tests).

`running_gateway(config)` serves a real uvicorn server on an ephemeral loopback port, so tests
talk HTTP to it exactly as a client would; only the process boundary is missing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from aiohttp import web

from gateway.config import parse_config
from gateway.entry import GatewayApp
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


@contextlib.asynccontextmanager
async def running_gateway(config: dict[str, Any]) -> AsyncIterator[GatewayApp]:
    """A gateway serving `config` on an ephemeral port; yields the app (`app.url` is set)."""
    app = GatewayApp(parse_config(config))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(
        app, host="127.0.0.1", port=port, lifespan="on", access_log=False, log_level="warning",
        server_header=False, date_header=False, proxy_headers=False, http="httptools", ws="none",
    ))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("gateway did not start")
        await asyncio.sleep(0.01)
    app.url = f"http://127.0.0.1:{port}"  # type: ignore[attr-defined]
    try:
        yield app
    finally:
        server.should_exit = True
        await task
