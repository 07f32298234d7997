"""Force-replace: which refusals a replace could cure, and how they are named (no API)."""

from __future__ import annotations

import asyncio
from typing import Any

from rudder.kube.ssa import Conflict, ObjectFailure, ObjectRef, StageRejected
from rudder.reconcile.replace import immutable_message, replaceable

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
