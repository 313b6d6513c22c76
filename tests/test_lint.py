"""House habits, enforced: ruff on the whole tree, mypy on the gateway, the benchmarks and the examples."""

from __future__ import annotations

import subprocess
import sys

from tests.support.processes import ROOT


def test_ruff_is_clean() -> None:
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "gateway", "services", "tests", "bench", "examples"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_is_clean_on_the_gateway_and_the_benchmarks() -> None:
    result = subprocess.run([sys.executable, "-m", "mypy", "gateway", "bench", "examples"], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
