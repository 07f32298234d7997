"""The local control plane itself: real binaries, real scheduling through kwok, a real
registry. Later tests rely on each of these facts."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import helm_python
import oras.provider
import pytest

from conftest import Cluster

pytestmark = pytest.mark.e2e


def test_both_helm_clis_and_kubectl_answer(cluster: Cluster) -> None:
    helm4 = cluster.helm("version", "--short").stdout
    helm3 = cluster.helm3("version", "--short").stdout
    assert helm4.startswith("v4.2.3"), helm4
    assert helm3.startswith("v3."), helm3
    versions = json.loads(cluster.kubectl("version", "-o", "json").stdout)
    assert versions["serverVersion"]["gitVersion"] == versions["clientVersion"]["gitVersion"]


def test_apiserver_enforces_rbac(cluster: Cluster) -> None:
    denied = cluster.kubectl(
        "auth",
        "can-i",
        "create",
        "secrets",
        "--as=system:serviceaccount:default:default",
        check=False,
    )
    assert denied.stdout.strip() == "no"


def _wait_for(predicate: object, timeout: float = 60, interval: float = 0.5) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError("condition not reached within the timeout")


WORKLOADS = """
apiVersion: v1
kind: Namespace
metadata: {name: kwok-check}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: kwok-check}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: "nginx:1.27"}]}
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db, namespace: kwok-check}
spec:
  replicas: 2
  serviceName: db
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec: {containers: [{name: db, image: "postgres:17"}]}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent, namespace: kwok-check}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec: {containers: [{name: agent, image: "busybox:1.37"}]}
---
apiVersion: batch/v1
kind: Job
metadata: {name: once, namespace: kwok-check}
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers: [{name: once, image: "busybox:1.37"}]
"""


def test_kwok_makes_workload_pods_ready_and_jobs_complete(cluster: Cluster) -> None:
    cluster.kubectl("apply", "-f", "-", input=WORKLOADS)

    def ready(kind: str, name: str, field: str, want: int) -> bool:
        out = cluster.kubectl(
            "get", kind, name, "-n", "kwok-check", "-o", f"jsonpath={{{field}}}", check=False
        ).stdout
        return out.strip().isdigit() and int(out) >= want

    _wait_for(lambda: ready("deployment", "web", ".status.readyReplicas", 2))
    _wait_for(lambda: ready("statefulset", "db", ".status.readyReplicas", 2))
    _wait_for(lambda: ready("daemonset", "agent", ".status.numberReady", 3))
    _wait_for(lambda: ready("job", "once", ".status.succeeded", 1))
    cluster.kubectl("wait", "--for=condition=Available", "deployment/web", "-n", "kwok-check")
    cluster.kubectl("delete", "namespace", "kwok-check", "--wait=false")


def test_failing_image_never_becomes_ready(cluster: Cluster) -> None:
    cluster.kubectl("create", "namespace", "kwok-fail")
    cluster.kubectl("create", "deployment", "broken", "--image=nginx:fail", "-n", "kwok-fail")
    _wait_for(
        lambda: (
            "CrashLoopBackOff"
            in cluster.kubectl("get", "pods", "-n", "kwok-fail", "-o", "json").stdout
        )
    )
    ready = cluster.kubectl(
        "get", "deployment", "broken", "-n", "kwok-fail", "-o", "jsonpath={.status.readyReplicas}"
    ).stdout
    assert ready in ("", "0")
    cluster.kubectl("delete", "namespace", "kwok-fail", "--wait=false")


def test_chart_pushed_with_the_sdk_pulls_back_by_digest(cluster: Cluster, tmp_path: Path) -> None:
    helm_python.Chart.create("hello", tmp_path)
    archive = helm_python.package(tmp_path / "hello", destination=tmp_path)
    with helm_python.RegistryClient(plain_http=True) as client:
        client.push(archive, f"oci://{cluster.registry}/charts")

    registry = oras.provider.Registry(hostname=cluster.registry, insecure=True)
    container = f"{cluster.registry}/charts/hello:0.1.0"
    manifest = registry.get_manifest(container)
    assert manifest["config"]["mediaType"] == "application/vnd.cncf.helm.config.v1+json"
    (layer,) = manifest["layers"]
    assert layer["mediaType"] == "application/vnd.cncf.helm.chart.content.v1.tar+gzip"

    # Resolve the tag to the manifest digest, then fetch by that digest and check the bytes.
    head = registry.do_request(
        f"http://{cluster.registry}/v2/charts/hello/manifests/0.1.0",
        "HEAD",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
    )
    digest = head.headers["Docker-Content-Digest"]
    by_digest = registry.do_request(
        f"http://{cluster.registry}/v2/charts/hello/manifests/{digest}",
        "GET",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
    )
    assert "sha256:" + hashlib.sha256(by_digest.content).hexdigest() == digest
    blob = registry.do_request(
        f"http://{cluster.registry}/v2/charts/hello/blobs/{layer['digest']}", "GET"
    )
    assert "sha256:" + hashlib.sha256(blob.content).hexdigest() == layer["digest"]
    assert blob.content == Path(archive).read_bytes()
