"""One name per upstream failure kind, the same in the engine, the outcome, metrics and problems."""

from __future__ import annotations

import json

from gateway.breaker.state import verdict
from gateway.engine.client import UpstreamError
from gateway.engine.failures import UPSTREAM_BROKEN, Failure


def test_each_kind_is_its_own_string_as_labels_and_log_fields_show_it() -> None:
    assert [str(f) for f in Failure] == ["connect", "timeout", "reset", "protocol", "pool"]
    assert json.dumps({"kind": Failure.RESET}) == '{"kind": "reset"}'
    assert f"upstream-{Failure.TIMEOUT}" == "upstream-timeout"
    assert UpstreamError(Failure.CONNECT, "refused").kind is Failure.CONNECT


def test_the_breaker_counts_the_upstreams_failures_but_never_our_own_pool_limit() -> None:
    assert Failure.POOL not in UPSTREAM_BROKEN
    statuses = frozenset({500, 502, 503, 504})
    for failure in UPSTREAM_BROKEN:
        assert verdict(None, failure, False, statuses) == (True, False)
    assert verdict(None, Failure.POOL, False, statuses) == (False, False)
    # A client that went away first says nothing about the upstream.
    assert verdict(None, Failure.RESET, True, statuses) == (False, False)
