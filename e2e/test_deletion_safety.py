"""Deleting a HelmRelease removes only what that HelmRelease installed, as whom it acts.

Each case is what a user did and lost an application to: a HelmRelease that names a release
the Helm CLI installed and never acted on (its chart missing, or suspended) must leave that
release alone when deleted; a spec that became invalid must not block deletion; a release
whose history another HelmRelease uninstalled (keepHistory) is installed again as Helm would;
and every request made for a release goes out as the HelmRelease's ServiceAccount, its
deletion included.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import audit
from charts import push, write_chart
from conftest import Cluster
from helpers import (
    apply_helmrelease,
    get_json,
    helmrelease,
    release_secrets,
    unique,
    wait_for,
    wait_for_condition,
)
from operator_process import OperatorProcess
from test_tenancy import TENANT_RBAC

pytestmark = pytest.mark.e2e

TEMPLATES = {
    "config.yaml": (
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-config\n"
        "data:\n  greeting: {{ .Values.greeting | quote }}\n"
    ),
}
MISSING_DIGEST = "sha256:" + "0" * 64


@pytest.fixture(scope="module")
def chart_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("deletion-chart")
    return write_chart(root, "keepsafe", "1.0.0", TEMPLATES, {"greeting": "hello"})


@pytest.fixture(scope="module")
def chart_ref(cluster: Cluster, chart_dir: Path) -> str:
    return push(cluster.registry, chart_dir)


def gone(cluster: Cluster, ns: str, name: str) -> bool:
    return not get_json(cluster, "helmrelease", name, "-n", ns)


def events(cluster: Cluster, ns: str, name: str) -> list[dict[str, str]]:
    listed = get_json(
        cluster, "events", "-n", ns, "--field-selector", f"involvedObject.name={name}"
    )
    return [
        {"type": e.get("type", ""), "reason": e.get("reason", ""), "message": e.get("message", "")}
        for e in listed.get("items", [])
    ]


def with_finalizer(name: str, ns: str, spec: dict[str, object]) -> str:
    """A HelmRelease manifest that already carries rudder's finalizer (as one an earlier
    rudder version added would)."""
    text = helmrelease(name, ns, spec)
    return text.replace("metadata:\n", "metadata:\n  finalizers: [rudder.dev/finalizer]\n", 1)


@pytest.mark.parametrize("never_acted", ["chart-missing", "suspended"])
def test_deleting_a_helmrelease_that_never_acted_keeps_the_cli_release(
    cluster: Cluster, rudder: OperatorProcess, chart_dir: Path, chart_ref: str, never_acted: str
) -> None:
    ns = unique("cli-owned")
    cluster.kubectl("create", "namespace", ns)
    cluster.helm("install", "app", str(chart_dir), "-n", ns, "--wait")
    repository = chart_ref.split("@", 1)[0]
    spec: dict[str, object] = {"chart": {"ref": f"{repository}@{MISSING_DIGEST}", "insecure": True}}
    if never_acted == "suspended":
        spec = {"chart": {"ref": chart_ref, "insecure": True}, "suspend": True}
    # The finalizer is there before rudder saw it, as an earlier rudder version would have
    # added it: deletion must still uninstall nothing.
    cluster.kubectl("apply", "-f", "-", input=with_finalizer("app", ns, spec))
    reason = "ChartNotFound" if never_acted == "chart-missing" else "Suspended"
    wait_for_condition(cluster, ns, "app", "Ready", status="Unknown" if reason == "Suspended"
                       else "False", reason=reason)  # fmt: skip

    cluster.kubectl("delete", "helmrelease", "app", "-n", ns, "--wait=false")
    wait_for(lambda: gone(cluster, ns, "app"), what="the HelmRelease to go")

    history = json.loads(cluster.helm("history", "app", "-n", ns, "-o", "json").stdout)
    assert [entry["status"] for entry in history] == ["deployed"]
    assert get_json(cluster, "configmap", "app-config", "-n", ns)["data"] == {"greeting": "hello"}
    said = wait_for(
        lambda: [e for e in events(cluster, ns, "app") if e["reason"] == "UninstallSkipped"],
        what="an event saying nothing was uninstalled",
    )
    assert "app" in said[0]["message"]


def test_an_invalid_spec_does_not_block_deletion(
    cluster: Cluster, rudder: OperatorProcess, chart_ref: str
) -> None:
    ns = unique("invalid-delete")
    apply_helmrelease(cluster, "broken", ns, {"chart": {"ref": chart_ref, "insecure": True}})
    wait_for_condition(cluster, ns, "broken", "Ready")
    assert get_json(cluster, "configmap", "broken-config", "-n", ns)

    # Valid for the CRD schema, not for rudder: a zero timeout.
    cluster.kubectl(
        "patch", "helmrelease", "broken", "-n", ns, "--type=merge", "-p",
        '{"spec": {"timeout": "0s"}}',
    )  # fmt: skip
    wait_for_condition(cluster, ns, "broken", "Stalled", reason="InvalidSpec")
    cluster.kubectl("delete", "helmrelease", "broken", "-n", ns, "--wait=false")
    wait_for(lambda: gone(cluster, ns, "broken"), what="the HelmRelease to go")
    # The release recorded in status was uninstalled.
    assert not get_json(cluster, "configmap", "broken-config", "-n", ns)
    assert release_secrets(cluster, ns, "broken") == []


def test_an_invalid_spec_with_no_recorded_release_is_let_go_with_a_warning(
    cluster: Cluster, rudder: OperatorProcess, chart_ref: str
) -> None:
    ns = unique("invalid-new")
    cluster.kubectl("create", "namespace", ns)
    spec = {"chart": {"ref": chart_ref, "insecure": True}, "timeout": "0s"}
    cluster.kubectl("apply", "-f", "-", input=with_finalizer("never", ns, spec))
    wait_for_condition(cluster, ns, "never", "Stalled", reason="InvalidSpec")
    cluster.kubectl("delete", "helmrelease", "never", "-n", ns, "--wait=false")
    wait_for(lambda: gone(cluster, ns, "never"), what="the HelmRelease to go")
    warned = wait_for(
        lambda: [e for e in events(cluster, ns, "never") if e["reason"] == "UninstallSkipped"],
        what="a Warning event saying why nothing was uninstalled",
    )
    assert warned[0]["type"] == "Warning"
    assert "spec.timeout" in warned[0]["message"]


def test_a_release_another_helmrelease_uninstalled_with_kept_history_is_installed_again(
    cluster: Cluster, rudder: OperatorProcess, chart_ref: str
) -> None:
    ns = unique("kept-history")
    first = {
        "chart": {"ref": chart_ref, "insecure": True},
        "releaseName": "shared",
        "uninstall": {"keepHistory": True},
    }
    apply_helmrelease(cluster, "first", ns, first)
    wait_for_condition(cluster, ns, "first", "Ready")
    cluster.kubectl("delete", "helmrelease", "first", "-n", ns)
    (record,) = release_secrets(cluster, ns, "shared")
    assert record["metadata"]["labels"]["status"] == "uninstalled"

    second = {"chart": {"ref": chart_ref, "insecure": True}, "releaseName": "shared"}
    apply_helmrelease(cluster, "second", ns, second)
    hr = wait_for_condition(cluster, ns, "second", "Ready")
    assert hr["status"]["release"]["revision"] == 2
    statuses = [s["metadata"]["labels"]["status"] for s in release_secrets(cluster, ns, "shared")]
    assert statuses == ["uninstalled", "deployed"]
    assert get_json(cluster, "configmap", "shared-config", "-n", ns)


def test_every_request_for_a_release_is_made_as_its_service_account(
    cluster: Cluster, rudder: OperatorProcess, chart_ref: str
) -> None:
    ns = unique("as-tenant")
    cluster.kubectl("create", "namespace", ns)
    cluster.kubectl("apply", "-f", "-", input=TENANT_RBAC.format(ns=ns))
    cluster.kubectl("create", "configmap", "common", "-n", ns, "--from-literal=values.yaml=a: 1")
    since = audit.now()
    spec = {
        "chart": {"ref": chart_ref, "insecure": True},
        "serviceAccountName": "deployer",
        "valuesFrom": [{"kind": "ConfigMap", "name": "common"}],
        "driftDetection": {"mode": "warn"},
    }
    apply_helmrelease(cluster, "tenant", ns, spec)
    wait_for_condition(cluster, ns, "tenant", "Ready")
    apply_helmrelease(cluster, "tenant", ns, {**spec, "values": {"greeting": "again"}})
    hr = wait_for_condition(cluster, ns, "tenant", "Ready")
    assert hr["status"]["release"]["revision"] == 2
    cluster.kubectl("delete", "helmrelease", "tenant", "-n", ns)
    assert not get_json(cluster, "configmap", "tenant-config", "-n", ns)
    audit.settle()

    # rudder itself only touches the HelmRelease (object, status, finalizer) and its events.
    own = {"helmreleases", "events"}
    as_rudder = [
        f"{r.verb} {r.resource}/{r.name}"
        for r in audit.requests(cluster.audit_log, since=since, impersonated=False)
        if r.namespace == ns and r.resource not in own
    ]
    assert as_rudder == []
    as_tenant = audit.requests(cluster.audit_log, since=since)
    assert any(
        r.resource == "secrets" and r.verb == "delete" for r in as_tenant if r.namespace == ns
    )


def test_a_finalizer_removed_by_hand_is_put_back(
    cluster: Cluster, rudder: OperatorProcess, chart_ref: str
) -> None:
    ns = unique("refinalize")
    apply_helmrelease(cluster, "app", ns, {"chart": {"ref": chart_ref, "insecure": True}})
    hr = wait_for_condition(cluster, ns, "app", "Ready")
    assert hr["metadata"]["finalizers"] == ["rudder.dev/finalizer"]
    cluster.kubectl(
        "patch", "helmrelease", "app", "-n", ns, "--type=json",
        "-p", '[{"op": "remove", "path": "/metadata/finalizers"}]',
    )  # fmt: skip
    cluster.kubectl("annotate", "helmrelease", "app", "-n", ns, "rudder.dev/requestedAt=now")
    wait_for(
        lambda: get_json(cluster, "helmrelease", "app", "-n", ns)["metadata"].get("finalizers"),
        what="the finalizer to be put back",
    )
    cluster.kubectl("delete", "helmrelease", "app", "-n", ns)
    assert not get_json(cluster, "configmap", "app-config", "-n", ns)


def test_deletion_uninstalls_the_recorded_release_after_an_uninstalled_rename(
    cluster: Cluster, rudder: OperatorProcess, chart_ref: str
) -> None:
    # The release that holds objects is the one status recorded, not the one a newer spec
    # names but never installed (its chart is missing).
    ns = unique("renamed")
    apply_helmrelease(cluster, "app", ns, {"chart": {"ref": chart_ref, "insecure": True}})
    wait_for_condition(cluster, ns, "app", "Ready")
    repository = chart_ref.split("@", 1)[0]
    moved = {"chart": {"ref": f"{repository}@{MISSING_DIGEST}", "insecure": True},
             "releaseName": "renamed"}  # fmt: skip
    apply_helmrelease(cluster, "app", ns, moved)
    wait_for_condition(cluster, ns, "app", "Ready", status="False", reason="ChartNotFound")
    cluster.kubectl("delete", "helmrelease", "app", "-n", ns)
    assert not get_json(cluster, "configmap", "app-config", "-n", ns)
    assert release_secrets(cluster, ns, "app") == []


def test_a_deletion_that_cannot_even_read_the_release_gives_up_after_the_timeout(
    cluster: Cluster, rudder: OperatorProcess, chart_ref: str
) -> None:
    # As when a tenant's namespace is deleted: its RoleBinding goes first, so the release
    # can no longer be read as the tenant. Deletion must end, and say what it left.
    ns = unique("no-rights")
    cluster.kubectl("create", "namespace", ns)
    cluster.kubectl("apply", "-f", "-", input=TENANT_RBAC.format(ns=ns))
    spec = {"chart": {"ref": chart_ref, "insecure": True}, "serviceAccountName": "deployer",
            "timeout": "10s"}  # fmt: skip
    apply_helmrelease(cluster, "app", ns, spec)
    wait_for_condition(cluster, ns, "app", "Ready")
    cluster.kubectl("delete", "rolebinding", "deployer", "-n", ns)
    cluster.kubectl("delete", "helmrelease", "app", "-n", ns, "--wait=false")
    wait_for(lambda: gone(cluster, ns, "app"), timeout=60, what="the HelmRelease to go")
    warned = wait_for(
        lambda: [e for e in events(cluster, ns, "app") if e["reason"] == "UninstallFailed"],
        what="a Warning event naming what was left",
    )
    assert "gave up after 10s" in warned[0]["message"]
