"""spec.kubeConfig: the HelmRelease lives on the management cluster, the release in a
second, real control plane (its own etcd, kube-apiserver, controller-manager, kwok, on
ports of its own). Install, upgrade, drift correction and uninstall happen there (the
remote's `helm list` sees the release); a stopped remote kube-apiserver is
`ClusterUnreachable` for its HelmRelease only, while a local one installs as usual; and a
kubeconfig that would run a program or read rudder's files is refused."""

from __future__ import annotations

import base64
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from charts import push, write_chart
from conftest import Cluster
from helpers import (
    apply_helmrelease,
    condition,
    get_json,
    release_secrets,
    unique,
    wait_for,
    wait_for_condition,
)
from localcluster import LocalCluster
from operator_process import OperatorProcess

pytestmark = pytest.mark.e2e

TEMPLATES = {
    "config.yaml": (
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-config\n"
        "data:\n  greeting: {{ .Values.greeting | quote }}\n"
        "  kube: {{ .Capabilities.KubeVersion.Version | quote }}\n"
    ),
    "deployment.yaml": """apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}
spec:
  replicas: 1
  selector: {matchLabels: {app: {{ .Release.Name }}}}
  template:
    metadata: {labels: {app: {{ .Release.Name }}}}
    spec: {containers: [{name: app, image: "example.test/app:1"}]}
""",
}


