"""Waiting until a release's objects are ready, the way Helm 4's watcher-based wait judges them.

After an install or upgrade has applied its objects, `wait_until_ready` watches them until
every one is Current (kstatus), one is Failed, the time runs out, or the caller cancels (a
new generation of the HelmRelease). It follows Helm v4.2.3's `statusWaiter.Wait`
(`pkg/kube/statuswait.go`) with the status readers of fluxcd/cli-utils v1.2.1:

- every applied object is waited for, whatever its kind (kinds without a kstatus rule or a
  known condition are Current at once), except a Deployment with `spec.paused: true`;
- each object is judged by `rudder.kube.kstatus.compute`; a Job is judged by kstatus rules
  (Current once it has started: Helm's normal wait does not wait for Jobs to complete);
- a StatefulSet or ReplicaSet that kstatus finds InProgress is Failed ("N pods have failed")
  when one of its pods (by its label selector) is Failed and not merely unschedulable or
  being deleted (cli-utils' pod-controller reader). As in Helm, the pods are read when the
  object itself changes; if they cannot be read, the object's own verdict stands (Helm would
  report Unknown, which keeps waiting all the same);
- an object that does not exist counts as NotFound, i.e. not ready.

Where rudder deliberately differs: Helm's wait, seeing a Failed object, stops waiting for
that one but goes on until the others are Current, then fails; rudder ends the wait at the
first Failed object, since the action fails either way and the user learns it sooner.

Watching, not polling: the objects are grouped by collection (resource and namespace); each
group gets one list and then one watch (`rudder.kube.watch`), with a `metadata.name` field
selector when it holds a single object and none otherwise (the others are filtered out here).
A watch that ends or breaks is resumed from the last resourceVersion seen; an expired one
(410) is listed again. Pods are judged again every `progress_every` seconds, because an
unschedulable Pod turns Failed only after a grace period, without any change of its own.

The decisions (`judge`, `decide`, `build_report`) are pure functions of the objects seen.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final, Protocol

from rudder.kube.client import JSON, TRANSPORT_ERRORS, ApiError
from rudder.kube.discovery import Resource, UnknownKind
from rudder.kube.kstatus import Status, compute
from rudder.kube.shared_watch import SharedClient, SharedWatches
from rudder.kube.ssa import ObjectRef
from rudder.kube.versions import as_number, at_least
from rudder.kube.watch import (
    Backoff,
    Change,
    Changed,
    Interrupted,
    Listed,
    ListWatchClient,
    changes,
    resource_version,
)

log = logging.getLogger(__name__)

# Helm's status waiter turns a zero timeout into this one (DefaultStatusWatcherTimeout).
DEFAULT_TIMEOUT: Final = 30.0
# How many not-ready objects `summary` names, and how many `as_status` lists.
SUMMARY_LIMIT: Final = 3
STATUS_LIMIT: Final = 10
# Longest kstatus message kept in status.resources.
MESSAGE_LIMIT: Final = 300
# Back-off between attempts when the API answers with an error or the connection drops.
RETRY_START: Final = 1.0
RETRY_MAX: Final = 10.0
# How long a refused list or watch (401, 403) is retried before it counts: a restarted API
# server refuses everything until its authorizer has caught up.
REFUSED_GRACE: Final = 15.0

# Reading a controller's pods can fail in these ways; its own verdict then stands.
_READ_ERRORS: Final[tuple[type[BaseException], ...]] = (ApiError, ValueError, *TRANSPORT_ERRORS)

NOT_OBSERVED: Final = "not observed yet"
RESOURCE_NOT_FOUND: Final = "Resource not found"  # kstatus' words for a missing object

# Kinds whose pods cli-utils inspects when the controller itself is InProgress.
POD_CONTROLLERS: Final = frozenset({("apps", "StatefulSet"), ("apps", "ReplicaSet")})
# Status order for counts.
_STATUS_ORDER: Final = (
    Status.CURRENT,
    Status.IN_PROGRESS,
    Status.FAILED,
    Status.TERMINATING,
    Status.NOT_FOUND,
    Status.UNKNOWN,
)


class Outcome(StrEnum):
    """Where a wait stands (IN_PROGRESS) or how it ended."""

    IN_PROGRESS = "InProgress"
    CURRENT = "Current"  # every object waited for is Current
    FAILED = "Failed"  # an object is Failed
    TIMEOUT = "Timeout"  # the time ran out first
    CANCELLED = "Cancelled"  # the caller's cancel event was set first


@dataclass(frozen=True)
class ObjectStatus:
    """The kstatus verdict on one object."""

    ref: ObjectRef
    status: Status
    message: str

    def describe(self) -> str:
        """`Deployment/ns/web (Ready: 0/2)`; the status is named unless it is InProgress."""
        if not self.message:
            return f"{self.ref} ({self.status})"
        if self.status is Status.IN_PROGRESS:
            return f"{self.ref} ({self.message})"
        return f"{self.ref} ({self.status}: {self.message})"

    def as_status(self) -> dict[str, str]:
        """An entry of `status.resources.notReady`."""
        message = self.message
        if len(message) > MESSAGE_LIMIT:
            message = message[: MESSAGE_LIMIT - 3] + "..."
        return {
            "apiVersion": self.ref.api_version,
            "kind": self.ref.kind,
            "namespace": self.ref.namespace,
            "name": self.ref.name,
            "status": str(self.status),
            "message": message,
        }


@dataclass(frozen=True)
class ReadinessReport:
    """The state of a wait: counts by kstatus status and the objects not yet Current.

    `not_ready` lists Failed objects first, then the others in the order they were given.
    `skipped` are the objects not waited for (paused Deployments); `total` excludes them.
    `elapsed` and `timeout` (seconds) only word messages: reports compare equal without them.
    """

    outcome: Outcome
    total: int
    counts: dict[str, int]
    not_ready: tuple[ObjectStatus, ...]
    skipped: tuple[ObjectRef, ...] = ()
    elapsed: float = field(default=0.0, compare=False)
    timeout: float = field(default=0.0, compare=False)

    @property
    def ready(self) -> bool:
        return self.outcome is Outcome.CURRENT

    @property
    def failed(self) -> tuple[ObjectStatus, ...]:
        return tuple(s for s in self.not_ready if s.status is Status.FAILED)

    def summary(self, limit: int = SUMMARY_LIMIT) -> str:
        """E.g. `2 of 7 objects not yet Current: Deployment/ns/web (Ready: 0/2), ...`."""
        if self.total == 0:
            return "no objects to wait for"
        if not self.not_ready:
            return (
                "1 object is Current"
                if self.total == 1
                else f"all {self.total} objects are Current"
            )
        noun = "object" if self.total == 1 else "objects"
        head = f"{len(self.not_ready)} of {self.total} {noun} not yet Current"
        return f"{head}: {_name(self.not_ready, limit)}"

    def message(self) -> str:
        """What the outcome means for the action, naming the objects."""
        if self.outcome is Outcome.FAILED:
            failed = self.failed
            noun = "object" if len(failed) == 1 else "objects"
            return f"{len(failed)} {noun} failed: {_name(failed, SUMMARY_LIMIT)}"
        if self.outcome is Outcome.TIMEOUT:
            return f"timed out after {_duration(self.timeout)} waiting for {self.summary()}"
        if self.outcome is Outcome.CANCELLED:
            return f"wait cancelled: {self.summary()}"
        return self.summary()

    def as_status(self, limit: int = STATUS_LIMIT) -> dict[str, Any]:
        """`status.resources`: counts by status and (at most `limit`) objects not Current."""
        return {
            "counts": dict(self.counts),
            "notReady": [entry.as_status() for entry in self.not_ready[:limit]],
        }


def _name(statuses: Sequence[ObjectStatus], limit: int) -> str:
    named = ", ".join(entry.describe() for entry in statuses[:limit])
    rest = len(statuses) - limit
    return f"{named}, and {rest} more" if rest > 0 else named


def _duration(seconds: float) -> str:
    """Go-like: 8s, 1m30s, 5m0s."""
    whole = int(seconds)
    if whole != seconds:
        return f"{seconds:g}s"
    if whole < 60:
        return f"{whole}s"
    minutes, rest = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{rest}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes}m{rest}s"


# --- pure judgement -------------------------------------------------------------------------


def _group_kind(obj: Mapping[str, Any]) -> tuple[str, str]:
    api_version = str(obj.get("apiVersion") or "")
    group = api_version.split("/", 1)[0] if "/" in api_version else ""
    return group, str(obj.get("kind") or "")


def is_paused_deployment(obj: Mapping[str, Any]) -> bool:
    """Helm's wait skips a Deployment whose `spec.paused` is true."""
    spec = obj.get("spec")
    return (
        _group_kind(obj) == ("apps", "Deployment")
        and isinstance(spec, Mapping)
        and spec.get("paused") is True
    )


