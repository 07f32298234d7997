"""Which failures wait for a new spec (Stalled) and which are retried with backoff: what
stops a stage and is settled beside the HelmRelease (a conflict, a denial) is retried."""

from __future__ import annotations

import pytest

from rudder.chart.render import RenderError
from rudder.kube.ssa import Conflict, ObjectFailure, ObjectRef, StageRejected
from rudder.reconcile.deploy_failure import DeployError, as_deploy_error
from rudder.reconcile.failures import classify
from rudder.reconcile.kinds import UPGRADE
from rudder.reconcile.prove import rejected_reason

ROLE = ObjectRef("rbac.authorization.k8s.io/v1", "ClusterRole", "", "app-admin")
DENIED = ObjectFailure(ROLE, 403, "Forbidden", 'cannot patch resource "clusterroles"')
INVALID = ObjectFailure(ROLE, 422, "Invalid", "rules[0].verbs: Required value")
CONFLICT = Conflict("v1", "ConfigMap", "apps", "app", ".data.greeting", "kubectl")


def rejected(stage: StageRejected, *, recorded: bool) -> DeployError:
    return DeployError(rejected_reason(stage), str(stage), recorded=recorded, stage=stage)


@pytest.mark.parametrize("recorded", [False, True], ids=["dry-run", "apply"])
def test_a_denied_stage_is_retried_not_stalled(recorded: bool) -> None:
    failure = classify(rejected(StageRejected([], [DENIED]), recorded=recorded))
    assert failure.reason == "AccessDenied"
    assert not failure.stalled


def test_a_conflicted_stage_is_retried_not_stalled() -> None:
    failure = classify(rejected(StageRejected([CONFLICT], []), recorded=False))
    assert (failure.reason, failure.stalled) == ("ApplyConflict", False)


def test_an_invalid_object_waits_for_a_new_spec() -> None:
    failure = classify(rejected(StageRejected([], [INVALID]), recorded=False))
    assert (failure.reason, failure.stalled) == ("ApplyFailed", True)


def test_a_denied_lookup_is_retried_and_a_template_bug_waits() -> None:
    denied = RenderError("AccessDenied", 'secrets is forbidden: cannot list resource "secrets"')
    assert not classify(denied).stalled
    assert classify(RenderError("RenderFailed", "template: nil pointer")).stalled


def test_a_denial_after_the_dry_run_allowed_the_write_cuts_the_revision_short() -> None:
    """Not counted against remediation: the revision is marked interrupted and tried again,
    whose dry-run then reports a denial that lasts (not recorded, retried with backoff)."""
    error = as_deploy_error(StageRejected([], [DENIED]), UPGRADE, "app", lambda m: m)
    assert error.transient
    assert error.recorded
    failure = classify(error)
    assert (failure.reason, failure.counted, failure.stalled) == ("AccessDenied", False, False)
    invalid = as_deploy_error(StageRejected([], [INVALID]), UPGRADE, "app", lambda m: m)
    assert not invalid.transient
    assert classify(invalid).counted
