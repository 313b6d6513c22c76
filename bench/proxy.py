"""Throughput and CPU per request of the gateway next to nginx and haproxy, on loopback, cores pinned.

Run:  .venv/bin/python bench/proxy.py [--duration 10] [--runs 3] [--connections 32]
                                      [--latency-connections 1] [--scenarios direct nginx gateway ...]
                                      [--build compiled|source]

The gateway and the engine floor run the build users install (`--build compiled`, the default:
the wheel, its engine compiled with mypyc, built into the temp dir first) or the checkout's
pure-Python source (`--build source`); `engine-source` runs the source engine floor beside it.

What it starts (all on 127.0.0.1, ephemeral ports, all stopped by PID on exit or Ctrl-C):

* backend   nginx, `worker_processes 1`, `return 200` with a 36-byte JSON body. Fixed for every
            scenario. `/api/bench/cached` answers `Cache-Control: public, max-age=600`, every
            other path `Cache-Control: no-store`.
* nginx     nginx `proxy_pass` to the backend over a keep-alive upstream, `worker_processes 1`,
            access log on (to a file), X-Forwarded-For/Proto and X-Request-Id set: the same work
            the gateway does by default. `nginx-2w`: the same with `worker_processes 2`.
* haproxy   haproxy in the foreground (`-db`: the PID started is the one working), `nbthread 1`,
            `mode http`, `http-reuse always`, `option forwardfor`, X-Forwarded-Proto and a
            request id (`unique-id-header X-Request-Id`), no log.
* floors    bench/engine_proxy.py (the gateway's engine with no features) and
            bench/reference_proxy.py (raw ASGI + aiohttp under uvicorn, and its `--static` mode).
* redis     redis-server `--save "" --appendonly no` (only when a gateway scenario is selected).
* gateways  `gateway run --workers 1` (`--workers 2` for `gateway-2w`), one process per gateway
            scenario, each with its own config and Redis key prefix; all started up front so the
            runs can be interleaved.

Core layout (2 cores): the proxy under test on core 1; wrk, the backend and redis-server on core 0.
In the `direct` scenario wrk and the backend share core 0. The two-worker scenarios (`nginx-2w`,
`gateway-2w`) run their proxy unpinned over both cores, so one worker shares core 0 with wrk, the
backend and redis-server; their CPU is summed over the worker processes.

Each run goes through every selected scenario in turn (so the ratios are measured side by side,
not minutes apart); the table shows medians over `--runs`. `--latency-connections N` adds one
more, shorter run per scenario at N connections, for latency without queueing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gateway.localcluster import free_port, terminate  # one port picker, one stop, for all

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "latest.md"
BODY = '{"id":1,"name":"bench","ok":true}\\n'  # nginx string: \n is a newline there
CLK_TCK = os.sysconf("SC_CLK_TCK")
LATENCY_SECONDS = 5  # the --latency-connections run: at most this long, whatever --duration

# -- scenarios -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    """One thing wrk is pointed at."""

    name: str
    description: str
    target: str  # "backend", "nginx", "haproxy", "engine", "minimal", "reference", "static" or "gateway"
    path: str = "/api/bench/nocache"
    policies: tuple[str, ...] = ()  # gateway only: rate_limit, cache, circuit_breaker
    access_log: bool = True
    workers: int = 1  # nginx and gateway: > 1 runs unpinned over both cores, CPU summed over workers
    source: bool = False  # engine and gateway: the checkout's pure-Python source, whatever --build says

    @property
    def uses_redis(self) -> bool:
        return self.target == "gateway"


SCENARIOS: dict[str, Scenario] = {s.name: s for s in [
    Scenario("direct", "wrk -> backend (no proxy)", "backend"),
    Scenario("nginx", "nginx proxy_pass, keep-alive upstream, access log on", "nginx"),
    Scenario("haproxy", "haproxy, one thread, keep-alive to the backend (http-reuse always), "
             "X-Forwarded-For/Proto and a request id, no log", "haproxy"),
    Scenario("engine", "bench/engine_proxy.py: the gateway's own engine as a bare proxy, no features "
             "(the engine floor)", "engine"),
    Scenario("engine-source", "the engine floor on the checkout's pure-Python source (beside `engine`, "
             "which runs the build under test: what compiling the engine saves)", "engine", source=True),
    Scenario("minimal", "bench/minimal_proxy.py: asyncio.Protocol + httptools both ways with no rules at all "
             "(the issue's prototype; a reference, not a server)", "minimal"),
    Scenario("raw-asgi", "bench/reference_proxy.py: bare raw ASGI + aiohttp under uvicorn, no features "
             "(the floor of the stack the engine replaced)", "reference"),
    Scenario("asgi-static", "bench/reference_proxy.py --static: raw ASGI answering a constant, no "
             "upstream (the ceiling of any answer from a Python ASGI process, e.g. a cache hit)", "static"),
    Scenario("gateway", "gateway, no policies, access log on (default)", "gateway"),
    Scenario("gateway-nolog", "gateway, no policies, access log off", "gateway", access_log=False),
    Scenario("ratelimit", "gateway, rate limiting only", "gateway", policies=("rate_limit",)),
    Scenario("all-miss", "gateway, rate limit + cache + breaker, uncacheable response (miss)",
             "gateway", policies=("rate_limit", "cache", "circuit_breaker")),
    Scenario("all-hit", "gateway, rate limit + cache + breaker, cacheable response (hit)",
             "gateway", path="/api/bench/cached", policies=("rate_limit", "cache", "circuit_breaker")),
    Scenario("nginx-2w", "nginx as `nginx` with worker_processes 2 (listen reuseport), unpinned over "
             "both cores, CPU summed over both workers", "nginx", workers=2),
    Scenario("gateway-2w", "gateway as `gateway` with `gateway run --workers 2`, unpinned over both "
             "cores, CPU summed over both workers", "gateway", workers=2),
]}


# -- measurement records -------------------------------------------------------------------------


@dataclass
class WrkResult:
    """What wrk printed for one run."""

    rps: float
    requests: int
    p50_ms: float
    p99_ms: float
    non2xx: int
    socket_errors: int


@dataclass
class RunResult:
    """One wrk run plus the CPU and Redis counters around it."""

    wrk: WrkResult
    proxy_cpu_us: float  # per request
    backend_cpu_us: float
    redis_cpu_us: float | None
    redis_calls: dict[str, int] = field(default_factory=dict)
    redis_reads: int | None = None


@dataclass
class ScenarioResult:
    """All runs of one scenario, or why it could not run."""

    scenario: Scenario
    runs: list[RunResult] = field(default_factory=list)
    latency: WrkResult | None = None  # the extra run at --latency-connections
    skipped: str | None = None
    notes: list[str] = field(default_factory=list)

    def median(self, get: Any) -> float | None:
        values = [v for v in (get(r) for r in self.runs) if v is not None]
        return statistics.median(values) if values else None


# -- processes -----------------------------------------------------------------------------------


class Processes:
    """Every process the benchmark started, stopped by PID in reverse order."""

    def __init__(self) -> None:
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, argv: list[str], log: Path, core: int | None,
              env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        if core is not None:
            argv = ["taskset", "-c", str(core), *argv]  # taskset execs: same PID
        out = log.open("ab")
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, start_new_session=True, cwd=ROOT)
        out.close()
        self.children.append((name, proc))
        return proc

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        terminate(proc, timeout=8)

    def stop_all(self) -> None:
        for _, proc in reversed(self.children):
            try:
                self.stop(proc)
            except Exception as exc:  # keep stopping the others
                print(f"bench: could not stop pid {proc.pid}: {exc}", file=sys.stderr)
        self.children.clear()


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:  # noqa: S310 - loopback only
                if resp.status == 200:
                    return True
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.1)
    return False


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def cpu_ticks(pid: int) -> int:
    """utime + stime of a process (all its threads), in clock ticks."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    return int(fields[11]) + int(fields[12])


