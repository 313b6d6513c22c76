"""The architecture's floor: a bare raw-ASGI + aiohttp proxy, served like the gateway.

Nothing but the upstream call: no routing table, no checks, no X-Forwarded-*, no access log.
The benchmark runs it side by side with the gateway (scenario `raw-asgi`) so the gateway's own
overhead can be read off on any machine: gateway / raw-asgi is what the features cost, and
raw-asgi / nginx is what Python + uvicorn + aiohttp cost (DESIGN.md measured 0.39x).

With `--static` it answers every request itself with a constant small JSON body, no upstream
call (scenario `asgi-static`): the ceiling of anything a raw-ASGI process under uvicorn can
serve on the machine, e.g. a cache hit.

Run:  .venv/bin/python bench/reference_proxy.py --upstream http://127.0.0.1:8001 --port 8100
"""

from __future__ import annotations

import argparse
from typing import Any

import aiohttp
import uvicorn

STATIC_BODY = b'{"id":1,"name":"bench","ok":true}\n'
_HOP = {b"connection", b"keep-alive", b"transfer-encoding", b"host", b"content-length"}


class ReferenceProxy:
    """Forwards every request to one upstream over a keep-alive aiohttp session."""

    def __init__(self, upstream: str, static: bool = False) -> None:
        self.upstream = upstream.rstrip("/")
        self.session: aiohttp.ClientSession | None = None
        self.static = [(b"content-type", b"application/json"), (b"cache-control", b"no-store"),
                       (b"content-length", str(len(STATIC_BODY)).encode())] if static else None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    self.session = aiohttp.ClientSession(
                        connector=aiohttp.TCPConnector(limit=256), auto_decompress=False,
                        skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept"))
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    if self.session is not None:
                        await self.session.close()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        assert self.session is not None
        if self.static is not None:
            while (await receive()).get("more_body", False):
                pass
            await send({"type": "http.response.start", "status": 200, "headers": self.static})
            await send({"type": "http.response.body", "body": STATIC_BODY})
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        path = scope.get("raw_path") or scope["path"].encode()
        if scope["query_string"]:
            path += b"?" + scope["query_string"]
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"] if k not in _HOP]
        async with self.session.request(scope["method"], self.upstream + path.decode("latin-1"),
                                        headers=headers, data=body or None,
                                        allow_redirects=False) as resp:
            payload = await resp.read()
            out = [(k, v) for k, v in resp.raw_headers if k.lower() not in _HOP]
            out.append((b"content-length", str(len(payload)).encode()))
            await send({"type": "http.response.start", "status": resp.status, "headers": out})
            await send({"type": "http.response.body", "body": payload})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--upstream", required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8100)
    p.add_argument("--static", action="store_true", help="answer a constant, no upstream call")
    args = p.parse_args()
    uvicorn.run(ReferenceProxy(args.upstream, args.static), host=args.host, port=args.port, lifespan="on",
                access_log=False, server_header=False, date_header=False, http="httptools",
                loop="uvloop", log_level="warning")


if __name__ == "__main__":
    main()
