"""Which failures wait for a new spec (Stalled) and which are retried with backoff: what
stops a stage and is settled beside the HelmRelease (a conflict, an RBAC denial) is
retried; what the object itself must change (invalid, refused by admission) waits."""

from __future__ import annotations

import pytest

from rudder.chart.render import RenderError
from rudder.kube.ssa import Conflict, ObjectFailure, ObjectRef, StageRejected
from rudder.reconcile.deploy_failure import DeployError, as_deploy_error
from rudder.reconcile.failures import classify
from rudder.reconcile.kinds import UPGRADE
from rudder.reconcile.prove import rejected_reason

ROLE = ObjectRef("rbac.authorization.k8s.io/v1", "ClusterRole", "", "app-admin")
DENIED = ObjectFailure(
    ROLE,
    403,
    "Forbidden",
    'clusterroles.rbac.authorization.k8s.io "app-admin" is forbidden: User '
    '"system:serviceaccount:t:deployer" cannot patch resource "clusterroles"',
)
WEBHOOK = ObjectFailure(
    ROLE, 403, "Forbidden", 'admission webhook "policy.example.test" denied the request: no'
)
QUOTA = ObjectFailure(
    ROLE, 403, "Forbidden", 'pods "web" is forbidden: exceeded quota: small, requested: pods=1'
)
INVALID = ObjectFailure(ROLE, 422, "Invalid", "rules[0].verbs: Required value")
CONFLICT = Conflict("v1", "ConfigMap", "apps", "app", ".data.greeting", "kubectl")


def rejected(stage: StageRejected, *, recorded: bool) -> DeployError:
    return DeployError(rejected_reason(stage), str(stage), recorded=recorded, stage=stage)


def test_an_rbac_denial_is_retried_not_stalled() -> None:
    failure = classify(rejected(StageRejected([], [DENIED]), recorded=False))
    assert (failure.reason, failure.stalled) == ("AccessDenied", False)


@pytest.mark.parametrize("refusal", [WEBHOOK, QUOTA, INVALID], ids=["webhook", "quota", "422"])
def test_what_the_object_must_change_waits_for_a_new_spec(refusal: ObjectFailure) -> None:
    failure = classify(rejected(StageRejected([], [refusal]), recorded=False))
    assert (failure.reason, failure.stalled) == ("ApplyFailed", True)
    mixed = classify(rejected(StageRejected([], [DENIED, refusal]), recorded=False))
    assert mixed.stalled


def test_a_conflicted_stage_is_retried_not_stalled() -> None:
    failure = classify(rejected(StageRejected([CONFLICT], []), recorded=False))
    assert (failure.reason, failure.stalled) == ("ApplyConflict", False)


def test_a_denied_lookup_is_retried_and_a_template_bug_waits() -> None:
    denied = RenderError("AccessDenied", 'secrets is forbidden: cannot list resource "secrets"')
    assert not classify(denied).stalled
    assert classify(RenderError("RenderFailed", "template: nil pointer")).stalled


def test_a_denial_of_a_write_its_dry_run_allowed_cuts_the_revision_short() -> None:
    """Not counted against remediation: the revision is marked interrupted and tried again,
    whose dry-run reports a denial that lasts (not recorded, retried with backoff)."""
    error = as_deploy_error(StageRejected([], [DENIED], dry_run=False), UPGRADE, "app", str)
    assert error.transient
    assert error.recorded
    failure = classify(error)
    assert (failure.reason, failure.counted, failure.stalled) == ("AccessDenied", False, False)


@pytest.mark.parametrize(
    "stage",
    [
        StageRejected([], [DENIED], dry_run=True),  # objects first dry-run after the record
        StageRejected([], [WEBHOOK], dry_run=False),
        StageRejected([], [DENIED, INVALID], dry_run=False),
    ],
    ids=["denied-by-its-dry-run", "webhook", "denied-and-invalid"],
)
def test_other_failures_after_the_record_count(stage: StageRejected) -> None:
    """Else a denial no earlier dry-run saw would write a revision on every retry."""
    error = as_deploy_error(stage, UPGRADE, "app", str)
    assert not error.transient
    assert classify(error).counted
