"""Install or upgrade: render, check, dry-run, record, apply, prune, record again.

The order is what keeps a failure from losing anything:
  1. render with the cluster's Capabilities and sort as Helm does;
  2. dry-run the CRD/Namespace stage and the main stage in full (objects whose kind only a
     CRD of this release defines, or in a namespace it creates, are dry-run right before
     they are applied), and check ownership of every object the previous revision did not
     have and the dry-run found existing;
  3. only then create the pending revision record (create, never replace: a second writer
     of the same revision fails here and does nothing);
  4. apply the stages, prune what the new revision dropped (keep-policy respected), and
     mark the revision deployed and its predecessor superseded.
A failure in 1-2 leaves the cluster and the release history untouched; in 4 it marks the
new revision failed with the cause, as Helm does.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field, replace
from typing import Any

import yaml

from rudder.chart.render import Renderer, RenderRequest
from rudder.kube.client import JSON, TRANSPORT_ERRORS, ApiError
from rudder.kube.discovery import Discovery, UnknownKind
from rudder.kube.readiness import Outcome as ReadinessOutcome
from rudder.kube.readiness import ReadinessReport, wait_until_ready
from rudder.kube.ssa import (
    Applier,
    ObjectFailure,
    ObjectRef,
    StageRejected,
    ensure_namespace,
    take_over_fields,
)
from rudder.reconcile.hooks import (
    POST_INSTALL,
    POST_ROLLBACK,
    POST_UPGRADE,
    PRE_INSTALL,
    PRE_ROLLBACK,
    PRE_UPGRADE,
    HookFailed,
    HookRunner,
    action_message,
)
from rudder.release import history
from rudder.release.chart_record import chart_from_archive
from rudder.release.codec import GoTime, Hook, Info, Release
from rudder.release.manifest import (
    RESOURCE_POLICY_ANNOTATION,
    Manifest,
    assemble_manifest,
    parse_document,
    release_notes,
    sort_manifests,
    split_manifests,
)
from rudder.release.store import Record, ReleaseStore, ReleaseTooLarge, Stamp

log = logging.getLogger(__name__)

MANAGED_BY = ("app.kubernetes.io/managed-by", "Helm")
RELEASE_NAME_ANNOTATION = "meta.helm.sh/release-name"
RELEASE_NAMESPACE_ANNOTATION = "meta.helm.sh/release-namespace"
CRD_ESTABLISHED_TIMEOUT = 60.0
TRANSIENT_CODES = frozenset({429, 500, 502, 503, 504})
# An answer of the API server, or none at all.
API_ERRORS: tuple[type[BaseException], ...] = (ApiError, *TRANSPORT_ERRORS)


class NotReady(Exception):
    def __init__(self, report: ReadinessReport) -> None:
        super().__init__(report.message())
        self.report = report


class DeployError(Exception):
    """The action failed; `reason` is the condition reason, `message` names the cause.
    `recorded` tells whether a failed revision was written (the cluster was touched);
    `transient` that the API server failed (unreachable, 429, 5xx), not the release."""

    def __init__(
        self,
        reason: str,
        message: str,
        *,
        recorded: bool = False,
        stage: StageRejected | None = None,
        retriable: bool = False,
        superseded: bool = False,
        readiness: ReadinessReport | None = None,
        transient: bool = False,
    ) -> None:
        super().__init__(message)
        self.superseded = superseded
        self.transient = transient  # the API server failed, not the release
        self.readiness = readiness
        self.reason = reason
        self.message = message
        self.recorded = recorded
        self.stage = stage
        self.retriable = retriable


@dataclass(frozen=True)
class DeployRequest:
    release_name: str
    target_namespace: str
    storage_namespace: str
    chart_archive: bytes
    chart: Any  # helm_python.Chart, parsed once per digest by the chart source
    chart_name: str
    values: dict[str, Any]
    stamp: Stamp
    records: Sequence[Record]
    is_install: bool
    crds_policy: str  # Create | CreateReplace | Skip
    create_namespace: bool
    take_ownership: bool
    force_conflicts: bool
    max_history: int
    description: str
    impersonate: str | None = None
    # After a revision written outside rudder: the managers whose fields rudder takes back.
    take_over_from: tuple[str, ...] = ()
    # The previous revision is rudder's and deployed: objects it rendered identically are
    # not sent again (an upgrade writes only what changed; drift is a separate check).
    skip_unchanged: bool = False
    disable_hooks: bool = False
    disable_wait: bool = False
    rollback_to: Record | None = None  # set: roll back to this revision instead of rendering
    cancel: asyncio.Event | None = None  # set when a newer generation of the spec arrives
    on_progress: Callable[[ReadinessReport], Awaitable[None]] | None = None
    # Scrubs values that came from Secrets out of messages stored in the release.
    redact: Callable[[str], str] = str
    timeout: float = 300.0  # seconds, per hook wait (and readiness wait)

    @property
    def kind(self) -> ActionKind:
        if self.rollback_to is not None:
            return ROLLBACK
        return INSTALL if self.is_install else UPGRADE


@dataclass(frozen=True)
class ActionKind:
    """How Helm words and records one kind of action."""

    noun: str
    pending_status: str
    hook_events: tuple[str, str]
    failed_reason: str

    def in_progress(self, request: DeployRequest) -> str:
        if self.noun == "Rollback" and request.rollback_to is not None:
            return f"Rollback to {request.rollback_to.version}"
        return f"{self.noun} in progress"

    def failed_prefix(self, request: DeployRequest) -> str:
        if self.noun == "Install":
            return f'Release "{request.release_name}" failed: '
        return f'{self.noun} "{request.release_name}" failed: '


INSTALL = ActionKind("Install", "pending-install", (PRE_INSTALL, POST_INSTALL), "InstallFailed")
UPGRADE = ActionKind("Upgrade", "pending-upgrade", (PRE_UPGRADE, POST_UPGRADE), "UpgradeFailed")
ROLLBACK = ActionKind(
    "Rollback", "pending-rollback", (PRE_ROLLBACK, POST_ROLLBACK), "RollbackFailed"
)


@dataclass(frozen=True)
class _Content:
    """What the new revision stores: rendered now, or copied from a rollback's target."""

    manifest: str
    hooks: list[Hook]
    notes: str
    chart: Any
    config: dict[str, Any]