def needs_pods(obj: Mapping[str, Any], *, now: datetime | None = None) -> bool:
    """Whether the verdict on `obj` depends on its pods: a StatefulSet or ReplicaSet that
    kstatus finds InProgress (cli-utils then looks for failed pods)."""
    return (
        _group_kind(obj) in POD_CONTROLLERS and compute(obj, now=now).status is Status.IN_PROGRESS
    )


def _transient_pod_failure(pod: Mapping[str, Any]) -> bool:
    """A pod being deleted or waiting to be scheduled may still come right."""
    meta = pod.get("metadata")
    if isinstance(meta, Mapping) and meta.get("deletionTimestamp"):
        return True
    status = pod.get("status")
    conditions = status.get("conditions") if isinstance(status, Mapping) else None
    for condition in conditions if isinstance(conditions, list) else []:
        if (
            isinstance(condition, Mapping)
            and condition.get("type") == "PodScheduled"
            and condition.get("status") == "False"
            and condition.get("reason") == "Unschedulable"
        ):
            return True
    return False


def judge(
    ref: ObjectRef,
    obj: Mapping[str, Any] | None,
    *,
    pods: Sequence[Mapping[str, Any]] | None = None,
    now: datetime | None = None,
) -> ObjectStatus | None:
    """The verdict on one object as last seen (None: it does not exist), or None when it
    is not waited for (a paused Deployment). `pods` are the pods matching its selector, when
    they were read (see `needs_pods`); they only matter for an InProgress StatefulSet or
    ReplicaSet."""
    if obj is None:
        return ObjectStatus(ref, Status.NOT_FOUND, RESOURCE_NOT_FOUND)
    if is_paused_deployment(obj):
        return None
    moment = now if now is not None else datetime.now(UTC)
    result = compute(obj, now=moment)
    if result.status is Status.IN_PROGRESS and pods and _group_kind(obj) in POD_CONTROLLERS:
        failed = [
            pod
            for pod in pods
            if compute(pod, now=moment).status is Status.FAILED and not _transient_pod_failure(pod)
        ]
        if failed:
            return ObjectStatus(ref, Status.FAILED, f"{len(failed)} pods have failed")
    return ObjectStatus(ref, result.status, result.message)


