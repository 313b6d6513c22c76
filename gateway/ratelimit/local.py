"""The in-process fallback limiter, used while the shared store is down.

Each replica enforces `limit // live_replicas` (at least 1) on its own, so the cluster as a
whole stays near the configured limit without talking to anyone. The arithmetic is the same as
`lua/ratelimit.lua`, on this process's monotonic clock.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence

from gateway.ratelimit.windows import Decision, WindowSpec, WindowVerdict


class _Log:
    __slots__ = ("stamps",)

    def __init__(self) -> None:
        self.stamps: deque[float] = deque()


class _Counter:
    __slots__ = ("index", "current", "previous")

    def __init__(self) -> None:
        self.index = 0
        self.current = 0
        self.previous = 0


class LocalLimiter:
    """Per-process windows, bounded to `max_keys` consumers (least recently used go first)."""

    def __init__(
        self, *, max_keys: int = 50_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_keys = max_keys
        self.clock = clock
        self._state: OrderedDict[tuple[str, str], _Log | _Counter] = OrderedDict()

    def __len__(self) -> int:
        return len(self._state)

    def clear(self) -> None:
        """Forget everything (the shared store is back and counts again)."""
        self._state.clear()

    def check(self, rate_key: str, specs: Sequence[WindowSpec], divisor: int = 1) -> Decision:
        """Admit one request if every window allows it; consume in all of them or in none."""
        now = self.clock()
        divisor = max(1, divisor)
        verdicts: list[WindowVerdict] = []
        states: list[_Log | _Counter] = []
        for spec in specs:
            limit = max(1, spec.limit // divisor)
            # The verdict reports the share this replica enforces, so the headers stay honest.
            spec = spec._replace(limit=limit) if limit != spec.limit else spec
            state = self._get((rate_key, spec.key("", "")), spec.algorithm)
            if isinstance(state, _Log):
                verdicts.append(self._log(state, spec, limit, now))
            else:
                verdicts.append(self._counter(state, spec, limit, now))
            states.append(state)
        admitted = all(v.allowed for v in verdicts)
        if admitted:
            for state in states:
                if isinstance(state, _Log):
                    state.stamps.append(now)
                else:
                    state.current += 1
        else:
            verdicts = [v._replace(remaining=v.remaining + 1) if v.allowed else v for v in verdicts]
        return Decision(admitted, tuple(verdicts), "local")

    def _get(self, key: tuple[str, str], algorithm: str) -> _Log | _Counter:
        state = self._state.get(key)
        if state is None:
            state = _Log() if algorithm == "sliding_log" else _Counter()
            self._state[key] = state
            if len(self._state) > self.max_keys:
                self._state.popitem(last=False)
        else:
            self._state.move_to_end(key)
        return state

    @staticmethod
    def _log(state: _Log, spec: WindowSpec, limit: int, now: float) -> WindowVerdict:
        stamps = state.stamps
        while stamps and stamps[0] <= now - spec.window:
            stamps.popleft()
        count = len(stamps)
        if count < limit:
            reset = stamps[0] + spec.window - now if stamps else spec.window
            return WindowVerdict(spec, True, limit - count - 1, reset)
        reset = stamps[count - limit] + spec.window - now
        return WindowVerdict(spec, False, 0, reset)

    @staticmethod
    def _counter(state: _Counter, spec: WindowSpec, limit: int, now: float) -> WindowVerdict:
        window = spec.window
        index = math.floor(now / window)
        current = previous = 0
        if state.index == index:
            current, previous = state.current, state.previous
        elif state.index == index - 1:
            previous = state.current
        # Roll the buckets forward now, so admitting is just `current += 1`.
        state.index, state.current, state.previous = index, current, previous
        elapsed = (now - index * window) / window
        estimate = previous * (1 - elapsed) + current
        if estimate + 1 <= limit:
            return WindowVerdict(
                spec, True, math.floor(limit - estimate - 1), (index + 1) * window - now
            )
        if current + 1 <= limit:
            wait = (1 - (limit - current - 1) / previous - elapsed) * window
        else:
            wait = (1 - elapsed) * window + (1 - (limit - 1) / current) * window
        return WindowVerdict(spec, False, 0, max(wait, 0.001))
