"""The cache's schema: the `cache` block and a route's own `cache` switch and `ttl`.
Composed into the whole file by `gateway/config.py`."""

from __future__ import annotations

import re

from pydantic import Field, field_validator, model_validator

from gateway.settings import Section


class HeuristicSettings(Section):
    """RFC 9111 §4.2.2's heuristic freshness: a fraction of the time since `Last-Modified`."""

    fraction: float = Field(0.1, gt=0, le=1, description="of (Date - Last-Modified)")
    max: float = Field(86_400, gt=0, description="the longest heuristic lifetime, seconds")


class CacheSettings(Section):
    """The seed's `cache: {ttl: 300}`: freshness for responses that carry none of their own.

    `ttl: 0` stores only responses with explicit freshness (max-age, s-maxage, Expires).
    """

    enabled: bool = True
    ttl: float = Field(300, ge=0)
    heuristic: HeuristicSettings | None = Field(
        None, description="without explicit freshness, a heuristically cacheable response with "
                          "Last-Modified gets this fraction of its age instead of `ttl`")
    max_body_bytes: int = Field(1_048_576, ge=0, description="larger responses stream through unstored")
    max_bytes: int = Field(
        67_108_864, ge=0,
        description="bytes the cache may hold in Redis, cluster-wide (0: no budget, Redis' maxmemory decides)",
    )
    cdn_cache_control: bool = Field(
        True, description="honour CDN-Cache-Control (RFC 9213) over Cache-Control for what the "
                          "gateway stores")
    targeted_field: str | None = Field(
        None, description="a targeted field of our own name (RFC 9213 §2.1), e.g. "
                          "Gateway-Cache-Control: it takes precedence over CDN-Cache-Control")
    forward_targeted_fields: bool = Field(
        False, description="pass CDN-Cache-Control and the targeted field on to clients "
                           "(by default they are removed: they were for this cache)")
    lock_timeout: float = Field(5, gt=0, description="lease of a miss being filled, seconds")
    near_max_bytes: int = Field(
        16 * 1024 * 1024, ge=0,
        description="hot entries each gateway process keeps in memory, so a hit reads no body "
                    "from Redis (Redis still decides every hit); 0 turns it off")
    max_variants: int = Field(8, ge=1, description="Vary variants kept per URL and scope")
    stale_retention: float = Field(
        600, ge=0, description="seconds an entry is kept past freshness, to serve if the upstream fails"
    )
    pass_ttl: float = Field(
        30, gt=0, description="seconds an uncacheable URL goes straight upstream, without coalescing"
    )

    @field_validator("targeted_field")
    @classmethod
    def _field_name(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", value):
            raise ValueError(f"{value!r} is not a field name")
        if value is not None and value.lower() in ("cache-control", "cdn-cache-control"):
            raise ValueError("name a field of your own (Cache-Control and CDN-Cache-Control are read anyway)")
        return value

    @property
    def targeted(self) -> tuple[bytes, ...]:
        """The targeted fields in precedence order (RFC 9213 §2.2): our own, then CDN's."""
        names = [self.targeted_field.lower().encode()] if self.targeted_field else []
        if self.cdn_cache_control:
            names.append(b"cdn-cache-control")
        return tuple(names)

    @model_validator(mode="after")
    def _budget_holds_a_body(self) -> CacheSettings:
        if 0 < self.max_bytes < self.max_body_bytes:
            raise ValueError(
                f"max_bytes ({self.max_bytes}) must be at least max_body_bytes ({self.max_body_bytes}), "
                "or 0 for no budget"
            )
        return self


class RouteCache(Section):
    """A route's cache switch (`cache: false` turns it off) and its own default `ttl`."""

    enabled: bool = True
    ttl: float | None = Field(None, ge=0)
