"""A remediation rollback runs the rollback hooks and records itself as `helm rollback` does.

One chart with all six install/upgrade/rollback hooks is driven the same way twice, in two
namespaces under the same release name:
  - by rudder: install, an upgrade whose Deployment never becomes ready (retried once), then
    the remediation rollback (`upgrade.remediation: {retries: 1, strategy: rollback}`);
  - by the Helm v4 CLI: `helm install`, `helm upgrade --wait` failing twice the same way,
    `helm rollback <rel> 1 --wait`.
Then what each recorded and ran is compared: `helm history`, `helm get hooks` of every
revision, the hooks of every stored revision (decoded from the release Secret, with each
hook's `last_run`), the states each revision was recorded in while pending (watched), the
hook objects each wrote to the API server per revision (from the audit log), and the hook
objects left in the cluster.

A second run gives revision 1 a pre-rollback hook that fails: Helm stops and leaves the
rollback revision pending; rudder records it failed, worded as Helm words a failed rollback,
with the hook's error as the CLI reports it.
"""

from __future__ import annotations

import base64
import gzip
import json
import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from audit import RUDDER_USER, now, requests, settle
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

RELEASE = "hooked"
HELM_USER = "rudder-admin"  # the admin kubeconfig's client certificate, which `helm` uses
TIMEOUT = "15s"  # per hook wait and readiness wait, the same for rudder and helm

JOB_HOOK = """apiVersion: batch/v1
kind: Job
metadata:
  name: {{{{ .Release.Name }}}}-{event}
  annotations:
    helm.sh/hook: {event}
    helm.sh/hook-delete-policy: {policy}
    test.rudder.dev/revision: {{{{ .Release.Revision | quote }}}}
    test.rudder.dev/greeting: {{{{ .Values.greeting | quote }}}}
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers:
        - name: hook
          image: {{{{ index .Values.hookImages "{event}" | default "busybox:1.37" | quote }}}}
"""

# No delete policy: Helm gives a hook that runs `before-hook-creation` (and records it).
CONFIGMAP_HOOK = """apiVersion: v1
kind: ConfigMap
metadata:
  name: {{{{ .Release.Name }}}}-{event}
  annotations:
    helm.sh/hook: {event}
    helm.sh/hook-weight: "{weight}"
data:
  revision: {{{{ .Release.Revision | quote }}}}
  greeting: {{{{ .Values.greeting | quote }}}}
"""

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
          image: {{ .Values.image | quote }}
""",
    "pre-install.yaml": JOB_HOOK.format(event="pre-install", policy="before-hook-creation"),
    "post-install.yaml": CONFIGMAP_HOOK.format(event="post-install", weight=1),
    # hook-succeeded: the pre-upgrade Job is deleted once it (and its event) succeeded.
    "pre-upgrade.yaml": JOB_HOOK.format(event="pre-upgrade", policy="hook-succeeded"),
    "post-upgrade.yaml": CONFIGMAP_HOOK.format(event="post-upgrade", weight=2),
    "pre-rollback.yaml": JOB_HOOK.format(event="pre-rollback", policy="before-hook-creation"),
    "post-rollback.yaml": CONFIGMAP_HOOK.format(event="post-rollback", weight=3),
}
EVENTS = (
    "pre-install",
    "post-install",
    "pre-upgrade",
    "post-upgrade",
    "pre-rollback",
    "post-rollback",
)
HOOK_NAMES = frozenset(f"{RELEASE}-{event}" for event in EVENTS)
DEFAULTS = {"greeting": "default", "image": "example.test/app:1.0", "hookImages": {}}
GOOD = {"greeting": "good"}
BAD = {"greeting": "bad", "image": "example.test/app:fail"}  # never ready (kwok stage)
# Revision 1 with a pre-rollback hook that fails (kwok fails a Job pod of a `:fail` image):
# installs and upgrades never run it, the rollback to revision 1 does.
GOOD_BUT_ROLLBACK_FAILS = {**GOOD, "hookImages": {"pre-rollback": "busybox:fail"}}


@pytest.fixture(scope="module")
def chart_ref(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> str:
    root: Path = tmp_path_factory.mktemp("rollback-hooks-chart")
    return push(cluster.registry, write_chart(root, "hooked", "1.0.0", TEMPLATES, DEFAULTS))


# --- what each side recorded ------------------------------------------------------------------


def decode_release(secret: dict[str, Any]) -> dict[str, Any]:
    """The release JSON of a Secret: API base64, Helm's base64, gzip."""
    payload = base64.b64decode(base64.b64decode(secret["data"]["release"]))
    loaded: dict[str, Any] = json.loads(gzip.decompress(payload))
    return loaded