def cpu_ticks_sum(pids: list[int]) -> int:
    """cpu_ticks summed; a process that is gone counts 0 (a worker that died mid-run)."""
    total = 0
    for pid in pids:
        try:
            total += cpu_ticks(pid)
        except (OSError, ValueError, IndexError):
            pass
    return total


def children(pid: int) -> list[int]:
    """The child processes of `pid` (of any of its threads)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return found


def wait_children(pid: int, count: int, timeout: float = 5.0) -> list[int]:
    """The children of `pid` once it has at least `count` (an nginx master's workers)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = children(pid)
        if len(found) >= count:
            return found
        time.sleep(0.05)
    raise RuntimeError(f"process {pid} has fewer than {count} children")


def wait_log(path: Path, text: str, count: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> bool:
    """`text` appears `count` times in the log at `path` (every worker says it listens)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if path.read_text(errors="replace").count(text) >= count:
                return True
        except OSError:
            pass
        if proc.poll() is not None:
            return False
        time.sleep(0.1)
    return False


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# -- tools ---------------------------------------------------------------------------------------


def ensure_tools() -> None:
    missing = [pkg for pkg, binary in (("nginx", "nginx"), ("wrk", "wrk")) if not find_binary(binary)]
    if missing:
        print(f"bench: installing {' '.join(missing)} with apt-get", file=sys.stderr)
        subprocess.run(["apt-get", "update"], check=False)
        subprocess.run(["apt-get", "install", "-y", *missing], check=True)
    if not shutil.which("taskset"):
        print("bench: taskset not found (util-linux); running unpinned", file=sys.stderr)


def find_binary(name: str) -> str | None:
    return shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.access(p, os.X_OK)), None)


# -- configs -------------------------------------------------------------------------------------


def nginx_common(tmp: Path, name: str, workers: int = 1) -> str:
    return f"""
worker_processes {workers};
daemon off;
pid {tmp}/{name}.pid;
error_log {tmp}/{name}-error.log warn;
events {{ worker_connections 4096; }}
"""


def nginx_temp_paths(tmp: Path, name: str) -> str:
    return "\n".join(f"  {kind}_temp_path {tmp}/{name}-{kind};"
                     for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))


def backend_conf(tmp: Path, port: int) -> str:
    return nginx_common(tmp, "backend") + f"""
http {{
  access_log off;
{nginx_temp_paths(tmp, "backend")}
  keepalive_requests 100000000;
  keepalive_timeout 300s;
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    default_type application/json;
    location /api/bench/cached {{
      add_header Cache-Control "public, max-age=600" always;
      return 200 '{BODY}';
    }}
    location / {{
      add_header Cache-Control "no-store" always;
      return 200 '{BODY}';
    }}
  }}
}}
"""


def proxy_conf(tmp: Path, name: str, port: int, backend: int, workers: int = 1) -> str:
    # Several workers: one listening socket each (SO_REUSEPORT), as `gateway run --workers N` does.
    reuseport = " reuseport" if workers > 1 else ""
    return nginx_common(tmp, name, workers) + f"""
http {{
  access_log {tmp}/{name}-access.log;
{nginx_temp_paths(tmp, name)}
  keepalive_requests 100000000;
  keepalive_timeout 300s;
  upstream backend {{
    server 127.0.0.1:{backend};
    keepalive 64;
    keepalive_requests 100000000;
  }}
  server {{
    listen 127.0.0.1:{port} backlog=4096{reuseport};
    location / {{
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Request-Id $request_id;
    }}
  }}
}}
"""


def haproxy_conf(port: int, backend: int) -> str:
    """One process, one thread, keep-alive both ways, the headers the gateway sets, no log."""
    return f"""
global
  nbthread 1
  maxconn 8192

