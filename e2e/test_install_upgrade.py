"""A real multi-object chart installed, upgraded and uninstalled by rudder, and read back by
the real helm v4 and v3 CLIs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from charts import app_chart, push
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
from operator_process import OperatorProcess

pytestmark = pytest.mark.e2e

NS = unique("lifecycle")


@pytest.fixture(scope="module")
def charts(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("charts")
    v1 = push(cluster.registry, app_chart(root / "v1", "1.0.0"))
    v2 = push(
        cluster.registry,
        app_chart(
            root / "v2",
            "1.1.0",
            drop=("ingress.yaml",),
            extra_templates={
                "kept.yaml": (
                    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-kept\n"
                    "  annotations:\n    helm.sh/resource-policy: keep\ndata: {a: b}\n"
                )
            },
        ),
    )
    v3 = push(cluster.registry, app_chart(root / "v3", "1.2.0", drop=("ingress.yaml",)))
    return {"v1": v1, "v2": v2, "v3": v3, "dir": str(root / "v1" / "app")}


def spec(ref: str, **values: object) -> dict[str, object]:
    return {
        "chart": {"ref": ref, "insecure": True},
        "install": {"createNamespace": True},
        "values": values,
        "timeout": "60s",
    }


def test_install_upgrade_uninstall(
    cluster: Cluster, rudder: OperatorProcess, charts: dict[str, str], tmp_path: Path
) -> None:
    apply_helmrelease(cluster, "app", NS, spec(charts["v1"], greeting="hi"))
    hr = wait_for_condition(cluster, NS, "app", "Ready")
    assert hr["status"]["release"]["revision"] == 1
    assert hr["status"]["chart"]["nameVersion"] == "app:1.0.0"
    assert hr["status"]["chart"]["digest"] == charts["v1"].split("@")[1]
    assert condition(hr, "Released")["reason"] == "InstallSucceeded"
    assert "Reconciling" not in {c["type"] for c in hr["status"]["conditions"]}

    for kind, name in [
        ("deployment", "app"), ("service", "app"), ("serviceaccount", "app"),
        ("configmap", "app-config"), ("ingress", "app"), ("widgets.test.rudder.dev", "app-widget"),
    ]:  # fmt: skip
        obj = get_json(cluster, kind, name, "-n", NS, "--show-managed-fields")
        assert obj, f"{kind}/{name} was not created"
        meta = obj["metadata"]
        assert meta["annotations"]["meta.helm.sh/release-name"] == "app"
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "Helm"
        managers = {entry["manager"] for entry in meta.get("managedFields", [])}
        assert "rudder" in managers, f"{kind}/{name} managers: {managers}"
    assert get_json(cluster, "crd", "widgets.test.rudder.dev")

    # Capabilities come from the live cluster, not Helm's defaults.
    version = json.loads(cluster.kubectl("version", "-o", "json").stdout)["serverVersion"]
    config = get_json(cluster, "configmap", "app-config", "-n", NS)
    assert config["data"]["kubeVersion"] == version["gitVersion"]

    # The Helm CLIs see rudder's release as their own.
    for helm in (cluster.helm, cluster.helm3):
        listed = json.loads(helm("list", "-n", NS, "-o", "json").stdout)
        assert [(r["name"], r["revision"], r["status"]) for r in listed] == [
            ("app", "1", "deployed")
        ]
        assert json.loads(helm("get", "values", "app", "-n", NS, "-o", "json").stdout) == {
            "greeting": "hi"
        }

    # The stored manifest is byte-identical to what the Helm CLI itself stores.
    cluster.helm("install", "app", charts["dir"], "-n", f"{NS}-cli", "--create-namespace",
                 "--set", "greeting=hi", "--skip-crds")  # fmt: skip
    ours = cluster.helm("get", "manifest", "app", "-n", NS).stdout
    theirs = cluster.helm("get", "manifest", "app", "-n", f"{NS}-cli").stdout
    assert ours == theirs
    cluster.helm("uninstall", "app", "-n", f"{NS}-cli")

    # Upgrade: a values change.
    apply_helmrelease(cluster, "app", NS, spec(charts["v1"], greeting="bonjour"))
    hr = wait_for_condition(cluster, NS, "app", "Ready", reason="UpgradeSucceeded")
    assert hr["status"]["release"]["revision"] == 2
    assert get_json(cluster, "configmap", "app-config", "-n", NS)["data"]["greeting"] == "bonjour"

    # Upgrade: a chart change that drops the Ingress and adds a keep-annotated ConfigMap.
    apply_helmrelease(cluster, "app", NS, spec(charts["v2"], greeting="bonjour"))
    hr = wait_for_condition(cluster, NS, "app", "Ready", reason="UpgradeSucceeded")
    assert hr["status"]["release"]["revision"] == 3
    assert not get_json(cluster, "ingress", "app", "-n", NS), "dropped Ingress was not pruned"
    assert get_json(cluster, "configmap", "app-kept", "-n", NS)

    # Upgrade: the keep-annotated object leaves the chart and survives.
    apply_helmrelease(cluster, "app", NS, spec(charts["v3"], greeting="bonjour"))
    wait_for_condition(cluster, NS, "app", "Ready", reason="UpgradeSucceeded")
    assert get_json(cluster, "configmap", "app-kept", "-n", NS)

    for helm in (cluster.helm, cluster.helm3):
        history = json.loads(helm("history", "app", "-n", NS, "-o", "json").stdout)
        assert [(h["revision"], h["status"]) for h in history] == [
            (1, "superseded"), (2, "superseded"), (3, "superseded"), (4, "deployed"),
        ]  # fmt: skip

    # Uninstall: objects and records go; the crds/ CRD and its custom resources stay.
    cluster.kubectl("delete", "helmrelease", "app", "-n", NS, "--timeout=60s")
    assert not get_json(cluster, "deployment", "app", "-n", NS)
    assert not get_json(cluster, "configmap", "app-config", "-n", NS)
    assert release_secrets(cluster, NS, "app") == []
    assert get_json(cluster, "crd", "widgets.test.rudder.dev")
    assert get_json(cluster, "widgets.test.rudder.dev", "app-widget", "-n", NS)
    wait_for(
        lambda: "Uninstall" in cluster.kubectl("get", "events", "-n", NS).stdout,
        what="an uninstall event",
    )
