"""Plugins: policies of your own, in Python, on the same phases as the built-in ones.

A plugin is a class with the chain's phases (`stage`, `handle`, `after`; each optional; see
gateway/policy.py), a pydantic `Settings` model for its `config:` and a constructor taking
`(settings, deps)`. It is named in the config by import path or by a registered name:

    plugins:
      - use: "acme.policies:TenantHeader"   # module:Class, or a name from BUILT_IN or the
        config: {header: X-Tenant}           #   `pygateway.plugins` entry-point group
        routes: ["/api/orders"]              # optional: only these route prefixes
        at: after_identity                   # first | after_identity | before_upstream

Everything a plugin needs is importable from here. docs/plugins.md has the whole story and
examples/tenant_header.py a complete plugin.
"""

from __future__ import annotations

from gateway.context import Consumer, Headers, RequestContext, Response
from gateway.policy import Handler, Policy, PolicyDeps
from gateway.problem import problem
from gateway.store import StoreBatch

__all__ = [
    "Consumer", "Handler", "Headers", "Policy", "PolicyDeps", "RequestContext", "Response",
    "StoreBatch", "problem",
]
