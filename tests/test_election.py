"""The Lease bodies leader election writes."""

from __future__ import annotations

from rudder.kube.election import ElectionSettings, lease_body

ME = ElectionSettings(namespace="rudder-system", name="rudder-leader", identity="me")


def existing(holder: str, transitions: int = 2) -> dict[str, object]:
    return {
        "metadata": {"name": "rudder-leader", "resourceVersion": "41"},
        "spec": {
            "holderIdentity": holder,
            "leaseTransitions": transitions,
            "acquireTime": "then",
            "leaseDurationSeconds": 15,
        },
    }


def test_a_new_lease_names_this_candidate() -> None:
    body = lease_body(ME, None, now="t")
    assert body["spec"] == {
        "holderIdentity": "me",
        "leaseDurationSeconds": 15,
        "renewTime": "t",
        "acquireTime": "t",
        "leaseTransitions": 0,
    }
    assert "resourceVersion" not in body["metadata"]


def test_taking_over_counts_a_transition_and_keeps_the_resource_version() -> None:
    body = lease_body(ME, existing("other"), now="t")
    assert body["spec"]["holderIdentity"] == "me"
    assert body["spec"]["leaseTransitions"] == 3
    assert body["spec"]["acquireTime"] == "t"
    assert body["metadata"]["resourceVersion"] == "41"


def test_renewing_keeps_the_acquire_time() -> None:
    body = lease_body(ME, existing("me"), now="later")
    assert body["spec"]["acquireTime"] == "then"
    assert body["spec"]["leaseTransitions"] == 2
    assert body["spec"]["renewTime"] == "later"


def test_release_frees_the_lease_at_once() -> None:
    body = lease_body(ME, existing("me"), now="t", release=True)
    assert body["spec"]["holderIdentity"] == ""
    assert body["spec"]["leaseDurationSeconds"] == 1
