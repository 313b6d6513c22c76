"""The wheel: every package and every Lua script ships, so `pip install pygateway` starts."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def listed_packages() -> set[str]:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    return set(config["packages"])


def test_every_package_of_the_checkout_is_listed() -> None:
    # The packages are listed, not discovered (lua/ is mapped to gateway.lua): a new
    # subpackage left out of the list would be missing from the wheel.
    found = {
        ".".join(p.parent.relative_to(REPO).parts)
        for top in ("gateway", "services")
        for p in (REPO / top).rglob("__init__.py")
    }
    assert listed_packages() == found | {"gateway.lua"}


@pytest.mark.slow
def test_the_wheel_carries_the_lua_scripts_and_the_static_files(tmp_path: Path) -> None:
    # Pure Python here (quick): the compiled wheel is built and tested by deploy/wheel-check.sh.
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(REPO)],
                   check=True, capture_output=True, timeout=300,
                   env={**os.environ, "GATEWAY_PURE_PYTHON": "1"})
    (wheel,) = tmp_path.glob("pygateway-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    scripts = sorted(p.name for p in (REPO / "lua").glob("*.lua"))
    assert scripts, "no Lua scripts in lua/"
    assert {f"gateway/lua/{name}" for name in scripts} <= names
    assert "gateway/lua/__init__.py" in names
    assert "gateway/dev.yaml" in names and "gateway/static/dashboard.js" in names
    assert not any(n.startswith("lua/") or n.startswith("tests/") for n in names)
    # The license the README and pyproject name, in the wheel's metadata.
    license_file = next(n for n in names if n.endswith(".dist-info/licenses/LICENSE") or n.endswith(".dist-info/LICENSE"))
    assert "Apache License" in zipfile.ZipFile(wheel).read(license_file).decode()


def test_the_license_is_the_one_the_readme_and_pyproject_name() -> None:
    text = (REPO / "LICENSE").read_text()
    assert text.startswith("Apache License") and "Version 2.0, January 2004" in text
    assert 'license = {text = "Apache-2.0"}' in (REPO / "pyproject.toml").read_text()
    assert "Apache-2.0" in (REPO / "README.md").read_text()
