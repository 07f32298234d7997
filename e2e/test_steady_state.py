"""Quiet when nothing changes: counted from the API server's audit log, not from rudder's own
account of itself (only the number of reconciles comes from its metrics: an idle reconcile
makes no request to count)."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest

from audit import now, requests, settle
from charts import app_chart, push
from conftest import Cluster
from helpers import apply_helmrelease, unique, wait_for_condition
from operator_process import OperatorProcess
from test_operator_metrics import sample, scrape

pytestmark = pytest.mark.e2e

IDLE_SECONDS = 16
INTERVAL = "4s"
RESULTS = ("success", "error", "requeue", "requeue_after")


def reconciled(rudder: OperatorProcess) -> float:
    """Reconciles the operator finished, whatever their result."""
    text = scrape(rudder)
    return sum(sample(text, "rudder_reconcile_total", result=r) for r in RESULTS)


def test_idle_reconciles_write_nothing_and_an_upgrade_writes_only_what_changed(
    cluster: Cluster, rudder: OperatorProcess, tmp_path: Path
) -> None:
    ns = unique("steady")
    ref = push(cluster.registry, app_chart(tmp_path, "1.0.0"))
    spec = {
        "chart": {"ref": ref, "insecure": True},
        "install": {"createNamespace": True},
        "interval": INTERVAL,
        "values": {"greeting": "hi"},
    }
    apply_helmrelease(cluster, "app", ns, spec)
    wait_for_condition(cluster, ns, "app", "Ready")
    settle()

    start = now()
    before = reconciled(rudder)
    time.sleep(IDLE_SECONDS)
    reconciles = reconciled(rudder) - before
    settle()
    # The operator is shared with other tests (some of them retrying failures, and
    # several of their releases are "app" too): only this release's namespace counts.
    seen = [r for r in requests(cluster.audit_log, since=start) if r.namespace == ns]
    assert reconciles >= IDLE_SECONDS // 4 - 1, "the interval did not trigger reconciles"
    writes = [r for r in seen if r.is_write]
    assert writes == [], f"idle reconciles wrote: {writes}"
    # Nor read: the HelmRelease, its records and its objects come from watches.
    assert seen == [], f"idle reconciles still asked the API server: {seen}"

    # One value changes: only that object, the release records, the HelmRelease's own
    # status and events are written.
    start = now()
    apply_helmrelease(cluster, "app", ns, {**spec, "values": {"greeting": "bonjour"}})
    wait_for_condition(cluster, ns, "app", "Ready", reason="UpgradeSucceeded")
    settle()
    written = Counter(
        (r.resource, r.subresource, r.name)
        for r in requests(cluster.audit_log, since=start)
        if r.is_write and r.namespace == ns
    )
    touched_objects = {
        (resource, name)
        for (resource, sub, name) in written
        if resource not in ("secrets", "events", "helmreleases")
    }
    assert touched_objects == {("configmaps", "app-config")}, written
    records = {name for (resource, _, name) in written if resource == "secrets"}
    assert records <= {"sh.helm.release.v1.app.v1", "sh.helm.release.v1.app.v2"}, written
    assert sum(count for key, count in written.items() if key[0] != "events") <= 8, written
