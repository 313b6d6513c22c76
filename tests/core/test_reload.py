"""Reloading a running gateway's configuration (gateway/reload.py, Gateway.reload): in one
process, over HTTP, on the engine. The signal, the CLI and many replicas under load are in
test_reload_processes.py."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from aiohttp import web

from gateway.config import parse_config
from gateway.entry import GatewayApp
from gateway.reload import Reloader
from tests.support.inproc import proxy_config, serving, start_app


def _key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class Origin:
    """A backend that says who it is, counts the proxy's connections (not the health checks')
    and can hold a request."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.connections = 0
        self.release = asyncio.Event()
        self.release.set()
        self.url = ""
        self._peers: set[tuple[str, int]] = set()

    def app(self) -> web.Application:
        async def handle(request: web.Request) -> web.Response:
            peer = request.transport.get_extra_info("peername") if request.transport else None
            if peer is not None and peer not in self._peers and request.path != "/health":
                self._peers.add(peer)
                self.connections += 1
            if request.path.endswith("/slow"):
                await self.release.wait()
            return web.json_response({"origin": self.name, "path": request.path})

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handle)
        return app


@pytest.fixture
async def origins() -> AsyncIterator[tuple[Origin, Origin]]:
    a, b = Origin("a"), Origin("b")
    runners = []
    for origin in (a, b):
        runner, origin.url = await start_app(origin.app())
        runners.append(runner)
    yield a, b
    a.release.set()
    b.release.set()
    for runner in runners:
        await runner.cleanup()


def _config(a: Origin, b: Origin, **extra: Any) -> dict[str, Any]:
    return proxy_config({"a": {"url": a.url}, "b": {"url": b.url}},
                        routes={"/api/x": "a"}, **extra)


async def test_a_reload_swaps_routes_and_in_flight_requests_finish_on_the_old_one(
        origins: tuple[Origin, Origin]) -> None:
    a, b = origins
    async with serving(_config(a, b)) as (app, _), httpx.AsyncClient(base_url=app.url, timeout=10) as client:
        assert (await client.get("/api/x/1")).json()["origin"] == "a"
        a.release.clear()
        slow = asyncio.create_task(client.get("/api/x/slow"))
        await asyncio.sleep(0.2)  # it is with origin a now
        new = _config(a, b)
        new["routes"] = {"/api/x": "b", "/api/y": "a"}
        assert await app.reload(parse_config(new)) == []
        assert (await client.get("/api/x/1")).json()["origin"] == "b"
        assert (await client.get("/api/y/1")).json()["origin"] == "a"
        a.release.set()
        answered = await slow
        assert answered.status_code == 200 and answered.json()["origin"] == "a"
        new["routes"] = {"/api/y": "a"}
        await app.reload(parse_config(new))
        gone = await client.get("/api/x/1")
        assert gone.status_code == 404


async def test_pooled_connections_to_unchanged_targets_are_kept(origins: tuple[Origin, Origin]) -> None:
    a, b = origins
    async with serving(_config(a, b)) as (app, _), httpx.AsyncClient(base_url=app.url, timeout=10) as client:
        for _ in range(3):
            assert (await client.get("/api/x/1")).status_code == 200
        assert a.connections == 1
        new = _config(a, b, proxy={"max_body_bytes": 1000})
        new["routes"]["/api/z"] = "a"
        await app.reload(parse_config(new))
        for _ in range(3):
            assert (await client.get("/api/z/1")).status_code == 200
        assert a.connections == 1  # the same kept-alive connection
        # A target whose pool settings change gets a new pool (and new connections).
        new["services"]["a"]["max_connections"] = 7
        await app.reload(parse_config(new))
        await asyncio.sleep(0.1)  # the old generation is retired once idle
        assert (await client.get("/api/z/1")).status_code == 200
        assert a.connections == 2
        assert (await client.post("/api/z/1", content=b"x" * 2000)).status_code == 413


async def test_limits_and_consumers_change_with_a_reload(origins: tuple[Origin, Origin]) -> None:
    a, b = origins
    config = _config(a, b)
    config.update(rate_limit={"enabled": True},
                  rate_limits={"default": 5, "anonymous": 3, "premium": 50},
                  auth={"consumers": [{"id": "alice", "key_sha256": _key("alice-key")}]})
    async with serving(config) as (app, _), httpx.AsyncClient(base_url=app.url, timeout=10) as client:
        alice = {"x-api-key": "alice-key"}
        assert (await client.get("/api/x/1", headers=alice)).headers["x-ratelimit-limit"] == "5"
        assert (await client.get("/api/x/1", headers={"x-api-key": "bob-key"})).status_code == 401
        config["rate_limits"]["default"] = 9
        config["auth"]["consumers"] = [{"id": "bob", "tier": "premium", "key_sha256": _key("bob-key")}]
        await app.reload(parse_config(config))
        bob = await client.get("/api/x/1", headers={"x-api-key": "bob-key"})
        assert bob.status_code == 200 and bob.headers["x-ratelimit-limit"] == "50"
        assert (await client.get("/api/x/1", headers=alice)).status_code == 401
        assert (await client.get("/api/x/1")).headers["x-ratelimit-limit"] == "3"


