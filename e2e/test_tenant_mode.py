"""Tenant mode: rudder without deploy/03-rbac-apply-any.yaml and with
--default-service-account; it can install what a tenant may install, nothing more."""

from __future__ import annotations

from pathlib import Path

import pytest

import audit
from charts import push, write_chart
from conftest import Cluster
from helpers import apply_helmrelease, get_json, unique, wait_for_condition
from operator_process import DEPLOY, OperatorProcess, service_account_kubeconfig
from test_tenancy import CLUSTER_ROLE, CONFIG, TENANT_RBAC

pytestmark = pytest.mark.e2e


def test_the_operator_in_tenant_mode(
    cluster: Cluster, rudder: OperatorProcess, tmp_path: Path
) -> None:
    rudder.stop()
    any_rbac = str(DEPLOY / "03-rbac-apply-any.yaml")
    cluster.kubectl("delete", "-f", any_rbac)
    kubectl = [str(cluster.tools / "kubectl"), f"--kubeconfig={cluster.kubeconfig}"]
    kubeconfig = service_account_kubeconfig(kubectl, cluster.kubeconfig, tmp_path / "kc")
    tenant_mode = OperatorProcess(
        kubeconfig,
        tmp_path / "tenant-mode",
        ["--default-service-account=deployer", "--no-cross-namespace-refs"],
    )
    ns = unique("tenant-mode")
    since = audit.now()
    try:
        tenant_mode.start()
        cluster.kubectl("create", "namespace", ns)
        cluster.kubectl("apply", "-f", "-", input=TENANT_RBAC.format(ns=ns))
        own = push(cluster.registry, write_chart(tmp_path, "own", "1.0.0", {"c.yaml": CONFIG}, {}))
        escalate = push(
            cluster.registry,
            write_chart(tmp_path, "esc", "1.0.0", {"c.yaml": CONFIG, "r.yaml": CLUSTER_ROLE}, {}),
        )
        apply_helmrelease(cluster, "own", ns, {"chart": {"ref": own, "insecure": True}})
        wait_for_condition(cluster, ns, "own", "Ready")
        assert get_json(cluster, "configmap", "own-config", "-n", ns)

        apply_helmrelease(cluster, "esc", ns, {"chart": {"ref": escalate, "insecure": True}})
        wait_for_condition(cluster, ns, "esc", "Ready", status="False", reason="AccessDenied")
        assert not get_json(cluster, "clusterrole", "esc-escalate")

        # --no-cross-namespace-refs: a HelmRelease cannot aim outside its namespace.
        apply_helmrelease(
            cluster,
            "away",
            ns,
            {"chart": {"ref": own, "insecure": True}, "targetNamespace": "kube-system"},
        )
        hr = wait_for_condition(cluster, ns, "away", "Stalled", reason="InvalidSpec")
        assert "spec.targetNamespace" in hr["status"]["conditions"][0]["message"]

        # Deletion too goes out as the tenant: rudder itself touches only the HelmRelease
        # (object, status, finalizer) and its events in the tenant's namespace.
        cluster.kubectl("delete", "helmrelease", "own", "-n", ns)
        assert not get_json(cluster, "configmap", "own-config", "-n", ns)
        audit.settle()
        as_rudder = [
            f"{r.verb} {r.resource}/{r.name}"
            for r in audit.requests(cluster.audit_log, since=since, impersonated=False)
            if r.namespace == ns and r.resource not in ("helmreleases", "events")
        ]
        assert as_rudder == []
    finally:
        # Uninstall under tenant mode: left behind, these HelmReleases would be served by
        # the next operator with its own rights.
        cluster.kubectl("delete", "namespace", ns, "--timeout=60s", check=False)
        tenant_mode.stop()
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", any_rbac)
        rudder.start()
