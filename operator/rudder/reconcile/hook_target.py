"""A hook's object on the cluster: resolved, applied, deleted and waited for, one at a time.

These are steps 2, 4 and 5 of `hook_runner`'s sequence (which says how each is done, as
Helm does it), with Helm's hook readiness judgement of Jobs and Pods.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp

from rudder.kube.client import APPLY_PATCH, JSON, ApiError
from rudder.kube.discovery import Resource
from rudder.kube.ssa import Applier, ObjectRef, ensure_namespace
from rudder.kube.watch import Changed, Listed, changes
from rudder.release.codec import Hook
from rudder.release.manifest import hook_resource

# Answers to a hook's list or watch that waiting longer would not change.
HOOK_WATCH_FATAL = frozenset({400, 401, 403, 404})
_DEADLINE_EXCEEDED = "context deadline exceeded"  # Go's ctx.Err() text, as Helm reports it


# --- Helm's hook readiness (pure) -----------------------------------------------------------


@dataclass(frozen=True)
class HookStatus:
    """A hook object's state as Helm's hook status readers judge it (kstatus words)."""

    status: str  # Current | InProgress | Failed | NotFound
    message: str

    @property
    def done(self) -> bool:
        return self.status in ("Current", "Failed")

    @property
    def failed(self) -> bool:
        return self.status == "Failed"


NOT_FOUND = HookStatus("NotFound", "Resource not found")


def _int_field(obj: Mapping[str, Any], path: Sequence[str], default: int) -> int:
    value: Any = obj
    for key in path:
        if not isinstance(value, Mapping) or key not in value:
            return default
        value = value[key]
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def job_status(job: Mapping[str, Any]) -> HookStatus:
    """Helm's hook judgement of a Job: done only when Complete, failed when Failed.

    The first condition with status True of type Complete or Failed decides; anything
    else (a started, running, or suspended Job) is in progress.
    """
    parallelism = _int_field(job, ("spec", "parallelism"), 1)
    completions = _int_field(job, ("spec", "completions"), parallelism)
    succeeded = _int_field(job, ("status", "succeeded"), 0)
    failed = _int_field(job, ("status", "failed"), 0)
    for condition in (job.get("status") or {}).get("conditions") or []:
        if not isinstance(condition, Mapping) or condition.get("status") != "True":
            continue
        if condition.get("type") == "Complete":
            return HookStatus("Current", f"Job Completed. succeeded: {succeeded}/{completions}")
        if condition.get("type") == "Failed":
            return HookStatus("Failed", f"Job Failed. failed: {failed}/{completions}")
    return HookStatus("InProgress", "Job in progress")


def pod_status(pod: Mapping[str, Any]) -> HookStatus:
    """Helm's hook judgement of a Pod: by phase only (Running and Ready is not done)."""
    name = (pod.get("metadata") or {}).get("name", "")
    phase = (pod.get("status") or {}).get("phase")
    if phase == "Succeeded":
        return HookStatus("Current", f"pod {name} succeeded")
    if phase == "Failed":
        return HookStatus("Failed", f"pod {name} failed")
    return HookStatus("InProgress", "Pod in progress")


def status_reader(group: str, kind: str) -> Callable[[Mapping[str, Any]], HookStatus] | None:
    """The judgement for a hook kind; None where Helm takes the object as done once it exists."""
    if (group, kind) == ("batch", "Job"):
        return job_status
    if (group, kind) == ("", "Pod"):
        return pod_status
    return None


def _identifier(ref: ObjectRef) -> str:
    # kstatus identifiers print as Kind/namespace/name (namespace empty when cluster-scoped).
    return f"{ref.kind}/{ref.namespace}/{ref.name}"


# --- the cluster side -----------------------------------------------------------------------


class HookError(Exception):
    """One step on one hook object failed; the message is Helm's wording of it."""


@dataclass(frozen=True)
class HookObject:
    """A hook's object, placed in its namespace, with the resource that serves it."""

    obj: JSON
    ref: ObjectRef
    resource: Resource


class HookTarget(Protocol):
    """What the runner does to the cluster, one hook object at a time. Each method raises
    HookError with a message fit for the release record."""

    async def resolve(self, hook: Hook) -> HookObject: ...

    async def apply(self, target: HookObject) -> None: ...

    async def delete(self, target: HookObject, seconds: float) -> None: ...

    async def wait(self, target: HookObject, seconds: float) -> None: ...


