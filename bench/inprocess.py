"""Where a request's CPU goes inside one gateway process: phases measured in-process.

Run:  .venv/bin/python bench/inprocess.py [--requests 20000] [--clients 32] [--repeat 3]
                                          [--upstream http://127.0.0.1:PORT] [--profile]

No sockets and no load generator: each simulated client owns one engine connection over an
in-memory transport, writes a keep-alive request into it and waits for the response; the
upstream is stubbed (a constant response returned by the terminal), so what is measured is the
gateway's own Python per request, phase by phase:

    engine      the engine answering a constant (parse, dispatch, write): the floor
    hotpath     + the hot path with no policies (checks, context, chain, response), no access log
    upstream    + the real upstream call (`--upstream URL`: an origin you run, e.g. nginx
                  `return 200`, on another core), still no access log
    plugin-noop     + a plugin doing nothing in each phase (what the plugin machinery costs)
    plugin-headers  + the `headers` plugin (two request edits, one response edit)
    accesslog   + the access log line
    ratelimit   + rate limiting (a real redis-server on an ephemeral port)
    all-miss    + cache and breaker, uncacheable response
    all-hit     + cache and breaker, cacheable response (served from the cache)

Each figure is process CPU time per request; it includes the simulated clients' own small cost
(parsing each response with llhttp), so read the steps between phases. `--profile` prints
cProfile's top functions for each phase.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import os
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.config import parse_config  # noqa: E402
from gateway.context import RequestContext, Response  # noqa: E402
from gateway.engine.server import Request, Server  # noqa: E402
from gateway.engine.testclient import MemoryTransport  # noqa: E402
from gateway.entry import GatewayApp  # noqa: E402
from gateway.localcluster import free_port, terminate  # noqa: E402
from gateway.serve import tune_gc  # noqa: E402

BODY = b'{"id":1,"name":"bench","ok":true}\n'
REQUEST = b"GET /api/bench/%s HTTP/1.1\r\nhost: gw.bench\r\nuser-agent: wrk\r\naccept: */*\r\n\r\n"


class Client:
    """One keep-alive connection: writes a request when the previous response is complete."""

    def __init__(self, server: Server, request: bytes, count: int, done: asyncio.Future[None]) -> None:
        from httptools import HttpResponseParser

        self.request = request
        self.left = count
        self.done = done
        self.parser = HttpResponseParser(self)
        self.conn = server.protocol()
        self.transport = MemoryTransport(self.conn, self.feed, self.closed)
        self.conn.connection_made(self.transport)
        self.status = 0

    def start(self) -> None:
        self.conn.data_received(self.request)

    def feed(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def closed(self) -> None:
        if not self.done.done():
            self.done.set_exception(RuntimeError("the engine closed a keep-alive connection"))

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()

    def on_message_complete(self) -> None:
        if self.status != 200:
            if not self.done.done():
                self.done.set_exception(RuntimeError(f"status {self.status}"))
            return
        self.left -= 1
        if self.left <= 0:
            if not self.done.done():
                self.done.set_result(None)
            return
        asyncio.get_running_loop().call_soon(self.conn.data_received, self.request)


async def drive(handler: Any, request: bytes, total: int, clients: int,
                profile: cProfile.Profile | None = None) -> float:
    """CPU seconds per request for `total` requests over `clients` connections."""
    server = Server(handler)
    loop = asyncio.get_running_loop()
    server.start_sweeping(loop)
    warm = [loop.create_future() for _ in range(clients)]
    for f in warm:
        Client(server, request, 20, f).start()
    await asyncio.gather(*warm)
    futures = [loop.create_future() for _ in range(clients)]
    workers = [Client(server, request, total // clients, f) for f in futures]
    if profile is not None:
        profile.enable()
    started = time.process_time()
    for w in workers:
        w.start()
    await asyncio.gather(*futures)
    took = time.process_time() - started
    if profile is not None:
        profile.disable()
    return took / (total // clients * clients)


# Plugin phases: (name, the plugins' config entries), measured over `hotpath` (no access log).
PLUGIN_PHASES: dict[str, list[dict[str, Any]]] = {
    "plugin-noop": [{"use": "noop_plugin:NoopPlugin"}],
    "plugin-headers": [{"use": "headers", "config": {
        "request": {"set": {"X-Consumer": "{consumer}"}, "remove": ["X-Debug"]},
        "response": {"set": {"Cache-Control": "no-store"}}}}],
}


def gateway_config(redis_url: str | None, policies: tuple[str, ...], access_log: bool,
                   upstream: str | None = None,
                   plugins: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    config: dict[str, Any] = {
        "services": {"bench": {"url": upstream or "http://127.0.0.1:9", "timeout": 10}},
        "routes": {"/api/bench": "bench"},
        "rate_limits": {"default": 10**9, "anonymous": 10**9, "premium": 10**9},
        "rate_limit": {"enabled": "rate_limit" in policies},
        "cache": {"enabled": "cache" in policies},
        "circuit_breaker": {"enabled": "circuit_breaker" in policies},
        "logging": {"access_log": access_log, "level": "INFO", "format": "json"},
        "plugins": plugins or [],
    }
    if redis_url:
        config["redis"] = {"url": redis_url}
    return config


async def stub_terminal(ctx: RequestContext) -> Response:
    from gateway.context import UpstreamOutcome

    ctx.upstream = UpstreamOutcome(status=200, target="http://127.0.0.1:9", duration=0.0001)
    cacheable = ctx.raw_path.endswith(b"/cached")
    return Response(200, [(b"content-type", b"application/json"),
                          (b"cache-control", b"public, max-age=600" if cacheable else b"no-store"),
                          (b"content-length", b"%d" % len(BODY))], BODY)


async def constant(request: Request) -> None:
    request.conn.respond(200, [(b"content-type", b"application/json")], BODY)


async def run(args: argparse.Namespace) -> list[tuple[str, float, str]]:
    results: list[tuple[str, float, str]] = []
    redis_url = args.redis

    async def measure(name: str, handler: Any, path: str = "nocache") -> None:
        prof = cProfile.Profile() if args.profile else None
        # The least of --repeat runs: noise on a shared machine only ever adds CPU time.
        per = min([await drive(handler, REQUEST % path.encode(), args.requests, args.clients, prof)
                   for _ in range(args.repeat)])
        text = ""
        if prof is not None:
            out = io.StringIO()
            pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(int(os.environ.get("PROFILE_TOP", "18")))
            text = out.getvalue()
        results.append((name, per, text))
        print(f"inprocess: {name:10s} {per * 1e6:7.1f} µs/req (CPU, whole process)", file=sys.stderr)

    if not args.phases or "engine" in args.phases:
        await measure("engine", constant)
    phases: list[tuple[str, tuple[str, ...], bool, str]] = [("hotpath", (), False, "nocache")]
    if args.upstream:
        phases.append(("upstream", (), False, "nocache"))
    phases += [(name, (), False, "nocache") for name in PLUGIN_PHASES]
    phases += [
        ("accesslog", (), True, "nocache"),
        ("ratelimit", ("rate_limit",), True, "nocache"),
        ("all-miss", ("rate_limit", "cache", "circuit_breaker"), True, "nocache"),
        ("all-hit", ("rate_limit", "cache", "circuit_breaker"), True, "cached"),
    ]
    if args.phases:
        phases = [p for p in phases if p[0] in args.phases]
    for name, policies, access_log, path in phases:
        real = name == "upstream"
        app = GatewayApp(parse_config(gateway_config(redis_url, policies, access_log,
                                                     args.upstream if real else None,
                                                     PLUGIN_PHASES.get(name))))
        devnull = open(os.devnull, "w")  # noqa: SIM115, ASYNC230 - closed below; /dev/null never blocks
        saved, sys.stderr = sys.stderr, devnull  # access-log lines go to stderr
        try:
            await app.start()
            tune_gc()  # as `gateway run` does after start-up
            assert app.gateway.hotpath is not None
            if not real:
                app.gateway.hotpath.chain.relink(stub_terminal)
            await measure(name, app, path)
        finally:
            await app.close()
            sys.stderr = saved
            devnull.close()
    return results


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=20000)
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--repeat", type=int, default=3, help="runs per phase; the least is shown")
    p.add_argument("--redis", help="a Redis URL (default: a redis-server started here)")
    p.add_argument("--upstream", help="an origin URL for the `upstream` phase (e.g. nginx return 200)")
    p.add_argument("--profile", action="store_true", help="cProfile each phase")
    p.add_argument("--phases", nargs="+", metavar="NAME",
                   help="a subset: engine hotpath upstream plugin-noop plugin-headers accesslog "
                        "ratelimit all-miss all-hit")
    args = p.parse_args()
    redis_proc = None
    tmp = tempfile.mkdtemp(prefix="gateway-inprocess-")
    if not args.redis:
        server = shutil.which("redis-server")
        if server is None:
            print("inprocess: redis-server not found; the policy phases use the embedded store",
                  file=sys.stderr)
        else:
            port = free_port()
            redis_proc = subprocess.Popen([server, "--port", str(port), "--bind", "127.0.0.1",
                                           "--save", "", "--appendonly", "no", "--dir", tmp],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            args.redis = f"redis://127.0.0.1:{port}/0"
            time.sleep(0.3)
    try:
        import uvloop

        results = uvloop.run(run(args))
    finally:
        if redis_proc is not None:
            terminate(redis_proc, 5)
        shutil.rmtree(tmp, ignore_errors=True)
    base = {"hotpath": "engine", "upstream": "hotpath", "accesslog": "hotpath",
            **{name: "hotpath" for name in PLUGIN_PHASES},
            "ratelimit": "accesslog", "all-miss": "ratelimit", "all-hit": "accesslog"}
    measured = {name: per for name, per, _ in results}
    print("| phase | µs/req (process CPU) | over | step |")
    print("|---|---:|---|---:|")
    for name, per, _ in results:
        over = base.get(name)
        step = f"{(per - measured[over]) * 1e6:+.1f}" if over in measured else ""
        print(f"| {name} | {per * 1e6:.1f} | {over or ''} | {step} |")
    for name, _, text in results:
        if text:
            print(f"\n### {name}\n\n```\n{text}\n```")
    return 0


if __name__ == "__main__":
    sys.exit(main())
