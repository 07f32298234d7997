"""rudder installed the way operators are installed: the real helm v4 CLI packages
deploy/chart, pushes it to the local registry and installs it from there into a control
plane of its own; rudder, running as the ServiceAccount the chart made (with the chart's
RBAC, out of cluster: kwok runs no containers), then installs a HelmRelease."""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from charts import app_chart, push
from conftest import Cluster
from helpers import apply_helmrelease, get_json, unique, wait_for_condition
from localcluster import LocalCluster
from operator_process import DEPLOY, OperatorProcess, service_account_kubeconfig

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def bare() -> Iterator[Cluster]:
    """A control plane with nothing of rudder's installed."""
    directory = Path(tempfile.mkdtemp(prefix="rudder-chart-"))
    control_plane = LocalCluster(directory)
    state = control_plane.start()
    try:
        yield Cluster(state)
    finally:
        control_plane.stop()
        shutil.rmtree(directory, ignore_errors=True)


def test_helm_installs_rudder_from_its_chart_and_that_rudder_works(
    bare: Cluster, tmp_path: Path
) -> None:
    packaged = bare.helm("package", str(DEPLOY / "chart"), "-d", str(tmp_path)).stdout
    archive = re.search(r"saved it to: (\S+\.tgz)", packaged)
    assert archive, packaged
    pushed = bare.helm("push", archive.group(1), f"oci://{bare.registry}/charts", "--plain-http")
    digest = re.search(r"Digest: (sha256:[0-9a-f]{64})", pushed.stdout + pushed.stderr)
    assert digest, pushed.stdout + pushed.stderr
    bare.helm(
        "install", "rudder", f"oci://{bare.registry}/charts/rudder@{digest.group(1)}",
        "-n", "rudder-system", "--create-namespace", "--plain-http",
    )  # fmt: skip

    assert "deployed" in bare.helm("status", "rudder", "-n", "rudder-system").stdout
    assert get_json(bare, "crd", "helmreleases.rudder.dev")["spec"]["group"] == "rudder.dev"
    deployment = get_json(bare, "deployment", "rudder", "-n", "rudder-system")
    assert "--leader-elect" in deployment["spec"]["template"]["spec"]["containers"][0]["args"]

    kubectl = [str(bare.tools / "kubectl"), f"--kubeconfig={bare.kubeconfig}"]
    kubeconfig = service_account_kubeconfig(kubectl, bare.kubeconfig, tmp_path / "kc")
    operator = OperatorProcess(kubeconfig, tmp_path / "operator", ["--leader-elect"])
    operator.start()
    try:
        ns = unique("from-chart")
        bare.kubectl("create", "namespace", ns)
        ref = push(bare.registry, app_chart(tmp_path / "app", "1.0.0"))
        apply_helmrelease(bare, "shop", ns, {"chart": {"ref": ref, "insecure": True}})
        wait_for_condition(bare, ns, "shop", "Ready", timeout=90)
    finally:
        operator.stop()
