"""The operator's own HTTP endpoints while it installs a release: metrics move, the
condition gauge follows the HelmRelease, health and readiness answer."""

from __future__ import annotations

import re
import urllib.request
from pathlib import Path

import pytest

from charts import app_chart, push
from conftest import Cluster
from helpers import apply_helmrelease, unique, wait_for_condition
from operator_process import OperatorProcess

pytestmark = pytest.mark.e2e


def scrape(rudder: OperatorProcess, path: str = "/metrics") -> str:
    url = f"http://127.0.0.1:{rudder.health_port}{path}"
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


def sample(text: str, metric: str, **labels: str) -> float:
    """The value of one series (labels given must all match), 0 when absent."""
    for line in text.splitlines():
        if not line.startswith(metric + "{"):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
        if all(found.get(key) == value for key, value in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_and_health_during_an_install(
    cluster: Cluster, rudder: OperatorProcess, tmp_path: Path
) -> None:
    assert scrape(rudder, "/healthz") is not None
    assert scrape(rudder, "/readyz") is not None
    before = scrape(rudder)
    installs_before = sample(
        before, "rudder_release_actions_total", action="install", result="success"
    )

    ns = unique("metrics")
    ref = push(cluster.registry, app_chart(tmp_path, "1.0.0"))
    apply_helmrelease(
        cluster,
        "app",
        ns,
        {"chart": {"ref": ref, "insecure": True}, "install": {"createNamespace": True}},
    )
    wait_for_condition(cluster, ns, "app", "Ready")

    after = scrape(rudder)
    assert sample(after, "rudder_release_actions_total", action="install", result="success") == (
        installs_before + 1
    )
    assert sample(after, "rudder_reconcile_total", result="success") >= 1
    ready = {"name": "app", "namespace": ns, "type": "Ready"}
    assert sample(after, "rudder_helmrelease_condition", **ready, status="True") == 1
    assert sample(after, "rudder_helmrelease_condition", **ready, status="Unknown") == 0
    assert sample(after, "rudder_kube_requests_total", verb="PATCH", code="200") > 0
    assert "process_resident_memory_bytes" in after
    page = scrape(rudder, "/")
    assert ns in page
    assert "app:1.0.0" in page
