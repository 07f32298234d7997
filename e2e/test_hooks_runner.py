"""The hook runner against the real local control plane, as cluster admin.

kwok completes the pods of Jobs (a `:fail` image makes a Job's pod fail) but never a bare
Pod, so Pod hooks can only be shown to wait and time out here.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from conftest import Cluster
from rudder.kube.client import connect
from rudder.kube.discovery import Discovery
from rudder.kube.ssa import Applier
from rudder.reconcile.hook_runner import HookFailed, HookRunner
from rudder.release.codec import Hook
from rudder.release.manifest import sort_manifests

pytestmark = pytest.mark.e2e

FIELD_MANAGER = "rudder-hooks-e2e"
RELEASE = "hooked"


@pytest.fixture(scope="module")
def namespace(cluster: Cluster) -> Iterator[str]:
    name = f"hooks-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false")


@pytest.fixture
async def applier(cluster: Cluster) -> AsyncIterator[Applier]:
    kube = await connect(kubeconfig=cluster.kubeconfig)
    try:
        yield Applier(kube, Discovery(kube), FIELD_MANAGER)
    finally:
        await kube.close()


def hook_annotations(event: str, weight: int | None, policy: str | None) -> str:
    lines = [f"    helm.sh/hook: {event}"]
    if weight is not None:
        lines.append(f'    helm.sh/hook-weight: "{weight}"')
    if policy is not None:
        lines.append(f"    helm.sh/hook-delete-policy: {policy}")
    return "\n".join(lines)


def job(
    name: str,
    *,
    image: str = "busybox:1.36",
    event: str = "pre-install",
    weight: int | None = None,
    policy: str | None = None,
) -> str:
    return f"""apiVersion: batch/v1
kind: Job
metadata:
  name: {name}
  annotations:
{hook_annotations(event, weight, policy)}
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: main
        image: {image}
        command: ["true"]"""


def config_map(
    name: str,
    *,
    data: str = "one",
    event: str = "pre-install",
    weight: int | None = None,
    policy: str | None = None,
    group: str = "misc",
) -> str:
    return f"""apiVersion: v1
kind: ConfigMap
metadata:
  name: {name}
  labels:
    e2e.rudder.dev/hook: {group}
  annotations:
{hook_annotations(event, weight, policy)}
data:
  value: {data}"""


def pod(name: str) -> str:
    return f"""apiVersion: v1
