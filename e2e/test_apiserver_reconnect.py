"""rudder's background watches outlive a kube-apiserver restart, graceful or not.

A SIGKILLed API server cuts every open connection mid-stream: aiohttp then raises errors
that are not OSErrors (ServerDisconnectedError, ClientPayloadError). The watches a running
operator keeps for itself (valuesFrom sources, discovery invalidation) and its leader
election must take that like any other disconnection: the same process, still leading,
reconciles a `valuesFrom` edit promptly and renders with Capabilities that include a CRD
created after the restart. A SIGTERMed API server ends its watches cleanly instead.

The test runs a control plane of its own (the session's must not be restarted under other
tests) and two leader-elected replicas with a renew deadline longer than the restart, so
the leader that recovers is the one that saw the restart, not a fresh standby.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from charts import push, write_chart
from conftest import ARTIFACTS, Cluster
from helpers import apply_helmrelease, get_json, unique, wait_for, wait_for_condition
from localcluster import LocalCluster
from operator_process import OperatorProcess, install_prerequisites, service_account_kubeconfig

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

# How soon after the edit (the API server being back) a valuesFrom change must be released.
RECONCILE_SECONDS = 10.0
# Longer than the API server takes to come back here, so the leader rides the restart out.
ELECTION = ["--leader-elect", "--lease-duration=90s", "--renew-deadline=60s", "--retry-period=2s"]
LEADING = re.compile(r"leader election: (\S+) is the leader")

TEMPLATES = {
    "settings.yaml": """apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-settings
data:
  greeting: {{ .Values.greeting | quote }}
  round: {{ .Values.round | quote }}
