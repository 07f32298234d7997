"""The preview of the next upgrade and the manual approval gate, decided by the real API
server: the preview names exactly the objects an upgrade changes, removes and conflicts on
(checked against the server's own dry-run answers), never shows a Secret's data, writes
nothing but status; nothing is applied until the preview's digest is approved, and a stale
approval is refused. `rudder diff` / `rudder approve` do the same with the user's
credentials and no operator involved."""

from __future__ import annotations

import base64
import datetime
import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from audit import requests, settle
from charts import push, write_chart
from conftest import Cluster
from helpers import (
    apply_helmrelease,
    condition,
    get_json,
    helmrelease,
    release_secrets,
    rudder_cli,
    unique,
    wait_for,
    wait_for_condition,
)
from operator_process import OperatorProcess

pytestmark = pytest.mark.e2e

PASSWORD_1, PASSWORD_2 = "hunter2-first", "swordfish-second"

TEMPLATES = {
    "config.yaml": (
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-config\n"
        "data:\n  greeting: {{ .Values.greeting | quote }}\n  color: blue\n"
    ),
    "extra.yaml": (
        "{{- if .Values.extra }}\napiVersion: v1\nkind: ConfigMap\nmetadata:\n"
        '  name: {{ .Release.Name }}-extra\ndata:\n  kept: "no"\n{{- end }}\n'
    ),
    "secret.yaml": (
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {{ .Release.Name }}-db\n"
        "stringData:\n  password: {{ .Values.db.password | quote }}\n  user: app\n"
    ),
    "deployment.yaml": """apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}
spec:
  {{- if .Values.replicas }}
  replicas: {{ .Values.replicas }}
  {{- end }}
  selector: {matchLabels: {app: {{ .Release.Name }}}}
  template:
    metadata: {labels: {app: {{ .Release.Name }}}}
    spec: {containers: [{name: app, image: "example.test/app:1"}]}
""",
}


@pytest.fixture(scope="module")
def chart_ref(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("preview-chart")
    values = {"greeting": "a", "extra": True, "db": {"password": ""}}
    return push(cluster.registry, write_chart(root, "previewed", "1.0.0", TEMPLATES, values))


def spec(ref: str, values: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "chart": {"ref": ref, "insecure": True},
        "values": values,
        "valuesFrom": [{"kind": "Secret", "name": "db", "valuesKey": "password",
                        "targetPath": "db.password"}],
        "timeout": "60s",
        "upgrade": {"approval": "manual", "forceConflicts": True},
        **extra,
    }  # fmt: skip


def set_password(cluster: Cluster, ns: str, password: str) -> None:
    cluster.kubectl(
        "apply", "-f", "-",
        input=json.dumps({"apiVersion": "v1", "kind": "Secret",
                          "metadata": {"name": "db", "namespace": ns},
                          "stringData": {"password": password}}),
    )  # fmt: skip


def page(rudder: OperatorProcess, path: str) -> str:
    url = f"http://127.0.0.1:{rudder.health_port}{path}"
    with urllib.request.urlopen(url, timeout=130) as answer:
        return str(answer.read().decode())


def server_dry_run_data(cluster: Cluster, ns: str, name: str, data: dict[str, str]) -> Any:
    """The API server's answer to the apply rudder would send for the chart's ConfigMap."""
    obj = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": ns},
           "data": data}  # fmt: skip
    answer = cluster.kubectl(
        "apply", "--server-side", "--dry-run=server", "--field-manager=rudder",
        "--force-conflicts", "-o", "json", "-f", "-", input=json.dumps(obj),
    )  # fmt: skip
    return json.loads(answer.stdout)["data"]


def approving(manifest: str, digest: str) -> str:
    """The manifest with the approval annotation (kept across applies, as a user would)."""
    return manifest.replace(
        "metadata:\n", f"metadata:\n  annotations:\n    rudder.dev/approve: '{digest}'\n", 1
    )


def secret_texts(*passwords: str) -> list[str]:
    return [t for p in passwords for t in (p, base64.b64encode(p.encode()).decode())]


