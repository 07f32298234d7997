"""Charts render against the live cluster, not Helm's offline defaults: `.Capabilities`
follows the CRDs the cluster serves and the apiserver's version, and `lookup` reads live
objects (the classic keep-the-generated-password pattern)."""

from __future__ import annotations

import base64
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from charts import push, write_chart
from conftest import Cluster
from helpers import apply_helmrelease, get_json, unique, wait_for, wait_for_condition
from operator_process import OperatorProcess

pytestmark = pytest.mark.e2e

# A group of its own per run: its CRD is installed and removed by the test, never by the chart.
GROUP = f"caps{uuid.uuid4().hex[:6]}.test.rudder.dev"
GADGET_CRD = f"""apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: gadgets.{GROUP}
spec:
  group: {GROUP}
  scope: Namespaced
  names: {{plural: gadgets, singular: gadget, kind: Gadget, listKind: GadgetList}}
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          x-kubernetes-preserve-unknown-fields: true
"""

TEMPLATES = {
    "caps.yaml": f"""apiVersion: v1
kind: ConfigMap
metadata:
  name: {{{{ .Release.Name }}}}-caps
data:
  bump: {{{{ .Values.bump | quote }}}}
  kubeVersion: {{{{ .Capabilities.KubeVersion.GitVersion | quote }}}}
  hasGadget: {{{{ .Capabilities.APIVersions.Has "{GROUP}/v1/Gadget" | quote }}}}
""",
    # Rendered only where the cluster serves the kind, as charts do for ServiceMonitors.
    "gadget.yaml": f"""{{{{- if .Capabilities.APIVersions.Has "{GROUP}/v1/Gadget" }}}}
apiVersion: {GROUP}/v1
kind: Gadget
metadata:
  name: {{{{ .Release.Name }}}}-gadget
spec:
  size: {{{{ .Values.bump }}}}
{{{{- end }}}}
""",
    # The classic pattern: generate a password once, then keep whatever the cluster holds.
    "auth.yaml": """{{- $name := printf "%s-auth" .Release.Name }}
{{- $existing := lookup "v1" "Secret" .Release.Namespace $name }}
apiVersion: v1
kind: Secret
metadata:
  name: {{ $name }}
type: Opaque
data:
  {{- if $existing }}
  password: {{ index $existing.data "password" | quote }}
  {{- else }}
  password: {{ randAlphaNum 24 | b64enc | quote }}
  {{- end }}
""",
}


