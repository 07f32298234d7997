"""Install, upgrade or roll back: render, plan, prove, record, apply, prune, record again.

The order is what keeps a failure from losing anything:
  1. render with the cluster's Capabilities and sort as Helm does (a rollback copies its
     target revision instead), and plan every object (plan.py);
  2. prove the revision (prove.py): dry-run the CRD/Namespace stage and the main stage in
     full, check ownership of objects new to the release, and find unchanged objects that
     were deleted by hand (they are applied again);
  3. only then create the pending revision record (create, never replace: a second writer
     of the same revision fails here and does nothing);
  4. apply the stages, prune what the new revision dropped, wait, run hooks, and mark the
     revision deployed and its predecessors superseded.
A failure in 1-2 leaves the cluster and the release history untouched. Any failure in 4 —
whatever raised it — marks the new revision failed with the cause, as Helm does, so no
revision is left pending by an action that ended.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from rudder.chart.render import Renderer
from rudder.kube.client import JSON
from rudder.kube.discovery import UnknownKind
from rudder.kube.readiness import Outcome as ReadinessOutcome
from rudder.kube.readiness import ReadinessReport, wait_until_ready
from rudder.kube.ssa import Applier, ObjectRef, StageRejected
from rudder.reconcile.content import (
    CRD_ESTABLISHED_TIMEOUT,
    Content,
    crds_to_apply,
    revision_content,
    wait_established,
)
from rudder.reconcile.deploy_failure import (
    DeployError,
    NotReady,
    as_deploy_error,
)
from rudder.reconcile.hook_runner import HookFailed, HookRunner
from rudder.reconcile.identity import ReleaseClients
from rudder.reconcile.kinds import INSTALL, ActionKind
from rudder.reconcile.plan import (
    CRD,
    Placement,
    Plan,
    PlanError,
    Planned,
    Planner,
    mark_unchanged,
    namespace_object,
)
from rudder.reconcile.prove import (
    Ownership,
    ProofFailed,
    prove,
    recheck_unchanged,
    rejected_reason,
)
from rudder.reconcile.prune import prune
from rudder.reconcile.replace import (
    IMMUTABLE_FIELD_CHANGE,
    delete_and_wait,
    immutable_message,
    replaceable,
)
from rudder.release import history
from rudder.release.codec import GoTime, Hook, Info, Release
from rudder.release.store import Record, ReleaseStore, ReleaseTooLarge, Stamp

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeployRequest:
    kind: ActionKind
    place: Placement
    chart_archive: bytes
    chart: Any  # helm_python.Chart, parsed once per digest by the chart source
    chart_name: str
    values: dict[str, Any]
    stamp: Stamp
    records: Sequence[Record]
    crds_policy: str  # Create | CreateReplace | Skip
    create_namespace: bool
    take_ownership: bool
    force_conflicts: bool
    max_history: int
    # Delete and re-create objects whose change the API server refuses as an update only.
    force_replace: bool = False
    # After a revision written outside rudder: the managers whose fields rudder takes back.
    take_over_from: tuple[str, ...] = ()
    # The previous revision is rudder's and deployed: objects it rendered identically are
    # not sent again (an upgrade writes only what changed; drift is a separate check).
    skip_unchanged: bool = False
    disable_hooks: bool = False
    disable_wait: bool = False
    rollback_to: Record | None = None  # ROLLBACK: the revision whose content is copied
    cancel: asyncio.Event | None = None  # set when a newer generation of the spec arrives
    on_progress: Callable[[ReadinessReport], Awaitable[None]] | None = None
    # Scrubs values that came from Secrets out of messages stored in the release.
    redact: Callable[[str], str] = str
    timeout: float = 300.0  # seconds, per hook wait (and readiness wait)
    impersonate: str | None = None  # for the chart's `lookup` calls
    # The HelmRelease's post-renderers, applied to the rendered files before sorting.
    post_render: Callable[[dict[str, str]], Awaitable[dict[str, str]]] | None = None

    @property
    def is_install(self) -> bool:
        return self.kind is INSTALL

    @property
    def target_version(self) -> int | None:
        return self.rollback_to.version if self.rollback_to is not None else None


@dataclass
class DeployResult:
    record: Record
    release: Release
    records: list[Record] = field(default_factory=list)  # the history after the action
    objects: list[ObjectRef] = field(default_factory=list)
    pruned: list[ObjectRef] = field(default_factory=list)
    readiness: ReadinessReport | None = None
    replaced: list[ObjectRef] = field(default_factory=list)


class _Progress:
    """The revision being written: its newest stored record and release content."""

    def __init__(
        self, store: ReleaseStore, record: Record, release: Release, kept: list[Record]
    ) -> None:
        self.store = store
        self.record = record
        self.release = release
        self.kept = kept  # the earlier revisions left after making room for this one

    async def save(self, hooks: list[Hook]) -> None:
        """Record hook progress as it happens (Helm's recordRelease)."""
        self.release = replace(self.release, hooks=hooks)
        self.record = await self.store.update(self.record, self.release)

    async def finish(self, status: str, description: str, *, interrupted: bool = False) -> Record:
        self.release = history.with_status(self.release, status, description)
        self.record = await self.store.update(self.record, self.release, interrupted=interrupted)
        return self.record


@dataclass
class _Applied:
    plan: Plan
    objects: list[JSON]  # the apply answers
    pruned: list[ObjectRef]
    report: ReadinessReport | None = None


class Deployer:
    def __init__(self, renderer: Renderer) -> None:
        # Helm's engine for the cluster rudder runs in; a remote cluster's releases bring
        # their own (ReleaseClients.renderer). Discovery is the applier's: the release's.
        self.renderer = renderer
        self.hook_runner = HookRunner()

    async def deploy(self, request: DeployRequest, clients: ReleaseClients) -> DeployResult:
        revision, content, plan = await self.prepare(request, clients)
        adopted, proven = await self._prove(request, clients.applier, plan)
        pending = self._pending_release(request, revision, content)
        progress = await self._record(request, clients, pending)
        try:
            applied = await self._apply(request, clients.applier, progress, plan, adopted, proven)
        except Exception as error:
            raise await self._failed(request, progress, error) from error
        return await self._finish(request, clients.store, progress, applied)

    # -- 1. content (content.py) and plan -------------------------------------------------

    async def prepare(
        self, request: DeployRequest, clients: ReleaseClients
    ) -> tuple[int, Content, Plan]:
        """(the revision to write, its content, its objects planned); reads only. Objects
        rendered as in the deployed previous revision are marked unchanged when the request
        skips those, unless they no longer exist."""
        applier = clients.applier
        revision = history.next_revision(request.records)
        renderer = clients.renderer or self.renderer
        content = await revision_content(request, revision, applier.discovery, renderer)
        crds = await crds_to_apply(request, content.crds, applier)
        try:
            plan = await Planner(applier.discovery).plan(
                request.place, content.manifests, crds, create_namespace=request.create_namespace
            )
        except PlanError as error:
            raise DeployError(error.reason, request.redact(error.message)) from error
        plan.required_crds = [ObjectRef.of(crd) for crd in content.crds if crd not in crds]
        previous = history.latest(request.records)
        if request.skip_unchanged and previous is not None:
            mark_unchanged(
                plan.stage_two, previous.release.manifest, request.place.target_namespace
            )
            plan.live_unchanged = await recheck_unchanged(applier, plan.stage_two)
        return revision, content, plan

    # -- 2. proof ----------------------------------------------------------------------------

    async def _prove(
        self, request: DeployRequest, applier: Applier, plan: Plan
    ) -> tuple[frozenset[ObjectRef], frozenset[ObjectRef]]:
        """(objects to adopt, objects already dry-run); DeployError when the revision
        cannot be applied. Nothing is written."""
        previous = history.latest(request.records)
        # Objects in a namespace this release creates can only be dry-run once it exists:
        # apply_stage dry-runs those right before applying them.
        new_namespaces = {p.ref.name for p in plan.stage_one if p.ref.kind == "Namespace"}
        early = plan.changed(plan.stage_one) + [
            p.obj
            for p in plan.stage_two
            if not p.unchanged and p.ref.namespace not in new_namespaces
        ]
        rule = Ownership(
            release_name=request.place.release_name,
            storage_namespace=request.place.storage_namespace,
            target_namespace=request.place.target_namespace,
            previous_manifest=(
                previous.release.manifest
                if previous is not None and previous.status != "uninstalled"
                else None
            ),
            create_namespace=request.create_namespace,
            take_ownership=request.take_ownership,
            force_conflicts=request.force_conflicts,
            take_over_from=request.take_over_from,
        )
        planned = plan.planned + plan.deferred
        try:
            adopted = await prove(applier, rule, planned, early)
        except ProofFailed as failed:
            plan.replaced = await replaceable(applier, early, failed.stage)
            if not plan.replaced:
                raise DeployError(failed.reason, failed.message, stage=failed.stage) from failed
            if not request.force_replace:
                message = request.redact(immutable_message(failed.stage))
                raise DeployError(IMMUTABLE_FIELD_CHANGE, message) from failed
            # The rest is proven now; the replaced objects are dry-run again once deleted.
            early = [obj for obj in early if ObjectRef.of(obj) not in plan.replaced]
            try:
                adopted = await prove(applier, rule, planned, early)
            except ProofFailed as again:
                raise DeployError(again.reason, again.message, stage=again.stage) from again
        return adopted, frozenset(ObjectRef.of(obj) for obj in early)

    # -- 3. the pending record -------------------------------------------------------------

    @staticmethod
    def _pending_release(request: DeployRequest, revision: int, content: Content) -> Release:
        now = GoTime.now()
        first_deployed = now
        previous = history.latest(request.records)
        if previous is not None and not request.is_install:
            info = previous.release.info
            if info is not None and info.first_deployed is not None:
                first_deployed = info.first_deployed
        return Release(
            name=request.place.release_name,
            version=revision,
            namespace=request.place.storage_namespace,
            info=Info(
                first_deployed=first_deployed,
                last_deployed=now,
                description=request.kind.describe_pending(request.target_version),
                status=request.kind.pending_status,
                notes=content.notes,
            ),
            chart=content.chart,
            config=content.config,
            manifest=content.manifest,
            hooks=content.hooks,
            apply_method="ssa",
        )

    @staticmethod
    async def _record(
        request: DeployRequest, clients: ReleaseClients, pending: Release
    ) -> _Progress:
        try:
            secret = clients.store.new_secret(pending, request.stamp)
        except ReleaseTooLarge as error:  # before anything is deleted or applied
            raise DeployError("ReleaseTooLarge", request.redact(str(error))) from error
        # Helm makes room before it stores the new revision (never the last deployed one).
        doomed = history.revisions_to_prune(request.records, request.max_history)
        for old in doomed:
            await clients.store.delete(request.place.storage_namespace, old.secret_name)
        if request.create_namespace:
            # As Helm: the target namespace exists before the release record is written
            # there (the storage namespace defaults to it).
            namespace = namespace_object(request.place.target_namespace)
            try:
                await clients.applier.apply_stage([namespace], force=False)
            except StageRejected as rejected:  # e.g. a tenant may not create namespaces
                raise DeployError(
                    rejected_reason(rejected), str(rejected), stage=rejected
                ) from rejected
        kept = [r for r in request.records if r not in doomed]
        return _Progress(clients.store, await clients.store.create(secret), pending, kept)

    # -- 4. apply, wait, hooks -------------------------------------------------------------

    async def _apply(
        self,
        request: DeployRequest,
        applier: Applier,
        progress: _Progress,
        plan: Plan,
        adopted: frozenset[ObjectRef],
        proven: frozenset[ObjectRef],
    ) -> _Applied:
        pre, post = request.kind.hook_events
        force = request.force_conflicts
        await self._hooks(progress, request, applier, pre)
        await self._replace(request, applier, plan, plan.stage_one)
        objects = await applier.apply_stage(
            plan.changed(plan.stage_one), force=force, forced=adopted, proven=proven
        )
        # Every CRD the release needs, also a crds/ one that existed and was not applied:
        # the chart's objects depend on it being served.
        crds = [p.ref for p in plan.stage_one if p.ref.kind == CRD] + plan.required_crds
        await wait_established(applier, crds, min(request.timeout, CRD_ESTABLISHED_TIMEOUT))
        if plan.deferred:
            applier.discovery.invalidate()
            plan.stage_two += [
                await self._resolve_deferred(applier, p.obj, request) for p in plan.deferred
            ]
        await self._replace(request, applier, plan, plan.stage_two)
        objects += await applier.apply_stage(
            plan.changed(plan.stage_two), force=force, forced=adopted, proven=proven
        )
        pruned = await prune(applier, request.place, request.records, plan.planned)
        applied = _Applied(plan, objects, pruned)
        seen = objects + plan.live_unchanged
        applied.report = await self._wait(request, applier, plan.planned, seen)
        await self._hooks(progress, request, applier, post)
        return applied

    @staticmethod
    async def _replace(
        request: DeployRequest, applier: Applier, plan: Plan, stage: Sequence[Planned]
    ) -> None:
        """Force-replace: the stage's refused objects go right before the stage is applied."""
        refs = [p.ref for p in stage if p.ref in plan.replaced]
        if refs:
            log.info("replacing %s", ", ".join(str(ref) for ref in refs))
            await delete_and_wait(applier, refs, request.timeout)

    @staticmethod
    async def _resolve_deferred(applier: Applier, obj: JSON, request: DeployRequest) -> Planned:
        try:
            return await Planner(applier.discovery).resolve(obj, request.place)
        except UnknownKind as error:
            # Its CRD was applied and Established, yet the kind is not served.
            raise PlanError("UnknownKind", f"{error} (its CRD does not serve it)") from error

    async def _wait(
        self,
        request: DeployRequest,
        applier: Applier,
        planned: Sequence[Planned],
        applied: Sequence[JSON],
    ) -> ReadinessReport | None:
        """Wait until every object of the release is Current (kstatus), as Helm's watcher
        does; raises NotReady on Failed, timeout or a newer spec. The apply answers are the
        objects as they stood right after the write: those already Current are not watched."""
        if request.disable_wait:
            return None
        report = await wait_until_ready(
            applier.kube,
            applier.discovery,
            [p.ref for p in planned],
            timeout=request.timeout,
            cancel=request.cancel,
            progress=request.on_progress,
            seen=applied,
            shared=applier.watches,
        )
        if report.outcome is not ReadinessOutcome.CURRENT:
            raise NotReady(report)
        return report

    async def _hooks(
        self, progress: _Progress, request: DeployRequest, applier: Applier, event: str
    ) -> None:
        if request.disable_hooks or not any(event in h.events for h in progress.release.hooks):
            return
        hooks = await self.hook_runner.run(
            progress.release.hooks,
            event,
            namespace=request.place.target_namespace,
            release_name=request.place.release_name,
            release_namespace=request.place.storage_namespace,
            timeout=request.timeout,
            applier=applier,
            record=progress.save,
        )
        await progress.save(hooks)

    # -- the end of the action ---------------------------------------------------------------

    async def _failed(
        self, request: DeployRequest, progress: _Progress, error: Exception
    ) -> DeployError:
        """Record the revision failed (whatever the cause) and say why."""
        noun = request.kind.noun
        failure = as_deploy_error(error, request.kind, request.place.release_name, request.redact)
        if failure.superseded:
            description = f"{noun} superseded by a newer spec"
        elif isinstance(error, HookFailed):
            progress.release = replace(progress.release, hooks=error.hooks)
            description = failure.message
        else:
            prefix = request.kind.failed_prefix.format(release=request.place.release_name)
            description = request.redact(prefix + failure.message)
        try:
            await progress.finish("failed", description, interrupted=failure.transient)
        except Exception:
            # The revision stays pending (unlocked by the next reconcile); keep the cause.
            log.warning("recording %s failed; the cause was: %s", noun, failure.message)
            raise
        return failure

    @staticmethod
    async def _finish(
        request: DeployRequest, store: ReleaseStore, progress: _Progress, applied: _Applied
    ) -> DeployResult:
        # As Helm's upgrade: the revision upgraded from is the last deployed one (superseded
        # like every deployed one); only with nothing deployed is a failed latest superseded.
        # As Helm, the old ones are superseded before the new one is marked deployed: an
        # interruption in between leaves a pending revision to retry, never two deployed.
        remaining = progress.kept
        previous = history.latest(request.records)
        upgraded_from = (
            None
            if request.is_install
            or previous is None
            or request.rollback_to is not None
            or history.last_deployed(remaining) is not None
            else previous.version
        )
        revision = progress.record.version
        after = {record.version: record for record in remaining}
        for old in history.superseded_by(remaining, revision, upgraded_from=upgraded_from):
            after[old.version] = await store.update(
                old, history.with_status(old.release, history.Status.SUPERSEDED)
            )
        description = request.kind.describe_done(request.target_version)
        if applied.plan.replaced:
            names = ", ".join(str(ref) for ref in applied.plan.replaced)
            description += f"; replaced {names}"
        done = await progress.finish("deployed", description)
        after[done.version] = done
        release = progress.release
        return DeployResult(
            record=done,
            release=replace(release, info=replace(release.info or Info(), status="deployed")),
            records=sorted(after.values(), key=lambda record: record.version),
            objects=[p.ref for p in applied.plan.planned],
            pruned=applied.pruned,
            readiness=applied.report,
            replaced=list(applied.plan.replaced),
        )
