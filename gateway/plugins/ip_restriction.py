"""`ip-restriction`: allow or deny client addresses (CIDRs), per route.

    plugins:
      - use: ip-restriction
        routes: ["/api/admin"]
        config:
          allow: [10.0.0.0/8, "2001:db8::/32"]   # when set, only these
          deny: [10.6.6.0/24]                    # always refused, even when allowed

The address is the client's as the gateway established it: the peer, or the first untrusted
hop of `X-Forwarded-For` when the peer is one of `proxy.trusted_proxies` (a client cannot pick
it by sending the header). A refused request gets 403 (`ip-not-allowed`) before anything else
runs (the default `at` is `first`), so it never counts against a rate limit or reaches the
upstream. Like Kong's ip-restriction: deny wins over allow.
"""

from __future__ import annotations

import ipaddress

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gateway.context import RequestContext, Response
from gateway.policy import Policy, PolicyDeps
from gateway.problem import problem
from gateway.store import StoreBatch

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class IpRestriction(Policy):
    name = "ip-restriction"
    default_at = "first"

    class Settings(BaseModel):
        model_config = ConfigDict(extra="forbid", frozen=True)

        allow: list[str] = Field(default_factory=list, description="CIDRs; when set, only these")
        deny: list[str] = Field(default_factory=list, description="CIDRs always refused")

        @field_validator("allow", "deny")
        @classmethod
        def _cidrs(cls, value: list[str]) -> list[str]:
            for cidr in value:
                try:
                    ipaddress.ip_network(cidr, strict=False)
                except ValueError:
                    raise ValueError(f"{cidr!r} is not an IP address or CIDR") from None
            return value

        @model_validator(mode="after")
        def _something(self) -> IpRestriction.Settings:
            if not self.allow and not self.deny:
                raise ValueError("give allow, deny or both")
            return self

    def __init__(self, settings: Settings, deps: PolicyDeps) -> None:
        self.allow = [ipaddress.ip_network(c, strict=False) for c in settings.allow]
        self.deny = [ipaddress.ip_network(c, strict=False) for c in settings.deny]
        self._verdicts: dict[str, bool] = {}  # client address -> allowed (bounded below)

    def allowed(self, address: str) -> bool:
        found = self._verdicts.get(address)
        if found is None:
            found = self._decide(address)
            if len(self._verdicts) >= 10_000:
                self._verdicts.clear()
            self._verdicts[address] = found
        return found

    def _decide(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address.strip("[]"))
        except ValueError:
            return False  # not an address at all: never allowed
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # ::ffff:10.0.0.1 is 10.0.0.1
        if any(ip in net for net in self.deny):
            return False
        return not self.allow or any(ip in net for net in self.allow)

    def stage(self, ctx: RequestContext, batch: StoreBatch) -> Response | None:
        if self.allowed(ctx.client_ip):
            return None
        return problem(403, "your address may not use this route", request_id=ctx.request_id,
                       kind="ip-not-allowed")