def test_preview_and_manual_approval(
    cluster: Cluster, rudder: OperatorProcess, chart_ref: str
) -> None:
    ns = unique("preview")
    cluster.kubectl("create", "namespace", ns)
    set_password(cluster, ns, PASSWORD_1)
    apply_helmrelease(cluster, "web", ns, spec(chart_ref, {"greeting": "a", "extra": True}))
    # An install is not gated (only spec.install.approval would gate it).
    wait_for_condition(cluster, ns, "web", "Ready", reason="InstallSucceeded")

    # Another manager (think: an autoscaler) owns spec.replicas.
    cluster.kubectl(
        "apply", "--server-side", "--field-manager=hpa-sim", "-f", "-",
        input=json.dumps({"apiVersion": "apps/v1", "kind": "Deployment",
                          "metadata": {"name": "web", "namespace": ns},
                          "spec": {"replicas": 3}}),
    )  # fmt: skip

    # The upgrade: a ConfigMap value, one object dropped, a conflicting field, a new password.
    started = datetime.datetime.now(datetime.UTC)
    set_password(cluster, ns, PASSWORD_2)
    upgrade = {"greeting": "b", "extra": False, "replicas": 5}
    apply_helmrelease(cluster, "web", ns, spec(chart_ref, upgrade))
    held = wait_for_condition(cluster, ns, "web", "Ready", status="False", reason="ApprovalPending")
    preview = held["status"]["preview"]
    assert (preview["action"], preview["revision"]) == ("upgrade", 2)
    assert (preview["added"], preview["changed"], preview["removed"], preview["conflicting"]) == (
        0, 3, 1, 1,
    )  # fmt: skip
    assert "Reconciling" not in {c["type"] for c in held["status"]["conditions"]}
    assert preview["digest"] in condition(held, "Ready")["message"]

    # Nothing applied, nothing recorded; the only writes were the status and an event.
    assert get_json(cluster, "configmap", "web-config", "-n", ns)["data"]["greeting"] == "a"
    assert get_json(cluster, "configmap", "web-extra", "-n", ns)
    assert len(release_secrets(cluster, ns, "web")) == 1
    settle()
    writes = [r for r in requests(cluster.audit_log, since=started) if r.is_write]
    assert {(r.resource, r.subresource) for r in writes} <= {
        ("helmreleases", "status"), ("events", ""),
    }, writes  # fmt: skip

    # The full preview on the status page, checked against the API server's own dry-run.
    shown = page(rudder, f"/releases/{ns}/web/preview")
    assert "upgrade to revision 2" in shown
    expected = server_dry_run_data(cluster, ns, "web-config", {"greeting": "b", "color": "blue"})
    assert expected == {"greeting": "b", "color": "blue"}
    assert '<span class="del">-  greeting: a</span>' in shown
    assert f'<span class="add">+  greeting: {expected["greeting"]}</span>' in shown
    assert "color: blue" in shown  # unchanged: context only
    assert '<span class="add">+  color' not in shown
    assert "removed</span> ConfigMap " + ns + "/web-extra" in shown
    assert "spec.replicas owned by hpa-sim" in shown or ".spec.replicas owned by hpa-sim" in shown
    assert '<span class="del">-  replicas: 3</span>' in shown
    assert '<span class="add">+  replicas: 5</span>' in shown
    assert "password: (secret value, changed)" in shown
    for text in secret_texts(PASSWORD_1, PASSWORD_2):
        assert text not in shown
    release_page = page(rudder, f"/releases/{ns}/web")
    assert preview["digest"] in release_page

    # A stale approval: the values changed in the same apply that approved the old digest.
    stale = preview["digest"]
    upgrade["greeting"] = "c"
    cluster.kubectl(
        "apply", "-f", "-", input=approving(helmrelease("web", ns, spec(chart_ref, upgrade)), stale)
    )

    def refusal() -> dict[str, Any] | None:
        hr = get_json(cluster, "helmrelease", "web", "-n", ns)
        return hr if "does not match" in condition(hr, "Ready").get("message", "") else None

    refused = wait_for(refusal, timeout=60, what="the stale approval refused")
    assert refused["status"]["preview"]["digest"] != stale
    assert get_json(cluster, "configmap", "web-config", "-n", ns)["data"]["greeting"] == "a"
    assert len(release_secrets(cluster, ns, "web")) == 1

    # Approved with the current digest: the upgrade runs, exactly as previewed.
    fresh = refused["status"]["preview"]["digest"]
    cluster.kubectl(
        "apply", "-f", "-", input=approving(helmrelease("web", ns, spec(chart_ref, upgrade)), fresh)
    )
    wait_for_condition(cluster, ns, "web", "Ready", reason="UpgradeSucceeded")
    assert get_json(cluster, "configmap", "web-config", "-n", ns)["data"]["greeting"] == "c"
    assert get_json(cluster, "deployment", "web", "-n", ns)["spec"]["replicas"] == 5
    gone = cluster.kubectl("get", "configmap", "web-extra", "-n", ns, "--ignore-not-found")
    assert gone.stdout.strip() == ""

    # The approval is spent: the next change waits again though the annotation is still set.
    upgrade["greeting"] = "d"
    cluster.kubectl(
        "apply", "-f", "-", input=approving(helmrelease("web", ns, spec(chart_ref, upgrade)), fresh)
    )
    again = wait_for_condition(
        cluster, ns, "web", "Ready", status="False", reason="ApprovalPending"
    )
    assert again["status"]["preview"]["revision"] == 3
    assert get_json(cluster, "configmap", "web-config", "-n", ns)["data"]["greeting"] == "c"

    # `rudder approve` shows the same preview, computed with the user's credentials.
    approved = rudder_cli(cluster, "approve", "web", "-n", ns, "--yes")
    assert approved.returncode == 0, approved.stdout + approved.stderr
    assert again["status"]["preview"]["digest"] in approved.stdout
    assert "+  greeting: d" in approved.stdout
    wait_for_condition(cluster, ns, "web", "Ready", reason="UpgradeSucceeded")
    assert get_json(cluster, "configmap", "web-config", "-n", ns)["data"]["greeting"] == "d"
    log = rudder.log_path.read_text()
    for text in secret_texts(PASSWORD_1, PASSWORD_2):
        assert text not in log


