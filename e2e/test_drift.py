"""Drift detection: a person's edit of a chart-set field is reported (warn) or taken back
(enabled); a controller's change through /scale (an HPA) is not drift."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from audit import now, requests, settle
from charts import app_chart, push
from conftest import Cluster
from helpers import apply_helmrelease, condition, get_json, unique, wait_for, wait_for_condition
from operator_process import OperatorProcess

pytestmark = pytest.mark.e2e


def test_drift_is_reported_then_corrected_and_an_hpa_is_not_drift(
    cluster: Cluster, rudder: OperatorProcess, tmp_path: Path
) -> None:
    ns = unique("drift")
    ref = push(cluster.registry, app_chart(tmp_path, "1.0.0"))
    spec = {
        "chart": {"ref": ref, "insecure": True},
        "install": {"createNamespace": True},
        "interval": "3s",
        "values": {"greeting": "chart", "replicas": 2},
        "driftDetection": {"mode": "warn"},
    }
    apply_helmrelease(cluster, "app", ns, spec)
    wait_for_condition(cluster, ns, "app", "Ready")

    # An autoscaler-like controller changes replicas through /scale: not drift.
    cluster.kubectl(
        "patch",
        "deployment",
        "app",
        "-n",
        ns,
        "--subresource=scale",
        "--type=merge",
        "-p",
        '{"spec": {"replicas": 4}}',
        "--field-manager=hpa-sim",
    )
    # A person edits a field the chart sets: drift.
    cluster.kubectl(
        "patch",
        "configmap",
        "app-config",
        "-n",
        ns,
        "--type=merge",
        "-p",
        '{"data": {"greeting": "edited"}}',
    )
    hr = wait_for_condition(cluster, ns, "app", "Drifted", reason="DriftDetected", timeout=30)
    drift = hr["status"]["drift"]
    assert [(d["kind"], d["name"], d["fields"]) for d in drift] == [
        ("ConfigMap", "app-config", ["/data/greeting"])
    ]
    assert get_json(cluster, "configmap", "app-config", "-n", ns)["data"]["greeting"] == "edited"
    assert condition(hr, "Ready")["status"] == "True"

    apply_helmrelease(cluster, "app", ns, {**spec, "driftDetection": {"mode": "enabled"}})
    wait_for(
        lambda: (
            get_json(cluster, "configmap", "app-config", "-n", ns)["data"]["greeting"] == "chart"
        ),
        timeout=30,
        what="the edit to be taken back",
    )
    hr = wait_for(
        lambda: (
            (obj := get_json(cluster, "helmrelease", "app", "-n", ns))
            and not condition(obj, "Drifted")
            and obj
        ),
        timeout=30,
        what="Drifted to clear",
    )
    assert "drift" not in hr["status"]
    assert get_json(cluster, "deployment", "app", "-n", ns)["spec"]["replicas"] == 4
    events = cluster.kubectl("get", "events", "-n", ns).stdout
    assert "DriftCorrected" in events

    # Checking an undrifted release is reads and dry-runs only.
    settle()
    start = now()
    time.sleep(8)  # more than two intervals
    settle()
    seen = requests(cluster.audit_log, since=start)
    checks = [r for r in seen if r.dry_run and r.namespace == ns]
    assert checks, "no drift check ran"
    assert [r for r in seen if r.is_write and r.namespace == ns] == []
