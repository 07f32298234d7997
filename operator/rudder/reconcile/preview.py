"""Compute a preview: the next install or upgrade, stopped before its first write.

The same request the action would run is rendered and planned by the deployer (so objects
the upgrade would not send, being unchanged, are left out the same way); each object the
action would apply is read and dry-run as the release's identity, and what prune would
delete is listed. Nothing is written: GETs and `dryRun=All` applies only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from rudder.kube.client import JSON, ApiError
from rudder.kube.discovery import UnknownKind
from rudder.kube.ssa import (
    STAGE_PARALLELISM,
    Applier,
    ObjectFailure,
    ObjectRef,
    StageRejected,
    parse_conflicts,
)
from rudder.reconcile.deploy import Deployer, DeployRequest
from rudder.reconcile.deploy_failure import TRANSIENT_CODES
from rudder.reconcile.hook_events import TEST
from rudder.reconcile.identity import ReleaseClients
from rudder.reconcile.plan import Planned, manifest_identities, owned_by_release
from rudder.reconcile.preview_diff import (
    ADDED,
    CHANGED,
    REMOVED,
    REPLACED,
    UNCHANGED,
    ObjectChange,
    Preview,
    on_rudder_fields,
)
from rudder.reconcile.prune import prunable
from rudder.reconcile.replace import cured_by_replace, immutable_message
from rudder.release import history
from rudder.release.codec import Hook


async def compute_preview(
    deployer: Deployer,
    request: DeployRequest,
    clients: ReleaseClients,
    *,
    generation: int,
    tests: bool = False,
) -> Preview:
    """`generation`: the HelmRelease's (part of the digest); `tests`: list the test hooks
    that run after the action too."""
    applier = clients.applier
    revision, content, plan = await deployer.prepare(request, clients)
    previous = history.latest(request.records)
    known = (
        set(manifest_identities(previous.release.manifest, request.place.target_namespace))
        if previous is not None and previous.status != "uninstalled"
        else set()
    )
    limit = asyncio.Semaphore(STAGE_PARALLELISM)

    # Objects in a namespace the release creates cannot be dry-run before it exists.
    creates = {p.ref.name for p in plan.stage_one if p.ref.kind == "Namespace"}

    async def one(item: Planned) -> ObjectChange:
        async with limit:
            in_release = item.ref.identity() in known
            return await _object_change(applier, request, item, in_release, creates)

    sent = [
        p
        for p in plan.planned + plan.deferred
        if not p.unchanged or (p.ref.kind == "Namespace" and request.create_namespace)
    ]
    changes = list(await asyncio.gather(*(one(p) for p in sent)))
    for ref, obj in await prunable(applier, request.place, request.records, plan.planned):
        live = await applier.get(ref)
        if live is not None:
            before, _ = on_rudder_fields(live, None, applier.field_manager, request.take_over_from)
            # Nothing of rudder's on it (a helm CLI revision's): as the release stored it.
            changes.append(ObjectChange(ref, REMOVED, before=before or obj))
    return Preview(
        action=request.kind.verb,
        revision=revision,
        chart_digest=request.stamp.chart_digest,
        values_digest=request.stamp.values_digest,
        objects=tuple(changes),
        hooks=_hooks(content.hooks, request, tests=tests),
        forced=request.force_conflicts,
        generation=generation,
        redact=request.redact,
    )


async def _object_change(
    applier: Applier,
    request: DeployRequest,
    item: Planned,
    in_release: bool,
    creates: set[str],
) -> ObjectChange:
    ref, obj = item.ref, item.obj
    try:
        live = await applier.get(ref)
    except UnknownKind:
        live = None  # a kind this release's own CRDs add
    place = request.place
    foreign = (
        live is not None
        and not in_release
        and not owned_by_release(live, place.release_name, place.storage_namespace)
    )
    error = ""
    if foreign and not request.take_ownership:
        error = (
            f"already exists and is not part of release {place.release_name}; "
            "set takeOwnership to adopt it"
        )
    conflicts: tuple[str, ...] = ()
    answer: JSON | None = None
    try:
        answer, conflicts = await _dry_run(applier, request, obj)
    except UnknownKind:
        pass  # defined by a CRD of this release: can only be dry-run once that exists
    except ApiError as refused:
        if refused.code in TRANSIENT_CODES:
            raise  # the server's trouble: no preview this time
        failure = ObjectFailure(ref, refused.code, refused.reason, refused.message)
        if live is not None and await cured_by_replace(applier, obj, failure):
            if request.force_replace:  # deleted and re-created by the action: say so
                before, _ = on_rudder_fields(live, None, applier.field_manager)
                return ObjectChange(ref, REPLACED, before, obj, conflicts)
            error = request.redact(immutable_message(StageRejected([], [failure])))
        # 404 for an object in a namespace the release creates: shown as rendered.
        elif not (refused.code == 404 and live is None and item.ref.namespace in creates):
            error = error or request.redact(refused.message or refused.reason or str(refused))
    manager, handed = applier.field_manager, request.take_over_from
    if answer is None:
        before, _ = on_rudder_fields(live, None, manager, handed)
        after = obj  # not dry-run: as rendered
    else:
        before, after = on_rudder_fields(live, answer, manager, handed)
    if live is None:
        change = ADDED
    elif before != after:
        change = CHANGED
    else:
        change = UNCHANGED
    return ObjectChange(ref, change, before, after, conflicts, error)


async def _dry_run(
    applier: Applier, request: DeployRequest, obj: JSON
) -> tuple[JSON, tuple[str, ...]]:
    """The answer of the apply the action would send, and the fields other managers own that
    it touches — reported also when the action takes them (forceConflicts, takeOwnership);
    not those of managers an out-of-band revision hands back to rudder."""
    try:
        return await applier.apply(obj, dry_run=True), ()
    except ApiError as error:
        if error.code != 409:
            raise
        conflicts = tuple(
            f"{c.field} owned by {c.manager}"
            for c in parse_conflicts(ObjectRef.of(obj), error)
            if c.manager not in request.take_over_from
        )
    return await applier.apply(obj, dry_run=True, force=True), conflicts


def _hooks(hooks: Sequence[Hook], request: DeployRequest, *, tests: bool) -> tuple[str, ...]:
    events: tuple[str, ...] = () if request.disable_hooks else request.kind.hook_events
    if tests:
        events += (TEST,)
    return tuple(
        f"{hook.kind}/{hook.name} ({', '.join(e for e in hook.events if e in events)})"
        for hook in hooks
        if any(event in events for event in hook.events)
    )
