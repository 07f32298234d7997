"""Two replicas with --leader-elect: exactly one reconciles; kill -9 the leader and the
standby takes over within the lease duration; no revision is written twice."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from charts import app_chart, push
from conftest import Cluster
from helpers import apply_helmrelease, get_json, unique, wait_for, wait_for_condition
from operator_process import (
    ELECTION,
    LEASE_SECONDS,
    OperatorProcess,
    service_account_kubeconfig,
)

pytestmark = pytest.mark.e2e


def holder(cluster: Cluster) -> str:
    lease = get_json(cluster, "lease", "rudder-leader", "-n", "rudder-system")
    return str(lease.get("spec", {}).get("holderIdentity") or "")


def test_standby_takes_over_when_the_leader_is_killed(
    cluster: Cluster, rudder: OperatorProcess, tmp_path: Path
) -> None:
    rudder.stop()  # the session's single replica steps aside for the pair
    kubectl = [str(cluster.tools / "kubectl"), f"--kubeconfig={cluster.kubeconfig}"]
    kubeconfig = service_account_kubeconfig(kubectl, cluster.kubeconfig, tmp_path / "kc")
    first = OperatorProcess(kubeconfig, tmp_path / "first", ELECTION)
    second = OperatorProcess(kubeconfig, tmp_path / "second", ELECTION)
    ns = unique("ha")
    ref = push(cluster.registry, app_chart(tmp_path, "1.0.0"))
    spec = {"chart": {"ref": ref, "insecure": True}, "install": {"createNamespace": True}}
    try:
        first.start()
        wait_for(lambda: holder(cluster), what="a leader")
        second.start()
        apply_helmrelease(cluster, "app", ns, {**spec, "values": {"greeting": "one"}})
        wait_for_condition(cluster, ns, "app", "Ready", timeout=60)
        logs = {p: p.log_path.read_text() for p in (first, second)}
        leader = next(p for p in (first, second) if f"{ns}/app" in logs[p])
        standby = second if leader is first else first
        assert f"{ns}/app" not in logs[standby], "the standby reconciled too"

        # Kill the leader mid-wave and change the spec: the standby must take over.
        leader.kill()
        killed_at = time.monotonic()
        apply_helmrelease(cluster, "app", ns, {**spec, "values": {"greeting": "two"}})
        wait_for_condition(cluster, ns, "app", "Ready", reason="UpgradeSucceeded", timeout=60)
        assert time.monotonic() - killed_at < LEASE_SECONDS + 20
        assert f"{ns}/app" in standby.log_path.read_text()
    finally:
        first.stop()
        second.stop()
        rudder.start()
    history = json.loads(cluster.helm("history", "app", "-n", ns, "-o", "json").stdout)
    assert [(h["revision"], h["status"]) for h in history] == [(1, "superseded"), (2, "deployed")]