def decide(statuses: Sequence[ObjectStatus]) -> Outcome:
    """FAILED when any object is Failed, CURRENT when all are Current, else IN_PROGRESS."""
    if any(entry.status is Status.FAILED for entry in statuses):
        return Outcome.FAILED
    if all(entry.status is Status.CURRENT for entry in statuses):
        return Outcome.CURRENT
    return Outcome.IN_PROGRESS


def build_report(
    statuses: Sequence[ObjectStatus],
    *,
    skipped: Sequence[ObjectRef] = (),
    outcome: Outcome | None = None,
    elapsed: float = 0.0,
    timeout: float = 0.0,
) -> ReadinessReport:
    """The report on `statuses` (in the order the objects were given); `outcome` defaults
    to `decide(statuses)`."""
    tally: dict[Status, int] = {}
    for entry in statuses:
        tally[entry.status] = tally.get(entry.status, 0) + 1
    counts = {str(status): tally[status] for status in _STATUS_ORDER if tally.get(status)}
    failed = [entry for entry in statuses if entry.status is Status.FAILED]
    waiting = [entry for entry in statuses if entry.status not in (Status.FAILED, Status.CURRENT)]
    return ReadinessReport(
        outcome=outcome if outcome is not None else decide(statuses),
        total=len(statuses),
        counts=counts,
        not_ready=tuple(failed + waiting),
        skipped=tuple(skipped),
        elapsed=elapsed,
        timeout=timeout,
    )


