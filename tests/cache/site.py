"""A real gateway (cache on, the embedded store) in front of an origin that reflects what it is
told beside the URL, as link-building origins do: the host, rewrite and override fields, a
cookie. Driven from synchronous tests on its own event loop (`site` fixture in conftest.py)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
from aiohttp import web

from tests.support.inproc import running_gateway, start_app

PUBLIC = "gw.public.test"  # the Host every ordinary client sends
REFLECTED = ("host", "x-forwarded-host", "x-forwarded-prefix", "x-forwarded-port",
             "x-forwarded-scheme", "x-forwarded-server", "x-original-url", "x-rewrite-url",
             "x-original-uri", "x-http-method-override", "x-method-override", "x-http-method",
             "cookie", "x-forwarded-proto", "forwarded")


HITS: dict[str, int] = {}  # origin requests per path


async def reflect(request: web.Request) -> web.Response:
    """Every field of REFLECTED it was told, the method, the body and how many times it was asked
    for this path, as JSON. Programmable by the query: no Cache-Control (the gateway's default
    freshness applies) unless `?public`; an ETag with `?etag`; `h=Name:Value` adds a response
    field (repeatable), `status=NNN` sets the status."""
    HITS[request.path] = HITS.get(request.path, 0) + 1
    seen = {name: request.headers.get(name) for name in REFLECTED}
    body = json.dumps({"method": request.method, "seen": seen, "body": (await request.read()).decode(),
                       "hits": HITS[request.path], "accept_encoding": request.headers.get("accept-encoding")})
    headers = {"Cache-Control": "public, max-age=60"} if "public" in request.query else {}
    if "etag" in request.query:
        headers["ETag"] = '"v1"'
    for field in request.query.getall("h", []):
        name, _, value = field.partition(":")
        headers[name.strip()] = value.strip()
    status = int(request.query.get("status", "200"))
    return web.Response(text=body, content_type="application/json", headers=headers, status=status)


class Site:
    def __init__(self, loop: asyncio.AbstractEventLoop, url: str) -> None:
        self.loop, self.url = loop, url

    def send(self, method: str, path: str, headers: dict[str, str] | None = None,
             content: bytes | None = None) -> httpx.Response:
        """One request (Host: PUBLIC unless `headers` says otherwise) on the site's loop."""
        async def go() -> httpx.Response:
            async with httpx.AsyncClient(timeout=10) as client:
                return await client.request(method, self.url + path, content=content,
                                            headers={"host": PUBLIC, **(headers or {})})
        return self.loop.run_until_complete(go())


def fresh(query: str = "") -> str:
    """A path no other test used (so no entry is shared between tests)."""
    return f"/api/pages/{uuid.uuid4().hex}" + (f"?{query}" if query else "")


def reflecting_site() -> Iterator[Site]:
    loop = asyncio.new_event_loop()
    app = web.Application()
    app.router.add_route("*", "/api/pages/{tail:.*}", reflect)
    app.router.add_route("*", "/api/any/{tail:.*}", reflect)
    runner, url = loop.run_until_complete(start_app(app))
    config: dict[str, Any] = {
        "services": {"pages": {"url": url, "timeout": 5}},
        "routes": {"/api/pages": {"service": "pages", "methods": ["GET", "HEAD", "POST"]},
                   "/api/any": {"service": "pages"}},
        "cache": {"heuristic": {"fraction": 0.1, "max": 3600}, "targeted_field": "Gateway-Cache-Control"},
        "rate_limit": {"enabled": False}, "circuit_breaker": {"enabled": False},
        "logging": {"level": "WARNING"},
    }
    gateway = running_gateway(config)
    served = loop.run_until_complete(gateway.__aenter__())
    try:
        yield Site(loop, served.url)
    finally:
        loop.run_until_complete(gateway.__aexit__(None, None, None))
        loop.run_until_complete(runner.cleanup())
        loop.close()
