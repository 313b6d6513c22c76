"""`redis+cluster://` and `redis+sentinel://` URLs: what they name, and clear errors."""

from __future__ import annotations

import pytest

from gateway.config import ConfigError, RedisSettings, parse_config
from gateway.redis_urls import Topology, parse_url
from gateway.store import StoreError
from gateway.topology import ClusterStore, SentinelStore, make_store


def test_cluster_url_with_several_seeds():
    assert parse_url("redis+cluster://10.0.0.1:7000,10.0.0.2:7001,[::1]:7002") == Topology(
        "cluster", [("10.0.0.1", 7000), ("10.0.0.2", 7001), ("::1", 7002)])


def test_cluster_url_credentials_tls_and_default_port():
    topology = parse_url("rediss+cluster://gw:s%40cret@redis.internal")
    assert topology.hosts == [("redis.internal", 6379)]
    assert (topology.tls, topology.username, topology.password) == (True, "gw", "s@cret")
    assert "s@cret" not in repr(make_store(RedisSettings(url="rediss+cluster://gw:s%40cret@h:1"))
                                .description)


def test_sentinel_url_master_name_and_db():
    topology = parse_url("redis+sentinel://:pw@127.0.0.1:26379,127.0.0.2/mymaster?db=2"
                         "&sentinel_password=sp")
    assert topology.kind == "sentinel"
    assert topology.hosts == [("127.0.0.1", 26379), ("127.0.0.2", 26379)]
    assert (topology.master_name, topology.db, topology.password) == ("mymaster", 2, "pw")
    assert topology.sentinel_password == "sp"
    assert parse_url("redis+sentinel://h:1/mymaster/3").db == 3


@pytest.mark.parametrize(("url", "message"), [
    ("redis+cluster://", "at least one host"),
    ("redis+cluster://h:1/2", "only database 0"),
    ("redis+cluster://h:99999", "bad port"),
    ("redis+cluster://h:x", "bad port"),
    ("redis+sentinel://h:26379", "master name"),
    ("redis+sentinel://h:26379/m?db=x", "db must be a number"),
    ("redis+sentinel://h:26379/m/0/extra", "/master-name or /master-name/db"),
])
def test_bad_urls_name_the_problem(url: str, message: str):
    with pytest.raises(ValueError, match=message):
        parse_url(url)
    # Validation names the field, so `gateway check-config` reports it before start-up.
    config = {"services": {"a": {"url": "http://127.0.0.1:1"}}, "routes": {"/a": "a"},
              "redis": {"url": url}}
    with pytest.raises(ConfigError, match="redis.url: .*" + message):
        parse_config(config)


async def test_stores_are_made_without_connecting():
    cluster = make_store(RedisSettings(url="redis+cluster://127.0.0.1:1", timeout=0.1))
    sentinel = make_store(RedisSettings(url="redis+sentinel://127.0.0.1:1/mymaster", timeout=0.1))
    assert isinstance(cluster, ClusterStore) and isinstance(sentinel, SentinelStore)
    # Nothing listens on port 1: both report "not answering" quickly instead of raising.
    assert await cluster.ping() is False
    assert await sentinel.ping() is False
    await cluster.close()
    await sentinel.close()


async def test_a_cross_slot_script_call_fails_alone_before_sending():
    store = make_store(RedisSettings(url="redis+cluster://127.0.0.1:1", timeout=0.1))
    batch = store.batch()
    crossing = batch.eval(store.script("ratelimit"), ["gw:rl:{a}:60", "gw:rl:{b}:60"], [2, 1, 60000])
    await batch.execute()  # only the crossing call: nothing is sent, the store stays up
    with pytest.raises(StoreError, match="CROSSSLOT: the keys of script 'ratelimit'"):
        crossing.result()
    assert store.available
    await store.close()
