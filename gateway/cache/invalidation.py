"""Which URLs a request names: the cache key's URL, a purge target, and what an unsafe
method's answer invalidates (RFC 9111 §4.4)."""

from __future__ import annotations

from urllib.parse import urljoin, urlsplit

from gateway.context import RequestContext, Response


def request_url(ctx: RequestContext) -> str:
    """The cache key's URL: the path and query as received (method-independent)."""
    url = ctx.raw_path.decode("latin-1")
    if ctx.query_string:
        url += "?" + ctx.query_string.decode("latin-1")
    return url


def path_and_query(url: str) -> str:
    """An absolute URL or a path, as the cache's key URL (path and query)."""
    parts = urlsplit(url)
    path = parts.path or "/"
    return path + ("?" + parts.query if parts.query else "")


def invalidation_targets(ctx: RequestContext, url: str, response: Response) -> list[str]:
    """The URL and same-origin Location / Content-Location (RFC 9111 §4.4)."""
    host = (ctx.header(b"host") or b"").decode("latin-1").lower()
    base = f"{ctx.scheme}://{host}{url}"
    targets = [url]
    for name in (b"location", b"content-location"):
        value = response.header(name)
        if not value:
            continue
        absolute = urlsplit(urljoin(base, value.decode("latin-1").strip()))
        if absolute.scheme == ctx.scheme and absolute.netloc.lower() == host:
            targets.append((absolute.path or "/") + ("?" + absolute.query if absolute.query else ""))
    return targets