defaults
  mode http
  no log
  option http-keep-alive
  option forwardfor
  http-reuse always
  timeout connect 5s
  timeout client 300s
  timeout server 300s
  timeout http-request 10s
  timeout http-keep-alive 300s

frontend proxy
  bind 127.0.0.1:{port}
  unique-id-format %[uuid()]
  unique-id-header X-Request-Id
  http-request set-header X-Forwarded-Proto http
  default_backend backend

backend backend
  http-reuse always
  server backend 127.0.0.1:{backend}
"""


def gateway_config(scenario: Scenario, backend: int, redis_port: int) -> dict[str, Any]:
    unlimited = {"windows": [{"limit": 1_000_000_000, "window": 60}]}
    return {
        "services": {"bench": {"url": f"http://127.0.0.1:{backend}", "health_path": "/health"}},
        "routes": {"/api/bench": "bench"},
        # Limits nobody reaches: the benchmark measures the allowed path, not 429s.
        "rate_limits": {"default": unlimited, "anonymous": unlimited, "premium": unlimited},
        "rate_limit": {"enabled": "rate_limit" in scenario.policies},
        "cache": {"enabled": "cache" in scenario.policies, "ttl": 300},
        "circuit_breaker": {"enabled": "circuit_breaker" in scenario.policies},
        "redis": {"url": f"redis://127.0.0.1:{redis_port}/0", "key_prefix": f"bench-{scenario.name}"},
        "logging": {"access_log": scenario.access_log, "format": "json", "level": "INFO"},
    }


# -- wrk -----------------------------------------------------------------------------------------

_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _latency_ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not m:
        raise ValueError(f"unreadable latency {text!r}")
    return float(m.group(1)) * _UNITS_MS[m.group(2)]


def parse_wrk(out: str) -> WrkResult:
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    reqs = re.search(r"(\d+) requests in", out)
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    if not (rps and reqs and p50 and p99):
        raise RuntimeError(f"could not parse wrk output:\n{out}")
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return WrkResult(
        rps=float(rps.group(1)), requests=int(reqs.group(1)),
        p50_ms=_latency_ms(p50.group(1)), p99_ms=_latency_ms(p99.group(1)),
        non2xx=int(non2xx.group(1)) if non2xx else 0,
        socket_errors=sum(int(g) for g in sock.groups()) if sock else 0,
    )


def run_wrk(url: str, duration: float, connections: int, threads: int, core: int | None) -> WrkResult:
    seconds = max(1, round(duration))  # wrk takes whole seconds
    argv = [find_binary("wrk") or "wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s",
            "--latency", url]
    if core is not None:
        argv = ["taskset", "-c", str(core), *argv]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 30, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    return parse_wrk(done.stdout)


# -- redis ---------------------------------------------------------------------------------------

_OWN_COMMANDS = ("info", "config")  # what the benchmark itself sends


class RedisCounters:
    """Reset and read Redis' own counters: commands by type, reads (≈ round trips), CPU."""

    def __init__(self, port: int, pid: int) -> None:
        import redis

        self.client = redis.Redis(host="127.0.0.1", port=port, decode_responses=True)
        self.pid = pid

    def reset(self) -> None:
        self.client.config_resetstat()

    def read(self) -> tuple[dict[str, int], int]:
        raw = self.client.execute_command("INFO", "commandstats")
        text = raw if isinstance(raw, str) else ""
        calls: dict[str, int] = {}
        if isinstance(raw, dict):
            for name, stats in raw.items():
                calls[name.removeprefix("cmdstat_")] = int(stats["calls"])
        else:
            for m in re.finditer(r"^cmdstat_([^:]+):calls=(\d+)", text, re.M):
                calls[m.group(1)] = int(m.group(2))
        calls = {k: v for k, v in calls.items() if k.split("|")[0] not in _OWN_COMMANDS}
        stats = self.client.info("stats")
        return calls, int(stats.get("total_reads_processed", 0))

    def close(self) -> None:
        self.client.close()


# -- the benchmark -------------------------------------------------------------------------------


@dataclass
class Endpoint:
    """Where wrk reaches one scenario, and whose CPU is the proxy's."""

    port: int
    pid: int  # the process doing the work; with workers > 1, the nginx master or gateway supervisor
    workers: int = 1

    def cpu_pids(self) -> list[int]:
        """The processes whose CPU is summed: every child of the master when there are workers
        (the supervisor's spawn also starts an idle resource tracker; its CPU is negligible)."""
        return children(self.pid) if self.workers > 1 else [self.pid]