def label_selector(selector: object) -> str | None:
    """A LabelSelector (`matchLabels`, `matchExpressions`) as a query string, as Go's
    LabelSelectorAsSelector writes it; "" selects everything, None means it is invalid."""
    if selector is None:
        return ""
    if not isinstance(selector, Mapping):
        return None
    parts: list[str] = []
    labels = selector.get("matchLabels") or {}
    expressions = selector.get("matchExpressions") or []
    if not isinstance(labels, Mapping) or not isinstance(expressions, list):
        return None
    for key, value in labels.items():
        if not isinstance(value, str):
            return None
        parts.append(f"{key}={value}")
    for expression in expressions:
        if not isinstance(expression, Mapping):
            return None
        key = expression.get("key")
        operator = expression.get("operator")
        values = expression.get("values") or []
        if not isinstance(key, str) or not isinstance(values, list):
            return None
        if operator in ("In", "NotIn"):
            if not values or not all(isinstance(v, str) for v in values):
                return None
            word = "in" if operator == "In" else "notin"
            parts.append(f"{key} {word} ({','.join(sorted(values))})")
        elif operator == "Exists" and not values:
            parts.append(key)
        elif operator == "DoesNotExist" and not values:
            parts.append(f"!{key}")
        else:
            return None
    return ",".join(sorted(parts))


# --- the cluster side -----------------------------------------------------------------------


# What the wait needs of the API client (`rudder.kube.client.KubeClient` has it).
ListWatch = ListWatchClient


class ResourceLookup(Protocol):
    """What the wait needs of discovery (`rudder.kube.discovery.Discovery` has it)."""

    async def resource(self, api_version: str, kind: str) -> Resource: ...


Progress = Callable[[ReadinessReport], Awaitable[None]]


# The workload kinds charts wait on, whose namespace collections stay small. Other kinds
# (Jobs, Pods and custom resources a namespace may hold thousands of, cluster-scoped ones)
# get a watch of their own, of the one name when the group has one object.
SHARED_KINDS = frozenset({("apps", "Deployment"), ("apps", "StatefulSet"), ("apps", "DaemonSet")})


@dataclass
class _Group:
    """Refs in one collection: one list + watch serves them all."""

    resource: Resource
    namespace: str
    refs: dict[tuple[str, str], list[ObjectRef]]  # by (namespace, name)

    @property
    def collection(self) -> str:
        return self.resource.path(self.namespace or None)

    @property
    def shareable(self) -> bool:
        """Whether the group is followed in a shared watch of its namespace's collection
        (which lists and keeps every object of the kind there): only SHARED_KINDS."""
        kind = (self.resource.group, self.resource.kind)
        return bool(self.namespace) and kind in SHARED_KINDS

    def query(self) -> dict[str, str]:
        if len(self.refs) == 1:
            _, name = next(iter(self.refs))
            return {"fieldSelector": f"metadata.name={name}"}
        return {}


