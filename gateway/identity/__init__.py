"""Who is calling: API keys to consumers and tiers (`policy`), and the `auth` schema (`settings`).

The names of the policy are loaded on first use: `gateway.config` imports the schema, and the
policy imports `gateway.config`, so reading the schema must not load the policy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.lazy import lazy_exports

if TYPE_CHECKING:
    from gateway.identity.policy import (
        ADMIN,
        ANONYMOUS_TIER,
        DEFAULT_TIER,
        MAX_USER_ID,
        IdentityPolicy,
        admin_caller,
        admin_from_headers,
        admin_key_matches,
        admin_required,
        anonymous,
        bearer_token,
        key_digest,
        presented_key,
    )

__all__ = [
    "ADMIN",
    "ANONYMOUS_TIER",
    "DEFAULT_TIER",
    "MAX_USER_ID",
    "IdentityPolicy",
    "admin_caller",
    "admin_from_headers",
    "admin_key_matches",
    "admin_required",
    "anonymous",
    "bearer_token",
    "key_digest",
    "presented_key",
]


__getattr__ = lazy_exports(__name__, dict.fromkeys(__all__, "gateway.identity.policy"))
