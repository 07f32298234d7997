"""The readiness wait against the real local control plane, as cluster admin.

kwok makes the pods of Deployments ready at once, keeps a pod whose image is tagged `:fail`
in CrashLoopBackOff, and completes the pods of Jobs after about half a second; the real
kube-controller-manager sets the Deployments' and Jobs' status from them.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from conftest import Cluster
from rudder.kube.client import JSON, KubeClient, connect
from rudder.kube.discovery import Discovery
from rudder.kube.kstatus import Status
from rudder.kube.readiness import Outcome, ReadinessReport, wait_until_ready
from rudder.kube.ssa import Applier, ObjectRef

pytestmark = pytest.mark.e2e

FIELD_MANAGER = "rudder-readiness-e2e"


@pytest.fixture(scope="module")
def namespace(cluster: Cluster) -> Iterator[str]:
    name = f"ready-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false")


@pytest.fixture
async def kube(cluster: Cluster) -> AsyncIterator[KubeClient]:
    client = await connect(kubeconfig=cluster.kubeconfig)
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
def discovery(kube: KubeClient) -> Discovery:
    return Discovery(kube)


def deployment(
    name: str, namespace: str, *, image: str = "nginx:1.27", **spec: Any
) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "main", "image": image}]},
            },
            **spec,
        },
    }


def config_map(name: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace},
        "data": {"key": "value"},
    }


def service(name: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"selector": {"app": name}, "ports": [{"port": 80}]},
    }


def job(name: str, namespace: str, *, image: str = "busybox:1.36") -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "main", "image": image, "command": ["true"]}],
                }
            },
        },
    }


async def apply(kube: KubeClient, discovery: Discovery, *objects: JSON) -> list[ObjectRef]:
    applier = Applier(kube, discovery, FIELD_MANAGER)
    for obj in objects:
        await applier.apply(obj)
    return [ObjectRef.of(obj) for obj in objects]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:5]}"


async def test_a_deployment_that_becomes_ready_is_current_quickly(
    kube: KubeClient, discovery: Discovery, namespace: str
) -> None:
    name = unique("web")
    refs = await apply(
        kube,
        discovery,
        config_map(name, namespace),
        service(name, namespace),
        deployment(name, namespace),
    )
    loop = asyncio.get_running_loop()
    started = loop.time()
    report = await wait_until_ready(kube, discovery, refs, timeout=60)
    assert report.outcome is Outcome.CURRENT, report.message()
    assert loop.time() - started < 20
    assert report.counts == {"Current": 3}
    assert report.as_status() == {"counts": {"Current": 3}, "notReady": []}
    assert report.summary() == "all 3 objects are Current"


async def test_objects_already_current_return_at_the_first_list(
    kube: KubeClient, discovery: Discovery, namespace: str
) -> None:
    refs = await apply(
        kube, discovery, config_map(unique("a"), namespace), config_map(unique("b"), namespace)
    )
    loop = asyncio.get_running_loop()
    started = loop.time()
    report = await wait_until_ready(kube, discovery, refs, timeout=60)
    assert report.outcome is Outcome.CURRENT
    assert loop.time() - started < 2


async def test_a_crash_looping_deployment_times_out_naming_it(
    kube: KubeClient, discovery: Discovery, namespace: str
) -> None:
    good, bad = unique("good"), unique("bad")
    refs = await apply(
        kube,
        discovery,
        deployment(good, namespace),
        deployment(bad, namespace, image="nginx:fail"),
    )
    seen: list[ReadinessReport] = []

    async def progress(report: ReadinessReport) -> None:
        seen.append(report)

    loop = asyncio.get_running_loop()
    started = loop.time()
    report = await wait_until_ready(
        kube, discovery, refs, timeout=8, progress=progress, progress_every=1
    )
    elapsed = loop.time() - started
    assert report.outcome is Outcome.TIMEOUT, report.message()
    assert 8 <= elapsed < 15
    assert report.counts == {"Current": 1, "InProgress": 1}
    assert [entry.ref.name for entry in report.not_ready] == [bad]
    message = report.message()
    assert message.startswith("timed out after 8s waiting for 1 of 2 objects not yet Current: ")
    assert f"Deployment/{namespace}/{bad} (" in message
    assert good not in message
    status = report.as_status()
    assert status["notReady"][0]["name"] == bad
    assert status["notReady"][0]["status"] == "InProgress"
    assert status["notReady"][0]["message"]
    # Progress was reported while waiting.
    assert seen
    assert all(entry.outcome is Outcome.IN_PROGRESS for entry in seen)
    assert any(bad in entry.summary() for entry in seen)


async def test_a_progress_deadline_fails_the_wait_early(
    kube: KubeClient, discovery: Discovery, namespace: str
) -> None:
    name = unique("stuck")
    refs = await apply(
        kube, discovery, deployment(name, namespace, image="nginx:fail", progressDeadlineSeconds=2)
    )
    loop = asyncio.get_running_loop()
    started = loop.time()
    report = await wait_until_ready(kube, discovery, refs, timeout=90)
    assert report.outcome is Outcome.FAILED, report.message()
    assert loop.time() - started < 60
    assert report.counts == {"Failed": 1}
    assert report.message() == (
        f"1 object failed: Deployment/{namespace}/{name} (Failed: Progress deadline exceeded)"
    )


async def job_condition(kube: KubeClient, namespace: str, name: str, type_: str) -> None:
    for _ in range(120):
        live = await kube.get(f"/apis/batch/v1/namespaces/{namespace}/jobs/{name}")
        conditions = live.get("status", {}).get("conditions") or []
        if any(c.get("type") == type_ and c.get("status") == "True" for c in conditions):
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"Job {name} never got condition {type_}")


async def test_jobs_are_judged_by_kstatus(
    kube: KubeClient, discovery: Discovery, namespace: str
) -> None:
    name = unique("migrate")
    refs = await apply(kube, discovery, job(name, namespace))
    report = await wait_until_ready(kube, discovery, refs, timeout=60)
    assert report.outcome is Outcome.CURRENT, report.message()
    # Helm's normal wait takes a started Job as Current; a complete one all the more.
    await job_condition(kube, namespace, name, "Complete")
    report = await wait_until_ready(kube, discovery, refs, timeout=60)
    assert report.outcome is Outcome.CURRENT, report.message()

    # A Job whose pod failed (backoffLimit 0) is Failed.
    broken = unique("broken")
    refs = await apply(kube, discovery, job(broken, namespace, image="busybox:fail"))
    await job_condition(kube, namespace, broken, "Failed")
    report = await wait_until_ready(kube, discovery, refs, timeout=60)
    assert report.outcome is Outcome.FAILED
    assert report.message() == (
        f"1 object failed: Job/{namespace}/{broken} (Failed: Job Failed. failed: 1/1)"
    )


async def test_cancel_stops_the_wait_at_once(
    kube: KubeClient, discovery: Discovery, namespace: str
) -> None:
    refs = await apply(kube, discovery, deployment(unique("slow"), namespace, image="nginx:fail"))
    cancel = asyncio.Event()
    wait = asyncio.create_task(wait_until_ready(kube, discovery, refs, timeout=120, cancel=cancel))
    await asyncio.sleep(1.5)
    assert not wait.done()
    loop = asyncio.get_running_loop()
    cancelled_at = loop.time()
    cancel.set()
    report = await asyncio.wait_for(wait, 5)
    assert loop.time() - cancelled_at < 0.5
    assert report.outcome is Outcome.CANCELLED
    assert report.counts == {"InProgress": 1}


async def test_a_missing_object_is_not_ready_until_it_is_created(
    kube: KubeClient, discovery: Discovery, namespace: str
) -> None:
    missing = config_map(unique("missing"), namespace)
    ref = ObjectRef.of(missing)
    report = await wait_until_ready(kube, discovery, [ref], timeout=3)
    assert report.outcome is Outcome.TIMEOUT
    assert report.counts == {"NotFound": 1}
    assert report.not_ready[0].status is Status.NOT_FOUND
    assert f"ConfigMap/{namespace}/{ref.name} (NotFound: Resource not found)" in report.message()

    # The watch sees it appear.
    wait = asyncio.create_task(wait_until_ready(kube, discovery, [ref], timeout=60))
    await asyncio.sleep(1)
    assert not wait.done()
    await apply(kube, discovery, missing)
    report = await asyncio.wait_for(wait, 10)
    assert report.outcome is Outcome.CURRENT


async def test_a_paused_deployment_is_not_waited_for(
    kube: KubeClient, discovery: Discovery, namespace: str
) -> None:
    refs = await apply(
        kube,
        discovery,
        deployment(unique("paused"), namespace, image="nginx:fail", paused=True),
        config_map(unique("cm"), namespace),
    )
    report = await wait_until_ready(kube, discovery, refs, timeout=30)
    assert report.outcome is Outcome.CURRENT, report.message()
    assert report.skipped == (refs[0],)
    assert report.total == 1
