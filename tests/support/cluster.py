"""Multi-process topologies for tests: a local Redis Cluster, a Sentinel setup, N gateways.

Built on `tests.support.processes` (RedisServer, MockService, GatewayProcess): every process
listens on an ephemeral loopback port and is stopped by its PID.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import httpx

from tests.support.processes import (
    REDIS_SERVER,
    GatewayProcess,
    MockService,
    Process,
    RedisServer,
    free_port,
    services_config,
)

SERVICES = ("users", "products", "orders")


def wait_until(check: Any, timeout: float = 15.0, interval: float = 0.05, what: str = "") -> Any:
    """Poll `check()` until it returns something truthy; its value is returned."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except Exception as exc:  # noqa: BLE001 - the condition is simply not met yet
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    raise TimeoutError(f"{what or check} not met within {timeout}s (last: {last!r})")


class RedisCluster:
    """A local Redis Cluster: `masters` cluster-enabled redis-servers, slots spread evenly."""

    def __init__(self, masters: int = 3, node_timeout_ms: int = 2000) -> None:
        self.nodes: list[RedisServer] = []
        try:
            for _ in range(masters):
                # The bus port defaults to port + 10000, past 65535 for high ephemeral ports.
                self.nodes.append(RedisServer(extra=[
                    "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                    "--cluster-node-timeout", str(node_timeout_ms),
                    "--cluster-port", str(free_port()),
                ]))
            created = subprocess.run(
                ["redis-cli", "--cluster", "create",
                 *[f"127.0.0.1:{n.port}" for n in self.nodes],
                 "--cluster-replicas", "0", "--cluster-yes"],
                capture_output=True, text=True, timeout=30,
            )
            if created.returncode != 0:
                raise RuntimeError(f"redis-cli --cluster create failed:\n{created.stdout}{created.stderr}")
            for node in self.nodes:
                wait_until(lambda n=node: "cluster_state:ok" in n.command("CLUSTER", "INFO"),
                           what=f"cluster_state:ok on {node.port}")
        except BaseException:
            self.stop()
            raise

    @property
    def url(self) -> str:
        """Two seed nodes are enough: the client discovers the rest from CLUSTER SLOTS."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes[:2])

    def node_for(self, key: str) -> RedisServer:
        """The master holding `key`'s slot."""
        slot = int(self.nodes[0].command("CLUSTER", "KEYSLOT", key))
        for line in self.nodes[0].command("CLUSTER", "NODES").splitlines():
            fields = line.split()
            port = int(fields[1].split("@")[0].rsplit(":", 1)[1])
            for span in fields[8:]:
                lo, _, hi = span.partition("-")
                if lo.isdigit() and int(lo) <= slot <= int(hi or lo):
                    return next(n for n in self.nodes if n.port == port)
        raise LookupError(f"no node serves slot {slot}")

    def get(self, key: str) -> str:
        return self.node_for(key).command("GET", key)

    def keys(self, pattern: str = "*") -> list[str]:
        found: list[str] = []
        for node in self.nodes:
            found += [k for k in node.command("KEYS", pattern).splitlines() if k]
        return found

    def flush(self) -> None:
        for node in self.nodes:
            node.command("FLUSHALL")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> RedisCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class SentinelServer(Process):
    """One redis sentinel (`redis-server sentinel.conf --sentinel`) watching `master_name`."""

    def __init__(self, master_port: int, master_name: str = "mymaster", *,
                 down_after_ms: int = 1000, failover_timeout_ms: int = 3000) -> None:
        self.port = free_port()
        self.master_name = master_name
        self.dir = tempfile.mkdtemp(prefix="gw-sentinel-")
        self.conf = Path(self.dir) / "sentinel.conf"  # sentinel rewrites it: must be writable
        self.conf.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {self.dir}\n"
            f"sentinel monitor {master_name} 127.0.0.1 {master_port} 1\n"
            f"sentinel down-after-milliseconds {master_name} {down_after_ms}\n"
            f"sentinel failover-timeout {master_name} {failover_timeout_ms}\n"
            f"sentinel parallel-syncs {master_name} 1\n"
        )
        self.proc = subprocess.Popen([REDIS_SERVER, str(self.conf), "--sentinel"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: self.command("PING") == "PONG", what=f"sentinel on {self.port}")

    def command(self, *args: str) -> str:
        out = subprocess.run(["redis-cli", "-p", str(self.port), *args], capture_output=True,
                             text=True, timeout=10)
        return out.stdout.strip()

    def master_port(self) -> int:
        reply = self.command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master_name).split()
        return int(reply[1])


