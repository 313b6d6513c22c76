"""The control plane (FastAPI): /, /health, /ready, /metrics, /docs — never the proxied paths."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from gateway import __version__
from gateway.control_problem import PROBLEM, problem_response
from gateway.dashboard import mount_dashboard
from gateway.identity import admin_caller
from gateway.metrics.document import metrics_document
from gateway.metrics.exposition import render, wants_prometheus

if TYPE_CHECKING:
    from gateway.runtime import Gateway

FORMATS = ("json", "prometheus", "text", "openmetrics")


DOCS_ASSETS = "/docs/assets"
# What the public port serves of the control plane while an admin listener runs.
ALWAYS_PUBLIC = frozenset({"/", "/health", "/ready", "/metrics"})
_SHOWN = {"docs": ({"/docs", "/openapi.json"}, "/docs/"),
          "dashboard": ({"/dashboard", "/dashboard/"}, "/dashboard/")}


class PublicSide:
    """The control plane as the public port serves it while the admin listener runs (ASGI):
    `/`, `/health`, `/ready`, `/metrics` (marked public: per-consumer figures only with an admin
    key), and `/docs` / `/dashboard` when `control.public` lists them; anything else (the admin
    API above all) is a 404 problem pointing at the admin listener."""

    def __init__(self, app: Any, shown: Iterable[str]) -> None:
        self.app = app
        paths, prefixes = set(ALWAYS_PUBLIC), []
        for name in shown:
            extra, prefix = _SHOWN[name]
            paths |= extra
            prefixes.append(prefix)
        self.paths = frozenset(paths)
        self.prefixes = tuple(prefixes)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            path = scope["path"]
            if path not in self.paths and not (self.prefixes and path.startswith(self.prefixes)):
                response = problem_response(
                    404, f"{path} is not served on this port (the admin listener serves the "
                    "admin API, the dashboard and the docs)", Request(scope), kind="admin-only")
                await response(scope, receive, send)
                return
            scope = {**scope, "gateway_public": True}
        await self.app(scope, receive, send)


def without_consumers(document: dict[str, Any]) -> dict[str, Any]:
    """The metrics document without per-consumer figures (ids and usage), for the public port."""
    limits = document.get("rate_limits")
    if isinstance(limits, dict) and "consumers" in limits:
        limits = {k: v for k, v in limits.items() if k != "consumers"}
        limits["consumers_hidden"] = "per-consumer figures: the admin listener, or an admin key"
        document = {**document, "rate_limits": limits}
    return document


def mount_swagger_ui(app: FastAPI) -> None:
    """`/docs`: Swagger UI 5 (OpenAPI 3.1) served from the fastapi-offline package's copy, so the
    page works on a machine without internet (FastAPI's default loads it from a CDN)."""
    from importlib import resources

    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.staticfiles import StaticFiles

    assets = str(resources.files("fastapi_offline").joinpath("static"))
    app.mount(DOCS_ASSETS, StaticFiles(directory=assets), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> Response:
        return get_swagger_ui_html(
            openapi_url="/openapi.json", title="pygateway: API docs",
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS}/favicon.png",
        )


def create_control_app(gateway: Gateway) -> FastAPI:
    app = FastAPI(
        title="pygateway",
        version=__version__,
        description=(
            "API gateway control plane. Requests under the routed prefixes (see `GET /`) are "
            "proxied to the backend services through identity, rate limiting, caching and "
            "circuit breaking."
        ),
        # Our own /docs below: Swagger UI from a packaged copy, not a CDN (works offline).
        docs_url=None,
        redoc_url=None,
    )
    app.state.gateway = gateway
    mount_swagger_ui(app)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404:
            return problem_response(404, f"no route for {request.url.path}", request)
        return problem_response(exc.status_code, str(exc.detail), request)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
        errors = [
            {"field": ".".join(str(p) for p in e["loc"][1:]) or e["loc"][0], "message": e["msg"]}
            for e in exc.errors()
        ]
        return problem_response(422, "the request is not valid", request, errors=errors)

    @app.get("/", summary="Gateway information: version, routes and services")
    async def root() -> dict[str, Any]:
        gw: Gateway = app.state.gateway
        return {
            "name": "pygateway",
            "version": gw.version,
            "replica": gw.replica_id,
            "routes": {
                r.prefix: {
                    "service": r.service,
                    "methods": sorted(r.methods) if r.methods else "any",
                    "strip_prefix": r.settings.strip_prefix,
                    "cache": r.settings.cache.enabled and gw.config.cache.enabled,
                }
                for r in gw.routes.routes
            },
            "services": {
                name: {"upstreams": s.upstreams, "timeout": s.timeout, "health_path": s.health_path}
                for name, s in gw.config.services.items()
            },
            "docs": "/docs",
        }

    @app.get("/health", summary="Liveness, store status and each service's health")
    async def health() -> dict[str, Any]:
        gw: Gateway = app.state.gateway
        services = gw.health.snapshot()
        breaker = gw.policies.get("circuit_breaker")
        if breaker is not None and hasattr(breaker, "metrics"):
            try:
                states = await breaker.metrics()
                for name, info in (states.get("services") or {}).items():
                    if name in services:
                        services[name]["circuit_breaker"] = info
            except Exception:  # the breaker's own fallback state is reported in /metrics
                pass
        statuses = {s["status"] for s in services.values()}
        store = gw.store
        return {
            "status": "healthy" if statuses <= {"healthy"} else "degraded",
            "version": gw.version,
            "replica": gw.replica_id,
            "store": {
                "kind": "embedded" if store is None or store.embedded else "redis",
                "description": store.description if store else None,
                "available": bool(store and store.available),
            },
            "services": services,
        }

    @app.get("/ready", summary="Readiness: 503 until config and store are ready, and while draining",
             responses={503: {"description": "not ready"}})
    async def ready(request: Request) -> Response:
        gw: Gateway = app.state.gateway
        if not gw.ready or gw.draining:
            reason = "draining" if gw.draining else "starting"
            return problem_response(503, f"gateway is {reason}", request)
        return JSONResponse({"status": "ready", "replica": gw.replica_id})

    @app.get(
        "/metrics",
        summary="Request statistics (cluster-wide JSON) or Prometheus exposition",
        description=(
            "JSON by default: the live replicas' statistics summed, with a per-replica breakdown "
            "(`scope=replica`: this replica only). Prometheus text when the client accepts "
            "`text/plain`, OpenMetrics for `application/openmetrics-text`, or `format=prometheus` "
            "/ `format=openmetrics`."
        ),
        responses={200: {"content": {"application/json": {}, "text/plain": {},
                                     "application/openmetrics-text": {}}}},
    )
    async def metrics(request: Request, format: str | None = None,
                      scope: Literal["cluster", "replica"] = "cluster") -> Response:
        gw: Gateway = app.state.gateway
        if format is not None and format.lower() not in FORMATS:
            return problem_response(400, f"unknown format {format!r}: use one of {', '.join(FORMATS)}", request)
        flavour = wants_prometheus(request.headers.get("accept", ""), format)
        if flavour is not None:
            body, content_type = await render(gw, flavour)
            return Response(body, media_type=content_type)
        document = await metrics_document(gw, scope)
        caller = admin_caller(gw, request.headers.raw) if request.scope.get("gateway_public") else None
        if request.scope.get("gateway_public") and not (caller is not None and caller.admin):
            document = without_consumers(document)
        return Response(json.dumps(document), media_type="application/json")

    mount_dashboard(app)

    from gateway.cache.admin import router as cache_admin
    from gateway.identity.admin import router as consumers_admin

    app.include_router(cache_admin)
    app.include_router(consumers_admin)
    _describe_proxied_routes(app, gateway)
    return app


def _describe_proxied_routes(app: FastAPI, gw: Gateway) -> None:
    """Add the routed prefixes to /openapi.json (they are served by the hot path, not FastAPI)."""
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = original()
        for route in gw.routes.routes:
            methods = sorted(route.methods) if route.methods else [
                "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
            op = {
                "tags": ["proxied"],
                "summary": f"Proxied to service '{route.service}'",
                "description": (
                    f"Forwarded to `{route.service}` "
                    f"({', '.join(gw.config.services[route.service].upstreams)}), path "
                    f"{'without' if route.settings.strip_prefix else 'with'} the prefix, after "
                    "identity, rate limiting, caching and circuit breaking."
                ),
                "responses": {
                    "200": {"description": "The upstream's response"},
                    "429": {"description": "Rate limited", "content": {PROBLEM: {}}},
                    "502": {"description": "Upstream refused or reset", "content": {PROBLEM: {}}},
                    "503": {"description": "Circuit open", "content": {PROBLEM: {}}},
                    "504": {"description": "Upstream timeout", "content": {PROBLEM: {}}},
                },
            }
            path_ops: dict[str, dict[str, Any]] = {
                m.lower(): {**op, "operationId": f"proxy_{m.lower()}_{route.service}_{i}"}
                for i, m in enumerate(methods)}
            schema.setdefault("paths", {})[route.prefix] = path_ops
            sub = {m: {**o, "operationId": str(o["operationId"]) + "_sub",
                       "parameters": [{"name": "path", "in": "path", "required": True,
                                       "schema": {"type": "string"}}]}
                   for m, o in path_ops.items()}
            schema["paths"][route.prefix.rstrip("/") + "/{path}"] = sub
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