@pytest.fixture(scope="module")
def chart(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("caps-chart")
    directory = write_chart(root, "caps", "1.0.0", TEMPLATES, {"bump": 1})
    return {"ref": push(cluster.registry, directory), "dir": str(directory)}


def spec(ref: str, bump: int) -> dict[str, Any]:
    return {"chart": {"ref": ref, "insecure": True}, "values": {"bump": bump}, "timeout": "60s"}


def caps(cluster: Cluster, ns: str, release: str) -> dict[str, str]:
    data: dict[str, str] = get_json(cluster, "configmap", f"{release}-caps", "-n", ns)["data"]
    return data


def upgrade_to(cluster: Cluster, ns: str, name: str, ref: str, bump: int) -> dict[str, Any]:
    """Change the spec (a value bump) and wait until rudder deployed that revision."""
    apply_helmrelease(cluster, name, ns, spec(ref, bump))
    hr = wait_for_condition(cluster, ns, name, "Ready", reason="UpgradeSucceeded", timeout=90)
    assert caps(cluster, ns, name)["bump"] == str(bump)
    return hr


def served(cluster: Cluster) -> bool:
    """Whether discovery lists the Gadget kind (what any client's discovery would see)."""
    listed = cluster.kubectl("api-resources", f"--api-group={GROUP}", "-o", "name", check=False)
    return listed.returncode == 0 and f"gadgets.{GROUP}" in listed.stdout


def test_api_versions_follow_the_crds_the_cluster_serves(
    cluster: Cluster, rudder: OperatorProcess, chart: dict[str, str]
) -> None:
    ns = unique("caps")
    apply_helmrelease(cluster, "caps", ns, spec(chart["ref"], 1))
    wait_for_condition(cluster, ns, "caps", "Ready", reason="InstallSucceeded", timeout=90)
    assert caps(cluster, ns, "caps")["hasGadget"] == "false"
    assert "kind: Gadget" not in cluster.helm("get", "manifest", "caps", "-n", ns).stdout

    # The CRD appears: the next render sees it (Helm's defaults never contain this group).
    cluster.kubectl("apply", "-f", "-", input=GADGET_CRD)
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/gadgets.{GROUP}")
    wait_for(lambda: served(cluster), timeout=30, what="discovery to serve Gadget")
    hr = upgrade_to(cluster, ns, "caps", chart["ref"], 2)
    assert hr["status"]["release"]["revision"] == 2
    assert caps(cluster, ns, "caps")["hasGadget"] == "true"
    gadget = get_json(cluster, f"gadgets.{GROUP}", "caps-gadget", "-n", ns)
    assert gadget, "the Gadget the chart renders once the CRD is served was not applied"
    assert gadget["spec"]["size"] == 2
    assert "kind: Gadget" in cluster.helm("get", "manifest", "caps", "-n", ns).stdout

    # The CRD goes away: the next render no longer has it, and the upgrade still succeeds.
    cluster.kubectl("delete", "crd", f"gadgets.{GROUP}", "--timeout=60s")
    wait_for(lambda: not served(cluster), timeout=30, what="discovery to drop Gadget")
    hr = upgrade_to(cluster, ns, "caps", chart["ref"], 3)
    assert hr["status"]["release"]["revision"] == 3
    assert caps(cluster, ns, "caps")["hasGadget"] == "false"
    assert "kind: Gadget" not in cluster.helm("get", "manifest", "caps", "-n", ns).stdout
    history = json.loads(cluster.helm("history", "caps", "-n", ns, "-o", "json").stdout)
    assert [(h["revision"], h["status"]) for h in history] == [
        (1, "superseded"), (2, "superseded"), (3, "deployed"),
    ]  # fmt: skip


def test_kube_version_is_the_apiservers(
    cluster: Cluster, rudder: OperatorProcess, chart: dict[str, str], tmp_path: Path
) -> None:
    server = json.loads(cluster.kubectl("version", "-o", "json").stdout)["serverVersion"]
    # The test means something only if Helm's offline default differs from the server's.
    offline = cluster.helm("template", "caps", chart["dir"]).stdout
    assert f'kubeVersion: "{server["gitVersion"]}"' not in offline, (
        "Helm's default KubeVersion equals the server's: this test could not fail"
    )

    ns = unique("kubever")
    apply_helmrelease(cluster, "kv", ns, spec(chart["ref"], 1))
    wait_for_condition(cluster, ns, "kv", "Ready", timeout=90)
    assert caps(cluster, ns, "kv")["kubeVersion"] == server["gitVersion"]
    assert (
        f'kubeVersion: "{server["gitVersion"]}"'
        in cluster.helm("get", "manifest", "kv", "-n", ns).stdout
    )


def test_lookup_keeps_a_generated_password_across_upgrades(
    cluster: Cluster, rudder: OperatorProcess, chart: dict[str, str]
) -> None:
    ns = unique("lookup")
    apply_helmrelease(cluster, "db", ns, spec(chart["ref"], 1))
    wait_for_condition(cluster, ns, "db", "Ready", reason="InstallSucceeded", timeout=90)
    first = get_json(cluster, "secret", "db-auth", "-n", ns)["data"]["password"]
    assert len(base64.b64decode(first)) == 24

    for bump, revision in ((2, 2), (3, 3)):
        hr = upgrade_to(cluster, ns, "db", chart["ref"], bump)
        assert hr["status"]["release"]["revision"] == revision
        current = get_json(cluster, "secret", "db-auth", "-n", ns)["data"]["password"]
        assert current == first, f"revision {revision} generated a new password"
        # The stored revision rendered the kept password too (lookup found the live Secret).
        manifest = cluster.helm("get", "manifest", "db", "-n", ns).stdout
        assert f'password: "{first}"' in manifest