@dataclass
class Bench:
    """The processes under test and where to reach them."""

    args: argparse.Namespace
    tmp: Path
    procs: Processes
    backend_port: int = 0
    backend_worker: int = 0
    endpoints: dict[str, Endpoint] = field(default_factory=dict)  # scenario name -> endpoint
    redis: RedisCounters | None = None
    redis_pid: int = 0
    build: Path | None = None  # the compiled wheel, unpacked (--build compiled); None: the checkout

    def python_env(self, s: Scenario) -> dict[str, str]:
        """The environment of the gateway and the engine floor: the build under test first."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
        if self.build is not None and not s.source:
            env["PYTHONPATH"] = str(self.build)
        return env

    @property
    def proxy_core(self) -> int | None:
        return None if self.args.no_pin else self.args.proxy_core

    @property
    def load_core(self) -> int | None:
        return None if self.args.no_pin else self.args.load_core

    def core_of(self, s: Scenario) -> int | None:
        return None if s.workers > 1 else self.proxy_core  # several workers: over both cores

    def start_nginx(self, name: str, conf: str, port: int, core: int | None, workers: int = 1) -> int:
        """Start an nginx; its master's PID once its workers are up."""
        path = self.tmp / f"{name}.conf"
        path.write_text(conf)
        nginx = find_binary("nginx") or "nginx"
        check = subprocess.run([nginx, "-t", "-q", "-p", str(self.tmp), "-e", str(self.tmp / f"{name}-error.log"),
                                "-c", str(path)], capture_output=True, text=True, check=False)
        if check.returncode != 0:
            raise RuntimeError(f"nginx {name} config rejected: {check.stderr}")
        proc = self.procs.start(name, [nginx, "-p", str(self.tmp), "-e", str(self.tmp / f"{name}-error.log"),
                                       "-c", str(path)], self.tmp / f"{name}.out", core)
        if not wait_port(port, proc):
            raise RuntimeError(f"nginx {name} did not start:\n{tail(self.tmp / f'{name}-error.log')}")
        wait_children(proc.pid, workers)
        return proc.pid

    def start_haproxy(self, s: Scenario) -> str | None:
        """Start haproxy in the foreground; why not, if it could not."""
        haproxy = find_binary("haproxy")
        if haproxy is None:
            return "haproxy not found (apt-get install haproxy)"
        port = free_port()
        path = self.tmp / "haproxy.cfg"
        path.write_text(haproxy_conf(port, self.backend_port))
        check = subprocess.run([haproxy, "-c", "-q", "-f", str(path)], capture_output=True, text=True, check=False)
        if check.returncode != 0:
            return f"haproxy config rejected: {check.stderr or check.stdout}"
        # -db: foreground, no master process: the PID started is the one doing the work.
        proc = self.procs.start("haproxy", [haproxy, "-db", "-f", str(path)], self.tmp / "haproxy.log",
                                self.core_of(s))
        if not wait_port(port, proc):
            self.procs.stop(proc)
            return "haproxy did not start:\n" + tail(self.tmp / "haproxy.log")
        self.endpoints[s.name] = Endpoint(port, proc.pid)
        return None

    def start_python(self, s: Scenario, script: str, *extra: str) -> str | None:
        """Start one of the bench/ floors; why not, if it could not."""
        port = free_port()
        log = self.tmp / f"{s.name}.log"
        proc = self.procs.start(s.name, [sys.executable, str(ROOT / "bench" / script),
                                         "--upstream", f"http://127.0.0.1:{self.backend_port}",
                                         "--port", str(port), *extra], log, self.core_of(s),
                                env=self.python_env(s))
        if not wait_http(f"http://127.0.0.1:{port}{s.path}", proc):
            self.procs.stop(proc)
            return f"{s.name} did not start:\n" + tail(log)
        self.endpoints[s.name] = Endpoint(port, proc.pid)
        return None

    def start_servers(self, scenarios: list[Scenario]) -> dict[str, str]:
        """Start everything; return {scenario: reason} for those that could not start."""
        self.backend_port = free_port()
        self.backend_worker = wait_children(
            self.start_nginx("backend", backend_conf(self.tmp, self.backend_port), self.backend_port,
                             self.load_core), 1)[0]
        failed: dict[str, str] = {}
        for s in scenarios:
            reason: str | None = None
            if s.target == "backend":
                self.endpoints[s.name] = Endpoint(self.backend_port, self.backend_worker)
            elif s.target == "nginx":
                name = "proxy" if s.workers == 1 else f"proxy-{s.workers}w"
                port = free_port()
                master = self.start_nginx(name, proxy_conf(self.tmp, name, port, self.backend_port, s.workers),
                                          port, self.core_of(s), s.workers)
                if s.workers > 1:
                    self.endpoints[s.name] = Endpoint(port, master, s.workers)
                else:
                    self.endpoints[s.name] = Endpoint(port, children(master)[0])
            elif s.target == "haproxy":
                reason = self.start_haproxy(s)
            elif s.target == "engine":
                reason = self.start_python(s, "engine_proxy.py")
            elif s.target == "minimal":
                reason = self.start_python(s, "minimal_proxy.py")
            elif s.target == "reference":
                reason = self.start_python(s, "reference_proxy.py")
            elif s.target == "static":
                reason = self.start_python(s, "reference_proxy.py", "--static")
            if reason is not None:
                failed[s.name] = reason
        gateway_scenarios = [s for s in scenarios if s.target == "gateway"]
        if gateway_scenarios:
            failed.update(self.start_gateways(gateway_scenarios))
        return failed

    def start_gateways(self, gateway_scenarios: list[Scenario]) -> dict[str, str]:
        redis_port = free_port()
        proc = self.procs.start("redis", ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1",
                                          "--save", "", "--appendonly", "no"],
                                self.tmp / "redis.out", self.load_core)
        if not wait_port(redis_port, proc):
            raise RuntimeError(f"redis-server did not start:\n{tail(self.tmp / 'redis.out')}")
        self.redis_pid = proc.pid
        self.redis = RedisCounters(redis_port, proc.pid)
        gateway = str(ROOT / ".venv" / "bin" / "gateway")
        if not os.access(gateway, os.X_OK):
            gateway = shutil.which("gateway") or gateway
        failed: dict[str, str] = {}
        started: list[tuple[Scenario, int, subprocess.Popen[bytes]]] = []
        for s in gateway_scenarios:
            port = free_port()
            cfg = self.tmp / f"gateway-{s.name}.yaml"
            cfg.write_text(yaml.safe_dump(gateway_config(s, self.backend_port, redis_port), sort_keys=False))
            env = self.python_env(s)
            gproc = self.procs.start(f"gateway-{s.name}", [gateway, "run", "--config", str(cfg), "--host", "127.0.0.1",
                                                           "--port", str(port), "--workers", str(s.workers),
                                                           "--grace", "2", "--admin", "off"],
                                     self.tmp / f"gateway-{s.name}.log", self.core_of(s), env=env)
            started.append((s, port, gproc))
        for s, port, gproc in started:
            log = self.tmp / f"gateway-{s.name}.log"
            # With workers, the first one to listen answers; wait for every one (each logs
            # "listening on"), or wrk's connections would all land on the first (SO_REUSEPORT).
            if wait_http(f"http://127.0.0.1:{port}{s.path}", gproc, timeout=30) and (
                    s.workers == 1 or wait_log(log, "listening on", s.workers, gproc)):
                self.endpoints[s.name] = Endpoint(port, gproc.pid, s.workers)
            else:
                failed[s.name] = "gateway did not start or did not proxy:\n" + tail(log)
                self.procs.stop(gproc)
        return failed

    def url(self, s: Scenario) -> str:
        return f"http://127.0.0.1:{self.endpoints[s.name].port}{s.path}"

    def proxy_pid(self, s: Scenario) -> int:
        return self.endpoints[s.name].pid

    def measure(self, s: Scenario, duration: float) -> RunResult:
        proxy = self.endpoints[s.name].cpu_pids()
        redis = self.redis if s.uses_redis else None
        if redis is not None:
            redis.reset()
        before = (cpu_ticks_sum(proxy), cpu_ticks(self.backend_worker),
                  cpu_ticks(self.redis_pid) if redis else 0)
        result = run_wrk(self.url(s), duration, self.args.connections, self.args.threads, self.load_core)
        after = (cpu_ticks_sum(proxy), cpu_ticks(self.backend_worker),
                 cpu_ticks(self.redis_pid) if redis else 0)
        n = max(result.requests, 1)

        def per_request_us(i: int) -> float:
            return (after[i] - before[i]) / CLK_TCK * 1e6 / n

        calls: dict[str, int] = {}
        reads = None
        if redis is not None:
            calls, reads = redis.read()
        return RunResult(
            wrk=result,
            proxy_cpu_us=per_request_us(0),
            backend_cpu_us=0.0 if s.target == "backend" else per_request_us(1),
            redis_cpu_us=per_request_us(2) if redis else None,
            redis_calls=calls, redis_reads=reads,
        )

    def latency(self, s: Scenario, duration: float) -> WrkResult:
        """One run at --latency-connections (few connections: latency without queueing)."""
        connections = self.args.latency_connections
        return run_wrk(self.url(s), duration, connections, min(self.args.threads, connections), self.load_core)

    def response_headers(self, s: Scenario) -> dict[str, str]:
        with urllib.request.urlopen(self.url(s), timeout=5) as resp:  # noqa: S310 - loopback only
            return {k.lower(): v for k, v in resp.headers.items()}


