"""Prove a revision can be applied before anything is written: a server-side dry-run of
every object that can be dry-run now, and Helm's ownership rule for objects new to the
release.

The dry-run goes first: its answers tell which objects exist (a created object has no
resourceVersion yet), so only those are read for the ownership check. A rejected dry-run is
explained by ownership first, as Helm's "cannot be imported" is.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass

from rudder.kube.client import JSON
from rudder.kube.ssa import Applier, ObjectFailure, ObjectRef, StageRejected, take_over_fields
from rudder.reconcile.plan import CRD, ObjectKey, Planned, manifest_identities, owned_by_release


class ProofFailed(Exception):
    """The revision cannot be applied as it is; nothing was written."""

    def __init__(self, reason: str, message: str, stage: StageRejected | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.stage = stage


@dataclass(frozen=True)
class Ownership:
    release_name: str
    storage_namespace: str
    target_namespace: str
    previous_manifest: str | None  # the latest revision's, unless it was uninstalled
    create_namespace: bool
    take_ownership: bool
    force_conflicts: bool
    take_over_from: tuple[str, ...]  # after an out-of-band revision: managers to take from


def failure_reason(failures: Sequence[ObjectFailure]) -> str:
    if any(failure.denied for failure in failures):
        return "AccessDenied"
    return "ApplyFailed"


def rejected_reason(rejected: StageRejected) -> str:
    return "ApplyConflict" if rejected.conflicts else failure_reason(rejected.failures)


async def prove(
    applier: Applier, rule: Ownership, planned: Sequence[Planned], objects: Sequence[JSON]
) -> frozenset[ObjectRef]:
    """Check ownership and dry-run `objects` (the stages that can be proven now); returns
    the objects to adopt (apply with force). Raises ProofFailed."""
    if rule.take_over_from:
        # Fields move to rudder before the dry-run, so ownership is settled before that.
        adopted = await check_ownership(applier, rule, planned)
        await asyncio.gather(
            *(
                take_over_fields(applier, p.ref, rule.take_over_from)
                for p in planned
                if p.ref.kind != "Namespace" and p.ref not in adopted
            )
        )
        await dry_run(applier, objects, rule.force_conflicts, adopted)
        return adopted
    try:
        answers = await dry_run(applier, objects, rule.force_conflicts, frozenset())
    except ProofFailed:
        adopted = await check_ownership(applier, rule, planned)
        if not adopted:
            raise
        await dry_run(applier, objects, rule.force_conflicts, adopted)
        return adopted
    absent = {
        ObjectRef.of(obj).identity()
        for obj, answer in zip(objects, answers, strict=True)
        if not (answer.get("metadata") or {}).get("resourceVersion")
    }
    return await check_ownership(applier, rule, planned, absent=absent)


async def check_ownership(
    applier: Applier,
    rule: Ownership,
    planned: Sequence[Planned],
    *,
    absent: AbstractSet[ObjectKey] = frozenset(),
) -> frozenset[ObjectRef]:
    """Objects new to this release must not belong to someone else (Helm's rule). With
    takeOwnership they are adopted instead: returned, to be applied with force, since
    adopting an object means taking the fields the chart sets on it. `absent` objects are
    known not to exist and are not read."""
    known: set[ObjectKey] = set(absent)
    if rule.previous_manifest is not None:
        known |= set(manifest_identities(rule.previous_manifest, rule.target_namespace))
    candidates = [
        p
        for p in planned
        if p.ref.kind != CRD
        and p.ref.identity() not in known
        and not (
            p.ref.kind == "Namespace"
            and rule.create_namespace
            and p.ref.name == rule.target_namespace
        )
    ]
    lives = await asyncio.gather(*(applier.get(p.ref) for p in candidates))
    foreign = [
        p.ref
        for p, live in zip(candidates, lives, strict=True)
        if live is not None
        and not owned_by_release(live, rule.release_name, rule.storage_namespace)
    ]
    if foreign and rule.take_ownership:
        return frozenset(foreign)
    if foreign:
        one = len(foreign) == 1
        names = ", ".join(str(ref) for ref in foreign[:5])
        raise ProofFailed(
            "OwnershipConflict",
            f"{names} already exist{'s' if one else ''} and {'is' if one else 'are'} not part "
            f"of release {rule.release_name}; set takeOwnership to adopt "
            f"{'it' if one else 'them'}",
        )
    return frozenset()


async def dry_run(
    applier: Applier, objects: Sequence[JSON], force: bool, forced: AbstractSet[ObjectRef]
) -> list[JSON]:
    """The API server's answers, in the order of `objects`."""
    if not objects:
        return []
    try:
        return await applier.dry_run_stage(objects, force=force, forced=forced)
    except StageRejected as rejected:
        raise ProofFailed(rejected_reason(rejected), str(rejected), rejected) from rejected


async def recheck_unchanged(applier: Applier, planned: Sequence[Planned]) -> list[JSON]:
    """Read the objects not sent again (unchanged since the deployed revision): one that no
    longer exists is marked changed, to be applied again (an action never reports success
    while one of its objects is gone). Returns the ones that exist, as read: the readiness
    wait starts from them instead of listing their collections."""
    skipped = [p for p in planned if p.unchanged and p.ref.kind != "Namespace"]
    lives = await asyncio.gather(*(applier.get(p.ref) for p in skipped))
    for item, live in zip(skipped, lives, strict=True):
        if live is None:
            item.unchanged = False
    return [live for live in lives if live is not None]
