"""Rate limiting: sliding windows in Redis shared by every replica, with a local fallback.

Its schema is `gateway.ratelimit.settings`. The policy is loaded on first use: `gateway.config`
imports the schema, and the policy imports `gateway.config`, so reading the schema must not
load the policy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.lazy import lazy_exports

if TYPE_CHECKING:
    from gateway.ratelimit.policy import RateLimitPolicy

__all__ = ["RateLimitPolicy"]


__getattr__ = lazy_exports(__name__, {"RateLimitPolicy": "gateway.ratelimit.policy"})
