"""Configuration: the seed's file verbatim, richer forms, env overrides, errors naming fields."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gateway.config import ConfigError, load_config, parse_config

SEED = """\
services:
  users:    {url: http://localhost:8001, timeout: 10, health_path: /health}
  products: {url: http://localhost:8002, timeout: 10, health_path: /health}
  orders:   {url: http://localhost:8003, timeout: 10, health_path: /health}
routes:
  /api/users: users
  /api/products: products
  /api/orders: orders
rate_limits: {default: 100, anonymous: 50, premium: 1000}   # requests per minute
circuit_breaker: {failure_threshold: 5, timeout: 60, half_open_timeout: 30}
cache: {ttl: 300}
redis: {url: redis://localhost:6379/0}   # omit -> embedded in-process store
"""


@pytest.fixture
def seed_file(tmp_path: Path) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(SEED)
    return path


def test_seed_config_is_accepted_verbatim(seed_file: Path) -> None:
    config = load_config(seed_file, environ={})
    assert config.services["users"].url == "http://localhost:8001"
    assert config.routes["/api/orders"].service == "orders"
    premium = config.rate_limits["premium"].windows[0]
    assert (premium.limit, premium.window) == (1000, 60)
    assert config.circuit_breaker.failure_threshold == 5
    assert config.circuit_breaker.half_open_timeout == 30
    assert config.cache.ttl == 300
    assert config.redis.url == "redis://localhost:6379/0"


def test_redis_omitted_means_embedded(tmp_path: Path) -> None:
    path = tmp_path / "g.yaml"
    path.write_text(SEED.replace("redis: {url: redis://localhost:6379/0}", ""))
    assert load_config(path, environ={}).redis.url is None


def test_environment_overrides_file_values(seed_file: Path) -> None:
    config = load_config(seed_file, environ={
        "GATEWAY_REDIS__URL": "redis://cache.internal:6380/2",
        "GATEWAY_CACHE__TTL": "30",
        "GATEWAY_SERVICES__USERS__TIMEOUT": "2.5",
    })
    assert config.redis.url == "redis://cache.internal:6380/2"
    assert config.cache.ttl == 30
    assert config.services["users"].timeout == 2.5


def test_a_bad_value_from_the_environment_names_the_variable_not_its_value(seed_file: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(seed_file, environ={"GATEWAY_CACHE__TTL": "soon", "GATEWAY_REDIS__PASSWORD_X": "s3cret"})
    message = str(caught.value)
    assert "cache.ttl" in message and "GATEWAY_CACHE__TTL" in message
    assert "redis.password_x" in message and "GATEWAY_REDIS__PASSWORD_X" in message
    assert "s3cret" not in message and "soon" not in message.split("GATEWAY_CACHE__TTL")[1]


def test_a_bad_value_from_the_file_names_no_variable(seed_file: Path) -> None:
    seed_file.write_text(seed_file.read_text().replace("ttl: 300", "ttl: soon"))
    with pytest.raises(ConfigError) as caught:
        load_config(seed_file, environ={"GATEWAY_REDIS__URL": "redis://other:6379/0"})
    assert "cache.ttl" in str(caught.value) and "environment" not in str(caught.value)


def test_gateway_config_env_names_the_file(seed_file: Path) -> None:
    config = load_config(None, environ={"GATEWAY_CONFIG": str(seed_file)})
    assert "users" in config.services


def test_richer_route_form() -> None:
    data = yaml.safe_load(SEED)
    data["routes"]["/api/orders"] = {"service": "orders", "methods": ["get", "post"],
                                     "strip_prefix": True, "cache": False, "timeout": 3}
    config = parse_config(data)
    route = config.routes["/api/orders"]
    assert route.methods == ["GET", "POST"] and route.strip_prefix and not route.cache.enabled


@pytest.mark.parametrize(("mutate", "field", "problem"), [
    (lambda d: d["services"]["users"].update(url="ftp://x"), "services.users.url", "http"),
    (lambda d: d["services"]["users"].update(url="not a url"), "services.users.url", "http"),
    (lambda d: d["services"]["users"].update(url="http://h:99999"), "services.users.url", "port"),
    (lambda d: d["services"]["users"].update(timeout=-1), "services.users.timeout", "greater than 0"),
    (lambda d: d.update(bogus=1), "bogus", "unknown key"),
    (lambda d: d["cache"].update(tll=3), "cache.tll", "unknown key"),
    (lambda d: d["routes"].update({"/api/x": "nope"}), "routes./api/x.service", "unknown service"),
    (lambda d: d["routes"].update({"api/x": "users"}), "routes", "must start with '/'"),
    (lambda d: d["redis"].update(url="http://x"), "redis.url", "redis://"),
    (lambda d: d["rate_limits"].update(default="lots"), "rate_limits.default", ""),
    (lambda d: d.pop("services"), "services", "required"),
])
def test_errors_name_the_field(mutate, field: str, problem: str) -> None:  # type: ignore[no-untyped-def]
    data = yaml.safe_load(SEED)
    mutate(data)
    with pytest.raises(ConfigError) as err:
        parse_config(data)
    text = str(err.value)
    assert field in text and problem in text, text


def test_invalid_yaml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("services: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad, environ={})
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml", environ={})
    top = tmp_path / "list.yaml"
    top.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(top, environ={})


def _gateway(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], capture_output=True,
                          text=True, timeout=60)


def test_check_config_command(seed_file: Path, tmp_path: Path) -> None:
    ok = _gateway("check-config", str(seed_file))
    assert ok.returncode == 0 and "OK" in ok.stdout
    broken = tmp_path / "broken.yaml"
    broken.write_text(SEED.replace("/api/orders: orders", "/api/orders: ordrs"))
    bad = _gateway("check-config", str(broken))
    assert bad.returncode != 0
    assert "routes./api/orders.service" in bad.stderr and "ordrs" in bad.stderr


def test_run_refuses_to_start_on_a_bad_config(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(SEED.replace("timeout: 10", "timeout: ten", 1))
    result = _gateway("run", "--config", str(broken), "--port", "0")
    assert result.returncode != 0
    assert "services.users.timeout" in result.stderr


def test_embedded_store_refuses_several_workers(tmp_path: Path) -> None:
    path = tmp_path / "g.yaml"
    path.write_text(SEED.replace("redis: {url: redis://localhost:6379/0}", ""))
    result = _gateway("run", "--config", str(path), "--workers", "2", "--port", "0")
    assert result.returncode != 0 and "single-process" in result.stderr
