"""An action never reports success while part of its release is missing, and every way it
can fail ends in a named condition with no revision left pending.

- an object deleted by hand is recreated by the next upgrade (also with disableWait);
- a malformed file in the chart's crds/ and a kind that is still unknown after its CRD was
  applied are reported with a reason;
- a CRD that never becomes Established is a counted failure (CRDNotEstablished) that
  remediation applies to, not an unreachable API server retried forever.
"""

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

PENDING = {"pending-install", "pending-upgrade", "pending-rollback"}

STATIC_AND_VALUES = {
    "static.yaml": (
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-static\n"
        "data:\n  fixed: 'yes'\n"
    ),
    "values.yaml": (
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-values\n"
        "data:\n  greeting: {{ .Values.greeting | quote }}\n"
    ),
}


def crd(group: str, plural: str, kind: str, *, served: bool = True) -> str:
    return f"""apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: {plural}.{group}
spec:
  group: {group}
  names: {{kind: {kind}, listKind: {kind}List, plural: {plural}, singular: {plural[:-1]}}}
  scope: Namespaced
  versions:
    - name: v1
      served: {str(served).lower()}
      storage: true
      schema:
        openAPIV3Schema: {{type: object, x-kubernetes-preserve-unknown-fields: true}}
"""


def statuses(cluster: Cluster, ns: str, release: str) -> list[str]:
    return [s["metadata"]["labels"]["status"] for s in release_secrets(cluster, ns, release)]


@pytest.mark.parametrize("disable_wait", [False, True])
def test_an_upgrade_recreates_an_object_deleted_by_hand(
    cluster: Cluster, rudder: OperatorProcess, tmp_path: Path, disable_wait: bool
) -> None:
    ref = push(
        cluster.registry,
        write_chart(tmp_path, "recreate", "1.0.0", STATIC_AND_VALUES, {"greeting": "hello"}),
    )
    ns = unique("recreate")
    spec: dict[str, object] = {
        "chart": {"ref": ref, "insecure": True},
        "timeout": "20s",
        "upgrade": {"disableWait": disable_wait},
    }
    apply_helmrelease(cluster, "app", ns, spec)
    wait_for_condition(cluster, ns, "app", "Ready")
    cluster.kubectl("delete", "configmap", "app-static", "-n", ns)

    apply_helmrelease(cluster, "app", ns, {**spec, "values": {"greeting": "again"}})
    hr = wait_for_condition(cluster, ns, "app", "Ready")
    assert hr["status"]["release"]["revision"] == 2
    assert get_json(cluster, "configmap", "app-values", "-n", ns)["data"] == {"greeting": "again"}
    assert get_json(cluster, "configmap", "app-static", "-n", ns)["data"] == {"fixed": "yes"}


def test_a_malformed_crd_file_is_reported_and_nothing_is_recorded(
    cluster: Cluster, rudder: OperatorProcess, tmp_path: Path
) -> None:
    chart = write_chart(
        tmp_path,
        "badcrd",
        "1.0.0",
        STATIC_AND_VALUES,
        {"greeting": "hello"},
        crds={"broken.yaml": "kind: CustomResourceDefinition\nspec: [unclosed\n  - {\n"},
    )
    ns = unique("bad-crd")
    apply_helmrelease(cluster, "app", ns, {"chart": {"ref": push(cluster.registry, chart),
                                                      "insecure": True}})  # fmt: skip
    hr = wait_for_condition(cluster, ns, "app", "Ready", status="False")
    ready = condition(hr, "Ready")
    assert ready["reason"] in ("InvalidChart", "RenderFailed")
    assert "crds/broken.yaml" in ready["message"]
    assert condition(hr, "Stalled")["status"] == "True"
    assert release_secrets(cluster, ns, "app") == []
    assert not get_json(cluster, "configmap", "app-static", "-n", ns)


def test_a_kind_still_unknown_after_its_crd_was_applied_fails_the_revision(
    cluster: Cluster, rudder: OperatorProcess, tmp_path: Path
) -> None:
    group = f"{unique('unserved')}.example.com"
    templates = {
        **STATIC_AND_VALUES,
        "widget.yaml": f"apiVersion: {group}/v1\nkind: Ghost\nmetadata:\n  name: one\n",
    }
    chart = write_chart(
        tmp_path,
        "ghost",
        "1.0.0",
        templates,
        {"greeting": "hello"},
        crds={"ghost.yaml": crd(group, "ghosts", "Ghost", served=False)},
    )
    ns = unique("ghost")
    spec = {"chart": {"ref": push(cluster.registry, chart), "insecure": True}, "timeout": "20s"}
    apply_helmrelease(cluster, "app", ns, spec)
    hr = wait_for_condition(cluster, ns, "app", "Ready", status="False", timeout=90)
    ready = condition(hr, "Ready")
    assert ready["reason"] == "UnknownKind", ready
    assert "Ghost" in ready["message"]
    wait_for(lambda: statuses(cluster, ns, "app") == ["failed"], what="the revision failed")


def test_a_crd_that_never_becomes_established_is_a_counted_failure(
    cluster: Cluster, rudder: OperatorProcess, tmp_path: Path
) -> None:
    group = f"{unique('clash')}.example.com"
    # Another CRD already serves kind Clash in this group: the chart's CRD, asking for the
    # same kind under another plural, is never accepted, so never Established.
    cluster.kubectl("apply", "-f", "-", input=crd(group, "clashes", "Clash"))
    chart = write_chart(
        tmp_path,
        "clash",
        "1.0.0",
        STATIC_AND_VALUES,
        {"greeting": "hello"},
        crds={"clash.yaml": crd(group, "others", "Clash")},
    )
    ns = unique("clash")
    spec = {
        "chart": {"ref": push(cluster.registry, chart), "insecure": True},
        "timeout": "5s",
        "install": {"remediation": {"retries": 1}},
    }
    apply_helmrelease(cluster, "app", ns, spec)
    hr = wait_for_condition(cluster, ns, "app", "Stalled", reason="RetriesExceeded", timeout=120)
    assert hr["status"]["installFailures"] == 2
    history = hr["status"]["history"]
    assert {entry["status"] for entry in history} == {"failed"}
    assert not set(statuses(cluster, ns, "app")) & PENDING
    warnings = get_json(
        cluster, "events", "-n", ns, "--field-selector", "involvedObject.name=app,type=Warning"
    )
    reasons = [e.get("reason") for e in warnings.get("items", [])]
    assert "CRDNotEstablished" in reasons, reasons
