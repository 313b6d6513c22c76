"""Accuracy and Redis memory per key of the two rate-limit algorithms, on a real redis-server.

Starts its own redis-server on an ephemeral loopback port (stopped by PID at the end), then:

* memory: fills `limit` admitted requests into the windows of many consumers and reports
  `MEMORY USAGE` per key (the whole key: name, value, overhead);
* accuracy: floods one consumer (window 1 s, limit 100) and reports the most requests admitted
  in any rolling 1-second window, from the server's own clock (TIME right after each call, in the
  same pipeline), for a steady flood and for an adversarial burst at a bucket edge.

Usage: python bench/ratelimit_memory.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from gateway.ratelimit.windows import WindowSpec, script_args

LUA = Path(__file__).resolve().parent.parent / "lua" / "ratelimit.lua"
ALGORITHMS = ("sliding_log", "sliding_window")


def start_redis() -> tuple[subprocess.Popen[bytes], int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            tempfile.mkdtemp(prefix="gw-bench-"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, port
        except OSError:
            time.sleep(0.02)
    proc.kill()
    raise SystemExit("redis-server did not start")


async def memory_per_key(
    client: Any, script: Any, algorithm: str, limit: int, consumers: int
) -> float:
    spec = WindowSpec("m", "t", algorithm, limit, 3600)
    args = script_args([spec])
    keys = [spec.key("bench", f"c:{algorithm}-{limit}-{i}") for i in range(consumers)]
    for key in keys:
        for start in range(0, limit, 500):
            pipe = client.pipeline(transaction=False)
            for _ in range(start, min(limit, start + 500)):
                pipe.evalsha(script.sha, 1, key, *args)
            await pipe.execute()
    sizes = [await client.memory_usage(key, samples=0) for key in keys]
    return sum(sizes) / len(sizes)


async def flood(
    client: Any, script: Any, algorithm: str, *, limit: int, seconds: float, burst_at_edge: bool
) -> dict[str, Any]:
    spec = WindowSpec("a", "t", algorithm, limit, 1.0)
    key = spec.key("bench", f"c:acc-{algorithm}-{burst_at_edge}-{time.time()}")
    args = script_args([spec])
    if burst_at_edge:
        # Idle until 50 ms before a bucket boundary, then hammer: the weighted counter's worst case.
        sec, usec = await client.time()
        into = (sec * 1000 + usec // 1000) % 1000
        await asyncio.sleep(((950 - into) % 1000) / 1000)
    # Each admission happened (server clock) between the TIME just before and just after it.
    before: list[float] = []
    after: list[float] = []
    sent = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        pipe = client.pipeline(transaction=False)
        for _ in range(10):  # 10 requests per round trip, each between two TIMEs
            pipe.time()
            pipe.evalsha(script.sha, 1, key, *args)
            pipe.time()
        replies = await pipe.execute()
        sent += 10
        for i in range(0, len(replies), 3):
            if replies[i + 1][0] == 1:
                before.append(replies[i][0] + replies[i][1] / 1e6)
                after.append(replies[i + 2][0] + replies[i + 2][1] / 1e6)
    # Admissions certainly inside one window: j answered before i's start + 1 s.
    worst = steady = 0
    for i, start in enumerate(before):
        j = bisect.bisect_left(after, start + 1.0)
        if j < len(after) or after[-1] >= start + 1.0:
            worst = max(worst, j - i)
            if start >= before[0] + 2.0:  # past the start-up burst
                steady = max(steady, j - i)
    admitted = after
    return {
        "sent": sent,
        "admitted": len(admitted),
        "max_in_any_window": worst,
        "steady": steady,
        "ratio": worst / limit,
        "expected_total": limit * seconds,
    }


async def main(quick: bool) -> None:
    proc, port = start_redis()
    try:
        client = aioredis.Redis(port=port, max_connections=8)
        script = client.register_script(LUA.read_text())
        await client.script_load(LUA.read_text())
        print(f"redis-server {(await client.info('server'))['redis_version']} on port {port}\n")
        print("Memory per key (MEMORY USAGE, window full of admitted requests)")
        print(f"{'algorithm':<16}{'limit':>8}{'bytes/key':>12}")
        for limit in (10, 100, 1000) if not quick else (10, 100):
            for algorithm in ALGORITHMS:
                consumers = 200 if limit <= 100 else 20
                size = await memory_per_key(client, script, algorithm, limit, consumers)
                print(f"{algorithm:<16}{limit:>8}{size:>12.0f}")
        print("\nAccuracy (limit 100 per 1 s window, most admitted in any rolling 1 s window)")
        print(
            f"{'algorithm':<16}{'scenario':<22}{'sent':>7}{'admitted':>10}{'max/window':>12}{'x limit':>9}"
        )
        for algorithm in ALGORITHMS:
            for edge in (False, True):
                r = await flood(
                    client,
                    script,
                    algorithm,
                    limit=100,
                    seconds=3.0 if quick else 5.0,
                    burst_at_edge=edge,
                )
                scenario = "burst at bucket edge" if edge else "steady flood"
                print(
                    f"{algorithm:<16}{scenario:<22}{r['sent']:>7}{r['admitted']:>10}"
                    f"{r['max_in_any_window']:>12}{r['ratio']:>9.2f}{r['steady']:>11}"
                )
        await client.aclose()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller run")
    asyncio.run(main(parser.parse_args().quick))
