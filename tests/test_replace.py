"""Force-replace: which refusals a replace could cure, and how they are named (no API)."""

from __future__ import annotations

import asyncio
from typing import Any

from rudder.kube.ssa import Conflict, ObjectFailure, ObjectRef, StageRejected
from rudder.reconcile.replace import cured_by_replace, immutable_message, replaceable

WEB = ObjectRef("apps/v1", "Deployment", "app", "web")
OBJ = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "web", "namespace": "app"},
}


def refused(code: int) -> StageRejected:
    return StageRejected(
        [], [ObjectFailure(WEB, code, "Invalid", "spec.selector: field is immutable")]
    )


def test_only_a_stage_refused_for_invalid_updates_alone_is_a_candidate() -> None:
    applier: Any = None  # never reached: these are decided before asking the API server
    conflict = Conflict("apps/v1", "Deployment", "app", "web", ".spec.replicas", "hpa")
    for stage in (
        None,
        StageRejected([conflict], []),
        refused(403),
        StageRejected([conflict], refused(422).failures),
    ):
        assert asyncio.run(replaceable(applier, [OBJ], stage)) == []
    # A refused object the stage did not send (cannot be dry-run as new here).
    assert asyncio.run(replaceable(applier, [], refused(422))) == []


def test_the_message_names_each_object_and_the_way_out() -> None:
    message = immutable_message(refused(422))
    assert message.startswith("Deployment/app/web: spec.selector: field is immutable")
    assert "spec.upgrade.forceReplace" in message


def test_destructive_kinds_kept_objects_and_webhook_refusals_are_never_replaced() -> None:
    applier: Any = None  # never reached: decided before asking the API server
    pvc = ObjectRef("v1", "PersistentVolumeClaim", "app", "data")
    cases = [
        (pvc, {"apiVersion": "v1", "kind": "PersistentVolumeClaim"}, "spec: Forbidden: immutable"),
        (WEB, {**OBJ, "metadata": {**OBJ["metadata"], "annotations": {
            "helm.sh/resource-policy": "keep"}}}, "spec.selector: field is immutable"),
        (WEB, OBJ, 'admission webhook "freeze" denied the request: field is immutable'),
        (WEB, OBJ, "spec.replicas: Invalid value: -1: must be greater than or equal to 0"),
    ]  # fmt: skip
    for ref, obj, message in cases:
        failure = ObjectFailure(ref, 422, "Invalid", message)
        assert not asyncio.run(cured_by_replace(applier, obj, failure)), message
