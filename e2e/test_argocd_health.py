"""deploy/argocd/health.lua, run by a real Lua 5.4 interpreter on HelmRelease objects read
from the local control plane in each state Argo CD should tell apart."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path
from typing import Any

import pytest

from charts import push, write_chart
from conftest import Cluster
from helpers import apply_helmrelease, get_json, unique, wait_for, wait_for_condition
from operator_process import DEPLOY, OperatorProcess

pytestmark = pytest.mark.e2e

HEALTH = DEPLOY / "argocd" / "health.lua"
CONFIG = """apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-config
data:
  a: b
"""
NEVER_READY = """apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}
spec:
  replicas: 1
  selector: {matchLabels: {app: {{ .Release.Name }}}}
  template:
    metadata: {labels: {app: {{ .Release.Name }}}}
    spec:
      containers: [{name: app, image: "example.test/app:fail"}]
"""


def lua(value: Any) -> str:
    """`value` (JSON) as a Lua constructor."""
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value) if math.isfinite(value) else "0"
    if isinstance(value, str):
        # Byte by byte (Lua strings are bytes): three-digit escapes for all but plain ASCII.
        escaped = "".join(
            chr(b) if 32 <= b < 127 and chr(b) not in '"\\' else f"\\{b:03d}"
            for b in value.encode()
        )
        return f'"{escaped}"'
    if isinstance(value, list):
        return "{" + ", ".join(lua(item) for item in value) + "}"
    return "{" + ", ".join(f"[{lua(str(k))}] = {lua(v)}" for k, v in value.items()) + "}"


def health(obj: dict[str, Any]) -> tuple[str, str]:
    program = (
        f"obj = {lua(obj)}\n"
        f"local hs = (function()\n{HEALTH.read_text()}\nend)()\n"
        'io.write(hs.status, "\\t", hs.message)\n'
    )
    result = subprocess.run(
        ["lua5.4", "-"], input=program, capture_output=True, text=True, check=False, timeout=10
    )
    assert result.returncode == 0, result.stderr
    status, _, message = result.stdout.partition("\t")
    return status, message


def test_the_argocd_health_check_on_helmreleases_in_each_state(
    cluster: Cluster, rudder: OperatorProcess, tmp_path: Path
) -> None:
    ns = unique("argocd")
    cluster.kubectl("create", "namespace", ns)
    good = push(cluster.registry, write_chart(tmp_path, "good", "1.0.0", {"c.yaml": CONFIG}, {}))
    slow = push(
        cluster.registry, write_chart(tmp_path, "slow", "1.0.0", {"d.yaml": NEVER_READY}, {})
    )
    missing = good.rsplit("@", 1)[0] + "@sha256:" + "0" * 64

    def chart(ref: str) -> dict[str, Any]:
        return {"chart": {"ref": ref, "insecure": True}}

    apply_helmrelease(cluster, "healthy", ns, chart(good))
    apply_helmrelease(cluster, "waiting", ns, {**chart(slow), "timeout": "10m"})
    apply_helmrelease(cluster, "failing", ns, chart(missing))
    apply_helmrelease(cluster, "loop-a", ns, {**chart(good), "dependsOn": [{"name": "loop-b"}]})
    apply_helmrelease(cluster, "loop-b", ns, {**chart(good), "dependsOn": [{"name": "loop-a"}]})
    apply_helmrelease(cluster, "after", ns, {**chart(good), "dependsOn": [{"name": "ghost"}]})
    apply_helmrelease(cluster, "paused", ns, {**chart(good), "suspend": True})
    apply_helmrelease(cluster, "held", ns, {**chart(good), "install": {"approval": "manual"}})

    states = {
        "healthy": wait_for_condition(cluster, ns, "healthy", "Ready"),
        "waiting": wait_for_condition(cluster, ns, "waiting", "Reconciling", timeout=90),
        "failing": wait_for_condition(
            cluster, ns, "failing", "Ready", status="False", reason="ChartNotFound"
        ),
        "loop-a": wait_for_condition(cluster, ns, "loop-a", "Stalled", reason="DependencyCycle"),
        "after": wait_for_condition(
            cluster, ns, "after", "Ready", status="False", reason="DependencyNotReady"
        ),
        "held": wait_for_condition(
            cluster, ns, "held", "Ready", status="False", reason="ApprovalPending"
        ),
        "paused": wait_for(
            lambda: get_json(cluster, "helmrelease", "paused", "-n", ns).get("status") and
            get_json(cluster, "helmrelease", "paused", "-n", ns),
            timeout=60,
            what="paused to be observed",
        ),
    }  # fmt: skip
    expected = {
        "healthy": "Healthy",
        "waiting": "Progressing",
        "failing": "Degraded",
        "loop-a": "Degraded",
        "after": "Progressing",
        "paused": "Suspended",
        "held": "Suspended",  # waits for a person (rudder.dev/approve)
    }
    seen = {name: health(obj) for name, obj in states.items()}
    assert {name: status for name, (status, _) in seen.items()} == expected, seen
    assert seen["failing"][1].startswith("ChartNotFound: ")
    assert "DependencyCycle" in seen["loop-a"][1]
    assert seen["held"][1].startswith("ApprovalPending: install of held")

    # A generation rudder has not observed yet is Progressing, whatever the conditions say.
    newer = json.loads(json.dumps(states["healthy"]))
    newer["metadata"]["generation"] += 1
    assert health(newer)[0] == "Progressing"
    # Artifacts for whoever changes the script: the objects it was judged on.
    out = Path(__file__).resolve().parent.parent / "artifacts" / "argocd-health"
    out.mkdir(parents=True, exist_ok=True)
    for name, obj in states.items():
        (out / f"{expected[name].lower()}-{name}.json").write_text(json.dumps(obj, indent=2))