@dataclass
class DeployResult:
    record: Record
    release: Release
    records: list[Record] = field(default_factory=list)  # the history after the action
    objects: list[ObjectRef] = field(default_factory=list)
    pruned: list[ObjectRef] = field(default_factory=list)
    readiness: ReadinessReport | None = None


def with_helm_metadata(obj: JSON, release_name: str, release_namespace: str) -> JSON:
    """Helm's ownership metadata on an applied object (not in the stored manifest)."""
    meta = dict(obj.get("metadata") or {})
    labels = dict(meta.get("labels") or {})
    annotations = dict(meta.get("annotations") or {})
    labels[MANAGED_BY[0]] = MANAGED_BY[1]
    annotations[RELEASE_NAME_ANNOTATION] = release_name
    annotations[RELEASE_NAMESPACE_ANNOTATION] = release_namespace
    meta["labels"] = labels
    meta["annotations"] = annotations
    return {**obj, "metadata": meta}


def owned_by_release(live: JSON, release_name: str, release_namespace: str) -> bool:
    meta = live.get("metadata", {})
    annotations = meta.get("annotations") or {}
    labels = meta.get("labels") or {}
    return (
        annotations.get(RELEASE_NAME_ANNOTATION) == release_name
        and annotations.get(RELEASE_NAMESPACE_ANNOTATION) == release_namespace
        and labels.get(MANAGED_BY[0]) == MANAGED_BY[1]
    )


def target_namespace(request: DeployRequest) -> JSON:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": request.target_namespace}}


def mark_unchanged(planned: Sequence[_Planned], previous_manifest: str, namespace: str) -> None:
    """Flag objects whose rendered form equals the previous revision's."""
    before = manifest_identities(previous_manifest, namespace)
    for item in planned:
        old = before.get(item.ref.identity())
        if old is None:
            continue
        rendered = dict(item.obj)
        meta = dict(rendered.get("metadata") or {})
        # Compare the chart's text, not what rudder adds when applying.
        meta.pop("namespace", None)
        old_meta = dict(old.get("metadata") or {})
        old_meta.pop("namespace", None)
        item.unchanged = strip_helm_metadata({**rendered, "metadata": meta}) == strip_helm_metadata(
            {**old, "metadata": old_meta}
        )


