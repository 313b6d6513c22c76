"""Latency of the gateway's answers while a service's circuit breaker is open (target: p99 < 5 ms).

Run:  .venv/bin/python bench/breaker_open.py [--duration 5] [--connections 1 32 64]
                                             [--write /work/notes/breaker.md]

What it starts (127.0.0.1, ephemeral ports, stopped by PID on exit):

* redis-server `--save "" --appendonly no`, on core 0 with wrk;
* one gateway process (`gateway run --workers 1`) on core 1, rate limit and cache off, routing
  `/api/down` to a port nobody listens on.

It trips the breaker with three requests (connect errors), checks that the answer is now the
503 with `X-Circuit-State: open`, then points wrk at it: every answer is an immediate 503
(one Redis round trip for the state, no upstream attempt). Then it kills redis-server and
measures again: the replica answers from its local breaker, seeded from the shared state.

Last, the policy alone, in this process (`PolicyChain` on the same redis-server, no HTTP):
how long the breaker's own decision takes, the part of an answer this package owns.

The gateway must have the breaker in its chain (gateway/composition.py); the script says so if not.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

from gateway.localcluster import free_port, terminate  # one port picker, one stop, for all

ROOT = Path(__file__).resolve().parent.parent
PATH = "/api/down/items"


def get(url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def wait_until(check, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{what} not ready within {timeout}s")


def pinned(core: int, argv: list[str]) -> list[str]:
    return ["taskset", "-c", str(core), *argv] if (os.cpu_count() or 1) > 1 else argv


def _answers(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), 0.2):
        return True


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (survives a busy machine better than latency)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def gateway_buckets(base: str) -> dict[float, float]:
    """The gateway's own histogram of whole-request time for the route: upper bound (s) -> count."""
    _, _, body = get(base + "/metrics?format=prometheus")
    out: dict[float, float] = {}
    for line in body.decode().splitlines():
        if line.startswith("gateway_request_duration_seconds_bucket{") and 'route="/api/down"' in line:
            le = re.search(r'le="([^"]+)"', line)
            if le:
                bound = float("inf") if le.group(1) == "+Inf" else float(le.group(1))
                out[bound] = out.get(bound, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


def gateway_p99(before: dict[float, float], after: dict[float, float]) -> tuple[float, float]:
    """(the bucket bound holding the 99th percentile, in ms; the share at or under 5 ms) of the
    answers between two readings: what the gateway measured itself, from first byte in to last out."""
    delta = {b: after.get(b, 0.0) - before.get(b, 0.0) for b in after}
    total = delta.get(float("inf"), 0.0)
    if not total:
        return float("nan"), float("nan")
    bound = next((b for b in sorted(delta) if delta[b] >= 0.99 * total), float("inf"))
    return bound * 1000, delta.get(0.005, 0.0) / total


def wrk(url: str, connections: int, duration: float, pid: int, base: str) -> dict[str, float]:
    """wrk's latency percentiles (ms), request rate, the gateway's CPU per answer (us) and the
    gateway's own p99 (its histogram's bucket, ms)."""
    cpu_before = cpu_seconds(pid)
    buckets_before = gateway_buckets(base)
    run = subprocess.run(
        pinned(0, ["wrk", "-t1", f"-c{connections}", f"-d{duration:g}s", "--latency", url]),
        capture_output=True, text=True, timeout=duration + 30,
    )
    out = run.stdout
    if run.returncode != 0 or "Requests/sec" not in out:
        raise RuntimeError(f"wrk failed: {run.stderr or out}")
    units = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    result: dict[str, float] = {}
    for pct in ("50", "90", "99"):
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        result[f"p{pct}"] = float(m.group(1)) * units[m.group(2)] if m else float("nan")
    m = re.search(r"Latency\s+[\d.]+\w+\s+[\d.]+\w+\s+([\d.]+)(us|ms|s)", out)
    result["max"] = float(m.group(1)) * units[m.group(2)] if m else float("nan")
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    result["rps"] = float(m.group(1)) if m else float("nan")
    m = re.search(r"(\d+) requests in", out)
    total = int(m.group(1)) if m else 0
    result["cpu_us"] = (cpu_seconds(pid) - cpu_before) / total * 1e6 if total else float("nan")
    result["gw_p99"], result["gw_under_5ms"] = gateway_p99(buckets_before, gateway_buckets(base))
    return result


async def in_process(config: dict, n: int = 20000) -> dict[str, float]:  # type: ignore[type-arg]
    """Latency (ms) of the policy chain's answer while open, without HTTP around it."""
    from gateway.breaker import CircuitBreakerPolicy
    from gateway.config import parse_config
    from gateway.context import RequestContext, Response
    from gateway.policy import PolicyChain
    from gateway.routing import RouteTable
    from gateway.store import redis_store

    cfg = parse_config(config)
    store = redis_store(cfg.redis.url or "", timeout=1.0)
    policy = CircuitBreakerPolicy.from_config(cfg, store)

    async def upstream(ctx: RequestContext) -> Response:
        raise AssertionError("the breaker is open: no upstream call")

    chain = PolicyChain([policy], upstream, store)
    route = RouteTable.from_config(cfg).match(PATH)
    assert route is not None

    took = []
    for _ in range(n):
        ctx = RequestContext(request_id="bench", method="GET",
                             path=PATH, raw_path=PATH.encode(), query_string=b"", headers=[],
                             client_ip="127.0.0.1", scheme="http", route=route)
        t = time.perf_counter()
        response = await chain(ctx)
        took.append(time.perf_counter() - t)
        assert response.status == 503
    await store.close()
    took.sort()
    return {f"p{q}": took[int(len(took) * q / 100) - 1] * 1000 for q in (50, 90, 99)} | {
        "max": took[-1] * 1000}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 32, 64])
    parser.add_argument("--write", type=Path, help="append the results (markdown) to this file")
    args = parser.parse_args()

    procs: list[subprocess.Popen[bytes]] = []
    tmp = Path(tempfile.mkdtemp(prefix="gw-bench-breaker-"))
    try:
        redis_port, gw_port = free_port(), free_port()
        redis = subprocess.Popen(
            pinned(0, ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1",
                       "--save", "", "--appendonly", "no", "--dir", str(tmp)]),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(redis)
        wait_until(lambda: _answers(redis_port), 10, "redis-server")
        config = {
            "services": {"down": {"url": f"http://127.0.0.1:{free_port()}", "timeout": 2,
                                  "connect_timeout": 0.5, "health_interval": 60}},
            "routes": {"/api/down": "down"},
            "redis": {"url": f"redis://127.0.0.1:{redis_port}/0"},
            "circuit_breaker": {"failure_threshold": 3, "timeout": 3600},
            "rate_limit": {"enabled": False},
            "cache": {"enabled": False},
            "logging": {"level": "WARNING"},
        }
        config_path = tmp / "gateway.yaml"
        config_path.write_text(yaml.safe_dump(config))
        log = open(tmp / "gateway.log", "wb")  # noqa: SIM115 - lives as long as the process
        gateway = subprocess.Popen(
            pinned(1, [sys.executable, "-m", "gateway.cli", "run", "--config", str(config_path),
                       "--host", "127.0.0.1", "--port", str(gw_port), "--workers", "1", "--admin", "off"]),
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        procs.append(gateway)
        base = f"http://127.0.0.1:{gw_port}"
        wait_until(lambda: get(base + "/ready")[0] == 200, 30, "gateway")
        metrics = json.loads(get(base + "/metrics")[2])
        if not metrics.get("circuit_breakers"):
            print("the circuit breaker is not in the gateway's chain (gateway/composition.py)")
            return 2

        trips = [get(base + PATH)[0] for _ in range(3)]
        time.sleep(0.2)  # outcomes are recorded after the response
        status, headers, _ = get(base + PATH)
        state = {k.lower(): v for k, v in headers.items()}.get("x-circuit-state")
        print(f"tripped with {trips}; now {status}, X-Circuit-State: {state}")
        assert status == 503 and state == "open", "the breaker did not open"

        load_before = f"{os.getloadavg()[0]:.2f}"
        inproc = asyncio.run(in_process(config))
        print("in process", inproc)
        rows: list[tuple[str, int, dict[str, float]]] = []
        for c in args.connections:
            rows.append(("open, Redis up (shared state)", c, wrk(base + PATH, c, args.duration, gateway.pid, base)))
            print(rows[-1])
        redis.send_signal(signal.SIGKILL)
        redis.wait(5)
        get(base + PATH)  # the first failure marks the store down
        status, headers, _ = get(base + PATH)
        assert status == 503, f"expected the local breaker's 503, got {status}"
        for c in args.connections:
            rows.append(("open, Redis down (local breaker)", c, wrk(base + PATH, c, args.duration, gateway.pid, base)))
            print(rows[-1])

        lines = [
            f"### breaker_open.py, {dt.datetime.now().isoformat(timespec='minutes')}",
            "",
            f"{os.cpu_count()} cores (gateway on core 1; wrk and redis-server on core 0), "
            f"1 gateway worker, wrk -t1 -d{args.duration:g}s, every answer a 503.",
            "",
            f"Load average before the runs: {load_before}, after: {os.getloadavg()[0]:.2f}.",
            "",
            "Client side (wrk) and the gateway's own view (its request-time histogram: the bucket",
            "that holds the 99th percentile, and the share of answers within 5 ms).",
            "",
            "| scenario | connections | p50 ms | p90 ms | p99 ms | max ms | req/s | gateway CPU us/answer "
            "| gateway p99 ≤ ms | gateway ≤ 5 ms |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for name, c, r in rows:
            lines.append(f"| {name} | {c} | {r['p50']:.2f} | {r['p90']:.2f} | {r['p99']:.2f} | "
                         f"{r['max']:.2f} | {r['rps']:,.0f} | {r['cpu_us']:.0f} | {r['gw_p99']:g} | "
                         f"{r['gw_under_5ms']:.2%} |")
        lines += [
            "",
            "The breaker's own decision while open (PolicyChain in-process, same redis-server, "
            f"20,000 sequential requests): p50 {inproc['p50']:.3f} ms, p90 {inproc['p90']:.3f} ms, "
            f"p99 {inproc['p99']:.3f} ms, max {inproc['max']:.3f} ms.",
        ]
        text = "\n".join(lines) + "\n"
        print(text)
        if args.write:
            with args.write.open("a") as f:
                f.write("\n" + text)
        return 0
    finally:
        for proc in reversed(procs):
            terminate(proc, timeout=10)


if __name__ == "__main__":
    sys.exit(main())
