"""Which identity a reconcile acts as: the spec's while it is valid; deleting, also the one
status recorded (the one that holds objects), with fallbacks for status written before the
target namespace and ServiceAccount were recorded."""

from __future__ import annotations

from typing import Any

import pytest

from rudder.config import OperatorConfig
from rudder.reconcile.identity import Identity
from rudder.reconcile.observe import Observer
from rudder.reconcile.status import StatusDraft
from rudder.reconcile.target import FINALIZER, Target

NS = "apps"
REF = "oci://registry.test/charts/app@sha256:" + "a" * 64


def target(spec: dict[str, Any], *, deleting: bool = False) -> Target:
    meta: dict[str, Any] = {"name": "web", "namespace": NS, "finalizers": [FINALIZER]}
    if deleting:
        meta["deletionTimestamp"] = "2026-12-02T12:00:00Z"
    return Target({"metadata": meta, "spec": spec})


def identities(
    spec: dict[str, Any], status: dict[str, Any] | None, *, deleting: bool, default_sa: str = ""
) -> list[Identity]:
    config = OperatorConfig(default_service_account=default_sa or None)
    observer = Observer(None, None, None, config, None)  # type: ignore[arg-type]
    hr = target(spec, deleting=deleting)
    parsed, error = observer.parse(hr)
    return observer._identities(hr, parsed, error, StatusDraft(status, 1))


RECORDED = {"release": {"name": "web", "namespace": NS, "targetNamespace": "front",
                        "serviceAccountName": "deployer"}}  # fmt: skip


def test_the_spec_names_the_identity_while_it_is_valid() -> None:
    (only,) = identities({"chart": {"ref": REF}, "releaseName": "shop"}, RECORDED, deleting=False)
    assert (only.release_name, only.user) == ("shop", None)


def test_deleting_tries_the_spec_then_the_recorded_identity() -> None:
    spec, recorded = identities({"chart": {"ref": REF}, "releaseName": "shop"}, RECORDED,
                                deleting=True)  # fmt: skip
    assert spec.release_name == "shop"
    assert (recorded.release_name, recorded.target_namespace) == ("web", "front")
    assert recorded.user == f"system:serviceaccount:{NS}:deployer"


def test_an_invalid_spec_leaves_only_the_recorded_identity() -> None:
    (only,) = identities({"chart": {"ref": REF}, "timeout": "0s"}, RECORDED, deleting=True)
    assert only.release_name == "web"


def test_nothing_recorded_and_an_invalid_spec_leave_no_identity() -> None:
    assert identities({"chart": {"ref": REF}, "timeout": "0s"}, None, deleting=True) == []


@pytest.mark.parametrize(
    ("default_sa", "user"), [("", None), ("tenant", "system:serviceaccount:apps:tenant")]
)
def test_status_from_before_the_service_account_was_recorded(
    default_sa: str, user: str | None
) -> None:
    old = {"release": {"name": "web", "namespace": NS}}
    (only,) = identities({"chart": {"ref": REF}, "timeout": "0s"}, old, deleting=True,
                         default_sa=default_sa)  # fmt: skip
    assert only.user == user
    assert only.target_namespace == NS  # Helm's default: the release's namespace


def test_rudder_itself_is_recorded_as_such_and_not_replaced_by_a_default() -> None:
    recorded = {"release": Identity("web", NS, NS, "", None).as_status()}
    (only,) = identities({"chart": {"ref": REF}, "timeout": "0s"}, recorded, deleting=True,
                         default_sa="tenant")  # fmt: skip
    assert only.user is None


def test_an_old_status_takes_the_target_namespace_of_the_same_release_in_the_spec() -> None:
    old = {"release": {"name": "web", "namespace": NS}}
    spec = {"chart": {"ref": REF}, "targetNamespace": "front", "storageNamespace": NS}
    identities_ = identities(spec, old, deleting=True)
    assert [i.target_namespace for i in identities_] == ["front"]  # one release, deduplicated
