"""The cache's schema: the `cache` block and a route's own `cache` switch and `ttl`.
Composed into the whole file by `gateway/config.py`."""

from __future__ import annotations

from pydantic import Field, model_validator

from gateway.settings import Section


class CacheSettings(Section):
    """The seed's `cache: {ttl: 300}`: freshness for responses that carry none of their own.

    `ttl: 0` stores only responses with explicit freshness (max-age, s-maxage, Expires).
    """

    enabled: bool = True
    ttl: float = Field(300, ge=0)
    max_body_bytes: int = Field(1_048_576, ge=0, description="larger responses stream through unstored")
    max_bytes: int = Field(
        67_108_864, ge=0,
        description="bytes the cache may hold in Redis, cluster-wide (0: no budget, Redis' maxmemory decides)",
    )
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