def is_set(go_time: str | None) -> bool:
    return bool(go_time) and not str(go_time).startswith("0001-01-01")


def hooks_as_recorded(release: dict[str, Any]) -> list[dict[str, Any]]:
    """A revision's hooks exactly as stored, but with each `last_run` time reduced to
    whether it is set (times must differ between two runs)."""
    out = []
    for hook in release.get("hooks") or []:
        last = dict(hook.get("last_run") or {})
        last["started_at"] = is_set(last.get("started_at"))
        last["completed_at"] = is_set(last.get("completed_at"))
        out.append({**hook, "last_run": last})
    return out


def phases(release: dict[str, Any]) -> dict[str, str]:
    return {
        hook["name"]: (hook.get("last_run") or {}).get("phase", "")
        for hook in release.get("hooks") or []
    }


def records(cluster: Cluster, namespace: str) -> dict[int, dict[str, Any]]:
    return {
        int(secret["metadata"]["labels"]["version"]): decode_release(secret)
        for secret in release_secrets(cluster, namespace, RELEASE)
    }


def history(cluster: Cluster, namespace: str) -> list[dict[str, Any]]:
    out = cluster.helm("history", RELEASE, "-n", namespace, "-o", "json").stdout
    loaded: list[dict[str, Any]] = json.loads(out)
    return loaded


READINESS_CAUSE = "<readiness wait timed out>"


def normalized(description: str, status: str, namespace: str) -> str:
    """A description with the namespace as <ns>; a failed upgrade's cause (the readiness
    wait's report, which rudder words its own way) as READINESS_CAUSE. What precedes the
    cause is Helm's and kept."""
    text = description.replace(namespace, "<ns>")
    if status == "failed":
        head, _, cause = text.partition(" failed: ")
        assert f"Deployment/<ns>/{RELEASE}" in cause, text  # both name what was not ready
        text = f"{head} failed: {READINESS_CAUSE}"
    return text


def history_rows(entries: list[dict[str, Any]], namespace: str) -> list[tuple[Any, ...]]:
    """What `helm history` says, without the time and with the namespace as <ns>."""
    return [
        (
            entry["revision"],
            entry["status"],
            entry["chart"],
            entry["app_version"],
            normalized(entry["description"], entry["status"], namespace),
        )
        for entry in entries
    ]


def hook_manifests(cluster: Cluster, namespace: str, revision: int) -> str:
    return cluster.helm(
        "get", "hooks", RELEASE, "-n", namespace, "--revision", str(revision)
    ).stdout


VERBS = {"create": "apply", "patch": "apply", "update": "update", "delete": "delete"}
SECRET_NAME = re.compile(rf"^sh\.helm\.release\.v1\.{RELEASE}\.v(\d+)$")


def hook_writes(
    cluster: Cluster, namespace: str, user: str, since: Any
) -> dict[int, list[tuple[str, str]]]:
    """The hook objects `user` wrote (applied or deleted, successfully) in `namespace`, in
    order, grouped by the release revision whose record it had created last."""
    seen = sorted(
        (
            r
            for r in requests(cluster.audit_log, user=user, since=since)
            if r.namespace == namespace and r.is_write and r.code < 300
        ),
        key=lambda r: r.at,
    )
    revision = 0
    out: dict[int, list[tuple[str, str]]] = {}
    for r in seen:
        if r.resource == "secrets" and r.verb == "create":
            named = SECRET_NAME.match(r.name)
            revision = int(named.group(1)) if named else revision + 1
        elif r.resource in ("jobs", "configmaps") and not r.subresource and r.name in HOOK_NAMES:
            out.setdefault(revision, []).append((VERBS[r.verb], r.name.removeprefix(f"{RELEASE}-")))
    return out


def live_hooks(cluster: Cluster, namespace: str) -> dict[str, dict[str, str]]:
    """The hook objects left in the cluster: which revision and values rendered each."""
    out = {}
    for kind in ("jobs", "configmaps"):
        for item in get_json(cluster, kind, "-n", namespace).get("items", []):
            name = item["metadata"]["name"]
            if name not in HOOK_NAMES:
                continue
            annotations = item["metadata"].get("annotations") or {}
            data = item.get("data") or {
                "revision": annotations.get("test.rudder.dev/revision", ""),
                "greeting": annotations.get("test.rudder.dev/greeting", ""),
            }
            out[name.removeprefix(f"{RELEASE}-")] = dict(data)
    return out


