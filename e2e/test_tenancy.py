"""spec.serviceAccountName: every request made for the release impersonates the tenant's
ServiceAccount, so the API server's RBAC bounds what a tenant can do through rudder."""

from __future__ import annotations

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

CONFIG = (
    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-config\n"
    "data:\n  greeting: hello\n"
)
CLUSTER_ROLE = (
    "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n"
    "  name: {{ .Release.Name }}-escalate\nrules: []\n"
)
LOOKUP = """apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-peek
data:
  found: {{ (lookup "v1" "Secret" "kube-system" "") | len | quote }}
"""

TENANT_RBAC = """
apiVersion: v1
kind: ServiceAccount
metadata: {{name: deployer, namespace: {ns}}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: deployer, namespace: {ns}}}
rules:
  - apiGroups: ["*"]
    resources: ["*"]
    verbs: ["*"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: deployer, namespace: {ns}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: deployer}}
subjects: [{{kind: ServiceAccount, name: deployer, namespace: {ns}}}]
"""


@pytest.fixture(scope="module")
def charts(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root: Path = tmp_path_factory.mktemp("tenant-charts")
    return {
        "own": push(cluster.registry, write_chart(root, "own", "1.0.0", {"c.yaml": CONFIG}, {})),
        "escalate": push(
            cluster.registry,
            write_chart(root, "escalate", "1.0.0", {"c.yaml": CONFIG, "r.yaml": CLUSTER_ROLE}, {}),
        ),
        "peek": push(cluster.registry, write_chart(root, "peek", "1.0.0", {"p.yaml": LOOKUP}, {})),
    }


def tenant(cluster: Cluster) -> str:
    ns = unique("tenant")
    cluster.kubectl("create", "namespace", ns)
    cluster.kubectl("apply", "-f", "-", input=TENANT_RBAC.format(ns=ns))
    return ns


def spec(ref: str, **extra: object) -> dict[str, object]:
    return {"chart": {"ref": ref, "insecure": True}, "serviceAccountName": "deployer", **extra}


def test_a_tenant_installs_in_its_namespace_as_itself(
    cluster: Cluster, rudder: OperatorProcess, charts: dict[str, str]
) -> None:
    ns = tenant(cluster)
    apply_helmrelease(cluster, "own", ns, spec(charts["own"]))
    wait_for_condition(cluster, ns, "own", "Ready")
    config = get_json(cluster, "configmap", "own-config", "-n", ns, "--show-managed-fields")
    assert any(e["manager"] == "rudder" for e in config["metadata"]["managedFields"])
    audit = [
        line
        for line in cluster.audit_log.read_text().splitlines()
        if "own-config" in line and '"impersonatedUser"' in line
    ]
    assert any(f"system:serviceaccount:{ns}:deployer" in line for line in audit)


def test_a_tenant_cannot_create_cluster_scoped_objects_or_reach_other_namespaces(
    cluster: Cluster, rudder: OperatorProcess, charts: dict[str, str]
) -> None:
    ns = tenant(cluster)
    apply_helmrelease(cluster, "escalate", ns, spec(charts["escalate"]))
    hr = wait_for_condition(cluster, ns, "escalate", "Ready", status="False", reason="AccessDenied")
    message = condition(hr, "Ready")["message"]
    assert "escalate-escalate" in message
    assert not get_json(cluster, "clusterrole", "escalate-escalate")
    assert not get_json(cluster, "configmap", "escalate-config", "-n", ns)
    assert release_secrets(cluster, ns, "escalate") == []

    other = unique("elsewhere")
    cluster.kubectl("create", "namespace", other)
    apply_helmrelease(cluster, "away", ns, spec(charts["own"], targetNamespace=other))
    hr = wait_for_condition(cluster, ns, "away", "Ready", status="False", reason="AccessDenied")
    assert not get_json(cluster, "configmap", "away-config", "-n", other)


def test_a_tenant_lookup_of_kube_system_secrets_is_denied(
    cluster: Cluster, rudder: OperatorProcess, charts: dict[str, str]
) -> None:
    ns = tenant(cluster)
    apply_helmrelease(cluster, "peek", ns, spec(charts["peek"]))
    hr = wait_for_condition(cluster, ns, "peek", "Ready", status="False", reason="AccessDenied")
    message = condition(hr, "Ready")["message"]
    assert 'cannot list resource "secrets"' in message
    assert "kube-system" in message
    assert not get_json(cluster, "configmap", "peek-peek", "-n", ns)
    assert release_secrets(cluster, ns, "peek") == []


def test_a_denied_release_installs_on_its_own_once_an_admin_grants_the_access(
    cluster: Cluster, rudder: OperatorProcess, charts: dict[str, str]
) -> None:
    """RBAC is fixed beside the HelmRelease, not in it (and an API server that has just
    restarted denies until its authorizer has caught up): AccessDenied is retried."""
    ns = tenant(cluster)
    # The tenant may read ClusterRoles, not write them: the dry-run is what is denied.
    grant = f"later-{ns}"
    cluster.kubectl("create", "clusterrole", grant, "--verb=get,list", "--resource=clusterroles")
    cluster.kubectl(
        "create", "clusterrolebinding", grant, f"--clusterrole={grant}",
        f"--serviceaccount={ns}:deployer",
    )  # fmt: skip
    apply_helmrelease(cluster, "later", ns, spec(charts["escalate"]))
    hr = wait_for_condition(cluster, ns, "later", "Ready", status="False", reason="AccessDenied")
    assert "cannot patch" in condition(hr, "Ready")["message"]
    assert condition(hr, "Stalled").get("status") != "True", hr["status"]

    # The cluster's admin lets the tenant write ClusterRoles; the HelmRelease is untouched.
    wider = cluster.kubectl(
        "create", "clusterrole", grant, "--verb=get,list,patch,create", "--resource=clusterroles",
        "--dry-run=client", "-o", "yaml",
    ).stdout  # fmt: skip
    cluster.kubectl("apply", "-f", "-", input=wider)
    hr = wait_for_condition(cluster, ns, "later", "Ready", reason="InstallSucceeded", timeout=60)
    assert hr["status"]["release"]["revision"] == 1
    assert get_json(cluster, "clusterrole", "later-escalate")
    assert get_json(cluster, "configmap", "later-config", "-n", ns)
