"""Chart sourcing as users see it on a HelmRelease run by the real operator: the resolved
digest in status for tag mode (and a moved tag noticed at the next interval), and each
chart failure as a condition reason, stalled only when retrying cannot help."""

from __future__ import annotations

import base64
import json
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from conftest import Cluster
from helpers import apply_helmrelease, condition, get_json, wait_for, wait_for_condition
from operator_process import OperatorProcess
from registry_proxy import RegistryProxy

# The throwaway-registry helpers of the unit tests also drive the cluster's registries.
sys.path.append(str(Path(__file__).resolve().parent.parent / "tests"))
from registry_fixture import RegistryApi, docker_config, push_chart, write_chart

pytestmark = pytest.mark.e2e


@pytest.fixture
def namespace(cluster: Cluster) -> Iterator[str]:
    name = f"oci-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def _secret(cluster: Cluster, namespace: str, name: str, kind: str, data: dict[str, bytes]) -> None:
    manifest = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": kind,
        "metadata": {"name": name, "namespace": namespace},
        "data": {key: base64.b64encode(value).decode() for key, value in data.items()},
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(manifest))


def _registry_secret(cluster: Cluster, namespace: str, password: str) -> None:
    config = docker_config(cluster.auth_registry, cluster.auth_user, password)
    _secret(cluster, namespace, "regcred", "kubernetes.io/dockerconfigjson",
            {".dockerconfigjson": config})  # fmt: skip


def _chart_spec(ref: str, **chart: object) -> dict[str, object]:
    return {"chart": {"ref": ref, "insecure": True, **chart}, "timeout": "60s"}


def test_tag_mode_records_the_digest_and_follows_a_moved_tag(
    cluster: Cluster, rudder: OperatorProcess, namespace: str, tmp_path: Path
) -> None:
    api = RegistryApi(cluster.registry)
    name = f"follow-{uuid.uuid4().hex[:6]}"
    first = push_chart(api, write_chart(tmp_path, name, "1.0.0")).rsplit("@", 1)[1]
    second = push_chart(api, write_chart(tmp_path, name, "1.1.0")).rsplit("@", 1)[1]
    repository = f"charts/{name}"
    api.put_manifest(repository, "stable", api.get_manifest(repository, first))
    spec = _chart_spec(f"oci://{cluster.registry}/{repository}:stable", allowTag=True)
    apply_helmrelease(cluster, "follow", namespace, {**spec, "interval": "3s"})

    ready = wait_for_condition(cluster, namespace, "follow", "Ready")
    assert ready["status"]["chart"]["digest"] == first
    assert ready["status"]["chart"]["version"] == "1.0.0"

    api.put_manifest(repository, "stable", api.get_manifest(repository, second))

    def upgraded() -> dict[str, object] | None:
        hr = get_json(cluster, "helmrelease", "follow", "-n", namespace)
        status = hr.get("status", {})
        if (
            status.get("chart", {}).get("digest") == second
            and condition(hr, "Ready").get("status") == "True"
        ):
            return hr
        return None

    hr = wait_for(upgraded, timeout=60, what="the moved tag to be installed")
    assert hr["status"]["release"]["revision"] == 2  # type: ignore[index]


def test_wrong_registry_password_is_a_retriable_auth_failure(
    cluster: Cluster, rudder: OperatorProcess, namespace: str, tmp_path: Path
) -> None:
    api = RegistryApi(cluster.auth_registry, user=cluster.auth_user, password=cluster.auth_password)
    ref = push_chart(api, write_chart(tmp_path, f"locked-{uuid.uuid4().hex[:6]}", "1.0.0"))
    wrong = "definitely-not-the-password"
    _registry_secret(cluster, namespace, wrong)
    apply_helmrelease(cluster, "locked", namespace, _chart_spec(ref, secretRef={"name": "regcred"}))

    hr = wait_for_condition(
        cluster, namespace, "locked", "Ready", status="False", reason="RegistryAuthFailed"
    )
    assert condition(hr, "Stalled").get("status") != "True"  # retried with backoff
    assert cluster.auth_registry in condition(hr, "Ready")["message"]
    seen = json.dumps(hr) + cluster.kubectl("get", "events", "-n", namespace, "-o", "json").stdout
    assert wrong not in seen

    # Fixing the Secret is enough: the next retry pulls the chart.
    _registry_secret(cluster, namespace, cluster.auth_password)
    fixed = wait_for_condition(cluster, namespace, "locked", "Ready", timeout=120)
    assert fixed["status"]["chart"]["digest"] == ref.rsplit("@", 1)[1]


def test_tampered_chart_stalls_with_digest_mismatch(
    cluster: Cluster, rudder: OperatorProcess, namespace: str, tmp_path: Path
) -> None:
    ref = push_chart(
        RegistryApi(cluster.registry), write_chart(tmp_path, f"bad-{uuid.uuid4().hex[:6]}", "1.0.0")
    )
    with RegistryProxy(cluster.registry) as proxy:
        proxy.tamper = lambda path: "/blobs/" in path
        tampered = ref.replace(cluster.registry, proxy.host)
        apply_helmrelease(cluster, "tampered", namespace, _chart_spec(tampered))
        hr = wait_for_condition(cluster, namespace, "tampered", "Stalled", reason="DigestMismatch")
    assert condition(hr, "Ready")["status"] == "False"
    assert "hashing to" in condition(hr, "Ready")["message"]


def test_unsigned_chart_stalls_when_a_signature_is_required(
    cluster: Cluster, rudder: OperatorProcess, namespace: str, tmp_path: Path
) -> None:
    public_pem = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    ref = push_chart(
        RegistryApi(cluster.registry),
        write_chart(tmp_path, f"unsigned-{uuid.uuid4().hex[:6]}", "1.0.0"),
    )
    _secret(cluster, namespace, "cosign-pub", "Opaque", {"cosign.pub": public_pem})
    spec = _chart_spec(ref, verify={"cosign": {"publicKeySecretRef": {"name": "cosign-pub"}}})
    apply_helmrelease(cluster, "unsigned", namespace, spec)

    hr = wait_for_condition(cluster, namespace, "unsigned", "Stalled", reason="VerificationFailed")
    assert "no cosign signature found" in condition(hr, "Ready")["message"]
