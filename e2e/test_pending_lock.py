"""Never stuck, never in the way: a pending revision is unlocked only when rudder wrote it and
its writer is gone (an earlier operator process, or older than the action's timeout); a
`helm upgrade` a user is running right now is waited for, not failed under them; and an
operator restarted in the middle of an upgrade leaves nothing pending behind.
"""

from __future__ import annotations

import base64
import gzip
import json
import subprocess
import time
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
    wait_for,
    wait_for_condition,
)
from operator_process import OperatorProcess

pytestmark = pytest.mark.e2e

TEMPLATES = {
    "configmap.yaml": """apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-config
data:
  greeting: {{ .Values.greeting | quote }}
""",
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
""",
    # Enough objects that an upgrade takes a moment, so a restart can land inside one.
    "many.yaml": """{{- range $i := until (int .Values.extra) }}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ $.Release.Name }}-extra-{{ $i }}
data:
  greeting: {{ $.Values.greeting | quote }}
{{- end }}
""",
}
DEFAULTS = {"greeting": "hello", "image": "example.test/app:1.0", "extra": 0}
FAILING_IMAGE = "example.test/app:fail"  # kwok never makes its pod ready
CLI_TIMEOUT = 60
PENDING = {"pending-install", "pending-upgrade", "pending-rollback"}


@pytest.fixture(scope="module")
def chart_ref(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("pending-chart")
    return push(cluster.registry, write_chart(root, "locked", "1.0.0", TEMPLATES, DEFAULTS))


def spec(ref: str, values: dict[str, object]) -> dict[str, object]:
    return {"chart": {"ref": ref, "insecure": True}, "values": values, "timeout": "60s"}


def statuses(cluster: Cluster, namespace: str, release: str) -> dict[int, str]:
    return {
        int(s["metadata"]["labels"]["version"]): s["metadata"]["labels"]["status"]
        for s in release_secrets(cluster, namespace, release)
    }


def history(cluster: Cluster, release: str, namespace: str, *, v3: bool = False) -> list[Any]:
    helm = cluster.helm3 if v3 else cluster.helm
    loaded: list[Any] = json.loads(helm("history", release, "-n", namespace, "-o", "json").stdout)
    return loaded


def revisions(entries: list[Any]) -> list[tuple[int, str]]:
    return [(int(h["revision"]), h["status"]) for h in entries]


def assert_histories(cluster: Cluster, release: str, namespace: str) -> list[tuple[int, str]]:
    """What both CLIs show, which must agree."""
    v4 = revisions(history(cluster, release, namespace))
    assert revisions(history(cluster, release, namespace, v3=True)) == v4
    return v4


def hr_status(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    return get_json(cluster, "helmrelease", name, "-n", namespace)


def wait_ready_on(cluster: Cluster, namespace: str, name: str, revision: int) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    def probe() -> dict[str, Any] | None:
        hr = seen["hr"] = hr_status(cluster, namespace, name)
        current = hr.get("status", {}).get("release", {})
        if (
            condition(hr, "Ready").get("status") == "True"
            and current.get("revision") == revision
            and current.get("status") == "deployed"
            and hr["status"].get("observedGeneration") == hr["metadata"]["generation"]
        ):
            return hr
        return None

    try:
        result: dict[str, Any] = wait_for(probe, timeout=90)
    except AssertionError:
        raise AssertionError(
            f"{namespace}/{name} not Ready on revision {revision}: "
            f"{json.dumps(seen.get('hr', {}).get('status'), indent=1)}\n"
            f"records: {statuses(cluster, namespace, name)}"
        ) from None
    return result


# -- release record surgery (what a crashed earlier operator process leaves behind) -------


def decode_release(secret: dict[str, Any]) -> dict[str, Any]:
    payload = base64.b64decode(base64.b64decode(secret["data"]["release"]))
    loaded: dict[str, Any] = json.loads(gzip.decompress(payload))
    return loaded


def encode_release(release: dict[str, Any]) -> str:
    helm_text = base64.b64encode(gzip.compress(json.dumps(release).encode()))
    return base64.b64encode(helm_text).decode()


def leave_pending(cluster: Cluster, namespace: str, release: str, *, instance: str) -> int:
    """Copy the latest record to the next revision as `pending-upgrade`, stamped by another
    operator process: what rudder leaves when it dies between recording and finishing."""
    latest = release_secrets(cluster, namespace, release)[-1]
    revision = int(latest["metadata"]["labels"]["version"]) + 1
    body = decode_release(latest)
    body["version"] = revision
    body["info"]["status"] = "pending-upgrade"
    body["info"]["description"] = "Upgrade in progress"
    labels = dict(latest["metadata"]["labels"])
    labels.update(version=str(revision), status="pending-upgrade")
    annotations = dict(latest["metadata"].get("annotations") or {})
    assert "rudder.dev/operator-instance" in annotations, annotations
    annotations["rudder.dev/operator-instance"] = instance
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": latest["type"],
        "metadata": {
            "name": f"sh.helm.release.v1.{release}.v{revision}",
            "namespace": namespace,
            "labels": labels,
            "annotations": annotations,
        },
        "data": {"release": encode_release(body)},
    }
    cluster.kubectl("create", "-f", "-", input=json.dumps(secret))
    return revision


# -- tests -------------------------------------------------------------------------------


def test_a_running_helm_upgrade_is_not_failed_under_the_user(
    cluster: Cluster, rudder: OperatorProcess, chart_ref: str
) -> None:
    ns, rel = unique("pending-cli"), "busy"
    apply_helmrelease(cluster, rel, ns, spec(chart_ref, {"greeting": "a"}))
    wait_ready_on(cluster, ns, rel, 1)

    # A user's upgrade that will wait its full timeout: the new image never becomes ready.
    cli = subprocess.Popen(
        [str(cluster.tools / "helm"), "upgrade", rel, chart_ref, "--plain-http", "-n", ns,
         "--reuse-values", "--set", f"image={FAILING_IMAGE}", "--force-conflicts",
         "--wait=watcher", "--timeout", f"{CLI_TIMEOUT}s"],
        env=cluster.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    started = time.monotonic()
    try:
        wait_for(
            lambda: (
                statuses(cluster, ns, rel).get(2) == "pending-upgrade" or cli.poll() is not None
            ),
            timeout=30,
            what="the CLI's pending-upgrade revision 2",
        )
        assert cli.poll() is None, f"helm upgrade ended early: {cli.communicate()}"

        # The spec moves on while the CLI is still at work.
        apply_helmrelease(cluster, rel, ns, spec(chart_ref, {"greeting": "b"}))
        hr = wait_for_condition(cluster, ns, rel, "Reconciling", timeout=30)
        assert condition(hr, "Ready")["status"] != "True"
        assert "pending" in condition(hr, "Reconciling")["message"], hr["status"]["conditions"]
        # ... and stays waiting, leaving the CLI's revision alone, for as long as it runs.
        while time.monotonic() - started < CLI_TIMEOUT - 10 and cli.poll() is None:
            records = statuses(cluster, ns, rel)
            assert records == {1: "deployed", 2: "pending-upgrade"}, records
            hr = hr_status(cluster, ns, rel)
            assert condition(hr, "Ready")["status"] != "True", hr["status"]["conditions"]
            assert condition(hr, "Reconciling").get("status") == "True", hr["status"]["conditions"]
            time.sleep(2)
        assert cli.poll() is None, "helm upgrade ended before its timeout"

        out, err = cli.communicate(timeout=CLI_TIMEOUT + 30)
        assert cli.returncode != 0, out
        assert "context deadline exceeded" in err or "timed out" in err or "timeout" in err, err
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
    # The CLI failed its own revision, with its own words.
    entries = history(cluster, rel, ns)
    assert (entries[1]["revision"], entries[1]["status"]) == (2, "failed")
    assert entries[1]["description"].startswith(f'Upgrade "{rel}" failed'), entries[1]

    # Then rudder proceeds, as the next revision, back to its spec.
    wait_ready_on(cluster, ns, rel, 3)
    deployment = get_json(cluster, "deployment", rel, "-n", ns)
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == DEFAULTS["image"]
    assert get_json(cluster, "configmap", f"{rel}-config", "-n", ns)["data"]["greeting"] == "b"
    assert assert_histories(cluster, rel, ns) == [(1, "superseded"), (2, "failed"), (3, "deployed")]


def test_a_revision_left_pending_by_an_earlier_operator_is_unlocked(
    cluster: Cluster, rudder: OperatorProcess, chart_ref: str
) -> None:
    ns, rel = unique("pending-crash"), "crashed"
    apply_helmrelease(cluster, rel, ns, spec(chart_ref, {"greeting": "a"}))
    wait_ready_on(cluster, ns, rel, 1)
    apply_helmrelease(cluster, rel, ns, spec(chart_ref, {"greeting": "b"}))
    wait_ready_on(cluster, ns, rel, 2)

    stuck = leave_pending(cluster, ns, rel, instance="an-earlier-rudder-process")
    assert stuck == 3
    # The Helm CLI sees it as every user would: the release is locked.
    assert history(cluster, rel, ns)[-1]["status"] == "pending-upgrade"
    locked = cluster.helm("upgrade", rel, chart_ref, "--plain-http", "-n", ns, check=False)
    assert locked.returncode != 0
    assert "in progress" in locked.stderr, locked.stderr

    apply_helmrelease(cluster, rel, ns, spec(chart_ref, {"greeting": "c"}))
    wait_ready_on(cluster, ns, rel, 4)
    assert get_json(cluster, "configmap", f"{rel}-config", "-n", ns)["data"]["greeting"] == "c"
    entries = history(cluster, rel, ns)
    assert assert_histories(cluster, rel, ns) == [
        (1, "superseded"), (2, "superseded"), (3, "failed"), (4, "deployed"),
    ]  # fmt: skip
    assert entries[2]["description"] != "Upgrade in progress", entries[2]
    assert not PENDING & set(statuses(cluster, ns, rel).values())


def test_an_operator_restarted_mid_upgrade_leaves_nothing_pending(
    cluster: Cluster, rudder: OperatorProcess, chart_ref: str
) -> None:
    ns, rel = unique("pending-restart"), "restarted"
    values = {"greeting": "a", "extra": 120}
    apply_helmrelease(cluster, rel, ns, spec(chart_ref, values))
    wait_ready_on(cluster, ns, rel, 1)

    apply_helmrelease(cluster, rel, ns, spec(chart_ref, {**values, "greeting": "b"}))
    # Stop the operator while revision 2 is being applied (its record is pending).
    caught = False
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        state = statuses(cluster, ns, rel).get(2)
        if state == "pending-upgrade":
            caught = True
            break
        if state is not None:
            break
    rudder.stop()
    try:
        assert caught, f"revision 2 was never seen pending: {statuses(cluster, ns, rel)}"
        stopped_at = statuses(cluster, ns, rel)
    finally:
        rudder.start()

    hr = wait_ready_on(cluster, ns, rel, max(stopped_at) if stopped_at.get(2) == "deployed" else 3)
    assert not PENDING & set(statuses(cluster, ns, rel).values()), statuses(cluster, ns, rel)
    assert condition(hr, "Reconciling").get("status") != "True"
    for i in (0, 60, 119):
        config = get_json(cluster, "configmap", f"{rel}-extra-{i}", "-n", ns)
        assert config["data"]["greeting"] == "b", i
    entries = assert_histories(cluster, rel, ns)
    assert entries[-1][1] == "deployed"
    assert all(status in ("superseded", "failed") for _, status in entries[:-1]), entries