def strip_helm_metadata(obj: JSON) -> JSON:
    meta = dict(obj.get("metadata") or {})
    labels = {k: v for k, v in (meta.get("labels") or {}).items() if k != MANAGED_BY[0]}
    annotations = {
        k: v
        for k, v in (meta.get("annotations") or {}).items()
        if k not in (RELEASE_NAME_ANNOTATION, RELEASE_NAMESPACE_ANNOTATION)
    }
    meta["labels"], meta["annotations"] = labels, annotations
    return {**obj, "metadata": meta}


def manifest_identities(
    manifest_text: str, namespace: str
) -> dict[tuple[str, str, str, str], JSON]:
    """Objects of a stored manifest by identity (namespace defaulted to the release's)."""
    out: dict[tuple[str, str, str, str], JSON] = {}
    for index, document in enumerate(split_manifests(manifest_text)):
        parsed = parse_document(document, f"manifest-{index}")
        if parsed.resource is None:
            continue
        obj = parsed.resource
        ref = ObjectRef.of(obj)
        identity = (ref.group, ref.kind, ref.namespace or namespace, ref.name)
        out[identity] = obj
    return out


@dataclass
class _Planned:
    """An object ready to apply, with its identity resolved against discovery."""

    obj: JSON
    ref: ObjectRef
    cluster_scoped: bool
    unchanged: bool = False  # same as in the deployed previous revision: no apply needed


class _Progress:
    """The revision being written: its newest stored record and release content."""

    def __init__(self, store: ReleaseStore, record: Record, release: Release) -> None:
        self.store = store
        self.record = record
        self.release = release

    async def save(self, hooks: list[Hook]) -> None:
        """Record hook progress as it happens (Helm's recordRelease)."""
        self.release = replace(self.release, hooks=hooks)
        self.record = await self.store.update(self.record, self.release)

    async def finish(self, status: str, description: str, *, interrupted: bool = False) -> Record:
        self.release = history.with_status(self.release, status, description)
        self.record = await self.store.update(self.record, self.release, interrupted=interrupted)
        return self.record


