"""A failed upgrade is retried, then rolled back exactly as Helm rolls back, and nothing
more is tried until the spec changes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from charts import app_chart, push
from conftest import Cluster
from helpers import apply_helmrelease, condition, get_json, unique, wait_for_condition
from operator_process import OperatorProcess

pytestmark = pytest.mark.e2e


def test_failed_upgrade_is_retried_then_rolled_back(
    cluster: Cluster, rudder: OperatorProcess, tmp_path: Path
) -> None:
    ns = unique("remedy")
    ref = push(cluster.registry, app_chart(tmp_path, "1.0.0"))
    spec = {
        "chart": {"ref": ref, "insecure": True},
        "install": {"createNamespace": True},
        "upgrade": {"remediation": {"retries": 1, "strategy": "rollback"}},
        "timeout": "6s",
        "values": {"greeting": "good"},
    }
    apply_helmrelease(cluster, "app", ns, spec)
    wait_for_condition(cluster, ns, "app", "Ready")

    broken = {**spec, "values": {"greeting": "bad", "image": "example.test/app:fail"}}
    apply_helmrelease(cluster, "app", ns, broken)
    hr = wait_for_condition(
        cluster, ns, "app", "Remediated", reason="RollbackSucceeded", timeout=120
    )
    assert condition(hr, "Ready")["reason"] == "RetriesExceeded"
    assert condition(hr, "Stalled")["status"] == "True"
    assert hr["status"]["upgradeFailures"] == 2

    history = json.loads(cluster.helm("history", "app", "-n", ns, "-o", "json").stdout)
    assert [(h["revision"], h["status"]) for h in history] == [
        (1, "superseded"),
        (2, "failed"),
        (3, "failed"),
        (4, "deployed"),
    ]
    assert history[-1]["description"] == "Rollback to 1"
    values = json.loads(cluster.helm("get", "values", "app", "-n", ns, "-o", "json").stdout)
    assert values == {"greeting": "good"}
    assert get_json(cluster, "configmap", "app-config", "-n", ns)["data"]["greeting"] == "good"
    image = get_json(cluster, "deployment", "app", "-n", ns)["spec"]["template"]["spec"]
    assert image["containers"][0]["image"] == "example.test/app:1.0"

    # A new spec resets the counters and is tried again.
    apply_helmrelease(cluster, "app", ns, {**spec, "values": {"greeting": "better"}})
    hr = wait_for_condition(cluster, ns, "app", "Ready", reason="UpgradeSucceeded", timeout=60)
    assert hr["status"]["release"]["revision"] == 5
    assert "upgradeFailures" not in hr["status"]