@pytest.fixture(scope="module")
def remote() -> Iterator[tuple[LocalCluster, Cluster]]:
    directory = Path(tempfile.mkdtemp(prefix="rudder-e2e-remote-"))
    local = LocalCluster(directory)
    state = local.start()
    try:
        yield local, Cluster(state)
    finally:
        local.stop()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def chart_ref(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("remote-chart")
    return push(cluster.registry, write_chart(root, "far", "1.0.0", TEMPLATES, {"greeting": "a"}))


def kubeconfig_secret(cluster: Cluster, ns: str, name: str, kubeconfig: str) -> None:
    cluster.kubectl("create", "namespace", ns, check=False)
    cluster.kubectl(
        "apply", "-f", "-",
        input=yaml.safe_dump({"apiVersion": "v1", "kind": "Secret",
                              "metadata": {"name": name, "namespace": ns},
                              "data": {"value": base64.b64encode(kubeconfig.encode()).decode()}}),
    )  # fmt: skip


def spec(
    ref: str, values: dict[str, Any], kubeconfig: str = "remote", **extra: Any
) -> dict[str, Any]:
    return {
        "chart": {"ref": ref, "insecure": True},
        "values": values,
        "kubeConfig": {"secretRef": {"name": kubeconfig}},
        "targetNamespace": "far-away",
        "install": {"createNamespace": True},
        "interval": "3s",
        "timeout": "60s",
        **extra,
    }


def test_a_release_in_a_remote_cluster(
    cluster: Cluster,
    rudder: OperatorProcess,
    remote: tuple[LocalCluster, Cluster],
    chart_ref: str,
) -> None:
    control, far = remote
    ns = unique("fleet")
    kubeconfig_secret(cluster, ns, "remote", far.kubeconfig.read_text())
    apply_helmrelease(
        cluster, "far", ns, spec(chart_ref, {"greeting": "a"}, driftDetection={"mode": "enabled"})
    )
    wait_for_condition(cluster, ns, "far", "Ready", reason="InstallSucceeded", timeout=120)

    # Everything is in the remote cluster: objects, release Secret, Helm's own view.
    config = get_json(far, "configmap", "far-config", "-n", "far-away")
    assert config["data"]["greeting"] == "a"
    assert config["data"]["kube"].startswith("v1.")
    assert get_json(far, "deployment", "far", "-n", "far-away")["status"]["readyReplicas"] == 1
    assert [s["metadata"]["labels"]["status"] for s in release_secrets(far, "far-away", "far")] == [
        "deployed"
    ]
    listed = yaml.safe_load(far.helm("list", "-n", "far-away", "-o", "yaml").stdout)
    assert [(r["name"], r["status"]) for r in listed] == [("far", "deployed")]
    assert get_json(cluster, "namespace", "far-away") == {}  # nothing on the management side
    assert release_secrets(cluster, ns, "far") == []

    # Upgrade there.
    apply_helmrelease(
        cluster, "far", ns, spec(chart_ref, {"greeting": "b"}, driftDetection={"mode": "enabled"})
    )
    wait_for_condition(cluster, ns, "far", "Ready", reason="UpgradeSucceeded", timeout=120)
    assert get_json(far, "configmap", "far-config", "-n", "far-away")["data"]["greeting"] == "b"

    # Drift in the remote cluster is seen and taken back there.
    far.kubectl(
        "patch", "configmap", "far-config", "-n", "far-away", "--type=merge",
        "-p", '{"data": {"greeting": "edited"}}',
    )  # fmt: skip
    wait_for(
        lambda: (
            get_json(far, "configmap", "far-config", "-n", "far-away")["data"]["greeting"] == "b"
        ),
        timeout=60,
        what="drift corrected in the remote cluster",
    )

    # The remote API server stops: this HelmRelease says so; a local one is not held up.
    control.stop_component("kube-apiserver")
    try:
        cluster.kubectl(
            "annotate", "helmrelease", "far", "-n", ns, "--overwrite",
            "rudder.dev/requestedAt=remote-down",
        )  # fmt: skip
        down = wait_for_condition(
            cluster, ns, "far", "Ready", status="False", reason="ClusterUnreachable", timeout=90
        )
        assert "could not be reached" in condition(down, "Ready")["message"]
        apply_helmrelease(
            cluster,
            "near",
            ns,
            {"chart": {"ref": chart_ref, "insecure": True}, "values": {"greeting": "local"}},
        )
        wait_for_condition(cluster, ns, "near", "Ready", reason="InstallSucceeded", timeout=60)
    finally:
        control.start_component("kube-apiserver")
    wait_for_condition(cluster, ns, "far", "Ready", timeout=120)

    # Uninstall happens there too.
    cluster.kubectl("delete", "helmrelease", "far", "-n", ns, "--timeout=120s")
    assert get_json(far, "configmap", "far-config", "-n", "far-away") == {}
    assert release_secrets(far, "far-away", "far") == []


def test_kubeconfigs_that_run_programs_or_read_files_are_refused(
    cluster: Cluster, rudder: OperatorProcess, remote: tuple[LocalCluster, Cluster], chart_ref: str
) -> None:
    _, far = remote
    ns = unique("fleet-bad")
    config = yaml.safe_load(far.kubeconfig.read_text())
    user = config["users"][0]["name"]
    program = {"apiVersion": "client.authentication.k8s.io/v1", "command": "/bin/sh"}
    with_exec = {**config, "users": [{"name": user, "user": {"exec": program}}]}
    token = "/var/run/secrets/kubernetes.io/serviceaccount/token"
    reads_token = {**config, "users": [{"name": user, "user": {"tokenFile": token}}]}
    kubeconfig_secret(cluster, ns, "runs", yaml.safe_dump(with_exec))
    kubeconfig_secret(cluster, ns, "reads", yaml.safe_dump(reads_token))
    apply_helmrelease(cluster, "runs", ns, spec(chart_ref, {}, kubeconfig="runs"))
    apply_helmrelease(cluster, "reads", ns, spec(chart_ref, {}, kubeconfig="reads"))
    apply_helmrelease(cluster, "missing", ns, spec(chart_ref, {}, kubeconfig="nope"))
    runs = wait_for_condition(
        cluster, ns, "runs", "Ready", status="False", reason="InvalidKubeConfig"
    )
    assert "--allow-kubeconfig-exec" in condition(runs, "Ready")["message"]
    assert condition(runs, "Stalled")["status"] == "True"
    reads = wait_for_condition(
        cluster, ns, "reads", "Ready", status="False", reason="InvalidKubeConfig"
    )
    assert "tokenFile" in condition(reads, "Ready")["message"]
    missing = wait_for_condition(
        cluster, ns, "missing", "Ready", status="False", reason="KubeConfigNotFound"
    )
    assert f"Secret {ns}/nope does not exist" in condition(missing, "Ready")["message"]
