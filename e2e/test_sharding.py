"""Sharding: two operator instances on disjoint label selectors split the HelmReleases,
filtered by the API server, so neither lists nor acts on the other's."""

from __future__ import annotations

from pathlib import Path

import pytest

from audit import now, requests, settle
from charts import push, write_chart
from conftest import Cluster
from helpers import get_json, helmrelease, unique, wait_for_condition
from operator_process import OperatorProcess, service_account_kubeconfig

pytestmark = pytest.mark.e2e

CONFIG = (
    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-config\n"
    "data:\n  greeting: hello\n"
)


def labelled(name: str, ns: str, ref: str, shard: str) -> str:
    text = helmrelease(name, ns, {"chart": {"ref": ref, "insecure": True}})
    return text.replace("metadata:\n", f"metadata:\n  labels:\n    shard: {shard}\n", 1)


def test_two_instances_on_disjoint_selectors(
    cluster: Cluster, rudder: OperatorProcess, tmp_path: Path
) -> None:
    # The session's operator serves everything; stop it so only the shards run.
    rudder.stop()
    kubectl = [str(cluster.tools / "kubectl"), f"--kubeconfig={cluster.kubeconfig}"]
    kubeconfig = service_account_kubeconfig(kubectl, cluster.kubeconfig, tmp_path / "kc")
    shards = {
        shard: OperatorProcess(kubeconfig, tmp_path / shard, [f"--selector=shard={shard}"])
        for shard in ("a", "b")
    }
    ref = push(cluster.registry, write_chart(tmp_path, "shard", "1.0.0", {"c.yaml": CONFIG}, {}))
    ns = unique("shards")
    cluster.kubectl("create", "namespace", ns)
    started = now()
    try:
        for process in shards.values():
            process.start()
        for name, shard in (("one", "a"), ("two", "b"), ("three", "a")):
            cluster.kubectl("apply", "-f", "-", input=labelled(name, ns, ref, shard))
        for name in ("one", "two", "three"):
            wait_for_condition(cluster, ns, name, "Ready")
            assert get_json(cluster, "configmap", f"{name}-config", "-n", ns)
        logs = {shard: process.log_path.read_text() for shard, process in shards.items()}
    finally:
        for process in shards.values():
            process.stop()
        ended = now()
        rudder.start()
    assert f"{ns}/one" in logs["a"]
    assert f"{ns}/three" in logs["a"]
    assert f"{ns}/two" not in logs["a"]
    assert f"{ns}/two" in logs["b"]
    assert f"{ns}/one" not in logs["b"]
    assert f"{ns}/three" not in logs["b"]
    settle()
    watched = [
        r.uri
        for r in requests(cluster.audit_log, since=started)
        if r.resource == "helmreleases" and r.verb in ("list", "watch") and r.at < ended
    ]
    assert watched, "no list/watch of HelmReleases seen"
    assert all("labelSelector=shard" in uri for uri in watched), watched
