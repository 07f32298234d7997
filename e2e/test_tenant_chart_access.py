"""Tenant mode and the shared chart cache: a chart one tenant pulled with its registry
credentials is not served to another tenant that merely names its digest.

The cache is keyed by digest, so without a check a tenant without credentials for a
private repository would get its charts from rudder's cache just by naming a digest.
"""

from __future__ import annotations

import base64
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

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
from operator_process import DEPLOY, OperatorProcess, service_account_kubeconfig
from test_tenancy import TENANT_RBAC

# The throwaway-registry helpers of the unit tests also drive the cluster's registries.
sys.path.append(str(Path(__file__).resolve().parent.parent / "tests"))
from registry_fixture import RegistryApi, docker_config, push_chart, push_plugin, write_chart
from wasm_plugins import archive

pytestmark = pytest.mark.e2e

WRONG_PASSWORD = "not-the-registry-password"


@contextmanager
def tenant_mode(cluster: Cluster, rudder: OperatorProcess, workdir: Path) -> Iterator[None]:
    """The session's operator replaced by one in tenant mode, without the apply-any RBAC."""
    rudder.stop()
    any_rbac = str(DEPLOY / "03-rbac-apply-any.yaml")
    cluster.kubectl("delete", "-f", any_rbac)
    kubectl = [str(cluster.tools / "kubectl"), f"--kubeconfig={cluster.kubeconfig}"]
    kubeconfig = service_account_kubeconfig(kubectl, cluster.kubeconfig, workdir / "kc")
    operator = OperatorProcess(
        kubeconfig, workdir / "tenant-mode", ["--default-service-account=deployer"]
    )
    try:
        operator.start()
        yield
    finally:
        operator.stop()
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", any_rbac)
        rudder.start()


def tenant(cluster: Cluster, prefix: str) -> str:
    ns = unique(prefix)
    cluster.kubectl("create", "namespace", ns)
    cluster.kubectl("apply", "-f", "-", input=TENANT_RBAC.format(ns=ns))
    return ns


def registry_secret(cluster: Cluster, namespace: str, password: str) -> None:
    config = docker_config(cluster.auth_registry, cluster.auth_user, password)
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/dockerconfigjson",
        "metadata": {"name": "regcred", "namespace": namespace},
        "data": {".dockerconfigjson": base64.b64encode(config).decode()},
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(secret))


