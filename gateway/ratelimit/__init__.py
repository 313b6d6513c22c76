"""Rate limiting: sliding windows in Redis shared by every replica, with a local fallback."""

from gateway.ratelimit.policy import RateLimitPolicy

__all__ = ["RateLimitPolicy"]
