"""Identity's schema: the `auth` block and its consumers. Composed into the whole file by
`gateway/config.py` (which also checks that each consumer's tier is a configured one)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from gateway.settings import Section

_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")


class ConsumerSettings(Section):
    """An API consumer. Keys are stored as SHA-256 hex digests, never in clear."""

    id: str = Field(min_length=1, max_length=128)
    tier: str = "default"
    key_sha256: str

    @field_validator("key_sha256")
    @classmethod
    def _hex(cls, value: str) -> str:
        if not _SHA256_HEX.fullmatch(value):
            raise ValueError("must be the 64-hex-digit SHA-256 of the key")
        return value.lower()


class AuthSettings(Section):
    mode: Literal["api_keys", "headers"] = "api_keys"
    consumers: list[ConsumerSettings] = Field(default_factory=list)
    hide_credentials: bool = Field(
        True, description="strip X-API-Key / Authorization: Bearer before proxying upstream"
    )
    admin_keys_sha256: list[str] = Field(default_factory=list)

    @field_validator("consumers")
    @classmethod
    def _distinct_keys(cls, value: list[ConsumerSettings]) -> list[ConsumerSettings]:
        digests = [c.key_sha256 for c in value]
        if len(digests) != len(set(digests)):
            raise ValueError("two consumers share the same key_sha256")
        return value

    @field_validator("admin_keys_sha256")
    @classmethod
    def _hexes(cls, value: list[str]) -> list[str]:
        for v in value:
            if not _SHA256_HEX.fullmatch(v):
                raise ValueError("each entry must be the 64-hex-digit SHA-256 of an admin key")
        return [v.lower() for v in value]
