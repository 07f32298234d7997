"""A HelmRelease is Ready only when every object it applied is Current (kstatus); a rollout
that cannot become ready fails the upgrade naming the object; a new spec cancels a wait."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from charts import app_chart, push
from conftest import Cluster
from helpers import apply_helmrelease, condition, get_json, unique, wait_for, wait_for_condition
from operator_process import OperatorProcess

pytestmark = pytest.mark.e2e


def test_readiness_gates_ready_failures_name_the_object_and_a_new_spec_cancels_the_wait(
    cluster: Cluster, rudder: OperatorProcess, tmp_path: Path
) -> None:
    ns = unique("ready")
    ref = push(cluster.registry, app_chart(tmp_path, "1.0.0"))
    spec = {
        "chart": {"ref": ref, "insecure": True},
        "install": {"createNamespace": True},
        "timeout": "8s",
        "values": {"replicas": 2},
    }
    apply_helmrelease(cluster, "app", ns, spec)
    hr = wait_for_condition(cluster, ns, "app", "Ready")
    resources = hr["status"]["resources"]
    assert resources["counts"]["Current"] >= 6
    assert resources.get("notReady", []) == []
    assert get_json(cluster, "deployment", "app", "-n", ns)["status"]["readyReplicas"] == 2

    # A rollout kwok never makes ready: the upgrade fails within the timeout, naming it.
    broken = {**spec, "values": {"replicas": 2, "image": "example.test/app:fail"}}
    apply_helmrelease(cluster, "app", ns, broken)
    hr = wait_for_condition(cluster, ns, "app", "Ready", status="False", reason="UpgradeFailed")
    assert f"Deployment/{ns}/app" in condition(hr, "Ready")["message"]
    not_ready = hr["status"]["resources"]["notReady"]
    assert any(entry["kind"] == "Deployment" and entry["name"] == "app" for entry in not_ready)
    history = json.loads(cluster.helm("history", "app", "-n", ns, "-o", "json").stdout)
    assert [h["status"] for h in history] == ["deployed", "failed"]

    # A long wait is abandoned as soon as a new generation arrives.
    waiting = {**broken, "timeout": "5m", "values": {"replicas": 3, "image": "x.test/app:fail"}}
    apply_helmrelease(cluster, "app", ns, waiting)
    wait_for(
        lambda: (
            "Waiting"
            in condition(get_json(cluster, "helmrelease", "app", "-n", ns), "Reconciling").get(
                "message", ""
            )
        ),
        what="the readiness wait to be reported",
    )
    started = time.monotonic()
    apply_helmrelease(cluster, "app", ns, {**spec, "timeout": "5m"})
    wait_for_condition(cluster, ns, "app", "Ready", timeout=60)
    assert time.monotonic() - started < 60, "the old wait was not cancelled"
    statuses = [
        h["status"]
        for h in json.loads(cluster.helm("history", "app", "-n", ns, "-o", "json").stdout)
    ]
    assert "pending-upgrade" not in statuses
    assert statuses[-1] == "deployed"


def test_operator_killed_during_a_wait_leaves_nothing_stuck(
    cluster: Cluster, rudder: OperatorProcess, tmp_path: Path
) -> None:
    ns = unique("killed")
    ref = push(cluster.registry, app_chart(tmp_path, "1.0.0"))
    spec = {
        "chart": {"ref": ref, "insecure": True},
        "install": {"createNamespace": True},
        "timeout": "5m",
        "values": {"replicas": 1},
    }
    apply_helmrelease(cluster, "app", ns, spec)
    wait_for_condition(cluster, ns, "app", "Ready")
    apply_helmrelease(cluster, "app", ns, {**spec, "values": {"image": "example.test/app:fail"}})
    wait_for(
        lambda: (
            "Waiting"
            in condition(get_json(cluster, "helmrelease", "app", "-n", ns), "Reconciling").get(
                "message", ""
            )
        ),
        what="the readiness wait",
    )
    rudder.kill()
    statuses = [
        h["status"]
        for h in json.loads(cluster.helm("history", "app", "-n", ns, "-o", "json").stdout)
    ]
    assert statuses[-1] == "pending-upgrade"  # what a crash leaves behind
    apply_helmrelease(cluster, "app", ns, {**spec, "values": {"replicas": 2}})
    rudder.start()
    wait_for_condition(cluster, ns, "app", "Ready", reason="UpgradeSucceeded", timeout=60)
    history = json.loads(cluster.helm("history", "app", "-n", ns, "-o", "json").stdout)
    assert [h["status"] for h in history] == ["superseded", "failed", "deployed"]