@contextmanager
def recorded_states(cluster: Cluster, namespace: str, out: Path) -> Iterator[Path]:
    """Every version of the release Secrets in `namespace` while the block runs (a watch),
    so the states a revision went through (pending, hooks Running) can be compared."""
    with out.open("w") as sink:
        watch = subprocess.Popen(
            [str(cluster.tools / "kubectl"), "get", "secrets", "-n", namespace, "-w", "-o",
             "json", "-l", f"owner=helm,name={RELEASE}"],
            stdout=sink,
            stderr=subprocess.DEVNULL,
            env=cluster.env(),
        )  # fmt: skip
        try:
            yield out
        finally:
            watch.terminate()
            watch.wait(timeout=10)


def states(path: Path) -> dict[int, list[tuple[str, str, tuple[tuple[str, str], ...]]]]:
    """Per revision, the (status, description, hook phases) it was recorded with, in order,
    each once (a record written again unchanged is not a new state)."""
    text, decoder, at = path.read_text(), json.JSONDecoder(), 0
    out: dict[int, list[tuple[str, str, tuple[tuple[str, str], ...]]]] = {}
    while True:
        while at < len(text) and text[at].isspace():
            at += 1
        if at >= len(text):
            return out
        secret, at = decoder.raw_decode(text, at)
        release = decode_release(secret)
        state = (
            release["info"]["status"],
            release["info"]["description"].replace(namespace_of(secret), "<ns>"),
            tuple(sorted(phases(release).items())),
        )
        seen = out.setdefault(int(release["version"]), [])
        if not seen or seen[-1] != state:
            seen.append(state)


def namespace_of(secret: dict[str, Any]) -> str:
    return str(secret["metadata"]["namespace"])


def compare(what: str, ours: Any, theirs: Any, differences: list[str]) -> None:
    if ours != theirs:
        differences.append(
            f"{what}:\n  rudder: {json.dumps(ours, indent=1, default=str)}\n"
            f"  helm:   {json.dumps(theirs, indent=1, default=str)}"
        )


def drive(
    cluster: Cluster,
    chart_ref: str,
    ours: str,
    theirs: str,
    tmp_path: Path,
    *,
    good: dict[str, Any] = GOOD,
    rollback_fails: bool = False,
) -> tuple[dict[str, dict[str, dict[str, str]]], str]:
    """Install `good`, fail an upgrade twice, roll back: rudder in `ours`, the CLI in
    `theirs`. Returns the hook objects each namespace had after the install, and what
    `helm rollback` printed on stderr."""
    good_file, bad_file = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good_file.write_text(yaml.safe_dump(good))
    bad_file.write_text(yaml.safe_dump(BAD))
    helm_common = ("-n", theirs, "--plain-http", "--wait=watcher", "--timeout", TIMEOUT)

    # Install: rudder works in its own process while the CLI runs here.
    spec = {
        "chart": {"ref": chart_ref, "insecure": True},
        "timeout": TIMEOUT,
        "upgrade": {"remediation": {"retries": 1, "strategy": "rollback"}},
        "values": good,
    }
    apply_helmrelease(cluster, RELEASE, ours, spec)
    cluster.kubectl("create", "namespace", theirs)
    cluster.helm("install", RELEASE, chart_ref, *helm_common, "-f", str(good_file))
    wait_for_condition(cluster, ours, RELEASE, "Ready", timeout=90)
    after_install = {ns: live_hooks(cluster, ns) for ns in (ours, theirs)}

    # An upgrade that never becomes ready, tried twice, then rolled back to revision 1.
    apply_helmrelease(cluster, RELEASE, ours, {**spec, "values": BAD})
    for _ in range(2):
        failed = cluster.helm(
            "upgrade", RELEASE, chart_ref, *helm_common, "-f", str(bad_file), check=False
        )
        assert failed.returncode != 0, failed.stdout
    rollback = cluster.helm(
        "rollback", RELEASE, "1", "-n", theirs, "--wait=watcher", "--timeout", TIMEOUT,
        check=False,
    )  # fmt: skip
    assert (rollback.returncode != 0) == rollback_fails, rollback.stderr
    hr = wait_for_condition(
        cluster,
        ours,
        RELEASE,
        "Remediated",
        status="False" if rollback_fails else "True",
        reason="RollbackFailed" if rollback_fails else "RollbackSucceeded",
        timeout=180,
    )
    assert condition(hr, "Ready")["reason"] == (
        "RollbackFailed" if rollback_fails else "RetriesExceeded"
    )
    return after_install, rollback.stderr


