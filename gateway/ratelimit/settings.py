"""The rate limiter's schema: `rate_limit` (the policy), `rate_limits` (the tiers) and a route's
own `rate_limit` windows. Composed into the whole file by `gateway/config.py`."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from gateway.settings import Section, http_methods

Algorithm = Literal["sliding_window", "sliding_log"]


class RateWindow(Section):
    """`limit` requests per `window` seconds."""

    limit: int = Field(ge=1)
    window: float = Field(gt=0)


class TierSettings(Section):
    """A tier's windows; the seed's plain number means that many requests per minute."""

    windows: list[RateWindow] = Field(min_length=1)
    algorithm: Algorithm | None = None

    @field_validator("windows")
    @classmethod
    def _distinct(cls, value: list[RateWindow]) -> list[RateWindow]:
        return _distinct_windows(value)


class RouteRateLimit(Section):
    """A route's extra windows, applied on top of the consumer's tier (both must allow)."""

    windows: list[RateWindow] = Field(min_length=1)
    methods: list[str] | None = None
    algorithm: Algorithm | None = None

    @field_validator("windows")
    @classmethod
    def _distinct(cls, value: list[RateWindow]) -> list[RateWindow]:
        return _distinct_windows(value)

    @field_validator("methods")
    @classmethod
    def _methods(cls, value: list[str] | None) -> list[str] | None:
        return http_methods(value)


def _distinct_windows(value: list[RateWindow]) -> list[RateWindow]:
    # One counter per window length: two windows of the same length would share a key.
    lengths = [round(w.window * 1000) for w in value]
    if len(lengths) != len(set(lengths)):
        raise ValueError("each window length may appear only once")
    return value


class RateLimitSettings(Section):
    enabled: bool = True
    algorithm: Algorithm = "sliding_window"
    on_store_failure: Literal["open", "closed", "local"] = "local"
    headers: bool = True
    heartbeat_interval: float = Field(
        2.0, gt=0, description="seconds between replica heartbeats (live count for 'local')"
    )
    usage_flush_interval: float = Field(
        1.0, gt=0, description="seconds between flushes of per-consumer usage counters to Redis"
    )
    usage_max_consumers: int = Field(
        10_000, ge=1, description="consumers tracked in the usage hash; later ones count as '_other'"
    )


def default_tiers() -> dict[str, TierSettings]:
    """The tiers when `rate_limits` is not given: the seed's 100 / 50 / 1000 per minute."""
    return {
        "default": TierSettings(windows=[RateWindow(limit=100, window=60)]),
        "anonymous": TierSettings(windows=[RateWindow(limit=50, window=60)]),
        "premium": TierSettings(windows=[RateWindow(limit=1000, window=60)]),
    }


def tier_short_form(spec: Any) -> Any:
    """A tier as written: a number (per minute) or a list of windows, as the mapping it means."""
    if isinstance(spec, bool):
        return spec  # let validation name it
    if isinstance(spec, int | float):
        return {"windows": [{"limit": spec, "window": 60}]}
    if isinstance(spec, list):
        return {"windows": spec}
    return spec