def test_rudder_diff_needs_no_operator(cluster: Cluster, chart_ref: str, tmp_path: Path) -> None:
    """`rudder diff -f` on a HelmRelease that does not exist yet, and exit codes for CI."""
    ns = unique("diff")
    cluster.kubectl("create", "namespace", ns)
    set_password(cluster, ns, PASSWORD_1)
    manifest = tmp_path / "hr.yaml"
    manifest.write_text(helmrelease("fresh", ns, spec(chart_ref, {"greeting": "hi"})))

    result = rudder_cli(cluster, "diff", "-f", str(manifest))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "install to revision 1: 4 added, 0 changed, 0 removed" in result.stdout
    assert f"+++ next/ConfigMap/{ns}/fresh-config" in result.stdout
    assert "+  greeting: hi" in result.stdout
    assert "\033[" not in result.stdout  # not a terminal: no colour
    for text in secret_texts(PASSWORD_1):
        assert text not in result.stdout
    # Nothing was created by the diff.
    created = cluster.kubectl(
        "get", "helmrelease,configmap,secret,deployment", "-n", ns, "-o", "name"
    )
    assert created.stdout.split() == ["secret/db"] or sorted(created.stdout.split()) == [
        "configmap/kube-root-ca.crt", "secret/db"
    ]  # fmt: skip

    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "ConfigMap"}))
    assert rudder_cli(cluster, "diff", "-f", str(broken)).returncode == 2
    missing_chart = tmp_path / "missing.yaml"
    missing_chart.write_text(
        helmrelease("fresh", ns, spec(chart_ref.rsplit("@", 1)[0] + "@sha256:" + "0" * 64, {}))
    )
    failed = rudder_cli(cluster, "diff", "-f", str(missing_chart))
    assert failed.returncode == 2, failed.stdout + failed.stderr
    assert "ChartNotFound" in failed.stderr