# An object's apply answer, by group, kind, namespace and name: its resourceVersion.
_Floor = tuple[str, str, str, str]


class _Fatal(Exception):
    """A group's watch cannot go on (the API refuses it); the wait raises the cause."""


class _Watch:
    """The objects being waited for and what was last seen of each."""

    def __init__(self, kube: ListWatch, refs: Sequence[ObjectRef]) -> None:
        self.kube = kube
        self.order = list(refs)
        self.verdicts: dict[ObjectRef, ObjectStatus | None] = {
            ref: ObjectStatus(ref, Status.UNKNOWN, NOT_OBSERVED) for ref in refs
        }
        self.pods_seen: dict[ObjectRef, JSON] = {}  # bare Pods, judged again with the clock
        self.changed = asyncio.Event()
        self.fatal: BaseException | None = None

    def settle(self, seen: Sequence[JSON]) -> list[ObjectRef]:
        """Judge the refs whose object is in `seen`; the refs that still need watching."""
        objects = {ObjectRef.of(obj).identity(): obj for obj in seen}
        waiting = []
        for ref in self.order:
            obj = objects.get(ref.identity())
            if obj is not None and not needs_pods(obj):
                self.set_verdict(ref, obj)
                verdict = self.verdicts[ref]
                if verdict is None or verdict.status is Status.CURRENT:
                    continue
            waiting.append(ref)
        return waiting

    # -- state ---------------------------------------------------------------------------

    def report(self, outcome: Outcome | None, elapsed: float, timeout: float) -> ReadinessReport:
        now = datetime.now(UTC)
        for ref, pod in self.pods_seen.items():
            self.verdicts[ref] = judge(ref, pod, now=now)
        statuses = [v for ref in self.order if (v := self.verdicts[ref]) is not None]
        skipped = [ref for ref in self.order if self.verdicts[ref] is None]
        return build_report(
            statuses, skipped=skipped, outcome=outcome, elapsed=elapsed, timeout=timeout
        )

    def set_verdict(
        self, ref: ObjectRef, obj: JSON | None, pods: Sequence[JSON] | None = None
    ) -> None:
        self.verdicts[ref] = judge(ref, obj, pods=pods)
        if obj is not None and ref.kind == "Pod" and ref.group == "":
            self.pods_seen[ref] = obj
        else:
            self.pods_seen.pop(ref, None)
        self.changed.set()

    def set_message(self, ref: ObjectRef, status: Status, message: str) -> None:
        self.verdicts[ref] = ObjectStatus(ref, status, message)
        self.pods_seen.pop(ref, None)
        self.changed.set()

    # -- observing -------------------------------------------------------------------------

    async def observe(self, group: _Group, key: tuple[str, str], obj: JSON | None) -> None:
        refs = group.refs.get(key)
        if not refs:
            return  # another object of the collection
        if obj is not None:
            # List items lack apiVersion and kind; kstatus needs them to pick its rule.
            obj = {**obj, "apiVersion": group.resource.api_version, "kind": group.resource.kind}
        pods = await self._pods(obj) if obj is not None and needs_pods(obj) else None
        for ref in refs:
            self.set_verdict(ref, obj, pods)

    async def _pods(self, obj: JSON) -> list[JSON] | None:
        """The pods matching the controller's selector; None when they cannot be read."""
        namespace = str((obj.get("metadata") or {}).get("namespace") or "")
        selector = label_selector((obj.get("spec") or {}).get("selector"))
        if not namespace or selector is None:
            return None
        try:
            listed = await self.kube.get(
                f"/api/v1/namespaces/{namespace}/pods", labelSelector=selector
            )
        except _READ_ERRORS as error:
            log.debug("reading the pods of %s/%s: %s", namespace, obj.get("kind"), error)
            return None
        items = listed.get("items") or []
        return [
            {**item, "apiVersion": "v1", "kind": "Pod"} for item in items if isinstance(item, dict)
        ]

    async def apply_listing(self, group: _Group, items: Sequence[JSON]) -> None:
        found = {_key(item): item for item in items}
        for key in group.refs:
            await self.observe(group, key, found.get(key))
        self.changed.set()

    async def follow(self, group: _Group, deadline: float) -> None:
        """List, then watch, the group's collection until cancelled, feeding what it sees.
        Raises _Fatal when the API refuses to let it list or watch."""
        loop = asyncio.get_running_loop()
        refused_since: float | None = None
        while True:
            stream = changes(
                self.kube,
                group.collection,
                query=group.query(),
                fatal=(401, 403),
                backoff=Backoff(RETRY_START, RETRY_MAX),
                deadline=deadline,
            )
            try:
                async with aclosing(stream):
                    async for change in stream:
                        refused_since = None
                        await self._feed(group, change)
                return
            except ApiError as error:
                # A restarted API server refuses requests until its authorizer has caught
                # up: a refusal is taken as final only once it has lasted REFUSED_GRACE.
                now = loop.time()
                refused_since = refused_since if refused_since is not None else now
                if now - refused_since >= REFUSED_GRACE:
                    raise _Fatal(str(error)) from error
                await asyncio.sleep(RETRY_START)

    async def follow_shared(
        self, shared: SharedWatches, group: _Group, floors: Mapping[_Floor, str]
    ) -> None:
        """Follow the group in the shared watch of its whole collection until cancelled;
        returns when that cannot serve (refused, not served, too many collections), for the
        group's own watch to take over. An object counts only once the cache holds it at
        least as new as its apply answer (`floors`): an older state would judge the
        generation before."""
        if not isinstance(self.kube, SharedClient):
            return
        kind = (group.resource.group, group.resource.kind)
        if any(as_number(version) is None for version in floors.values()):
            return  # versions that are not numbers cannot be compared: its own watch
        async with shared.use(self.kube, group.resource.path(group.namespace or None)) as cached:
            if cached is None or not await cached.wait_synced():
                return
            if as_number(cached.version) is None:
                return
            dirty: set[tuple[str, str]] = set(group.refs)  # judged again: only what changed
            changed = asyncio.Event()

            def heard(key: tuple[str, str] | None) -> None:
                dirty.update(group.refs if key is None else (key,))
                changed.set()

            stop = cached.listen(list(group.refs), heard)
            try:
                while cached.synced:
                    changed.clear()
                    keys, dirty = list(dirty), set()
                    for key in keys:
                        obj = cached.get(key)
                        floor = floors.get((*kind, *key))
                        if obj is not None and at_least(resource_version(obj), floor):
                            await self.observe(group, key, obj)
                        elif obj is None and cached.caught_up(floor):
                            await self.observe(group, key, None)
                    if not dirty:
                        await changed.wait()
            finally:
                stop()

    async def _feed(self, group: _Group, change: Change) -> None:
        if isinstance(change, Listed):
            await self.apply_listing(group, change.items)
        elif isinstance(change, Changed):
            obj = None if change.type == "DELETED" else change.object
            await self.observe(group, _key(change.object), obj)
        elif (
            isinstance(change, Interrupted)
            and isinstance(change.error, ApiError)
            and change.error.code == 404
        ):
            # The collection is not served (any more).
            message = change.error.message or str(change.error)
            for refs in group.refs.values():
                for ref in refs:
                    self.set_message(ref, Status.NOT_FOUND, message)


