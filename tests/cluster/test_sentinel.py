"""Redis Sentinel: the master dies mid-traffic, requests keep being answered (the policies fall
back to local decisions), and shared state resumes on the promoted replica."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import httpx
import pytest

from tests.cluster.conftest import api_key, policies_config
from tests.support.cluster import Gateways, SentinelSetup, Services, gateway_config, wait_until

pytestmark = [pytest.mark.redis, pytest.mark.cluster]


class Traffic(threading.Thread):
    """Anonymous GETs alternating over the gateways until stopped (bounded: 2,000 requests)."""

    def __init__(self, gateways: Gateways, path: str = "/api/users") -> None:
        super().__init__(daemon=True)
        self.urls = [g.url + path for g in gateways.replicas]
        self.statuses: list[int | str] = []
        self.halt = threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=10) as client:
            for i in range(2000):
                if self.halt.is_set():
                    return
                try:
                    self.statuses.append(client.get(self.urls[i % len(self.urls)]).status_code)
                except httpx.HTTPError as exc:
                    self.statuses.append(type(exc).__name__)

    def stop(self) -> list[int | str]:
        self.halt.set()
        self.join(timeout=20)
        return self.statuses


@pytest.fixture
def sentinel() -> Iterator[SentinelSetup]:
    with SentinelSetup() as setup:
        yield setup


def test_master_failover_mid_traffic(services: Services, sentinel: SentinelSetup):
    config = gateway_config(services, sentinel.url, **policies_config())
    key = api_key("sentinel")
    with Gateways(config, replicas=2) as gateways:
        before = [httpx.get(gateways[i % 2].url + "/api/users", headers=key, timeout=10)
                  for i in range(3)]
        assert [int(r.headers["x-ratelimit-remaining"]) for r in before] == [9, 8, 7]
        assert sentinel.master.command("KEYS", "gw:rl:{c:sentinel}*"), "counted on the master"

        traffic = Traffic(gateways)
        traffic.start()
        wait_until(lambda: len(traffic.statuses) >= 20, what="traffic flowing")
        old_master = sentinel.master.port
        sentinel.master.kill()  # SIGKILL: a crash, not a shutdown
        assert sentinel.replica is not None and sentinel.sentinel is not None
        promoted = sentinel.replica
        wait_until(lambda: sentinel.sentinel.master_port() == promoted.port,  # type: ignore[union-attr]
                   timeout=20, interval=0.2, what="the sentinel promoting the replica")
        wait_until(lambda: all(httpx.get(g.url + "/health", timeout=5).json()["store"]["available"]
                               for g in gateways.replicas),
                   timeout=15, interval=0.2, what="both gateways back on the shared store")
        statuses = traffic.stop()
        assert old_master != promoted.port
        # Every request was answered while the master was gone, none with a 5xx.
        assert len(statuses) >= 40
        assert set(statuses) == {200}, sorted(set(map(str, statuses)))

        # Shared state resumes on the promoted replica: one counter again for both gateways,
        # written there.
        window = promoted.command("KEYS", "gw:rl:{c:sentinel}*")
        state_before = promoted.command("HGETALL", window) if window else ""
        after = [httpx.get(gateways[i % 2].url + "/api/users", headers=key, timeout=10)
                 for i in range(4)]
        assert all(r.status_code == 200 for r in after)
        remaining = [int(r.headers["x-ratelimit-remaining"]) for r in after]
        assert remaining == list(range(remaining[0], remaining[0] - 4, -1)), remaining
        window = promoted.command("KEYS", "gw:rl:{c:sentinel}*")
        assert window, "the consumer's window is written on the promoted replica"
        assert promoted.command("HGETALL", window) != state_before
