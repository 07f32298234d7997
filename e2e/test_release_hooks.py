"""Helm hooks run by a HelmRelease's install and upgrade, as Helm runs them."""

from __future__ import annotations

import json
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
    wait_for_condition,
)
from operator_process import OperatorProcess

pytestmark = pytest.mark.e2e

JOB_HOOK = """apiVersion: batch/v1
kind: Job
metadata:
  name: {{{{ .Release.Name }}}}-{name}
  annotations:
    helm.sh/hook: {event}
    helm.sh/hook-weight: "{weight}"
    helm.sh/hook-delete-policy: {policy}
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers:
        - name: hook
          image: {{{{ .Values.{name}Image | quote }}}}
"""

TEMPLATES = {
    "config.yaml": (
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-config\n"
        "data:\n  greeting: {{ .Values.greeting | quote }}\n"
    ),
    "pre-install.yaml": (
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-pre\n"
        '  annotations:\n    helm.sh/hook: pre-install\ndata: {ran: "yes"}\n'
    ),
    "post-install.yaml": JOB_HOOK.format(
        name="post", event="post-install", weight=1, policy="hook-succeeded"
    ),
    "pre-upgrade.yaml": JOB_HOOK.format(
        name="migrate", event="pre-upgrade", weight=0, policy="before-hook-creation"
    ),
}
VALUES = {"greeting": "a", "postImage": "busybox:1.37", "migrateImage": "busybox:1.37"}


@pytest.fixture(scope="module")
def chart_ref(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> str:
    root: Path = tmp_path_factory.mktemp("hooks-chart")
    return push(cluster.registry, write_chart(root, "hooked", "1.0.0", TEMPLATES, VALUES))


def test_install_runs_hooks_and_a_failing_pre_upgrade_hook_stops_the_upgrade(
    cluster: Cluster, rudder: OperatorProcess, chart_ref: str
) -> None:
    ns = unique("hooks")
    spec = {"chart": {"ref": chart_ref, "insecure": True}, "timeout": "60s", "values": {}}
    apply_helmrelease(cluster, "hooked", ns, spec)
    wait_for_condition(cluster, ns, "hooked", "Ready", timeout=90)

    # The pre-install hook ran; the post-install Job ran and was deleted (hook-succeeded).
    assert get_json(cluster, "configmap", "hooked-pre", "-n", ns)["data"] == {"ran": "yes"}
    assert not get_json(cluster, "job", "hooked-post", "-n", ns)
    status = json.loads(cluster.helm("status", "hooked", "-n", ns, "-o", "json").stdout)
    phases = {hook["name"]: hook["last_run"]["phase"] for hook in status["hooks"]}
    assert phases == {"hooked-pre": "Succeeded", "hooked-post": "Succeeded", "hooked-migrate": ""}

    # A pre-upgrade hook Job that fails stops the upgrade before anything is applied.
    apply_helmrelease(
        cluster, "hooked", ns, {**spec, "values": {"greeting": "b", "migrateImage": "busybox:fail"}}
    )
    hr = wait_for_condition(
        cluster, ns, "hooked", "Ready", status="False", reason="UpgradeFailed", timeout=90
    )
    assert "pre-upgrade hooks failed" in condition(hr, "Ready")["message"]
    assert get_json(cluster, "configmap", "hooked-config", "-n", ns)["data"]["greeting"] == "a"
    statuses = [s["metadata"]["labels"]["status"] for s in release_secrets(cluster, ns, "hooked")]
    assert statuses == ["deployed", "failed"]
    history = json.loads(cluster.helm("history", "hooked", "-n", ns, "-o", "json").stdout)
    assert history[-1]["status"] == "failed"
    assert "pre-upgrade hooks failed" in history[-1]["description"]


def test_test_hooks_set_test_success(
    cluster: Cluster, rudder: OperatorProcess, tmp_path: Path
) -> None:
    templates = {
        "config.yaml": TEMPLATES["config.yaml"],
        "test.yaml": JOB_HOOK.format(name="smoke", event="test", weight=0, policy="hook-succeeded"),
    }
    values = {"greeting": "a", "smokeImage": "busybox:1.37"}
    ref = push(cluster.registry, write_chart(tmp_path, "tested", "1.0.0", templates, values))
    ns = unique("tests")
    spec = {
        "chart": {"ref": ref, "insecure": True},
        "timeout": "60s",
        "test": {"enable": True, "timeout": "60s"},
    }
    apply_helmrelease(cluster, "tested", ns, spec)
    hr = wait_for_condition(cluster, ns, "tested", "TestSuccess", timeout=90)
    assert condition(hr, "Ready")["status"] == "True"
    status = json.loads(cluster.helm("status", "tested", "-n", ns, "-o", "json").stdout)
    assert [h["last_run"]["phase"] for h in status["hooks"]] == ["Succeeded"]

    failing = {**spec, "values": {"greeting": "b", "smokeImage": "busybox:fail"}}
    apply_helmrelease(cluster, "tested", ns, failing)
    hr = wait_for_condition(
        cluster, ns, "tested", "TestSuccess", status="False", reason="TestFailed", timeout=90
    )
    assert condition(hr, "Ready")["reason"] == "TestFailed"

    ignoring = {
        **failing,
        "test": {"enable": True, "ignoreFailures": True},
        "values": {"greeting": "c", "smokeImage": "busybox:fail"},
    }
    apply_helmrelease(cluster, "tested", ns, ignoring)
    hr = wait_for_condition(cluster, ns, "tested", "Ready", reason="UpgradeSucceeded", timeout=90)
    assert condition(hr, "TestSuccess")["status"] == "False"
