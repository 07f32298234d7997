"""Changes the API server refuses as an update (a Deployment's selector, a Job's template,
RollingUpdate -> Recreate with the defaulted rollingUpdate left behind): reported as
ImmutableFieldChange with nothing applied, or, with spec.upgrade.forceReplace, exactly those
objects deleted and re-created while the others are applied as usual."""

from __future__ import annotations

from typing import Any

import pytest

from charts import push, write_chart
from conftest import Cluster
from helpers import (
    apply_helmrelease,
    condition,
    get_json,
    release_secrets,
    unique,
    wait_for_condition,
)
from operator_process import OperatorProcess

pytestmark = pytest.mark.e2e

TEMPLATES = {
    "config.yaml": (
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-config\n"
        "data:\n  greeting: {{ .Values.greeting | quote }}\n"
    ),
    "web.yaml": """apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}-web
spec:
  replicas: 0
  selector: {matchLabels: {app: web, tier: {{ .Values.tier | quote }}}}
  template:
    metadata: {labels: {app: web, tier: {{ .Values.tier | quote }}}}
    spec: {containers: [{name: app, image: "example.test/app:1"}]}
""",
    "worker.yaml": """apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}-worker
spec:
  replicas: 0
  {{- if .Values.recreate }}
  strategy: {type: Recreate}
  {{- end }}
  selector: {matchLabels: {app: worker}}
  template:
    metadata: {labels: {app: worker}}
    spec: {containers: [{name: app, image: "example.test/worker:1"}]}
""",
    "job.yaml": """apiVersion: batch/v1
kind: Job
metadata:
  name: {{ .Release.Name }}-migrate
spec:
  template:
    spec:
      restartPolicy: Never
      containers: [{name: migrate, image: "example.test/migrate:{{ .Values.migration }}"}]
""",
}


@pytest.fixture(scope="module")
def chart_ref(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("replace-chart")
    values = {"greeting": "a", "tier": "one", "recreate": False, "migration": "1"}
    return push(cluster.registry, write_chart(root, "replaced", "1.0.0", TEMPLATES, values))


def spec(ref: str, values: dict[str, Any], **upgrade: Any) -> dict[str, Any]:
    return {
        "chart": {"ref": ref, "insecure": True},
        "values": values,
        "timeout": "90s",
        "upgrade": upgrade,
    }


def uid(cluster: Cluster, kind: str, name: str, ns: str) -> str:
    return str(get_json(cluster, kind, name, "-n", ns)["metadata"]["uid"])


def test_immutable_changes_are_named_then_replaced_with_opt_in(
    cluster: Cluster, rudder: OperatorProcess, chart_ref: str
) -> None:
    ns = unique("replace")
    apply_helmrelease(cluster, "app", ns, spec(chart_ref, {}))
    wait_for_condition(cluster, ns, "app", "Ready", reason="InstallSucceeded", timeout=120)
    before = {
        "web": uid(cluster, "deployment", "app-web", ns),
        "worker": uid(cluster, "deployment", "app-worker", ns),
        "job": uid(cluster, "job", "app-migrate", ns),
        "config": uid(cluster, "configmap", "app-config", ns),
    }
    worker = get_json(cluster, "deployment", "app-worker", "-n", ns)
    assert worker["spec"]["strategy"]["type"] == "RollingUpdate"  # defaulted, with rollingUpdate

    # Without opt-in: reported, each object named, nothing applied, no revision written.
    changed = {"greeting": "b", "tier": "two", "recreate": True, "migration": "2"}
    apply_helmrelease(cluster, "app", ns, spec(chart_ref, changed))
    refused = wait_for_condition(
        cluster, ns, "app", "Ready", status="False", reason="ImmutableFieldChange"
    )
    message = condition(refused, "Ready")["message"]
    for named in (
        f"Deployment/{ns}/app-web",
        f"Deployment/{ns}/app-worker",
        f"Job/{ns}/app-migrate",
    ):
        assert named in message, message
    assert "field is immutable" in message
    assert "rollingUpdate" in message
    assert "forceReplace" in message
    assert condition(refused, "Stalled")["status"] == "True"
    assert get_json(cluster, "configmap", "app-config", "-n", ns)["data"]["greeting"] == "a"
    assert uid(cluster, "deployment", "app-web", ns) == before["web"]
    assert len(release_secrets(cluster, ns, "app")) == 1

    # With opt-in: exactly those three are re-created; the ConfigMap is updated in place.
    apply_helmrelease(cluster, "app", ns, spec(chart_ref, changed, forceReplace=True))
    done = wait_for_condition(cluster, ns, "app", "Ready", reason="UpgradeSucceeded", timeout=120)
    assert "replaced" in condition(done, "Ready")["message"]
    after = {
        "web": uid(cluster, "deployment", "app-web", ns),
        "worker": uid(cluster, "deployment", "app-worker", ns),
        "job": uid(cluster, "job", "app-migrate", ns),
        "config": uid(cluster, "configmap", "app-config", ns),
    }
    assert after["config"] == before["config"]
    assert {k for k in before if before[k] != after[k]} == {"web", "worker", "job"}
    web = get_json(cluster, "deployment", "app-web", "-n", ns)
    assert web["spec"]["selector"]["matchLabels"]["tier"] == "two"
    assert get_json(cluster, "deployment", "app-worker", "-n", ns)["spec"]["strategy"] == {
        "type": "Recreate"
    }
    image = get_json(cluster, "job", "app-migrate", "-n", ns)["spec"]["template"]["spec"]
    assert image["containers"][0]["image"] == "example.test/migrate:2"
    assert get_json(cluster, "configmap", "app-config", "-n", ns)["data"]["greeting"] == "b"

    # The revision's description and the events name each replaced object.
    history = cluster.helm("history", "app", "-n", ns, "-o", "json").stdout
    assert f"replaced Deployment/{ns}/app-web" in history
    events = cluster.kubectl(
        "get", "events", "-n", ns, "--field-selector", "reason=Replaced", "-o", "json"
    ).stdout
    for named in (
        f"Deployment/{ns}/app-web",
        f"Deployment/{ns}/app-worker",
        f"Job/{ns}/app-migrate",
    ):
        assert named in events