# --- the test -----------------------------------------------------------------------------------


@pytest.mark.timeout(600)  # two failing upgrades on each side, each waiting out TIMEOUT
def test_remediation_rollback_runs_rollback_hooks_and_records_as_helm(
    cluster: Cluster, rudder: OperatorProcess, chart_ref: str, tmp_path: Path
) -> None:
    ours, theirs = unique("rbhooks-rudder"), unique("rbhooks-helm")
    start = now()
    with (
        recorded_states(cluster, ours, tmp_path / "rudder-states.json") as our_log,
        recorded_states(cluster, theirs, tmp_path / "helm-states.json") as their_log,
    ):
        after_install, _ = drive(cluster, chart_ref, ours, theirs, tmp_path)
    settle()

    stored = {ns: records(cluster, ns) for ns in (ours, theirs)}
    entries = {ns: history(cluster, ns) for ns in (ours, theirs)}
    writes = {
        ours: hook_writes(cluster, ours, RUDDER_USER, start),
        theirs: hook_writes(cluster, theirs, HELM_USER, start),
    }
    after_rollback = {ns: live_hooks(cluster, ns) for ns in (ours, theirs)}

    # -- what Helm does, stated outright (so a change on either side is caught) ------------
    helm_rows = history_rows(entries[theirs], theirs)
    assert [row[:2] for row in helm_rows] == [
        (1, "superseded"),
        (2, "failed"),
        (3, "failed"),
        (4, "deployed"),
    ]
    assert helm_rows[0][4] == "Install complete"
    assert helm_rows[1][4] == helm_rows[2][4] == f'Upgrade "{RELEASE}" failed: {READINESS_CAUSE}'
    assert helm_rows[3][4] == "Rollback to 1"

    for ns in (ours, theirs):
        who = "rudder" if ns == ours else "helm"
        rollback = stored[ns][4]
        assert rollback["info"]["description"] == "Rollback to 1", who
        # The rollback revision ran pre- and post-rollback, and no upgrade hook ...
        assert phases(rollback) == {
            f"{RELEASE}-pre-install": "Succeeded",
            f"{RELEASE}-post-install": "Succeeded",
            f"{RELEASE}-pre-upgrade": "",
            f"{RELEASE}-post-upgrade": "",
            f"{RELEASE}-pre-rollback": "Succeeded",
            f"{RELEASE}-post-rollback": "Succeeded",
        }, who
        assert writes[ns].get(4) == [
            ("apply", "pre-rollback"),
            ("apply", "post-rollback"),
        ], (who, writes[ns])
        # ... with revision 1's hooks: the install hooks' runs are revision 1's, copied.
        install_runs = {
            h["name"]: h["last_run"] for h in stored[ns][1]["hooks"] if "install" in h["name"]
        }
        assert {
            h["name"]: h["last_run"] for h in rollback["hooks"] if "install" in h["name"]
        } == install_runs, who
        assert after_rollback[ns]["pre-rollback"] == {"revision": "1", "greeting": "good"}, who
        assert after_rollback[ns]["post-rollback"] == {"revision": "1", "greeting": "good"}, who
        # The failed upgrades ran pre-upgrade (deleted when it succeeded), never post-upgrade.
        for revision in (2, 3):
            assert phases(stored[ns][revision])[f"{RELEASE}-pre-upgrade"] == "Succeeded", who
            assert phases(stored[ns][revision])[f"{RELEASE}-post-upgrade"] == "", who
            assert writes[ns].get(revision) == [
                ("apply", "pre-upgrade"),
                ("delete", "pre-upgrade"),
            ], (who, writes[ns])

    # -- rudder against helm, item by item ----------------------------------------------------
    differences: list[str] = []
    our_rows = history_rows(entries[ours], ours)
    compare("helm history", our_rows, helm_rows, differences)
    for revision in (1, 2, 3, 4):
        a, b = hook_manifests(cluster, ours, revision), hook_manifests(cluster, theirs, revision)
        compare(f"helm get hooks --revision {revision}", a, b, differences)
        ha, hb = (
            hooks_as_recorded(stored[ours][revision]),
            hooks_as_recorded(stored[theirs][revision]),
        )
        compare(f"stored hooks of revision {revision}", ha, hb, differences)
        ia = {k: stored[ours][revision]["info"].get(k) for k in ("status", "description")}
        ib = {k: stored[theirs][revision]["info"].get(k) for k in ("status", "description")}
        ia["description"] = normalized(str(ia["description"]), str(ia["status"]), ours)
        ib["description"] = normalized(str(ib["description"]), str(ib["status"]), theirs)
        compare(f"info of revision {revision}", ia, ib, differences)
    wa, wb = writes[ours], writes[theirs]
    compare("hook objects written per revision", wa, wb, differences)
    la, lb = after_install[ours], after_install[theirs]
    compare("hook objects after install", la, lb, differences)
    ra, rb = after_rollback[ours], after_rollback[theirs]
    compare("hook objects after the rollback", ra, rb, differences)
    # Every state each revision was recorded in (watched): the pending ones must be worded
    # as Helm words them; rudder may record hook progress more often than Helm does.
    sa, sb = states(our_log), states(their_log)
    for revision in (1, 2, 3, 4):
        pa = [(st, text) for st, text, _ in sa.get(revision, []) if st.startswith("pending")]
        pb = [(st, text) for st, text, _ in sb.get(revision, []) if st.startswith("pending")]
        pa = [p for i, p in enumerate(pa) if i == 0 or pa[i - 1] != p]
        pb = [p for i, p in enumerate(pb) if i == 0 or pb[i - 1] != p]
        compare(f"pending states of revision {revision}", pa, pb, differences)
    print("recorded states (rudder):", json.dumps(sa, indent=1))
    print("recorded states (helm):", json.dumps(sb, indent=1))
    assert not differences, "rudder differs from helm:\n" + "\n".join(differences)