""",
    # Rendered only once the API server serves the CRD's kind (a new group per test).
    "gated.yaml": """{{- if .Capabilities.APIVersions.Has (printf "%s/v1/Gadget" .Values.group) }}
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-gated
data:
  group: {{ .Values.group | quote }}
{{- end }}
""",
}
DEFAULTS = {"greeting": "hello", "round": 1, "group": "none.example"}


def gadget_crd(group: str) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"gadgets.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": "gadgets", "singular": "gadget", "kind": "Gadget"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": {"type": "object"}},
                }
            ],
        },
    }


@pytest.fixture(scope="module")
def local() -> Iterator[LocalCluster]:
    directory = Path(tempfile.mkdtemp(prefix="rudder-reconnect-"))
    control_plane = LocalCluster(directory)
    control_plane.start()
    try:
        yield control_plane
    finally:
        control_plane.stop()
        kept = ARTIFACTS / "apiserver-reconnect-logs"
        shutil.rmtree(kept, ignore_errors=True)
        shutil.copytree(control_plane.logs, kept, dirs_exist_ok=True)
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def own_cluster(local: LocalCluster) -> Cluster:
    assert local.state is not None
    cluster = Cluster(local.state)
    install_prerequisites([str(cluster.tools / "kubectl"), f"--kubeconfig={cluster.kubeconfig}"])
    return cluster


@pytest.fixture(scope="module")
def chart_ref(own_cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("reconnect-chart")
    return push(own_cluster.registry, write_chart(root, "reconnect", "1.0.0", TEMPLATES, DEFAULTS))


def configmap(ns: str, name: str, values: str) -> str:
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": ns},
            "data": {"values.yaml": values},
        }
    )


def revision(cluster: Cluster, ns: str, name: str) -> int:
    hr = get_json(cluster, "helmrelease", name, "-n", ns)
    return int(hr.get("status", {}).get("release", {}).get("revision") or 0)


def leader_identity(replica: OperatorProcess) -> str | None:
    found = LEADING.findall(replica.log_path.read_text(errors="replace"))
    return found[-1] if found else None


def lease_holder(cluster: Cluster, lease: str) -> str:
    obj = get_json(cluster, "lease", lease, "-n", "rudder-system")
    return str(obj.get("spec", {}).get("holderIdentity") or "")


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["sigkill", "sigterm"])
def test_watches_and_election_survive_an_apiserver_restart(
    local: LocalCluster, own_cluster: Cluster, chart_ref: str, tmp_path: Path, sig: int
) -> None:
    cluster = own_cluster
    ns = unique(f"reconnect-{signal.Signals(sig).name.lower()}")
    group = f"{ns}.example.test"
    lease = f"reconnect-{ns}"
    kubectl = [str(cluster.tools / "kubectl"), f"--kubeconfig={cluster.kubeconfig}"]
    kubeconfig = service_account_kubeconfig(kubectl, cluster.kubeconfig, tmp_path / "kc")
    args = [*ELECTION, f"--leader-election-id={lease}", f"--namespace={ns}"]
    replicas = [
        OperatorProcess(kubeconfig, tmp_path / "first", args),
        OperatorProcess(kubeconfig, tmp_path / "second", args),
    ]
    cluster.kubectl("create", "namespace", ns)
    cluster.kubectl("apply", "-f", "-", input=configmap(ns, "common", "greeting: before\n"))
    spec = {
        "chart": {"ref": chart_ref, "insecure": True},
        "interval": "10m",  # nothing but the watches can make rudder look again in time
        "timeout": "60s",
        "valuesFrom": [{"kind": "ConfigMap", "name": "common"}],
        "values": {"round": 1, "group": group},
    }
    try:
        for replica in replicas:
            replica.start()
        identity = wait_for(lambda: lease_holder(cluster, lease), what="a leader")
        leader: OperatorProcess = wait_for(
            lambda: next((r for r in replicas if leader_identity(r) == identity), None),
            what=f"the replica that logged {identity} as leader",
        )
        apply_helmrelease(cluster, "app", ns, spec)
        wait_for_condition(cluster, ns, "app", "Ready", reason="InstallSucceeded", timeout=90)
        assert get_json(cluster, "configmap", "app-gated", "-n", ns) == {}

        started = time.monotonic()
        local.restart("kube-apiserver", sig=sig)
        back = time.monotonic()
        print(f"\n[{ns}] kube-apiserver down and back in {back - started:.1f}s")

        problems: list[str] = []
        # (a) A valuesFrom edit is released promptly by the process that saw the restart.
        cluster.kubectl("apply", "-f", "-", input=configmap(ns, "common", "greeting: after\n"))
        edited = time.monotonic()
        try:
            wait_for(
                lambda: revision(cluster, ns, "app") >= 2,
                timeout=RECONCILE_SECONDS,
                interval=0.2,
                what="revision 2 after the ConfigMap edit",
            )
            print(f"[{ns}] ConfigMap edit -> revision 2 in {time.monotonic() - edited:.1f}s")
            settings = get_json(cluster, "configmap", "app-settings", "-n", ns)
            if settings.get("data", {}).get("greeting") != "after":
                problems.append(f"(a) revision 2 does not carry the edit: {settings.get('data')}")
        except AssertionError as error:
            problems.append(f"(a) {error}")

        # (b) A CRD created after the restart is in the Capabilities of the next render.
        cluster.kubectl("apply", "-f", "-", input=json.dumps(gadget_crd(group)))
        cluster.kubectl(
            "wait", "--for=condition=Established", "--timeout=60s", f"crd/gadgets.{group}"
        )
        wait_for(
            lambda: (
                cluster.kubectl("get", "--raw", f"/apis/{group}/v1", check=False).returncode == 0
            ),
            what=f"{group}/v1 in discovery",
        )
        apply_helmrelease(cluster, "app", ns, {**spec, "values": {"round": 2, "group": group}})
        try:
            wait_for_condition(cluster, ns, "app", "Ready", reason="UpgradeSucceeded", timeout=30)
            settings = get_json(cluster, "configmap", "app-settings", "-n", ns)
            if settings.get("data", {}).get("round") != "2":
                problems.append(f"(b) the new generation was not released: {settings.get('data')}")
            elif get_json(cluster, "configmap", "app-gated", "-n", ns) == {}:
                problems.append(f"(b) the upgrade did not render with {group}/v1/Gadget")
        except AssertionError as error:
            problems.append(f"(b) {error}")

        # (c) Nobody crashed, and the leader is still the one from before the restart.
        for replica in replicas:
            assert replica.process is not None
            if replica.process.poll() is not None:
                problems.append(
                    f"(c) {replica.workdir.name} exited with {replica.process.returncode}:\n"
                    + replica.tail(25)
                )
        if lease_holder(cluster, lease) != identity or leader_identity(leader) != identity:
            problems.append(f"(c) {identity} no longer holds lease {lease}")

        assert not problems, "\n".join(problems) + "\nleader log:\n" + leader.tail(40)
    finally:
        for replica in replicas:
            replica.stop()
            ARTIFACTS.mkdir(exist_ok=True)
            name = f"operator-reconnect-{signal.Signals(sig).name.lower()}-{replica.workdir.name}"
            if replica.log_path.exists():
                shutil.copy(replica.log_path, ARTIFACTS / f"{name}.log")
        subprocess.run(
            [*kubectl, "delete", "crd", f"gadgets.{group}", "--ignore-not-found", "--wait=false"],
            capture_output=True,
            check=False,
        )
