"""The circuit breaker's schema: the `circuit_breaker` block, which a service may override
(`services.<name>.circuit_breaker`, merged by `GatewayConfig.breaker_for`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from gateway.settings import Section


class ErrorRatioSettings(Section):
    """Open when the failure ratio over a rolling window exceeds `threshold`."""

    threshold: float = Field(0.5, gt=0, le=1)
    window: float = Field(30, gt=0, description="rolling window, seconds")
    min_requests: int = Field(20, ge=1)


class BreakerSettings(Section):
    """The seed's `circuit_breaker` block; a service may override any of it."""

    enabled: bool = True
    mode: Literal["consecutive", "error_ratio"] = "consecutive"
    failure_threshold: int = Field(5, ge=1, description="consecutive failures that open it")
    timeout: float = Field(60, gt=0, description="seconds open before half-open")
    half_open_timeout: float = Field(30, gt=0, description="lease of a half-open probe, seconds")
    half_open_max_calls: int = Field(1, ge=1)
    success_threshold: int = Field(1, ge=1)
    error_ratio: ErrorRatioSettings = ErrorRatioSettings()
    failure_statuses: list[int] = Field(default_factory=lambda: list(range(500, 600)))
    sync_interval: float = Field(
        2.0, gt=0, le=300,
        description="seconds between full reads of every breaker state into each replica's "
                    "board, repairing whatever the change messages missed (top level only)")

    @field_validator("failure_statuses")
    @classmethod
    def _statuses(cls, value: list[int]) -> list[int]:
        for status in value:
            if not 500 <= status <= 599:
                raise ValueError(f"only 5xx statuses can count as failures, got {status}")
        return value
