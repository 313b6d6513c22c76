"""Builds the request path's hot modules as C extensions with mypyc, for wheels and images.

pyproject.toml holds all the metadata; this file only adds the compiled modules. A wheel
(`pip install .`, `pip wheel .`, the Dockerfile) compiles COMPILED with mypyc: the same code,
type-checked and turned into C, ~30% less CPU per request for the engine. An editable install
(`pip install -e .`, the README's commands) stays pure Python, so an edit takes effect at once
and no stale extension can shadow the source; `GATEWAY_COMPILE=1` compiles it in place anyway
(then rebuild after every edit), `GATEWAY_PURE_PYTHON=1` keeps a wheel pure (a platform without
a C compiler). The compiled and the pure build behave alike: CI runs the tests on both
(deploy/wheel-check.sh).
"""

from __future__ import annotations

import os
import sys

from setuptools import setup

# The engine: every request's bytes go through these. Their imports of the rest of the
# gateway are type-checked, not compiled.
COMPILED = [
    "gateway/engine/wire.py",
    "gateway/engine/body.py",
    "gateway/engine/server.py",
    "gateway/engine/client.py",
]

_BUILDS = {"bdist_wheel", "build", "build_ext", "install"}


def _compile() -> bool:
    if os.environ.get("GATEWAY_PURE_PYTHON") == "1":
        return False
    if os.environ.get("GATEWAY_COMPILE") == "1":
        return True
    # `editable_wheel` (pip install -e) and the metadata steps stay pure and quick.
    return bool(_BUILDS.intersection(sys.argv)) and "editable_wheel" not in sys.argv


def ext_modules() -> list:
    if not _compile():
        return []
    from mypyc.build import mypycify

    here = os.path.dirname(os.path.abspath(__file__))
    return mypycify(
        [f"--config-file={os.path.join(here, 'mypyc.ini')}", *COMPILED],
        opt_level="3",
        group_name="gateway_native",
    )


setup(ext_modules=ext_modules())
