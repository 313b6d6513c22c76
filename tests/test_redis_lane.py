"""The lean RESP lane for script calls, against a real redis-server."""

from __future__ import annotations

import asyncio

import pytest

from gateway.store import StoreError, StoreUnavailable, redis_store
from tests.support.processes import RedisServer

pytestmark = pytest.mark.redis


async def test_scripts_go_through_the_lean_lane_and_reload_after_a_flush(redis_server: RedisServer) -> None:
    store = redis_store(redis_server.url, timeout=2)
    assert store.resp is not None
    try:
        script = store.script("ping_time")
        batch = store.batch()
        first, second = batch.eval(script, [], []), batch.eval(script, [], [])
        await batch.execute()
        assert len(first.result()) == 2 and len(second.result()) == 2
        redis_server.command("SCRIPT", "FLUSH")  # NOSCRIPT next time: loaded and rerun once
        again = await store.eval(script, [], [])
        assert len(again) == 2
        # A Lua error fails that call alone, the store stays up.
        await store.client.set("gw:test:str", "x")
        broken = store.batch()
        bad = broken.call("EVALSHA", "0" * 40, 0)
        good = broken.eval(script, [], [])
        await broken.execute()
        assert good.ok
        with pytest.raises(StoreError):
            bad.result()
        assert store.available
    finally:
        await store.close()


async def test_a_dead_redis_fails_fast_through_the_lean_lane(redis_server: RedisServer) -> None:
    store = redis_store(redis_server.url, timeout=0.5)
    try:
        script = store.script("ping_time")
        await store.eval(script, [], [])
        redis_server.kill()
        with pytest.raises(StoreUnavailable):
            await store.eval(script, [], [])
        assert not store.available
        redis_server.start()
        store.probe_interval = 0.05
        for _ in range(100):
            if store.available:
                break
            await asyncio.sleep(0.05)
        assert store.available
        assert len(await store.eval(script, [], [])) == 2
    finally:
        await store.close()


async def test_password_and_database_from_the_url() -> None:
    with RedisServer() as server:
        server.command("CONFIG", "SET", "requirepass", "s3cret")
        store = redis_store(f"redis://:s3cret@127.0.0.1:{server.port}/3", timeout=2)
        try:
            script = store.script("ping_time")
            assert len(await store.eval(script, [], [])) == 2  # AUTH and SELECT went first
            assert store.resp is not None and store.resp.db == 3
            assert store.available
        finally:
            await store.close()
