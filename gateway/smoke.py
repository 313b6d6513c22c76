"""`gateway smoke [URL]`: the README's examples, end to end, against a live gateway.

Written for `gateway dev` (its demo keys and limits); prints one PASS/FAIL line per check and
exits non-zero when any check fails. The rate-limit check runs last because it spends the
anonymous quota of this client's address for the next minute; so that a second run within that
minute starts afresh, a run against a gateway on 127.0.0.1 (or localhost) connects from an
address of its own in 127.0.0.0/8 (on Linux every one of them is the loopback), and anonymous
quotas are counted per client address. Against another host, wait a minute between runs.
"""

from __future__ import annotations

import secrets
import sys
from collections.abc import Callable

import httpx

PREMIUM_KEY = "demo-key-premium"
Check = Callable[[httpx.Client], str | None]  # returns None on success, else why it failed


def _root(c: httpx.Client) -> str | None:
    r = c.get("/")
    if r.status_code != 200 or "/api/users" not in r.json().get("routes", {}):
        return f"GET / -> {r.status_code} {r.text[:200]}"
    return None


def _health(c: httpx.Client) -> str | None:
    r = c.get("/health")
    return None if r.status_code == 200 and "services" in r.json() else f"GET /health -> {r.status_code}"


def _users(c: httpx.Client) -> str | None:
    r = c.get("/api/users", headers={"X-User-ID": "user123"})
    if r.status_code != 200:
        return f"GET /api/users -> {r.status_code} {r.text[:200]}"
    missing = [h for h in ("x-request-id", "x-response-time", "x-service") if h not in r.headers]
    if missing:
        return f"missing response headers: {', '.join(missing)}"
    return None if r.headers["x-service"] == "users" else f"X-Service is {r.headers['x-service']}"


def _product(c: httpx.Client) -> str | None:
    r = c.get("/api/products/1", headers={"X-User-ID": "user123"})
    if r.status_code != 200 or r.json().get("id") != 1:
        return f"GET /api/products/1 -> {r.status_code} {r.text[:200]}"
    return None


def _order(c: httpx.Client) -> str | None:
    r = c.post("/api/orders", headers={"X-User-ID": "user123"}, json={"product_id": 1, "quantity": 2})
    return None if r.status_code == 201 else f"POST /api/orders -> {r.status_code} {r.text[:200]}"


def _metrics(c: httpx.Client) -> str | None:
    r = c.get("/metrics")
    if r.status_code != 200:
        return f"GET /metrics -> {r.status_code}"
    total = r.json().get("requests", {}).get("total", 0)
    return None if total > 0 else "metrics count no requests"


def _cache(c: httpx.Client) -> str | None:
    c.get("/api/products")
    r = c.get("/api/products")
    status = r.headers.get("x-cache")
    return None if status == "HIT" else f"second GET /api/products has X-Cache: {status}"


def _premium(c: httpx.Client) -> str | None:
    r = c.get("/api/users", headers={"X-API-Key": PREMIUM_KEY})
    policy = r.headers.get("ratelimit-policy", "")
    if r.status_code != 200 or "q=1000" not in policy:
        return f"premium key: {r.status_code}, RateLimit-Policy: {policy!r}"
    return None


def _spoofed_tier(c: httpx.Client) -> str | None:
    r = c.get("/api/users", headers={"X-User-ID": "premium-user", "X-User-Tier": "premium"})
    policy = r.headers.get("ratelimit-policy", "")
    return "a spoofed X-User-Tier got the premium limit" if "q=1000" in policy else None


def _rate_limit(c: httpx.Client) -> str | None:
    statuses = [c.get("/api/users", headers={"X-User-ID": "testuser"}).status_code for _ in range(60)]
    if 429 not in statuses:
        return f"60 anonymous requests, no 429 (statuses: {sorted(set(statuses))})"
    r = c.get("/api/users")
    if r.status_code == 429 and not r.headers.get("retry-after"):
        return "429 without Retry-After"
    return None


CHECKS: list[tuple[str, Check]] = [
    ("gateway info (GET /)", _root),
    ("health (GET /health)", _health),
    ("users list through the gateway", _users),
    ("product by id", _product),
    ("create order", _order),
    ("metrics", _metrics),
    ("caching: second GET is a HIT", _cache),
    ("premium tier with its API key", _premium),
    ("spoofed X-User-Tier is ignored", _spoofed_tier),
    ("rate limiting kicks in (60 anonymous requests)", _rate_limit),
]


def _source_address(url: str) -> str | None:
    """A loopback address of this run's own for a gateway on IPv4 loopback (Linux only)."""
    host = httpx.URL(url).host
    if sys.platform != "linux" or host not in ("127.0.0.1", "localhost"):
        return None
    return f"127.{secrets.randbelow(254) + 1}.{secrets.randbelow(256)}.{secrets.randbelow(254) + 1}"


def run_smoke(url: str) -> int:
    failed = 0
    source = _source_address(url)
    transport = httpx.HTTPTransport(local_address=source) if source else None
    with httpx.Client(base_url=url, timeout=10, transport=transport) as client:
        for title, check in CHECKS:
            try:
                problem = check(client)
            except httpx.HTTPError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            except ValueError as exc:
                problem = f"unexpected body: {exc}"
            if problem is None:
                print(f"PASS  {title}")
            else:
                failed += 1
                print(f"FAIL  {title}: {problem}")
    print(f"{len(CHECKS) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(run_smoke(sys.argv[1] if len(sys.argv) > 1 else "http://localhost:8000"))