def policy_check(s: Scenario, result: ScenarioResult, headers: dict[str, str]) -> None:
    """Note when a switched-on policy shows no sign of running (not wired yet)."""
    if not s.policies:
        return
    calls = result.median(lambda r: sum(r.redis_calls.values()) / max(r.wrk.requests, 1))
    if not calls:
        result.notes.append("no Redis commands per request: the policies seem not to be wired into "
                            "the gateway yet (gateway/composition.py build() returns no policy?)")
    if "rate_limit" in s.policies and not any(h.startswith(("ratelimit", "x-ratelimit")) for h in headers):
        result.notes.append("no RateLimit-* / X-RateLimit-* response header seen")
    if s.name == "all-hit":
        hit = headers.get("x-cache", "").upper().startswith("HIT") or "age" in headers
        if not hit:
            result.notes.append("the response did not look like a cache hit (no X-Cache: HIT or Age header)")


# -- profiles ------------------------------------------------------------------------------------


def profile(bench: Bench, s: Scenario, duration: int, out_dir: Path) -> str:
    """py-spy the gateway under an extra, unrecorded wrk run; return the top frames as Markdown."""
    spy = shutil.which("py-spy") or str(ROOT / ".venv" / "bin" / "py-spy")
    if not os.access(spy, os.X_OK):
        return "py-spy not found (`.venv/bin/pip install py-spy`)"
    out_dir.mkdir(parents=True, exist_ok=True)
    raw = out_dir / f"profile-{s.name}.txt"
    pid = bench.proxy_pid(s)
    recorder = subprocess.Popen([spy, "record", "-p", str(pid), "-d", str(duration), "-r", "250",
                                 "-f", "raw", "-o", str(raw), "--nonblocking"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                start_new_session=True)
    try:
        time.sleep(0.5)
        run_wrk(bench.url(s), duration, bench.args.connections, bench.args.threads, bench.load_core)
        _, err = recorder.communicate(timeout=duration + 30)
    finally:
        if recorder.poll() is None:
            recorder.kill()
            recorder.wait()
    if not raw.exists():
        return f"py-spy failed: {err.decode(errors='replace').strip()[-300:]}"
    return summarize_profile(raw)


def summarize_profile(raw: Path, top: int = 15) -> str:
    """Self and inclusive sample shares per function from py-spy's collapsed stacks."""
    own: dict[str, int] = {}
    incl: dict[str, int] = {}
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [f.split(" (")[0] + " (" + f.split(" (")[1].split(":")[0].rsplit("/", 1)[-1] + ")"
                  if " (" in f else f for f in stack.split(";")]
        own[frames[-1]] = own.get(frames[-1], 0) + n
        for f in set(frames):
            incl[f] = incl.get(f, 0) + n
    if not total:
        return "no samples"

    def table(d: dict[str, int]) -> list[str]:
        rows = sorted(d.items(), key=lambda kv: -kv[1])[:top]
        return [f"| {100 * v / total:5.1f}% | `{k}` |" for k, v in rows]

    return "\n".join([f"{total} samples ({raw.name}).", "", "| self | function |", "|---:|---|",
                      *table(own), "", "| inclusive | function |", "|---:|---|",
                      *table({k: v for k, v in incl.items() if "<module>" not in k})])


# -- report --------------------------------------------------------------------------------------


def fmt(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "—"
    return f"{value:,.{digits}f}"


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


# The engine issue's budgets: proxy CPU µs per proxied request, set on a machine where the
# issue's minimal Protocol + httptools prototype (our `minimal` scenario) cost this much:
PROTOTYPE_US = 31.0
CPU_BUDGETS = [
    # (label, scenario, µs/req at most)
    ("engine floor", "engine", 35),
    ("gateway, no policies, access log on", "gateway", 90),
    ("rate limiting", "ratelimit", 105),
    ("all three policies, miss", "all-miss", 170),
    ("cache hit", "all-hit", 90),
]

RATIOS = [
    # (label, numerator, denominator): informative, no budget
    ("gateway / nginx", "gateway", "nginx"),
    ("gateway / direct", "gateway", "direct"),
    ("haproxy / nginx", "haproxy", "nginx"),
    ("engine floor / nginx", "engine", "nginx"),
    ("gateway / engine floor (what the features cost)", "gateway", "engine"),
    ("engine floor / raw ASGI + aiohttp floor", "engine", "raw-asgi"),
    ("engine floor / minimal Protocol proxy (what the engine's rules cost)", "engine", "minimal"),
    ("engine floor compiled / pure-Python source (what compiling saves)", "engine", "engine-source"),
    ("raw ASGI + aiohttp floor / nginx", "raw-asgi", "nginx"),
    ("gateway (no access log) / nginx", "gateway-nolog", "nginx"),
    ("gateway access log on / off", "gateway", "gateway-nolog"),
    ("rate limit on / off", "ratelimit", "gateway"),
    ("all policies, miss / no policies", "all-miss", "gateway"),
    ("cache hit / nginx", "all-hit", "nginx"),
    ("raw ASGI constant answer (ceiling) / nginx", "asgi-static", "nginx"),
    ("cache hit / raw ASGI constant answer", "all-hit", "asgi-static"),
    ("nginx, 2 workers / 1 worker", "nginx-2w", "nginx"),
    ("gateway, 2 workers / 1 worker", "gateway-2w", "gateway"),
    ("gateway, 2 workers / nginx, 2 workers", "gateway-2w", "nginx-2w"),
]


def latency_duration(args: argparse.Namespace) -> int:
    return max(1, min(args.duration, LATENCY_SECONDS))


def compiled_build(tmp: Path) -> Path:
    """The wheel as users install it (setup.py compiles the engine with mypyc), unpacked."""
    dist, build = tmp / "dist", tmp / "build"
    pip = [sys.executable, "-m", "pip"]
    subprocess.run([*pip, "wheel", "--no-deps", "-q", "-w", str(dist), str(ROOT)],
                   check=True, stdout=subprocess.DEVNULL, timeout=600)
    subprocess.run([*pip, "install", "--no-deps", "-q", "--target", str(build),
                    *map(str, dist.glob("pygateway-*.whl"))], check=True, stdout=subprocess.DEVNULL, timeout=600)
    probe = subprocess.run([sys.executable, "-c", "import gateway.engine.server as s; print(s.__file__)"],
                           env={**os.environ, "PYTHONPATH": str(build)}, capture_output=True, text=True,
                           cwd=tmp, check=True)
    if not probe.stdout.strip().endswith(".so"):
        raise RuntimeError(f"the wheel's engine is not compiled: {probe.stdout.strip()}")
    return build


def render(results: dict[str, ScenarioResult], args: argparse.Namespace, layout: str,
           load: tuple[float, float, float]) -> str:
    rps = {name: r.median(lambda x: x.wrk.rps) for name, r in results.items() if r.runs}
    lat_c = args.latency_connections
    lat_cols = f" p50 ms @{lat_c} | p99 ms @{lat_c} |" if lat_c else ""
    lines = [
        f"# Gateway benchmark — {dt.datetime.now().strftime('%Y-%m-%d %H:%M')}",
        "",
        f"- machine: {cpu_model()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}",
        f"- commit: {git_commit()}",
        "- build: " + ("the wheel as users install it, the engine compiled with mypyc (`--build compiled`)"
                       if args.build == "compiled" else "the checkout's source, pure Python (`--build source`)"),
        f"- wrk -t{args.threads} -c{args.connections} -d{args.duration}s --latency, {args.runs} runs per scenario "
        f"(interleaved), medians shown"
        + (f"; latency at {lat_c} connection{'s' if lat_c > 1 else ''}: one more run of "
           f"{latency_duration(args)} s per scenario (`@{lat_c}` columns)" if lat_c else ""),
        f"- layout: {layout}",
        f"- load average (1 min) at start / end: {load[0]:.2f} / {os.getloadavg()[0]:.2f} "
        "(anything well above the 2 cores' worth of benchmark load means a busy neighbour: trust ratios and CPU "
        "µs/req over absolute req/s)",
        "",
        f"| scenario | req/s | × nginx | p50 ms @{args.connections} | p99 ms @{args.connections} |{lat_cols} "
        "proxy CPU µs/req | backend CPU µs/req | non-2xx | sock err | req/s of each run |",
        "|---|---:|---:|---:|---:|" + ("---:|---:|" if lat_c else "") + "---:|---:|---:|---:|---|",
    ]
    for name, r in results.items():
        if not r.runs:
            lines.append(f"| {name} | skipped |{' | |' if lat_c else ''} | | | | | | | {first_line(r.skipped)} |")
            continue
        lat = r.latency
        lines.append("| " + " | ".join([
            name, fmt(rps[name]), fmt(ratio(rps[name], rps.get("nginx")), 2),
            fmt(r.median(lambda x: x.wrk.p50_ms), 2), fmt(r.median(lambda x: x.wrk.p99_ms), 2),
            *([fmt(lat.p50_ms if lat else None, 2), fmt(lat.p99_ms if lat else None, 2)] if lat_c else []),
            fmt(r.median(lambda x: x.proxy_cpu_us), 1),
            fmt(r.median(lambda x: x.backend_cpu_us), 1) if r.scenario.target != "backend" else "(is proxy)",
            fmt(r.median(lambda x: x.wrk.non2xx)), fmt(r.median(lambda x: x.wrk.socket_errors)),
            ", ".join(fmt(x.wrk.rps) for x in r.runs),
        ]) + " |")
    lines += ["", "Scenarios: " + "; ".join(f"`{n}` = {r.scenario.description}" for n, r in results.items()), ""]
    if any(r.scenario.workers > 1 for r in results.values()):
        lines += ["The two-worker scenarios run their proxy unpinned over both cores, so one worker shares "
                  "core 0 with wrk, the backend and redis-server: their req/s is not two cores' worth of "
                  "proxy, and their proxy CPU is summed over all worker processes (the children of the "
                  "nginx master or of the gateway's supervisor).", ""]

    redis_rows = [(n, r) for n, r in results.items() if r.runs and r.scenario.uses_redis]
    if redis_rows:
        lines += [
            "## Redis per request",
            "",
            "From Redis' own counters (CONFIG RESETSTAT before each run, INFO after), divided by wrk's "
            "request count. `commands` counts every command Redis executed, including those a Lua "
            "script calls; `reads` is `total_reads_processed` — socket reads, i.e. round trips "
            "(a pipeline is one; requests batched into one pipeline share one). Both include "
            "work done after the response (recording outcomes, cache stores) and background "
            "tasks (heartbeats, probes).",
            "",
            "| scenario | commands/req | reads (round trips)/req | redis CPU µs/req | calls/req by command |",
            "|---|---:|---:|---:|---|",
        ]
        for name, r in redis_rows:
            per_cmd: dict[str, float] = {}
            for cmd in sorted({c for x in r.runs for c in x.redis_calls}):
                per_cmd[cmd] = r.median(lambda x, c=cmd: x.redis_calls.get(c, 0) / max(x.wrk.requests, 1)) or 0.0
            by_cmd = ", ".join(f"{c} {v:.3f}" for c, v in sorted(per_cmd.items(), key=lambda kv: -kv[1])) or "none"
            lines.append("| " + " | ".join([
                name,
                fmt(r.median(lambda x: sum(x.redis_calls.values()) / max(x.wrk.requests, 1)), 3),
                fmt(r.median(lambda x: (x.redis_reads or 0) / max(x.wrk.requests, 1)), 3),
                fmt(r.median(lambda x: x.redis_cpu_us), 1),
                by_cmd,
            ]) + " |")
        lines.append("")

    cpu = {name: r.median(lambda x: x.proxy_cpu_us) for name, r in results.items() if r.runs}
    lines += [
        "## CPU budgets",
        "",
        "The engine issue's budgets: proxy CPU per proxied request (user + system of the proxy "
        "process during the runs, divided by the requests wrk completed; medians). CPU is the "
        "measure because it is steady on a busy machine and travels between machines; `× nginx` "
        "(by req/s, same run) stands beside it. The budgets were set on a machine where the "
        f"issue's minimal prototype cost {PROTOTYPE_US:g} µs; hosts differ by 2× and more, so "
        "each budget is also scaled by this run's `minimal` (the same prototype, side by side): "
        "`scaled` = budget × minimal / " f"{PROTOTYPE_US:g}. That column is the fair verdict.",
        "",
        "| budget | scenario | proxy CPU µs/req | budget µs/req | met | scaled budget | met scaled "
        "| × nginx by req/s |",
        "|---|---|---:|---:|---|---:|---|---:|",
    ]
    minimal = cpu.get("minimal")
    scale = minimal / PROTOTYPE_US if minimal else None
    for label, name, budget in CPU_BUDGETS:
        value = cpu.get(name)
        met = "not run" if value is None else ("yes" if value <= budget else "**no**")
        scaled = budget * scale if scale is not None else None
        met_scaled = ("not run" if value is None or scaled is None
                      else ("yes" if value <= scaled else "**no**"))
        lines.append(f"| {label} | `{name}` | {fmt(value, 1)} | ≤ {budget} | {met} "
                     f"| {'≤ ' + fmt(scaled, 1) if scaled is not None else '— (run `minimal`)'} "
                     f"| {met_scaled} | {fmt(ratio(rps.get(name), rps.get('nginx')), 2)} |")
    lines += [
        "",
        "## Ratios",
        "",
        "No budgets. `by req/s` is measured side by side in one run. `by CPU` is the inverse ratio "
        "of proxy CPU µs/req: the throughput ratio if both were CPU-bound on a core of their own; it "
        "is steadier on a busy machine, but only comparable between Python proxies (nginx and "
        "haproxy are not CPU-bound here: they wait on wrk and the backend).",
        "",
        "| ratio | by req/s | by CPU |",
        "|---|---:|---:|",
    ]
    for label, num, den in RATIOS:
        value = ratio(rps.get(num), rps.get(den))
        if value is None:
            continue  # a scenario not run
        lines.append(f"| {label} | {fmt(value, 2)} | {fmt(ratio(cpu.get(den), cpu.get(num)), 2)} |")
    rt = [(n, r.median(lambda x: (x.redis_reads or 0) / max(x.wrk.requests, 1)))
          for n, r in results.items() if r.runs and r.scenario.policies]
    if rt:
        shown = ", ".join(f"{n} {fmt(v, 2)}" for n, v in rt)
        hit = dict(rt).get("all-hit")
        met = "" if hit is None else (" (cache hit ≤ 1: yes, indicative)" if hit <= 1.05
                                      else " (cache hit ≤ 1: **no**, indicative)")
        lines += ["", f"Redis round trips per request (the cache hit's is the lookup alone; ≤ 1 before the "
                      f"upstream): {shown}{met}."]
    lines.append("")

    notes = [(n, note) for n, r in results.items() for note in ([r.skipped] if r.skipped else []) + r.notes]
    if notes:
        lines += ["## Notes", ""]
        lines += [f"- `{n}`: {first_line(note)}" for n, note in notes]
        lines.append("")
    return "\n".join(lines)


def first_line(text: str | None) -> str:
    return (text or "").strip().splitlines()[0] if text and text.strip() else ""


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def git_commit() -> str:
    done = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True, check=False)
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "gateway", "lua"],
                           capture_output=True, text=True, check=False).stdout.strip()
    # Helpers share one working tree: say when the measured code is not the commit's.
    return (done.stdout.strip() or "unknown") + (" + uncommitted changes in gateway/ or lua/" if dirty else "")


