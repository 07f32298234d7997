"""Taking drift back: hand over foreign list items in managedFields, then a forced apply.

The hand-over (`drift_list_items.hand_over`) is guarded by resourceVersion and covers only
items that are still foreign when re-read; nothing is deleted that a manager outside the
drift managers owns.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from rudder.kube.client import JSON_PATCH, ApiError
from rudder.kube.ssa import Applier, ObjectRef
from rudder.reconcile.drift_detect import MAX_MESSAGE, DriftedObject
from rudder.reconcile.drift_list_items import foreign_items, hand_over


@dataclass(frozen=True)
class NotCorrected:
    ref: ObjectRef
    message: str

    def __str__(self) -> str:
        return f"{self.ref}: {self.message}"


async def _hand_over_foreign(
    applier: Applier, drifted: DriftedObject, drift_managers: Collection[str]
) -> None:
    """Give rudder the foreign items that are still foreign now, in one managedFields patch
    that fails if the object changed since it was read."""
    live = await applier.get(drifted.ref)
    if live is None or drifted.desired is None:
        return
    meta = live.get("metadata", {})
    managed = meta.get("managedFields") or []
    still = foreign_items(drifted.desired, live, managed, drift_managers)
    now = {item.keys: item for item in still}
    items = [now[item.keys] for item in drifted.foreign if item.keys in now]
    if not items:
        return
    rewritten = hand_over(
        managed, items, field_manager=applier.field_manager, api_version=drifted.ref.api_version
    )
    patch = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": meta.get("resourceVersion")},
        {"op": "replace", "path": "/metadata/managedFields", "value": rewritten},
    ]
    await applier.kube.request(
        "PATCH", await applier.path_of(drifted.ref), body=patch, content_type=JSON_PATCH
    )


async def correct(
    applier: Applier, drifted: Sequence[DriftedObject], drift_managers: Collection[str]
) -> list[NotCorrected]:
    """Take drifted objects back: hand over their foreign items, then a forced apply. What
    could not be taken back is returned, with the reason; nothing is deleted that a manager
    outside `drift_managers` owns."""
    failed: list[NotCorrected] = []
    for item in drifted:
        if item.desired is None:
            continue
        if item.rejected and not item.foreign:
            failed.append(
                NotCorrected(
                    item.ref,
                    "cannot be corrected automatically: the API server rejects the chart's "
                    f"object ({item.rejected})",
                )
            )
            continue
        try:
            if item.foreign:
                await _hand_over_foreign(applier, item, drift_managers)
            await applier.apply(item.desired, force=True)
        except ApiError as error:
            message = (error.message or error.reason or str(error))[:MAX_MESSAGE]
            failed.append(NotCorrected(item.ref, f"correction failed: {message}"))
    return failed
