"""Build and serve one mock backend (users, products or orders) on aiohttp.web."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from services import faults, resources, stats, testing
from services.data import seed
from services.problems import problem
from services.schemas import schema_for
from services.store import Collection

DEFAULT_PORTS = {"users": 8001, "products": 8002, "orders": 8003}
# A delayed request must not hold a stop for long: tests start and stop services often.
SHUTDOWN_TIMEOUT = 1.0

log = logging.getLogger("services")


@web.middleware
async def problem_middleware(request: web.Request, handler: faults.Handler) -> web.StreamResponse:
    """Turn routing errors (404, 405, 413) and surprises into problem+json bodies."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        # aiohttp's default text is just "404: Not Found"; keep only a real explanation (413's).
        detail = exc.text if exc.text and not exc.text.startswith(str(exc.status)) else None
        response = problem(exc.status, detail)
        if "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except (ConnectionError, asyncio.CancelledError):
        raise
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return problem(500, "the mock service failed unexpectedly")


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "healthy", "service": request.app[resources.SERVICE_NAME]})


def create_app(name: str) -> web.Application:
    """The application of service `name`, with fresh seed data and no faults set."""
    if name not in DEFAULT_PORTS:
        raise ValueError(f"unknown service {name!r}: expected one of {', '.join(DEFAULT_PORTS)}")
    app = web.Application(middlewares=[problem_middleware, faults.fault_middleware])
    app[resources.SERVICE_NAME] = name
    app[resources.COLLECTION] = Collection(schema_for(name), seed(name))
    app[faults.FAULT_SWITCH] = faults.FaultSwitch()
    app[stats.REQUEST_STATS] = stats.RequestStats()
    app[testing.ORIGIN_HITS] = testing.OriginHits()

    router = app.router
    router.add_get("/health", health)
    router.add_get("/_mock/faults", faults.get_faults)
    router.add_post("/_mock/faults", faults.post_faults)
    router.add_delete("/_mock/faults", faults.delete_faults)
    router.add_get("/_mock/stats", stats.get_stats)
    router.add_delete("/_mock/stats", stats.delete_stats)
    # The gateway forwards paths unchanged, so the test endpoints also live under the prefix.
    for prefix in ("/_mock", f"/api/{name}/_mock"):
        router.add_route("*", f"{prefix}/echo", testing.echo)
        router.add_get(f"{prefix}/download", testing.download)
        router.add_route("*", f"{prefix}/respond", testing.respond)
    collection, item = f"/api/{name}", f"/api/{name}/{{id:\\d{{1,18}}}}"
    router.add_get(collection, resources.list_items)
    router.add_post(collection, resources.create_item)
    router.add_get(item, resources.get_item)
    router.add_put(item, resources.replace_item)
    router.add_patch(item, resources.patch_item)
    router.add_delete(item, resources.delete_item)
    return app


@dataclass
class RunningService:
    """A service listening on a real socket; `port` is the bound one even when 0 was asked."""

    name: str
    host: str
    port: int
    app: web.Application
    runner: web.AppRunner

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def close(self) -> None:
        await self.runner.cleanup()


async def start(
    name: str, host: str = "127.0.0.1", port: int = 0, *, access_log: bool = False
) -> RunningService:
    """Start service `name` in the running event loop (port 0 picks a free port)."""
    app = create_app(name)
    runner = web.AppRunner(
        app,
        access_log=logging.getLogger("aiohttp.access") if access_log else None,
        shutdown_timeout=SHUTDOWN_TIMEOUT,
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError:
        await runner.cleanup()
        raise
    bound_port = runner.addresses[0][1]
    return RunningService(name, host, bound_port, app, runner)


def run(
    name: str, host: str = "127.0.0.1", port: int | None = None, *, access_log: bool = False
) -> None:
    """Serve `name` until SIGINT or SIGTERM, then stop cleanly (the process exits 0).

    Prints one line, `<name> listening on http://host:port`, once the socket is bound.
    """
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(_serve(name, host, DEFAULT_PORTS[name] if port is None else port, access_log))


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    # uvloop (installed with uvicorn[standard]) serves these handlers markedly faster, which
    # keeps the mock backends from being the bottleneck of a gateway benchmark.
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


async def _serve(name: str, host: str, port: int, access_log: bool) -> None:
    service = await start(name, host, port, access_log=access_log)
    print(f"{name} listening on {service.url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await service.close()
