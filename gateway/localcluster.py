"""`gateway cluster`: the docker-compose topology on loopback, without Docker.

One redis-server (no persistence), the three mock services, N gateway processes (`gateway run`)
sharing that Redis, and a front port that spreads connections round-robin over the gateways.
Ctrl-C or SIGTERM stops every child by its PID: gateways first (they drain), then the rest.

The front is a small asyncio TCP balancer, not nginx: Debian ships nginx 1.22, too old for the
compose file's re-resolving upstream, and a Python front needs nothing installed. It balances
per connection (like nginx's `stream` module or HAProxy in TCP mode): each new client connection
goes to the next gateway, and a keep-alive connection stays on its gateway. A gateway that
refuses the connection (crashed, stopped) is skipped, so killing one replica costs no request
that had not reached it yet.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

SERVICES = ("users", "products", "orders")
DEV_CONFIG = Path(__file__).with_name("dev.yaml")
CONNECT_TIMEOUT = 1.0
_NO_REPLICA = b'{"title":"Bad Gateway","status":502,"detail":"no gateway replica accepted the connection"}'
BAD_GATEWAY = (
    b"HTTP/1.1 502 Bad Gateway\r\ncontent-type: application/problem+json\r\nconnection: close\r\n"
    b"content-length: %d\r\n\r\n%s" % (len(_NO_REPLICA), _NO_REPLICA)
)


@dataclass
class Child:
    """A process the cluster started, stopped by its PID."""

    role: str
    url: str
    proc: subprocess.Popen[bytes]
    reported: bool = field(default=False)

    @property
    def pid(self) -> int:
        return self.proc.pid


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_answering(url: str, procs: list[subprocess.Popen[bytes]], timeout: float = 15.0) -> bool:
    """True once `url` answers 200; False if any of `procs` exits first or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs):
            return False
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:  # noqa: S310 - loopback only
                if resp.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.1)
    return False