class SentinelSetup:
    """A master, one replica and one sentinel (quorum 1), with a short failure detection."""

    def __init__(self, master_name: str = "mymaster") -> None:
        self.master_name = master_name
        self.master = RedisServer()
        self.replica: RedisServer | None = None
        self.sentinel: SentinelServer | None = None
        try:
            self.replica = RedisServer(extra=["--replicaof", "127.0.0.1", str(self.master.port)])
            wait_until(lambda: "master_link_status:up" in self.replica.command("INFO", "replication"),  # type: ignore[union-attr]
                       what="replica in sync")
            self.sentinel = SentinelServer(self.master.port, master_name)
            # The sentinel learns of the replica from the master's INFO; it can only promote
            # a replica it knows.
            wait_until(lambda: str(self.replica.port) in self.sentinel.command(  # type: ignore[union-attr]
                "SENTINEL", "REPLICAS", master_name), what="sentinel knows the replica")
        except BaseException:
            self.stop()
            raise

    @property
    def url(self) -> str:
        assert self.sentinel is not None
        return f"redis+sentinel://127.0.0.1:{self.sentinel.port}/{self.master_name}"

    def stop(self) -> None:
        for proc in (self.sentinel, self.replica, self.master):
            if proc is not None:
                proc.stop()

    def __enter__(self) -> SentinelSetup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Services:
    """The three mock services as processes (a context manager)."""

    def __init__(self, names: tuple[str, ...] = SERVICES) -> None:
        self.by_name: dict[str, MockService] = {}
        try:
            for name in names:
                self.by_name[name] = MockService(name)
        except BaseException:
            self.stop()
            raise

    def __getitem__(self, name: str) -> MockService:
        return self.by_name[name]

    def stop(self) -> None:
        for svc in self.by_name.values():
            svc.stop()

    def __enter__(self) -> Services:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


PUBLIC_HOST = "gateway.test"  # the Host clients send, whichever replica the balancer picks


class Gateways:
    """N gateway processes (`gateway run`) with one config, sharing one store."""

    def __init__(self, config: dict[str, Any], replicas: int = 3) -> None:
        self.config = config
        self.replicas: list[GatewayProcess] = []
        try:
            for _ in range(replicas):
                self.replicas.append(GatewayProcess(config))
        except BaseException:
            self.stop()
            raise

    def __getitem__(self, index: int) -> GatewayProcess:
        return self.replicas[index]

    def __len__(self) -> int:
        return len(self.replicas)

    def alive(self) -> list[GatewayProcess]:
        return [g for g in self.replicas if g.alive()]

    def metrics(self, index: int = 0) -> dict[str, Any]:
        with urllib.request.urlopen(self.replicas[index].admin_url + "/metrics", timeout=10) as resp:
            return dict(json.load(resp))

    def wired(self, policy: str) -> bool:
        """True when `policy` ("rate_limit", "cache", "circuit_breaker") runs in the chain, as
        a client can tell: its response header, or the breaker's state in /health."""
        first = self.replicas[0].url
        if policy == "circuit_breaker":
            services = httpx.get(first + "/health", timeout=10).json()["services"]
            return any("circuit_breaker" in s for s in services.values())
        header = {"rate_limit": "x-ratelimit-limit", "cache": "x-cache"}[policy]
        route = next(iter(self.config["routes"]))
        return header in httpx.get(first + route, timeout=10).headers

    def get(self, index: int, path: str, **kw: Any) -> httpx.Response:
        """A GET of `path` through gateway `index` with the cluster's public Host, as through
        the load balancer (the cache keys entries on the host the origin is told)."""
        headers = {"host": PUBLIC_HOST, **kw.pop("headers", {})}
        return httpx.get(self.replicas[index].url + path, headers=headers, timeout=10, **kw)

    def cache_status(self, index: int, path: str) -> str | None:
        """The X-Cache of a GET of `path` through gateway `index`."""
        return self.get(index, path).headers.get("x-cache")

    def breaker_state(self, index: int, service: str) -> str | None:
        """The service's breaker state as gateway `index` reports it in /health."""
        health = httpx.get(self.replicas[index].url + "/health", timeout=10).json()
        return (health["services"][service].get("circuit_breaker") or {}).get("state")

    def stop(self) -> None:
        for g in self.replicas:
            g.stop()

    def __enter__(self) -> Gateways:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def gateway_config(services: Services, redis_url: str, **extra: Any) -> dict[str, Any]:
    """`services_config` on a shared store, with short store timeouts (tests fail over fast)."""
    redis = {"url": redis_url, "timeout": 0.5, "connect_timeout": 0.5, "probe_interval": 0.2}
    redis.update(extra.pop("redis", {}))
    return services_config(services.by_name, redis=redis, **extra)


def round_robin(gateways: list[GatewayProcess], path: str, count: int,
                headers: dict[str, str] | None = None) -> list[httpx.Response]:
    """`count` GETs of `path`, request i going to gateway i mod N (one new connection each)."""
    out = []
    for i in range(count):
        out.append(httpx.get(gateways[i % len(gateways)].url + path, headers=headers, timeout=10))
    return out
