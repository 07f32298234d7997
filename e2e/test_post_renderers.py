"""Post-renderers: Helm 4 Wasm plugins pulled by digest and run in a sandbox, and kustomize.

The fixture plugins (e2e/wasm-plugins) are Go modules built for WASI by build-tools.sh and
packaged by the real helm v4 CLI (`helm plugin package`).
"""

from __future__ import annotations

import base64
import gzip
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

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
from operator_process import OperatorProcess, service_account_kubeconfig
from test_operator_metrics import sample, scrape
from wasm_plugins import push_plugin, push_plugin_bytes

pytestmark = pytest.mark.e2e

TIMEOUT_SECONDS = 3
DENIED = "rbac.authorization.k8s.io/ClusterRoleBinding"
TEMPLATES = {
    "config.yaml": """apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-config
data:
  greeting: {{ .Values.greeting | quote }}
""",
    "hook.yaml": """apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-hook
  annotations:
    helm.sh/hook: pre-install,pre-upgrade
data:
  ran: "yes"
""",
}


@pytest.fixture(scope="module")
def operator(
    cluster: Cluster, rudder: OperatorProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    """The session's operator replaced by one with a short post-renderer timeout and
    ClusterRoleBindings denied to post-renderers."""
    workdir = tmp_path_factory.mktemp("post-render")
    kubectl = [str(cluster.tools / "kubectl"), f"--kubeconfig={cluster.kubeconfig}"]
    kubeconfig = service_account_kubeconfig(kubectl, cluster.kubeconfig, workdir / "kc")
    process = OperatorProcess(
        kubeconfig,
        workdir / "operator",
        [f"--post-renderer-timeout={TIMEOUT_SECONDS}s", f"--post-renderer-deny-kinds={DENIED}"],
    )
    rudder.stop()
    process.start()
    try:
        yield process
    finally:
        process.stop()
        rudder.start()


@pytest.fixture(scope="module")
def chart(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("charts")
    return push(
        cluster.registry, write_chart(root, "labelled", "1.0.0", TEMPLATES, {"greeting": "hi"})
    )


def wasm(ref: str, *args: str, **extra: Any) -> dict[str, Any]:
    return {"wasm": {"ref": ref, "insecure": True, "args": list(args), **extra}}


def labels(cluster: Cluster, name: str, ns: str) -> dict[str, str]:
    found: dict[str, str] = get_json(cluster, "configmap", name, "-n", ns)["metadata"].get(
        "labels", {}
    )
    return found


def release(cluster: Cluster, ns: str, name: str) -> dict[str, Any]:
    """The newest revision of the release, decoded as Helm stores it."""
    secrets = release_secrets(cluster, ns, name)
    newest = max(secrets, key=lambda s: int(s["metadata"]["labels"]["version"]))
    raw = base64.b64decode(base64.b64decode(newest["data"]["release"]))
    decoded: dict[str, Any] = json.loads(gzip.decompress(raw))
    return decoded


def test_a_wasm_plugin_post_renders_what_is_applied_and_recorded(
    cluster: Cluster, operator: OperatorProcess, chart: str
) -> None:
    ns = unique("wasm")
    cluster.kubectl("create", "namespace", ns)
    add_label = push_plugin(cluster.registry, "add-label")
    spec = {
        "chart": {"ref": chart, "insecure": True},
        "postRenderers": [wasm(add_label, "--label", "team=payments")],
    }
    apply_helmrelease(cluster, "shop", ns, spec)
    wait_for_condition(cluster, ns, "shop", "Ready", timeout=90)

    # Applied, hooks included (combined is Helm 4's default), with the origin labels.
    for name in ("shop-config", "shop-hook"):
        found = labels(cluster, name, ns)
        expected = {"team": "payments", "rudder.dev/name": "shop", "rudder.dev/namespace": ns}
        assert expected.items() <= found.items(), (name, found)
    # Recorded as applied: helm shows the post-rendered manifest and hooks.
    manifest = cluster.helm("get", "manifest", "shop", "-n", ns).stdout
    assert "team: payments" in manifest
    assert "postrenderer.helm.sh/postrender-filename" not in manifest
    assert "# Source: labelled/templates/config.yaml" in manifest
    assert "team: payments" in cluster.helm("get", "hooks", "shop", "-n", ns).stdout

    # A second release with the same plugin does not compile it again.
    apply_helmrelease(cluster, "shop2", ns, spec)
    wait_for_condition(cluster, ns, "shop2", "Ready", timeout=60)
    assert sample(scrape(operator), "rudder_post_render_compiles_total", plugin="add-label") == 1

    # A change of post-renderers is an upgrade; nohooks leaves hooks as rendered.
    def upgrade(revision: int, strategy: str, team: str) -> list[bool]:
        changed = {**spec, "postRenderStrategy": strategy}
        changed["postRenderers"] = [wasm(add_label, "--label", f"team={team}")]
        apply_helmrelease(cluster, "shop", ns, changed)
        wait_for_condition(cluster, ns, "shop", "Ready", timeout=60)
        stored = release(cluster, ns, "shop")
        assert stored["version"] == revision
        assert labels(cluster, "shop-config", ns)["team"] == team
        return [f"team: {team}" in hook["manifest"] for hook in stored["hooks"]]

    assert upgrade(2, "nohooks", "checkout") == [False]
    assert "team" not in labels(cluster, "shop-hook", ns)
    # separate: hooks and templates in two runs, both post-rendered.
    assert upgrade(3, "separate", "billing") == [True]
    assert labels(cluster, "shop-hook", ns)["team"] == "billing"


def test_drift_is_judged_against_the_post_rendered_objects(
    cluster: Cluster, operator: OperatorProcess, chart: str
) -> None:
    ns = unique("wasm-drift")
    cluster.kubectl("create", "namespace", ns)
    add_label = push_plugin(cluster.registry, "add-label")
    spec = {
        "chart": {"ref": chart, "insecure": True},
        "interval": "3s",
        "driftDetection": {"mode": "enabled"},
        "postRenderers": [wasm(add_label, "--label", "team=payments")],
    }
    apply_helmrelease(cluster, "shop", ns, spec)
    hr = wait_for_condition(cluster, ns, "shop", "Ready", timeout=90)
    edit = '{"metadata": {"labels": {"team": "edited"}}}'
    cluster.kubectl("patch", "configmap", "shop-config", "-n", ns, "--type=merge", "-p", edit)
    wait_for(
        lambda: labels(cluster, "shop-config", ns).get("team") == "payments",
        timeout=30,
        what="the post-rendered label to be restored",
    )
    hr = get_json(cluster, "helmrelease", "shop", "-n", ns)
    assert condition(hr, "Ready")["status"] == "True"
    assert len(release_secrets(cluster, ns, "shop")) == 1  # corrected, not upgraded
    events = cluster.kubectl("get", "events", "-n", ns).stdout
    assert "DriftCorrected" in events


def test_plugin_failures_have_reasons_write_nothing_and_stall_nobody_else(
    cluster: Cluster, operator: OperatorProcess, chart: str, tmp_path: Path
) -> None:
    ns = unique("wasm-fail")
    cluster.kubectl("create", "namespace", ns)
    registry = cluster.registry
    refs = {name: push_plugin(registry, name) for name in (
        "loop", "allocate", "fail", "malformed", "cluster-role-binding", "add-label",
    )}  # fmt: skip
    missing = refs["add-label"].rsplit("@", 1)[0] + "@sha256:" + "0" * 64
    not_a_plugin = push_plugin_bytes(registry, "add-label", b"not a tarball", "broken")
    cases = {
        "loop": (refs["loop"], "PostRenderTimeout", f"did not finish within {TIMEOUT_SECONDS}"),
        "allocate": (refs["allocate"], "PostRenderLimitExceeded", "memory pages"),
        "fail": (refs["fail"], "PostRenderFailed", "plugin says no"),
        "malformed": (refs["malformed"], "PostRenderFailed", "YAML parse error"),
        "escalate": (refs["cluster-role-binding"], "PostRenderFailed", "is denied"),
        "missing": (missing, "PluginNotFound", "not found"),
        "broken": (not_a_plugin, "InvalidPlugin", "gzip"),
    }
    for name, (ref, _, _) in cases.items():
        apply_helmrelease(
            cluster,
            name,
            ns,
            {"chart": {"ref": chart, "insecure": True}, "postRenderers": [wasm(ref)]},
        )
    # The others keep working meanwhile.
    apply_helmrelease(
        cluster,
        "good",
        ns,
        {"chart": {"ref": chart, "insecure": True}, "postRenderers": [wasm(refs["add-label"])]},
    )
    wait_for_condition(cluster, ns, "good", "Ready", timeout=60)
    for name, (_, reason, words) in cases.items():
        hr = wait_for_condition(
            cluster, ns, name, "Ready", status="False", reason=reason, timeout=90
        )
        message = condition(hr, "Ready")["message"]
        assert words in message, (name, message)
        assert message.startswith("spec.postRenderers[0]"), message
        assert release_secrets(cluster, ns, name) == [], name
        assert cluster.kubectl(
            "get", "configmap", f"{name}-config", "-n", ns, check=False
        ).returncode
    assert cluster.kubectl(
        "get", "clusterrolebinding", "postrenderer-escalation", check=False
    ).returncode
    # A timeout may pass on a less busy machine: retried. A plugin's own error: stalled.
    assert (
        condition(get_json(cluster, "helmrelease", "loop", "-n", ns), "Stalled").get("status")
        != "True"
    )
    assert (
        condition(get_json(cluster, "helmrelease", "fail", "-n", ns), "Stalled")["status"] == "True"
    )


def test_a_failing_post_renderer_leaves_the_deployed_release_alone(
    cluster: Cluster, operator: OperatorProcess, chart: str
) -> None:
    ns = unique("wasm-keep")
    cluster.kubectl("create", "namespace", ns)
    spec: dict[str, Any] = {"chart": {"ref": chart, "insecure": True}}
    apply_helmrelease(cluster, "shop", ns, spec)
    wait_for_condition(cluster, ns, "shop", "Ready", timeout=60)
    before = get_json(cluster, "configmap", "shop-config", "-n", ns)

    failing = push_plugin(cluster.registry, "fail")
    apply_helmrelease(cluster, "shop", ns, {**spec, "postRenderers": [wasm(failing)]})
    wait_for_condition(cluster, ns, "shop", "Ready", status="False", reason="PostRenderFailed")
    assert [s["metadata"]["labels"]["status"] for s in release_secrets(cluster, ns, "shop")] == [
        "deployed"
    ]
    after = get_json(cluster, "configmap", "shop-config", "-n", ns)
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]


# --- kustomize ----------------------------------------------------------------------------

KUSTOMIZE = {
    "patches": [
        {  # strategic merge: a toleration the chart forgot, merged by the list's merge key
            "patch": """apiVersion: apps/v1
kind: Deployment
metadata:
  name: not-used
spec:
  template:
    spec:
      tolerations:
        - key: dedicated
          operator: Equal
          value: web
          effect: NoSchedule
      containers:
        - name: podinfod
          env:
            - name: EXTRA
              value: "1"
""",
            "target": {"kind": "Deployment", "labelSelector": "app.kubernetes.io/name=podinfo"},
        },
        {  # JSON 6902
            "patch": '[{"op": "replace", "path": "/spec/ports/0/port", "value": 8080}]',
            "target": {"kind": "Service"},
        },
        {  # a label every object must carry
            "patch": '[{"op": "add", "path": "/metadata/labels/cost-center", "value": "42"}]',
            "target": {"name": ".*"},
        },
    ],
    "images": [
        {
            "name": "ghcr.io/stefanprodan/podinfo",
            "newName": "mirror.local/podinfo",
            "digest": "sha256:" + "c" * 64,
        }
    ],
}


def without_origin(obj: dict[str, Any]) -> dict[str, Any]:
    labels = obj["metadata"].get("labels", {})
    for key in ("rudder.dev/name", "rudder.dev/namespace"):
        labels.pop(key, None)
    return obj


def test_kustomize_patches_and_images_give_what_the_real_kustomize_gives(
    cluster: Cluster, operator: OperatorProcess, tmp_path: Path
) -> None:
    sys.path.append(str(Path(__file__).parent / "bench"))
    from bench_releases import CHART_VALUES
    from bench_releases import TEMPLATES as PODINFO

    ns = unique("kustomize")
    cluster.kubectl("create", "namespace", ns)
    chart_dir = write_chart(tmp_path, "podinfo", "6.7.0", PODINFO, CHART_VALUES)
    ref = push(cluster.registry, chart_dir)
    spec = {"chart": {"ref": ref, "insecure": True}, "postRenderers": [{"kustomize": KUSTOMIZE}]}
    apply_helmrelease(cluster, "web", ns, spec)
    wait_for_condition(cluster, ns, "web", "Ready", timeout=90)

    # The oracle: the same chart rendered by helm, the same patches through `kustomize build`.
    rendered = cluster.helm("template", "web", str(chart_dir), "-n", ns).stdout
    (tmp_path / "rendered.yaml").write_text(rendered)
    kustomization = {"resources": ["rendered.yaml"], **KUSTOMIZE}
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    built = cluster.run("kustomize", "build", str(tmp_path)).stdout
    expected = {(o["kind"], o["metadata"]["name"]): o for o in yaml.safe_load_all(built) if o}

    stored = cluster.helm("get", "manifest", "web", "-n", ns).stdout
    applied = {
        (o["kind"], o["metadata"]["name"]): without_origin(o)
        for o in yaml.safe_load_all(stored)
        if o
    }
    assert applied == expected
    deployment = get_json(cluster, "deployment", "web", "-n", ns)
    pod = deployment["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == "mirror.local/podinfo@sha256:" + "c" * 64
    assert pod["tolerations"][0]["key"] == "dedicated"
    assert deployment["metadata"]["labels"]["cost-center"] == "42"
    assert get_json(cluster, "service", "web", "-n", ns)["spec"]["ports"][0]["port"] == 8080


def test_a_kustomize_patch_that_cannot_apply_names_the_post_renderer(
    cluster: Cluster, operator: OperatorProcess, chart: str
) -> None:
    ns = unique("kustomize-bad")
    cluster.kubectl("create", "namespace", ns)
    bad = {"patches": [{"patch": '[{"op": "replace", "path": "/nope/0", "value": 1}]',
                        "target": {"kind": "ConfigMap"}}]}  # fmt: skip
    spec = {"chart": {"ref": chart, "insecure": True}, "postRenderers": [{"kustomize": bad}]}
    apply_helmrelease(cluster, "shop", ns, spec)
    hr = wait_for_condition(cluster, ns, "shop", "Ready", status="False", reason="PostRenderFailed")
    assert condition(hr, "Ready")["message"].startswith("spec.postRenderers[0] (kustomize): ")
    assert release_secrets(cluster, ns, "shop") == []
