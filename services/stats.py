"""Counting the requests that reached a service, so tests can see what got past the gateway."""

from __future__ import annotations

from collections import Counter
from typing import Any

from aiohttp import web

# Past this many distinct paths the rest share one bucket, so a path scan cannot grow memory.
MAX_PATHS = 10_000
OTHER_PATHS = "(other)"


class RequestStats:
    """Requests received (admin `/_mock/*` excluded), by path, and how many are in flight."""

    def __init__(self) -> None:
        self.requests = 0
        self.in_flight = 0
        self.by_path: Counter[str] = Counter()

    def record(self, path: str) -> None:
        self.requests += 1
        if path in self.by_path or len(self.by_path) < MAX_PATHS:
            self.by_path[path] += 1
        else:
            self.by_path[OTHER_PATHS] += 1

    def reset(self) -> None:
        # In-flight requests are still running; only the counts start over.
        self.requests = 0
        self.by_path.clear()

    def snapshot(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "in_flight": self.in_flight,
            "by_path": dict(self.by_path),
        }


REQUEST_STATS = web.AppKey("request_stats", RequestStats)


async def get_stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[REQUEST_STATS].snapshot())


async def delete_stats(request: web.Request) -> web.Response:
    request.app[REQUEST_STATS].reset()
    return web.Response(status=204)
