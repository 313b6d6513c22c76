"""deploy/k8s: the kustomize base renders to valid Kubernetes objects that fit together.

No cluster runs in CI. The base is rendered by a small renderer that covers exactly the
kustomize features the base uses (resources, namespace, a configMapGenerator without hash
suffix); where `kubectl` is installed its built-in kustomize must render the same objects.
Every object is then checked with `kubernetes-validate --strict` against the schemas of a
pinned Kubernetes version.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
BASE = REPO / "deploy" / "k8s"
# Oldest schema set that every kubernetes-validate >= 1.30 (the dev extra's floor) ships.
KUBERNETES_VERSION = "1.30.0"
CLUSTER_SCOPED = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "PersistentVolume",
    "StorageClass",
    "CustomResourceDefinition",
    "PriorityClass",
}
SUPPORTED_KEYS = {"apiVersion", "kind", "namespace", "resources", "configMapGenerator"}

Manifest = dict[str, Any]


def render(base: Path) -> list[Manifest]:
    """Render a kustomization that uses only SUPPORTED_KEYS, the way kustomize does."""
    kustomization = yaml.safe_load((base / "kustomization.yaml").read_text())
    unsupported = set(kustomization) - SUPPORTED_KEYS
    assert not unsupported, f"extend render() in this test for {unsupported}"
    objects: list[Manifest] = []
    for resource in kustomization.get("resources", []):
        objects.extend(d for d in yaml.safe_load_all((base / resource).read_text()) if d)
    for generator in kustomization.get("configMapGenerator", []):
        assert generator.get("options", {}).get("disableNameSuffixHash") is True
        assert set(generator) <= {"name", "files", "options"}
        data = {}
        for entry in generator["files"]:
            key, _, path = entry.rpartition("=") if "=" in entry else (Path(entry).name, "", entry)
            data[key] = (base / path).read_text()
        objects.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": generator["name"]},
                "data": data,
            }
        )
    namespace = kustomization.get("namespace")
    if namespace:
        for obj in objects:
            if obj["kind"] not in CLUSTER_SCOPED:
                obj["metadata"]["namespace"] = namespace
    return objects


def key(obj: Manifest) -> tuple[str, str]:
    return obj["kind"], obj["metadata"]["name"]


@pytest.fixture(scope="module")
def objects() -> dict[tuple[str, str], Manifest]:
    rendered = render(BASE)
    by_key = {key(o): o for o in rendered}
    assert len(by_key) == len(rendered), "duplicate kind/name in the base"
    return by_key


def test_kubectl_kustomize_renders_the_same_objects(
    objects: dict[tuple[str, str], Manifest],
) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed; the in-test renderer alone is used")
    result = subprocess.run(
        [kubectl, "kustomize", str(BASE)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    from_kubectl = {key(o): o for o in yaml.safe_load_all(result.stdout) if o}
    assert from_kubectl == objects


def test_every_object_is_valid_for_kubernetes(
    objects: dict[tuple[str, str], Manifest], kubernetes_validate_bin: str, tmp_path: Path
) -> None:
    files = []
    for (kind, name), obj in objects.items():
        path = tmp_path / f"{kind}-{name}.yaml"
        path.write_text(yaml.safe_dump(obj))
        files.append(str(path))
    result = subprocess.run(
        [
            kubernetes_validate_bin,
            "--strict",
            "--kubernetes-version",
            KUBERNETES_VERSION,
            "--quiet",
            *files,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_strict_validation_rejects_an_unknown_field(
    objects: dict[tuple[str, str], Manifest], kubernetes_validate_bin: str, tmp_path: Path
) -> None:
    broken = dict(objects[("Deployment", "gateway")])
    broken["spec"] = {**broken["spec"], "replica": 3}
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(broken))
    result = subprocess.run(
        [
            kubernetes_validate_bin,
            "--strict",
            "--kubernetes-version",
            KUBERNETES_VERSION,
            "--quiet",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0


def test_the_base_holds_the_whole_cluster(objects: dict[tuple[str, str], Manifest]) -> None:
    for name in ("gateway", "redis", "users", "products", "orders"):
        assert ("Deployment", name) in objects
        assert ("Service", name) in objects
    assert ("HorizontalPodAutoscaler", "gateway") in objects
    assert ("ConfigMap", "gateway-config") in objects


def pod_spec(deployment: Manifest) -> Manifest:
    return deployment["spec"]["template"]["spec"]


def test_gateway_deployment_probes_and_drains(objects: dict[tuple[str, str], Manifest]) -> None:
    deployment = objects[("Deployment", "gateway")]
    assert deployment["spec"]["replicas"] == 3
    spec = pod_spec(deployment)
    (container,) = spec["containers"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    # The drain after SIGTERM happens after preStop, inside the same grace period.
    assert spec["terminationGracePeriodSeconds"] >= int(pre_stop[1]) + 30
    env = {e["name"]: e["value"] for e in container["env"]}
    mount = next(m for m in container["volumeMounts"] if m["name"] == "config")
    config_file = Path(env["GATEWAY_CONFIG"])
    assert Path(mount["mountPath"]) == config_file.parent
    volume = next(v for v in spec["volumes"] if v["name"] == "config")
    config_map = objects[("ConfigMap", volume["configMap"]["name"])]
    assert config_file.name in config_map["data"]


@pytest.mark.parametrize("name", ["gateway", "redis", "users", "products", "orders"])
def test_every_pod_is_non_root_with_requests_and_limits(
    objects: dict[tuple[str, str], Manifest], name: str
) -> None:
    spec = pod_spec(objects[("Deployment", name)])
    assert spec["securityContext"]["runAsNonRoot"] is True
    for container in spec["containers"]:
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(container["resources"][kind])


def test_hpa_scales_the_gateway_on_cpu(objects: dict[tuple[str, str], Manifest]) -> None:
    hpa = objects[("HorizontalPodAutoscaler", "gateway")]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "gateway",
    }
    assert hpa["spec"]["minReplicas"] >= 2
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"


@pytest.mark.parametrize("name", ["gateway", "redis", "users", "products", "orders"])
def test_services_select_their_pods_and_ports(
    objects: dict[tuple[str, str], Manifest], name: str
) -> None:
    service = objects[("Service", name)]
    template = objects[("Deployment", name)]["spec"]["template"]
    labels = template["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    port_names = {p["name"] for c in template["spec"]["containers"] for p in c["ports"]}
    for port in service["spec"]["ports"]:
        assert port["targetPort"] in port_names


def test_gateway_config_points_at_in_cluster_services(
    objects: dict[tuple[str, str], Manifest],
) -> None:
    config = yaml.safe_load(objects[("ConfigMap", "gateway-config")]["data"]["gateway.yaml"])
    urls = [s["url"] for s in config["services"].values()] + [config["redis"]["url"]]
    for url in urls:
        parts = urlsplit(url)
        service = objects.get(("Service", parts.hostname))
        assert service, f"{url}: no Service {parts.hostname} in the base"
        assert parts.port in {p["port"] for p in service["spec"]["ports"]}
    assert set(config["routes"].values()) <= set(config["services"])
