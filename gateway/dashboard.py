"""/dashboard: a live page drawn by a small hand-written script, served by the gateway itself.

No build step and no CDN: the page (gateway/static/dashboard.html), its script and stylesheet
ship in the package and work offline. The script polls the JSON /metrics every two seconds and
draws on canvas: requests per second, latency p50/p99, 429s, cache hit ratio, breaker state per
service and one row per replica.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response

from gateway.control_problem import problem_response

STATIC = Path(__file__).with_name("static")
ASSETS = {
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
}
# The page loads nothing from elsewhere; the policy says so to the browser too.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
       "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


def _read(name: str) -> bytes:
    return (STATIC / name).read_bytes()


def mount_dashboard(app: FastAPI) -> None:
    @app.get("/dashboard", summary="Live dashboard (HTML)", response_class=Response,
             responses={200: {"content": {"text/html": {}}}})
    async def dashboard() -> Response:
        return Response(_read("dashboard.html"), media_type="text/html; charset=utf-8",
                        headers={"content-security-policy": CSP, "cache-control": "no-cache"})

    @app.get("/dashboard/", include_in_schema=False)
    async def dashboard_slash() -> Response:
        return RedirectResponse("/dashboard", status_code=308)

    @app.get("/dashboard/static/{name}", summary="Dashboard assets", include_in_schema=False)
    async def asset(name: str, request: Request) -> Response:
        media_type = ASSETS.get(name)
        if media_type is None:
            return problem_response(404, f"no dashboard asset {name!r}", request)
        return Response(_read(name), media_type=media_type, headers={"cache-control": "no-cache"})
