"""Uninstall on HelmRelease deletion: never hangs, keeps history when asked."""

from __future__ import annotations

import json

import pytest

from charts import push, write_chart
from conftest import Cluster
from helpers import (
    apply_helmrelease,
    get_json,
    release_secrets,
    unique,
    wait_for,
    wait_for_condition,
)
from operator_process import OperatorProcess

pytestmark = pytest.mark.e2e

TEMPLATES = {
    "config.yaml": (
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-config\n"
        "data:\n  greeting: hello\n"
    ),
    "pre-delete.yaml": (
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-goodbye\n"
        "  annotations:\n    helm.sh/hook: pre-delete\ndata: {said: goodbye}\n"
    ),
}


@pytest.fixture(scope="module")
def chart_ref(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("uninstall-chart")
    return push(cluster.registry, write_chart(root, "leaving", "1.0.0", TEMPLATES, {}))


def gone(cluster: Cluster, ns: str, name: str) -> bool:
    return not get_json(cluster, "helmrelease", name, "-n", ns)


def test_keep_history_marks_the_release_uninstalled_and_runs_delete_hooks(
    cluster: Cluster, rudder: OperatorProcess, chart_ref: str
) -> None:
    ns = unique("keep")
    spec = {"chart": {"ref": chart_ref, "insecure": True}, "uninstall": {"keepHistory": True}}
    apply_helmrelease(cluster, "leaving", ns, spec)
    wait_for_condition(cluster, ns, "leaving", "Ready")
    cluster.kubectl("delete", "helmrelease", "leaving", "-n", ns, "--wait=false")
    wait_for(lambda: gone(cluster, ns, "leaving"), what="the HelmRelease to go")
    assert not get_json(cluster, "configmap", "leaving-config", "-n", ns)
    assert get_json(cluster, "configmap", "leaving-goodbye", "-n", ns)["data"] == {
        "said": "goodbye"
    }
    (record,) = release_secrets(cluster, ns, "leaving")
    assert record["metadata"]["labels"]["status"] == "uninstalled"
    history = json.loads(cluster.helm("history", "leaving", "-n", ns, "-o", "json").stdout)
    assert history[-1]["status"] == "uninstalled"


def test_deletion_does_not_hang_on_a_missing_namespace_or_a_stuck_object(
    cluster: Cluster, rudder: OperatorProcess, chart_ref: str
) -> None:
    home, target = unique("home"), unique("target")
    spec = {
        "chart": {"ref": chart_ref, "insecure": True},
        "targetNamespace": target,
        "install": {"createNamespace": True},
        "uninstall": {"disableHooks": True},
    }
    apply_helmrelease(cluster, "missing", home, spec)
    wait_for_condition(cluster, home, "missing", "Ready")
    cluster.kubectl("delete", "namespace", target, "--wait=true", "--timeout=60s")
    cluster.kubectl("delete", "helmrelease", "missing", "-n", home, "--wait=false")
    wait_for(lambda: gone(cluster, home, "missing"), what="deletion with the namespace gone")

    stuck_ns = unique("stuck")
    apply_helmrelease(cluster, "stuck", stuck_ns, {**spec, "targetNamespace": stuck_ns})
    wait_for_condition(cluster, stuck_ns, "stuck", "Ready")
    cluster.kubectl(
        "patch",
        "configmap",
        "stuck-config",
        "-n",
        stuck_ns,
        "--type=merge",
        "-p",
        '{"metadata": {"finalizers": ["test.rudder.dev/hold"]}}',
    )
    cluster.kubectl("delete", "helmrelease", "stuck", "-n", stuck_ns, "--wait=false")
    wait_for(lambda: gone(cluster, stuck_ns, "stuck"), what="deletion with an object stuck")
    config = get_json(cluster, "configmap", "stuck-config", "-n", stuck_ns)
    assert config["metadata"].get("deletionTimestamp"), "the stuck object was not deleted"
    cluster.kubectl(
        "patch",
        "configmap",
        "stuck-config",
        "-n",
        stuck_ns,
        "--type=merge",
        "-p",
        '{"metadata": {"finalizers": null}}',
    )
