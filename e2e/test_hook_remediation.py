"""A failed hook is remediated like any other failed upgrade.

A pre-upgrade hook Job whose image fails (kwok fails a Job pod of a `:fail` image) fails
the upgrade. With `upgrade.remediation: {retries: 1, ...}` that failure is counted and
retried, not Stalled at once: the upgrade is tried twice, then the release is rolled back
to revision 1 (`strategy: rollback`) or uninstalled (`strategy: uninstall`), and the
HelmRelease stalls with `Ready=False, reason=RetriesExceeded` until the spec changes.
"""

from __future__ import annotations

import json
from pathlib import Path
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

RELEASE = "hookfix"
HOOK = f"{RELEASE}-migrate"

TEMPLATES = {
    "config.yaml": (
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-config\n"
        "data:\n  greeting: {{ .Values.greeting | quote }}\n"
    ),
    "deployment.yaml": """apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}
  labels: {app: {{ .Release.Name }}}
spec:
  selector:
    matchLabels: {app: {{ .Release.Name }}}
  template:
    metadata:
      labels: {app: {{ .Release.Name }}}
    spec:
      containers:
        - name: app
          image: example.test/app:1.0
""",
    # before-hook-creation: the retry replaces the failed Job of the first attempt.
    "pre-upgrade.yaml": """apiVersion: batch/v1
kind: Job
metadata:
  name: {{ .Release.Name }}-migrate
  annotations:
    helm.sh/hook: pre-upgrade
    helm.sh/hook-delete-policy: before-hook-creation
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers:
        - name: migrate
          image: {{ .Values.migrateImage | quote }}
""",
}
VALUES = {"greeting": "good", "migrateImage": "busybox:1.37"}
BAD = {"greeting": "bad", "migrateImage": "busybox:fail"}


