"""Drift detection: a person's edit of a chart-set field is reported (warn) or taken back
(enabled); a controller's change through /scale (an HPA) is not drift."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from audit import now, requests, settle
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


# A chart whose Service port is named and whose container sets an env var, so that renaming
# a list item (its merge key) with kubectl can be tried on each kind of keyed list.
LIST_TEMPLATES = {
    "deployment.yaml": """apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}
spec:
  selector:
    matchLabels: {app: {{ .Release.Name }}}
  template:
    metadata:
      labels: {app: {{ .Release.Name }}}
    spec:
      containers:
        - name: app
          image: {{ .Values.image | quote }}
          ports: [{containerPort: 8080}]
          env: [{name: GREETING, value: {{ .Values.greeting | quote }}}]
""",
    "service.yaml": """apiVersion: v1
kind: Service
metadata:
  name: {{ .Release.Name }}
spec:
  selector: {app: {{ .Release.Name }}}
  ports: [{name: http, port: 80, targetPort: 8080}]
""",
}


def _json_patch(resource: str, path: str, value: object) -> Callable[[Cluster, str], None]:
    def edit(cluster: Cluster, ns: str) -> None:
        op = [{"op": "replace", "path": path, "value": value}]
        cluster.kubectl("patch", resource, "app", "-n", ns, "--type=json", "-p", json.dumps(op))

    return edit


def _set_env_and_inject(cluster: Cluster, ns: str) -> None:
    # A person adds a variable (manager kubectl-set); an injector-like controller adds one too.
    cluster.kubectl("set", "env", "deployment/app", "-n", ns, "EXTRA=1")
    op = [
        {
            "op": "add",
            "path": "/spec/template/spec/containers/0/env/-",
            "value": {"name": "INJECTED", "value": "1"},
        }
    ]
    cluster.kubectl(
        "patch",
        "deployment",
        "app",
        "-n",
        ns,
        "--type=json",
        "--field-manager=injector",
        "-p",
        json.dumps(op),
    )


def _ports(obj: dict[str, Any]) -> list[object]:
    return [(p.get("name"), p["port"]) for p in obj["spec"]["ports"]]


def _containers(obj: dict[str, Any]) -> list[object]:
    return [c["name"] for c in obj["spec"]["template"]["spec"]["containers"]]


def _env(obj: dict[str, Any]) -> list[object]:
    return [e["name"] for e in obj["spec"]["template"]["spec"]["containers"][0].get("env", [])]


@dataclass(frozen=True)
class ListEdit:
    kind: str
    edit: Callable[[Cluster, str], None]
    read: Callable[[dict[str, Any]], list[object]]  # the list as a person would look at it
    edited: list[object]  # after the kubectl edit
    corrected: list[object]  # after rudder took the edit back
    rejected: bool  # the forced dry-run of the chart's object is refused by the API server


LIST_EDITS = {
    # The item the chart sets and the renamed one would both be named http: the API server
    # refuses the forced dry-run (and the forced apply) of the chart's Service.
    "service-port-number": ListEdit(
        "Service",
        _json_patch("service", "/spec/ports/0/port", 8081),
        _ports,
        edited=[("http", 8081)],
        corrected=[("http", 80)],
        rejected=True,
    ),
    "container-renamed": ListEdit(
        "Deployment",
        _json_patch("deployment", "/spec/template/spec/containers/0/name", "renamed"),
        _containers,
        edited=["renamed"],
        corrected=["app"],
        rejected=False,
    ),
    "env-var-renamed": ListEdit(
        "Deployment",
        _json_patch("deployment", "/spec/template/spec/containers/0/env/0/name", "RENAMED"),
        _env,
        edited=["RENAMED"],
        corrected=["GREETING"],
        rejected=False,
    ),
    # Only what a drift manager added goes; the other controller's variable stays.
    "env-var-added": ListEdit(
        "Deployment",
        _set_env_and_inject,
        _env,
        edited=["GREETING", "EXTRA", "INJECTED"],
        corrected=["GREETING", "INJECTED"],
        rejected=False,
    ),
}


@pytest.mark.parametrize("case", list(LIST_EDITS), ids=list(LIST_EDITS))
def test_a_list_item_changed_with_kubectl_is_reported_then_taken_back(
    cluster: Cluster, rudder: OperatorProcess, tmp_path: Path, case: str
) -> None:
    """A kubectl edit of a keyed list the chart sets (a Service port number, a container's or
    an env var's name) adds an item a forced apply cannot remove, and may make the forced
    dry-run itself fail; either way it is drift, reported and then corrected."""
    change = LIST_EDITS[case]
    resource = change.kind.lower()
    ns = unique("drift-list")
    ref = push(cluster.registry, app_chart(tmp_path, "1.0.0", extra_templates=LIST_TEMPLATES))
    spec = {
        "chart": {"ref": ref, "insecure": True},
        "install": {"createNamespace": True},
        "interval": "3s",
        "values": {"greeting": "chart"},
        "driftDetection": {"mode": "warn"},
    }
    apply_helmrelease(cluster, "app", ns, spec)
    wait_for_condition(cluster, ns, "app", "Ready")

    change.edit(cluster, ns)
    assert change.read(get_json(cluster, resource, "app", "-n", ns)) == change.edited

    hr = wait_for_condition(cluster, ns, "app", "Drifted", reason="DriftDetected", timeout=30)
    drift = hr["status"]["drift"]
    assert [(d["kind"], d["name"]) for d in drift] == [(change.kind, "app")], drift
    message = condition(hr, "Drifted")["message"]
    assert f"{change.kind}/{ns}/app" in message, message
    if change.rejected:  # the API server's own words, in the condition and in status.drift
        assert "is invalid" in message, message
        assert "spec.ports" in message, message
        assert any("is invalid" in field for field in drift[0]["fields"]), drift
    assert condition(hr, "Ready")["status"] == "True"
    assert change.read(get_json(cluster, resource, "app", "-n", ns)) == change.edited

    apply_helmrelease(cluster, "app", ns, {**spec, "driftDetection": {"mode": "enabled"}})
    wait_for(
        lambda: change.read(get_json(cluster, resource, "app", "-n", ns)) == change.corrected,
        timeout=30,
        what=f"the {case} edit to be taken back",
    )
    wait_for(
        lambda: (
            (obj := get_json(cluster, "helmrelease", "app", "-n", ns))
            and not condition(obj, "Drifted")
            and "drift" not in obj["status"]
        ),
        timeout=30,
        what="Drifted to clear",
    )
    assert "DriftCorrected" in cluster.kubectl("get", "events", "-n", ns).stdout

    # Corrected for good: later checks find nothing, and no revision was written for it.
    time.sleep(7)
    hr = get_json(cluster, "helmrelease", "app", "-n", ns)
    assert not condition(hr, "Drifted"), hr["status"]
    assert condition(hr, "Ready")["status"] == "True"
    assert change.read(get_json(cluster, resource, "app", "-n", ns)) == change.corrected
    assert len(release_secrets(cluster, ns, "app")) == 1


def test_drift_another_controller_owns_is_left_alone_and_said_to_be_left(
    cluster: Cluster, rudder: OperatorProcess, tmp_path: Path
) -> None:
    """A controller (not a drift manager) renumbers the chart's Service port: the forced
    dry-run is refused and the new item is not rudder's to remove, so the release says that
    it cannot be corrected automatically, once, and leaves the object alone."""
    ns = unique("drift-other")
    ref = push(cluster.registry, app_chart(tmp_path, "1.0.0", extra_templates=LIST_TEMPLATES))
    spec = {
        "chart": {"ref": ref, "insecure": True},
        "install": {"createNamespace": True},
        "interval": "3s",
        "values": {"greeting": "chart"},
        "driftDetection": {"mode": "enabled"},
    }
    apply_helmrelease(cluster, "app", ns, spec)
    wait_for_condition(cluster, ns, "app", "Ready")

    op = [{"op": "replace", "path": "/spec/ports/0/port", "value": 8081}]
    cluster.kubectl(
        "patch",
        "service",
        "app",
        "-n",
        ns,
        "--type=json",
        "--field-manager=port-controller",
        "-p",
        json.dumps(op),
    )
    hr = wait_for_condition(cluster, ns, "app", "Drifted", reason="DriftNotCorrected", timeout=30)
    message = condition(hr, "Drifted")["message"]
    assert f"Service/{ns}/app" in message, message
    assert "cannot be corrected automatically" in message, message
    assert "Duplicate value" in message, message
    assert [(d["kind"], d["name"]) for d in hr["status"]["drift"]] == [("Service", "app")]
    assert condition(hr, "Ready")["status"] == "True"

    settle()
    start = now()
    time.sleep(8)  # more than two intervals
    settle()
    writes = [r for r in requests(cluster.audit_log, since=start) if r.is_write]
    assert [r for r in writes if r.resource == "services"] == [], writes
    assert _ports(get_json(cluster, "service", "app", "-n", ns)) == [("http", 8081)]
    events = cluster.kubectl("get", "events", "-n", ns, "-o", "json").stdout
    reasons = [e["reason"] for e in json.loads(events)["items"]]
    assert reasons.count("DriftNotCorrected") == 1, reasons
    assert "DriftCorrected" not in reasons