class Deployer:
    def __init__(
        self,
        applier: Applier,
        discovery: Discovery,
        store: ReleaseStore,
        renderer: Renderer,
    ) -> None:
        self.applier = applier
        self.discovery = discovery
        self.store = store
        self.renderer = renderer
        self.hook_runner = HookRunner()

    async def deploy(self, request: DeployRequest) -> DeployResult:
        applier = self.applier.as_user(request.impersonate)
        store = self.store.as_user(request.impersonate)
        previous = history.latest(request.records)
        revision = history.next_revision(request.records)
        snapshot = await self.discovery.snapshot()

        if request.rollback_to is None:
            rendered = await self.renderer.render(
                request.chart,
                request.values,
                RenderRequest(
                    release_name=request.release_name,
                    namespace=request.target_namespace,
                    revision=revision,
                    is_install=request.is_install,
                    kube_version=snapshot.kube_version,
                    api_versions=snapshot.api_versions,
                    impersonate=request.impersonate,
                ),
            )
            hooks, manifests = sort_manifests(rendered)
            content = _Content(
                manifest=assemble_manifest(manifests),
                hooks=list(hooks),
                notes=release_notes(rendered, request.chart_name),
                chart=chart_from_archive(request.chart_archive, request.chart),
                config=request.values,
            )
            crds = (
                [document for crd in request.chart.crds for document in self._crd_documents(crd)]
                if request.crds_policy != "Skip"
                else []
            )
        else:
            # Helm's rollback: the target revision's chart, values, manifest and hooks,
            # copied into a new revision; crds/ are not touched.
            target = request.rollback_to.release
            manifests = [
                parse_document(document, f"manifest-{index}")
                for index, document in enumerate(split_manifests(target.manifest))
            ]
            content = _Content(
                manifest=target.manifest,
                hooks=list(target.hooks),
                notes=target.info.notes if target.info else "",
                chart=target.chart,
                config=target.config,
            )
            crds = []

        stage_one, stage_two, deferred = await self._plan(request, manifests, crds)
        if request.skip_unchanged and previous is not None:
            mark_unchanged(stage_two, previous.release.manifest, request.target_namespace)
        changed_one = [p.obj for p in stage_one if not p.unchanged]
        changed_two = [p.obj for p in stage_two if not p.unchanged]
        # Objects in a namespace this release creates can only be dry-run once it exists:
        # apply_stage dry-runs those right before applying them.
        new_namespaces = {p.ref.name for p in stage_one if p.ref.kind == "Namespace"}
        early = [
            p.obj for p in stage_two if not p.unchanged and p.ref.namespace not in new_namespaces
        ]
        adopted = await self._prove(
            applier, request, stage_one + stage_two + deferred, previous, changed_one + early
        )
        proven = frozenset(ObjectRef.of(obj) for obj in changed_one + early)

        now = GoTime.now()
        first_deployed = now
        if previous is not None and not request.is_install:
            info = previous.release.info
            if info is not None and info.first_deployed is not None:
                first_deployed = info.first_deployed
        pending = Release(
            name=request.release_name,
            version=revision,
            namespace=request.storage_namespace,
            info=Info(
                first_deployed=first_deployed,
                last_deployed=now,
                description=request.kind.in_progress(request),
                status=request.kind.pending_status,
                notes=content.notes,
            ),
            chart=content.chart,
            config=content.config,
            manifest=content.manifest,
            hooks=content.hooks,
            apply_method="ssa",
        )
        try:
            secret = store.new_secret(pending, request.stamp)
        except ReleaseTooLarge as error:  # before anything is deleted or applied
            raise DeployError("ReleaseTooLarge", request.redact(str(error))) from error
        # Helm makes room before it stores the new revision (never the last deployed one).
        doomed = history.revisions_to_prune(request.records, request.max_history)
        for old in doomed:
            await store.delete(request.storage_namespace, old.secret_name)
        remaining = [r for r in request.records if r not in doomed]
        if request.create_namespace and request.is_install:
            # As Helm: the target namespace exists before the release record is written
            # there (the storage namespace defaults to it).
            await applier.apply_stage([target_namespace(request)], force=False)
        progress = _Progress(store, await store.create(secret), pending)
        pre, post = (
            (PRE_INSTALL, POST_INSTALL) if request.is_install else (PRE_UPGRADE, POST_UPGRADE)
        )
        action = "Install" if request.is_install else "Upgrade"

        try:
            await self._hooks(progress, request, applier, pre)
            applied = await applier.apply_stage(
                changed_one, force=request.force_conflicts, forced=adopted, proven=proven
            )
            await self._wait_established(
                applier, [p.ref for p in stage_one if p.ref.kind == "CustomResourceDefinition"]
            )
            if deferred:
                self.discovery.invalidate()
                resolved = [await self._resolve(p.obj, request) for p in deferred]
                stage_two = stage_two + resolved
                changed_two += [p.obj for p in resolved]
            applied += await applier.apply_stage(
                changed_two, force=request.force_conflicts, forced=adopted, proven=proven
            )
            pruned = await self._prune(applier, request, stage_one + stage_two)
            report = await self._wait(request, applier, stage_one + stage_two, applied)
            await self._hooks(progress, request, applier, post)
        except StageRejected as rejected:
            await progress.finish("failed", request.redact(f"{action} failed: {rejected}"))
            raise DeployError(
                "ApplyConflict" if rejected.conflicts else _failure_reason(rejected.failures),
                str(rejected),
                recorded=True,
                stage=rejected,
            ) from rejected
        except NotReady as not_ready:
            report = not_ready.report
            if report.outcome is ReadinessOutcome.CANCELLED:
                await progress.finish("failed", f"{action} superseded by a newer spec")
                raise DeployError(
                    "Progressing",
                    "a newer generation of the HelmRelease arrived; starting over",
                    recorded=True,
                    retriable=True,
                    superseded=True,
                ) from not_ready
            message = request.redact(report.message())
            await progress.finish("failed", f"{action} failed: {message}")
            raise DeployError(
                request.kind.failed_reason,
                message,
                recorded=True,
                retriable=report.outcome is ReadinessOutcome.TIMEOUT,
                readiness=report,
            ) from not_ready
        except HookFailed as failed:
            progress.release = replace(progress.release, hooks=failed.hooks)
            description = request.kind.failed_prefix(request) + request.redact(
                action_message(failed.event, failed.message)
            )
            await progress.finish("failed", description)
            raise DeployError(
                request.kind.failed_reason,
                description,
                recorded=True,
            ) from failed
        except API_ERRORS as error:
            transient = is_transient(error)
            await progress.finish(
                "failed", request.redact(f"{action} failed: {error}"), interrupted=transient
            )
            raise DeployError(
                request.kind.failed_reason,
                str(error),
                recorded=True,
                retriable=True,
                transient=transient,
            ) from error

        # As Helm's upgrade: the revision upgraded from is the last deployed one (superseded
        # like every deployed one); only with nothing deployed is a failed latest superseded.
        # As Helm, the old ones are superseded before the new one is marked deployed: an
        # interruption in between leaves a pending revision to retry, never two deployed.
        upgraded_from = (
            None
            if request.is_install
            or previous is None
            or request.rollback_to is not None
            or history.last_deployed(remaining) is not None
            else previous.version
        )
        after = {record.version: record for record in remaining}
        for old in history.superseded_by(remaining, revision, upgraded_from=upgraded_from):
            after[old.version] = await store.update(
                old, history.with_status(old.release, history.Status.SUPERSEDED)
            )
        done = await progress.finish("deployed", request.description)
        pending = progress.release
        after[done.version] = done
        return DeployResult(
            record=done,
            release=replace(pending, info=replace(pending.info or Info(), status="deployed")),
            records=sorted(after.values(), key=lambda record: record.version),
            objects=[p.ref for p in stage_one + stage_two],
            pruned=pruned,
            readiness=report,
        )

    async def _wait(
        self,
        request: DeployRequest,
        applier: Applier,
        planned: Sequence[_Planned],
        applied: Sequence[JSON],
    ) -> ReadinessReport | None:
        """Wait until every object of the release is Current (kstatus), as Helm's watcher
        does; raises NotReady on Failed, timeout or a newer spec. The apply answers are the
        objects as they stood right after the write: those already Current are not watched."""
        if request.disable_wait:
            return None
        report = await wait_until_ready(
            applier.kube,
            self.discovery,
            [p.ref for p in planned],
            timeout=request.timeout,
            cancel=request.cancel,
            progress=request.on_progress,
            seen=applied,
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
            namespace=request.target_namespace,
            release_name=request.release_name,
            release_namespace=request.storage_namespace,
            timeout=request.timeout,
            applier=applier,
            record=progress.save,
        )
        await progress.save(hooks)

    # -- planning ------------------------------------------------------------------------

    @staticmethod
    def _crd_documents(crd: dict[str, str]) -> list[JSON]:
        documents = []
        for document in split_manifests(crd.get("data", "")):
            loaded = yaml.safe_load(document)
            if isinstance(loaded, dict) and loaded.get("kind"):
                documents.append(loaded)
        return documents

    async def _resolve(self, obj: JSON, request: DeployRequest) -> _Planned:
        resource = await self.discovery.resource(
            str(obj.get("apiVersion", "")), str(obj.get("kind", ""))
        )
        placed = ensure_namespace(obj, resource, request.target_namespace)
        placed = with_helm_metadata(placed, request.release_name, request.storage_namespace)
        return _Planned(placed, ObjectRef.of(placed), not resource.namespaced)

    async def _plan(
        self, request: DeployRequest, manifests: Sequence[Manifest], crds: Sequence[JSON]
    ) -> tuple[list[_Planned], list[_Planned], list[_Planned]]:
        stage_one: list[_Planned] = []
        stage_two: list[_Planned] = []
        deferred: list[_Planned] = []
        new_kinds = {
            (f"{crd['spec']['group']}/{version['name']}", crd["spec"]["names"]["kind"])
            for crd in crds
            for version in crd.get("spec", {}).get("versions", [])
        }
        if request.create_namespace and request.is_install:  # as Helm: on install only
            namespace = target_namespace(request)
            stage_one.append(_Planned(namespace, ObjectRef.of(namespace), True, unchanged=True))
        existing_crds = await self._existing(crds) if request.crds_policy == "Create" else set()
        for crd in crds:
            name = crd.get("metadata", {}).get("name", "")
            if name in existing_crds:
                continue  # Create: never replace a CRD that is already there
            stage_one.append(_Planned(crd, ObjectRef.of(crd), True))
        for manifest in manifests:
            obj = manifest.resource
            if obj is None:
                continue
            api_version, kind = str(obj.get("apiVersion", "")), str(obj.get("kind", ""))
            if kind == "CustomResourceDefinition":
                for version in obj.get("spec", {}).get("versions", []):
                    new_kinds.add(
                        (f"{obj['spec']['group']}/{version['name']}", obj["spec"]["names"]["kind"])
                    )
            try:
                planned = await self._resolve(obj, request)
            except UnknownKind as error:
                if (api_version, kind) in new_kinds:
                    deferred.append(_Planned(obj, ObjectRef.of(obj), False))
                    continue
                raise DeployError(
                    "RenderFailed",
                    f"{manifest.path}: {error} (is its CRD installed?)",
                ) from error
            if kind in ("CustomResourceDefinition", "Namespace"):
                stage_one.append(planned)
            else:
                stage_two.append(planned)
        return stage_one, stage_two, deferred

    async def _existing(self, crds: Sequence[JSON]) -> set[str]:
        names = set()
        for crd in crds:
            name = crd.get("metadata", {}).get("name", "")
            live = await self.applier.kube.get_or_none(
                f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}"
            )
            if live is not None:
                names.add(name)
        return names

    async def _prove(
        self,
        applier: Applier,
        request: DeployRequest,
        planned: Sequence[_Planned],
        previous: Record | None,
        objects: Sequence[JSON],
    ) -> frozenset[ObjectRef]:
        """Check ownership and dry-run `objects` (the stages that can be proven now) before
        anything is written; returns the objects to adopt (apply with force).

        The dry-run goes first: its answers tell which objects exist (a created object has
        no resourceVersion yet), so only those are read for the ownership check. A rejected
        dry-run is explained by ownership first, as Helm's "cannot be imported" is."""
        if request.take_over_from:
            # Fields move to rudder before the dry-run, so ownership is settled before that.
            adopted = await self._check_ownership(applier, request, planned, previous)
            await asyncio.gather(
                *(
                    take_over_fields(applier, p.ref, request.take_over_from)
                    for p in planned
                    if p.ref.kind != "Namespace" and p.ref not in adopted
                )
            )
            await self._dry_run(applier, objects, request.force_conflicts, adopted)
            return adopted
        try:
            answers = await self._dry_run(applier, objects, request.force_conflicts, frozenset())
        except DeployError:
            adopted = await self._check_ownership(applier, request, planned, previous)
            if not adopted:
                raise
            await self._dry_run(applier, objects, request.force_conflicts, adopted)
            return adopted
        absent = {
            ObjectRef.of(obj).identity()
            for obj, answer in zip(objects, answers, strict=True)
            if not (answer.get("metadata") or {}).get("resourceVersion")
        }
        return await self._check_ownership(applier, request, planned, previous, absent=absent)

    async def _check_ownership(
        self,
        applier: Applier,
        request: DeployRequest,
        planned: Sequence[_Planned],
        previous: Record | None,
        *,
        absent: AbstractSet[tuple[str, str, str, str]] = frozenset(),
    ) -> frozenset[ObjectRef]:
        """Objects new to this release must not belong to someone else (Helm's rule).
        With takeOwnership they are adopted instead: returned, to be applied with force,
        since adopting an object means taking the fields the chart sets on it. `absent`
        objects are known not to exist and are not read."""
        known: set[tuple[str, str, str, str]] = set(absent)
        if previous is not None and previous.status not in ("uninstalled",):
            known |= set(manifest_identities(previous.release.manifest, request.target_namespace))
        candidates = [
            p
            for p in planned
            if p.ref.kind not in ("CustomResourceDefinition",)
            and p.ref.identity() not in known
            and not (
                p.ref.kind == "Namespace"
                and request.create_namespace
                and p.ref.name == request.target_namespace
            )
        ]
        lives = await asyncio.gather(*(applier.get(p.ref) for p in candidates))
        foreign = [
            p.ref
            for p, live in zip(candidates, lives, strict=True)
            if live is not None
            and not owned_by_release(live, request.release_name, request.storage_namespace)
        ]
        if foreign and request.take_ownership:
            return frozenset(foreign)
        if foreign:
            names = ", ".join(str(ref) for ref in foreign[:5])
            raise DeployError(
                "OwnershipConflict",
                f"{names} already exist{'s' if len(foreign) == 1 else ''} and "
                f"{'is' if len(foreign) == 1 else 'are'} not part of release "
                f"{request.release_name}; set takeOwnership to adopt "
                f"{'it' if len(foreign) == 1 else 'them'}",
            )
        return frozenset()

    async def _dry_run(
        self,
        applier: Applier,
        objects: Sequence[JSON],
        force: bool,
        forced: AbstractSet[ObjectRef],
    ) -> list[JSON]:
        """The API server's answers, in the order of `objects`."""
        if not objects:
            return []
        try:
            return await applier.dry_run_stage(objects, force=force, forced=forced)
        except StageRejected as rejected:
            raise DeployError(
                "ApplyConflict" if rejected.conflicts else _failure_reason(rejected.failures),
                str(rejected),
                stage=rejected,
            ) from rejected

    async def _wait_established(self, applier: Applier, crds: Sequence[ObjectRef]) -> None:
        deadline = asyncio.get_running_loop().time() + CRD_ESTABLISHED_TIMEOUT
        for ref in crds:
            while True:
                live = await applier.get(ref)
                conditions = (live or {}).get("status", {}).get("conditions") or []
                if any(
                    c.get("type") == "Established" and c.get("status") == "True" for c in conditions
                ):
                    break
                if asyncio.get_running_loop().time() > deadline:
                    raise TimeoutError(
                        f"{ref} was not Established within {CRD_ESTABLISHED_TIMEOUT:.0f}s"
                    )
                await asyncio.sleep(0.5)

    async def _prune(
        self, applier: Applier, request: DeployRequest, applied: Sequence[_Planned]
    ) -> list[ObjectRef]:
        """Delete what the live revisions had and this one dropped (keep-policy respected).
        Objects only a failed or interrupted revision named are deleted only when the live
        object carries this release's ownership metadata."""
        live = history.live_revisions(request.records)
        if not live:
            return []
        trusted = live[0] if live[0].status == history.Status.DEPLOYED else None
        old: dict[tuple[str, str, str, str], JSON] = {}
        for record in live:  # the newest revision's form of an object wins
            old.update(manifest_identities(record.release.manifest, request.target_namespace))
        vouched = (
            set(manifest_identities(trusted.release.manifest, request.target_namespace))
            if trusted is not None
            else set()
        )
        kept = {p.ref.identity() for p in applied}
        # Cluster-scoped objects have no namespace in their identity.
        kept |= {(g, k, request.target_namespace, n) for (g, k, ns, n) in kept if not ns}
        pruned = []
        for identity, obj in old.items():
            if identity in kept:
                continue
            annotations = obj.get("metadata", {}).get("annotations") or {}
            if str(annotations.get(RESOURCE_POLICY_ANNOTATION, "")).strip().lower() == "keep":
                continue
            ref = ObjectRef(str(obj.get("apiVersion", "")), identity[1], identity[2], identity[3])
            try:
                resource = await self.discovery.resource(ref.api_version, ref.kind)
            except UnknownKind:
                continue
            if not resource.namespaced:
                ref = ObjectRef(ref.api_version, ref.kind, "", ref.name)
            if identity not in vouched:
                current = await applier.get(ref)
                if current is None or not owned_by_release(
                    current, request.release_name, request.storage_namespace
                ):
                    continue
            if await applier.delete(ref):
                pruned.append(ref)
        return pruned


def is_transient(error: BaseException) -> bool:
    """An error of the API server or the connection to it, not of what was sent."""
    if isinstance(error, ApiError):
        return error.code in TRANSIENT_CODES
    return isinstance(error, TRANSPORT_ERRORS)


def _failure_reason(failures: Sequence[ObjectFailure]) -> str:
    if any(failure.code == 403 for failure in failures):
        return "AccessDenied"
    return "ApplyFailed"
