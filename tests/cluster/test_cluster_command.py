"""`gateway cluster`: Redis, the mock services and N gateways behind a round-robin front, on
loopback, and all of them stopped by SIGTERM."""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.cluster import wait_until
from tests.support.processes import ROOT, free_port, terminate

pytestmark = [pytest.mark.redis, pytest.mark.cluster]

ALICE = {"X-API-Key": "demo-key-alice"}  # the built-in dev config's demo consumer, 100/min
LISTENING = re.compile(r"^\s+(?P<role>[a-z]+(?: \d+)?)\s+(?P<url>\S+)\s+pid (?P<pid>\d+)$")


@dataclass
class Listening:
    role: str
    url: str
    pid: int


@dataclass
class RunningCluster:
    proc: subprocess.Popen[str]
    front: str
    members: list[Listening]
    stderr_path: str

    def gateways(self) -> list[Listening]:
        return [m for m in self.members if m.role.startswith("gateway")]


def _lines(proc: subprocess.Popen[str], out: queue.Queue[str]) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        out.put(line.rstrip("\n"))


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def running() -> Iterator[RunningCluster]:
    if not shutil.which("redis-server"):
        pytest.skip("redis-server is not installed")
    port = free_port()
    fd, stderr_path = tempfile.mkstemp(prefix="gw-cluster-cmd-", suffix=".log")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "cluster", "--replicas", "2", "--port", str(port),
         "--grace", "2"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=fd, text=True,
    )
    os.close(fd)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_lines, args=(proc, lines), daemon=True).start()
    members: list[Listening] = []
    front = ""
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=0.5)
            except queue.Empty:
                if proc.poll() is not None:
                    break
                continue
            if line.startswith("gateway cluster: front "):
                front = line.split()[3]
            elif match := LISTENING.match(line):
                members.append(Listening(match["role"], match["url"], int(match["pid"])))
            elif line.startswith("Ctrl-C stops everything"):
                break
        else:
            raise TimeoutError("gateway cluster did not report its members")
        if not front:
            log = Path(stderr_path).read_text()[-3000:]
            raise RuntimeError(f"gateway cluster did not start:\n{log}")
        yield RunningCluster(proc, front, members, stderr_path)
    finally:
        terminate(proc, timeout=30)
        for member in members:  # never leave a child behind, even when the command failed
            if alive(member.pid):
                os.kill(member.pid, signal.SIGKILL)


def test_cluster_command_spreads_shares_survives_a_kill_and_stops_everything(running: RunningCluster):
    roles = [m.role for m in running.members]
    assert roles == ["redis", "users", "products", "orders", "gateway 1", "gateway 2"]
    assert all(alive(m.pid) for m in running.members)
    assert running.front == f"http://127.0.0.1:{running.front.rsplit(':', 1)[1]}"

    # Round-robin per connection: each new connection goes to the next gateway.
    replicas = [httpx.get(running.front + "/", timeout=10).json()["replica"] for _ in range(4)]
    assert len(set(replicas)) == 2
    assert replicas[0] != replicas[1] and replicas[:2] == replicas[2:]

    # One rate-limit counter for the consumer, whichever gateway answers.
    answers = [httpx.get(running.front + "/api/users", headers=ALICE, timeout=10) for _ in range(4)]
    assert [r.status_code for r in answers] == [200] * 4
    assert [int(r.headers["x-ratelimit-remaining"]) for r in answers] == [99, 98, 97, 96]

    # A gateway crashes: the front skips it, nothing is refused, the count goes on.
    first = running.gateways()[0]
    os.kill(first.pid, signal.SIGKILL)
    time.sleep(0.2)
    after = [httpx.get(running.front + "/api/users", headers=ALICE, timeout=10) for _ in range(4)]
    assert [r.status_code for r in after] == [200] * 4
    assert [int(r.headers["x-ratelimit-remaining"]) for r in after] == [95, 94, 93, 92]

    wait_until(lambda: f"gateway 1 (pid {first.pid}) exited" in Path(running.stderr_path).read_text(),
               timeout=5, what="the command reporting the crash")

    # SIGTERM stops every process the command started, by PID, and exits 0.
    running.proc.send_signal(signal.SIGTERM)
    assert running.proc.wait(timeout=30) == 0
    assert [m.role for m in running.members if alive(m.pid)] == []


def test_cluster_command_rejects_zero_replicas():
    out = subprocess.run([sys.executable, "-m", "gateway.cli", "cluster", "--replicas", "0"],
                         cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert out.returncode == 2
    assert "--replicas must be at least 1" in out.stderr
