"""A fixed-bucket latency histogram cheap enough for every request, and its quantiles."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Sequence

# Seconds. Fine at the low end, where a gateway's own time lives (sub-millisecond to a few ms).
BOUNDS: tuple[float, ...] = (
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.075,
    0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0,
)


class LatencyHistogram:
    """Counts per bucket (not cumulative; the last one is +Inf) and the sum, in seconds."""

    __slots__ = ("counts", "sum")

    def __init__(self, counts: Sequence[int] | None = None, total: float = 0.0) -> None:
        self.counts = list(counts) if counts is not None else [0] * (len(BOUNDS) + 1)
        self.sum = total

    def observe(self, seconds: float) -> None:
        # bisect_left puts a value equal to a bound into that bound's bucket (le = "<=").
        self.counts[bisect_left(BOUNDS, seconds)] += 1
        self.sum += seconds

    @property
    def count(self) -> int:
        return sum(self.counts)

    def add(self, other: LatencyHistogram) -> None:
        for i, n in enumerate(other.counts):
            self.counts[i] += n
        self.sum += other.sum

    def quantile(self, q: float) -> float | None:
        """The q-quantile in seconds, interpolated inside its bucket (as histogram_quantile does)."""
        return quantile(self.counts, q)

    def as_dict(self) -> dict[str, object]:
        return {"counts": list(self.counts), "sum": round(self.sum, 6)}

    @classmethod
    def from_dict(cls, data: object) -> LatencyHistogram:
        """Tolerant of a snapshot from another version: a wrong shape reads as empty."""
        if isinstance(data, dict):
            counts = data.get("counts")
            if isinstance(counts, list) and len(counts) == len(BOUNDS) + 1:
                return cls([int(c) for c in counts], float(data.get("sum") or 0.0))
        return cls()


def quantile(counts: Iterable[int], q: float) -> float | None:
    counts = list(counts)
    total = sum(counts)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for i, n in enumerate(counts):
        if n and seen + n >= rank:
            if i >= len(BOUNDS):  # +Inf bucket: the best we can say is "above the last bound"
                return BOUNDS[-1]
            lower = BOUNDS[i - 1] if i else 0.0
            return lower + (BOUNDS[i] - lower) * ((rank - seen) / n)
        seen += n
    return BOUNDS[-1]