@pytest.fixture(scope="module")
def chart_ref(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> str:
    root: Path = tmp_path_factory.mktemp("hook-remediation-chart")
    return push(cluster.registry, write_chart(root, "hookfix", "1.0.0", TEMPLATES, VALUES))


def install(cluster: Cluster, ns: str, chart_ref: str, strategy: str) -> dict[str, Any]:
    """Install with a good hook image (Ready), then upgrade to a failing one; the spec."""
    spec: dict[str, Any] = {
        "chart": {"ref": chart_ref, "insecure": True},
        "timeout": "20s",
        "upgrade": {"remediation": {"retries": 1, "strategy": strategy}},
        "values": {"greeting": "good"},
    }
    apply_helmrelease(cluster, RELEASE, ns, spec)
    hr = wait_for_condition(cluster, ns, RELEASE, "Ready", reason="InstallSucceeded", timeout=90)
    assert hr["status"]["release"]["revision"] == 1
    apply_helmrelease(cluster, RELEASE, ns, {**spec, "values": BAD})
    return spec


def history(cluster: Cluster, ns: str) -> list[dict[str, Any]]:
    loaded: list[dict[str, Any]] = json.loads(
        cluster.helm("history", RELEASE, "-n", ns, "-o", "json").stdout
    )
    return loaded


def assert_hook_failure(description: str, ns: str) -> None:
    """A failed revision's description: Helm's words for a failed upgrade, naming the hook."""
    prefix = f'Upgrade "{RELEASE}" failed: '
    assert description.startswith(prefix), description
    cause = description.removeprefix(prefix)
    assert cause.startswith("pre-upgrade hooks failed: "), description
    assert f"Job/{ns}/{HOOK}" in cause, description


def failure_events(cluster: Cluster, ns: str) -> list[str]:
    """The messages of the HelmRelease's UpgradeFailed events (one per failed attempt)."""
    listed = get_json(
        cluster, "events", "-n", ns, "--field-selector", f"involvedObject.name={RELEASE}"
    )
    return sorted(
        e["message"]
        for e in listed.get("items", [])
        if e.get("reason") == "UpgradeFailed" and e.get("type") == "Warning"
    )


def assert_two_hook_failures(cluster: Cluster, ns: str) -> None:
    """The upgrade was tried twice, and each attempt failed on the hook."""
    messages = failure_events(cluster, ns)
    assert len(messages) == 2, messages
    for message in messages:
        assert "pre-upgrade hooks failed: " in message, message
        assert f"Job/{ns}/{HOOK}" in message, message


@pytest.mark.timeout(600)  # two failed upgrades (with backoff) and a rollback
def test_a_failed_pre_upgrade_hook_is_retried_then_rolled_back(
    cluster: Cluster, rudder: OperatorProcess, chart_ref: str
) -> None:
    ns = unique("hookrb")
    install(cluster, ns, chart_ref, "rollback")

    hr = wait_for_condition(
        cluster, ns, RELEASE, "Remediated", reason="RollbackSucceeded", timeout=240
    )
    ready, stalled = condition(hr, "Ready"), condition(hr, "Stalled")
    assert (ready["status"], ready["reason"]) == ("False", "RetriesExceeded"), ready
    assert stalled["status"] == "True", stalled
    assert hr["status"]["upgradeFailures"] == 2, hr["status"]
    assert "rolled back to revision 1 as revision 4" in condition(hr, "Remediated")["message"]
    assert_two_hook_failures(cluster, ns)

    entries = history(cluster, ns)
    assert [(e["revision"], e["status"]) for e in entries] == [
        (1, "superseded"),
        (2, "failed"),
        (3, "failed"),
        (4, "deployed"),
    ], entries
    assert entries[-1]["description"] == "Rollback to 1"
    for entry in entries[1:3]:
        assert_hook_failure(entry["description"], ns)
    statuses = [s["metadata"]["labels"]["status"] for s in release_secrets(cluster, ns, RELEASE)]
    assert not [s for s in statuses if s.startswith("pending")], statuses
    assert statuses == ["superseded", "failed", "failed", "deployed"], statuses

    # The hook failed before anything was applied; the rollback left revision 1's content.
    values = json.loads(cluster.helm("get", "values", RELEASE, "-n", ns, "-o", "json").stdout)
    assert values == {"greeting": "good"}
    config = get_json(cluster, "configmap", f"{RELEASE}-config", "-n", ns)
    assert config["data"]["greeting"] == "good"
    job = get_json(cluster, "job", HOOK, "-n", ns)
    assert job["spec"]["template"]["spec"]["containers"][0]["image"] == "busybox:fail"

    # Stalled: nothing more is tried until the spec changes.
    hr = get_json(cluster, "helmrelease", RELEASE, "-n", ns)
    assert hr["status"]["release"]["revision"] == 4
    assert len(history(cluster, ns)) == 4


@pytest.mark.timeout(600)
def test_a_failed_pre_upgrade_hook_is_retried_then_uninstalled(
    cluster: Cluster, rudder: OperatorProcess, chart_ref: str
) -> None:
    ns = unique("hookun")
    install(cluster, ns, chart_ref, "uninstall")
    assert get_json(cluster, "configmap", f"{RELEASE}-config", "-n", ns)
    assert get_json(cluster, "deployment", RELEASE, "-n", ns)

    hr = wait_for_condition(
        cluster, ns, RELEASE, "Remediated", reason="UninstallSucceeded", timeout=240
    )
    ready, stalled = condition(hr, "Ready"), condition(hr, "Stalled")
    assert (ready["status"], ready["reason"]) == ("False", "RetriesExceeded"), ready
    assert stalled["status"] == "True", stalled
    assert hr["status"]["upgradeFailures"] == 2, hr["status"]
    assert_two_hook_failures(cluster, ns)

    # The release's objects and records are gone (history is not kept by default).
    assert not get_json(cluster, "configmap", f"{RELEASE}-config", "-n", ns)
    assert not get_json(cluster, "deployment", RELEASE, "-n", ns)
    assert release_secrets(cluster, ns, RELEASE) == []
    gone = cluster.helm("history", RELEASE, "-n", ns, check=False)
    assert gone.returncode != 0, gone
    assert "not found" in gone.stderr, gone
