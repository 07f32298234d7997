"""The readiness wait: the judgement of objects, the report's shape and words, and the
list + watch loop driven by a scripted stand-in for the API (the real API server is in
e2e/test_readiness.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from rudder.kube import readiness
from rudder.kube.client import JSON, ApiError
from rudder.kube.discovery import Resource, UnknownKind
from rudder.kube.kstatus import Status
from rudder.kube.readiness import (
    DEFAULT_TIMEOUT,
    NOT_OBSERVED,
    ObjectStatus,
    Outcome,
    ReadinessReport,
    build_report,
    decide,
    is_paused_deployment,
    judge,
    label_selector,
    needs_pods,
    wait_until_ready,
)
from rudder.kube.shared_watch import SharedWatches
from rudder.kube.ssa import ObjectRef

NS = "apps"


# --- objects --------------------------------------------------------------------------------


def deployment(
    name: str,
    *,
    ready: bool = True,
    paused: bool = False,
    deadline_exceeded: bool = False,
    namespace: str = NS,
) -> JSON:
    conditions: list[JSON] = []
    if deadline_exceeded:
        conditions.append(
            {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}
        )
    elif ready:
        conditions += [
            {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"},
            {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
        ]
    spec: JSON = {"replicas": 1, "progressDeadlineSeconds": 600, "selector": {}}
    if paused:
        spec["paused"] = True
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "generation": 1},
        "spec": spec,
        "status": {
            "observedGeneration": 1,
            "replicas": 1,
            "updatedReplicas": 1,
            "readyReplicas": 1 if ready else 0,
            "availableReplicas": 1 if ready else 0,
            "conditions": conditions,
        },
    }


def config_map(name: str, namespace: str = NS) -> JSON:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace},
    }


def stateful_set(name: str, *, ready: bool) -> JSON:
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": name, "namespace": NS, "generation": 1},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
        },
        "status": {
            "observedGeneration": 1,
            "replicas": 1,
            "readyReplicas": 1 if ready else 0,
            "currentReplicas": 1,
            "updatedReplicas": 1,
            "currentRevision": "r1",
            "updateRevision": "r1",
        },
    }


def pod(name: str, *, crash: bool = False, unschedulable: bool = False) -> JSON:
    obj: JSON = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "creationTimestamp": "2020-01-01T00:00:00Z"},
    }
    if unschedulable:
        obj["status"] = {
            "phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}],
        }
    elif crash:
        obj["status"] = {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "False"}],
            "containerStatuses": [
                {"name": "main", "state": {"waiting": {"reason": "CrashLoopBackOff"}}}
            ],
        }
    else:
        obj["status"] = {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
    return obj


def ref(obj: JSON) -> ObjectRef:
    return ObjectRef.of(obj)


def web_ref(name: str = "web") -> ObjectRef:
    return ObjectRef("apps/v1", "Deployment", NS, name)


# --- judgement ------------------------------------------------------------------------------


def test_a_missing_object_is_not_found() -> None:
    verdict = judge(web_ref(), None)
    assert verdict == ObjectStatus(web_ref(), Status.NOT_FOUND, "Resource not found")


def test_objects_are_judged_by_kstatus() -> None:
    assert judge(web_ref(), deployment("web")) == ObjectStatus(
        web_ref(), Status.CURRENT, "Deployment is available. Replicas: 1"
    )
    assert judge(web_ref(), deployment("web", ready=False)) == ObjectStatus(
        web_ref(), Status.IN_PROGRESS, "Available: 0/1"
    )
    failed = judge(web_ref(), deployment("web", deadline_exceeded=True))
    assert failed is not None
    assert failed.status is Status.FAILED
    assert failed.message == "Progress deadline exceeded"


def test_a_started_job_is_current_as_in_helms_normal_wait() -> None:
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "migrate", "namespace": NS},
        "status": {"startTime": "2024-01-01T00:00:00Z", "active": 1},
    }
    verdict = judge(ref(job), job)
    assert verdict is not None
    assert verdict.status is Status.CURRENT


def test_kinds_without_a_rule_are_current() -> None:
    widget = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
    verdict = judge(ref(widget), widget)
    assert verdict is not None
    assert verdict.status is Status.CURRENT


def test_a_paused_deployment_is_not_waited_for() -> None:
    paused = deployment("web", ready=False, paused=True)
    assert is_paused_deployment(paused)
    assert judge(web_ref(), paused) is None
    assert not is_paused_deployment(deployment("web", ready=False))
    # Only apps Deployments: another kind with spec.paused is judged as usual.
    other = {"apiVersion": "example.com/v1", "kind": "Deployment", "spec": {"paused": True}}
    assert not is_paused_deployment(other)


def test_a_stateful_set_with_a_crash_looping_pod_is_failed() -> None:
    sts = stateful_set("db", ready=False)
    assert needs_pods(sts)
    verdict = judge(ref(sts), sts, pods=[pod("db-0", crash=True), pod("db-1")])
    assert verdict == ObjectStatus(ref(sts), Status.FAILED, "1 pods have failed")


def test_transient_pod_failures_do_not_fail_the_controller() -> None:
    sts = stateful_set("db", ready=False)
    deleting = pod("db-0", crash=True)
    deleting["metadata"]["deletionTimestamp"] = "2020-01-01T00:00:00Z"
    pending = pod("db-1", unschedulable=True)  # old enough that kstatus calls it Failed
    verdict = judge(ref(sts), sts, pods=[deleting, pending])
    assert verdict is not None
    assert verdict.status is Status.IN_PROGRESS


def test_pods_only_matter_for_in_progress_pod_controllers() -> None:
    ready = stateful_set("db", ready=True)
    assert not needs_pods(ready)
    verdict = judge(ref(ready), ready, pods=[pod("db-0", crash=True)])
    assert verdict is not None
    assert verdict.status is Status.CURRENT
    # Deployments are judged on their own status (cli-utils' Deployment reader).
    web = deployment("web", ready=False)
    assert not needs_pods(web)
    verdict = judge(web_ref(), web, pods=[pod("web-1", crash=True)])
    assert verdict is not None
    assert verdict.status is Status.IN_PROGRESS


def test_a_bare_unschedulable_pod_fails_after_the_grace_period() -> None:
    waiting = pod("p", unschedulable=True)
    waiting["metadata"]["creationTimestamp"] = "2024-01-01T00:00:00Z"
    created = datetime(2024, 1, 1, tzinfo=UTC)
    early = judge(ref(waiting), waiting, now=created + timedelta(seconds=5))
    late = judge(ref(waiting), waiting, now=created + timedelta(seconds=20))
    assert early is not None
    assert early.status is Status.IN_PROGRESS
    assert late is not None
    assert late.status is Status.FAILED


def test_decide() -> None:
    a, b = web_ref("a"), web_ref("b")
    current = ObjectStatus(a, Status.CURRENT, "")
    assert decide([]) is Outcome.CURRENT
    assert decide([current]) is Outcome.CURRENT
    assert decide([current, ObjectStatus(b, Status.IN_PROGRESS, "")]) is Outcome.IN_PROGRESS
    assert decide([current, ObjectStatus(b, Status.NOT_FOUND, "")]) is Outcome.IN_PROGRESS
    assert decide([current, ObjectStatus(b, Status.UNKNOWN, "")]) is Outcome.IN_PROGRESS
    assert decide([current, ObjectStatus(b, Status.TERMINATING, "")]) is Outcome.IN_PROGRESS
    failed = ObjectStatus(b, Status.FAILED, "")
    assert decide([ObjectStatus(a, Status.IN_PROGRESS, ""), failed]) is Outcome.FAILED


def test_label_selector() -> None:
    assert label_selector(None) == ""
    assert label_selector({}) == ""
    assert label_selector({"matchLabels": {"app": "web", "tier": "fe"}}) == "app=web,tier=fe"
    selector = {
        "matchLabels": {"app": "web"},
        "matchExpressions": [
            {"key": "env", "operator": "In", "values": ["prod", "dev"]},
            {"key": "zone", "operator": "NotIn", "values": ["b"]},
            {"key": "canary", "operator": "DoesNotExist"},
            {"key": "owner", "operator": "Exists"},
        ],
    }
    assert label_selector(selector) == "!canary,app=web,env in (dev,prod),owner,zone notin (b)"
    assert label_selector({"matchExpressions": [{"key": "a", "operator": "Near"}]}) is None
    assert label_selector({"matchExpressions": [{"key": "a", "operator": "In"}]}) is None
    assert label_selector("app=web") is None


# --- the report -----------------------------------------------------------------------------


def statuses(*entries: tuple[str, Status, str]) -> list[ObjectStatus]:
    return [ObjectStatus(web_ref(name), status, message) for name, status, message in entries]


def test_report_counts_and_orders_failed_first() -> None:
    report = build_report(
        statuses(
            ("a", Status.CURRENT, "ok"),
            ("b", Status.IN_PROGRESS, "Available: 0/1"),
            ("c", Status.NOT_FOUND, "Resource not found"),
            ("d", Status.FAILED, "Progress deadline exceeded"),
            ("e", Status.CURRENT, "ok"),
        ),
        skipped=[web_ref("paused")],
    )
    assert report.outcome is Outcome.FAILED
    assert report.total == 5
    assert report.counts == {"Current": 2, "InProgress": 1, "Failed": 1, "NotFound": 1}
    assert list(report.counts) == ["Current", "InProgress", "Failed", "NotFound"]
    assert [s.ref.name for s in report.not_ready] == ["d", "b", "c"]
    assert report.skipped == (web_ref("paused"),)
    assert not report.ready


def test_summary_names_the_first_few() -> None:
    report = build_report(
        statuses(
            ("a", Status.CURRENT, "ok"),
            ("b", Status.IN_PROGRESS, "Available: 0/2"),
            ("c", Status.NOT_FOUND, "Resource not found"),
            ("d", Status.UNKNOWN, ""),
            ("e", Status.IN_PROGRESS, "Ready: 0/1"),
            ("f", Status.TERMINATING, "Resource scheduled for deletion"),
        )
    )
    assert report.summary() == (
        "5 of 6 objects not yet Current: Deployment/apps/b (Available: 0/2), "
        "Deployment/apps/c (NotFound: Resource not found), Deployment/apps/d (Unknown), "
        "and 2 more"
    )
    assert report.summary(limit=10).count("Deployment/") == 5


def test_summary_when_done_or_empty() -> None:
    assert build_report([]).summary() == "no objects to wait for"
    assert build_report([]).ready
    one = build_report(statuses(("a", Status.CURRENT, "ok")))
    assert one.summary() == "1 object is Current"
    two = build_report(statuses(("a", Status.CURRENT, "ok"), ("b", Status.CURRENT, "ok")))
    assert two.summary() == "all 2 objects are Current"
    single = build_report(statuses(("a", Status.IN_PROGRESS, "Ready: 0/1")))
    assert single.summary() == "1 of 1 object not yet Current: Deployment/apps/a (Ready: 0/1)"


def test_messages_name_the_objects() -> None:
    entries = statuses(
        ("a", Status.CURRENT, "ok"),
        ("b", Status.FAILED, "Progress deadline exceeded"),
        ("c", Status.IN_PROGRESS, "Ready: 0/1"),
    )
    failed = build_report(entries)
    assert failed.message() == (
        "1 object failed: Deployment/apps/b (Failed: Progress deadline exceeded)"
    )
    pending = statuses(("a", Status.CURRENT, "ok"), ("c", Status.IN_PROGRESS, "Ready: 0/1"))
    timed_out = build_report(pending, outcome=Outcome.TIMEOUT, timeout=300)
    assert timed_out.message() == (
        "timed out after 5m0s waiting for 1 of 2 objects not yet Current: "
        "Deployment/apps/c (Ready: 0/1)"
    )
    assert (
        build_report(pending, outcome=Outcome.TIMEOUT, timeout=8)
        .message()
        .startswith("timed out after 8s waiting for ")
    )
    assert (
        build_report(pending, outcome=Outcome.TIMEOUT, timeout=2.5)
        .message()
        .startswith("timed out after 2.5s waiting for ")
    )
    cancelled = build_report(pending, outcome=Outcome.CANCELLED)
    assert cancelled.message().startswith("wait cancelled: 1 of 2 objects")


def test_as_status_shape_and_limit() -> None:
    entries = [ObjectStatus(web_ref(f"w{i:02d}"), Status.IN_PROGRESS, "x" * 400) for i in range(12)]
    entries.append(ObjectStatus(ObjectRef("v1", "Namespace", "", "ns"), Status.CURRENT, "ok"))
    report = build_report(entries)
    status = report.as_status()
    assert status["counts"] == {"Current": 1, "InProgress": 12}
    assert len(status["notReady"]) == 10
    first = status["notReady"][0]
    assert set(first) == {"apiVersion", "kind", "namespace", "name", "status", "message"}
    assert first["apiVersion"] == "apps/v1"
    assert first["kind"] == "Deployment"
    assert first["namespace"] == NS
    assert first["name"] == "w00"
    assert first["status"] == "InProgress"
    assert len(first["message"]) == 300
    assert first["message"].endswith("...")
    assert build_report([]).as_status() == {"counts": {}, "notReady": []}


def test_reports_compare_without_timing() -> None:
    entries = statuses(("a", Status.IN_PROGRESS, "Ready: 0/1"))
    assert build_report(entries, elapsed=1.0) == build_report(entries, elapsed=2.0)
    other = statuses(("a", Status.IN_PROGRESS, "Ready: 1/2"))
    assert build_report(entries) != build_report(other)


# --- the wait, against a scripted API -------------------------------------------------------

RESOURCES = {
    ("apps/v1", "Deployment"): Resource("apps", "v1", "Deployment", "deployments", True),
    ("apps/v1", "StatefulSet"): Resource("apps", "v1", "StatefulSet", "statefulsets", True),
    ("v1", "ConfigMap"): Resource("", "v1", "ConfigMap", "configmaps", True),
    ("v1", "Namespace"): Resource("", "v1", "Namespace", "namespaces", False),
}


class FakeDiscovery:
    async def resource(self, api_version: str, kind: str) -> Resource:
        found = RESOURCES.get((api_version, kind))
        if found is None:
            raise UnknownKind(api_version, kind)
        return found


def listed(obj: JSON) -> JSON:
    """As a list item: without apiVersion and kind."""
    return {k: v for k, v in obj.items() if k not in ("apiVersion", "kind")}


class FakeApi:
    """Collections of objects, a queue of watch events per collection (None ends the
    watch), and a record of every list and watch request."""

    def __init__(self, objects: dict[str, list[JSON]] | None = None) -> None:
        self.objects = objects or {}
        self.version = 100
        self.lists: list[tuple[str, dict[str, Any]]] = []
        self.watches: list[tuple[str, str, dict[str, Any]]] = []
        self.queues: dict[str, asyncio.Queue[JSON | None]] = {}
        self.list_errors: dict[str, ApiError] = {}
        self.watching = asyncio.Event()

    def queue(self, path: str) -> asyncio.Queue[JSON | None]:
        return self.queues.setdefault(path, asyncio.Queue())

    async def get(self, path: str, **query: str | int | bool) -> JSON:
        self.lists.append((path, dict(query)))
        if path in self.list_errors:
            raise self.list_errors[path]
        items = self.objects.get(path, [])
        selector = str(query.get("fieldSelector", ""))
        if selector.startswith("metadata.name="):
            wanted = selector.removeprefix("metadata.name=")
            items = [item for item in items if item["metadata"]["name"] == wanted]
        label = query.get("labelSelector")
        if label is not None:
            key, _, value = str(label).partition("=")
            items = [i for i in items if (i["metadata"].get("labels") or {}).get(key) == value]
        return {"metadata": {"resourceVersion": str(self.version)}, "items": items}

    async def watch(
        self, path: str, *, resource_version: str, timeout_seconds: int = 300, **query: str
    ) -> AsyncIterator[JSON]:
        self.watches.append((path, resource_version, dict(query)))
        self.watching.set()
        queue = self.queue(path)
        while True:
            event = await queue.get()
            if event is None:
                return
            yield event

    def send(self, path: str, kind: str, obj: JSON) -> None:
        self.version += 1
        obj = {**obj, "metadata": {**obj["metadata"], "resourceVersion": str(self.version)}}
        self.queue(path).put_nowait({"type": kind, "object": obj})


DEPLOYMENTS = f"/apis/apps/v1/namespaces/{NS}/deployments"
CONFIG_MAPS = f"/api/v1/namespaces/{NS}/configmaps"


async def test_nothing_to_wait_for() -> None:
    report = await wait_until_ready(FakeApi(), FakeDiscovery(), [], timeout=1)
    assert report.outcome is Outcome.CURRENT
    assert report.total == 0


async def test_already_current_returns_at_the_first_list() -> None:
    api = FakeApi(
        {
            DEPLOYMENTS: [listed(deployment("web"))],
            CONFIG_MAPS: [listed(config_map("a")), listed(config_map("b"))],
        }
    )
    refs = [web_ref(), ref(config_map("a")), ref(config_map("b"))]
    loop = asyncio.get_running_loop()
    started = loop.time()
    report = await wait_until_ready(api, FakeDiscovery(), refs, timeout=30)
    assert loop.time() - started < 1
    assert report.outcome is Outcome.CURRENT
    assert report.counts == {"Current": 3}
    # One list per collection; a field selector only where the group holds one name.
    assert sorted(api.lists) == [
        (CONFIG_MAPS, {}),
        (DEPLOYMENTS, {"fieldSelector": "metadata.name=web"}),
    ]


async def test_collections_are_grouped_by_namespace_and_scope() -> None:
    other = ObjectRef("apps/v1", "Deployment", "other", "web")
    namespace = ObjectRef("v1", "Namespace", "", NS)
    api = FakeApi(
        {
            DEPLOYMENTS: [listed(deployment("web"))],
            "/apis/apps/v1/namespaces/other/deployments": [
                listed(deployment("web", namespace="other"))
            ],
            "/api/v1/namespaces": [{"metadata": {"name": NS}}],
        }
    )
    report = await wait_until_ready(api, FakeDiscovery(), [web_ref(), other, namespace], timeout=5)
    assert report.outcome is Outcome.CURRENT
    assert sorted(path for path, _ in api.lists) == [
        "/api/v1/namespaces",
        "/apis/apps/v1/namespaces/apps/deployments",
        "/apis/apps/v1/namespaces/other/deployments",
    ]


async def test_watch_events_bring_objects_to_current() -> None:
    api = FakeApi({DEPLOYMENTS: [listed(deployment("web", ready=False))]})
    wait = asyncio.create_task(wait_until_ready(api, FakeDiscovery(), [web_ref()], timeout=10))
    await asyncio.wait_for(api.watching.wait(), 5)
    assert api.watches == [(DEPLOYMENTS, "100", {"fieldSelector": "metadata.name=web"})]
    assert not wait.done()
    api.send(DEPLOYMENTS, "MODIFIED", deployment("web"))
    report = await asyncio.wait_for(wait, 5)
    assert report.outcome is Outcome.CURRENT


async def test_objects_not_in_the_refs_are_ignored() -> None:
    api = FakeApi({DEPLOYMENTS: [listed(deployment("a", ready=False))]})
    refs = [web_ref("a"), web_ref("b")]
    wait = asyncio.create_task(wait_until_ready(api, FakeDiscovery(), refs, timeout=10))
    await asyncio.wait_for(api.watching.wait(), 5)
    assert api.lists == [(DEPLOYMENTS, {})]  # two names: no field selector
    api.send(DEPLOYMENTS, "ADDED", deployment("unrelated", deadline_exceeded=True))
    api.send(DEPLOYMENTS, "ADDED", deployment("b"))
    api.send(DEPLOYMENTS, "MODIFIED", deployment("a"))
    report = await asyncio.wait_for(wait, 5)
    assert report.outcome is Outcome.CURRENT
    assert report.total == 2


async def test_a_failed_object_ends_the_wait_early() -> None:
    api = FakeApi({DEPLOYMENTS: [listed(deployment("a", ready=False))]})
    refs = [web_ref("a"), web_ref("b")]
    wait = asyncio.create_task(wait_until_ready(api, FakeDiscovery(), refs, timeout=30))
    await asyncio.wait_for(api.watching.wait(), 5)
    api.send(DEPLOYMENTS, "MODIFIED", deployment("a", deadline_exceeded=True))
    report = await asyncio.wait_for(wait, 5)
    assert report.outcome is Outcome.FAILED
    assert report.counts == {"Failed": 1, "NotFound": 1}
    assert report.message() == (
        "1 object failed: Deployment/apps/a (Failed: Progress deadline exceeded)"
    )


async def test_timeout_names_what_is_not_ready() -> None:
    api = FakeApi({DEPLOYMENTS: [listed(deployment("web", ready=False))]})
    loop = asyncio.get_running_loop()
    started = loop.time()
    report = await wait_until_ready(api, FakeDiscovery(), [web_ref()], timeout=0.3)
    assert 0.3 <= loop.time() - started < 2
    assert report.outcome is Outcome.TIMEOUT
    assert report.message() == (
        "timed out after 0.3s waiting for 1 of 1 object not yet Current: "
        "Deployment/apps/web (Available: 0/1)"
    )


async def test_a_missing_object_is_not_ready_until_it_appears() -> None:
    api = FakeApi()
    cm = config_map("late")
    report = await wait_until_ready(api, FakeDiscovery(), [ref(cm)], timeout=0.2)
    assert report.outcome is Outcome.TIMEOUT
    assert report.counts == {"NotFound": 1}
    assert report.not_ready[0].message == "Resource not found"

    api = FakeApi()
    wait = asyncio.create_task(wait_until_ready(api, FakeDiscovery(), [ref(cm)], timeout=10))
    await asyncio.wait_for(api.watching.wait(), 5)
    api.send(CONFIG_MAPS, "ADDED", cm)
    assert (await asyncio.wait_for(wait, 5)).outcome is Outcome.CURRENT


async def test_a_deleted_object_becomes_not_found() -> None:
    api = FakeApi({CONFIG_MAPS: [listed(config_map("a"))]})
    refs = [ref(config_map("a")), ref(config_map("b"))]
    progress: list[ReadinessReport] = []

    async def record(report: ReadinessReport) -> None:
        progress.append(report)

    wait = asyncio.create_task(
        wait_until_ready(
            api, FakeDiscovery(), refs, timeout=0.6, progress=record, progress_every=0.05
        )
    )
    await asyncio.wait_for(api.watching.wait(), 5)
    await asyncio.sleep(0.15)  # one progress report before the deletion
    api.send(CONFIG_MAPS, "DELETED", config_map("a"))
    report = await asyncio.wait_for(wait, 5)
    assert report.outcome is Outcome.TIMEOUT
    assert report.counts == {"NotFound": 2}
    assert progress[0].counts == {"Current": 1, "NotFound": 1}


async def test_unknown_kinds_are_not_found() -> None:
    widget = ObjectRef("example.com/v1", "Widget", NS, "w")
    report = await wait_until_ready(FakeApi(), FakeDiscovery(), [widget], timeout=0.1)
    assert report.outcome is Outcome.TIMEOUT
    assert report.not_ready[0].status is Status.NOT_FOUND
    assert "does not serve Widget" in report.not_ready[0].message


async def test_cancel_ends_the_wait_at_once() -> None:
    api = FakeApi({DEPLOYMENTS: [listed(deployment("web", ready=False))]})
    cancel = asyncio.Event()
    wait = asyncio.create_task(
        wait_until_ready(api, FakeDiscovery(), [web_ref()], timeout=30, cancel=cancel)
    )
    await asyncio.wait_for(api.watching.wait(), 5)
    cancel.set()
    report = await asyncio.wait_for(wait, 1)
    assert report.outcome is Outcome.CANCELLED
    assert report.counts == {"InProgress": 1}


async def test_cancelled_before_it_starts() -> None:
    cancel = asyncio.Event()
    cancel.set()
    api = FakeApi()
    report = await wait_until_ready(api, FakeDiscovery(), [web_ref()], timeout=30, cancel=cancel)
    assert report.outcome is Outcome.CANCELLED
    assert report.not_ready[0].message == NOT_OBSERVED
    assert api.lists == []


async def test_progress_is_throttled_and_sent_only_on_change() -> None:
    api = FakeApi({DEPLOYMENTS: [listed(deployment("a", ready=False))]})
    refs = [web_ref("a"), web_ref("b")]
    sent: list[tuple[float, ReadinessReport]] = []
    loop = asyncio.get_running_loop()

    async def record(report: ReadinessReport) -> None:
        sent.append((loop.time(), report))

    wait = asyncio.create_task(
        wait_until_ready(
            api, FakeDiscovery(), refs, timeout=10, progress=record, progress_every=0.5
        )
    )
    started = loop.time()
    await asyncio.wait_for(api.watching.wait(), 5)
    await asyncio.sleep(0.05)
    assert sent == []  # a wait that ends quickly reports nothing
    await asyncio.sleep(0.5)
    assert len(sent) == 1
    assert sent[0][0] - started >= 0.45
    assert sent[0][1].counts == {"InProgress": 1, "NotFound": 1}
    assert sent[0][1].outcome is Outcome.IN_PROGRESS
    # Changes within the window are folded into one call at its end.
    api.send(DEPLOYMENTS, "ADDED", deployment("b", ready=False))
    await asyncio.sleep(0.05)
    api.send(DEPLOYMENTS, "MODIFIED", deployment("b", ready=False) | {"spec": {"replicas": 2}})
    await asyncio.sleep(0.05)
    assert len(sent) == 1
    await asyncio.sleep(0.6)
    assert len(sent) == 2
    assert sent[1][0] - sent[0][0] >= 0.45
    assert sent[1][1].counts == {"InProgress": 2}
    # Nothing changed: nothing sent.
    await asyncio.sleep(0.7)
    assert len(sent) == 2
    api.send(DEPLOYMENTS, "MODIFIED", deployment("a"))
    api.send(DEPLOYMENTS, "MODIFIED", deployment("b"))
    report = await asyncio.wait_for(wait, 5)
    assert report.outcome is Outcome.CURRENT
    assert len(sent) == 2  # the final report is returned, not sent


async def test_objects_seen_current_are_not_watched() -> None:
    api = FakeApi({DEPLOYMENTS: [listed(deployment("web", ready=False))]})
    cm = config_map("settings")
    report = await wait_until_ready(api, FakeDiscovery(), [ref(cm)], timeout=10, seen=[cm])
    assert report.outcome is Outcome.CURRENT
    assert api.lists == []


async def test_objects_seen_in_progress_are_still_watched() -> None:
    api = FakeApi({DEPLOYMENTS: [listed(deployment("web"))]})
    cm = config_map("settings")
    report = await wait_until_ready(
        api,
        FakeDiscovery(),
        [web_ref(), ref(cm)],
        timeout=10,
        seen=[deployment("web", ready=False), cm],
    )
    assert report.outcome is Outcome.CURRENT
    # The ConfigMap was settled by what the apply returned; only the Deployment is listed.
    assert [path for path, _ in api.lists] == [DEPLOYMENTS]


async def test_a_failing_progress_callback_does_not_end_the_wait() -> None:
    api = FakeApi({DEPLOYMENTS: [listed(deployment("web", ready=False))]})

    async def broken(report: ReadinessReport) -> None:
        raise RuntimeError("status write failed")

    wait = asyncio.create_task(
        wait_until_ready(api, FakeDiscovery(), [web_ref()], timeout=10, progress=broken)
    )
    await asyncio.wait_for(api.watching.wait(), 5)
    api.send(DEPLOYMENTS, "MODIFIED", deployment("web"))
    assert (await asyncio.wait_for(wait, 5)).outcome is Outcome.CURRENT


async def test_a_watch_that_ends_is_resumed_from_the_last_version() -> None:
    api = FakeApi({DEPLOYMENTS: [listed(deployment("web", ready=False))]})
    wait = asyncio.create_task(wait_until_ready(api, FakeDiscovery(), [web_ref()], timeout=20))
    await asyncio.wait_for(api.watching.wait(), 5)
    api.send(DEPLOYMENTS, "MODIFIED", deployment("web", ready=False))  # version 101
    api.queue(DEPLOYMENTS).put_nowait(
        {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "150"}}}
    )
    api.queue(DEPLOYMENTS).put_nowait(None)  # the server ends the watch
    api.watching.clear()
    await asyncio.wait_for(api.watching.wait(), 5)
    assert [version for _, version, _ in api.watches] == ["100", "150"]
    assert len(api.lists) == 1
    api.send(DEPLOYMENTS, "MODIFIED", deployment("web"))
    assert (await asyncio.wait_for(wait, 5)).outcome is Outcome.CURRENT


async def test_an_expired_watch_lists_again() -> None:
    api = FakeApi({DEPLOYMENTS: [listed(deployment("web", ready=False))]})
    wait = asyncio.create_task(wait_until_ready(api, FakeDiscovery(), [web_ref()], timeout=20))
    await asyncio.wait_for(api.watching.wait(), 5)
    api.objects[DEPLOYMENTS] = [listed(deployment("web"))]  # changed while not watched
    api.queue(DEPLOYMENTS).put_nowait(
        {"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired"}}
    )
    report = await asyncio.wait_for(wait, 5)
    assert report.outcome is Outcome.CURRENT
    assert len(api.lists) == 2


async def test_api_errors_are_retried_but_forbidden_is_raised(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    api = FakeApi({DEPLOYMENTS: [listed(deployment("web"))]})
    api.list_errors[DEPLOYMENTS] = ApiError(500, {"message": "etcd hiccup"}, "GET", DEPLOYMENTS)
    wait = asyncio.create_task(wait_until_ready(api, FakeDiscovery(), [web_ref()], timeout=10))
    await asyncio.sleep(0.1)
    assert len(api.lists) == 1
    del api.list_errors[DEPLOYMENTS]
    report = await asyncio.wait_for(wait, 5)  # retried after a second
    assert report.outcome is Outcome.CURRENT
    assert len(api.lists) == 2

    monkeypatch.setattr(readiness, "REFUSED_GRACE", 1.5)
    api = FakeApi()
    api.list_errors[DEPLOYMENTS] = ApiError(403, {"message": "forbidden"}, "GET", DEPLOYMENTS)
    with pytest.raises(ApiError) as raised:
        await wait_until_ready(api, FakeDiscovery(), [web_ref()], timeout=10)
    assert raised.value.code == 403


async def test_a_refusal_that_clears_within_the_grace_is_waited_out() -> None:
    """A restarted API server refuses everything until its authorizer has caught up."""
    api = FakeApi({DEPLOYMENTS: [listed(deployment("web"))]})
    api.list_errors[DEPLOYMENTS] = ApiError(403, {"message": "forbidden"}, "GET", DEPLOYMENTS)
    wait = asyncio.create_task(wait_until_ready(api, FakeDiscovery(), [web_ref()], timeout=10))
    await asyncio.sleep(0.1)
    del api.list_errors[DEPLOYMENTS]
    report = await asyncio.wait_for(wait, 5)
    assert report.outcome is Outcome.CURRENT


async def test_pods_of_an_in_progress_stateful_set_are_read() -> None:
    sts = stateful_set("db", ready=False)
    sets = f"/apis/apps/v1/namespaces/{NS}/statefulsets"
    pods = f"/api/v1/namespaces/{NS}/pods"
    crashing = listed(pod("db-0", crash=True))
    crashing["metadata"]["labels"] = {"app": "db"}
    api = FakeApi({sets: [listed(sts)], pods: [crashing]})
    report = await wait_until_ready(api, FakeDiscovery(), [ref(sts)], timeout=10)
    assert report.outcome is Outcome.FAILED
    assert (pods, {"labelSelector": "app=db"}) in api.lists
    assert report.not_ready[0].message == "1 pods have failed"


async def test_a_paused_deployment_is_skipped() -> None:
    api = FakeApi({DEPLOYMENTS: [listed(deployment("web", ready=False, paused=True))]})
    report = await wait_until_ready(api, FakeDiscovery(), [web_ref()], timeout=10)
    assert report.outcome is Outcome.CURRENT
    assert report.skipped == (web_ref(),)
    assert report.total == 0


def test_default_timeout_is_helms() -> None:
    assert DEFAULT_TIMEOUT == 30.0


async def test_watches_that_end_at_once_do_not_spin() -> None:
    api = FakeApi({DEPLOYMENTS: [listed(deployment("web", ready=False))]})
    for _ in range(100):
        api.queue(DEPLOYMENTS).put_nowait(None)  # every watch ends as soon as it starts
    report = await wait_until_ready(api, FakeDiscovery(), [web_ref()], timeout=0.5)
    assert report.outcome is Outcome.TIMEOUT
    assert len(api.watches) <= 3  # the second quick end backs off for a second


# --- shared watches -------------------------------------------------------------------------


class SharedApi(FakeApi):
    """A FakeApi that says which connection and identity it is, as a shared watch needs."""

    api = object()
    remote = ""
    impersonate_user: str | None = None

    async def request(self, method: str, path: str, **_: Any) -> JSON:
        raise AssertionError("readiness lists whole objects through get")


def with_version(obj: JSON, version: int) -> JSON:
    return {**obj, "metadata": {**obj["metadata"], "resourceVersion": str(version)}}


async def test_waits_in_one_namespace_share_one_list_and_watch() -> None:
    waiting = [listed(deployment(name, ready=False)) for name in ("web", "api")]
    api = SharedApi({DEPLOYMENTS: waiting})
    shared = SharedWatches(linger=0.05)
    try:
        waits = [
            asyncio.create_task(
                wait_until_ready(api, FakeDiscovery(), [web_ref(name)], timeout=10, shared=shared)
            )
            for name in ("web", "api")
        ]
        await asyncio.wait_for(api.watching.wait(), 5)
        api.send(DEPLOYMENTS, "MODIFIED", deployment("web"))
        api.send(DEPLOYMENTS, "MODIFIED", deployment("api"))
        reports = await asyncio.wait_for(asyncio.gather(*waits), 5)
        assert [report.outcome for report in reports] == [Outcome.CURRENT] * 2
        # One list and one watch of the whole collection, not one per wait and object.
        assert api.lists == [(DEPLOYMENTS, {})]
        assert [(path, query) for path, _, query in api.watches] == [(DEPLOYMENTS, {})]
    finally:
        await shared.close()


async def test_a_cached_state_older_than_the_apply_is_not_judged() -> None:
    # The cache still holds generation 1, Current; the apply answered generation 2 at a
    # newer version, not yet observed by its controller.
    api = SharedApi({DEPLOYMENTS: [listed(with_version(deployment("web"), 100))]})
    applied = with_version(deployment("web", ready=False), 150)
    applied["metadata"]["generation"] = 2
    shared = SharedWatches()
    try:
        wait = asyncio.create_task(
            wait_until_ready(
                api, FakeDiscovery(), [web_ref()], timeout=10, shared=shared, seen=[applied]
            )
        )
        await asyncio.wait_for(api.watching.wait(), 5)
        await asyncio.sleep(0.05)
        assert not wait.done(), "judged Current from the state before the apply"
        api.version = 150
        observed = deployment("web")
        observed["metadata"]["generation"] = 2
        observed["status"]["observedGeneration"] = 2
        api.send(DEPLOYMENTS, "MODIFIED", observed)
        assert (await asyncio.wait_for(wait, 5)).outcome is Outcome.CURRENT
    finally:
        await shared.close()


async def test_a_refused_shared_watch_falls_back_to_the_waits_own() -> None:
    api = SharedApi({DEPLOYMENTS: [listed(deployment("web"))]})
    api.list_errors[DEPLOYMENTS] = ApiError(403, {"message": "forbidden"}, "GET", DEPLOYMENTS)
    shared = SharedWatches()
    try:
        wait = asyncio.create_task(
            wait_until_ready(api, FakeDiscovery(), [web_ref()], timeout=30, shared=shared)
        )
        await asyncio.sleep(0.05)
        del api.list_errors[DEPLOYMENTS]  # allowed again: the wait's own list succeeds
        assert (await asyncio.wait_for(wait, 5)).outcome is Outcome.CURRENT
        # The wait's own list is by name, as without sharing.
        assert api.lists[-1] == (DEPLOYMENTS, {"fieldSelector": "metadata.name=web"})
    finally:
        await shared.close()


async def test_kinds_outside_the_shared_ones_keep_a_watch_of_their_own_by_name() -> None:
    """A namespace may hold thousands of ConfigMaps, Jobs or custom resources: a wait for
    one of them does not list and keep them all."""
    api = SharedApi({CONFIG_MAPS: [listed(config_map("a"))]})
    shared = SharedWatches()
    try:
        report = await wait_until_ready(
            api, FakeDiscovery(), [ref(config_map("a"))], timeout=5, shared=shared
        )
        assert report.outcome is Outcome.CURRENT
        assert api.lists == [(CONFIG_MAPS, {"fieldSelector": "metadata.name=a"})]
    finally:
        await shared.close()


async def test_versions_that_are_not_numbers_send_the_wait_to_its_own_watch() -> None:
    api = SharedApi({DEPLOYMENTS: [listed(deployment("web"))]})
    api.version = "opaque"  # type: ignore[assignment]
    shared = SharedWatches()
    try:
        wait = wait_until_ready(api, FakeDiscovery(), [web_ref()], timeout=10, shared=shared)
        assert (await asyncio.wait_for(wait, 5)).outcome is Outcome.CURRENT
        assert api.lists[-1] == (DEPLOYMENTS, {"fieldSelector": "metadata.name=web"})
    finally:
        await shared.close()
