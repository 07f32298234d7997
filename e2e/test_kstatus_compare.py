"""rudder's kstatus port agrees with Helm's Go kstatus on every object, status and message.

The Go side is e2e/kstatus-compare (status.Compute of github.com/fluxcd/cli-utils at the
version Helm v4.2.3 builds with), built once by e2e/build-kstatus-compare.sh. Objects: every
fixture of tests/fixtures/kstatus, then live objects of the local control plane — workloads
read back at many moments of their rollouts (just created, progressing, failed, scaled,
terminating) and everything listable in kube-system, default and cluster-wide.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from rudder.kube.kstatus import compute

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

E2E = Path(__file__).resolve().parent
FIXTURES = E2E.parent / "tests" / "fixtures" / "kstatus"

Obj = dict[str, Any]


@pytest.fixture(scope="module")
def go_kstatus() -> Path:
    """The comparison binary; built on first use (minutes on a cold Go cache), then reused."""
    built = subprocess.run(
        ["bash", str(E2E / "build-kstatus-compare.sh")],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert built.returncode == 0, built.stderr
    return Path(built.stdout.strip().splitlines()[-1])


def go_verdicts(binary: Path, objects: list[Obj]) -> list[Obj]:
    completed = subprocess.run(
        [str(binary)],
        input=json.dumps(objects),
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    verdicts: list[Obj] = json.loads(completed.stdout)
    assert len(verdicts) == len(objects)
    return verdicts


def python_verdict(obj: Mapping[str, Any], now: datetime) -> Obj:
    result = compute(obj, now=now)
    return {
        "status": str(result.status),
        "message": result.message,
        "conditions": [
            {"type": c.type, "status": c.status, "reason": c.reason, "message": c.message}
            for c in result.conditions
        ],
    }


def disagreements(binary: Path, objects: list[Obj]) -> tuple[list[str], list[Obj]]:
    """Objects on which the two disagree (described), and Go's verdicts for all of them."""
    # A Pod's verdict can depend on the clock (the unschedulable grace period): accept Go's
    # verdict if Python gives it at some instant during the Go run.
    before = datetime.now(UTC)
    verdicts = go_verdicts(binary, objects)
    after = datetime.now(UTC)
    differences = []
    for obj, go in zip(objects, verdicts, strict=True):
        candidates = (python_verdict(obj, before), python_verdict(obj, after))
        if go not in candidates:
            differences.append(
                f"{describe(obj)}\n  go:     {json.dumps(go)}"
                f"\n  python: {json.dumps(candidates[0])}"
            )
    return differences, verdicts


def describe(obj: Mapping[str, Any]) -> str:
    metadata = obj.get("metadata") if isinstance(obj.get("metadata"), Mapping) else {}
    assert isinstance(metadata, Mapping)
    return (
        f"{obj.get('apiVersion')}/{obj.get('kind')} "
        f"{metadata.get('namespace', '')}/{metadata.get('name', '')} "
        f"(resourceVersion {metadata.get('resourceVersion', '-')})"
    )


def test_fixtures_agree(go_kstatus: Path) -> None:
    documents = [
        document
        for path in sorted(FIXTURES.glob("*.yaml"))
        for document in yaml.safe_load_all(path.read_text())
    ]
    comparable = [d["object"] for d in documents if not d.get("go_panics")]
    panicking = [d["object"] for d in documents if d.get("go_panics")]

    differences, _ = disagreements(go_kstatus, comparable)

    assert differences == [], "\n".join(differences)
    # Where Go panics the port answers Unknown instead; check the fixture still panics Go.
    assert [v["status"] for v in go_verdicts(go_kstatus, panicking)] == ["panic"] * len(panicking)


# --- live objects ------------------------------------------------------------------------------

PAUSE = "registry.k8s.io/pause:3.10"


def workloads(namespace: str) -> list[Obj]:
    labels = {"app": "web"}
    pod_spec = {"containers": [{"name": "app", "image": PAUSE}]}

    def deployment(name: str, replicas: int, spec: Obj, **extra: Any) -> Obj:
        return {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": name}},
                "template": {"metadata": {"labels": {"app": name}}, "spec": spec},
                **extra,
            },
        }

    def job(name: str, image: str) -> Obj:
        return {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "backoffLimit": 0,
                "template": {
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [{"name": "job", "image": image}],
                    }
                },
            },
        }

    return [
        deployment("web", 2, pod_spec),
        # kwok keeps ":fail" containers in CrashLoopBackOff; the deadline then passes.
        deployment(
            "broken",
            1,
            {"containers": [{"name": "app", "image": "example.com/app:fail"}]},
            progressDeadlineSeconds=1,
        ),
        deployment("unschedulable", 1, {**pod_spec, "nodeSelector": {"no-such-node": "x"}}),
        {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": {"name": "db", "namespace": namespace},
            "spec": {
                "replicas": 2,
                "serviceName": "db",
                "selector": {"matchLabels": {"app": "db"}},
                "template": {"metadata": {"labels": {"app": "db"}}, "spec": pod_spec},
            },
        },
        {
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "metadata": {"name": "agent", "namespace": namespace},
            "spec": {
                "selector": {"matchLabels": {"app": "agent"}},
                "template": {"metadata": {"labels": {"app": "agent"}}, "spec": pod_spec},
            },
        },
        job("succeeds", PAUSE),
        job("fails", "example.com/job:fail"),
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "data", "namespace": namespace},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web", "namespace": namespace},
            "spec": {"type": "LoadBalancer", "selector": labels, "ports": [{"port": 80}]},
        },
        {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": {"name": "web", "namespace": namespace},
            "spec": {"minAvailable": 1, "selector": {"matchLabels": labels}},
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": "held",
                "namespace": namespace,
                "finalizers": ["kstatus.rudder.dev/hold"],
            },
            "data": {"a": "b"},
        },
    ]


