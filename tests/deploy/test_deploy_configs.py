"""The gateway configs shipped for compose and Kubernetes load with the gateway's own validator."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gateway.config import load_config

REPO = Path(__file__).resolve().parents[2]
CONFIGS = {
    "compose": REPO / "deploy" / "compose" / "gateway.yaml",
    "k8s": REPO / "deploy" / "k8s" / "gateway.yaml",
}


@pytest.mark.parametrize("path", CONFIGS.values(), ids=CONFIGS.keys())
def test_config_is_valid(path: Path) -> None:
    # environ={}: the developer's GATEWAY_* variables must not change the verdict.
    config = load_config(path, environ={})
    assert config.redis.url == "redis://redis:6379/0"
    assert set(config.services) == {"users", "products", "orders"}


@pytest.mark.parametrize("path", CONFIGS.values(), ids=CONFIGS.keys())
def test_check_config_command_accepts_it(path: Path) -> None:
    if importlib.util.find_spec("gateway.cli") is None:
        pytest.skip("gateway.cli not written yet")
    console_script = Path(sys.executable).parent / "gateway"
    result = subprocess.run(
        [str(console_script), "check-config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_and_k8s_route_alike() -> None:
    compose, k8s = (yaml.safe_load(p.read_text()) for p in CONFIGS.values())
    assert compose["routes"] == k8s["routes"]
    assert compose["services"] == k8s["services"]