def settled(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    """The HelmRelease once its current generation is Ready or failed on the chart."""

    def probe() -> dict[str, Any] | None:
        hr = get_json(cluster, "helmrelease", name, "-n", namespace)
        ready = condition(hr, "Ready")
        observed = hr.get("status", {}).get("observedGeneration")
        if observed != hr.get("metadata", {}).get("generation"):
            return None
        if ready.get("status") == "True" or ready.get("reason", "").startswith(
            ("Registry", "Chart")
        ):
            return hr
        return None

    result: dict[str, Any] = wait_for(probe, timeout=90, what=f"{namespace}/{name} to settle")
    return result


def test_a_cached_private_chart_is_not_served_to_a_tenant_without_access(
    cluster: Cluster, rudder: OperatorProcess, tmp_path: Path
) -> None:
    private = RegistryApi(
        cluster.auth_registry, user=cluster.auth_user, password=cluster.auth_password
    )
    ref = push_chart(private, write_chart(tmp_path, unique("private"), "1.0.0"))
    digest = ref.rsplit("@", 1)[1]
    with tenant_mode(cluster, rudder, tmp_path):
        owner, other = tenant(cluster, "chart-owner"), tenant(cluster, "chart-other")
        try:
            registry_secret(cluster, owner, cluster.auth_password)
            chart = {"ref": ref, "insecure": True}
            apply_helmrelease(
                cluster, "mine", owner, {"chart": {**chart, "secretRef": {"name": "regcred"}}}
            )
            wait_for_condition(cluster, owner, "mine", "Ready", timeout=90)  # now cached

            # Tenant B: the same digest with no credentials, with a wrong password, and
            # under a repository of the open registry it can read (the cache is by digest).
            registry_secret(cluster, other, WRONG_PASSWORD)
            elsewhere = f"oci://{cluster.registry}/charts/anything@{digest}"
            attempts = {
                "anonymous": ({"chart": chart}, "RegistryAuthFailed"),
                "guessed": (
                    {"chart": {**chart, "secretRef": {"name": "regcred"}}},
                    "RegistryAuthFailed",
                ),
                "elsewhere": ({"chart": {"ref": elsewhere, "insecure": True}}, "ChartNotFound"),
            }
            for name, (spec, _) in attempts.items():
                apply_helmrelease(cluster, name, other, spec)
            for name, (_, reason) in attempts.items():
                hr = settled(cluster, other, name)
                ready = condition(hr, "Ready")
                assert (ready["status"], ready["reason"]) == ("False", reason), ready
                assert condition(hr, "Stalled").get("status") != "True"  # retried: access may come
                assert WRONG_PASSWORD not in json.dumps(hr)
                assert cluster.auth_password not in json.dumps(hr)
                assert not release_secrets(cluster, other, name)
                assert not get_json(cluster, "configmap", name, "-n", other)
            assert (
                "secretRef" in condition(settled(cluster, other, "anonymous"), "Ready")["message"]
            )

            # Tenant A is untouched and still gets its chart.
            mine = get_json(cluster, "helmrelease", "mine", "-n", owner)
            assert condition(mine, "Ready")["status"] == "True"
            assert mine["status"]["chart"]["digest"] == digest
            assert get_json(cluster, "configmap", "mine", "-n", owner)
        finally:
            for ns in (owner, other):
                cluster.kubectl("delete", "namespace", ns, "--timeout=60s", check=False)


def test_a_private_post_renderer_plugin_needs_the_tenants_own_credentials(
    cluster: Cluster, rudder: OperatorProcess, tmp_path: Path
) -> None:
    """Plugins go through the same gate as charts: pulled with the HelmRelease's own
    secretRef, and a cached plugin is not served to a tenant the registry refuses."""
    private = RegistryApi(
        cluster.auth_registry, user=cluster.auth_user, password=cluster.auth_password
    )
    plugin = push_plugin(private, "add-label", archive("add-label").read_bytes(), "0.1.0")
    chart = push_chart(
        RegistryApi(cluster.registry), write_chart(tmp_path, unique("open"), "1.0.0")
    )
    with tenant_mode(cluster, rudder, tmp_path):
        owner, other = tenant(cluster, "plugin-owner"), tenant(cluster, "plugin-other")
        try:
            registry_secret(cluster, owner, cluster.auth_password)
            wasm = {"ref": plugin, "insecure": True, "args": ["--label", "team=owner"]}
            spec = {"chart": {"ref": chart, "insecure": True}}
            with_secret = {
                **spec,
                "postRenderers": [{"wasm": {**wasm, "secretRef": {"name": "regcred"}}}],
            }
            apply_helmrelease(cluster, "mine", owner, with_secret)
            wait_for_condition(cluster, owner, "mine", "Ready", timeout=90)  # now cached
            labels = get_json(cluster, "configmap", "mine", "-n", owner)["metadata"]["labels"]
            assert labels["team"] == "owner"

            registry_secret(cluster, other, WRONG_PASSWORD)
            apply_helmrelease(cluster, "guessed", other, with_secret)
            apply_helmrelease(
                cluster, "anonymous", other, {**spec, "postRenderers": [{"wasm": wasm}]}
            )
            for attempt in ("guessed", "anonymous"):
                hr = settled(cluster, other, attempt)
                ready = condition(hr, "Ready")
                assert (ready["status"], ready["reason"]) == ("False", "RegistryAuthFailed"), ready
                assert ready["message"].startswith("spec.postRenderers[0]: "), ready
                assert WRONG_PASSWORD not in json.dumps(hr)
                assert not release_secrets(cluster, other, attempt)
        finally:
            for ns in (owner, other):
                cluster.kubectl("delete", "namespace", ns, "--timeout=60s", check=False)