def crd(group: str) -> Obj:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"widgets.{group}"},
        "spec": {
            "group": group,
            "names": {"kind": "Widget", "plural": "widgets", "singular": "widget"},
            "scope": "Namespaced",
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


def items(output: str) -> list[Obj]:
    """The objects in kubectl's JSON output: one object, a List, or several of either."""
    decoder = json.JSONDecoder()
    found: list[Obj] = []
    position = 0
    while output[position:].strip():
        document, position = decoder.raw_decode(
            output, len(output) - len(output[position:].lstrip())
        )
        found.extend(document.get("items", [document]))
    return found


class Snapshots:
    """Distinct versions of the objects read from the cluster, in the order first seen."""

    def __init__(self) -> None:
        self.objects: list[Obj] = []
        self._seen: set[tuple[str, str]] = set()

    def add(self, objects: list[Obj]) -> None:
        for obj in objects:
            metadata = obj.get("metadata", {})
            key = (metadata.get("uid", ""), metadata.get("resourceVersion", ""))
            if key not in self._seen:
                self._seen.add(key)
                self.objects.append(obj)


WORKLOAD_KINDS = "deployments,replicasets,pods,statefulsets,daemonsets,jobs,pvc,services,pdb"


def poll(cluster: Any, namespace: str, snapshots: Snapshots, seconds: float) -> Iterator[None]:
    """Read the namespace's workloads every half second for `seconds`, yielding after each."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        snapshots.add(
            items(cluster.kubectl("get", WORKLOAD_KINDS, "-n", namespace, "-o", "json").stdout)
        )
        yield
        time.sleep(0.5)


def settled(snapshots: Snapshots, namespace: str) -> bool:
    latest: dict[tuple[str, str], Obj] = {}
    for obj in snapshots.objects:
        if obj["metadata"].get("namespace") == namespace:
            latest[(obj["kind"], obj["metadata"]["name"])] = obj
    wanted = {
        ("Deployment", "web"): "Current",
        ("Deployment", "broken"): "Failed",
        ("StatefulSet", "db"): "Current",
        ("DaemonSet", "agent"): "Current",
        ("Job", "fails"): "Failed",
    }
    return all(
        key in latest and str(compute(latest[key]).status) == status
        for key, status in wanted.items()
    )


def listable(cluster: Any, namespaced: bool) -> list[str]:
    names = cluster.kubectl(
        "api-resources", "--verbs=list", f"--namespaced={str(namespaced).lower()}", "-o", "name"
    ).stdout.split()
    return sorted(names)


def test_live_objects_agree(cluster: Any, go_kstatus: Path) -> None:
    namespace = f"kstatus-{uuid.uuid4().hex[:6]}"
    group = f"{namespace}.rudder.dev"
    snapshots = Snapshots()
    cluster.kubectl("create", "namespace", namespace)
    try:
        # Right after creation: no status yet.
        snapshots.add(
            items(
                cluster.kubectl(
                    "create",
                    "-o",
                    "json",
                    "-f",
                    "-",
                    input=json.dumps(
                        {
                            "apiVersion": "v1",
                            "kind": "List",
                            "items": [*workloads(namespace), crd(group)],
                        }
                    ),
                ).stdout
            )
        )
        for _ in poll(cluster, namespace, snapshots, seconds=60):
            if settled(snapshots, namespace):
                break
        # A new generation: scaled and re-imaged. The replies show it not yet observed.
        for change in (
            ("scale", "deployment/web", "statefulset/db", "--replicas=3"),
            ("set", "image", "deployment/web", "daemonset/agent", f"app={PAUSE}-x"),
        ):
            snapshots.add(items(cluster.kubectl(*change, "-n", namespace, "-o", "json").stdout))
        for _ in poll(cluster, namespace, snapshots, seconds=60):
            if settled(snapshots, namespace):
                break
        # Terminating: deleted but held by a finalizer.
        cluster.kubectl("delete", "-n", namespace, "configmap/held", "--wait=false")
        snapshots.add(
            items(cluster.kubectl("get", "-n", namespace, "configmap/held", "-o", "json").stdout)
        )
        cluster.kubectl(
            "patch",
            "-n",
            namespace,
            "configmap/held",
            "--type=merge",
            "-p",
            '{"metadata":{"finalizers":null}}',
        )
        # Everything else there is to read.
        for scope in ("kube-system", "default", namespace):
            kinds = ",".join(listable(cluster, namespaced=True))
            snapshots.add(items(cluster.kubectl("get", kinds, "-n", scope, "-o", "json").stdout))
        kinds = ",".join(listable(cluster, namespaced=False))
        snapshots.add(items(cluster.kubectl("get", kinds, "-o", "json").stdout))
    finally:
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
        cluster.kubectl("delete", "crd", f"widgets.{group}", "--wait=false", check=False)

    differences, verdicts = disagreements(go_kstatus, snapshots.objects)

    assert differences == [], "\n".join(differences)
    # The live objects exercised the interesting verdicts, not only "Current".
    seen = {verdict["status"] for verdict in verdicts}
    assert {"InProgress", "Current", "Failed", "Terminating"} <= seen, seen
    reasons = {c["reason"] for verdict in verdicts for c in verdict["conditions"]}
    assert {
        "ContainerCrashLooping",
        "ProgressDeadlineExceeded",
        "JobFailed",
        "LatestGenerationNotObserved",
    } <= reasons, reasons
