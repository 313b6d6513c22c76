"""How the gateway's Redis work spreads over a Redis Cluster: commands per shard, per scenario.

Run:  .venv/bin/python bench/cluster_spread.py [--consumers 1000] [--requests 20000]

Starts a local 3-master Redis Cluster (cluster-enabled redis-servers on ephemeral ports, stopped
at the end) and drives the real policy chain (identity, rate limiting, cache, breaker; the
upstream stubbed) in-process through the Cluster store, then reads each master's own counters
(`CONFIG RESETSTAT` before, `INFO commandstats` after). Scenarios:

    spread     `--consumers` API-key consumers, each asking for its own URL (cache misses,
               uncacheable): the keys of rate limiting and the cache spread over the shards
    hot-url    the same consumers all asking for one cacheable URL (hits): the URL's entry
               lives on one shard
    one-client one consumer asking for the same URLs as `spread`: its rate-limit windows live on
               one shard

Prints a Markdown table: commands (including those the scripts call, and the work after the
response and in the background) and script calls (EVALSHA) per request on each master, and the
share of the busiest one.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.composition import build  # noqa: E402
from gateway.config import parse_config  # noqa: E402
from gateway.context import RequestContext, Response, UpstreamOutcome  # noqa: E402
from gateway.policy import PolicyChain  # noqa: E402
from gateway.routing import RouteTable  # noqa: E402
from gateway.topology import make_store  # noqa: E402
from tests.support.chain import read_body  # noqa: E402
from tests.support.cluster import RedisCluster  # noqa: E402

BODY = b'{"id":1,"name":"bench","ok":true}\n'


def config(url: str, consumers: int) -> Any:
    return parse_config({
        "services": {"bench": {"url": "http://127.0.0.1:9"}},
        "routes": {"/api/bench": "bench"},
        "rate_limits": {"default": 10**9, "premium": 10**9, "anonymous": 10**9},
        "auth": {"consumers": [
            {"id": f"c{i}", "tier": "premium", "key_sha256": hashlib.sha256(f"key-{i}".encode()).hexdigest()}
            for i in range(consumers)]},
        "redis": {"url": url, "timeout": 2.0},
    })


async def terminal(ctx: RequestContext) -> Response:
    ctx.upstream = UpstreamOutcome(status=200, target="http://127.0.0.1:9", duration=0.0001)
    cacheable = ctx.path.endswith("/cached")
    return Response(200, [(b"content-type", b"application/json"),
                          (b"cache-control", b"public, max-age=600" if cacheable else b"no-store"),
                          (b"content-length", b"%d" % len(BODY))], BODY)


def context(cfg: Any, routes: RouteTable, path: str, key: str) -> RequestContext:
    headers = [(b"host", b"gw.bench"), (b"x-api-key", key.encode())]
    route = routes.match(path)
    assert route is not None
    return RequestContext(client_headers=list(headers), request_id="r", method="GET", path=path,
                          raw_path=path.encode(), query_string=b"", headers=list(headers),
                          client_ip="127.0.0.1", scheme="http", route=route)


def counters(node: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in node.command("INFO", "commandstats").splitlines():
        if line.startswith("cmdstat_"):
            name, _, rest = line[len("cmdstat_"):].partition(":")
            calls = int(rest.split(",")[0].split("=")[1])
            out[name] = calls
    return out


async def scenario(cluster: RedisCluster, name: str, consumers: int, requests: int) -> list[str]:
    cfg = config(cluster.url, consumers)
    store = make_store(cfg.redis)
    composition = build(cfg, store, None)
    for policy in composition.policies:
        start = getattr(policy, "start", None)
        if start is not None:
            await start()
    await asyncio.sleep(0.5)  # the breaker board subscribes and syncs
    chain = PolicyChain(composition.policies, terminal, store)
    routes = RouteTable.from_config(cfg)

    def request(i: int) -> tuple[str, str]:
        if name == "spread":
            return f"/api/bench/item/{i % consumers}", f"key-{i % consumers}"
        if name == "hot-url":
            return "/api/bench/cached", f"key-{i % consumers}"
        return f"/api/bench/item/{i % consumers}", "key-0"

    async def one(i: int) -> None:
        path, key = request(i)
        ctx = context(cfg, routes, path, key)
        response = await chain(ctx)
        await read_body(ctx, response)
        await chain.after(ctx, response)

    for i in range(200):  # warm-up: fills the hot entry, loads the scripts on every shard
        await one(i)
    for policy in composition.policies:
        flush = getattr(policy, "flush", None)
        if flush is not None:
            await flush()
    for node in cluster.nodes:
        node.command("CONFIG", "RESETSTAT")
    started = time.perf_counter()
    for start in range(0, requests, 32):
        await asyncio.gather(*(one(i) for i in range(start, min(start + 32, requests))))
    took = time.perf_counter() - started
    for policy in composition.policies:
        flush = getattr(policy, "flush", None)
        if flush is not None:
            await flush()
    await asyncio.sleep(0.1)
    rows = []
    per_node = [counters(node) for node in cluster.nodes]
    totals = [sum(c.values()) for c in per_node]
    top = [c.get("evalsha", 0) for c in per_node]
    grand = sum(totals) or 1
    for i, (total, calls) in enumerate(zip(totals, top, strict=True)):
        rows.append(f"| {name} | {i + 1} | {total / requests:.2f} | {calls / requests:.2f} | "
                    f"{100 * total / grand:.0f}% |")
    rows.append(f"| {name} | all | {grand / requests:.2f} | {sum(top) / requests:.2f} | "
                f"busiest {100 * max(totals) / grand:.0f}% ({requests / took:,.0f} req/s in-process) |")
    for policy in reversed(composition.policies):
        close = getattr(policy, "close", None)
        if close is not None:
            await close()
    await store.close()
    return rows


async def run(args: argparse.Namespace) -> None:
    cluster = RedisCluster(3)
    try:
        print("| scenario | master | commands/req | script calls/req | share of commands |")
        print("|---|---|---:|---:|---:|")
        for name in args.scenarios:
            for row in await scenario(cluster, name, args.consumers, args.requests):
                print(row)
    finally:
        cluster.stop()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--consumers", type=int, default=1000)
    p.add_argument("--requests", type=int, default=20000)
    p.add_argument("--scenarios", nargs="+", default=["spread", "hot-url", "one-client"])
    asyncio.run(run(p.parse_args()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