@pytest.mark.timeout(600)
def test_a_failing_pre_rollback_hook_fails_the_rollback_with_helms_error(
    cluster: Cluster, rudder: OperatorProcess, chart_ref: str, tmp_path: Path
) -> None:
    ours, theirs = unique("rbfail-rudder"), unique("rbfail-helm")
    start = now()
    _, stderr = drive(
        cluster,
        chart_ref,
        ours,
        theirs,
        tmp_path,
        good=GOOD_BUT_ROLLBACK_FAILS,
        rollback_fails=True,
    )
    settle()
    stored = {ns: records(cluster, ns) for ns in (ours, theirs)}
    writes = {
        ours: hook_writes(cluster, ours, RUDDER_USER, start),
        theirs: hook_writes(cluster, theirs, HELM_USER, start),
    }
    statuses = {
        ns: [(entry["revision"], entry["status"]) for entry in history(cluster, ns)]
        for ns in (ours, theirs)
    }
    pre_rollback, post_rollback = f"{RELEASE}-pre-rollback", f"{RELEASE}-post-rollback"

    # Helm stops at the failed hook and returns its error: the revision stays pending, as
    # recorded when the hook started ("Rollback to 1", the hook Running).
    error = stderr.strip().rpartition("Error: ")[2].replace(theirs, "<ns>")
    assert error.startswith(f"resource Job/<ns>/{pre_rollback} not ready"), stderr
    assert statuses[theirs] == [
        (1, "deployed"),
        (2, "failed"),
        (3, "failed"),
        (4, "pending-rollback"),
    ]
    assert stored[theirs][4]["info"]["description"] == "Rollback to 1"
    assert phases(stored[theirs][4])[pre_rollback] == "Running"

    # rudder never leaves a revision pending: it records it failed, in Helm's words for a
    # failed rollback with the hook's error as the CLI reports it.
    assert statuses[ours] == [(1, "deployed"), (2, "failed"), (3, "failed"), (4, "failed")]
    description = stored[ours][4]["info"]["description"].replace(ours, "<ns>")
    assert description == f'Rollback "{RELEASE}" failed: {error}'
    assert phases(stored[ours][4])[pre_rollback] == "Failed"

    # Both ran pre-rollback only, from revision 1's hooks, and recorded the rest alike.
    for ns in (ours, theirs):
        assert phases(stored[ns][4])[post_rollback] == "", ns
        assert phases(stored[ns][4])[f"{RELEASE}-pre-upgrade"] == "", ns
        assert writes[ns].get(4) == [("apply", "pre-rollback")], (ns, writes[ns])
    assert live_hooks(cluster, ours) == live_hooks(cluster, theirs)
    others = [
        [h for h in hooks_as_recorded(stored[ns][4]) if h["name"] != pre_rollback]
        for ns in (ours, theirs)
    ]
    assert others[0] == others[1]
