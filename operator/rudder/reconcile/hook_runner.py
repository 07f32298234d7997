"""The hook runner: Helm hooks, run the way Helm v4.2.3 runs them (`pkg/action/hooks.go`,
`execHook`). What happens to one hook object on the cluster is `hook_target`'s.

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

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace

from rudder.kube.ssa import Applier
from rudder.reconcile.hook_events import EVENTS
from rudder.reconcile.hook_target import ClusterTarget, HookError, HookObject, HookTarget
from rudder.release.codec import GoTime, Hook, HookExecution
from rudder.release.manifest import with_default_delete_policy

log = logging.getLogger(__name__)

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


# --- errors ---------------------------------------------------------------------------------


class HookFailed(Exception):
    """A hook failed or timed out, or could not be created or deleted; the sequence stopped.

    `hook` is the hook as recorded (its `last_run` Failed when it ran); `hooks` is the
    release's whole hook list as it must be recorded, in the order it was given; `message`
    is the hook's error as Helm words it (see `hook_events.action_message` for the
    action's wording).
    """

    def __init__(self, hook: Hook, message: str, *, event: str, hooks: Sequence[Hook]) -> None:
        super().__init__(message)
        self.hook = hook
        self.message = message
        self.event = event
        self.hooks = list(hooks)


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
        sequence = _EventRun(
            target=target,
            hooks=current,
            order=execution_order(current, event),
            event=event,
            timeout=timeout,
            where=f"{release_namespace}/{release_name}",
            record=record,
            clock=self._clock,
        )
        return await sequence.run()


@dataclass
class _EventRun:
    """One event's hooks for one release. `hooks` is the release's whole list, updated in
    place as hooks run: what is recorded, returned, and carried by HookFailed."""

    target: HookTarget
    hooks: list[Hook]
    order: list[int]  # indexes into `hooks`, as execution_order gives them
    event: str
    timeout: float  # seconds, for each deletion and each hook's completion
    where: str  # namespace/name of the release, for logs
    record: RecordHooks | None
    clock: Callable[[], GoTime]

    async def run(self) -> list[Hook]:
        for position, index in enumerate(self.order):
            await self._run_hook(position, index)
        for index in reversed(self.order):
            await self._delete_by_policy(self.hooks[index], HOOK_SUCCEEDED)
        return self.hooks

    async def _run_hook(self, position: int, index: int) -> None:
        """One hook: clear the way, record it Running, apply it, wait for it."""
        hook = self.hooks[index] = with_default_delete_policy(self.hooks[index])
        log.info(
            "release %s: %s hook %s (%s) starting", self.where, self.event, hook.name, hook.kind
        )
        await self._delete_by_policy(hook, BEFORE_HOOK_CREATION)
        placed = await self._resolve(hook)
        self.hooks[index] = replace(
            hook, last_run=HookExecution(started_at=self.clock(), phase=PHASE_RUNNING)
        )
        await self._record_progress()
        await self._apply(index, placed)
        await self._wait(position, index, placed)
        hook = self._finish(index, PHASE_SUCCEEDED)
        log.info("release %s: %s hook %s succeeded", self.where, self.event, hook.name)

    async def _resolve(self, hook: Hook) -> HookObject:
        try:
            return await self.target.resolve(hook)
        except HookError as error:
            raise self._failed(
                hook,
                f"unable to build kubernetes object for {self.event} hook {hook.path}: {error}",
            ) from error

    async def _apply(self, index: int, placed: HookObject) -> None:
        try:
            await self.target.apply(placed)
        except HookError as error:
            hook = self._finish(index, PHASE_FAILED)
            # Helm deletes nothing when the hook could not even be created.
            raise self._failed(
                hook, f"warning: Hook {self.event} {hook.path} failed: {error}"
            ) from error

    async def _wait(self, position: int, index: int, placed: HookObject) -> None:
        """Wait for the hook to be done; when it fails, delete it if it has `hook-failed`
        and the hooks that succeeded before it if they have `hook-succeeded`."""
        try:
            await self.target.wait(placed, self.timeout)
        except HookError as error:
            hook = self._finish(index, PHASE_FAILED)
            log.warning(
                "release %s: %s hook %s failed: %s", self.where, self.event, hook.name, error
            )
            await self._delete_quietly(hook, HOOK_FAILED)
            for earlier in self.order[:position]:
                await self._delete_quietly(self.hooks[earlier], HOOK_SUCCEEDED)
            raise self._failed(hook, str(error)) from error

    def _finish(self, index: int, phase: str) -> Hook:
        """Mark the hook at `index` completed now with `phase`; the updated hook."""
        hook = self.hooks[index]
        hook = self.hooks[index] = replace(
            hook, last_run=replace(hook.last_run, completed_at=self.clock(), phase=phase)
        )
        return hook

    def _failed(self, hook: Hook, message: str) -> HookFailed:
        return HookFailed(hook, message, event=self.event, hooks=self.hooks)

    async def _record_progress(self) -> None:
        if self.record is None:
            return
        try:
            await self.record(list(self.hooks))
        except Exception as error:  # Helm only warns when recording the release fails
            log.warning("release %s: failed to record hook progress: %s", self.where, error)

    async def _delete_by_policy(self, hook: Hook, policy: str) -> None:
        if not has_delete_policy(hook, policy):
            return
        try:
            placed = await self.target.resolve(hook)
        except HookError as error:
            raise self._failed(
                hook, f"unable to build kubernetes object for deleting hook {hook.path}: {error}"
            ) from error
        try:
            await self.target.delete(placed, self.timeout)
        except HookError as error:
            raise self._failed(hook, str(error)) from error

    async def _delete_quietly(self, hook: Hook, policy: str) -> None:
        """Clean-up after a failure: errors are logged, the hook's failure is what counts."""
        if not has_delete_policy(hook, policy):
            return
        try:
            await self.target.delete(await self.target.resolve(hook), self.timeout)
        except HookError as error:
            log.warning(
                "release %s: deleting hook %s (%s): %s", self.where, hook.name, policy, error
            )
