"""Rate-limit windows: what one request is checked against, and what the check decided.

The algorithms themselves run in Redis (`lua/ratelimit.lua`) or, when the store is down, in
`gateway.ratelimit.local`; both speak the types below, so the policy and the headers do not
care where the counting happened.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

from gateway.store import hash_tag

# The script's algorithm codes (ARGV numbers).
ALGORITHM_CODES = {"sliding_log": 1, "sliding_window": 2}


class WindowSpec(NamedTuple):
    """`limit` requests per `window` seconds, counted by `algorithm` under `name`.

    `name` is the policy identifier in the RateLimit-Policy header; `scope` tells the windows of
    one consumer apart in Redis ("t" for the tier, "r<prefix>" for a route override).
    """

    name: str
    scope: str
    algorithm: str
    limit: int
    window: float  # seconds

    @property
    def window_ms(self) -> int:
        return max(1, round(self.window * 1000))

    @property
    def key_suffix(self) -> str:
        """What follows the consumer's hash tag in the window's key."""
        short = "sl" if self.algorithm == "sliding_log" else "sw"
        return f":{self.scope}:{short}:{self.window_ms}"

    def key(self, prefix: str, rate_key: str) -> str:
        """The window's Redis key; every key of one consumer shares the `{rate_key}` hash tag."""
        return f"{prefix}:rl:{{{hash_tag(rate_key)}}}{self.key_suffix}"


class WindowVerdict(NamedTuple):
    """One window's answer: allowed, units left, and seconds until reset (or retry)."""

    spec: WindowSpec
    allowed: bool
    remaining: int
    reset: float  # seconds: Retry-After when refused, else when the oldest unit leaves


class Decision(NamedTuple):
    """The verdict for one request over all its windows."""

    admitted: bool
    windows: tuple[WindowVerdict, ...]
    source: str  # "shared" (Redis), "local" (in-process fallback), "open" (store down, admitted)

    @property
    def retry_after(self) -> int:
        """Whole seconds (>= 1) until every refusing window would admit one more."""
        refused = [w.reset for w in self.windows if not w.allowed]
        return max(1, math.ceil(max(refused))) if refused else 0

    @property
    def tightest(self) -> WindowVerdict | None:
        """The most restrictive window: fewest units left, then the latest reset."""
        windows = self.windows
        if len(windows) < 2:
            return windows[0] if windows else None
        return min(windows, key=lambda w: (w.allowed, w.remaining, -w.reset))


def script_args(specs: Sequence[WindowSpec]) -> list[int]:
    """ARGV for `lua/ratelimit.lua`: algorithm code, limit, window in ms, per window."""
    args: list[int] = []
    for spec in specs:
        args += (ALGORITHM_CODES[spec.algorithm], spec.limit, spec.window_ms)
    return args


def parse_reply(specs: Sequence[WindowSpec], reply: Any) -> Decision:
    """Turn the script's flat integer list into a Decision; raises ValueError if malformed."""
    if len(reply) != 1 + 3 * len(specs):
        raise ValueError(f"ratelimit script returned {len(reply)} values for {len(specs)} windows")
    windows = tuple(
        WindowVerdict(spec, reply[i] == 1, int(reply[i + 1]), reply[i + 2] / 1000)
        for i, spec in zip(range(1, len(reply), 3), specs, strict=True)
    )
    return Decision(reply[0] == 1, windows, "shared")


def format_seconds(value: float) -> str:
    """A window length for names and headers: `60`, `1`, `0.5`."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"