async def _groups(
    discovery: ResourceLookup, refs: Sequence[ObjectRef], watch: _Watch
) -> list[_Group]:
    groups: dict[str, _Group] = {}
    for ref in refs:
        try:
            resource = await discovery.resource(ref.api_version, ref.kind)
        except UnknownKind as error:
            watch.set_message(ref, Status.NOT_FOUND, str(error))
            continue
        namespace = ref.namespace if resource.namespaced else ""
        group = _Group(resource, namespace, {})
        group = groups.setdefault(group.collection, group)
        group.refs.setdefault((namespace, ref.name), []).append(ref)
    return list(groups.values())


def _key(obj: Mapping[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


async def wait_until_ready(
    kube: ListWatch,
    discovery: ResourceLookup,
    refs: Sequence[ObjectRef],
    *,
    timeout: float,  # noqa: ASYNC109 (the wait's own limit; its outcome reports it)
    cancel: asyncio.Event | None = None,
    progress: Progress | None = None,
    progress_every: float = 5.0,
    seen: Sequence[JSON] = (),
    shared: SharedWatches | None = None,
) -> ReadinessReport:
    """Watch `refs` until all are Current, one is Failed, `timeout` seconds pass (<= 0:
    Helm's 30 s) or `cancel` is set; the report's `outcome` says which.

    `seen` are objects as they stood a moment ago (the answers of their apply): a ref whose
    object there is already Current (or not waited for) is settled without a watch. kstatus
    is a function of the object, so a list would judge the same object the same way.

    `progress`, when given, is awaited with the report while the wait goes on: after
    `progress_every` seconds, then at most every `progress_every` seconds, and only when the
    report changed (a quick wait reports nothing). Its exceptions are logged.
    With `shared`, each collection is followed in the shared watch of rudder's other waits
    as the same identity (no list or watch of its own); a collection the shared watch
    cannot serve gets its own list and watch.
    Raises ApiError when the API refuses to list or watch the objects (401, 403); other API
    and connection errors are retried until the time runs out.
    """
    seconds = timeout if timeout > 0 else DEFAULT_TIMEOUT
    loop = asyncio.get_running_loop()
    started = loop.time()
    deadline = started + seconds
    watch = _Watch(kube, list(dict.fromkeys(refs)))

    def report(outcome: Outcome | None = None) -> ReadinessReport:
        return watch.report(outcome, loop.time() - started, seconds)

    if cancel is not None and cancel.is_set():
        return report(Outcome.CANCELLED)
    groups = await _groups(discovery, watch.settle(seen), watch)
    floors = {(*_group_kind(obj), *_key(obj)): resource_version(obj) for obj in seen}

    async def follow(group: _Group) -> None:
        try:
            if shared is not None and group.shareable:
                await watch.follow_shared(shared, group, floors)  # returns if it cannot serve
            await watch.follow(group, deadline)
        except _Fatal as error:
            watch.fatal = error.__cause__ or error
            watch.changed.set()
        except Exception as error:  # a bug must end the wait, not leave it blind
            log.exception("watching %s failed", group.collection)
            watch.fatal = error
            watch.changed.set()

    async def relay(event: asyncio.Event) -> None:
        await event.wait()
        watch.changed.set()

    tasks = [asyncio.create_task(follow(group)) for group in groups]
    if cancel is not None:
        tasks.append(asyncio.create_task(relay(cancel)))
    try:
        sent: ReadinessReport | None = None
        next_progress = started + progress_every
        while True:
            watch.changed.clear()
            if watch.fatal is not None:
                raise watch.fatal
            if cancel is not None and cancel.is_set():
                return report(Outcome.CANCELLED)
            current = report()
            if current.outcome is not Outcome.IN_PROGRESS:
                return current
            now = loop.time()
            if now >= deadline:
                return report(Outcome.TIMEOUT)
            if progress is not None and current != sent and now >= next_progress:
                await _call(progress, current)
                sent = current
                now = loop.time()
                next_progress = now + progress_every
            # Sleep until something changes, the deadline, or the next progress/Pod check.
            wake = min(deadline, now + max(progress_every, 0.05))
            try:
                async with asyncio.timeout(wake - now):
                    await watch.changed.wait()
            except TimeoutError:
                pass
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _call(progress: Progress, report: ReadinessReport) -> None:
    try:
        await progress(report)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("readiness progress callback failed")