_CLUSTER_ERRORS = (ApiError, LookupError, ValueError, aiohttp.ClientError, OSError)


class ClusterTarget:
    """HookTarget on the API server through an Applier (its identity and field manager)."""

    def __init__(self, applier: Applier, namespace: str) -> None:
        self.applier = applier
        self.namespace = namespace

    async def resolve(self, hook: Hook) -> HookObject:
        try:
            obj = hook_resource(hook)
            if obj is None:
                raise HookError("no objects visited")
            resource = await self.applier.discovery.resource(
                str(obj.get("apiVersion", "")), str(obj.get("kind", ""))
            )
        except _CLUSTER_ERRORS as error:
            raise HookError(str(error)) from error
        placed = ensure_namespace(obj, resource, self.namespace)
        return HookObject(placed, ObjectRef.of(placed), resource)

    async def apply(self, target: HookObject) -> None:
        query: dict[str, str | bool] = {
            "fieldManager": self.applier.field_manager,
            "force": False,
            "fieldValidation": "Strict",
        }
        try:
            await self.applier.kube.request(
                "PATCH",
                target.resource.path(target.ref.namespace or None, target.ref.name),
                query=query,
                body=target.obj,
                content_type=APPLY_PATCH,
            )
        except ApiError as error:
            raise HookError(error.message or str(error)) from error
        except _CLUSTER_ERRORS as error:
            raise HookError(str(error)) from error

    async def delete(self, target: HookObject, seconds: float) -> None:
        """Delete with background propagation; wait up to `seconds` until it is gone."""
        try:
            sent = await self.applier.delete(target.ref, propagation="Background")
        except ApiError as error:
            raise HookError(error.message or str(error)) from error
        except _CLUSTER_ERRORS as error:
            raise HookError(str(error)) from error
        if not sent:
            return  # it was not there
        last: JSON | None = None

        def gone(obj: JSON | None) -> bool:
            nonlocal last
            last = obj
            return obj is None

        try:
            await self._watch(target, seconds, gone)
        except TimeoutError:
            terminating = (last or {}).get("metadata", {}).get("deletionTimestamp")
            state = "Terminating" if terminating else "InProgress"
            raise HookError(
                f"resource {_identifier(target.ref)} still exists. status: {state}\n"
                + _DEADLINE_EXCEEDED
            ) from None

    async def wait(self, target: HookObject, seconds: float) -> None:
        """Wait up to `seconds` until the object is done by Helm's hook readiness;
        HookError if it fails or the time runs out."""
        reader = status_reader(target.resource.group, target.resource.kind)
        if reader is None:
            return  # done once applied
        observed = HookStatus("InProgress", "")

        def done(obj: JSON | None) -> bool:
            nonlocal observed
            observed = NOT_FOUND if obj is None else reader(obj)
            return observed.done

        try:
            await self._watch(target, seconds, done)
        except TimeoutError:
            raise HookError(
                f"resource {_identifier(target.ref)} not ready. status: {observed.status}, "
                f"message: {observed.message}\n{_DEADLINE_EXCEEDED}"
            ) from None
        if observed.failed:
            raise HookError(
                f"resource {_identifier(target.ref)} not ready. status: {observed.status}, "
                f"message: {observed.message}"
            )

    async def _watch(
        self, target: HookObject, seconds: float, until: Callable[[JSON | None], bool]
    ) -> None:
        """Feed `until` the object (None while absent) on every change until it says
        stop, by list + watch on its name (`rudder.kube.watch`: broken connections and
        server errors are retried). Raises TimeoutError after `seconds`; HookError when the
        API refuses to let it list or watch."""
        collection = target.resource.path(target.ref.namespace or None)
        stream = changes(
            self.applier.kube,
            collection,
            query={"fieldSelector": f"metadata.name={target.ref.name}"},
            fatal=HOOK_WATCH_FATAL,
            deadline=asyncio.get_running_loop().time() + seconds,
        )
        try:
            async with asyncio.timeout(seconds), aclosing(stream):
                async for change in stream:
                    if isinstance(change, Listed):
                        obj = change.items[0] if change.items else None
                    elif isinstance(change, Changed):
                        obj = None if change.type == "DELETED" else change.object
                    else:
                        continue
                    if until(obj):
                        return
        except ApiError as error:
            raise HookError(error.message or str(error)) from error
