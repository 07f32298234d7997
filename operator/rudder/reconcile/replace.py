"""Force-replace (Helm 4's `--force-replace`): objects whose change the API server refuses
as an update but would accept as a new object — a Deployment's selector, a Job's template,
RollingUpdate -> Recreate with the defaulted rollingUpdate left behind.

`replaceable` tells such refusals apart from an object that is invalid however it is sent:
the refused update's object is dry-run as a create, and only an `AlreadyExists` answer
(validation passed, the name is taken) makes it replaceable. Without opt-in the action
fails with `ImmutableFieldChange` before anything is written; with it, each such object is
deleted (foreground: its dependents go first) and, once gone, applied again as new.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from rudder.kube.client import JSON, ApiError
from rudder.kube.ssa import Applier, ObjectFailure, ObjectRef, StageRejected
from rudder.reconcile.prune import kept_by_policy

IMMUTABLE_FIELD_CHANGE = "ImmutableFieldChange"
REPLACE_FAILED = "ReplaceFailed"
# Never deleted to be re-created: what goes with them is more than the object (every custom
# resource of a CRD, a namespace's contents, a volume's data).
NEVER_REPLACED = frozenset(
    {"CustomResourceDefinition", "Namespace", "PersistentVolumeClaim", "PersistentVolume"}
)
# The API server's own words for a change that cannot be made in place; anything else (an
# admission webhook, a rule only for updates such as a change freeze) is not bypassed.
IN_PLACE_REFUSALS = ("field is immutable", "Forbidden:")
GONE_POLL = 0.5  # seconds between reads while a replaced object is being deleted


class ReplaceTimeout(Exception):
    """A replaced object was still there when the timeout ran out."""


async def replaceable(
    applier: Applier, objects: Sequence[JSON], rejected: StageRejected | None
) -> list[ObjectRef]:
    """The refused objects, if every refusal of the stage is one a replace would cure;
    else none (the stage's failure stands as it is)."""
    if rejected is None or rejected.conflicts or not rejected.failures:
        return []
    by_ref = {ObjectRef.of(obj): obj for obj in objects}
    refs = [failure.ref for failure in rejected.failures]
    if any(ref not in by_ref for ref in refs):
        return []
    verdicts = await asyncio.gather(
        *(cured_by_replace(applier, by_ref[f.ref], f) for f in rejected.failures)
    )
    return refs if all(verdicts) else []


async def cured_by_replace(applier: Applier, obj: JSON, failure: ObjectFailure) -> bool:
    """Would deleting and re-creating `obj` get past this refusal of its update?"""
    message = failure.message or ""
    if (
        failure.code != 422
        or failure.ref.kind in NEVER_REPLACED
        or kept_by_policy(obj)
        or "admission webhook" in message
        or not any(words in message for words in IN_PLACE_REFUSALS)
    ):
        return False
    return await _valid_as_new(applier, obj)


async def _valid_as_new(applier: Applier, obj: JSON) -> bool:
    resource = await applier.resource_of(obj)
    namespace = (obj.get("metadata") or {}).get("namespace") or None
    try:
        await applier.kube.request(
            "POST",
            resource.path(namespace),
            query={"dryRun": "All", "fieldManager": applier.field_manager},
            body=obj,
        )
    except ApiError as error:
        return error.code == 409 and error.reason == "AlreadyExists"
    return True  # gone since the update was refused: applying it creates it anyway


def immutable_message(rejected: StageRejected | None) -> str:
    failures = rejected.failures if rejected is not None else []
    names = "; ".join(f"{f.ref}: {f.message or f.reason}" for f in failures[:5])
    more = len(failures) - 5
    return (
        f"{names}{f' (+{more} more)' if more > 0 else ''}; these objects cannot be changed "
        "in place: spec.upgrade.forceReplace deletes and re-creates them on upgrade and "
        "rollback"
    )


async def delete_and_wait(applier: Applier, refs: Sequence[ObjectRef], seconds: float) -> None:
    """Delete with foreground propagation and wait until each object is gone."""
    await asyncio.gather(*(applier.delete(ref, propagation="Foreground") for ref in refs))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    for ref in refs:
        while await applier.get(ref) is not None:
            if loop.time() > deadline:
                raise ReplaceTimeout(f"{ref} was not deleted within {seconds:.0f}s to replace it")
            await asyncio.sleep(GONE_POLL)
