"""dependsOn ordering and cycle detection; suspend; reconcile on request."""

from __future__ import annotations

from pathlib import Path

import pytest

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
from operator_process import OperatorProcess

pytestmark = pytest.mark.e2e

TEMPLATES = {
    "config.yaml": (
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-config\n"
        "data:\n  greeting: {{ .Values.greeting | quote }}\n"
    ),
}


@pytest.fixture(scope="module")
def chart_ref(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> str:
    root: Path = tmp_path_factory.mktemp("deps-chart")
    return push(cluster.registry, write_chart(root, "dep", "1.0.0", TEMPLATES, {"greeting": "a"}))


def spec(ref: str, **extra: object) -> dict[str, object]:
    return {"chart": {"ref": ref, "insecure": True}, **extra}


def test_depends_on_waits_for_the_dependency_and_cycles_stall(
    cluster: Cluster, rudder: OperatorProcess, chart_ref: str
) -> None:
    ns = unique("deps")
    # The app depends on a database HelmRelease that is suspended, so never Ready.
    apply_helmrelease(cluster, "db", ns, spec(chart_ref, suspend=True))
    apply_helmrelease(cluster, "app", ns, spec(chart_ref, dependsOn=[{"name": "db"}]))
    hr = wait_for_condition(
        cluster, ns, "app", "Ready", status="False", reason="DependencyNotReady"
    )
    assert f"{ns}/db" in condition(hr, "Ready")["message"]
    assert condition(hr, "Reconciling")["status"] == "True"
    assert release_secrets(cluster, ns, "app") == []

    apply_helmrelease(cluster, "db", ns, spec(chart_ref, suspend=False))
    wait_for_condition(cluster, ns, "db", "Ready")
    wait_for_condition(cluster, ns, "app", "Ready", timeout=60)

    apply_helmrelease(cluster, "a", ns, spec(chart_ref, dependsOn=[{"name": "b"}]))
    apply_helmrelease(cluster, "b", ns, spec(chart_ref, dependsOn=[{"name": "a"}]))
    hr = wait_for_condition(cluster, ns, "a", "Stalled", reason="DependencyCycle")
    assert condition(hr, "Ready")["status"] == "False"


def test_suspend_stops_all_actions_and_requested_at_reconciles_now(
    cluster: Cluster, rudder: OperatorProcess, chart_ref: str
) -> None:
    ns = unique("suspend")
    apply_helmrelease(cluster, "app", ns, spec(chart_ref, values={"greeting": "a"}))
    wait_for_condition(cluster, ns, "app", "Ready")

    apply_helmrelease(cluster, "app", ns, spec(chart_ref, values={"greeting": "b"}, suspend=True))
    hr = wait_for_condition(cluster, ns, "app", "Ready", reason="Suspended")
    assert "suspended" in condition(hr, "Ready")["message"]
    assert get_json(cluster, "configmap", "app-config", "-n", ns)["data"]["greeting"] == "a"
    assert len(release_secrets(cluster, ns, "app")) == 1

    apply_helmrelease(cluster, "app", ns, spec(chart_ref, values={"greeting": "b"}))
    wait_for_condition(cluster, ns, "app", "Ready", reason="UpgradeSucceeded")
    assert get_json(cluster, "configmap", "app-config", "-n", ns)["data"]["greeting"] == "b"

    cluster.kubectl(
        "annotate", "helmrelease", "app", "-n", ns, "rudder.dev/requestedAt=now-1", "--overwrite"
    )
    wait_for(
        lambda: (
            get_json(cluster, "helmrelease", "app", "-n", ns)["status"].get(
                "lastHandledRequestedAt"
            )
            == "now-1"
        ),
        what="the request to be handled",
    )
