"""Names a package exports but loads on first use (PEP 562 module `__getattr__`).

A policy package's schema (`settings`) is imported by `gateway.config`, and its policy imports
`gateway.config`: so the package must not load its policy when the schema is read.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, homes: Mapping[str, str]) -> Callable[[str], Any]:
    """A module `__getattr__` for `package`: each name in `homes` from the module named there,
    imported when first asked for and then kept as a plain attribute."""

    def __getattr__(name: str) -> Any:
        home = homes.get(name)
        if home is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(home), name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__
