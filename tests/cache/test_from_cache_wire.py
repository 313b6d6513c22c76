"""What a response served from the cache looks like on the wire, through a real gateway."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

from tests.cache.site import PUBLIC, Site, fresh


def test_a_304_from_the_cache_has_no_body_length_and_keeps_the_connection(site: Site) -> None:
    path = fresh("public&etag")
    assert site.send("GET", path).headers["x-cache"] == "MISS"
    address = urlsplit(site.url)

    async def exchange() -> tuple[str, str]:
        reader, writer = await asyncio.open_connection(address.hostname, address.port)
        try:
            writer.write(f'GET {path} HTTP/1.1\r\nHost: {PUBLIC}\r\nIf-None-Match: "v1"\r\n\r\n'.encode())
            first = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)).decode("latin-1")
            # the same connection goes on: nothing was waited for after the 304's head
            writer.write(f"GET {path} HTTP/1.1\r\nHost: {PUBLIC}\r\n\r\n".encode())
            second = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)).decode("latin-1")
            return first.lower(), second.lower()
        finally:
            writer.close()

    first, second = site.loop.run_until_complete(exchange())
    assert first.startswith("http/1.1 304")
    assert "content-length" not in first and "transfer-encoding" not in first
    assert "x-cache: hit" in first and 'etag: "v1"' in first
    assert second.startswith("http/1.1 200") and "x-cache: hit" in second


def test_ranges_from_the_cache_on_the_wire(site: Site) -> None:
    path = fresh("public")
    whole = site.send("GET", path)
    assert whole.headers["x-cache"] == "MISS"
    part = site.send("GET", path, {"range": "bytes=0-4"})
    assert part.status_code == 206 and part.content == whole.content[:5]
    assert part.headers["content-range"] == f"bytes 0-4/{len(whole.content)}"
    assert part.headers["content-length"] == "5" and part.headers["x-cache"] == "HIT"
    beyond = site.send("GET", path, {"range": f"bytes={len(whole.content) + 10}-"})
    assert beyond.status_code == 416 and beyond.headers["content-range"] == f"bytes */{len(whole.content)}"
    assert beyond.headers["content-type"] == "application/problem+json"
