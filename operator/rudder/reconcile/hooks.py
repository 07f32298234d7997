"""Helm hooks, run the way Helm v4.2.3 runs them (`pkg/action/hooks.go`, `execHook`).

For one event (pre-install, post-upgrade, test, ...) the release's hooks that list it run one
at a time, ordered by weight, then name; hooks equal in both keep the kind order the
manifest sorter gave them. For each hook:

1. a hook without a delete policy gets `before-hook-creation` (and keeps it in the release);
2. with `before-hook-creation`, the object a previous run left is deleted (background
   propagation) and waited for until it is gone;
3. `last_run` becomes {started_at: now, phase: Running} and the release is recorded (the
   optional `record` callback, Helm's `recordRelease`);
4. the object is applied with server-side apply under the applier's field manager, without
   forcing and with strict field validation; Helm's ownership metadata is *not* added to
   hooks (Helm 4 adds it to the release's other objects only);
5. it is waited for with Helm's hook readiness: a Job until its `Complete` condition is True
   (`Failed` True fails it), a Pod until phase Succeeded (Failed fails it); any other kind is
   done once applied. The wait uses list + watch on the object's name, up to `timeout`.

A hook that fails (apply refused, Failed, timed out) gets {completed_at, phase: Failed}; the
sequence stops, the failed hook is deleted if it has `hook-failed`, the hooks that succeeded
before it are deleted if they have `hook-succeeded`, and `HookFailed` is raised. When all
succeed, the hooks with `hook-succeeded` are deleted, last first. CustomResourceDefinition
hooks are never deleted. Output log policies (`helm.sh/hook-output-log-policy`) are kept in
the release but not acted on: rudder has no terminal to copy pod logs to.

Where rudder deliberately differs: Helm 4's default wait strategy (`hookOnly`) does not wait
for deletions, so a `before-hook-creation` delete may race the re-creation; rudder always
waits (as Helm does with `--wait=watcher` and in `helm test`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass, replace
from typing import Any, Protocol

import aiohttp

from rudder.kube.client import APPLY_PATCH, JSON, ApiError
from rudder.kube.discovery import Resource
from rudder.kube.ssa import Applier, ObjectRef, ensure_namespace
from rudder.kube.watch import Changed, Listed, changes
from rudder.release.codec import GoTime, Hook, HookExecution
from rudder.release.manifest import HOOK_EVENTS, hook_resource, with_default_delete_policy

log = logging.getLogger(__name__)

# Hook events (Helm's `release.HookEvent`).
PRE_INSTALL = "pre-install"
POST_INSTALL = "post-install"
PRE_DELETE = "pre-delete"
POST_DELETE = "post-delete"
PRE_UPGRADE = "pre-upgrade"
POST_UPGRADE = "post-upgrade"
PRE_ROLLBACK = "pre-rollback"
POST_ROLLBACK = "post-rollback"
TEST = "test"
EVENTS = frozenset(HOOK_EVENTS.values())

# Delete policies (`release.HookDeletePolicy`).
HOOK_SUCCEEDED = "hook-succeeded"
HOOK_FAILED = "hook-failed"
BEFORE_HOOK_CREATION = "before-hook-creation"

# Phases of `last_run` (`release.HookPhase`).
PHASE_RUNNING = "Running"
PHASE_SUCCEEDED = "Succeeded"
PHASE_FAILED = "Failed"

# Helm's status waiter turns a zero timeout into this one.
DEFAULT_TIMEOUT = 30.0
# Answers to a hook's list or watch that waiting longer would not change.
HOOK_WATCH_FATAL = frozenset({400, 401, 403, 404})
_DEADLINE_EXCEEDED = "context deadline exceeded"  # Go's ctx.Err() text, as Helm reports it


# --- pure parts -----------------------------------------------------------------------------


def execution_order(hooks: Sequence[Hook], event: str) -> list[int]:
    """Indexes of the hooks Helm runs for `event`, in the order it runs them.

    Helm appends a hook once per matching entry of its events (a hook listing `test` and
    `test-success` runs twice), then stable-sorts by weight and name, so hooks equal in both
    keep their order in the release (the manifest sorter's kind order).
    """
    chosen = [index for index, hook in enumerate(hooks) for e in hook.events if e == event]
    return sorted(chosen, key=lambda index: (hooks[index].weight, hooks[index].name))


def has_delete_policy(hook: Hook, policy: str) -> bool:
    """Whether the hook is deleted on `policy`; CustomResourceDefinitions never are."""
    return hook.kind != "CustomResourceDefinition" and policy in hook.delete_policies


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


def action_message(event: str, message: str) -> str:
    """The error an action reports for a failed hook, worded as Helm 4's actions word it.

    install: `failed pre-install: ...`; upgrade: `pre-upgrade hooks failed: ...`; rollback,
    uninstall and test pass the hook's error on unchanged.
    """
    if event in (PRE_INSTALL, POST_INSTALL):
        return f"failed {event}: {message}"
    if event in (PRE_UPGRADE, POST_UPGRADE):
        return f"{event} hooks failed: {message}"
    return message


def _identifier(ref: ObjectRef) -> str:
    # kstatus identifiers print as Kind/namespace/name (namespace empty when cluster-scoped).
    return f"{ref.kind}/{ref.namespace}/{ref.name}"


# --- errors ---------------------------------------------------------------------------------


class HookError(Exception):
    """One step on one hook object failed; the message is Helm's wording of it."""


class HookFailed(Exception):
    """A hook failed or timed out, or could not be created or deleted; the sequence stopped.

    `hook` is the hook as recorded (its `last_run` Failed when it ran); `hooks` is the
    release's whole hook list as it must be recorded, in the order it was given; `message`
    is the hook's error as Helm words it (see `action_message` for the action's wording).
    """

    def __init__(self, hook: Hook, message: str, *, event: str, hooks: Sequence[Hook]) -> None:
        super().__init__(message)
        self.hook = hook
        self.message = message
        self.event = event
        self.hooks = list(hooks)


# --- the cluster side -----------------------------------------------------------------------


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


# --- the runner -----------------------------------------------------------------------------

RecordHooks = Callable[[list[Hook]], Awaitable[object]]
TargetFactory = Callable[[Applier, str], HookTarget]


class HookRunner:
    """Runs the hooks of one event for one release, as Helm 4's execHook does.

    `target_factory` (default ClusterTarget) and `clock` exist for tests.
    """

    def __init__(
        self,
        target_factory: TargetFactory = ClusterTarget,
        clock: Callable[[], GoTime] = GoTime.now,
    ) -> None:
        self._target_factory = target_factory
        self._clock = clock

    async def run(
        self,
        hooks: Sequence[Hook],
        event: str,
        *,
        namespace: str,
        release_name: str,
        release_namespace: str,
        timeout: float,  # noqa: ASYNC109 (Helm's per-wait limit, not a deadline for the call)
        applier: Applier,
        record: RecordHooks | None = None,
    ) -> list[Hook]:
        """Run the hooks of `hooks` (a release's whole list) for `event`.

        `namespace` is where hook objects without one go (the release's target namespace);
        `timeout` (seconds; <= 0 means Helm's 30 s) bounds each wait: for each deletion and
        for each hook's completion. `record`, when given, is awaited with the updated hook
        list each time a hook starts (its errors are logged, as Helm's recordRelease does).

        Returns the whole list, in the given order, with the hooks that ran carrying their
        delete policy default and `last_run` — what the release must record. Raises
        HookFailed (carrying that list too) when a hook fails; `ValueError` for an event
        Helm does not know.
        """
        if event not in EVENTS:
            raise ValueError(f"unknown hook event {event!r}")
        timeout = timeout if timeout > 0 else DEFAULT_TIMEOUT
        target = self._target_factory(applier, namespace)
        current = list(hooks)
        order = execution_order(current, event)
        where = f"{release_namespace}/{release_name}"

        for position, index in enumerate(order):
            hook = current[index] = with_default_delete_policy(current[index])
            log.info("release %s: %s hook %s (%s) starting", where, event, hook.name, hook.kind)
            await self._delete_by_policy(
                target, hook, BEFORE_HOOK_CREATION, timeout, event=event, hooks=current
            )
            try:
                placed = await target.resolve(hook)
            except HookError as error:
                raise HookFailed(
                    hook,
                    f"unable to build kubernetes object for {event} hook {hook.path}: {error}",
                    event=event,
                    hooks=current,
                ) from error

            hook = current[index] = replace(
                hook, last_run=HookExecution(started_at=self._clock(), phase=PHASE_RUNNING)
            )
            await self._record(record, current, where)

            try:
                await target.apply(placed)
            except HookError as error:
                hook = current[index] = self._finished(hook, PHASE_FAILED)
                # Helm deletes nothing when the hook could not even be created.
                raise HookFailed(
                    hook,
                    f"warning: Hook {event} {hook.path} failed: {error}",
                    event=event,
                    hooks=current,
                ) from error

            try:
                await target.wait(placed, timeout)
            except HookError as error:
                hook = current[index] = self._finished(hook, PHASE_FAILED)
                log.warning("release %s: %s hook %s failed: %s", where, event, hook.name, error)
                await self._delete_quietly(target, hook, HOOK_FAILED, timeout, where)
                for earlier in order[:position]:
                    await self._delete_quietly(
                        target, current[earlier], HOOK_SUCCEEDED, timeout, where
                    )
                raise HookFailed(hook, str(error), event=event, hooks=current) from error

            hook = current[index] = self._finished(hook, PHASE_SUCCEEDED)
            log.info("release %s: %s hook %s succeeded", where, event, hook.name)

        for index in reversed(order):
            await self._delete_by_policy(
                target, current[index], HOOK_SUCCEEDED, timeout, event=event, hooks=current
            )
        return current

    def _finished(self, hook: Hook, phase: str) -> Hook:
        return replace(
            hook, last_run=replace(hook.last_run, completed_at=self._clock(), phase=phase)
        )

    @staticmethod
    async def _record(record: RecordHooks | None, hooks: list[Hook], where: str) -> None:
        if record is None:
            return
        try:
            await record(list(hooks))
        except Exception as error:  # Helm only warns when recording the release fails
            log.warning("release %s: failed to record hook progress: %s", where, error)

    @staticmethod
    async def _delete_by_policy(
        target: HookTarget,
        hook: Hook,
        policy: str,
        seconds: float,
        *,
        event: str,
        hooks: Sequence[Hook],
    ) -> None:
        if not has_delete_policy(hook, policy):
            return
        try:
            placed = await target.resolve(hook)
        except HookError as error:
            raise HookFailed(
                hook,
                f"unable to build kubernetes object for deleting hook {hook.path}: {error}",
                event=event,
                hooks=hooks,
            ) from error
        try:
            await target.delete(placed, seconds)
        except HookError as error:
            raise HookFailed(hook, str(error), event=event, hooks=hooks) from error

    @staticmethod
    async def _delete_quietly(
        target: HookTarget, hook: Hook, policy: str, seconds: float, where: str
    ) -> None:
        """Clean-up after a failure: errors are logged, the hook's failure is what counts."""
        if not has_delete_policy(hook, policy):
            return
        try:
            await target.delete(await target.resolve(hook), seconds)
        except HookError as error:
            log.warning("release %s: deleting hook %s (%s): %s", where, hook.name, policy, error)
