"""The breaker state in Redis, shared by every replica; every transition is one Lua call.

Keys of a service share the hash tag `{<service>}` (braces in the name percent-encoded), so
one script sees all of its targets (and runs on Redis Cluster). Per target:

    <prefix>:cb:{<service>}:s:<target>   hash: state, open_until, failures, successes,
                                         lease_seq, last_from/last_to/last_at/last_reason
    <prefix>:cb:{<service>}:w:<target>   hash: rolling window buckets s:<n> / f:<n>
    <prefix>:cb:{<service>}:l:<target>   sorted set: probe leases scored by their expiry

Every change of a state (and of an open target's open time) is published on the channel
`<prefix>:cb:changes` by the script that makes it, and the scripts' replies carry the same
message, so the replica that made a change applies it at once and the others within a
pub/sub delivery (see `gateway/breaker/board.py`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from gateway.breaker.state import (
    Admission,
    BreakerRules,
    BreakerState,
    OutcomeRun,
    ServiceView,
    TargetView,
    Transition,
)
from gateway.store import Pending, Store, StoreBatch, StoreError, hash_tag

_CODES = (BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN)

PROBE_RELEASE, PROBE_SUCCESS, PROBE_FAILURE = 0, 1, 2


class TargetKeys(NamedTuple):
    state: str
    window: str
    lease: str


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class SharedBreaker:
    """Breakers of every service, kept in the store; identical for all replicas."""

    def __init__(self, store: Store, key_prefix: str, targets: Mapping[str, Sequence[str]],
                 rules: Mapping[str, BreakerRules],
                 changed: Callable[[str], None] | None = None) -> None:
        self.store = store
        self.channel = f"{key_prefix}:cb:changes"
        self.changed = changed  # gets each change message this replica's calls made
        self.rules = rules
        self.targets = {service: list(urls) for service, urls in targets.items()}
        self.keys: dict[str, list[TargetKeys]] = {}
        for service, urls in self.targets.items():
            base = f"{key_prefix}:cb:{{{hash_tag(service)}}}"
            self.keys[service] = [TargetKeys(f"{base}:s:{u}", f"{base}:w:{u}", f"{base}:l:{u}")
                                  for u in urls]
        self._read_keys = {s: [k.state for k in keys] for s, keys in self.keys.items()}
        self._acquire_keys = {s: [x for k in keys for x in (k.state, k.lease)]
                              for s, keys in self.keys.items()}

    # -- the hot path ------------------------------------------------------------------------
    def stage_read(self, batch: StoreBatch, service: str) -> Pending:
        """Put the read of every target's state on the request's one round trip."""
        return batch.eval(self.store.script("breaker_read"), self._read_keys[service], ())

    @staticmethod
    def parse_read(reply: Sequence[Any]) -> ServiceView:
        return ServiceView(tuple(view for view, _ in SharedBreaker.parse_versioned(reply)))

    @staticmethod
    def parse_versioned(reply: Sequence[Any]) -> list[tuple[TargetView, int]]:
        """Each target's view with its version (`breaker_read` gives four numbers per target)."""
        return [
            (TargetView(_CODES[int(reply[i])], int(reply[i + 1]), int(reply[i + 2])), int(reply[i + 3]))
            for i in range(1, len(reply), 4)
        ]

    def stage_read_all(self, batch: StoreBatch) -> dict[str, Pending]:
        """Every service's read on one batch (the board's resync)."""
        script = self.store.script("breaker_read")
        return {service: batch.eval(script, keys, ()) for service, keys in self._read_keys.items()}

    def _changed(self, message: Any) -> None:
        if self.changed is not None:
            self.changed(_text(message))

    # -- the rare path -----------------------------------------------------------------------
    async def acquire(self, service: str) -> tuple[Admission, list[Transition]]:
        """Move due targets to half-open and take a probe lease if one is free (atomic)."""
        rules = self.rules[service]
        reply = await self.store.eval(self.store.script("breaker_acquire"),
                                      self._acquire_keys[service],
                                      (rules.half_open_max_calls, rules.lease_ms, self.channel))
        kind, index, lease, retry = (int(x) for x in reply[:4])
        transitions = self._transitions(service, reply[4:])
        if kind == 0:
            return Admission("closed", index - 1), transitions
        if kind == 1:
            return Admission("probe", index - 1, lease, state=BreakerState.HALF_OPEN), transitions
        state = BreakerState.HALF_OPEN if kind == 3 else BreakerState.OPEN
        return Admission("rejected", retry_after_ms=retry, state=state), transitions

    def _transitions(self, service: str, flat: Sequence[Any]) -> list[Transition]:
        urls = self.targets[service]
        transitions = []
        for i in range(0, len(flat), 5):
            self._changed(flat[i + 4])
            transitions.append(Transition(service, urls[int(flat[i]) - 1], _text(flat[i + 1]),
                                          _text(flat[i + 2]), _text(flat[i + 3])))
        return transitions

    # -- recording ---------------------------------------------------------------------------
    async def record(self, runs: Mapping[tuple[str, int], OutcomeRun]
                     ) -> tuple[list[Transition], dict[tuple[str, int], OutcomeRun]]:
        """Count batched outcomes, one pipeline for all targets.

        Returns the transitions made and the runs that could not be stored (for the local
        breaker to count instead)."""
        batch = self.store.batch()
        script = self.store.script("breaker_record")
        staged: list[tuple[tuple[str, int], OutcomeRun, Pending]] = []
        for (service, index), run in runs.items():
            rules = self.rules[service]
            keys = self.keys[service][index]
            args = (run.successes, run.failures, run.leading, run.longest, run.trailing,
                    1 if rules.error_ratio_mode else 0, rules.failure_threshold, rules.open_ms,
                    rules.ratio_threshold, rules.window_ms, rules.min_requests, self.channel)
            staged.append(((service, index), run, batch.eval(script, (keys.state, keys.window), args)))
        await batch.execute()
        transitions: list[Transition] = []
        failed: dict[tuple[str, int], OutcomeRun] = {}
        for (service, index), run, pending in staged:
            try:
                reply = pending.result()
            except StoreError:
                failed[(service, index)] = run
                continue
            transitions.extend(self._one(service, index, reply))
        return transitions, failed

    async def settle_probe(self, service: str, index: int, lease: int, outcome: int) -> list[Transition]:
        """Count a probe's result at once: it decides between closed and open again."""
        rules = self.rules[service]
        keys = self.keys[service][index]
        reply = await self.store.eval(self.store.script("breaker_probe"),
                                      (keys.state, keys.lease, keys.window),
                                      (lease, outcome, rules.success_threshold, rules.open_ms,
                                       self.channel))
        return self._one(service, index, reply)

    async def merge_open(self, service: str, index: int, remaining_ms: int) -> list[Transition]:
        """Make a locally opened breaker known to the cluster (after the store came back)."""
        keys = self.keys[service][index]
        reply = await self.store.eval(self.store.script("breaker_merge"), (keys.state,),
                                      (max(1, remaining_ms), self.channel))
        return self._one(service, index, reply)

    def _one(self, service: str, index: int, reply: Sequence[Any]) -> list[Transition]:
        code = int(reply[0]) if reply else 0
        if code == 2:  # changed without a transition (an open time extended)
            self._changed(reply[1])
        if code != 1:
            return []
        self._changed(reply[4])
        return [Transition(service, self.targets[service][index], _text(reply[1]),
                           _text(reply[2]), _text(reply[3]))]

    # -- visibility --------------------------------------------------------------------------
    async def metrics(self) -> dict[str, dict[str, Any]]:
        """Per service and target: state, failures, recent counts, last transition."""
        batch = self.store.batch()
        script = self.store.script("breaker_metrics")
        pendings = {
            service: batch.eval(script, [x for k in keys for x in k],
                                (self.rules[service].window_ms,))
            for service, keys in self.keys.items()
        }
        await batch.execute()
        out: dict[str, dict[str, Any]] = {}
        for service, pending in pendings.items():
            reply = pending.result()
            now = int(reply[0])
            targets: dict[str, dict[str, Any]] = {}
            for url, i in zip(self.targets[service], range(1, len(reply), 11), strict=True):
                v = reply[i:i + 11]
                last_at = int(v[8])
                targets[url] = {
                    "state": _text(v[0]),
                    "retry_after_ms": int(v[1]),
                    "consecutive_failures": int(v[2]),
                    "recent_requests": int(v[3]) + int(v[4]),
                    "recent_failures": int(v[4]),
                    "probes_in_flight": int(v[5]),
                    "transitions": int(v[10]),
                    "last_transition": {
                        "from": _text(v[6]), "to": _text(v[7]), "at": last_at / 1000,
                        "ago_s": round((now - last_at) / 1000, 3), "reason": _text(v[9]),
                    } if last_at else None,
                }
            out[service] = targets
        return out
