"""A rudder HelmRelease follows kstatus conventions: kstatus itself (Helm 4's Go
implementation, and rudder's port) judges it InProgress while it works, Failed when it is
stalled and Current when Ready; `kubectl wait --for=condition=Ready` works."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from charts import app_chart, push
from conftest import Cluster
from helpers import apply_helmrelease, get_json, unique, wait_for, wait_for_condition
from operator_process import OperatorProcess
from rudder.kube import kstatus

pytestmark = pytest.mark.e2e

E2E = Path(__file__).resolve().parent


def go_status(obj: dict[str, Any]) -> str:
    binary = subprocess.run(
        ["bash", str(E2E / "build-kstatus-compare.sh")], check=True, capture_output=True, text=True
    ).stdout.strip()
    out = subprocess.run(
        [binary], input=json.dumps([obj]), check=True, capture_output=True, text=True
    ).stdout
    return str(json.loads(out)[0]["status"])


def both(obj: dict[str, Any]) -> tuple[str, str]:
    return go_status(obj), kstatus.compute(obj).status.value


def test_kstatus_judges_a_helmrelease(
    cluster: Cluster, rudder: OperatorProcess, tmp_path: Path
) -> None:
    ns = unique("kstatus-hr")
    ref = push(cluster.registry, app_chart(tmp_path, "1.0.0"))
    good = {"chart": {"ref": ref, "insecure": True}, "install": {"createNamespace": True}}
    apply_helmrelease(cluster, "app", ns, {**good, "timeout": "30s"})
    cluster.kubectl("wait", "--for=condition=Ready", "helmrelease/app", "-n", ns, "--timeout=60s")
    assert both(get_json(cluster, "helmrelease", "app", "-n", ns)) == ("Current", "Current")

    # While an upgrade waits for readiness: InProgress.
    slow = {**good, "timeout": "30s", "values": {"image": "example.test/app:fail"}}
    apply_helmrelease(cluster, "app", ns, slow)
    in_progress = wait_for(
        lambda: (
            (obj := get_json(cluster, "helmrelease", "app", "-n", ns))
            and any(
                c["type"] == "Reconciling" and c["status"] == "True"
                for c in obj["status"].get("conditions", [])
            )
            and obj
        ),
        what="Reconciling",
    )
    assert both(in_progress) == ("InProgress", "InProgress")

    # Values the API server rejects (replicas must be an integer) stall it: Failed.
    apply_helmrelease(cluster, "app", ns, {**good, "values": {"replicas": "not-a-number"}})
    stalled = wait_for_condition(cluster, ns, "app", "Stalled", timeout=90)
    assert both(stalled) == ("Failed", "Failed")
