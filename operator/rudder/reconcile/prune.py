"""Delete what the live revisions had and the new one dropped (keep-policy respected).

Objects that only a failed or interrupted revision named are deleted only when the live
object carries this release's ownership metadata: such a revision may have listed objects
it never got to create, and someone else may own those.
"""

from __future__ import annotations

from collections.abc import Sequence

from rudder.kube.client import JSON
from rudder.kube.discovery import UnknownKind
from rudder.kube.ssa import Applier, ObjectRef
from rudder.reconcile.plan import (
    ObjectKey,
    Placement,
    Planned,
    manifest_identities,
    owned_by_release,
)
from rudder.release import history
from rudder.release.manifest import RESOURCE_POLICY_ANNOTATION
from rudder.release.store import Record


def kept_by_policy(obj: JSON) -> bool:
    annotations = obj.get("metadata", {}).get("annotations") or {}
    return str(annotations.get(RESOURCE_POLICY_ANNOTATION, "")).strip().lower() == "keep"


async def prune(
    applier: Applier,
    place: Placement,
    records: Sequence[Record],
    applied: Sequence[Planned],
) -> list[ObjectRef]:
    pruned = []
    for ref, _ in await prunable(applier, place, records, applied):
        if await applier.delete(ref):
            pruned.append(ref)
    return pruned


async def prunable(
    applier: Applier,
    place: Placement,
    records: Sequence[Record],
    applied: Sequence[Planned],
) -> list[tuple[ObjectRef, JSON]]:
    """What `prune` deletes, with each object as the newest revision naming it stored it;
    reads only."""
    live = history.live_revisions(records)
    if not live:
        return []
    namespace = place.target_namespace
    trusted = live[0] if live[0].status == history.Status.DEPLOYED else None
    old: dict[ObjectKey, JSON] = {}
    for record in live:  # the newest revision's form of an object wins
        old.update(manifest_identities(record.release.manifest, namespace))
    vouched = set(manifest_identities(trusted.release.manifest, namespace)) if trusted else set()
    kept = {p.ref.identity() for p in applied}
    # Cluster-scoped objects have no namespace in their identity.
    kept |= {(g, k, namespace, n) for (g, k, ns, n) in kept if not ns}
    doomed = []
    for identity, obj in old.items():
        if identity in kept or kept_by_policy(obj):
            continue
        ref = ObjectRef(str(obj.get("apiVersion", "")), identity[1], identity[2], identity[3])
        try:
            resource = await applier.discovery.resource(ref.api_version, ref.kind)
        except UnknownKind:
            continue
        if not resource.namespaced:
            ref = ObjectRef(ref.api_version, ref.kind, "", ref.name)
        if identity not in vouched:
            current = await applier.get(ref)
            if current is None or not owned_by_release(
                current, place.release_name, place.storage_namespace
            ):
                continue
        doomed.append((ref, obj))
    return doomed
