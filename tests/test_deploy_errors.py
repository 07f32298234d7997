"""Which failures of an action are the API server's (retried, not counted as attempts),
and how each kind of action (install, upgrade, rollback) runs its hooks and words its
records, as Helm 4's actions do."""

from __future__ import annotations

import aiohttp
import pytest

from rudder.kube.client import ApiError
from rudder.reconcile.deploy import DeployRequest
from rudder.reconcile.deploy_failure import is_transient
from rudder.reconcile.kinds import INSTALL, ROLLBACK, UPGRADE, ActionKind
from rudder.reconcile.plan import Placement
from rudder.release.store import Owner, Record, Stamp


@pytest.mark.parametrize("code", [429, 500, 502, 503, 504])
def test_server_side_failures_are_transient(code: int) -> None:
    assert is_transient(ApiError(code, {}, "PATCH", "/x"))


@pytest.mark.parametrize("code", [400, 403, 404, 409, 422])
def test_answers_about_what_was_sent_are_not(code: int) -> None:
    assert not is_transient(ApiError(code, {}, "PATCH", "/x"))


@pytest.mark.parametrize(
    "error",
    [
        aiohttp.ClientConnectionError("connection refused"),
        aiohttp.ServerDisconnectedError(),
        TimeoutError(),
        ConnectionResetError(),
    ],
)
def test_an_unreachable_api_server_is_transient(error: BaseException) -> None:
    assert is_transient(error)


def test_other_errors_are_not() -> None:
    assert not is_transient(ValueError("bad manifest"))


def _request(kind: ActionKind, rollback_to: Record | None = None) -> DeployRequest:
    return DeployRequest(
        kind=kind,
        place=Placement(release_name="app", storage_namespace="apps", target_namespace="apps"),
        chart_archive=b"",
        chart=None,
        chart_name="app",
        values={},
        stamp=Stamp(Owner("apps", "app"), "", "", 1, "test"),
        records=(),
        crds_policy="Skip",
        create_namespace=False,
        take_ownership=False,
        force_conflicts=False,
        max_history=10,
        rollback_to=rollback_to,
    )


def _record(version: int) -> Record:
    return Record({"metadata": {"name": f"sh.helm.release.v1.app.v{version}",
                                "labels": {"version": str(version)}}})  # fmt: skip


def test_a_rollback_runs_the_rollback_hooks_not_the_upgrade_ones() -> None:
    # helm rollback: pre-rollback before the apply, post-rollback after the wait.
    assert ROLLBACK.hook_events == ("pre-rollback", "post-rollback")
    assert ROLLBACK.pending_status == "pending-rollback"
    assert ROLLBACK.failed_reason == "RollbackFailed"
    assert not _request(ROLLBACK, _record(3)).is_install


def test_a_rollback_is_worded_as_helm_words_it() -> None:
    # rollback.go: "Rollback to N" while pending and once deployed; `Rollback "name"
    # failed: ...` (Helm's wording of a failed rollback apply).
    request = _request(ROLLBACK, _record(3))
    assert request.target_version == 3
    assert ROLLBACK.describe_pending(request.target_version) == "Rollback to 3"
    assert ROLLBACK.describe_done(request.target_version) == "Rollback to 3"
    assert ROLLBACK.failed_prefix.format(release="app") == 'Rollback "app" failed: '


def test_installs_and_upgrades_run_their_own_hooks_worded_as_helm() -> None:
    assert _request(INSTALL).is_install
    assert not _request(UPGRADE).is_install
    assert INSTALL.hook_events == ("pre-install", "post-install")
    assert UPGRADE.hook_events == ("pre-upgrade", "post-upgrade")
    assert INSTALL.pending_status == "pending-install"
    assert UPGRADE.pending_status == "pending-upgrade"
    # install.go / upgrade.go: the pending and the deployed revision's descriptions.
    assert INSTALL.describe_pending() == "Initial install underway"
    assert UPGRADE.describe_pending() == "Preparing upgrade"
    assert INSTALL.describe_done() == "Install complete"
    assert UPGRADE.describe_done() == "Upgrade complete"
    assert INSTALL.failed_prefix.format(release="app") == 'Release "app" failed: '
    assert UPGRADE.failed_prefix.format(release="app") == 'Upgrade "app" failed: '
