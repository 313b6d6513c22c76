"""Rate-limit response header fields.

* `RateLimit-Policy` and `RateLimit`, structured-field lists from draft-ietf-httpapi-ratelimit-
  headers (-08 and later, current through -11): each member is the policy's quoted name with
  parameters; the policy gives `q` (quota) and `w` (window, seconds), the live field `r`
  (remaining) and `t` (seconds until the quota resets, or until one more unit fits when it is
  exhausted). Several windows are several members, comma-separated::

      RateLimit-Policy: "premium-1s";q=20;w=1, "premium-60s";q=1000;w=60
      RateLimit: "premium-1s";r=19;t=1, "premium-60s";r=995;t=41

* `X-RateLimit-Limit` / `-Remaining` / `-Reset` (delta seconds), the de-facto trio most clients
  read, for the most restrictive window only.
* `Retry-After` (whole seconds, >= 1) on a 429.
"""

from __future__ import annotations

import math
import re
from functools import lru_cache

from gateway.context import Headers
from gateway.ratelimit.windows import Decision, WindowSpec

_UNSAFE = re.compile(r'[^\x20-\x7e]|["\\]')


@lru_cache(maxsize=1024)  # policy names come from the config: a handful
def sf_string(value: str) -> str:
    """A structured-field sf-string: printable ASCII only, quotes and backslashes escaped."""
    return '"' + _UNSAFE.sub(lambda m: "\\" + m.group() if m.group() in '"\\' else "_", value) + '"'


def _seconds(value: float) -> int:
    return max(0, math.ceil(value))


def policy_field(specs: tuple[WindowSpec, ...] | list[WindowSpec]) -> bytes:
    """`RateLimit-Policy`: the quota of every window that applies."""
    return ", ".join(
        f"{sf_string(s.name)};q={s.limit};w={max(1, math.ceil(s.window))}" for s in specs
    ).encode()


def ratelimit_headers(decision: Decision, policy: bytes | None = None) -> Headers:
    """`RateLimit-Policy` (`policy` if already known), `RateLimit` and `X-RateLimit-*`."""
    if not decision.windows:
        return []
    live = ", ".join(
        f"{sf_string(w.spec.name)};r={max(0, w.remaining)};t={_seconds(w.reset)}"
        for w in decision.windows
    )
    tight = decision.tightest
    assert tight is not None
    return [
        (b"ratelimit-policy", policy or policy_field([w.spec for w in decision.windows])),
        (b"ratelimit", live.encode()),
        (b"x-ratelimit-limit", str(tight.spec.limit).encode()),
        (b"x-ratelimit-remaining", str(max(0, tight.remaining)).encode()),
        (b"x-ratelimit-reset", str(_seconds(tight.reset)).encode()),
    ]


def retry_after(seconds: int) -> tuple[bytes, bytes]:
    return (b"retry-after", str(max(1, seconds)).encode())
