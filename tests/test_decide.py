"""The next-action decision, one case per branch."""

from __future__ import annotations

import datetime

import pytest

from rudder.reconcile.decide import (
    Action,
    Attempts,
    Desired,
    RemediationPolicy,
    decide,
    drives,
    remediate,
)
from rudder.release.store import (
    CHART_DIGEST_ANNOTATION,
    INSTANCE_ANNOTATION,
    INTERRUPTED_ANNOTATION,
    VALUES_DIGEST_ANNOTATION,
    Owner,
    Record,
)

NOW = datetime.datetime(2026, 11, 23, 12, 0, tzinfo=datetime.UTC)
ME = Owner("apps", "web")
DESIRED = Desired(ME, "sha256:chart", "sha256:values")


def record(
    version: int,
    status: str,
    *,
    owner: Owner | None = ME,
    chart: str = "sha256:chart",
    values: str = "sha256:values",
    instance: str = "me",
    age: float = 10,
) -> Record:
    labels = {"owner": "helm", "name": "web", "status": status, "version": str(version)}
    annotations = {}
    if owner is not None:
        labels |= owner.labels()
        annotations = {
            CHART_DIGEST_ANNOTATION: chart,
            VALUES_DIGEST_ANNOTATION: values,
            INSTANCE_ANNOTATION: instance,
        }
    created = (NOW - datetime.timedelta(seconds=age)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return Record(
        {
            "metadata": {
                "name": f"sh.helm.release.v1.web.v{version}",
                "labels": labels,
                "annotations": annotations,
                "creationTimestamp": created,
            }
        }
    )


def test_nothing_stored_means_install() -> None:
    assert decide(DESIRED, []).action is Action.INSTALL


def test_deployed_and_in_sync_means_nothing_to_do() -> None:
    assert decide(DESIRED, [record(1, "superseded"), record(2, "deployed")]).action is Action.NONE


@pytest.mark.parametrize(
    ("chart", "values"), [("sha256:other", "sha256:values"), ("sha256:chart", "sha256:other")]
)
def test_a_changed_chart_or_values_means_upgrade(chart: str, values: str) -> None:
    decision = decide(DESIRED, [record(1, "deployed", chart=chart, values=values)])
    assert decision.action is Action.UPGRADE
    assert not decision.out_of_band


def test_a_release_of_another_helmrelease_is_refused() -> None:
    decision = decide(DESIRED, [record(1, "deployed", owner=Owner("apps", "other"))])
    assert decision.action is Action.REFUSE
    assert "apps/other" in decision.reason


def test_a_revision_written_by_the_cli_is_noticed_and_reconverged() -> None:
    decision = decide(DESIRED, [record(1, "superseded"), record(2, "deployed", owner=None)])
    assert decision.action is Action.UPGRADE
    assert decision.out_of_band


def test_a_release_installed_by_the_cli_is_adopted() -> None:
    decision = decide(DESIRED, [record(1, "deployed", owner=None)])
    assert (decision.action, decision.out_of_band) == (Action.UPGRADE, True)


def test_a_pending_revision_of_a_running_cli_is_left_alone() -> None:
    decision = decide(DESIRED, [record(1, "deployed"), record(2, "pending-upgrade", owner=None)])
    assert decision.action is Action.WAIT


def test_a_pending_revision_of_an_earlier_operator_process_is_unlocked() -> None:
    pending = record(2, "pending-upgrade", instance="crashed-process")
    assert decide(DESIRED, [record(1, "deployed"), pending]).action is Action.UNLOCK


def test_a_pending_revision_this_process_left_behind_is_unlocked_at_once() -> None:
    # One worker per HelmRelease: a pending revision of ours at the start of a reconcile
    # belongs to an attempt that raised (e.g. the API server went away mid-action).
    assert decide(DESIRED, [record(1, "pending-install")]).action is Action.UNLOCK


def test_an_uninstalled_release_with_history_is_installed_again() -> None:
    assert decide(DESIRED, [record(3, "uninstalled")]).action is Action.INSTALL


def test_a_failed_revision_with_unchanged_inputs_is_not_retried_here() -> None:
    # Retrying the same failed inputs is remediation's decision, not a blind loop.
    assert decide(DESIRED, [record(1, "deployed"), record(2, "failed")]).action is Action.NONE


def test_a_cli_revision_that_copied_our_labels_is_still_out_of_band() -> None:
    # `helm rollback` copies a release's labels (rudder's owner labels included) into the
    # revision it writes, but not rudder's annotations.
    copied = record(3, "deployed")
    copied.secret["metadata"]["annotations"] = {}
    decision = decide(DESIRED, [record(1, "superseded"), record(2, "superseded"), copied])
    assert (decision.action, decision.out_of_band) == (Action.UPGRADE, True)


def test_a_pending_cli_revision_with_copied_labels_is_not_unlocked() -> None:
    pending = record(2, "pending-rollback", instance="other", age=9999)
    pending.secret["metadata"]["annotations"] = {}
    assert decide(DESIRED, [record(1, "deployed"), pending]).action is Action.WAIT


def interrupted(version: int) -> Record:
    revision = record(version, "failed")
    revision.secret["metadata"]["annotations"][INTERRUPTED_ANNOTATION] = "true"
    return revision


def test_an_interrupted_revision_is_tried_again_without_counting_as_an_attempt() -> None:
    # An API server outage or a crash cut the attempt short: not a failure of the release,
    # so neither "retries exhausted" nor remediation applies.
    records = [record(1, "deployed"), interrupted(2)]
    decision = decide(DESIRED, records)
    assert decision.action is Action.UPGRADE
    no_retries = RemediationPolicy(
        install_retries=0, upgrade_retries=0, upgrade_strategy="rollback"
    )
    same = Attempts(same_inputs=True, install_failures=0, upgrade_failures=0)
    assert remediate(decision, records, same, no_retries).action is Action.UPGRADE
    assert decide(DESIRED, [interrupted(1)]).action is Action.INSTALL


def test_a_plain_failed_revision_is_remediations_call() -> None:
    records = [record(1, "deployed"), record(2, "failed")]
    no_retries = RemediationPolicy(
        install_retries=0, upgrade_retries=0, upgrade_strategy="rollback"
    )
    same = Attempts(same_inputs=True, install_failures=0, upgrade_failures=1)
    assert remediate(decide(DESIRED, records), records, same, no_retries).action is Action.STALL


def test_an_interrupted_remediation_rollback_is_done_again() -> None:
    # Retries spent, the rollback (carrying revision 1's digests) was cut short by a crash
    # and unlocked: roll back again instead of stalling halfway.
    rollback = interrupted(4)
    rollback.secret["metadata"]["annotations"][CHART_DIGEST_ANNOTATION] = "sha256:old"
    records = [
        record(1, "deployed", chart="sha256:old"),
        record(2, "failed"),
        record(3, "failed"),
        rollback,
    ]
    policy = RemediationPolicy(install_retries=0, upgrade_retries=1, upgrade_strategy="rollback")
    spent = Attempts(same_inputs=True, install_failures=0, upgrade_failures=2)
    decision = remediate(decide(DESIRED, records), records, spent, policy)
    assert decision.action is Action.ROLLBACK
    assert "revision 1" in decision.reason


def test_inputs_uninstalled_by_hand_are_installed_again_when_nothing_was_remediated() -> None:
    # One failed upgrade, no remediation configured, then `helm uninstall`: the user may
    # reinstall; only an uninstall done by remediation stalls the same inputs.
    no_retries = RemediationPolicy(
        install_retries=0, upgrade_retries=0, upgrade_strategy="rollback"
    )
    failed_once = Attempts(same_inputs=True, install_failures=0, upgrade_failures=1)
    assert remediate(decide(DESIRED, []), [], failed_once, no_retries).action is Action.INSTALL
    uninstalling = RemediationPolicy(
        install_retries=0, upgrade_retries=1, upgrade_strategy="uninstall"
    )
    spent = Attempts(same_inputs=True, install_failures=0, upgrade_failures=2)
    assert remediate(decide(DESIRED, []), [], spent, uninstalling).action is Action.STALL


def test_only_revisions_since_the_last_uninstall_say_who_drives_a_release() -> None:
    # Ours, uninstalled with history kept, then reinstalled with the helm CLI: deleting
    # the HelmRelease must leave the user's release alone.
    records = [record(1, "superseded"), record(2, "uninstalled"), record(3, "deployed", owner=None)]
    assert not drives(records, ME)
    assert drives(
        [record(1, "uninstalled", owner=Owner("apps", "other")), record(2, "deployed")], ME
    )