# -- main ----------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=int, default=10, help="seconds per wrk run (default 10)")
    p.add_argument("--runs", type=int, default=3, help="runs per scenario; medians are reported (default 3)")
    p.add_argument("--connections", type=int, default=32, help="wrk -c (default 32)")
    p.add_argument("--latency-connections", type=int, default=0, metavar="N",
                   help="also one run per scenario at wrk -cN (e.g. 1) for p50/p99 without queueing, "
                        f"{LATENCY_SECONDS} s at most (default 0: off)")
    p.add_argument("--threads", type=int, default=1, help="wrk -t (default 1: wrk has one core)")
    p.add_argument("--warmup", type=int, default=1, help="seconds of unrecorded load per scenario first")
    p.add_argument("--scenarios", nargs="+", default=list(SCENARIOS), choices=list(SCENARIOS), metavar="NAME",
                   help=f"subset to run, in order (default all: {' '.join(SCENARIOS)})")
    p.add_argument("--proxy-core", type=int, default=1, help="core of the proxy under test (default 1)")
    p.add_argument("--load-core", type=int, default=0, help="core of wrk, backend, redis (default 0)")
    p.add_argument("--no-pin", action="store_true", help="do not pin cores with taskset")
    p.add_argument("--output", type=Path, default=RESULTS, help=f"Markdown report (default {RESULTS})")
    p.add_argument("--profile", action="store_true",
                   help="after the runs, py-spy each single-process gateway scenario and the engine floor "
                        "under load (an extra, unrecorded run)")
    p.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (configs, logs)")
    p.add_argument("--build", choices=("compiled", "source"), default="compiled",
                   help="what the gateway and the engine floor run: the wheel as users install it, "
                        "its engine compiled (default), or the checkout's pure-Python source")
    args = p.parse_args(argv)
    if not args.no_pin and (not shutil.which("taskset") or (os.cpu_count() or 1) < 2):
        args.no_pin = True
    if args.runs < 1 or args.duration <= 0 or args.connections < 1:
        p.error("--runs, --duration and --connections must be positive")
    if args.latency_connections < 0:
        p.error("--latency-connections must be 0 (off) or positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    ensure_tools()
    scenarios = [SCENARIOS[n] for n in dict.fromkeys(args.scenarios)]
    layout = ("unpinned" if args.no_pin else
              f"proxy under test on core {args.proxy_core}; wrk, backend and redis-server on core {args.load_core}")
    if not args.no_pin and any(s.workers > 1 for s in scenarios):
        layout += ("; the two-worker proxies unpinned over both cores (sharing core "
                   f"{args.load_core} with wrk, backend and redis-server)")
    load = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    procs = Processes()

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)  # also when started with SIGINT ignored (a background job)
    bench = Bench(args, tmp, procs)
    if args.build == "compiled":
        print("bench: building the wheel (the engine compiled with mypyc)", file=sys.stderr)
        bench.build = compiled_build(tmp)
    results = {s.name: ScenarioResult(s) for s in scenarios}
    profiles: dict[str, str] = {}
    try:
        print(f"bench: starting servers ({layout}); logs in {tmp}", file=sys.stderr)
        for name, reason in bench.start_servers(scenarios).items():
            results[name].skipped = reason
        active = [s for s in scenarios if not results[s.name].skipped]
        for s in active:  # warm up: connection pools, JIT-free but caches and the cache entry
            run_wrk(bench.url(s), args.warmup, args.connections, args.threads, bench.load_core)
        for i in range(args.runs):
            for s in active:
                r = bench.measure(s, args.duration)
                results[s.name].runs.append(r)
                print(f"bench: run {i + 1}/{args.runs} {s.name:14} {r.wrk.rps:10,.0f} req/s  "
                      f"p99 {r.wrk.p99_ms:6.2f} ms  proxy {r.proxy_cpu_us:6.1f} µs/req"
                      + (f"  non-2xx {r.wrk.non2xx}" if r.wrk.non2xx else ""), file=sys.stderr)
        if args.latency_connections:
            for s in active:
                lat = results[s.name].latency = bench.latency(s, latency_duration(args))
                print(f"bench: latency @{args.latency_connections} {s.name:14} p50 {lat.p50_ms:6.2f} ms  "
                      f"p99 {lat.p99_ms:6.2f} ms", file=sys.stderr)
        for s in active:
            try:
                headers = bench.response_headers(s)
            except OSError as exc:
                headers = {}
                results[s.name].notes.append(f"probe request failed: {exc}")
            policy_check(s, results[s.name], headers)
        if args.profile:
            for s in active:
                if s.target in ("gateway", "engine") and s.workers == 1:
                    print(f"bench: profiling {s.name}", file=sys.stderr)
                    profiles[s.name] = profile(bench, s, args.duration, args.output.parent)
    except KeyboardInterrupt:
        print("bench: interrupted; stopping everything", file=sys.stderr)
        return 130
    finally:
        if bench.redis is not None:
            bench.redis.close()
        procs.stop_all()
        if not args.keep_tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    report = render(results, args, layout, load)
    for name, text in profiles.items():
        report += f"\n## Profile: {name}\n\n{text}\n"
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(report)
    print(report)
    print(f"bench: written to {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