def terminate(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM `proc` and wait up to `timeout` seconds for it to exit; SIGKILL it if it does not."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


class RoundRobinFront:
    """A TCP front: each new connection is piped to the next gateway that accepts it."""

    def __init__(self, backends: list[tuple[str, int]]) -> None:
        self.backends = backends
        self._next = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream = await self._connect()
        if upstream is None:
            writer.write(BAD_GATEWAY)
            with contextlib.suppress(OSError):
                await writer.drain()
            writer.close()
            return
        up_reader, up_writer = upstream
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        for _ in range(len(self.backends)):
            host, port = self.backends[self._next % len(self.backends)]
            self._next += 1
            try:
                return await asyncio.wait_for(asyncio.open_connection(host, port), CONNECT_TIMEOUT)
            except (OSError, TimeoutError):
                continue  # down or stopping: the next replica takes this connection
        return None


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()  # half-close: the other direction may still be sending
    except (OSError, RuntimeError):
        writer.close()  # a reset on one side resets the other


class LocalCluster:
    """Redis, the mock services, N gateways and the round-robin front, all on loopback."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.children: list[Child] = []
        self.tmp = tempfile.mkdtemp(prefix="gw-cluster-")

    # -- start -----------------------------------------------------------------------------
    def start(self) -> None:
        args = self.args
        env = {**os.environ}
        env.pop("GATEWAY_CONFIG", None)
        redis_url = args.redis_url or self._start_redis()
        env["GATEWAY_REDIS__URL"] = redis_url
        services_port = args.services_port
        if services_port is None:
            services_port = 8001 if args.config else 0
        for i, name in enumerate(SERVICES):
            port = services_port + i if services_port else free_port()
            url = f"http://127.0.0.1:{port}"
            self._spawn(name, url, [sys.executable, "-m", "services", name, "--host", "127.0.0.1",
                                    "--port", str(port)])
            if not args.config:  # keep the built-in config pointing at the mocks
                env[f"GATEWAY_SERVICES__{name.upper()}__URL"] = url
        for child in self.children:
            if child.role in SERVICES:
                self._wait_http(child, "/health")
        config_file = str(Path(args.config or DEV_CONFIG).resolve())
        taken: set[int] = set()
        for i in range(args.replicas):
            port = args.gateway_port + i if args.gateway_port else free_port()
            admin = free_port()
            while admin == port or admin in taken:  # two probes may hand out one port
                admin = free_port()
            taken |= {port, admin}
            # Each replica's admin listener on a port of its own (they share the host).
            self._spawn(f"gateway {i + 1}", f"http://127.0.0.1:{port}", [
                sys.executable, "-m", "gateway.cli", "run", "--config", config_file,
                "--host", "127.0.0.1", "--port", str(port), "--grace", str(args.grace),
                "--admin", f"127.0.0.1:{admin}",
            ], env=env)
        for child in self.gateways():
            self._wait_http(child, "/ready", timeout=30)

    def _start_redis(self) -> str:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt install redis-server), "
                               "or pass --redis-url to use a running Redis")
        port = self.args.redis_port or free_port()
        url = f"redis://127.0.0.1:{port}/0"
        child = self._spawn("redis", url, [
            binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", self.tmp,
        ], quiet=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if child.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {child.proc.returncode} "
                                   f"(is port {port} in use?)")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return url
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not answer on port {port}")

    def _spawn(self, role: str, url: str, command: list[str], *, env: dict[str, str] | None = None,
               quiet: bool = False) -> Child:
        out = subprocess.DEVNULL if quiet or role in SERVICES else None
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=out if quiet else None)
        child = Child(role, url, proc)
        self.children.append(child)
        return child

    def _wait_http(self, child: Child, path: str, timeout: float = 15.0) -> None:
        if wait_answering(child.url + path, [child.proc], timeout):
            return
        if child.proc.poll() is not None:
            raise RuntimeError(f"{child.role} exited with {child.proc.returncode} "
                               f"before {child.url}{path} answered")
        raise RuntimeError(f"{child.role} did not answer {child.url}{path} within {timeout:.0f}s")

    def gateways(self) -> list[Child]:
        return [c for c in self.children if c.role.startswith("gateway")]

    # -- run -------------------------------------------------------------------------------
    async def serve(self) -> None:
        """Run the front until SIGINT / SIGTERM; report children that exit meanwhile."""
        backends = [("127.0.0.1", int(c.url.rsplit(":", 1)[1])) for c in self.gateways()]
        front = RoundRobinFront(backends)
        server = await asyncio.start_server(front.handle, self.args.host, self.args.port)
        self.describe()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with server:
            while not stop.is_set():
                for child in self.children:
                    if child.proc.poll() is not None and not child.reported:
                        child.reported = True
                        print(f"gateway cluster: {child.role} (pid {child.pid}) exited with "
                              f"{child.proc.returncode}", file=sys.stderr, flush=True)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.5)

    def describe(self) -> None:
        gateways = self.gateways()
        lines = [f"gateway cluster: front http://{self.args.host}:{self.args.port} "
                 f"(round-robin per connection over {len(gateways)} gateways)"]
        for child in self.children:
            lines.append(f"  {child.role:<10} {child.url:<30} pid {child.pid}")
        lines.append("Ctrl-C stops everything.")
        print("\n".join(lines), flush=True)

    # -- stop ------------------------------------------------------------------------------
    def stop(self, timeout: float | None = None) -> None:
        """SIGTERM the gateways (they drain), then the services and Redis; SIGKILL stragglers."""
        timeout = self.args.grace + 5 if timeout is None else timeout
        gateways = self.gateways()
        others = [c for c in self.children if c not in gateways]
        for group in (gateways, others):
            for child in group:
                if child.proc.poll() is None:
                    child.proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + timeout
            for child in group:
                try:
                    child.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    child.proc.kill()
                    child.proc.wait(timeout=5)
        shutil.rmtree(self.tmp, ignore_errors=True)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--replicas", type=int, default=3, help="gateway processes (default 3)")
    parser.add_argument("--port", type=int, default=8000, help="the front's port (default 8000)")
    parser.add_argument("--host", default="127.0.0.1", help="the front's address (default 127.0.0.1)")
    parser.add_argument("--config", help="gateway config file, used as is (default: the built-in "
                        "dev config with demo keys, pointed at the mock services)")
    parser.add_argument("--redis-port", type=int, default=0,
                        help="port of the redis-server to start (default: a free one)")
    parser.add_argument("--redis-url", help="use this Redis (redis://, redis+cluster://, "
                        "redis+sentinel://) instead of starting a redis-server")
    parser.add_argument("--gateway-port", type=int, default=0,
                        help="first gateway port, the others follow (default: free ports)")
    parser.add_argument("--services-port", type=int, default=None,
                        help="first mock service port: users, products, orders take it and the "
                        "next two (default: free ports, or 8001 with --config)")
    parser.add_argument("--grace", type=float, default=10.0,
                        help="seconds each gateway may drain on stop (default 10)")


def run(args: argparse.Namespace) -> int:
    """The `gateway cluster` command."""
    if args.replicas < 1:
        print("gateway cluster: --replicas must be at least 1", file=sys.stderr)
        return 2
    cluster = LocalCluster(args)
    # SIGTERM during start-up must still stop what was started.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        cluster.start()
        asyncio.run(cluster.serve())
        return 0
    except KeyboardInterrupt:
        return 0
    except (RuntimeError, OSError) as exc:
        print(f"gateway cluster: {exc}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the stop
        print("gateway cluster: stopping", file=sys.stderr, flush=True)
        cluster.stop()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