kind: Pod
metadata:
  name: {name}
  annotations:
{hook_annotations("test", None, None)}
spec:
  restartPolicy: Never
  containers:
  - name: main
    image: busybox:1.36"""


def hooks_of(*documents: str) -> list[Hook]:
    """The hooks Helm would record for a chart with these documents in one template."""
    hooks, manifests = sort_manifests({"hooked/templates/hooks.yaml": "\n---\n".join(documents)})
    assert manifests == []
    return hooks


async def run(
    applier: Applier,
    namespace: str,
    hooks: list[Hook],
    event: str = "pre-install",
    *,
    limit: float = 60,
    record: Any = None,
) -> list[Hook]:
    return await HookRunner().run(
        hooks,
        event,
        namespace=namespace,
        release_name=RELEASE,
        release_namespace=namespace,
        timeout=limit,
        applier=applier,
        record=record,
    )


def live(cluster: Cluster, namespace: str, kind: str, name: str) -> dict[str, Any] | None:
    out = cluster.kubectl(
        "get",
        kind,
        name,
        "-n",
        namespace,
        "--ignore-not-found",
        "--show-managed-fields",
        "-o",
        "json",
    ).stdout
    return json.loads(out) if out.strip() else None


def condition(obj: dict[str, Any], kind: str) -> str | None:
    for item in obj.get("status", {}).get("conditions") or []:
        if item.get("type") == kind:
            return str(item.get("status"))
    return None


def by_name(hooks: list[Hook]) -> dict[str, Hook]:
    return {hook.name: hook for hook in hooks}


async def test_job_hooks_wait_for_completion_and_hook_succeeded_deletes(
    cluster: Cluster, namespace: str, applier: Applier
) -> None:
    hooks = hooks_of(
        job("migrate", weight=1),
        job("seed", weight=2, policy="hook-succeeded"),
    )
    result = by_name(await run(applier, namespace, hooks))

    for name in ("migrate", "seed"):
        last_run = result[name].last_run
        assert last_run.phase == "Succeeded"
        assert last_run.started_at is not None
        assert last_run.completed_at is not None
        assert last_run.started_at < last_run.completed_at
    assert result["migrate"].delete_policies == ["before-hook-creation"]  # Helm's default
    assert result["seed"].delete_policies == ["hook-succeeded"]

    migrate = live(cluster, namespace, "job", "migrate")
    assert migrate is not None
    assert condition(migrate, "Complete") == "True"  # done means complete, not started
    assert live(cluster, namespace, "job", "seed") is None


async def test_a_failing_job_fails_the_hook_and_stops_the_sequence(
    cluster: Cluster, namespace: str, applier: Applier
) -> None:
    hooks = hooks_of(
        config_map("fail-before", weight=-1, policy="hook-succeeded"),
        job("fail-broken", image="busybox:fail", weight=0, policy="hook-failed"),
        config_map("fail-after", weight=1),
    )
    with pytest.raises(HookFailed) as caught:
        await run(applier, namespace, hooks)
    failure = caught.value
    assert failure.hook.name == "fail-broken"
    assert failure.message == (
        f"resource Job/{namespace}/fail-broken not ready. status: Failed, "
        "message: Job Failed. failed: 1/1"
    )
    phases = {hook.name: hook.last_run.phase for hook in failure.hooks}
    assert phases == {"fail-before": "Succeeded", "fail-broken": "Failed", "fail-after": ""}
    assert failure.hook.last_run.completed_at is not None
    # hook-failed removed the failed Job; hook-succeeded the hook that ran before it.
    assert live(cluster, namespace, "job", "fail-broken") is None
    assert live(cluster, namespace, "configmap", "fail-before") is None
    assert live(cluster, namespace, "configmap", "fail-after") is None  # never ran

    # Without hook-failed the failed Job stays for inspection.
    kept = hooks_of(job("fail-kept", image="busybox:fail", event="post-upgrade"))
    with pytest.raises(HookFailed):
        await run(applier, namespace, kept, "post-upgrade")
    failed_job = live(cluster, namespace, "job", "fail-kept")
    assert failed_job is not None
    assert condition(failed_job, "Failed") == "True"


async def test_a_config_map_hook_is_applied_by_rudder_without_helm_ownership(
    cluster: Cluster, namespace: str, applier: Applier
) -> None:
    (result,) = await run(applier, namespace, hooks_of(config_map("settings")))
    assert result.last_run.phase == "Succeeded"
    obj = live(cluster, namespace, "configmap", "settings")
    assert obj is not None
    meta = obj["metadata"]
    assert meta["annotations"]["helm.sh/hook"] == "pre-install"
    assert "meta.helm.sh/release-name" not in meta["annotations"]
    assert "app.kubernetes.io/managed-by" not in meta.get("labels", {})
    managers = {(entry["manager"], entry["operation"]) for entry in meta["managedFields"]}
    assert managers == {(FIELD_MANAGER, "Apply")}


async def test_hooks_run_by_weight_then_name(
    cluster: Cluster, namespace: str, applier: Applier
) -> None:
    names = ["order-c", "order-a", "order-b", "order-first", "order-last"]
    weights = {"order-c": 0, "order-a": 0, "order-b": 0, "order-first": -5, "order-last": 10}
    hooks = hooks_of(
        *(
            config_map(
                n, event="pre-upgrade", weight=weights[n], policy="hook-succeeded", group="order"
            )
            for n in names
        )
    )
    seen: list[tuple[str, list[str]]] = []

    async def record(snapshot: list[Hook]) -> None:
        (starting,) = [hook.name for hook in snapshot if hook.last_run.phase == "Running"]
        present = cluster.kubectl(
            "get", "configmap", "-n", namespace, "-l", "e2e.rudder.dev/hook=order", "-o", "name"
        ).stdout.split()
        seen.append((starting, sorted(p.removeprefix("configmap/") for p in present)))

    await run(applier, namespace, hooks, "pre-upgrade", record=record)
    expected = ["order-first", "order-a", "order-b", "order-c", "order-last"]
    assert [starting for starting, _ in seen] == expected
    # Observed in the cluster: as each hook starts, exactly the hooks before it exist.
    for position, (_, present) in enumerate(seen):
        assert present == sorted(expected[:position])
    # hook-succeeded removed them all once the last one was done.
    assert all(live(cluster, namespace, "configmap", name) is None for name in names)


async def test_before_hook_creation_replaces_the_previous_object(
    cluster: Cluster, namespace: str, applier: Applier
) -> None:
    await run(applier, namespace, hooks_of(config_map("again", data="one")))
    first = live(cluster, namespace, "configmap", "again")
    assert first is not None
    await run(applier, namespace, hooks_of(config_map("again", data="two")))
    second = live(cluster, namespace, "configmap", "again")
    assert second is not None
    assert second["metadata"]["uid"] != first["metadata"]["uid"]  # deleted, then created
    assert second["data"] == {"value": "two"}

    # A hook whose policies lack before-hook-creation is applied over its old object.
    await run(applier, namespace, hooks_of(config_map("inplace", data="one", policy="hook-failed")))
    old = live(cluster, namespace, "configmap", "inplace")
    await run(applier, namespace, hooks_of(config_map("inplace", data="two", policy="hook-failed")))
    new = live(cluster, namespace, "configmap", "inplace")
    assert old is not None
    assert new is not None
    assert new["metadata"]["uid"] == old["metadata"]["uid"]
    assert new["data"] == {"value": "two"}

    # A finished Job is replaced too (a Job's template cannot be changed in place).
    await run(applier, namespace, hooks_of(job("rerun")))
    job_before = live(cluster, namespace, "job", "rerun")
    await run(applier, namespace, hooks_of(job("rerun", image="busybox:1.37")))
    job_after = live(cluster, namespace, "job", "rerun")
    assert job_before is not None
    assert job_after is not None
    assert job_after["metadata"]["uid"] != job_before["metadata"]["uid"]
    assert condition(job_after, "Complete") == "True"


async def test_a_pod_that_only_runs_times_out(
    cluster: Cluster, namespace: str, applier: Applier
) -> None:
    with pytest.raises(HookFailed) as caught:
        await run(applier, namespace, hooks_of(pod("probe")), "test", limit=3)
    assert caught.value.message == (
        f"resource Pod/{namespace}/probe not ready. status: InProgress, "
        "message: Pod in progress\ncontext deadline exceeded"
    )
    assert caught.value.hook.last_run.phase == "Failed"
    running = live(cluster, namespace, "pod", "probe")
    assert running is not None
    assert running["status"].get("phase") == "Running"  # Running and Ready is not done
