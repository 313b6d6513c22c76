"""The JSON /metrics document: the seed's shape, summed over the live replicas, plus a breakdown.

`requests`, `services` and the cache results are cluster-wide (every live replica's published
snapshot, this replica's live numbers); `replicas` lists each one. `?scope=replica` gives this
replica alone. The policies' sections (`rate_limits`, `circuit_breakers`, `cache`) come from the
policies' own `metrics()`: what they read from Redis is cluster-wide already.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gateway.metrics.cluster import ClusterView, ReplicaSnapshot
from gateway.metrics.latency import BOUNDS, LatencyHistogram
from gateway.stats import RequestStats

if TYPE_CHECKING:
    from gateway.runtime import Gateway


async def metrics_document(gw: Gateway, scope: str = "cluster") -> dict[str, Any]:
    cluster = gw.telemetry.cluster if gw.telemetry is not None else None
    if scope == "cluster" and cluster is not None:
        view = await cluster.read()
    else:
        view = ClusterView([ReplicaSnapshot(gw.replica_id, {}, 0.0, gw.stats)], scope != "cluster")
    total = RequestStats()
    for replica in view.replicas:
        total.merge(replica.stats)
    total.started = gw.stats.started
    policies = await gw.policy_metrics()
    rate_limits = dict(policies.get("rate_limit", {}))
    rate_limits["decisions"] = _decisions(total)
    cache = dict(policies.get("cache", {}))
    cache.update(total.cache_snapshot())
    store = gw.store
    return {
        "replica": gw.replica_id,
        "scope": "cluster" if scope == "cluster" else "replica",
        "requests": total.snapshot(),
        "services": total.services_snapshot(),
        "latency": _latency(total.overall_latency()),
        "upstream_latency": {name: _latency(h) for name, h in total.upstream_latency.items()},
        "rate_limits": rate_limits,
        "circuit_breakers": policies.get("circuit_breaker", {}),
        "cache": cache,
        "store": {
            "kind": "embedded" if store is None or store.embedded else "redis",
            "available": bool(store and store.available),
            "failures": store.failures if store else 0,
            "errors": dict(total.store_errors),
            "latency": _latency(total.store_latency),
        },
        "cluster": {
            "replicas": len(view.replicas),
            "complete": view.complete,
            **({"error": view.error} if view.error else {}),
        },
        "replicas": [_replica(r, gw.replica_id) for r in view.replicas],
        "config": _config(gw),
    }


def _config(gw: Gateway) -> dict[str, Any]:
    """This replica's configuration: when it was loaded, its reloads, the last one's outcome
    (the Prometheus counter sums them over the cluster)."""
    reloader = gw.reloader
    reloads = gw.stats.reloads
    return {
        "loaded_at": gw.reloaded_at or gw.started_at,
        "reloads": {"applied": reloads.get("applied", 0), "refused": reloads.get("refused", 0)},
        "last_reload": dict(reloader.last) if reloader is not None else None,
    }


def _replica(r: ReplicaSnapshot, me: str) -> dict[str, Any]:
    hist = r.stats.overall_latency()
    return {
        "id": r.replica_id,
        "host": r.info.get("host"),
        "pid": r.info.get("pid"),
        "self": r.replica_id == me,
        "age_s": round(r.age, 3),
        "requests": r.stats.snapshot(),
        "latency": _latency(hist, with_counts=False),
        "cache_hit_ratio": r.stats.cache_snapshot()["hit_ratio"],
    }


def _latency(hist: LatencyHistogram, with_counts: bool = True) -> dict[str, Any]:
    p50, p99 = hist.quantile(0.5), hist.quantile(0.99)
    out: dict[str, Any] = {
        "count": hist.count,
        "p50_ms": None if p50 is None else round(p50 * 1000, 3),
        "p99_ms": None if p99 is None else round(p99 * 1000, 3),
    }
    if with_counts:
        out["bounds_ms"] = [round(b * 1000, 3) for b in BOUNDS]
        out["counts"] = list(hist.counts)  # per bucket; the last is above the last bound
        out["sum_ms"] = round(hist.sum * 1000, 3)
    return out


def _decisions(stats: RequestStats) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for (tier, _route, decision), n in sorted(stats.rate_limit.items()):
        counts = out.setdefault(tier, {"admitted": 0, "rejected": 0})
        counts[decision] = counts.get(decision, 0) + n
    return out
