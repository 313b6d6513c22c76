"""The engine's floor: the gateway's own HTTP/1.1 engine as a bare proxy, served on uvloop.

Nothing but the engine: `gateway.engine.server.Server` parses the request, one
`gateway.engine.client.TargetPool` (keep-alive) and `send()` forward it to one upstream, and
the response goes back (small bodies read whole with `read_whole`, others streamed). The head
upstream is the method, the target and the client's headers minus hop-by-hop, with Host set
to the upstream's; nothing is added either way. No routing table, no checks, no X-Forwarded-*,
no request id, no access log. The benchmark runs it beside the gateway (scenario `engine`):
gateway / engine is what the gateway's features cost, engine / nginx what Python and the
engine cost.

Like the gateway, an idempotent request without a body whose reused keep-alive connection
turned out closed goes once more on a new connection; any other upstream failure is a 502.

Run:  .venv/bin/python bench/engine_proxy.py --upstream http://127.0.0.1:8001 --port 8100
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from urllib.parse import urlsplit

import uvloop

from gateway.engine.client import TargetPool, UpstreamError, send
from gateway.engine.server import Request, Server
from gateway.engine.wire import end_to_end
from gateway.serve import tune_gc

SMALL_BODY = 64 * 1024  # read whole up to this many bytes, as gateway/upstream.py does
STALL = 30.0  # seconds for the response head and for every gap in a body
CONNECT = 5.0
_NOT_FORWARDED = frozenset({b"host", b"expect"})  # Host is the upstream's; the engine answers Expect
_RETRY = frozenset({"GET", "HEAD", "OPTIONS", "DELETE", "TRACE"})
_TEXT = [(b"content-type", b"text/plain")]


class EngineProxy:
    """Forwards every request to one upstream over one keep-alive pool."""

    def __init__(self, pool: TargetPool, host_header: bytes) -> None:
        self.pool = pool
        self.host_header = host_header

    def head(self, request: Request) -> bytes:
        target = request.target
        if target[:1] != b"/" and target != b"*":  # absolute-form: forward its path and query
            target = request.path + (b"?" + request.query if request.query else b"")
        parts = [request.method.encode("ascii"), b" ", target, b" HTTP/1.1\r\nhost: ",
                 self.host_header, b"\r\n"]
        for name, value in end_to_end(request.headers):
            if name not in _NOT_FORWARDED:
                parts += (name, b": ", value, b"\r\n")
        if request.chunked:
            parts.append(b"transfer-encoding: chunked\r\n")
        parts.append(b"\r\n")
        return b"".join(parts)

    async def __call__(self, request: Request) -> None:
        conn = request.conn
        head, body, head_only = self.head(request), request.body, request.method == "HEAD"
        try:
            try:
                ex = await send(self.pool, head, body, chunked=request.chunked, head_only=head_only,
                                stall=STALL, connect_timeout=CONNECT, small_body=SMALL_BODY)
            except UpstreamError as exc:
                if not exc.retryable or body is not None or request.method not in _RETRY:
                    raise
                ex = await send(self.pool, head, None, chunked=False, head_only=head_only, stall=STALL,
                                connect_timeout=CONNECT, small_body=SMALL_BODY, fresh=True)
            headers = ex.headers  # the end-to-end fields (the engine left out the hop-by-hop ones)
            if ex.reads_whole:
                data = ex.body  # usually there already: no coroutine to wait for it
                conn.respond(ex.status, headers, data if data is not None else await ex.read_whole())
                return
        except UpstreamError as exc:
            conn.respond(502, _TEXT, f"upstream failed: {exc}\n".encode())
            return
        try:
            if ex.stream is None:  # HEAD, 204, 304 or an empty body
                conn.respond(ex.status, headers, ex.body or b"")
                return
            conn.start(ex.status, headers, ex.content_length)
            async for piece in ex.stream:  # an upstream failing mid-body: the engine cuts the client
                await conn.write(piece)
            conn.end()
        finally:
            ex.release()


async def serve(upstream: str, host: str, port: int) -> None:
    url = urlsplit(upstream)
    if url.scheme != "http" or not url.hostname:
        raise SystemExit(f"engine_proxy: --upstream must be an http:// URL, not {upstream!r}")
    upstream_port = url.port or 80
    shown = f"[{url.hostname}]" if ":" in url.hostname else url.hostname
    host_header = shown if upstream_port == 80 else f"{shown}:{upstream_port}"
    pool = TargetPool(url.hostname, upstream_port, tls=None, limit=256, wait_timeout=5.0)
    server = Server(EngineProxy(pool, host_header.encode("idna")))
    tune_gc()  # as `gateway run` does
    await server.listen(host=host, port=port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.shutdown(2.0)
    pool.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--upstream", required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8100)
    args = p.parse_args()
    uvloop.run(serve(args.upstream, args.host, args.port))


if __name__ == "__main__":
    main()
