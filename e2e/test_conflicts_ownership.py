"""SSA ownership conflicts surfaced (not forced), Helm's object ownership guard, and one
HelmRelease per release — each decided by the real API server."""

from __future__ import annotations

import json

import pytest

from charts import push, write_chart
from conftest import Cluster
from helpers import (
    apply_helmrelease,
    condition,
    get_json,
    release_secrets,
    unique,
    wait_for_condition,
)
from operator_process import OperatorProcess

pytestmark = pytest.mark.e2e

TEMPLATES = {
    "config.yaml": (
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-config\n"
        "data:\n  greeting: {{ .Values.greeting | quote }}\n"
    ),
    "deployment.yaml": """apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}
spec:
  {{- if .Values.replicas }}
  replicas: {{ .Values.replicas }}
  {{- end }}
  selector: {matchLabels: {app: {{ .Release.Name }}}}
  template:
    metadata: {labels: {app: {{ .Release.Name }}}}
    spec: {containers: [{name: app, image: "example.test/app:1"}]}
""",
}


@pytest.fixture(scope="module")
def chart_ref(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("conflict-chart")
    return push(
        cluster.registry, write_chart(root, "scaled", "1.0.0", TEMPLATES, {"greeting": "a"})
    )


def spec(ref: str, values: dict[str, object], **extra: object) -> dict[str, object]:
    return {"chart": {"ref": ref, "insecure": True}, "values": values, "timeout": "60s", **extra}


def test_conflict_is_reported_with_nothing_applied_then_forced(
    cluster: Cluster, rudder: OperatorProcess, chart_ref: str
) -> None:
    ns = unique("conflicts")
    apply_helmrelease(cluster, "scaled", ns, spec(chart_ref, {"greeting": "a"}))
    wait_for_condition(cluster, ns, "scaled", "Ready")

    # Another manager (think: an autoscaler) owns spec.replicas through server-side apply.
    cluster.kubectl(
        "apply", "--server-side", "--field-manager=hpa-sim", "-f", "-",
        input=json.dumps({"apiVersion": "apps/v1", "kind": "Deployment",
                          "metadata": {"name": "scaled", "namespace": ns},
                          "spec": {"replicas": 3}}),
    )  # fmt: skip

    # A chart that omits replicas coexists with it untouched.
    apply_helmrelease(cluster, "scaled", ns, spec(chart_ref, {"greeting": "b"}))
    wait_for_condition(cluster, ns, "scaled", "Ready", reason="UpgradeSucceeded")
    assert get_json(cluster, "deployment", "scaled", "-n", ns)["spec"]["replicas"] == 3
    config_before = get_json(cluster, "configmap", "scaled-config", "-n", ns)
    assert config_before["data"]["greeting"] == "b"

    # A chart that sets replicas differently conflicts: reported, nothing of the stage applied.
    apply_helmrelease(cluster, "scaled", ns, spec(chart_ref, {"greeting": "c", "replicas": 5}))
    hr = wait_for_condition(cluster, ns, "scaled", "Ready", status="False", reason="ApplyConflict")
    assert condition(hr, "Conflicted")["status"] == "True"
    assert condition(hr, "Stalled")["status"] == "True"
    assert {
        "apiVersion": "apps/v1", "kind": "Deployment", "namespace": ns, "name": "scaled",
        "field": ".spec.replicas", "manager": "hpa-sim",
    } in hr["status"]["conflicts"]  # fmt: skip
    config_after = get_json(cluster, "configmap", "scaled-config", "-n", ns)
    assert config_after["data"]["greeting"] == "b", "an object of the conflicting stage changed"
    assert (
        config_after["metadata"]["resourceVersion"] == config_before["metadata"]["resourceVersion"]
    )
    assert get_json(cluster, "deployment", "scaled", "-n", ns)["spec"]["replicas"] == 3
    # The failed attempt wrote no revision: the previous one is still the deployed one.
    statuses = [s["metadata"]["labels"]["status"] for s in release_secrets(cluster, ns, "scaled")]
    assert statuses == ["superseded", "deployed"]

    # forceConflicts takes the field.
    apply_helmrelease(
        cluster, "scaled", ns,
        spec(chart_ref, {"greeting": "c", "replicas": 5}, upgrade={"forceConflicts": True}),
    )  # fmt: skip
    hr = wait_for_condition(cluster, ns, "scaled", "Ready", reason="UpgradeSucceeded")
    assert get_json(cluster, "deployment", "scaled", "-n", ns)["spec"]["replicas"] == 5
    assert not condition(hr, "Conflicted")
    assert not hr["status"].get("conflicts")


def test_existing_object_blocks_install_until_take_ownership(
    cluster: Cluster, rudder: OperatorProcess, chart_ref: str
) -> None:
    ns = unique("ownership")
    cluster.kubectl("create", "namespace", ns)
    cluster.kubectl("create", "configmap", "owned-config", "-n", ns, "--from-literal=greeting=mine")
    apply_helmrelease(cluster, "owned", ns, spec(chart_ref, {"greeting": "a"}))
    hr = wait_for_condition(
        cluster, ns, "owned", "Ready", status="False", reason="OwnershipConflict"
    )
    assert f"ConfigMap/{ns}/owned-config" in condition(hr, "Ready")["message"]
    assert release_secrets(cluster, ns, "owned") == []
    assert get_json(cluster, "configmap", "owned-config", "-n", ns)["data"]["greeting"] == "mine"

    apply_helmrelease(
        cluster, "owned", ns, spec(chart_ref, {"greeting": "a"}, install={"takeOwnership": True})
    )
    wait_for_condition(cluster, ns, "owned", "Ready")
    config = get_json(cluster, "configmap", "owned-config", "-n", ns)
    assert config["data"]["greeting"] == "a"
    assert config["metadata"]["annotations"]["meta.helm.sh/release-name"] == "owned"


def test_a_second_helmrelease_on_the_same_release_is_refused(
    cluster: Cluster, rudder: OperatorProcess, chart_ref: str
) -> None:
    ns = unique("one-owner")
    apply_helmrelease(
        cluster, "first", ns, spec(chart_ref, {"greeting": "a"}, releaseName="shared")
    )
    wait_for_condition(cluster, ns, "first", "Ready")
    apply_helmrelease(
        cluster, "second", ns, spec(chart_ref, {"greeting": "b"}, releaseName="shared")
    )
    hr = wait_for_condition(
        cluster, ns, "second", "Ready", status="False", reason="ReleaseOwnedElsewhere"
    )
    assert f"{ns}/first" in condition(hr, "Ready")["message"]
    assert get_json(cluster, "configmap", "shared-config", "-n", ns)["data"]["greeting"] == "a"