async def test_sections_that_need_a_restart_keep_their_running_values(origins: tuple[Origin, Origin]) -> None:
    a, b = origins
    async with serving(_config(a, b)) as (app, _):
        new = _config(a, b, redis={"key_prefix": "other"}, logging={"level": "DEBUG"})
        pinned = await app.reload(parse_config(new))
        assert pinned == ["redis", "logging"]
        assert app.gateway.config.redis.key_prefix == "gw"


def _write(path: Path, config: dict[str, Any]) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(yaml.safe_dump(config))
    temporary.replace(path)


async def test_an_invalid_file_is_refused_with_the_field_named_and_the_old_config_serves(
        origins: tuple[Origin, Origin], tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    a, b = origins
    file = tmp_path / "gateway.yaml"
    config = _config(a, b)
    _write(file, config)
    async with serving(config) as (app, _), httpx.AsyncClient(base_url=app.url, timeout=10) as client:
        reloader = Reloader(app, file)
        app.gateway.reloader = reloader
        broken = _config(a, b)
        broken["routes"] = {"/api/x": "nowhere"}
        broken["proxy"] = {"max_body_bytes": -1}
        _write(file, broken)
        with caplog.at_level(logging.ERROR, logger="gateway.reload"):
            assert await reloader.reload("test") is False
        assert "proxy.max_body_bytes" in caplog.text and "keeps serving" in caplog.text
        assert (await client.get("/api/x/1")).json()["origin"] == "a"
        metrics = (await client.get("/metrics")).json()["config"]
        assert metrics["reloads"] == {"applied": 0, "refused": 1}
        assert metrics["last_reload"]["result"] == "refused"
        assert "max_body_bytes" in metrics["last_reload"]["error"]
        prometheus = (await client.get("/metrics", params={"format": "prometheus"})).text
        assert 'gateway_config_reloads_total{result="refused"} 1.0' in prometheus


async def test_a_changed_file_is_reloaded_when_watched(origins: tuple[Origin, Origin], tmp_path: Path) -> None:
    a, b = origins
    file = tmp_path / "gateway.yaml"
    config = _config(a, b, reload={"interval": 0.05})
    _write(file, config)
    async with serving(config) as (app, _), httpx.AsyncClient(base_url=app.url, timeout=10) as client:
        reloader = Reloader(app, file)
        reloader.start()
        try:
            file.touch()  # the same content: nothing to do
            await asyncio.sleep(0.3)
            assert reloader.applied == 0
            config["routes"] = {"/api/x": "b"}
            _write(file, config)
            for _ in range(100):
                if reloader.applied:
                    break
                await asyncio.sleep(0.05)
            assert reloader.applied == 1
            assert (await client.get("/api/x/1")).json()["origin"] == "b"
            config["reload"] = {"watch": False, "interval": 0.05}
            _write(file, config)
            await asyncio.sleep(0.3)
            assert reloader.applied == 2  # that change itself was loaded; none are after it
            config["routes"] = {"/api/x": "a"}
            _write(file, config)
            await asyncio.sleep(0.3)
            assert reloader.applied == 2
        finally:
            await reloader.close()


async def test_a_burst_of_reload_requests_never_overlaps(origins: tuple[Origin, Origin], tmp_path: Path) -> None:
    a, b = origins
    file = tmp_path / "gateway.yaml"
    config = _config(a, b)
    _write(file, config)
    async with serving(config) as (app, _):
        reloader = Reloader(app, file)
        for _ in range(5):
            reloader.request("SIGHUP")
        await asyncio.sleep(0)
        await reloader.close()
        assert reloader.applied == 2  # the one running, then one for the rest


async def test_the_replaced_generation_is_closed_once_idle(origins: tuple[Origin, Origin]) -> None:
    a, b = origins
    async with serving(_config(a, b)) as (app, _), httpx.AsyncClient(base_url=app.url, timeout=10) as client:
        assert isinstance(app, GatewayApp)
        assert (await client.get("/api/x/1")).status_code == 200
        old_upstream = app.gateway.upstream
        old_policies = app.gateway.hotpath
        assert old_upstream.pools[a.url].connections
        new = _config(a, b)
        new["services"]["a"]["max_connections"] = 3
        await app.reload(parse_config(new))
        await asyncio.sleep(0.1)
        assert not old_upstream.pools[a.url].connections  # replaced: closed
        assert app.gateway.upstream.pools[b.url] is old_upstream.pools[b.url]  # adopted
        assert app.gateway.hotpath is not old_policies and not app.gateway._retiring
