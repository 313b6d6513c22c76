"""Rate limiting: sliding windows in Redis shared by every replica, with a local fallback.

Its schema is `gateway.ratelimit.settings`. The policy is loaded on first use: `gateway.config`
imports the schema, and the policy imports `gateway.config`, so reading the schema must not
load the policy.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.ratelimit.policy import RateLimitPolicy

__all__ = ["RateLimitPolicy"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        value = getattr(importlib.import_module("gateway.ratelimit.policy"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
