"""The entry of every request: routed prefixes go to the hot path, everything else to FastAPI.

The engine hands each parsed request to `GatewayApp`; a path under a route goes to the hot
path (no framework), any other path to the control plane through the ASGI bridge. Keeping the
framework off the hot path is the design's first rule (mounting the proxy inside FastAPI was
measured to cost a third of the throughput).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from urllib.parse import unquote

from gateway.config import GatewayConfig, load_config
from gateway.control import PublicSide, create_control_app
from gateway.engine.asgi import AsgiBridge
from gateway.engine.server import Request
from gateway.runtime import Gateway

log = logging.getLogger("gateway")


class GatewayApp:
    """One gateway process's request handler for the engine; it owns start and close."""

    def __init__(self, config: GatewayConfig, *, replica_id: str | None = None) -> None:
        self.gateway = Gateway(config, replica_id=replica_id)
        control = create_control_app(self.gateway)
        self.control = AsgiBridge(control)
        # While an admin listener runs, the public port serves only part of the control plane.
        self.public_control = AsgiBridge(PublicSide(control, config.control.public))
        self.public_control.state = self.control.state  # one lifespan, one state
        self.admin_listening = False  # set by whoever runs the admin listener (serve.py)
        self._match = self.gateway.routes.match
        self.url = ""  # set by whoever serves it (tests, the CLI), for messages
        self.admin_url = ""
        # Called with the new config after each reload (serve.py: the listeners' limits).
        self.on_reload: list[Callable[[GatewayConfig], None]] = []

    def __call__(self, request: Request) -> Awaitable[None]:
        # Not a coroutine itself: the engine's task runs the hot path's (or the bridge's)
        # coroutine directly, one level fewer for every suspension and resumption.
        path = _decoded(request.path)
        route = self._match(path)
        hotpath = self.gateway.hotpath
        if route is not None and hotpath is not None:
            return hotpath(route, request, path)
        # The control plane (FastAPI, anyio) gets a task of its own, as under any ASGI server:
        # its context variables and cancel scopes never outlive the request.
        bridge = self.public_control if self.admin_listening else self.control
        return asyncio.get_running_loop().create_task(bridge(request, path))

    def admin(self, request: Request) -> Awaitable[None]:
        """The admin listener's handler: the whole control plane, never the proxied routes."""
        return asyncio.get_running_loop().create_task(self.control(request, _decoded(request.path)))

    async def reload(self, config: GatewayConfig) -> list[str]:
        """Swap to a new, validated config (gateway/reload.py); the sections kept until a restart."""
        pinned = await self.gateway.reload(config)
        applied = self.gateway.config
        # No await from the gateway's swap to here: a request sees the old routes and hot path
        # or the new ones, never a mix.
        self._match = self.gateway.routes.match
        public = AsgiBridge(PublicSide(self.control.app, applied.control.public))
        public.state = self.control.state
        self.public_control = public
        for hook in self.on_reload:
            hook(applied)
        return pinned

    async def start(self) -> None:
        await self.gateway.start()
        await self.control.startup()

    async def close(self) -> None:
        self.gateway.draining = True
        try:
            await self.control.shutdown()
        finally:
            await self.gateway.close()


def _decoded(raw: bytes) -> str:
    return unquote(raw.decode("latin-1")) if b"%" in raw else raw.decode("latin-1")


def create_app(config: GatewayConfig | None = None) -> GatewayApp:
    """The app for a config (default: loaded from $GATEWAY_CONFIG / ./gateway.yaml)."""
    from gateway.logs import configure_logging

    config = config or load_config()
    configure_logging(config.logging)
    return GatewayApp(config)
